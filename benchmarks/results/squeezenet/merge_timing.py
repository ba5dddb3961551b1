"""SqueezeNet's pruned widths timed after the split max pools are merged back (367840a):
the fused network at each cell's widths (weights untrained) and the original run from its
split graph, each against the original side by side at batch 128 on one thread
(BENCHMARKS.md section 46). Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/results/squeezenet/merge_timing.py
"""

import json
import sys

import torch

sys.path.insert(0, "benchmarks/models")
from squeezenet import squeezenet  # noqa: E402

from alphaprune.blend.fuse import fused_architecture  # noqa: E402
from alphaprune.graph import find_units  # noqa: E402
from alphaprune.speedup import measured_speedup  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(1)
model = squeezenet().eval()
structure = find_units(model, torch.zeros(2, 3, 32, 32))
for cell in ("params", "flops"):
    widths = json.load(open(f"benchmarks/results/squeezenet/{cell}_s0_widths.json"))["widths"]
    ratio, ms_ref, ms_cand = measured_speedup(model, fused_architecture(structure, widths).eval(),
                                              (3, 32, 32), 128)
    print(f"{cell:7s} cell's widths, pools merged: speed-up {ratio:.2f}x "
          f"({ms_ref:.1f} ms -> {ms_cand:.1f} ms at batch 128)")
ratio, ms_ref, ms_cand = measured_speedup(model, structure.gm, (3, 32, 32), 128)
print(f"split pools, the original's widths: speed-up {ratio:.2f}x "
      f"({ms_ref:.1f} ms -> {ms_cand:.1f} ms at batch 128)")
