"""Feature distillation: every unit's output held to the pretrained network's at that unit.

Each branch maps back to its unit's full width through ``B``, so the student's unit output
and the teacher's have the same shape and need no adapter (the hint layers of FitNets). A
residual stream's writers are compared on the channels the stream keeps. The teacher is a
frozen copy of the branched network taken before training, run with every gate at 1: that
is exactly the pretrained network, and its units are the student's, one for one.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn as nn

from alphaprune.blend.blended import BlendedNet
from alphaprune.blend.branch import StreamUnit

__all__ = ["UnitTaps", "OriginalNet", "feature_loss"]


def _tapped(net: BlendedNet) -> list[nn.Module]:
    """The modules whose outputs are compared: each branched unit, each stream writer."""
    return [m for u in net.features for m in (u.writers if isinstance(u, StreamUnit) else [u])]


class UnitTaps:
    """Forward hooks recording each unit's output (a stream: each writer's) while
    :meth:`recording`; outside it the hooks keep nothing."""

    def __init__(self, net: BlendedNet):
        self.modules = _tapped(net)
        self.outputs: list[torch.Tensor | None] = [None] * len(self.modules)
        self._on = False
        for i, m in enumerate(self.modules):
            m.register_forward_hook(self._hook(i))

    def _hook(self, i: int):
        def record(module, inputs, output):
            if self._on:
                self.outputs[i] = output
        return record

    @contextlib.contextmanager
    def recording(self):
        """Record outputs inside the block; drop them on leaving it."""
        self._on = True
        try:
            yield self
        finally:
            self._on = False
            self.outputs = [None] * len(self.modules)


class OriginalNet(nn.Module):
    """A frozen copy of a branched network that runs every unit's original path: the
    pretrained network, with :class:`UnitTaps` on the same units as the student's."""

    def __init__(self, net: BlendedNet):
        super().__init__()
        self.net = copy.deepcopy(net)
        self.taps = UnitTaps(self.net)
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.run(x, [1.0] * len(self.net.features))


def feature_loss(student: UnitTaps, teacher: UnitTaps) -> torch.Tensor:
    """Mean over the tapped units of ``|s - t|^2 / |t|^2`` (each unit's squared error
    relative to the teacher's signal, so wide and narrow units weigh alike); a stream
    writer's on the channels its stream keeps (the student's ``idx``)."""
    terms = []
    for m, s, t in zip(student.modules, student.outputs, teacher.outputs):
        if s is None or t is None:
            raise RuntimeError("feature_loss needs one recorded forward of student and teacher")
        if hasattr(m, "idx"):
            s, t = s.index_select(1, m.idx), t.index_select(1, m.idx)
        t = t.detach()
        terms.append((s - t).pow(2).mean() / t.pow(2).mean().clamp_min(1e-12))
    return torch.stack(terms).mean()
