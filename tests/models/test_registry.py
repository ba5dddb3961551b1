"""The model registry and the VGG family."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from alphaprune.errors import UserError
from alphaprune.models import create_model, list_models
from alphaprune.models.vgg import VGG, ConvUnit, base_widths

N_UNITS = {"vgg11": 8, "vgg13": 10, "vgg16": 13, "vgg19": 16}


def _units(model: nn.Module) -> list[ConvUnit]:
    return [m for m in model.features if isinstance(m, ConvUnit)]


def test_list_models_is_sorted_and_holds_the_vgg_family():
    names = list_models()
    assert names == sorted(names)
    assert set(N_UNITS) <= set(names)


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_and_trains_one_step(name):
    torch.manual_seed(0)
    model = create_model(name, width=0.0625, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters())


@pytest.mark.parametrize("name, n_units", sorted(N_UNITS.items()))
def test_unit_count_and_five_pools(name, n_units):
    model = create_model(name, width=0.0625)
    assert len(_units(model)) == len(model.features) == n_units
    pools = [u for u in _units(model) if isinstance(u.pool, nn.MaxPool2d)]
    assert len(pools) == 5  # 32x32 -> 1x1
    assert isinstance(_units(model)[-1].pool, nn.MaxPool2d)


def test_vgg16_has_13_conv_units_and_one_linear_classifier():
    model = create_model("vgg16", width=0.0625)
    assert isinstance(model, VGG)
    assert len(model.features) == 13
    assert all(isinstance(u, ConvUnit) for u in model.features)
    assert isinstance(model.classifier, nn.Linear)
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 13


@pytest.mark.parametrize("name", sorted(N_UNITS))
def test_convs_have_no_bias_and_each_is_followed_by_batchnorm(name):
    model = create_model(name, width=0.0625)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs
    assert all(c.bias is None for c in convs)
    for u in _units(model):
        assert isinstance(u.bn, nn.BatchNorm2d)
        assert u.bn.num_features == u.conv.out_channels
        assert u.conv.kernel_size == (3, 3) and u.conv.padding == (1, 1)


@pytest.mark.parametrize("num_classes, in_channels", [(10, 3), (7, 1), (2, 4), (100, 3)])
def test_num_classes_and_in_channels(num_classes, in_channels):
    model = create_model("vgg11", width=0.0625, num_classes=num_classes, in_channels=in_channels)
    assert model.features[0].conv.in_channels == in_channels
    assert model.classifier.out_features == num_classes
    assert model(torch.randn(2, in_channels, 32, 32)).shape == (2, num_classes)


@pytest.mark.parametrize("width, expected", [
    (1.0, [64, 128, 256, 256, 512, 512, 512, 512]),
    (0.25, [16, 32, 64, 64, 128, 128, 128, 128]),
    (0.0625, [4, 8, 16, 16, 32, 32, 32, 32]),
    (0.001, [1, 1, 1, 1, 1, 1, 1, 1]),  # at least one channel each
])
def test_width_multiplier_scales_every_layer(width, expected):
    assert base_widths("vgg11", width) == expected
    model = create_model("vgg11", width=width)
    assert [u.conv.out_channels for u in model.features] == expected
    assert model.classifier.in_features == expected[-1]


@pytest.mark.parametrize("name", sorted(N_UNITS))
def test_explicit_widths_are_used_verbatim(name):
    widths = [3 + i for i in range(N_UNITS[name])]
    model = create_model(name, widths=widths, num_classes=5)
    assert [u.conv.out_channels for u in model.features] == widths
    assert [u.conv.in_channels for u in model.features] == [3] + widths[:-1]
    assert model.classifier.in_features == widths[-1]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_explicit_widths_override_width():
    widths = [2] * 8
    model = create_model("vgg11", width=0.5, widths=widths)
    assert [u.conv.out_channels for u in model.features] == widths


def test_larger_inputs_work_through_the_global_pool():
    model = create_model("vgg11", width=0.0625).eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_unknown_name_raises_user_error_naming_the_choices():
    with pytest.raises(UserError, match="unknown model 'resnet9000'") as e:
        create_model("resnet9000")
    assert "vgg16" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name, widths", [
    ("vgg11", [4] * 7),
    ("vgg11", [4] * 9),
    ("vgg16", [4] * 8),
    ("vgg19", []),
    ("vgg11", [4] * 7 + [0]),
    ("vgg13", [4] * 9 + [-1]),
])
def test_wrong_widths_raise_user_error(name, widths):
    with pytest.raises(UserError, match=f"{name} needs {N_UNITS[name]} positive"):
        create_model(name, widths=widths)


@pytest.mark.parametrize("kwargs", [
    {"width": 0.0}, {"width": -0.5},
    {"width": 0.0625, "num_classes": 0}, {"width": 0.0625, "in_channels": 0},
])
def test_bad_sizes_raise_user_error(kwargs):
    with pytest.raises(UserError):
        create_model("vgg11", **kwargs)
