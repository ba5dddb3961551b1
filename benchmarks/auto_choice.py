"""What ``--solver auto`` chooses, and the score of every candidate, on the benchmark models.

For each target the three allocations (uniform ratio, balance 1, sensitivity) are solved,
cut into the pretrained network at once with BatchNorm re-measured on 500 training images,
and scored on 1,000 validation images (the split and images of the section 8 protocol):
the printed candidates are what ``summary.json``'s ``width_search.candidates`` records.

    OMP_NUM_THREADS=1 python benchmarks/auto_choice.py /tmp/bench/vgg16_w025/model.pt flops 0.5,0.75 \
        --data ../shared/datasets/cifar10/train [--prune-streams]
"""

from __future__ import annotations

import argparse

import torch

from alphaprune.graph import find_units
from alphaprune.modelfile import load_checkpoint
from alphaprune.pipeline import DataConfig, load_data
from alphaprune.plan import WidthTarget, search_data, solve_target


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoint")
    p.add_argument("measure", choices=["params", "flops"])
    p.add_argument("targets", type=lambda t: [float(v) for v in t.split(",")])
    p.add_argument("--data", required=True)
    p.add_argument("--train-subset", type=int, default=5000)
    p.add_argument("--prune-streams", action="store_true", help="residual streams are units too")
    a = p.parse_args()
    torch.set_num_threads(1)
    ds, splits = load_data(DataConfig(data=a.data, train_subset=a.train_subset))
    mf = load_checkpoint(a.checkpoint)
    model = mf.model.eval()
    shape = tuple(ds.x.shape[1:])
    structure = find_units(model, torch.zeros(2, *shape), streams=a.prune_streams)
    val = search_data(ds, splits, 1000, mf.mean, mf.std, 0)
    for target in a.targets:
        widths, rec = solve_target(WidthTarget(a.measure, target, "auto"), structure, model,
                                   None, shape, val)
        (c,) = rec["candidates"]
        print(f"{a.measure} {target:.0%}: chosen {c['chosen']} {widths}")
        for k in ("ratio", "balance1", "sensitivity"):
            print(f"  {k:12s} val_acc {c[k]['val_acc']:.4f} val_loss {c[k]['val_loss']:.4f} "
                  f"widths {c[k]['widths']}", flush=True)


if __name__ == "__main__":
    main()
