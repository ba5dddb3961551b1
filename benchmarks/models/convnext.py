"""ConvNeXt for 32x32 images (a user model for the benchmarks: ``--model
benchmarks/models/convnext.py:convnext``), to measure pruning a network whose convs are
depthwise and whose width lies in token-wise MLPs (BENCHMARKS.md section 53).

The layout of Liu et al. (2022), "A ConvNet for the 2020s", scaled to CIFAR: a 2x2
stride-2 patchify stem to 16x16 and a channels-first LayerNorm, three stages of widths
32, 64 and 128 with two blocks each, a LayerNorm and a 2x2 stride-2 conv between stages,
then a global average pool, a LayerNorm and a linear head. A block is a 7x7 depthwise
conv, then on channels-last maps a LayerNorm, a linear to four times the width, GELU, a
linear back, a learnt per-channel scale (layer scale), added to the block's input. The
layer scale starts at 1, not the paper's 1e-6 (which suits AdamW over 300 epochs): with
alphaprune's SGD recipe over a few epochs the network learnt more slowly with 1e-6
(BENCHMARKS.md section 53).
The stream runs through LayerNorms and sums, so the MLPs' hidden features (the first
linear's outputs) are the units; stochastic depth is left out (short CPU runs).
"""

from __future__ import annotations

import torch
import torch.nn as nn

DIMS, DEPTHS, LAYER_SCALE = (32, 64, 128), (2, 2, 2), 1.0


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an (N, C, H, W) map. It holds an ``nn.LayerNorm``
    rather than subclassing it, so that the traced graph keeps the LayerNorm as a module:
    a subclass is traced through, into ``F.layer_norm`` with its width as a constant, which
    Torch-Pruning then cannot narrow."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Block(nn.Module):
    """7x7 depthwise conv -> (channels last) LayerNorm -> linear 4x -> GELU -> linear ->
    layer scale, added to the input."""

    def __init__(self, dim: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1, self.act, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, dims=DIMS, depths=DEPTHS,
                 layer_scale: float = LAYER_SCALE):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, dims[0], 2, stride=2),
                                   LayerNorm2d(dims[0], eps=1e-6)]
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            if i:
                layers += [LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dim, 2, stride=2)]
            layers += [Block(dim, layer_scale) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(x).mean((2, 3))))


def convnext(num_classes: int = 10, in_channels: int = 3, layer_scale: float = LAYER_SCALE) -> ConvNeXt:
    """The CIFAR ConvNeXt (module docstring)."""
    return ConvNeXt(num_classes, in_channels, layer_scale=layer_scale)
