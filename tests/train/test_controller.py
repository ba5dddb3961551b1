"""The phase controller: the pure stop decision, and the callback's argument checks."""

from __future__ import annotations

import math

import pytest

from alphaprune.errors import UserError
from alphaprune.schedules import make_scheduler
from alphaprune.train.controller import PhaseController, phase_decision

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("losses, patience, min_delta, max_epochs, expected", [
    # nothing seen yet
    ([], 1, 0.0, 30, (False, "")),
    ([], 3, 0.5, 1, (False, "")),
    # improving every epoch never runs out of patience
    ([3.0], 1, 0.0, 30, (False, "")),
    ([3.0, 2.0, 1.0], 1, 0.0, 30, (False, "")),
    ([3.0, 2.0, 1.0, 0.5, 0.25], 1, 0.0, 30, (False, "")),
    # flat: equal is not an improvement
    ([1.0, 1.0], 1, 0.0, 30, (True, "patience")),
    ([1.0, 1.0], 2, 0.0, 30, (False, "")),
    ([1.0, 1.0, 1.0], 2, 0.0, 30, (True, "patience")),
    ([1.0, 1.5, 2.0], 2, 0.0, 30, (True, "patience")),  # getting worse
    # an improvement resets the wait
    ([1.0, 1.1, 0.9, 1.0], 2, 0.0, 30, (False, "")),
    ([1.0, 1.1, 0.9, 1.0, 0.95], 2, 0.0, 30, (True, "patience")),
    ([1.0, 1.1, 1.2, 0.5], 3, 0.0, 30, (False, "")),
    # min_delta: an improvement must beat the best by more than min_delta
    ([1.0, 0.95], 1, 0.1, 30, (True, "patience")),
    ([1.0, 0.85], 1, 0.1, 30, (False, "")),
    ([1.0, 0.5], 1, 0.5, 30, (True, "patience")),    # exactly min_delta is not enough
    ([1.0, 0.49], 1, 0.5, 30, (False, "")),
    ([1.0, 0.95, 0.92, 0.91], 3, 0.1, 30, (True, "patience")),  # slow creep is no progress
    ([1.0, 0.95, 0.92, 0.91], 4, 0.1, 30, (False, "")),
    ([1.0, 0.95, 0.92, 0.85], 3, 0.1, 30, (False, "")),  # 0.85 beats the best by > 0.1
    # the first finite loss always improves on "no best yet", even with a huge min_delta
    ([1.0], 1, 1e9, 30, (False, "")),
    # max_epochs
    ([3.0, 2.0, 1.0], 5, 0.0, 3, (True, "max_epochs")),
    ([3.0, 2.0], 5, 0.0, 3, (False, "")),
    ([1.0], 5, 0.0, 1, (True, "max_epochs")),
    ([3.0, 2.0, 1.0, 0.5], 5, 0.0, 3, (True, "max_epochs")),
    # both limits reached at once: patience is named
    ([1.0, 1.0], 1, 0.0, 2, (True, "patience")),
    # non-finite losses
    ([NAN], 3, 0.0, 30, (True, "diverged")),
    ([1.0, NAN], 3, 0.0, 30, (True, "diverged")),
    ([1.0, 0.5, INF], 3, 0.0, 30, (True, "diverged")),
    ([1.0, -INF], 3, 0.0, 30, (True, "diverged")),
    ([3.0, 2.0, NAN], 1, 0.0, 3, (True, "diverged")),  # before max_epochs
])
def test_phase_decision(losses, patience, min_delta, max_epochs, expected):
    assert phase_decision(list(losses), patience, min_delta, max_epochs) == expected


def test_phase_decision_does_not_modify_the_losses():
    losses = [1.0, 1.0, NAN]
    phase_decision(losses, 1, 0.0, 2)
    assert losses[:2] == [1.0, 1.0] and math.isnan(losses[2]) and len(losses) == 3


@pytest.mark.parametrize("patience, expected_left", [(1, [1, 1, 0]), (3, [3, 3, 2, 1, 0, 3])])
def test_patience_left_follows_the_losses(tmp_path, patience, expected_left):
    c = PhaseController(make_scheduler("step", step_size=0.5), tmp_path / "phases.csv",
                        patience=patience)
    losses = [2.0, 1.0, 1.0, 1.5, 1.7, 0.1][:len(expected_left)]
    got = []
    for i in range(len(expected_left)):
        c.losses = losses[:i + 1]
        got.append(c.patience_left())
    assert got == expected_left


