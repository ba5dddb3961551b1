"""Reporting: size, FLOPs, latency, plots, report pages and run comparisons."""

from alphaprune.report.page import measure_models, write_comparison, write_report
from alphaprune.report.runs import Run, read_run
from alphaprune.report.size import count_flops, count_params, measure_latency

__all__ = ["Run", "count_flops", "count_params", "measure_latency", "measure_models", "read_run",
           "write_comparison", "write_report"]
