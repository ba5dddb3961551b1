"""What every command shares, below them all: data and splits, loaders, training a
classifier, split scores and the model/data compatibility check.

``train``, ``evaluate`` (:mod:`alphaprune.api`), ``prune`` and ``compare`` all build on
this module; it never imports them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from alphaprune.data import (
    BatchLoader,
    Dataset,
    Splits,
    load_dataset,
    make_splits,
    rotate_fold,
    stratified_subset,
)
from alphaprune.errors import UserError
from alphaprune.modelfile import ModelFile
from alphaprune.parallel import Processes
from alphaprune.train.callbacks import BestWeights, MetricsCSV
from alphaprune.train.engine import DivergenceGuard, fit, make_trainer
from alphaprune.train.module import ClassifierModule, OptimConfig

__all__ = ["DataConfig", "load_data", "carve_splits", "split_meta", "check_splits", "loaders", "split_scores",
           "fit_classifier", "evaluate_model", "check_compatible"]


@dataclass
class DataConfig:
    """Where the data comes from and how it is split."""

    data: str = "digits"
    val_frac: float = 0.1
    test_frac: float = 0.1
    seed: int = 0
    subset: int | None = None
    train_subset: int | None = None   # train on N images of the train split; val/test unchanged
    cache_dir: str | None = None
    batch_size: int = 128
    # seed of training alone (shuffling, augmentation, init, draws); None: ``seed``. Repeats
    # with other training seeds keep the same splits, so their spread is the training noise
    train_seed: int | None = None
    # cross-validation: the train and val splits dealt into ``folds`` parts, part ``fold``
    # (1-based) validating (data.splits.rotate_fold); the test split is unchanged
    folds: int | None = None
    fold: int | None = None

    @property
    def run_seed(self) -> int:
        """The seed of everything random in training."""
        return self.seed if self.train_seed is None else self.train_seed

    def validate(self) -> None:
        """Raise a one-line :class:`UserError` for an out-of-range setting."""
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.seed < 0:
            raise UserError(f"--seed must be >= 0, got {self.seed}")
        if self.train_seed is not None and self.train_seed < 0:
            raise UserError(f"--train-seed must be >= 0, got {self.train_seed}")
        for name in ("subset", "train_subset"):
            n = getattr(self, name)
            if n is not None and n < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {n}")
        if self.folds is not None and self.folds < 2:
            raise UserError(f"--folds must be at least 2, got {self.folds}: 2 or more folds "
                            "rotate the validation split (leave --folds out for one run)")


def load_data(cfg: DataConfig) -> tuple[Dataset, Splits]:
    """Load the dataset (cached) and carve its seeded, stratified splits."""
    cfg.validate()
    ds = load_dataset(cfg.data, cfg.cache_dir)
    if len(ds.y) == 0:
        raise UserError(f"dataset {cfg.data} is empty: add images")
    return ds, carve_splits(cfg, ds.y)


def carve_splits(cfg: DataConfig, y: np.ndarray) -> Splits:
    """The seeded, stratified splits ``cfg`` asks for of a dataset with labels ``y``: train,
    val and test, then the cross-validation fold, then the training subset."""
    splits = make_splits(y, cfg.val_frac, cfg.test_frac, cfg.seed, cfg.subset)
    if cfg.fold is not None:
        splits = rotate_fold(y, splits, cfg.folds or 0, cfg.fold, cfg.seed)
    if cfg.train_subset is not None:  # same val/test as the full run: comparable numbers
        n = min(cfg.train_subset, len(splits.train))  # "at most N"
        splits.train = splits.train[stratified_subset(y[splits.train], n, cfg.seed)]
    return splits


def split_meta(cfg: DataConfig) -> dict:
    """What a model file records to re-carve the same splits later (the data as an absolute
    path: the same files whichever folder the file is read from)."""
    meta = {"data": absolute_data(cfg.data), "seed": cfg.seed, "val_frac": cfg.val_frac,
            "test_frac": cfg.test_frac, "subset": cfg.subset, "train_subset": cfg.train_subset}
    if cfg.fold is not None:
        meta.update(folds=cfg.folds, fold=cfg.fold)
    return meta


def absolute_data(spec: str) -> str:
    """``--data`` as a run records it: a folder as an absolute path (a relative one would
    name other files from another working directory), ``digits`` as it is."""
    return spec if spec == "digits" else os.path.abspath(os.path.expanduser(spec))


def absolute_paths(cfg):
    """A prune config (``data`` a dict) with its data folder and checkpoint as absolute
    paths, as a run records them."""
    return dataclasses.replace(
        cfg, data={**cfg.data, "data": absolute_data(cfg.data.get("data", "digits"))},
        checkpoint=cfg.checkpoint and os.path.abspath(os.path.expanduser(cfg.checkpoint)))


def canonical_data(spec: str) -> str:
    """One spelling of a ``--data`` value: a folder as its resolved absolute path (links
    followed), ``digits`` as it is; two values name the same dataset when these are equal."""
    return spec if spec == "digits" else str(Path(spec).expanduser().resolve())


def same_data(a, b) -> bool:
    """Whether two ``--data`` values name the same dataset, however each is spelled."""
    return isinstance(a, str) and isinstance(b, str) and canonical_data(a) == canonical_data(b)


_SPLIT_KEYS = ("seed", "val_frac", "test_frac", "subset", "train_subset", "folds", "fold")


def seen_test_images(meta: dict, cfg: DataConfig, ds: Dataset, splits: Splits) -> dict | None:
    """The test images of a run that a pretrained model file was trained on, when the run
    is on the same data (``meta``: the file's metadata, whose ``split`` says how it was
    carved): ``{"images": n, "of": test images, "split": the options of its split}``, or
    None when there are none (or its split is unknown). A quick run on another subset may
    mean to test on such images; its test accuracies then read high, and the run says so.
    """
    rec = meta.get("split") if isinstance(meta, dict) else None
    if not isinstance(rec, dict) or not same_data(rec.get("data"), cfg.data):
        return None
    try:
        theirs = DataConfig(data=cfg.data, **{k: rec[k] for k in _SPLIT_KEYS if k in rec})
        trained_on = carve_splits(theirs, ds.y).train
    except (TypeError, ValueError, UserError):  # a split this version cannot carve
        return None
    seen = len(np.intersect1d(splits.test, trained_on))
    if not seen:
        return None
    opts = f"--seed {theirs.seed} --val-frac {theirs.val_frac} --test-frac {theirs.test_frac}"
    opts += f" --subset {theirs.subset}" if theirs.subset is not None else ""
    return {"images": seen, "of": len(splits.test), "split": opts}


def check_splits(splits: Splits) -> None:
    """Training needs images in its train and val splits, and two in a batch (BatchNorm)."""
    if len(splits.train) == 0 or len(splits.val) == 0:
        raise UserError("the train or val split is empty: use more data or other --val-frac")
    if len(splits.train) == 1:
        raise UserError("the train split holds one image, and BatchNorm cannot train on one: "
                        "use more data (--subset, --train-subset) or a smaller --val-frac")


def loaders(ds: Dataset, splits: Splits, mean, std, batch_size: int, seed: int,
            channels_last: bool = False) -> tuple[BatchLoader, BatchLoader]:
    """Training (shuffled, augmented) and validation loaders over the in-memory arrays; in a
    multi-process run each rank gets its slice of every batch."""
    check_splits(splits)
    tr = BatchLoader(ds.x[splits.train], ds.y[splits.train], mean, std, batch_size, train=True,
                     seed=seed, channels_last=channels_last, shard=True)
    va = BatchLoader(ds.x[splits.val], ds.y[splits.val], mean, std, max(batch_size, 256),
                     channels_last=channels_last, shard=True)
    return tr, va


def split_scores(model, ds: Dataset, splits: Splits, mean, std) -> dict:
    """``val_acc``, ``val_loss``, ``test_acc``, ``test_loss`` of a model."""
    out = {}
    for split in ("val", "test"):
        r = evaluate_model(model, ds, splits.get(split), mean, std)
        out[f"{split}_acc"], out[f"{split}_loss"] = r["accuracy"], r["loss"]
    return out


def fit_classifier(model, out: Path, ckpt, ds: Dataset, splits: Splits, mean, std, epochs: int,
                   optim: OptimConfig, data: DataConfig, channels_last: bool = True,
                   progress: bool = True, callbacks: list | None = None, teacher=None,
                   distill: float = 0.0, temperature: float = 4.0, accelerator: str = "auto",
                   processes: Processes | None = None):
    """Train ``model`` in run folder ``out`` (resuming from ``ckpt``) on ``accelerator`` and
    return ``(model with the best-validation-loss weights, on the CPU; best epoch;
    where training diverged or None)``. A non-finite loss ends training there, keeping the
    best epoch before it; with no good epoch before it, a one-line :class:`UserError`.
    ``processes``: devices, nodes, strategy, precision (:mod:`alphaprune.parallel`)."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    torch.manual_seed(data.run_seed)
    tr, va = loaders(ds, splits, mean, std, data.batch_size, data.run_seed, channels_last)
    module = ClassifierModule(model, optim, teacher=teacher, distill=distill, temperature=temperature)
    best = BestWeights()
    trainer = make_trainer(out, epochs, [MetricsCSV(out / "metrics.csv"), best, *(callbacks or [])],
                           progress, accelerator, processes=processes)
    model.train()
    fit(trainer, module, tr, va, ckpt)
    guard = next(c for c in trainer.callbacks if isinstance(c, DivergenceGuard))
    if guard.diverged is not None and best.best_state is None:
        d = guard.diverged
        raise UserError(f"training diverged at epoch {d['epoch']}, step {d['step']} (lr "
                        f"{d['lr']:g}) before any good epoch: nothing was saved; lower --lr and "
                        "start again with --force")
    return module.model.to(memory_format=torch.contiguous_format), best.best_epoch, guard.diverged


