"""How the all-branch network scores while alpha > 0: BN statistics accumulated in training
against statistics re-measured on the all-branch network (``alphaprune.blend.recalibrate``).

Branches initialised by lstsq, then SGD steps (lr, momentum 0.9, Nesterov, distillation 0.7
at T = 4, as ``alphaprune prune`` trains, but without augmentation) at a fixed alpha in the
chosen hand-over mode; after some steps, the validation accuracy (first ``--val`` images
of the val split) of the all-branch network with each set of statistics.

    OMP_NUM_THREADS=1 python benchmarks/ship_bn.py --checkpoint MODEL.pt --alpha 0.75
"""

from __future__ import annotations

import argparse
import copy
import json

import torch
import torch.nn.functional as F

from alphaprune.api import DataConfig, load_data
from alphaprune.blend import BlendedNet, solve_widths
from alphaprune.blend.init import init_branches
from alphaprune.blend.recalibrate import ship_bn_stats, using_bn_stats
from alphaprune.blend.widths import vgg_counter
from alphaprune.data import normalize
from alphaprune.modelfile import load_model_file, widths_of
from alphaprune.train.losses import distillation_loss


@torch.no_grad()
def _acc(model, x, y, stats=None) -> float:
    training, alpha = model.training, float(model.alpha)
    model.eval().set_alpha(0.0)
    with using_bn_stats(model, stats):
        acc = (model(x).argmax(1) == y).float().mean().item()
    model.train(training).set_alpha(alpha)
    return round(acc, 4)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default="../shared/datasets/cifar10/train")
    p.add_argument("--prune", type=float, default=0.65)
    p.add_argument("--alpha", type=float, default=0.75)
    p.add_argument("--handover", default="stochastic")
    p.add_argument("--importance", default="bn")
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--val", type=int, default=1000)
    a = p.parse_args()
    torch.manual_seed(0)
    mf = load_model_file(a.checkpoint)
    ds, splits = load_data(DataConfig(data=a.data))
    x_of = lambda idx: normalize(torch.as_tensor(ds.x[idx]), mf.mean, mf.std)  # noqa: E731
    y_of = lambda idx: torch.as_tensor(ds.y[idx]).long()  # noqa: E731
    xv, yv = x_of(splits.val[:a.val]), y_of(splits.val[:a.val])
    calib = x_of(splits.train[torch.randperm(len(splits.train))[:512].numpy()])
    teacher = copy.deepcopy(mf.model).eval()
    widths = solve_widths(widths_of(mf.model), vgg_counter(ds.in_channels, ds.num_classes), a.prune, 8)
    model = BlendedNet(mf.model, widths, handover=a.handover)
    init_branches(model, "lstsq", a.importance, calib=calib)
    model.set_alpha(a.alpha).train()
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    order = splits.train[torch.randperm(len(splits.train)).numpy()]
    rows = [{"step": 0, "accumulated": _acc(model, xv, yv),
             "recalibrated": _acc(model, xv, yv, ship_bn_stats(model, calib))}]
    for step in range(1, a.steps + 1):
        idx = order[(step - 1) * 128:step * 128]
        x, y = x_of(idx), y_of(idx)
        logits = model(x)
        with torch.no_grad():
            soft = teacher(x)
        loss = 0.3 * F.cross_entropy(logits, y) + 0.7 * distillation_loss(logits, soft, 4.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in (1, 2, 5, 10, 20, 30) or step == a.steps:
            rows.append({"step": step, "accumulated": _acc(model, xv, yv),
                         "recalibrated": _acc(model, xv, yv, ship_bn_stats(model, calib))})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"settings": vars(a), "rows": rows}))


if __name__ == "__main__":
    main()
