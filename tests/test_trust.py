"""Files the tool reads execute nothing; checkpoint writes never tear the last good one."""

from __future__ import annotations

import errno
import os
import shutil

import pytest
import torch

from alphaprune.cli import main
from alphaprune.train.engine import SafeCheckpointIO

TRAIN = ["train", "--model", "vgg11", "--width", "0.0625", "--data", "digits", "--subset", "200",
         "--batch-size", "32", "--no-progress"]


class Exploit:
    """Unpickles to a call of ``os.system`` that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def killed_train_run(tmp_path_factory):
    """A train run folder as a kill before ``model.pt`` leaves it: config, metrics, checkpoint."""
    base = tmp_path_factory.mktemp("killed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALPHAPRUNE_CACHE", str(base / "cache"))
        assert main([*TRAIN, "--epochs", "2", "--out", str(base / "run")]) == 0
    (base / "run" / "model.pt").unlink()
    return base / "run"


def _copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def test_the_killed_run_resumes(killed_train_run, tmp_path, capsys):
    run = _copy(killed_train_run, tmp_path)
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 0
    assert (run / "model.pt").is_file()


@pytest.mark.parametrize("command", ["train", "prune"])
def test_a_crafted_resume_checkpoint_executes_nothing(killed_train_run, tiny_checkpoint, tmp_path,
                                                      capsys, command):
    marker = tmp_path / "pwned"
    if command == "train":
        run = _copy(killed_train_run, tmp_path)
    else:  # an unfinished prune run: stopped by its epoch budget, before pruned.pt
        run = tmp_path / "prune"
        rc = main(["prune", "--checkpoint", str(tiny_checkpoint), "--data", "digits", "--subset",
                   "200", "--batch-size", "32", "--prune", "0.5", "--step-size", "0.5",
                   "--max-epochs-per-phase", "1", "--max-total-epochs", "1", "--no-progress",
                   "--out", str(run)])
        assert not (run / "pruned.pt").exists(), rc
        assert (run / "checkpoints" / "last.ckpt").is_file()
    torch.save({"state_dict": {}, "x": Exploit(marker)}, run / "checkpoints" / "last.ckpt")
    capsys.readouterr()
    rc = main([command, "--resume", "--out", str(run), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert not marker.exists()
    assert rc == 2 and len(err.splitlines()) == 1 and "cannot read checkpoint" in err, err


def test_a_truncated_checkpoint_is_a_one_line_error(killed_train_run, tmp_path, capsys):
    run = _copy(killed_train_run, tmp_path)
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    rc = main(["train", "--resume", "--out", str(run), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--force" in err, err


def test_a_full_disk_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io, path = SafeCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    real_save = torch.save

    def enospc(obj, f, *a, **k):  # half a checkpoint reaches the disk, then it is full
        real_save(obj, f, *a, **k)
        f.truncate(100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", enospc)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert os.listdir(path.parent) == ["last.ckpt"]  # no temporary file left behind
    loaded = io.load_checkpoint(path)
    assert loaded["epoch"] == 1 and torch.equal(loaded["w"], torch.ones(3))
