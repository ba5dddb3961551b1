"""``--recipe``: the hand-over or straight to alpha = 0 with one lr cycle, and the measured
default by budget (``alphaprune.recipe``)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest
import yaml

from alphaprune import recipe
from alphaprune.cli import main
from alphaprune.errors import UserError
from alphaprune.prune import PruneConfig, _config_from_dict
from alphaprune.recipe import (
    Budget,
    budget_layout,
    check_recipe,
    choose_recipe,
    phase_budget,
    recipe_settings,
)

BASE = ["--data", "digits", "--subset", "300", "--batch-size", "32", "--prune", "0.5",
        "--warmup-steps", "0", "--no-progress"]
FULL = 40_000  # the CIFAR-10 train split the default was measured on


def _argv(checkpoint, out, *extra) -> list[str]:
    return ["prune", "--checkpoint", str(checkpoint), *BASE, "--out", str(out), *extra]


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("budget, expected, words", [
    (Budget(30, FULL, 0.65), "onecycle", ["30 epochs x 40000 images", "65%"]),
    (Budget(30, FULL, 0.35), "onecycle", ["35%"]),
    (Budget(30, FULL, 0.6505), "onecycle", ["65%"]),  # --prune 0.65's widths on VGG-16/4
    (Budget(60, 25_000, 0.5), "onecycle", ["60 epochs"]),
    (Budget(None, FULL, 0.65), "handover", ["no explicit budget"]),
    (Budget(30, 20_000, 0.65), "handover", ["(600,000 image-epochs) is under 1,200,000 image-"]),
    (Budget(8, 200_000, 0.65), "handover", ["is under 30 epochs"]),        # 1.6M, few epochs
    (Budget(8, 20_000, 0.65), "handover", ["under 30 epochs and 1,200,000 image-epochs"]),
    (Budget(30, FULL, 0.9), "handover", ["90%", "over 65%"]),
    (Budget(30, FULL, 0.66), "handover", ["over 65%"]),
    (Budget(30, FULL, 0.5, "flops"), "handover", ["parameter targets only, not flops"]),
    (Budget(30, FULL, 0.5, "latency"), "handover", ["not latency"]),
    # a residual network: onecycle led from 600,000 image-epochs (resnet20, section 28)
    (Budget(30, 20_000, 0.5, residual=True), "onecycle", ["(a residual network)", "50%"]),
    (Budget(30, 20_000, 0.65, residual=True), "onecycle", ["65%"]),
    (Budget(30, 19_999, 0.5, residual=True), "handover",
     ["(599,970 image-epochs) is under 600,000 image-epochs (a residual network)"]),
    (Budget(8, 80_000, 0.5, residual=True), "handover", ["is under 30 epochs (a residual"]),
    (Budget(30, 20_000, 0.7, residual=True), "onecycle", ["70%"]),  # section 29
    (Budget(30, 20_000, 0.6991, residual=True), "onecycle", ["70%"]),  # --prune 0.7 on resnet20
    (Budget(30, 20_000, 0.71, residual=True), "handover", ["71%", "over 70% (a residual"]),
    (Budget(30, FULL, 0.7), "handover", ["70%", "over 65% (a network without sums)"]),
    (Budget(30, 20_000, 0.5, "flops", residual=True), "handover", ["not flops"]),
    (Budget(30, 20_000, 0.5), "handover", ["under 1,200,000 image-epochs (a network without"]),
])
def test_the_default_recipe_follows_the_budget_and_the_cut(budget, expected, words):
    chosen, why = choose_recipe(PruneConfig(), budget)
    assert chosen == expected
    assert all(w in why for w in words), why


@pytest.mark.parametrize("options, flag", [
    ({"step_size": 0.25}, "--step-size"),
    ({"scheduler": "exponential"}, "--scheduler exponential"),
    ({"final_schedule": "cosine"}, "--final-schedule cosine"),
    ({"final_takes_rest": True}, "--final-takes-rest"),
    ({"max_acc_drop": 0.1}, "--max-acc-drop"),
    ({"handover": "blend"}, "--handover blend"),
])
def test_a_hand_over_option_keeps_the_hand_over(options, flag):
    chosen, why = choose_recipe(PruneConfig(**options), Budget(30, FULL, 0.65))
    assert chosen == "handover" and flag in why


def test_a_given_recipe_is_kept_whatever_the_budget():
    assert choose_recipe(PruneConfig(recipe="handover"), Budget(30, FULL, 0.65))[0] == "handover"
    assert choose_recipe(PruneConfig(recipe="onecycle"), Budget(8, 5000, 0.9))[0] == "onecycle"


def test_onecycle_settings_span_the_budget_and_keep_what_was_given():
    s = recipe_settings(PruneConfig(max_total_epochs=30), "onecycle")
    assert s == {"recipe": "onecycle", "step_size": 1.0, "final_schedule": "onecycle",
                 "final_max_epochs": 30, "final_patience": 30, "final_lr": recipe.ONECYCLE_LR,
                 "final_ema": recipe.FINAL_EMA}  # the average by default (BENCHMARKS.md 61)
    s = recipe_settings(PruneConfig(max_total_epochs=30, final_lr=0.02, final_patience=5,
                                    final_ema=2.0), "onecycle")
    assert (s["final_lr"], s["final_patience"], s["final_max_epochs"]) == (0.02, 5, 30)
    assert s["final_ema"] == 2.0
    # the hand-over averages its alpha = 0 phase by default (BENCHMARKS.md section 58)
    assert recipe_settings(PruneConfig(), "handover") == {
        "recipe": "handover", "final_schedule": "cosine", "final_ema": recipe.FINAL_EMA}
    assert recipe.FINAL_EMA > 0
    assert recipe_settings(PruneConfig(final_ema=0.0), "handover")["final_ema"] == 0.0
    assert recipe_settings(PruneConfig(final_schedule="constant"), "handover")["final_schedule"] \
        == "constant"


def test_a_budgeted_hand_over_is_laid_out_as_compare_lays_out_os_step():
    # compare --budget 30 --step-size 0.25 --patience 2: the rows measured as the default
    per, final = phase_budget("step", {"step_size": 0.25}, 30)
    assert budget_layout(PruneConfig(max_total_epochs=30)) == {
        "step_size": 0.25, "patience": 2, "max_epochs_per_phase": per, "final_max_epochs": final,
        "final_patience": final}
    assert (per, final) == (6, 12)
    s = recipe_settings(PruneConfig(max_total_epochs=30), "handover", budget_given=True)
    assert (s["step_size"], s["max_epochs_per_phase"]) == (0.25, 6)
    assert "step_size" not in recipe_settings(PruneConfig(), "handover", budget_given=False)


@pytest.mark.parametrize("options", [{"step_size": 0.1}, {"patience": 4}, {"final_max_epochs": 5},
                                     {"max_epochs_per_phase": 2}, {"scheduler": "plateau"},
                                     {"max_total_epochs": 3}])  # too small for three phases
def test_a_layout_the_user_set_or_a_tiny_budget_is_left_alone(options):
    assert budget_layout(PruneConfig(**{"max_total_epochs": 30, **options})) == {}


@pytest.mark.parametrize("options, budget_given, words", [
    ({"recipe": "fast"}, True, ["unknown --recipe 'fast'", "handover or onecycle"]),
    ({"recipe": "onecycle", "step_size": 0.25}, True, ["--step-size", "--recipe handover"]),
    ({"recipe": "onecycle", "scheduler": "plateau"}, True, ["--scheduler plateau"]),
    ({"recipe": "onecycle"}, False, ["--max-total-epochs N"]),
])
def test_a_contradicted_recipe_is_a_user_error(options, budget_given, words):
    with pytest.raises(UserError) as e:
        check_recipe(PruneConfig(**options), budget_given)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_a_recorded_onecycle_run_passes_its_own_check():
    """A resume reads back the settings the recipe wrote (step size 1, the onecycle lr)."""
    cfg = PruneConfig(recipe="onecycle", max_total_epochs=30)
    cfg = replace(cfg, **recipe_settings(cfg, "onecycle"))
    check_recipe(cfg, budget_given=True)
    assert choose_recipe(cfg, Budget(30, 100, 0.9))[0] == "onecycle"


def test_a_run_recorded_before_the_option_stays_a_hand_over():
    old = _config_from_dict({"checkpoint": "m.pt", "final_schedule": "cosine",
                             "max_total_epochs": 30, "optim": {"lr": 0.01}})
    assert old.recipe == "handover"
    assert choose_recipe(old, Budget(30, FULL, 0.65))[0] == "handover"


def test_onecycle_goes_straight_to_alpha_0_with_one_lr_cycle(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "onecycle"
    # without the feature term: the tiny checkpoint is barely trained, and its features at
    # the cycle's peak lr of 0.05 made the run diverge on one CPU (the guard then stops it)
    assert main(_argv(tiny_checkpoint, out, "--recipe", "onecycle", "--max-total-epochs", "5",
                      "--feature-distill", "0")) == 0
    assert "[prune] recipe onecycle: given (--recipe)" in capsys.readouterr().out
    phases = _rows(out / "phases.csv")
    assert [(float(r["alpha"]), int(r["epochs"])) for r in phases] == [(0.0, 5)]
    lrs = [float(r["lr"]) for r in _rows(out / "metrics.csv")]
    # up from 1/25 of 0.05 over the first 30% of the phase, then a cosine down
    assert lrs[0] == pytest.approx(0.05 / 25)
    top = lrs.index(max(lrs))
    assert 0 < top < 4 and max(lrs) == pytest.approx(0.05)
    assert lrs[:top + 1] == sorted(lrs[:top + 1]) and lrs[top:] == sorted(lrs[top:], reverse=True)
    p = yaml.safe_load((out / "config.yaml").read_text())["prune"]
    assert (p["recipe"], p["step_size"], p["final_schedule"], p["final_lr"]) == \
        ("onecycle", 1.0, "onecycle", 0.05)
    s = json.loads((out / "summary.json").read_text())
    assert (s["recipe"], s["epochs"]) == ("onecycle", 5)


@pytest.mark.parametrize("extra, expected, why", [
    (["--max-total-epochs", "4"], "onecycle", "budget 4 epochs x"),
    ([], "handover", "no explicit budget"),
    (["--max-total-epochs", "4", "--step-size", "0.5"], "handover", "--step-size"),
])
def test_the_default_recipe_is_chosen_recorded_and_reported(tiny_checkpoint, tmp_path, capsys,
                                                           monkeypatch, extra, expected, why):
    # the digits budget is far below the measured threshold: lower it to this run's size
    monkeypatch.setattr(recipe, "ONECYCLE_MIN_EPOCHS", 4)
    monkeypatch.setattr(recipe, "ONECYCLE_MIN_IMAGE_EPOCHS", 4 * 100)
    out = tmp_path / "run"
    argv = _argv(tiny_checkpoint, out, "--patience", "1", "--max-epochs-per-phase", "1",
                 "--final-max-epochs", "2", *extra) if expected == "handover" else \
        _argv(tiny_checkpoint, out, *extra)
    assert main(argv) == 0
    assert f"[prune] recipe {expected}: " in capsys.readouterr().out
    p = yaml.safe_load((out / "config.yaml").read_text())["prune"]
    assert p["recipe"] == expected and why in p["recipe_reason"]
    alphas = [float(r["alpha"]) for r in _rows(out / "phases.csv")]
    assert (alphas == [0.0]) == (expected == "onecycle")
    assert json.loads((out / "summary.json").read_text())["recipe_reason"] == p["recipe_reason"]


def test_a_budgeted_hand_over_runs_its_phases_within_the_budget(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "budget"
    assert main(_argv(tiny_checkpoint, out, "--max-total-epochs", "6")) == 0
    assert "phases laid out in the 6 epochs: alpha step 0.25, at most 1 epochs each, 3 at " \
        "alpha = 0" in capsys.readouterr().out
    phases = _rows(out / "phases.csv")
    assert [float(r["alpha"]) for r in phases] == [0.75, 0.5, 0.25, 0.0]
    assert [int(r["epochs"]) for r in phases][:3] == [1, 1, 1]
    assert sum(int(r["epochs"]) for r in phases) <= 6
    p = yaml.safe_load((out / "config.yaml").read_text())["prune"]
    assert (p["recipe"], p["step_size"], p["patience"], p["final_max_epochs"]) == \
        ("handover", 0.25, 2, 3)


@pytest.mark.parametrize("extra, words", [
    (["--recipe", "fast"], ["--recipe 'fast'"]),
    (["--recipe", "onecycle", "--step-size", "0.5", "--max-total-epochs", "3"], ["--step-size"]),
    (["--recipe", "onecycle"], ["--max-total-epochs N"]),
])
def test_a_bad_recipe_exits_2_with_one_line_and_no_run_folder(tiny_checkpoint, tmp_path, capsys,
                                                               extra, words):
    out = tmp_path / "bad"
    assert main(_argv(tiny_checkpoint, out, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("alphaprune: error: ")
    assert all(w in err[0] for w in words), err
    assert not out.exists()


# --------------------------------------------------------------------- feature distillation


@pytest.mark.parametrize("budget, comparable, weight, words", [
    (Budget(8, 5_000, 0.5), True, 20.0,
     ["40,000 image-epochs is at most 160,000 for a network without sums"]),
    (Budget(8, 20_000, 0.5, "flops"), True, 20.0, ["160,000 image-epochs is at most 160,000"]),
    (Budget(8, 20_001, 0.5), True, 0.0, ["160,008 image-epochs is over 160,000"]),
    (Budget(8, 5_000, 0.5, residual=True), True, 20.0,
     ["40,000 image-epochs is at most 80,000 for a residual network"]),
    (Budget(8, 10_000, 0.5, residual=True), True, 20.0, ["80,000 image-epochs is at most"]),
    (Budget(8, 10_001, 0.5, residual=True), True, 0.0, ["80,008 image-epochs is over 80,000"]),
    (Budget(8, 20_000, 0.5, "flops", residual=True), True, 0.0, ["160,000", "over 80,000"]),
    (Budget(None, 300, 0.5), True, 0.0, ["no explicit budget"]),
    (Budget(8, 5_000, 0.5), False, 0.0, ["no unit to compare"]),
])
def test_feature_distillation_is_on_by_default_only_where_training_is_scarce(budget, comparable,
                                                                             weight, words):
    chosen, why = recipe.choose_feature_distill(budget, comparable)
    assert chosen == weight
    assert all(w in why for w in words), why


def test_a_run_recorded_before_feature_distillation_keeps_it_off():
    old = _config_from_dict({"checkpoint": "m.pt", "max_total_epochs": 8, "optim": {"lr": 0.01}})
    assert old.feature_distill == 0.0  # recorded: the default by budget is not consulted


@pytest.mark.parametrize("extra, weight", [
    (["--max-total-epochs", "4"], 20.0),
    ([], 0.0),
    (["--max-total-epochs", "4", "--feature-distill", "0"], 0.0),
])
def test_the_default_feature_weight_is_chosen_recorded_and_trained_with(tiny_checkpoint, tmp_path,
                                                                        capsys, extra, weight):
    out = tmp_path / "run"
    assert main(_argv(tiny_checkpoint, out, "--step-size", "0.5", "--patience", "1",
                      "--max-epochs-per-phase", "1", "--final-max-epochs", "2", *extra)) == 0
    printed = capsys.readouterr().out
    p = yaml.safe_load((out / "config.yaml").read_text())["prune"]
    assert p["feature_distill"] == weight
    # 240 training images (the digits split of 300) x 4 epochs
    assert ("--feature-distill 20 (960 image-epochs is at most 160,000 for a network "
            "without sums)" in p["recipe_reason"]) \
        is (weight > 0 and "--feature-distill" not in extra)
    assert p["recipe_reason"] in printed
    header = _rows(out / "metrics.csv")[0]
    assert ("train_feature_loss" in header) is (weight > 0)
