"""Fusion is exact for every registry model and every fold rule, and the graph's cost model
counts the fused model exactly."""

from __future__ import annotations

import copy

import pytest
import torch

from alphaprune.blend import BlendedNet, fuse, solve_widths
from alphaprune.blend.branch import StreamUnit, matrix
from alphaprune.blend.init import init_branches
from alphaprune.graph import CostModel, find_units
from alphaprune.models import create_model, list_models
from alphaprune.report.size import count_flops, count_params
from tests.graph.zoo import ZOO

X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def _scramble(blended: BlendedNet, seed: int) -> None:
    """Random A, B and BN' (trained-looking, not a plain selection) so fusion is tested on
    dense maps; a residual stream's writers get a random A and BN' (its B stays the fixed
    scatter)."""
    g = torch.Generator().manual_seed(seed)
    for u in blended.features:
        stream = isinstance(u, StreamUnit)
        for p in (u.writers if stream else [u]):
            for lay in ((p.A,) if stream else (p.A, p.B)):
                matrix(lay).copy_(torch.randn(matrix(lay).shape, generator=g) * 0.5)
            if p.has_bn:
                _scramble_bn(p.bn2, g)
        for _, narrow in ([] if stream else u.tied_pairs()):  # narrow depthwise convs, BNs
            if isinstance(narrow, torch.nn.BatchNorm2d):
                _scramble_bn(narrow, g)
            else:
                narrow.weight.copy_(torch.randn(narrow.weight.shape, generator=g) * 0.5)


def _scramble_bn(bn, g) -> None:
    k = bn.num_features
    bn.weight.copy_(torch.rand(k, generator=g) + 0.5)
    bn.bias.copy_(torch.randn(k, generator=g) * 0.1)
    bn.running_mean.copy_(torch.randn(k, generator=g) * 0.1)
    bn.running_var.copy_(torch.rand(k, generator=g) + 0.5)


def _check_exact(blended: BlendedNet, fused: torch.nn.Module) -> None:
    blended.eval().set_alpha(0.0)
    fused.eval()
    x = X.to(next(fused.parameters()).dtype)
    with torch.no_grad():  # the blended network in float64: the rounding is the fused one's
        want, got = copy.deepcopy(blended).double()(x.double()), fused(x).double()
    rel = float((want - got).abs().max() / want.abs().max())
    assert rel <= 1e-5, rel
    cost = CostModel(blended.structure)
    assert count_params(fused) == cost.params(blended.widths)
    assert count_flops(fused, (3, 32, 32)) == cost.flops(blended.widths)


def _registry(name: str):
    width = 0.5 if name.startswith("resnet") and int(name[6:]) < 100 and name not in (
        "resnet18", "resnet34", "resnet50") else 0.125
    torch.manual_seed(0)
    return create_model(name, width=width, num_classes=10).eval()


