"""How close does ``--speedup``'s search land when every timing is noisy? A simulation
(BENCHMARKS.md section 20).

The search (:func:`alphaprune.speedup.solve_speedup`, through
:func:`alphaprune.plan.solve_target` with the ratio solver) runs on the real unit structure
of VGG-16/4 and of resnet20 (random weights, streams cut), but its two measurements are
replaced: the per-layer latency table by FLOP counts, and the side-by-side timing by a
model of this machine. Each search draws a "true" latency curve that the table gets wrong
in its middle (a fixed overhead ``c`` and a sublinear exponent ``g``:
``latency(w) = c + (1 - c) * (flops(w) / flops(base)) ** g``, times a fixed per-architecture
deviation), and each timing is the true speed-up times log-normal noise, with an outlier
now and then. The numbers of that noise come from section 18's back-to-back timings of one
architecture (options below). What the simulation reports is where the kept architecture
truly lies, which no real run can tell, and what a final check of it (one more noisy
timing) would read.

Run it against any checkout's code (``PYTHONPATH=<src>``) to compare two searches on the
same draws:

    OMP_NUM_THREADS=1 python benchmarks/speedup_sim.py --searches 300 > rows.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import statistics

import torch

from alphaprune import speedup
from alphaprune.blend.fuse import fused_architecture
from alphaprune.graph import CostModel, find_units
from alphaprune.models import create_model
from alphaprune.plan import WidthTarget, solve_target


class _FlopsTable:
    """The per-layer latency table as FLOP counts (what the search calibrates)."""

    def __init__(self, structure, *args, **kwargs):
        self.cost = CostModel(structure)
        self.base_widths, self.path, self.measured = self.cost.base_widths, "flops", 0

    def layers_ms(self, widths):
        return float(self.cost.flops(widths))


class Machine:
    """A true speed-up for any widths and noisy timings of it (module docstring)."""

    def __init__(self, cost: CostModel, rng: random.Random, sigma: float, outliers: float,
                 arch_sigma: float):
        self.cost, self.rng, self.sigma, self.outliers = cost, rng, sigma, outliers
        self.arch_sigma = arch_sigma
        self.f0 = float(cost.flops(cost.base_widths))
        self.c, self.g = rng.uniform(0.02, 0.12), rng.uniform(0.7, 1.0)
        self.salt = rng.random()

    def true_speedup(self, widths) -> float:
        share = self.c + (1 - self.c) * (float(self.cost.flops(widths)) / self.f0) ** self.g
        if list(widths) == list(self.cost.base_widths):
            return 1.0
        h = hashlib.sha256(f"{self.salt}{list(widths)}".encode()).digest()
        z = statistics.NormalDist().inv_cdf((int.from_bytes(h[:6], "big") + 0.5) / 2 ** 48)
        return math.exp(self.arch_sigma * z) / share

    def timing(self, widths) -> float:
        noise = self.rng.gauss(0.0, self.sigma)
        if self.rng.random() < self.outliers:
            noise += self.rng.choice((-1, 1)) * self.rng.uniform(0.1, 0.3)
        return self.true_speedup(widths) * math.exp(noise)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--searches", type=int, default=300, help="per model")
    p.add_argument("--speedup", type=float, default=2.0)
    p.add_argument("--sigma", type=float, default=0.045,
                   help="log-normal noise of one timing (section 18's pairs: 0.04)")
    p.add_argument("--outliers", type=float, default=0.1, help="share of timings off by 10-30%%")
    p.add_argument("--arch-sigma", type=float, default=0.03,
                   help="per-architecture deviation from the smooth curve")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(0)
    rows = []
    for name, kwargs, streams in (("vgg16", {"width": 0.25}, False), ("resnet20", {}, True)):
        model = create_model(name, num_classes=10, **kwargs).eval()
        structure = find_units(model, torch.zeros(2, 3, 32, 32), streams=streams)
        cost = CostModel(structure)
        for i in range(a.searches):
            machine = Machine(cost, random.Random(f"{a.seed}-{name}-{i}"), a.sigma, a.outliers,
                              a.arch_sigma)
            _stand_in(machine)
            rows.append(_search(name, i, machine, structure, model, a.speedup))
            print(json.dumps(rows[-1]), flush=True)
    _summary(rows, a.speedup)


def _stand_in(machine: Machine) -> None:
    """The search's table and timer replaced: FLOP counts, and ``machine``'s timings."""
    real = fused_architecture

    def tagged(structure, widths, arch=None):  # the timer looks the widths up on the model
        m = real(structure, widths, arch)
        m._sim_widths = list(widths)
        return m

    def timer(original, other, shape, batch, pairs=40):
        x = machine.timing(other._sim_widths)
        return x, 100.0, 100.0 / x

    speedup.LatencyModel, speedup.measured_speedup = _FlopsTable, timer
    speedup.fused_architecture = tagged


def _search(name, i, machine, structure, model, target) -> dict:
    """One search on ``machine``; the kept widths' true speed-up and a final check."""
    t = WidthTarget("latency", 1 - 1 / target, "ratio", speedup=target, latency_batch=128)
    widths, rec = solve_target(t, structure, model, None, (3, 32, 32))
    truth = machine.true_speedup(widths)
    return {"model": name, "search": i, "c": round(machine.c, 3), "g": round(machine.g, 3),
            "timings": sum(len(c["timings"]) for c in rec["tried"]) + 1,
            "candidates": len(rec["tried"]), "on_target": rec.get("on_target"),
            "estimate": rec["tried"][rec["kept"]]["measured_speedup"],
            "true": truth, "check": machine.timing(widths)}


def _summary(rows, target) -> None:
    """Per model: the share of searches whose kept architecture truly lies within 5% and
    10% of the target, short and over by more than 10%, and the median number of timings."""
    for name in sorted({r["model"] for r in rows}):
        rs = [r for r in rows if r["model"] == name]

        def share(pred, rs=rs):
            return round(sum(map(pred, rs)) / len(rs), 3)

        print(json.dumps({"summary": name, "searches": len(rs),
                          "true_within_5": share(lambda r: abs(r["true"] / target - 1) <= 0.05),
                          "true_within_10": share(lambda r: abs(r["true"] / target - 1) <= 0.1),
                          "true_short_10": share(lambda r: r["true"] < target * 0.9),
                          "true_over_10": share(lambda r: r["true"] > target * 1.1),
                          "check_within_10": share(lambda r: abs(r["check"] / target - 1) <= 0.1),
                          "median_abs_log_err": round(statistics.median(
                              abs(math.log(r["true"] / target)) for r in rs), 4),
                          "timings_median": statistics.median(r["timings"] for r in rs)}),
              flush=True)


if __name__ == "__main__":
    main()
