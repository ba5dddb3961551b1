"""glibc's default malloc against freed memory kept (alphaprune.allocator), each in its own
processes, alternating: the speed-up of pruned models over their originals, their ms, and
how far those move from one process to the next (BENCHMARKS.md section 24).

The pruned architectures are the widths `--speedup 2` kept in section 22
(`benchmarks/results/speedup_confirm/*_kesten4.jsonl`, first row of each) and resnet20's
75% row of section 13; speed does not depend on the weights, so the branches' initial ones
are used. Each process times every pair with :func:`alphaprune.speedup.measured_speedup`
(interleaved passes, median), with the allocator left alone or set first.

    OMP_NUM_THREADS=1 python benchmarks/allocator.py --vgg /tmp/bench/vgg16_rand/model.pt \\
        --resnet20 /tmp/bench/resnet20/model.pt --processes 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _widths() -> dict:
    kept = {}
    for name in ("vgg16_rand", "resnet20"):
        path = RESULTS / "speedup_confirm" / f"{name}_b128_kesten4.jsonl"
        kept[name] = json.loads(path.read_text().splitlines()[0])["new"]["widths"]
    p75 = RESULTS / "streams" / "r20_streams_s0_p75_widths.json"
    return {"vgg16 2x (section 22)": ("vgg", kept["vgg16_rand"]),
            "resnet20 2x (section 22)": ("resnet20", kept["resnet20"]),
            "resnet20 75% FLOPs (section 13)": ("resnet20", json.loads(p75.read_text())["widths"])}


def child(mode: str, checkpoints: dict, pairs: int) -> None:
    """One process: time every pair and print one JSON line per pair."""
    import torch

    import alphaprune.speedup as sp
    from alphaprune.allocator import keep_freed_memory
    from alphaprune.blend.fuse import fused_architecture
    from alphaprune.graph import find_units
    from alphaprune.modelfile import load_checkpoint
    from alphaprune.report.size import count_flops

    if mode == "kept":
        keep_freed_memory()
    else:  # glibc as it comes: the timing must not set it either
        sp.keep_freed_memory = lambda: "not set"
    torch.set_num_threads(1)
    for label, (family, widths) in _widths().items():
        mf = load_checkpoint(checkpoints[family])
        original = mf.model.eval()
        example = torch.zeros(2, 3, 32, 32)
        structure = find_units(original, example)
        if len(structure.units) != len(widths):  # the widths of a run that cut the streams
            structure = find_units(original, example, streams=True)
        pruned = fused_architecture(structure, widths, mf.arch).eval()
        x, t_orig, t_pruned = sp.measured_speedup(original, pruned, (3, 32, 32), 128, pairs)
        ratio = count_flops(original, (3, 32, 32)) / count_flops(pruned, (3, 32, 32))
        print(json.dumps({"mode": mode, "model": label, "speedup": x, "flop_ratio": ratio,
                          "original_ms": t_orig, "pruned_ms": t_pruned}), flush=True)


def _spread(v: list[float]) -> str:
    return f"{statistics.median(v):.2f} ({min(v):.2f}–{max(v):.2f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--vgg", required=True)
    p.add_argument("--resnet20", required=True)
    p.add_argument("--processes", type=int, default=6)
    p.add_argument("--pairs", type=int, default=30)
    p.add_argument("--child", choices=("default", "kept"))
    a = p.parse_args()
    checkpoints = {"vgg": a.vgg, "resnet20": a.resnet20}
    if a.child:
        return child(a.child, checkpoints, a.pairs)
    rows = []
    for i in range(a.processes):
        mode = ("default", "kept")[i % 2]
        out = subprocess.run([sys.executable, __file__, "--vgg", a.vgg, "--resnet20", a.resnet20,
                              "--pairs", str(a.pairs), "--child", mode],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            print(f"process {i}: {line}", flush=True)
            rows.append(json.loads(line))
    print(f"\n{a.processes} processes alternating, batch 128, one thread; median (min–max over "
          "processes)")
    print("| model | allocator | speed-up | share of the FLOP ratio | original ms | pruned ms |")
    print("|---|---|---|---|---|---|")
    for label in _widths():
        for mode in ("default", "kept"):
            r = [x for x in rows if x["model"] == label and x["mode"] == mode]
            print(f"| {label} | {mode} | {_spread([x['speedup'] for x in r])}x | "
                  f"{_spread([x['speedup'] / x['flop_ratio'] for x in r])} | "
                  f"{_spread([x['original_ms'] for x in r])} | "
                  f"{_spread([x['pruned_ms'] for x in r])} |")


if __name__ == "__main__":
    main()
