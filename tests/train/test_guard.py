"""Guarded alpha steps and collapse detection of :class:`PhaseController`, driven directly
with a fake trainer and module (no Lightning loop)."""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from alphaprune.schedules import make_scheduler
from alphaprune.train.controller import PhaseController


class Tiny(nn.Module):
    """A model with ``set_alpha``; its one weight is a tag that says which epoch produced it."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))
        self.alpha = 1.0

    def set_alpha(self, alpha: float) -> Tiny:
        self.alpha = float(alpha)
        return self

    @property
    def tag(self) -> float:
        return float(self.w[0])


class Harness:
    """A controller with a fake trainer and module; ``epoch`` plays one training epoch."""

    def __init__(self, path: Path, initial_acc=0.9, max_acc_drop=0.1, max_retries=2,
                 num_classes=10, monitor="val_loss", patience=1, max_epochs=1, final_max_epochs=1,
                 final_patience=None, step_size=0.5, scheduler="step"):
        self.kw = dict(patience=patience, max_epochs_per_phase=max_epochs,
                       final_patience=final_patience, final_max_epochs=final_max_epochs,
                       lr=0.01, final_lr=0.002,
                       num_classes=num_classes, monitor=monitor, max_acc_drop=max_acc_drop,
                       max_retries=max_retries, initial_acc=initial_acc)
        self.sched = dict(name=scheduler, step_size=step_size, factor=0.5, patience=patience)
        self.path = Path(path)
        self.ctrl = PhaseController(make_scheduler(**self.sched), self.path, **self.kw)
        self.model = Tiny()
        self.trainer = SimpleNamespace(should_stop=False, is_global_zero=True,
                                       optimizers=[torch.optim.SGD(self.model.parameters(), lr=1.0)])
        self.module = SimpleNamespace(model=self.model, trainer=self.trainer, epoch_stats={})
        self.n = 0  # epochs played; epoch i leaves the tag i + 1 in the weights
        self.ctrl.on_fit_start(self.trainer, self.module)

    def epoch(self, loss: float, acc: float, ship_acc: float | None = None) -> None:
        assert not self.trainer.should_stop
        self.n += 1
        with torch.no_grad():
            self.model.w.fill_(float(self.n))
        assert self.model.alpha == self.ctrl.alpha
        stats = {"val_loss": loss, "val_acc": acc, "ship_val_loss": loss,
                 "ship_val_acc": acc if ship_acc is None else ship_acc}
        self.module.epoch_stats = stats
        self.ctrl.on_train_epoch_end(self.trainer, self.module)

    def play(self, accs) -> list[float]:
        """One-epoch phases with these accuracies; the alpha each was played at."""
        alphas = []
        for acc in accs:
            alphas.append(self.ctrl.alpha)
            self.epoch(1.0, acc)
        return alphas

    @property
    def lr(self) -> float:
        return self.trainer.optimizers[0].param_groups[0]["lr"]

    def rows(self) -> list[dict]:
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def resumed(self, path: Path) -> Harness:
        """A fresh harness whose controller and model are loaded from this one's state."""
        other = Harness.__new__(Harness)
        other.kw, other.sched, other.path = self.kw, self.sched, Path(path)
        other.ctrl = PhaseController(make_scheduler(**self.sched), other.path, **self.kw)
        other.ctrl.load_state_dict(copy.deepcopy(self.ctrl.state_dict()))
        other.model = Tiny()
        other.model.load_state_dict(copy.deepcopy(self.model.state_dict()))
        other.model.set_alpha(self.model.alpha)
        other.trainer = SimpleNamespace(should_stop=False, is_global_zero=True, optimizers=[
            torch.optim.SGD(other.model.parameters(), lr=self.lr)])
        other.module = SimpleNamespace(model=other.model, trainer=other.trainer, epoch_stats={})
        other.n = self.n
        other.ctrl.on_fit_start(other.trainer, other.module)
        return other


# --------------------------------------------------------------------------- guarded steps


