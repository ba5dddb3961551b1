"""Solving a run's target: one entry point for both solvers and all three targets."""

from __future__ import annotations

import pytest
import torch

from alphaprune.errors import UserError
from alphaprune.graph import CostModel, find_units
from alphaprune.models import create_model
from alphaprune.plan import SearchData, WidthTarget, check_solver, solve_target

from .standins import stand_in_timing

SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = create_model("vgg11", width=0.25, num_classes=5)
    x, calib = torch.randn(60, *SHAPE), torch.randn(40, *SHAPE)
    with torch.no_grad():  # BatchNorm statistics of the data, as a trained network has
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None
        model.train()(calib)
        y = model.eval()(x).argmax(1)  # labels the model gets right: cuts can only lose
    assert len(set(y.tolist())) > 2
    return model, find_units(model, x[:2]), SearchData(x, y, calib)


@pytest.mark.parametrize("solver", ["ratio", "sensitivity", "auto"])
def test_a_flops_target_is_met_by_every_solver(setup, solver):
    model, structure, val = setup
    widths, record = solve_target(WidthTarget("flops", 0.5, solver), structure, model, "vgg11",
                                  SHAPE, val)
    cost = CostModel(structure)
    assert abs(cost.flops(widths) / cost.base_flops - 0.5) <= 0.01
    assert record["solver"] == solver
    assert ("sensitivity" in record) == (solver != "ratio")


def test_the_solvers_choose_different_networks(setup):
    model, structure, val = setup
    ratio, _ = solve_target(WidthTarget("flops", 0.5, "ratio"), structure, model, "vgg11", SHAPE)
    sens, _ = solve_target(WidthTarget("flops", 0.5, "sensitivity"), structure, model, "vgg11",
                           SHAPE, val)
    assert ratio != sens


def test_a_speedup_with_the_sensitivity_solver_closes_on_the_measured_ratio(setup, monkeypatch,
                                                                             tmp_path):
    """The sensitivity table decides where to cut against the latency table; the measured
    loop decides how much. Timing and the table are stood in by FLOPs, so the check holds on
    a busy machine (the real table is tested in test_latency.py)."""
    stand_in_timing(monkeypatch)
    model, structure, val = setup
    t = WidthTarget("latency", 0.5, "sensitivity", speedup=2.0, latency_batch=4)
    widths, record = solve_target(t, structure, model, "vgg11", SHAPE, val, cache_dir=tmp_path)
    cost = CostModel(structure)
    assert abs(cost.base_flops / cost.flops(widths) / 2.0 - 1) <= 0.03 + 1e-9
    assert record["solver"] == "sensitivity" and record["tried"] and "sensitivity" in record


@pytest.mark.parametrize("steps", [0, 8])
def test_auto_keeps_the_allocation_whose_whole_cut_scores_best(setup, steps):
    """auto solves the target three ways and keeps the one that, cut into the pretrained
    network at once and trained for ``steps`` steps (BatchNorm re-measured), scores the
    most validation accuracy."""
    from alphaprune.blend.sensitivity import channel_orders, cut_score, tuned_cut_score

    model, structure, val = setup
    if steps:  # uint8 training images, normalised batch by batch
        images = torch.randint(0, 256, (40, *SHAPE), dtype=torch.uint8)
        val = val._replace(train_x=images, train_y=val.y[:40], mean=(0.5,) * 3, std=(0.25,) * 3)
    orders = channel_orders(structure, "l1", val.x)
    widths, record = solve_target(WidthTarget("params", 0.6, "auto", auto_steps=steps),
                                  structure, model, "vgg11", SHAPE, val)
    (c,) = record["candidates"]
    assert set(c) == {"fraction", "chosen", "steps", "ratio", "balance1", "sensitivity"}
    assert widths == c[c["chosen"]]["widths"] and c["steps"] == steps
    for name in ("ratio", "balance1", "sensitivity"):
        w = c[name]["widths"]
        acc, loss = (tuned_cut_score(structure, w, val.x, val.y, val.calib, orders, val.train_x,
                                     val.train_y, val.mean, val.std, steps) if steps else
                     cut_score(structure, w, val.x, val.y, val.calib, orders))
        assert (round(acc, 4), round(loss, 4)) == (c[name]["val_acc"], c[name]["val_loss"])
    best = max(c[k]["val_acc"] for k in ("ratio", "balance1", "sensitivity"))
    tied = [k for k in ("ratio", "balance1", "sensitivity") if c[k]["val_acc"] == best]
    # the most accuracy; among equals, the lowest loss
    assert c["chosen"] == min(tied, key=lambda k: c[k]["val_loss"])


def test_a_cut_score_leaves_the_network_as_it_was(setup):
    """Scoring a cut re-measures BatchNorm and hooks the layers: both are undone, and a
    deeper cut scores no better on labels the whole network gets right."""
    from alphaprune.blend.sensitivity import channel_orders, cut_score

    model, structure, val = setup
    orders = channel_orders(structure, "l1", val.x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = [u.width for u in structure.units]
    whole = cut_score(structure, base, val.x, val.y, val.calib, orders)
    narrow = cut_score(structure, [1] * len(base), val.x, val.y, val.calib, orders)
    assert narrow[0] < whole[0] and narrow[1] > whole[1]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training
    with torch.no_grad():
        assert torch.equal(model(val.x).argmax(1), val.y)


def test_an_unknown_solver_is_a_user_error():
    with pytest.raises(UserError, match="unknown --solver 'greedy': use one of ratio, sensitivity, auto"):
        check_solver("greedy")
