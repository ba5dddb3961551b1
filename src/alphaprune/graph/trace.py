"""Trace a model into a torch.fx graph with the shape of every value.

A model that cannot be traced symbolically (data-dependent control flow, ``len`` of a
tensor, ...) is refused in one line that names the innermost module being traced and the
construct the tracer reported.
"""

from __future__ import annotations

import contextlib
import io
import sys

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from alphaprune.errors import UserError

__all__ = ["trace", "check_one_output", "shape_of", "split_max_pools", "merge_max_pools",
           "is_max_pool", "cat_args"]

# max pooling, channel by channel: it can run on each part of a concatenation instead
MAX_POOL_MODULES = (nn.MaxPool2d, nn.AdaptiveMaxPool2d)
MAX_POOL_FUNCTIONS = {F.max_pool2d: 6, F.adaptive_max_pool2d: 2, torch.max_pool2d: None}
CAT_FUNCTIONS = (torch.cat, torch.concat, torch.concatenate)


class _NamingTracer(fx.Tracer):
    """An fx tracer that remembers which module it is inside, for the error message."""

    def __init__(self):
        super().__init__()
        self.failed_in: str | None = None

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:  # the innermost module records itself first
                self.failed_in = self.path_of_module(m)
            raise


def trace(model: nn.Module, example: torch.Tensor | None = None) -> fx.GraphModule:
    """``model`` as an fx ``GraphModule`` whose nodes carry ``meta["shape"]`` for ``example``
    (no shapes without one).

    The model is traced, not copied: the graph module shares its parameters.

    Raises:
        UserError: the model cannot be traced (names the module and the construct), or it
        fails on ``example``.
    """
    tracer = _NamingTracer()
    try:
        graph = tracer.trace(model)
    except Exception as e:
        where = f"module '{tracer.failed_in}'" if tracer.failed_in else "its own forward"
        what = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"cannot trace {type(model).__name__} at {where}: "
                        f"{what}; make that forward free of data-dependent Python control flow, "
                        "or prune a model that torch.fx can trace") from e
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    _mode_dropouts(model, gm)
    _views_to_reshapes(gm)
    if example is None:
        return gm
    was = model.training
    gm.eval()
    said = io.StringIO()  # ShapeProp prints a failing node's traceback before it re-raises
    try:
        with torch.no_grad(), contextlib.redirect_stderr(said):
            ShapeProp(gm).propagate(example)
        sys.stderr.write(said.getvalue())  # what the model said on a good pass is passed on
    except Exception as e:  # the one line below replaces the traceback
        cause = e.__cause__ or e  # ShapeProp wraps the layer's own error
        what = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
        raise UserError(f"{type(model).__name__} fails on an input of shape "
                        f"{tuple(example.shape)} ({what}): pass data of the size "
                        "it was built for") from e
    finally:
        gm.train(was)
        model.train(was)
    for n in gm.graph.nodes:
        tm = n.meta.get("tensor_meta")
        n.meta["shape"] = tuple(tm.shape) if hasattr(tm, "shape") else None
    return gm


# functional dropouts and the module that follows the model's mode as they do when the
# user writes ``training=self.training``
_WARNED: set[str] = set()  # models whose one-mode dropout was warned of (once per process)
DROPOUT_FUNCTIONS = {F.dropout: nn.Dropout, F.dropout1d: nn.Dropout1d, F.dropout2d: nn.Dropout2d,
                     F.alpha_dropout: nn.AlphaDropout}


def _dropouts(graph: fx.Graph) -> list[fx.Node]:
    return [n for n in graph.nodes if n.op == "call_function" and n.target in DROPOUT_FUNCTIONS]


_DROPOUT_ARGS = {"p": (1, 0.5), "training": (2, True), "inplace": (3, False)}  # position, default


def _dropout_arg(n: fx.Node, name: str):
    """A functional dropout call's argument, given by keyword, by position or by default."""
    pos, default = _DROPOUT_ARGS[name]
    return n.kwargs.get(name, n.args[pos] if len(n.args) > pos else default)


def always_on_dropouts(graph: fx.Graph) -> list[fx.Node]:
    """The functional dropouts of ``graph`` that drop activations in eval mode too: a
    ``training`` of True (F.dropout's default), p > 0."""
    return [n for n in _dropouts(graph)
            if _dropout_arg(n, "training") is True and _dropout_arg(n, "p") != 0]


