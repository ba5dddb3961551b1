"""Several processes, one run: ``--devices 2`` on the CPU (gloo), rank 0 alone writes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alphaprune.cli import main
from alphaprune.errors import UserError
from alphaprune.parallel import Processes, is_leader

_LAUNCH_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID",
                "MASTER_ADDR", "MASTER_PORT")

# ------------------------------------------------------------------------ settings and ranks


@pytest.mark.parametrize("env, leader", [
    ({}, True),
    ({"RANK": "0", "LOCAL_RANK": "0"}, True),
    ({"RANK": "3", "LOCAL_RANK": "1"}, False),           # torchrun, second node
    ({"LOCAL_RANK": "1"}, False),                         # Lightning's launcher, second device
    ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),       # Lightning's launcher, second node
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "2"}, False),  # srun
    ({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, True),   # a plain SLURM job
])
def test_the_leader_is_known_from_the_launchers_environment(monkeypatch, env, leader):
    for k in _LAUNCH_VARS:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert is_leader() is leader


@pytest.mark.parametrize("kw, accelerator, batch, message", [
    ({"devices": 0}, "cpu", 128, "--devices must be a whole number >= 1"),
    ({"num_nodes": 0}, "cpu", 128, "--num-nodes must be a whole number >= 1"),
    ({"strategy": "ddp_spawn"}, "cpu", 128, "spawn and fork launchers do not apply"),
    ({"strategy": "fsdp"}, "cpu", 128, "unknown --strategy 'fsdp'"),
    ({"precision": "8-bit"}, "cpu", 128, "unknown --precision '8-bit'"),
    ({"precision": "16-mixed"}, "cpu", 128, "16-mixed needs a GPU"),
    ({"devices": 3}, "cpu", 128, "--batch-size 128 must be a multiple of the number of processes"),
])
def test_settings_that_cannot_run_are_one_line_errors(kw, accelerator, batch, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("+", r"\+")):
        Processes(**kw).validate(accelerator, batch)


def test_several_nodes_need_a_launcher(monkeypatch):
    """--num-nodes 2 with nothing launching the nodes waited for the other node for ever."""
    for var in ("WORLD_SIZE", "RANK", "SLURM_NTASKS", "NODE_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UserError, match="needs each node started by torchrun or srun"):
        Processes(devices=2, num_nodes=2).validate("cpu", 128)
    monkeypatch.setenv("WORLD_SIZE", "4")  # torchrun's
    Processes(devices=2, num_nodes=2).validate("cpu", 128)


def test_a_bad_process_setting_is_refused_before_the_run_folder_is_made(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--model", "vgg11", "--width", "0.0625", "--data", "digits", "--subset",
               "100", "--devices", "3", "--out", str(out)])
    assert rc == 2 and not out.exists()
    assert "multiple of the number of processes" in capsys.readouterr().err


def test_one_process_keeps_the_plain_trainer_and_two_take_ddp():
    one = Processes().trainer_kwargs(object(), find_unused=True)
    assert "strategy" not in one and one["devices"] == 1
    two = Processes(devices=2).trainer_kwargs(object(), find_unused=True)
    assert type(two["strategy"]).__name__ == "DDPStrategy" and two["devices"] == 2


def test_bf16_mixed_precision_trains_on_the_cpu_and_is_recorded(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", "vgg11", "--width", "0.0625", "--data", "digits", "--subset",
                 "200", "--batch-size", "32", "--epochs", "1", "--precision", "bf16-mixed",
                 "--accelerator", "cpu", "--no-progress", "--out", str(out)]) == 0
    assert "precision: bf16-mixed" in (out / "config.yaml").read_text()
    state = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert all(v.dtype != torch.bfloat16 for v in state.values())  # the weights stay float32


# --------------------------------------------------------------- two real processes (gloo)

TRAIN = ["train", "--model", "vgg11", "--width", "0.125", "--data", "digits", "--batch-size", "64",
         "--epochs", "4", "--lr", "0.05", "--accelerator", "cpu", "--no-progress"]


def _prune_argv(checkpoint: Path, out: Path) -> list[str]:
    return ["prune", "--checkpoint", str(checkpoint), "--data", "digits", "--batch-size", "64",
            "--prune", "0.5", "--step-size", "0.5", "--max-epochs-per-phase", "1",
            "--final-max-epochs", "2", "--patience", "1", "--accelerator", "cpu", "--no-progress",
            "--out", str(out)]


def _start(argv: list[str], cwd: Path, cache: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS}
    env.update(ALPHAPRUNE_CACHE=str(cache), OMP_NUM_THREADS="1")
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "alphaprune", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(p: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = p.communicate(timeout=300)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _run(argv: list[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    return _wait(_start(argv, cwd, cache))


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _files(run: Path) -> list[str]:
    """The run's files, TensorBoard event files by folder (their names hold time and pid)."""
    names = (str(p.relative_to(run)) for p in run.rglob("*"))
    return sorted("tensorboard/events" if n.startswith("tensorboard/events.") else n for n in names)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """A model trained by two processes, pruned twice by two processes and once by one."""
    base = tmp_path_factory.mktemp("ddp")
    cache = base / "cache"
    trained = _run([*TRAIN, "--devices", "2", "--out", str(base / "train")], base / "cwd", cache)
    assert trained.returncode == 0, trained.stderr[-3000:]
    ckpt = base / "train" / "model.pt"
    # the two identical runs side by side (each pair of processes on its own port): most of
    # their time is imports, which the two cores share
    started = {name: _start([*_prune_argv(ckpt, base / name), "--devices", "2"], base / "cwd", cache)
               for name in ("a", "b")}
    runs = {name: _wait(p) for name, p in started.items()}
    for r in runs.values():
        assert r.returncode == 0, r.stderr[-3000:]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALPHAPRUNE_CACHE", str(cache))
        assert main(_prune_argv(ckpt, base / "one")) == 0
    return base, trained, runs


