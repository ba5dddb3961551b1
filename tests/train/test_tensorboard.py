"""TensorBoard logging is optional: with the package installed, a run writes scalars."""

from __future__ import annotations

import pytest

from alphaprune.cli import main


def test_train_writes_tensorboard_scalars_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["train", "--model", "vgg11", "--width", "0.0625", "--data", "digits",
                 "--subset", "200", "--epochs", "2", "--batch-size", "32", "--no-progress",
                 "--out", str(out)]) == 0
    ea = EventAccumulator(str(out / "tensorboard"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"train_loss", "val_loss", "val_acc", "lr"} <= tags
    assert len(ea.Scalars("val_loss")) == 2
