"""Training steps under glibc's default malloc against freed memory kept (alphaprune.allocator):
ms per SGD step and peak resident memory, each setting in its own processes, alternating
(BENCHMARKS.md section 24). Batch 128 of random 32x32 images, channels-last, one thread.

    OMP_NUM_THREADS=1 python benchmarks/allocator_train.py --processes 6
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

MODELS = {"resnet20": {}, "vgg16": {"width": 0.25}}


def _step(m, opt, x, y) -> None:
    import torch

    opt.zero_grad()
    torch.nn.functional.cross_entropy(m(x), y).backward()
    opt.step()


def child(steps: int) -> None:
    """One process: time ``steps`` SGD steps of each model; one JSON line each."""
    import torch

    from alphaprune.allocator import keep_freed_memory
    from alphaprune.models import create_model

    state = keep_freed_memory()  # ALPHAPRUNE_KEEP_FREED_MEMORY=0 leaves glibc as it comes
    torch.set_num_threads(1)
    for name, kwargs in MODELS.items():
        torch.manual_seed(0)
        m = create_model(name, num_classes=10, **kwargs).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (128,))
        for _ in range(3):
            _step(m, opt, x, y)
        t0 = time.perf_counter()
        for _ in range(steps):
            _step(m, opt, x, y)
        ms = (time.perf_counter() - t0) / steps * 1e3
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"allocator": state, "model": name, "ms_per_step": ms,
                          "peak_rss_mib_so_far": peak}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--processes", type=int, default=6)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--child", action="store_true")
    a = p.parse_args()
    if a.child:
        return child(a.steps)
    rows = []
    for i in range(a.processes):
        env = dict(os.environ)
        if i % 2 == 0:
            env["ALPHAPRUNE_KEEP_FREED_MEMORY"] = "0"
        else:
            env.pop("ALPHAPRUNE_KEEP_FREED_MEMORY", None)
        out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(a.steps)],
                             capture_output=True, text=True, check=True, env=env).stdout
        for line in out.splitlines():
            print(f"process {i}: {line}", flush=True)
            rows.append(json.loads(line))
    print(f"\n{a.processes} processes alternating; median (min–max over processes)")
    print("| model | allocator | ms per step | peak RSS MiB |")
    print("|---|---|---|---|")
    for name in MODELS:
        for state in dict.fromkeys(r["allocator"] for r in rows):
            r = [x for x in rows if x["model"] == name and x["allocator"] == state]
            ms, rss = [x["ms_per_step"] for x in r], [x["peak_rss_mib_so_far"] for x in r]
            print(f"| {name} | {state} | {statistics.median(ms):.0f} ({min(ms):.0f}–"
                  f"{max(ms):.0f}) | {statistics.median(rss):.0f} ({min(rss):.0f}–"
                  f"{max(rss):.0f}) |")


if __name__ == "__main__":
    main()
