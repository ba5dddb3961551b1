"""Exponential scheduler."""

import math

from alphaprune.schedules.base import AlphaScheduler, _check

__all__ = ["ExponentialAlpha"]


class ExponentialAlpha(AlphaScheduler):
    """``alpha_t = alpha_0 * exp(-decay_rate * t)`` for t = 1, 2, ... (once per phase)."""

    def __init__(self, decay_rate: float = 0.5, **kw):
        super().__init__(**kw)
        _check(decay_rate > 0.0, f"--decay-rate must be > 0, got {decay_rate}")
        self.decay_rate = float(decay_rate)

    def _next(self, metric=None) -> float:
        return self.alpha0 * math.exp(-self.decay_rate * (self.t + 1))
