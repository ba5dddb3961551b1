"""RegNetX-200MF for 32x32 images (a user model for the benchmarks: ``--model
benchmarks/models/regnetx.py:regnetx``), to measure pruning through grouped convs
(BENCHMARKS.md section 49).

torchvision's ``regnet_x_200mf`` layout: a 3x3 stem of 32 channels, four stages of X
blocks of widths 24, 56, 152 and 368 and depths 1, 1, 4 and 7 (1x1 -> BN -> ReLU ->
grouped 3x3 of 8 channels a group, with the stage's stride -> BN -> ReLU -> 1x1 -> BN,
plus the input, or its strided 1x1 projection -> BN where the shape changes, then ReLU),
global average pool, linear. For 32x32 inputs the stem keeps stride 1, so the maps go
32 -> 16 -> 8 -> 4 -> 2.
"""

from __future__ import annotations

import torch
import torch.nn as nn

WIDTHS, DEPTHS, GROUP_WIDTH = (24, 56, 152, 368), (1, 1, 4, 7), 8


def _cbr(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if act else nn.Sequential(*layers)


class XBlock(nn.Module):
    """RegNet's X block: bottleneck ratio 1, a grouped 3x3 conv in the middle."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.a = _cbr(cin, cout, 1)
        self.b = _cbr(cout, cout, 3, stride, groups=cout // GROUP_WIDTH)
        self.c = _cbr(cout, cout, 1, act=False)
        self.proj = _cbr(cin, cout, 1, stride, act=False) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.proj is None else self.proj(x)
        return self.relu(skip + self.c(self.b(self.a(x))))


class RegNetX(nn.Module):
    """RegNetX-200MF with a stride-1 stem for 32x32 images."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = _cbr(3, 32, 3)
        blocks, cin = [], 32
        for width, depth, stride in zip(WIDTHS, DEPTHS, (1, 2, 2, 2)):
            for i in range(depth):
                blocks.append(XBlock(cin, width, stride if i == 0 else 1))
                cin = width
        self.trunk = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(self.stem(x)).mean((2, 3)))


def regnetx(num_classes: int = 10) -> RegNetX:
    """The factory ``--model benchmarks/models/regnetx.py:regnetx`` calls."""
    return RegNetX(num_classes)
