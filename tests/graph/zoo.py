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


class MidConv(nn.Module):
    """conv1 -> ``mid`` (a 3x3 conv of ``groups`` groups) -> conv2 (1x1), no BatchNorm.
    ``conv1``'s unit takes ``mid`` in: depthwise (8 groups) one channel at a time, grouped
    (2 groups) whole groups of 4."""

    def __init__(self, groups: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.mid = nn.Conv2d(8, 8, 3, padding=1, groups=groups)
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.mid(F.relu(self.conv1(x))))
        x = F.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


def _separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    """MobileNet's block: depthwise 3x3 -> BN -> ReLU, then pointwise 1x1 -> BN -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class MobileNetV1(nn.Module):
    """MobileNet (v1) in small: a stem conv, depthwise-separable blocks, pool, linear."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            _separable(8, 16, 1), _separable(16, 24, 2), _separable(24, 32, 2))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand 1x1 -> BN -> ReLU6 -> depthwise 3x3 (stride, bias) -> BN ->
    ReLU6 -> project 1x1 -> BN, plus the input where the shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4):
        super().__init__()
        hid = cin * expand
        self.expand = nn.Sequential(nn.Conv2d(cin, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(hid, hid, 3, stride, 1, groups=hid), nn.BatchNorm2d(hid),
                                nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.skip else y


class MobileNetV2(nn.Module):
    """MobileNetV2 in small: stem, inverted residual blocks (two with a shortcut), head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.blocks = nn.Sequential(InvertedResidual(8, 8, 1), InvertedResidual(8, 12, 2),
                                    InvertedResidual(12, 12, 1))
        self.head = nn.Sequential(nn.Conv2d(12, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6())
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.head(self.blocks(self.stem(x))).mean((2, 3)))


class SqueezeExcitation(nn.Module):
    """torchvision's squeeze-and-excitation: average pool, 1x1 down, ReLU, 1x1 up, hard
    sigmoid, times the input."""

    def __init__(self, c: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
        self.relu, self.scale = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x):
        return self.scale(self.fc2(self.relu(self.fc1(self.avgpool(x))))) * x


class V3Block(nn.Module):
    """MobileNetV3's block: [expand 1x1 -> BN -> Hardswish] -> depthwise 3x3 -> BN ->
    Hardswish -> squeeze-and-excitation -> project 1x1 -> BN, plus the input where the
    shapes match. Without expansion the depthwise conv reads the block's input."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hid = cin * expand
        self.expand = nn.Sequential(nn.Conv2d(cin, hid, 1, bias=False), nn.BatchNorm2d(hid),
                                    nn.Hardswish()) if expand > 1 else nn.Identity()
        self.dw = nn.Sequential(nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False),
                                nn.BatchNorm2d(hid), nn.Hardswish())
        self.se = SqueezeExcitation(hid, max(2, hid // 4))
        self.project = nn.Sequential(nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.skip else y


class MobileNetV3(nn.Module):
    """MobileNetV3 in small: a stem, squeeze-and-excitation blocks (the first without
    expansion, so its SE is on the stem's channels; one with a shortcut), head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.Hardswish())
        self.blocks = nn.Sequential(V3Block(8, 8, 2, 1), V3Block(8, 12, 1, 3), V3Block(12, 12, 1, 3))
        self.head = nn.Sequential(nn.Conv2d(12, 32, 1, bias=False), nn.BatchNorm2d(32), nn.Hardswish())
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.head(self.blocks(self.stem(x))).mean((2, 3)))


class EfficientNet(nn.Module):
    """EfficientNet's block written with functions: expand 1x1 -> BN -> SiLU -> depthwise ->
    BN -> SiLU -> x * sigmoid(1x1(silu(1x1(mean)))) -> project, twice."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8)
        self.exp, self.bn1 = nn.Conv2d(8, 24, 1, bias=False), nn.BatchNorm2d(24)
        self.dw, self.bn2 = nn.Conv2d(24, 24, 3, 2, 1, groups=24, bias=False), nn.BatchNorm2d(24)
        self.se1, self.se2 = nn.Conv2d(24, 6, 1), nn.Conv2d(6, 24, 1)
        self.proj, self.bn3 = nn.Conv2d(24, 16, 1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = F.silu(self.bn0(self.stem(x)))
        x = F.silu(self.bn2(self.dw(F.silu(self.bn1(self.exp(x))))))
        x = x * torch.sigmoid(self.se2(F.silu(self.se1(x.mean((2, 3), keepdim=True)))))
        return self.fc(self.bn3(self.proj(x)).mean((2, 3)))


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


def _cbr(cin: int, cout: int, k: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Inception(nn.Module):
    """Inception-style blocks: parallel branches joined by ``torch.cat`` on the channels.
    Every branch's last unit reaches its consumers through the cat at its own offset; the
    stem reaches one branch through an average pool; a cat feeds a layer that is not a
    unit (``side``: no activation, a slice of the second cat that no unit sets); the last
    cat is read through a global mean by ``head`` and through a pooled flatten by ``aux``."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = _cbr(3, 16, 3)
        self.b1 = _cbr(16, 8)
        self.b2 = nn.Sequential(_cbr(16, 8), _cbr(8, 12, 3))
        self.b3 = _cbr(16, 4)                   # after a 3x3 average pool of the stem
        self.mix = _cbr(24, 16, 3, stride=2)
        self.side = nn.Conv2d(24, 8, 1)         # no activation: not a unit
        self.head = nn.Linear(16 + 8, num_classes)
        self.aux = nn.Linear((16 + 8) * 4, num_classes)

    def forward(self, x):
        s = self.stem(x)
        a = torch.cat([self.b1(s), self.b2(s), self.b3(F.avg_pool2d(s, 3, 1, 1))], dim=1)
        h = torch.cat([self.mix(a), F.avg_pool2d(self.side(a), 2)], 1)
        return self.head(h.mean((2, 3))) + self.aux(torch.flatten(F.adaptive_avg_pool2d(h, 2), 1))


class Fire(nn.Module):
    """SqueezeNet's fire module: a 1x1 squeeze conv, then 1x1 and 3x3 expand convs side by
    side, joined by ``torch.cat``."""

    def __init__(self, cin: int, squeeze: int, e1: int, e3: int):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU(inplace=True))
        self.e1 = nn.Sequential(nn.Conv2d(squeeze, e1, 1), nn.ReLU(inplace=True))
        self.e3 = nn.Sequential(nn.Conv2d(squeeze, e3, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x):
        s = self.squeeze(x)
        return torch.cat([self.e1(s), self.e3(s)], 1)


class SqueezeNet(nn.Module):
    """SqueezeNet's layout at a small width: fire modules with max pools between them, one
    a module (``ceil_mode``, as torchvision's) and one a function, each pooling a cat; one
    fire feeds the next directly; the head is dropout, a 1x1 conv, ReLU and a global
    average pool (the conv's width is the model's output)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.f1, self.f2 = Fire(16, 4, 8, 8), Fire(16, 4, 8, 8)
        self.f3 = Fire(16, 8, 12, 12)
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(24, num_classes, 1),
                                  nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        h = self.pool(self.f2(self.f1(self.pool(self.stem(x)))))
        h = F.max_pool2d(self.f3(h), 2, ceil_mode=True)
        return torch.flatten(self.head(h), 1)


class InceptionV1(nn.Module):
    """GoogLeNet's block: 1x1; 1x1 -> 3x3; 1x1 -> 3x3; a 3x3 max pool -> 1x1; joined by
    ``torch.cat``. The block's input feeds three convs and the max pool."""

    def __init__(self, cin: int, c1: int, c3: tuple[int, int], c5: tuple[int, int], proj: int):
        super().__init__()
        self.b1 = _cbr(cin, c1)
        self.b2 = nn.Sequential(_cbr(cin, c3[0]), _cbr(c3[0], c3[1], 3))
        self.b3 = nn.Sequential(_cbr(cin, c5[0]), _cbr(c5[0], c5[1], 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), _cbr(cin, proj))
        self.out_channels = c1 + c3[1] + c5[1] + proj

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    """Two GoogLeNet blocks with a stage max pool between them: every unit whose output
    enters a block (the stem, each branch of the first block) also feeds that block's
    pooling branch through a max pool of its own (a tap, after the split)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = _cbr(3, 16, 3)
        self.i1 = InceptionV1(16, 8, (4, 8), (4, 6), 6)
        self.pool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.i2 = InceptionV1(self.i1.out_channels, 8, (6, 10), (4, 6), 8)
        self.fc = nn.Linear(self.i2.out_channels, num_classes)

    def forward(self, x):
        return self.fc(self.i2(self.pool(self.i1(self.stem(x)))).mean((2, 3)))


class NeXtBlock(nn.Module):
    """ResNeXt's bottleneck: 1x1 -> BN -> ReLU -> grouped 3x3 (stride) -> BN -> ReLU
    [-> squeeze-and-excitation, RegNetY's] -> 1x1 -> BN, plus the input (or its 1x1
    projection where the shapes change), then ReLU."""

    def __init__(self, cin: int, cout: int, width: int, group_width: int, stride: int = 1,
                 se: bool = False):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(width, width, 3, stride, 1, groups=width // group_width,
                                         bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.se = SqueezeExcitation(width, max(2, cin // 4)) if se else nn.Identity()
        self.c = nn.Sequential(nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.proj = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return F.relu(self.proj(x) + self.c(self.se(self.b(self.a(x)))))


class ResNeXt(nn.Module):
    """ResNeXt in small: a stem, three bottlenecks with grouped 3x3 convs (group widths 4
    and 8; one with a projection), pool, linear. ``se``: RegNetY's squeeze-and-excitation
    after each grouped conv."""

    def __init__(self, num_classes: int = 10, se: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(NeXtBlock(16, 16, 16, 4, se=se), NeXtBlock(16, 32, 32, 8, 2, se=se),
                                    NeXtBlock(32, 32, 32, 8, se=se))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def regnet_y(num_classes: int = 10) -> ResNeXt:
    """:class:`ResNeXt` with squeeze-and-excitation, as in RegNetY."""
    return ResNeXt(num_classes, se=True)


class SEBasicBlock(nn.Module):
    """SE-ResNet's basic block: conv -> BN -> ReLU -> conv -> BN -> squeeze-and-excitation,
    plus the input (or its 1x1 projection), then ReLU: the excitation sits on the
    residual stream's writer, before the add."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.se = SqueezeExcitation(cout, max(2, cout // 4))
        self.proj = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        y = self.se(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return F.relu(self.proj(x) + y)


class SEResNet(nn.Module):
    """SE-ResNet in small: a stem, three SE basic blocks (one with a projection), head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(SEBasicBlock(16, 16), SEBasicBlock(16, 32, 2), SEBasicBlock(32, 32))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class DenseLayer(nn.Module):
    """DenseNet-BC's layer: BN -> ReLU -> 1x1 conv -> BN -> ReLU -> 3x3 conv, concatenated
    to its input (pre-activation: the next layers read the concatenation through a BN)."""

    def __init__(self, cin: int, growth: int = 4):
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, 2 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(2 * growth)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))
        return torch.cat([x, y], 1)


class DenseNet(nn.Module):
    """DenseNet-BC in small: a stem, two dense blocks of two layers with a transition (BN ->
    ReLU -> 1x1 conv -> average pool) between them, BN -> ReLU -> global pool -> linear."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.block1 = nn.Sequential(DenseLayer(8), DenseLayer(12))
        self.trans = nn.Sequential(nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 1, bias=False),
                                   nn.AvgPool2d(2))
        self.block2 = nn.Sequential(DenseLayer(8), DenseLayer(12))
        self.norm = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        h = self.block2(self.trans(self.block1(self.stem(x))))
        return self.fc(F.relu(self.norm(h)).mean((2, 3)))


class NeXtMLP(nn.Module):
    """ConvNeXt's block: a 7x7 depthwise conv on the stream, then, channels last, a
    LayerNorm and an MLP of two token-wise linears (GELU between), scaled and added back."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1, self.act, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """ConvNeXt in small: a patchify stem, two stages of one block with a downsampling conv
    between, a global pool, LayerNorm and a linear head. Only the MLPs' hidden widths are
    units (the stream runs through LayerNorms)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.stage1 = NeXtMLP(8)
        self.down = nn.Conv2d(8, 16, 2, stride=2)
        self.stage2 = NeXtMLP(16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        h = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(self.norm(h.mean((2, 3))))


class C2f(nn.Module):
    """YOLOv8's C2f block: one conv's output chunked in two, the second part through
    bottlenecks (with a shortcut: its part is then a residual stream), every part
    concatenated into the last conv."""

    def __init__(self, cin: int, cout: int, n: int = 2, shortcut: bool = False):
        super().__init__()
        self.c, self.shortcut = cout // 2, shortcut
        self.cv1, self.cv2 = _cbr(cin, 2 * self.c), _cbr((2 + n) * self.c, cout)
        self.m = nn.ModuleList(nn.Sequential(_cbr(self.c, self.c, 3), _cbr(self.c, self.c, 3))
                               for _ in range(n))

    def forward(self, x):
        a, b = self.cv1(x).chunk(2, 1)
        y = [a, b]
        for m in self.m:
            y.append(y[-1] + m(y[-1]) if self.shortcut else m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class YoloCls(nn.Module):
    """A YOLOv8-cls-like classifier in small: a stride-2 stem, a C2f, a stride-2 conv, a
    C2f with shortcuts, a 1x1 conv, global pool, linear."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem, self.c2f1 = _cbr(3, 8, 3, 2), C2f(8, 16)
        self.down, self.c2f2 = _cbr(16, 16, 3, 2), C2f(16, 16, n=1, shortcut=True)
        self.head_conv, self.fc = _cbr(16, 24), nn.Linear(24, num_classes)

    def forward(self, x):
        h = self.c2f2(self.down(self.c2f1(self.stem(x))))
        return self.fc(self.head_conv(h).mean((2, 3)))


class CSPStage(nn.Module):
    """A CSPNet stage (timm's CrossStage): a 1x1 conv split unevenly by ``torch.split``,
    one part through blocks and a transition conv, the two concatenated into the last conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv_exp = _cbr(cin, cout)
        self.sizes = [cout // 4, cout - cout // 4]
        self.blocks = nn.Sequential(_cbr(self.sizes[1], self.sizes[1], 3))
        self.trans_b, self.trans = _cbr(self.sizes[1], self.sizes[1]), _cbr(cout, cout)

    def forward(self, x):
        xs, xb = torch.split(self.conv_exp(x), self.sizes, dim=1)
        return self.trans(torch.cat([xs, self.trans_b(self.blocks(xb))], dim=1))


class CSPNet(nn.Module):
    """Two CSP stages with a pool between, a global pool and a linear head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem, self.stage1 = _cbr(3, 8, 3), CSPStage(8, 16)
        self.stage2, self.fc = CSPStage(16, 32), nn.Linear(32, num_classes)

    def forward(self, x):
        h = self.stage2(F.max_pool2d(self.stage1(self.stem(x)), 2))
        return self.fc(h.mean((2, 3)))


ZOO = {"tv_vgg": TorchvisionStyleVGG, "two_consumers": TwoConsumers,
       "linear_units": LinearUnits, "depthwise": MidConv, "mobilenet_v1": MobileNetV1,
       "mobilenet_v2": MobileNetV2, "inception": Inception, "squeezenet": SqueezeNet,
       "googlenet": GoogLeNet, "mobilenet_v3": MobileNetV3, "efficientnet": EfficientNet,
       "resnext": ResNeXt, "regnet_y": regnet_y, "se_resnet": SEResNet,
       "densenet": DenseNet, "convnext": ConvNeXt, "yolo_cls": YoloCls, "csp": CSPNet}


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
