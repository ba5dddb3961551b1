"""Branch initialisation: ``select`` by each importance criterion, ``lstsq``, and bad arguments."""

from __future__ import annotations

import copy

import pytest
import torch

from alphaprune.blend import BlendedNet, fuse
from alphaprune.blend.init import (
    BRANCH_INITS,
    IMPORTANCE_CRITERIA,
    channel_importance,
    init_branches,
    reconstruction_error,
)
from alphaprune.errors import UserError
from alphaprune.graph import find_units
from alphaprune.models import create_model
from alphaprune.models.vgg import VGG
from tests.graph.zoo import ZOO

from .test_fuse import NUM_CLASSES, ODD11, _base, _branch_widths, _randomise_bn


@torch.no_grad()
def _calibrate_bn(model: VGG, x: torch.Tensor) -> None:
    """Set every BN's running statistics to the data's (as a trained network has them)."""
    for u in model.features:
        u.bn.reset_running_stats()
        u.bn.momentum = None  # cumulative average: one batch gives its exact statistics
    model.train()
    model(x)
    for u in model.features:
        u.bn.momentum = 0.1
    model.eval()


def _pretrainedish(spec=0.125, in_ch: int = 3, seed: int = 0) -> VGG:
    """Random convs, random BN affine terms, BN statistics estimated on data of the calib
    distribution (a separate batch)."""
    torch.manual_seed(seed)
    base = _base("vgg11", spec, in_ch)
    _calibrate_bn(base, torch.randn(128, in_ch, 32, 32))
    return base


@torch.no_grad()
def _importance(base: VGG, criterion: str, calib: torch.Tensor | None) -> list[torch.Tensor]:
    """Each unit's channel importance, computed here from the original network alone."""
    if criterion == "bn":
        return [u.bn.weight.abs().clone() for u in base.features]
    if criterion == "l1":
        return [u.conv.weight.abs().sum(dim=(1, 2, 3)) for u in base.features]
    base.eval()
    out, h = [], calib
    for u in base.features:  # conv -> BN -> ReLU -> pool of the original network
        h = u.pool(torch.relu(u.bn(u.conv(h))))
        out.append(h.mean(dim=(0, 2, 3)))
    return out