@torch.inference_mode()
def evaluate_model(model, ds: Dataset, idx: np.ndarray, mean, std, batch_size: int = 512) -> dict:
    """Mean cross-entropy and accuracy of ``model`` on ``ds`` restricted to ``idx``."""
    model.eval()
    loader = BatchLoader(ds.x[idx], ds.y[idx], mean, std, batch_size)
    loss, correct = 0.0, 0
    for x, y in loader:
        logits = model(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    n = len(idx)
    return {"loss": loss / n if n else math.nan, "accuracy": correct / n if n else math.nan,
            "n_samples": int(n)}


def check_compatible(mf: ModelFile, ds: Dataset, path) -> None:
    in_ch = mf.kwargs.get("in_channels")
    if in_ch != ds.in_channels or mf.kwargs.get("num_classes") != ds.num_classes:
        raise UserError(
            f"model {path} expects {in_ch} input channels and {mf.kwargs.get('num_classes')} "
            f"classes but the data has {ds.in_channels} and {ds.num_classes}: pass the data it "
            "was trained on")
    if mf.classes and list(mf.classes) != list(ds.classes):
        diff = next((i for i, (a, b) in enumerate(zip(mf.classes, ds.classes)) if a != b), None)
        where = (f"named {mf.classes[diff]!r} where the data has {ds.classes[diff]!r} (class "
                 f"{diff})" if diff is not None else f"{mf.classes} where the data has {ds.classes}")
        raise UserError(f"model {path} was trained on classes {where}: pass the data it was "
                        "trained on, its class folders named as then")
