"""Residual streams branched, initialised, cut and fused (``--prune-streams``)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from alphaprune.blend import BlendedNet, fuse
from alphaprune.blend.branch import StreamUnit
from alphaprune.blend.init import init_branches
from alphaprune.blend.recalibrate import ship_bn_stats
from alphaprune.blend.sensitivity import unit_sensitivity
from alphaprune.graph import CostModel, find_units
from alphaprune.models import create_model
from alphaprune.report.size import count_flops, count_params
from tests.blend.test_fuse_graph import _scramble
from tests.blend.test_sensitivity import distinct_bn
from tests.graph.zoo import ZOO

X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name in ZOO:
        m = ZOO[name]()
    else:
        m = create_model(name, width=0.5 if name == "resnet20" else 0.125, num_classes=10)
    return distinct_bn(m, bias=0.2).eval()


def _widths(structure, keep: float) -> list[int]:
    return [max(1, round(u.width * keep)) for u in structure.units]


@pytest.mark.parametrize("name, arch", [("resnet20", "resnet20"), ("resnet50", "resnet50"),
                                        ("mobilenet_v2_cifar", "mobilenet_v2_cifar"),
                                        ("two_consumers", None), ("mobilenet_v3", None),
                                        ("se_resnet", None)])
def test_streams_fuse_exactly_and_the_cost_model_counts_the_result(name, arch, request):
    if name.startswith("mobilenet"):
        request.getfixturevalue("float64")
    x = X.to(torch.get_default_dtype())
    model = _model(name)
    structure = find_units(model, x[:2], streams=True)
    assert any(u.kind == "stream" for u in structure.units)
    widths = _widths(structure, 0.5)
    blended = BlendedNet(structure, widths).eval()
    with torch.no_grad():
        assert torch.equal(blended.set_alpha(1.0)(x), model(x))  # alpha 1: the original
    init_branches(blended, "select", "l1")
    _scramble(blended, seed=1)
    fused = fuse(blended, arch).eval()
    with torch.no_grad():
        want, got = blended.set_alpha(0.0)(x), fused(x)
    assert float((want - got).abs().max() / want.abs().max()) <= 1e-5
    cost = CostModel(structure)
    assert count_params(fused) == cost.params(widths) < count_params(model)
    assert count_flops(fused, (3, 32, 32)) == cost.flops(widths)
    if arch is not None:
        assert type(fused) is type(model)
        s0 = next(u for u in structure.units if u.kind == "stream")
        assert fused.get_submodule(s0.writers[-1].conv).out_channels == widths[structure.units.index(s0)]


def test_an_excitation_on_a_writer_is_cut_with_the_stream():
    """SE-ResNet: the excitation between a block's last BatchNorm and the add scales the
    stream's channels; with the stream cut, its 1x1 convs take in and give back the kept
    channels only (the squeeze width stays)."""
    model = _model("se_resnet")
    structure = find_units(model, X[:2], streams=True)
    s1 = structure.unit("stream@blocks.1.conv2")
    assert [w.excite is not None for w in s1.writers] == [True, False, True]
    widths = _widths(structure, 0.5)
    blended = BlendedNet(structure, widths)
    init_branches(blended, "select", "l1")
    fused = fuse(blended).eval()
    k = widths[structure.units.index(s1)]
    for block in ("blocks.1", "blocks.2"):
        assert fused.get_submodule(f"{block}.se.fc1").in_channels == k < 32
        assert fused.get_submodule(f"{block}.se.fc2").out_channels == k
        assert fused.get_submodule(f"{block}.conv2").out_channels == k


def test_select_keeps_one_channel_set_in_every_writer_and_zeroes_the_rest():
    model = _model("resnet20")
    structure = find_units(model, X[:2], streams=True)
    blended = BlendedNet(structure, _widths(structure, 0.5)).eval()
    init_branches(blended, "select", "bn")
    stream = blended.features[0]
    assert isinstance(stream, StreamUnit) and len(stream.writers) == 4
    assert all(torch.equal(w.idx, stream.idx) for w in stream.writers)
    seen = []
    h = structure.gm.get_submodule("layer1.1.conv1").register_forward_pre_hook(
        lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        blended.set_alpha(0.0)(X)
    h.remove()
    dropped = sorted(set(range(stream.writers[0].conv.out_channels)) - set(stream.idx.tolist()))
    assert dropped and seen[0][:, dropped].abs().max() == 0  # the stream carries zeros there


@pytest.mark.parametrize("init", ["lstsq", "act"])
def test_data_driven_inits_fuse_exactly(init):
    model = _model("resnet20")
    structure = find_units(model, X[:2], streams=True)
    blended = BlendedNet(structure, _widths(structure, 0.5)).eval()
    method, criterion = ("lstsq", "l1") if init == "lstsq" else ("select", "act")
    init_branches(blended, method, criterion, calib=X)
    fused = fuse(blended, "resnet20").eval()
    with torch.no_grad():
        want, got = blended.set_alpha(0.0)(X), fused(X)
    assert float((want - got).abs().max() / want.abs().max()) <= 1e-5


def test_the_shipped_bn_statistics_cover_every_writer():
    model = _model("resnet20")
    structure = find_units(model, X[:2], streams=True)
    blended = BlendedNet(structure, _widths(structure, 0.5))
    init_branches(blended, "select", "l1")
    stats = ship_bn_stats(blended, X)
    n_bn2 = sum(len(u.writers) if isinstance(u, StreamUnit) else 1 for u in blended.features)
    assert len(stats) == n_bn2


@pytest.mark.parametrize("name", ["resnet20", "se_resnet", "densenet"])
def test_a_stream_cut_measured_by_zeroing_equals_the_fused_network(name):
    """The sensitivity solver's cut of a stream (zeroed where its writers put the channels
    in, before an SE-ResNet's excitations) is exactly the network select starts the alpha
    = 0 path from; for a DenseNet's concatenated streams, each reader's BatchNorm and ReLU
    turn a zeroed channel into the constant the fused reader conv takes in its bias."""
    model = _model(name)
    x, y = torch.randn(40, 3, 8, 8), torch.randint(0, 10, (40,))
    structure = find_units(model, x[:2], streams=True)
    sens = unit_sensitivity(structure, x, y, round_to=1, levels=3)
    full = float(F.cross_entropy(model(x), y))
    for i, u in enumerate(structure.units):
        if u.kind != "stream":
            continue
        for w, rise in sens[i].items():
            widths = [v.width for v in structure.units]
            widths[i] = w
            blended = BlendedNet(find_units(copy.deepcopy(model), x[:2], streams=True), widths)
            init_branches(blended, "select", "l1")
            want = float(F.cross_entropy(fuse(blended).eval()(x), y)) - full
            assert rise == pytest.approx(want, abs=1e-5), (u.name, w)
    streams = [s for u, s in zip(structure.units, sens) if u.kind == "stream"]
    assert streams and any(abs(r) > 1e-3 for s in streams for r in s.values())  # cuts cost


def test_a_bottleneck_stream_of_any_width_fuses_into_its_registry_class():
    """A bottleneck stream need not be four times a whole ``planes``: one channel short of
    it (and the narrowest, as wide as the stem) fuses exactly into the registry class, whose
    recorded ``streams`` rebuild it from the state_dict alone."""
    from alphaprune.blend.widths import narrowest
    from alphaprune.models.registry import infer_kwargs

    model = _model("resnet50")
    structure = find_units(model, X[:2], streams=True)
    base = [u.width for u in structure.units]
    short = [w - 1 if u.kind == "stream" else w for u, w in zip(structure.units, base)]
    for widths in (short, narrowest(base, 3)):
        blended = BlendedNet(find_units(copy.deepcopy(model), X[:2], streams=True), widths).eval()
        init_branches(blended, "select", "l1")
        _scramble(blended, seed=1)
        fused = fuse(blended, "resnet50").eval()
        assert type(fused) is type(model)
        with torch.no_grad():
            want, got = blended.set_alpha(0.0)(X), fused(X)
        assert float((want - got).abs().max() / want.abs().max()) <= 1e-5
        streams = [w for u, w in zip(structure.units, widths) if u.kind == "stream"]
        assert infer_kwargs("resnet50", fused.state_dict())["streams"] == streams
        rebuilt = create_model("resnet50", **infer_kwargs("resnet50", fused.state_dict()))
        rebuilt.load_state_dict(fused.state_dict())  # strict: every shape matches
