"""Why a fused network with a one-channel unit can run slowly on the CPU (BENCHMARKS.md
section 46): the memory format torch.cat gives its output, and a 3x3 stride-1 max pool's
time in each format, timed at batch 128 on one thread (medians of 7 calls,
``alphaprune.report.size.measure_latency``).

    OMP_NUM_THREADS=1 python benchmarks/cat_layout.py
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from alphaprune.report.size import measure_latency

CL = torch.channels_last


def _fmt(t: torch.Tensor) -> str:
    return "channels-last" if t.is_contiguous(memory_format=CL) and not t.is_contiguous() else "NCHW"


def _unit_output(c: int) -> torch.Tensor:
    """A conv + BatchNorm + ReLU output of ``c`` channels, run channels-last."""
    conv = nn.Conv2d(8, c, 1).to(memory_format=CL)
    bn = nn.BatchNorm2d(c).eval()
    with torch.no_grad():
        return F.relu(bn(conv(torch.randn(4, 8, 8, 8).contiguous(memory_format=CL))))


def main() -> None:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, one thread")
    for parts in [(8, 8), (2, 8), (1, 8), (8, 1, 8)]:
        y = torch.cat([_unit_output(c) for c in parts], 1)
        print(f"cat of unit outputs with {parts} channels, each run channels-last: {_fmt(y)}")
    pool = nn.MaxPool2d(3, 1, 1)  # GoogLeNet's pooling branch
    conv = nn.Conv2d(32, 32, 3, padding=1)
    for name, cl in [("NCHW", False), ("channels-last", True)]:
        ms = [1e3 * measure_latency(m, (32, 32, 32), 128, repeats=7, channels_last=cl)
              for m in (pool, conv)]
        print(f"{name:13s} 128x32x32x32: 3x3 stride-1 max pool {ms[0]:6.1f} ms, "
              f"3x3 conv 32->32 {ms[1]:6.1f} ms")


if __name__ == "__main__":
    main()
