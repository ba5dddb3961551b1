"""The widths a run prunes to: one target (parameters, FLOPs or a measured speed-up), one
width solver, shared by ``prune`` and ``compare`` so that both build the same network.

Solvers (``--solver``):

* ``ratio``: every unit keeps a share of its channels set by one ratio, tilted by
  ``--balance`` (:func:`alphaprune.blend.widths.solve_widths`);
* ``sensitivity``: cuts where the pretrained network's validation loss rises least per
  unit of the budgeted cost (:mod:`alphaprune.blend.sensitivity`).

Under ``--speedup`` either solver decides where to cut against the latency table and the
closed loop of :mod:`alphaprune.speedup` decides how much.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from alphaprune.blend.sensitivity import solve_by_sensitivity, unit_sensitivity
from alphaprune.blend.widths import solve_widths
from alphaprune.data import normalize, stratified_subset
from alphaprune.errors import UserError
from alphaprune.graph import CostModel
from alphaprune.speedup import solve_speedup

__all__ = ["SOLVERS", "TARGET_OPTIONS", "WidthTarget", "check_solver", "search_data", "solve_target"]

SOLVERS = ("ratio", "sensitivity")
TARGET_OPTIONS = {"params": "--prune", "flops": "--flops", "latency": "--speedup"}


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


def check_solver(solver: str) -> None:
    """A one-line :class:`UserError` for an unknown solver."""
    if solver not in SOLVERS:
        raise UserError(f"unknown --solver '{solver}': use one of {', '.join(SOLVERS)}")


def search_data(ds, val_idx, size: int, mean, std, seed: int = 0):
    """A stratified, seeded pick of ``size`` validation images (normalised) and their
    labels, for a width search to score candidates on."""
    pick = val_idx[stratified_subset(ds.y[val_idx], min(size, len(val_idx)), seed)]
    return normalize(torch.as_tensor(ds.x[pick]), mean, std), torch.as_tensor(ds.y[pick])


def solve_target(t: WidthTarget, structure, model: torch.nn.Module, arch: str | None, shape,
                 val: tuple[torch.Tensor, torch.Tensor] | None = None,
                 cache_dir=None) -> tuple[list[int], dict]:
    """The unit widths meeting ``t`` and a record of how they were found (``solver``; the
    measured search of ``--speedup``; the sensitivity table).

    ``val``: normalised validation images and their labels, which the sensitivity solver
    scores cuts on (required by it, unused by ``ratio``).
    """
    check_solver(t.solver)
    record: dict = {"solver": t.solver}
    if t.solver == "sensitivity":
        if val is None:
            raise ValueError("the sensitivity solver needs validation data")
        sens = unit_sensitivity(structure, *val, t.round_to, t.importance)
        record["sensitivity"] = [{str(w): round(v, 5) for w, v in s.items()} for s in sens]
        solve = partial(solve_by_sensitivity, round_to=t.round_to, sens=sens)
    else:
        solve = partial(solve_widths, round_to=t.round_to, balance=t.balance)
    if t.measure == "latency":
        widths, search = solve_speedup(structure, model, arch, shape, t.speedup, t.latency_batch,
                                       t.round_to, solve, cache_dir)
        return widths, {**record, **search}
    cost = CostModel(structure)
    widths = solve(cost.base_widths, getattr(cost, t.measure), t.fraction,
                   option=TARGET_OPTIONS[t.measure])
    return widths, record
