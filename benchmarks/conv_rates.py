"""How fast one conv layer runs at each width (BENCHMARKS.md section 25): a 3x3 conv of
``c`` to ``c`` channels with its BatchNorm and ReLU (a ResNet block's unit, eval mode,
channels-last, inference mode), at each spatial size of a CIFAR ResNet stage, one thread,
freed memory kept. The layers are timed in interleaved rounds (every width once per round),
medians over the rounds. A structured cut that halves a layer's channels divides its MACs
by 4; the measured time ratio says how much of that the layer gives back on this CPU, and
so bounds a whole model's speed-up against its FLOP ratio.

    OMP_NUM_THREADS=1 python benchmarks/conv_rates.py --batch 128 --rounds 5

``--formats channels_last,contiguous`` times every layer in both memory layouts, in the same
interleaved rounds, and adds the contiguous (NCHW) layout's time against channels-last's.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn as nn

from alphaprune.allocator import allocator_state, keep_freed_memory
from alphaprune.speedup import _passes

FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def layer(c: int, fmt: str = "channels_last") -> nn.Module:
    """A block's unit at width ``c``: conv 3x3, BatchNorm, ReLU (eval, in layout ``fmt``)."""
    m = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
    return m.eval().to(memory_format=FORMATS[fmt])


def seconds(m: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of ``repeats`` passes (timed as ``--speedup`` times a model)."""
    return statistics.median(_passes(m, x, repeats))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--widths", default="4,8,12,16,24,32,48,64")
    p.add_argument("--sizes", default="32,16,8")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--formats", default="channels_last",
                   help="memory layouts, comma-separated: channels_last, contiguous")
    a = p.parse_args()
    fmts = a.formats.split(",")
    if not fmts or any(f not in FORMATS for f in fmts):
        p.error(f"--formats: choose from {', '.join(FORMATS)}")
    torch.set_num_threads(1)
    keep_freed_memory()
    torch.manual_seed(0)
    cells = {}
    for hw in map(int, a.sizes.split(",")):
        for c in map(int, a.widths.split(",")):
            for f in fmts:
                x = torch.randn(a.batch, c, hw, hw).contiguous(memory_format=FORMATS[f])
                cells[f, hw, c] = (layer(c, f), x)
    for m, x in cells.values():  # warm-up: oneDNN picks and caches its kernels
        seconds(m, x, 3)
    got = {k: [] for k in cells}
    for _ in range(a.rounds):
        for k, (m, x) in cells.items():
            got[k].append(seconds(m, x, a.repeats))
    print(f"batch {a.batch}, one thread, allocator {allocator_state()}, medians over "
          f"{a.rounds} rounds of {a.repeats} passes")
    vs = len(fmts) > 1 and fmts[0] == "channels_last"
    print("| layout | spatial | width c | ms | GMAC/s | rate against the widest | "
          "time(c) / time(c/2) |" + (" time / channels-last's |" if vs else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if vs else ""))
    med = {k: statistics.median(v) for k, v in got.items()}
    for f in fmts:
        for hw in map(int, a.sizes.split(",")):
            widths = list(map(int, a.widths.split(",")))
            rate = {c: a.batch * hw * hw * 9 * c * c / med[f, hw, c] / 1e9 for c in widths}
            for c in widths:
                half = f"{med[f, hw, c] / med[f, hw, c // 2]:.2f}" if c // 2 in widths else ""
                own = f" {med[f, hw, c] / med['channels_last', hw, c]:.2f} |" if vs else ""
                print(f"| {f} | {hw}x{hw} | {c} | {med[f, hw, c] * 1e3:.2f} | {rate[c]:.2f} | "
                      f"{rate[c] / rate[widths[-1]]:.2f} | {half} |{own}")


if __name__ == "__main__":
    main()