@pytest.mark.parametrize("kwargs, flag", [
    ({"patience": 0}, "patience"),
    ({"patience": -1}, "patience"),
    ({"min_delta": -0.01}, "min-delta"),
    ({"max_epochs_per_phase": 0}, "max-epochs-per-phase"),
    ({"max_epochs_per_phase": -3}, "max-epochs-per-phase"),
])
def test_phase_controller_rejects_bad_arguments(tmp_path, kwargs, flag):
    with pytest.raises(UserError, match=flag):
        PhaseController(make_scheduler("step"), tmp_path / "phases.csv", **kwargs)


@pytest.mark.parametrize("kwargs, flag", [
    ({"final_patience": 0}, "final-patience"),
    ({"final_patience": -1}, "final-patience"),
    ({"final_max_epochs": 0}, "final-max-epochs"),
    ({"final_max_epochs": -2}, "final-max-epochs"),
])
def test_phase_controller_rejects_bad_final_phase_limits(tmp_path, kwargs, flag):
    """The alpha = 0 phase's own budget must be >= 1 like the others' (None: twice theirs).

    Today 0 silently becomes the default (``final_patience or 2 * patience``) and a negative
    value ends the last phase after its first epoch.
    """
    with pytest.raises(UserError, match=flag):
        PhaseController(make_scheduler("step"), tmp_path / "phases.csv", **kwargs)


@pytest.mark.parametrize("kwargs, limits", [
    ({"patience": 2, "max_epochs_per_phase": 5}, ((2, 5), (4, 10))),  # final: twice
    ({"patience": 1, "max_epochs_per_phase": 2, "final_patience": 3, "final_max_epochs": 7},
     ((1, 2), (3, 7))),
])
def test_phase_controller_limits_of_the_final_phase(tmp_path, kwargs, limits):
    c = PhaseController(make_scheduler("step", step_size=0.5), tmp_path / "phases.csv", **kwargs)
    assert c.alpha == 0.5 and c.phase == 0 and not c.done
    assert c._limits() == limits[0]
    c.alpha = 0.0
    assert c._limits() == limits[1]


@pytest.mark.parametrize("lr, final_lr, expected", [(0.01, None, 0.01), (0.01, 0.003, 0.003)])
def test_phase_controller_final_lr(tmp_path, lr, final_lr, expected):
    c = PhaseController(make_scheduler("step"), tmp_path / "phases.csv", lr=lr, final_lr=final_lr)
    assert (c.lr, c.final_lr) == (lr, expected)


def _lrs(c: PhaseController, steps: range, batches: int = 4) -> list[float]:
    """The lr the controller sets for each training step of the current epoch."""
    from types import SimpleNamespace

    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=123.0)
    trainer = SimpleNamespace(optimizers=[opt], num_training_batches=batches, is_global_zero=True)
    c.on_train_epoch_start(trainer, None)
    out = []
    for i in steps:
        c.on_train_batch_start(trainer, None, None, i)
        out.append(opt.param_groups[0]["lr"])
    return out


def test_warmup_ramps_the_lr_over_the_first_steps_of_every_phase(tmp_path):
    c = PhaseController(make_scheduler("step", step_size=0.5), tmp_path / "phases.csv", lr=0.04,
                        final_lr=0.08, final_schedule="constant", warmup_steps=6)
    assert _lrs(c, range(4)) == pytest.approx([0.04 / 6, 0.08 / 6, 0.12 / 6, 0.16 / 6])  # epoch 0
    c.losses = [1.0]  # epoch 1: steps 4..7 of the phase, 6 and later at the full lr
    assert _lrs(c, range(4)) == pytest.approx([0.2 / 6, 0.04, 0.04, 0.04])
    c.alpha, c.losses = 0.0, []  # a new phase starts the ramp again, at its own lr
    assert _lrs(c, range(2)) == pytest.approx([0.08 / 6, 0.16 / 6])


def test_warmup_scales_the_cosine_of_the_final_phase(tmp_path):
    c = PhaseController(make_scheduler("step", step_size=1.0), tmp_path / "phases.csv", lr=0.1,
                        final_max_epochs=2, warmup_steps=8)
    assert c.alpha == 0.0
    c.losses = [1.0]  # second of two epochs: cosine at half way = 0.05; steps 4..7 of 8
    assert _lrs(c, range(4)) == pytest.approx([0.05 * 5 / 8, 0.05 * 6 / 8, 0.05 * 7 / 8, 0.05])


