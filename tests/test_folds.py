"""``prune --folds K``: K runs on rotating validation folds, aggregated, resumable mid-fold."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import statistics
from dataclasses import replace
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import yaml

from alphaprune import api
from alphaprune.cli import main
from alphaprune.data import make_splits, rotate_fold
from alphaprune.errors import OutOfBudget, UserError
from alphaprune.folds import aggregate
from alphaprune.modelfile import load_checkpoint
from alphaprune.prune import PruneConfig, prune

from .test_prune_resume import _cfg, _rows, train_and_prune

FOLDS = 3


class CrashInFold(pl.Callback):
    """Raises at the start of epoch ``at`` of the run in folder ``fold``."""

    def __init__(self, fold: str, at: int):
        self.fold, self.at = fold, at

    def on_train_epoch_start(self, trainer, pl_module):
        if Path(trainer.default_root_dir).name == self.fold and trainer.current_epoch == self.at:
            raise RuntimeError(f"simulated crash in {self.fold} at epoch {self.at}")


def _folds_cfg(checkpoint):
    # 3 epochs per fold: alpha 0.5 for 1 epoch, then alpha 0 for 2 (its maximum)
    cfg = replace(_cfg(checkpoint), step_size=0.5, max_epochs_per_phase=1, final_max_epochs=2)
    return replace(cfg, data={**cfg.data, "folds": FOLDS})


@pytest.fixture(scope="module")
def folds_run(tmp_path_factory):
    """A tiny trained checkpoint and one uninterrupted ``--folds 3`` prune of it."""
    return train_and_prune(tmp_path_factory.mktemp("folds"), _folds_cfg)


def test_rotated_folds_partition_train_and_val_and_keep_the_test_split():
    y = np.repeat(np.arange(4), 50)
    base = make_splits(y, 0.1, 0.2, seed=3)
    folds = [rotate_fold(y, base, 3, i, seed=3) for i in (1, 2, 3)]
    pool = np.sort(np.concatenate([base.train, base.val]))
    vals = [f.val for f in folds]
    assert np.array_equal(np.sort(np.concatenate(vals)), pool)  # each image validates once
    for f in folds:
        assert np.array_equal(f.test, base.test)
        assert np.array_equal(np.sort(np.concatenate([f.train, f.val])), pool)
        assert not set(f.train) & set(f.val)
    # stratified: 40 images per class dealt into 14 + 13 + 13
    assert [list(np.bincount(y[v])) for v in vals] == [[14] * 4, [13] * 4, [13] * 4]
    assert np.array_equal(rotate_fold(y, base, 3, 2, seed=3).val, vals[1])  # seeded


@pytest.mark.parametrize("folds, fold, match", [(1, 1, "at least 2"), (3, 4, "not among folds")])
def test_bad_folds_are_one_line_errors(folds, fold, match):
    y = np.repeat(np.arange(2), 20)
    with pytest.raises(UserError, match=match):
        rotate_fold(y, make_splits(y), folds, fold)


def test_three_folds_run_aggregate_and_ship_the_best_validation_fold(folds_run):
    checkpoint, out, summary = folds_run
    per = [json.loads((out / f"fold{i}" / "summary.json").read_text()) for i in (1, 2, 3)]
    f = summary["folds"]
    assert f["k"] == FOLDS and [r["fold"] for r in f["per_fold"]] == [1, 2, 3]
    for key in ("test_acc_after", "val_acc_after", "params_after"):
        vals = [s[key] for s in per]
        assert [r[key] for r in f["per_fold"]] == vals
        assert f["mean"][key] == pytest.approx(statistics.fmean(vals))
        assert f["std"][key] == pytest.approx(statistics.stdev(vals))
    best = max(range(3), key=lambda i: (per[i]["val_acc_after"], -i))
    assert f["shipped_fold"] == best + 1
    # the shipped model is that fold's file, and the summary's numbers are its
    assert (out / "pruned.pt").read_bytes() == (out / f"fold{best + 1}" / "pruned.pt").read_bytes()
    assert summary["test_acc_after"] == per[best]["test_acc_after"]
    assert json.loads((out / "summary.json").read_text())["folds"] == f
    # every fold pruned the same checkpoint on its own validation part, scored on one test split
    splits = [load_checkpoint(out / f"fold{i}" / "pruned.pt").meta["split"] for i in (1, 2, 3)]
    assert [s["fold"] for s in splits] == [1, 2, 3] and {s["folds"] for s in splits} == {3}
    report = (out / "report.md").read_text()
    assert "## Cross-validation" in report and f"fold {best + 1} (shipped)" in report
    assert f"Over 3 cross-validation folds the test accuracy was {f['mean']['test_acc_after']:.4f}" \
        in report
    assert summary["headline"]["folds"]["test_acc_std"] == f["std"]["test_acc_after"]


def test_a_fold_model_evaluates_on_its_own_validation_part(folds_run):
    """The fold's model file records its fold, so ``evaluate --split val`` re-carves it."""
    _, out, _ = folds_run
    path = out / "fold2" / "pruned.pt"
    r = api.evaluate(path, split="val")
    want = json.loads((out / "fold2" / "summary.json").read_text())["val_acc_after"]
    assert r["accuracy"] == pytest.approx(want)


