"""The sensitivity width solver: exact cuts by zeroing, and the greedy allocation."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from alphaprune.blend import BlendedNet, fuse
from alphaprune.blend.init import init_branches
from alphaprune.blend.sensitivity import (
    _importance,
    channel_orders,
    cut_score,
    solve_by_sensitivity,
    tuned_cut_score,
    unit_sensitivity,
    width_grid,
)
from alphaprune.blend.widths import solve_widths
from alphaprune.errors import UserError
from alphaprune.graph import CostModel, find_units
from alphaprune.models import create_model


class FlatHead(nn.Module):
    """A conv unit read by a linear after a flatten (4 inputs per channel), then a linear
    unit: the cut must zero every position of a dropped channel."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.bn = nn.BatchNorm2d(12)
        self.fc1 = nn.Linear(12 * 4, 20)
        self.fc2 = nn.Linear(20, 5)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "flathead":
        m = FlatHead()
    elif name == "inception":
        from tests.graph.zoo import Inception
        m = Inception(num_classes=5)
    elif name in ("mobilenet_v3", "regnet_y", "convnext"):  # excitations, grouped convs, MLPs
        from tests.graph.zoo import ZOO
        m = ZOO[name](num_classes=5)
        # statistics of the data: random ones shrink the signal block by block to nothing
        for b in m.modules():
            if isinstance(b, nn.BatchNorm2d):
                b.momentum = None
        with torch.no_grad():
            m.train()(torch.randn(64, 3, 8, 8))
        return m.eval()
    elif name == "vgg11":
        m = create_model("vgg11", width=0.125, num_classes=5)
    else:
        m = create_model("resnet20", width=0.5, num_classes=5)
    return distinct_bn(m).eval()


@torch.no_grad()
def distinct_bn(m: nn.Module, bias: float = 0.0) -> nn.Module:
    """Random BatchNorm statistics and scales (and biases, at ``bias`` > 0), so that a cut
    changes the output; returns ``m``."""
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.3)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.uniform_(0.5, 1.5)
            if bias:
                mod.bias.normal_(0, bias)
    return m


@pytest.mark.parametrize("base, round_to, want", [
    (16, 8, [8, 16]), (4, 8, [1, 2, 3, 4]), (20, 8, [8, 16, 20]),
    (128, 8, [8, 24, 40, 56, 80, 96, 112, 128]), (3, 1, [1, 2, 3]),
])
def test_the_grid_is_ascending_multiples_that_end_at_the_base(base, round_to, want):
    assert width_grid(base, round_to) == want


@pytest.mark.parametrize("base, round_to, group, want", [
    (16, 8, 4, [8, 16]), (16, 1, 4, [4, 8, 12, 16]), (48, 8, 12, [24, 48]), (8, 8, 8, [8]),
])
def test_a_grouped_units_grid_is_whole_groups(base, round_to, group, want):
    assert width_grid(base, round_to, group=group) == want


@pytest.mark.parametrize("name", ["vgg11", "resnet20", "flathead", "inception", "mobilenet_v3",
                                  "regnet_y", "convnext"])
def test_a_cut_measured_by_zeroing_equals_the_fused_network_at_that_width(name):
    """What the solver scores is exactly the network objective selection starts its α = 0
    path from: the same channels (select, L1), the same loss."""
    model = _model(name)
    x = torch.randn(40, 3, 8, 8)
    y = torch.randint(0, 5, (40,))
    structure = find_units(model, x[:2])
    sens = unit_sensitivity(structure, x, y, round_to=1, levels=3)
    full = float(F.cross_entropy(model(x), y))
    for i, u in enumerate(structure.units):
        for w, rise in sens[i].items():
            widths = [v.width for v in structure.units]
            widths[i] = w
            blended = BlendedNet(find_units(copy.deepcopy(model), x[:2]), widths)
            init_branches(blended, "select", "l1")
            fused = fuse(blended).eval()
            want = float(F.cross_entropy(fused(x), y)) - full
            assert rise == pytest.approx(want, abs=1e-5), (u.name, w)
    assert any(r > 1e-3 for s in sens for r in s.values())  # cuts do cost something
    for u, s in zip(structure.units, sens):  # a grouped conv's unit: whole groups only
        assert all(w % u.group == 0 for w in s)