def test_no_warmup_leaves_the_lr_alone(tmp_path):
    c = PhaseController(make_scheduler("step", step_size=0.5), tmp_path / "phases.csv", lr=0.04)
    assert _lrs(c, range(3)) == [123.0] * 3


def test_negative_warmup_is_rejected(tmp_path):
    with pytest.raises(UserError, match="warmup-steps"):
        PhaseController(make_scheduler("step"), tmp_path / "phases.csv", warmup_steps=-1)


def test_the_onecycle_final_schedule_rises_then_anneals():
    from alphaprune.train.controller import final_lr_factor

    f = [final_lr_factor("onecycle", e, 30) for e in range(30)]
    assert f[0] == pytest.approx(1 / 25) and f[9] == pytest.approx(1.0)  # 9 rising epochs
    assert all(a < b for a, b in zip(f[:9], f[1:10]))
    assert all(a > b for a, b in zip(f[9:-1], f[10:])) and 0 < f[-1] < 0.01


def _final(tmp_path, total, history, **kw):
    c = PhaseController(make_scheduler("step", step_size=0.5), tmp_path / "phases.csv",
                        final_max_epochs=4, total_epochs=total, **kw)
    c.history, c.alpha = list(history), 0.0
    return c


def test_the_final_phase_may_take_what_the_others_left(tmp_path):
    c = _final(tmp_path, 10, [{"epochs": 2}, {"epochs": 1}, {"epochs": "1"}])  # "1": from a CSV
    assert c.final_epochs() == 6 and c._limits()[1] == 6
    assert _final(tmp_path, 10, [{"epochs": 9}]).final_epochs() == 4  # never below its own
    assert PhaseController(make_scheduler("step"), tmp_path / "p.csv",
                           final_max_epochs=4).final_epochs() == 4  # off by default


def test_the_final_phase_leaves_the_guard_epochs_for_a_retry(tmp_path):
    """While the guard may undo it, the α = 0 phase leaves a retry room: a phase at half the
    step (at most 2 epochs here) and α = 0 again (at most 4)."""
    kw = dict(total=30, history=[{"epochs": 3}], max_acc_drop=0.05, max_retries=2,
              max_epochs_per_phase=2)
    assert _final(tmp_path, **kw).final_epochs() == 30 - 3 - (2 + 4)
    c = _final(tmp_path, **kw)
    c.retries = 2  # the guard has no retry left: nothing to leave room for
    assert c.final_epochs() == 27
    c = _final(tmp_path, **{**kw, "total": 10})
    assert c.final_epochs() == 4  # nothing left over: never below its own limit
    kw.pop("max_acc_drop")
    assert _final(tmp_path, **kw).final_epochs() == 27  # no guard, no retry


def test_a_resume_with_a_larger_budget_does_not_stretch_the_final_phase(tmp_path):
    c = _final(tmp_path, 10, [{"epochs": 3}])
    assert c.final_epochs() == 7
    resumed = _final(tmp_path, 30, [])
    resumed.load_state_dict(c.state_dict())
    assert resumed.final_epochs() == 7  # fixed when the phase started, as checkpointed
    fresh = _final(tmp_path, 30, [{"epochs": 3}])
    state = {k: v for k, v in c.state_dict().items() if k != "final_limit"}
    fresh.load_state_dict(state)  # a checkpoint from before the option: set at the phase start
    assert fresh.final_epochs() == 27


def _ema_run(tmp_path, final_ema=2.0, batches=4):
    """A controller at alpha = 0 over a Linear + BatchNorm model, its trainer and module."""
    from types import SimpleNamespace

    import torch

    c = PhaseController(make_scheduler("step", step_size=1.0), tmp_path / "phases.csv",
                        final_max_epochs=5, final_ema=final_ema)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    module = SimpleNamespace(model=model, epoch_stats={}, device=torch.device("cpu"))
    trainer = SimpleNamespace(optimizers=[], num_training_batches=batches, should_stop=False,
                              is_global_zero=True)
    return c, trainer, module


