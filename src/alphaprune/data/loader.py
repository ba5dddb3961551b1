"""An in-memory batch iterator that Lightning accepts as a dataloader."""

from __future__ import annotations

import numpy as np
import torch

from alphaprune.data.augment import augment_batch, normalize
from alphaprune.parallel import rank_world, shard

__all__ = ["BatchLoader"]


class _EpochSampler:
    """Lightning calls ``set_epoch`` on ``loader.sampler`` each epoch; resume-safe shuffles."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class BatchLoader:
    """Yields normalised ``(x, y)`` batches from uint8 tensors held in memory.

    Shuffling and augmentation are seeded by ``(seed, epoch)`` so a resumed run sees the same
    batches as an uninterrupted one. Under several processes every rank draws the same
    global batch (and its augmentation) and keeps its own slice of it.

    Args:
        x: uint8 images (N, C, H, W); y: labels (N,).
        mean, std: per-channel normalisation constants in [0, 1] units.
        batch_size: samples per batch.
        train: shuffle, augment and drop the last partial batch.
        augment: crop+flip when training (off for non-image data such as tests' toys).
        channels_last: hand batches to the model in channels-last memory format.
        pad: crop padding in pixels (default: image side / 8, i.e. 4 on 32x32).
        shard: in a multi-process run, yield only this rank's slice of every batch (for
            the loaders training sees; an evaluation outside it scores everything).
    """

    def __init__(self, x: np.ndarray | torch.Tensor, y, mean, std, batch_size: int = 128,
                 train: bool = False, augment: bool = True, seed: int = 0,
                 channels_last: bool = False, pad: int | None = None, shard: bool = False):
        self.x = torch.as_tensor(x)
        self.y = torch.as_tensor(y, dtype=torch.long)
        self.mean, self.std = mean, std
        self.batch_size, self.train, self.augment = batch_size, train, augment
        # 4 pixels on CIFAR's 32x32; scaled for other sizes (2 on 16x16 digits)
        self.pad = pad if pad is not None else max(1, self.x.shape[-1] // 8)
        self.seed, self.channels_last, self.shard = seed, channels_last, shard
        self.sampler = _EpochSampler()
        self.batch_sampler = None  # Lightning inspects it

    def __len__(self) -> int:
        n = len(self.y)
        if self.train and n >= self.batch_size:
            return n // self.batch_size
        return (n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 100003 + self.sampler.epoch)
        n = len(self.y)
        order = torch.randperm(n, generator=gen) if self.train else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            xb = self.x[idx]
            if self.train and self.augment:
                xb = augment_batch(xb, pad=self.pad, gen=gen)
            yb = self.y[idx]
            if self.shard and rank_world()[1] > 1:  # this rank's slice of the global batch
                part = shard(torch.arange(len(idx)))
                if len(part) == 0:  # a last validation batch smaller than the rank count
                    continue
                xb, yb = xb[part], yb[part]
            xb = normalize(xb, self.mean, self.std)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            elif xb.stride() != torch.empty(xb.shape, device="meta").stride():
                # one-channel images can be channels-last and "contiguous" at once: a conv
                # then writes channels-last maps, which --no-channels-last is asked to avoid
                xb = xb.clone(memory_format=torch.contiguous_format)
            yield xb, yb
