"""A small Inception network for 32x32 images (a user model for the benchmarks: ``--model
benchmarks/models/inception.py:inception``), to measure pruning through ``torch.cat``
(BENCHMARKS.md section 44).

Two Inception-v3-style blocks of four branches (1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3; a 3x3
average pool -> 1x1) joined by a channel cat, with a reduction block between them (two
stride-2 conv branches and a stride-2 pool branch, joined by a cat), then a global mean
and the classifier. The pool branches average: when section 44 ran, a max pool there
left the convs before it whole (section 46 lifted that; this network stays as measured).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _cbr(cin: int, cout: int, k: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class InceptionA(nn.Module):
    """Four branches at one resolution; ``w`` scales their widths."""

    def __init__(self, cin: int, w: int):
        super().__init__()
        self.b1 = _cbr(cin, 2 * w)
        self.b2 = nn.Sequential(_cbr(cin, 2 * w), _cbr(2 * w, 3 * w, 3))
        self.b3 = nn.Sequential(_cbr(cin, w), _cbr(w, 3 * w // 2, 3), _cbr(3 * w // 2, 3 * w // 2, 3))
        self.b4 = _cbr(cin, 3 * w // 2)
        self.out_channels = 2 * w + 3 * w + 3 * w // 2 + 3 * w // 2

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x),
                          self.b4(F.avg_pool2d(x, 3, 1, 1))], 1)


class Reduction(nn.Module):
    """Halves the resolution: two stride-2 conv branches and a stride-2 average pool."""

    def __init__(self, cin: int, w: int):
        super().__init__()
        self.b1 = _cbr(cin, w, 3, 2)
        self.b2 = nn.Sequential(_cbr(cin, w // 2), _cbr(w // 2, w, 3, 2))
        self.out_channels = 2 * w + cin

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), F.avg_pool2d(x, 3, 2, 1)], 1)


class Inception(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 8):
        super().__init__()
        self.stem = _cbr(3, 4 * width, 3)
        self.a1 = InceptionA(4 * width, width)
        self.r1 = Reduction(self.a1.out_channels, 6 * width)
        self.a2 = InceptionA(self.r1.out_channels, 2 * width)
        self.fc = nn.Linear(self.a2.out_channels, num_classes)

    def forward(self, x):
        x = self.a2(self.r1(self.a1(self.stem(x))))
        return self.fc(x.mean((2, 3)))


def inception(num_classes: int = 10, width: int = 8) -> Inception:
    """The benchmark's network (``width`` 8: 64 channels after the first block)."""
    return Inception(num_classes, width)
