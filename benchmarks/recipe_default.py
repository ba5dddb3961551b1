"""Which recipe ``prune``'s default picks on the real split at the budgets and cuts of
BENCHMARKS.md sections 15, 17, 19 and 27 (sections 21 and 28): the settings are resolved and
the widths planned as a run does, nothing is trained or written.

    OMP_NUM_THREADS=1 python benchmarks/recipe_default.py /tmp/bench/vgg16_w025/model.pt \\
        --data ../shared/datasets/cifar10/train
    # and /tmp/bench/resnet20/model.pt, a network with sums

(The widths of the ratio solver depend on the architecture only, so a random-weight
VGG-16/4 file gives the same answer as the pretrained one.)
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from alphaprune.errors import Unreachable
from alphaprune.pipeline import DataConfig
from alphaprune.prune import PruneConfig, _load, _settings, planned

# (parameters removed, --max-total-epochs or None, --train-subset or None: all 40,000)
CELLS = [(0.35, 30, None), (0.65, 30, None), (0.9, 30, None), (0.35, 8, 20000),
         (0.65, 30, 20000), (0.65, 8, 20000), (0.9, 30, 20000), (0.65, None, None),
         (0.5, 30, 20000), (0.7, 30, 20000), (0.5, 8, 20000)]   # resnet20's (section 28)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True)
    a = p.parse_args()
    for cut, epochs, subset in CELLS:
        data = asdict(DataConfig(data=a.data, train_subset=subset))
        budget = {} if epochs is None else {"max_total_epochs": epochs}
        cfg = PruneConfig(checkpoint=a.checkpoint, prune=cut, data=data, **budget)
        cfg, *_ = _settings(cfg, Path("unused"), False, None)
        src = _load(cfg)
        head = f"--prune {cut} --max-total-epochs {epochs} ({len(src.splits.train)} train images)"
        try:
            cfg, _ = planned(cfg, src)
        except Unreachable as e:  # resnet20 cannot lose 90% with its streams whole
            print(f"{head}: refused before training ({e})", flush=True)
            continue
        print(f"{head}: {cfg.recipe} ({cfg.recipe_reason}); step size {cfg.step_size}, alpha = 0 phase "
              f"{cfg.final_schedule} lr {cfg.final_lr}, at most {cfg.final_max_epochs} epochs",
              flush=True)


if __name__ == "__main__":
    main()
