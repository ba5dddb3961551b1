"""``alphaprune train`` and ``alphaprune evaluate`` end to end through ``cli.main``."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

import alphaprune
from alphaprune.cli import main
from alphaprune.modelfile import load_model_file
from alphaprune.models import create_model
from alphaprune.report.size import count_flops, count_params

from .conftest import IMAGEFOLDER_CLASSES, class_image, write_imagefolder

HEADER = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
TINY = ["--width", "0.0625", "--batch-size", "8", "--no-progress"]


def _train_argv(data, out, epochs=2, *extra) -> list[str]:
    return ["train", "--model", "vgg11", "--data", str(data), "--epochs", str(epochs),
            "--out", str(out), *TINY, *extra]


def _rows(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _assert_one_line_error(err: str) -> None:
    assert "Traceback" not in err
    assert err.endswith("\n")
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("alphaprune: error: ")


@dataclass
class Run:
    rc: int
    out: Path
    data: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, make_imagefolder) -> Run:
    """One 2-epoch training run on the synthetic ImageFolder, shared by this module."""
    base = tmp_path_factory.mktemp("cli")
    data = make_imagefolder(base / "imagefolder")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALPHAPRUNE_CACHE", str(base / "cache"))
        torch.manual_seed(0)
        rc = main(_train_argv(data, base / "RUN"))
    return Run(rc, base / "RUN", data)


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    """A private copy of the shared run (mtimes preserved) for tests that write to it."""
    dst = tmp_path / "RUN"
    shutil.copytree(trained.out, dst)
    return dst


# --------------------------------------------------------------------------- train


def test_train_returns_0_and_writes_the_run(trained):
    assert trained.rc == 0
    for name in ("model.pt", "metrics.csv", "config.yaml", "summary.json"):
        assert (trained.out / name).is_file(), name
    assert not list(trained.out.glob("*.tmp"))


def test_metrics_csv_has_the_header_and_one_row_per_epoch(trained):
    header, rows = _rows(trained.out / "metrics.csv")
    assert header == HEADER
    assert (trained.out / "metrics.csv").read_text().splitlines()[0] == ",".join(HEADER)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    for r in rows:
        for k in ("train_loss", "val_loss", "seconds"):
            assert float(r[k]) >= 0, (k, r)
        for k in ("train_acc", "val_acc"):
            assert 0 <= float(r[k]) <= 1, (k, r)


def test_metrics_csv_lr_is_a_learning_rate_of_the_schedule(trained):
    """The lr column holds a rate the epoch trained with: positive, at most the peak --lr."""
    _, rows = _rows(trained.out / "metrics.csv")
    lrs = [float(r["lr"]) for r in rows]
    assert all(0 < lr <= 0.05 for lr in lrs), lrs


def test_model_file_is_loadable_and_records_the_run(trained):
    model = alphaprune.load_model(trained.out / "model.pt")
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    mf = load_model_file(trained.out / "model.pt")
    assert mf.arch == "vgg11"
    assert mf.classes == sorted(IMAGEFOLDER_CLASSES)
    assert mf.kwargs["widths"] == [4, 8, 16, 16, 32, 32, 32, 32]
    assert mf.kwargs["in_channels"] == 3 and mf.kwargs["num_classes"] == 3
    assert len(mf.mean) == len(mf.std) == 3
    assert mf.meta["command"] == "train"
    assert mf.meta["split"]["data"] == str(trained.data)
    assert mf.meta["best_epoch"] in (0, 1)


def test_summary_matches_the_model(trained):
    summary = json.loads((trained.out / "summary.json").read_text())
    model = alphaprune.load_model(trained.out / "model.pt")
    assert summary["arch"] == "vgg11"
    assert summary["params"] == count_params(model)
    assert summary["flops"] == count_flops(model, (3, 32, 32))
    for k in ("val_acc", "test_acc"):
        assert 0 <= summary[k] <= 1
    # the schema every command shares: the shipped model's numbers under one set of names
    assert summary["schema"] == 2 and summary["command"] == "train"
    block = summary["model"]
    assert set(block) == {"params", "flops", "val_acc", "val_loss", "test_acc", "test_loss",
                          "latency_b1_ms", "latency_b128_ms"}
    from alphaprune.api import evaluate

    test = evaluate(trained.out / "model.pt", split="test")  # the model file, evaluated anew
    assert (block["params"], block["flops"]) == (test["params"], test["flops"])
    assert block["test_acc"] == pytest.approx(test["accuracy"])


# --------------------------------------------------------------------------- evaluate


def test_evaluate_json_reports_accuracy_loss_size(trained, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(trained.out / "model.pt"), "--json"]) == 0
    out = capsys.readouterr().out
    r = json.loads(out)
    assert {"accuracy", "loss", "n_samples", "params", "flops"} <= set(r)
    model = alphaprune.load_model(trained.out / "model.pt")
    assert r["n_samples"] == 3  # the recorded split: round(12 * 0.1) test images per class
    assert 0 <= r["accuracy"] <= 1 and r["loss"] > 0
    assert r["params"] == count_params(model)
    assert r["flops"] == count_flops(model, (3, 32, 32)) > 0
    assert r["split"] == "test" and r["model"] == "vgg11"


@pytest.mark.parametrize("split", ["val", "test"])
def test_evaluate_recarves_the_training_split(trained, capsys, split):
    summary = json.loads((trained.out / "summary.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(trained.out / "model.pt"), "--split", split, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["accuracy"] == pytest.approx(summary[f"{split}_acc"])
    assert r["loss"] == pytest.approx(summary[f"{split}_loss"], rel=1e-4)


@pytest.mark.parametrize("split, n", [("all", 36), ("train", 30)])
def test_evaluate_other_splits(trained, capsys, split, n):
    capsys.readouterr()
    assert main(["evaluate", str(trained.out / "model.pt"), "--split", split, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_samples"] == n


def test_evaluate_prints_one_human_line_without_json(trained, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(trained.out / "model.pt")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith("test: accuracy ") and "FLOPs" in out[0]


# --------------------------------------------------------------------------- re-running


def test_rerun_without_force_refuses_and_leaves_the_run_alone(trained, run_copy, capfd):
    model = run_copy / "model.pt"
    before = (model.stat().st_mtime_ns, model.read_bytes())
    metrics = (run_copy / "metrics.csv").read_text()
    capfd.readouterr()
    assert main(_train_argv(trained.data, run_copy)) == 2
    out, err = capfd.readouterr()
    _assert_one_line_error(err)
    assert "--force" in err and "finished run" in err
    assert (model.stat().st_mtime_ns, model.read_bytes()) == before
    assert (run_copy / "metrics.csv").read_text() == metrics


def test_rerun_with_force_replaces_the_run(trained, run_copy, capsys):
    model = run_copy / "model.pt"
    before = model.stat().st_mtime_ns
    assert main(_train_argv(trained.data, run_copy, 1, "--force")) == 0
    header, rows = _rows(run_copy / "metrics.csv")
    assert header == HEADER and [int(r["epoch"]) for r in rows] == [0]  # old rows gone
    assert model.stat().st_mtime_ns != before
    assert alphaprune.load_model(model)(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    assert "trained vgg11" in capsys.readouterr().out


def test_resume_of_a_finished_run_is_refused(trained, run_copy, capfd):
    capfd.readouterr()
    assert main(_train_argv(trained.data, run_copy, 2, "--resume")) == 2
    _assert_one_line_error(capfd.readouterr().err)


# --------------------------------------------------------------------------- digits


def test_train_and_evaluate_on_a_digits_subset(tmp_path, capsys):
    out = tmp_path / "digits-run"
    argv = ["train", "--model", "vgg11", "--data", "digits", "--subset", "200", "--epochs", "1",
            "--out", str(out), "--width", "0.0625", "--batch-size", "32", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(out / "model.pt"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n_samples"] == 20  # 10% of the recorded 200-image subset
    assert r["data"] == "digits"
    assert r["accuracy"] == pytest.approx(summary["test_acc"])
    mf = load_model_file(out / "model.pt")
    assert mf.kwargs["in_channels"] == 1 and mf.classes == [str(i) for i in range(10)]
    assert mf.meta["split"]["subset"] == 200


@pytest.mark.parametrize("epochs", [4, 6])
def test_a_one_cycle_of_few_steps_trains(tmp_path, epochs):
    """One step per epoch: 4 steps is a cosine from the peak (torch's one-cycle divided by
    zero there), more is the one-cycle with its warm-up."""
    out = tmp_path / "run"
    argv = ["train", "--model", "vgg11", "--data", "digits", "--subset", "200", "--epochs",
            str(epochs), "--out", str(out), "--width", "0.0625", "--batch-size", "512",
            "--lr", "0.1", "--no-progress"]
    assert main(argv) == 0
    with open(out / "metrics.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    assert len(lrs) == epochs
    assert lrs[0] == pytest.approx(0.1 if epochs == 4 else 0.01)  # the peak, or the warm-up
    assert max(lrs) == pytest.approx(0.1, rel=0.2) and lrs[-1] < lrs[1]


def test_evaluate_a_raw_state_dict_with_model_name(tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(create_model("vgg11", width=0.0625, in_channels=1).state_dict(), tmp_path / "sd.pt")
    capsys.readouterr()
    rc = main(["evaluate", str(tmp_path / "sd.pt"), "--model", "vgg11", "--data", "digits", "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["model"] == "vgg11" and r["n_samples"] > 0 and 0 <= r["accuracy"] <= 1


# --------------------------------------------------------------------------- bad inputs


def _loose_dir(tmp: Path) -> Path:
    d = tmp / "loose"
    d.mkdir()
    for i in range(3):
        Image.fromarray(class_image(0, i)).save(d / f"{i}.png")
    return d


def _with_empty_class(tmp: Path) -> Path:
    root = write_imagefolder(tmp / "imgs", per_class=4)
    (root / "empty").mkdir()
    return root


def _text_file(tmp: Path) -> Path:
    f = tmp / "not-a-model.pt"
    f.write_text("this is not a model\n")
    return f


def _vgg_state_dict(tmp: Path, **kw) -> Path:
    f = tmp / "sd.pt"
    torch.save(create_model("vgg11", width=0.0625, **kw).state_dict(), f)
    return f


def _model_of_other_classes(tmp: Path) -> Path:
    """A model file of three classes named otherwise than the imagefolder fixture's."""
    from alphaprune.modelfile import save_model

    f = tmp / "other.pt"
    save_model(f, create_model("vgg11", width=0.0625, num_classes=3), "vgg11", [0.5] * 3,
               [0.25] * 3, ["ant", "bee", "cow"], {})
    return f


