"""``alphaprune prune``: objective selection from a pretrained model to a fused compact one."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from alphaprune.allocator import allocator_state
from alphaprune.blend import BlendedNet, fuse
from alphaprune.blend.branch import HANDOVER_MODES
from alphaprune.blend.init import BRANCH_INITS, IMPORTANCE_CRITERIA, init_branches
from alphaprune.blend.widths import check_width_options, narrowest
from alphaprune.data import normalize
from alphaprune.errors import OutOfBudget, Unreachable, UserError, as_config, require_finite
from alphaprune.folds import is_folds_run, prune_folds
from alphaprune.graph import CostModel, find_units, has_sums, keep_whole
from alphaprune.graph.units import kept_units, unit_groups
from alphaprune.modelfile import ModelFile, check_storable, load_checkpoint, model_io, save_model
from alphaprune.models.user import GRAPH_ARCH
from alphaprune.openmp import wait_policy
from alphaprune.parallel import PLACEMENT, Processes, hardware, is_leader
from alphaprune.pipeline import (
    DataConfig,
    absolute_paths,
    check_compatible,
    check_splits,
    load_data,
    loaders,
    seen_test_images,
    split_meta,
    split_scores,
)
from alphaprune.plan import (
    TARGET_OPTIONS,
    WidthTarget,
    auto_train_size,
    check_solver,
    search_data,
    solve_target,
)
from alphaprune.recipe import Budget, check_recipe, choose_feature_distill, resolve_recipe
from alphaprune.report.headline import SCHEMA, headline, model_block
from alphaprune.report.page import measure_side_by_side, write_report
from alphaprune.report.runs import read_csv
from alphaprune.report.size import count_flops, count_params
from alphaprune.rundir import finish, pending, prepare_run_dir, releasing_run_dirs, write_config, write_json
from alphaprune.rundir import recorded as recorded_config
from alphaprune.schedules import make_scheduler
from alphaprune.scope import isolated
from alphaprune.speedup import measured_speedup
from alphaprune.train.blend_module import BlendModule
from alphaprune.train.callbacks import MetricsCSV
from alphaprune.train.controller import FINAL_SCHEDULES, PhaseController
from alphaprune.train.engine import fit, make_trainer, resolve_accelerator
from alphaprune.train.features import OriginalNet, compared_units
from alphaprune.train.module import OptimConfig

__all__ = ["PruneConfig", "prune", "checked_config", "fusion_error"]


@dataclass
class PruneConfig:
    """Settings of ``alphaprune prune`` (all written to the run's ``config.yaml``)."""

    checkpoint: str = ""
    model: str | None = None          # registry name or FILE.py:FACTORY, for a raw state_dict
    model_kwargs: dict = field(default_factory=dict)   # arguments of a user model's factory
    prune: float | None = None        # fraction of the parameters to remove (0.65 if no target)
    flops: float | None = None        # or: fraction of the FLOPs to remove (at the data's size)
    speedup: float | None = None      # or: run this many times faster than the original
    latency_batch: int = 1            # ... at this batch size, on this machine's threads
    # explicit unit widths instead of the target's solver
    widths: list[int] | None = None
    # widths a measuring solver chose (--speedup, sensitivity, auto) with the settings they
    # were solved for: a resume or a --config repeat with those settings builds the same
    # network without measuring again; changed settings solve anew
    solved: dict | None = None
    round_to: int = 8                 # widths in multiples of 8 run faster on CPU (measured)
    # units kept whole, by name pattern (fnmatch; graph.units.keep_whole): the target is
    # met by cutting the others harder
    keep: list[str] | None = None
    # cut the residual streams too (every conv writing into a chain of sums keeps one set
    # of channels): without it a ResNet's stream convs, shortcuts and stem keep their width;
    # None: the target's measured default (DEFAULT_STREAMS), recorded as a bool
    streams: bool | None = None
    # None: the measured default of the target (DEFAULT_BALANCE), recorded as a number
    balance: float | None = None
    # ratio (one keep ratio, tilted by balance), sensitivity (cut where the validation loss
    # rises least per unit of cost) or auto (of those, the allocation whose whole cut keeps
    # the most validation accuracy); None: the target's measured default (DEFAULT_SOLVER)
    solver: str | None = None
    search_size: int = 1000           # validation images the sensitivity solver scores on
    # the auto solver trains a copy of each candidate's cut network this many steps (batch
    # AUTO_BATCH) before scoring it; 0 scores the cut untrained. Off: 40 steps ranked no
    # better than the untrained score on the cells measured (BENCHMARKS.md section 14)
    auto_steps: int = 0
    scheduler: str = "step"
    step_size: float | None = None
    decay_rate: float | None = None
    mu: float | None = None
    factor: float | None = None
    cooldown: int | None = None
    threshold: float = 0.015
    patience: int = 3
    min_delta: float = 0.0
    max_epochs_per_phase: int = 30
    final_patience: int | None = None
    final_max_epochs: int | None = None
    final_lr: float | None = None
    # lr of the alpha = 0 phase: cosine to 0, constant, onecycle; None: the recipe's
    final_schedule: str | None = None
    # the alpha = 0 phase may also take the epochs of max_total_epochs that the alpha > 0
    # phases left by stopping early (not measured at the full budget yet: off)
    final_takes_rest: bool = False
    # an exponential moving average of the weights in the alpha = 0 phase, time constant in
    # epochs (PhaseController); 0: off; None: the recipe's (alphaprune.recipe.FINAL_EMA for
    # the hand-over, off for onecycle), recorded as a number
    final_ema: float | None = None
    # lr ramp at the start of every phase (PhaseController): +14 points at 90% with the
    # exponential schedule, -0.3 to +1.1 with step (measured, BENCHMARKS.md section 6.3)
    warmup_steps: int = 20
    max_total_epochs: int = 1000
    # handover (alpha phases, then alpha = 0) or onecycle (straight to alpha = 0, one lr
    # cycle over the budget); None: the measured default for the budget (alphaprune.recipe)
    recipe: str | None = None
    recipe_reason: str | None = None  # why the run has its recipe (recorded with it)
    train_original: bool = True
    # defaults from the measured ablation (BENCHMARKS.md): stochastic + select + distillation;
    # select ends above lstsq at 35/65/90% (+0.5/+0.4/+3.1, section 6.5) although lstsq
    # starts far higher; l1 channels beat |BN gamma| (+1 to +13 points, section 6.4)
    handover: str = "stochastic"
    branch_init: str = "select"
    importance: str = "l1"
    calib_size: int = 512             # images of the train split used by lstsq / act init
    monitor: str = "auto"             # auto: val_loss for blend, ship_val_loss otherwise
    distill: float = 0.7              # weight of distillation from the pretrained network
    temperature: float = 4.0
    # weight of feature distillation: each unit's output held to the pretrained network's
    # (alphaprune.train.features); 0: off; None: the measured default for the run's budget
    # (alphaprune.recipe.choose_feature_distill), recorded with the run
    feature_distill: float | None = None
    max_acc_drop: float | None = None # guarded alpha steps (see PhaseController)
    max_retries: int = 3
    channels_last: bool = True
    accelerator: str = "auto"         # auto (a CUDA GPU when visible), cpu or gpu
    devices: int = 1                  # processes per node (alphaprune.parallel)
    num_nodes: int = 1
    strategy: str = "auto"            # auto or ddp
    precision: str = "32-true"        # 32-true, bf16-mixed or 16-mixed (GPU)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=0.01, schedule="constant"))
    data: dict = field(default_factory=dict)   # api.DataConfig as a dict

    def target(self) -> tuple[str, float]:
        """``("params" | "flops" | "latency", fraction to remove)``: the run's one target
        (``--speedup S`` removes ``1 - 1/S`` of the latency)."""
        if self.speedup is not None:
            return "latency", 1.0 - 1.0 / self.speedup if self.speedup > 0 else -1.0
        if self.flops is not None:
            return "flops", self.flops
        return "params", DEFAULT_PRUNE if self.prune is None else self.prune


DEFAULT_PRUNE = 0.65
# --balance by target. Parameters: 1 (cut the wide late layers, keep the narrow early ones):
# at equal parameters +5.3 / +8.5 points at 65 / 90% over 0 with 8 epochs on 5,000 images,
# +0.5 / +3.4 with 30 on 40,000 (BENCHMARKS.md sections 6.6, 5.2). FLOPs: 0 (every layer
# the same share): at equal FLOPs it kept 1.2-6x the parameters of 1 and led by 2 to 7 points
# on VGG-16/4 and resnet20, within a point at VGG-16/4's 50% (section 8). Latency follows the FLOPs
# (a measured speed-up was not yet compared at equal latency).
DEFAULT_BALANCE = {"params": 1.0, "flops": 0.0, "latency": 0.0}
# --solver by target. FLOPs: auto, which of the uniform, balance-1 and sensitivity widths
# picked the one that trained best in all four cells measured at equal FLOPs (VGG-16/4 50 /
# 75%, resnet20 50 / 65%): +1.4 / +0.5 points over uniform at 50%, uniform itself at the
# larger cuts (BENCHMARKS.md section 10). Latency follows the FLOPs. Parameters: the ratio
# solver with balance 1 (auto chose the same widths at VGG-16/4 65 / 90%, and costs the
# measuring before training).
DEFAULT_SOLVER = {"params": "ratio", "flops": "auto", "latency": "auto"}
# --prune-streams by target. FLOPs: on. On resnet20 auto keeps the streams whole at 50%
# (as good as without the option: 0.7927 against 0.7924), and cuts them at 65% (the uniform
# widths, tied with the sensitivity ones on the search images and the faster: 0.7652
# against 0.7502 without the option; BENCHMARKS.md section 16) and at 75%, which the inner
# convs alone cannot reach (+7.5 points over Torch-Pruning there; section 13).
# Parameters: off (balance 1 with the streams scored 0.7894 against 0.7930 without, one
# seed). Latency: on. resnet20 reaches 2x at batch 128 only with them (1.74x at most
# without; section 13), and at --speedup 1.5 the runs with them ended faster at the same
# accuracy (1.65-1.74x and 0.7678 against 1.45-1.55x and 0.7659, two seeds; section 16).
DEFAULT_STREAMS = {"params": False, "flops": True, "latency": True}


def resolve_streams(streams: bool | None, measure: str) -> bool:
    """``--prune-streams`` as a run records it: the given value, or the target's measured
    default (:data:`DEFAULT_STREAMS`)."""
    if streams is not None:
        return bool(streams)
    return DEFAULT_STREAMS[measure]


def resolve_solver(solver: str | None, balance: float | None, measure: str) -> dict:
    """``{"solver", "balance"}`` as a run records them: a given ``balance`` means the ratio
    solver; what is not given is the target's measured default (balance is None under
    the sensitivity and auto solvers, which have no use for it).

    Raises:
        UserError: ``--balance`` with ``--solver sensitivity`` or ``auto``.
    """
    if solver is None:
        solver = "ratio" if balance is not None else DEFAULT_SOLVER[measure]
    check_solver(solver)
    if solver != "ratio":
        if balance is not None:
            raise UserError(f"--balance tilts the ratio solver's widths; --solver {solver} "
                            "chooses them from measurements: pass one of the two")
        return {"solver": solver, "balance": None}
    return {"solver": solver, "balance": DEFAULT_BALANCE[measure] if balance is None else balance}


# What a run recorded before each option existed did: a resume or a --config repeat of it
# with today's default would build another network than it did (uniform widths before
# --balance, the ratio solver before --solver, whole streams before --prune-streams,
# untrained auto scores before --auto-steps, no feature term before --feature-distill).
RECORDED_BEFORE = {"balance": 0.0, "solver": "ratio", "streams": False,
                   "final_takes_rest": False, "auto_steps": 0, "recipe": "handover",
                   "feature_distill": 0.0, "final_ema": 0.0, "keep": None}


def _config_from_dict(d: dict) -> PruneConfig:
    d = {**RECORDED_BEFORE, **d}
    d["optim"] = OptimConfig(**d["optim"])
    return PruneConfig(**d)


@torch.no_grad()
def fusion_error(blended: BlendedNet, fused: torch.nn.Module, input_shape) -> float:
    """max |fused - blended at alpha=0| / max |blended| on random input, eval mode."""
    alpha = float(blended.alpha)
    blended.eval().set_alpha(0.0)
    fused.eval()
    x = torch.randn(8, *input_shape, generator=torch.Generator().manual_seed(0))
    a, b = blended(x), fused(x)
    blended.set_alpha(alpha)
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-12))


