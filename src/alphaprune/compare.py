"""``alphaprune compare``: objective selection against its peers at equal epoch budgets.

From one pretrained model and one data split, for each target fraction of parameters (or,
with ``match="flops"``, of FLOPs; with ``match="latency"``, of the latency measured on this
machine) removed, every method gets the same number of training epochs; the peers are
sized to objective selection's fused model by that measure:

* ``os-<scheduler>``: objective selection with each alpha-scheduler; the epoch budget is
  split between the alpha > 0 phases (early stopping within each) and the alpha = 0 phase;
* ``tp-l1``: Torch-Pruning L1 channel pruning (physical) to the same parameter (or FLOP)
  count, or to the same measured latency, then fine-tuning (``tp_round_to``: its widths
  multiples of that, as objective selection's are);
* ``modelopt-fastnas``: NVIDIA Model Optimizer's FastNAS search (the ``peers`` extra) under
  the same parameter or FLOP budget, then the same fine-tuning;
* ``unstructured``: ``torch.nn.utils.prune`` global L1 to the same number of non-zeros, then
  masked fine-tuning (smaller on paper, not faster);
* ``scratch``: the compact architecture (objective selection's widths) from random init;
* ``kd``: the same architecture trained by distillation from the pretrained model.

Results go to ``OUT/results.jsonl`` (one row per finished method and target), then
``results.csv``, ``results.md`` and ``pareto.png`` (test accuracy against measured latency
and against parameters). Rerunning the same command skips finished rows and
resumes an interrupted method from its checkpoint.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from alphaprune.atomic import atomic_write_text
from alphaprune.baselines import magnitude_unstructured, make_permanent, torch_pruning_l1
from alphaprune.baselines.fastnas import INSTALL_HINT, fastnas_available, modelopt_fastnas
from alphaprune.blend.fuse import fused_architecture
from alphaprune.blend.widths import check_width_options
from alphaprune.compare_folder import (
    RESULTS,
    SETTINGS,
    check_folder,
    predates_settings,
    record_settings,
)
from alphaprune.data import normalize
from alphaprune.errors import UserError, require_finite
from alphaprune.graph import CostModel, find_units, keep_whole
from alphaprune.graph.units import kept_layers
from alphaprune.modelfile import load_checkpoint, save_model
from alphaprune.models import create_model
from alphaprune.models.user import GRAPH_ARCH
from alphaprune.parallel import Processes, hardware, is_leader
from alphaprune.pipeline import (
    DataConfig,
    fit_classifier,
    load_data,
    seen_test_images,
    split_scores,
)
from alphaprune.plan import WidthTarget, auto_train_size, search_data, solve_target
from alphaprune.prune import PruneConfig, checked_config, prune, resolve_solver, resolve_streams
from alphaprune.recipe import phase_budget
from alphaprune.report.headline import seen_note
from alphaprune.report.page import markdown_table, measure_side_by_side
from alphaprune.report.plots import plot_pareto
from alphaprune.report.size import count_flops, count_params
from alphaprune.rundir import COMPARE_MARKER, LAST_CKPT, claim, make_dir, releasing_run_dirs
from alphaprune.scope import isolated
from alphaprune.train.engine import resolve_accelerator
from alphaprune.train.module import OptimConfig

__all__ = ["CompareConfig", "compare", "METHODS", "phase_budget"]

SCHEDULER_METHODS = ("os-step", "os-exponential", "os-multiplicative", "os-plateau")
FASTNAS = "modelopt-fastnas"
METHODS = SCHEDULER_METHODS + ("tp-l1", FASTNAS, "unstructured", "scratch", "kd")
SEARCH_SIZE = 1000  # validation images a width search scores on (sensitivity, FastNAS)
# FastNAS recalibrates BatchNorm from a queue of 50 batches before scoring a candidate and
# skips it (scoring stale statistics) while fewer have been seen
CALIB_BATCHES, CALIB_BATCH = 50, 20
MATCHES = ("params", "flops", "latency")
START = "start.pt"  # a cut peer's network before training, in its method's folder


@dataclass
class CompareConfig:
    """Settings of ``alphaprune compare``."""

    checkpoint: str = ""
    model: str | None = None
    model_kwargs: dict = field(default_factory=dict)
    targets: list[float] = field(default_factory=lambda: [0.35, 0.65, 0.9])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    budget: int = 30                      # training epochs per method and target
    lr: float = 0.01                      # fine-tuning / objective-selection lr
    scratch_lr: float = 0.05              # peak lr from random init (one-cycle)
    step_size: float = 0.1
    decay_rate: float = 0.5
    mu: float = 0.5
    factor: float = 0.5
    patience: int = 2
    distill: float = 0.7
    temperature: float = 4.0
    data: dict = field(default_factory=dict)
    quick: bool = False
    # what the targets are shares of, and what the peers are sized to objective selection's
    # fused model by: params, flops, or latency (measured on this machine at latency_batch;
    # objective selection then prunes by --speedup 1 / (1 - target))
    match: str = "params"
    latency_batch: int = 1
    # the Torch-Pruning peer keeps each cut layer's width a multiple of this (its own
    # round_to), as objective selection's widths are by default; None: any width
    tp_round_to: int | None = None
    accelerator: str = "auto"             # auto (a CUDA GPU when visible), cpu or gpu
    devices: int = 1                      # processes per node (alphaprune.parallel)
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    # objective-selection settings beyond the schedule (handover, branch_init, importance,
    # distill, max_acc_drop, ...): PruneConfig field -> value; unset fields keep its defaults
    os_options: dict = field(default_factory=dict)


def quick_config(cfg: CompareConfig) -> CompareConfig:
    """The ``--quick`` matrix: coarse schedules, 4 epochs, a few hundred training images."""
    d = dict(cfg.data)
    d["train_subset"] = min(d.get("train_subset") or 10**9, 256)
    return CompareConfig(**{**asdict(cfg), "budget": 4, "step_size": 0.5, "decay_rate": 1.5,
                            "mu": 0.25, "factor": 0.25, "patience": 1, "data": d, "quick": True})


def _scheduler_opts(cfg: CompareConfig) -> dict:
    return {"step_size": cfg.step_size, "decay_rate": cfg.decay_rate, "mu": cfg.mu,
            "factor": cfg.factor, "patience": cfg.patience}


def _row(method, target, model, summary_acc, shape, epochs, seconds, nonzero=False) -> dict:
    """One result row; latency is measured for all rows together at the end."""
    return {"method": method, "target": target,
            "params": count_params(model, nonzero=nonzero), "flops": count_flops(model, shape),
            "val_acc": summary_acc["val_acc"], "test_acc": summary_acc["test_acc"],
            "epochs": epochs, "seconds": round(seconds, 1)}


def read_results(path: Path, repair: bool = True) -> list[dict]:
    """The finished rows of ``results.jsonl``. A torn last line (a kill while a row was being
    appended) is dropped (and, with ``repair``, removed from the file) and its row runs
    again; a corrupt line before it is an error."""
    if path.is_dir():
        raise UserError(f"{path} is a folder: pass another --out")
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i < len(lines) - 1:
                raise UserError(f"{path} line {i + 1} is corrupt ({e.msg}): fix or remove that "
                                "line, or choose another --out") from e
            if repair:
                atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _run_dir(path: Path, lead: bool = True) -> tuple[Path, Path | None]:
    """A method's folder; resume from its checkpoint when it has one. Only rank 0
    (``lead``) clears or makes it."""
    ck = path / LAST_CKPT
    if ck.exists():
        return path, ck
    if not lead:
        return path, None
    if path.exists():
        import shutil

        shutil.rmtree(path)  # a started method with no checkpoint: nothing to keep
    path.mkdir(parents=True)
    return path, None


@dataclass
class _Bench:
    """What every method of one comparison shares: the data, the pretrained model and its
    traced units, where objective selection reads it (``source``), and who writes."""

    cfg: CompareConfig
    out: Path
    lead: bool                 # rank 0 alone writes; the other ranks only train
    progress: bool
    data: DataConfig
    ds: object
    splits: object
    mean: list
    std: list
    mf: object
    source: dict
    structure: object
    balance: float | None       # None under the sensitivity and auto solvers
    solver: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.ds.x.shape[1:])

    @property
    def classes(self) -> list:
        return self.mf.classes or self.ds.classes


def _checked(cfg: CompareConfig) -> CompareConfig:
    """The settings that apply (``--quick`` expanded), each checked; nothing is written."""
    if cfg.quick:
        cfg = quick_config(cfg)
    require_finite(cfg)
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method(s) {', '.join(unknown)}: choose from {', '.join(METHODS)}")
    for t in cfg.targets:
        if not 0.0 < t < 1.0:
            raise UserError(f"targets must be between 0 and 1, got {t}")
    # targets share a folder by the percent (p50): 0.5 and 0.504 would be one row
    folders = [_folder(t) for t in cfg.targets]
    for name, given, hint in (("--targets", folders, " (targets share a folder by the percent)"),
                              ("--methods", cfg.methods, "")):
        twice = sorted({v for v in given if given.count(v) > 1})
        if twice:
            raise UserError(f"{name} lists {', '.join(twice)} more than once{hint}: list each once")
    if cfg.budget < 1:
        raise UserError(f"--budget must be >= 1, got {cfg.budget}")
    if cfg.match not in MATCHES:
        raise UserError(f"unknown --match '{cfg.match}': use one of {', '.join(MATCHES)}")
    if cfg.latency_batch < 1:
        raise UserError(f"--latency-batch must be >= 1, got {cfg.latency_batch}")
    if cfg.tp_round_to is not None and cfg.tp_round_to < 1:
        raise UserError(f"--tp-round-to must be >= 1, got {cfg.tp_round_to}")
    if _search_size(cfg) < 1:
        raise UserError(f"--search-size must be >= 1, got {_search_size(cfg)}")
    if _auto_steps(cfg) < 0:
        raise UserError(f"--auto-steps must be >= 0, got {_auto_steps(cfg)}")
    if cfg.match == "latency" and cfg.devices * cfg.num_nodes > 1:
        raise UserError("--match latency times models on this machine, which several "
                        "processes would each do differently: run it with one process")
    Processes.of(cfg).validate(resolve_accelerator(cfg.accelerator), DataConfig(**cfg.data).batch_size)
    for method in (m for m in cfg.methods if m in SCHEDULER_METHODS):
        for t in cfg.targets:  # objective selection's own options, as its rows will meet them
            checked_config(_os_config(cfg, method, t, {}))
    return _without_unavailable(cfg)


def _search_size(cfg: CompareConfig) -> int:
    """Validation images a width search scores on (objective selection's and FastNAS's)."""
    return cfg.os_options.get("search_size", SEARCH_SIZE)


def _auto_steps(cfg: CompareConfig) -> int:
    """Training steps of each candidate of the auto solver (prune's default unless given)."""
    return cfg.os_options.get("auto_steps", PruneConfig.auto_steps)


def _without_unavailable(cfg: CompareConfig) -> CompareConfig:
    """``cfg`` without FastNAS where it cannot run (the extra is missing, or a latency
    match, which its search has no constraint for), said once on stderr."""
    if FASTNAS not in cfg.methods:
        return cfg
    why = (None if fastnas_available() and cfg.match != "latency" else
           f"{FASTNAS} skipped: " + (INSTALL_HINT if cfg.match != "latency" else
                                     "it is sized by --match params or flops"))
    if why is None:
        return cfg
    if is_leader():
        print(f"[compare] {why}", file=sys.stderr, flush=True)
    return replace(cfg, methods=[m for m in cfg.methods if m != FASTNAS])


def _setup(cfg: CompareConfig, out: Path, progress: bool) -> tuple[_Bench, list[dict]]:
    """Check the rows already written against this run, load the data and the pretrained
    model, and record the pretrained row; returns the shared context and the rows."""
    lead = is_leader()
    done = read_results(out / RESULTS, repair=lead)
    # the widths objective selection will solve, which scratch and kd train too
    picked = resolve_solver(cfg.os_options.get("solver"), cfg.os_options.get("balance"), cfg.match)
    solver, balance = picked["solver"], picked["balance"]
    check_width_options(cfg.os_options.get("round_to", PruneConfig.round_to), balance or 0.0)
    _check_same_match(done, cfg.match, out)  # first: another measure changes the balance too
    _check_target_folders(done, cfg.targets, out)
    data = DataConfig(**cfg.data)
    ds, splits = load_data(data)
    mean, std = ds.mean_std()
    mf = load_checkpoint(cfg.checkpoint, cfg.model, mean, std, ds.classes, cfg.model_kwargs)
    seen = seen_test_images(mf.meta, data, ds, splits)
    if seen and lead:
        print(f"[compare] warning: {seen_note(seen)}", flush=True)
    # the target's default, as prune resolves it
    streams = resolve_streams(cfg.os_options.get("streams"), cfg.match)
    cfg = replace(cfg, os_options={**cfg.os_options, "streams": streams})
    shape = tuple(ds.x.shape[1:])  # units at the data's size; --keep checked before any write
    structure = keep_whole(find_units(mf.model.eval(), torch.zeros(2, *shape), streams=streams),
                           cfg.os_options.get("keep"))
    _check_same_widths(done, balance, solver, out, streams)
    _check_same_auto_steps(cfg, out, solver)
    _check_same_tp_round_to(done, cfg.tp_round_to, out)
    settings = check_folder(cfg, mf.model, out, done)
    if lead and predates_settings(out, done):
        print(f"[compare] warning: {out} was made before comparisons recorded their settings "
              f"({SETTINGS}): its rows cannot be checked against this run's; it now records "
              "this run's, so continue it only with the command that made it", flush=True)
    if lead:  # only now that every input checked out is anything written
        claim(make_dir(out), COMPARE_MARKER)
        record_settings(out, settings)
    mean, std = mf.mean or mean, mf.std or std
    ckpt_path = out / "pretrained.pt"
    # objective selection goes through prune, which reads a model file; another rank may
    # not see rank 0's copy yet and reads the same weights from the source
    source = {"checkpoint": str(ckpt_path)} if lead else {
        "checkpoint": str(cfg.checkpoint), "model": cfg.model, "model_kwargs": cfg.model_kwargs}
    pretrained = mf.model.eval()
    b = _Bench(cfg, out, lead, progress, data, ds, splits, mean, std, mf, source, structure,
               balance, solver)
    if lead and not ckpt_path.exists():
        save_model(ckpt_path, pretrained, mf.arch, mean, std, b.classes,
                   {"source": str(cfg.checkpoint), "input_shape": list(shape)})
    if lead and ("pretrained", 0.0) not in {(r["method"], r["target"]) for r in done}:
        row = _row("pretrained", 0.0, pretrained, split_scores(pretrained, ds, splits, mean, std),
                   shape, 0, 0.0)
        _append(out / RESULTS, {**row, "model_file": str(ckpt_path)}, done)
    return b, done


@releasing_run_dirs
@isolated
def compare(cfg: CompareConfig, out: str | Path, progress: bool = False) -> list[dict]:
    """Run the comparison matrix (see the module docstring); return all result rows (none on
    a rank other than 0 of a multi-process run)."""
    cfg, out = _checked(cfg), Path(out)
    b, done = _setup(cfg, out, progress)
    cfg = b.cfg  # its os_options resolved against the model
    cost = CostModel(b.structure)
    finished = {(r["method"], r["target"]) for r in done}
    arch, memo = None if b.mf.arch == GRAPH_ARCH else b.mf.arch, {}
    for target in cfg.targets:
        if all((m, target) in finished for m in cfg.methods):
            continue
        # objective selection prunes to these widths; scratch and kd train them too
        widths = _target_widths(b, target, arch, memo)
        # the peers are sized to objective selection's fused model by --match (latency: the
        # fused architecture itself, timed against); unstructured pruning changes no FLOPs
        # and is sized by its non-zero parameters either way
        size = {"params": cost.params(widths), "flops": cost.flops(widths)}
        if cfg.match == "latency":
            size["latency"] = fused_architecture(b.structure, widths, arch).eval()
        for method in cfg.methods:
            if (method, target) in finished:
                continue
            row = _run_method(b, method, target, widths, size)
            if row is not None:
                _append(out / RESULTS, {**row, "balance": b.balance, "solver": b.solver,
                                                 "match": cfg.match, **_streams_key(cfg),
                                                 **_tp_key(cfg, method)}, done)
    return _finish(b, done) if b.lead else []


def _target_widths(b: _Bench, target: float, arch: str | None, memo: dict) -> list[int]:
    """The widths of one target, solved once: written to ``pNN/widths.json`` so that a
    rerun trains the remaining methods on the network the finished ones used (a measured
    solve, such as a latency match, could come out otherwise the second time). ``memo``
    keeps what every target's solve shares: the search images and sensitivity table."""
    cfg = b.cfg
    path = b.out / _folder(target) / "widths.json"
    if path.exists():
        recorded = json.loads(path.read_text())
        if bool(recorded.get("streams")) != bool(cfg.os_options.get("streams")):
            raise UserError(f"{path} holds widths solved {_with(recorded.get('streams'))} "
                            f"--prune-streams, this run is {_with(cfg.os_options.get('streams'))} it: "
                            f"pass {_flag(recorded.get('streams'))} to continue it, or another --out")
        return recorded["widths"]
    if b.solver != "ratio" and "val" not in memo:
        memo["val"] = search_data(b.ds, b.splits, _search_size(cfg), b.mean, b.std, b.data.seed,
                                  train_size=auto_train_size(b.solver, _auto_steps(cfg)))
    t = WidthTarget(cfg.match, target, b.solver,
                    cfg.os_options.get("round_to", PruneConfig.round_to), b.balance or 0.0,
                    cfg.os_options.get("importance", PruneConfig.importance),
                    _speedup(cfg.match, target), cfg.latency_batch, _auto_steps(cfg))
    note = (lambda m: print(f"[compare] {m}", flush=True)) if b.progress and b.lead else None
    widths, record = solve_target(t, b.structure, b.mf.model, arch, b.shape, memo.get("val"),
                                  b.data.cache_dir, memo, note)
    if b.lead:
        steps = {"auto_steps": _auto_steps(cfg)} if b.solver == "auto" else {}
        # how they were chosen: auto's scored candidates, the timed ones of a latency match
        search = {k: record[k] for k in ("candidates", "tried") if k in record}
        atomic_write_text(path, json.dumps({"widths": widths, "solver": b.solver, **steps,
                                            **_streams_key(cfg), "match": cfg.match, **search}))
    return widths


def _speedup(match: str, target: float) -> float | None:
    """The speed-up a latency target asks for: removing ``target`` of the latency."""
    return 1.0 / (1.0 - target) if match == "latency" else None


def _os_target(cfg: CompareConfig, target: float) -> dict:
    """Objective selection's target option for this ``--match``."""
    if cfg.match == "latency":
        return {"speedup": _speedup("latency", target), "latency_batch": cfg.latency_batch}
    return {"prune" if cfg.match == "params" else "flops": target}


def _os_config(cfg: CompareConfig, method: str, target: float, source: dict,
               widths=None) -> PruneConfig:
    """The prune settings of objective selection's row ``method`` (an ``os-`` scheduler) at
    ``target``: the scheduler's options, its share of ``--budget`` per phase, ``os_options``."""
    sched = method.removeprefix("os-")
    per, final = phase_budget(sched, _scheduler_opts(cfg), cfg.budget)
    return PruneConfig(**source, **_os_target(cfg, target),
                       widths=widths, scheduler=sched, patience=cfg.patience, max_epochs_per_phase=per,
                       final_max_epochs=final, final_patience=max(cfg.patience, final),
                       max_total_epochs=cfg.budget,
                       optim=OptimConfig(lr=cfg.lr, schedule="constant"), data=cfg.data,
                       **hardware(cfg),
                       **{k: v for k, v in _scheduler_opts(cfg).items() if k != "patience"},
                       **cfg.os_options)


def _run_method(b: _Bench, method: str, target: float, widths, size: dict) -> dict | None:
    """Train one method at one target; its result row (None on a rank other than 0)."""
    cfg = b.cfg
    if b.lead:
        print(f"[compare] target {target:.0%} removed: {method}", flush=True)
    run, ck = _run_dir(b.out / _folder(target) / method, b.lead)
    t0 = time.perf_counter()
    live = {}
    if method in SCHEDULER_METHODS:
        model_file = run / "pruned.pt"
        if model_file.is_file():  # finished (pruned.pt comes last), killed before its row
            if not b.lead:
                return None
            s = json.loads((run / "summary.json").read_text())
            t0 -= s.get("seconds", 0.0)  # the row's seconds are the finished run's
        else:
            pcfg = _os_config(cfg, method, target, b.source, widths)
            s = prune(pcfg, run, resume=ck is not None, progress=b.progress)
            if not b.lead:
                return None
        model = load_checkpoint(model_file).model
        acc, epochs = {"val_acc": s["val_acc_after"], "test_acc": s["test_acc_after"]}, s["epochs"]
        if "final_ema" in s:  # the live weights the shipped average was taken from
            live = {f"live_{k}": s["final_ema"]["live"][k] for k in ("val_acc", "test_acc")}
    else:
        model, epochs, _ = _baseline(b, method, widths, size, run, ck)
        if not b.lead:
            return None
        acc = split_scores(model, b.ds, b.splits, b.mean, b.std)
        model_file = run / "model.pt"
        save_model(model_file, model, b.mf.arch, b.mean, b.std, b.classes,
                   {"method": method, "target": target, "input_shape": list(b.shape)})
    row = _row(method, target, model, acc, b.shape, epochs, time.perf_counter() - t0,
               nonzero=method == "unstructured")
    return {**row, **live, "model_file": str(model_file)}


def _finish(b: _Bench, done: list[dict]) -> list[dict]:
    """Every row's latency measured side by side, then the tables and the Pareto plot."""
    order = {m: i for i, m in enumerate(("pretrained",) + METHODS)}
    # by target, then in METHODS order, however the rows were run (slices, resumes)
    final = sorted(remeasure_latency(done, b.shape),
                   key=lambda r: (r["target"], order.get(r["method"], len(order))))
    (b.out / "results.json").write_text(json.dumps(final, indent=2))
    write_tables(final, b.out)
    plot_pareto(final, b.out / "pareto.png", title=f"{b.mf.arch}: accuracy against measured cost")
    return final


def _folder(target: float) -> str:
    """The folder of a target's widths and runs: its percent (``p65``), so targets that
    round to the same percent share one."""
    return f"p{round(target * 100):02d}"


def _check_target_folders(done: list[dict], targets: list[float], out: Path) -> None:
    """A target's runs live in its percent's folder (p65): a target given as 0.651 where
    0.65 is recorded would continue that run under another label."""
    recorded = {_folder(r["target"]): r["target"] for r in done if r["method"] != "pretrained"}
    for t in targets:
        other = recorded.get(_folder(t))
        if other is not None and other != t:
            raise UserError(f"target {t:g} shares the folder {_folder(t)} of {out} with "
                            f"the recorded target {other:g}: pass {other:g} to continue it, or "
                            "another --out")


def _check_same_match(done: list[dict], match: str, out: Path) -> None:
    """A target means a share of what ``--match`` counts: rows of another measure cannot be
    continued (rows written before ``--match`` existed matched parameters)."""
    used = {r.get("match", "params") for r in done if r["method"] != "pretrained"}
    if used and used != {match}:
        was = ", ".join(sorted(used))
        raise UserError(f"{out} holds rows matched by {was}, this run matches by {match}: pass "
                        f"--match {was} to continue it, or another --out")


def _tp_key(cfg: CompareConfig, method: str) -> dict:
    """``{"tp_round_to": N}`` for a Torch-Pruning row cut with ``--tp-round-to N`` (nothing
    otherwise: rows written before the option existed read as unrounded)."""
    return {"tp_round_to": cfg.tp_round_to} if method == "tp-l1" and cfg.tp_round_to else {}


def _check_same_tp_round_to(done: list[dict], round_to: int | None, out: Path) -> None:
    """A rerun must cut Torch-Pruning as the rows and started cuts it continues were."""
    recorded = [r for r in done if r["method"] == "tp-l1"]
    recorded += [load_checkpoint(p).meta for p in sorted(out.glob(f"p*/tp-l1/{START}"))]
    used = {r.get("tp_round_to") for r in recorded}
    if used and used != {round_to}:
        was = sorted(used - {round_to}, key=str)[0]
        made = f"with --tp-round-to {was}" if was else "without --tp-round-to"
        fix = f"pass --tp-round-to {was}" if was else "drop --tp-round-to"
        raise UserError(f"{out} holds Torch-Pruning cuts made {made}, this run asks for "
                        f"{round_to or 'none'}: {fix} to continue it, or another --out")


def _streams_key(cfg: CompareConfig) -> dict:
    """``{"streams": True}`` for a ``--prune-streams`` run (nothing otherwise: the rows and
    widths written before the option existed read as without it)."""
    return {"streams": True} if cfg.os_options.get("streams") else {}


def _check_same_auto_steps(cfg: CompareConfig, out: Path, solver: str) -> None:
    """New targets of a rerun must be chosen as the recorded ones were: the same training
    steps per auto candidate (0 in a folder from before ``--auto-steps``)."""
    if solver != "auto":
        return
    for path in sorted(out.glob("p*/widths.json")):
        recorded = json.loads(path.read_text())
        steps = recorded.get("auto_steps", 0)
        if recorded.get("solver") == "auto" and steps != _auto_steps(cfg):
            raise UserError(f"{path} holds widths the auto solver chose after {steps} training "
                            f"steps per candidate, this run asks for {_auto_steps(cfg)}: pass "
                            f"--auto-steps {steps} to continue it, or another --out")


def _with(streams) -> str:
    return "with" if streams else "without"


def _flag(streams) -> str:
    return "--prune-streams" if streams else "--no-prune-streams"


def _check_same_widths(done: list[dict], balance: float, solver: str, out: Path,
                       streams: bool = False) -> None:
    """A rerun must solve the same widths as the rows it continues (scratch and kd train
    objective selection's architecture): refuse another ``--solver``, ``--balance`` or
    ``--prune-streams``. Rows written before they existed had the ratio solver's uniform
    widths (balance 0) and no stream units."""
    rows = [r for r in done if r["method"] != "pretrained"]
    used = {bool(r.get("streams")) for r in rows}
    if used and used != {streams}:
        raise UserError(f"{out} holds rows made {_with(not streams)} --prune-streams, this run "
                        f"is {_with(streams)} it: pass {_flag(not streams)} to continue it, or "
                        "another --out")
    used = {r.get("solver", "ratio") for r in rows}
    if used and used != {solver}:
        was = ", ".join(sorted(used))
        raise UserError(f"{out} holds rows made with --solver {was}, this run would use "
                        f"{solver}: pass --solver {was} to continue it, or another --out")
    used = {r.get("balance", 0.0) for r in rows}
    if solver == "ratio" and used and used != {balance}:
        was = ", ".join(f"{b:g}" for b in sorted(used))
        raise UserError(f"{out} holds rows made with --balance {was}, this run would use "
                        f"{balance:g}: pass --balance {was} to continue it, or another --out")


def remeasure_latency(rows: list[dict], shape, rounds: int = 3) -> list[dict]:
    """Latency of every saved model, side by side: ``rounds`` alternating passes over all
    models, median per model, so no row is timed while the machine was busy training
    another. Rows without a model file keep whatever latency they carry."""
    models = {i: load_checkpoint(r["model_file"]).model for i, r in enumerate(rows)
              if r.get("model_file") and Path(r["model_file"]).exists()}
    measured = measure_side_by_side(models, shape, rounds)
    out = []
    for i, r in enumerate(rows):
        r = dict(r)
        if i in measured:
            for k in ("latency_b1_ms", "latency_b128_ms"):
                r[k] = measured[i][k]
        out.append(r)
    return out


def compact_model(structure, widths, arch: str, seed: int) -> torch.nn.Module:
    """The architecture objective selection ships at ``widths``, freshly initialised with
    ``seed``: the registry class with the fused widths, or for a user model the fused graph
    with every layer re-initialised."""
    from alphaprune.models.registry import infer_kwargs

    fused = fused_architecture(structure, widths, None if arch == GRAPH_ARCH else arch)
    torch.manual_seed(seed)
    if arch != GRAPH_ARCH:
        return create_model(arch, **infer_kwargs(arch, fused.state_dict()))
    for m in fused.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
    return fused


def _baseline(b: _Bench, method: str, widths, size: dict, run: Path, ck):
    """Build the starting model of a peer method and train it for the budget (``widths``:
    objective selection's architecture, which scratch and kd train)."""
    import copy

    cfg, pretrained = b.cfg, b.mf.model
    teacher, distill, optim = None, 0.0, OptimConfig(lr=cfg.lr, schedule="cosine")
    if method in ("tp-l1", FASTNAS):
        model = _peer_cut(b, method, size, run, ck)
    elif method == "unstructured":
        model = magnitude_unstructured(copy.deepcopy(pretrained), size["params"])
    else:  # scratch / kd: objective selection's compact architecture from random init
        model = compact_model(b.structure, widths, b.mf.arch, b.data.run_seed)
        optim = OptimConfig(lr=cfg.scratch_lr, schedule="onecycle")
        if method == "kd":
            teacher, distill = copy.deepcopy(pretrained), cfg.distill
    model, _, _ = fit_classifier(model, run, ck, b.ds, b.splits, b.mean, b.std, cfg.budget, optim,
                                 b.data, progress=b.progress, teacher=teacher, distill=distill,
                                 temperature=cfg.temperature, accelerator=cfg.accelerator,
                                 processes=Processes.of(cfg))
    if method == "unstructured":
        model = make_permanent(model)
    return model.eval(), cfg.budget, method == "unstructured"


def _peer_cut(b: _Bench, method: str, size: dict, run: Path, ck) -> torch.nn.Module:
    """Torch-Pruning's or FastNAS's cut of the pretrained model, before training. Rank 0
    writes it to the method's folder (``START``) and a resumed method trains it again: a
    latency match times its candidates, so a second cut could differ from the network the
    checkpoint holds."""
    cfg, path = b.cfg, run / START
    if ck is not None and path.exists():
        return load_checkpoint(path).model
    if method == "tp-l1":
        model = torch_pruning_l1(b.mf.model, size[cfg.match], b.shape, measure=cfg.match,
                                 latency_batch=cfg.latency_batch, round_to=cfg.tp_round_to,
                                 keep=kept_layers(b.structure))
    else:
        model = modelopt_fastnas(b.mf.model, size[cfg.match], b.shape, cfg.match,
                                 *_fastnas_data(cfg, b.ds, b.splits, b.mean, b.std, b.data),
                                 verbose=b.progress)
    if b.lead:
        save_model(path, model, b.mf.arch, b.mean, b.std, b.classes,
                   {"method": method, **_tp_key(cfg, method), "input_shape": list(b.shape)})
        if method == "tp-l1" and cfg.tp_round_to and cfg.match != "latency":
            got = count_params(model) if cfg.match == "params" else count_flops(model, b.shape)
            note = rounded_fit_note(got, size[cfg.match], cfg.match, cfg.tp_round_to)
            if note:
                print(f"[compare] {note}", file=sys.stderr, flush=True)
    return model


def rounded_fit_note(got: float, asked: float, measure: str, round_to: int,
                     tolerance: float = 0.02) -> str | None:
    """What to tell the user when Torch-Pruning's rounded cut misses its size by more than
    ``tolerance``: one channel ratio for every layer, rounded, moves in coarse steps, and the
    cut kept is the nearest one at or above the size asked."""
    if abs(got / asked - 1) <= tolerance:
        return None
    return (f"tp-l1 with --tp-round-to {round_to} has {got / asked - 1:+.0%} of the {measure} "
            f"asked ({got:,.0f} against {asked:,.0f}): its rounded cuts come in coarse steps "
            "and this is the nearest; drop --tp-round-to for a close fit")


def _fastnas_data(cfg: CompareConfig, ds, splits, mean, std, data: DataConfig):
    """What FastNAS searches with: its score (accuracy on the validation images objective
    selection's sensitivity solver scores on) and the training batches it recalibrates
    BatchNorm on before scoring each candidate (seeded)."""
    search = search_data(ds, splits, _search_size(cfg), mean, std, data.seed)
    vx, vy = search.x, search.y

    @torch.no_grad()
    def score(model) -> float:
        return float((model.eval()(vx).argmax(1) == vy).float().mean())

    gen = torch.Generator().manual_seed(data.run_seed)
    n = CALIB_BATCHES * CALIB_BATCH
    pick = splits.train[torch.randperm(len(splits.train), generator=gen)[:n].numpy()]
    return score, list(normalize(torch.as_tensor(ds.x[pick]), mean, std).split(CALIB_BATCH))


def _append(path: Path, row: dict, rows: list) -> None:
    rows.append(row)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


_COLS = ["target", "method", "test_acc", "val_acc", "params", "flops", "latency_b1_ms",
         "latency_b128_ms", "epochs", "seconds"]


def write_tables(rows: list[dict], out: Path) -> None:
    """``results.csv`` and ``results.md`` from the result rows."""
    import csv

    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_COLS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    fmt = {"target": "{:.0%}", "test_acc": "{:.4f}", "val_acc": "{:.4f}", "params": "{:,}",
           "flops": "{:,}", "latency_b1_ms": "{:.2f}", "latency_b128_ms": "{:.1f}",
           "seconds": "{:.0f}"}
    table = [[fmt.get(c, "{}").format(r[c]) for c in _COLS] for r in rows]
    (out / "results.md").write_text(markdown_table(_COLS, table) + "\n")
