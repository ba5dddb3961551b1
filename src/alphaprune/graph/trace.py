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
from torch.fx.passes.shape_prop import ShapeProp

from alphaprune.errors import UserError

__all__ = ["trace", "shape_of"]


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
