"""Time a --speedup run's original against its trained fused model and a fresh model of the
same widths, twice, then every candidate its search timed (speed-up, original ms, other ms).
BENCHMARKS.md section 11.

    OMP_NUM_THREADS=1 python benchmarks/results/timing/retime_run.py RUN_FOLDER
"""

import json
import sys

import torch

from alphaprune.blend.fuse import fused_architecture
from alphaprune.graph import find_units
from alphaprune.modelfile import load_checkpoint
from alphaprune.speedup import measured_speedup

torch.set_num_threads(1)
run = sys.argv[1]
orig = load_checkpoint("/tmp/bench/vgg16_w025/model.pt").model.eval()
st = find_units(orig, torch.zeros(2, 3, 32, 32))
s = json.load(open(f"{run}/summary.json"))
pruned = load_checkpoint(f"{run}/pruned.pt").model.eval()
fresh = fused_architecture(st, s["widths_after"], "vgg16").eval()
for _ in range(2):
    print("trained", [round(x, 3) for x in measured_speedup(orig, pruned, (3, 32, 32), 128)], flush=True)
    print("fresh  ", [round(x, 3) for x in measured_speedup(orig, fresh, (3, 32, 32), 128)], flush=True)
for t in s["width_search"]["tried"]:
    c = fused_architecture(st, t["widths"], "vgg16").eval()
    print("cand", t["measured_speedup"], "->", round(measured_speedup(orig, c, (3, 32, 32), 128)[0], 3),
          flush=True)
