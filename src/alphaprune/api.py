"""The Python API behind every CLI command: ``train``, ``evaluate``, ``prune``, ``demo``."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from alphaprune.data import BatchLoader, Dataset, Splits, load_dataset, make_splits, stratified_subset
from alphaprune.errors import UserError
from alphaprune.modelfile import ModelFile, load_checkpoint, save_model
from alphaprune.models import create_model
from alphaprune.report.page import write_report
from alphaprune.report.size import count_flops, count_params
from alphaprune.rundir import prepare_run_dir, read_config, write_config, write_json
from alphaprune.train.callbacks import BestWeights, MetricsCSV
from alphaprune.train.engine import fit, make_trainer, resolve_accelerator
from alphaprune.train.module import ClassifierModule, OptimConfig

__all__ = ["DataConfig", "TrainConfig", "load_data", "train", "evaluate", "evaluate_model",
           "fit_classifier", "split_scores"]


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


@dataclass
class TrainConfig:
    """Settings of ``alphaprune train``."""

    model: str = "vgg16"
    width: float = 1.0
    widths: list[int] | None = None
    epochs: int = 30
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    channels_last: bool = True
    accelerator: str = "auto"         # auto (a CUDA GPU when visible), cpu or gpu


def load_data(cfg: DataConfig) -> tuple[Dataset, Splits]:
    """Load the dataset (cached) and carve its seeded, stratified splits."""
    cfg.validate()
    ds = load_dataset(cfg.data, cfg.cache_dir)
    if len(ds.y) == 0:
        raise UserError(f"dataset {cfg.data} is empty: add images")
    splits = make_splits(ds.y, cfg.val_frac, cfg.test_frac, cfg.seed, cfg.subset)
    if cfg.train_subset is not None:  # same val/test as the full run: comparable numbers
        n = min(cfg.train_subset, len(splits.train))  # "at most N"
        splits.train = splits.train[stratified_subset(ds.y[splits.train], n, cfg.seed)]
    return ds, splits


def split_meta(cfg: DataConfig) -> dict:
    """What a model file records to re-carve the same splits later."""
    return {"data": cfg.data, "seed": cfg.seed, "val_frac": cfg.val_frac,
            "test_frac": cfg.test_frac, "subset": cfg.subset}


def loaders(ds: Dataset, splits: Splits, mean, std, batch_size: int, seed: int,
            channels_last: bool = False) -> tuple[BatchLoader, BatchLoader]:
    """Training (shuffled, augmented) and validation loaders over the in-memory arrays."""
    if len(splits.train) == 0 or len(splits.val) == 0:
        raise UserError("the train or val split is empty: use more data or other --val-frac")
    tr = BatchLoader(ds.x[splits.train], ds.y[splits.train], mean, std, batch_size, train=True,
                     seed=seed, channels_last=channels_last)
    va = BatchLoader(ds.x[splits.val], ds.y[splits.val], mean, std, max(batch_size, 256),
                     channels_last=channels_last)
    return tr, va


def _config_from_dict(d: dict) -> TrainConfig:
    d = dict(d)
    d["optim"] = OptimConfig(**d["optim"])
    d["data"] = DataConfig(**d["data"])
    return TrainConfig(**d)


def train(cfg: TrainConfig, out: str | Path, force: bool = False, resume: bool = False,
          progress: bool = True, callbacks: list | None = None) -> dict:
    """Train a registry model from scratch; keep the epoch with the best validation loss.

    Writes ``out/config.yaml``, ``out/metrics.csv`` (one row per epoch), checkpoints for
    ``resume`` and, when done, ``out/model.pt`` and ``out/summary.json``. ``callbacks`` are
    extra Lightning callbacks.

    Returns:
        The summary dict (also written to ``summary.json``).
    """
    out, ckpt = Path(out), None
    if resume:
        out, ckpt = prepare_run_dir(out, "model.pt", resume=True)
        # where to run is the resuming machine's choice, not the recorded one
        cfg = replace(_config_from_dict(read_config(out)["train"]), accelerator=cfg.accelerator)
    if cfg.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {cfg.epochs}")
    cfg.optim.validate()
    resolve_accelerator(cfg.accelerator)
    ds, splits = load_data(cfg.data)  # validates cfg.data
    mean, std = ds.mean_std()
    torch.manual_seed(cfg.data.run_seed)  # the initial weights follow --seed / --train-seed too
    model = create_model(cfg.model, num_classes=ds.num_classes, in_channels=ds.in_channels,
                         width=cfg.width, widths=cfg.widths)
    if not resume:  # only now that every input checked out may an old run be replaced
        out, ckpt = prepare_run_dir(out, "model.pt", force=force)
        write_config(out, {"command": "train", "train": asdict(cfg)})
    t0 = time.perf_counter()
    model, best_epoch = fit_classifier(model, out, ckpt, ds, splits, mean, std, cfg.epochs,
                                       cfg.optim, cfg.data, cfg.channels_last, progress, callbacks,
                                       accelerator=cfg.accelerator)
    meta = {"source_run": str(out.resolve()), "command": "train", "split": split_meta(cfg.data),
            "best_epoch": best_epoch}
    save_model(out / "model.pt", model, cfg.model, mean, std, ds.classes, meta)
    summary = {"model": cfg.model, "params": count_params(model),
               "flops": count_flops(model, tuple(ds.x.shape[1:])), "best_epoch": best_epoch,
               "seconds": round(time.perf_counter() - t0, 2),
               **split_scores(model, ds, splits, mean, std)}
    write_json(out / "summary.json", summary)
    write_report(out)
    return summary


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
                   distill: float = 0.0, temperature: float = 4.0, accelerator: str = "auto"):
    """Train ``model`` in run folder ``out`` (resuming from ``ckpt``) on ``accelerator`` and
    return ``(model with the best-validation-loss weights, on the CPU; best epoch)``."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    torch.manual_seed(data.run_seed)
    tr, va = loaders(ds, splits, mean, std, data.batch_size, data.run_seed, channels_last)
    module = ClassifierModule(model, optim, teacher=teacher, distill=distill, temperature=temperature)
    best = BestWeights()
    trainer = make_trainer(out, epochs, [MetricsCSV(out / "metrics.csv"), best, *(callbacks or [])],
                           progress, accelerator)
    model.train()
    fit(trainer, module, tr, va, ckpt)
    return module.model.to(memory_format=torch.contiguous_format), best.best_epoch


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


