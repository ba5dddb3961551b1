"""The exact parameter count of a VGG and the parameter-target width solver."""

from __future__ import annotations

import math

import pytest

from alphaprune.blend import solve_widths
from alphaprune.blend.widths import refine, vgg_counter, vgg_param_count
from alphaprune.errors import UserError
from alphaprune.models import create_model, list_models
from alphaprune.models.vgg import base_widths
from alphaprune.report.size import count_params

VGGS = [n for n in list_models() if n.startswith("vgg")]

TARGETS = [0.1, 0.35, 0.5, 0.65, 0.9, 0.95]


@pytest.mark.parametrize("name", VGGS)
@pytest.mark.parametrize("width, in_ch, classes", [
    (1.0, 3, 10), (0.25, 3, 100), (0.0625, 1, 10), (0.1, 3, 7), (0.01, 2, 1),
])
def test_param_count_matches_the_built_model(name, width, in_ch, classes):
    model = create_model(name, width=width, in_channels=in_ch, num_classes=classes)
    widths = [u.conv.out_channels for u in model.features]
    assert widths == base_widths(name, width)
    assert vgg_param_count(widths, in_ch, classes) == count_params(model)


@pytest.mark.parametrize("name, widths", [
    ("vgg11", [3, 5, 7, 9, 11, 13, 15, 17]),
    ("vgg11", [1] * 8),
    ("vgg13", [7, 1, 2, 9, 33, 5, 8, 13, 21, 34]),
    ("vgg16", list(range(1, 14))),
    ("vgg19", list(range(20, 4, -1))),
])
def test_param_count_matches_explicit_widths(name, widths):
    model = create_model(name, widths=widths, in_channels=3, num_classes=10)
    assert vgg_param_count(widths, 3, 10) == count_params(model)


@pytest.mark.parametrize("name", VGGS)
@pytest.mark.parametrize("width", [1.0, 0.25])
@pytest.mark.parametrize("prune", TARGETS)
def test_solver_hits_the_parameter_target(name, width, prune):
    base = base_widths(name, width)
    widths = solve_widths(base, vgg_counter(3, 10), prune)
    assert len(widths) == len(base)
    assert all(isinstance(k, int) for k in widths)
    assert all(1 <= k <= b for k, b in zip(widths, base)), (widths, base)
    before = vgg_param_count(base, 3, 10)
    after = vgg_param_count(widths, 3, 10)
    achieved = 1.0 - after / before
    assert abs(achieved - prune) <= 0.005, (achieved, prune, widths)


@pytest.mark.parametrize("name, width, in_ch, classes, prune", [
    ("vgg11", 0.0625, 1, 10, 0.5),    # the tiny digits model of the end-to-end tests
    ("vgg11", 0.0625, 1, 10, 0.65),
    ("vgg16", 0.125, 3, 100, 0.8),
])
def test_solved_widths_build_a_model_of_the_target_size(name, width, in_ch, classes, prune):
    base = base_widths(name, width)
    widths = solve_widths(base, vgg_counter(in_ch, classes), prune)
    before = count_params(create_model(name, width=width, in_channels=in_ch, num_classes=classes))
    after = count_params(create_model(name, widths=widths, in_channels=in_ch, num_classes=classes))
    assert abs((1 - after / before) - prune) <= 0.005


@pytest.mark.parametrize("name", ["vgg11", "vgg16"])
@pytest.mark.parametrize("prune", [0.5, 0.75, 0.9])
def test_solver_keeps_a_roughly_uniform_ratio(name, prune):
    """Widths come from one uniform keep ratio r (then one-channel adjustments); the
    parameter count is about quadratic in the widths, so r is about sqrt(1 - prune)."""
    base = base_widths(name, 1.0)
    ratios = [k / b for k, b in zip(solve_widths(base, vgg_counter(3, 10), prune), base)]
    assert all(abs(r - math.sqrt(1 - prune)) <= 0.05 for r in ratios), ratios


def test_solver_is_deterministic():
    base = base_widths("vgg16", 0.25)
    assert solve_widths(base, vgg_counter(3, 10), 0.65) == solve_widths(base, vgg_counter(3, 10), 0.65)


@pytest.mark.parametrize("prune", [0, 0.0, 1, 1.0, -0.1, 1.5, math.nan, math.inf])
def test_solver_rejects_targets_outside_0_1(prune):
    with pytest.raises(UserError, match="--prune"):
        solve_widths(base_widths("vgg11", 0.25), vgg_counter(3, 10), prune)


@pytest.mark.parametrize("name", VGGS)
@pytest.mark.parametrize("width", [1.0, 0.25])
@pytest.mark.parametrize("prune", [0.35, 0.65, 0.9])
def test_round_to_8_keeps_multiples_of_8_and_the_target(name, width, prune):
    base = base_widths(name, width)
    ws = solve_widths(base, vgg_counter(3, 10), prune, round_to=8)
    for w, b in zip(ws, base):
        assert 1 <= w <= b
        if b > 8:
            assert w % 8 == 0
    achieved = 1 - vgg_param_count(ws, 3, 10) / vgg_param_count(base, 3, 10)
    assert abs(achieved - prune) <= 0.005


def test_round_to_below_1_is_a_user_error():
    with pytest.raises(UserError):
        solve_widths(base_widths("vgg11", 0.25), vgg_counter(3, 10), 0.5, round_to=0)


