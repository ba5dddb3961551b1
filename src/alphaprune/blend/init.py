"""Branch initialisation.

* ``random``: PyTorch's default init for A and B, fresh BN'.
* ``select``: A picks the ``k`` most important channels of the unit, BN' copies their BN
  parameters and statistics and B scatters them back to their places, so the network at
  alpha = 0 is exactly the channel-pruned network. Importance criteria: ``bn`` (|BN gamma|),
  ``l1`` (L1 norm of the filter) and ``act`` (mean post-ReLU activation of the channel on a
  calibration batch: data-driven).
* ``lstsq``: ``select``, then unit by unit from the input side, on a calibration batch fed
  through the *already initialised* branches (the inputs the pruned network will see):
  BN' statistics are re-estimated and B is fitted by (ridge) least squares so that
  ``B(narrow(z))`` reconstructs the original unit's output.
"""

from __future__ import annotations

import torch

from alphaprune.blend.blended import BlendedVGG
from alphaprune.errors import UserError

__all__ = ["init_branches", "BRANCH_INITS", "IMPORTANCE_CRITERIA", "channel_importance",
           "reconstruction_error"]

BRANCH_INITS = ("select", "lstsq", "random")
IMPORTANCE_CRITERIA = ("bn", "l1", "act")


@torch.no_grad()
def _original_outputs(model: BlendedVGG, x: torch.Tensor) -> list[torch.Tensor]:
    outs, h = [], x
    for u in model.features:
        h = u(h, 1.0)
        outs.append(h)
    return outs


@torch.no_grad()
def channel_importance(unit, criterion: str = "bn", activation: torch.Tensor | None = None):
    """Importance of each output channel of a branched unit's original conv.

    ``activation`` (the unit's original output on a calibration batch) is needed for ``act``.
    """
    if criterion == "bn":
        return unit.bn.weight.detach().abs()
    if criterion == "l1":
        return unit.conv.weight.detach().abs().sum(dim=(1, 2, 3))
    if criterion == "act":
        if activation is None:
            raise ValueError("the 'act' criterion needs a calibration batch")
        return activation.mean(dim=(0, 2, 3))
    raise UserError(f"unknown importance criterion '{criterion}': use {', '.join(IMPORTANCE_CRITERIA)}")


@torch.no_grad()
def _select(unit, scores: torch.Tensor) -> None:
    k = unit.width
    idx = torch.sort(torch.argsort(scores, descending=True)[:k]).values
    unit.A.weight.zero_()
    unit.A.weight[torch.arange(k), idx, 0, 0] = 1.0
    unit.B.weight.zero_()
    unit.B.weight[idx, torch.arange(k), 0, 0] = 1.0
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(unit.bn2, name).copy_(getattr(unit.bn, name)[idx])
    unit.bn2.num_batches_tracked.copy_(unit.bn.num_batches_tracked)


@torch.no_grad()
def _fit_unit(unit, h: torch.Tensor, target: torch.Tensor, ridge: float) -> torch.Tensor:
    """Re-estimate BN' on the pruned path, fit B by ridge least squares; return B(narrow)."""
    az = unit.A(unit.conv(h))
    unit.bn2.running_mean.copy_(az.mean(dim=(0, 2, 3)))
    unit.bn2.running_var.copy_(az.var(dim=(0, 2, 3), unbiased=True))
    was = unit.training
    unit.eval()
    narrow = unit.narrow(unit.conv(h))
    unit.train(was)
    k, n = narrow.shape[1], target.shape[1]
    H = narrow.transpose(0, 1).reshape(k, -1).double()
    Y = target.transpose(0, 1).reshape(n, -1).double()
    G = H @ H.T
    G += ridge * (G.trace() / k + 1e-12) * torch.eye(k, dtype=G.dtype)
    B = torch.linalg.solve(G, H @ Y.T).T          # (n, k) = Y H^T (H H^T + lambda I)^-1
    unit.B.weight.copy_(B.to(unit.B.weight.dtype)[:, :, None, None])
    return unit.B(narrow)


@torch.no_grad()
def reconstruction_error(model: BlendedVGG, x: torch.Tensor) -> list[float]:
    """Per unit: ||branch path output - original output||^2 / ||original output||^2, with
    the branch path fed by the previous branches (the pruned network), eval mode."""
    was = model.training
    model.eval()
    targets = _original_outputs(model, x)
    errs, h = [], x
    for u, t in zip(model.features, targets):
        h = u(h, 0.0)
        errs.append(float(((h - t) ** 2).sum() / (t ** 2).sum().clamp_min(1e-12)))
    model.train(was)
    return errs


def init_branches(model: BlendedVGG, method: str = "select", criterion: str = "bn",
                  calib: torch.Tensor | None = None, ridge: float = 1e-3) -> None:
    """Initialise every branch of ``model`` in place.

    Args:
        method: ``random``, ``select`` or ``lstsq``.
        criterion: channel importance for ``select``/``lstsq``: ``bn``, ``l1`` or ``act``.
        calib: a normalised input batch, needed by ``lstsq`` and the ``act`` criterion.
        ridge: relative ridge term of the least-squares fit.

    Raises:
        UserError: unknown method or criterion, or no calibration batch where one is needed.
    """
    if method not in BRANCH_INITS:
        raise UserError(f"unknown --branch-init '{method}': use one of {', '.join(BRANCH_INITS)}")
    if criterion not in IMPORTANCE_CRITERIA:
        raise UserError(f"unknown --importance '{criterion}': use {', '.join(IMPORTANCE_CRITERIA)}")
    if method == "random":
        return
    if calib is None and (method == "lstsq" or criterion == "act"):
        raise UserError(f"--branch-init {method} with --importance {criterion} needs calibration data")
    was = model.training
    model.eval()
    targets = _original_outputs(model, calib) if calib is not None else [None] * len(model.features)
    h = calib
    for u, t in zip(model.features, targets):
        _select(u, channel_importance(u, criterion, t))
        if method == "lstsq":
            h = _fit_unit(u, h, t, ridge)
    model.train(was)
