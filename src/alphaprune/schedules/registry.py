"""CLI names -> scheduler classes, and construction with only the relevant arguments."""

from __future__ import annotations

import inspect

from alphaprune.errors import UserError
from alphaprune.schedules.base import AlphaScheduler
from alphaprune.schedules.exponential import ExponentialAlpha
from alphaprune.schedules.multiplicative import MultiplicativeAlpha
from alphaprune.schedules.plateau import PlateauAlpha
from alphaprune.schedules.step import StepAlpha

__all__ = ["SCHEDULERS", "make_scheduler"]

SCHEDULERS: dict[str, type[AlphaScheduler]] = {
    "step": StepAlpha,
    "exponential": ExponentialAlpha,
    "multiplicative": MultiplicativeAlpha,
    "plateau": PlateauAlpha,
}


def make_scheduler(name: str, **options) -> AlphaScheduler:
    """Build a scheduler by name; options it does not take are ignored, None means default.

    Raises:
        UserError: unknown name or an argument out of range.
    """
    if name not in SCHEDULERS:
        raise UserError(f"unknown scheduler '{name}': use one of {', '.join(SCHEDULERS)}")
    cls = SCHEDULERS[name]
    accepted = set(inspect.signature(cls.__init__).parameters) | {"alpha0", "threshold"}
    return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})
