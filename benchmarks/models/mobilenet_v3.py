"""MobileNetV3-Small for 32x32 images (a user model for the benchmarks: ``--model
benchmarks/models/mobilenet_v3.py:mobilenet_v3``), to measure pruning through
squeeze-and-excitation blocks (BENCHMARKS.md section 48).

torchvision's MobileNetV3-Small layout: a 3x3 stem, eleven inverted residual blocks
(expand 1x1 -> BN -> act -> depthwise k x k -> BN -> act -> [squeeze-and-excitation] ->
project 1x1 -> BN, plus the input where the shapes match; the first block has no expand
conv), a 1x1 head conv, then linear -> Hardswish -> dropout -> linear. Activations are ReLU
in the first three blocks and Hardswish after; the excitation squeezes to a quarter
(rounded to 8) with ReLU and Hardsigmoid, as torchvision writes it. For 32x32 inputs the
stem and the first block keep stride 1, so the maps go 32 -> 16 -> 8 -> 4.
"""

from __future__ import annotations

import torch
import torch.nn as nn

# (kernel, expanded channels, output channels, excitation, Hardswish, stride)
BLOCKS = [(3, 16, 16, True, False, 1), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
          (5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
          (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1), (5, 288, 96, True, True, 2),
          (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1)]


def _divisible(v: float, d: int = 8) -> int:
    """torchvision's ``_make_divisible``: ``v`` rounded to a multiple of ``d``, never more
    than 10% below it."""
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


class SqueezeExcitation(nn.Module):
    def __init__(self, c: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
        self.activation, self.scale_activation = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x):
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x))))) * x


def _cba(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act=None) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + ([act()] if act is not None else [])


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, hs: bool, stride: int):
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        layers = _cba(cin, exp, 1, act=act) if exp != cin else []
        layers += _cba(exp, exp, k, stride, groups=exp, act=act)
        if se:
            layers.append(SqueezeExcitation(exp, _divisible(exp // 4)))
        layers += _cba(exp, cout, 1)
        self.block = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.skip else y


class MobileNetV3(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers, cin = [nn.Sequential(*_cba(3, 16, 3, act=nn.Hardswish))], 16
        for k, exp, cout, se, hs, stride in BLOCKS:
            layers.append(InvertedResidual(cin, k, exp, cout, se, hs, stride))
            cin = cout
        layers.append(nn.Sequential(*_cba(cin, 6 * cin, 1, act=nn.Hardswish)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * cin, 1024), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(1024, num_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v3(num_classes: int = 10) -> MobileNetV3:
    """The benchmark's network: MobileNetV3-Small, stride 1 in the stem and first block."""
    return MobileNetV3(num_classes)
