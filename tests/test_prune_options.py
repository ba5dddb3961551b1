"""``alphaprune prune`` with the hand-over, branch-init, distillation and guard options."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
import yaml

import alphaprune
import alphaprune.plan as plan_mod
import alphaprune.prune as prune_mod
from alphaprune.allocator import keep_freed_memory
from alphaprune.blend import solve_widths
from alphaprune.blend.widths import vgg_counter
from alphaprune.cli import main

from .test_prune import DATA, _assert_one_line_error, _rows

# two phases at most without undos: alpha 0.5 (1 epoch), then alpha 0 (at most 2 epochs)
PRUNE = ["--prune", "0.5", "--step-size", "0.5", "--patience", "1", "--max-epochs-per-phase", "1",
         "--final-max-epochs", "2", "--no-progress"]
OPTIONS = ["--handover", "stochastic", "--branch-init", "lstsq", "--importance", "act",
           "--distill", "0.5", "--max-acc-drop", "0.05", "--calib-size", "64",
           "--warmup-steps", "3", "--balance", "1.0", "--round-to", "1"]
# any drop below the last accepted phase (the pretrained network first) is undone, once
GUARDED = ["--max-acc-drop", "0", "--max-retries", "1", "--branch-init", "random",
           "--handover", "blend", "--distill", "0"]
STOP_REASONS = {"patience", "max_epochs", "diverged", "plateau", "collapsed", "undone"}


def _argv(checkpoint, out, *extra) -> list[str]:
    return ["prune", "--checkpoint", str(checkpoint), *DATA, *PRUNE, "--out", str(out), *extra]


def _resume_without(monkeypatch, measuring: str, out) -> dict:
    """Resume the run in ``out`` to its end with ``alphaprune.plan.<measuring>`` failing
    if called (nothing may be measured again); its summary."""
    def measured(*args, **kwargs):
        raise AssertionError(f"{measuring} ran again")

    monkeypatch.setattr(plan_mod, measuring, measured)
    assert main(["prune", "--out", str(out), "--resume", "--max-total-epochs", "20",
                 "--no-progress"]) == 0
    return json.loads((out / "summary.json").read_text())


def _target_argv(checkpoint, out, *target) -> list[str]:
    """:func:`_argv` with another target (and its options) in place of ``--prune 0.5``."""
    argv = _argv(checkpoint, out)
    i = argv.index("--prune")
    return argv[:i] + list(target) + argv[i + 2:]


@dataclass
class Run:
    checkpoint: Path
    out: Path
    rc: int
    stdout: str
    calls: dict  # what prune handed to the building blocks: {name: (args, kwargs)}


def _spy(mp: pytest.MonkeyPatch, calls: dict, name: str) -> None:
    """Record the arguments of ``alphaprune.prune.<name>`` and call through."""
    real = getattr(prune_mod, name)

    def spy(*args, **kwargs):
        calls[name] = (args, kwargs)
        return real(*args, **kwargs)

    mp.setattr(prune_mod, name, spy)


def _prune(checkpoint: Path, out: Path, *extra) -> Run:
    calls: dict = {}
    buf = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buf):
        for name in ("BlendedNet", "init_branches", "BlendModule", "PhaseController"):
            _spy(mp, calls, name)
        rc = main(_argv(checkpoint, out, *extra))
    return Run(checkpoint, out, rc, buf.getvalue(), calls)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_checkpoint) -> dict[str, Run]:
    """The shared tiny checkpoint (see conftest) pruned with the new options ('options'), and
    with the tightest guard on the blended mixture ('guarded')."""
    base = tmp_path_factory.mktemp("prune-options")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALPHAPRUNE_CACHE", str(base / "cache"))
        torch.manual_seed(0)
        checkpoint = tiny_checkpoint
        return {"options": _prune(checkpoint, base / "run", *OPTIONS),
                "guarded": _prune(checkpoint, base / "guarded", *GUARDED)}


@pytest.fixture(scope="module")
def run(runs) -> Run:
    return runs["options"]


def _check_guard_rows(rows: list[dict], max_retries: int) -> None:
    """The phase table follows the guard's rules: an undone phase is followed by a retry
    halfway back to the last accepted alpha, at most ``max_retries`` in a row, and an accepted
    retry by the failed target; the run ends with an accepted alpha = 0 phase."""
    assert {r["stop_reason"] for r in rows} <= STOP_REASONS
    assert float(rows[-1]["alpha"]) == 0.0 and rows[-1]["stop_reason"] != "undone"
    alphas = [float(r["alpha"]) for r in rows]
    accepted, target, streak = 1.0, None, 0
    for r, a, nxt in zip(rows, alphas, alphas[1:]):
        if r["stop_reason"] == "undone":
            streak += 1
            assert streak <= max_retries, rows
            target = a if target is None else target
            assert nxt == pytest.approx((accepted + a) / 2), rows
        else:
            if target is not None:
                assert nxt == target, rows
            accepted, target, streak = a, None, 0


def test_prune_with_the_options_finishes(run):
    assert run.rc == 0
    for name in ("config.yaml", "metrics.csv", "phases.csv", "pruned.pt", "summary.json"):
        assert (run.out / name).is_file(), name
    assert "pruned vgg11: " in run.stdout.strip().splitlines()[-1]


def test_config_records_the_options(run):
    p = yaml.safe_load((run.out / "config.yaml").read_text())["prune"]
    assert p["handover"] == "stochastic"
    assert p["branch_init"] == "lstsq"
    assert p["importance"] == "act"
    assert p["distill"] == 0.5
    assert p["temperature"] == 4.0  # the default is recorded too
    assert p["max_acc_drop"] == 0.05
    assert p["max_retries"] == 3
    assert p["calib_size"] == 64
    assert p["warmup_steps"] == 3
    assert p["balance"] == 1.0
    assert p["monitor"] == "auto"


def test_options_reach_the_building_blocks(run):
    args, kw = run.calls["BlendedNet"]
    assert kw["handover"] == "stochastic"
    base = [u.conv.out_channels for u in alphaprune.load_model(run.checkpoint).features]
    assert args[1] == solve_widths(base, vgg_counter(1, 10), 0.5, 1, balance=1.0)
    assert args[1] != solve_widths(base, vgg_counter(1, 10), 0.5, 1)  # the option changed the widths
    args, kw = run.calls["init_branches"]
    assert args[1:3] == ("lstsq", "act")
    calib = kw["calib"]
    assert calib.shape == (64, 1, 16, 16)
    assert abs(float(calib.mean())) < 0.5  # normalised
    _, kw = run.calls["BlendModule"]
    assert kw["distill"] == 0.5 and kw["temperature"] == 4.0
    teacher = kw["teacher"]
    assert teacher is not None and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    _, kw = run.calls["PhaseController"]
    assert kw["max_acc_drop"] == 0.05 and kw["max_retries"] == 3 and kw["warmup_steps"] == 3
    # the hand-over is not blend: the all-branch network is monitored and has no reference
    assert kw["monitor"] == "ship_val_loss" and kw["initial_acc"] is None


def test_pruned_model_accuracy_is_the_summary(run, capsys):
    s = json.loads((run.out / "summary.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(run.out / "pruned.pt"), "--split", "test", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["accuracy"] == pytest.approx(s["test_acc_after"], abs=1e-12)
    assert s["fusion_rel_error"] <= 1e-4
    assert abs(s["achieved_reduction"] - 0.5) <= 0.005
    model = alphaprune.load_model(run.out / "pruned.pt")
    assert [u.conv.out_channels for u in model.features] == s["widths_after"]


def test_phases_end_at_alpha_0(run):
    header, rows = _rows(run.out / "phases.csv")
    assert {"alpha", "stop_reason", "detail", "best_ship_val_acc"} <= set(header)
    assert float(rows[0]["alpha"]) == 0.5
    _check_guard_rows(rows, max_retries=3)
    _, metrics = _rows(run.out / "metrics.csv")
    # stochastic evaluation runs all branches: the network at alpha is the one that ships
    assert any(float(m["alpha"]) == 0.5 for m in metrics)
    for m in metrics:
        assert m["val_loss"] == m["ship_val_loss"] and m["val_acc"] == m["ship_val_acc"]
    for p in rows:
        mine = [m for m in metrics if int(m["phase"]) == int(p["phase"])]
        best = mine[int(p["best_epoch"]) - 1]
        assert float(p["best_val_loss"]) == pytest.approx(float(best["ship_val_loss"]), abs=1e-6)


def test_guarded_blend_run(runs):
    """The blended mixture is held to the pretrained accuracy; undone phases really are
    undone in the Lightning loop (the weights come back, the retries follow the rules)."""
    g = runs["guarded"]
    assert g.rc == 0
    s = json.loads((g.out / "summary.json").read_text())
    _, kw = g.calls["PhaseController"]
    assert kw["monitor"] == "val_loss"
    assert kw["initial_acc"] == s["val_acc_before"]
    assert (kw["max_acc_drop"], kw["max_retries"]) == (0.0, 1)
    _, rows = _rows(g.out / "phases.csv")
    _check_guard_rows(rows, max_retries=1)
    # with no drop allowed, an accepted phase either kept the accuracy or used up its retry
    prev, streak = s["val_acc_before"], 0
    for r in rows:
        acc = float(r["best_val_acc"])
        if r["stop_reason"] == "undone":
            assert acc < prev
            streak += 1
        else:
            assert acc >= prev - 1e-6 or streak == 1, rows
            prev, streak = acc, 0
    assert s["phases"] == [{**p, "stop_reason": r["stop_reason"]} for p, r in zip(s["phases"], rows)]
    assert s["epochs"] == sum(int(r["epochs"]) for r in rows)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("handover, monitor, resolved, reference", [
    ("blend", "auto", "val_loss", True),
    ("blend", "val_loss", "val_loss", True),
    ("blend", "ship_val_loss", "ship_val_loss", False),
    ("progressive", "auto", "ship_val_loss", False),
    ("progressive", "val_loss", "val_loss", True),  # the network at alpha: a mixture
    ("stochastic", "auto", "ship_val_loss", False),
    # stochastic evaluation runs all branches: 'val_loss' is the all-branch network too,
    # which starts lower by design and so must not be held to the pretrained accuracy
    ("stochastic", "val_loss", "val_loss", False),
])
def test_guard_reference_of_the_first_phase(run, tmp_path, monkeypatch, handover, monitor,
                                            resolved, reference):
    """Only a monitored network that mixes in the original is held to the pretrained
    accuracy (``initial_acc``); the run is stopped as soon as the controller is built."""
    seen = {}

    def controller(*args, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(prune_mod, "PhaseController", controller)
    monkeypatch.setenv("ALPHAPRUNE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(_Stop):
        main(_argv(run.checkpoint, tmp_path / "out", "--handover", handover, "--monitor", monitor,
                   "--max-acc-drop", "0.1", "--branch-init", "random"))
    assert seen["monitor"] == resolved
    assert (seen["initial_acc"] is not None) is reference, seen["initial_acc"]


BAD = [
    (["--handover", "foo"], ["--handover", "foo"]),
    (["--branch-init", "foo"], ["--branch-init", "foo"]),
    (["--importance", "foo"], ["--importance", "foo"]),
    (["--distill", "1.5"], ["--distill"]),
    (["--distill", "-0.1"], ["--distill"]),
    (["--temperature", "0"], ["--temperature"]),
    (["--temperature", "-1"], ["--temperature"]),
    (["--feature-distill", "-1"], ["--feature-distill"]),
    (["--max-acc-drop", "1.5"], ["--max-acc-drop"]),
    (["--max-acc-drop", "-0.1"], ["--max-acc-drop"]),
    (["--max-retries", "-1"], ["--max-retries"]),
    (["--calib-size", "1"], ["--calib-size"]),
    (["--calib-size", "-5"], ["--calib-size"]),
    (["--warmup-steps", "-1"], ["--warmup-steps"]),
    (["--final-ema", "-1"], ["--final-ema"]),
    (["--final-ema", "nan"], ["--final-ema"]),
    (["--balance", "1.5"], ["--balance"]),
]


@pytest.mark.parametrize("extra, words", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_option_exits_2_with_one_line_and_no_run_folder(run, tmp_path, capsys, extra, words):
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main(_argv(run.checkpoint, out, *extra))
    err = capsys.readouterr().err
    assert rc == 2
    _assert_one_line_error(err)
    assert all(w in err for w in words), err
    assert not out.exists(), sorted(p.name for p in out.iterdir())


# --------------------------------------------------------------------------- the FLOPs target


def test_flops_target_removes_that_share_of_the_flops(tiny_checkpoint, tmp_path):
    from alphaprune.report.size import count_flops

    argv = _target_argv(tiny_checkpoint, tmp_path / "run", "--flops", "0.5")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["target_measure"] == "flops" and s["target_reduction"] == 0.5
    assert abs(s["achieved_flops_reduction"] - 0.5) <= 0.01
    fused = alphaprune.load_model(tmp_path / "run" / "pruned.pt")
    assert count_flops(fused, (1, 16, 16)) == s["flops_after"]
    assert "% removed; target 50% of the FLOPs)" in buf.getvalue()
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["prune"]
    assert cfg["flops"] == 0.5 and cfg["prune"] is None
    # the measured default solver of a FLOPs target, recorded with the widths it chose
    assert cfg["solver"] == "auto" and cfg["balance"] is None
    assert cfg["solved"]["widths"] == s["widths_after"] and cfg["widths"] is None
    # every candidate auto scored is in the summary; the one it chose is what shipped
    (c,) = s["width_search"]["candidates"]
    assert set(c) >= {"ratio", "balance1", "sensitivity"}
    assert s["widths_after"] == c[c["chosen"]]["widths"]


def test_a_parameter_target_records_its_own_default_balance(tiny_checkpoint, tmp_path):
    from alphaprune.prune import PruneConfig, _settings

    cfg, _, _, _ = _settings(PruneConfig(checkpoint=str(tiny_checkpoint)), tmp_path / "r", False, None)
    assert (cfg.prune, cfg.solver, cfg.balance) == (0.65, "ratio", 1.0)
    cfg, _, _, _ = _settings(PruneConfig(checkpoint=str(tiny_checkpoint), speedup=2.0),
                             tmp_path / "r", False, None)
    assert (cfg.prune, cfg.solver, cfg.balance) == (None, "auto", None)
    cfg, _, _, _ = _settings(PruneConfig(checkpoint=str(tiny_checkpoint), flops=0.5, balance=0.5),
                             tmp_path / "r", False, None)
    assert (cfg.solver, cfg.balance) == ("ratio", 0.5)  # a given balance means the ratio solver
    assert not (tmp_path / "r").exists()  # settings touch no disk


def test_one_target_per_run(tiny_checkpoint, tmp_path, capsys):
    rc = main([*_argv(tiny_checkpoint, tmp_path / "run"), "--flops", "0.5"])
    _assert_one_line_error(capsys.readouterr().err)
    assert rc == 2 and not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- the sensitivity solver


def test_a_measuring_solver_meets_a_flops_target_and_records_its_widths(
        tiny_checkpoint, tmp_path, monkeypatch):
    """The widths come from measured cuts on validation images: they are recorded with the
    table they came from, and a resume builds the same network without measuring again."""
    solver = "sensitivity"
    argv = _target_argv(tiny_checkpoint, tmp_path / "run", "--flops", "0.5", "--solver", solver,
                        "--search-size", "20")
    assert main([*argv, "--max-total-epochs", "1"]) == 2  # stops before the alpha = 0 phase
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["prune"]
    widths = cfg["solved"]["widths"]
    assert cfg["solver"] == solver and cfg["solved"]["for"]["fraction"] == 0.5

    s = _resume_without(monkeypatch, "unit_sensitivity", tmp_path / "run")
    assert s["widths_after"] == widths and s["solver"] == solver
    assert abs(s["achieved_flops_reduction"] - 0.5) <= 0.01
    assert len(s["width_search"]["sensitivity"]) == len(widths)  # the record survives a resume


def test_the_width_search_prints_its_progress_unless_told_not_to(tiny_checkpoint, tmp_path, capsys):
    argv = _target_argv(tiny_checkpoint, tmp_path / "run", "--flops", "0.3", "--solver",
                        "sensitivity", "--search-size", "20", "--max-total-epochs", "1")
    assert main([a for a in argv if a != "--no-progress"]) == 2  # stops on its budget
    lines = [line for line in capsys.readouterr().out.splitlines() if "sensitivity table" in line]
    assert lines and lines[-1].startswith("[prune] sensitivity table (")
    assert ": 20/20 images, " in lines[-1]
    assert main([*_target_argv(tiny_checkpoint, tmp_path / "quiet", "--flops", "0.3", "--solver",
                               "sensitivity", "--search-size", "20"), "--max-total-epochs", "1"]) == 2
    assert "sensitivity table" not in capsys.readouterr().out


def test_a_repeat_with_another_target_solves_anew(tiny_checkpoint, tmp_path, monkeypatch):
    """A run's config.yaml repeats it without measuring again, but only for the settings
    the widths were solved for: another --flops solves for that target."""
    argv = _target_argv(tiny_checkpoint, tmp_path / "run", "--flops", "0.3", "--solver",
                        "sensitivity", "--search-size", "20")
    assert main([*argv, "--max-total-epochs", "1"]) == 2
    config = str(tmp_path / "run" / "config.yaml")
    calls = []
    real = plan_mod.unit_sensitivity
    monkeypatch.setattr(plan_mod, "unit_sensitivity", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert main(["prune", "--config", config, "--flops", "0.6", "--max-total-epochs", "20",
                 "--out", str(tmp_path / "again"),
                 "--no-progress"]) == 0
    s = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert calls and abs(s["achieved_flops_reduction"] - 0.6) <= 0.01


def test_the_auto_widths_are_solved_for_their_training_steps():
    """A run's recorded auto widths are reused only for the same --auto-steps (0, the
    untrained score of runs from before the option, leaves the record as it was)."""
    from alphaprune.prune import PruneConfig, solved_for

    auto = PruneConfig(checkpoint="m.pt", data="digits", flops=0.5, solver="auto", auto_steps=40)
    assert solved_for(auto)["auto_steps"] == 40
    assert "auto_steps" not in solved_for(replace(auto, auto_steps=0))
    assert "auto_steps" not in solved_for(replace(auto, solver="sensitivity"))


def test_auto_steps_train_each_candidate_and_are_recorded(tiny_checkpoint, tmp_path):
    """--auto-steps reaches the solver: every candidate is scored after that many steps,
    which the summary and the recorded widths say."""
    out = tmp_path / "run"
    argv = _target_argv(tiny_checkpoint, out, "--flops", "0.5", "--solver", "auto",
                        "--auto-steps", "3", "--search-size", "20")
    assert main(argv) == 0
    (c,) = json.loads((out / "summary.json").read_text())["width_search"]["candidates"]
    assert c["steps"] == 3 and c["chosen"] in ("ratio", "balance1", "sensitivity")
    recorded = yaml.safe_load((out / "config.yaml").read_text())["prune"]
    assert recorded["auto_steps"] == 3 and recorded["solved"]["for"]["auto_steps"] == 3


def test_the_sensitivity_table_is_in_the_summary(tiny_checkpoint, tmp_path):
    argv = _argv(tiny_checkpoint, tmp_path / "run")
    assert main([*argv, "--solver", "sensitivity", "--search-size", "20"]) == 0
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    table = s["width_search"]["sensitivity"]
    assert len(table) == len(s["widths_before"])
    assert all(len(unit) >= 2 for unit in table)  # each unit measured at several widths
    assert abs(s["achieved_reduction"] - 0.5) <= 0.01


@pytest.mark.parametrize("extra, words", [
    (["--solver", "sensitivity", "--balance", "1"], ["--balance", "--solver sensitivity"]),
    (["--solver", "auto", "--balance", "0"], ["--balance", "--solver auto"]),
    (["--solver", "sensitivity", "--search-size", "0"], ["--search-size must be >= 1"]),
    (["--solver", "auto", "--auto-steps", "-1"], ["--auto-steps must be >= 0"]),
])
def test_bad_solver_options_exit_2_with_one_line(tiny_checkpoint, tmp_path, capsys, extra, words):
    rc = main([*_argv(tiny_checkpoint, tmp_path / "run"), *extra])
    err = capsys.readouterr().err
    assert rc == 2
    _assert_one_line_error(err)
    assert all(w in err for w in words), err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- the speed-up target


def test_a_speedup_search_needs_one_process(tiny_checkpoint, tmp_path, capsys):
    """Each process would time the machine itself and could build another network."""
    out = tmp_path / "run"
    rc = main([*_target_argv(tiny_checkpoint, out, "--speedup", "1.5"), "--devices", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "--speedup times models" in err and "one process" in err
    _assert_one_line_error(err)
    assert not out.exists()


def test_speedup_is_met_or_the_shortfall_is_said(tiny_checkpoint, tmp_path, capsys):
    """The widths are searched on this machine's timings, then the trained, fused model is
    timed against the original: the summary, the report and the printed line say whether
    the target was met and by how much it fell short otherwise. (This model is so small that
    per-layer overheads bound its speed-up near 1.3x at batch 128; where a busy machine
    measures less than the target at the narrowest widths, the run must say so up front.)"""
    argv = _target_argv(tiny_checkpoint, tmp_path / "run", "--speedup", "1.1", "--latency-batch", "128")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    if rc == 2:
        err = capsys.readouterr().err
        _assert_one_line_error(err)
        most = float(err.split("narrowest the model ran ")[1].split("x faster")[0])
        assert most < 1.1 and not (tmp_path / "run").exists()
        return
    assert rc == 0
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    sp = s["speedup"]
    assert sp["target"] == 1.1 and sp["batch"] == 128 and sp["threads"] >= 1
    assert sp["allocator"] == keep_freed_memory()  # the command set it first
    # a median of per-pass ratios, near the ratio of the median times
    assert 0.5 < sp["achieved"] / (sp["original_ms"] / sp["pruned_ms"]) < 2.0
    assert sp["shortfall"] == pytest.approx(max(0.0, 1 - sp["achieved"] / 1.1))
    search = s["width_search"]
    assert "search" not in sp and search["tried"] and search["most"] >= 1.1 * 0.97
    said = "met" if sp["shortfall"] == 0 else f"{sp['shortfall']:.0%} short"
    assert f"target 1.1x {said}" in buf.getvalue()
    assert s["headline"]["speedup"]["achieved"] == sp["achieved"]
    assert "1.1× faster at batch 128" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.parametrize("most, lower", [(2.5, "pass --speedup 2.37 or less, or a larger"),
                                         (1.04, "pass a larger --latency-batch")])
def test_an_unreachable_speedup_names_the_measured_most(tiny_checkpoint, tmp_path, capsys,
                                                        monkeypatch, most, lower):
    """The narrowest model's measured speed-up is named, with a target that could be met,
    only where one above 1 is left (--speedup must be above 1)."""
    import alphaprune.speedup as speedup_mod

    monkeypatch.setattr(speedup_mod, "measured_speedup", lambda *a, **k: (most, 10.0, 10.0 / most))
    argv = _target_argv(tiny_checkpoint, tmp_path / "run", "--speedup", "1000")
    assert main(argv) == 2
    err = capsys.readouterr().err
    _assert_one_line_error(err)
    assert "--speedup 1000 cannot be reached at batch 1" in err and f"ran {most:.2f}x faster" in err
    assert lower in err and not (tmp_path / "run").exists()


def test_the_widths_a_speedup_search_chose_are_recorded_for_resume_and_repeats(
        tiny_checkpoint, tmp_path, monkeypatch):
    """The search times candidates, so it could choose other widths on another run: the
    chosen ones go into config.yaml, and a resume or a --config repeat builds that network
    without searching again."""
    chosen = [4, 8, 8, 16, 16, 16, 16, 16]

    def search(*args, **kwargs):
        return list(chosen), {"tried": [], "most": 3.0}

    monkeypatch.setattr(plan_mod, "solve_speedup", search)
    argv = _target_argv(tiny_checkpoint, tmp_path / "run", "--speedup", "1.5", "--latency-batch", "8")
    assert main([*argv, "--max-total-epochs", "1"]) == 2  # stops before the alpha = 0 phase
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["prune"]
    assert cfg["solved"]["widths"] == chosen and cfg["speedup"] == 1.5

    s = _resume_without(monkeypatch, "solve_speedup", tmp_path / "run")
    assert s["widths_after"] == chosen and s["speedup"]["target"] == 1.5
    assert main(["prune", "--config", str(tmp_path / "run" / "config.yaml"), "--out",
                 str(tmp_path / "again"), "--no-progress"]) == 0
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["widths_after"] == chosen


def test_widths_that_do_not_fit_the_model_are_a_one_line_error(tiny_checkpoint, tmp_path, capsys):
    assert main([*_argv(tiny_checkpoint, tmp_path / "run"), "--widths", "4,8"]) == 2
    err = capsys.readouterr().err
    _assert_one_line_error(err)
    assert "--widths 4,8 does not fit vgg11: it has 8 prunable units" in err
    assert not (tmp_path / "run").exists()


def test_the_final_phase_takes_the_epochs_the_others_left(tiny_checkpoint, tmp_path):
    """alpha 0.5 stops after its 1 epoch; --final-max-epochs 1 would end the run at 2 of
    the 4 epochs, --final-takes-rest lets the alpha = 0 phase run the other 3."""
    out = tmp_path / "rest"
    argv = _argv(tiny_checkpoint, out, "--final-max-epochs", "1", "--final-patience", "9",
                 "--max-total-epochs", "4", "--final-takes-rest")
    assert main(argv) == 0
    _, phases = _rows(out / "phases.csv")
    assert [(r["alpha"], int(r["epochs"])) for r in phases] == [("0.5", 1), ("0.0", 3)]
    assert yaml.safe_load((out / "config.yaml").read_text())["prune"]["final_takes_rest"] is True


def test_streams_are_cut_by_default_under_flops_and_speedup_targets():
    from alphaprune.prune import resolve_streams

    assert resolve_streams(None, "flops") is True
    assert resolve_streams(None, "params") is False
    assert resolve_streams(None, "latency") is True
    assert resolve_streams(False, "flops") is False
    assert resolve_streams(True, "params") is True


def test_final_takes_rest_needs_a_budget(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "nobudget"
    argv = [a for a in _argv(tiny_checkpoint, out, "--final-takes-rest")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--final-takes-rest" in err and "--max-total-epochs N" in err and not out.exists()


def test_widths_that_cannot_come_near_the_target_are_said_with_the_option_that_can():
    """A unit of 16 channels in steps of 8 is 8 or 16: --prune 0.3 of such a model removed
    46% with no word. The run now says what the widths remove and what comes closer."""
    import torch.nn as nn

    from alphaprune.graph import find_units

    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    structure = find_units(model.eval(), torch.zeros(2, 1, 8, 8))
    base = [u.width for u in structure.units]
    cfg = prune_mod.PruneConfig(checkpoint="m.pt", prune=0.3)
    half = prune_mod._Plan(structure, base, [8] * len(base))
    said = prune_mod.target_gap(cfg, half)
    assert said.startswith("the widths remove ") and "not the 0.3 asked" in said
    assert "--round-to 1 may come closer" in said
    assert prune_mod.target_gap(replace(cfg, round_to=1), half).endswith("the nearest they can")
    cost = prune_mod.CostModel(structure)
    share = 1 - cost.params([8] * len(base)) / cost.params(base)
    assert prune_mod.target_gap(replace(cfg, prune=share), half) is None  # on target: silent
    assert prune_mod.target_gap(replace(cfg, widths=[8] * len(base)), half) is None  # given


def test_kept_units_stay_whole_and_the_others_meet_the_target(tiny_checkpoint, tmp_path, capsys):
    """--keep names units (or a module around them, or a pattern): they keep every channel
    in the fused model, and the other units are cut harder to meet the same target."""
    out = tmp_path / "run"
    assert main(_argv(tiny_checkpoint, out, "--keep", "features.0,features.7*")) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["kept_whole"] == ["features.0.conv", "features.7.conv"]
    original = alphaprune.load_model(tiny_checkpoint)
    fused = alphaprune.load_model(out / "pruned.pt")
    for name in s["kept_whole"]:
        assert fused.get_submodule(name).out_channels == original.get_submodule(name).out_channels
    assert len(s["widths_after"]) == len(s["widths_before"]) == 6  # vgg11's 8 convs, less 2
    assert sum(s["widths_after"]) < sum(s["widths_before"])  # the others are cut
    assert abs(s["achieved_reduction"] - 0.5) <= 0.03
    cfg = yaml.safe_load((out / "config.yaml").read_text())["prune"]
    assert cfg["keep"] == ["features.0", "features.7*"]
    # the same keep from the recorded config.yaml builds the same widths
    again = tmp_path / "again"
    assert main(["prune", "--config", str(out / "config.yaml"), "--out", str(again),
                 "--max-total-epochs", "1000", "--no-progress"]) == 0
    assert json.loads((again / "summary.json").read_text())["widths_after"] == s["widths_after"]
    # a run recorded before --keep existed kept nothing: a resume may not start keeping
    doc = yaml.safe_load((again / "config.yaml").read_text())
    del doc["prune"]["keep"]
    (again / "config.yaml").write_text(yaml.safe_dump(doc))
    capsys.readouterr()
    assert main(["prune", "--out", str(again), "--resume", "--keep", "features.0",
                 "--no-progress"]) == 2
    assert "--keep (recorded None, given ['features.0']) changed" in capsys.readouterr().err
    # through the API, an empty list keeps nothing, and a name cannot hold a comma
    cfg = prune_mod.checked_config(prune_mod.PruneConfig(checkpoint=str(tiny_checkpoint), keep=[]))
    assert cfg.keep is None
    with pytest.raises(alphaprune.UserError, match="no comma inside one"):
        prune_mod.checked_config(prune_mod.PruneConfig(checkpoint=str(tiny_checkpoint),
                                                       keep=["a,b"]))


@pytest.mark.parametrize("keep, words", [
    ("classifier", "--keep 'classifier' matches no prunable unit: the units are features.0.conv"),
    ("features.*", "keeps every prunable unit whole: nothing is left to prune"),
    ("a,,b", "--keep takes comma-separated unit names or patterns"),
])
def test_a_keep_that_names_no_unit_or_every_unit_exits_2(tiny_checkpoint, tmp_path, capsys, keep,
                                                           words):
    out = tmp_path / "run"
    try:
        rc = main(_argv(tiny_checkpoint, out, "--keep", keep))
    except SystemExit as e:  # argparse refuses an empty name itself
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err
    assert words in err and not out.exists() and len(err.splitlines()) == 1
