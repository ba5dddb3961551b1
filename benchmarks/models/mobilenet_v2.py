"""MobileNetV2 for 32x32 images (a user model for the benchmarks: ``--model
benchmarks/models/mobilenet_v2.py:mobilenet_v2``), in the common CIFAR layout: the stem and
the first two stages keep stride 1, so the maps go 32 -> 16 -> 8 -> 4 over the later stages.

Each inverted residual block: expand 1x1 -> BN -> ReLU6 -> depthwise 3x3 -> BN -> ReLU6 ->
project 1x1 -> BN, plus its input where the shapes match.
"""

from __future__ import annotations

import torch
import torch.nn as nn

# (expansion, output channels, blocks, stride of the first block)
STAGES = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1)]


def _ch(c: float) -> int:
    return max(8, int(round(c / 8)) * 8)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hid = cin * expand
        layers = [] if expand == 1 else [nn.Conv2d(cin, hid, 1, bias=False), nn.BatchNorm2d(hid),
                                         nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False), nn.BatchNorm2d(hid),
                   nn.ReLU6(inplace=True), nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.skip else y


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10, width: float = 1.0):
        super().__init__()
        cin = _ch(32 * width)
        layers = [nn.Conv2d(3, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True)]
        for t, c, n, s in STAGES:
            cout = _ch(c * width)
            for i in range(n):
                layers.append(Block(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = _ch(1280 * width) if width > 1.0 else 1280
        layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def mobilenet_v2(num_classes: int = 10, width: float = 1.0) -> MobileNetV2:
    """MobileNetV2, CIFAR layout, channels scaled by ``width`` (multiples of 8)."""
    return MobileNetV2(num_classes, width)
