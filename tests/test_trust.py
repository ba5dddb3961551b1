"""Files the tool reads execute nothing; checkpoint writes never tear the last good one."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import pytest
import torch

from alphaprune.cli import main
from alphaprune.modelfile import load_model_file
from alphaprune.rundir import LAST_CKPT, MARKER
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


def test_a_runs_training_checkpoint_given_as_a_model_names_the_model_file(killed_train_run,
                                                                         tmp_path, capsys):
    """evaluate/export of checkpoints/last.ckpt (Lightning's, for --resume) names the run's
    model file, with or without --model (it suggested --model NAME)."""
    run = _copy(killed_train_run, tmp_path)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    assert main(["evaluate", ckpt, "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert "is the run's training checkpoint (for --resume), not a model file" in err
    assert "model.pt or pruned.pt once the run has finished, or add --model NAME" in err
    # a train run's weights as of its last epoch, read as a raw state_dict, as before
    assert main(["evaluate", ckpt, "--data", "digits", "--model", "vgg11", "--model-kwargs",
                 '{"width": 0.0625, "in_channels": 1}']) == 0
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", ckpt, "--format", "torchscript", "--out", str(tmp_path / "m.ts")]) == 2
    assert f"not a model file: pass {run / 'model.pt'}" in capsys.readouterr().err


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


def test_a_missing_checkpoint_is_a_user_error(tmp_path):
    from alphaprune.errors import UserError

    for path in (tmp_path / "nope.ckpt", tmp_path):  # missing, and a folder
        with pytest.raises(UserError, match="checkpoint"):
            SafeCheckpointIO().load_checkpoint(path)


def test_a_truncated_checkpoint_is_a_one_line_error(killed_train_run, tmp_path, capsys):
    run = _copy(killed_train_run, tmp_path)
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    rc = main(["train", "--resume", "--out", str(run), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--force" in err, err


def _flip_tensor_bytes(path, count=7):
    """Flip ``count`` bytes in the middle of the largest tensor a ``torch.save`` file holds
    (the file stays a readable archive; ``torch.load`` alone loads it as other numbers)."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    for i in range(count):
        data[start + i] ^= 0xFF
    path.write_bytes(bytes(data))
    return info.filename


@pytest.mark.parametrize("command", ["train", "prune"])
def test_flipped_bytes_in_a_resume_checkpoint_are_refused(killed_train_run, unfinished_prune,
                                                          tmp_path, capsys, command):
    run = _copy(killed_train_run, tmp_path) if command == "train" else unfinished_prune
    member = _flip_tensor_bytes(run / LAST_CKPT)
    torch.load(run / LAST_CKPT, weights_only=True)  # torch alone would resume from it
    capsys.readouterr()
    assert main([command, "--resume", "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is damaged" in err and member in err and "--force" in err, err
    assert len(err.splitlines()) == 1, err


def test_flipped_bytes_in_a_model_file_are_refused(tiny_checkpoint, tmp_path, capsys):
    bad = tmp_path / "flipped.pt"
    shutil.copy(tiny_checkpoint, bad)
    member = _flip_tensor_bytes(bad)
    rc = main([*PRUNE, "--checkpoint", str(bad), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "is damaged" in err and member in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "p").exists()


def test_a_file_saved_without_checksums_still_loads(tiny_checkpoint, tmp_path):
    from torch.utils.serialization import config

    from alphaprune.modelfile import load_model

    plain = tmp_path / "no_crc.pt"
    with config.patch({"save.compute_crc32": False}):  # torch's own config patch
        torch.save(torch.load(tiny_checkpoint, weights_only=True), plain)
    assert config.save.compute_crc32
    assert load_model(plain) is not None


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


def test_a_write_killed_midway_leaves_a_temporary_file_the_next_write_removes(tmp_path):
    """kill -9 runs no cleanup: the torn temporary file of a dead writer is removed by the
    next write of the same file; one of a live process is left alone."""
    import subprocess
    import sys

    io, path = SafeCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1}, path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    torn = path.with_name(f".last.ckpt.{dead}.tmp")
    live = path.with_name(f".last.ckpt.{os.getppid()}.tmp")
    for f in (torn, live):
        f.write_bytes(b"half a checkpoint")
    io.save_checkpoint({"epoch": 2}, path)
    assert not torn.exists() and live.exists()
    assert io.load_checkpoint(path)["epoch"] == 2


# --------------------------------------------------------------------------- --force, bad values

PRUNE = ["prune", "--data", "digits", "--subset", "200", "--batch-size", "32", "--prune", "0.5",
         "--step-size", "1", "--final-max-epochs", "1", "--no-progress"]


def test_force_never_deletes_the_folder_holding_the_checkpoint(tiny_checkpoint, tmp_path, capsys):
    run = tmp_path / "train"
    shutil.copytree(tiny_checkpoint.parent, run)
    rc = main([*PRUNE, "--checkpoint", str(run / "model.pt"), "--out", str(run), "--force"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "input of this run" in err and len(err.splitlines()) == 1
    assert (run / "model.pt").is_file()


@pytest.mark.parametrize("bad", [["--final-schedule", "linear"], ["--min-delta", "nan"],
                                 ["--temperature", "inf"], ["--weight-decay", "inf"],
                                 ["--feature-distill", "nan"],
                                 ["--prune", "0.999"]])
def test_force_with_a_bad_option_keeps_the_finished_run(tiny_checkpoint, tmp_path, capsys, bad):
    out = tmp_path / "p"
    assert main([*PRUNE, "--checkpoint", str(tiny_checkpoint), "--out", str(out)]) == 0
    before = sorted(p.name for p in out.iterdir())
    capsys.readouterr()
    rc = main([*PRUNE, "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--force", *bad])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in out.iterdir()) == before and (out / "pruned.pt").is_file()


def test_divergence_is_an_error_and_writes_no_nan_model(tmp_path, capsys):
    out = tmp_path / "t"
    rc = main([*TRAIN, "--epochs", "2", "--lr", "1e6", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "diverged" in err and len(err.splitlines()) == 1, err
    assert not (out / "model.pt").exists()


def test_a_checkpoint_with_nan_weights_is_refused(tiny_checkpoint, tmp_path, capsys):
    blob = torch.load(tiny_checkpoint, weights_only=True)
    key = next(k for k, v in blob["state_dict"].items() if v.is_floating_point())
    blob["state_dict"][key] = blob["state_dict"][key] * float("nan")
    bad = tmp_path / "nan.pt"
    torch.save(blob, bad)
    rc = main([*PRUNE, "--checkpoint", str(bad), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "NaN or infinite" in err and key in err
    assert not (tmp_path / "p").exists()


def test_json_files_are_strict(tmp_path):
    import json

    from alphaprune.rundir import write_json

    write_json(tmp_path / "s.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": 2})
    text = (tmp_path / "s.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {"a": None, "b": [1.0, None],
                                                                          "c": 2}


# A suite started in the background (nohup, &) ignores SIGINT, and so would the child:
# give it Python's own handler back before it runs the CLI (no preexec_fn: the suite's
# workers have threads).
_WITH_SIGINT = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                "sys.argv[0] = 'alphaprune'; runpy.run_module('alphaprune', run_name='__main__')")


def test_ctrl_c_during_training_says_how_to_resume_and_exits_130(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "t"
    env = {**os.environ, "ALPHAPRUNE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    # far more epochs than it can run before the signal, however fast or loaded the machine
    p = subprocess.Popen([sys.executable, "-c", _WITH_SIGINT, *TRAIN, "--epochs", "100000", "--out",
                          str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env)
    try:
        deadline = time.time() + 120
        ckpt = out / LAST_CKPT  # something to resume: the hint is --resume
        while not ckpt.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert ckpt.exists(), "no epoch finished within 120 s"
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130, err[-2000:]
    assert "--resume" in err.strip().splitlines()[-1]


@pytest.mark.parametrize("argv, has_ckpt, hint", [
    (["prune", "--checkpoint", "m.pt", "--data", "digits"], True,
     "continue with the same command plus --resume"),
    (["prune", "--checkpoint", "m.pt", "--data", "digits"], False,
     "no checkpoint was written yet: run the same command again, without --resume"),
    (["train", "--model", "vgg11", "--data", "digits"], False, "without --resume"),
    (["compare", "--checkpoint", "m.pt", "--data", "digits"], False,
     "run the same command again: it continues the unfinished rows"),
])
def test_the_hint_after_an_interrupt_is_one_that_works(tmp_path, monkeypatch, capsys, argv,
                                                        has_ckpt, hint):
    # --resume where there is a checkpoint to continue from, not where it would be refused
    from alphaprune import cli

    def interrupted(_args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli._COMMANDS, argv[0], interrupted)
    out = tmp_path / "run"
    if has_ckpt:
        (out / LAST_CKPT).parent.mkdir(parents=True)
        (out / LAST_CKPT).write_bytes(b"")
    assert main([*argv, "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("alphaprune: interrupted; ")
    assert hint in err


# --------------------------------------------------------------------------- resume checks


@pytest.fixture
def unfinished_prune(tiny_checkpoint, tmp_path):
    run = tmp_path / "prune"
    main(["prune", "--checkpoint", str(tiny_checkpoint), "--data", "digits", "--subset", "200",
          "--batch-size", "32", "--prune", "0.5", "--step-size", "0.5", "--max-epochs-per-phase",
          "1", "--max-total-epochs", "1", "--no-progress", "--out", str(run)])
    assert not (run / "pruned.pt").exists() and (run / "checkpoints" / "last.ckpt").is_file()
    return run


def test_resume_refuses_a_changed_setting_naming_it(unfinished_prune, capsys):
    capsys.readouterr()
    rc = main(["prune", "--resume", "--out", str(unfinished_prune), "--prune", "0.9", "--lr=0.5",
               "--precision", "bf16-mixed", "--prune-streams", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "--prune (recorded 0.5, given 0.9)" in err and "--lr (recorded" in err
    assert "--precision (recorded '32-true', given 'bf16-mixed')" in err
    assert "--prune-streams (recorded False, given True)" in err  # named by its option


def test_resume_refuses_an_abbreviated_option(unfinished_prune, capsys):
    """An option is spelled in full: a prefix (--subs for --subset) is an error, not a
    setting that slips past the resume check unseen."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # argparse's own error: exit 2
        main(["prune", "--resume", "--out", str(unfinished_prune), "--subs", "100",
              "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "--subs" in err and len(err.splitlines()) == 1, err


def test_resume_refuses_a_config_file(unfinished_prune, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("prune: 0.6\nlr: 0.1\n")
    capsys.readouterr()
    rc = main(["prune", "--resume", "--out", str(unfinished_prune), "--config",
               str(tmp_path / "c.yaml"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "drop --config" in err and len(err.splitlines()) == 1, err


def test_resume_takes_what_may_change(unfinished_prune):
    # the same value as recorded, where to run and a larger budget are all accepted
    assert main(["prune", "--resume", "--out", str(unfinished_prune), "--prune", "0.5",
                 "--accelerator", "cpu", "--devices", "1", "--num-nodes", "1", "--strategy",
                 "ddp", "--max-total-epochs", "20", "--no-progress"]) == 0
    assert (unfinished_prune / "pruned.pt").is_file()


def test_plateau_receives_min_delta():
    from alphaprune.prune import PruneConfig, _scheduler

    s = _scheduler(PruneConfig(scheduler="plateau", min_delta=0.25))
    assert s.min_delta == 0.25


# --------------------------------------------------------------------------- one-line errors


@pytest.mark.parametrize("out, message", [("{file}/sub", "which is a file"),
                                          ("/proc/alphaprune-x", "cannot write to --out")])
def test_unwritable_out_is_a_one_line_error(tmp_path, capsys, out, message):
    (tmp_path / "f").write_text("x")
    rc = main([*TRAIN, "--epochs", "1", "--out", out.format(file=tmp_path / "f")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err


def test_corrupt_config_and_wrong_command_on_resume(killed_train_run, tmp_path, capsys):
    run = _copy(killed_train_run, tmp_path)
    assert main(["prune", "--resume", "--out", str(run)]) == 2
    assert "is a 'train' run" in capsys.readouterr().err
    for text in ("train: [unclosed\n", "", "command: train\ntrain: abc\n"):
        (run / "config.yaml").write_text(text)
        assert main(["train", "--resume", "--out", str(run)]) == 2
        err = capsys.readouterr().err.strip()
        assert "config.yaml is corrupt" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("command", ["train", "prune"])
def test_an_empty_resume_checkpoint_is_a_one_line_error(killed_train_run, unfinished_prune,
                                                        tmp_path, capsys, command):
    run = _copy(killed_train_run, tmp_path) if command == "train" else unfinished_prune
    (run / LAST_CKPT).write_bytes(b"")
    capsys.readouterr()
    assert main([command, "--resume", "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "last.ckpt" in err and "corrupt" in err and len(err.splitlines()) == 1, err


def test_compare_results_torn_last_line_reruns_that_row_and_corrupt_middle_is_refused(tmp_path):
    import json

    from alphaprune.compare import read_results
    from alphaprune.errors import UserError

    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"method": "pretrained"}) + "\n" + '{"method": "os-st')
    assert read_results(path) == [{"method": "pretrained"}]
    assert path.read_text() == json.dumps({"method": "pretrained"}) + "\n"  # torn row dropped
    path.write_text('{"meth\n' + json.dumps({"method": "pretrained"}) + "\n")
    with pytest.raises(UserError, match="line 1 is corrupt"):
        read_results(path)


def test_compare_out_naming_a_file(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    rc = main(["compare", "--checkpoint", str(tiny_checkpoint), "--data", "digits", "--quick",
               "--out", str(tmp_path / "f")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "is a file" in err and len(err.splitlines()) == 1


def test_a_folder_left_before_the_first_checkpoint_is_reused_without_force(tmp_path):
    out = tmp_path / "t"
    out.mkdir()
    (out / MARKER).write_text("")  # made by alphaprune, killed during epoch 0
    (out / "config.yaml").write_text("command: train\ntrain: {}\n")
    (out / "metrics.csv").write_text("epoch\n")
    assert main([*TRAIN, "--epochs", "1", "--out", str(out)]) == 0
    assert (out / "model.pt").is_file()


@pytest.mark.parametrize("force", [False, True])
def test_a_users_folder_with_a_config_yaml_is_never_cleared(tmp_path, capsys, force):
    """Only a folder alphaprune made (it holds the marker) may be cleared: a user's project
    folder that happens to hold a config.yaml keeps every file, with or without --force."""
    out = tmp_path / "myproj"
    (out / "data").mkdir(parents=True)
    (out / "config.yaml").write_text("lr: 1\n")
    (out / "thesis.tex").write_text("precious")
    capsys.readouterr()
    rc = main([*TRAIN, "--epochs", "1", "--out", str(out), *(["--force"] if force else [])])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and MARKER in err, err
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "data", "thesis.tex"]
    assert (out / "thesis.tex").read_text() == "precious"


def test_the_current_directory_is_never_cleared(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main([*TRAIN, "--epochs", "1", "--out", str(out)]) == 0
    for where, arg in ((out, "."), (out / "checkpoints", "..")):
        monkeypatch.chdir(where)
        capsys.readouterr()
        assert main([*TRAIN, "--epochs", "1", "--out", arg, "--force"]) == 2
        err = capsys.readouterr().err.strip()
        assert "current directory" in err and len(err.splitlines()) == 1, err
    assert (out / "model.pt").is_file()


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl")
def test_a_second_process_cannot_write_into_a_run_folder_in_use(killed_train_run, tmp_path, capsys):
    import fcntl

    run = _copy(killed_train_run, tmp_path)
    fd = os.open(run / MARKER, os.O_RDWR)  # another process's hold on the folder
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        for argv in (["train", "--resume", "--out", str(run)],
                     [*TRAIN, "--epochs", "1", "--out", str(run), "--force"]):
            capsys.readouterr()
            assert main([*argv, "--no-progress"]) == 2
            err = capsys.readouterr().err.strip()
            assert "another alphaprune process" in err and len(err.splitlines()) == 1, err
        assert (run / LAST_CKPT).is_file()  # nothing was cleared
    finally:
        os.close(fd)
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 0  # free again


# --------------------------------------------------------------------------- --config


def test_a_run_repeated_from_its_own_config_gives_the_same_phases(tiny_checkpoint, tmp_path):
    import csv

    first, again = tmp_path / "a", tmp_path / "b"
    assert main([*PRUNE, "--checkpoint", str(tiny_checkpoint), "--step-size", "0.5",
                 "--max-epochs-per-phase", "1", "--out", str(first)]) == 0
    assert main(["prune", "--config", str(first / "config.yaml"), "--out", str(again),
                 "--no-progress"]) == 0

    def rows(p):
        with open(p, newline="") as f:
            return [(r["alpha"], r["epochs"], r["best_val_loss"]) for r in csv.DictReader(f)]

    assert rows(first / "phases.csv") == rows(again / "phases.csv")


def test_config_values_are_overridden_by_flags_and_unknown_keys_refused(tmp_path, capsys):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": "vgg11", "width": 0.0625, "data": "digits",
                                   "subset": 200, "batch_size": 32, "epochs": 3}))
    out = tmp_path / "t"
    assert main(["train", "--config", str(cfg), "--epochs", "1", "--no-progress", "--out",
                 str(out)]) == 0
    recorded = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert recorded["epochs"] == 1 and recorded["width"] == 0.0625 and recorded["data"]["subset"] == 200
    cfg.write_text("epochs: 1\nwidht: 0.5\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "u")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown key(s) widht" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("text, message", [
    ("epochs: 1.7", "epochs takes an integer, got 1.7"),        # failed deep in Lightning
    ("epochs: [1, 2]", "epochs takes an integer, got [1, 2]"),
    ("lr: true", "lr takes a number, got True"),                # trained at lr 1.0
    ("nesterov: 'false'", "nesterov takes true or false"),      # Nesterov stayed on
    ("force: 'no'", "force takes true or false"),               # acted as --force
    ("schedule: bogus", "schedule is one of onecycle, cosine, constant"),
    ("widths: '8,x'", "widths takes integers"),
    ("resume: true", "pass --resume on the command line"),      # skipped the resume check
])
def test_config_values_are_checked_as_the_options_parse_them(tmp_path, capsys, text, message):
    """YAML's numbers, booleans and lists do not pass through argparse's types: each value
    is checked as its option would parse it, in one line, before anything is written."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: vgg11\nwidth: 0.0625\ndata: digits\n{text}\n")
    assert main(["train", "--config", str(cfg), "--no-progress", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "t").exists()


def test_a_config_null_for_a_required_option_is_refused(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: vgg11\ndata: digits\nout: null\n")
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "out is required: give it a value" in err and len(err.splitlines()) == 1


def test_config_lists_and_nulls_read_as_a_runs_config_yaml_records_them(tmp_path):
    """A run's config.yaml records --widths as a list and unset options as null."""
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: vgg11\nwidths: [4, 4, 8, 8, 8, 8, 8, 8]\nwidth: null\ndata: digits\n"
                   "subset: 200\nbatch_size: 32\nepochs: 1\nlr: '0.05'\n")
    out = tmp_path / "t"
    assert main(["train", "--config", str(cfg), "--no-progress", "--out", str(out)]) == 0
    recorded = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert recorded["widths"] == [4, 4, 8, 8, 8, 8, 8, 8] and recorded["width"] == 1.0
    assert recorded["optim"]["lr"] == 0.05


def test_training_that_diverges_after_a_good_epoch_ships_the_best_one(tmp_path):
    import lightning.pytorch as pl

    from alphaprune import api
    from alphaprune.train.module import OptimConfig

    class Poison(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                with torch.no_grad():
                    next(pl_module.model.parameters()).fill_(float("nan"))

    cfg = api.TrainConfig(model="vgg11", width=0.0625, epochs=3, optim=OptimConfig(lr=0.05),
                          data=api.DataConfig(data="digits", subset=200, batch_size=32))
    s = api.train(cfg, tmp_path / "t", progress=False, callbacks=[Poison()])
    assert s["diverged"]["epoch"] == 1 and s["best_epoch"] == 0
    blob = torch.load(tmp_path / "t" / "model.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in blob["state_dict"].values() if v.is_floating_point())
    assert len((tmp_path / "t" / "metrics.csv").read_text().splitlines()) == 1 + 2  # stopped at 1


def test_a_reader_that_closes_the_output_early_ends_the_command_quietly(tmp_path):
    """``alphaprune inspect ... | head -1``: the command stops at the broken pipe with the
    shell's code for it (141) and no traceback."""
    p = subprocess.Popen([sys.executable, "-m", "alphaprune", "inspect", "--model", "vgg16",
                          "--width", "0.125"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=tmp_path)
    p.stdout.close()  # the reader is gone before the first line
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and "Traceback" not in err, err


def test_a_prune_without_a_test_split_finishes_and_reports(tiny_checkpoint, tmp_path):
    """--test-frac 0 leaves no test score: the run still ships its model, summary and report
    (it used to train to the end, then lose the run to a crash in the report)."""
    out = tmp_path / "p"
    assert main([*PRUNE, "--checkpoint", str(tiny_checkpoint), "--test-frac", "0",
                 "--out", str(out)]) == 0
    assert (out / "pruned.pt").is_file() and (out / "report.html").is_file()
    assert "test accuracy – → –" in (out / "report.md").read_text()


def test_a_torn_metrics_row_is_dropped_on_resume_and_the_history_kept(unfinished_prune):
    """A kill in the middle of appending a row leaves a torn last line: the resume drops it
    (and any row after its checkpoint) and keeps every earlier epoch, in a file rewritten
    atomically."""
    import csv

    run = unfinished_prune  # one epoch done and checkpointed (out of budget)
    whole = (run / "metrics.csv").read_text()
    (run / "metrics.csv").write_text(whole + "1,1,0.51,0.")  # epoch 1's row, cut mid-write
    assert main(["prune", "--resume", "--out", str(run), "--max-total-epochs", "3",
                 "--no-progress"]) == 0
    text = (run / "metrics.csv").read_text()
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert all(None not in r and None not in r.values() for r in rows)  # no glued or short row
    assert rows[1]["train_loss"] != "0.51"
    assert text.startswith(whole) and text.endswith("\n")


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl")
def test_a_run_that_stops_releases_its_folder(unfinished_prune):
    """Out of budget, the run returns: its folder is free for another process (a notebook's
    kernel lives on, and a terminal resumes the run)."""
    import fcntl

    fd = os.open(unfinished_prune / MARKER, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if this process still held it
    finally:
        os.close(fd)


def test_train_or_prune_never_clears_a_comparison(tiny_checkpoint, tmp_path, capsys):
    cmp = tmp_path / "cmp"
    assert main(["compare", "--checkpoint", str(tiny_checkpoint), "--data", "digits", "--subset",
                 "200", "--targets", "0.5", "--methods", "unstructured", "--budget", "1",
                 "--no-progress", "--out", str(cmp)]) == 0
    before = sorted(p.name for p in cmp.iterdir())
    for argv in ([*TRAIN, "--epochs", "1"], [*TRAIN, "--epochs", "1", "--force"],
                 [*PRUNE, "--checkpoint", str(tiny_checkpoint), "--force"]):
        capsys.readouterr()
        assert main([*argv, "--out", str(cmp)]) == 2
        err = capsys.readouterr().err.strip()
        assert "holds an alphaprune comparison" in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in cmp.iterdir()) == before


# --------------------------------------------------------------------------- splits and paths


@pytest.mark.parametrize("subset", ["200", "300"])
def test_a_test_split_the_pretrained_model_trained_on_is_said(tiny_checkpoint, tmp_path, capsys,
                                                              subset):
    """The tiny checkpoint trained on the split of a 300-image subset: another subset's test
    images include some it trained on, and the result says so; its own split has none."""
    import json

    argv = [*PRUNE, "--subset", subset, "--checkpoint", str(tiny_checkpoint), "--out",
            str(tmp_path / "p")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    seen = summary["headline"].get("test_seen_in_pretraining")
    report = (tmp_path / "p" / "report.md").read_text()
    if subset == "300":
        assert seen is None and "warning" not in out and "Caution" not in report
        return
    assert seen["images"] > 0 and seen["of"] == 20 and "--subset 300" in seen["split"]
    assert f"warning: {seen['images']} of the 20 test images" in out
    assert "Caution" in report and "--subset 300" in report


def test_relative_paths_are_recorded_absolute_and_resume_from_anywhere(imagefolder, tmp_path,
                                                                       monkeypatch, capsys):
    import json

    import yaml

    monkeypatch.setenv("ALPHAPRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(imagefolder.parent)
    train = ["train", "--model", "vgg11", "--width", "0.0625", "--data", imagefolder.name,
             "--batch-size", "8", "--epochs", "1", "--seed", "3", "--no-progress", "--out", "t"]
    assert main(train) == 0
    rec = yaml.safe_load((imagefolder.parent / "t" / "config.yaml").read_text())["train"]
    assert rec["data"]["data"] == str(imagefolder)
    assert load_model_file(imagefolder.parent / "t" / "model.pt").meta["split"]["data"] == str(imagefolder)
    prune = ["prune", "--checkpoint", "t/model.pt", "--data", imagefolder.name, "--batch-size", "8",
             "--prune", "0.5", "--step-size", "0.5", "--max-epochs-per-phase", "1",
             "--max-total-epochs", "1", "--no-progress", "--out", "p"]
    main(prune)  # stops on its budget, before the alpha = 0 phase ends
    capsys.readouterr()
    main([*prune, "--resume", "--max-total-epochs", "2"])  # its own command plus --resume
    assert "changed" not in capsys.readouterr().err
    rec = yaml.safe_load((imagefolder.parent / "p" / "config.yaml").read_text())["prune"]
    assert rec["data"]["data"] == str(imagefolder)
    assert rec["checkpoint"] == str(imagefolder.parent / "t" / "model.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # where "t/model.pt" and the data's name mean nothing
    assert main(["prune", "--resume", "--out", str(imagefolder.parent / "p"), "--no-progress",
                 "--max-total-epochs", "4"]) == 0
    monkeypatch.chdir(imagefolder.parent)  # a folds run records its paths absolute too
    main([*prune[:-1], "f", "--folds", "2", "--max-total-epochs", "1"])
    rec = yaml.safe_load((imagefolder.parent / "f" / "config.yaml").read_text())["prune"]
    assert rec["checkpoint"] == str(imagefolder.parent / "t" / "model.pt")
    assert rec["data"]["data"] == str(imagefolder)
    monkeypatch.chdir(elsewhere)
    # evaluate re-carves the recorded split (seed 3) however the data's path is spelled
    capsys.readouterr()
    assert main(["evaluate", str(imagefolder.parent / "t" / "model.pt"), "--data",
                 os.path.relpath(imagefolder, elsewhere), "--json"]) == 0
    summary = json.loads((imagefolder.parent / "t" / "summary.json").read_text())
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(summary["test_loss"])


# --------------------------------------------------------------------------- the Python API


def test_the_api_takes_either_config_form_and_paths(tiny_checkpoint, tmp_path):
    """A notebook passes dicts or dataclasses, strings or paths: each works alike."""
    import json
    from pathlib import Path

    from alphaprune.api import DataConfig, TrainConfig, train
    from alphaprune.prune import PruneConfig, prune
    from alphaprune.train.module import OptimConfig

    tc = TrainConfig(model="vgg11", width=0.0625, epochs=1, optim={"lr": 0.05},
                     data={"data": "digits", "subset": 200, "batch_size": 32})
    assert train(tc, tmp_path / "t", progress=False)["command"] == "train"
    kw = {"prune": 0.5, "step_size": 1.0, "final_max_epochs": 1}
    runs = {"dict": PruneConfig(checkpoint=str(tiny_checkpoint),
                                optim={"lr": 0.02, "schedule": "constant"},
                                data={"data": "digits", "subset": 300, "batch_size": 32}, **kw),
            "dataclass": PruneConfig(checkpoint=Path(tiny_checkpoint),
                                     optim=OptimConfig(lr=0.02, schedule="constant"),
                                     data=DataConfig(data="digits", subset=300, batch_size=32), **kw)}
    accs = {k: prune(c, tmp_path / k, progress=False)["test_acc_after"] for k, c in runs.items()}
    assert accs["dict"] == accs["dataclass"]
    import yaml

    for k in runs:  # the lr given, not the default 0.01
        assert yaml.safe_load((tmp_path / k / "config.yaml").read_text())["prune"]["optim"]["lr"] == 0.02
    assert json.loads((tmp_path / "dict" / "summary.json").read_text())["headline"]


@pytest.mark.parametrize("field, value, message", [
    ("data", {"data": "digits", "subsett": 200}, "data: unknown setting 'subsett'"),
    ("data", "digits", "data must be a DataConfig or a dict of its fields, got str"),
    ("optim", {"learning_rate": 0.1}, "optim: unknown setting 'learning_rate'"),
])
def test_the_api_names_a_wrong_config_field(tiny_checkpoint, tmp_path, field, value, message):
    from alphaprune.errors import UserError
    from alphaprune.prune import PruneConfig, prune

    cfg = PruneConfig(checkpoint=str(tiny_checkpoint), **{"data": {"data": "digits"}, field: value})
    with pytest.raises(UserError, match=message):
        prune(cfg, tmp_path / "p", progress=False)
    assert not (tmp_path / "p").exists()


def test_a_prune_runs_checkpoint_is_no_model_even_with_a_model_name(unfinished_prune, capsys):
    """A prune run's last.ckpt holds the branched network: no --model rebuilds it."""
    ckpt = str(unfinished_prune / "checkpoints" / "last.ckpt")
    capsys.readouterr()
    assert main(["evaluate", ckpt, "--data", "digits", "--model", "vgg11"]) == 2
    err = capsys.readouterr().err
    assert "is the run's training checkpoint (for --resume), not a model file" in err
    assert "--model NAME" not in err and len(err.strip().splitlines()) == 1
