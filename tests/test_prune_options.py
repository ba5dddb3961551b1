"""``alphaprune prune`` with the hand-over, branch-init, distillation and guard options."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

import alphaprune
from alphaprune.cli import main

from .test_prune import DATA, _assert_one_line_error, _rows

# two phases at most without undos: alpha 0.5 (1 epoch), then alpha 0 (at most 2 epochs)
PRUNE = ["--prune", "0.5", "--step-size", "0.5", "--patience", "1", "--max-epochs-per-phase", "1",
         "--final-max-epochs", "2", "--no-progress"]
OPTIONS = ["--handover", "stochastic", "--branch-init", "lstsq", "--importance", "act",
           "--distill", "0.5", "--max-acc-drop", "0.05", "--calib-size", "64"]
STOP_REASONS = {"patience", "max_epochs", "diverged", "plateau", "collapsed", "undone"}


def _argv(checkpoint, out, *extra) -> list[str]:
    return ["prune", "--checkpoint", str(checkpoint), *DATA, *PRUNE, "--out", str(out), *extra]


@dataclass
class Run:
    checkpoint: Path
    out: Path
    rc: int
    stdout: str


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """A 2-epoch vgg11 (width 0.0625) on 300 digits, pruned once with the new options."""
    base = tmp_path_factory.mktemp("prune-options")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALPHAPRUNE_CACHE", str(base / "cache"))
        torch.manual_seed(0)
        rc = main(["train", "--model", "vgg11", "--width", "0.0625", *DATA, "--epochs", "2",
                   "--no-progress", "--out", str(base / "train")])
        assert rc == 0
        checkpoint = base / "train" / "model.pt"
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(_argv(checkpoint, base / "run", *OPTIONS))
    return Run(checkpoint, base / "run", rc, buf.getvalue())


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
    assert p["monitor"] == "auto"


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
    assert float(rows[-1]["alpha"]) == 0.0 and rows[-1]["stop_reason"] != "undone"
    assert {r["stop_reason"] for r in rows} <= STOP_REASONS
    alphas = [float(r["alpha"]) for r in rows]
    assert alphas[0] == 0.5
    # an undone phase is followed by a retry halfway back towards the last accepted alpha
    accepted = 1.0
    for r, nxt in zip(rows, alphas[1:]):
        if r["stop_reason"] == "undone":
            assert nxt == pytest.approx((accepted + float(r["alpha"])) / 2)
        else:
            accepted = float(r["alpha"])
    # stochastic hand-over monitors the all-branch network: ship accuracy is what is kept
    _, metrics = _rows(run.out / "metrics.csv")
    for p in rows:
        mine = [m for m in metrics if int(m["phase"]) == int(p["phase"])]
        best = mine[int(p["best_epoch"]) - 1]
        assert float(p["best_val_loss"]) == pytest.approx(float(best["ship_val_loss"]), abs=1e-6)


BAD = [
    (["--handover", "foo"], ["--handover", "foo"]),
    (["--branch-init", "foo"], ["--branch-init", "foo"]),
    (["--importance", "foo"], ["--importance", "foo"]),
    (["--distill", "1.5"], ["--distill"]),
    (["--distill", "-0.1"], ["--distill"]),
    (["--temperature", "0"], ["--temperature"]),
    (["--temperature", "-1"], ["--temperature"]),
    (["--max-acc-drop", "1.5"], ["--max-acc-drop"]),
    (["--max-acc-drop", "-0.1"], ["--max-acc-drop"]),
    (["--max-retries", "-1"], ["--max-retries"]),
    (["--calib-size", "0"], ["--calib-size"]),
    (["--calib-size", "-5"], ["--calib-size"]),
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