def _step(c, trainer, module, value: float, loss: float = 1.0) -> None:
    """One 'optimiser step' that sets every float entry to ``value``, then the batch hook."""
    import torch

    with torch.no_grad():
        for v in module.model.state_dict().values():
            v.fill_(value) if v.is_floating_point() else v.add_(1)
    c.on_train_batch_end(trainer, module, {"loss": torch.tensor(loss)}, None, 0)


def test_final_ema_averages_the_alpha_0_phase_with_a_warm_up(tmp_path):
    import torch

    c, trainer, module = _ema_run(tmp_path, final_ema=0.5, batches=4)  # decay 1 - 1/2
    assert c.alpha == 0.0 and c.ema is None
    want = None
    for t, v in enumerate([1.0, 3.0, -2.0, 5.0, 0.5, 4.0, -1.0, 2.5, 6.0, 0.0, 3.0]):
        _step(c, trainer, module, v)
        # the first step copies; then (1 + n) / (10 + n) with n steps in the average, at most
        # 1/2 (from the eighth step on)
        d = min(0.5, (1 + t) / (10 + t)) if t else 0.0
        want = v if t == 0 else d * want + (1 - d) * v
    assert c.ema_steps == 11
    for key, shape in (("0.weight", (2, 2)), ("1.running_var", (2,))):
        assert torch.allclose(c.ema[key], torch.full(shape, want)), key
    # an integer buffer is not averaged: the count of batches the BatchNorm saw is the live one
    assert int(c.ema["1.num_batches_tracked"]) == int(module.model[1].num_batches_tracked) == 11


def test_final_ema_is_what_validation_scores_and_what_the_phase_keeps(tmp_path):
    import torch

    c, trainer, module = _ema_run(tmp_path)
    _step(c, trainer, module, 1.0)
    _step(c, trainer, module, 3.0)  # ema = 2/11 * 1 + 9/11 * 3; live 3
    avg = 29 / 11
    w = module.model[0].weight
    c.on_validation_epoch_start(trainer, module)
    assert torch.allclose(w, torch.full_like(w, avg))  # validation sees the average
    c.on_validation_epoch_end(trainer, module)
    assert torch.allclose(w, torch.full_like(w, 3.0))  # training goes on from the live weights
    module.epoch_stats = {"ship_val_loss": 0.5, "val_loss": 0.5, "val_acc": 0.9,
                          "ship_val_acc": 0.9, "train_loss": 0.4}
    c.monitor = "ship_val_loss"
    c.on_train_epoch_end(trainer, module)
    assert torch.allclose(c.best_state["0.weight"], torch.full((2, 2), avg))  # the average
    c.best_state["0.weight"].fill_(7.0)  # a copy: later averaging does not change it
    assert torch.allclose(c.ema["0.weight"], torch.full((2, 2), avg))


def test_final_ema_skips_non_finite_steps_and_waits_for_alpha_0(tmp_path):
    import torch

    c, trainer, module = _ema_run(tmp_path)
    c.alpha = 0.5  # alpha > 0: nothing is averaged and validation sees the live weights
    _step(c, trainer, module, 1.0)
    c.on_validation_epoch_start(trainer, module)
    assert c.ema is None and c._live is None
    c.alpha = 0.0
    _step(c, trainer, module, 2.0)
    _step(c, trainer, module, float("nan"), loss=float("nan"))
    assert c.ema_steps == 1 and torch.isfinite(c.ema["0.weight"]).all()


def test_final_ema_is_checkpointed_and_off_by_default(tmp_path):
    c, trainer, module = _ema_run(tmp_path)
    _step(c, trainer, module, 1.0)
    _step(c, trainer, module, 3.0)
    resumed, _, _ = _ema_run(tmp_path)
    resumed.load_state_dict(c.state_dict())
    assert resumed.ema_steps == 2 and resumed.ema["0.weight"].tolist() == c.ema["0.weight"].tolist()
    old = {k: v for k, v in c.state_dict().items() if k not in ("ema", "ema_steps")}
    resumed.load_state_dict(old)  # a checkpoint from before --final-ema
    assert resumed.ema is None and resumed.ema_steps == 0
    plain, trainer, module = _ema_run(tmp_path, final_ema=0.0)
    _step(plain, trainer, module, 1.0)
    assert plain.ema is None


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_final_ema_rejects_a_bad_time_constant(tmp_path, bad):
    with pytest.raises(UserError, match="final-ema"):
        PhaseController(make_scheduler("step"), tmp_path / "phases.csv", final_ema=bad)


