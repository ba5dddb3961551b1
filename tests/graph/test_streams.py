"""Residual streams as units (``find_units(..., streams=True)``): which convs write each
stream, which layers read it, and why a stream cannot be cut."""

from __future__ import annotations

import torch

from alphaprune.graph import find_units
from alphaprune.models import create_model
from tests.graph.zoo import ZOO, PreActivation, SigmoidStream

X = torch.randn(2, 3, 32, 32)


def _streams(structure):
    return [u for u in structure.units if u.kind == "stream"]


def test_resnet20_has_one_stream_per_stage_written_by_stem_shortcuts_and_block_outputs():
    s = find_units(create_model("resnet20"), X, streams=True)
    streams = _streams(s)
    assert [u.width for u in streams] == [16, 32, 64]
    assert [w.conv for w in streams[0].writers] == ["conv1"] + [f"layer1.{b}.conv2" for b in range(3)]
    assert [w.bn for w in streams[0].writers] == ["bn1"] + [f"layer1.{b}.bn2" for b in range(3)]
    assert [w.conv for w in streams[1].writers] == ["layer2.0.downsample.0"] + [
        f"layer2.{b}.conv2" for b in range(3)]
    assert sorted(c.name for c in streams[0].consumers) == sorted(
        [f"layer1.{b}.conv1" for b in range(3)] + ["layer2.0.conv1", "layer2.0.downsample.0"])
    assert [(c.name, c.kind, c.spatial) for c in streams[2].consumers if c.kind == "linear"] == [
        ("fc", "linear", 1)]
    # graph order: each stream at its first writer, before the block convs that read it
    names = [u.name for u in s.units]
    assert names[0] == "stream@conv1" and names[4] == "stream@layer2.0.downsample.0"
    assert len(names) == 12
    # the writers are units now; only the output layer is left
    assert [k.name for k in s.skipped] == ["fc"]


def test_without_the_option_nothing_changes():
    plain = find_units(create_model("resnet20"), X)
    assert not _streams(plain) and len(plain.units) == 9


def test_bottleneck_streams_start_at_the_first_shortcut():
    s = find_units(create_model("resnet50", width=0.125, num_classes=10), X, streams=True)
    streams = _streams(s)
    assert [u.width for u in streams] == [32, 64, 128, 256]
    assert streams[0].writers[0].conv == "layer1.0.downsample.0"
    assert s.unit("conv1").kind == "conv"  # the stem is not tied: still a unit of its own


def test_writers_without_batchnorm_keep_their_bias():
    s = find_units(ZOO["two_consumers"](), X, streams=True)
    (stream,) = _streams(s)
    assert [(w.conv, w.bn) for w in stream.writers] == [("wide", None), ("point", None)]
    assert [c.name for c in stream.consumers] == ["head"]


def test_a_stream_read_by_batchnorm_is_skipped_with_the_reason():
    s = find_units(PreActivation(), X, streams=True)
    assert not _streams(s)
    reasons = {k.name: k.reason for k in s.skipped}
    (why,) = [r for n, r in reasons.items() if n.startswith("stream@")]
    assert "BatchNorm2d" in why and "cannot absorb B" in why
    assert "stem" in reasons  # its writers stay unprunable


def test_a_stream_through_a_sigmoid_is_skipped():
    s = find_units(SigmoidStream(), X, streams=True)
    assert not _streams(s)
    assert any(k.name.startswith("stream@") and "sigmoid" in k.reason for k in s.skipped)


def test_inspect_lists_the_streams_with_their_writers(capsys):
    import json

    from alphaprune.cli import main

    assert main(["inspect", "--model", "resnet20", "--prune-streams", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    stream = r["units"][0]
    assert stream["kind"] == "stream" and stream["width"] == 16
    assert stream["writers"] == ["conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"]
    assert stream["consumers"][0] == "layer1.0.conv1"
    # every conv and BN of a stream counts: 3 writers of 16x16x9 + the stem's 3x16x9, 4 BNs
    assert stream["params"] == 3 * 16 * 16 * 9 + 3 * 16 * 9 + 4 * 32
    assert r["unprunable"] == [{"name": "fc", "reason": "output layer: its width is the model's output"}]


class _Sum(torch.nn.Module):
    """Two convs summed, then ``act``, read by a 1x1 conv ``head`` (called ``calls`` times)."""

    def __init__(self, act, calls: int = 1):
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(3, 8, 1)
        self.head = torch.nn.Conv2d(8, 4, 1)
        self.act, self.calls = act, calls

    def forward(self, x):
        h = self.act(self.a(x) + self.b(x))
        for _ in range(self.calls - 1):
            h = h + self.head(h).repeat(1, 2, 1, 1)
        return self.head(h)


def test_an_activation_that_may_move_zero_leaves_the_stream_whole():
    s = find_units(_Sum(torch.nn.Hardtanh(0.5, 2.0)), X, streams=True)
    assert not _streams(s)
    assert len(_streams(find_units(_Sum(torch.nn.ReLU6()), X, streams=True))) == 1


def test_a_consumer_called_twice_cannot_absorb_one_b():
    s = find_units(_Sum(torch.nn.ReLU(), calls=2), X, streams=True)
    assert not _streams(s)
    assert any("head is called 2 times" in k.reason for k in s.skipped)
    # (one entry for the stream, however many sums it has)
    assert sum(k.name.startswith("stream@") for k in s.skipped) == 1