@pytest.mark.parametrize("name", VGGS)
@pytest.mark.parametrize("prune", [0.35, 0.65, 0.9])
@pytest.mark.parametrize("balance", [0.5, 1.0])
@pytest.mark.parametrize("round_to", [1, 8])
def test_balance_hits_the_target_and_spares_the_narrow_layers(name, prune, balance, round_to):
    base = base_widths(name, 0.25)
    uniform = solve_widths(base, vgg_counter(3, 10), prune, round_to)
    ws = solve_widths(base, vgg_counter(3, 10), prune, round_to, balance=balance)
    achieved = 1 - vgg_param_count(ws, 3, 10) / vgg_param_count(base, 3, 10)
    assert abs(achieved - prune) <= 0.005, (ws, achieved)
    assert all(1 <= w <= b for w, b in zip(ws, base))
    # the narrowest layers keep at least as large a share as under the uniform ratio, the
    # widest ones at most as large, and the balanced shares fall with the base width
    ratio = [w / b for w, b in zip(ws, base)]
    narrow = [i for i, b in enumerate(base) if b == min(base)]
    wide = [i for i, b in enumerate(base) if b == max(base)]
    assert all(ratio[i] >= uniform[i] / base[i] for i in narrow)
    assert all(ratio[i] <= uniform[i] / base[i] for i in wide)
    assert min(ratio[i] for i in narrow) > max(ratio[i] for i in wide) - 0.1


def test_balance_zero_is_the_uniform_solver():
    base = base_widths("vgg16", 0.25)
    count = vgg_counter(3, 10)
    assert solve_widths(base, count, 0.65, 8, balance=0.0) == solve_widths(base, count, 0.65, 8)


@pytest.mark.parametrize("balance", [-0.1, 1.5, math.nan])
def test_balance_outside_0_1_is_a_user_error(balance):
    with pytest.raises(UserError, match="--balance must be between 0 and 1"):
        solve_widths(base_widths("vgg11", 0.25), vgg_counter(3, 10), 0.5, balance=balance)


def test_balance_falls_back_to_uniform_when_it_cannot_fit_the_target():
    base = [4, 8, 16, 16, 32, 32, 32, 32]  # vgg11 at width 1/16: steps of 16 are coarse here
    ws = solve_widths(base, vgg_counter(1, 10), 0.5, 16, balance=1.0)
    assert ws == solve_widths(base, vgg_counter(1, 10), 0.5, 16)
    assert abs(1 - vgg_param_count(ws, 1, 10) / vgg_param_count(base, 1, 10) - 0.5) <= 0.005


def test_where_no_single_step_comes_closer_a_trade_between_two_layers_does():
    """Steps of 8 on both layers: each alone moves the count 72 or 80 from a target 8 away;
    one wider and the other narrower lands on it."""
    assert refine([16, 16], [0, 1], [24, 24], 8, 312, lambda w: 10 * w[0] + 9 * w[1]) == [24, 8]


def test_balance_keeps_the_narrow_first_layer_where_steps_of_8_are_coarse():
    """vgg11 at width 1/8: the cut layers alone reach 50% within 0.4 points by trading 8
    channels between them, so the narrow first conv is not cut (single steps alone left
    the target 0.65 points away and then cut it from 8 to 2)."""
    base = [8, 16, 32, 32, 64, 64, 64, 64]
    ws = solve_widths(base, vgg_counter(1, 10), 0.5, 8, balance=1.0)
    assert ws[:4] == base[:4]
    assert abs(1 - vgg_param_count(ws, 1, 10) / vgg_param_count(base, 1, 10) - 0.5) <= 0.004


# --------------------------------------------------------------------------- the FLOPs target


def _traced(name: str):
    """A registry model of each family at a width where round_to 8 can reach the targets."""
    import torch

    from alphaprune.graph import CostModel, find_units

    width = {"resnet18": 0.25, "resnet34": 0.25, "resnet50": 0.125}.get(
        name, 0.5 if name.startswith("resnet") else 0.125)
    torch.manual_seed(0)
    model = create_model(name, width=width, num_classes=10).eval()
    structure = find_units(model, torch.zeros(2, 3, 32, 32))
    return model, structure, CostModel(structure)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("balance", [0.0, 1.0])
def test_the_flops_target_is_met_within_one_point_on_every_registry_model(name, balance):
    _, _, cost = _traced(name)
    # CIFAR ResNets keep their residual stream whole: 75% of the FLOPs is out of reach there
    targets = ([0.5, 0.75] if name.startswith("vgg") or name == "resnet50"
               else [0.5] if name in ("resnet18", "resnet34") else [0.5, 0.6])
    for target in targets:
        widths = solve_widths(cost.base_widths, cost.flops, target, 8, balance, option="--flops")
        assert abs(1 - cost.flops(widths) / cost.base_flops - target) <= 0.01, (target, widths)
        assert all(w % 8 == 0 or b <= 8 for w, b in zip(widths, cost.base_widths))


@pytest.mark.parametrize("name", ["vgg11", "resnet20", "resnet18", "resnet50"])
def test_the_fused_model_has_the_flops_the_solver_counted(name):
    from alphaprune.blend import BlendedNet, fuse
    from alphaprune.report.size import count_flops

    model, structure, cost = _traced(name)
    widths = solve_widths(cost.base_widths, cost.flops, 0.5, 8, 1.0, option="--flops")
    fused = fuse(BlendedNet(structure, widths), name)
    assert count_flops(fused, (3, 32, 32)) == cost.flops(widths)
    assert abs(1 - count_flops(fused, (3, 32, 32)) / count_flops(model, (3, 32, 32)) - 0.5) <= 0.01


def test_an_unreachable_flops_target_names_the_largest_reachable_one():
    _, _, cost = _traced("resnet20")
    with pytest.raises(UserError, match=r"--flops 0.9 cannot be reached: .* of its FLOPs .* "
                                        r"pass --flops 0\.\d+ or less"):
        solve_widths(cost.base_widths, cost.flops, 0.9, 8, option="--flops")
