"""The graph layer: trace a model, find its prunable units (and why the rest is not), and
count the fused model's parameters and FLOPs for any unit widths."""

from alphaprune.graph.cost import CostModel
from alphaprune.graph.trace import trace
from alphaprune.graph.units import Consumer, Skipped, Structure, Unit, find_units, has_sums, keep_whole

__all__ = ["CostModel", "Consumer", "Skipped", "Structure", "Unit", "find_units", "has_sums",
           "keep_whole", "trace"]
