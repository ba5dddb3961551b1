"""Exact fusion of a :class:`BlendedNet` at alpha = 0 into a compact network.

At alpha = 0 the chain ``B_prev -> layer -> A`` is linear, so per kernel position

    W'[a, c] = sum_{o, m} A[a, o] * W[o, m] * B_prev[m, c]        (bias' = A b)

Fold rules, one per layer a unit touches:

* the unit's own conv or linear: ``A`` on its outputs (``BN'`` becomes its BatchNorm);
* a consumer conv (groups = 1): ``B`` on its input channels; zero (or any per-channel)
  padding, stride and dilation commute with a channel mix, so any such conv absorbs it;
* a consumer linear on a 2-d input: ``B`` on its inputs;
* a consumer linear after a channel-major flatten of an H x W map: ``B (x) I_HW``;
* a consumer reached through a channel concatenation: ``B`` on the unit's slice of its
  inputs, each unit's on its own, the identity on the rest (block diagonal);
* a layer that is both (a unit fed by a unit) gets both;
* a depthwise conv in a unit's post chain, and its BatchNorm: the branch's narrow copy;
* a residual stream: each writer's conv gets its ``A`` on its outputs (its ``BN'`` becomes
  its BatchNorm) and every consumer the fixed scatter ``S^T`` (a column selection); the
  sums and activations in between then run on the kept channels alone. A writer's
  squeeze-and-excitation block reads and scales only the kept channels: its ``reduce``
  takes ``S`` on its inputs, its ``expand`` ``S^T`` on its outputs (the dropped channels
  are zero before the block, so it gave them nothing);
* a concatenated stream (a DenseNet's stem, growth conv or transition): its writer as a
  residual stream's; each reader's BatchNorm keeps only the kept channels, and the layer
  after it (a conv without padding, or a linear after a global mean) takes the column
  selection and, in its bias, what each dropped channel gave it: the constant
  ``act(BN(0))`` through its weights (summed over the kernel).

The ``B`` maps have no bias, so the result equals the blended network at alpha = 0 up to
float rounding (computed in float64).
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp

from alphaprune.blend.blended import BlendedNet, node_op
from alphaprune.blend.branch import StreamUnit, matrix
from alphaprune.graph.chunks import merge_split_layers
from alphaprune.graph.trace import cat_args, merge_max_pools, shape_of
from alphaprune.models import create_model
from alphaprune.models.registry import infer_kwargs

__all__ = ["fuse", "fuse_graph", "fold_layer", "fused_architecture"]


@torch.no_grad()
def fold_layer(layer: nn.Module, A: torch.Tensor | None, B_in: torch.Tensor | None,
               spatial: int = 1) -> nn.Module:
    """A new conv or linear computing ``A . layer . (B_in (x) I_spatial)``.

    Args:
        layer: the original ``Conv2d`` (groups = 1) or ``Linear``.
        A: (k, n_out) map on its outputs, or ``None`` (identity).
        B_in: (n_in, k_in) map on its input channels, or ``None`` (identity).
        spatial: input positions per channel (a flattened map's H*W), for a linear.
    """
    W = layer.weight.double()
    n_out = W.shape[0]
    if isinstance(layer, nn.Linear):
        W = W.view(n_out, -1, spatial)                           # (o, m, s)
    if A is not None:
        W = torch.einsum("ao,om...->am...", A.double(), W)
    if B_in is not None:
        W = torch.einsum("am...,mc->ac...", W, B_in.double())
    bias = layer.bias
    if bias is not None and A is not None:
        bias = A.double() @ bias.double()
    if isinstance(layer, nn.Linear):
        new = nn.Linear(W.shape[1] * spatial, W.shape[0], bias=bias is not None)
        W = W.reshape(W.shape[0], -1)
    else:
        new = nn.Conv2d(W.shape[1], W.shape[0], layer.kernel_size, stride=layer.stride,
                        padding=layer.padding, dilation=layer.dilation, bias=bias is not None,
                        padding_mode=layer.padding_mode)
    new = new.to(layer.weight.dtype)
    new.weight.copy_(W.to(new.weight.dtype))
    if bias is not None:
        new.bias.copy_(bias.to(new.bias.dtype))
    return new


@torch.no_grad()
def fuse(blended: BlendedNet, arch: str | None = None) -> nn.Module:
    """Fold every branch into the compact network (the blended one's alpha is ignored).

    Returns a ``GraphModule`` that runs the original model's graph with narrowed layers
    (module and ``state_dict`` names are the original model's); with ``arch``, the registry
    model of that name and the fused widths, holding the same weights.
    """
    gm = fuse_graph(blended)
    if arch is None:
        return gm
    state = gm.state_dict()
    model = create_model(arch, **infer_kwargs(arch, state))
    model.load_state_dict(state)
    return model


@torch.no_grad()
def fused_architecture(structure, widths, arch: str | None = None) -> nn.Module:
    """The compact network objective selection ships at ``widths`` (its shape; the weights
    come from branches drawn without touching the caller's random state)."""
    import torch

    state = torch.get_rng_state()  # building the branches draws their init
    try:
        return fuse(BlendedNet(structure, widths), arch)
    finally:
        torch.set_rng_state(state)


def fuse_graph(blended: BlendedNet) -> fx.GraphModule:
    """The fused network as a ``GraphModule`` (see :func:`fuse`)."""
    structure = blended.structure
    gm = fx.GraphModule(structure.gm, copy.deepcopy(structure.gm.graph))
    maps: dict[str, dict] = {}
    copied: dict[str, nn.Module] = {}  # branch modules that replace original ones as they are
    for unit, br in zip(structure.units, blended.features):
        if isinstance(br, StreamUnit):
            for w, wb in zip(unit.writers, br.writers):
                maps.setdefault(w.conv, {})["A"] = matrix(wb.A)
                if w.bn is not None:
                    copied[w.bn] = wb.bn2
            B = br.B()
        else:
            maps.setdefault(unit.name, {})["A"] = matrix(br.A)
            if unit.bn is not None:
                copied[unit.bn] = br.bn2
            for name, (_, narrow) in zip(unit.tied, br.tied_pairs()):
                copied[name] = narrow
            for ex, (_, narrow) in zip(unit.excites, br.excite_pairs()):
                copied[ex.reduce], copied[ex.expand] = narrow.reduce, narrow.expand
            B = matrix(br.B)
        for c in unit.consumers:
            m = maps.setdefault(c.name, {})
            m.setdefault("parts", []).append((c.offset, B))
            m["spatial"] = c.spatial
            if c.bn is not None:  # a concatenated stream read through a BatchNorm
                m.setdefault("via", []).append((c.bn, c.act, c.offset, br.idx, B.shape[0]))
        if isinstance(br, StreamUnit):  # excitations on writers: slices of the stream's
            for ex in unit.excites:
                m = maps.setdefault(ex.reduce, {})
                m.setdefault("parts", []).append((0, B))
                m["spatial"] = 1
                maps.setdefault(ex.expand, {})["A"] = B.T
    for name, m in maps.items():
        layer = gm.get_submodule(name)
        if m.get("via"):
            layer = _with_dropped_constants(structure.gm, layer, m["via"])
        B = _input_map(layer, m["parts"], m["spatial"]) if m.get("parts") else None
        new = fold_layer(layer, m.get("A"), B, m.get("spatial", 1))
        _set(gm, name, new)
    for name, m in copied.items():
        _set(gm, name, copy.deepcopy(m))
    reads: dict[str, list] = {}  # reader BatchNorm -> (offset, kept, width) of each stream
    for m in maps.values():
        for bn, _, offset, kept, width in m.get("via", []):
            reads.setdefault(bn, []).append((offset, kept, width))
    for name, parts in reads.items():
        _set(gm, name, _narrow_bn(gm.get_submodule(name), _kept(gm.get_submodule(name), parts)))
    merge_max_pools(gm)  # the pools the units needed split run on whole cats again
    merge_split_layers(gm)  # a layer split into parts for its units is one layer again
    channels_last_cats(gm)
    gm.recompile()
    return gm


@torch.no_grad()
def channels_last_cats(gm: fx.GraphModule) -> int:
    """Make the output of each channel concatenation with a one-channel part channels-last.

    A one-channel tensor is both channels-last and contiguous, and torch.cat then returns
    NCHW even when every part was computed channels-last: the rest of the network (a
    GoogLeNet's max pools, much slower in NCHW on the CPU) ran in the slower layout.
    A unit cut to one channel makes such a part (BENCHMARKS.md section 46). The values are
    the same; an NCHW input runs channels-last from that cat on. Returns how many cats."""
    cats = [n for n in gm.graph.nodes if cat_args(n)]
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if not cats or len(inputs) != 1 or not shape_of(inputs[0]):
        return 0
    was = gm.training
    try:
        ShapeProp(gm.eval()).propagate(torch.zeros(shape_of(inputs[0])))
    finally:
        gm.train(was)

    def channels(p) -> int | None:
        shape = getattr(p.meta.get("tensor_meta"), "shape", None) if isinstance(p, fx.Node) else None
        return shape[1] if shape is not None and len(shape) == 4 else None

    narrow = [n for n in cats if channels(n) is not None and cat_args(n)[1] % 4 == 1
              and any(channels(p) == 1 for p in cat_args(n)[0])]
    for n in narrow:
        with gm.graph.inserting_after(n):
            cl = gm.graph.call_method("contiguous", (n,), {"memory_format": torch.channels_last})
        n.replace_all_uses_with(cl)
        cl.args = (n,)
        cl.meta["shape"] = shape_of(n)
    return len(narrow)


def _kept(bn: nn.Module, parts: list) -> torch.Tensor:
    """A reader BatchNorm's channels that stay: all but each stream's dropped ones
    (``(offset, kept, width)`` parts, one per stream it reads)."""
    keep = torch.ones(bn.num_features, dtype=torch.bool)
    for offset, kept, width in parts:
        keep[offset:offset + width] = False
        keep[offset + kept] = True
    return keep.nonzero().flatten()


def _narrow_bn(bn: nn.Module, idx: torch.Tensor) -> nn.Module:
    """A copy of ``bn`` over its channels ``idx``."""
    new = type(bn)(len(idx), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                   track_running_stats=bn.track_running_stats).to(bn.running_mean.dtype)
    for name, t in list(bn.named_parameters(recurse=False)) + list(bn.named_buffers(recurse=False)):
        getattr(new, name).copy_(t[idx] if t.dim() > 0 else t)
    return new.train(bn.training)


def _with_dropped_constants(orig: nn.Module, layer: nn.Module, via: list) -> nn.Module:
    """A copy of a concatenated stream's consumer whose bias holds what each dropped channel
    gives it: the channel is zero, so its reader BatchNorm (eval statistics) and activation
    turn it into a constant, which a conv without padding (or a linear after a global mean)
    maps to a constant per output (``via``: (BatchNorm, activation node, offset, kept,
    width) per stream). Its weight still reads every channel; the input map drops them."""
    W = layer.weight.double()
    W = W.sum(dim=(2, 3)) if W.dim() == 4 else W  # a constant map: the kernel sums
    extra, dropped_any = torch.zeros(W.shape[0], dtype=torch.float64), False
    for bn_name, act, offset, kept, width in via:
        bn = orig.get_submodule(bn_name)
        c = torch.nn.functional.batch_norm(
            torch.zeros(1, bn.num_features, dtype=torch.float64), bn.running_mean.double(),
            bn.running_var.double(), None if bn.weight is None else bn.weight.double(),
            None if bn.bias is None else bn.bias.double(), False, 0.0, bn.eps)
        if act is not None:
            c = node_op(orig, act).double()(c)
        dropped = torch.ones(width, dtype=torch.bool)
        dropped[kept] = False
        cols = offset + dropped.nonzero().flatten()
        extra += W[:, cols] @ c[0, cols]
        dropped_any = dropped_any or len(cols) > 0
    if not dropped_any:  # nothing to fold: no bias added (the cost model counts it so)
        return layer
    new = copy.deepcopy(layer)
    if new.bias is None:
        new.bias = nn.Parameter(torch.zeros(W.shape[0], dtype=layer.weight.dtype))
    new.bias.data += extra.to(new.bias.dtype)
    return new


def _input_map(layer: nn.Module, parts: list, spatial: int) -> torch.Tensor:
    """A consumer's map on its input channels: each unit's ``B`` on its slice (``(offset,
    B)`` parts: after a cat, several units feed one layer), the identity on the channels no
    unit sets (block diagonal, in channel order)."""
    n_in = (layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features // spatial)
    parts = sorted(parts, key=lambda p: p[0])
    if len(parts) == 1 and parts[0][0] == 0 and parts[0][1].shape[0] == n_in:
        return parts[0][1]
    blocks, at = [], 0
    for offset, B in parts:
        if offset < at:
            raise ValueError(f"overlapping input slices of {layer}")
        if offset > at:
            blocks.append(torch.eye(offset - at, dtype=B.dtype))
        blocks.append(B)
        at = offset + B.shape[0]
    if at < n_in:
        blocks.append(torch.eye(n_in - at, dtype=parts[0][1].dtype))
    return torch.block_diag(*blocks)


def _set(gm: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, leaf, module)
