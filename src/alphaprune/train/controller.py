"""The phase controller: per-alpha early stopping, best-weight restore, alpha steps.

Its decision logic is the pure :func:`phase_decision`; the Lightning callback
:class:`PhaseController` applies it and keeps its counters in ``state_dict()`` for resume.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning.pytorch as pl
import torch

from alphaprune.errors import UserError
from alphaprune.parallel import any_rank
from alphaprune.schedules.base import AlphaScheduler
from alphaprune.train.callbacks import append_csv_row

__all__ = ["phase_decision", "PhaseController", "COLLAPSE_FACTOR", "FINAL_SCHEDULES",
           "final_lr_factor"]

FINAL_SCHEDULES = ("cosine", "constant", "onecycle")
ONECYCLE_RISE, ONECYCLE_START = 0.3, 1 / 25  # torch's OneCycleLR defaults (pct_start, div_factor)

# A phase whose best validation accuracy is below this many times chance has collapsed.
COLLAPSE_FACTOR = 1.5


def onecycle_rise(epochs: int) -> int:
    """Epochs of a one-cycle phase of ``epochs`` during which the lr climbs."""
    return min(epochs - 1, max(1, round(ONECYCLE_RISE * epochs))) if epochs > 1 else 0


def final_lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """The share of ``--final-lr`` at ``epoch`` (0-based) of an alpha = 0 phase of ``epochs``.

    ``cosine`` anneals from 1 towards 0; ``constant`` stays at 1; ``onecycle`` (per epoch,
    as the ``kd`` peer's one-cycle runs per step) rises linearly from 1/25 over the first 30%
    of the phase, then anneals by a cosine: a hot phase that can leave the basin the
    inherited weights sit in."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    if schedule == "onecycle":
        rise = onecycle_rise(epochs)
        if epoch < rise:
            return ONECYCLE_START + (1.0 - ONECYCLE_START) * epoch / rise
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - rise) / max(1, epochs - rise)))
    return 1.0


def phase_decision(losses: list[float], patience: int, min_delta: float = 0.0,
                   max_epochs: int = 30) -> tuple[bool, str]:
    """Whether the phase that produced these validation losses should stop, and why.

    A loss improves when it is below the best so far by more than ``min_delta``; the phase
    stops after ``patience`` epochs without improvement (``"patience"``), after
    ``max_epochs`` epochs (``"max_epochs"``), or at a non-finite loss (``"diverged"``).
    """
    best, wait = math.inf, 0
    for loss in losses:
        if not math.isfinite(loss):
            return True, "diverged"
        if loss < best - min_delta:
            best, wait = loss, 0
        else:
            wait += 1
    if losses and wait >= patience:
        return True, "patience"
    if len(losses) >= max_epochs:
        return True, "max_epochs"
    return False, ""


