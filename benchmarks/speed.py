"""Speed ratios measured side by side in one run (medians over repeats):

1. one training step of the blended model (each hand-over mode) vs the original model's,
   same batch (target for blend: at most 1.6);
2. the fused model's measured speed-up at batch 128 vs its FLOP ratio (target: at least
   0.8 of it).

    python benchmarks/speed.py --model vgg16 --width 0.25 --prune 0.65 --repeats 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from alphaprune.blend import BlendedNet, fuse, solve_widths
from alphaprune.blend.init import init_branches
from alphaprune.blend.widths import vgg_counter
from alphaprune.modelfile import widths_of
from alphaprune.models import create_model
from alphaprune.report.size import count_flops, measure_latency


def step_time(model, x, y, repeats: int) -> float:
    """Median seconds of one SGD step (forward, backward, update) after two warm-ups."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    model.train()
    times = []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg16")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--prune", type=float, default=0.65)
    p.add_argument("--round-to", type=int, default=8, help="width multiple, as alphaprune prune")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    torch.manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(a.batch_size, 3, 32, 32).contiguous(memory_format=cl)
    y = torch.randint(0, 10, (a.batch_size,))
    base = create_model(a.model, width=a.width)
    widths = solve_widths(widths_of(base), vgg_counter(3, 10), a.prune, a.round_to)
    res = {"model": f"{a.model} w{a.width}", "prune": a.prune, "widths": widths, "batch": a.batch_size,
           "alpha": a.alpha, "threads": torch.get_num_threads()}
    models = {"original": create_model(a.model, width=a.width).to(memory_format=cl)}
    for mode in ("blend", "stochastic", "progressive"):
        m = BlendedNet(create_model(a.model, width=a.width), widths, handover=mode)
        init_branches(m, "select")
        models[mode] = m.set_alpha(a.alpha).to(memory_format=cl)
    times = {k: [] for k in models}
    for _ in range(3):  # rounds alternate the models, so load changes hit them all alike
        for k, m in models.items():
            times[k].append(step_time(m, x, y, a.repeats))
    t_orig = statistics.median(times["original"])
    res["original_step_s"] = t_orig
    for mode in ("blend", "stochastic", "progressive"):
        t = statistics.median(times[mode])
        res[f"{mode}_step_s"], res[f"{mode}_step_ratio"] = t, t / t_orig
    blended = BlendedNet(base, widths)
    init_branches(blended, "select")
    fused = fuse(blended.set_alpha(0.0).eval(), a.model)
    orig = create_model(a.model, width=a.width)
    flop_ratio = count_flops(orig, (3, 32, 32)) / count_flops(fused, (3, 32, 32))
    lat_o, lat_f = [], []
    for _ in range(3):  # alternate, then medians
        lat_o.append(measure_latency(orig, (3, 32, 32), 128, repeats=a.repeats))
        lat_f.append(measure_latency(fused, (3, 32, 32), 128, repeats=a.repeats))
    speedup = statistics.median(lat_o) / statistics.median(lat_f)
    res.update({"flop_ratio": flop_ratio, "latency128_original_ms": 1e3 * statistics.median(lat_o),
                "latency128_fused_ms": 1e3 * statistics.median(lat_f), "measured_speedup": speedup,
                "speedup_over_flop_ratio": speedup / flop_ratio})
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
