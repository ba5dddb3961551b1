"""Why objective selection's GoogLeNet at 50% of the FLOPs ran no faster than the original
(BENCHMARKS.md section 46): the fused network at each of the auto solver's three
candidate widths (all at 50% of the FLOPs; weights untrained), timed against the original
side by side at batch 128 on one thread; then the split max pools alone. `width_timing.txt`
ran on a3b4382 (the fused network kept the split pools), `width_timing_merged.txt` on the
commit that merges them back after fusion. Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/results/googlenet/width_timing.py
"""

import json
import sys

import torch

sys.path.insert(0, "benchmarks/models")
from googlenet import googlenet  # noqa: E402

from alphaprune.blend.fuse import fused_architecture  # noqa: E402
from alphaprune.graph import CostModel, find_units  # noqa: E402
from alphaprune.speedup import measured_speedup  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(1)
model = googlenet().eval()
structure = find_units(model, torch.zeros(2, 3, 32, 32))
cost = CostModel(structure)
found = json.load(open("benchmarks/results/googlenet/flops_s0_widths.json"))["candidates"][0]
for name in ("ratio", "balance1", "sensitivity"):
    widths = found[name]["widths"]
    fused = fused_architecture(structure, widths).eval()
    ratio, ms_ref, ms_cand = measured_speedup(model, fused, (3, 32, 32), 128)
    print(f"{name:12s} FLOPs {cost.flops(widths):,} (of {cost.flops(cost.base_widths):,}); "
          f"narrowest widths {sorted(widths)[:6]}; speed-up {ratio:.2f}x "
          f"({ms_ref:.1f} ms -> {ms_cand:.1f} ms at batch 128)")

# the split max pools alone: the original network run from its traced graph, in which each
# max pool of a cat became one pool per part, against the original
ratio, ms_ref, ms_cand = measured_speedup(model, structure.gm, (3, 32, 32), 128)
print(f"split pools  the original's weights and widths; speed-up {ratio:.2f}x "
      f"({ms_ref:.1f} ms -> {ms_cand:.1f} ms at batch 128)")
