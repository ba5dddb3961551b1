"""Unit discovery: what is prunable in each layout, and the reason for everything else."""

from __future__ import annotations

import pytest
import torch

from alphaprune.cli import main
from alphaprune.errors import UserError
from alphaprune.graph import find_units, has_sums
from alphaprune.models import create_model
from tests.graph.zoo import ZOO, MidConv, Untraceable

X = torch.randn(2, 3, 32, 32)


def _names(structure):
    return [u.name for u in structure.units], {s.name: s.reason for s in structure.skipped}


def test_resnet20_inner_convs_are_the_units_and_the_stream_is_not():
    units, skipped = _names(find_units(create_model("resnet20"), X))
    assert units == [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)]
    assert "add" in skipped["conv1"]  # the stem writes the residual stream
    for s in (1, 2, 3):
        for b in range(3):
            assert "tied by add" in skipped[f"layer{s}.{b}.conv2"]
    for s in (2, 3):
        assert "tied by add" in skipped[f"layer{s}.0.downsample.0"]
    assert "output layer" in skipped["fc"]
    assert len(skipped) == 13


@pytest.mark.parametrize("name, kwargs, expected", [
    ("resnet20", {}, True), ("resnet50", {"width": 0.25}, True), ("vgg11", {"width": 0.125}, False),
])
def test_has_sums_tells_a_residual_network_from_a_plain_chain(name, kwargs, expected):
    assert has_sums(find_units(create_model(name, **kwargs), X)) is expected


def test_vgg_every_conv_is_a_unit():
    s = find_units(create_model("vgg11", width=0.125), X)
    assert [u.name for u in s.units] == [f"features.{i}.conv" for i in range(8)]
    assert [c.name for c in s.units[-1].consumers] == ["classifier"]
    assert {k.name for k in s.skipped} == {"classifier"}


def test_bottleneck_stem_feeds_two_consumers():
    s = find_units(create_model("resnet50", width=0.125, num_classes=10), X)
    stem = s.unit("conv1")
    assert sorted(c.name for c in stem.consumers) == ["layer1.0.conv1", "layer1.0.downsample.0"]
    assert len(s.units) == 1 + 2 * 16  # the stem and two convs per bottleneck


def test_torchvision_style_vgg_finds_conv_and_linear_units():
    s = find_units(ZOO["tv_vgg"](), X)
    assert [u.name for u in s.units] == ["features.0", "features.3", "classifier.0", "classifier.3"]
    assert s.unit("features.0").bn is None and s.unit("features.3").bn == "features.4"
    flat = s.unit("features.3").consumers
    assert [(c.name, c.kind, c.spatial) for c in flat] == [("classifier.0", "linear", 49)]
    assert "output layer" in {k.name: k.reason for k in s.skipped}["classifier.6"]


def test_a_unit_with_two_consumers_and_tied_outputs():
    units, skipped = _names(find_units(ZOO["two_consumers"](), X))
    assert units == ["conv1"]
    assert "tied by add" in skipped["wide"] and "tied by add" in skipped["point"]


def test_linear_units_with_and_without_batchnorm1d():
    s = find_units(ZOO["linear_units"](), X)
    assert [(u.name, u.kind, u.bn) for u in s.units] == [
        ("conv", "conv", None), ("fc1", "linear", "bn1"), ("fc2", "linear", None)]


def test_a_depthwise_conv_is_cut_with_the_unit_before_it():
    s = find_units(ZOO["depthwise"](), X)
    assert [(u.name, u.tied, [c.name for c in u.consumers]) for u in s.units] == [
        ("conv1", ["mid"], ["conv2"]), ("conv2", [], ["fc"])]
    assert "mid" not in {k.name for k in s.skipped}


def test_a_grouped_conv_is_cut_with_the_unit_before_it_whole_groups_at_a_time():
    s = find_units(MidConv(groups=2), X)
    assert [(u.name, u.tied, u.group) for u in s.units] == [("conv1", ["mid"], 4), ("conv2", [], 1)]
    assert "mid" not in {k.name for k in s.skipped}


