"""``--speedup S``: unit widths whose fused model runs S times faster than the original, on
this machine, at ``--latency-batch``.

The per-layer latency table (:class:`alphaprune.latency.LatencyModel`) decides *where* to
cut: the width solver meets a share of its predicted latency. How much to cut is then
closed on measurements: the candidate architecture (random weights; only its shape
matters) is timed against the original in alternating passes, and the latency share asked
of the solver is corrected by the measured miss (by a step that shrinks each time the
search passes the target, within the shares already found too fast and too slow), a few
times, until a candidate's measured speed-up is within 3% of the target and the mean of
its two timings, when it is timed a second time, is too. Out of candidates, the closest
on either side is kept. The kept candidate is always timed at least twice (each
candidate's record holds its timings; a solver may return the same widths for two
shares, which are then timed as two entries).
The most the prunable layers can give (every unit at its narrowest) is measured first: a
target beyond it is a one-line error naming it.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn as nn

from alphaprune.allocator import keep_freed_memory
from alphaprune.blend.fuse import fused_architecture
from alphaprune.blend.widths import narrowest as narrow_widths
from alphaprune.errors import Unreachable, UserError
from alphaprune.graph.units import unit_groups
from alphaprune.latency import LatencyModel

__all__ = ["solve_speedup", "measured_speedup", "alternating_speedup", "next_share"]

TOLERANCE = 0.03


def measured_speedup(original: nn.Module, other: nn.Module, shape, batch: int,
                     pairs: int = 40) -> tuple[float, float, float]:
    """(speed-up, original ms, other ms) at ``batch``, timed side by side.

    Single passes alternate: original, other, original. Each triple gives one ratio (the
    mean of the two original passes over the other's pass), and the speed-up is the median
    of ``pairs`` such ratios; the ms are the medians of each model's passes. On a shared
    machine a model's time drifts by tens of percent within a minute; passes this close in
    time see the same state of the machine, so a drift slower than a pass cancels in their
    ratio. What the host does to the two models differently does not (BENCHMARKS.md
    section 11). Sets the allocator for steady timings first (:mod:`alphaprune.allocator`)."""
    keep_freed_memory()
    a, b = _prepared(original, batch, shape), _prepared(other, batch, shape)
    for m, x in (a, b):
        _passes(m, x, 3)
    return alternating_speedup(lambda: _passes(*a, 1)[0], lambda: _passes(*b, 1)[0], pairs)


def alternating_speedup(time_a: Callable[[], float], time_b: Callable[[], float],
                        pairs: int) -> tuple[float, float, float]:
    """(speed-up of b over a, a's ms, b's ms) from ``pairs`` triples a, b, a of single timed
    passes (each callable runs one pass and returns its seconds): each triple's ratio is the
    mean of its two a passes over its b pass, the speed-up their median and the ms each
    side's median. Any runtime can be timed this way (``benchmarks/share_runtimes.py``)."""
    ta, tb, ratios = [], [], []
    for _ in range(pairs):
        t1, t2, t3 = time_a(), time_b(), time_a()
        ta += [t1, t3]
        tb.append(t2)
        ratios.append((t1 + t3) / 2 / t2)
    return (statistics.median(ratios), statistics.median(ta) * 1e3,
            statistics.median(tb) * 1e3)


def _prepared(model: nn.Module, batch: int, shape) -> tuple[nn.Module, torch.Tensor]:
    """A channels-last eval copy of ``model`` and a random batch for it."""
    model = copy.deepcopy(model).eval()
    x = torch.randn(batch, *shape)
    if x.dim() == 4:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(
            memory_format=torch.channels_last)
    return model, x


def _passes(model: nn.Module, x: torch.Tensor, n: int) -> list[float]:
    """Seconds of each of ``n`` forward passes."""
    out = []
    with torch.inference_mode():
        for _ in range(n):
            t0 = time.perf_counter()
            model(x)
            out.append(time.perf_counter() - t0)
    return out


def calibrated(lm: LatencyModel, points: list[tuple[list[int], float]]):
    """``widths -> ms``: the table's layer sum scaled and offset to match measured whole-model
    latencies (``points``: widths and their measured ms; the first two span the range).
    Standalone layers miss the whole network's overheads; two measured ends fix that."""
    (w0, t0), (w1, t1) = points[0], points[1]
    r0, r1 = lm.layers_ms(w0), lm.layers_ms(w1)
    k = (t0 - t1) / (r0 - r1) if r0 != r1 else 0.0
    if k <= 0:  # measurements too noisy to calibrate: the table as it is
        return lm
    offset = t0 - k * r0
    return lambda widths: offset + k * lm.layers_ms(widths)


def next_share(tried: list[dict], speedup: float, floor: float) -> float:
    """The latency share to ask of the solver next, from the candidates timed so far
    (``latency_share``, ``measured_speedup``): the last share corrected by its measured
    miss (too fast: keep more; too slow: less; never below ``floor``, the narrowest
    network's share), by a step that shrinks each time the misses change sign: the whole
    miss until the search first passes the target, half of it after that, a third after
    the next pass, and so on (Kesten's rule). Each timing carries the machine's noise; a
    full correction by the last one alone carries that noise into every next share, so
    the search wanders around the target instead of closing in on it. Where the share
    would leave those already known to be too fast and too slow, the middle of those two:
    a solver's widths can jump between neighbouring shares (a stream cut whole, another
    allocation chosen)."""
    last = tried[-1]
    misses = [t["measured_speedup"] > speedup for t in tried]
    passes = sum(a != b for a, b in zip(misses, misses[1:]))
    step = (last["measured_speedup"] / speedup) ** (1 / (1 + passes))
    keep = min(0.999, max(floor, last["latency_share"] * step))
    fast = [t["latency_share"] for t in tried if t["measured_speedup"] > speedup]
    slow = [t["latency_share"] for t in tried if t["measured_speedup"] < speedup]
    if fast and slow and max(fast) < min(slow) and not max(fast) < keep < min(slow):
        keep = (max(fast) + min(slow)) / 2
    return keep


def solve_speedup(structure, model: nn.Module, arch: str | None, shape, speedup: float,
                  batch: int, round_to: int, solve: Callable, cache_dir=None,
                  iterations: int = 5) -> tuple[list[int], dict]:
    """Widths for ``speedup`` and a record of the search: the latency table's file and how
    many entries this run measured, the largest measured speed-up, every candidate's
    timings and measured speed-up (their mean), which candidate was kept, and whether it is
    on target (within :data:`TOLERANCE`; a search out of iterations keeps the closest).

    ``solve(base, count, fraction, option=...)`` is the width solver
    (:mod:`alphaprune.plan`): it decides where to cut to remove ``fraction`` of the
    predicted latency ``count``."""
    lm = LatencyModel(structure, model, shape, batch, round_to, cache_dir=cache_dir)
    base = list(lm.base_widths)
    narrowest = narrow_widths(base, round_to, unit_groups(structure))
    # candidates are the fused architecture at their widths: only the shape is timed
    most, t_base, t_narrow = measured_speedup(
        model, fused_architecture(structure, narrowest, arch).eval(), shape, batch)
    threads = torch.get_num_threads()
    if most < speedup * (1 - TOLERANCE):
        below = math.floor(most * 0.95 * 100) / 100  # as printed: a value --speedup takes
        lower = f"--speedup {below:.2f} or less, or " if below > 1.0 else ""
        ran = f"{most:.2f}x faster" if most >= 1 else f"{1 / most:.2f}x slower"
        raise Unreachable(
            f"--speedup {speedup:g} cannot be reached at batch {batch} on this machine "
            f"({threads} thread(s)): with every prunable unit at its narrowest the model ran "
            f"{ran} (the rest of its time is in layers no width changes); pass "
            f"{lower}a larger --latency-batch")
    count = calibrated(lm, [(base, t_base), (narrowest, t_narrow)])
    keep, tried = 1.0 / speedup, []
    for _ in range(iterations):
        try:
            widths = solve(base, count, 1.0 - keep, option="--speedup")
        except UserError:  # beyond what the prediction reaches: the measured floor decides
            widths = narrowest
        arch_model = fused_architecture(structure, widths, arch).eval()
        x, _, _ = measured_speedup(model, arch_model, shape, batch)
        tried.append({"widths": widths, "latency_share": keep, "measured_speedup": x,
                      "timings": [x]})
        if _met(tried[-1], speedup) and _met(_confirm(tried[-1], model, arch_model, shape,
                                                      batch), speedup):
            break
        keep = next_share(tried, speedup, 1.0 / most)
    best = _kept(tried, speedup, model, structure, arch, shape, batch)
    info = {"table": str(lm.path), "table_entries_measured": lm.measured, "batch": batch,
            "threads": threads, "most": most, "tried": tried,
            "kept": next(i for i, t in enumerate(tried) if t is best),
            "on_target": _met(best, speedup)}
    return best["widths"], info


def _kept(tried: list[dict], speedup: float, model, structure, arch, shape,
          batch: int) -> dict:
    """The candidate the search keeps: the closest to ``speedup`` (by ratio, on either
    side), timed at least twice. A candidate chosen on one timing is timed again and the
    choice made anew, until the chosen one has two: choosing on single timings would
    favour the one timed high. (Preferring candidates not short of the target, as the
    search once did, kept the ones whose noise ran high: overshoots of 15-24%,
    BENCHMARKS.md section 18.)"""
    while True:
        best = min(tried, key=lambda t: abs(math.log(t["measured_speedup"] / speedup)))
        if len(best["timings"]) > 1:
            return best
        _confirm(best, model, fused_architecture(structure, best["widths"], arch).eval(),
                 shape, batch)


def _met(candidate: dict, speedup: float) -> bool:
    """Whether a candidate's measured speed-up is within :data:`TOLERANCE` of ``speedup``."""
    return abs(candidate["measured_speedup"] / speedup - 1) <= TOLERANCE


def _confirm(candidate: dict, model: nn.Module, arch_model: nn.Module, shape,
             batch: int) -> dict:
    """``candidate`` timed once more, on its own; its speed-up becomes the mean of its
    timings. A candidate is kept because its timing landed near the target, and on a noisy
    machine that first timing is biased upwards by the selection itself; a second,
    independent one is not. (On this project's machine that bias measured smaller than
    the machine's own swings: BENCHMARKS.md section 18.)"""
    x, _, _ = measured_speedup(model, arch_model, shape, batch)
    candidate["timings"].append(x)
    candidate["measured_speedup"] = statistics.fmean(candidate["timings"])
    return candidate
