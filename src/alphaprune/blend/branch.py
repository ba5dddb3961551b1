"""A conv unit with a narrow parallel branch (DESIGN.md section 2).

    z        = conv(y)                              (shared pre-BN conv output)
    original = pool(act(BN(z)))                     (n channels)
    branch   = B(pool(act(BN'(A z))))               (A: 1x1 n->k, B: 1x1 k->n, no bias)
    y'       = a * original + (1 - a) * branch

``a`` is the unit's own gate, derived from the network's alpha by the hand-over mode
(:mod:`alphaprune.blend.blended`): ``a = alpha`` for ``blend``; 0 or 1 for ``stochastic``
and ``progressive``, which run one path only.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from alphaprune.models.vgg import ConvUnit

__all__ = ["BranchedUnit", "HANDOVER_MODES"]

HANDOVER_MODES = ("blend", "stochastic", "progressive")


class BranchedUnit(nn.Module):
    """Wraps a :class:`ConvUnit` (kept as ``conv``, ``bn``, ``pool``) and adds the branch.

    Args:
        unit: the original unit; its conv and BN are reused (not copied).
        k: kept width of the branch.
    """

    def __init__(self, unit: ConvUnit, k: int):
        super().__init__()
        n = unit.conv.out_channels
        self.conv, self.bn, self.pool = unit.conv, unit.bn, unit.pool
        self.act = nn.ReLU()
        self.A = nn.Conv2d(n, k, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(k)
        self.B = nn.Conv2d(k, n, 1, bias=False)

    @property
    def width(self) -> int:
        """Kept width ``k``."""
        return self.A.out_channels

    def original(self, z: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(z)))

    def narrow(self, z: torch.Tensor) -> torch.Tensor:
        """The branch before ``B``: the compact unit's output (k channels)."""
        return self.pool(self.act(self.bn2(self.A(z))))

    def branch(self, z: torch.Tensor) -> torch.Tensor:
        return self.B(self.narrow(z))

    def forward(self, x: torch.Tensor, a: float) -> torch.Tensor:
        z = self.conv(x)
        # At a gate of 0 or 1 only one path matters: skip the other (cheaper, and exactly
        # the same output).
        if a >= 1.0:
            return self.original(z)
        if a <= 0.0:
            return self.branch(z)
        # lerp = branch + a * (original - branch): one fused kernel forward and backward,
        # measurably cheaper on CPU than two scalings and an add
        return torch.lerp(self.branch(z), self.original(z), a)
