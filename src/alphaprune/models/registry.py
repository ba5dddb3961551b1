"""A name -> constructor registry, in the style of timm's ``create_model``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch.nn as nn

from alphaprune.errors import UserError

__all__ = ["create_model", "list_models", "register_model", "infer_kwargs", "raw_checkpoint_problem"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_INFER: dict[str, Callable[[dict], dict]] = {}
_CHECK_RAW: dict[str, Callable[[dict], str | None]] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *,
                   infer: Callable[[dict], dict] | None = None,
                   check_raw: Callable[[dict], str | None] | None = None):
    """Register a model constructor under its function name.

    ``infer`` reads the constructor arguments (widths, classes, input channels) back from a
    ``state_dict``'s shapes: that is how a pruned model, or a raw checkpoint, is rebuilt.
    ``check_raw`` says why a raw checkpoint with these inferred arguments would not load as
    the model it was trained as (or returns None); a pruned model, whose file names its
    class and arguments, is not checked.
    """
    def add(f):
        _REGISTRY[f.__name__] = f
        if infer is not None:
            _INFER[f.__name__] = infer
        if check_raw is not None:
            _CHECK_RAW[f.__name__] = check_raw
        return f

    return add(fn) if fn is not None else add


def infer_kwargs(name: str, state_dict: dict) -> dict:
    """Constructor arguments of registry model ``name`` that fit ``state_dict``.

    Raises:
        UserError: unknown name, or a state_dict that is not of that family.
    """
    _check_name(name)
    try:
        return _INFER[name](state_dict)
    except UserError as e:
        raise UserError(f"not a '{name}' checkpoint: {e}") from e


def raw_checkpoint_problem(name: str, kwargs: dict) -> str | None:
    """Why a raw checkpoint of registry model ``name`` with the inferred ``kwargs`` does not
    load as that model (its ``check_raw``), or None."""
    check = _CHECK_RAW.get(name)
    return check(kwargs) if check is not None else None


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise UserError(f"unknown model '{name}': choose one of {', '.join(list_models())}")


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: registry name, e.g. ``"vgg16"``.
        **kwargs: constructor options (``num_classes``, ``in_channels``, ``width``, ``widths``).

    Raises:
        UserError: the name is not registered, or an option the model does not take.
    """
    _check_name(name)
    params = inspect.signature(_REGISTRY[name]).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise UserError(f"model '{name}' takes no {', '.join(unknown)}: its options are "
                            f"{', '.join(params)}")
    return _REGISTRY[name](**kwargs)
