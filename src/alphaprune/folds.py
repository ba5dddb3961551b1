"""``prune --folds K``: objective selection run K times on rotating validation folds.

The images of the train and val splits are dealt into K stratified parts
(:func:`alphaprune.data.rotate_fold`); fold ``i`` validates on part ``i`` (early stopping,
best weights, the measuring width solvers) and trains on the rest, and every fold is
scored on the same test split. Each fold is a whole prune run in ``OUT/fold<i>`` (its own
config, checkpoints, summary and report). When all K are done, ``OUT`` gets:

* ``summary.json``: the shipped fold's summary with a ``folds`` block: every fold's
  scores, their mean and standard deviation, and which fold shipped and why;
* ``pruned.pt``: the model of the fold with the best validation accuracy. A fold's
  validation part held out of that fold's pruning, but the pretrained network was trained
  on most of it (all of the train split's share), so validation scores are optimistic;
  the test accuracy, on images neither saw and the same for every fold, is the number to
  compare;
* ``metrics.csv``, ``phases.csv`` and the report of the shipped fold, with a
  cross-validation section.

An interrupted run resumes where it stopped: finished folds are kept, the fold in
progress resumes from its checkpoint, later folds start.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from dataclasses import asdict, replace
from pathlib import Path

from alphaprune.errors import OutOfBudget, UserError
from alphaprune.parallel import PLACEMENT, hardware, is_leader
from alphaprune.rundir import (
    CONFIG,
    LAST_CKPT,
    MARKER,
    claim,
    finish,
    pending,
    prepare_run_dir,
    read_config,
    write_config,
    write_json,
)

__all__ = ["is_folds_run", "prune_folds", "aggregate", "SCORES"]

# what is averaged over the folds (the flat keys of a prune summary)
SCORES = ("test_acc_after", "val_acc_after", "test_loss_after", "val_loss_after",
          "achieved_reduction", "achieved_flops_reduction", "params_after", "flops_after")
CHOSEN_BY = "val_acc_after"


def is_folds_run(data: dict, out: Path, resume: bool) -> bool:
    """Whether this prune call is a ``--folds`` run: asked for by ``data`` (a new run) or
    recorded in ``out``'s config (a resume)."""
    if resume:
        if not (Path(out) / CONFIG).exists():
            return False
        section = read_config(Path(out)).get("prune")
        data = section.get("data") or {} if isinstance(section, dict) else {}
    # one fold of a folds run (``fold`` set) is a plain run
    return bool(data.get("folds")) and data.get("fold") is None


def fold_dir(out: Path, i: int) -> Path:
    return Path(out) / f"fold{i}"


def _fold_cfg(cfg, i: int):
    return replace(cfg, data={**cfg.data, "fold": i})


def prune_folds(cfg, out, force: bool = False, resume: bool = False, progress: bool = True,
                callbacks: list | None = None, max_total_epochs: int | None = None) -> dict | None:
    """Run :func:`alphaprune.prune.prune` once per fold and aggregate (module docstring).

    Returns:
        The shipped fold's summary with the ``folds`` block (None on a rank other than 0).
    """
    from alphaprune import prune as prune_mod

    out = Path(out)
    if resume:
        cfg = _recorded(out, cfg)
        if is_leader():  # the run's folder, held while its folds resume
            claim(out)
            # its folds are its own: marked here if made before the marker existed
            for i in range(1, int(cfg.data["folds"]) + 1):
                d = fold_dir(out, i)
                if d.is_dir() and not (d / MARKER).exists():
                    (d / MARKER).touch()
    if max_total_epochs is not None:
        cfg = replace(cfg, max_total_epochs=max_total_epochs)
    from alphaprune.pipeline import absolute_paths

    # recorded with absolute paths: a resume from another folder reads the same files
    cfg = absolute_paths(replace(cfg, data={k: v for k, v in cfg.data.items() if k != "fold"}))
    k = int(cfg.data["folds"])
    first = None
    if not resume:
        first = _checked(cfg, out, k, prune_mod, progress)
        if is_leader():  # only now that every input checked out may an old run be replaced
            prepare_run_dir(out, "pruned.pt", force=force, keep=[cfg.checkpoint])
    if is_leader() and (not resume or max_total_epochs is not None):
        write_config(out, {"command": "prune", "prune": asdict(cfg)})
    summaries = []
    for i in range(1, k + 1):
        fold_cfg = first if i == 1 and first is not None else _fold_cfg(cfg, i)
        try:
            summaries.append(_run_fold(fold_cfg, out, i, resume, progress, callbacks,
                                       max_total_epochs, prune_mod))
        except OutOfBudget as e:
            raise OutOfBudget(
                f"fold {i} of run {out} stopped before its alpha = 0 phase finished "
                f"(--max-total-epochs {cfg.max_total_epochs}, per fold): continue the whole "
                f"run with 'alphaprune prune --out {out} --resume --max-total-epochs N' "
                f"(N > {cfg.max_total_epochs})") from e
    if not is_leader():
        return None
    return _ship(out, summaries)