def test_a_failed_step_is_undone_halved_and_the_target_retried(tmp_path):
    h = Harness(tmp_path / "phases.csv", initial_acc=0.9, max_acc_drop=0.1, max_retries=2)
    assert h.ctrl.alpha == 0.5

    h.epoch(1.0, 0.5)  # 0.4 below the pretrained 0.9: undone
    assert h.model.tag == 0.0  # back to the weights the run started with
    assert h.ctrl.alpha == h.model.alpha == 0.75  # halfway between 1 and 0.5
    assert h.lr == 0.01

    h.epoch(1.0, 0.85)  # accepted (drop 0.05)
    assert h.model.tag == 2.0
    assert h.ctrl.alpha == 0.5  # the original target again

    h.epoch(1.0, 0.6)  # 0.25 below 0.85: undone, back to phase 1's best
    assert h.model.tag == 2.0
    assert h.ctrl.alpha == 0.625

    h.epoch(1.0, 0.5)  # undone again (retry 2 of 2)
    assert h.model.tag == 2.0
    assert h.ctrl.alpha == 0.6875

    h.epoch(1.0, 0.3)  # would be undone, but the retries are used up: accepted
    assert h.model.tag == 5.0
    assert h.ctrl.alpha == 0.5

    h.epoch(1.0, 0.35)  # accepted, the scheduler steps on
    assert h.ctrl.alpha == 0.0 and h.lr == 0.002

    h.epoch(1.0, 0.3)  # the final phase (drop 0.05)
    assert h.ctrl.done and h.trainer.should_stop
    assert h.model.tag == 7.0

    rows = h.rows()
    assert [float(r["alpha"]) for r in rows] == [0.5, 0.75, 0.5, 0.625, 0.6875, 0.5, 0.0]
    assert [r["stop_reason"] for r in rows] == ["undone", "max_epochs", "undone", "undone",
                                               "max_epochs", "max_epochs", "max_epochs"]
    assert [r["detail"] for r in rows] == ["max_epochs"] * 7
    assert [int(r["phase"]) for r in rows] == list(range(7))
    assert [float(r["best_val_acc"]) for r in rows] == [0.5, 0.85, 0.6, 0.5, 0.3, 0.35, 0.3]
    assert h.ctrl.history == [{**r, "phase": int(r["phase"]), "alpha": float(r["alpha"]),
                               "epochs": int(r["epochs"]), "best_epoch": int(r["best_epoch"]),
                               "best_val_loss": float(r["best_val_loss"]),
                               "best_val_acc": float(r["best_val_acc"]),
                               "best_ship_val_acc": float(r["best_ship_val_acc"])} for r in rows]


@pytest.mark.parametrize("initial_acc, drop, accs, reasons, alphas", [
    # boundary: a drop of exactly max_acc_drop is accepted, a little more is not
    (0.75, 0.25, [0.5, 0.5], ["max_epochs"] * 2, [0.5, 0.0]),
    (0.75, 0.25, [0.49, 0.5, 0.5, 0.5], ["undone", "max_epochs", "max_epochs", "max_epochs"],
     [0.5, 0.75, 0.5, 0.0]),
    # the first phase has no reference without initial_acc
    (None, 0.1, [0.2, 0.2], ["max_epochs"] * 2, [0.5, 0.0]),
    (None, 0.1, [0.9, 0.2, 0.9, 0.9], ["max_epochs", "undone", "max_epochs", "max_epochs"],
     [0.5, 0.0, 0.25, 0.0]),
    # the alpha = 0 phase is guarded as well
    (0.5, 0.1, [0.5, 0.1, 0.5, 0.5], ["max_epochs", "undone", "max_epochs", "max_epochs"],
     [0.5, 0.0, 0.25, 0.0]),
    # improvements are never undone
    (0.5, 0.0, [0.6, 0.7], ["max_epochs"] * 2, [0.5, 0.0]),
])
def test_guard_table(tmp_path, initial_acc, drop, accs, reasons, alphas):
    h = Harness(tmp_path / "phases.csv", initial_acc=initial_acc, max_acc_drop=drop, max_retries=3)
    assert h.play(accs) == alphas
    assert h.ctrl.done and h.trainer.should_stop
    rows = h.rows()
    assert [r["stop_reason"] for r in rows] == reasons
    assert [float(r["alpha"]) for r in rows] == alphas


@pytest.mark.parametrize("max_retries, n_undone", [(0, 0), (1, 1), (3, 3)])
def test_max_retries_consecutive_undos_then_accept(tmp_path, max_retries, n_undone):
    h = Harness(tmp_path / "phases.csv", initial_acc=0.9, max_acc_drop=0.1,
                max_retries=max_retries)
    alphas = h.play([0.1] * (n_undone + 1))
    want, prev, a = [], 1.0, 0.5
    for _ in range(n_undone + 1):
        want.append(a)
        a = (prev + a) / 2
    assert alphas == want
    rows = h.rows()
    assert [r["stop_reason"] for r in rows] == ["undone"] * n_undone + ["collapsed"]
    assert h.ctrl.retries == 0
    assert h.ctrl.alpha == (0.5 if n_undone else 0.0)
    assert h.model.tag == float(n_undone + 1)
    # the accepted (collapsed) phase is the new reference: the next phase is not undone
    h.epoch(1.0, 0.1)
    assert h.rows()[-1]["stop_reason"] == "collapsed"


def test_without_max_acc_drop_nothing_is_undone(tmp_path):
    h = Harness(tmp_path / "phases.csv", initial_acc=0.99, max_acc_drop=None)
    assert h.play([0.5, 0.2]) == [0.5, 0.0]
    assert h.ctrl.done
    assert [r["stop_reason"] for r in h.rows()] == ["max_epochs", "max_epochs"]
    assert h.ctrl.prev_state is None  # no copy kept when unguarded