def test_resnext_blocks_cut_their_grouped_convs_with_the_conv_before():
    s = find_units(ZOO["resnext"](), X)
    inner = {u.name: (u.tied, u.group) for u in s.units}
    assert inner == {"blocks.0.a.0": (["blocks.0.b.0", "blocks.0.b.1"], 4),
                     "blocks.1.a.0": (["blocks.1.b.0", "blocks.1.b.1"], 8),
                     "blocks.2.a.0": (["blocks.2.b.0", "blocks.2.b.1"], 8)}
    skipped = {k.name: k.reason for k in s.skipped}
    assert "tied by add" in skipped["blocks.0.c.0"] and "tied by add" in skipped["stem.0"]
    # RegNetY: the excitation after the grouped conv joins the unit as well
    s = find_units(ZOO["regnet_y"](), X)
    u = s.unit("blocks.1.a.0")
    assert u.group == 8 and [(ex.reduce, ex.expand) for ex in u.excites] == [
        ("blocks.1.se.fc1", "blocks.1.se.fc2")]
    assert [c.name for c in u.consumers] == ["blocks.1.c.0"]


def test_a_densenet_cuts_its_bottlenecks_and_names_why_its_growth_convs_stay():
    s = find_units(ZOO["densenet"](), X)
    units, skipped = _names(s)
    assert units == [f"block{b}.{i}.conv1" for b in (1, 2) for i in (0, 1)]
    assert [c.name for c in s.unit("block1.1.conv1").consumers] == ["block1.1.conv2"]
    for b in (1, 2):
        for i in (0, 1):
            reason = skipped[f"block{b}.{i}.conv2"]
            assert "enters cat" in reason and "pre-activation" in reason and "BatchNorm" in reason
    assert "no elementwise activation" in skipped["trans.2"]


def test_a_convnext_cuts_the_hidden_features_of_its_token_wise_mlps():
    """Linears on channels-last maps (N, H, W, C) act on the last dim: the MLP's first one
    is a unit whose consumer is the second; the stream (LayerNorm, layer scale, sum) stays."""
    s = find_units(ZOO["convnext"](), X)
    units, skipped = _names(s)
    assert units == ["stage1.pwconv1", "stage2.pwconv1"]
    assert [(c.name, c.kind, c.spatial) for c in s.unit("stage2.pwconv1").consumers] == [
        ("stage2.pwconv2", "linear", 1)]
    assert s.unit("stage1.pwconv1").width == 32
    assert "multiply" in skipped["stage1.pwconv2"] and "output layer" in skipped["head"]


def test_a_token_wise_linear_with_batchnorm1d_or_a_linear_across_a_conv_map_is_no_unit():
    """BatchNorm1d on (N, L, C) normalises L, not the linear's features; a Linear applied
    to a conv unit's NCHW map mixes its columns, not its channels."""
    class Tokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.bn = torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(32)
            self.out = torch.nn.Linear(8, 4)

        def forward(self, x):
            t = x.mean(2).transpose(1, 2)  # 32 tokens of 3 features: (N, 32, 3)
            return self.out(torch.relu(self.bn(self.fc(t)))).mean(1)

    class Columns(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Linear(32, 4)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x))).mean((1, 2))

    units, skipped = _names(find_units(Tokens(), X))
    assert units == [] and "normalises dim 1" in skipped["fc"]
    units, skipped = _names(find_units(Columns(), X))
    assert units == [] and "fc (Linear), which cannot absorb B" in skipped["conv"]