def _checked(cfg, out: Path, k: int, prune_mod, progress: bool = False):
    """Fold 1's settings, planned, once every input checked out: the settings, the data and
    checkpoint, every fold's splits (of the labels loaded once), and fold 1's widths (a
    measuring solver's are recorded in the settings, so fold 1's run does not measure them
    again). With ``progress``, the width search prints its progress."""
    from alphaprune.pipeline import DataConfig, carve_splits, check_splits

    first, _, _, _ = prune_mod._settings(_fold_cfg(cfg, 1), fold_dir(out, 1), False, None)
    src = prune_mod._load(first)
    for i in range(2, k + 1):
        check_splits(carve_splits(DataConfig(**_fold_cfg(cfg, i).data), src.ds.y))
    note = (lambda m: print(f"[prune] {m}", flush=True)) if progress and is_leader() else None
    first, _ = prune_mod.planned(first, src, note)
    return first


def _recorded(out: Path, cfg):
    """The settings a folds run recorded, on the resuming machine's hardware."""
    from alphaprune.prune import _config_from_dict

    if (out / "pruned.pt").exists():
        raise UserError(f"run {out} is already finished (pruned.pt exists): nothing to resume; "
                        "use --force to start it again")
    recorded = read_config(out)["prune"]
    return replace(_config_from_dict(recorded), **hardware(cfg, PLACEMENT))


def _run_fold(cfg, out: Path, i: int, resume: bool, progress, callbacks, max_total_epochs,
              prune_mod) -> dict:
    """Fold ``i``'s summary. A fresh run starts every fold (its folder was just prepared:
    nothing on disk is read, so every process of a multi-process run agrees); a resume
    reads a finished fold, resumes one with a checkpoint and starts the others."""
    d = fold_dir(out, i)
    if resume and (d / "pruned.pt").exists():
        return json.loads((d / "summary.json").read_text())
    if progress:
        print(f"fold {i} of {cfg.data['folds']} -> {d}", flush=True)
    if resume and (d / LAST_CKPT).exists():
        return prune_mod.prune(cfg, d, resume=True, progress=progress, callbacks=callbacks,
                               max_total_epochs=max_total_epochs)
    # a fold folder left before its first checkpoint holds nothing to lose: it is replaced
    return prune_mod.prune(cfg, d, progress=progress, callbacks=callbacks)


def aggregate(summaries: list[dict], budgets: list | None = None) -> dict:
    """The ``folds`` block: each fold's scores, their mean and sample standard deviation,
    and the fold that ships (the best validation accuracy; the first of a tie).
    ``budgets``: each fold's recorded ``max_total_epochs``; folds that ran under different
    ones (a resume with a new budget reaches only the folds not finished) are said so."""
    budgets = budgets or [None] * len(summaries)
    per_fold = [{"fold": i, "run": f"fold{i}", **{key: s.get(key) for key in SCORES},
                 "max_total_epochs": budget}
                for i, (s, budget) in enumerate(zip(summaries, budgets), start=1)]
    mean, std = {}, {}
    for key in SCORES:
        # no score (--test-frac 0 leaves no test split): NaN in memory, null on disk
        vals = [r[key] for r in per_fold if r[key] is not None and math.isfinite(r[key])]
        if vals:
            mean[key] = statistics.fmean(vals)
            std[key] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    best = max(per_fold, key=lambda r: (r[CHOSEN_BY], -r["fold"]))
    return {"k": len(summaries), "shipped_fold": best["fold"], "chosen_by": CHOSEN_BY,
            "note": (f"pruned.pt is fold {best['fold']}'s model, the best validation accuracy "
                     f"of the {len(summaries)} folds; each fold validated on its own part of "
                     "the train and val images, all were tested on the same test split. The "
                     "pretrained network was trained on most validation images, so validation "
                     "scores run high: compare test accuracy"
                     + _mixed_budgets(budgets)),
            "per_fold": per_fold, "mean": mean, "std": std}


def _mixed_budgets(budgets: list) -> str:
    if len(set(budgets)) <= 1:
        return ""
    shown = ", ".join("none" if b is None else str(b) for b in budgets)
    return (f". The folds ran under different epoch budgets ({shown}: a resume with a new "
            "--max-total-epochs reaches only the folds not yet finished), so their mean and "
            "spread mix schedules; rerun with --force and one budget for comparable folds")


def _ship(out: Path, summaries: list[dict]) -> dict:
    """Copy the chosen fold's model, curves and summary to ``out`` and write its report."""
    from alphaprune.report.headline import headline
    from alphaprune.report.page import write_report

    budgets = [(read_config(fold_dir(out, i)).get("prune") or {}).get("max_total_epochs")
               for i in range(1, len(summaries) + 1)]
    folds = aggregate(summaries, budgets)
    src = fold_dir(out, folds["shipped_fold"])
    summary = {**summaries[folds["shipped_fold"] - 1], "folds": folds}
    summary["headline"] = headline(summary)
    for name in ("metrics.csv", "phases.csv"):
        if (src / name).exists():
            shutil.copyfile(src / name, out / name)
    write_json(out / "summary.json", summary)
    write_report(out)
    shutil.copyfile(src / "pruned.pt", pending(out, "pruned.pt"))
    finish(out, "pruned.pt")  # the last file: the run is finished only now
    return summary