def test_a_folds_run_resumes_mid_fold_and_repeats_the_uninterrupted_run(folds_run, tmp_path):
    checkpoint, ref, ref_summary = folds_run
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        prune(_folds_cfg(checkpoint), out, progress=False, callbacks=[CrashInFold("fold2", 2)])
    assert (out / "fold1" / "pruned.pt").exists() and not (out / "fold2" / "pruned.pt").exists()
    assert not (out / "fold3").exists() and not (out / "pruned.pt").exists()
    fold1 = (out / "fold1" / "pruned.pt").stat().st_mtime_ns
    # a fresh run in the folder is refused (its finished fold is not cleared)
    with pytest.raises(UserError, match="--resume"):
        prune(_folds_cfg(checkpoint), out, progress=False)
    summary = prune(PruneConfig(), out, resume=True, progress=False)
    assert (out / "fold1" / "pruned.pt").stat().st_mtime_ns == fold1  # kept, not rerun
    assert [int(r["epoch"]) for r in _rows(out / "fold2" / "metrics.csv")] == list(range(3))
    for a, b in zip(summary["folds"]["per_fold"], ref_summary["folds"]["per_fold"]):
        assert a["val_acc_after"] == b["val_acc_after"] and a["test_acc_after"] == b["test_acc_after"]
    assert summary["folds"]["shipped_fold"] == ref_summary["folds"]["shipped_fold"]
    with pytest.raises(UserError, match="already finished"):
        prune(PruneConfig(), out, resume=True, progress=False)


def test_a_kill_after_the_last_fold_resumes_without_training_again(folds_run, tmp_path):
    _, ref, ref_summary = folds_run
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    (out / "pruned.pt").unlink()  # killed before the finished marker: not finished
    stamps = [(out / f"fold{i}" / "pruned.pt").stat().st_mtime_ns for i in (1, 2, 3)]
    summary = prune(PruneConfig(), out, resume=True, progress=False)
    assert [(out / f"fold{i}" / "pruned.pt").stat().st_mtime_ns for i in (1, 2, 3)] == stamps
    assert summary["folds"] == ref_summary["folds"] and (out / "pruned.pt").exists()


def test_a_fold_out_of_budget_names_the_run_to_resume(folds_run, tmp_path):
    checkpoint, _, _ = folds_run
    out = tmp_path / "run"
    cfg = replace(_folds_cfg(checkpoint), max_total_epochs=1)
    cfg = replace(cfg, data={**cfg.data, "folds": 2})  # two folds: cheaper, same logic
    with pytest.raises(OutOfBudget, match=f"fold 1 of run {out} stopped") as e:
        prune(cfg, out, progress=False)
    assert f"'alphaprune prune --out {out} --resume --max-total-epochs N'" in str(e.value)
    summary = prune(PruneConfig(), out, resume=True, progress=False, max_total_epochs=3)
    assert summary["folds"]["k"] == 2 and summary["epochs"] == 3
    assert [int(r["epoch"]) for r in _rows(out / "fold1" / "metrics.csv")] == list(range(3))
    # both folds ran under the new budget: nothing to say
    assert [r["max_total_epochs"] for r in summary["folds"]["per_fold"]] == [3, 3]
    assert "different epoch budgets" not in summary["folds"]["note"]


