"""VGG with BatchNorm, CIFAR variant (architecture as data, like timm).

Each conv is a :class:`ConvUnit` (conv -> BN -> ReLU [-> max-pool]); ``features`` is the
sequence of units and ``classifier`` one ``Linear``. A global average pool sits between
them so inputs larger than 32x32 also work (at 32x32 the map is already 1x1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from alphaprune.errors import UserError
from alphaprune.models.registry import register_model

__all__ = ["VGG", "ConvUnit", "VGG_CONFIGS", "vgg11", "vgg13", "vgg16", "vgg19", "base_widths",
           "infer_vgg_kwargs"]

# Numbers are conv output widths, "M" a 2x2 max-pool after the preceding conv.
VGG_CONFIGS: dict[str, list] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


class ConvUnit(nn.Module):
    """One prunable unit: ``conv -> BN -> ReLU [-> max-pool]``; the conv has no bias."""

    def __init__(self, in_ch: int, out_ch: int, pool: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU(inplace=True)
        # ceil_mode: images smaller than 32x32 (e.g. 28x28) still reach 1x1 instead of 0x0
        self.pool = nn.MaxPool2d(2, ceil_mode=True) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))


def base_widths(name: str, width: float = 1.0) -> list[int]:
    """Per-conv widths of a VGG config scaled by ``width`` (at least 1 channel each)."""
    return [max(1, int(round(v * width))) for v in VGG_CONFIGS[name] if v != "M"]


def _pool_flags(name: str) -> list[bool]:
    cfg = VGG_CONFIGS[name]
    return [cfg[i + 1] == "M" if i + 1 < len(cfg) else False
            for i, v in enumerate(cfg) if v != "M"]


class VGG(nn.Module):
    """VGG-BN for small images: ``features`` (conv units), global pool, ``classifier``."""

    def __init__(self, widths: Sequence[int], pools: Sequence[bool], num_classes: int = 10,
                 in_channels: int = 3):
        super().__init__()
        units, prev = [], in_channels
        for w, p in zip(widths, pools):
            units.append(ConvUnit(prev, w, p))
            prev = w
        self.features = nn.Sequential(*units)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(prev, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _make(name: str, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
          widths: Sequence[int] | None = None) -> VGG:
    n_units = len(base_widths(name))
    if widths is None:
        if not (width > 0 and math.isfinite(width)):
            raise UserError(f"width must be > 0, got {width}: pass e.g. --width 0.25")
        widths = base_widths(name, width)
    else:
        widths = [int(w) for w in widths]
        if len(widths) != n_units or min(widths) < 1:
            raise UserError(
                f"{name} needs {n_units} positive per-layer widths, got {list(widths)}"
            )
    if num_classes < 1 or in_channels < 1:
        raise UserError("num_classes and in_channels must be positive")
    return VGG(widths, _pool_flags(name), num_classes=num_classes, in_channels=in_channels)


def infer_vgg_kwargs(state_dict: dict) -> dict:
    """Widths, input channels and classes of a VGG from its state_dict's shapes."""
    convs = sorted((k for k in state_dict if k.startswith("features.") and k.endswith(".conv.weight")),
                   key=lambda k: int(k.split(".")[1]))
    if not convs or "classifier.weight" not in state_dict:
        raise UserError("the checkpoint holds no VGG weights (features.*.conv.weight, "
                        "classifier.weight): pass a checkpoint of a registry VGG")
    return {"widths": [int(state_dict[k].shape[0]) for k in convs],
            "in_channels": int(state_dict[convs[0]].shape[1]),
            "num_classes": int(state_dict["classifier.weight"].shape[0])}


def _conv_count(name: str):
    """``check_raw`` of ``name``: a raw checkpoint of another VGG depth."""
    n = len(base_widths(name))

    def check(kwargs: dict) -> str | None:
        got = len(kwargs["widths"])
        return None if got == n else (f"it holds a {got}-conv VGG, not '{name}' ({n} convs): "
                                      "pass the --model it was trained as")
    return check


@register_model(infer=infer_vgg_kwargs, check_raw=_conv_count("vgg11"))
def vgg11(**kwargs) -> VGG:
    """VGG-11-BN (8 conv units)."""
    return _make("vgg11", **kwargs)


@register_model(infer=infer_vgg_kwargs, check_raw=_conv_count("vgg13"))
def vgg13(**kwargs) -> VGG:
    """VGG-13-BN (10 conv units)."""
    return _make("vgg13", **kwargs)


@register_model(infer=infer_vgg_kwargs, check_raw=_conv_count("vgg16"))
def vgg16(**kwargs) -> VGG:
    """VGG-16-BN (13 conv units)."""
    return _make("vgg16", **kwargs)


@register_model(infer=infer_vgg_kwargs, check_raw=_conv_count("vgg19"))
def vgg19(**kwargs) -> VGG:
    """VGG-19-BN (16 conv units)."""
    return _make("vgg19", **kwargs)
