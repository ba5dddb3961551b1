"""A public call leaves the caller's process as it found it: grad mode, default dtype,
torch's global generator and the SIGINT handler (a notebook calls alphaprune many times)."""

from __future__ import annotations

import signal

import pytest
import torch

import alphaprune
from alphaprune.api import DataConfig, evaluate
from alphaprune.errors import UserError
from alphaprune.prune import PruneConfig, prune
from alphaprune.scope import isolated

TINY_PRUNE = dict(prune=0.5, step_size=1.0, final_max_epochs=1, max_total_epochs=2,
                  data={"data": "digits", "subset": 200, "batch_size": 32})


def test_the_callers_grad_mode_dtype_generator_and_sigint_handler_are_put_back():
    seen = {}

    @isolated
    def call():
        seen.update(grad=torch.is_grad_enabled(), dtype=torch.get_default_dtype())
        torch.manual_seed(123)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as Lightning does
        raise KeyboardInterrupt

    def mine(signum, frame):
        pass

    before = signal.signal(signal.SIGINT, mine)
    try:
        torch.manual_seed(0)
        state = torch.random.get_rng_state()
        with torch.no_grad():
            torch.set_default_dtype(torch.float64)
            try:
                call()
            except KeyboardInterrupt:
                pass
            finally:
                dtype = torch.get_default_dtype()
                torch.set_default_dtype(torch.float32)
            assert not torch.is_grad_enabled()
        assert seen == {"grad": True, "dtype": torch.float32}  # what the call ran under
        assert dtype == torch.float64 and torch.equal(torch.random.get_rng_state(), state)
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_float64_notebook_loads_evaluates_and_prunes_in_float32(tiny_checkpoint, tmp_path):
    """The file holds float32 weights: under a float64 default, load_model built float64
    modules and evaluate crashed on float32 batches."""
    in_float32 = evaluate(tiny_checkpoint)
    torch.set_default_dtype(torch.float64)
    try:
        model = alphaprune.load_model(tiny_checkpoint)
        r = evaluate(tiny_checkpoint)
        s = prune(PruneConfig(checkpoint=str(tiny_checkpoint), **TINY_PRUNE), tmp_path / "p",
                  progress=False)
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(torch.float32)
    assert next(model.parameters()).dtype == torch.float32
    assert r["accuracy"] == in_float32["accuracy"] and r["loss"] == in_float32["loss"]
    assert s["params_after"] < s["params_before"] and s["fusion_rel_error"] <= 1e-5


def test_a_frozen_module_is_pruned_as_its_file_would_be(tiny_checkpoint, tmp_path):
    """prune(model=m) of a module frozen earlier trained only the branches: another network
    than its own config.yaml gives. Its copy is trained whole; the caller's stays frozen."""
    m = alphaprune.load_model(tiny_checkpoint)
    cfg = PruneConfig(**TINY_PRUNE)
    a = prune(cfg, tmp_path / "warm", model=m, progress=False)
    m.requires_grad_(False)
    b = prune(cfg, tmp_path / "frozen", model=m, progress=False)
    assert not any(p.requires_grad for p in m.parameters())
    assert b["test_acc_after"] == a["test_acc_after"] and b["val_loss_after"] == a["val_loss_after"]


def test_evaluate_reads_the_data_a_data_cfg_names_and_leaves_it_as_it_was(tiny_checkpoint):
    dc = DataConfig(data="digits", subset=300, seed=5)
    before = DataConfig(**vars(dc))
    r = evaluate(tiny_checkpoint, data_cfg=dc)
    assert dc == before and r["data"] == "digits"
    assert evaluate(tiny_checkpoint, data_cfg={"subset": 300})["n_samples"] == r["n_samples"]
    with pytest.raises(UserError, match="/no/such/holdout"):  # read, not ignored
        evaluate(tiny_checkpoint, data_cfg=DataConfig(data="/no/such/holdout"))


def test_a_callers_hooks_stay_on_its_module_and_out_of_the_run(tiny_checkpoint, tmp_path, capsys):
    """A hook collecting outputs fired on every step of the run's copy (and filled the
    caller's list); the stored graph keeps no hook, so a resume ran without it."""
    m = alphaprune.load_model(tiny_checkpoint)
    seen = []
    m.features[0].register_forward_hook(lambda mod, i, o: seen.append(o.detach()))
    prune(PruneConfig(**TINY_PRUNE), tmp_path / "p", model=m)
    assert seen == [] and len(m.features[0]._forward_hooks) == 1
    assert "1 forward/backward hook(s) do not run in the pruning run" in capsys.readouterr().out