def test_folds_that_ran_under_different_budgets_are_said_so(folds_run, tmp_path):
    """A resume's new budget reaches only the folds not yet finished: the folds block and
    the report say their mean mixes schedules."""
    _, ref, _ = folds_run
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    for name in ("pruned.pt", "summary.json"):  # killed before fold 3 started
        (out / name).unlink()
    shutil.rmtree(out / "fold3")
    summary = prune(PruneConfig(), out, resume=True, progress=False, max_total_epochs=4)
    budgets = [r["max_total_epochs"] for r in summary["folds"]["per_fold"]]
    assert budgets[:2] != [4, 4] and budgets[2] == 4
    assert "different epoch budgets" in summary["folds"]["note"]
    assert "different epoch budgets" in (out / "report.md").read_text()


def test_the_cli_replaces_a_finished_folds_run_only_with_force_and_good_inputs(folds_run,
                                                                              tmp_path):
    """--force replaces a finished folds run once every input checked out; the CLI prints
    the folds line and the run records --folds, not a fold."""
    checkpoint, ref, _ = folds_run
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    argv = ["prune", "--checkpoint", str(checkpoint), "--data", "digits", "--subset", "300",
            "--batch-size", "32", "--prune", "0.5", "--step-size", "0.5", "--patience", "1",
            "--max-epochs-per-phase", "1", "--final-max-epochs", "1", "--folds", "2",
            "--no-progress", "--out", str(out)]
    assert main(argv) == 2  # a finished run, no --force
    assert main([*argv, "--force", "--widths", "1,2"]) == 2  # a bad input: nothing deleted
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main([*argv, "--force"]) == 0
    f = json.loads((out / "summary.json").read_text())["folds"]
    assert f["k"] == 2 and not (out / "fold3").exists()
    assert f"2 folds: test acc {f['mean']['test_acc_after']:.4f} ± " in buf.getvalue()
    assert f"pruned.pt is fold {f['shipped_fold']}'s" in buf.getvalue()
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["prune"]["data"]["folds"] == 2 and "fold" not in cfg["prune"]["data"]


