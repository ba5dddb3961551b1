"""``alphaprune prune`` on a ResNet: the whole pipeline on a model with a residual stream."""

from __future__ import annotations

import json

import torch

import alphaprune
from alphaprune.cli import main
from alphaprune.models.resnet import ResNet

DATA = ["--data", "digits", "--subset", "300", "--batch-size", "32", "--no-progress"]


def test_prune_resnet20_end_to_end(tmp_path):
    torch.manual_seed(0)
    assert main(["train", "--model", "resnet20", "--width", "0.25", "--epochs", "2", *DATA,
                 "--out", str(tmp_path / "train")]) == 0
    out = tmp_path / "p50"
    assert main(["prune", "--checkpoint", str(tmp_path / "train" / "model.pt"), *DATA,
                 "--prune", "0.5", "--step-size", "0.5", "--max-epochs-per-phase", "1",
                 "--final-max-epochs", "2", "--round-to", "1", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert abs(s["achieved_reduction"] - 0.5) <= 0.005
    assert s["fusion_rel_error"] <= 1e-5
    fused = alphaprune.load_model(out / "pruned.pt")
    assert isinstance(fused, ResNet)
    inner = [fused.get_submodule(f"layer{i}.{b}.conv1").out_channels for i in (1, 2, 3)
             for b in range(3)]
    assert inner == s["widths_after"]
    # the residual stream keeps its widths: only the inner convs were cut
    assert fused.conv1.out_channels == 4 and fused.layer3[2].conv2.out_channels == 16
