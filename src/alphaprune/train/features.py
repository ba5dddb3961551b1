"""Feature distillation: every unit's output held to the pretrained network's at that unit.

Each branch maps back to its unit's full width through ``B``, so the student's unit output
and the teacher's have the same shape and need no adapter (the hint layers of FitNets). A
residual stream's writers are compared on the channels the stream keeps. The teacher is a
frozen copy of the branched network taken before training, run with every gate at 1: that
is exactly the pretrained network, and its units are the student's, one for one.

A unit with dropout after its activation is left out: in training the student's output is
masked and the teacher's is not, so the term would pull the unit's activations down by the
keep probability instead of towards the teacher's.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn as nn

from alphaprune.blend.blended import BlendedNet
from alphaprune.blend.branch import StreamUnit
from alphaprune.graph.units import PASS_FUNCTIONS

__all__ = ["UnitTaps", "OriginalNet", "feature_loss", "compared_units"]

def _has_dropout(structure, unit) -> bool:
    """Whether a traced unit's post chain holds a dropout (the ones :mod:`alphaprune.graph.units`
    lets through as a module or a function)."""
    return any(isinstance(structure.gm.get_submodule(n.target), nn.modules.dropout._DropoutNd)
               if n.op == "call_module" else n.target in PASS_FUNCTIONS for n in unit.post)


def compared_units(structure) -> list[int]:
    """The positions, in ``structure.units``, of the units the term compares: the streams
    and the units without dropout after their activation."""
    return [i for i, u in enumerate(structure.units)
            if u.kind == "stream" or not _has_dropout(structure, u)]


def _tapped(net: BlendedNet) -> list[nn.Module]:
    """The modules whose outputs are compared: each compared branched unit, each writer of a
    compared stream (each a term of the loss)."""
    units = [net.features[i] for i in compared_units(net.structure)]
    return [m for u in units for m in (u.writers if isinstance(u, StreamUnit) else [u])]


class UnitTaps:
    """Forward hooks recording each tapped module's output while :meth:`recording`; outside
    it the hooks keep nothing. A copy of the network made later carries these hooks too;
    they ignore it (they record their own module only)."""

    def __init__(self, net: BlendedNet):
        self.modules = _tapped(net)
        self.outputs: list[torch.Tensor | None] = [None] * len(self.modules)
        self._on = False
        for i, m in enumerate(self.modules):
            m.register_forward_hook(self._hook(i))

    def _hook(self, i: int):
        def record(module, inputs, output):
            if self._on and module is self.modules[i]:
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


def _relative_error(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``|s - t|^2 / |t|^2`` as means; the plain ``|s - t|^2`` where the teacher's output is
    zero on the whole batch (a unit dead on it: nothing to scale by)."""
    t = t.detach()
    err, energy = (s - t).pow(2).mean(), t.pow(2).mean()
    return torch.where(energy > 1e-12, err / energy.clamp_min(1e-12), err)  # no host sync


def feature_loss(student: UnitTaps, teacher: UnitTaps) -> torch.Tensor:
    """Mean over the tapped modules (each branched unit; each writer of a residual stream,
    compared on the channels the stream keeps, the student's ``idx``) of the squared output
    error relative to the teacher's output, so wide and narrow units weigh alike."""
    errors = []
    for m, s, t in zip(student.modules, student.outputs, teacher.outputs):
        if s is None or t is None:
            raise RuntimeError("feature_loss needs one recorded forward of student and teacher")
        if hasattr(m, "idx"):
            s, t = s.index_select(1, m.idx), t.index_select(1, m.idx)
        errors.append(_relative_error(s, t))
    return torch.stack(errors).mean()
