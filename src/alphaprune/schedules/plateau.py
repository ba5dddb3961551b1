"""Reduce-on-plateau scheduler: the ReduceLROnPlateau idea applied to alpha."""

import math

from alphaprune.schedules.base import AlphaScheduler, _check

__all__ = ["PlateauAlpha"]


class PlateauAlpha(AlphaScheduler):
    """Evaluated every epoch on a metric to minimise (the validation loss).

    ``alpha <- alpha * factor`` once the metric has not improved by more than ``min_delta``
    for ``patience`` epochs; then ``cooldown`` epochs pass before counting again, and the
    best value is reset (the network at the new alpha is a new problem).
    """

    per_epoch = True

    def __init__(self, factor: float = 0.5, patience: int = 3, cooldown: int = 0,
                 min_delta: float = 0.0, **kw):
        super().__init__(**kw)
        _check(0.0 < factor < 1.0, f"--factor must be in (0, 1), got {factor}")
        _check(patience >= 1, f"--patience must be >= 1, got {patience}")
        _check(cooldown >= 0, f"--cooldown must be >= 0, got {cooldown}")
        _check(min_delta >= 0.0, f"--min-delta must be >= 0, got {min_delta}")
        self.factor, self.patience = float(factor), int(patience)
        self.cooldown, self.min_delta = int(cooldown), float(min_delta)
        self.best = math.inf
        self.bad_epochs = 0
        self.cooldown_left = 0

    def start(self) -> float:
        """First phase: one reduction by ``factor`` from ``alpha0``."""
        self.t, new = 1, self.alpha0 * self.factor
        self.alpha = 0.0 if new <= self.threshold else new
        return self.alpha

    def reduce(self) -> float:
        """Reduce alpha by ``factor`` now (the phase ended for another reason)."""
        self.bad_epochs, self.cooldown_left, self.best = 0, self.cooldown, math.inf
        if self.alpha > 0.0:
            new = self.alpha * self.factor
            self.t += 1
            self.alpha = 0.0 if new <= self.threshold else new
        return self.alpha

    def _next(self, metric=None) -> float:
        if metric is None:
            raise ValueError("PlateauAlpha.step needs the monitored metric")
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.best = min(self.best, metric)
            return self.alpha
        if metric < self.best - self.min_delta:
            self.best, self.bad_epochs = metric, 0
            return self.alpha
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return self.alpha
        self.bad_epochs, self.cooldown_left, self.best = 0, self.cooldown, math.inf
        return self.alpha * self.factor
