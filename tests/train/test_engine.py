"""Where training runs: ``--accelerator`` and device-independent checkpoints."""

from __future__ import annotations

import os

import pytest
import torch
from lightning.pytorch.accelerators import CPUAccelerator

from alphaprune.cli import main
from alphaprune.errors import UserError
from alphaprune.train.engine import SafeCheckpointIO, make_trainer, resolve_accelerator


@pytest.mark.parametrize("cuda, want", [(False, "cpu"), (True, "gpu")])
def test_auto_takes_a_gpu_only_when_one_is_visible(monkeypatch, cuda, want):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert resolve_accelerator("auto") == want
    assert resolve_accelerator("cpu") == "cpu"


def test_gpu_without_one_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA GPU: use --accelerator cpu"):
        resolve_accelerator("gpu")


def test_unknown_accelerator_is_refused():
    with pytest.raises(UserError, match="unknown --accelerator 'tpu': use one of auto, cpu, gpu"):
        resolve_accelerator("tpu")


def test_trainer_runs_where_asked_and_loads_checkpoints_onto_the_cpu(tmp_path):
    trainer = make_trainer(tmp_path, 1, [], progress=False, accelerator="cpu")
    assert isinstance(trainer.accelerator, CPUAccelerator)
    assert isinstance(trainer.strategy.checkpoint_io, SafeCheckpointIO)


def test_checkpoint_io_ignores_the_saved_device(tmp_path):
    path = tmp_path / "c.ckpt"
    torch.save({"w": torch.ones(2)}, path)
    seen = []

    def remember(storage, loc):  # Lightning's default: keep each tensor where it was saved
        seen.append(loc)
        return storage

    loaded = SafeCheckpointIO().load_checkpoint(path, map_location=remember)
    assert seen == [] and loaded["w"].device.type == "cpu"


@pytest.mark.parametrize("command", [["train", "--data", "digits"],
                                     ["prune", "--checkpoint", "x.pt", "--data", "digits"],
                                     ["compare", "--checkpoint", "x.pt", "--data", "digits"]])
def test_cli_refuses_a_gpu_it_does_not_have_before_any_work(monkeypatch, tmp_path, capsys, command):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    rc = main([*command, "--out", str(out), "--accelerator", "gpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "no CUDA GPU" in err and len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_a_ddp_run_leaves_the_callers_thread_count_as_it_was(monkeypatch, tmp_path):
    """Lightning's DDP setup sets torch's threads and OMP_NUM_THREADS where the environment
    does not: in a caller's process (a notebook, this suite) that outlasted the run."""
    monkeypatch.delenv("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    assert main(["train", "--model", "vgg11", "--width", "0.0625", "--data", "digits",
                 "--subset", "100", "--epochs", "1", "--strategy", "ddp", "--devices", "1",
                 "--accelerator", "cpu", "--no-progress", "--out", str(tmp_path / "t")]) == 0
    assert torch.get_num_threads() == 1 and "OMP_NUM_THREADS" not in os.environ
