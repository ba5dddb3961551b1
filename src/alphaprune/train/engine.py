"""Builds the Lightning Trainer the same way for every command."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from alphaprune.atomic import atomic_torch_save
from alphaprune.checksum import damaged_member
from alphaprune.errors import UserError, first_line
from alphaprune.parallel import Processes, any_rank
from alphaprune.train.callbacks import Progress

__all__ = ["ACCELERATORS", "resolve_accelerator", "make_trainer", "fit", "SafeCheckpointIO",
           "DivergenceGuard"]

ACCELERATORS = ("auto", "cpu", "gpu")

# Lightning's start-up banners (GPU/TPU availability, tips) are noise for a CPU tool.
for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
              "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def resolve_accelerator(name: str) -> str:
    """``"cpu"`` or ``"gpu"`` for an ``--accelerator`` value; ``auto`` takes a CUDA GPU when
    one is visible. Raises a one-line :class:`UserError` for an unknown name or a missing GPU."""
    if name not in ACCELERATORS:
        raise UserError(f"unknown --accelerator '{name}': use one of {', '.join(ACCELERATORS)}")
    if name == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if name == "gpu" and not torch.cuda.is_available():
        raise UserError("--accelerator gpu, but PyTorch sees no CUDA GPU: use --accelerator cpu "
                        "(or auto), or install a CUDA build of PyTorch")
    return name


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints that neither execute code nor tear.

    * **load**: always ``torch.load(weights_only=True)`` onto the CPU, whatever the caller
      asks: a crafted ``last.ckpt`` in a run folder cannot run code on ``--resume``, and a run
      checkpointed on a GPU resumes on a machine without one. An unreadable file, or one whose
      bytes no longer match the CRC-32s ``torch.save`` recorded
      (:func:`~alphaprune.checksum.damaged_member`), is a one-line :class:`UserError`.
    * **save**: written to a temporary file in the same folder, flushed and fsynced, then
      renamed over the previous checkpoint, so a crash or a full disk mid-write leaves the
      previous checkpoint whole.
    """

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        if (bad := damaged_member(path)) is not None:
            raise UserError(f"checkpoint {path} is damaged: the bytes of its '{bad}' do not "
                            "match the checksum written with them; start the run again with "
                            "--force")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as e:
            raise UserError(f"checkpoint {path} does not exist: start the run without --resume") from e
        except Exception as e:
            raise UserError(f"cannot read checkpoint {path} ({type(e).__name__}: "
                            f"{first_line(e)}): it is corrupt or was not "
                            "written by alphaprune; start the run again with --force") from e

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO takes no storage_options")
        atomic_torch_save(checkpoint, Path(path))


class DivergenceGuard(pl.Callback):
    """Acts on the first non-finite training loss of an epoch: records where it happened
    (``diverged``).

    ``stop`` (training a classifier): training ends there; the best epoch before it is
    what ships. ``skip`` (pruning): the epoch runs to its end (its later steps non-finite:
    Lightning ignores a callback's -1, and a module's would end the epoch without its
    validation, whose statistics the phase controller reads), then the controller sees the
    non-finite losses and restores the phase's best weights.
    """

    def __init__(self, mode: str = "stop"):
        if mode not in ("stop", "skip"):
            raise ValueError(f"unknown divergence mode {mode!r}")
        self.mode, self.tripped = mode, False
        self.diverged: dict | None = None

    def on_train_epoch_start(self, trainer, pl_module):
        self.tripped = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if self.tripped:
            return
        bad = loss is not None and not bool(torch.isfinite(torch.as_tensor(loss)).all())
        # every rank must skip the same steps, or the next gradient all-reduce waits forever
        if not any_rank(bad, pl_module.device):
            return
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        self.tripped = True
        self.diverged = {"epoch": trainer.current_epoch, "step": batch_idx, "lr": lr}
        if self.mode == "stop":
            trainer.should_stop = True


