"""The sensitivity table (``unit_sensitivity``, measured by the ``auto`` and ``sensitivity``
solvers before training) with forks, against one whole forward pass per cut and batch
(the table before forks): the same numbers, and the time of each (BENCHMARKS.md section 47).

    OMP_NUM_THREADS=1 python benchmarks/sensitivity_forks.py resnet20 vgg16:0.25 googlenet \\
        --images 250

A model is a registry name (``NAME:WIDTH`` for a width multiplier) or a file of
benchmarks/models/. Random weights and images: the time does not depend on them. Streams
are units (``--flops`` cuts them), at ``--round-to`` 8 and 8 widths per unit, as ``auto``
measures them.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch
import torch.nn.functional as F

from alphaprune.blend.sensitivity import _cut, channel_orders, unit_sensitivity, width_grid
from alphaprune.graph import find_units
from alphaprune.models import create_model


def _model(spec: str) -> torch.nn.Module:
    name, _, width = spec.partition(":")
    try:
        return create_model(name, width=float(width or 1), num_classes=10)
    except Exception:  # not a registry name: a benchmark model file
        s = importlib.util.spec_from_file_location(name, f"benchmarks/models/{name}.py")
        module = importlib.util.module_from_spec(s)
        s.loader.exec_module(module)
        return getattr(module, name)()


def _loss(gm, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    """Mean cross-entropy, the sum over batches of whole passes."""
    return sum(float(F.cross_entropy(gm(x[i:i + batch]), y[i:i + batch], reduction="sum"))
               for i in range(0, len(x), batch)) / len(x)


@torch.no_grad()
def _per_cut(structure, x, y, round_to: int, batch: int = 250) -> list[dict[int, float]]:
    """The table as it was measured before forks: one whole pass per cut and batch."""
    gm = structure.gm
    orders = channel_orders(structure, "l1", x[:batch])
    base = [u.width for u in structure.units]
    full = _loss(gm, x, y, batch)
    out = []
    for i, u in enumerate(structure.units):
        sens = {}
        for w in width_grid(u.width, round_to):
            with _cut(gm, structure, base[:i] + [w] + base[i + 1:], orders):
                sens[w] = _loss(gm, x, y, batch) - full if w < u.width else 0.0
        out.append(sens)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--images", type=int, default=250)
    p.add_argument("--round-to", type=int, default=8)
    a = p.parse_args()
    torch.set_num_threads(1)
    for spec in a.models:
        torch.manual_seed(0)
        model = _model(spec).eval()
        x, y = torch.randn(a.images, 3, 32, 32), torch.randint(0, 10, (a.images,))
        structure = find_units(model, x[:2], streams=True)
        model.eval()
        t0 = time.perf_counter()
        new = unit_sensitivity(structure, x, y, a.round_to)
        t1 = time.perf_counter()
        old = _per_cut(structure, x, y, a.round_to)
        t2 = time.perf_counter()
        cuts = sum(len(s) - 1 for s in new)
        print(f"{spec:12s} {len(structure.units):3d} units, {cuts:3d} cuts, {a.images} images: "
              f"per cut {t2 - t1:7.1f} s, forks {t1 - t0:7.1f} s, {(t2 - t1) / (t1 - t0):.2f}x "
              f"faster; tables equal: {new == old}", flush=True)


if __name__ == "__main__":
    main()
