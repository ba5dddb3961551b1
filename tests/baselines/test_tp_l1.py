"""Torch-Pruning L1 sized to a parameter count on every model family, through its own graph."""

from __future__ import annotations

import pytest
import torch

from alphaprune.baselines.tp_l1 import output_layers, torch_pruning_l1
from alphaprune.models import create_model
from alphaprune.report.size import count_params
from tests.graph.zoo import ZOO


@pytest.mark.parametrize("name, width", [("vgg11", 0.125), ("resnet20", 0.5), ("resnet18", 0.125)])
def test_tp_l1_hits_the_parameter_count_and_keeps_the_output(name, width):
    torch.manual_seed(0)
    model = create_model(name, width=width, num_classes=10).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    target = int(0.5 * count_params(model))
    pruned = torch_pruning_l1(model, target, (3, 32, 32))
    assert abs(count_params(pruned) - target) <= 0.005 * count_params(model)
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    after = model.state_dict()  # the original is left whole
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    if name.startswith("resnet"):  # Torch-Pruning cuts the residual stream too, coupled
        assert pruned.conv1.out_channels == pruned.layer1[0].conv2.out_channels
        assert pruned.conv1.out_channels < model.conv1.out_channels


def test_output_layers_come_from_the_graph():
    model = ZOO["tv_vgg"]()
    assert output_layers(model, (3, 32, 32)) == ["classifier.6"]


@pytest.mark.parametrize("name", ["vgg11", "resnet20"])
def test_a_latency_match_runs_as_fast_as_the_reference(name, monkeypatch):
    """Sized to a reference model's measured latency: the bisection keeps the candidate
    whose timing ratio against the reference came closest to 1."""
    from alphaprune.report.size import count_flops

    from ..standins import stand_in_timing

    stand_in_timing(monkeypatch)
    model = create_model(name, width=0.25, num_classes=10).eval()
    reference = create_model(name, width=0.125, num_classes=10).eval()
    shape = (3, 16, 16)
    tp = torch_pruning_l1(model, reference, shape, measure="latency", latency_batch=4)
    ref, got, full = (count_flops(m, shape) for m in (reference, tp, model))
    assert abs(got / ref - 1) <= 0.05 < abs(full / ref - 1)


def test_round_to_keeps_every_cut_width_a_multiple_and_the_count_at_or_above_the_target():
    """Torch-Pruning's ``round_to``: the cut layers' widths are multiples of 8 (the bisection
    alone sizes it, so it keeps at least the target), where the unrounded cut is not."""
    from alphaprune.report.size import count_flops

    torch.manual_seed(0)
    model = create_model("resnet20", width=1.0, num_classes=10).eval()
    shape = (3, 32, 32)
    target = 0.5 * count_flops(model, shape)
    widths = {}
    for r in (None, 8):
        cut = torch_pruning_l1(model, target, shape, "flops", round_to=r)
        widths[r] = {m.out_channels for m in cut.modules() if isinstance(m, torch.nn.Conv2d)}
        n = count_flops(cut, shape)
        # unrounded: trimmed to the closest count; rounded: the bisection's, never below
        assert (abs(n / target - 1) <= 0.01) if r is None else (target <= n <= 1.1 * target)
    assert any(w % 8 for w in widths[None])
    assert all(w % 8 == 0 for w in widths[8]), widths[8]


def test_tp_l1_on_grouped_convs_keeps_them_whole_groups_and_meets_the_count():
    """A ResNeXt's grouped convs: the single-channel trim never leaves a conv whose
    channels are not whole groups (such a cut cannot run), and the count still fits."""
    torch.manual_seed(0)
    model = ZOO["resnext"]().eval()
    target = int(0.5 * count_params(model))
    pruned = torch_pruning_l1(model, target, (3, 32, 32))
    assert abs(count_params(pruned) - target) <= 0.02 * count_params(model)
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    grouped = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert grouped and all(m.in_channels % m.groups == 0 == m.out_channels % m.groups for m in grouped)


def test_tp_l1_prunes_a_c2f_through_its_split_layers_and_merges_them_back():
    """Torch-Pruning's own graph fails on a chunk whose parts enter a concatenation; the
    peer hands it the graph with each split layer rewritten into its parts, and merges them
    back: the count is met and the pruned model has the original's chunked convs."""
    torch.manual_seed(0)
    model = ZOO["yolo_cls"]().eval()
    target = int(0.5 * count_params(model))
    pruned = torch_pruning_l1(model, target, (3, 32, 32))
    assert abs(count_params(pruned) - target) <= 0.005 * count_params(model)
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    splits = [n for n in pruned.graph.nodes if n.target is torch.split]
    assert len(splits) == 2 and all(sum(s.args[1]) == pruned.get_submodule(
        f"{block}.cv1.0").out_channels for block, s in zip(("c2f1", "c2f2"), splits))
    assert isinstance(model.c2f1.cv1[0], torch.nn.Conv2d) and model.c2f1.cv1[0].out_channels == 16
