"""Whole-batch augmentation and normalisation with tensor ops (no per-sample Python)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["augment_batch", "normalize", "random_crop", "random_flip"]


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad by ``pad`` pixels and take one random crop of the original size per sample."""
    if pad <= 0:
        return x
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    return xp[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def random_flip(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    mask = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def augment_batch(x: torch.Tensor, pad: int = 4, flip: bool = True,
                  gen: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with ``pad``-pixel padding and (optionally) a horizontal flip."""
    x = random_crop(x, pad, gen)
    return random_flip(x, gen) if flip else x


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (or [0, 255] float) images -> float, standardised per channel."""
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    s = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
    return (x.float() - m) / s