def test_with_streams_a_densenets_other_convs_are_concatenated_streams():
    """The stem, each growth conv and the transition write into concatenations that every
    later layer reads through its own BatchNorm and ReLU: each is a stream of one writer,
    whose consumers take it in through that BatchNorm at its offset in the cat."""
    s = find_units(ZOO["densenet"](), X, streams=True)
    units, skipped = _names(s)
    streams = [u.name for u in s.units if u.kind == "stream"]
    assert streams == ["stream@stem", "stream@block1.0.conv2", "stream@block1.1.conv2",
                       "stream@trans.2", "stream@block2.0.conv2", "stream@block2.1.conv2"]
    assert set(units) - set(streams) == {f"block{b}.{i}.conv1" for b in (1, 2) for i in (0, 1)}
    assert list(skipped) == ["fc"]
    growth = s.unit("stream@block1.0.conv2")
    assert [(c.name, c.offset, c.bn) for c in growth.consumers] == [
        ("block1.1.conv1", 8, "block1.1.norm1"), ("trans.2", 8, "trans.0")]
    assert [(c.name, c.kind, c.offset, c.bn) for c in s.unit("stream@block2.1.conv2").consumers] == [
        ("fc", "linear", 12, "norm")]
    assert all(c.act is not None for u in s.units if u.kind == "stream" for c in u.consumers)


def test_a_concatenation_read_through_a_padded_conv_is_no_stream():
    """DenseNet without bottlenecks: a reader's BatchNorm and ReLU lead to a 3x3 conv with
    padding, where a dropped channel's constant would not be constant at the border."""
    class Dense(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.norm = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(11)
            self.conv = torch.nn.Conv2d(11, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4, 10)

        def forward(self, x):
            h = torch.cat([self.stem(x), x], 1)
            return self.fc(self.conv(torch.relu(self.norm(h))).mean((2, 3)))

    units, skipped = _names(find_units(Dense(), X, streams=True))
    assert "stream@stem" not in units
    assert "concatenated stream" in skipped["stem"] and "without padding" in skipped["stem"]


def test_a_grouped_conv_that_reads_no_unit_is_named_with_its_reason():
    class Stem(torch.nn.Module):  # the grouped conv reads the image: nothing to cut it with
        def __init__(self):
            super().__init__()
            self.g = torch.nn.Conv2d(4, 8, 3, padding=1, groups=2)
            self.fc = torch.nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.g(torch.cat([x, x[:, :1]], 1))).mean((2, 3)))

    units, skipped = _names(find_units(Stem(), X))
    assert units == [] and "grouped conv (groups=2)" in skipped["g"]


def test_mobilenet_v1_every_pointwise_conv_and_the_stem_are_units():
    s = find_units(ZOO["mobilenet_v1"](), X)
    assert [(u.name, u.tied) for u in s.units] == [
        ("features.0", ["features.3.0", "features.3.1"]),
        ("features.3.3", ["features.4.0", "features.4.1"]),
        ("features.4.3", ["features.5.0", "features.5.1"]),
        ("features.5.3", [])]
    assert [k.name for k in s.skipped] == ["fc"]


@pytest.mark.parametrize("bn, unit", [("features.1", "features.0"),  # the unit's own BN
                                     ("features.4.1", "features.3.3")])  # its depthwise conv's
def test_a_batchnorm_without_running_statistics_leaves_its_unit_whole_and_says_why(bn, unit):
    model = ZOO["mobilenet_v1"]()
    model.set_submodule(bn, torch.nn.BatchNorm2d(model.get_submodule(bn).num_features,
                                                 track_running_stats=False))
    units, skipped = _names(find_units(model, X))
    assert unit not in units and len(units) == 3
    assert f"BatchNorm {bn} keeps no running statistics" in skipped[unit]


