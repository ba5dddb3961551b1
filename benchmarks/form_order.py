"""The same widths as the registry class and as the fx graph, timed against the original in
alternating order (BENCHMARKS.md section 22): is the graph form faster, or was it only
timed last? Random weights; one line per round.

    OMP_NUM_THREADS=1 python benchmarks/form_order.py /tmp/bench/resnet20/model.pt \\
        8,16,16,8,32,16,8,8,64,24,24,8 --rounds 6
"""

from __future__ import annotations

import argparse
import statistics

import torch

from alphaprune.blend.fuse import fused_architecture
from alphaprune.graph import find_units
from alphaprune.modelfile import load_checkpoint
from alphaprune.speedup import measured_speedup


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoint")
    p.add_argument("widths", type=lambda t: [int(w) for w in t.split(",")])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--batch", type=int, default=128)
    a = p.parse_args()
    torch.set_num_threads(1)
    mf = load_checkpoint(a.checkpoint)
    original, shape = mf.model.eval(), (3, 32, 32)
    structure = find_units(original, torch.zeros(2, *shape), streams=True)
    forms = {"registry": fused_architecture(structure, a.widths, mf.arch).eval(),
             "graph": fused_architecture(structure, a.widths).eval()}
    got = {k: [] for k in forms}
    for r in range(a.rounds):
        order = list(forms) if r % 2 == 0 else list(forms)[::-1]
        line = []
        for k in order:
            x = measured_speedup(original, forms[k], shape, a.batch, pairs=20)[0]
            got[k].append(x)
            line.append(f"{k} {x:.3f}x")
        print(f"round {r}: " + ", ".join(line), flush=True)
    for k, v in got.items():
        print(f"{k}: median {statistics.median(v):.3f}x over {len(v)} rounds", flush=True)


if __name__ == "__main__":
    main()
