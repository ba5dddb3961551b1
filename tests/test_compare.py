"""`alphaprune compare --quick`: every method yields a row at the same parameter budget."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from alphaprune.baselines.fastnas import fastnas_available
from alphaprune.cli import main
from alphaprune.compare import METHODS, phase_budget
from alphaprune.errors import UserError

# every method that can run here: FastNAS needs the peers extra (compare skips it without)
RUNNABLE = [m for m in METHODS if m != "modelopt-fastnas" or fastnas_available()]

DATA = ["--data", "digits", "--subset", "300", "--batch-size", "32"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    base = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALPHAPRUNE_CACHE", str(base / "cache"))
        torch.manual_seed(0)
        assert main(["train", "--model", "vgg11", "--width", "0.125", *DATA, "--epochs", "2",
                     "--no-progress", "--out", str(base / "train")]) == 0
        rc = main(["compare", "--checkpoint", str(base / "train" / "model.pt"), *DATA,
                   "--quick", "--targets", "0.65", "--out", str(base / "cmp"), "--no-progress"])
    rows = [json.loads(line) for line in (base / "cmp" / "results.jsonl").read_text().splitlines()]
    return rc, base / "cmp", rows


def test_every_method_has_a_row_at_the_same_budget(results):
    rc, out, rows = results
    assert rc == 0
    by_method = {r["method"]: r for r in rows}
    assert set(by_method) == set(RUNNABLE) | {"pretrained"}
    # latency is measured for all models together at the end: it is in results.json
    final = {r["method"]: r for r in json.loads((out / "results.json").read_text())}
    budget = by_method["os-step"]["params"]
    full = by_method["pretrained"]["params"]
    assert abs(1 - budget / full - 0.65) < 0.005
    for m in RUNNABLE:
        r = by_method[m]
        if m == "modelopt-fastnas":  # its budget is an upper bound, met on its coarse width grid
            assert 0.8 * budget <= r["params"] <= budget, (r["params"], budget)
        else:
            assert abs(r["params"] - budget) <= 0.01 * budget, (m, r["params"], budget)
        assert 0.0 <= r["test_acc"] <= 1.0 and 0.0 <= r["val_acc"] <= 1.0
        assert final[m]["latency_b1_ms"] > 0 and final[m]["latency_b128_ms"] > 0
        assert 1 <= r["epochs"] <= 4  # the quick budget, never more
    # structured methods are smaller in FLOPs; masked unstructured pruning is not
    full_flops = by_method["pretrained"]["flops"]
    assert by_method["tp-l1"]["flops"] < full_flops and by_method["os-step"]["flops"] < full_flops
    assert by_method["unstructured"]["flops"] == by_method["pretrained"]["flops"]


def test_tables_are_written(results):
    _, out, rows = results
    md = (out / "results.md").read_text()
    assert all(m in md for m in RUNNABLE)
    assert len((out / "results.csv").read_text().strip().splitlines()) == len(rows) + 1
    assert (out / "pareto.png").stat().st_size > 0


def test_rerun_resumes_without_repeating_finished_rows(results, capsys):
    _, out, rows = results
    before = (out / "results.jsonl").read_text()
    rc = main(["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick",
               "--targets", "0.65", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert (out / "results.jsonl").read_text() == before


def test_a_rerun_with_other_settings_or_weights_is_refused_naming_them(results, tmp_path, capsys):
    """Rows of one comparison share their pretrained weights, data and budget: a rerun that
    changes them would mix rows, so it is refused, and nothing in the folder changes."""
    from alphaprune.modelfile import load_checkpoint, save_model

    _, out, _ = results
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    mf = load_checkpoint(out / "pretrained.pt")
    with torch.no_grad():
        next(mf.model.parameters()).add_(0.01)
    other = tmp_path / "other.pt"
    save_model(other, mf.model, mf.arch, mf.mean, mf.std, mf.classes)
    for argv, words in (
            ([str(out / "pretrained.pt"), "--lr", "0.02", "--subset", "200"],
             ["lr (recorded 0.01, given 0.02)", "data.subset (recorded 300, given 200)"]),
            ([str(other)], ["pretrained_sha256 (given other weights)"])):
        capsys.readouterr()
        rc = main(["compare", "--checkpoint", *argv[:1], *DATA, *argv[1:], "--quick",
                   "--targets", "0.65,0.5", "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "other settings" in err, err
        assert all(w in err for w in words), err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def _copy_without_method_rows(out, dest, keep=lambda row: row["method"] == "pretrained"):
    """``out`` copied to ``dest`` with only the ``keep`` rows in results.jsonl, as a kill
    before the others were written leaves it."""
    import shutil

    shutil.copytree(out, dest)
    rows = [r for r in (dest / "results.jsonl").read_text().splitlines() if keep(json.loads(r))]
    (dest / "results.jsonl").write_text("\n".join(rows) + "\n")
    return dest


def test_a_method_finished_but_not_written_is_written_on_rerun(results, tmp_path):
    """A kill between objective selection's finished run and its row: the rerun writes the
    row from the finished run (it said "already finished: nothing to resume" for ever)."""
    _, out, rows = results
    cmp = _copy_without_method_rows(out, tmp_path / "c", lambda r: r["method"] != "os-step")
    assert main(["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick",
                 "--targets", "0.65", "--out", str(cmp), "--no-progress"]) == 0
    redone = {json.loads(r)["method"]: json.loads(r)
              for r in (cmp / "results.jsonl").read_text().splitlines()}
    first = next(r for r in rows if r["method"] == "os-step")
    for key in ("test_acc", "val_acc", "params", "flops", "epochs"):
        assert redone["os-step"][key] == first[key], key


def test_a_rerun_after_a_method_started_keeps_its_settings(results, tmp_path, capsys):
    """No row yet, but a method's run and the target's widths exist: they were made with
    the recorded settings, so other settings are refused (they were taken, and mixed)."""
    _, out, _ = results
    cmp = _copy_without_method_rows(out, tmp_path / "c")
    assert main(["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick",
                 "--targets", "0.65", "--lr", "0.02", "--out", str(cmp), "--no-progress"]) == 2
    assert "lr (recorded 0.01, given 0.02)" in capsys.readouterr().err


def test_a_rerun_spelling_out_a_default_continues_and_another_value_is_refused(results, capsys):
    """``--solver ratio --balance 1 --distill 0.7`` are what the comparison's parameter
    targets ran with: spelled out they continue it; another distillation weight does not."""
    _, out, _ = results
    before = (out / "results.jsonl").read_text()
    argv = ["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick",
            "--targets", "0.65", "--out", str(out), "--no-progress"]
    assert main([*argv, "--solver", "ratio", "--balance", "1", "--distill", "0.7",
                 "--final-ema", "1"]) == 0
    assert (out / "results.jsonl").read_text() == before
    capsys.readouterr()
    assert main([*argv, "--distill", "0.5"]) == 2
    assert "os_options.distill (recorded None, given 0.5)" in capsys.readouterr().err
    assert main([*argv, "--final-ema", "0"]) == 2
    assert "os_options.final_ema (recorded None, given 0.0)" in capsys.readouterr().err
    # 0.651 would be the 0.65 run (its folder p65) under another label
    assert main([*argv[:-5], "--targets", "0.651", *argv[-3:]]) == 2
    assert "shares the folder p65" in capsys.readouterr().err
    assert (out / "results.jsonl").read_text() == before


def test_a_comparison_without_method_rows_takes_new_settings_and_equal_spellings_pass(
        results, tmp_path, capsys):
    """Before any method row, a rerun may fix a setting (a failed first try); the data
    folder's spelling and the cache folder change nothing."""
    import shutil

    _, out, _ = results
    fresh = tmp_path / "cmp"
    fresh.mkdir()
    for name in ("compare.yaml", ".alphaprune-compare", "pretrained.pt"):
        shutil.copy(out / name, fresh / name)
    pretrained_row = (out / "results.jsonl").read_text().splitlines()[0]
    assert '"pretrained"' in pretrained_row
    (fresh / "results.jsonl").write_text(pretrained_row + "\n")
    argv = ["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick", "--targets",
            "0.65", "--methods", "unstructured", "--out", str(fresh), "--no-progress"]
    assert main([*argv, "--lr", "0.02", "--cache-dir", str(tmp_path / "c")]) == 0
    assert yaml.safe_load((fresh / "compare.yaml").read_text())["lr"] == 0.02
    capsys.readouterr()
    assert main([*argv, "--lr", "0.03"]) == 2  # now a row was trained at 0.02
    assert "lr (recorded 0.02, given 0.03)" in capsys.readouterr().err


