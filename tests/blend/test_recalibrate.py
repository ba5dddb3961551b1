"""All-branch BN statistics for scoring the ship network while alpha > 0."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from alphaprune.blend.recalibrate import ship_bn_stats, using_bn_stats
from alphaprune.train.blend_module import BlendModule

from .test_handover import _blended


def _calib(n=16, seed=1):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_stats_of_first_branch_bn_are_those_of_its_input():
    model = _blended("stochastic").set_alpha(0.5)
    x = _calib()
    stats = ship_bn_stats(model, x, batch_size=len(x))
    u = model.features[0]
    with torch.no_grad():
        a = u.A(u.conv(x))
    torch.testing.assert_close(stats[0][0], a.mean((0, 2, 3)))
    torch.testing.assert_close(stats[0][1], a.transpose(0, 1).flatten(1).var(1, unbiased=True))


@pytest.mark.parametrize("training", [False, True])
def test_measuring_leaves_the_model_unchanged(training):
    model = _blended("blend").set_alpha(0.3).train(training)
    model.train_original = False  # frozen original BNs must stay in eval mode
    model.train(training)
    before = copy.deepcopy(model.state_dict())
    momenta = [u.bn2.momentum for u in model.features]
    ship_bn_stats(model, _calib())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert float(model.alpha) == pytest.approx(0.3) and model.training == training
    assert [u.bn2.momentum for u in model.features] == momenta
    assert [u.bn2.training for u in model.features] == [training] * len(model.features)
    assert not any(u.bn.training for u in model.features)


def test_measuring_leaves_the_bns_outside_the_units_unchanged():
    """A ResNet's stem and stream BNs belong to no unit but run in the measuring pass."""
    from alphaprune.blend import BlendedNet
    from alphaprune.graph import find_units
    from alphaprune.models import create_model

    torch.manual_seed(0)
    structure = find_units(create_model("resnet20", width=0.5).eval(), _calib(2))
    model = BlendedNet(structure, [max(1, u.width // 2) for u in structure.units]).train()
    before = copy.deepcopy(model.state_dict())
    ship_bn_stats(model, _calib(32))
    after = model.state_dict()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
    assert "net.layer1.0.bn2.running_mean" in before  # a stream BN, outside every unit


def test_a_last_batch_of_one_image_is_never_run():
    """Units at 1x1 resolution reject a train-mode BN batch of one image."""
    model = _blended("stochastic").set_alpha(0.5)
    x = torch.randn(257, 3, 16, 16, generator=torch.Generator().manual_seed(3))  # 1x1 at the end
    stats = ship_bn_stats(model, x, batch_size=256)
    assert all(torch.isfinite(v).all() for _, v in stats)


def test_batches_average_to_the_whole_calibration_mean():
    """Cumulative, not momentum: two half batches give the mean of the whole (first unit,
    whose input does not depend on the batch statistics upstream)."""
    model = _blended("stochastic").set_alpha(0.5)
    x = _calib(32)
    whole = ship_bn_stats(model, x, batch_size=32)
    halves = ship_bn_stats(model, x, batch_size=16)
    torch.testing.assert_close(whole[0][0], halves[0][0])


def test_using_swaps_in_and_restores():
    model = _blended("stochastic").set_alpha(0.5).eval()
    own = [u.bn2.running_mean.clone() for u in model.features]
    stats = ship_bn_stats(model, _calib())
    with using_bn_stats(model, stats):
        assert all(torch.equal(u.bn2.running_mean, m) for u, (m, _) in zip(model.features, stats))
    assert all(torch.equal(u.bn2.running_mean, m) for u, m in zip(model.features, own))
    with using_bn_stats(model, None):
        assert all(torch.equal(u.bn2.running_mean, m) for u, m in zip(model.features, own))


@pytest.mark.parametrize("handover", ["stochastic", "blend", "progressive"])
def test_module_scores_the_ship_network_with_recalibrated_stats(handover):
    """While alpha > 0 the ship score uses all-branch statistics; the mixture keeps its own."""
    torch.manual_seed(0)
    model = _blended(handover).set_alpha(0.5)
    calib = _calib()
    x, y = _calib(8, seed=2), torch.arange(8) % 10
    module = BlendModule(model, calib=calib)
    module.eval()
    module.on_validation_epoch_start()
    module.validation_step((x, y), 0)
    module.on_validation_epoch_end()

    ref = copy.deepcopy(model).eval()
    stats = ship_bn_stats(ref, calib)
    with torch.no_grad():
        mixture = ref(x)
        ref.set_alpha(0.0)
        with using_bn_stats(ref, stats):
            ship = ref(x)
    if handover == "stochastic":  # in eval the mixture is the all-branch network
        assert module.epoch_stats["val_loss"] == pytest.approx(module.epoch_stats["ship_val_loss"])
    else:  # the mixture is scored with the statistics it trained with
        assert module.epoch_stats["val_loss"] == pytest.approx(F.cross_entropy(mixture, y).item(),
                                                               rel=1e-5)
    assert module.epoch_stats["ship_val_loss"] == pytest.approx(F.cross_entropy(ship, y).item(),
                                                                rel=1e-5)
    # and differently from the statistics the model carries (the test would be vacuous)
    with torch.no_grad():
        plain = ref(x)
    assert module.epoch_stats["ship_val_loss"] != pytest.approx(F.cross_entropy(plain, y).item(),
                                                                rel=1e-3)
