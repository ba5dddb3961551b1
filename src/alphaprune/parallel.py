"""Several processes, one run (``--devices``, ``--num-nodes``, ``--strategy``, ``--precision``).

Every process runs the whole command (SPMD): Lightning's own launcher re-runs it once per
extra device, and ``torchrun`` or ``srun`` start one per rank. All ranks load the same
data and model and build the same branches; inside training they agree by construction:

* each rank takes its slice of every global batch (:func:`shard`), so the gradients DDP
  averages are those of the whole batch and the epoch has as many steps as on one process;
* before validation the BatchNorm buffers of rank 0 are broadcast (DDP syncs them only
  before a training forward), every rank scores its slice of the validation split, the
  sums are all-reduced and rank 0's epoch statistics are broadcast, so the phase
  controller, early stopping and best weights see the same numbers everywhere;
* a non-finite loss on any rank trips the divergence guard on every rank.

Only rank 0 (:func:`is_leader`, known from the launcher's environment before anything is
written) touches the disk: the run folder, CSV files, checkpoints, model files and the
report. The other ranks return after their last training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from alphaprune.errors import UserError

__all__ = ["Processes", "STRATEGIES", "PRECISIONS", "HARDWARE", "PLACEMENT", "hardware",
           "is_leader", "rank_world", "shard",
           "all_reduce_sums", "broadcast_floats", "broadcast_buffers", "any_rank"]

STRATEGIES = ("auto", "ddp")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
# the config fields that say where a command trains, on how many processes, in what format
HARDWARE = ("accelerator", "devices", "num_nodes", "strategy", "precision")
# the ones a resume takes from the resuming command (precision changes the numbers: the
# run's recorded one stays)
PLACEMENT = HARDWARE[:4]


def hardware(cfg, fields: tuple[str, ...] = HARDWARE) -> dict:
    """``{field: value}`` of a command's config (or parsed arguments) for ``fields``."""
    return {k: getattr(cfg, k) for k in fields}


@dataclass(frozen=True)
class Processes:
    """How many processes train, and in which number format."""

    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"

    @classmethod
    def of(cls, cfg) -> Processes:
        """The settings of a command's config (``devices``, ``num_nodes``, ``strategy``,
        ``precision`` fields)."""
        return cls(cfg.devices, cfg.num_nodes, cfg.strategy, cfg.precision)

    @property
    def world(self) -> int:
        return self.devices * self.num_nodes

    def validate(self, accelerator: str, batch_size: int) -> None:
        """Raise a one-line :class:`UserError` for settings that cannot run."""
        for name, v in (("devices", self.devices), ("num-nodes", self.num_nodes)):
            if not isinstance(v, int) or v < 1:
                raise UserError(f"--{name} must be a whole number >= 1, got {v!r}")
        if self.strategy not in STRATEGIES:
            hint = (" (alphaprune runs every process through the whole command, so the spawn "
                    "and fork launchers do not apply)" if "spawn" in str(self.strategy)
                    or "fork" in str(self.strategy) else "")
            raise UserError(f"unknown --strategy '{self.strategy}': use auto or ddp{hint}")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown --precision '{self.precision}': use one of "
                            f"{', '.join(PRECISIONS)}")
        if self.precision == "16-mixed" and accelerator == "cpu":
            raise UserError("--precision 16-mixed needs a GPU: use bf16-mixed (or 32-true) on "
                            "the CPU")
        if self.num_nodes > 1 and not any(v in os.environ for v in _NODE_LAUNCH):
            # Lightning would start this node's processes and wait for the others for ever
            raise UserError(f"--num-nodes {self.num_nodes} needs each node started by torchrun "
                            "or srun (README: several processes); on one machine pass "
                            "--devices N alone")
        if batch_size % self.world:
            raise UserError(f"--batch-size {batch_size} must be a multiple of the number of "
                            f"processes ({self.devices} devices x {self.num_nodes} nodes = "
                            f"{self.world}): every process takes an equal slice of each batch")

    def trainer_kwargs(self, checkpoint_io, find_unused: bool) -> dict:
        """``devices``, ``num_nodes``, ``strategy``, ``precision`` and the checkpoint plugin
        for ``pl.Trainer``. ``find_unused``: some parameters may get no gradient in a step
        (the stochastic hand-over runs one path per unit)."""
        kw = {"devices": self.devices, "num_nodes": self.num_nodes, "precision": self.precision}
        if self.world == 1 and self.strategy == "auto":
            return {**kw, "plugins": [checkpoint_io]}
        from lightning.pytorch.strategies import DDPStrategy

        return {**kw, "strategy": DDPStrategy(find_unused_parameters=find_unused,
                                              checkpoint_io=checkpoint_io)}


# what a multi-node launcher sets on every node (torchrun; srun; Lightning's own variables)
_NODE_LAUNCH = ("WORLD_SIZE", "RANK", "SLURM_NTASKS", "NODE_RANK", "MASTER_ADDR")


def _env_int(name: str) -> int:
    try:
        return int(os.environ.get(name, "0"))
    except ValueError:
        return 0


def is_leader() -> bool:
    """Whether this process is rank 0, the one that writes; read from the launcher's
    environment, so it is known before training starts: ``RANK`` (torchrun),
    ``SLURM_PROCID`` (srun with several tasks), ``NODE_RANK`` and ``LOCAL_RANK`` (Lightning's
    launcher). A plain single process is the leader."""
    if "RANK" in os.environ:
        return _env_int("RANK") == 0
    if _env_int("SLURM_NTASKS") > 1 and "SLURM_PROCID" in os.environ:
        return _env_int("SLURM_PROCID") == 0
    return _env_int("NODE_RANK") == 0 and _env_int("LOCAL_RANK") == 0


def rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of the running process group, ``(0, 1)`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(idx: torch.Tensor) -> torch.Tensor:
    """This rank's slice of a global batch's indices (all of them on one process)."""
    rank, world = rank_world()
    return idx if world == 1 else idx[rank::world]


def _active() -> bool:
    return rank_world()[1] > 1


def all_reduce_sums(values: list[float], device) -> list[float]:
    """Element-wise sums over the ranks (float64), the values themselves on one process."""
    if not _active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_floats(values: list[float], device) -> list[float]:
    """Rank 0's values on every rank (a tensor, not a pickle)."""
    if not _active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.tolist()


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) into every rank's ``module``."""
    if not _active():
        return
    for b in module.buffers():
        dist.broadcast(b, src=0)


def any_rank(flag: bool, device) -> bool:
    """True on every rank when ``flag`` is true on any."""
    if not _active():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