def _mode_dropouts(model: nn.Module, gm: fx.GraphModule) -> None:
    """Make each functional dropout written ``training=self.training`` a dropout module.

    The tracer records ``self.training`` as the constant of the mode it traced in, so the
    graph (and a model file saved from it) would drop activations in eval mode too, or
    never in training. A dropout whose ``training`` differs between a trace in each mode
    follows the mode: it becomes ``nn.Dropout`` (or its kind), which does the same.
    """
    drops = _dropouts(gm.graph)
    if not drops:
        return
    was = model.training
    try:
        model.train(not was)
        other = _dropouts(fx.Tracer().trace(model))
    except Exception:  # traces in one mode only: leave the graph as traced
        return
    finally:
        model.train(was)
    if len(other) != len(drops):  # the modes trace other graphs: nothing to pair
        name = type(model).__name__
        if name not in _WARNED:
            _WARNED.add(name)
            print(f"alphaprune: warning: {name}'s forward calls dropout only in one mode (`if "
                  "self.training:`): its stored graph keeps the mode it was traced in; pass "
                  "training=self.training to the dropout instead", file=sys.stderr, flush=True)
        return
    for i, (n, o) in enumerate(zip(drops, other, strict=True)):
        if _dropout_arg(n, "training") == _dropout_arg(o, "training"):
            continue  # a constant the user wrote (F.dropout's default is training=True)
        name = f"functional_dropout_{i}"
        gm.add_submodule(name, DROPOUT_FUNCTIONS[n.target](_dropout_arg(n, "p"),
                                                           _dropout_arg(n, "inplace")))
        with gm.graph.inserting_after(n):
            m = gm.graph.call_module(name, (n.args[0] if n.args else n.kwargs["input"],))
        n.replace_all_uses_with(m)
        gm.graph.erase_node(n)
    gm.recompile()


def _is_dtype(a) -> bool:
    """A dtype, written or read off a tensor (``x.view(y.dtype)`` reinterprets bytes)."""
    return isinstance(a, torch.dtype) or (
        isinstance(a, fx.Node) and a.op == "call_function" and a.target is getattr
        and len(a.args) > 1 and a.args[1] == "dtype")


def _views_to_reshapes(gm: fx.GraphModule) -> None:
    """``x.view(shape)`` as ``x.reshape(shape)``: the same values, and no error where the
    tensor's strides do not allow a view (``x.view(x.size(0), -1)`` on a channels-last map,
    the classic flatten)."""
    changed = False
    for n in gm.graph.nodes:
        if n.op == "call_method" and n.target in ("view", "view_as") and not any(
                _is_dtype(a) for a in (*n.args, *n.kwargs.values())):
            n.target, changed = "reshape" if n.target == "view" else "reshape_as", True
    if changed:
        gm.recompile()


def check_one_output(gm: fx.GraphModule, name: str) -> None:
    """Refuse a classifier whose forward returns a tuple, list or dict (an auxiliary head,
    features beside the logits): training and pruning read one tensor of logits."""
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if not isinstance(out, fx.Node):
        kind = next((k.__name__ for k in (dict, tuple, list) if isinstance(out, k)),
                    type(out).__name__)
        raise UserError(f"{name} returns a {kind}: alphaprune trains and prunes classifiers "
                        "whose forward returns one tensor of logits (batch, classes); return "
                        "only those")


def shape_of(node: fx.Node) -> tuple[int, ...] | None:
    """The traced shape of a node's value (``None`` for non-tensors)."""
    return node.meta.get("shape")


def is_max_pool(gm: fx.GraphModule, n: fx.Node) -> bool:
    """``n`` max-pools its first argument alone, channel by channel, returning one tensor
    (no ``return_indices``)."""
    if n.op == "call_module":
        m = gm.get_submodule(n.target)
        return isinstance(m, MAX_POOL_MODULES) and not m.return_indices
    if n.op != "call_function" or n.target not in MAX_POOL_FUNCTIONS:
        return False
    at = MAX_POOL_FUNCTIONS[n.target]  # return_indices' position, if it has one
    positional = at is not None and len(n.args) > at and n.args[at]
    rest = list(n.args[1:]) + list(n.kwargs.values())
    return not positional and not n.kwargs.get("return_indices", False) and \
        not any(isinstance(a, fx.Node) for a in rest)


