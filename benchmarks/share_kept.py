"""Speed-up against the FLOP ratio with steady timings (BENCHMARKS.md section 24): the
checkpoint's Torch-Pruning L1 cut (one channel ratio for every layer) at each share of the
FLOPs removed, timed against the original with freed memory kept
(:func:`alphaprune.speedup.measured_speedup`: interleaved passes, median), several rounds.
With ``--fold-bn`` both models are timed with every BatchNorm folded into its conv
(``torch.fx.experimental.optimization.fuse``, eval mode), as an inference runtime would.

    OMP_NUM_THREADS=1 python benchmarks/share_kept.py /tmp/bench/vgg16_rand/model.pt \\
        --targets 0.5,0.75 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch.fx.experimental.optimization import fuse

from alphaprune.baselines.tp_l1 import torch_pruning_l1
from alphaprune.modelfile import load_checkpoint
from alphaprune.report.size import count_flops
from alphaprune.speedup import measured_speedup


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoint")
    p.add_argument("--targets", default="0.5,0.75")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--fold-bn", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    original = load_checkpoint(a.checkpoint).model.eval()
    shape = (3, 32, 32)
    base = count_flops(original, shape)
    cut = {float(t): torch_pruning_l1(original, base * (1 - float(t)), shape, "flops").eval()
           for t in a.targets.split(",")}
    if a.fold_bn:
        original, cut = fuse(original), {t: fuse(m) for t, m in cut.items()}
    got = {t: [] for t in cut}
    for r in range(a.rounds):
        for t, m in cut.items():
            x, t_orig, t_m = measured_speedup(original, m, shape, a.batch, pairs=20)
            got[t].append(x)
            print(f"round {r} {t:.0%}: {x:.3f}x ({t_orig:.1f} / {t_m:.1f} ms)", flush=True)
    print(f"\n{a.checkpoint}, batch {a.batch}, one thread, medians over {a.rounds} rounds"
          + (", BatchNorm folded" if a.fold_bn else ""))
    print("| FLOPs removed | FLOP ratio | speed-up | share of the FLOP ratio |")
    print("|---|---|---|---|")
    for t, m in cut.items():
        ratio = base / count_flops(m, shape)
        x = statistics.median(got[t])
        print(f"| {1 - 1 / ratio:.1%} | {ratio:.2f} | {x:.2f}x | {x / ratio:.2f} |")


if __name__ == "__main__":
    main()
