"""Does timing the kept ``--speedup`` candidate a second time make the search's promise hold
at the final check? (BENCHMARKS.md section 18.)

Each repeat runs ``--speedup``'s width search (:func:`alphaprune.plan.solve_target`, the
default auto solver, the section 8 split), then times the kept architecture against the
original as a run's final check does (80 alternating triples). From the same search it
also takes the candidate the search kept before the second timing existed: the first whose
single timing landed within 3% of the target (the two searches time the same candidates up
to that point, so this is what the old search would have kept on these timings), and
checks it the same way. Random weights: only the architecture is timed. One JSON line per
repeat (every candidate's widths and timings, both picks' estimates and checks):

    OMP_NUM_THREADS=1 python benchmarks/speedup_confirm.py /tmp/bench/vgg16_w025/model.pt \
        --data ../shared/datasets/cifar10/train --speedup 2 --batch 128 --repeats 4
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from alphaprune.blend.fuse import fused_architecture
from alphaprune.graph import find_units
from alphaprune.modelfile import load_checkpoint
from alphaprune.pipeline import DataConfig, load_data
from alphaprune.plan import WidthTarget, search_data, solve_target
from alphaprune.speedup import TOLERANCE, measured_speedup


def old_pick(tried: list[dict], speedup: float) -> dict:
    """The candidate the search kept when each was timed once: the first whose first timing
    met the target, else the closest of those not short (else the closest)."""
    for t in tried:
        if abs(t["timings"][0] / speedup - 1) <= TOLERANCE:
            return t
    return min(tried, key=lambda t: (t["timings"][0] < speedup * (1 - TOLERANCE),
                                     abs(t["timings"][0] - speedup)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True)
    p.add_argument("--speedup", type=float, default=2.0)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--keep-streams", action="store_true",
                   help="residual streams whole (the default under --speedup cuts them)")
    a = p.parse_args()
    torch.set_num_threads(1)
    ds, splits = load_data(DataConfig(data=a.data, train_subset=5000))
    mf = load_checkpoint(a.checkpoint)
    model = mf.model.eval()
    shape = tuple(ds.x.shape[1:])
    structure = find_units(model, torch.zeros(2, *shape), streams=not a.keep_streams)
    val = search_data(ds, splits, 1000, mf.mean, mf.std, 0)
    target = WidthTarget("latency", 1 - 1 / a.speedup, "auto", speedup=a.speedup,
                         latency_batch=a.batch)
    for r in range(a.repeats):
        t0 = time.perf_counter()
        widths, rec = solve_target(target, structure, model, None, shape, val)
        new = rec["tried"][rec["kept"]]
        old = old_pick(rec["tried"], a.speedup)
        row = {"repeat": r, "target": a.speedup, "batch": a.batch, "most": rec["most"],
               "tried": [{"widths": t["widths"], "timings": t["timings"]} for t in rec["tried"]],
               "on_target": rec["on_target"],
               "new": {"widths": widths, "estimate": new["measured_speedup"]},
               "old": {"widths": old["widths"], "estimate": old["timings"][0]},
               "search_s": round(time.perf_counter() - t0, 1)}
        # the two checks in turn, the first of them alternating by repeat; one architecture
        # kept by both is checked once
        turns = [("new", "old"), ("old", "new")]
        for k, o in turns[::-1] if r % 2 else turns:
            if row[k]["widths"] == row[o]["widths"] and "final" in row[o]:
                row[k]["final"] = row[o]["final"]
            else:
                arch_model = fused_architecture(structure, row[k]["widths"]).eval()
                row[k]["final"] = measured_speedup(model, arch_model, shape, a.batch,
                                                   pairs=80)[0]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