def cat_args(n: fx.Node) -> tuple[list, int] | None:
    """``(parts, dim)`` of a call to ``torch.cat`` (``concat``, ``concatenate``) with a list
    of tensors and an integer dim, positional or by keyword; else ``None``."""
    if n.op != "call_function" or n.target not in CAT_FUNCTIONS:
        return None
    parts = n.args[0] if n.args else n.kwargs.get("tensors")
    dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
    if not isinstance(parts, (list, tuple)) or not isinstance(dim, int):
        return None
    return list(parts), dim


def _channel_cat_parts(n: fx.Node) -> list[fx.Node] | None:
    """The parts of ``n`` if it concatenates (N, C, H, W) maps along the channels."""
    got = cat_args(n)
    if got is None:
        return None
    parts, dim = got
    shapes = [shape_of(p) if isinstance(p, fx.Node) else None for p in parts]
    if dim % 4 != 1 or any(s is None or len(s) != 4 for s in shapes):
        return None
    return parts


def split_max_pools(gm: fx.GraphModule) -> int:
    """Rewrite each max pool of a channel concatenation, ``maxpool(cat([a, b], 1))``, into
    the concatenation of the pooled parts, ``cat([maxpool(a), maxpool(b)], 1)``: the same
    values (a max pool works channel by channel), but each part's pool may now end its own
    unit (a max pool does not commute with a trained ``B``, so it must run before it).
    Needs the shapes :func:`trace` records. Returns how many pools were split."""
    g, split = gm.graph, 0
    for n in list(g.nodes):
        src = n.args[0] if n.args else None
        parts = _channel_cat_parts(src) if isinstance(src, fx.Node) and is_max_pool(gm, n) else None
        if parts is None or shape_of(n) is None:
            continue
        with g.inserting_before(n):
            pooled = []
            for p in parts:
                q = g.create_node(n.op, n.target, (p, *n.args[1:]), dict(n.kwargs))
                q.meta["shape"] = (shape_of(p)[0], shape_of(p)[1], *shape_of(n)[2:])
                pooled.append(q)
            cat = g.create_node("call_function", src.target, (pooled, cat_args(src)[1]))
            cat.meta["shape"] = shape_of(n)
        n.replace_all_uses_with(cat)
        g.erase_node(n)
        if not src.users:
            g.erase_node(src)
        split += 1
    if split:
        g.lint()
        gm.recompile()
    return split


def _same_pool(a: fx.Node, b: fx.Node) -> bool:
    """``a`` and ``b`` apply the same pooling (module or function and arguments)."""
    return a.op == b.op and a.target == b.target and a.args[1:] == b.args[1:] and a.kwargs == b.kwargs


def merge_max_pools(gm: fx.GraphModule) -> int:
    """Undo :func:`split_max_pools` where nothing needs it any more (the fused network):
    a channel cat of the same max pool of several tensors, each pool used only there,
    becomes that pool of their cat, reusing an equal cat the graph already computes. The
    same values with fewer ops (the split ran a GoogLeNet 15% slower: BENCHMARKS.md
    section 46). Returns how many cats were merged."""
    merged = 0
    while True:  # a merge can free the pools of an earlier cat (GoogLeNet's stage pools)
        now = _merge_once(gm.graph)
        if not now:
            break
        merged += now
    if merged:
        gm.graph.lint()
        gm.recompile()
    return merged


def _merge_once(g: fx.Graph) -> int:
    """One pass of :func:`merge_max_pools` over the graph, in its order."""
    gm, merged = g.owning_module, 0
    order = {n: i for i, n in enumerate(g.nodes)}
    for n in list(g.nodes):
        parts, dim = cat_args(n) or ([], 0)
        if len(parts) < 2 or shape_of(n) is None or dim % len(shape_of(n)) != 1:
            continue
        first = parts[0]
        if len(set(parts)) < len(parts) or not all(
                isinstance(p, fx.Node) and is_max_pool(gm, p) and len(p.users) == 1
                and _same_pool(p, first) for p in parts):
            continue
        inputs = [p.args[0] for p in parts]
        same = next((c for c in inputs[0].users if c in order and order[c] < order[n]
                     and cat_args(c) == (inputs, dim)), None)
        with g.inserting_before(n):
            cat = same or g.create_node("call_function", n.target, (inputs, dim))
            pool = g.create_node(first.op, first.target, (cat, *first.args[1:]), dict(first.kwargs))
        pool.meta["shape"] = shape_of(n)
        n.replace_all_uses_with(pool)
        g.erase_node(n)
        for p in parts:
            g.erase_node(p)
        merged += 1
    return merged
