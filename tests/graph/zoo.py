"""Test-only models: layouts the registry does not have, each exercising one fold rule."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class TorchvisionStyleVGG(nn.Module):
    """torchvision's VGG layout in small: conv features (the first conv with bias and no
    BN), a 7x7 adaptive pool, flatten, and a three-layer classifier with dropout."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(16 * 7 * 7, 32), nn.ReLU(True), nn.Dropout(),
            nn.Linear(32, 24), nn.ReLU(True), nn.Dropout(),
            nn.Linear(24, num_classes))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class TwoConsumers(nn.Module):
    """A unit feeding a strided, padded, dilated conv and a 1x1 conv, whose outputs add."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(12)
        self.wide = nn.Conv2d(12, 10, 3, stride=2, padding=2, dilation=2, bias=True)
        self.point = nn.Conv2d(12, 10, 1, stride=2)
        self.head = nn.Linear(10, num_classes)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        y = self.wide(h) + self.point(h)
        return self.head(F.adaptive_avg_pool2d(y, 1).flatten(1))


class LinearUnits(nn.Module):
    """Conv features, global pool, then Linear units with and without BatchNorm1d."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
        self.act = nn.SiLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(8, 20, bias=False)
        self.bn1 = nn.BatchNorm1d(20)
        self.fc2 = nn.Linear(20, 16)
        self.out = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.pool(self.act(self.conv(x)))
        x = x.view(x.size(0), -1)
        x = F.relu(self.bn1(self.fc1(x)))
        x = torch.tanh(self.fc2(x))
        return self.out(x)


class Depthwise(nn.Module):
    """A depthwise conv between two convs: it is not a unit and cannot absorb B."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.dw(F.relu(self.conv1(x))))
        x = F.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: not traceable
            return x
        return -x


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.gate = Gate()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.gate(self.conv(x)).mean((2, 3)))


ZOO = {"tv_vgg": TorchvisionStyleVGG, "two_consumers": TwoConsumers,
       "linear_units": LinearUnits, "depthwise": Depthwise}


class PreActivation(nn.Module):
    """A pre-activation block: BatchNorm reads the stream (a dropped channel would leave it
    non-zero), so the stream cannot be cut."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        h = self.stem(x)
        h = h + self.conv(F.relu(self.bn(h)))
        return self.head(h.mean((2, 3)))


class SigmoidStream(nn.Module):
    """A sum followed by a sigmoid: sigmoid(0) = 0.5, so a dropped channel is not zero."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(torch.sigmoid(self.a(x) + self.b(x)).mean((2, 3)))