def test_a_comparison_from_before_recorded_settings_says_its_rows_are_unchecked(results, tmp_path,
                                                                                capsys):
    """A comparison made before compare.yaml existed continues (its rows are kept) and says
    that they cannot be checked against this run's settings, which it now records."""
    import shutil

    _, out, _ = results
    old = tmp_path / "old"
    shutil.copytree(out, old)
    (old / "compare.yaml").unlink()
    before = (old / "results.jsonl").read_text()
    argv = ["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick", "--targets",
            "0.65", "--out", str(old), "--no-progress"]
    capsys.readouterr()
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "made before comparisons recorded their settings" in said
    assert (old / "results.jsonl").read_text() == before and (old / "compare.yaml").is_file()
    assert main(argv) == 0  # recorded now: nothing more to say
    assert "recorded their settings" not in capsys.readouterr().out


def test_a_folder_that_is_no_comparison_is_left_alone(results, tmp_path, capsys):
    """A user's folder is neither read as a comparison (its pretrained.pt is not used) nor
    written into."""
    _, out, _ = results
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "pretrained.pt").write_bytes((out / "pretrained.pt").read_bytes())
    (mine / "results.md").write_text("my notes")
    capsys.readouterr()
    rc = main(["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick",
               "--targets", "0.65", "--out", str(mine), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "not an alphaprune comparison" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in mine.iterdir()) == ["pretrained.pt", "results.md"]
    assert (mine / "results.md").read_text() == "my notes"


@pytest.mark.parametrize("flag, value", [("--targets", "0.5,0.65,0.5"), ("--targets", "0.6,0.604"),
                                         ("--methods", "os-step,tp-l1,os-step")])
def test_a_target_or_method_listed_twice_is_refused_first(results, tmp_path, capsys, flag, value):
    _, out, _ = results
    capsys.readouterr()
    rc = main(["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick",
               flag, value, "--out", str(tmp_path / "c"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and f"{flag} lists" in err and "more than once" in err, err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("scheduler, opts, budget", [
    ("step", {"step_size": 0.1}, 30), ("step", {"step_size": 0.5}, 4),
    ("exponential", {"decay_rate": 0.5}, 30), ("multiplicative", {"mu": 0.5}, 20),
    ("plateau", {"factor": 0.5}, 30)])
def test_phase_budget_never_exceeds_the_budget(scheduler, opts, budget):
    from alphaprune.schedules import make_scheduler

    per, final = phase_budget(scheduler, opts, budget)
    s = make_scheduler(scheduler, **opts)
    a, n = s.start(), 0
    while a > 0:
        n += 1
        a = s.reduce() if hasattr(s, "reduce") else s.step()
    assert per >= 1 and final >= 1 and n * per + final <= budget


def test_budget_too_small_is_a_one_line_error(results, capsys):
    _, out, _ = results
    rc = main(["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--budget", "3",
               "--methods", "os-step", "--targets", "0.5", "--out", str(out / "small")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--budget" in err


def test_every_model_is_saved_and_remeasured_side_by_side(results):
    _, out, rows = results
    final = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in final] == [r["method"] for r in rows]
    for r in final:
        path = r["model_file"]
        import alphaprune

        m = alphaprune.load_model(path)
        assert sum(p.numel() for p in m.parameters()) >= r["params"]  # non-zeros for unstructured
        assert r["latency_b1_ms"] > 0 and r["latency_b128_ms"] > 0



@pytest.mark.parametrize("flag, value, method", [("--decay-rate", "0.4", "os-exponential"),
                                                 ("--mu", "0.6", "os-multiplicative"),
                                                 ("--factor", "0.6", "os-plateau")])
def test_schedule_flags_reach_the_schedulers(results, capsys, flag, value, method):
    """A non-default rate changes the number of alpha > 0 phases named in the budget error."""
    from alphaprune.errors import UserError

    _, out, _ = results
    key = flag.lstrip("-").replace("-", "_")
    with pytest.raises(UserError) as expected:  # what the scheduler with this rate needs
        phase_budget(method.removeprefix("os-"), {key: float(value)}, 6)
    with pytest.raises(UserError) as default:
        phase_budget(method.removeprefix("os-"), {key: 0.5}, 6)
    assert str(expected.value) != str(default.value)
    rc = main(["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--budget", "6",
               "--methods", method, "--targets", "0.5", "--no-progress", flag, value,
               "--out", str(out / "sched")])
    assert rc == 2 and capsys.readouterr().err.strip() == f"alphaprune: error: {expected.value}"


def test_tables_are_sorted_however_the_rows_were_run(results, tmp_path, capsys):
    """Slices of the matrix run in parallel append rows in any order; the tables do not."""
    import shutil

    _, out, rows = results
    copy = tmp_path / "cmp"
    shutil.copytree(out, copy)
    lines = (copy / "results.jsonl").read_text().splitlines()
    (copy / "results.jsonl").write_text("\n".join(lines[::-1]) + "\n")  # pretrained last
    assert main(["compare", "--checkpoint", str(copy / "pretrained.pt"), *DATA, "--quick",
                 "--targets", "0.65", "--out", str(copy), "--no-progress"]) == 0
    final = json.loads((copy / "results.json").read_text())
    assert [r["method"] for r in final] == ["pretrained", *RUNNABLE]
    assert (copy / "results.md").read_text().splitlines()[2].startswith("| 0% | pretrained")


def test_balance_shapes_objective_selection_and_its_scratch_twin(results, tmp_path):
    """``--balance`` reaches objective selection's widths and the compact architecture that
    scratch trains, so both still compare the same network."""
    import alphaprune
    from alphaprune.blend import solve_widths
    from alphaprune.blend.widths import vgg_counter

    _, out, _ = results
    run = tmp_path / "bal"
    base = [u.conv.out_channels for u in alphaprune.load_model(out / "pretrained.pt").features]
    want = solve_widths(base, vgg_counter(1, 10), 0.65, 8, balance=1.0)
    assert want != solve_widths(base, vgg_counter(1, 10), 0.65, 8)
    assert main(["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick",
                 "--targets", "0.65", "--methods", "os-step,scratch", "--balance", "1.0",
                 "--out", str(run), "--no-progress"]) == 0
    for method, name in (("os-step", "pruned.pt"), ("scratch", "model.pt")):
        model = alphaprune.load_model(run / "p65" / method / name)
        assert [u.conv.out_channels for u in model.features] == want, method


def test_the_sensitivity_solver_shapes_objective_selection_and_its_kd_twin(results, tmp_path,
                                                                           capsys, monkeypatch):
    """``--solver sensitivity``: objective selection and the kd twin train the widths the
    measured cuts chose, Torch-Pruning is sized to them, and a rerun with the ratio solver
    is refused (it would mix architectures in one table)."""
    import alphaprune

    _, out, _ = results
    run = tmp_path / "sens"
    argv = ["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick",
            "--targets", "0.5", "--match", "flops", "--out", str(run), "--no-progress"]
    assert main([*argv, "--methods", "os-step,kd,tp-l1", "--solver", "sensitivity"]) == 0
    rows = {r["method"]: r for r in map(json.loads, (run / "results.jsonl").read_text().splitlines())}
    assert {rows[m]["solver"] for m in ("os-step", "kd", "tp-l1")} == {"sensitivity"}
    widths = {m: [u.conv.out_channels for u in alphaprune.load_model(run / "p50" / m / f).features]
              for m, f in (("os-step", "pruned.pt"), ("kd", "model.pt"))}
    assert widths["os-step"] == widths["kd"]
    full = [u.conv.out_channels for u in alphaprune.load_model(out / "pretrained.pt").features]
    assert widths["os-step"] != full
    assert abs(rows["tp-l1"]["flops"] - rows["os-step"]["flops"]) <= 0.02 * rows["os-step"]["flops"]
    # a rerun trains the remaining methods on the recorded widths, solving nothing again
    assert json.loads((run / "p50" / "widths.json").read_text())["widths"] == widths["kd"]
    import alphaprune.compare as compare_mod

    def no_solve(*args, **kwargs):
        raise AssertionError("solved again")

    monkeypatch.setattr(compare_mod, "solve_target", no_solve)
    assert main([*argv, "--methods", "os-step,kd,tp-l1,scratch", "--solver", "sensitivity"]) == 0
    scratch = alphaprune.load_model(run / "p50" / "scratch" / "model.pt")
    assert [u.conv.out_channels for u in scratch.features] == widths["kd"]
    capsys.readouterr()
    assert main([*argv, "--methods", "scratch", "--solver", "ratio"]) == 2
    err = capsys.readouterr().err
    assert "--solver sensitivity to continue it" in err and len(err.splitlines()) == 1


def test_rerun_with_another_balance_is_refused(results, tmp_path, capsys):
    """The quick matrix ran with the default balance; continuing it with another would mix
    architectures in one table."""
    import shutil

    _, out, _ = results
    copy = tmp_path / "cmp"
    shutil.copytree(out, copy)
    before = (copy / "results.jsonl").read_text()
    capsys.readouterr()
    rc = main(["compare", "--checkpoint", str(copy / "pretrained.pt"), *DATA, "--quick",
               "--targets", "0.65", "--balance", "0", "--out", str(copy), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--balance 1 to continue it" in err and len(err.splitlines()) == 1
    assert (copy / "results.jsonl").read_text() == before


def test_bad_balance_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(["compare", "--checkpoint", "missing.pt", *DATA, "--balance", "2",
               "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--balance must be between 0 and 1" in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("option, message", [
    (["--distill", "1.5"], "--distill must be in [0, 1], got 1.5"),
    (["--temperature", "0"], "--temperature must be > 0, got 0.0"),
    (["--feature-distill", "-1"], "--feature-distill must be >= 0, got -1.0"),
    (["--handover", "bogus"], "unknown --handover 'bogus'"),
    (["--warmup-steps", "-1"], "--warmup-steps must be >= 0, got -1"),
])
def test_a_bad_objective_selection_option_is_refused_before_any_peer_trains(results, tmp_path,
                                                                            capsys, option, message):
    _, out, _ = results
    cmp = tmp_path / "cmp"
    rc = main(["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick",
               "--methods", "tp-l1,os-step", *option, "--out", str(cmp), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.splitlines()) == 1
    assert not cmp.exists()  # Torch-Pruning's row did not run first


def test_temperature_and_feature_distillation_reach_objective_selections_run(results, tmp_path):
    _, out, _ = results
    cmp = tmp_path / "cmp"
    assert main(["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick",
                 "--methods", "os-step", "--targets", "0.65", "--temperature", "2",
                 "--feature-distill", "0.5", "--out", str(cmp), "--no-progress"]) == 0
    recorded = yaml.safe_load((cmp / "p65" / "os-step" / "config.yaml").read_text())["prune"]
    assert recorded["temperature"] == 2.0 and recorded["distill"] == 0.7
    assert recorded["feature_distill"] == 0.5
    header = (cmp / "p65" / "os-step" / "metrics.csv").read_text().splitlines()[0]
    assert "train_feature_loss" in header.split(",")  # the term ran


def test_match_flops_sizes_torch_pruning_to_the_fused_models_flops(results, tmp_path, capsys):
    """``--match flops``: the targets are shares of the FLOPs; objective selection prunes to
    that share and Torch-Pruning is sized to the fused model's FLOPs (not its parameters)."""
    _, out, _ = results
    run = tmp_path / "flops"
    assert main(["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick",
                 "--targets", "0.5", "--methods", "os-step,tp-l1", "--match", "flops",
                 "--out", str(run), "--no-progress"]) == 0
    rows = {r["method"]: r for r in map(json.loads, (run / "results.jsonl").read_text().splitlines())}
    base, os_, tp = rows["pretrained"]["flops"], rows["os-step"]["flops"], rows["tp-l1"]["flops"]
    assert abs(1 - os_ / base - 0.5) <= 0.01
    assert abs(tp - os_) <= 0.01 * base
    assert rows["os-step"]["match"] == rows["tp-l1"]["match"] == "flops"
    # at equal FLOPs the two keep different parameter counts: they were not matched by those
    assert rows["tp-l1"]["params"] != rows["os-step"]["params"]
    # the default solver (auto) records its scored candidates beside the widths it chose
    rec = json.loads((run / "p50" / "widths.json").read_text())
    (c,) = rec["candidates"]
    assert rec["solver"] == "auto" and rec["widths"] == c[c["chosen"]]["widths"]
    assert {"val_acc", "se", "written"} <= set(c["ratio"])
    capsys.readouterr()
    assert main(["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick",
                 "--targets", "0.5", "--methods", "tp-l1", "--out", str(run), "--no-progress"]) == 2
    assert "matched by flops, this run matches by params" in capsys.readouterr().err


def test_match_latency_times_torch_pruning_against_the_fused_model(results, tmp_path,
                                                                    monkeypatch):
    """``--match latency``: a target T asks objective selection for --speedup 1/(1-T) and
    Torch-Pruning is cut until it runs as fast as objective selection's fused architecture.
    Timing and the latency table are replaced by FLOP counts (tests/standins.py), so the
    sizes can be checked on a busy machine."""
    from .standins import stand_in_timing

    stand_in_timing(monkeypatch)
    _, out, _ = results
    run = tmp_path / "lat"
    assert main(["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick",
                 "--targets", "0.5", "--methods", "os-step,tp-l1", "--match", "latency",
                 "--latency-batch", "8", "--out", str(run), "--no-progress"]) == 0
    rows = {r["method"]: r for r in map(json.loads, (run / "results.jsonl").read_text().splitlines())}
    assert rows["os-step"]["match"] == rows["tp-l1"]["match"] == "latency"
    os_, tp, base = (rows[m]["flops"] for m in ("os-step", "tp-l1", "pretrained"))
    assert abs(base / os_ - 2.0) <= 0.1 * 2.0   # the speed-up asked, in the stand-in's terms
    assert abs(tp / os_ - 1) <= 0.05
    s = json.loads((run / "p50" / "os-step" / "summary.json").read_text())
    assert s["speedup"]["target"] == 2.0 and s["speedup"]["batch"] == 8


def test_tp_round_to_rounds_the_peer_and_a_resume_trains_the_same_cut(results, tmp_path,
                                                                     monkeypatch, capsys):
    """``--tp-round-to 8`` under ``--match latency``: Torch-Pruning's cut layers are
    multiples of 8 and the row says so. Its cut is written before training, so a run killed
    mid-training trains the same network again rather than timing a new cut; a rerun with
    another --tp-round-to is refused."""
    import alphaprune.compare as compare_mod
    from alphaprune.modelfile import load_checkpoint

    from .standins import stand_in_timing

    stand_in_timing(monkeypatch)
    _, out, _ = results
    run = tmp_path / "round"
    args = ["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick",
            "--targets", "0.5", "--methods", "os-step,tp-l1", "--match", "latency",
            "--out", str(run), "--no-progress"]
    assert main([*args, "--tp-round-to", "8"]) == 0
    lines = (run / "results.jsonl").read_text().splitlines()
    tp = json.loads(lines[-1])
    assert tp["method"] == "tp-l1" and tp["tp_round_to"] == 8
    assert "tp_round_to" not in json.loads(lines[-2])  # objective selection's row
    convs = [m for m in load_checkpoint(tp["model_file"]).model.modules()
             if isinstance(m, torch.nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs)
    full = sum(c.out_channels for c in load_checkpoint(out / "pretrained.pt").model.modules()
               if isinstance(c, torch.nn.Conv2d))
    assert sum(c.out_channels for c in convs) < full  # it was cut
    # killed after training, before its row was written: the rerun reads the saved cut
    (run / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    monkeypatch.setattr(compare_mod, "torch_pruning_l1", lambda *a, **k: pytest.fail("cut again"))
    assert main([*args, "--tp-round-to", "8"]) == 0
    again = json.loads((run / "results.jsonl").read_text().splitlines()[-1])
    assert again["method"] == "tp-l1" and again["params"] == tp["params"]
    capsys.readouterr()
    assert main(args) == 2
    assert ("made with --tp-round-to 8, this run asks for none: pass --tp-round-to 8"
            in capsys.readouterr().err)


def test_a_rerun_rounding_an_unrounded_torch_pruning_is_refused(tmp_path):
    from alphaprune.compare import _check_same_tp_round_to

    rows = [{"method": "pretrained"}, {"method": "tp-l1"}]  # rows from before the option
    _check_same_tp_round_to(rows, None, tmp_path)
    with pytest.raises(UserError, match="made without --tp-round-to, this run asks for 8: "
                                        "drop --tp-round-to"):
        _check_same_tp_round_to(rows, 8, tmp_path)


def test_tp_round_to_must_be_positive(results, capsys):
    _, out, _ = results
    assert main(["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick",
                 "--tp-round-to", "0", "--out", str(out.parent / "never")]) == 2
    assert "--tp-round-to must be >= 1, got 0" in capsys.readouterr().err
    assert not (out.parent / "never").exists()


@pytest.mark.parametrize("why", ["missing", "latency"])
def test_fastnas_is_skipped_with_the_reason_where_it_cannot_run(results, tmp_path, capsys,
                                                                 monkeypatch, why):
    """Without the peers extra compare says how to install it; under --match latency (no
    constraint of FastNAS's can express it) it says what to pass. The other methods run."""
    import alphaprune.compare as compare_mod

    from .standins import stand_in_timing

    if why == "missing":
        monkeypatch.setattr(compare_mod, "fastnas_available", lambda: False)
    stand_in_timing(monkeypatch)  # a latency target's widths are sized by timing
    _, out, _ = results
    run = tmp_path / "skip"
    match = ["--match", "latency"] if why == "latency" else []
    assert main(["compare", "--checkpoint", str(out / "pretrained.pt"), *DATA, "--quick",
                 "--targets", "0.5", "--methods", "modelopt-fastnas,unstructured", *match,
                 "--out", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    said = "make peers" if why == "missing" else "--match params or flops"
    assert "[compare] modelopt-fastnas skipped: " in err and said in err
    methods = [json.loads(line)["method"] for line in (run / "results.jsonl").read_text().splitlines()]
    assert methods == ["pretrained", "unstructured"]


def test_a_rerun_with_or_without_prune_streams_is_refused(tmp_path):
    from alphaprune.compare import _check_same_widths

    rows = [{"method": "pretrained"}, {"method": "os-step", "solver": "ratio", "balance": 1.0}]
    _check_same_widths(rows, 1.0, "ratio", tmp_path)  # rows from before the option: without
    with pytest.raises(UserError, match="made without --prune-streams, this run is with it"):
        _check_same_widths(rows, 1.0, "ratio", tmp_path, streams=True)
    rows[1]["streams"] = True
    with pytest.raises(UserError, match="made with --prune-streams, this run is without it"):
        _check_same_widths(rows, 1.0, "ratio", tmp_path)


def test_a_rerun_with_other_auto_steps_is_refused(tmp_path):
    """New targets of a folder are chosen as its recorded ones were; a folder from before
    --auto-steps chose them untrained (0)."""
    from alphaprune.compare import CompareConfig, _check_same_auto_steps

    (tmp_path / "p50").mkdir()
    (tmp_path / "p50" / "widths.json").write_text(json.dumps({"widths": [8], "solver": "auto"}))
    cfg = CompareConfig(checkpoint="m.pt", os_options={"auto_steps": 40})
    with pytest.raises(UserError, match="after 0 training steps per candidate, this run asks "
                                        "for 40: pass --auto-steps 0"):
        _check_same_auto_steps(cfg, tmp_path, "auto")
    _check_same_auto_steps(cfg, tmp_path, "ratio")  # no candidates trained: nothing to match
    _check_same_auto_steps(CompareConfig(checkpoint="m.pt", os_options={"auto_steps": 0}),
                           tmp_path, "auto")
    (tmp_path / "p50" / "widths.json").write_text(
        json.dumps({"widths": [8], "solver": "auto", "auto_steps": 40}))
    _check_same_auto_steps(cfg, tmp_path, "auto")


def test_a_rounded_torch_pruning_cut_far_from_its_size_is_said():
    from alphaprune.compare import rounded_fit_note

    assert rounded_fit_note(13_100_000, 13_000_000, "flops", 8) is None  # within 2%
    note = rounded_fit_note(18_260_448, 13_250_000, "flops", 8)
    assert note.startswith("tp-l1 with --tp-round-to 8 has +38% of the flops asked "
                           "(18,260,448 against 13,250,000)")
    assert "drop --tp-round-to" in note


def test_objective_selection_rows_at_a_scarce_budget_get_the_default_feature_term(results):
    _, out, _ = results
    for method in ("os-step", "os-plateau"):  # no option given: the measured default applies
        recorded = yaml.safe_load((out / "p65" / method / "config.yaml").read_text())["prune"]
        assert recorded["feature_distill"] == 20.0, method
        assert "--feature-distill 20" in recorded["recipe_reason"]
        header = (out / "p65" / method / "metrics.csv").read_text().splitlines()[0]
        assert "train_feature_loss" in header.split(",")


def test_objective_selection_rows_carry_the_live_weights_beside_the_average(results):
    """A row of a method that ships an average of its alpha = 0 phase's weights (the
    hand-over's default) also carries the live weights' scores from its run's summary."""
    from alphaprune.compare import SCHEDULER_METHODS

    rc, out, rows = results
    averaged = [r for r in rows if r["method"] in SCHEDULER_METHODS]
    assert averaged
    for r in rows:
        if r["method"] not in SCHEDULER_METHODS:
            assert "live_test_acc" not in r, r["method"]
            continue
        live = json.loads((out / "p65" / r["method"] / "summary.json").read_text())["final_ema"]["live"]
        assert (r["live_val_acc"], r["live_test_acc"]) == (live["val_acc"], live["test_acc"])


def test_keep_holds_the_same_units_whole_in_objective_selection_and_torch_pruning(results, tmp_path,
                                                                                  capsys):
    """compare --keep: objective selection keeps the units whole, Torch-Pruning (sized to
    the same parameters) is told to leave the same layers alone; a name that matches no
    unit is refused before the folder is made."""
    import alphaprune

    ckpt = results[1].parent / "train" / "model.pt"
    argv = ["compare", "--checkpoint", str(ckpt), *DATA, "--quick", "--targets", "0.5",
            "--methods", "os-step,tp-l1", "--no-progress"]
    assert main([*argv, "--keep", "classifier", "--out", str(tmp_path / "bad")]) == 2
    assert "matches no prunable unit" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "cmp"
    assert main([*argv, "--keep", "features.0,features.7", "--out", str(out)]) == 0
    rows = {r["method"]: r for r in json.loads((out / "results.json").read_text())}
    original = alphaprune.load_model(ckpt)
    for method in ("os-step", "tp-l1"):
        model = alphaprune.load_model(rows[method]["model_file"])
        for name in ("features.0.conv", "features.7.conv"):
            assert model.get_submodule(name).out_channels == \
                original.get_submodule(name).out_channels, (method, name)
        def channels(m):
            return sum(c.out_channels for c in m.modules() if isinstance(c, torch.nn.Conv2d))
        assert channels(model) < channels(original), method  # the other units were cut
    assert abs(rows["tp-l1"]["params"] - rows["os-step"]["params"]) <= 0.01 * rows["os-step"]["params"]
    summary = json.loads((out / "p50" / "os-step" / "summary.json").read_text())
    assert summary["kept_whole"] == ["features.0.conv", "features.7.conv"]