@pytest.mark.parametrize("prune", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("name", list_models())
def test_every_registry_model_fuses_exactly_into_its_own_class(name, prune, request):
    if name.startswith("mobilenet"):  # float32 rounding compounds over its 17 blocks
        request.getfixturevalue("float64")
    model = _registry(name)
    structure = find_units(model, X[:2].to(torch.get_default_dtype()))
    cost = CostModel(structure)
    widths = solve_widths(cost.base_widths, cost.params, prune)
    assert abs(1 - cost.params(widths) / cost.base_params - prune) <= 0.005
    blended = BlendedNet(structure, widths)
    init_branches(blended, "select", "l1")
    _scramble(blended, seed=int(prune * 10))
    fused = fuse(blended, name)  # the registry class with the fused widths
    assert type(fused) is type(model)
    _check_exact(blended, fused)


@pytest.mark.parametrize("streams", [False, True], ids=["units", "streams"])
@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("init", ["select", "lstsq", "random"])
def test_test_only_layouts_fuse_exactly(name, init, streams):
    torch.manual_seed(0)
    model = ZOO[name]().eval()
    structure = find_units(model, X[:2], streams=streams)
    widths = [max(u.group, u.width // 2 // u.group * u.group) for u in structure.units]
    blended = BlendedNet(structure, widths)
    init_branches(blended, init, "act", calib=X)
    _scramble(blended, seed=3)
    _check_exact(blended, fuse(blended))


@pytest.mark.parametrize("prune", [0.3, 0.6])
def test_mobilenet_v2_with_its_streams_cut_fuses_exactly(prune):
    torch.manual_seed(0)
    structure = find_units(ZOO["mobilenet_v2"]().eval(), X[:2], streams=True)
    cost = CostModel(structure)
    widths = solve_widths(cost.base_widths, cost.params, prune)
    blended = BlendedNet(structure, widths)
    init_branches(blended, "select", "l1")
    _scramble(blended, seed=5)
    fused = fuse(blended)
    _check_exact(blended, fused)
    dw = fused.get_submodule("blocks.1.dw.0")  # the depthwise conv, narrowed with its unit
    assert dw.groups == dw.in_channels == dw.out_channels == widths[2] < 32


@pytest.mark.parametrize("name", ["resnext", "regnet_y"])
@pytest.mark.parametrize("prune", [0.3, 0.6])
def test_grouped_convs_with_the_streams_cut_fuse_exactly_with_fewer_groups(name, prune):
    torch.manual_seed(0)
    structure = find_units(ZOO[name]().eval(), X[:2], streams=True)
    cost = CostModel(structure)
    widths = solve_widths(cost.base_widths, cost.params, prune, groups=[u.group for u in structure.units])
    assert all(w % u.group == 0 for w, u in zip(widths, structure.units))
    blended = BlendedNet(structure, widths)
    init_branches(blended, "select", "l1")
    _scramble(blended, seed=7)
    fused = fuse(blended)
    _check_exact(blended, fused)
    i = [u.name for u in structure.units].index("blocks.1.a.0")
    g = fused.get_submodule("blocks.1.b.0")  # the grouped conv, narrowed with its unit
    assert g.in_channels == g.out_channels == widths[i] and g.in_channels // g.groups == 8


def test_select_keeps_whole_groups_of_a_grouped_conv_ranked_by_their_summed_importance():
    torch.manual_seed(0)
    model = ZOO["resnext"]().eval()
    structure = find_units(model, X[:2])
    widths = [8, 16, 16]  # of 16, 32, 32: two groups of 4, two groups of 8, two of 8
    blended = BlendedNet(structure, widths)
    init_branches(blended, "select", "l1")
    fused = fuse(blended)
    a = model.blocks[1].a[0].weight.abs().flatten(1).sum(1)  # 32 channels in groups of 8
    best = torch.sort(torch.argsort(a.reshape(4, 8).sum(1), descending=True)[:2]).values
    keep = (best[:, None] * 8 + torch.arange(8)).flatten()
    assert torch.equal(fused.get_submodule("blocks.1.a.0").weight, model.blocks[1].a[0].weight[keep])
    assert torch.equal(fused.get_submodule("blocks.1.b.0").weight, model.blocks[1].b[0].weight[keep])
    assert fused.get_submodule("blocks.1.b.0").groups == 2


def test_select_keeps_the_depthwise_filters_of_the_kept_channels():
    model = ZOO["mobilenet_v1"]().eval()
    blended = BlendedNet(find_units(model, X[:2]), [4, 8, 12, 16])
    init_branches(blended, "select", "l1")
    fused = fuse(blended)
    pw = model.features[3][3]  # the unit whose output the depthwise conv features.4.0 reads
    keep = torch.sort(torch.argsort(pw.weight.abs().flatten(1).sum(1), descending=True)[:8]).values
    assert torch.equal(fused.get_submodule("features.4.0").weight, model.features[4][0].weight[keep])
    assert torch.equal(fused.get_submodule("features.4.1").running_var,
                       model.features[4][1].running_var[keep])


def test_select_at_alpha_zero_is_the_channel_pruned_network():
    """With ``select`` and untouched maps, the fused model keeps exactly the chosen filters."""
    model = ZOO["tv_vgg"]().eval()
    blended = BlendedNet(find_units(model, X[:2]), [4, 8, 16, 12])
    init_branches(blended, "select", "l1")
    fused = fuse(blended)
    keep = torch.sort(torch.argsort(model.features[0].weight.abs().flatten(1).sum(1),
                                    descending=True)[:4]).values
    conv = fused.get_submodule("features.0")
    assert torch.equal(conv.weight, model.features[0].weight[keep])
    assert torch.equal(conv.bias, model.features[0].bias[keep])


def test_a_target_beyond_the_prunable_share_is_refused_with_the_largest_reachable():
    from alphaprune.errors import UserError

    cost = CostModel(find_units(_registry("resnet50"), X[:2]))
    reachable = cost.max_prune()
    with pytest.raises(UserError, match=rf"pass --prune {reachable:.3f} or less"):
        solve_widths(cost.base_widths, cost.params, 0.9)
    widths = solve_widths(cost.base_widths, cost.params, reachable - 0.01)
    assert abs(1 - cost.params(widths) / cost.base_params - (reachable - 0.01)) <= 0.005


def test_fusion_leaves_the_original_model_whole():
    model = _registry("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    blended = BlendedNet(model, [4] * 9, example=X[:2])
    fuse(blended)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_blended_mobilenet_round_trips_its_state_and_trains_its_narrow_depthwise_convs():
    """What a resume reloads: the narrow depthwise convs and BNs are in the state_dict, load
    strictly into a fresh BlendedNet, and get gradients at alpha = 0."""
    torch.manual_seed(0)
    structure = find_units(ZOO["mobilenet_v1"]().eval(), X[:2])
    a = BlendedNet(structure, [4, 8, 12, 16])
    init_branches(a, "select", "l1")
    _scramble(a, seed=7)
    state = a.state_dict()
    assert "net.alpha_units.1.pool2.0.weight" in state  # features.4.0's narrow copy
    assert state["net.alpha_units.1.pool2.0.weight"].shape == (8, 1, 3, 3)
    b = BlendedNet(find_units(ZOO["mobilenet_v1"]().eval(), X[:2]), [4, 8, 12, 16])
    b.load_state_dict(state, strict=True)
    a.eval().set_alpha(0.0)
    b.eval().set_alpha(0.0)
    with torch.no_grad():
        assert torch.equal(a(X), b(X))
    b.train()
    b(X).sum().backward()
    narrow = b.features[1].pool2[0]
    assert narrow.weight.grad is not None and narrow.weight.grad.abs().sum() > 0


def _layouts(gm: torch.fx.GraphModule, x: torch.Tensor) -> dict[str, bool]:
    """Per node with a 4-D value of several channels that a layer reads (not only a
    ``contiguous`` call): whether it ran channels-last."""
    seen = {}

    class Watch(torch.fx.Interpreter):
        def run_node(self, n):
            v = super().run_node(n)
            read = any(u.target != "contiguous" for u in n.users)
            if read and isinstance(v, torch.Tensor) and v.dim() == 4 and v.shape[1] > 1:
                seen[n.name] = v.is_contiguous(memory_format=torch.channels_last)
            return v

    with torch.no_grad():
        Watch(gm.to(memory_format=torch.channels_last)).run(x.contiguous(memory_format=torch.channels_last))
    return seen


@pytest.mark.parametrize("name", ["googlenet", "inception"])
def test_a_concatenation_with_a_one_channel_part_stays_channels_last(name):
    """torch.cat returns NCHW when a part has one channel (a unit cut to 1): the fused
    network makes that cat's output channels-last again, so the rest does not run in the
    slower layout; the values are the same."""
    torch.manual_seed(0)
    model = ZOO[name]().eval()
    structure = find_units(model, X[:2])
    blended = BlendedNet(structure, [1] * len(structure.units)).eval()
    fused = fuse(blended)
    layouts = _layouts(fused, X)
    assert layouts and all(layouts.values()), [k for k, v in layouts.items() if not v]
    with torch.no_grad():
        torch.testing.assert_close(fused(X), blended.set_alpha(0.0)(X), rtol=1e-5, atol=1e-5)
    # without a one-channel part nothing is added
    wider = fuse(BlendedNet(structure, [max(2, u.width // 2) for u in structure.units]))
    assert not any(n.target == "contiguous" for n in wider.graph.nodes)
    assert all(_layouts(wider, X).values())


@pytest.mark.parametrize("keep_stem", [False, True])
def test_a_densenets_concatenated_streams_fuse_exactly_with_their_readers_constants(keep_stem):
    """Every conv of a DenseNet cut: each stream's dropped channels are zero in every cat,
    each reader's BatchNorm loses them and its conv (or the head) takes their constant
    act(BN(0)) in its bias. Nonzero BatchNorm statistics, so the constants are not zero.
    A reader none of whose streams drops a channel gets no bias (the cost model agrees)."""
    from tests.blend.test_sensitivity import distinct_bn

    torch.manual_seed(0)
    model = distinct_bn(ZOO["densenet"](), bias=0.5).eval()
    structure = find_units(model, X[:2], streams=True)
    names = [u.name for u in structure.units]
    widths = [max(1, u.width // 2) for u in structure.units]
    if keep_stem:
        widths[names.index("stream@stem")] = 8
    blended = BlendedNet(structure, widths)
    init_branches(blended, "select", "l1")
    _scramble(blended, seed=3)
    fused = fuse(blended)
    _check_exact(blended, fused)
    assert fused.get_submodule("block1.0.norm1").num_features == widths[names.index("stream@stem")]
    assert fused.get_submodule("block1.1.norm1").num_features == sum(
        widths[names.index(n)] for n in ("stream@stem", "stream@block1.0.conv2"))
    assert fused.get_submodule("fc").in_features == fused.get_submodule("norm").num_features == 4 + 2 + 2
    assert (fused.get_submodule("block1.0.conv1").bias is None) is keep_stem
    assert fused.get_submodule("block1.1.conv1").bias is not None


def test_a_concatenated_stream_written_through_a_batchnorm_fuses_exactly():
    """A writer ``conv -> BN`` into a cat (no activation): its branch's ``BN'`` becomes the
    writer's BatchNorm, and the reader's BatchNorm, ReLU and 1x1 conv take the rest."""
    from tests.blend.test_sensitivity import distinct_bn

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
            self.norm, self.mix = torch.nn.BatchNorm2d(11), torch.nn.Conv2d(11, 6, 1)
            self.fc = torch.nn.Linear(6, 10)

        def forward(self, x):
            h = torch.cat([x, self.bn(self.conv(x))], 1)
            return self.fc(torch.relu(self.mix(torch.relu(self.norm(h)))).mean((2, 3)))

    torch.manual_seed(0)
    model = distinct_bn(Net(), bias=0.5).eval()
    structure = find_units(model, X[:2], streams=True)
    (u,) = [u for u in structure.units if u.kind == "stream"]
    assert [(w.conv, w.bn) for w in u.writers] == [("conv", "bn")]
    assert [(c.name, c.offset, c.bn) for c in u.consumers] == [("mix", 3, "norm")]
    blended = BlendedNet(structure, [3 if s is u else s.width for s in structure.units])
    init_branches(blended, "select", "l1")
    _scramble(blended, seed=4)
    fused = fuse(blended)
    _check_exact(blended, fused)
    assert fused.get_submodule("bn").num_features == 3 and fused.get_submodule("norm").num_features == 6
