"""Torch-Pruning's L1 magnitude channel pruning, sized to a parameter budget."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from alphaprune.report.size import count_params

__all__ = ["torch_pruning_l1"]


def _prune(model: nn.Module, ratio: float, input_shape) -> nn.Module:
    import torch_pruning as tp

    m = copy.deepcopy(model).eval()
    imp = tp.importance.MagnitudeImportance(p=1, normalizer=None, group_reduction="first")
    pruner = tp.pruner.BasePruner(m, torch.zeros(1, *input_shape), importance=imp,
                                  pruning_ratio=ratio, ignored_layers=[m.classifier])
    pruner.step()  # removes channels physically
    return m


def _trim(m: nn.Module, target_params: int, input_shape) -> nn.Module:
    """Remove single lowest-L1 filters (through Torch-Pruning's dependency graph) while that
    brings the parameter count closer to the target."""
    import torch_pruning as tp

    convs = [u.conv for u in m.features]
    while True:
        n = count_params(m)
        best = None
        for i, conv in enumerate(convs):
            if conv.out_channels <= 1:
                continue
            nxt = convs[i + 1].out_channels if i + 1 < len(convs) else m.classifier.out_features
            after = n - (9 * conv.in_channels + 2 + (9 if i + 1 < len(convs) else 1) * nxt)
            if abs(after - target_params) < abs(n - target_params) and (
                    best is None or abs(after - target_params) < best[0]):
                best = (abs(after - target_params), conv)
        if best is None:
            return m
        conv = best[1]
        idx = int(conv.weight.detach().abs().sum(dim=(1, 2, 3)).argmin())
        dg = tp.DependencyGraph().build_dependency(m, example_inputs=torch.zeros(1, *input_shape))
        dg.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=[idx]).prune()


def torch_pruning_l1(model: nn.Module, target_params: int, input_shape) -> nn.Module:
    """Channel-prune a copy of ``model`` with Torch-Pruning (L1 of each filter, per layer).

    The per-layer channel ratio is found by bisection so the parameter count is just above
    ``target_params``; then single lowest-L1 filters are removed (Torch-Pruning's dependency
    graph) while that brings the count closer.
    """
    lo, hi = 0.0, 0.99
    for _ in range(14):
        mid = (lo + hi) / 2
        n = count_params(_prune(model, mid, input_shape))
        if n > target_params:
            lo = mid
        else:
            hi = mid
    return _trim(_prune(model, lo, input_shape), target_params, input_shape)
