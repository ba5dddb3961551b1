"""MobileNetV2 (Sandler et al. 2018) in torchvision's layout and ``state_dict`` names.

* ``mobilenet_v2``: torchvision's ImageNet network (a stride-2 stem, 1000 classes by
  default), so a torchvision checkpoint loads unchanged.
* ``mobilenet_v2_cifar``: the common CIFAR layout of the same modules: the stem and the
  second stage keep stride 1, so a 32x32 image ends at 4x4 instead of 1x1.

``features`` is a stem (conv -> BN -> ReLU6), 17 inverted residual blocks and a last 1x1
conv (-> BN -> ReLU6); a block expands (1x1 conv, except the first block), filters each
channel alone (a depthwise 3x3 conv) and projects back (1x1 conv -> BN, no activation).
A block adds its input where it is not the first of its stage; which blocks add is part
of the layout, not of the widths, so a pruned network keeps its additions whatever its
widths come to. torchvision adds wherever a block has stride 1 and as many channels in as
out, which is the same at ``width >= 0.3``; below it (the stem and the first stage both 8
wide) its ``features.1`` adds too and this one does not, so a raw checkpoint of such a
width is refused (:func:`torchvision_would_add`; a model file, which names its own class,
loads).

``widths`` sets the width of every conv followed by an activation, in ``named_modules()``
order: the stem, each block's expansion, the last conv. A depthwise conv has the width of
the conv it reads (the stem or its block's expansion). ``streams`` sets each stage's output
width (what its projections write; the additions tie a stage's blocks together). A pruned
MobileNetV2 is this class with smaller ``widths`` and ``streams``.
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

__all__ = ["MobileNetV2", "InvertedResidual", "STAGES", "infer_mobilenet_kwargs",
           "torchvision_would_add"]

# (expansion, output channels, blocks, stride of the first block), torchvision's table
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1))
N_BLOCKS = sum(n for _, _, n, _ in STAGES)
N_UNITS = 2 + sum(n for t, _, n, _ in STAGES if t != 1)  # the stem, the expansions, the last


def _divisible(v: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: the nearest multiple of 8, never 10% below ``v``."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn_act(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups,
                                   bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """``[expand ->] depthwise -> project`` (+ the input where ``add``), torchvision's names."""

    def __init__(self, cin: int, hidden: int | None, cout: int, stride: int, add: bool):
        super().__init__()
        layers = [] if hidden is None else [_conv_bn_act(cin, hidden, 1)]
        hidden = cin if hidden is None else hidden
        layers += [_conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = add  # torchvision's name; only a stage's later blocks add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 with explicit widths.

    Args:
        widths: the stem, each expanding block's expansion and the last conv
            (``N_UNITS`` numbers); the depthwise convs follow the conv they read.
        streams: each stage's output width (7 numbers).
        strides: the stem's stride and each stage's first stride (8 numbers).
    """

    def __init__(self, widths: Sequence[int], streams: Sequence[int], strides: Sequence[int],
                 num_classes: int = 10, in_channels: int = 3, dropout: float = 0.2):
        super().__init__()
        if (len(widths), len(streams), len(strides)) != (N_UNITS, len(STAGES), len(STAGES) + 1):
            raise UserError(f"MobileNetV2 takes {N_UNITS} widths, {len(STAGES)} streams and "
                            f"{len(STAGES) + 1} strides, got {len(widths)}, {len(streams)} and "
                            f"{len(strides)}")
        units = iter(widths)
        cin = next(units)
        layers = [_conv_bn_act(in_channels, cin, 3, strides[0])]
        for (t, _, n, _), cout, stride in zip(STAGES, streams, strides[1:]):
            for b in range(n):
                hidden = None if t == 1 else next(units)
                layers.append(InvertedResidual(cin, hidden, cout, stride if b == 0 else 1, b > 0))
                cin = cout
        last = next(units)
        layers.append(_conv_bn_act(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        self._init()

    def _init(self) -> None:
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def base_widths(width: float = 1.0) -> tuple[list[int], list[int]]:
    """The unit widths and stream widths of MobileNetV2 scaled by ``width``, as torchvision
    scales them (multiples of 8; the last conv never narrower than 1280)."""
    if not (width > 0 and math.isfinite(width)):
        raise UserError(f"width must be > 0, got {width}: pass e.g. --width 0.5")
    cin = _divisible(32 * width)
    units, streams = [cin], []
    for t, c, n, _ in STAGES:
        cout = _divisible(c * width)
        units += [] if t == 1 else [int(round(cin * t))] + [int(round(cout * t))] * (n - 1)
        streams.append(cout)
        cin = cout
    return units + [_divisible(1280 * max(1.0, width))], streams


def _checked(name: str, values: Sequence[int] | None, n: int, default: list[int]) -> list[int]:
    if values is None:
        return default
    values = [int(v) for v in values]
    if len(values) != n or min(values, default=1) < 1:
        raise UserError(f"MobileNetV2 takes {n} positive {name}, got {values}")
    return values


def _make(stem_stride: int, stage2_stride: int, num_classes: int = 10, in_channels: int = 3,
          width: float = 1.0, widths: Sequence[int] | None = None,
          streams: Sequence[int] | None = None) -> MobileNetV2:
    if num_classes < 1 or in_channels < 1:
        raise UserError("num_classes and in_channels must be positive")
    units, stage_widths = base_widths(width)
    strides = [stem_stride] + [stage2_stride if i == 1 else s for i, (*_, s) in enumerate(STAGES)]
    return MobileNetV2(_checked("widths", widths, N_UNITS, units),
                       _checked("streams", streams, len(STAGES), stage_widths), strides,
                       num_classes, in_channels)


def infer_mobilenet_kwargs(state_dict: dict) -> dict:
    """Unit widths, stream widths, classes and input channels from a state_dict."""
    stem, head = "features.0.0.weight", "classifier.1.weight"
    last = f"features.{N_BLOCKS + 1}.0.weight"
    if stem not in state_dict or head not in state_dict or last not in state_dict:
        raise UserError(f"the checkpoint holds no MobileNetV2 weights ({stem}, {last}, {head}): "
                        f"pass a checkpoint of a registry MobileNetV2 (torchvision's names)")
    try:
        return _infer(state_dict, stem, head, last)
    except KeyError as e:
        raise UserError(f"the checkpoint lacks {e.args[0]}: pass a whole MobileNetV2 state_dict "
                        "(torchvision's names)") from None


def _infer(state_dict: dict, stem: str, head: str, last: str) -> dict:
    widths, streams, i = [int(state_dict[stem].shape[0])], [], 1
    for t, _, n, _ in STAGES:
        for _ in range(n):
            if t != 1:
                widths.append(int(state_dict[f"features.{i}.conv.0.0.weight"].shape[0]))
            i += 1
        proj = f"features.{i - 1}.conv.{1 if t == 1 else 2}.weight"
        streams.append(int(state_dict[proj].shape[0]))
    widths.append(int(state_dict[last].shape[0]))
    return {"widths": widths, "streams": streams, "num_classes": int(state_dict[head].shape[0]),
            "in_channels": int(state_dict[stem].shape[1])}


def torchvision_would_add(kwargs: dict) -> str | None:
    """The first block (``features.N``) of torchvision's ImageNet layout that torchvision
    would make add its input at these widths (stride 1, as many channels in as out) and this
    class does not, or None: a raw torchvision checkpoint with such a block would load here
    but not compute what it was trained to."""
    cin, i = kwargs["widths"][0], 1
    for (_, _, n, stride), cout in zip(STAGES, kwargs["streams"]):
        if stride == 1 and cin == cout:
            return f"features.{i}"
        cin, i = cout, i + n
    return None


def _raw_torchvision_problem(kwargs: dict) -> str | None:
    """``check_raw`` of ``mobilenet_v2``: a torchvision checkpoint it would compute otherwise."""
    block = torchvision_would_add(kwargs)
    if block is None:
        return None
    return (f"its {block} has as many channels in as out at stride 1, where torchvision's "
            "MobileNetV2 adds its input and this registry's does not: only torchvision "
            "checkpoints of width 0.3 and up load (an alphaprune model file loads as it is)")


def _register(name: str, stem_stride: int, stage2_stride: int, classes: int, doc: str,
              check_raw=None) -> None:
    def make(**kwargs) -> MobileNetV2:
        return _make(stem_stride, stage2_stride, **{"num_classes": classes, **kwargs})

    sig = inspect.signature(functools.partial(_make, stem_stride, stage2_stride))
    make.__signature__ = sig.replace(parameters=[
        p.replace(default=classes) if p.name == "num_classes" else p
        for p in sig.parameters.values()])
    make.__name__ = name
    make.__doc__ = doc
    register_model(make, infer=infer_mobilenet_kwargs, check_raw=check_raw)


_register("mobilenet_v2", 2, 2, 1000,
          "torchvision's MobileNetV2 (ImageNet strides); 1000 classes by default.",
          check_raw=_raw_torchvision_problem)
_register("mobilenet_v2_cifar", 1, 1, 10,
          "MobileNetV2 for 32x32 images: stride 1 in the stem and the second stage.")
