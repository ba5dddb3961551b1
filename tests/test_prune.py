"""``alphaprune prune`` end to end through ``cli.main`` on a tiny digits model."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

import alphaprune
from alphaprune.cli import main
from alphaprune.data import load_dataset
from alphaprune.modelfile import load_model_file
from alphaprune.report.size import count_flops, count_params

DATA = ["--data", "digits", "--subset", "300", "--batch-size", "32"]
N_VAL = 30  # 10% of the 300-image subset
# two phases: alpha 0.5 (at most 2 epochs), then alpha 0 (at most 2 epochs)
# no lr warm-up: the lr checks below read the phase's lr at the end of each epoch
PRUNE = ["--prune", "0.5", "--step-size", "0.5", "--patience", "1", "--max-epochs-per-phase", "2",
         "--final-max-epochs", "2", "--warmup-steps", "0", "--no-progress"]
METRICS_COLUMNS = {"epoch", "phase", "alpha", "train_loss", "train_acc", "val_loss", "val_acc",
                   "ship_val_acc", "lr", "seconds"}
PHASES_COLUMNS = {"alpha", "epochs", "best_val_loss", "best_val_acc", "stop_reason"}
STOP_REASONS = {"patience", "max_epochs", "diverged", "plateau", "collapsed"}
SUMMARY_KEYS = {"target_reduction", "achieved_reduction", "params_before", "params_after",
                "flops_before", "flops_after", "test_acc_before", "test_acc_after",
                "val_acc_before", "val_acc_after", "phases", "seconds"}


def _rows(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _assert_one_line_error(err: str) -> None:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("alphaprune: error: "), err


def _prune_argv(checkpoint, out, *extra) -> list[str]:
    return ["prune", "--checkpoint", str(checkpoint), *DATA, *PRUNE, "--out", str(out), *extra]


@dataclass
class Env:
    base: Path
    checkpoint: Path   # a model file written by 'alphaprune train'
    raw: Path          # the same weights as a raw state_dict
    rc: int            # of the shared prune run
    out: Path          # its run folder
    stdout: str
    shape: tuple       # (C, H, W) of the digits images


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_checkpoint) -> Env:
    """The shared tiny checkpoint (see conftest), its raw state_dict, and one prune run."""
    base = tmp_path_factory.mktemp("prune")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALPHAPRUNE_CACHE", str(base / "cache"))
        torch.manual_seed(0)
        checkpoint = tiny_checkpoint
        raw = base / "raw.pt"
        torch.save(alphaprune.load_model(checkpoint).state_dict(), raw)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(_prune_argv(checkpoint, base / "run"))
        shape = tuple(load_dataset("digits").x.shape[1:])
    return Env(base, checkpoint, raw, rc, base / "run", buf.getvalue(), shape)


@pytest.fixture
def run_copy(env, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(env.out, dst)
    return dst


# --------------------------------------------------------------------------- the run folder


def test_prune_returns_0_and_writes_the_run(env):
    assert env.rc == 0
    for name in ("config.yaml", "metrics.csv", "phases.csv", "pruned.pt", "summary.json",
                 "checkpoints/last.ckpt"):
        assert (env.out / name).is_file(), name
    assert not list(env.out.glob("*.tmp"))
    line = env.stdout.strip().splitlines()[-1]
    assert line.startswith("pruned vgg11: ") and "pruned.pt" in line
    s = json.loads((env.out / "summary.json").read_text())
    assert f"FLOPs {s['flops_before']:,} -> {s['flops_after']:,}" in line  # the speed side


def test_config_records_the_settings(env):
    cfg = yaml.safe_load((env.out / "config.yaml").read_text())
    assert cfg["command"] == "prune"
    p = cfg["prune"]
    assert (p["prune"], p["scheduler"], p["step_size"], p["patience"]) == (0.5, "step", 0.5, 1)
    assert (p["max_epochs_per_phase"], p["final_max_epochs"]) == (2, 2)
    assert p["checkpoint"] == str(env.checkpoint)
    assert p["data"]["data"] == "digits" and p["data"]["subset"] == 300
    assert p["optim"]["lr"] == 0.01


def test_phases_csv_has_one_row_per_phase_ending_at_alpha_0(env):
    header, rows = _rows(env.out / "phases.csv")
    assert PHASES_COLUMNS <= set(header)
    assert [float(r["alpha"]) for r in rows] == [0.5, 0.0]
    assert [int(r["phase"]) for r in rows] == [0, 1]
    for r in rows:
        assert 1 <= int(r["epochs"]) <= 2, r
        assert r["stop_reason"] in STOP_REASONS, r
        assert 0 <= float(r["best_val_acc"]) <= 1 and float(r["best_val_loss"]) > 0


def test_metrics_csv_has_one_row_per_epoch_consistent_with_the_phases(env):
    header, rows = _rows(env.out / "metrics.csv")
    assert METRICS_COLUMNS <= set(header), header
    _, phases = _rows(env.out / "phases.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(len(rows)))
    assert len(rows) == sum(int(p["epochs"]) for p in phases)
    for p in phases:
        mine = [r for r in rows if int(r["phase"]) == int(p["phase"])]
        assert len(mine) == int(p["epochs"])
        assert all(float(r["alpha"]) == float(p["alpha"]) for r in mine)
        # the phase's best is the lowest validation loss of its epochs (monitor val_loss)
        losses = [float(r["val_loss"]) for r in mine]
        assert float(p["best_val_loss"]) == pytest.approx(min(losses), abs=1e-6)
        best = mine[int(p["best_epoch"]) - 1]
        assert float(best["val_loss"]) == pytest.approx(min(losses), abs=1e-6)
        assert float(p["best_val_acc"]) == pytest.approx(float(best["val_acc"]), abs=1e-6)
    for r in rows:
        for k in ("train_acc", "val_acc", "ship_val_acc"):
            assert 0 <= float(r[k]) <= 1, (k, r)
        if float(r["alpha"]) > 0.0:
            assert float(r["lr"]) == pytest.approx(0.01)
    # the alpha = 0 phase anneals its lr: cosine over --final-max-epochs (2)
    final = [float(r["lr"]) for r in rows if float(r["alpha"]) == 0.0]
    assert final == pytest.approx([0.01, 0.005][:len(final)])
    for r in rows:
        assert float(r["seconds"]) >= 0
        if float(r["alpha"]) == 0.0:  # the mixture is the network that ships
            assert r["ship_val_acc"] == r["val_acc"] and r["ship_val_loss"] == r["val_loss"]


def test_pruned_model_file_is_loadable_and_smaller(env):
    summary = json.loads((env.out / "summary.json").read_text())
    model = alphaprune.load_model(env.out / "pruned.pt").eval()
    with torch.no_grad():
        assert model(torch.randn(2, *env.shape)).shape == (2, 10)
    original = alphaprune.load_model(env.checkpoint)
    assert count_params(model) == summary["params_after"] < count_params(original)
    assert count_flops(model, env.shape) == summary["flops_after"] < count_flops(original, env.shape)
    mf = load_model_file(env.out / "pruned.pt")
    assert mf.arch == "vgg11"
    assert mf.kwargs["widths"] == summary["widths_after"]
    assert mf.kwargs["in_channels"] == 1 and mf.kwargs["num_classes"] == 10
    assert mf.classes == [str(i) for i in range(10)]
    assert mf.meta["command"] == "prune" and mf.meta["split"]["subset"] == 300


def test_summary(env):
    s = json.loads((env.out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(s), SUMMARY_KEYS - set(s)
    assert s["target_reduction"] == 0.5
    assert abs(s["achieved_reduction"] - 0.5) <= 0.005
    assert s["achieved_reduction"] == pytest.approx(1 - s["params_after"] / s["params_before"])
    original = alphaprune.load_model(env.checkpoint)
    assert s["params_before"] == count_params(original)
    assert s["flops_before"] == count_flops(original, env.shape)
    assert s["flops_after"] < s["flops_before"]
    for k in ("test_acc_before", "test_acc_after", "val_acc_before", "val_acc_after"):
        assert 0 <= s[k] <= 1, k
    _, phases = _rows(env.out / "phases.csv")
    assert len(s["phases"]) == len(phases) and s["phases"][-1]["alpha"] == 0.0
    assert s["seconds"] > 0
    assert s["fusion_rel_error"] <= 1e-4
    # the fused model is the alpha = 0 network the last phase kept (up to float rounding)
    assert abs(s["val_acc_after"] - float(phases[-1]["best_val_acc"])) <= 1 / N_VAL + 1e-9


def test_the_summary_shares_the_model_schema(env):
    s = json.loads((env.out / "summary.json").read_text())
    assert s["schema"] == 2 and s["command"] == "prune"
    from alphaprune.api import evaluate

    # each block against the model file it describes, evaluated and counted anew
    for block, path in (("model", env.out / "pruned.pt"), ("original", env.checkpoint)):
        b = s[block]
        test, val = (evaluate(path, split=split) for split in ("test", "val"))
        assert (b["params"], b["flops"]) == (test["params"], test["flops"])
        assert b["test_acc"] == pytest.approx(test["accuracy"])
        assert b["val_acc"] == pytest.approx(val["accuracy"])
        assert b["test_loss"] == pytest.approx(test["loss"], rel=1e-5)
        assert b["latency_b128_ms"] > 0 and b["latency_b1_ms"] > 0
        assert b["test_loss"] > 0 and b["val_loss"] > 0
    fused = alphaprune.load_model(env.out / "pruned.pt")
    assert s["model"]["params"] == count_params(fused)


def test_the_summary_opens_with_what_was_gained(env):
    s = json.loads((env.out / "summary.json").read_text())
    assert next(iter(s)) == "headline"
    h, lat = s["headline"], s["latency"]
    assert h["target"] == {"measure": "params", "fraction": 0.5}
    original, fused = alphaprune.load_model(env.checkpoint), alphaprune.load_model(env.out / "pruned.pt")
    assert h["removed_params"] == pytest.approx(1 - count_params(fused) / count_params(original))
    assert h["removed_flops"] == pytest.approx(
        1 - count_flops(fused, env.shape) / count_flops(original, env.shape))
    assert h["flop_ratio"] == pytest.approx(s["flops_before"] / s["flops_after"])
    assert h["speedup_b128"] == pytest.approx(lat["before"]["latency_b128_ms"]
                                              / lat["after"]["latency_b128_ms"])
    assert h["latency_threads"] == lat["threads"] >= 1
    from alphaprune.allocator import allocator_state

    assert lat["allocator"] == allocator_state() != "not set"  # timed after setting it
    from alphaprune.openmp import wait_policy

    assert lat["omp_wait"] == wait_policy()  # the suite loads torch first: OpenMP's default
    assert (h["test_acc_before"], h["test_acc_after"]) == (s["test_acc_before"], s["test_acc_after"])


@pytest.mark.parametrize("model, split, key", [
    ("pruned", "test", "test_acc_after"), ("pruned", "val", "val_acc_after"),
    ("original", "test", "test_acc_before"), ("original", "val", "val_acc_before"),
])
def test_summary_accuracies_match_evaluate(env, capsys, model, split, key):
    path = env.out / "pruned.pt" if model == "pruned" else env.checkpoint
    s = json.loads((env.out / "summary.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(path), "--split", split, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["accuracy"] == pytest.approx(s[key], abs=1e-12)
    assert r["n_samples"] == N_VAL


def test_raw_state_dict_with_model_name(env, tmp_path):
    out = tmp_path / "raw-run"
    # step size 1: only the alpha = 0 phase, one epoch
    argv = _prune_argv(env.raw, out, "--model", "vgg11", "--step-size", "1", "--final-max-epochs",
                       "1")
    assert main(argv) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["params_before"] == count_params(alphaprune.load_model(env.checkpoint))
    assert abs(s["achieved_reduction"] - 0.5) <= 0.005
    _, phases = _rows(out / "phases.csv")
    assert [(float(p["alpha"]), int(p["epochs"])) for p in phases] == [(0.0, 1)]
    assert count_params(alphaprune.load_model(out / "pruned.pt")) == s["params_after"]


# --------------------------------------------------------------------------- existing runs


@pytest.mark.parametrize("flags, words", [
    ([], ["--resume", "--force"]),
    (["--resume"], ["finished"]),
])
def test_existing_finished_run_is_refused(env, run_copy, capsys, flags, words):
    pruned = run_copy / "pruned.pt"
    before = (pruned.stat().st_mtime_ns, (run_copy / "metrics.csv").read_text())
    capsys.readouterr()
    assert main(_prune_argv(env.checkpoint, run_copy, *flags)) == 2
    err = capsys.readouterr().err
    _assert_one_line_error(err)
    assert all(w in err for w in words), err
    assert (pruned.stat().st_mtime_ns, (run_copy / "metrics.csv").read_text()) == before


def test_out_of_budget_run_says_how_to_continue_and_that_works(env, tmp_path, capsys):
    out = tmp_path / "run"
    capsys.readouterr()
    # the plan needs 2 to 4 epochs; one is not enough
    assert main(_prune_argv(env.checkpoint, out, "--max-total-epochs", "1")) == 2
    err = capsys.readouterr().err
    _assert_one_line_error(err)
    hint = err.split("'")[1]  # the command the error suggests
    assert hint == f"alphaprune prune --out {out} --resume --max-total-epochs N"
    argv = hint.split()[1:-1] + ["4", "--no-progress"]
    assert main(argv) == 0
    assert (out / "pruned.pt").is_file()


def test_existing_unfinished_run_is_refused(env, tmp_path, capsys):
    # a run with a checkpoint has work to keep; one killed before its first checkpoint has
    # none and is reused (tests/test_trust.py)
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "config.yaml").write_text("command: prune\n")
    (out / "checkpoints" / "last.ckpt").write_bytes(b"epoch 3")
    capsys.readouterr()
    assert main(_prune_argv(env.checkpoint, out)) == 2
    err = capsys.readouterr().err
    _assert_one_line_error(err)
    assert "unfinished" in err and "--resume" in err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.yaml"]


# --------------------------------------------------------------------------- bad inputs


def _text_file(env: Env, tmp: Path) -> Path:
    f = tmp / "notes.pt"
    f.write_text("not a model\n")
    return f


def _pickled_list(env: Env, tmp: Path) -> Path:
    f = tmp / "list.pt"
    torch.save([1, 2, 3], f)
    return f


def _imagefolder(env: Env, tmp: Path) -> Path:
    from .conftest import write_imagefolder

    return write_imagefolder(tmp / "imgs", per_class=10)  # 30 images: pass --subset 30


BAD = [
    # (extra argv, files to make: {placeholder: maker}, words in the error)
    (["--prune", "0"], {}, ["--prune"]),
    (["--prune", "1.2"], {}, ["--prune"]),
    (["--prune", "-0.5"], {}, ["--prune"]),
    (["--scheduler", "cosine"], {}, ["cosine"]),
    (["--step-size", "0"], {}, ["--step-size"]),
    (["--step-size", "1.5"], {}, ["--step-size"]),
    (["--scheduler", "multiplicative", "--mu", "1.5"], {}, ["--mu"]),
    (["--scheduler", "exponential", "--decay-rate", "0"], {}, ["--decay-rate"]),
    (["--scheduler", "plateau", "--factor", "1"], {}, ["--factor"]),
    (["--threshold", "1"], {}, ["--threshold"]),
    (["--branch-init", "zeros"], {}, ["--branch-init"]),
    (["--handover", "swap"], {}, ["--handover"]),
    (["--monitor", "val_acc"], {}, ["--monitor"]),
    (["--lr", "0"], {}, ["--lr"]),
    (["--batch-size", "0"], {}, ["--batch-size"]),
    # checkpoint of another architecture
    (["--checkpoint", "{raw}", "--model", "vgg16"], {}, ["vgg16"]),
    (["--model", "vgg16"], {}, ["vgg16"]),
    (["--checkpoint", "{raw}"], {}, ["--model"]),  # a raw state_dict needs --model
    (["--checkpoint", "{raw}", "--model", "resnet50"], {}, ["resnet50"]),
    # missing paths, files that are not model files
    (["--data", "{tmp}/no-such-data"], {}, ["no-such-data"]),
    (["--checkpoint", "{tmp}/no-such.pt"], {}, ["no-such.pt"]),
    (["--checkpoint", "{tmp}"], {}, ["directory"]),
    (["--checkpoint", "{notes}"], {"notes": _text_file}, ["notes.pt"]),
    (["--checkpoint", "{list}", "--model", "vgg11"], {"list": _pickled_list}, ["state_dict"]),
    (["--checkpoint", "{list}"], {"list": _pickled_list}, ["list.pt"]),
    # data the model was not trained on (3 channels, 3 classes)
    (["--data", "{imgs}", "--subset", "30"], {"imgs": _imagefolder}, ["channels"]),
    # settings of the phase controller and the importance criterion
    (["--patience", "0"], {}, ["--patience"]),
    (["--max-epochs-per-phase", "0"], {}, ["--max-epochs-per-phase"]),
    (["--min-delta", "-1"], {}, ["--min-delta"]),
    (["--importance", "l2"], {}, ["l2"]),
]


def _run_bad(env, tmp_path, capsys, extra, makers) -> tuple[int, str, Path]:
    subs = {"raw": str(env.raw), "tmp": str(tmp_path)}
    subs.update({k: str(make(env, tmp_path)) for k, make in makers.items()})
    extra = [a.format(**subs) for a in extra]
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main(_prune_argv(env.checkpoint, out, *extra))
    return rc, capsys.readouterr().err, out


def _ids(table) -> list[str]:
    return [" ".join(b[0]).replace("{", "").replace("}", "") for b in table]


@pytest.mark.parametrize("extra, makers, words", BAD, ids=_ids(BAD))
def test_bad_input_exits_2_with_one_line(env, tmp_path, capsys, extra, makers, words):
    rc, err, _ = _run_bad(env, tmp_path, capsys, extra, makers)
    assert rc == 2
    _assert_one_line_error(err)
    assert all(w in err for w in words), err


NO_FOLDER = [b for b in BAD if b[0][0] in ("--prune", "--scheduler", "--data", "--patience",
                                           "--max-epochs-per-phase", "--min-delta",
                                           "--importance", "--model")]


@pytest.mark.parametrize("extra, makers, words", NO_FOLDER, ids=_ids(NO_FOLDER))
def test_bad_input_leaves_no_run_folder(env, tmp_path, capsys, extra, makers, words):
    """Inputs are checked before the run folder is made (as in ``api.train``): a rejected
    command must not leave a half-made run that blocks the corrected command."""
    rc, _, out = _run_bad(env, tmp_path, capsys, extra, makers)
    assert rc == 2
    assert not out.exists(), sorted(p.name for p in out.iterdir())


@pytest.mark.parametrize("drop", ["--checkpoint", "--data"])
def test_checkpoint_and_data_are_required(env, tmp_path, capsys, drop):
    argv = _prune_argv(env.checkpoint, tmp_path / "out")
    i = argv.index(drop)
    del argv[i:i + 2]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    _assert_one_line_error(err)
    assert drop in err
