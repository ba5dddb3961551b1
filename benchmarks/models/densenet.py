"""DenseNet-BC for 32x32 images (a user model for the benchmarks: ``--model
benchmarks/models/densenet.py:densenet``), to measure pruning a densely connected network
(BENCHMARKS.md section 51).

The CIFAR DenseNet-BC layout of Huang et al. (2017) at depth 40, growth rate 12: a 3x3
stem of 24 channels, three dense blocks of six layers (BN -> ReLU -> 1x1 conv to 48 ->
BN -> ReLU -> 3x3 conv to 12, its output concatenated to its input), between them a
transition (BN -> ReLU -> 1x1 conv halving the channels -> 2x2 average pool), then BN ->
ReLU -> global average pool -> linear. Every layer reads its input through a BatchNorm
(pre-activation), so only each dense layer's 1x1 bottleneck conv is a unit.
"""

from __future__ import annotations

import torch
import torch.nn as nn

GROWTH, LAYERS, BOTTLENECK = 12, (6, 6, 6), 4


class DenseLayer(nn.Module):
    """BN -> ReLU -> 1x1 conv -> BN -> ReLU -> 3x3 conv, concatenated to the input."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, BOTTLENECK * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(BOTTLENECK * growth), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(BOTTLENECK * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))
        return torch.cat([x, y], 1)


def _transition(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2))


class DenseNet(nn.Module):
    """DenseNet-BC-40 (k = 12) with compression 0.5 for 32x32 images."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        channels = 2 * GROWTH
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1, bias=False)]
        for i, depth in enumerate(LAYERS):
            for _ in range(depth):
                layers.append(DenseLayer(channels, GROWTH))
                channels += GROWTH
            if i < len(LAYERS) - 1:
                layers.append(_transition(channels, channels // 2))
                channels //= 2
        layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def densenet(num_classes: int = 10) -> DenseNet:
    """DenseNet-BC-40 (k = 12) for 32x32 images."""
    return DenseNet(num_classes)
