"""The ratio solver's widths before and after the two-layer trade in ``refine`` (session 31),
on registry models over targets, balances and round_to: which change, and how close each
comes to its target. Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/results/widths_fit/compare_refine.py
"""

import importlib.util
import subprocess
import tempfile

import torch

from alphaprune.blend.widths import solve_widths
from alphaprune.graph import CostModel, find_units
from alphaprune.models.registry import create_model

BEFORE = "abb74a9"  # the last commit with single steps only
CASES = [("vgg16", 0.25), ("vgg11", 0.25), ("resnet20", 1.0), ("resnet56", 1.0),
         ("mobilenet_v2_cifar", 1.0), ("vgg16", 1.0), ("vgg11", 0.125), ("vgg11", 0.0625)]


def _old_module():
    src = subprocess.run(["git", "show", f"{BEFORE}:src/alphaprune/blend/widths.py"],
                         check=True, capture_output=True, text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("widths_before", f.name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    old, same, changed = _old_module(), 0, 0
    for name, width in CASES:
        model = create_model(name, width=width, num_classes=10).eval()
        for streams in (False, True):
            s = find_units(model, torch.zeros(2, 3, 32, 32), streams=streams)
            if streams and not any(u.kind == "stream" for u in s.units):
                continue
            cost = CostModel(s)
            base = cost.base_widths
            for measure in ("params", "flops"):
                count = getattr(cost, measure)
                for f in (0.3, 0.35, 0.5, 0.65, 0.7, 0.75, 0.9):
                    for balance in (0.0, 0.5, 1.0):
                        for r in (1, 8):
                            try:
                                a = old.solve_widths(base, count, f, r, balance=balance)
                            except Exception:  # out of reach: both refuse
                                continue
                            b = solve_widths(base, count, f, r, balance=balance)
                            if a == b:
                                same += 1
                                continue
                            changed += 1
                            err = [abs(count(w) / count(base) - (1 - f)) for w in (a, b)]
                            print(f"{name} width {width} streams {streams} --{measure} {f} "
                                  f"balance {balance} round_to {r}: off by {err[0]:.4f} -> "
                                  f"{err[1]:.4f}; {a} -> {b}")
    print(f"unchanged {same}, changed {changed}")


if __name__ == "__main__":
    main()
