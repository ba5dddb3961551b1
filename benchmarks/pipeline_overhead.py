"""Data-pipeline overhead: one training epoch through alphaprune vs a bare PyTorch loop.

Both train the same model (fresh copy of one initialisation) with the same batch size and
SGD settings over the same in-memory images. alphaprune's epoch includes everything it
does per batch: shuffling, whole-batch crop+flip augmentation, normalisation, Lightning's
loop, its epoch statistics and its per-epoch checkpoint. The bare loop iterates over
pre-normalised float tensors with a random permutation and does nothing else. The runs
alternate (bare, alphaprune, bare, ...) and the ratio of medians is reported.

    python benchmarks/pipeline_overhead.py --data ../shared/datasets/cifar10/train \
        --subset 10000 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from alphaprune.api import DataConfig, load_data
from alphaprune.data import BatchLoader, normalize
from alphaprune.models import create_model
from alphaprune.train.engine import fit, make_trainer
from alphaprune.train.module import ClassifierModule, OptimConfig


def bare_epoch(model, x, y, batch_size, lr) -> float:
    """Seconds for one epoch of a plain loop over pre-normalised tensors."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    model.train()
    t0 = time.perf_counter()
    order = torch.randperm(len(y))
    for b in range(len(y) // batch_size):
        idx = order[b * batch_size:(b + 1) * batch_size]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return time.perf_counter() - t0


def alphaprune_epoch(model, x, y, mean, std, batch_size, lr, tmp: Path) -> float:
    """Seconds for one training epoch through alphaprune's loader and Lightning trainer."""
    tr = BatchLoader(x, y, mean, std, batch_size, train=True, channels_last=True)
    va = BatchLoader(x[:1], y[:1], mean, std, batch_size)  # one sample: validation ~free
    module = ClassifierModule(model, OptimConfig(lr=lr, schedule="constant"))
    trainer = make_trainer(tmp, 1, [], progress=False, accelerator="cpu")  # a CPU benchmark
    t0 = time.perf_counter()
    fit(trainer, module, tr, va)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/datasets/cifar10/train")
    p.add_argument("--subset", type=int, default=10000)
    p.add_argument("--model", default="vgg16")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    ds, splits = load_data(DataConfig(data=a.data, subset=a.subset, val_frac=0, test_frac=0))
    mean, std = ds.mean_std()
    xu, y = torch.as_tensor(ds.x[splits.train]), torch.as_tensor(ds.y[splits.train])
    xf = normalize(xu, mean, std).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    init = create_model(a.model, width=a.width, num_classes=ds.num_classes).to(
        memory_format=torch.channels_last)
    bare, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            bare.append(bare_epoch(copy.deepcopy(init), xf, y, a.batch_size, 0.01))
            ours.append(alphaprune_epoch(copy.deepcopy(init), xu, y, mean, std, a.batch_size, 0.01,
                                         Path(tmp) / f"r{r}"))
            print(f"repeat {r}: bare {bare[-1]:.2f} s, alphaprune {ours[-1]:.2f} s", flush=True)
    res = {"images": len(y), "batch_size": a.batch_size, "model": f"{a.model} w{a.width}",
           "bare_median_s": statistics.median(bare), "alphaprune_median_s": statistics.median(ours),
           "ratio": statistics.median(ours) / statistics.median(bare), "threads": torch.get_num_threads()}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