def test_the_act_score_of_a_token_wise_linear_is_each_features_mean():
    """On (N, H, W, C) maps the ``act`` score averages each hidden feature over the batch
    and every position: one value per feature, as ``select`` ranks them."""
    model = _model("convnext")
    x = torch.randn(8, 3, 8, 8)
    structure = find_units(model, x[:2])
    got = _importance(structure.gm, structure.units[0], "act", x)
    b = model.stage1
    want = b.act(b.pwconv1(b.norm(b.dwconv(model.stem(x)).permute(0, 2, 3, 1)))).mean((0, 1, 2))
    torch.testing.assert_close(got, want)


def test_the_solver_cuts_the_insensitive_unit_and_meets_the_target():
    """Two units of equal cost per channel: the one whose cuts cost no loss is cut first."""
    base = [16, 16]

    def count(ws):
        return 10 * ws[0] + 10 * ws[1] + 5

    grid = width_grid(16, 1, levels=16)
    sens = [{w: (16 - w) * 1.0 for w in grid}, {w: (16 - w) * 0.01 for w in grid}]
    ws = solve_by_sensitivity(base, count, 0.4, 1, sens)
    assert ws[0] == 16 and ws[1] < 16
    assert abs(count(ws) - 0.6 * count(base)) <= 10
    flipped = solve_by_sensitivity(base, count, 0.4, 1, sens[::-1])
    assert flipped == ws[::-1]


def test_the_solver_weighs_loss_against_cost():
    """Unit 0 loses twice as much per channel but a channel of it costs four times as much:
    per unit of cost it is the cheaper cut."""
    base = [16, 16]

    def count(ws):
        return 40 * ws[0] + 10 * ws[1]

    grid = width_grid(16, 1, levels=16)
    sens = [{w: (16 - w) * 2.0 for w in grid}, {w: (16 - w) * 1.0 for w in grid}]
    ws = solve_by_sensitivity(base, count, 0.3, 1, sens)
    assert ws[0] < 16 and ws[1] == 16


@pytest.mark.parametrize("measure", ["params", "flops"])
def test_it_meets_a_target_within_a_point_on_a_real_graph(measure):
    model = _model("vgg11")
    x = torch.randn(30, 3, 32, 32)
    y = torch.randint(0, 5, (30,))
    structure = find_units(model, x[:2])
    cost = CostModel(structure)
    sens = unit_sensitivity(structure, x, y, round_to=2)
    count = getattr(cost, measure)
    for prune in (0.3, 0.6):
        ws = solve_by_sensitivity(cost.base_widths, count, prune, 2, sens, option="--flops")
        assert abs(count(ws) / count(cost.base_widths) - (1 - prune)) <= 0.01
        assert all(w % 2 == 0 and 2 <= w <= b for w, b in zip(ws, cost.base_widths))


def test_coarse_widths_fall_back_to_the_uniform_cut_when_the_greedy_one_cannot_fit():
    """vgg11 at width 1/16 on 16x16 digits with widths in steps of 8: a loss that makes
    every cut but three convs' expensive leaves the greedy walk 1.4 points past the FLOPs
    target with no single step closer; the uniform ratio's widths come within half a point."""
    model = create_model("vgg11", width=0.0625, num_classes=10, in_channels=1).eval()
    cost = CostModel(find_units(model, torch.zeros(2, 1, 16, 16)))
    base = cost.base_widths
    sens = [{w: 0.0 if i in (2, 3, 5) else 10.0 * (b - w) for w in width_grid(b, 8)}
            for i, b in enumerate(base)]
    ws = solve_by_sensitivity(base, cost.flops, 0.5, 8, sens, option="--flops")
    assert abs(cost.flops(ws) / cost.flops(base) - 0.5) <= 0.005
    assert ws == solve_widths(base, cost.flops, 0.5, 8, option="--flops")


def test_an_unreachable_target_is_a_user_error():
    with pytest.raises(UserError, match="--flops 0.99 cannot be reached"):
        solve_by_sensitivity([16, 16], lambda ws: ws[0] + ws[1] + 100, 0.99, 8,
                             [{8: 1.0, 16: 0.0}] * 2, option="--flops")


