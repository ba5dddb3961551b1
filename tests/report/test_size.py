"""Parameter counts, FLOPs (MACs) and measured latency."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from alphaprune.models import create_model
from alphaprune.models.vgg import VGG_CONFIGS, base_widths
from alphaprune.report import size
from alphaprune.report.size import count_flops, count_params, measure_latency

# ---------------------------------------------------------------------------------------- params


def test_count_params_single_layers():
    assert count_params(nn.Conv2d(3, 8, 3, bias=False)) == 8 * 3 * 9
    assert count_params(nn.Conv2d(3, 8, 3)) == 8 * 3 * 9 + 8
    assert count_params(nn.Linear(10, 5)) == 55
    assert count_params(nn.BatchNorm2d(6)) == 12  # affine terms only, not the running stats


def test_count_params_nonzero():
    lin = nn.Linear(10, 5)
    with torch.no_grad():
        lin.weight.fill_(0.5)
        lin.weight.view(-1)[:7] = 0.0
        lin.bias.zero_()
    assert count_params(lin) == 55
    assert count_params(lin, nonzero=True) == 50 - 7


def _vgg_hand(name: str, width: float, in_ch: int, hw: int, num_classes: int) -> tuple[int, int]:
    """(params, MACs) of a registry VGG from its config: 3x3 convs (no bias), BN, pools, linear."""
    params = macs = 0
    prev, h, w = in_ch, hw, hw
    widths = iter(base_widths(name, width))
    for v in VGG_CONFIGS[name]:
        if v == "M":
            h, w = math.ceil(h / 2), math.ceil(w / 2)  # MaxPool2d(2, ceil_mode=True)
            continue
        k = next(widths)
        params += 9 * k * prev + 2 * k
        macs += 9 * k * prev * h * w  # padding 1: output H x W = input H x W
        prev = k
    params += prev * num_classes + num_classes
    macs += prev * num_classes
    return params, macs


def test_count_params_vgg_matches_hand_count():
    model = create_model("vgg11", width=0.125, num_classes=10)
    assert count_params(model) == _vgg_hand("vgg11", 0.125, 3, 32, 10)[0]


# ---------------------------------------------------------------------------------------- flops


@pytest.mark.parametrize("layer, shape, macs", [
    (nn.Conv2d(3, 8, 3, padding=1), (3, 16, 16), 8 * 16 * 16 * 3 * 9),
    (nn.Conv2d(3, 8, 3, padding=1, bias=False), (3, 16, 16), 8 * 16 * 16 * 3 * 9),
    (nn.Conv2d(3, 4, 3, stride=2), (3, 16, 16), 4 * 7 * 7 * 3 * 9),          # (16 - 3) // 2 + 1 = 7
    (nn.Conv2d(8, 8, 3, padding=1, groups=4), (8, 6, 6), 8 * 6 * 6 * 2 * 9),  # 2 in-channels per group
    (nn.Conv2d(2, 5, (1, 3)), (2, 4, 9), 5 * 4 * 7 * 2 * 3),
    (nn.Linear(10, 5), (10,), 50),
])
def test_count_flops_single_layer(layer, shape, macs):
    assert count_flops(layer, shape) == macs


def test_count_flops_ignores_bn_relu_pool():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    assert count_flops(model, (3, 8, 8)) == 4 * 8 * 8 * 3 * 9 + 64 * 3


def test_count_flops_vgg11_hand_formula():
    model = create_model("vgg11", width=0.125, num_classes=10)
    expected = _vgg_hand("vgg11", 0.125, 3, 32, 10)[1]
    assert expected == 2_581_120  # sum(9 k_i k_{i-1} H_i W_i) + 64 * 10, worked by hand
    assert count_flops(model, (3, 32, 32)) == expected


def test_count_flops_vgg_odd_size_grey():
    # 28x28 grey images: the ceil-mode pools give 28, 14, 7, 4, 2, 1
    model = create_model("vgg13", width=0.0625, num_classes=7, in_channels=1)
    assert count_flops(model, (1, 28, 28)) == _vgg_hand("vgg13", 0.0625, 1, 28, 7)[1]


def test_count_flops_restores_mode_and_removes_hooks():
    model = create_model("vgg11", width=0.125)
    model.train()
    first = count_flops(model, (3, 32, 32))
    assert model.training and all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())
    assert count_flops(model, (3, 32, 32)) == first  # no hook left over counts twice
    model.eval()
    count_flops(model, (3, 32, 32))
    assert not model.training


# ---------------------------------------------------------------------------------------- latency


def test_measure_latency_positive_float():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    for channels_last in (True, False):
        t = measure_latency(model, (3, 8, 8), 4, repeats=3, warmup=1, channels_last=channels_last)
        assert isinstance(t, float) and 0 < t < 5


class _Counting(nn.Module):
    """Records the batch size of every forward pass, on the class: measure_latency may copy it."""

    batches: list[int] = []

    def forward(self, x):
        type(self).batches.append(x.shape[0])
        return x


def test_measure_latency_is_median_of_timed_repeats(monkeypatch):
    # perf_counter is read before and after each timed pass: durations 5, 1, 3 -> median 3
    ticks = iter([0.0, 5.0, 10.0, 11.0, 20.0, 23.0])
    monkeypatch.setattr(size, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    monkeypatch.setattr(_Counting, "batches", [])
    assert measure_latency(_Counting(), (3, 4, 4), 16, repeats=3, warmup=2) == 3.0
    assert _Counting.batches == [16] * 5  # 2 warm-up passes (not timed) + 3 timed


def test_measure_latency_leaves_the_callers_model_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
    model.train()
    measure_latency(model, (3, 8, 8), 2, repeats=1, warmup=0, channels_last=True)
    assert model.training and model[1].training
    assert model[0].weight.is_contiguous()  # not converted to channels-last in place
