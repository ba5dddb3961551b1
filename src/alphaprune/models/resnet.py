"""ResNets: the CIFAR family (He et al. 2016, section 4.2) and torchvision's ImageNet layout.

* ``resnet20/32/44/56/110``: a 3x3 stem of 16 channels, three stages of ``n`` basic blocks
  (16, 32, 64 channels, times ``width``; ``n = (depth - 2) / 6``), global average pool, one
  ``Linear``. Where a block changes the shape (stride 2 or more channels) its shortcut is
  a **projection**: 1x1 conv with stride + BatchNorm (the paper's option B), kept as
  ``downsample`` like torchvision's, so every tensor the addition sees has its own weights.
* ``resnet18/34/50``: torchvision's ``ResNet`` (7x7 stem, max-pool, four stages of basic or
  bottleneck blocks, stride in the bottleneck's 3x3 conv as in its v1.5), with the same
  module and ``state_dict`` names, so a torchvision checkpoint loads unchanged.

``widths`` sets the width of every prunable block conv, in ``named_modules()`` order: each
basic block's ``conv1``, each bottleneck's ``conv1`` and ``conv2``; ``stem_width`` narrows a
bottleneck ResNet's stem (its first block projects the stem, so nothing ties it). Each
block's last conv and the shortcuts write the residual stream, whose channels are tied by
the additions: a stage's stream is its ``planes`` in a basic ResNet and ``streams`` (by
default four times its ``planes``) in a bottleneck one, any positive width in both. A
pruned ResNet is this class with smaller ``widths`` (and ``planes``, ``streams``,
``stem_width`` where its streams were cut).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from alphaprune.errors import UserError
from alphaprune.models.registry import register_model

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "CIFAR_DEPTHS", "resnet_unit_count",
           "infer_resnet_kwargs"]

CIFAR_DEPTHS = (20, 32, 44, 56, 110)
IMAGENET_LAYERS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
                   "resnet50": ("bottleneck", (3, 4, 6, 3))}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _projection(cin: int, cout: int, stride: int, force: bool = False) -> nn.Sequential | None:
    if stride == 1 and cin == cout and not force:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))``; ``conv1`` is the prunable unit."""

    expansion = 1
    n_units = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, inner: Sequence[int] | None = None):
        super().__init__()
        mid = int(inner[0]) if inner else planes
        self.conv1 = _conv3x3(cin, mid, stride)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(mid, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _projection(cin, planes, stride)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place, as torchvision does: the original a user holds runs the same
        return self.relu(out)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck (stride in ``conv2``); ``conv1`` and ``conv2`` are units."""

    expansion = 4
    n_units = 2

    def __init__(self, cin: int, planes: int, stride: int = 1, inner: Sequence[int] | None = None,
                 project: bool = False, out: int | None = None):
        super().__init__()
        w1, w2 = (int(inner[0]), int(inner[1])) if inner else (planes, planes)
        out = int(out) if out is not None else planes * self.expansion
        self.conv1 = nn.Conv2d(cin, w1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.conv2 = _conv3x3(w1, w2, stride)
        self.bn2 = nn.BatchNorm2d(w2)
        self.conv3 = nn.Conv2d(w2, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(cin, out, stride, project)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """A residual network in torchvision's naming (``conv1``, ``bn1``, ``layerN``, ``fc``).

    Args:
        block: ``"basic"`` or ``"bottleneck"``.
        layers: blocks per stage.
        planes: base width of each stage.
        stem: ``"cifar"`` (3x3 conv, no max-pool) or ``"imagenet"`` (7x7 stride 2 + max-pool).
        widths: widths of the prunable block convs (module order); ``None`` keeps ``planes``.
        stem_width: width of the stem; only a bottleneck ResNet may narrow it (its first
            block projects the stem, so no addition ties its channels).
        streams: a bottleneck ResNet's stream width of each stage (what its blocks' ``conv3``
            and shortcuts write); ``None`` keeps ``4 * planes``. A basic ResNet's streams
            are its ``planes``.
    """

    def __init__(self, block: str, layers: Sequence[int], planes: Sequence[int], stem: str,
                 num_classes: int = 10, in_channels: int = 3, widths: Sequence[int] | None = None,
                 stem_width: int | None = None, streams: Sequence[int] | None = None):
        super().__init__()
        cls = BasicBlock if block == "basic" else Bottleneck
        if stem_width is not None and (block == "basic" or int(stem_width) < 1):
            raise UserError("stem_width applies to bottleneck ResNets only and must be positive")
        streams = _streams(block, planes, streams)
        stem_width = int(stem_width) if stem_width is not None else planes[0]
        if stem == "cifar":
            self.conv1 = _conv3x3(in_channels, stem_width)
        else:
            self.conv1 = nn.Conv2d(in_channels, stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else None
        inner = iter(_chunks(widths, cls.n_units, sum(layers))) if widths is not None else None
        cin = stem_width
        for s, (n, p) in enumerate(zip(layers, planes)):
            blocks = []
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                # a bottleneck stage always opens with a projection, as torchvision's does: a
                # pruned stream may come out as wide as the stem, and still has its weights
                extra = {"out": streams[s], "project": b == 0} if cls is Bottleneck else {}
                blocks.append(cls(cin, p, stride, next(inner) if inner else None, **extra))
                cin = streams[s]
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.n_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for s in range(self.n_stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _streams(block: str, planes: Sequence[int], streams: Sequence[int] | None) -> list[int]:
    """Each stage's stream width: ``streams`` as given (bottleneck only), else its default."""
    if streams is None:
        return [int(p) * (4 if block == "bottleneck" else 1) for p in planes]
    if block == "basic":
        raise UserError("streams applies to bottleneck ResNets only: a basic ResNet's streams "
                        "are its planes")
    streams = [int(w) for w in streams]
    if len(streams) != len(planes) or min(streams) < 1:
        raise UserError(f"streams needs {len(planes)} positive stage widths, got {streams}")
    return streams