def test_undo_restores_the_best_epoch_of_the_last_accepted_phase(tmp_path):
    """Multi-epoch phases: the accepted phase's best epoch (lowest loss) is what comes back,
    and its accuracy (at that epoch) is the reference."""
    h = Harness(tmp_path / "phases.csv", initial_acc=None, max_acc_drop=0.1, patience=5,
                max_epochs=3, final_max_epochs=3)
    h.epoch(2.0, 0.9)
    h.epoch(1.0, 0.7)   # best of phase 0 (tag 2): reference 0.7, not 0.9
    h.epoch(1.5, 0.95)
    assert h.model.tag == 2.0 and h.ctrl.alpha == 0.0
    h.epoch(1.0, 0.65)  # within 0.1 of 0.7 ...
    h.epoch(0.5, 0.55)  # ... but the best epoch's accuracy is 0.55: undone
    h.epoch(0.9, 0.9)
    assert h.model.tag == 2.0 and h.ctrl.alpha == 0.25
    row = h.rows()[-1]
    assert row["stop_reason"] == "undone" and int(row["best_epoch"]) == 2
    assert float(row["best_val_acc"]) == 0.55


@pytest.mark.parametrize("monitor, acc, ship_acc, undone", [
    ("val_loss", 0.5, 0.9, True),
    ("val_loss", 0.9, 0.5, False),
    ("ship_val_loss", 0.5, 0.9, False),
    ("ship_val_loss", 0.9, 0.5, True),
])
def test_guard_follows_the_monitored_network(tmp_path, monitor, acc, ship_acc, undone):
    h = Harness(tmp_path / "phases.csv", initial_acc=0.9, max_acc_drop=0.1, monitor=monitor)
    h.epoch(1.0, acc, ship_acc)
    assert (h.rows()[0]["stop_reason"] == "undone") is undone
    assert h.ctrl.alpha == (0.75 if undone else 0.0)


def test_guard_with_the_plateau_scheduler_retries_properly(tmp_path):
    """With a per-epoch scheduler the retry at the halved alpha must get a real phase (its
    own early stopping), and once it is accepted the failed target is tried again.

    Today the retry phase ends after its first epoch ('plateau': the scheduler's alpha is not
    the halved one) and the run then jumps to the scheduler's already-reduced alpha (0.25),
    a larger step than the one that failed (0.5)."""
    h = Harness(tmp_path / "phases.csv", initial_acc=0.9, max_acc_drop=0.1, patience=1,
                max_epochs=3, scheduler="plateau")
    assert h.ctrl.alpha == 0.5
    h.epoch(1.0, 0.5)
    h.epoch(1.1, 0.5)  # the plateau ends the phase; 0.4 below 0.9: undone
    assert h.rows()[0]["stop_reason"] == "undone" and h.ctrl.alpha == 0.75
    for loss in (0.9, 0.8, 0.7):  # the retry keeps improving: it runs to max_epochs
        assert h.ctrl.alpha == 0.75
        h.epoch(loss, 0.88)
    row = h.rows()[1]
    assert (float(row["alpha"]), int(row["epochs"]), row["stop_reason"]) == \
        (0.75, 3, "max_epochs")
    assert h.ctrl.alpha == 0.5  # the target of the halved step, again


# --------------------------------------------------------------------------- resume


def _script():
    # (loss, acc) per epoch; 2-epoch phases (patience 1: the second epoch does not improve)
    return [(1.0, 0.85), (1.2, 0.8),      # phase 0, alpha 0.5: accepted
            (1.0, 0.5), (1.1, 0.5),       # phase 1, alpha 0: undone -> 0.25
            (1.0, 0.4), (1.1, 0.4),       # phase 2, alpha 0.25: undone -> 0.375
            (1.0, 0.8), (1.1, 0.8),       # phase 3, alpha 0.375: accepted -> 0
            (0.9, 0.75), (0.95, 0.7), (1.0, 0.7), (1.1, 0.7)]  # phase 4, alpha 0: final


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7, 9])
def test_state_dict_round_trip_gives_identical_decisions(tmp_path, cut):
    script = _script()
    ref = Harness(tmp_path / "ref.csv", initial_acc=0.9, max_acc_drop=0.1, max_retries=2,
                  max_epochs=2, final_patience=1, final_max_epochs=4)
    for loss, acc in script:
        if ref.trainer.should_stop:
            break
        ref.epoch(loss, acc)
    assert ref.ctrl.done
    assert [r["stop_reason"] for r in ref.rows()] == ["patience", "undone", "undone", "patience",
                                                     "patience"]

    a = Harness(tmp_path / "a.csv", initial_acc=0.9, max_acc_drop=0.1, max_retries=2,
                max_epochs=2, final_patience=1, final_max_epochs=4)
    for loss, acc in script[:cut]:
        a.epoch(loss, acc)
    b = a.resumed(tmp_path / "b.csv")
    assert b.rows() == a.rows() if a.ctrl.history else not b.path.exists()
    trace = {"a": [], "b": []}
    for name, h in (("a", a), ("b", b)):
        for loss, acc in script[cut:]:
            if h.trainer.should_stop:
                break
            h.epoch(loss, acc)
            trace[name].append((h.ctrl.alpha, h.ctrl.phase, h.ctrl.retries, h.model.tag, h.lr))
        assert h.ctrl.done
    assert trace["a"] == trace["b"]
    assert a.rows() == b.rows() == ref.rows()
    assert a.ctrl.history == b.ctrl.history
    assert a.model.tag == b.model.tag == ref.model.tag


