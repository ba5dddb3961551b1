"""A registry VGG with a branch beside every conv unit and one global alpha."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from alphaprune.blend.branch import BranchedUnit
from alphaprune.models.vgg import VGG

__all__ = ["BlendedVGG"]


class BlendedVGG(nn.Module):
    """``features`` of :class:`BranchedUnit`, the original pool and classifier.

    ``alpha`` is a buffer (saved in checkpoints); set it with :meth:`set_alpha`.

    Args:
        base: the pretrained VGG (its modules are reused, not copied).
        widths: kept width of each unit's branch.
        train_original: when False the original convs and BNs are frozen.
    """

    def __init__(self, base: VGG, widths: Sequence[int], train_original: bool = True):
        super().__init__()
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = float(self.alpha)
        for u in self.features:
            x = u(x, a)
        return self.classifier(torch.flatten(self.pool(x), 1))

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.train_original:  # frozen BNs keep their running statistics
            for u in self.features:
                u.bn.eval()
        return self
