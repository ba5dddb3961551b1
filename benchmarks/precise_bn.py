"""Would re-measuring BatchNorm statistics on clean training images lift a pruned model?

Training leaves each BatchNorm with momentum averages of its last batches, which were
augmented (padded random crops, flips). The test images are neither. "Precise BN" (Wu and
Johnson, 2021) re-measures the statistics as plain averages over many batches; here over
the run's training images, un-augmented or augmented. Each model is scored on the val
and test splits before and after, on the splits its run used (``--data``,
``--train-subset``, the split seed):

    OMP_NUM_THREADS=1 python benchmarks/precise_bn.py MODEL.pt [MODEL.pt ...] \\
        --data ../shared/datasets/cifar10/train --train-subset 5000

Prints one JSON line per model and variant.
"""

from __future__ import annotations

import argparse
import copy
import json

import torch
import torch.nn as nn

from alphaprune.data.augment import augment_batch, normalize
from alphaprune.modelfile import load_model_file
from alphaprune.pipeline import DataConfig, evaluate_model, load_data


@torch.no_grad()
def remeasured(model: nn.Module, x_uint8: torch.Tensor, mean, std, augment: bool,
               batch: int = 256, seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose BatchNorm statistics are the plain average over ``x``."""
    m = copy.deepcopy(model)
    bns = [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None  # cumulative: the plain average of every batch
    m.train()
    gen = torch.Generator().manual_seed(seed)
    for i in range(0, len(x_uint8), batch):
        xb = x_uint8[i:i + batch]
        if augment:  # as the training loader does: on the uint8 images, then normalised
            xb = augment_batch(xb, gen=gen)
        m(normalize(xb, mean, std))
    return m.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", required=True)
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0, help="the split seed")
    args = ap.parse_args()
    ds, splits = load_data(DataConfig(data=args.data, seed=args.seed, train_subset=args.train_subset))
    x = torch.as_tensor(ds.x[splits.train])
    for path in args.models:
        mf = load_model_file(path)
        for variant in ("as trained", "clean", "augmented"):
            model = mf.model.eval() if variant == "as trained" else \
                remeasured(mf.model, x, mf.mean, mf.std, augment=variant == "augmented")
            row = {"model": path, "bn_stats": variant, "train_images": len(x)}
            for split in ("val", "test"):
                scores = evaluate_model(model, ds, splits.get(split), mf.mean, mf.std)
                row[f"{split}_acc"] = scores["accuracy"]
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
