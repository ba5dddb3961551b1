"""The parameter-target solver: per-unit widths whose fused model has a given size.

The size of the fused model for any widths comes from a ``count`` callable: for any model
:meth:`alphaprune.graph.cost.CostModel.params`, exact from the traced graph. (For a
registry VGG it equals :func:`vgg_param_count`, ``sum_i (9 k_i k_{i-1} + 2 k_i) + k_L C + C``,
kept as an independent check in the tests.)

Widths come from a keep ratio found by bisection, then single-channel steps on the layer
that brings the count closest to the target until no step helps. The keep ratio is uniform
by default; ``balance`` > 0 keeps more of the narrow layers and less of the wide ones:
layer ``i`` keeps ``min(1, s * (b_i / b_max) ** -balance)`` of its ``b_i`` channels. A
3x3 conv's parameters grow with the product of its widths, so on a VGG the wide late
layers hold most of them: cutting them harder spares the narrow early layers, which cost
few parameters but many FLOPs (they run at the highest resolution).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

from alphaprune.errors import Unreachable, UserError

__all__ = ["vgg_param_count", "vgg_counter", "solve_widths", "check_width_options", "narrowest",
           "check_target", "refine", "unit_step"]


def vgg_param_count(widths: Sequence[int], in_channels: int, num_classes: int) -> int:
    """Exact parameter count of a registry VGG with these per-layer widths."""
    total, prev = 0, in_channels
    for k in widths:
        total += 9 * k * prev + 2 * k
        prev = k
    return total + prev * num_classes + num_classes


def check_width_options(round_to: int, balance: float) -> None:
    """Raise a one-line :class:`UserError` for ``round_to`` < 1 or ``balance`` outside [0, 1]."""
    if round_to < 1:
        raise UserError(f"--round-to must be >= 1, got {round_to}")
    if not 0.0 <= balance <= 1.0:
        raise UserError(f"--balance must be between 0 and 1, got {balance}")


def unit_step(base: int, round_to: int, group: int = 1) -> int:
    """How far a unit's width moves at a time: ``round_to`` (with grouped convs, the least
    multiple of it that is whole groups) where the base is wider than that; else one
    group, which is one channel for a unit without grouped convs."""
    step = math.lcm(round_to, group)
    return step if base > step else group


def _groups(groups: Sequence[int] | None, n: int) -> list[int]:
    return [1] * n if groups is None else [int(g) for g in groups]


def narrowest(base: Sequence[int], round_to: int, groups: Sequence[int] | None = None) -> list[int]:
    """The narrowest widths the solver may give: one step of :func:`unit_step` (``round_to``
    channels, or 1 for a unit no wider than ``round_to``). ``groups``: each unit's channels
    per group (:attr:`alphaprune.graph.units.Unit.group`; 1 each by default)."""
    return [unit_step(b, round_to, g) for b, g in zip(base, _groups(groups, len(base)))]


def check_target(base: Sequence[int], count: Callable[[Sequence[int]], float], prune: float,
                 round_to: int, option: str = "--prune",
                 groups: Sequence[int] | None = None) -> float:
    """``(1 - prune) * count(base)``, the count to meet, once ``prune`` is checked: strictly
    between 0 and 1, and within reach of the narrowest widths.

    Raises:
        UserError: naming ``option`` and the largest reachable value.
    """
    what = "FLOPs" if option == "--flops" else "parameters"
    if not 0.0 < prune < 1.0:
        raise UserError(f"{option} must be between 0 and 1 (exclusive), got {prune}: e.g. 0.65 "
                        f"removes 65% of the {what}")
    target = (1.0 - prune) * count(base)
    floor = count(narrowest(base, round_to, groups))
    if floor > target:
        raise Unreachable(f"{option} {prune} cannot be reached: with every prunable unit at its "
                        f"narrowest the model keeps {floor / count(base):.1%} of its {what} "
                        f"(the rest is in layers that cannot be pruned); pass {option} "
                        f"{1 - floor / count(base):.3f} or less")
    return target


def solve_widths(base: Sequence[int], count: Callable[[Sequence[int]], int],
                 prune: float, round_to: int = 1, balance: float = 0.0,
                 option: str = "--prune", groups: Sequence[int] | None = None) -> list[int]:
    """Widths (each between 1 and the base width) keeping ``1 - prune`` of what ``count``
    measures: the parameters, or the FLOPs (``option`` ``--flops``).

    ``count(widths)`` is the fused model's exact parameter (or FLOP) count, unprunable
    layers included; ``count(base)`` is the original's. ``option`` names the target in
    error messages.

    ``round_to`` > 1 keeps every width a multiple of it (CPU kernels run faster on channel
    counts that are multiples of 8) at the cost of a coarser fit to the target. ``groups``:
    each unit's channels per group; a unit with grouped convs keeps whole groups
    (:func:`unit_step`).
    ``balance`` (0 to 1): 0 cuts every layer by the same ratio; higher values cut the wide
    layers harder and keep more of the narrow ones (module docstring). Where the balanced
    widths cannot come within half a point of the target (coarse ``round_to`` on a tiny
    model), the uniform ones are used if they come closer.

    Raises:
        UserError: ``prune`` is not strictly between 0 and 1, ``round_to`` < 1,
        ``balance`` outside [0, 1], or a target the prunable layers cannot reach.
    """
    check_width_options(round_to, balance)
    base = [int(b) for b in base]
    groups = _groups(groups, len(base))
    target = check_target(base, count, prune, round_to, option, groups)

    def snap(w: float, b: int, g: int) -> int:
        step = unit_step(b, round_to, g)
        if step == g:
            return min(b, max(g, g * round(w / g)))
        return min(b - b % step, max(step, step * round(w / step)))

    b_max = max(base)

    def at(s: float) -> list[int]:  # s = 1 keeps every layer whole, whatever the balance
        return [snap(min(1.0, s * (b / b_max) ** -balance) * b, b, g) for b, g in zip(base, groups)]

    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if count(at(mid)) < target:
            lo = mid
        else:
            hi = mid
    ws = min((at(lo), at(hi)), key=lambda w: abs(count(w) - target))
    # refine: one channel at a time, wherever it brings the count closest to the target;
    # a balanced solve first leaves the layers it kept whole alone (cutting a narrow early
    # layer is the cheapest fine step, and exactly what balance is meant to avoid), and
    # touches them only if the target is still more than 0.4 points away
    everywhere = list(range(len(ws)))
    cut = [i for i in everywhere if ws[i] < base[i]]  # the layers the ratio cut
    stages = [everywhere] if balance == 0.0 else [cut, everywhere]
    for stage, layers in enumerate(stages):
        if stage and abs(count(ws) - target) <= 0.004 * count(base):
            break
        ws = refine(ws, layers, base, round_to, target, count, groups)
    if balance and abs(count(ws) - target) > 0.005 * count(base):
        # coarse widths (round_to on a tiny model) can leave no balanced fit within half a
        # point of the target: the uniform ratio's, if closer, keeps the size promise
        uniform = solve_widths(base, count, prune, round_to, option=option, groups=groups)
        ws = min((ws, uniform), key=lambda w: abs(count(w) - target))
    return ws


def refine(ws: list[int], layers: list[int], base: list[int], round_to: int, target: float,
           count, groups: Sequence[int] | None = None) -> list[int]:
    """Steps of :func:`unit_step` (a channel, or ``round_to``) on ``layers`` while one brings
    ``count`` closer to ``target``, the best step each time. Where none does but the count is still more
    than 0.4 points of the base's away, the best pair of opposite steps on two of
    ``layers`` is taken: with coarse steps (``round_to`` on a small model) every single
    step can overshoot both ways while a trade between two layers fits."""
    far = 0.004 * count(base)
    groups = _groups(groups, len(base))
    while True:
        err = abs(count(ws) - target)
        steps = _steps(ws, layers, base, round_to, groups)
        best = _closest((ws_ for _, ws_ in steps), count, target, err)
        if best is None and err > far:
            pairs = ([*a[:j], b[j], *a[j + 1:]] for (i, a), (j, b) in itertools.combinations(steps, 2)
                     if i != j and (a[i] - ws[i]) * (b[j] - ws[j]) < 0)
            best = _closest(pairs, count, target, err)
        if best is None:
            return ws
        ws = best


def _steps(ws: list[int], layers: list[int], base: list[int],
           round_to: int, groups: list[int]) -> list[tuple[int, list[int]]]:
    """``(i, ws with layer i one step narrower or wider)`` for each layer ``i`` of
    ``layers``: a step of :func:`unit_step`, within one step and the base width."""
    out = []
    for i in layers:
        step = unit_step(base[i], round_to, groups[i])
        for d in (-step, step):
            if step <= ws[i] + d <= base[i]:
                out.append((i, ws[:i] + [ws[i] + d] + ws[i + 1:]))
    return out


def _closest(cands, count, target: float, err: float) -> list[int] | None:
    """The candidate widths whose count is closest to ``target``, if closer than ``err``."""
    best = None
    for cand in cands:
        e = abs(count(cand) - target)
        if e < err and (best is None or e < best[0]):
            best = (e, cand)
    return None if best is None else best[1]


def vgg_counter(in_channels: int, num_classes: int) -> Callable[[Sequence[int]], int]:
    """:func:`vgg_param_count` as a ``count`` callable for :func:`solve_widths`."""
    return lambda widths: vgg_param_count(widths, in_channels, num_classes)
