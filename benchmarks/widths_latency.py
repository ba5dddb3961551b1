"""Size, FLOPs and CPU latency of the compact networks that ``--balance`` chooses, side by side.

For each target, the architecture objective selection ships with ``--balance`` 0, 0.5 and 1
(latency depends on the widths only, so random weights stand in for trained ones), and
Torch-Pruning's L1 cut of the checkpoint at the same parameter count. All models are timed
in alternating rounds in one process, one thread; the table gives medians over rounds.

    OMP_NUM_THREADS=1 python benchmarks/widths_latency.py --checkpoint MODEL.pt --rounds 5
"""

from __future__ import annotations

import argparse

import torch

from alphaprune.baselines import torch_pruning_l1
from alphaprune.blend import solve_widths
from alphaprune.blend.widths import vgg_counter, vgg_param_count
from alphaprune.modelfile import load_checkpoint, widths_of
from alphaprune.models import create_model
from alphaprune.prune import PruneConfig
from alphaprune.report.page import markdown_table, measure_side_by_side
from alphaprune.report.size import count_flops, count_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="pretrained model file")
    ap.add_argument("--targets", default="0.35,0.65,0.9")
    ap.add_argument("--balances", default="0,0.5,1")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=32, help="input side (CIFAR: 32)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    mf = load_checkpoint(a.checkpoint)
    original = mf.model.eval()
    in_ch, classes = mf.kwargs["in_channels"], mf.kwargs["num_classes"]
    shape = (in_ch, a.size, a.size)
    base = widths_of(original)
    models = {("0%", "original"): original}
    for t in (float(v) for v in a.targets.split(",")):
        for b in (float(v) for v in a.balances.split(",")):
            w = solve_widths(base, vgg_counter(in_ch, classes), t, PruneConfig.round_to, b)
            models[(f"{t:.0%}", f"balance {b:g}")] = create_model(
                mf.arch, widths=w, in_channels=in_ch, num_classes=classes).eval()
        # Torch-Pruning matches the uniform widths' count (as in compare's matrix rows)
        n = vgg_param_count(solve_widths(base, vgg_counter(in_ch, classes), t, PruneConfig.round_to),
                            in_ch, classes)
        models[(f"{t:.0%}", "tp-l1")] = torch_pruning_l1(original, n, shape)  # prunes a copy
    latency = measure_side_by_side(models, shape, a.rounds)
    rows = []
    for (target, name), m in models.items():
        lat = latency[(target, name)]
        widths = [u.conv.out_channels for u in m.features]
        rows.append([target, name, f"{count_params(m):,}", f"{count_flops(m, shape):,}",
                     f"{lat['latency_b1_ms']:.2f}", f"{lat['latency_b128_ms']:.1f}",
                     " ".join(map(str, widths))])
    print(markdown_table(["removed", "network", "params", "FLOPs", "latency b1 (ms)",
                          "latency b128 (ms)", "widths"], rows))


if __name__ == "__main__":
    main()