def make_trainer(run_dir: Path, max_epochs: int, callbacks: list, progress: bool = True,
                 accelerator: str = "auto", on_divergence: str = "stop",
                 processes: Processes | None = None, find_unused: bool = False) -> pl.Trainer:
    """A Trainer on ``accelerator`` (see :func:`resolve_accelerator`) that checkpoints
    ``run_dir/checkpoints/last.ckpt`` after every epoch.

    Checkpoints are written at the end of the training epoch, after every other callback
    (Lightning runs checkpoint callbacks last), so they hold the decisions of that epoch.
    ``on_divergence`` is the :class:`DivergenceGuard` mode: ``stop`` or ``skip``.
    ``processes``: devices, nodes, strategy and precision (:mod:`alphaprune.parallel`);
    ``find_unused``: parameters may get no gradient in a step (DDP must then look for them).
    """
    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1,
                           save_on_train_epoch_end=True, enable_version_counter=False)
    cbs = [DivergenceGuard(on_divergence), *callbacks, ckpt] + ([Progress()] if progress else [])
    with warnings.catch_warnings():  # --accelerator cpu on a GPU machine is a choice
        warnings.filterwarnings("ignore", ".*GPU available but not used.*")
        return pl.Trainer(accelerator=resolve_accelerator(accelerator),
                          **(processes or Processes()).trainer_kwargs(SafeCheckpointIO(), find_unused),
                          max_epochs=max_epochs, callbacks=cbs, use_distributed_sampler=False,
                          logger=tensorboard_logger(run_dir), enable_model_summary=False,
                          num_sanity_val_steps=0, enable_progress_bar=progress,
                          default_root_dir=str(run_dir), deterministic=False)


def tensorboard_logger(run_dir: Path):
    """A TensorBoard logger writing to ``run_dir/tensorboard`` when the optional
    ``tensorboard`` package is installed (``pip install alphaprune[tensorboard]``), else None.
    The CSV files are written either way."""
    from lightning.fabric.loggers.tensorboard import _TENSORBOARD_AVAILABLE

    if not _TENSORBOARD_AVAILABLE:
        return False
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(str(run_dir), name="tensorboard", version="", default_hp_metric=False)


@contextlib.contextmanager
def threads_kept():
    """Put torch's thread count and ``OMP_NUM_THREADS`` back as they were: Lightning's DDP
    setup sets both for the process where the environment does not
    (``_set_num_threads_if_needed``), which in a caller's process would outlast the run."""
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env


def fit(trainer: pl.Trainer, module: pl.LightningModule, train_loader, val_loader,
        ckpt_path: Path | None = None) -> None:
    """``trainer.fit`` with the noise of CPU-only runs silenced. Wherever it trained, the
    module is back on the CPU afterwards (Lightning's teardown moves it; the teacher, which
    is not a child module, moves back in ``ClassifierModule.on_fit_end``). The process's
    thread count is the same afterwards (:func:`threads_kept`)."""
    with warnings.catch_warnings(), threads_kept():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*GPU available but not used.*")
        warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
        warnings.filterwarnings("ignore", ".*The number of training batches .*")
        warnings.filterwarnings("ignore", ".*is a plain iterable.*")
        warnings.filterwarnings("ignore", ".*treespec, LeafSpec.*")  # Lightning vs torch 2.13
        try:
            trainer.fit(module, train_loader, val_loader,
                        ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
        except ValueError as e:  # torch's BatchNorm on a batch of one image
            if not str(e).startswith("Expected more than 1 value per channel when training"):
                raise
            raise UserError("a training batch holds one image, and BatchNorm cannot train on "
                            "one: use --batch-size 2 or more") from e
        except SystemExit as e:  # Lightning turns Ctrl-C into exit(1) after its teardown
            if not trainer.interrupted:
                raise
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt from e
    torch.set_grad_enabled(True)
