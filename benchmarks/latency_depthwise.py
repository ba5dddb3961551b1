"""How well the latency table predicts a MobileNetV2's speed-up, with a depthwise conv timed
with its BatchNorm and activation (today) or alone (before session 25: they stayed in the
table's constant rest).

``mobilenet_v2_cifar`` at ``--width``, every unit cut to a share of its width (multiples of
8, at least 8; streams whole), random weights (latency depends on the widths only). For each
share: the speed-up over the whole model measured side by side (``measured_speedup``:
alternating passes, the median of the ratios), and the two tables' predictions of it.

    OMP_NUM_THREADS=1 python benchmarks/latency_depthwise.py --width 0.35 --batch 128
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from alphaprune import latency
from alphaprune.graph import find_units
from alphaprune.latency import LatencyModel
from alphaprune.models import create_model
from alphaprune.models.mobilenet import base_widths
from alphaprune.speedup import measured_speedup

_TAILS = latency._tails  # today's


def _tails_alone(gm, unit):
    """The table before session 25: a unit's own layer with its BatchNorm, activation and
    every pooling module of its post chain; a depthwise conv cut with it timed alone."""
    tails = _TAILS(gm, unit)
    own = tails[unit.name]
    for name, tail in tails.items():
        if name != unit.name:
            own += [m for m in tail if isinstance(m, latency.POOL_MODULES)]
    return {unit.name: own}


def _table(model, shape, batch: int, tails) -> LatencyModel:
    structure = find_units(model, torch.zeros(2, *shape))
    latency._tails = tails
    try:
        with tempfile.TemporaryDirectory() as d:
            return LatencyModel(structure, model, shape, batch=batch, cache_dir=d)
    finally:
        latency._tails = _TAILS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=float, default=0.35)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--shares", default="0.75,0.5,0.25")
    ap.add_argument("--pairs", type=int, default=40)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    shape = (3, 32, 32)
    whole = create_model("mobilenet_v2_cifar", width=a.width).eval()
    units, _ = base_widths(a.width)
    tables = {"with BN+act": _table(whole, shape, a.batch, _TAILS),
              "alone": _table(whole, shape, a.batch, _tails_alone)}
    full = {k: t(units) for k, t in tables.items()}
    print(f"mobilenet_v2_cifar width {a.width}, batch {a.batch}, "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")
    print("| share kept | measured speed-up | predicted, depthwise with BN+act "
          "| predicted, depthwise alone |")
    print("|---|---|---|---|")
    for share in map(float, a.shares.split(",")):
        widths = [max(8, 8 * round(w * share / 8)) for w in units]
        cut = create_model("mobilenet_v2_cifar", width=a.width, widths=widths).eval()
        speedup, _, _ = measured_speedup(whole, cut, shape, a.batch, pairs=a.pairs)
        pred = {k: full[k] / t(widths) for k, t in tables.items()}
        print(f"| {share} | {speedup:.3f} | {pred['with BN+act']:.3f} | {pred['alone']:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
