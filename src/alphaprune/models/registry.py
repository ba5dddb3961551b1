"""A name -> constructor registry, in the style of timm's ``create_model``."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from alphaprune.errors import UserError

__all__ = ["create_model", "list_models", "register_model"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model constructor under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: registry name, e.g. ``"vgg16"``.
        **kwargs: constructor options (``num_classes``, ``in_channels``, ``width``, ``widths``).

    Raises:
        UserError: the name is not registered.
    """
    if name not in _REGISTRY:
        raise UserError(
            f"unknown model '{name}': choose one of {', '.join(list_models())}"
        )
    return _REGISTRY[name](**kwargs)