def _chunks(widths: Sequence[int], per_block: int, n_blocks: int) -> list[list[int]]:
    widths = [int(w) for w in widths]
    if len(widths) != per_block * n_blocks or min(widths, default=1) < 1:
        raise UserError(f"this ResNet has {per_block * n_blocks} prunable convs: pass as many "
                        f"positive widths, got {len(widths)}")
    return [widths[i:i + per_block] for i in range(0, len(widths), per_block)]


def resnet_unit_count(name: str) -> int:
    """Number of prunable convs (entries of ``widths``) of a registry ResNet."""
    if name in IMAGENET_LAYERS:
        block, layers = IMAGENET_LAYERS[name]
        return sum(layers) * (1 if block == "basic" else 2)
    depth = int(name.removeprefix("resnet"))
    return 3 * (depth - 2) // 6


def _scaled(base: Sequence[int], width: float) -> list[int]:
    if not (width > 0 and math.isfinite(width)):
        raise UserError(f"width must be > 0, got {width}: pass e.g. --width 0.5")
    return [max(1, int(round(v * width))) for v in base]


def _check_io(num_classes: int, in_channels: int) -> None:
    if num_classes < 1 or in_channels < 1:
        raise UserError("num_classes and in_channels must be positive")


def _planes(base: Sequence[int], width: float, planes: Sequence[int] | None) -> list[int]:
    if planes is None:
        return _scaled(base, width)
    planes = [int(p) for p in planes]
    if len(planes) != len(base) or min(planes) < 1:
        raise UserError(f"planes needs {len(base)} positive stage widths, got {planes}")
    return planes


def _cifar(depth: int, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
           widths: Sequence[int] | None = None, planes: Sequence[int] | None = None) -> ResNet:
    _check_io(num_classes, in_channels)
    n = (depth - 2) // 6
    return ResNet("basic", (n, n, n), _planes((16, 32, 64), width, planes), "cifar", num_classes,
                  in_channels, widths)


def _imagenet(name: str, num_classes: int = 1000, in_channels: int = 3, width: float = 1.0,
              widths: Sequence[int] | None = None, stem_width: int | None = None,
              planes: Sequence[int] | None = None, streams: Sequence[int] | None = None) -> ResNet:
    _check_io(num_classes, in_channels)
    block, layers = IMAGENET_LAYERS[name]
    return ResNet(block, layers, _planes((64, 128, 256, 512), width, planes), "imagenet",
                  num_classes, in_channels, widths, stem_width, streams)


def infer_resnet_kwargs(state_dict: dict) -> dict:
    """Stage widths, unit widths, stem, classes and input channels from a state_dict (and a
    bottleneck ResNet's ``streams`` where one is not four times a whole ``planes``)."""
    if "conv1.weight" not in state_dict or "fc.weight" not in state_dict:
        raise UserError("the checkpoint holds no ResNet weights (conv1.weight, fc.weight): pass "
                        "a checkpoint of a registry ResNet (torchvision's names)")
    bottleneck = any(k.endswith(".conv3.weight") for k in state_dict)
    blocks = sorted({(int(k.split(".")[0].removeprefix("layer")), int(k.split(".")[1]))
                     for k in state_dict if k.startswith("layer") and k.endswith(".conv1.weight")})
    names = [f"layer{s}.{b}" for s, b in blocks]
    last = "conv3" if bottleneck else "conv2"
    stages = sorted({s for s, _ in blocks})
    outs = [int(state_dict[f"layer{s}.0.{last}.weight"].shape[0]) for s in stages]
    planes = [max(1, w // 4) for w in outs] if bottleneck else outs
    convs = ("conv1", "conv2") if bottleneck else ("conv1",)
    kwargs = {"planes": planes, "num_classes": int(state_dict["fc.weight"].shape[0]),
              "in_channels": int(state_dict["conv1.weight"].shape[1]),
              "widths": [int(state_dict[f"{n}.{c}.weight"].shape[0]) for n in names for c in convs]}
    stem = int(state_dict["conv1.weight"].shape[0])
    if bottleneck and stem != planes[0]:
        kwargs["stem_width"] = stem
    if bottleneck and outs != [4 * p for p in planes]:
        kwargs["streams"] = outs
    return kwargs


def _register_cifar(depth: int) -> None:
    def make(**kwargs) -> ResNet:
        return _cifar(depth, **kwargs)

    make.__signature__ = inspect.signature(functools.partial(_cifar, depth))
    make.__name__ = f"resnet{depth}"
    make.__doc__ = (f"CIFAR ResNet-{depth}: 3 stages of {(depth - 2) // 6} basic blocks "
                    f"(16/32/64 x width), projection shortcuts.")
    register_model(make, infer=infer_resnet_kwargs)


def _register_imagenet(name: str) -> None:
    def make(**kwargs) -> ResNet:
        return _imagenet(name, **kwargs)

    make.__signature__ = inspect.signature(functools.partial(_imagenet, name))
    make.__name__ = name
    block, layers = IMAGENET_LAYERS[name]
    make.__doc__ = f"torchvision-layout {name} ({block} blocks {layers}); 1000 classes by default."
    register_model(make, infer=infer_resnet_kwargs)


for _d in CIFAR_DEPTHS:
    _register_cifar(_d)
for _n in IMAGENET_LAYERS:
    _register_imagenet(_n)