def test_mobilenet_v2_expansions_are_units_and_projections_write_streams():
    s = find_units(ZOO["mobilenet_v2"](), X)
    units, skipped = _names(s)
    assert units == ["blocks.0.expand.0", "blocks.1.expand.0", "blocks.2.expand.0", "head.0"]
    assert s.unit("blocks.1.expand.0").tied == ["blocks.1.dw.0", "blocks.1.dw.1"]
    assert "tied by add" in skipped["stem.0"] and "tied by add" in skipped["blocks.0.project.0"]
    s = find_units(ZOO["mobilenet_v2"](), X, streams=True)
    assert [u.name for u in s.units if u.kind == "stream"] == ["stream@stem.0",
                                                                "stream@blocks.1.project.0"]
    assert [k.name for k in s.skipped] == ["fc"]


@pytest.mark.parametrize("name, excited", [
    ("mobilenet_v3", {"stem.0": ("blocks.0.se.fc1", "blocks.0.se.fc2"),
                      "blocks.1.expand.0": ("blocks.1.se.fc1", "blocks.1.se.fc2"),
                      "blocks.2.expand.0": ("blocks.2.se.fc1", "blocks.2.se.fc2")}),
    ("efficientnet", {"exp": ("se1", "se2")}),  # functions: mean, F.silu, torch.sigmoid
])
def test_a_squeeze_and_excitation_block_is_cut_with_the_unit_under_it(name, excited):
    """The block's two 1x1 convs read and write the unit's channels: they are cut with it,
    not units of their own, and the unit reaches the layer after the multiply."""
    s = find_units(ZOO[name](), X)
    units, skipped = _names(s)
    for unit, (reduce, expand) in excited.items():
        (ex,) = s.unit(unit).excites
        assert (ex.reduce, ex.expand) == (reduce, expand) and ex.mul in s.unit(unit).post
        assert reduce not in units and expand not in units
        assert reduce not in skipped and expand not in skipped
    assert [u.name for u in s.units if u.excites] == list(excited)
    if name == "mobilenet_v3":
        assert s.unit("stem.0").tied == ["blocks.0.dw.0", "blocks.0.dw.1"]
        assert [c.name for c in s.unit("stem.0").consumers] == ["blocks.0.project.0"]


class _SpatialGate(torch.nn.Module):
    """x * sigmoid(conv(x)): a gate per position, not per channel: it still ties channels."""

    def __init__(self, squeeze: bool):
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.gate = torch.nn.Conv2d(8, 8, 1)
        self.head = torch.nn.Conv2d(8, 4, 1)
        self.squeeze = squeeze

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        g = x.mean((2, 3), keepdim=True) if self.squeeze else x
        # squeezed but with no activation between the convs: not the block either
        return self.head(x * torch.sigmoid(self.gate(g)))


@pytest.mark.parametrize("squeeze", [False, True])
def test_a_multiply_that_is_not_squeeze_and_excitation_still_ties_channels(squeeze):
    units, skipped = _names(find_units(_SpatialGate(squeeze), X))
    # the reason names the first use that cannot absorb B: the multiply, or the mean
    assert "conv" not in units
    assert ("call_method mean" if squeeze else "tied by multiply") in skipped["conv"]


def test_a_depthwise_conv_with_a_channel_multiplier_is_not_taken_in():
    class Multiplier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 8, 1)
            self.dw = torch.nn.Conv2d(8, 16, 3, padding=1, groups=8)
            self.fc = torch.nn.Linear(16, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.dw(torch.relu(self.conv1(x)))).mean((2, 3)))

    units, skipped = _names(find_units(Multiplier(), X))
    assert units == [] and "grouped conv (groups=8)" in skipped["dw"]


def test_untraceable_model_names_the_module():
    with pytest.raises(UserError, match=r"cannot trace Untraceable at module 'gate'.*control flow"):
        find_units(Untraceable(), X)


