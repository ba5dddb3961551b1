"""Accuracy of the all-branch network right after branch initialisation (no training).

For each target and init (select by |BN gamma| / L1 / activation, and lstsq on top of
each), the validation accuracy at alpha = 0 — i.e. of the fused model before any
training — next to Torch-Pruning's L1 cut at the same parameter count.

    python benchmarks/branch_init.py --checkpoint MODEL.pt --data ../shared/datasets/cifar10/train
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

from alphaprune.api import DataConfig, evaluate_model, load_data
from alphaprune.baselines import torch_pruning_l1
from alphaprune.blend import BlendedNet, solve_widths
from alphaprune.blend.init import init_branches
from alphaprune.blend.widths import vgg_counter, vgg_param_count
from alphaprune.data import normalize
from alphaprune.modelfile import load_model_file, widths_of


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default="../shared/datasets/cifar10/train")
    p.add_argument("--targets", default="0.65,0.9")
    p.add_argument("--calib-size", type=int, default=512)
    a = p.parse_args()
    mf = load_model_file(a.checkpoint)
    ds, splits = load_data(DataConfig(data=a.data))
    g = torch.Generator().manual_seed(0)
    idx = splits.train[torch.randperm(len(splits.train), generator=g)[:a.calib_size].numpy()]
    calib = normalize(torch.as_tensor(ds.x[idx]), mf.mean, mf.std)
    shape = tuple(ds.x.shape[1:])
    rows = []
    for t in [float(v) for v in a.targets.split(",")]:
        count = vgg_counter(ds.in_channels, ds.num_classes)
        widths = solve_widths(widths_of(mf.model), count, t, 8)
        for method in ("select", "lstsq"):
            for crit in ("bn", "l1", "act"):
                m = BlendedNet(copy.deepcopy(mf.model), widths)
                init_branches(m, method, crit, calib=calib)
                acc = evaluate_model(m.set_alpha(0.0), ds, splits.val, mf.mean, mf.std)["accuracy"]
                rows.append({"target": t, "init": f"{method}/{crit}", "val_acc": acc})
                print(json.dumps(rows[-1]), flush=True)
        n = vgg_param_count(widths, ds.in_channels, ds.num_classes)
        tp = torch_pruning_l1(mf.model, n, shape)
        acc = evaluate_model(tp, ds, splits.val, mf.mean, mf.std)["accuracy"]
        rows.append({"target": t, "init": "torch-pruning L1 cut", "val_acc": acc})
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
