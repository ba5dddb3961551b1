"""``prune`` and ``compare`` on a ResNet: the whole pipeline on a model with a residual stream."""

from __future__ import annotations

import json

import pytest
import torch

import alphaprune
from alphaprune.cli import main
from alphaprune.models.resnet import ResNet

DATA = ["--data", "digits", "--subset", "300", "--batch-size", "32", "--no-progress"]


@pytest.fixture(scope="module")
def resnet20(tmp_path_factory):
    base = tmp_path_factory.mktemp("r20")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALPHAPRUNE_CACHE", str(base / "cache"))
        torch.manual_seed(0)
        assert main(["train", "--model", "resnet20", "--width", "0.25", "--epochs", "2", *DATA,
                     "--out", str(base / "train")]) == 0
    return base / "train" / "model.pt"


def test_prune_resnet20_end_to_end(resnet20, tmp_path):
    out = tmp_path / "p50"
    assert main(["prune", "--checkpoint", str(resnet20), *DATA,
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


def test_a_residual_network_takes_onecycle_from_its_own_budget(resnet20, tmp_path, monkeypatch):
    """prune tells the recipe rule that resnet20 adds tensors: with the threshold of networks
    without sums out of reach and the residual one under this run, it goes straight to
    alpha = 0 and says why."""
    import yaml

    from alphaprune import recipe

    monkeypatch.setattr(recipe, "ONECYCLE_MIN_EPOCHS", 2)
    monkeypatch.setattr(recipe, "ONECYCLE_MIN_IMAGE_EPOCHS", 10**9)
    monkeypatch.setattr(recipe, "ONECYCLE_MIN_IMAGE_EPOCHS_RESIDUAL", 2 * 100)
    out = tmp_path / "onecycle"
    assert main(["prune", "--checkpoint", str(resnet20), *DATA, "--prune", "0.5",
                 "--max-total-epochs", "2", "--warmup-steps", "0", "--out", str(out)]) == 0
    p = yaml.safe_load((out / "config.yaml").read_text())["prune"]
    assert p["recipe"] == "onecycle" and "(a residual network)" in p["recipe_reason"]
    assert json.loads((out / "summary.json").read_text())["phases"][0]["alpha"] == 0.0


def test_compare_resnet20_sizes_every_peer_to_the_same_count(resnet20, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", "--checkpoint", str(resnet20), *DATA, "--quick", "--targets", "0.5",
                 "--methods", "os-step,tp-l1,scratch", "--prune-streams", "--out", str(out)]) == 0
    rows = {r["method"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    base = rows["pretrained"]["params"]
    for m in ("os-step", "tp-l1", "scratch"):
        assert abs(1 - rows[m]["params"] / base - 0.5) <= 0.005, (m, rows[m]["params"])
    # scratch trains objective selection's own compact architecture
    assert rows["scratch"]["params"] == rows["os-step"]["params"]
    assert rows["scratch"]["flops"] == rows["os-step"]["flops"]
    # --prune-streams reached objective selection: its residual stream was cut too
    fused = alphaprune.load_model(rows["os-step"]["model_file"])
    streams = (fused.conv1.out_channels, fused.layer2[0].downsample[0].out_channels,
               fused.fc.in_features)
    assert streams != (4, 8, 16) and all(a <= b for a, b in zip(streams, (4, 8, 16)))


def test_an_unreachable_target_is_refused_before_the_run_folder_exists(resnet20, tmp_path, capsys):
    out = tmp_path / "p99"
    rc = main(["prune", "--checkpoint", str(resnet20), *DATA, "--prune", "0.99", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "cannot be reached" in err and "--prune 0." in err and len(err.splitlines()) == 1
    assert "--prune-streams" not in err  # cutting the streams would not reach it either
    assert not out.exists()
    rc = main(["prune", "--checkpoint", str(resnet20), *DATA, "--flops", "0.8", "--no-prune-streams",
               "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--flops 0.8 cannot be reached" in err and len(err.splitlines()) == 1
    assert "add --prune-streams, which cuts the residual streams too and reaches it" in err
    assert not out.exists()


def test_an_unreachable_speedup_says_the_streams_may_reach_it(resnet20, tmp_path, capsys,
                                                             monkeypatch):
    from tests.standins import stand_in_timing

    stand_in_timing(monkeypatch)  # speed-ups as FLOP ratios: no timing noise
    out = tmp_path / "sp"
    rc = main(["prune", "--checkpoint", str(resnet20), *DATA, "--speedup", "1000",
               "--no-prune-streams", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--speedup 1000 cannot be reached" in err and len(err.splitlines()) == 1
    assert "add --prune-streams, which cuts the residual streams too and may reach it" in err
    assert not out.exists()
    # by default --speedup cuts the streams already: nothing more to suggest
    rc = main(["prune", "--checkpoint", str(resnet20), *DATA, "--speedup", "1000", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--speedup 1000 cannot be reached" in err and "--prune-streams" not in err
    assert not out.exists()


def test_prune_streams_cuts_the_residual_stream_and_fuses_exactly(resnet20, tmp_path):
    out = tmp_path / "s50"
    # (no --prune-streams: a FLOPs target cuts the streams by default)
    assert main(["prune", "--checkpoint", str(resnet20), *DATA,
                 "--flops", "0.5", "--solver", "ratio", "--step-size", "0.5",
                 "--max-epochs-per-phase", "1", "--final-max-epochs", "2", "--round-to", "1",
                 "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert abs(s["achieved_flops_reduction"] - 0.5) <= 0.005
    assert s["fusion_rel_error"] <= 1e-5
    fused = alphaprune.load_model(out / "pruned.pt")
    assert isinstance(fused, ResNet)
    # 9 inner convs and 3 streams, in graph order: stream 1 first (the stem writes it)
    assert len(s["widths_after"]) == 12
    streams = [s["widths_after"][i] for i in (0, 4, 8)]
    assert streams != [4, 8, 16] and all(w >= 1 for w in streams)
    # the stem, every block's last conv and the shortcuts keep one stream width per stage
    assert fused.conv1.out_channels == streams[0] == fused.layer1[2].conv2.out_channels
    assert fused.layer2[0].downsample[0].out_channels == streams[1] == fused.layer3[0].conv1.in_channels
    assert fused.fc.in_features == streams[2]
    assert "streams: true" in (out / "config.yaml").read_text()  # recorded resolved