def test_two_processes_train_a_model_that_learned(ddp):
    base, trained, _ = ddp
    summary = json.loads((base / "train" / "summary.json").read_text())
    assert summary["test_acc"] > 0.6  # 10 classes: chance is 0.1
    assert trained.stdout.count("trained vgg11") == 1  # rank 1 prints nothing
    assert [int(r["epoch"]) for r in _rows(base / "train" / "metrics.csv")] == [0, 1, 2, 3]


def test_a_second_identical_run_gives_the_same_phases_and_an_identical_fused_model(ddp):
    base, _, _ = ddp
    assert _rows(base / "a" / "phases.csv") == _rows(base / "b" / "phases.csv")
    a = torch.load(base / "a" / "pruned.pt", weights_only=True)["state_dict"]
    b = torch.load(base / "b" / "pruned.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_follow_the_alpha_trajectory_of_one_and_keep_accuracy(ddp):
    base, _, _ = ddp
    two, one = _rows(base / "a" / "phases.csv"), _rows(base / "one" / "phases.csv")
    assert [r["alpha"] for r in two] == [r["alpha"] for r in one] == ["0.5", "0.0"]
    s2 = json.loads((base / "a" / "summary.json").read_text())
    s1 = json.loads((base / "one" / "summary.json").read_text())
    assert s2["params_after"] == s1["params_after"]
    # the global batch is the same; only BN sees half of it per process
    assert s2["test_acc_after"] >= s2["test_acc_before"] - 0.05
    assert abs(s2["test_acc_after"] - s1["test_acc_after"]) < 0.08


def test_the_validation_the_ranks_agreed_on_is_the_whole_split(ddp):
    """Each rank scores its slice of the validation split; the reduced score must be that of
    the whole split, as evaluated afterwards by one process."""
    base, _, _ = ddp
    last = _rows(base / "a" / "phases.csv")[-1]
    summary = json.loads((base / "a" / "summary.json").read_text())
    assert summary["val_acc_after"] == pytest.approx(float(last["best_ship_val_acc"]), abs=1 / 179)


def test_rank_zero_alone_writes(ddp):
    base, _, runs = ddp
    # every file of a one-process run, and nothing else: no second writer's rows or probes
    assert _files(base / "a") == _files(base / "one")
    epochs = sum(int(r["epochs"]) for r in _rows(base / "a" / "phases.csv"))
    assert [int(r["epoch"]) for r in _rows(base / "a" / "metrics.csv")] == list(range(epochs))
    assert all(r.stdout.count("pruned vgg11") == 1 for r in runs.values())
    assert not any((base / "cwd").iterdir())  # nothing written where the command ran
