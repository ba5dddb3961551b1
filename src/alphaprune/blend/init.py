"""Branch initialisation.

* ``random``: PyTorch's default init for A and B, fresh BN'.
* ``select``: A picks the ``k`` most important channels of the unit (by |BN gamma|), BN'
  copies their BN parameters and statistics and B scatters them back to their places, so
  the network at alpha = 0 is exactly the channel-pruned network.
"""

from __future__ import annotations

import torch

from alphaprune.blend.blended import BlendedVGG
from alphaprune.errors import UserError

__all__ = ["init_branches", "BRANCH_INITS", "channel_importance"]

BRANCH_INITS = ("select", "random")


def channel_importance(unit, criterion: str = "bn") -> torch.Tensor:
    """Importance of each output channel of a branched unit's original conv."""
    if criterion == "bn":
        return unit.bn.weight.detach().abs()
    if criterion == "l1":
        return unit.conv.weight.detach().abs().sum(dim=(1, 2, 3))
    raise UserError(f"unknown importance criterion '{criterion}': use bn or l1")


@torch.no_grad()
def _select(unit, criterion: str) -> None:
    k = unit.width
    idx = torch.argsort(channel_importance(unit, criterion), descending=True)[:k]
    idx = torch.sort(idx).values
    unit.A.weight.zero_()
    unit.A.weight[torch.arange(k), idx, 0, 0] = 1.0
    unit.B.weight.zero_()
    unit.B.weight[idx, torch.arange(k), 0, 0] = 1.0
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(unit.bn2, name).copy_(getattr(unit.bn, name)[idx])
    unit.bn2.num_batches_tracked.copy_(unit.bn.num_batches_tracked)


def init_branches(model: BlendedVGG, method: str = "select", criterion: str = "bn") -> None:
    """Initialise every branch of ``model`` in place.

    Raises:
        UserError: unknown method.
    """
    if method not in BRANCH_INITS:
        raise UserError(f"unknown --branch-init '{method}': use one of {', '.join(BRANCH_INITS)}")
    if method == "select":
        for u in model.features:
            _select(u, criterion)
