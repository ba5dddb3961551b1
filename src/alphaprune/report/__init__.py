"""Reporting: size, FLOPs, latency, tables and plots."""

from alphaprune.report.size import count_flops, count_params, measure_latency

__all__ = ["count_flops", "count_params", "measure_latency"]