def test_a_folds_run_is_repeated_by_its_own_config_not_by_a_folds(folds_run, tmp_path, capsys):
    from alphaprune.cli import _config_settings

    _, out, _ = folds_run
    assert _config_settings(str(out / "config.yaml"), "prune")["folds"] == FOLDS
    argv = ["prune", "--config", str(out / "fold1" / "config.yaml"), "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is one fold of a --folds run" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_a_later_fold_without_images_is_refused_before_anything_is_written(folds_run, tmp_path,
                                                                           capsys):
    """300 digits leave about 24 train and val images per class: with 100 folds the first
    has validation images and the last has none."""
    checkpoint, _, _ = folds_run
    argv = ["prune", "--checkpoint", str(checkpoint), "--data", "digits", "--subset", "300",
            "--folds", "100", "--out", str(tmp_path / "cv")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--folds 100 leaves an empty split" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cv").exists()


def test_folds_below_two_are_refused_before_anything_is_written(folds_run, tmp_path, capsys):
    checkpoint, _, _ = folds_run
    argv = ["prune", "--checkpoint", str(checkpoint), "--data", "digits", "--folds", "1",
            "--out", str(tmp_path / "cv")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--folds must be at least 2" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cv").exists()


def test_aggregate_breaks_a_validation_tie_by_the_first_fold():
    s = [{"val_acc_after": 0.5, "test_acc_after": 0.4}, {"val_acc_after": 0.7, "test_acc_after": 0.3},
         {"val_acc_after": 0.7, "test_acc_after": 0.9}]
    f = aggregate(s)
    assert f["shipped_fold"] == 2 and f["mean"]["test_acc_after"] == pytest.approx(1.6 / 3)
    assert "params_after" not in f["mean"]  # nothing to average where no fold has it


def test_a_run_from_before_prune_streams_is_repeated_with_its_streams_whole(tmp_path):
    import yaml

    from alphaprune.cli import _config_settings

    old = tmp_path / "config.yaml"
    old.write_text(yaml.safe_dump({"command": "prune", "prune": {"flops": 0.5, "optim": {"lr": 0.01}}}))
    settings = _config_settings(str(old), "prune")
    assert settings["streams"] is False and settings["auto_steps"] == 0  # nor trained auto's cuts
    assert settings["balance"] == 0.0 and settings["solver"] == "ratio"  # as before those options
    new = tmp_path / "new.yaml"
    new.write_text(yaml.safe_dump({"command": "prune", "prune": {"flops": 0.5, "streams": None}}))
    assert _config_settings(str(new), "prune")["streams"] is None  # resolved by the target


def test_more_folds_than_images_are_refused_at_once(folds_run, tmp_path, capsys):
    """Checked before the images are dealt: 10**9 parts used to hang the machine."""
    checkpoint, _, _ = folds_run
    assert main(["prune", "--checkpoint", str(checkpoint), "--data", "digits", "--subset", "300",
                 "--folds", str(10**9), "--out", str(tmp_path / "cv")]) == 2
    err = capsys.readouterr().err
    assert f"--folds {10**9} leaves an empty split" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cv").exists()


def test_folds_without_a_test_split_finish_and_report(folds_run, tmp_path, capsys):
    """--test-frac 0 leaves each fold no test score: the folds still aggregate (their
    validation scores), ship the best fold and print the line."""
    checkpoint, _, _ = folds_run
    out = tmp_path / "cv"
    assert main(["prune", "--checkpoint", str(checkpoint), "--data", "digits", "--subset", "300",
                 "--batch-size", "32", "--folds", "2", "--test-frac", "0", "--prune", "0.5",
                 "--step-size", "1", "--final-max-epochs", "1", "--no-progress",
                 "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["folds"]["k"] == 2 and "test_acc_after" not in s["folds"]["mean"]
    assert 0 < s["folds"]["mean"]["val_acc_after"] <= 1
    assert "2 folds: test acc – ± –" in capsys.readouterr().out
    assert (out / "pruned.pt").is_file() and (out / "report.html").is_file()
    # the shipped average beside the live weights: no test images, no test difference
    fold = json.loads((out / "fold1" / "summary.json").read_text())["final_ema"]
    assert fold["test_acc_gain"] is None and fold["live"]["test_acc"] is None
    assert fold["val_acc_gain"] == fold["averaged"]["val_acc"] - fold["live"]["val_acc"]
    assert "the live weights: – on test" in (out / "fold1" / "report.md").read_text()


def test_a_fold_killed_before_its_checkpoint_by_an_older_version_resumes(folds_run, tmp_path):
    """A folds run made before run folders were marked: its unfinished fold folder (config,
    no checkpoint, no marker) is the run's own, and resume replaces it."""
    import shutil

    from alphaprune.rundir import MARKER

    _, out, _ = folds_run
    old = tmp_path / "cv"
    shutil.copytree(out, old)
    for p in old.rglob(MARKER):
        p.unlink()
    (old / "pruned.pt").unlink()
    (old / "summary.json").unlink()
    shutil.rmtree(old / "fold2")
    (old / "fold2").mkdir()
    (old / "fold2" / "config.yaml").write_text("command: prune\nprune: {}\n")
    assert main(["prune", "--resume", "--out", str(old), "--no-progress"]) == 0
    assert (old / "fold2" / "pruned.pt").is_file() and (old / "pruned.pt").is_file()
