"""Multiplicative scheduler."""

from alphaprune.schedules.base import AlphaScheduler, _check

__all__ = ["MultiplicativeAlpha"]


class MultiplicativeAlpha(AlphaScheduler):
    """``alpha <- alpha * mu`` once per phase."""

    def __init__(self, mu: float = 0.5, **kw):
        super().__init__(**kw)
        _check(0.0 < mu < 1.0, f"--mu must be in (0, 1), got {mu}")
        self.mu = float(mu)

    def _next(self, metric=None) -> float:
        return self.alpha * self.mu
