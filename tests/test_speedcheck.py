"""The final ``--speedup`` check in a fresh process (``alphaprune.speedcheck``)."""

from __future__ import annotations

import os

import pytest

from alphaprune.speedcheck import fresh_process_speedup


def test_the_check_runs_in_another_process_on_the_files(tiny_checkpoint):
    r = fresh_process_speedup({"path": str(tiny_checkpoint)}, tiny_checkpoint, (1, 8, 8), 4, 3)
    assert r["pid"] != os.getpid()
    assert r["achieved"] > 0 and r["original_ms"] > 0 and r["pruned_ms"] > 0


def test_a_failed_check_says_why(tiny_checkpoint, tmp_path):
    with pytest.raises(RuntimeError, match=r"exited with 1: .*no-such\.pt does not exist"):
        fresh_process_speedup({"path": str(tiny_checkpoint)}, tmp_path / "no-such.pt", (1, 8, 8),
                              4, 3)


def test_a_run_whose_fresh_check_fails_reports_this_process(tiny_checkpoint, tmp_path, monkeypatch):
    import json

    from alphaprune import prune as prune_mod
    from alphaprune.cli import main

    def fail(*a, **k):
        raise RuntimeError("the check exited with 1: boom")

    monkeypatch.setattr(prune_mod, "fresh_process_speedup", fail)
    out = tmp_path / "run"
    rc = main(["prune", "--checkpoint", str(tiny_checkpoint), "--data", "digits", "--subset", "300",
               "--batch-size", "32", "--speedup", "1.05", "--latency-batch", "128",
               "--step-size", "0.5", "--patience", "1", "--max-epochs-per-phase", "1",
               "--final-max-epochs", "1", "--no-progress", "--out", str(out)])
    if rc == 2:  # this busy machine could not reach even 1.05x at the narrowest widths
        pytest.skip("1.05x unreachable on this machine now")
    sp = json.loads((out / "summary.json").read_text())["speedup"]
    assert sp["timed_in"] == "this process (the check exited with 1: boom)"
    assert sp["achieved"] == sp["in_process"]["achieved"]
