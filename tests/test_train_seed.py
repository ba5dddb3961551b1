"""``--train-seed``: repeats of a run with other training randomness on the same splits."""

from __future__ import annotations

import json

import numpy as np
import torch

from alphaprune.api import DataConfig, load_data, loaders
from alphaprune.cli import main

DATA = ["--data", "digits", "--subset", "300", "--batch-size", "32"]
PRUNE = ["--prune", "0.5", "--step-size", "0.5", "--patience", "1", "--max-epochs-per-phase",
         "1", "--final-max-epochs", "1", "--no-progress"]


def test_train_seed_defaults_to_the_split_seed():
    assert DataConfig(seed=3).run_seed == 3
    assert DataConfig(seed=3, train_seed=7).run_seed == 7


def test_train_seed_keeps_the_splits_and_changes_the_batches(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHAPRUNE_CACHE", str(tmp_path))
    a, b = DataConfig(subset=300), DataConfig(subset=300, train_seed=5)
    (ds, sa), (_, sb) = load_data(a), load_data(b)
    for split in ("train", "val", "test"):
        assert np.array_equal(getattr(sa, split), getattr(sb, split)), split
    mean, std = ds.mean_std()
    xa, _ = next(iter(loaders(ds, sa, mean, std, 32, a.run_seed)[0]))
    xb, _ = next(iter(loaders(ds, sb, mean, std, 32, b.run_seed)[0]))
    assert not torch.equal(xa, xb)


def test_prune_repeats_differ_only_in_training(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHAPRUNE_CACHE", str(tmp_path / "cache"))
    summaries = []
    for seed in (None, 0, 1):
        out = tmp_path / f"run-{seed}"
        extra = [] if seed is None else ["--train-seed", str(seed)]
        argv = ["prune", "--checkpoint", str(tiny_checkpoint), *DATA, *PRUNE, *extra, "--out", str(out)]
        assert main(argv) == 0
        summaries.append(json.loads((out / "summary.json").read_text()))
    default, same, other = summaries
    # the pretrained model is scored on the same val/test images in every repeat
    assert default["val_acc_before"] == same["val_acc_before"] == other["val_acc_before"]
    assert default["test_acc_before"] == same["test_acc_before"] == other["test_acc_before"]
    # --train-seed 0 is the default run again (one thread: bit-reproducible); 1 trains otherwise
    assert same["phases"] == default["phases"]
    assert other["phases"] != default["phases"]


def test_negative_train_seed_is_a_one_line_error(capsys, tmp_path):
    rc = main(["prune", "--checkpoint", "x.pt", *DATA, "--train-seed", "-1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("alphaprune: error: --train-seed must be >= 0")
    assert len(err.splitlines()) == 1


def test_train_follows_the_seed_whatever_the_callers_random_state(tmp_path, monkeypatch):
    import alphaprune
    from alphaprune.api import TrainConfig, train

    monkeypatch.setenv("ALPHAPRUNE_CACHE", str(tmp_path / "cache"))
    states = []
    for i, callers_seed in enumerate((0, 123, 123)):
        torch.manual_seed(callers_seed)
        data = DataConfig(subset=300, batch_size=32, train_seed=1 if i == 2 else None)
        train(TrainConfig(model="vgg11", width=0.0625, epochs=1, data=data), tmp_path / f"r{i}",
              progress=False)
        states.append(alphaprune.load_model(tmp_path / f"r{i}" / "model.pt").state_dict())
    same = [torch.equal(states[0][k], states[1][k]) for k in states[0]]
    assert all(same)
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])
