"""The fused network of a benchmark user model at given unit widths (weights untrained),
and the original run from its split-pool graph, each timed against the original side by
side at batch 128 on one thread (BENCHMARKS.md section 46).

    OMP_NUM_THREADS=1 python benchmarks/fused_timing.py squeezenet \\
        params=benchmarks/results/squeezenet/params_s0_widths.json \\
        flops=benchmarks/results/squeezenet/flops_s0_widths.json

A width file is a compare ``widths.json``; ``LABEL=FILE#NAME`` takes the ``auto`` solver's
candidate NAME from it instead of the chosen widths. ``--keep-split`` fuses without merging
the split max pools back (the fused network before 367840a). Two variants that look for why
a fused network runs slowly (BENCHMARKS.md section 46): ``--min-width N`` widens every unit
narrower than N to N channels before fusing (its FLOPs are printed), and
``--cl-after-cat`` makes every concatenation's output channels-last, which torch.cat does
not when a part has a single channel.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json

import torch
from torch.fx.passes.shape_prop import ShapeProp

from alphaprune.blend.fuse import fused_architecture
from alphaprune.graph import CostModel, find_units
from alphaprune.graph.trace import is_max_pool
from alphaprune.speedup import measured_speedup


def _widths(spec: str) -> tuple[str, list[int]]:
    label, _, where = spec.partition("=")
    path, _, candidate = where.partition("#")
    record = json.load(open(path))
    return label, record["candidates"][0][candidate]["widths"] if candidate else record["widths"]


def _channels_last_after_cats(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``gm`` with each ``torch.cat``'s output made channels-last (the same values)."""
    for node in [n for n in gm.graph.nodes if n.op == "call_function" and n.target is torch.cat]:
        with gm.graph.inserting_after(node):
            cl = gm.graph.call_method("contiguous", (node,), {"memory_format": torch.channels_last})
        node.replace_all_uses_with(cl)
        cl.args = (node,)
    gm.recompile()
    return gm


def _pooled(gm: torch.fx.GraphModule) -> int:
    """Elements per image that the max pools read (their time, which FLOPs do not count)."""
    ShapeProp(gm).propagate(torch.zeros(1, 3, 32, 32))
    return sum(n.args[0].meta["tensor_meta"].shape.numel()
               for n in gm.graph.nodes if is_max_pool(gm, n))


def _model(name: str) -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location(name, f"benchmarks/models/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)().eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a file of benchmarks/models/, without .py")
    p.add_argument("widths", nargs="+", help="LABEL=FILE or LABEL=FILE#CANDIDATE")
    p.add_argument("--keep-split", action="store_true")
    p.add_argument("--min-width", type=int, default=1)
    p.add_argument("--cl-after-cat", action="store_true")
    a = p.parse_args()
    if a.keep_split:  # the module: alphaprune.blend.fuse is also the name of its function
        importlib.import_module("alphaprune.blend.fuse").merge_max_pools = lambda gm: 0
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = _model(a.model)
    structure = find_units(model, torch.zeros(2, 3, 32, 32))
    cost = CostModel(structure)
    for label, widths in map(_widths, a.widths):
        widths = [min(max(w, a.min_width), u.width) for w, u in zip(widths, structure.units)]
        fused = fused_architecture(structure, widths).eval()
        if a.cl_after_cat:
            fused = _channels_last_after_cats(fused)
        ratio, ms_ref, ms_cand = measured_speedup(model, fused, (3, 32, 32), 128)
        print(f"{label:12s} FLOPs {cost.flops(widths):,} of {cost.flops(cost.base_widths):,}; "
              f"narrowest {sorted(widths)[:6]}; max pools read {_pooled(fused):,}; speed-up {ratio:.2f}x "
              f"({ms_ref:.1f} ms -> {ms_cand:.1f} ms at batch 128)")
    ratio, ms_ref, ms_cand = measured_speedup(model, structure.gm, (3, 32, 32), 128)
    print(f"split pools  the original's widths; speed-up {ratio:.2f}x "
          f"({ms_ref:.1f} ms -> {ms_cand:.1f} ms at batch 128)")


if __name__ == "__main__":
    main()
