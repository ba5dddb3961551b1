"""Torch-Pruning's L1 magnitude channel pruning, sized to a parameter or FLOP budget, for any
model.

Torch-Pruning builds its own dependency graph, so coupled channels (a residual stream and
everything that adds into it) are cut together; the output layer (found once by
alphaprune's graph layer, then looked up by name in every pruned copy) is left whole. Sizes
are always counted on the pruned model itself: no per-layer formula.
"""

from __future__ import annotations

import copy

import torch
import torch.fx
import torch.nn as nn

from alphaprune.report.size import count_flops, count_params

__all__ = ["torch_pruning_l1", "match_latency", "output_layers", "with_split_layers"]

_ROOTS = (nn.Conv2d, nn.Linear)


def output_layers(model: nn.Module, input_shape) -> list[str]:
    """Names of the layers whose width is the model's output (they must not be pruned)."""
    from alphaprune.graph import find_units

    s = find_units(model, torch.zeros(2, *input_shape))
    return [k.name for k in s.skipped if k.reason.startswith("output layer")]


def _prune(model: nn.Module, ratio: float, input_shape, keep: list[str],
           round_to: int | None = None) -> nn.Module:
    import torch_pruning as tp

    m = copy.deepcopy(model).eval()
    imp = tp.importance.MagnitudeImportance(p=1, normalizer=None, group_reduction="first")
    # a tuple: Torch-Pruning calls model(*inputs) first, and a bare tensor unpacked along
    # its batch fails there (a traced model prints the failure) before the retry works
    pruner = tp.pruner.BasePruner(m, (torch.zeros(1, *input_shape),), importance=imp,
                                  pruning_ratio=ratio, round_to=round_to,
                                  ignored_layers=[m.get_submodule(k) for k in keep])
    pruner.step()  # removes channels physically
    return m


def _groups(m: nn.Module, input_shape, keep: list[str]):
    """Torch-Pruning's dependency graph of ``m`` and its prunable groups (root, handler)."""
    import torch_pruning as tp

    dg = tp.DependencyGraph().build_dependency(m, example_inputs=(torch.zeros(1, *input_shape),))
    groups = dg.get_all_groups(ignored_layers=[m.get_submodule(k) for k in keep],
                               root_module_types=_ROOTS)
    return dg, [(g[0].dep.target.module, g[0].dep.handler) for g in groups]


def _cut_one(m: nn.Module, k: int, input_shape, keep: list[str]) -> nn.Module:
    """``m`` with the lowest-L1 output channel of its ``k``-th group removed (in place)."""
    dg, groups = _groups(m, input_shape, keep)
    root, handler = groups[k]
    idx = int(root.weight.detach().abs().flatten(1).sum(1).argmin())
    dg.get_pruning_group(root, handler, idxs=[idx]).prune()
    return m


def _trim(m: nn.Module, target: int, input_shape, keep: list[str], count) -> nn.Module:
    """Remove single lowest-L1 channels, through Torch-Pruning's dependency graph, while
    one brings ``count`` (parameters or FLOPs) closer to the target (each candidate is
    counted on a pruned copy; a cut that leaves a grouped conv unable to run is not one)."""
    while True:
        n = count(m)
        _, groups = _groups(m, input_shape, keep)
        best = None
        for k, (root, _) in enumerate(groups):
            width = root.out_channels if isinstance(root, nn.Conv2d) else root.out_features
            if width <= 1:
                continue
            try:
                cand = _cut_one(copy.deepcopy(m), k, input_shape, keep)
                with torch.no_grad():
                    cand(torch.zeros(1, *input_shape))
                after = count(cand)
            except (RuntimeError, ValueError):
                # one channel out of a grouped conv's dependency leaves its channels no
                # longer whole groups (Torch-Pruning's bulk step keeps them whole): no step
                continue
            if abs(after - target) < abs(n - target) and (
                    best is None or abs(after - target) < best[0]):
                best = (abs(after - target), k)
        if best is None:
            return m
        m = _cut_one(m, best[1], input_shape, keep)


