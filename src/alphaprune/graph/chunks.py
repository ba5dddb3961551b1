"""Channel splits of a layer's output: ``chunk`` and ``split`` on the channels.

A CSPNet's stage and a YOLOv8 C2f block split one conv's output into parts that go
separate ways: ``a, b = act(bn(conv(x))).chunk(2, 1)``, ``a`` straight to a concatenation,
``b`` into a bottleneck. One ``B`` on the whole output cannot be absorbed there: each part
has its own consumers. :func:`split_chunked_layers` rewrites such a layer into one layer per
part, each with its slice of the weights, of the BatchNorm and its own activation: the
same values, and every part is then a unit of its own (cut to its own width).
:func:`merge_split_layers` undoes the rewrite in the fused network: the narrowed parts
become one layer again, split at the new widths, so the shipped model has the original's
layout.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn

from alphaprune.graph.trace import shape_of

__all__ = ["split_chunked_layers", "merge_split_layers", "split_sizes", "split_parts", "Piece"]

SPLIT_FUNCTIONS = {torch.chunk: "chunk", torch.split: "split"}
SPLIT_METHODS = ("chunk", "split")
_HOW_KEYS = ("chunks", "split_size", "split_size_or_sections")
PIECE = "split_piece"  # node meta key on the last node of each part's chain
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class Piece:
    """One part of a split layer, recorded on the last node of its chain."""

    key: str           # the split's node name: the parts of one split share it
    part: int          # the part's index
    parts: int         # how many parts the split made
    dim: int           # the split's dim (the channels)
    names: tuple       # the original layer, BatchNorm and activation module names (or None)


def split_sizes(n: fx.Node) -> tuple[fx.Node, list[int], int] | None:
    """``(input, part widths, dim)`` of a ``chunk`` or ``split`` (function or tensor method)
    with constant arguments on a tensor of known shape, or ``None``."""
    kind = n.target if n.op == "call_method" and n.target in SPLIT_METHODS else \
        SPLIT_FUNCTIONS.get(n.target) if n.op == "call_function" else None
    if kind is None or not n.args or not isinstance(n.args[0], fx.Node):
        return None
    src = n.args[0]
    how = n.args[1] if len(n.args) > 1 else next((n.kwargs[k] for k in _HOW_KEYS if k in n.kwargs), None)
    dim = n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0)
    shape = shape_of(src)
    ok_how = isinstance(how, int) or (isinstance(how, (list, tuple)) and all(isinstance(h, int) for h in how))
    if not ok_how or not isinstance(dim, int) or shape is None:
        return None
    dim %= len(shape)
    sizes = [t.numel() for t in getattr(torch.empty(shape[dim]), kind)(how)]
    return src, sizes, dim


def _chain(gm: fx.GraphModule, end: fx.Node, dim: int) -> list[fx.Node] | None:
    """``[layer, bn?, act]`` ending at ``end``: a ``Conv2d`` (groups = 1) split on its
    channels or a ``Linear`` on its last dim, an optional BatchNorm (not after a token-wise
    linear), then an elementwise activation, each the only user of the one before and each
    module called once; else ``None``."""
    from alphaprune.graph.units import is_activation  # units imports this module

    if not is_activation(gm, end) or not end.args or not isinstance(end.args[0], fx.Node):
        return None
    nodes = [end]
    prev = end.args[0]
    if prev.op == "call_module" and isinstance(gm.get_submodule(prev.target), BATCH_NORMS):
        nodes.insert(0, prev)
        prev = prev.args[0] if prev.args and isinstance(prev.args[0], fx.Node) else None
    m = gm.get_submodule(prev.target) if prev is not None and prev.op == "call_module" else None
    shape = shape_of(prev) if prev is not None else None
    if isinstance(m, nn.Conv2d):
        ok = m.groups == 1 and dim == 1
    else:
        ok = isinstance(m, nn.Linear) and shape is not None and dim == len(shape) - 1 and \
            (len(nodes) == 1 or len(shape) == 2)
    nodes.insert(0, prev)
    if not ok or any(len(a.users) != 1 for a in nodes[:-1]):
        return None
    calls = sum(1 for n in gm.graph.nodes if n.op == "call_module" and
                n.target in {a.target for a in nodes if a.op == "call_module"})
    return nodes if calls == sum(a.op == "call_module" for a in nodes) else None


def _has_module(gm: fx.GraphModule, name: str) -> bool:
    try:
        gm.get_submodule(name)
        return True
    except AttributeError:
        return False


def _free_name(gm: fx.GraphModule, name: str) -> str:
    """``name``, with underscores added until no module of ``gm`` has it."""
    while _has_module(gm, name):
        name += "_"
    return name


@torch.no_grad()
def _rows(m: nn.Module, a: int, b: int) -> nn.Module:
    """A copy of a layer or BatchNorm over its output channels ``a:b``."""
    new = copy.deepcopy(m)
    for name, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
        if t.dim() > 0:
            part = t[a:b].clone()
            setattr(new, name, nn.Parameter(part, t.requires_grad) if isinstance(t, nn.Parameter) else part)
    for attr in ("out_channels", "out_features", "num_features"):
        if hasattr(new, attr):
            setattr(new, attr, b - a)
    return new


def _copy_node(gm: fx.GraphModule, n: fx.Node, src: fx.Node | None, module: nn.Module | None,
               name: str | None, channels: int, dim: int) -> fx.Node:
    """A copy of ``n`` reading ``src`` (or ``n``'s own input) and calling ``module``
    (registered as ``name``) if ``n`` calls a module; its shape has ``channels`` on ``dim``."""
    args = n.args if src is None else (src, *n.args[1:])
    if n.op == "call_module":
        gm.add_submodule(name, module)
        new = gm.graph.create_node("call_module", name, args, dict(n.kwargs))
    else:
        new = gm.graph.create_node(n.op, n.target, args, dict(n.kwargs))
    shape = list(shape_of(n))
    shape[dim] = channels
    new.meta["shape"] = tuple(shape)
    return new


def split_chunked_layers(gm: fx.GraphModule) -> int:
    """Rewrite each ``chunk``/``split`` of a ``layer [-> bn] -> act`` output on its channels,
    whose every use takes one part (``a, b = ...chunk(2, 1)``), into one such chain per
    part (module docstring). Needs the shapes :func:`~alphaprune.graph.trace.trace`
    records. Returns how many layers were split."""
    g, done = gm.graph, 0
    for n in list(g.nodes):
        got = split_sizes(n)
        chain = _chain(gm, got[0], got[2]) if got else None
        users = list(n.users)
        if chain is None or len(chain[-1].users) != 1 or not users or not all(
                u.op == "call_function" and u.target is operator.getitem and isinstance(u.args[1], int)
                for u in users):
            continue
        _, sizes, dim = got
        names = tuple(a.target if a.op == "call_module" else None for a in chain)
        ends, start = [], 0
        with g.inserting_before(n):
            for i, width in enumerate(sizes):
                cur = None
                for a in chain:
                    m = name = None
                    if a.op == "call_module":  # the layer and BN sliced, the activation copied
                        mod = gm.get_submodule(a.target)
                        m = copy.deepcopy(mod) if a is chain[-1] else _rows(mod, start, start + width)
                        name = _free_name(gm, f"{a.target}_{i}")
                    cur = _copy_node(gm, a, cur, m, name, width, dim)
                cur.meta[PIECE] = Piece(n.name, i, len(sizes), dim, names)
                ends.append(cur)
                start += width
        for u in users:
            u.replace_all_uses_with(ends[u.args[1]])
            g.erase_node(u)
        g.erase_node(n)
        _erase(gm, chain)
        done += 1
    return _recompiled(gm, done)


def _erase(gm: fx.GraphModule, chain: list[fx.Node]) -> None:
    """Remove a chain's nodes (last first) and the modules they call."""
    for a in reversed(chain):
        gm.graph.erase_node(a)
        if a.op == "call_module":
            gm.delete_submodule(a.target)


def _recompiled(gm: fx.GraphModule, changes: int) -> int:
    """``changes``, after checking and recompiling the graph if there were any."""
    if changes:
        gm.graph.lint()
        gm.recompile()
    return changes


def split_parts(gm: fx.GraphModule) -> dict[str, Piece]:
    """Each part's layer name, in a graph :func:`split_chunked_layers` rewrote, with the
    part it is (which layer it came from, its index)."""
    ends = [n for n in gm.graph.nodes if PIECE in n.meta]
    return {chain[0].target: n.meta[PIECE] for n in ends if (chain := _piece_chain(gm, n))}


def _piece_chain(gm: fx.GraphModule, end: fx.Node) -> list[fx.Node] | None:
    """The ``[layer, bn?, act]`` nodes of a split part ending at ``end``, still in place."""
    nodes, cur = [end], end.args[0] if end.args else None
    while isinstance(cur, fx.Node) and cur.op == "call_module" and len(cur.users) == 1 and len(nodes) < 3:
        nodes.insert(0, cur)
        if isinstance(gm.get_submodule(cur.target), (nn.Conv2d, nn.Linear)):
            return nodes
        cur = cur.args[0] if cur.args else None
    return None


def _out_width(m: nn.Module) -> int:
    """Output channels of a conv, linear or BatchNorm."""
    return m.out_channels if isinstance(m, nn.Conv2d) else \
        m.out_features if isinstance(m, nn.Linear) else m.num_features


@torch.no_grad()
def _stacked(mods: list[nn.Module]) -> nn.Module:
    """One layer or BatchNorm whose output channels are those of ``mods``, in order."""
    new = copy.deepcopy(mods[0])
    for name, t in list(mods[0].named_parameters(recurse=False)) + list(mods[0].named_buffers(recurse=False)):
        if t.dim() > 0:
            whole = torch.cat([getattr(m, name) for m in mods]).clone()
            setattr(new, name, nn.Parameter(whole, t.requires_grad) if isinstance(t, nn.Parameter) else whole)
    width = sum(_out_width(m) for m in mods)
    for attr in ("out_channels", "out_features", "num_features"):
        if hasattr(new, attr):
            setattr(new, attr, width)
    return new


def merge_split_layers(gm: fx.GraphModule) -> int:
    """Undo :func:`split_chunked_layers` where every part is still there (the fused
    network): the parts' layers, BatchNorms and activations become one chain again, under
    the original names, and a ``torch.split`` at the parts' widths replaces each part.
    Returns how many layers were merged."""
    g, merged = gm.graph, 0
    by_key: dict[str, list[fx.Node]] = {}
    for n in g.nodes:
        if PIECE in n.meta:
            by_key.setdefault(n.meta[PIECE].key, []).append(n)
    for ends in by_key.values():
        ends.sort(key=lambda e: e.meta[PIECE].part)
        piece = ends[0].meta[PIECE]
        chains = [_piece_chain(gm, e) for e in ends]
        if len(ends) != piece.parts or None in chains or {len(c) for c in chains} != {len(piece.names)} or \
                len({(c[0].args, tuple(c[0].kwargs.items())) for c in chains}) != 1 or \
                any(_has_module(gm, name) for name in piece.names if name):
            continue
        # the layers' widths: fusion narrows them and leaves the traced shapes as they were
        widths = [_out_width(gm.get_submodule(c[0].target)) for c in chains]
        order = {n: i for i, n in enumerate(g.nodes)}
        with g.inserting_before(min((c[0] for c in chains), key=order.get)):
            cur = None
            for depth, a in enumerate(chains[0]):  # layer, bn?, act: as piece.names
                mods = [gm.get_submodule(c[depth].target) for c in chains] if a.op == "call_module" else None
                module = None if mods is None else mods[0] if a is chains[0][-1] else _stacked(mods)
                cur = _copy_node(gm, a, cur, module, piece.names[depth], sum(widths), piece.dim)
            parts = g.call_function(torch.split, (cur, widths, piece.dim))
            outs = [g.call_function(operator.getitem, (parts, i)) for i in range(len(widths))]
        for e, out, c in zip(ends, outs, chains):
            out.meta["shape"] = shape_of(e)  # as stale as the rest of the fused graph's
            e.replace_all_uses_with(out)
            _erase(gm, c)
        merged += 1
    return _recompiled(gm, merged)
