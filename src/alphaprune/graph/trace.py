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

__all__ = ["trace", "shape_of", "split_max_pools", "is_max_pool"]

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


def _channel_cat_parts(n: fx.Node) -> list[fx.Node] | None:
    """The parts of ``n`` if it concatenates (N, C, H, W) maps along the channels."""
    if n.op != "call_function" or n.target not in CAT_FUNCTIONS or not n.args:
        return None
    parts, dim = n.args[0], n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
    shapes = [shape_of(p) if isinstance(p, fx.Node) else None for p in parts] \
        if isinstance(parts, (list, tuple)) else [None]
    if not isinstance(dim, int) or dim % 4 != 1 or any(s is None or len(s) != 4 for s in shapes):
        return None
    return list(parts)


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
            cat = g.create_node("call_function", src.target, (pooled, *src.args[1:]),
                                dict(src.kwargs))
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
