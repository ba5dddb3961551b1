"""The widths a run prunes to: one target (parameters, FLOPs or a measured speed-up), one
width solver, shared by ``prune`` and ``compare`` so that both build the same network.

Solvers (``--solver``):

* ``ratio``: every unit keeps a share of its channels set by one ratio, tilted by
  ``--balance`` (:func:`alphaprune.blend.widths.solve_widths`);
* ``sensitivity``: cuts where the pretrained network's validation loss rises least per
  unit of the budgeted cost (:mod:`alphaprune.blend.sensitivity`);
* ``auto``: solves the target with the uniform ratio, with balance 1 and with the
  sensitivity table, cuts the pretrained network to each allocation at once (with
  ``--auto-steps N``, off by default, trains a copy of each cut network N steps as the
  α = 0 phase would), re-measures its BatchNorm statistics on training images, and scores
  its validation accuracy. Of the allocations within one standard error of the best score
  (the one-standard-error rule: differences the search images cannot resolve) it keeps
  the one whose fused network writes the fewest activation elements, the fastest at
  equal cost on a CPU.

Under ``--speedup`` each solver decides where to cut against the latency table and the
closed loop of :mod:`alphaprune.speedup` decides how much.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch

from alphaprune.blend.fuse import fused_architecture
from alphaprune.blend.sensitivity import (
    channel_orders,
    cut_score,
    solve_by_sensitivity,
    tuned_cut_score,
    unit_sensitivity,
)
from alphaprune.blend.widths import solve_widths
from alphaprune.data import normalize, stratified_subset
from alphaprune.errors import UserError
from alphaprune.graph import CostModel
from alphaprune.graph.cost import written_elements
from alphaprune.graph.units import unit_groups
from alphaprune.speedup import solve_speedup

__all__ = ["SOLVERS", "TARGET_OPTIONS", "AUTO_BATCH", "WidthTarget", "SearchData", "check_solver",
           "search_data", "auto_train_size", "paired_se", "solve_target"]

SOLVERS = ("ratio", "sensitivity", "auto")
TARGET_OPTIONS = {"params": "--prune", "flops": "--flops", "latency": "--speedup"}
AUTO_BATCH = 64  # the batch the auto solver trains its candidates with


@dataclass
class WidthTarget:
    """What to solve for and how: ``measure`` (params, flops, latency) and the ``fraction``
    of it to remove (for latency, ``1 - 1 / speedup``), the solver and its options."""

    measure: str
    fraction: float
    solver: str = "ratio"
    round_to: int = 8
    balance: float = 0.0
    importance: str = "l1"      # the channels the sensitivity search cuts: those select keeps
    speedup: float | None = None
    latency_batch: int = 1
    auto_steps: int = 0         # training steps of each auto candidate before it is scored


def check_solver(solver: str) -> None:
    """A one-line :class:`UserError` for an unknown solver."""
    if solver not in SOLVERS:
        raise UserError(f"unknown --solver '{solver}': use one of {', '.join(SOLVERS)}")


class SearchData(NamedTuple):
    """What a data-driven width search scores on: normalised validation images and labels,
    normalised training images to re-measure BatchNorm statistics on, and the training
    images (uint8: augmented, then normalised with ``mean``, ``std``, batch by batch) and
    labels the ``auto`` solver trains its candidates on (None where it trains none)."""

    x: torch.Tensor
    y: torch.Tensor
    calib: torch.Tensor
    train_x: torch.Tensor | None = None
    train_y: torch.Tensor | None = None
    mean: tuple | None = None
    std: tuple | None = None


def search_data(ds, splits, size: int, mean, std, seed: int = 0, calib_size: int = 500,
                train_size: int = 0) -> SearchData:
    """Stratified, seeded picks of ``size`` validation images, ``calib_size`` training
    images and ``train_size`` training images with their labels (the same for every
    training seed: they depend on the split seed only)."""
    def pick(idx, n):
        idx = idx[stratified_subset(ds.y[idx], min(n, len(idx)), seed)]
        return torch.as_tensor(ds.x[idx]), torch.as_tensor(ds.y[idx])

    (x, y), (calib, _) = pick(splits.val, size), pick(splits.train, calib_size)
    tx, ty = pick(splits.train, train_size) if train_size else (None, None)
    return SearchData(normalize(x, mean, std), y, normalize(calib, mean, std), tx, ty,
                      tuple(mean), tuple(std))


def auto_train_size(solver: str, steps: int) -> int:
    """How many training images the auto solver's candidates train on: each seen about once."""
    return steps * AUTO_BATCH if solver == "auto" else 0


def paired_se(right: torch.Tensor, other: torch.Tensor) -> float:
    """Standard error of the accuracy difference of two networks scored on the same images
    (``right``, ``other``: which images each classified right)."""
    d = right.float() - other.float()
    return float(d.std() / len(d) ** 0.5) if len(d) > 1 else 0.0