def test_final_ema_under_one_step_follows_the_live_weights(tmp_path):
    """0.1 epochs of 4 steps is under one step: the decay is 0, never negative (which would
    extrapolate away from the weights and blow up)."""
    import torch

    c, trainer, module = _ema_run(tmp_path, final_ema=0.1, batches=4)
    for v in (1.0, 3.0, -2.0, 5.0):
        _step(c, trainer, module, v)
        assert torch.allclose(c.ema["0.weight"], torch.full((2, 2), v))



def test_final_ema_keeps_the_live_weights_best_epoch_by_their_own_loss(tmp_path):
    """While validation scores the average, ``live_state`` holds the weights being trained
    for the module to score too; the phase keeps those of their own best epoch beside the
    average's (by their own loss), checkpointed."""
    import torch

    c, trainer, module = _ema_run(tmp_path)
    w = module.model[0].weight
    assert c.live_state() is None  # nothing averaged yet: nothing to score beside it
    stats = {"ship_val_loss": 0.5, "val_loss": 0.5, "val_acc": 0.9, "ship_val_acc": 0.9,
             "train_loss": 0.4}
    c.monitor = "ship_val_loss"
    for value, live_loss in ((3.0, 0.7), (5.0, 0.9), (4.0, 0.6)):
        _step(c, trainer, module, value)
        c.on_validation_epoch_start(trainer, module)
        assert torch.allclose(c.live_state()["0.weight"], torch.full((2, 2), value))
        assert torch.allclose(w, c.ema["0.weight"])  # validation scores the average
        c.on_validation_epoch_end(trainer, module)
        assert c.live_state() is None and torch.allclose(w, torch.full_like(w, value))
        module.epoch_stats = stats
        module.live_stats = {"live_val_loss": live_loss, "live_val_acc": 1 - live_loss}
        c.on_train_epoch_end(trainer, module)
        if value == 5.0:  # a worse live loss keeps the first epoch's weights
            assert c.live_best["epoch"] == 1 and float(c.live_best_state["0.weight"][0, 0]) == 3.0
    assert c.live_best == {"val_loss": 0.6, "val_acc": pytest.approx(0.4), "epoch": 3}
    assert torch.allclose(c.live_best_state["0.weight"], torch.full((2, 2), 4.0))
    resumed, _, _ = _ema_run(tmp_path)
    resumed.load_state_dict(c.state_dict())
    assert resumed.live_best == c.live_best and not resumed.live_untracked
    assert resumed.live_best_state["0.weight"].tolist() == c.live_best_state["0.weight"].tolist()
    # a checkpoint from before the live weights were tracked, taken mid-phase: the epochs
    # already done went unscored, so the phase reports no live best rather than a partial one
    old = {k: v for k, v in c.state_dict().items()
           if k not in ("live_best", "live_best_state", "live_untracked")}
    older, trainer, module = _ema_run(tmp_path)
    older.load_state_dict(old)
    assert older.live_untracked and older.live_best_state is None
    _step(older, trainer, module, 1.0)
    older.on_validation_epoch_start(trainer, module)
    older.on_validation_epoch_end(trainer, module)
    module.epoch_stats, older.monitor = stats, "ship_val_loss"
    module.live_stats = {"live_val_loss": 0.1, "live_val_acc": 0.9}
    older.on_train_epoch_end(trainer, module)
    assert older.live_best_state is None


def test_final_ema_skips_a_step_any_rank_found_non_finite(tmp_path, monkeypatch):
    """One rank's non-finite loss makes every rank's step non-finite (summed gradients): the
    skip is decided across the ranks, so their averages start and stay together."""
    import torch

    import alphaprune.train.controller as controller_mod

    asked = []
    monkeypatch.setattr(controller_mod, "any_rank",
                        lambda flag, device: asked.append(flag) or True)  # another rank's NaN
    c, trainer, module = _ema_run(tmp_path)
    _step(c, trainer, module, 1.0)  # a finite loss here
    assert asked == [False] and c.ema is None  # skipped all the same
    monkeypatch.setattr(controller_mod, "any_rank", lambda flag, device: flag)
    _step(c, trainer, module, 1.0)
    assert c.ema is not None and torch.allclose(c.ema["0.weight"], torch.ones(2, 2))