# --------------------------------------------------------------------------- collapse


@pytest.mark.parametrize("num_classes, acc, collapsed", [
    (10, 0.05, True), (10, 0.1, True), (10, 0.15, True), (10, 0.16, False), (10, 0.9, False),
    (4, 0.375, True), (4, 0.38, False), (2, 0.75, True), (2, 0.76, False),
])
@pytest.mark.parametrize("guarded", [False, True])
def test_collapse_is_reported(tmp_path, num_classes, acc, collapsed, guarded):
    h = Harness(tmp_path / "phases.csv", initial_acc=None, num_classes=num_classes,
                max_acc_drop=0.5 if guarded else None)
    h.epoch(1.0, acc)  # alpha 0.5
    h.epoch(1.0, acc)  # alpha 0: the final phase can collapse too
    assert h.ctrl.done  # a collapse is reported, not a stop
    rows = h.rows()
    want = "collapsed" if collapsed else "max_epochs"
    assert [r["stop_reason"] for r in rows] == [want, want]
    assert [r["detail"] for r in rows] == ["max_epochs", "max_epochs"]


def test_collapse_uses_the_best_epoch(tmp_path):
    h = Harness(tmp_path / "phases.csv", initial_acc=None, max_acc_drop=None, patience=1,
                max_epochs=3)
    h.epoch(1.0, 0.05)
    h.epoch(1.5, 0.9)  # higher accuracy, but not the best (lowest-loss) epoch
    rows = h.rows()
    assert rows[0]["stop_reason"] == "collapsed" and rows[0]["detail"] == "patience"


@pytest.mark.parametrize("schedule", ["cosine", "constant", "onecycle"])
def test_final_phase_lr_schedule(tmp_path, schedule):
    import math

    h = Harness(tmp_path / "phases.csv", max_acc_drop=None, final_max_epochs=4, final_patience=10)
    h.ctrl.final_schedule = schedule
    h.play([0.8])              # alpha 0.5 -> next phase is alpha 0
    assert h.ctrl.alpha == 0.0
    lrs = []
    for e in range(4):
        h.ctrl.on_train_epoch_start(h.trainer, h.module)
        lrs.append(h.lr)
        h.epoch(1.0 - 0.1 * e, 0.8)  # improving: only max epochs ends the phase
    want = {"cosine": [0.002 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)],
            "constant": [0.002] * 4,
            # a rise over round(0.3 * 4) = 1 epoch from 1/25, then a cosine over the other 3
            "onecycle": [0.002 / 25] + [0.002 * 0.5 * (1 + math.cos(math.pi * e / 3))
                                        for e in range(3)]}[schedule]
    assert lrs == pytest.approx(want)
    assert h.trainer.should_stop


def test_unknown_final_schedule_is_a_user_error(tmp_path):
    from alphaprune.errors import UserError

    with pytest.raises(UserError):
        PhaseController(make_scheduler("step"), tmp_path / "p.csv", final_schedule="linear")


def test_onecycle_patience_counts_from_the_top_of_the_rise(tmp_path):
    """The loss worsens while a one-cycle lr climbs: patience must not end the alpha = 0
    phase before the annealing part, however early the best epoch was."""
    h = Harness(tmp_path / "phases.csv", max_acc_drop=None, final_max_epochs=10, final_patience=2)
    h.ctrl.final_schedule = "onecycle"
    h.play([0.8])              # alpha 0.5 -> alpha 0
    for e in range(3):         # the rise (round(0.3 * 10) = 3 epochs): ever worse
        h.epoch(1.0 + e, 0.8)
        assert not h.trainer.should_stop, e
    for _ in range(2):         # the first epoch after the rise, then one without improving
        h.epoch(5.0, 0.8)
        assert not h.trainer.should_stop
    h.epoch(5.0, 0.8)          # the second without improving: patience 2 ends the phase
    assert h.trainer.should_stop and h.rows()[-1]["detail"] == "patience"
