"""SqueezeNet 1.1 for 32x32 images (a user model for the benchmarks: ``--model
benchmarks/models/squeezenet.py:squeezenet``), to measure pruning through max-pooled
concatenations (BENCHMARKS.md section 46).

torchvision's SqueezeNet 1.1 layout (a 3x3 stem, eight fire modules with a 3x3 max pool,
``ceil_mode``, after the stem and after the second and fourth fire; a dropout, 1x1 conv,
ReLU and global average pool as the classifier), with a stride-1 stem for 32x32 inputs,
every width scaled by ``width``, and a BatchNorm after every conv but the classifier's, as
CIFAR ports of it do (without them it learned too slowly for the benchmark's 15 epochs
in a trial of 4). A fire module squeezes with a 1x1 conv and expands with a 1x1 and a 3x3
conv side by side, joined by a channel cat.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _cbr(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = _cbr(cin, squeeze)
        self.e1, self.e3 = _cbr(squeeze, expand), _cbr(squeeze, expand, 3)

    def forward(self, x):
        s = self.squeeze(x)
        return torch.cat([self.e1(s), self.e3(s)], 1)


class SqueezeNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: float = 0.5):
        super().__init__()

        def c(n: int) -> int:
            return max(1, round(n * width))

        pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        fires, cin = [], c(64)
        for i, (sq, ex) in enumerate([(16, 64), (16, 64), (32, 128), (32, 128), (48, 192),
                                      (48, 192), (64, 256), (64, 256)]):
            fires.append(Fire(cin, c(sq), c(ex)))
            cin = 2 * c(ex)
            if i in (1, 3):
                fires.append(pool)
        self.features = nn.Sequential(_cbr(3, c(64), 3), pool, *fires)
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(cin, num_classes, 1),
                                        nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1))
        nn.init.normal_(self.classifier[1].weight, 0.0, 0.01)  # torchvision's: the last ReLU
        nn.init.zeros_(self.classifier[1].bias)  # must not start dead

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


def squeezenet(num_classes: int = 10, width: float = 0.5) -> SqueezeNet:
    """The benchmark's network (``width`` 0.5: half of SqueezeNet 1.1's channels)."""
    return SqueezeNet(num_classes, width)
