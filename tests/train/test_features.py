"""Feature distillation (``--feature-distill``): unit taps, the pretrained teacher and the loss."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from alphaprune.blend import BlendedNet
from alphaprune.blend.branch import StreamUnit
from alphaprune.blend.init import init_branches
from alphaprune.graph import find_units
from alphaprune.models import create_model
from alphaprune.train.blend_module import BlendModule
from alphaprune.train.features import OriginalNet, UnitTaps, compared_units, feature_loss
from tests.blend.test_sensitivity import distinct_bn

X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
Y = torch.tensor([0, 1, 2, 3])


def _blended(streams: bool) -> tuple[nn.Module, BlendedNet]:
    torch.manual_seed(0)
    model = distinct_bn(create_model("resnet20", width=0.5, num_classes=10), bias=0.2).eval()
    pretrained = copy.deepcopy(model)
    structure = find_units(model, X[:2], streams=streams)
    blended = BlendedNet(structure, [max(1, u.width // 2) for u in structure.units],
                         handover="stochastic")
    init_branches(blended, "select", "l1")
    return pretrained, blended


@pytest.mark.parametrize("streams", [False, True])
def test_the_teacher_is_the_pretrained_network_and_taps_every_unit(streams):
    pretrained, blended = _blended(streams)
    teacher = OriginalNet(blended)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    n_streams = sum(len(u.writers) for u in blended.features if isinstance(u, StreamUnit))
    assert (n_streams > 0) is streams
    assert compared_units(blended.structure) == list(range(len(blended.features)))
    assert len(teacher.taps.modules) == len(blended.features) - (3 if streams else 0) + n_streams
    with torch.no_grad(), teacher.taps.recording():
        assert torch.equal(teacher(X), pretrained(X))
        assert all(o is not None for o in teacher.taps.outputs)
    assert all(o is None for o in teacher.taps.outputs)  # nothing is kept after recording


@pytest.mark.parametrize("name", ["resnet56", "resnet50"])
def test_the_teacher_of_a_deep_registry_network_is_its_pretrained_network(name):
    """The teacher copies the branched network, traced graph and all: on resnet56 (201
    nodes) and resnet50 that copy once exceeded Python's recursion limit."""
    torch.manual_seed(0)
    model = create_model(name, width=0.125 if name == "resnet50" else 0.5, num_classes=10).eval()
    structure = find_units(model, X[:2], streams=True)
    teacher = OriginalNet(BlendedNet(structure, [max(1, u.width // 2) for u in structure.units]))
    with torch.no_grad():
        assert torch.equal(teacher(X), model(X))


@pytest.mark.parametrize("streams", [False, True])
def test_the_loss_is_zero_on_the_original_paths_and_positive_on_the_branches(streams):
    _, blended = _blended(streams)
    teacher = OriginalNet(blended)
    taps = UnitTaps(blended)
    blended.eval()
    n = len(blended.features)
    with torch.no_grad(), taps.recording(), teacher.taps.recording():
        teacher(X)
        blended.run(X, [1.0] * n)
        assert float(feature_loss(taps, teacher.taps)) == 0.0
        blended.run(X, [0.0] * n)
        assert float(feature_loss(taps, teacher.taps)) > 0.01


def test_a_stream_writer_is_compared_on_the_channels_it_keeps():
    _, blended = _blended(True)
    teacher = OriginalNet(blended)
    taps = UnitTaps(blended)
    writer = next(m for m in taps.modules if hasattr(m, "idx"))
    i = taps.modules.index(writer)
    with torch.no_grad(), taps.recording(), teacher.taps.recording():
        teacher(X)
        blended.eval().run(X, [1.0] * len(blended.features))
        base = float(feature_loss(taps, teacher.taps))
        dropped = torch.ones(writer.conv.out_channels, dtype=torch.bool)
        dropped[writer.idx] = False
        teacher.taps.outputs[i] = teacher.taps.outputs[i].clone()
        teacher.taps.outputs[i][:, dropped] += 5.0  # a change where the stream is cut ...
        assert float(feature_loss(taps, teacher.taps)) == base
        teacher.taps.outputs[i][:, writer.idx[:1]] += 5.0  # ... and where it is kept
        assert float(feature_loss(taps, teacher.taps)) > base


@pytest.mark.parametrize("teacher_first", [True, False])
def test_a_copy_of_the_network_does_not_record_into_the_students_taps(teacher_first):
    _, blended = _blended(False)
    teacher = OriginalNet(blended) if teacher_first else None  # first, as prune does
    taps = UnitTaps(blended)
    teacher = teacher or OriginalNet(blended)  # a copy made later carries the student's hooks
    n = len(blended.features)
    with torch.no_grad(), taps.recording(), teacher.taps.recording():
        teacher(X)
        assert all(o is None for o in taps.outputs)
        blended.eval().run(X, [0.0] * n)
        assert all(o is not None for o in taps.outputs)
        assert float(feature_loss(taps, teacher.taps)) > 0.01  # not the teacher against itself


def test_the_loss_is_the_mean_over_units_and_stream_writers_on_their_kept_channels():
    _, blended = _blended(True)
    teacher = OriginalNet(blended)
    taps = UnitTaps(blended)
    with torch.no_grad(), taps.recording(), teacher.taps.recording():
        teacher(X)
        blended.eval().run(X, [0.0] * len(blended.features))
        total = float(feature_loss(taps, teacher.taps))
        errors = []
        for m, s, t in zip(taps.modules, taps.outputs, teacher.taps.outputs):
            if hasattr(m, "idx"):
                s, t = s[:, m.idx], t[:, m.idx]
            errors.append(float((s - t).pow(2).mean() / t.pow(2).mean()))
    assert sum(hasattr(m, "idx") for m in taps.modules) > 3  # streams of several writers
    assert total == pytest.approx(sum(errors) / len(errors), rel=1e-5)


def test_a_unit_with_dropout_is_left_out_and_a_dead_one_is_bounded():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Dropout(0.5), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    blended = BlendedNet(find_units(model, X[:2]), [4, 4, 4])
    init_branches(blended, "select", "l1")
    teacher = OriginalNet(blended)
    taps = UnitTaps(blended)
    assert taps.modules == [blended.features[0], blended.features[2]]
    assert blended.features[1] not in taps.modules  # the unit with dropout
    with torch.no_grad(), taps.recording(), teacher.taps.recording():
        teacher(X)
        blended.eval().run(X, [0.0] * 3)
        teacher.taps.outputs[0] = torch.zeros_like(teacher.taps.outputs[0])  # dead on the batch
        got = float(feature_loss(taps, teacher.taps))
        dead = float(taps.outputs[0].pow(2).mean())
        t1, s1 = teacher.taps.outputs[1], taps.outputs[1]
        live = float((s1 - t1).pow(2).mean() / t1.pow(2).mean())
    assert got == pytest.approx((dead + live) / 2, rel=1e-5)  # plain squared error, bounded


def test_training_on_the_feature_loss_brings_the_branches_to_the_units():
    _, blended = _blended(False)
    teacher = OriginalNet(blended)
    taps = UnitTaps(blended)
    blended.train().set_alpha(0.0)
    opt = torch.optim.Adam([p for n, p in blended.named_parameters() if ".A." in n or ".B." in n
                            or "bn2" in n], lr=0.02)
    losses = []
    for _ in range(30):
        with taps.recording(), teacher.taps.recording():
            with torch.no_grad():
                teacher(X)
            blended(X)
            loss = feature_loss(taps, teacher.taps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses


def test_the_module_adds_the_weighted_feature_term_to_the_logit_loss():
    _, blended = _blended(False)
    teacher = OriginalNet(blended)
    plain = BlendModule(copy.deepcopy(blended), teacher=teacher, distill=0.5)
    with_features = BlendModule(blended, teacher=teacher, distill=0.5, features=2.0)
    blended.set_alpha(0.0).train()
    plain.model.set_alpha(0.0).train()
    with with_features._taps.recording(), teacher.taps.recording():
        logits = with_features(X)
        loss, ce = with_features.training_loss(logits, X, Y)
        extra = feature_loss(with_features._taps, teacher.taps)
    base, ce_plain = plain.training_loss(plain(X), X, Y)
    assert float(extra) > 0.01
    assert float(loss) == pytest.approx(float(base) + 2.0 * float(extra), rel=1e-5)
    assert float(ce) == pytest.approx(float(ce_plain), rel=1e-6)


def test_the_feature_term_runs_the_teacher_itself_without_logit_distillation():
    _, blended = _blended(False)
    teacher = OriginalNet(blended)
    module = BlendModule(blended, teacher=teacher, distill=0.0, features=1.0)
    blended.set_alpha(0.0).train()
    with module._taps.recording(), teacher.taps.recording():
        loss, ce = module.training_loss(module(X), X, Y)
    assert float(loss) > float(ce) > 0


def test_feature_distillation_needs_the_original_network_as_teacher():
    _, blended = _blended(False)
    with pytest.raises(ValueError, match="OriginalNet"):
        BlendModule(blended, teacher=copy.deepcopy(blended), distill=0.5, features=1.0)
    with pytest.raises(ValueError, match="features"):
        BlendModule(blended, teacher=OriginalNet(blended), distill=0.5, features=-1.0)


def test_compared_units_are_the_streams_and_the_units_without_dropout():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Dropout2d(0.5), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()
    assert compared_units(find_units(model, X[:2])) == [0, 2]

    class Functional(nn.Module):  # dropout as a function after the only unit
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 10)

        def forward(self, x):
            x = nn.functional.dropout(torch.relu(self.conv(x)), 0.2, self.training)
            return self.fc(x.mean((2, 3)))

    assert compared_units(find_units(Functional().eval(), X[:2])) == []