@pytest.mark.parametrize("name", ["vgg11", "resnet20"])
def test_a_tuned_cut_trains_a_copy_toward_the_uncut_network(name, monkeypatch):
    """With no steps the tuned score is the one-shot score; with steps a copy of the cut
    network is trained with its cut (the labels here: the uncut network's own) and scores
    better than untrained; the network the solver cuts and the caller's random state are
    left as they were."""
    import alphaprune.blend.sensitivity as sens_mod
    from alphaprune.data import normalize

    model = _model(name)
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
    images = torch.randint(0, 256, (240, 3, 16, 16), dtype=torch.uint8)
    x = normalize(images, mean, std)
    with torch.no_grad():
        y = model(x).argmax(1)
    structure = find_units(model, x[:2], streams=name == "resnet20")
    assert any(u.kind == "stream" for u in structure.units) == (name == "resnet20")
    before = copy.deepcopy(structure.gm.state_dict())
    widths = [max(1, u.width // 4) for u in structure.units]
    orders = channel_orders(structure, "l1", x[:50])
    args = (x[:80], y[:80], x[80:160], orders, images[80:], y[80:], mean, std)
    one_shot = cut_score(structure, widths, *args[:4])
    assert one_shot[0] < 0.9  # the cut costs accuracy on the uncut network's labels
    assert tuned_cut_score(structure, widths, *args, steps=0) == one_shot
    calls = []

    def counting(real):  # count every use of the cut's hooks
        def make(*a, **k):
            inner = real(*a, **k)
            return lambda *h: calls.append(1) or inner(*h)
        return make

    for hook in ("_zeroing_hook", "_output_zeroing_hook"):
        monkeypatch.setattr(sens_mod, hook, counting(getattr(sens_mod, hook)))
    state = torch.get_rng_state()
    acc, loss = tuned_cut_score(structure, widths, *args, steps=40)
    assert torch.equal(torch.get_rng_state(), state)
    assert len(calls) >= 40  # every training step ran through the cut
    assert loss < one_shot[1] - 0.05 and acc >= one_shot[0]
    assert tuned_cut_score(structure, widths, *args, steps=40) == (acc, loss)  # seeded
    after = structure.gm.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


@pytest.mark.parametrize("name", ["resnet20_streams", "inception", "googlenet"])
def test_the_table_from_forks_equals_a_full_pass_per_cut(name):
    """The table shares each batch's uncut prefix among the cuts: the numbers are exactly
    those of one whole forward pass per cut and batch (the table as it was measured before)."""
    from alphaprune.blend.sensitivity import _cut

    def whole_pass_loss(gm, x, y, batch):  # the table's loss before forks
        return sum(float(F.cross_entropy(gm(x[i:i + batch]), y[i:i + batch], reduction="sum"))
                   for i in range(0, len(x), batch)) / len(x)

    from tests.graph.zoo import ZOO
    torch.manual_seed(0)
    model = _model("resnet20") if name == "resnet20_streams" else distinct_bn(ZOO[name]()).eval()
    x, y = torch.randn(50, 3, 8, 8), torch.randint(0, 5, (50,))
    structure = find_units(model, x[:2], streams=name.endswith("streams"))
    sens = unit_sensitivity(structure, x, y, round_to=1, levels=3, batch=20)  # 3 batches
    orders = channel_orders(structure, "l1", x[:20])
    base = [u.width for u in structure.units]
    with torch.no_grad():
        full = whole_pass_loss(structure.gm, x, y, 20)
        for i, u in enumerate(structure.units):
            assert sorted(sens[i]) == width_grid(u.width, 1, 3)
            for w in sens[i]:
                if w == u.width:
                    continue
                with _cut(structure.gm, structure, base[:i] + [w] + base[i + 1:], orders):
                    assert sens[i][w] == whole_pass_loss(structure.gm, x, y, 20) - full, (u.name, w)


def test_the_table_reports_its_progress_after_each_batch():
    model = _model("vgg11")
    x, y = torch.randn(50, 3, 8, 8), torch.randint(0, 5, (50,))
    structure = find_units(model, x[:2])
    lines = []
    unit_sensitivity(structure, x, y, round_to=1, levels=3, batch=20, note=lines.append)
    assert [line.split(": ")[1].split(",")[0] for line in lines] == \
        ["20/50 images", "40/50 images", "50/50 images"]
    assert "left" in lines[0] and "left" not in lines[-1]
    assert lines[0].startswith(f"sensitivity table ({2 * len(structure.units)} cuts of "
                               f"{len(structure.units)} units)")