def torch_pruning_l1(model: nn.Module, target, input_shape, measure: str = "params",
                     latency_batch: int = 1, round_to: int | None = None,
                     keep: list[str] | None = None) -> nn.Module:
    """Channel-prune a copy of ``model`` with Torch-Pruning (L1 of each filter, per layer).

    The per-layer channel ratio is found by bisection so the ``measure`` (``params``, or
    ``flops``: multiply-accumulates at ``input_shape``) is just above ``target``; then
    single lowest-L1 channels are removed while that brings it closer. With ``latency``,
    ``target`` is a model to run as fast as, at ``latency_batch`` on this machine
    (:func:`match_latency`). ``round_to`` (Torch-Pruning's own option) keeps every cut
    layer's width a multiple of it, as objective selection's ``--round-to`` does; the
    single-channel trim is then skipped, so the fit to ``target`` is coarser. ``keep``: more
    layers (by name) whose outputs stay whole, Torch-Pruning's ``ignored_layers``.
    """
    if measure == "latency":
        return match_latency(model, target, input_shape, latency_batch, round_to=round_to,
                             keep=keep)
    if measure not in ("params", "flops"):
        raise ValueError(f"unknown measure {measure!r}")
    count = count_params if measure == "params" else (lambda m: count_flops(m, input_shape))
    keep = output_layers(model, input_shape) + list(keep or [])
    model = with_split_layers(model, input_shape)
    lo, hi = 0.0, 0.99
    for _ in range(14):
        mid = (lo + hi) / 2
        n = count(_prune(model, mid, input_shape, keep, round_to))
        if n > target:
            lo = mid
        else:
            hi = mid
    if round_to:
        return _merged(_prune(model, lo, input_shape, keep, round_to))
    return _merged(_trim(_prune(model, lo, input_shape, keep), target, input_shape, keep, count))


def with_split_layers(model: nn.Module, input_shape) -> nn.Module:
    """``model``, or, where a layer's output is chunked or split on its channels (a YOLOv8
    C2f's first conv), its traced graph with each such layer rewritten into one layer per
    part (:func:`~alphaprune.graph.chunks.split_chunked_layers`; the model itself is left
    as it is). Torch-Pruning's dependency graph mis-indexes a chunk whose parts enter a
    concatenation and fails (an IndexError in its importance); its own YOLOv8 example swaps
    C2f for a two-conv ``C2f_v2`` by hand, which is this rewrite."""
    from alphaprune.graph.chunks import split_chunked_layers
    from alphaprune.graph.trace import trace

    gm = trace(model, torch.zeros(2, *input_shape))
    return gm if split_chunked_layers(gm) else model


def _merged(m: nn.Module) -> nn.Module:
    """A pruned model with its split layers one layer again (:func:`with_split_layers`)."""
    from alphaprune.graph.chunks import merge_split_layers

    if isinstance(m, torch.fx.GraphModule):
        merge_split_layers(m)
    return m


def match_latency(model: nn.Module, reference: nn.Module, input_shape, batch: int,
                  steps: int = 8, round_to: int | None = None,
                  keep: list[str] | None = None) -> nn.Module:
    """The Torch-Pruning L1 cut of ``model`` that runs as fast as ``reference``: bisection
    on the per-layer ratio, each candidate timed against ``reference`` side by side
    (alternating single passes, the median of their ratios: timings of the same moment, steadier than
    either); the candidate whose speed ratio came closest to 1."""
    from alphaprune.speedup import measured_speedup

    keep = output_layers(model, input_shape) + list(keep or [])
    model = with_split_layers(model, input_shape)
    lo, hi, best = 0.0, 0.99, None
    for _ in range(steps):
        mid = (lo + hi) / 2
        cand = _merged(_prune(model, mid, input_shape, keep, round_to))
        ratio, _, _ = measured_speedup(reference, cand, input_shape, batch)  # ref ms / cand ms
        if best is None or abs(ratio - 1) < abs(best[0] - 1):
            best = (ratio, cand)
        if ratio < 1:  # slower than the reference: cut more
            lo = mid
        else:
            hi = mid
    return best[1]
