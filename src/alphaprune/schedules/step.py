"""Step scheduler."""

from alphaprune.schedules.base import AlphaScheduler, _check

__all__ = ["StepAlpha"]


class StepAlpha(AlphaScheduler):
    """``alpha <- alpha - step_size`` once per phase."""

    def __init__(self, step_size: float = 0.1, **kw):
        super().__init__(**kw)
        _check(0.0 < step_size <= 1.0, f"--step-size must be in (0, 1], got {step_size}")
        self.step_size = float(step_size)

    def _next(self, metric=None) -> float:
        # round away float drift so 1 - 10 * 0.1 lands exactly on 0
        return round(self.alpha - self.step_size, 10)