def _check_compatible(mf: ModelFile, ds: Dataset, path) -> None:
    in_ch = mf.kwargs.get("in_channels")
    if in_ch != ds.in_channels or mf.kwargs.get("num_classes") != ds.num_classes:
        raise UserError(
            f"model {path} expects {in_ch} input channels and {mf.kwargs.get('num_classes')} "
            f"classes but the data has {ds.in_channels} and {ds.num_classes}: pass the data it "
            "was trained on")


def evaluate(model_path: str | Path, data: str | None = None, split: str = "test",
             model_name: str | None = None, data_cfg: DataConfig | None = None) -> dict:
    """Loss and accuracy of a model file on one split, plus its size and FLOPs.

    The split is carved exactly as when the model was trained (seed and fractions recorded
    in the model file) whenever ``data`` is the same dataset; otherwise ``data_cfg``'s.
    """
    cfg = data_cfg or DataConfig()
    mf = load_checkpoint(model_path, model_name)
    recorded = mf.meta.get("split", {})
    if data is None:
        data = recorded.get("data")
        if data is None:
            raise UserError("no --data given and the model file records none: pass --data")
    if data_cfg is None and recorded.get("data") == data:
        cfg = DataConfig(**{**asdict(cfg), **recorded})
    cfg.data = data
    ds, splits = load_data(cfg)
    _check_compatible(mf, ds, model_path)
    # a raw state_dict records no normalisation: the data's own constants stand in
    mean, std = (mf.mean, mf.std) if mf.mean else ds.mean_std()
    r = evaluate_model(mf.model, ds, splits.get(split), mean, std)
    r.update({"split": split, "model": mf.arch, "params": count_params(mf.model),
              "flops": count_flops(mf.model, tuple(ds.x.shape[1:])), "data": data})
    return r
