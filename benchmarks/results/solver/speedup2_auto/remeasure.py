"""Time the --speedup 2 run's original, its trained fused model and a fresh model of the
same widths side by side again (BENCHMARKS.md section 10)."""

import torch

from alphaprune.blend.fuse import fused_architecture
from alphaprune.graph import find_units
from alphaprune.modelfile import load_checkpoint
from alphaprune.report.page import measure_side_by_side

torch.set_num_threads(1)
orig = load_checkpoint("/tmp/bench/vgg16_w025/model.pt").model.eval()
pruned = load_checkpoint("/tmp/bench/speedup2_auto/pruned.pt").model.eval()
w = [m.conv.out_channels for m in pruned.features]
cand = fused_architecture(find_units(orig, torch.zeros(2, 3, 32, 32)), w, "vgg16").eval()
print(w, type(pruned).__name__, type(cand).__name__)
models = {"orig": orig, "pruned": pruned, "cand": cand}
m = measure_side_by_side(models, (3, 32, 32), 5, batches=(128,))
print({k: round(v["latency_b128_ms"], 1) for k, v in m.items()})
torch.set_flush_denormal(True)
m = measure_side_by_side(models, (3, 32, 32), 5, batches=(128,))
print("flush denormal", {k: round(v["latency_b128_ms"], 1) for k, v in m.items()})