def _kept(imp: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k channels by importance, in index order; the cut must be unambiguous."""
    s = imp.sort(descending=True).values
    if k < len(s):
        assert s[k - 1] > s[k], "tied importance at the cut: the test data is ambiguous"
    return torch.topk(imp, k).indices.sort().values


@torch.no_grad()
def _channel_pruned(base: VGG, widths, kept: list[torch.Tensor], in_ch: int) -> VGG:
    pruned = create_model("vgg11", num_classes=NUM_CLASSES, in_channels=in_ch, widths=widths)
    prev = torch.arange(in_ch)
    for u, p, idx in zip(base.features, pruned.features, kept):
        p.conv.weight.copy_(u.conv.weight[idx][:, prev])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(p.bn, name).copy_(getattr(u.bn, name)[idx])
        p.bn.num_batches_tracked.copy_(u.bn.num_batches_tracked)
        prev = idx
    pruned.classifier.weight.copy_(base.classifier.weight[:, prev])
    pruned.classifier.bias.copy_(base.classifier.bias)
    return pruned.eval()


SELECT_CASES = [
    # (base widths, branch widths: prune fraction or list, criterion, input channels)
    (0.0625, 0.5, "bn", 3),
    (0.125, 0.65, "bn", 3),
    (0.0625, 0.5, "l1", 3),
    (ODD11, [1, 3, 3, 5, 7, 9, 11, 13], "l1", 1),
    (0.0625, 0.5, "act", 3),
    (0.125, 0.65, "act", 3),
    (ODD11, 0.4, "act", 1),
]


@pytest.mark.parametrize("base_spec, branch_spec, criterion, in_ch", SELECT_CASES)
def test_select_at_alpha_zero_is_the_channel_pruned_network(base_spec, branch_spec, criterion,
                                                           in_ch):
    base = _pretrainedish(base_spec, in_ch)
    calib = torch.randn(16, in_ch, 32, 32)
    widths = _branch_widths("vgg11", base, branch_spec, in_ch)
    kept = [_kept(imp, k) for imp, k in zip(_importance(base, criterion, calib), widths)]
    pruned = _channel_pruned(base, widths, kept, in_ch)
    blended = BlendedNet(base, widths)
    init_branches(blended, "select", criterion, calib=calib)
    blended.set_alpha(0.0).eval()
    x = torch.randn(4, in_ch, 32, 32)
    with torch.no_grad():
        want, got = pruned(x), blended(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    for u, idx in zip(blended.features, kept):  # BN' holds the kept channels' BN
        assert torch.equal(u.bn2.weight, u.bn.weight[idx])
        assert torch.equal(u.bn2.running_var, u.bn.running_var[idx])
    # the fused network holds exactly the channel-pruned weights
    ref = pruned.state_dict()
    for k, v in fuse(blended, "vgg11").state_dict().items():
        assert torch.equal(v, ref[k]), k


@pytest.mark.parametrize("other", ["bn", "l1"])
def test_act_criterion_is_data_driven(other):
    """``act`` picks other channels than the weight criteria (else the tests above could not
    tell them apart), and other channels on other data."""
    base = _pretrainedish(0.125)
    calib = torch.randn(16, 3, 32, 32)
    widths = _branch_widths("vgg11", base, 0.5, 3)

    def selected(criterion, data):
        m = BlendedNet(copy.deepcopy(base), widths)
        init_branches(m, "select", criterion, calib=data)
        return [u.A.weight[:, :, 0, 0].argmax(1).tolist() for u in m.features]

    act = selected("act", calib)
    assert act != selected(other, calib)
    assert selected(other, calib) == selected(other, 5 * calib + 3)  # weights only
    assert act != selected("act", 5 * calib.abs() + 3)


@pytest.mark.parametrize("criterion", IMPORTANCE_CRITERIA)
def test_channel_importance_matches_the_definition(criterion):
    base = _pretrainedish(0.0625)
    calib = torch.randn(8, 3, 32, 32)
    want = _importance(base, criterion, calib)
    blended = BlendedNet(base, _branch_widths("vgg11", base, 0.5, 3)).eval()
    h = calib
    for u, w in zip(blended.features, want):
        with torch.no_grad():
            act = u(h, 1.0)
        got = channel_importance(u, criterion, act if criterion == "act" else None)
        torch.testing.assert_close(got, w)
        h = act


# --------------------------------------------------------------------------- lstsq


@pytest.mark.parametrize("criterion", IMPORTANCE_CRITERIA)
@pytest.mark.parametrize("seed, base_spec, prune", [(0, 0.125, 0.5), (1, 0.125, 0.65),
                                                    (2, 0.0625, 0.5)])
def test_lstsq_lowers_the_reconstruction_error(criterion, seed, base_spec, prune):
    base = _pretrainedish(base_spec, seed=seed)
    calib = torch.randn(64, 3, 32, 32)
    widths = _branch_widths("vgg11", base, prune, 3)
    errs = {}
    for method in ("select", "lstsq"):
        m = BlendedNet(copy.deepcopy(base), widths)
        init_branches(m, method, criterion, calib=calib)
        errs[method] = reconstruction_error(m, calib)
    sel, lsq = errs["select"], errs["lstsq"]
    assert len(sel) == len(lsq) == len(widths)
    assert all(e >= 0 for e in sel + lsq)
    assert lsq[-1] < 0.5 * sel[-1], (sel, lsq)
    assert sum(lsq) / len(lsq) < 0.5 * sum(sel) / len(sel), (sel, lsq)


def test_lstsq_keeps_fusion_exact_and_the_original_untouched():
    base = _pretrainedish(0.0625)
    calib = torch.randn(32, 3, 32, 32)
    original = copy.deepcopy(base).eval()
    blended = BlendedNet(base, _branch_widths("vgg11", base, 0.5, 3))
    blended.train()
    init_branches(blended, "lstsq", "act", calib=calib)
    assert blended.training  # the mode is restored
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(blended.eval().set_alpha(1.0)(x), original(x))
        want = blended.set_alpha(0.0)(x)
        got = fuse(blended, "vgg11").eval()(x)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


@pytest.mark.parametrize("criterion", IMPORTANCE_CRITERIA)
def test_a_token_wise_linear_unit_is_scored_and_fitted_on_its_features(criterion):
    """ConvNeXt's MLP: the unit's features are the last dim of (N, H, W, C) maps. Every
    criterion scores one value per feature; lstsq fits B over batch and positions, lowers
    each unit's error and keeps fusion exact."""
    torch.manual_seed(0)
    model = ZOO["convnext"]().eval()
    calib = torch.randn(32, 3, 16, 16)
    structure = find_units(model, calib[:2])
    widths = [u.width // 2 for u in structure.units]
    errs, fused = {}, None
    for method in ("select", "lstsq"):
        m = BlendedNet(copy.deepcopy(structure), widths)
        init_branches(m, method, criterion, calib=calib)
        errs[method] = reconstruction_error(m, calib)
        if method == "lstsq":
            fused, want = fuse(m).eval(), m.eval().set_alpha(0.0)(calib)
    scores = channel_importance(m.features[0], criterion, torch.randn(4, 16, 16, 32))
    assert scores.shape == (32,)
    assert all(b < 0.9 * a for a, b in zip(errs["select"], errs["lstsq"])), errs
    with torch.no_grad():
        got = fused(calib)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_reconstruction_error_is_zero_for_full_width_select():
    base = _pretrainedish(0.0625)
    widths = [u.conv.out_channels for u in base.features]
    blended = BlendedNet(base, widths)
    init_branches(blended, "select", "bn")
    errs = reconstruction_error(blended, torch.randn(8, 3, 32, 32))
    assert max(errs) < 1e-10
    _randomise_bn(blended.features[3].bn2)
    errs = reconstruction_error(blended, torch.randn(8, 3, 32, 32))
    assert max(errs[:3]) < 1e-10 and min(errs[3:]) > 1e-4


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("method, criterion, with_calib, words", [
    ("lstsq", "bn", False, ["lstsq", "calibration"]),
    ("lstsq", "l1", False, ["lstsq"]),
    ("lstsq", "act", False, ["lstsq"]),
    ("select", "act", False, ["act", "calibration"]),
    ("foo", "bn", True, ["foo", *BRANCH_INITS]),
    ("foo", "bn", False, ["foo"]),
    ("select", "foo", True, ["foo", *IMPORTANCE_CRITERIA]),
    ("lstsq", "foo", True, ["foo"]),
    ("random", "foo", False, ["foo"]),
])
def test_bad_arguments_raise_user_error_and_change_nothing(method, criterion, with_calib, words):
    base = _pretrainedish(0.0625)
    blended = BlendedNet(base, _branch_widths("vgg11", base, 0.5, 3))
    before = copy.deepcopy(blended.state_dict())
    calib = torch.randn(4, 3, 32, 32) if with_calib else None
    with pytest.raises(UserError) as e:
        init_branches(blended, method, criterion, calib=calib)
    assert all(w in str(e.value) for w in words), str(e.value)
    after = blended.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("method, criterion", [("select", "bn"), ("select", "l1")])
def test_weight_criteria_need_no_calibration(method, criterion):
    base = _pretrainedish(0.0625)
    blended = BlendedNet(base, _branch_widths("vgg11", base, 0.5, 3))
    init_branches(blended, method, criterion)  # no calib: fine
    assert all(u.A.weight.abs().sum() == u.width for u in blended.features)


def test_lstsq_estimates_the_narrow_depthwise_bns_on_the_pruned_path():
    from alphaprune.blend.init import _unit_io
    from alphaprune.graph import find_units
    from tests.graph.zoo import ZOO

    torch.manual_seed(0)
    calib = torch.randn(32, 3, 32, 32)
    structure = find_units(ZOO["mobilenet_v1"]().eval(), calib[:2])
    blended = BlendedNet(structure, [max(1, u.width // 2) for u in structure.units])
    init_branches(blended, "lstsq", "l1", calib=calib)
    inputs = _unit_io(blended, calib, [0.0] * len(blended.features))
    checked = 0
    for u, (h, _) in zip(blended.features, inputs):
        for _, bn in u.tied_pairs():
            if not isinstance(bn, torch.nn.BatchNorm2d):
                continue
            seen = []
            hook = bn.register_forward_pre_hook(lambda m, a, seen=seen: seen.append(a[0]))
            with torch.no_grad():
                u.eval().narrow(u.conv(h))
            hook.remove()
            x = seen[0].transpose(0, 1).flatten(1)  # (channels, everything else)
            torch.testing.assert_close(bn.running_mean, x.mean(1), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(bn.running_var, x.var(1), rtol=1e-3, atol=1e-4)
            checked += 1
    assert checked == 3  # the depthwise BN of each separable block
