"""A registry VGG with a branch beside every conv unit and one global alpha."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from alphaprune.blend.branch import HANDOVER_MODES, BranchedUnit
from alphaprune.models.vgg import VGG

__all__ = ["BlendedVGG"]


class BlendedVGG(nn.Module):
    """``features`` of :class:`BranchedUnit`, the original pool and classifier.

    ``alpha`` is a buffer (saved in checkpoints); set it with :meth:`set_alpha`. The
    hand-over mode turns alpha into each unit's gate (1 = original path only, 0 = branch
    only):

    * ``blend``: every unit outputs ``alpha * original + (1 - alpha) * branch``;
    * ``stochastic``: in training each unit runs its original alone with probability alpha
      and its branch alone otherwise, drawn per batch and unit (BERT-of-Theseus); in
      evaluation all branches run (the network that ships);
    * ``progressive``: the first ``round((1 - alpha) * L)`` units (from the input side) run
      their branch, the rest their original; deterministic in training and evaluation.

    Args:
        base: the pretrained VGG (its modules are reused, not copied).
        widths: kept width of each unit's branch.
        train_original: when False the original convs and BNs are frozen.
        handover: ``blend``, ``stochastic`` or ``progressive``.
    """

    def __init__(self, base: VGG, widths: Sequence[int], train_original: bool = True,
                 handover: str = "blend"):
        super().__init__()
        if handover not in HANDOVER_MODES:
            raise ValueError(f"unknown hand-over mode {handover!r}")
        self.handover = handover
        units = list(base.features)
        if len(widths) != len(units):
            raise ValueError(f"{len(units)} units but {len(widths)} widths")
        self.features = nn.ModuleList(BranchedUnit(u, int(k)) for u, k in zip(units, widths))
        self.pool = base.pool
        self.classifier = base.classifier
        self.register_buffer("alpha", torch.tensor(1.0))
        self.train_original = train_original
        if not train_original:
            for u in self.features:
                for p in list(u.conv.parameters()) + list(u.bn.parameters()):
                    p.requires_grad_(False)

    def set_alpha(self, alpha: float) -> BlendedVGG:
        """Set the one blend factor of the whole network; returns ``self``."""
        self.alpha.fill_(float(alpha))
        return self

    @property
    def widths(self) -> list[int]:
        return [u.width for u in self.features]

    def gates(self) -> list[float]:
        """Each unit's gate for the next forward pass (random in stochastic training)."""
        alpha, n = float(self.alpha), len(self.features)
        if self.handover == "blend" or alpha <= 0.0 or alpha >= 1.0:
            return [alpha] * n
        if self.handover == "stochastic":
            if not self.training:
                return [0.0] * n
            return [float(v) for v in (torch.rand(n) < alpha).float()]
        n_branch = round((1.0 - alpha) * n)  # progressive, from the input side
        return [0.0 if i < n_branch else 1.0 for i in range(n)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for u, a in zip(self.features, self.gates()):
            x = u(x, a)
        return self.classifier(torch.flatten(self.pool(x), 1))

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.train_original:  # frozen BNs keep their running statistics
            for u in self.features:
                u.bn.eval()
        return self