def _non_run_dir(tmp: Path) -> Path:
    d = tmp / "precious"
    d.mkdir()
    (d / "thesis.tex").write_text("do not delete")
    return d


BAD = {
    "unknown-model": lambda t, d: ["train", "--model", "nope", "--data", str(d), "--out",
                                   str(t / "r"), *TINY],
    "missing-data": lambda t, d: _train_argv(t / "no-such-dir", t / "r"),
    "data-is-a-file": lambda t, d: _train_argv(d / "circle" / "img_00.png", t / "r"),
    "neither-layout": lambda t, d: _train_argv(_loose_dir(t), t / "r"),
    "empty-class-folder": lambda t, d: _train_argv(_with_empty_class(t), t / "r"),
    "epochs-0": lambda t, d: _train_argv(d, t / "r", 0),
    "no-data": lambda t, d: ["train", "--model", "vgg11", "--out", str(t / "r"), *TINY],
    "wrong-widths": lambda t, d: _train_argv(d, t / "r", 1, "--widths", "4,4,4"),
    "subset-too-big": lambda t, d: _train_argv(d, t / "r", 1, "--subset", "1000"),
    "empty-val-split": lambda t, d: _train_argv(d, t / "r", 1, "--val-frac", "0"),
    "batch-size-0": lambda t, d: _train_argv(d, t / "r", 1, "--batch-size", "0"),
    "batch-size-negative": lambda t, d: _train_argv(d, t / "r", 1, "--batch-size", "-4"),
    # digits are 16x16: VGG's last BatchNorm sees one value per channel of each image
    "batch-size-1": lambda t, d: _train_argv("digits", t / "r", 1, "--subset", "100",
                                             "--batch-size", "1"),
    "train-split-of-one": lambda t, d: _train_argv(d, t / "r", 1, "--train-subset", "1"),
    "lr-negative": lambda t, d: _train_argv(d, t / "r", 1, "--lr", "-1"),
    "momentum-negative": lambda t, d: _train_argv(d, t / "r", 1, "--momentum", "-1"),
    "label-smoothing-2": lambda t, d: _train_argv(d, t / "r", 1, "--label-smoothing", "2"),
    "width-inf": lambda t, d: _train_argv(d, t / "r", 1, "--width", "inf"),
    # 100 typed for 1.0: terabytes of weights, refused before the kernel kills the process
    "width-100": lambda t, d: _train_argv(d, t / "r", 1, "--width", "100"),
    "inspect-input-beyond-memory": lambda t, d: ["inspect", "--model", "vgg11", "--width",
                                                 "0.0625", "--input-size", "100000"],
    "seed-negative": lambda t, d: _train_argv(d, t / "r", 1, "--seed", "-2"),
    "out-is-a-file": lambda t, d: _train_argv(d, _text_file(t)),
    "out-not-a-run": lambda t, d: _train_argv(d, _non_run_dir(t)),
    "evaluate-not-a-model-file": lambda t, d: ["evaluate", str(_text_file(t))],
    "evaluate-missing-file": lambda t, d: ["evaluate", str(t / "nope.pt")],
    "evaluate-vgg11-as-vgg16": lambda t, d: ["evaluate", str(_vgg_state_dict(t, in_channels=1)),
                                            "--model", "vgg16", "--data", "digits"],
    "evaluate-state-dict-without-model": lambda t, d: ["evaluate", str(_vgg_state_dict(t)),
                                                      "--data", "digits"],
    "evaluate-other-class-names": lambda t, d: ["evaluate", str(_model_of_other_classes(t)),
                                                "--data", str(d)],
    "evaluate-wrong-data": lambda t, d: ["evaluate", str(_vgg_state_dict(t, num_classes=3)),
                                        "--model", "vgg11", "--data", "digits"],
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_exit_2_with_one_line(tmp_path, imagefolder, capfd, case):
    argv = BAD[case](tmp_path, imagefolder)
    capfd.readouterr()
    assert main(argv) == 2
    out, err = capfd.readouterr()
    _assert_one_line_error(err)
    assert out == ""
    assert not list(tmp_path.rglob("model.pt"))


def test_a_container_limit_under_the_machine_memory_is_what_train_checks(tmp_path, imagefolder,
                                                                          capfd, monkeypatch):
    """In a container the kernel kills a process over the cgroup's limit, however much memory
    the machine has: a model that fits the machine but not the container is refused."""
    import alphaprune.api as api

    limit = tmp_path / "memory.max"
    limit.write_text(f"{2**20}\n")  # 1 MiB: VGG-11 at full width needs hundreds
    monkeypatch.setattr(api, "cgroup_files", lambda: [str(tmp_path / "absent"), str(limit)])
    assert api.memory_limit() == (2**20, f"this container ({limit})")
    argv = _train_argv(imagefolder, tmp_path / "r", 1, "--width", "1")
    capfd.readouterr()
    assert main(argv) == 2
    err = capfd.readouterr().err
    _assert_one_line_error(err)
    assert "this container" in err and "smaller --width" in err
    assert not (tmp_path / "r").exists()
    limit.write_text("max\n")  # cgroup v2's "no limit": the machine's memory counts
    assert api.memory_limit()[1] == "this machine"
    # a limit may sit on the process's own, nested group (v1 and v2 spellings)
    monkeypatch.undo()
    proc = tmp_path / "cgroup"
    proc.write_text("4:cpu,memory:/jobs/a\n0::/user/b\n3:cpu:/x\n")
    assert api.cgroup_files(str(proc)) == [
        *api.CGROUP_LIMITS, "/sys/fs/cgroup/memory/jobs/a/memory.limit_in_bytes",
        "/sys/fs/cgroup/memory/jobs/memory.limit_in_bytes", "/sys/fs/cgroup/user/b/memory.max",
        "/sys/fs/cgroup/user/memory.max"]


def test_images_smaller_than_32px_train_or_fail_cleanly(tmp_path, capfd):
    """28x28 images (MNIST-sized) either train or give a one-line error, never a traceback."""
    data = write_imagefolder(tmp_path / "small", per_class=12, size=28)
    capfd.readouterr()
    rc = main(["train", "--model", "vgg11", "--data", str(data), "--epochs", "1",
               "--out", str(tmp_path / "r"), "--width", "0.0625", "--batch-size", "4",
               "--no-progress"])
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert rc in (0, 2)
    if rc == 2:
        _assert_one_line_error(err)


def test_refusals_leave_foreign_folders_untouched(tmp_path, imagefolder):
    d = _non_run_dir(tmp_path)
    assert main(_train_argv(imagefolder, d)) == 2
    assert [p.name for p in d.iterdir()] == ["thesis.tex"]


@pytest.mark.parametrize("argv", [
    ["train", "--epochs", "two", "--out", "x"],
    ["train", "--widths", "4,x", "--out", "x"],
    ["evaluate"],
    ["frobnicate"],
])
def test_argument_errors_exit_2_with_one_line(capfd, argv):
    capfd.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    _assert_one_line_error_argparse(capfd.readouterr().err)


def _assert_one_line_error_argparse(err: str) -> None:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("alphaprune") and "error:" in lines[0]
