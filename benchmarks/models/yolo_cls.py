"""A YOLOv8-cls classifier for 32x32 images (a user model for the benchmarks: ``--model
benchmarks/models/yolo_cls.py:yolo_cls``), to measure pruning a network whose C2f blocks
chunk one conv's output in two (BENCHMARKS.md section 56).

Ultralytics' YOLOv8n-cls layout at its widths (16 to 256 channels) and depths (1, 2, 2,
1 bottlenecks), scaled to CIFAR: the stem keeps stride 1 (32x32 images), so the five
stride-2 convs of the original become four, to 4x4 before the head. Every conv is
conv -> BatchNorm -> SiLU (Ultralytics' ``Conv``). A C2f block runs ``cv1``, chunks its
output in two, runs the second part through bottlenecks (each two 3x3 convs added to its
input), concatenates both parts and every bottleneck's output, and ``cv2`` reads that. The
head is Ultralytics' ``Classify``: a 1x1 conv to 1280 channels (here 512), a global
average pool and a linear layer. The chunk is written ``a, b = ...chunk(2, 1)``:
Ultralytics' own ``list(...chunk(2, 1))`` cannot be traced by torch.fx.
"""

from __future__ import annotations

import torch
import torch.nn as nn

WIDTHS, DEPTHS, HEAD = (16, 32, 64, 128, 256), (1, 2, 2, 1), 512


class Conv(nn.Module):
    """conv -> BatchNorm -> SiLU, Ultralytics' ``Conv``."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn, self.act = nn.BatchNorm2d(cout), nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """Two 3x3 convs added to the input."""

    def __init__(self, c: int):
        super().__init__()
        self.cv1, self.cv2 = Conv(c, c, 3), Conv(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x))


class C2f(nn.Module):
    """cv1, chunked in two; the second part through ``n`` bottlenecks; every part and
    bottleneck output concatenated into cv2."""

    def __init__(self, cin: int, cout: int, n: int):
        super().__init__()
        self.c = cout // 2
        self.cv1, self.cv2 = Conv(cin, 2 * self.c), Conv((2 + n) * self.c, cout)
        self.m = nn.ModuleList(Bottleneck(self.c) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).chunk(2, 1)
        y = [a, b]
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class YoloCls(nn.Module):
    """The backbone (module docstring) and Ultralytics' ``Classify`` head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers = [Conv(3, WIDTHS[0], 3)]
        for cin, cout, n in zip(WIDTHS, WIDTHS[1:], DEPTHS):
            layers += [Conv(cin, cout, 3, 2), C2f(cout, cout, n)]
        self.features = nn.Sequential(*layers)
        self.head_conv = Conv(WIDTHS[-1], HEAD)
        self.pool, self.drop = nn.AdaptiveAvgPool2d(1), nn.Dropout(0.0)
        self.linear = nn.Linear(HEAD, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(self.pool(self.head_conv(self.features(x))).flatten(1)))


def yolo_cls(num_classes: int = 10) -> YoloCls:
    """A YOLOv8n-cls-like classifier for 32x32 images (module docstring)."""
    return YoloCls(num_classes)
