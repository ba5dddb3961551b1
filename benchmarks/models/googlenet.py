"""GoogLeNet for 32x32 images (a user model for the benchmarks: ``--model
benchmarks/models/googlenet.py:googlenet``), to measure pruning units whose output also
feeds a max-pooled branch (BENCHMARKS.md section 46).

The CIFAR layout of kuangliu/pytorch-cifar (a 3x3 stem, inception blocks 3a-3b, a max
pool, 4a-4e, a max pool, 5a-5b, a global average pool and the classifier) with every
width scaled by ``width``. Each block has four branches joined by a channel cat: 1x1;
1x1 -> 3x3; 1x1 -> 3x3 -> 3x3; a 3x3 max pool -> 1x1. Each block's input therefore feeds
three convs and a max pool.
"""

from __future__ import annotations

import torch
import torch.nn as nn

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) of each block, at width 1
BLOCKS = {"3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
          "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
          "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
          "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
          "5b": (384, 192, 384, 48, 128, 128)}


def _cbr(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Block(nn.Module):
    def __init__(self, cin: int, c1: int, r3: int, c3: int, r5: int, c5: int, proj: int):
        super().__init__()
        self.b1 = _cbr(cin, c1)
        self.b2 = nn.Sequential(_cbr(cin, r3), _cbr(r3, c3, 3))
        self.b3 = nn.Sequential(_cbr(cin, r5), _cbr(r5, c5, 3), _cbr(c5, c5, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), _cbr(cin, proj))
        self.out_channels = c1 + c3 + c5 + proj

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: float = 0.125):
        super().__init__()

        def c(n: int) -> int:
            return max(1, round(n * width))

        layers, cin = [_cbr(3, c(192), 3)], c(192)
        for name, widths in BLOCKS.items():
            block = Block(cin, *(c(w) for w in widths))
            layers.append(block)
            cin = block.out_channels
            if name in ("3b", "4e"):
                layers.append(nn.MaxPool2d(3, 2, 1))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def googlenet(num_classes: int = 10, width: float = 0.125) -> GoogLeNet:
    """The benchmark's network (``width`` 1/8 of GoogLeNet's channels)."""
    return GoogLeNet(num_classes, width)