def test_inspect_json_lists_units_and_reasons(capsys):
    import json

    assert main(["inspect", "--model", "resnet20", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert [u["name"] for u in r["units"]][:3] == ["layer1.0.conv1", "layer1.1.conv1", "layer1.2.conv1"]
    assert len(r["units"]) == 9 and {"name": "fc", "reason": "output layer: its width is the "
                                     "model's output"} in r["unprunable"]
    assert 0.9 < r["prunable_param_share"] < 1 and 0.9 < r["prunable_flop_share"] < 1


def test_inspect_names_the_depthwise_layers_cut_with_each_unit(capsys):
    import json

    args = ["inspect", "--model", "mobilenet_v2_cifar", "--width", "0.5"]
    assert main([*args, "--json"]) == 0
    units = json.loads(capsys.readouterr().out)["units"]
    # the stem is cut with the first block's depthwise conv and its BN; a block's
    # expansion with its own depthwise conv
    assert units[0]["cut_with"] == ["features.1.conv.0.0", "features.1.conv.0.1"]
    assert units[1]["cut_with"] == ["features.2.conv.1.0", "features.2.conv.1.1"]
    assert units[-1]["cut_with"] == []  # the last conv feeds the classifier
    assert main(args) == 0
    assert "(cut with features.1.conv.0.0, features.1.conv.0.1)" in capsys.readouterr().out


def test_inspect_shows_a_grouped_conv_cut_whole_groups(capsys, tmp_path):
    import json

    path = tmp_path / "midconv.py"
    path.write_text("from tests.graph.zoo import MidConv\n\ndef make():\n    return MidConv(groups=2)\n")
    assert main(["inspect", "--model", f"{path}:make", "--json"]) == 0
    units = {u["name"]: u for u in json.loads(capsys.readouterr().out)["units"]}
    assert units["conv1"]["group"] == 4 and units["conv1"]["cut_with"] == ["mid"]
    assert units["conv2"]["group"] == 1
    assert main(["inspect", "--model", f"{path}:make"]) == 0
    assert "(cut with mid; whole groups of 4)" in capsys.readouterr().out


def test_inspect_text_and_bad_input(capsys, tmp_path):
    assert main(["inspect", "--model", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "9 prunable units" in out and "layer2.0.downsample.0" in out
    assert main(["inspect"]) == 2
    assert "--model" in capsys.readouterr().err


def test_units_reach_their_consumers_through_a_cat_at_their_offsets():
    s = find_units(ZOO["inception"]().eval(), X)
    got = {u.name: [(c.name, c.kind, c.spatial, c.offset) for c in u.consumers] for u in s.units}
    assert got == {
        "stem.0": [("b1.0", "conv", 1, 0), ("b2.0.0", "conv", 1, 0), ("b3.0", "conv", 1, 0)],
        "b1.0": [("mix.0", "conv", 1, 0), ("side", "conv", 1, 0)],
        "b2.0.0": [("b2.1.0", "conv", 1, 0)],
        "b2.1.0": [("mix.0", "conv", 1, 8), ("side", "conv", 1, 8)],
        "b3.0": [("mix.0", "conv", 1, 20), ("side", "conv", 1, 20)],
        "mix.0": [("head", "linear", 1, 0), ("aux", "linear", 4, 0)]}
    assert "no elementwise activation" in {k.name: k.reason for k in s.skipped}["side"]


class _Cats(torch.nn.Module):
    """Three branch units joined by ``torch.cat`` in one of several ways, read by a conv."""

    def __init__(self, how: str):
        super().__init__()
        nn = torch.nn
        self.how = how
        self.a, self.b, self.c = (nn.Sequential(nn.Conv2d(3, w, 1), nn.BatchNorm2d(w), nn.ReLU())
                                  for w in (8, 4, 6))
        self.s1, self.s2 = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1)  # a stream's writers
        cin = {"twice": 22, "paths": 22, "poolbranch": 36, "poolsame": 36}.get(how, 18)
        self.proj = nn.Conv2d(18, 18, 1)
        self.read = nn.Conv2d(cin, 10, 3, padding=1)
        self.head = nn.Linear(10, 5)

    def forward(self, x):
        a, b, c = self.a(x), self.b(x), self.c(x)
        if self.how == "nested":
            h = torch.cat([c, torch.cat([a, b], 1)], 1)
        elif self.how == "concat":
            h = torch.concatenate((c, torch.concat([a, b], dim=1)), dim=1)
        elif self.how == "twice":
            h = torch.cat([a, b, c, b], 1)
        elif self.how == "paths":  # b enters each cat once, so the conv reads it twice
            h = torch.cat([torch.cat([a, b], 1), c, b], 1)
        elif self.how == "maxpool":
            h = torch.nn.functional.max_pool2d(torch.cat([a, b, c], 1), 2)
        elif self.how in ("poolbranch", "poolsame"):  # a GoogLeNet block's pooling branch
            h = torch.cat([a, b, c], 1)
            p = torch.nn.functional.max_pool2d(h, 3, 1, 1)
            h = torch.cat([h, torch.relu(self.proj(p)) if self.how == "poolbranch" else p], 1)
        elif self.how == "rows":
            h = torch.cat([a, a], 2)[:, :, ::2].repeat(1, 3, 1, 1)[:, :18]
        else:  # "stream": a residual sum entering the cat
            h = torch.cat([torch.relu(self.s1(x) + self.s2(x)), b, c], 1)
        return self.head(torch.relu(self.read(h)).mean((2, 3)))


@pytest.mark.parametrize("how", ["nested", "concat"])
def test_a_nested_cat_adds_up_the_offsets(how):
    s = find_units(_Cats(how).eval(), X)
    assert {u.name: [(c.name, c.offset) for c in u.consumers] for u in s.units} == {
        "a.0": [("read", 6)], "b.0": [("read", 14)], "c.0": [("read", 0)], "read": [("head", 0)]}


def test_a_max_pool_of_a_cat_is_split_into_one_pool_per_unit():
    """max_pool2d(cat([a, b, c])) is rewritten as cat of the pooled parts: the same values,
    and each unit's chain ends with its own pool."""
    model = _Cats("maxpool").eval()
    s = find_units(model, X)
    assert {u.name: ([(c.name, c.offset) for c in u.consumers], len(u.post)) for u in s.units} \
        == {"a.0": ([("read", 0)], 1), "b.0": ([("read", 8)], 1), "c.0": ([("read", 12)], 1),
            "read": ([("head", 0)], 0)}
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(s.gm(x), model(x))


def test_a_max_pool_beside_other_layers_is_a_tap_of_each_unit_it_reads():
    """GoogLeNet's block input feeds convs and a max-pooled branch: after the split each
    unit's output feeds the cat and its own pool, a tap that reaches the branch's conv."""
    s = find_units(_Cats("poolbranch").eval(), X)
    got = {u.name: ([(c.name, c.offset) for c in u.consumers], [[n.op for n in t] for t in u.taps])
           for u in s.units}
    tap = [["call_function"]]
    assert got == {"a.0": ([("read", 0), ("proj", 0)], tap), "b.0": ([("read", 8), ("proj", 8)], tap),
                   "c.0": ([("read", 12), ("proj", 12)], tap), "proj": ([("read", 18)], []),
                   "read": ([("head", 0)], [])}


@pytest.mark.parametrize("how, unit, words", [
    ("twice", "b.0", "enters cat"),
    ("paths", "b.0", "reaches read twice"),
    ("poolsame", "a.0", "reaches read twice"),  # pooled and not: one B on two slices
    ("rows", "a.0", "not a concatenation of channels"),
])
def test_a_cat_that_cannot_absorb_b_leaves_its_units_out_with_the_reason(how, unit, words):
    units, skipped = _names(find_units(_Cats(how).eval(), X))
    assert unit not in units and words in skipped[unit], skipped[unit]


def test_a_residual_stream_entering_a_cat_is_not_cut():
    s = find_units(_Cats("stream").eval(), X, streams=True)
    assert [u.name for u in s.units if u.kind == "stream"] == []
    reasons = [k.reason for k in s.skipped if k.name.startswith("stream@")]
    assert len(reasons) == 1 and "cat" in reasons[0], reasons


def test_a_deep_structure_copies_with_its_units_pointing_into_the_copied_graph():
    """A copy of a branched network (the feature term's teacher) copies its structure: on a
    graph of 300 nodes the units' node references must not recurse node by node."""
    import copy

    from alphaprune.blend import BlendedNet

    layers = [m for _ in range(150) for m in (torch.nn.Conv2d(4, 4, 1), torch.nn.ReLU())]
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), *layers, torch.nn.Flatten(),
                                torch.nn.Linear(4 * 32 * 32, 3)).eval()
    structure = find_units(model, X)
    blended = BlendedNet(structure, [2] * len(structure.units))
    twin = copy.deepcopy(blended)
    s, t = blended.structure, twin.structure
    nodes = set(t.gm.graph.nodes)
    assert all(u.act in nodes and u.out in nodes for u in t.units) and t.gm is not s.gm
    assert t.units[0].act.name == s.units[0].act.name and t.units[0].act is not s.units[0].act
    with torch.no_grad():
        assert torch.equal(twin.eval().set_alpha(0.5)(X), blended.eval().set_alpha(0.5)(X))


def test_keep_whole_takes_the_named_units_out_and_their_layers_count_as_fixed():
    """--keep: a unit named, inside a named module, or matched by a pattern leaves the units
    (listed as kept whole); the cost model then counts its layer as fixed."""
    from alphaprune.graph import CostModel, keep_whole
    from alphaprune.graph.units import kept_units

    full = find_units(create_model("resnet20"), X)
    kept = keep_whole(full, ["layer1.0", "layer3.*.conv1"])
    units, skipped = _names(kept)
    assert units == [f"layer{s}.{b}.conv1" for s in (1, 2) for b in range(3) if (s, b) != (1, 0)]
    assert kept_units(kept) == ["layer1.0.conv1", "layer3.0.conv1", "layer3.1.conv1",
                                "layer3.2.conv1"]
    assert skipped["layer1.0.conv1"] == "kept whole (--keep layer1.0)"
    assert skipped["layer3.2.conv1"] == "kept whole (--keep layer3.*.conv1)"
    assert keep_whole(full, None) is full and _names(full)[0][0] == "layer1.0.conv1"  # untouched
    base, cost = [u.width for u in kept.units], CostModel(kept)
    assert cost.params(base) == CostModel(full).params([u.width for u in full.units])
    # at the narrowest widths, the kept units still hold all their channels
    narrow_full = CostModel(full).params([1] * len(full.units))
    assert cost.params([1] * len(base)) > narrow_full
    with pytest.raises(UserError, match="matches no prunable unit"):
        keep_whole(full, ["layer1.0.conv2"])  # a stream writer, not a unit
    # with the streams cut, a stream is kept whole when a pattern names one of its writers
    streams = find_units(create_model("resnet20"), X, streams=True)
    kept = kept_units(keep_whole(streams, ["layer3"]))
    assert kept == ["stream@layer3.0.downsample.0", "layer3.0.conv1", "layer3.1.conv1",
                    "layer3.2.conv1"]
    assert kept_units(keep_whole(streams, ["layer2.1.conv2"])) == ["stream@layer2.0.downsample.0"]


def test_inspect_previews_the_units_keep_keeps_whole(capsys):
    import json

    assert main(["inspect", "--model", "vgg11", "--width", "0.125", "--keep", "features.0",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert [u["name"] for u in r["units"]][0] == "features.1.conv" and len(r["units"]) == 7
    assert {"name": "features.0.conv", "reason": "kept whole (--keep features.0)"} in r["unprunable"]
    assert main(["inspect", "--model", "vgg11", "--keep", "fc"]) == 2
    assert "--keep 'fc' matches no prunable unit" in capsys.readouterr().err