def _auto(t: WidthTarget, structure, val: SearchData, sens, shape) -> Callable:
    """The ``auto`` solver: the candidates (uniform ratio, balance 1, sensitivity) each
    solved for the target and scored on their whole cut, trained for ``t.auto_steps``
    steps (BatchNorm re-measured). The top score (ties: the lower loss) and every candidate
    within one paired standard error of it are tied; of those the one whose fused network
    writes the fewest activation elements is kept. Every call's scores are recorded; an
    allocation is scored once however often the closed loop of ``--speedup`` proposes it."""
    tried: list[dict] = []
    groups = unit_groups(structure)
    orders = channel_orders(structure, t.importance, val.x[:250])
    scored: dict[tuple, tuple] = {}
    written: dict[tuple, int] = {}
    whole = written_elements(structure.gm, shape)

    def score(widths):
        key = tuple(widths)
        if key not in scored:
            scored[key] = (tuned_cut_score(structure, widths, val.x, val.y, val.calib, orders,
                                           val.train_x, val.train_y, val.mean, val.std,
                                           t.auto_steps, AUTO_BATCH, per_image=True)
                           if t.auto_steps else
                           cut_score(structure, widths, val.x, val.y, val.calib, orders,
                                     per_image=True))
        return scored[key]

    def traffic(widths):
        key = tuple(widths)
        if key not in written:
            # the fused graph: a registry class need not hold a candidate that is not kept
            written[key] = written_elements(fused_architecture(structure, widths), shape)
        return written[key]

    def solve(base, count, fraction, option="--prune"):
        cands = {"ratio": solve_widths(base, count, fraction, t.round_to, 0.0, option, groups),
                 "balance1": solve_widths(base, count, fraction, t.round_to, 1.0, option, groups),
                 "sensitivity": solve_by_sensitivity(base, count, fraction, t.round_to, sens,
                                                     option, groups)}
        scores = {k: score(w) for k, w in cands.items()}
        top = max(cands, key=lambda k: (scores[k][0], -scores[k][1]))
        se = {k: paired_se(scores[k][2], scores[top][2]) for k in cands}
        tied = [k for k in cands if scores[k][0] >= scores[top][0] - se[k]]
        best = min(tied, key=lambda k: (traffic(cands[k]), k != top))
        tried.append({"fraction": fraction, "chosen": best, "top_score": top,
                      "steps": t.auto_steps,
                      **{k: {"widths": cands[k], "val_acc": round(scores[k][0], 4),
                             "val_loss": round(scores[k][1], 4), "se": round(se[k], 4),
                             "written": round(traffic(cands[k]) / whole, 4)} for k in cands}})
        return cands[best]

    solve.tried = tried
    return solve


def solve_target(t: WidthTarget, structure, model: torch.nn.Module, arch: str | None, shape,
                 val: SearchData | None = None, cache_dir=None,
                 memo: dict | None = None,
                 note: Callable[[str], None] | None = None) -> tuple[list[int], dict]:
    """The unit widths meeting ``t`` and a record of how they were found (``solver``; the
    measured search of ``--speedup``; the sensitivity table).

    ``val``: what the ``sensitivity`` and ``auto`` solvers score on (:func:`search_data`;
    unused by ``ratio``). ``memo``: a dict kept across calls on the same model and data
    (several targets): the sensitivity table, which no target changes, is measured once.
    ``note``: where progress lines go (the sensitivity table's).
    """
    check_solver(t.solver)
    record: dict = {"solver": t.solver}
    if t.solver == "ratio":
        solve = partial(solve_widths, round_to=t.round_to, balance=t.balance,
                        groups=unit_groups(structure))
    else:
        if val is None:
            raise ValueError(f"the {t.solver} solver needs validation data")
        memo = {} if memo is None else memo
        key = ("sensitivity", t.round_to, t.importance)
        if key not in memo:
            memo[key] = unit_sensitivity(structure, val.x, val.y, t.round_to, t.importance,
                                         note=note)
        sens = memo[key]
        record["sensitivity"] = [{str(w): round(v, 5) for w, v in s.items()} for s in sens]
        solve = (partial(solve_by_sensitivity, round_to=t.round_to, sens=sens,
                         groups=unit_groups(structure))
                 if t.solver == "sensitivity" else _auto(t, structure, val, sens, shape))
    if t.measure == "latency":
        widths, search = solve_speedup(structure, model, arch, shape, t.speedup, t.latency_batch,
                                       t.round_to, solve, cache_dir)
        record = {**record, **search}
    else:
        cost = CostModel(structure)
        widths = solve(cost.base_widths, getattr(cost, t.measure), t.fraction,
                       option=TARGET_OPTIONS[t.measure])
    if t.solver == "auto":
        record["candidates"] = solve.tried
    return widths, record
