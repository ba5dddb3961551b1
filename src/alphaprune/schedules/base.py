"""The common base of alpha-schedulers."""

from __future__ import annotations

from alphaprune.errors import UserError

__all__ = ["AlphaScheduler"]


class AlphaScheduler:
    """Lowers alpha from ``alpha0`` towards 0.

    Subclasses implement :meth:`_next`. A next alpha at or below ``threshold`` becomes 0;
    once alpha is 0 it stays 0 (the alpha = 0 phase is the last).

    ``per_epoch``: False for schedulers stepped once per phase (step, exponential,
    multiplicative); True for ``plateau``, which is fed the monitored metric every epoch and
    decides itself when alpha drops.
    """

    per_epoch = False

    def __init__(self, alpha0: float = 1.0, threshold: float = 0.015):
        _check(0.0 < alpha0 <= 1.0, f"alpha0 must be in (0, 1], got {alpha0}")
        _check(0.0 <= threshold < 1.0, f"--threshold must be in [0, 1), got {threshold}")
        self.alpha0, self.threshold = float(alpha0), float(threshold)
        self.alpha = float(alpha0)
        self.t = 0  # number of decreases so far

    def _next(self, metric: float | None) -> float:
        raise NotImplementedError

    def start(self) -> float:
        """The first alpha below ``alpha0``: the first phase's (the pretrained network is alpha0)."""
        return self.step(None)

    def step(self, metric: float | None = None) -> float:
        """Advance the schedule and return the (possibly unchanged) alpha."""
        if self.alpha <= 0.0:
            return 0.0
        new = self._next(metric)
        if new < self.alpha:
            self.t += 1
        self.alpha = 0.0 if new <= self.threshold else float(new)
        return self.alpha

    def state_dict(self) -> dict:
        """Plain data for checkpoints."""
        return {k: v for k, v in vars(self).items()}

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)
