"""Builds the Lightning Trainer the same way for every command."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from alphaprune.train.callbacks import Progress

__all__ = ["make_trainer", "fit"]

# Lightning's start-up banners (GPU/TPU availability, tips) are noise for a CPU tool.
for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
              "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def make_trainer(run_dir: Path, max_epochs: int, callbacks: list, progress: bool = True) -> pl.Trainer:
    """A CPU Trainer that checkpoints ``run_dir/checkpoints/last.ckpt`` after every epoch.

    Checkpoints are written at the end of the training epoch, after every other callback
    (Lightning runs checkpoint callbacks last), so they hold the decisions of that epoch.
    """
    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1,
                           save_on_train_epoch_end=True, enable_version_counter=False)
    cbs = list(callbacks) + [ckpt] + ([Progress()] if progress else [])
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=max_epochs, callbacks=cbs,
                      logger=tensorboard_logger(run_dir), enable_model_summary=False, num_sanity_val_steps=0,
                      enable_progress_bar=progress, default_root_dir=str(run_dir),
                      deterministic=False)


def tensorboard_logger(run_dir: Path):
    """A TensorBoard logger writing to ``run_dir/tensorboard`` when the optional
    ``tensorboard`` package is installed (``pip install alphaprune[tensorboard]``), else None.
    The CSV files are written either way."""
    from lightning.fabric.loggers.tensorboard import _TENSORBOARD_AVAILABLE

    if not _TENSORBOARD_AVAILABLE:
        return False
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(str(run_dir), name="tensorboard", version="", default_hp_metric=False)


def fit(trainer: pl.Trainer, module: pl.LightningModule, train_loader, val_loader,
        ckpt_path: Path | None = None) -> None:
    """``trainer.fit`` with the noise of CPU-only runs silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*GPU available but not used.*")
        warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
        warnings.filterwarnings("ignore", ".*The number of training batches .*")
        warnings.filterwarnings("ignore", ".*is a plain iterable.*")
        warnings.filterwarnings("ignore", ".*treespec, LeafSpec.*")  # Lightning vs torch 2.13
        trainer.fit(module, train_loader, val_loader,
                    ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=False)
    torch.set_grad_enabled(True)
