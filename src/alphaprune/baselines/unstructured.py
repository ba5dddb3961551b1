"""``torch.nn.utils.prune`` global L1 unstructured pruning to a non-zero budget."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from alphaprune.report.size import count_params

__all__ = ["magnitude_unstructured", "make_permanent"]


def _targets(model: nn.Module):
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def magnitude_unstructured(model: nn.Module, target_nonzero: int) -> nn.Module:
    """Zero the smallest-|w| conv/linear weights (globally) so ``target_nonzero`` remain.

    The masks stay attached (``weight_orig`` * ``weight_mask``) so fine-tuning keeps the
    zeros; call :func:`make_permanent` before saving. Smaller on paper, not faster.
    """
    # parameters_to_vector needs plain contiguous weights (not channels-last)
    model = model.to(memory_format=torch.contiguous_format)
    total = count_params(model)
    prunable = sum(m.weight.numel() for m, _ in _targets(model))
    amount = total - target_nonzero
    if not 0 < amount < prunable:
        raise ValueError(f"cannot reach {target_nonzero} non-zeros by pruning weights")
    tprune.global_unstructured(_targets(model), pruning_method=tprune.L1Unstructured,
                               amount=int(amount))
    return model


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold the masks into the weights (removes the re-parametrisation)."""
    for m, name in _targets(model):
        if tprune.is_pruned(m):
            tprune.remove(m, name)
    return model
