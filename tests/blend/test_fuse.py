"""The blended model and its exact fusion into a compact registry VGG."""

from __future__ import annotations

import copy

import pytest
import torch

from alphaprune.blend import BlendedNet, BranchedUnit, fuse, solve_widths
from alphaprune.blend.init import init_branches
from alphaprune.blend.widths import vgg_counter, vgg_param_count
from alphaprune.models import create_model
from alphaprune.models.vgg import VGG, base_widths
from alphaprune.report.size import count_params

NUM_CLASSES = 10
ODD11 = [3, 5, 7, 9, 11, 13, 15, 17]
ODD16 = [3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27]


def _base(arch: str, spec, in_ch: int = 3) -> VGG:
    """A registry VGG with random weights, BN affine terms and BN running statistics."""
    kw = {"widths": spec} if isinstance(spec, list) else {"width": spec}
    model = create_model(arch, num_classes=NUM_CLASSES, in_channels=in_ch, **kw)
    for u in model.features:
        _randomise_bn(u.bn)
    with torch.no_grad():
        model.classifier.bias.normal_()
    return model


def _randomise_bn(bn: torch.nn.BatchNorm2d) -> None:
    n = bn.num_features
    with torch.no_grad():
        sign = torch.where(torch.rand(n) < 0.2, -1.0, 1.0)
        bn.weight.copy_(sign * (0.5 + torch.rand(n)))  # distinct |gamma|: a unique top-k
        bn.bias.copy_(0.3 * torch.randn(n))
        bn.running_mean.copy_(0.5 * torch.randn(n))
        bn.running_var.copy_(0.5 + torch.rand(n))


def _branch_widths(arch: str, base: VGG, spec, in_ch: int) -> list[int]:
    if isinstance(spec, float):
        return solve_widths([u.conv.out_channels for u in base.features],
                            vgg_counter(in_ch, NUM_CLASSES), spec)
    return list(spec)


def _blended_random(arch, base_spec, branch_spec, in_ch=3) -> tuple[VGG, BlendedNet]:
    base = _base(arch, base_spec, in_ch)
    widths = _branch_widths(arch, base, branch_spec, in_ch)
    blended = BlendedNet(base, widths)
    init_branches(blended, "random")
    for u in blended.features:
        _randomise_bn(u.bn2)
    return base, blended


# (arch, base widths: multiplier or per-layer list, branch widths: prune fraction or list,
#  input channels, input size)
FUSE_CASES = [
    ("vgg11", 0.0625, 0.5, 3, 32),
    ("vgg11", 0.125, 0.65, 3, 32),
    ("vgg11", 0.125, [3, 5, 9, 7, 15, 13, 11, 17], 3, 32),
    ("vgg11", ODD11, 0.3, 3, 32),
    ("vgg11", ODD11, [1, 3, 3, 5, 7, 9, 11, 13], 1, 32),
    ("vgg11", 0.0625, base_widths("vgg11", 0.0625), 3, 32),  # branches as wide as the units
    ("vgg11", 0.0625, [1, 1, 1, 1, 1, 1, 1, 1], 3, 32),
    ("vgg11", ODD11, 0.5, 1, 28),  # 28x28: ceil-mode pools
    ("vgg16", 0.0625, 0.5, 3, 32),
    ("vgg16", 0.125, 0.9, 3, 32),
    ("vgg16", ODD16, [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25], 3, 32),
    ("vgg16", 0.125, [3, 7, 5, 9, 13, 11, 15, 21, 19, 17, 25, 23, 27], 1, 32),
]


@pytest.mark.parametrize("arch, base_spec, branch_spec, in_ch, size", FUSE_CASES)
def test_fusion_is_exact(arch, base_spec, branch_spec, in_ch, size):
    _, blended = _blended_random(arch, base_spec, branch_spec, in_ch)
    blended.set_alpha(0.0)
    blended.eval()
    fused = fuse(blended, arch).eval()
    x = torch.randn(4, in_ch, size, size)
    with torch.no_grad():
        want, got = blended(x), fused(x)
    scale = want.abs().max()
    assert scale > 0
    assert (got - want).abs().max() <= 1e-4 * scale
    # the check is sharp: the same model at another alpha is far away
    blended.set_alpha(0.5)
    with torch.no_grad():
        assert (blended(x) - got).abs().max() > 1e-2 * scale


@pytest.mark.parametrize("arch, base_spec, branch_spec, in_ch, size", FUSE_CASES[::3])
def test_fused_is_a_plain_registry_vgg_with_the_branch_widths(arch, base_spec, branch_spec, in_ch,
                                                              size):
    _, blended = _blended_random(arch, base_spec, branch_spec, in_ch)
    widths = blended.widths
    blended.set_alpha(0.3)  # fusion ignores the current alpha
    state = copy.deepcopy(blended.state_dict())
    fused = fuse(blended, arch)
    assert type(fused) is VGG
    assert [u.conv.out_channels for u in fused.features] == widths
    assert fused.features[0].conv.in_channels == in_ch
    assert fused.classifier.out_features == NUM_CLASSES
    ref = create_model(arch, num_classes=NUM_CLASSES, in_channels=in_ch, widths=widths)
    assert {k: v.shape for k, v in fused.state_dict().items()} == \
        {k: v.shape for k, v in ref.state_dict().items()}
    assert count_params(fused) == vgg_param_count(widths, in_ch, NUM_CLASSES)
    assert not any(isinstance(m, BranchedUnit) for m in fused.modules())
    # the blended model is left untouched
    after = blended.state_dict()
    assert set(after) == set(state) and all(torch.equal(after[k], state[k]) for k in state)
    assert float(blended.alpha) == pytest.approx(0.3)


