"""Solving a run's target: one entry point for both solvers and all three targets."""

from __future__ import annotations

import pytest
import torch

from alphaprune.errors import UserError
from alphaprune.graph import CostModel, find_units
from alphaprune.models import create_model
from alphaprune.plan import WidthTarget, check_solver, solve_target

from .standins import stand_in_timing

SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = create_model("vgg11", width=0.25, num_classes=5).eval()
    x = torch.randn(60, *SHAPE)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels the model gets right: cuts can only lose
    return model, find_units(model, x[:2]), (x, y)


@pytest.mark.parametrize("solver", ["ratio", "sensitivity"])
def test_a_flops_target_is_met_by_either_solver(setup, solver):
    model, structure, val = setup
    widths, record = solve_target(WidthTarget("flops", 0.5, solver), structure, model, "vgg11",
                                  SHAPE, val)
    cost = CostModel(structure)
    assert abs(cost.flops(widths) / cost.base_flops - 0.5) <= 0.01
    assert record["solver"] == solver
    assert ("sensitivity" in record) == (solver == "sensitivity")


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


def test_an_unknown_solver_is_a_user_error():
    with pytest.raises(UserError, match="unknown --solver 'greedy': use one of ratio, sensitivity"):
        check_solver("greedy")
