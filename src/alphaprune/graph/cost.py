"""Exact parameters and FLOPs of the fused model for any unit widths, from the traced graph.

Only the layers a unit touches change size: the unit's own conv or linear (its outputs; a
residual stream's: every writer's), its BatchNorm, the depthwise and grouped convs and
BatchNorms of its post chain (both sides), the two 1x1 convs of its squeeze-and-excitation
blocks, and its consumers (their inputs; ``spatial`` inputs per channel after a flatten).
Everything else, unprunable layers included, keeps its count. Parameters count BatchNorm's affine terms (as
:func:`alphaprune.report.size.count_params` does); FLOPs are the multiply-accumulates of
every conv and linear call (as ``count_flops`` does), at the traced input size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from alphaprune.graph.trace import shape_of, trace
from alphaprune.graph.units import Structure

__all__ = ["CostModel", "written_elements"]


@dataclass
class _Layer:
    module: nn.Module
    out_unit: int | None = None      # index of the unit whose width sets its outputs
    # (unit, inputs per channel) of each unit whose width sets some of its inputs: one, or
    # several after a channel concatenation
    ins: list[tuple[int, int]] = field(default_factory=list)
    in_fixed: int = 0                # inputs no unit sets (the other slices of a cat)
    positions: int = 0               # output positions per call (conv FLOPs), summed over calls
    # units read through a BatchNorm (a concatenated stream's): a layer without a bias gets
    # one as soon as one of them drops a channel (that channel's constant folds into it)
    bias_from: list[int] = field(default_factory=list)

    def cin(self, widths: Sequence[int]) -> int:
        """Its inputs at these unit widths."""
        if not self.ins:
            return _in(self.module)
        return self.in_fixed + sum(widths[i] * spatial for i, spatial in self.ins)


class CostModel:
    """Parameter and FLOP counts of the fused network as functions of the unit widths."""

    def __init__(self, structure: Structure):
        gm = structure.gm
        self.base_widths = [u.width for u in structure.units]
        self.groups = [u.group for u in structure.units]
        self.layers: dict[str, _Layer] = {}
        for i, u in enumerate(structure.units):
            for layer, bn in _written(u):
                self._layer(gm, layer).out_unit = i
                if bn is not None:
                    self._layer(gm, bn).out_unit = i
            for name in u.tied:  # a depthwise or grouped conv (or its BN): as wide as the unit
                lay = self._layer(gm, name)
                lay.out_unit = i
                lay.ins = [(i, 1)] if isinstance(lay.module, nn.Conv2d) else []
            for ex in u.excites:  # reads the unit's channels, and writes them
                self._layer(gm, ex.reduce).ins = [(i, 1)]
                self._layer(gm, ex.expand).out_unit = i
            for c in u.consumers:
                self._layer(gm, c.name).ins.append((i, c.spatial))
                if c.bn is not None:  # the reader's BatchNorm drops the same channels
                    self._layer(gm, c.bn).ins.append((i, 1))
                    self._layer(gm, c.name).bias_from.append(i)
        for lay in self.layers.values():
            lay.in_fixed = _in(lay.module) - lay.cin(self.base_widths) if lay.ins else 0
        self.base_params = sum(p.numel() for p in gm.parameters())
        self.base_flops, calls = 0, {}
        for n in gm.graph.nodes:
            if n.op != "call_module":
                continue
            m = gm.get_submodule(n.target)
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                pos = _positions(m, shape_of(n))
                self.base_flops += _macs(m, pos, _in(m), _out(m))
                calls[n.target] = calls.get(n.target, 0) + pos
        for name, lay in self.layers.items():
            lay.positions = calls.get(name, 0)

    def _layer(self, gm, name: str) -> _Layer:
        if name not in self.layers:
            self.layers[name] = _Layer(gm.get_submodule(name))
        return self.layers[name]

    def _dims(self, lay: _Layer, widths: Sequence[int]) -> tuple[int, int]:
        if isinstance(lay.module, nn.modules.batchnorm._BatchNorm) and lay.ins:
            return lay.cin(widths), lay.cin(widths)  # a reader's BatchNorm: as wide as its input
        cout = _out(lay.module) if lay.out_unit is None else widths[lay.out_unit]
        return lay.cin(widths), cout

    def params(self, widths: Sequence[int]) -> int:
        """Parameters of the fused model with these unit widths."""
        total = self.base_params
        for lay in self.layers.values():
            cin, cout = self._dims(lay, widths)
            total += _params(lay.module, cin, cout) - _params(lay.module, _in(lay.module), _out(lay.module))
            if getattr(lay.module, "bias", True) is None and any(
                    widths[i] < self.base_widths[i] for i in lay.bias_from):
                total += cout  # the folded constants of the dropped channels
        return int(total)

    def flops(self, widths: Sequence[int]) -> int:
        """Multiply-accumulates of the fused model with these unit widths, for one input."""
        total = self.base_flops
        for lay in self.layers.values():
            m = lay.module
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                cin, cout = self._dims(lay, widths)
                total += _macs(m, lay.positions, cin, cout) - _macs(m, lay.positions, _in(m), _out(m))
        return int(total)

    def prunable_share(self) -> tuple[float, float]:
        """Shares of the parameters and of the FLOPs that lie in layers a unit width sets."""
        zero = [0] * len(self.base_widths)
        return (1 - self.params(zero) / self.base_params,
                1 - self.flops(zero) / max(1, self.base_flops))

    def max_prune(self) -> float:
        """The largest parameter fraction that can be removed (every unit one channel, or
        one group of its grouped convs, wide)."""
        return 1 - self.params(self.groups) / self.base_params


def _written(u) -> list[tuple[str, str | None]]:
    """The (layer, BatchNorm) pairs whose outputs a unit's width sets: a stream's writers."""
    if u.kind == "stream":
        return [(w.conv, w.bn) for w in u.writers]
    return [(u.name, u.bn)]


def _io(m: nn.Module) -> tuple[int, int]:
    """(input, output) channels or features of a conv, linear or BatchNorm."""
    if isinstance(m, nn.Conv2d):
        return m.in_channels, m.out_channels
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    return m.num_features, m.num_features


def _in(m: nn.Module) -> int:
    return _io(m)[0]


def _out(m: nn.Module) -> int:
    return _io(m)[1]


def _group_in(m: nn.Conv2d, cin: int) -> int:
    """Input channels each filter sees: ``cin`` for an ordinary conv; a depthwise or
    grouped conv's group width at any width (only a unit's own are cut, whole groups at a
    time)."""
    return cin if m.groups == 1 else m.in_channels // m.groups


def _params(m: nn.Module, cin: int, cout: int) -> int:
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        return cout * _group_in(m, cin) * kh * kw + (cout if m.bias is not None else 0)
    if isinstance(m, nn.Linear):
        return cout * cin + (cout if m.bias is not None else 0)
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return 2 * cout if m.affine else 0
    raise TypeError(f"no size rule for {type(m).__name__}")


def _positions(m: nn.Module, out_shape) -> int:
    """Output positions of one call: H*W for a conv; for a linear, those of its input's
    leading dims after the batch (H*W for a token-wise linear on (N, H, W, C), 1 on (N, C))."""
    if isinstance(m, nn.Conv2d) and out_shape is not None:
        return int(out_shape[2] * out_shape[3])
    if isinstance(m, nn.Linear) and out_shape is not None:
        return math.prod(out_shape[1:-1])
    return 1


def _macs(m: nn.Module, positions: int, cin: int, cout: int) -> int:
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        return positions * cout * _group_in(m, cin) * kh * kw
    return cin * cout * max(1, positions)


# outputs that only re-label memory a layer already wrote (views), or pass their input on
_VIEWS = {"flatten", "view", "reshape", "permute", "transpose", "squeeze", "unsqueeze",
          "getitem", "size", "dim", "contiguous"}
_PASS_THROUGH = (nn.Flatten, nn.Identity, nn.Dropout, nn.Unflatten)


def written_elements(model: nn.Module, shape) -> int:
    """Elements every layer, sum and activation of ``model`` writes for one input of
    ``shape`` (C, H, W), views and pass-throughs left out: the memory traffic a CPU pays on
    top of the FLOPs, which sets how fast two networks of equal FLOPs run (wide
    high-resolution maps cost the most). Traced at batch 2 (BatchNorm in eval mode needs no
    more; a model may squeeze a batch of 1) and halved."""
    gm = trace(model, torch.zeros(2, *shape))
    total = 0
    for n in gm.graph.nodes:
        if n.op == "call_module" and isinstance(gm.get_submodule(n.target), _PASS_THROUGH):
            continue
        name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
        if n.op in ("call_module", "call_function", "call_method") and name not in _VIEWS \
                and shape_of(n):
            total += math.prod(shape_of(n))
    return total // 2
