"""Torch-Pruning's rounded L1 cuts of resnet20 (round_to 8) sized by FLOPs near 50%-70% removed:
the FLOPs and conv widths each target gets (BENCHMARKS.md section 26)."""
import torch

from alphaprune.baselines import torch_pruning_l1
from alphaprune.modelfile import load_checkpoint
from alphaprune.report.size import count_flops

m = load_checkpoint("/tmp/bench/resnet20/model.pt").model.eval()
print("target FLOPs | cut FLOPs | conv widths")
for f in [11.0e6, 12.0e6, 12.66e6, 13.25e6, 15.0e6, 18.0e6]:
    c = torch_pruning_l1(m, f, (3, 32, 32), "flops", round_to=8)
    w = [x.out_channels for x in c.modules() if isinstance(x, torch.nn.Conv2d)]
    print(f"{f:,.0f} | {count_flops(c, (3, 32, 32)):,} | {w}")
