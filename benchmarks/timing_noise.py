"""How steady is a measured speed-up? Three estimators of the same pair timed five times.

The pair: the pretrained VGG-16/4 and an architecture of given widths (random weights; only
its shape is timed), batch 128, one thread. Estimators:

* ``medians``: ratio of the medians of interleaved rounds of 9 passes
  (``report.page.measure_side_by_side``, 5 rounds: what ``--speedup`` used before);
* ``round-min``: per round the fastest of 9 passes of each, median of the rounds' ratios;
* ``alternating``: single passes original, other, original, median of 40 ratios
  (``speedup.measured_speedup``, what ``--speedup`` uses now).

    OMP_NUM_THREADS=1 python benchmarks/timing_noise.py /tmp/bench/vgg16_w025/model.pt \
        --widths 8,16,16,32,40,40,48,88,56,56,80,96,80 --repeats 5

Run it alone on the machine: a job on the other core changes what it measures.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from alphaprune.blend.fuse import fused_architecture
from alphaprune.graph import find_units
from alphaprune.modelfile import load_checkpoint
from alphaprune.report.page import measure_side_by_side
from alphaprune.speedup import _passes, _prepared, measured_speedup

SHAPE = (3, 32, 32)


def medians(a, b, batch: int) -> float:
    m = measure_side_by_side({"a": a, "b": b}, SHAPE, 5, batches=(batch,))
    return m["a"][f"latency_b{batch}_ms"] / m["b"][f"latency_b{batch}_ms"]


def round_min(a, b, batch: int, rounds: int = 5, repeats: int = 9) -> float:
    pa, pb = _prepared(a, batch, SHAPE), _prepared(b, batch, SHAPE)
    _passes(*pa, 3)
    _passes(*pb, 3)
    ratios = [min(_passes(*pa, repeats)) / min(_passes(*pb, repeats)) for _ in range(rounds)]
    return statistics.median(ratios)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("--arch", default="vgg16")
    p.add_argument("--widths", required=True)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(1)
    orig = load_checkpoint(a.checkpoint).model.eval()
    widths = [int(w) for w in a.widths.split(",")]
    other = fused_architecture(find_units(orig, torch.zeros(2, *SHAPE)), widths, a.arch).eval()
    print(f"widths {widths}, batch {a.batch}, {torch.get_num_threads()} thread")
    got = {"medians": [], "round-min": [], "alternating": []}
    for i in range(a.repeats):
        for name, f in (("medians", medians), ("round-min", round_min),
                        ("alternating", lambda x, y, b: measured_speedup(x, y, SHAPE, b)[0])):
            t0 = time.perf_counter()
            got[name].append(f(orig, other, a.batch))
            print(f"repeat {i}: {name:11s} {got[name][-1]:.3f}  ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    for name, v in got.items():
        print(f"{name:11s} min {min(v):.3f} max {max(v):.3f} median {statistics.median(v):.3f} "
              f"spread (max/min - 1) {max(v) / min(v) - 1:.1%}")


if __name__ == "__main__":
    main()
