"""Stand-ins for timing on a busy machine: latency proportional to the FLOPs, so tests of
what is sized by measured latency check the sizing logic, not the machine's noise."""

from __future__ import annotations

from alphaprune.graph import CostModel
from alphaprune.report.size import count_flops


def flops_timer(original, other, shape, batch, pairs=40):
    """For :func:`alphaprune.speedup.measured_speedup`: (ratio, "ms", "ms") in FLOPs."""
    a, b = count_flops(original, shape), count_flops(other, shape)
    return a / b, float(a), float(b)


class FlopsTable:
    """For :class:`alphaprune.latency.LatencyModel`: the per-layer table as FLOPs."""

    def __init__(self, structure, *args, **kwargs):
        self.cost = CostModel(structure)
        self.base_widths, self.path, self.measured = self.cost.base_widths, "flops", 0

    def layers_ms(self, widths):
        return float(self.cost.flops(widths))


def stand_in_timing(monkeypatch) -> None:
    """Replace the side-by-side timing and the latency table by FLOP counts."""
    import alphaprune.speedup as speedup_mod

    monkeypatch.setattr(speedup_mod, "measured_speedup", flops_timer)
    monkeypatch.setattr(speedup_mod, "LatencyModel", FlopsTable)