class PhaseController(pl.Callback):
    """Drives alpha: trains each phase to early stopping, restores its best weights, steps alpha.

    Reads ``pl_module.epoch_stats`` (``val_loss``, ``val_acc``, ``ship_val_acc``) after each
    epoch, writes one row per finished phase to ``phases_csv``, and stops the trainer after
    the alpha = 0 phase.

    Args:
        scheduler: the alpha-scheduler.
        patience, min_delta, max_epochs_per_phase: early stopping within a phase (alpha > 0).
        final_patience, final_max_epochs, final_lr: the same for the alpha = 0 phase, which
            gets its own budget and learning rate.
        lr: learning rate of the alpha > 0 phases.
        num_classes: to detect a collapse to chance accuracy.
        monitor: ``val_loss`` (the network at the current alpha) or ``ship_val_loss`` (all
            branches, what ships); early stopping and best weights follow it.
        final_schedule: ``cosine`` anneals the alpha = 0 phase's lr from ``final_lr`` towards
            0 over ``final_max_epochs`` (per epoch), like the fine-tuning it competes with;
            ``constant`` keeps it; ``onecycle`` rises to it, then anneals
            (:func:`final_lr_factor`).
        total_epochs: when given, the alpha = 0 phase may run until the run has trained this
            many epochs in all, if that is more than ``final_max_epochs``: it takes the epochs
            the alpha > 0 phases left when they stopped early (its cosine or one-cycle lr
            spans the longer phase).
        warmup_steps: the first this many optimiser steps of every phase ramp the lr up
            linearly to the phase's lr: each new alpha hands more work to branches that are
            not yet trained for it, and a full lr on their first large gradients can wreck
            them (measured: BENCHMARKS.md section 6). 0 disables it.
        max_acc_drop: guarded alpha steps: a phase whose best accuracy (of the monitored
            network) ends more than this below the previous phase's (or, for the first
            phase, ``initial_acc``) is undone (weights restored) and retried with half the
            step, at most ``max_retries`` times in a row. None disables the guard.
    """

    def __init__(self, scheduler: AlphaScheduler, phases_csv: Path, patience: int = 3,
                 min_delta: float = 0.0, max_epochs_per_phase: int = 30,
                 final_patience: int | None = None, final_max_epochs: int | None = None,
                 lr: float = 0.01, final_lr: float | None = None, num_classes: int = 10,
                 monitor: str = "val_loss", max_acc_drop: float | None = None,
                 max_retries: int = 3, initial_acc: float | None = None,
                 final_schedule: str = "cosine", warmup_steps: int = 0,
                 total_epochs: int | None = None, final_ema: float = 0.0):
        if patience < 1:
            raise UserError(f"--patience must be >= 1, got {patience}")
        if min_delta < 0:
            raise UserError(f"--min-delta must be >= 0, got {min_delta}")
        if max_epochs_per_phase < 1:
            raise UserError(f"--max-epochs-per-phase must be >= 1, got {max_epochs_per_phase}")
        self.scheduler = scheduler
        self.phases_csv = Path(phases_csv)
        self.patience, self.min_delta, self.max_epochs = patience, min_delta, max_epochs_per_phase
        for name, v in (("final-patience", final_patience), ("final-max-epochs", final_max_epochs)):
            if v is not None and v < 1:
                raise UserError(f"--{name} must be >= 1, got {v}")
        self.final_patience = final_patience if final_patience is not None else 2 * patience
        self.final_max_epochs = (final_max_epochs if final_max_epochs is not None
                                 else 2 * max_epochs_per_phase)
        self.lr, self.final_lr = lr, final_lr if final_lr is not None else lr
        self.chance = 1.0 / num_classes
        self.monitor = monitor
        if final_schedule not in FINAL_SCHEDULES:
            raise UserError(f"unknown --final-schedule '{final_schedule}': use "
                            f"{', '.join(FINAL_SCHEDULES)}")
        self.final_schedule = final_schedule
        if warmup_steps < 0:
            raise UserError(f"--warmup-steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        self.total_epochs = total_epochs
        if not (final_ema >= 0 and math.isfinite(final_ema)):
            raise UserError(f"--final-ema must be a number of epochs >= 0, got {final_ema}")
        self.final_ema = final_ema
        self.acc_key = "ship_val_acc" if monitor == "ship_val_loss" else "val_acc"
        self.max_acc_drop, self.max_retries = max_acc_drop, max_retries
        # state (checkpointed)
        self.prev_acc = initial_acc   # best accuracy of the last accepted phase
        self.prev_alpha = scheduler.alpha0
        self.prev_state: dict | None = None
        self.retries = 0
        self.alpha = scheduler.start()
        # the scheduler as of the last accepted phase: an undone phase rewinds it
        self.sched_state = copy.deepcopy(scheduler.state_dict())
        self.phase = 0
        self.losses: list[float] = []
        self.best: dict = {}
        self.best_state: dict | None = None
        self.history: list[dict] = []
        self.done = False
        self.final_limit: int | None = None   # set when the alpha = 0 phase starts
        self.ema: dict | None = None           # the alpha = 0 phase's average (final_ema)
        self.ema_steps = 0
        self._live: dict | None = None         # the live weights while validation sees the average
        # the live weights' best epoch of the averaged phase (what --final-ema 0 would have
        # kept), scored beside the average so a run shows what the average gave
        self.live_best: dict = {}
        self.live_best_state: dict | None = None
        # resumed mid-phase from a checkpoint that did not track them: a best of the later
        # epochs alone would pass for the phase's, so the phase reports none
        self.live_untracked = False
        self._writer = True

    # -- helpers -----------------------------------------------------------------------
    def final_epochs(self) -> int:
        """The alpha = 0 phase's epoch limit: ``final_max_epochs``, or with ``total_epochs``
        what the earlier phases left of it if that is more. Fixed when the phase starts and
        checkpointed: a resume with a larger budget does not stretch a phase under way.
        Under ``max_acc_drop``, while the guard may still undo it, the phase leaves one retry
        (a phase at half the step, then α = 0 again) its full limits, so an undone α = 0
        phase does not end the run out of budget; an undone phase's limit is worked out
        again when the next α = 0 phase starts."""
        if self.total_epochs is None:
            return self.final_max_epochs
        if self.final_limit is None:
            used = sum(int(h["epochs"]) for h in self.history)
            guarded = self.max_acc_drop is not None and self.retries < self.max_retries
            reserve = self.max_epochs + self.final_max_epochs if guarded else 0
            self.final_limit = max(self.final_max_epochs, self.total_epochs - used - reserve)
        return self.final_limit

    def _limits(self) -> tuple[int, int]:
        if self.alpha <= 0.0:
            return self.final_patience, self.final_epochs()
        return self.patience, self.max_epochs

    def patience_left(self) -> int:
        """Epochs without improvement the current phase may still take."""
        patience, _ = self._limits()
        best, wait = math.inf, 0
        for loss in self.losses:
            if loss < best - self.min_delta:
                best, wait = loss, 0
            else:
                wait += 1
        return max(0, patience - wait)

    def _base_lr(self) -> float:
        """The lr of the current epoch of the current phase (before warm-up)."""
        if self.alpha > 0.0:
            return self.lr
        return self.final_lr * final_lr_factor(self.final_schedule, len(self.losses),
                                               self.final_epochs())

    @staticmethod
    def _set_lr(trainer, lr: float) -> None:
        for opt in trainer.optimizers:
            for g in opt.param_groups:
                g["lr"] = lr

    def _apply(self, pl_module) -> None:
        pl_module.model.set_alpha(self.alpha)
        self._set_lr(pl_module.trainer, self._base_lr())

    # -- hooks -------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module):
        self._writer = trainer.is_global_zero  # rank 0 alone writes the phase table
        # the phase table is rebuilt from the checkpointed history: a crash between writing a
        # row and saving the checkpoint cannot duplicate or lose a phase on resume
        if self._writer:
            if self.phases_csv.exists():
                self.phases_csv.unlink()
            for row in self.history:
                append_csv_row(self.phases_csv, row)
        if not self.done:
            pl_module.model.set_alpha(self.alpha)
        if not self.losses:  # fresh phase (a resumed mid-phase run keeps its optimiser lr)
            self._apply(pl_module)
        if self.max_acc_drop is not None and self.prev_state is None:
            self.prev_state = copy.deepcopy(pl_module.model.state_dict())  # to undo phase 0

    def on_train_start(self, trainer, pl_module):
        if self.done:  # resumed from the last epoch's checkpoint: no epoch is left to train
            trainer.should_stop = True

    def on_train_epoch_start(self, trainer, pl_module):
        if self.alpha <= 0.0 and self.final_schedule != "constant" and not self.done:
            self._set_lr(trainer, self._base_lr())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.done or not self.warmup_steps:
            return
        # steps into the phase follow from the epochs it has finished: nothing extra to
        # checkpoint, and a resumed run warms up exactly as an uninterrupted one
        step = len(self.losses) * trainer.num_training_batches + batch_idx
        if step <= self.warmup_steps:
            self._set_lr(trainer, self._base_lr() * min(1.0, (step + 1) / self.warmup_steps))

    def _averaging(self) -> bool:
        return bool(self.final_ema) and self.alpha <= 0.0 and not self.done

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self._averaging():
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        # the divergence guard ends the phase; keep the average finite. Decided on every
        # rank alike: one rank's non-finite loss makes every rank's step non-finite (the
        # gradients are summed), and the ranks' averages must start and stay together
        if any_rank(loss is not None and not bool(torch.isfinite(loss).all()), pl_module.device):
            return
        state = pl_module.model.state_dict()
        if self.ema is None:
            self.ema, self.ema_steps = {k: v.detach().clone() for k, v in state.items()}, 1
            return
        if any(self.ema[k].device != v.device for k, v in state.items()):
            # a resumed checkpoint is read onto the CPU; the model may train on a GPU
            self.ema = {k: self.ema[k].to(v.device) for k, v in state.items()}
        # a time constant under one step is no average (a negative decay would extrapolate)
        decay = max(0.0, min(1.0 - 1.0 / (self.final_ema * trainer.num_training_batches),
                             (1.0 + self.ema_steps) / (10.0 + self.ema_steps)))
        for k, v in state.items():
            if v.is_floating_point():
                self.ema[k].lerp_(v.detach(), 1.0 - decay)
            else:
                self.ema[k].copy_(v)
        self.ema_steps += 1

    def on_validation_epoch_start(self, trainer, pl_module):
        if self._averaging() and self.ema is not None:  # validation scores the average
            self._live = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
            pl_module.model.load_state_dict(self.ema)

    def live_state(self) -> dict | None:
        """The live weights while validation scores the average in their place (set by this
        callback's ``on_validation_epoch_start``, which runs before the module's), else None."""
        return self._live

    def _track_live(self, pl_module) -> None:
        """Keep the live weights of the averaged phase's best epoch by their own validation
        loss (read from ``pl_module.live_stats``; the model holds the live weights now)."""
        live = getattr(pl_module, "live_stats", None)
        if not (self._averaging() and live) or self.live_untracked:
            return
        if not self.live_best or live["live_val_loss"] < self.live_best["val_loss"]:
            self.live_best = {"val_loss": live["live_val_loss"], "val_acc": live["live_val_acc"],
                              "epoch": len(self.losses)}
            self.live_best_state = copy.deepcopy(pl_module.model.state_dict())

    def on_validation_epoch_end(self, trainer, pl_module):
        if self._live is not None:  # training goes on from the live weights
            pl_module.model.load_state_dict(self._live)
            self._live = None

    def on_train_epoch_end(self, trainer, pl_module):
        if self.done:
            trainer.should_stop = True
            return
        stats = pl_module.epoch_stats
        loss = stats[self.monitor]
        if not (math.isfinite(loss) and math.isfinite(stats.get("train_loss", 0.0))):
            self._diverged(trainer, pl_module, loss)
            return
        self.losses.append(loss)
        self._track_live(pl_module)
        if not self.best or loss < self.best["loss"]:
            self.best = {"loss": loss, "val_acc": stats["val_acc"],
                         "ship_val_acc": stats.get("ship_val_acc", stats["val_acc"]),
                         "epoch": len(self.losses)}
            self.best["acc"] = self.best[self.acc_key]
            averaged = self._averaging() and self.ema is not None
            self.best_state = copy.deepcopy(self.ema if averaged else pl_module.model.state_dict())
        patience, max_epochs = self._limits()
        # a retried (halved) step is not the scheduler's own alpha: plain early stopping then
        per_epoch = (self.scheduler.per_epoch and self.alpha > 0.0
                     and self.alpha == self.scheduler.alpha)
        if per_epoch:  # the scheduler itself watches for the plateau
            patience = math.inf
        # patience counts from the top of a one-cycle rise: the loss worsens while the lr climbs
        rise = (onecycle_rise(max_epochs)
                if self.alpha <= 0.0 and self.final_schedule == "onecycle" else 0)
        stop, reason = phase_decision(self.losses[rise:], patience, self.min_delta,
                                      max_epochs - rise)
        if per_epoch and not stop and self.scheduler.step(loss) != self.alpha:
            stop, reason = True, "plateau"
        if stop:
            self._end_phase(trainer, pl_module, reason)

    def _diverged(self, trainer, pl_module, loss: float) -> None:
        """A non-finite loss: back to the phase's best weights and on to the next alpha; with
        no good epoch in this phase nothing good is left to hand over, and the run stops."""
        self.losses.append(loss)
        for opt in trainer.optimizers:  # momentum buffers hold the non-finite steps
            opt.state.clear()
        if self.best_state is None:
            row = {"phase": self.phase, "alpha": round(self.alpha, 6), "epochs": len(self.losses),
                   "best_epoch": None, "best_val_loss": None, "best_val_acc": None,
                   "best_ship_val_acc": None, "stop_reason": "diverged",
                   "detail": "non-finite loss before any good epoch"}
            self._record(row)
            raise UserError(f"training diverged in phase {self.phase} (alpha {self.alpha:g}) "
                            "before any good epoch of it: nothing good is left to continue from; "
                            "lower --lr (or --final-lr) and start again with --force")
        self._end_phase(trainer, pl_module, "diverged")

    def _record(self, row: dict) -> None:
        self.history.append(row)
        if self._writer:
            append_csv_row(self.phases_csv, row)

    def _end_phase(self, trainer, pl_module, reason: str) -> None:
        pl_module.model.load_state_dict(self.best_state)
        # the trained network (at this alpha) is near chance: the hand-over broke it
        collapsed = self.best["acc"] <= COLLAPSE_FACTOR * self.chance
        undo = (self.max_acc_drop is not None and self.prev_acc is not None
                and self.best["acc"] < self.prev_acc - self.max_acc_drop
                and self.retries < self.max_retries)
        row = {"phase": self.phase, "alpha": round(self.alpha, 6), "epochs": len(self.losses),
               "best_epoch": self.best["epoch"], "best_val_loss": round(self.best["loss"], 6),
               "best_val_acc": round(self.best["val_acc"], 6),
               "best_ship_val_acc": round(self.best["ship_val_acc"], 6),
               "stop_reason": "undone" if undo else "collapsed" if collapsed else reason,
               "detail": reason}
        self._record(row)
        if undo:  # back to the last accepted weights; retry with half the step
            self.final_limit = None  # an undone alpha = 0 phase is no longer under way
            pl_module.model.load_state_dict(self.prev_state)
            self.scheduler.load_state_dict(copy.deepcopy(self.sched_state))
            self.retries += 1
            self.alpha = (self.prev_alpha + self.alpha) / 2.0
        else:
            self.retries = 0
            self.prev_acc, self.prev_alpha = self.best["acc"], self.alpha
            if self.max_acc_drop is not None:
                self.prev_state = self.best_state
            if self.alpha <= 0.0:
                self.ema = None  # what it held is in the model now
                self.done = True
                trainer.should_stop = True
                return
            self.alpha = self._next_alpha(reason)
            self.sched_state = copy.deepcopy(self.scheduler.state_dict())
        self.phase += 1
        self.losses, self.best, self.best_state = [], {}, None
        self.ema, self.ema_steps = None, 0
        self.live_best, self.live_best_state, self.live_untracked = {}, None, False
        self._apply(pl_module)

    def _next_alpha(self, reason: str) -> float:
        if self.scheduler.alpha < self.alpha:
            # the scheduler is already below: a plateau reduction, or the target of a
            # halved (guarded) step that succeeded and is now tried again
            return self.scheduler.alpha
        if not self.scheduler.per_epoch:
            return self.scheduler.step()
        return self.scheduler.reduce()  # max_epochs or divergence before a plateau

    def state_dict(self) -> dict:
        return {"scheduler": self.scheduler.state_dict(), "alpha": self.alpha,
                "phase": self.phase, "losses": list(self.losses), "best": dict(self.best),
                "best_state": self.best_state, "history": list(self.history), "done": self.done,
                "prev_acc": self.prev_acc, "prev_alpha": self.prev_alpha,
                "prev_state": self.prev_state, "retries": self.retries,
                "sched_state": self.sched_state, "final_limit": self.final_limit,
                "ema": self.ema, "ema_steps": self.ema_steps,
                "live_best": dict(self.live_best), "live_best_state": self.live_best_state,
                "live_untracked": self.live_untracked}

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        for k in ("alpha", "phase", "losses", "best", "best_state", "history", "done", "prev_acc",
                  "prev_alpha", "prev_state", "retries", "sched_state"):
            setattr(self, k, state[k])
        self.final_limit = state.get("final_limit")  # absent before --final-takes-rest
        self.ema, self.ema_steps = state.get("ema"), state.get("ema_steps", 0)  # before --final-ema
        # absent before the live weights were scored beside the average: a phase under way
        # then has epochs whose live weights nobody scored
        self.live_best, self.live_best_state = state.get("live_best", {}), state.get("live_best_state")
        self.live_untracked = state.get("live_untracked", "live_best" not in state and bool(
            self.ema is not None and self.losses))

    def progress_info(self) -> dict:
        """Phase, alpha, epoch within phase and patience left, for the progress bar."""
        return {"phase": self.phase, "alpha": f"{self.alpha:.3g}",
                "ep_in_phase": len(self.losses) + 1, "patience_left": self.patience_left()}