def _validate(cfg: PruneConfig) -> None:
    require_finite(cfg)
    if cfg.final_schedule is not None and cfg.final_schedule not in FINAL_SCHEDULES:
        raise UserError(f"unknown --final-schedule '{cfg.final_schedule}': use "
                        f"{', '.join(FINAL_SCHEDULES)}")
    if sum(v is not None for v in (cfg.prune, cfg.flops, cfg.speedup)) > 1:
        raise UserError("one target per run: pass --prune P (parameters), --flops F (FLOPs) or "
                        "--speedup S (measured latency), not several")
    if cfg.speedup is not None and not cfg.speedup > 1.0:
        raise UserError(f"--speedup must be above 1, got {cfg.speedup}: e.g. 2 asks for a model "
                        "twice as fast as the original")
    if cfg.latency_batch < 1:
        raise UserError(f"--latency-batch must be >= 1, got {cfg.latency_batch}")
    if cfg.keep is not None and not (isinstance(cfg.keep, list) and all(
            isinstance(k, str) and k.strip() and "," not in k for k in cfg.keep)):
        raise UserError(f"--keep takes unit names or patterns, a list or 'a,b' (no empty name, "
                        f"no comma inside one), got {cfg.keep!r}")
    if (cfg.speedup is not None and cfg.devices * cfg.num_nodes > 1 and cfg.widths is None
            and (cfg.solved or {}).get("for") != solved_for(cfg)):
        # each process would time the machine itself and could build another network
        raise UserError("--speedup times models on this machine, which several processes would "
                        "each do differently: search the widths with one process, then repeat "
                        "its config.yaml with --config (or pass them with --widths)")
    measure, fraction = cfg.target()
    if not 0.0 < fraction < 1.0:
        raise UserError(f"{TARGET_OPTIONS[measure]} must be between 0 and 1 (exclusive), got "
                        f"{fraction}: e.g. 0.65 removes 65% of the "
                        f"{'FLOPs' if measure == 'flops' else 'parameters'}")
    if cfg.handover not in HANDOVER_MODES:
        raise UserError(f"unknown --handover '{cfg.handover}': use one of {', '.join(HANDOVER_MODES)}")
    if cfg.branch_init not in BRANCH_INITS:
        raise UserError(f"unknown --branch-init '{cfg.branch_init}': use one of "
                        f"{', '.join(BRANCH_INITS)}")
    if cfg.importance not in IMPORTANCE_CRITERIA:
        raise UserError(f"unknown --importance '{cfg.importance}': use one of "
                        f"{', '.join(IMPORTANCE_CRITERIA)}")
    if cfg.calib_size < 2:  # BN statistics need two values per channel
        raise UserError(f"--calib-size must be >= 2, got {cfg.calib_size}")
    if not 0.0 <= cfg.distill <= 1.0:
        raise UserError(f"--distill must be in [0, 1], got {cfg.distill}")
    if cfg.temperature <= 0:
        raise UserError(f"--temperature must be > 0, got {cfg.temperature}")
    if cfg.feature_distill is not None and cfg.feature_distill < 0:  # NaN, inf: require_finite
        raise UserError(f"--feature-distill must be >= 0, got {cfg.feature_distill}")
    if cfg.max_acc_drop is not None and not 0.0 <= cfg.max_acc_drop < 1.0:
        raise UserError(f"--max-acc-drop must be in [0, 1), got {cfg.max_acc_drop}")
    if cfg.warmup_steps < 0:
        raise UserError(f"--warmup-steps must be >= 0, got {cfg.warmup_steps}")
    if cfg.final_ema is not None and not cfg.final_ema >= 0:
        raise UserError(f"--final-ema must be a number of epochs >= 0 (0: off), got {cfg.final_ema}")
    if cfg.max_retries < 0:
        raise UserError(f"--max-retries must be >= 0, got {cfg.max_retries}")
    for name in ("patience", "max_epochs_per_phase", "max_total_epochs"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    for name in ("final_patience", "final_max_epochs"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if cfg.min_delta < 0:
        raise UserError(f"--min-delta must be >= 0, got {cfg.min_delta}")
    if cfg.monitor not in ("auto", "val_loss", "ship_val_loss"):
        raise UserError(f"unknown --monitor '{cfg.monitor}': use auto, val_loss or ship_val_loss")
    cfg.optim.validate()
    Processes.of(cfg).validate(resolve_accelerator(cfg.accelerator),
                               DataConfig(**cfg.data).batch_size)
    check_solver(cfg.solver)
    check_width_options(cfg.round_to, cfg.balance or 0.0)
    if cfg.search_size < 1:
        raise UserError(f"--search-size must be >= 1, got {cfg.search_size}")
    if cfg.auto_steps < 0:
        raise UserError(f"--auto-steps must be >= 0, got {cfg.auto_steps}")
    if cfg.final_takes_rest and cfg.max_total_epochs == PruneConfig.max_total_epochs:
        raise UserError("--final-takes-rest fills the budget the alpha > 0 phases leave: pass "
                        "--max-total-epochs N with it")
    if cfg.final_lr is not None and cfg.final_lr <= 0:
        raise UserError(f"--final-lr must be > 0, got {cfg.final_lr}")
    check_recipe(cfg, budget_given=_budget_given(cfg))


@dataclass
class _Source:
    """What a prune run starts from: the data, its splits and the pretrained model."""

    ds: object
    splits: object
    data_cfg: DataConfig
    mf: object
    mean: list
    std: list
    seen: dict | None = None   # test images the pretrained model trained on (seen_test_images)

    @property
    def model(self):
        return self.mf.model

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.ds.x.shape[1:])


@dataclass
class _Plan:
    structure: object
    base_widths: list[int]
    widths: list[int]
    search: dict | None = None   # how the widths were found (plan.solve_target); None: given


def _settings(cfg: PruneConfig, out: Path, resume: bool, max_total_epochs):
    """The settings that apply (a resume's recorded ones), validated; nothing is written."""
    ckpt, recorded = None, None
    if resume:
        out, ckpt = prepare_run_dir(out, "pruned.pt", resume=True)
        recorded = recorded_config(out, "prune")
        # where and on how many processes it runs is the resuming machine's choice
        cfg = replace(_config_from_dict(recorded), **hardware(cfg, PLACEMENT))
    if max_total_epochs is not None:
        cfg = replace(cfg, max_total_epochs=max_total_epochs)
    return checked_config(cfg), out, ckpt, recorded


def checked_config(cfg: PruneConfig) -> PruneConfig:
    """``cfg`` as a run records it (the default target, the target's solver), every option
    checked; nothing is read or written.

    Raises:
        UserError: an option is out of range or does not go with another (one line).
    """
    if cfg.prune is None and cfg.flops is None and cfg.speedup is None:  # the default, recorded
        cfg = replace(cfg, prune=DEFAULT_PRUNE)
    # the API takes a DataConfig or a dict, an OptimConfig or a dict, str or Path; files as
    # absolute paths: a resume from another folder reads the same ones
    cfg = absolute_paths(replace(cfg, data=asdict(as_config(cfg.data or {}, DataConfig, "data")),
                                 optim=as_config(cfg.optim, OptimConfig, "optim")))
    cfg = replace(cfg, **resolve_solver(cfg.solver, cfg.balance, cfg.target()[0]))
    if isinstance(cfg.keep, (list, tuple)):  # the API's list or tuple; none kept is no keep
        cfg = replace(cfg, keep=list(cfg.keep) or None)
    _validate(cfg)
    _scheduler(cfg)  # its options are checked before anything is written
    return cfg


def _scheduler(cfg: PruneConfig):
    return make_scheduler(cfg.scheduler, step_size=cfg.step_size, decay_rate=cfg.decay_rate,
                          mu=cfg.mu, factor=cfg.factor, cooldown=cfg.cooldown,
                          patience=cfg.patience, threshold=cfg.threshold,
                          min_delta=cfg.min_delta)


def _load(cfg: PruneConfig, model: torch.nn.Module | None = None) -> _Source:
    """The data and the pretrained model (``model``, or ``cfg.checkpoint``), checked against
    each other."""
    data_cfg = DataConfig(**cfg.data)
    ds, splits = load_data(data_cfg)
    ds_mean, ds_std = ds.mean_std()
    if model is not None:
        mf = ModelFile(model, GRAPH_ARCH, model_io(model), [], [], list(ds.classes))
    else:
        mf = load_checkpoint(cfg.checkpoint, cfg.model, ds_mean, ds_std, ds.classes,
                             cfg.model_kwargs)
    check_compatible(mf, ds, cfg.checkpoint or "the model")
    if mf.arch == GRAPH_ARCH:
        check_storable(mf.model)  # original.pt and pruned.pt are written as its graph
    check_splits(splits)
    return _Source(ds, splits, data_cfg, mf, mf.mean or ds_mean, mf.std or ds_std,
                   seen_test_images(mf.meta, data_cfg, ds, splits))


def _plan(cfg: PruneConfig, src: _Source, note: Callable[[str], None] | None = None) -> _Plan:
    """The prunable units (traced) and the widths that meet the target: parameters or FLOPs
    exact from the traced graph at the data's input size, a speed-up by a measured search
    (:mod:`alphaprune.speedup`), or the recorded ``widths``. ``note``: where the search's
    progress lines go."""
    example = normalize(torch.as_tensor(src.ds.x[src.splits.train[:2]]), src.mean, src.std)
    structure = keep_whole(find_units(src.model, example, streams=cfg.streams), cfg.keep)
    if not structure.units:
        raise UserError(f"{src.mf.arch} has no prunable unit: "
                        + "; ".join(f"{s.name}: {s.reason}" for s in structure.skipped[:3]))
    base_w = [u.width for u in structure.units]
    search = None
    if cfg.widths is not None:
        widths = _checked_widths(cfg.widths, structure, src.mf.arch)
    elif cfg.solved is not None and cfg.solved.get("for") == solved_for(cfg):
        widths = _checked_widths(cfg.solved["widths"], structure, src.mf.arch)
        search = cfg.solved.get("search")
    else:
        try:
            widths, search = solve_target(width_target(cfg), structure, src.model,
                                          None if src.mf.arch == GRAPH_ARCH else src.mf.arch,
                                          src.shape, _search_data(cfg, src), src.data_cfg.cache_dir,
                                          note=note)
        except Unreachable as e:
            reach = _streams_reach(cfg, src.model, example)
            if reach is False:
                raise
            raise Unreachable(f"{e}; or add --prune-streams, which cuts the residual streams "
                              f"too and {'reaches it' if reach else 'may reach it'}") from e
    return _Plan(structure, base_w, widths, search)


def _streams_reach(cfg: PruneConfig, model, example) -> bool | None:
    """Whether ``--prune-streams`` would reach a target this run cannot: for parameters and
    FLOPs exactly; for a speed-up ``None`` (it could, untimed) where the model has streams."""
    measure, fraction = cfg.target()
    if cfg.streams:
        return False
    try:
        structure = keep_whole(find_units(model, example, streams=True), cfg.keep)
    except UserError:  # a kept name is a stream writer there, not a unit: cannot tell
        return None
    if not any(u.kind == "stream" for u in structure.units):
        return False
    if measure == "latency":
        return None
    cost = CostModel(structure)
    count = cost.params if measure == "params" else cost.flops
    base = [u.width for u in structure.units]
    return count(narrowest(base, cfg.round_to, unit_groups(structure))) <= (1.0 - fraction) * count(base)


def planned(cfg: PruneConfig, src: _Source,
            note: Callable[[str], None] | None = None) -> tuple[PruneConfig, _Plan]:
    """The plan (:func:`_plan`) and the settings that rebuild it: widths a measuring solver
    chose are recorded with what they were measured for, so that a resume or a repeat
    builds the same network without measuring again (and keeps the record for its summary).
    ``note``: where the width search's progress lines go."""
    cfg = replace(cfg, streams=resolve_streams(cfg.streams, cfg.target()[0]))
    plan = _plan(cfg, src, note)
    comparable = bool(compared_units(plan.structure))  # by the feature term
    if cfg.feature_distill and not comparable:
        raise UserError("--feature-distill has no unit to compare: every prunable unit of this "
                        "model has dropout after its activation; leave the option out")
    cfg = _with_recipe(cfg, src, plan, comparable)
    if plan.search is not None and (cfg.speedup or cfg.solver != "ratio"):
        cfg = replace(cfg, solved={"for": solved_for(cfg), "widths": plan.widths,
                                   "search": plan.search})
    return cfg, plan


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _drop_hooks(model: torch.nn.Module) -> int:
    """Remove the forward and backward hooks of ``model`` (a copy of the caller's module),
    returning how many: a stored graph keeps none, so a run with them could not be repeated
    from its own files, and a caller's hook that collects outputs would fill up."""
    n = 0
    for m in model.modules():
        for name in _HOOKS:
            hooks = getattr(m, name, None)
            if hooks:
                n += len(hooks)
                hooks.clear()
    return n


# how far the solved widths may land from a parameter or FLOP target (README)
TARGET_TOLERANCE = {"params": 0.005, "flops": 0.01}


def target_gap(cfg: PruneConfig, plan: _Plan) -> str | None:
    """Where the solved widths remove a share of the parameters or FLOPs further from the
    target than :data:`TARGET_TOLERANCE` (units too narrow for ``--round-to`` steps to come
    closer), what was asked against what the widths give, and the option that would come
    closer; else None."""
    measure, fraction = cfg.target()
    if measure not in TARGET_TOLERANCE or cfg.widths is not None:
        return None
    cost = CostModel(plan.structure)
    count = cost.params if measure == "params" else cost.flops
    got = 1.0 - count(plan.widths) / count(plan.base_widths)
    if abs(got - fraction) <= TARGET_TOLERANCE[measure]:
        return None
    fix = (f"; --round-to 1 may come closer (widths in steps of {cfg.round_to} are all this "
           "model's narrow units allow)" if cfg.round_to > 1 else "")
    return (f"the widths remove {got:.1%} of the {measure}, not the {fraction:.4g} asked, the "
            f"nearest they can{fix}")


def _budget_given(cfg: PruneConfig) -> bool:
    return cfg.max_total_epochs != PruneConfig.max_total_epochs


def _with_recipe(cfg: PruneConfig, src: _Source, plan: _Plan, comparable: bool) -> PruneConfig:
    """The settings with the run's recipe (:mod:`alphaprune.recipe`) applied and recorded:
    the given one, or the measured default for this budget and cut; likewise the feature
    distillation weight (``comparable``: the model has a unit for it to compare)."""
    cost = CostModel(plan.structure)
    removed = 1.0 - cost.params(plan.widths) / cost.params(plan.base_widths)
    budget = Budget(cfg.max_total_epochs if _budget_given(cfg) else None,
                    len(src.splits.train), removed, cfg.target()[0], has_sums(plan.structure))
    cfg = replace(cfg, **resolve_recipe(cfg, budget))
    if cfg.feature_distill is None:  # recorded resolved, so a resume keeps it
        weight, why = choose_feature_distill(budget, comparable)
        reason = cfg.recipe_reason + (f"; --feature-distill {weight:g} ({why})" if weight else "")
        cfg = replace(cfg, feature_distill=weight, recipe_reason=reason)
    return cfg


def _search_data(cfg: PruneConfig, src: _Source):
    """What the sensitivity and auto solvers score on (None for the ratio solver)."""
    if cfg.solver == "ratio":
        return None
    return search_data(src.ds, src.splits, cfg.search_size, src.mean, src.std,
                       src.data_cfg.seed, train_size=auto_train_size(cfg.solver, cfg.auto_steps))


def solved_for(cfg: PruneConfig) -> dict:
    """The settings a measuring solver's widths depend on (the data and model aside)."""
    measure, fraction = cfg.target()
    return {"measure": measure, "fraction": fraction, "solver": cfg.solver,
            "round_to": cfg.round_to, "balance": cfg.balance, "importance": cfg.importance,
            # only when set: the widths recorded before --prune-streams existed still match
            **({"streams": True} if cfg.streams else {}),
            **({"keep": list(cfg.keep)} if cfg.keep else {}),
            **({"auto_steps": cfg.auto_steps} if cfg.solver == "auto" and cfg.auto_steps else {}),
            "latency_batch": cfg.latency_batch, "search_size": cfg.search_size}


def width_target(cfg: PruneConfig) -> WidthTarget:
    """The run's target and solver settings for :func:`alphaprune.plan.solve_target`."""
    measure, fraction = cfg.target()
    return WidthTarget(measure, fraction, cfg.solver, cfg.round_to, cfg.balance or 0.0, cfg.importance,
                       cfg.speedup, cfg.latency_batch, cfg.auto_steps)


def _checked_widths(widths: list[int], structure, arch: str) -> list[int]:
    base = [u.width for u in structure.units]
    if len(widths) != len(base) or not all(1 <= w <= b for w, b in zip(widths, base)):
        kept = f" (besides the {n} --keep keeps whole)" if (n := len(kept_units(structure))) else ""
        raise UserError(f"--widths {','.join(map(str, widths))} does not fit {arch}: it has "
                        f"{len(base)} prunable units{kept} of widths {','.join(map(str, base))}; "
                        "give one width per unit, each between 1 and the unit's own")
    for u, w in zip(structure.units, widths):
        if w % u.group:
            raise UserError(f"--widths gives unit {u.name} {w} channels, but its grouped convs "
                            f"are cut whole groups of {u.group} channels: give it a multiple "
                            f"of {u.group}")
    return list(widths)


def _hand_over(cfg: PruneConfig, src: _Source, plan: _Plan, out: Path, ckpt, before: dict,
               progress: bool, callbacks) -> tuple[BlendedNet, PhaseController]:
    """Branch every unit, initialise the branches and train through the alpha phases; the
    trained network and its controller (the phases' history, the live weights' best epoch)."""
    ds, splits, data_cfg = src.ds, src.splits, src.data_cfg
    scheduler = _scheduler(cfg)
    torch.manual_seed(data_cfg.run_seed)
    blended = BlendedNet(plan.structure, plan.widths, train_original=cfg.train_original,
                         handover=cfg.handover)
    teacher = None  # the pretrained network, copied before anything trains it
    if cfg.feature_distill:  # with the student's units, to compare their outputs
        teacher = OriginalNet(blended)
    elif cfg.distill > 0:
        teacher = copy.deepcopy(src.model).eval()
    # same seed, same draw: a resumed run gets the same calibration images
    calib_idx = splits.train[torch.randperm(len(splits.train))[:cfg.calib_size].numpy()]
    calib = normalize(torch.as_tensor(ds.x[calib_idx]), src.mean, src.std)
    if ckpt is None:  # a resumed run restores every weight from its checkpoint
        init_branches(blended, cfg.branch_init, cfg.importance, calib=calib)
    monitor = cfg.monitor
    if monitor == "auto":
        monitor = "val_loss" if cfg.handover == "blend" else "ship_val_loss"
    if cfg.channels_last:
        blended = blended.to(memory_format=torch.channels_last)
    # calib also re-measures the all-branch BN statistics for scoring while alpha > 0
    module = BlendModule(blended, cfg.optim, seed=data_cfg.run_seed, calib=calib, teacher=teacher,
                         distill=cfg.distill, temperature=cfg.temperature,
                         features=cfg.feature_distill)
    controller = PhaseController(
        scheduler, out / "phases.csv", patience=cfg.patience, min_delta=cfg.min_delta,
        max_epochs_per_phase=cfg.max_epochs_per_phase, final_patience=cfg.final_patience,
        final_max_epochs=cfg.final_max_epochs, lr=cfg.optim.lr, final_lr=cfg.final_lr,
        num_classes=ds.num_classes, monitor=monitor, max_acc_drop=cfg.max_acc_drop,
        max_retries=cfg.max_retries, final_schedule=cfg.final_schedule,
        total_epochs=cfg.max_total_epochs if cfg.final_takes_rest else None,
        warmup_steps=cfg.warmup_steps, final_ema=cfg.final_ema,
        # the first phase of the mixture is held to the pretrained accuracy; the all-branch
        # network (what stochastic mode evaluates) starts lower by design: no reference
        initial_acc=(before["val_acc"] if monitor == "val_loss" and cfg.handover != "stochastic"
                     else None))
    module.controller = controller
    csv_cb = MetricsCSV(out / "metrics.csv", extra=lambda tr, m: {"phase": controller.phase})
    tr, va = loaders(ds, splits, src.mean, src.std, data_cfg.batch_size, data_cfg.run_seed,
                     cfg.channels_last)
    # a non-finite loss ends the epoch; the controller restores the phase's best weights
    # find_unused: a stochastic step runs one path per unit, the other gets no gradient
    trainer = make_trainer(out, cfg.max_total_epochs, [csv_cb, controller, *(callbacks or [])],
                           progress, cfg.accelerator, on_divergence="skip",
                           processes=Processes.of(cfg), find_unused=True)
    blended.train()  # evaluating the original left its modules in eval mode
    fit(trainer, module, tr, va, ckpt)
    if not controller.done:
        raise OutOfBudget(f"run {out} stopped before the alpha = 0 phase finished "
                        f"(--max-total-epochs {cfg.max_total_epochs}): continue it with "
                        f"'alphaprune prune --out {out} --resume --max-total-epochs N' "
                        f"(N > {cfg.max_total_epochs})")
    return module.model.to(memory_format=torch.contiguous_format), controller


def _measure(cfg: PruneConfig, src: _Source, plan: _Plan, out: Path, blended, fused, before: dict,
             history: list[dict], t0: float) -> dict:
    """Save the fused model, score it beside the original and write the summary."""
    err = fusion_error(blended, fused, src.shape)
    meta = {"source_run": str(out.resolve()), "command": "prune", "pruned_from": str(cfg.checkpoint),
            "split": split_meta(src.data_cfg), "input_shape": list(src.shape),
            "target": dict(zip(("measure", "fraction"), cfg.target()))}
    save_model(pending(out, "pruned.pt"), fused, src.mf.arch, src.mean, src.std,
               src.mf.classes or src.ds.classes, meta)
    after = {"params": count_params(fused), "flops": count_flops(fused, src.shape),
             **split_scores(fused, src.ds, src.splits, src.mean, src.std)}
    # a fresh copy of the original: the blended model trained the loaded one in place
    original = load_checkpoint(cfg.checkpoint, cfg.model, model_kwargs=cfg.model_kwargs).model
    latency = {**measure_side_by_side({"before": original, "after": fused}, src.shape),
               "threads": torch.get_num_threads(), "allocator": allocator_state(),
               "omp_wait": wait_policy()}
    return {
        "arch": src.mf.arch, "target_measure": cfg.target()[0],
        "target_reduction": cfg.target()[1],
        "achieved_reduction": 1.0 - after["params"] / before["params"],
        "achieved_flops_reduction": 1.0 - after["flops"] / before["flops"],
        "params_before": before["params"], "params_after": after["params"],
        "flops_before": before["flops"], "flops_after": after["flops"],
        "test_acc_before": before["test_acc"], "test_acc_after": after["test_acc"],
        "val_acc_before": before["val_acc"], "val_acc_after": after["val_acc"],
        "test_loss_before": before["test_loss"], "test_loss_after": after["test_loss"],
        "val_loss_before": before["val_loss"], "val_loss_after": after["val_loss"],
        "widths_before": plan.base_widths, "widths_after": plan.widths, "fusion_rel_error": err,
        **({"kept_whole": kept_units(plan.structure)} if cfg.keep else {}),
        "solver": cfg.solver, "width_search": plan.search,
        "recipe": cfg.recipe, "recipe_reason": cfg.recipe_reason,
        "phases": history, "epochs": sum(p["epochs"] for p in history),
        "file_bytes_before": Path(cfg.checkpoint).stat().st_size,
        "file_bytes_after": pending(out, "pruned.pt").stat().st_size,
        "latency": latency,
        **({"speedup": _speedup_check(cfg, original, fused, src.shape)} if cfg.speedup else {}),
        **({"test_seen_in_pretraining": src.seen} if src.seen else {}),
        "seconds": round(time.perf_counter() - t0, 2),
        "train_seconds": round(sum(float(r["seconds"]) for r in read_csv(out / "metrics.csv")), 2),
    }


def average_check(cfg: PruneConfig, src: _Source, blended: BlendedNet, arch: str | None,
                  controller: PhaseController, summary: dict) -> dict:
    """What ``--final-ema`` gave on this run: the shipped average beside the live weights of
    the averaged phase's best epoch by their own validation loss (the weights ``--final-ema
    0`` keeps when early stopping takes the same epochs, as onecycle's every-epoch phase
    does), fused and scored on the same splits."""
    twin = copy.deepcopy(blended)
    twin.load_state_dict(controller.live_best_state)
    live = split_scores(fuse(twin, arch), src.ds, src.splits, src.mean, src.std)
    return {"epochs": cfg.final_ema,
            "averaged": {**after_scores(summary), "epoch": controller.history[-1]["best_epoch"]},
            "live": {**live, "epoch": controller.live_best["epoch"]},
            **{f"{k}_gain": _minus(summary[f"{k}_after"], live[k]) for k in ("test_acc", "val_acc")}}


def _minus(a: float | None, b: float | None) -> float | None:
    """``a - b``; None where a split has no images (no test split)."""
    return None if a is None or b is None else a - b


def _with_schema(s: dict) -> dict:
    """The summary with what was gained first, then the shared model blocks
    (:mod:`alphaprune.report.headline`), then the flat keys of earlier versions."""
    lat = s["latency"]
    return {"headline": headline(s), "schema": SCHEMA, "command": "prune",
            "model": model_block(s["params_after"], s["flops_after"], after_scores(s), lat["after"]),
            "original": model_block(s["params_before"], s["flops_before"], before_scores(s),
                                    lat["before"]),
            **s}


def after_scores(s: dict) -> dict:
    """The fused model's split scores from a prune summary's flat keys."""
    return {k: s[f"{k}_after"] for k in ("val_acc", "val_loss", "test_acc", "test_loss")}


def before_scores(s: dict) -> dict:
    """The original model's split scores from a prune summary's flat keys."""
    return {k: s[f"{k}_before"] for k in ("val_acc", "val_loss", "test_acc", "test_loss")}


def _speedup_check(cfg: PruneConfig, original, fused, shape) -> dict:
    """The ``--speedup`` target against the trained, fused model's speed-up at
    ``--latency-batch``, timed side by side as the search timed its candidates
    (:func:`alphaprune.speedup.measured_speedup`, more pairs); the search that chose the
    widths is the summary's ``width_search``."""
    achieved, before, after = measured_speedup(original, fused, shape, cfg.latency_batch,
                                               pairs=80)
    return {"target": cfg.speedup, "achieved": achieved, "batch": cfg.latency_batch,
            "threads": torch.get_num_threads(), "allocator": allocator_state(),
            "omp_wait": wait_policy(), "original_ms": before, "pruned_ms": after,
            "shortfall": max(0.0, 1.0 - achieved / cfg.speedup)}


@releasing_run_dirs
@isolated
def prune(cfg: PruneConfig, out: str | Path, force: bool = False, resume: bool = False,
          progress: bool = True, callbacks: list | None = None,
          max_total_epochs: int | None = None, model: torch.nn.Module | None = None) -> dict:
    """Prune ``cfg.checkpoint`` by ``cfg.prune`` of its parameters (or ``cfg.flops`` of its
    FLOPs) with objective selection.

    Writes to ``out``: ``config.yaml``, ``metrics.csv`` (per epoch), ``phases.csv`` (per
    alpha), ``checkpoints/last.ckpt`` (resume), ``pruned.pt`` (the fused model, a model
    file) and ``summary.json``.

    ``callbacks`` are extra Lightning callbacks (e.g. custom logging). With ``resume``, the
    run's recorded settings apply except ``cfg.accelerator`` (where to run is the resuming
    machine's choice) and ``max_total_epochs`` when given: a new epoch budget, e.g. for a
    run that stopped on its budget before the alpha = 0 phase finished (without ``resume``
    it replaces ``cfg.max_total_epochs``).

    ``model``: prune this ``nn.Module`` (any traceable CNN, already trained) instead of
    ``cfg.checkpoint``; it is saved as ``original.pt`` in the run folder (a graph model
    file), which the run records as its checkpoint, so ``resume`` needs no module. The run
    works on a copy: ``model`` itself is left as it was.

    Several processes (``cfg.devices`` x ``cfg.num_nodes``, :mod:`alphaprune.parallel`) each
    run this whole function; only rank 0 writes, and the other ranks return None after
    training.

    Returns:
        The summary dict (None on a rank other than 0).
    """
    if cfg.data:  # the API takes a DataConfig or a dict of its fields
        cfg = replace(cfg, data=asdict(as_config(cfg.data, DataConfig, "data")))
    if is_folds_run(cfg.data, Path(out), resume):
        if model is not None:
            raise UserError("--folds prunes a checkpoint file: save the model with "
                            "alphaprune.save_model and pass its path as checkpoint")
        return prune_folds(cfg, out, force, resume, progress, callbacks, max_total_epochs)
    t0 = time.perf_counter()
    lead = is_leader()
    if model is not None and resume:
        raise UserError("resume=True continues from the run folder: do not pass model")
    if model is not None:  # the caller's module stays as it was: the run trains a copy,
        # all of it, as a run from a file does (a frozen module trained only its branches,
        # and its own config or a resume then gave another network)
        model = copy.deepcopy(model).requires_grad_(True)
        if (hooks := _drop_hooks(model)) and lead:
            print(f"[prune] note: the model's {hooks} forward/backward hook(s) do not run in "
                  "the pruning run or its files (its copy runs without them, as a resume or "
                  "the saved graph would)", flush=True)
    cfg, out, ckpt, recorded = _settings(cfg, Path(out), resume, max_total_epochs)
    src = _load(cfg, model)                             # load: data, splits, pretrained model
    note = (lambda m: print(f"[prune] {m}", flush=True)) if progress and lead else None
    cfg, plan = planned(cfg, src, note)                 # plan: units and their widths
    if lead and not resume:  # only now that every input checked out may an old run be replaced
        out, ckpt = prepare_run_dir(out, "pruned.pt", force=force, keep=[cfg.checkpoint])
    if model is not None:
        cfg = replace(cfg, checkpoint=str((out / "original.pt").absolute()), model=None)
        if lead:
            save_model(out / "original.pt", model, GRAPH_ARCH, src.mean, src.std,
                       src.ds.classes, {"source": "prune(model=...)", "input_shape": list(src.shape)})
    if lead and (not resume or cfg.max_total_epochs != recorded["max_total_epochs"]):
        # a new budget is recorded too, so a later plain --resume keeps it
        write_config(out, {"command": "prune", "prune": asdict(cfg)})
    if lead:
        print(f"[prune] recipe {cfg.recipe}: {cfg.recipe_reason}", flush=True)
        if (off := target_gap(cfg, plan)) is not None:
            print(f"[prune] warning: {off}", flush=True)
    before = {"params": count_params(src.model), "flops": count_flops(src.model, src.shape),
              **split_scores(src.model, src.ds, src.splits, src.mean, src.std)}
    blended, controller = _hand_over(cfg, src, plan, out, ckpt, before, progress, callbacks)
    if not lead:
        return None  # rank 0 fuses, measures and writes
    arch = None if src.mf.arch == GRAPH_ARCH else src.mf.arch
    fused = fuse(blended, arch)  # fuse
    summary = _measure(cfg, src, plan, out, blended, fused, before, controller.history, t0)
    if controller.live_best_state is not None:  # the average beside the weights it averaged
        summary["final_ema"] = average_check(cfg, src, blended, arch, controller, summary)
    summary = _with_schema(summary)
    write_json(out / "summary.json", summary)
    write_report(out)
    finish(out, "pruned.pt")  # the last file: the run is finished only now
    return summary
