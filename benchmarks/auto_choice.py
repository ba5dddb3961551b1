"""What ``--solver auto`` chooses, and the score of every candidate, on the benchmark models.

For each target the three allocations (uniform ratio, balance 1, sensitivity) are solved,
cut into the pretrained network at once with BatchNorm re-measured on 500 training images,
and scored on 1,000 validation images (the split and images of the section 8 protocol):
the printed candidates are what ``summary.json``'s ``width_search.candidates`` records
(``se``: the paired standard error of the score's difference to the top score; ``written``:
the activation elements the fused network writes, a share of the original's; auto keeps
the candidate that writes the least of those within one standard error of the top).

    OMP_NUM_THREADS=1 python benchmarks/auto_choice.py /tmp/bench/vgg16_w025/model.pt flops 0.5,0.75 \
        --data ../shared/datasets/cifar10/train [--prune-streams] [--steps 25,100] [--time 128]

``--steps K1,K2``: each candidate is also scored after K steps of training the cut network
(:func:`alphaprune.blend.sensitivity.tuned_cut_score`, batch 64, on the run's training
images), the time per candidate printed. ``--time B``: each candidate's fused network is
timed against the original at batch B (what the ``written`` count stands in for).
"""

from __future__ import annotations

import argparse
import time

import torch

from alphaprune.blend.fuse import fused_architecture
from alphaprune.blend.sensitivity import channel_orders, tuned_cut_score
from alphaprune.graph import CostModel, find_units
from alphaprune.modelfile import load_checkpoint
from alphaprune.pipeline import DataConfig, load_data
from alphaprune.plan import WidthTarget, search_data, solve_target
from alphaprune.speedup import measured_speedup


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoint")
    p.add_argument("measure", choices=["params", "flops"])
    p.add_argument("targets", type=lambda t: [float(v) for v in t.split(",")])
    p.add_argument("--data", required=True)
    p.add_argument("--train-subset", type=int, default=5000)
    p.add_argument("--prune-streams", action="store_true", help="residual streams are units too")
    p.add_argument("--steps", type=lambda t: [int(v) for v in t.split(",")], default=[],
                   help="also score each candidate after this many training steps")
    p.add_argument("--time", type=int, default=0, metavar="BATCH",
                   help="also time each candidate's fused network against the original at "
                        "this batch (alternating passes, 40 triples, one thread)")
    a = p.parse_args()
    torch.set_num_threads(1)
    ds, splits = load_data(DataConfig(data=a.data, train_subset=a.train_subset))
    mf = load_checkpoint(a.checkpoint)
    model = mf.model.eval()
    shape = tuple(ds.x.shape[1:])
    structure = find_units(model, torch.zeros(2, *shape), streams=a.prune_streams)
    val = search_data(ds, splits, 1000, mf.mean, mf.std, 0)
    cost = CostModel(structure)
    train = (torch.as_tensor(ds.x[splits.train]), torch.as_tensor(ds.y[splits.train]), mf.mean,
             mf.std)
    for target in a.targets:
        widths, rec = solve_target(WidthTarget(a.measure, target, "auto"), structure, model,
                                   None, shape, val)
        (c,) = rec["candidates"]
        print(f"{a.measure} {target:.0%}: chosen {c['chosen']} (top score {c['top_score']}) "
              f"{widths}")
        for k in ("ratio", "balance1", "sensitivity"):
            print(f"  {k:12s} val_acc {c[k]['val_acc']:.4f} se {c[k]['se']:.4f} val_loss "
                  f"{c[k]['val_loss']:.4f} written {c[k]['written']:.3f} params "
                  f"{cost.params(c[k]['widths'])} widths {c[k]['widths']}"
                  + timed(a.time, model, structure, c[k]["widths"], shape), flush=True)
        tuned(a.steps, structure, c, val, train)


def timed(batch, model, structure, widths, shape) -> str:
    """`` speed-up b<batch> <x>`` of the fused network at ``widths``, or nothing."""
    if not batch:
        return ""
    x = measured_speedup(model, fused_architecture(structure, widths).eval(), shape, batch)[0]
    return f" speed-up b{batch} {x:.2f}x"


def tuned(steps, structure, c, val, train) -> None:
    """Print each candidate's score after each number of training steps."""
    orders = channel_orders(structure, "l1", val.x[:250])
    for k in steps:
        for name in ("ratio", "balance1", "sensitivity"):
            t0 = time.perf_counter()
            acc, loss = tuned_cut_score(structure, c[name]["widths"], val.x, val.y, val.calib,
                                        orders, *train, steps=k)
            print(f"  {k:4d} steps {name:12s} val_acc {acc:.4f} val_loss {loss:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
