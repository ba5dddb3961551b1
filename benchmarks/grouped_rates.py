"""How fast a grouped 3x3 conv runs on the CPU by its channels per group (BENCHMARKS.md
section 49): RegNetX-200MF's grouped convs as objective selection cuts them (8 channels a
group, fewer groups) and as Torch-Pruning cuts them (every group kept, 6 channels each),
timed alone at batch 128 on one thread, channels-last (medians of 9 calls,
``alphaprune.report.size.measure_latency``), with their multiply-accumulates and the
rate in GMAC/s.

    OMP_NUM_THREADS=1 python benchmarks/grouped_rates.py
"""

from __future__ import annotations

import torch
import torch.nn as nn

from alphaprune.report.size import measure_latency

# (stage, map side, [(channels a group, groups), ...]): the original, objective
# selection's cut at 50% of the FLOPs (its widths), Torch-Pruning's at the same FLOPs
CASES = [(2, 8, [(8, 19), (8, 13), (6, 19)]), (3, 4, [(8, 46), (8, 31), (6, 46)])]


def rate(width: int, groups: int, side: int, batch: int = 128) -> tuple[float, float]:
    """(ms per call, GMAC/s) of a grouped 3x3 conv of ``width`` channels in ``groups``."""
    conv = nn.Conv2d(width, width, 3, padding=1, groups=groups, bias=False).eval()
    conv = conv.to(memory_format=torch.channels_last)
    s = measure_latency(conv, (width, side, side), batch, repeats=9, warmup=3)
    macs = batch * side * side * width * (width // groups) * 9
    return s * 1e3, macs / s / 1e9


def main() -> None:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, one thread, batch 128, channels-last")
    for stage, side, cuts in CASES:
        for gw, groups in cuts:
            ms, gmacs = rate(gw * groups, groups, side)
            print(f"stage {stage} ({side}x{side}): {groups} groups of {gw} ({gw * groups} channels): "
                  f"{ms:7.2f} ms, {gmacs:5.1f} GMAC/s")


if __name__ == "__main__":
    main()
