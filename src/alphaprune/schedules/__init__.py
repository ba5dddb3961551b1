"""Alpha-schedulers: one small class each, a common base, a name registry."""

from alphaprune.schedules.base import AlphaScheduler
from alphaprune.schedules.exponential import ExponentialAlpha
from alphaprune.schedules.multiplicative import MultiplicativeAlpha
from alphaprune.schedules.plateau import PlateauAlpha
from alphaprune.schedules.registry import SCHEDULERS, make_scheduler
from alphaprune.schedules.step import StepAlpha

__all__ = ["AlphaScheduler", "ExponentialAlpha", "MultiplicativeAlpha", "PlateauAlpha",
           "SCHEDULERS", "StepAlpha", "make_scheduler"]