@pytest.mark.parametrize("arch, base_spec, branch_spec, in_ch, size", FUSE_CASES[:2] + FUSE_CASES[8:10])
def test_alpha_one_is_exactly_the_original(arch, base_spec, branch_spec, in_ch, size):
    base = _base(arch, base_spec, in_ch).eval()
    x = torch.randn(3, in_ch, size, size)
    with torch.no_grad():
        want = base(x)
    blended = BlendedNet(base, _branch_widths(arch, base, branch_spec, in_ch))
    init_branches(blended, "random")
    assert float(blended.alpha) == 1.0 and "alpha" in blended.state_dict()  # the default
    blended.eval()
    with torch.no_grad():
        assert torch.equal(blended(x), want)
        blended.set_alpha(1.0)
        assert torch.equal(blended(x), want)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_branched_unit_blends_the_two_paths(alpha):
    _, blended = _blended_random("vgg11", 0.125, 0.5)
    blended.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for u in blended.features:
            z = u.conv(x)
            want = alpha * u.original(z) + (1 - alpha) * u.branch(z)
            y = u(x, alpha)
            torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-6)
            x = y


def _top_channels(imp: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(imp, k).indices.sort().values


@torch.no_grad()
def _channel_pruned_copy(base: VGG, arch: str, widths, criterion: str, in_ch: int) -> VGG:
    """A VGG with the kept widths holding the selected channels' weights of ``base``."""
    pruned = create_model(arch, num_classes=NUM_CLASSES, in_channels=in_ch, widths=widths)
    prev = torch.arange(in_ch)
    for u, p, k in zip(base.features, pruned.features, widths):
        imp = u.bn.weight.abs() if criterion == "bn" else u.conv.weight.abs().sum(dim=(1, 2, 3))
        idx = _top_channels(imp, k)
        p.conv.weight.copy_(u.conv.weight[idx][:, prev])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(p.bn, name).copy_(getattr(u.bn, name)[idx])
        p.bn.num_batches_tracked.copy_(u.bn.num_batches_tracked)
        prev = idx
    pruned.classifier.weight.copy_(base.classifier.weight[:, prev])
    pruned.classifier.bias.copy_(base.classifier.bias)
    return pruned


@pytest.mark.parametrize("arch, base_spec, branch_spec, criterion, in_ch", [
    ("vgg11", 0.0625, 0.5, "bn", 3),
    ("vgg11", 0.125, 0.65, "l1", 3),
    ("vgg11", ODD11, [1, 3, 3, 5, 7, 9, 11, 13], "bn", 1),
    ("vgg16", 0.0625, 0.5, "bn", 3),
    ("vgg16", ODD16, 0.8, "l1", 3),
])
def test_select_init_at_alpha_zero_is_the_channel_pruned_network(arch, base_spec, branch_spec,
                                                                 criterion, in_ch):
    base = _base(arch, base_spec, in_ch)
    widths = _branch_widths(arch, base, branch_spec, in_ch)
    pruned = _channel_pruned_copy(base, arch, widths, criterion, in_ch).eval()
    blended = BlendedNet(base, widths)
    init_branches(blended, "select", criterion)
    blended.set_alpha(0.0)
    blended.eval()
    x = torch.randn(4, in_ch, 32, 32)
    with torch.no_grad():
        want, got = pruned(x), blended(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    # fusing a freshly selected network gives exactly the channel-pruned weights
    fused = fuse(blended, arch)
    ref = pruned.state_dict()
    for k, v in fused.state_dict().items():
        assert torch.equal(v, ref[k]), k


@pytest.mark.parametrize("train_original", [True, False])
def test_train_original_false_freezes_the_original_units(train_original):
    base = _base("vgg11", 0.125)
    blended = BlendedNet(base, solve_widths(base_widths("vgg11", 0.125), vgg_counter(3, NUM_CLASSES), 0.5),
                         train_original=train_original)
    init_branches(blended, "select")
    for u in blended.features:
        for p in list(u.conv.parameters()) + list(u.bn.parameters()):
            assert p.requires_grad is train_original
        for p in list(u.A.parameters()) + list(u.B.parameters()) + list(u.bn2.parameters()):
            assert p.requires_grad
    assert all(p.requires_grad for p in blended.net.classifier.parameters())

    blended.eval()
    blended.train()
    assert blended.training
    for u in blended.features:
        assert u.bn.training is train_original
        assert u.bn2.training and u.A.training

    stats = [u.bn.running_mean.clone() for u in blended.features]
    stats2 = [u.bn2.running_mean.clone() for u in blended.features]
    blended.set_alpha(0.5)
    blended(torch.randn(4, 3, 32, 32)).sum().backward()
    for u, s, s2 in zip(blended.features, stats, stats2):
        assert torch.equal(u.bn.running_mean, s) is not train_original
        assert not torch.equal(u.bn2.running_mean, s2)
        assert (u.conv.weight.grad is not None) is train_original
        assert u.A.weight.grad is not None


def test_a_branch_with_nothing_tied_shares_the_post_ops_without_registering_them_twice():
    """Untied, the branch runs the original's pool itself: one ``pool`` child, no ``pool2``
    (which only a branch with narrow copies of depthwise layers holds), and the branch's
    output is the pooled narrow map."""
    torch.manual_seed(0)
    conv, bn, pool = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.MaxPool2d(2)
    unit = BranchedUnit(conv, bn, torch.nn.ReLU(), pool, k=4).eval()
    assert "(pool): MaxPool2d" in repr(unit) and "pool2" not in repr(unit)
    z = conv(torch.randn(2, 3, 8, 8))
    expected = pool(torch.relu(unit.bn2(unit.A(z))))
    assert torch.equal(unit.narrow(z), expected) and unit.narrow(z).shape == (2, 4, 4, 4)
