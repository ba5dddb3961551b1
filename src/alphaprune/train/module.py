"""The LightningModule that trains a classifier, with its own exact epoch statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F

from alphaprune.errors import UserError
from alphaprune.parallel import all_reduce_sums, broadcast_buffers, broadcast_floats
from alphaprune.train.losses import distillation_loss

__all__ = ["ClassifierModule", "OptimConfig", "RunningStats"]


@dataclass
class OptimConfig:
    """SGD with momentum and weight decay, and an LR schedule.

    ``schedule``: ``onecycle`` (per step, peak ``lr``), ``cosine`` (per step, from ``lr`` to 0)
    or ``constant``.
    """

    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    schedule: str = "onecycle"
    label_smoothing: float = 0.0

    def validate(self) -> None:
        """Raise a one-line :class:`UserError` for an out-of-range setting."""
        checks = [(self.lr > 0 and math.isfinite(self.lr), f"--lr must be > 0, got {self.lr}"),
                  (self.momentum >= 0, f"--momentum must be >= 0, got {self.momentum}"),
                  (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
                  (0 <= self.label_smoothing < 1,
                   f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
                  (self.schedule in ("onecycle", "cosine", "constant"),
                   f"unknown LR schedule '{self.schedule}': use onecycle, cosine or constant")]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


class RunningStats:
    """Sums of loss and correct predictions over an epoch (sample-weighted)."""

    def __init__(self):
        self.loss = 0.0
        self.correct = 0
        self.n = 0

    def update(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        b = y.shape[0]
        self.loss += float(loss.detach()) * b
        self.correct += int((logits.detach().argmax(1) == y).sum())
        self.n += b

    def reduced(self, device) -> RunningStats:
        """The sums over every rank of a multi-process run (itself on one process)."""
        r = RunningStats()
        r.loss, correct, n = all_reduce_sums([self.loss, self.correct, self.n], device)
        r.correct, r.n = int(correct), int(n)
        return r

    def result(self) -> tuple[float, float]:
        """(mean loss, accuracy); NaN when empty."""
        if self.n == 0:
            return math.nan, math.nan
        return self.loss / self.n, self.correct / self.n


class ClassifierModule(pl.LightningModule):
    """Cross-entropy training of ``model`` with exact per-epoch train/val statistics.

    After each validation, ``self.epoch_stats`` holds ``train_loss``, ``train_acc``,
    ``val_loss``, ``val_acc`` and ``lr`` for the epoch (callbacks read it). With a
    ``teacher`` and ``distill`` = lambda > 0 the training loss is
    ``(1 - lambda) * CE + lambda * T^2 * KL(teacher_T || student_T)``; the logged train loss
    stays the plain cross-entropy so runs are comparable.
    """

    def __init__(self, model: nn.Module, optim: OptimConfig | None = None,
                 teacher: nn.Module | None = None, distill: float = 0.0, temperature: float = 4.0):
        super().__init__()
        self.model = model
        self.optim = optim or OptimConfig()
        if not 0.0 <= distill <= 1.0:
            raise UserError(f"--distill must be in [0, 1], got {distill}")
        if temperature <= 0:
            raise UserError(f"--temperature must be > 0, got {temperature}")
        if distill and teacher is None:
            raise ValueError("distillation needs a teacher")
        # a frozen copy, kept out of state_dict/parameters (not trained, not checkpointed)
        self._teacher = [teacher.eval().requires_grad_(False)] if teacher is not None and distill else []
        self.distill, self.temperature = float(distill), float(temperature)
        self._train = RunningStats()
        self._val = RunningStats()
        self.epoch_stats: dict[str, float] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.optim.label_smoothing)

    def on_fit_start(self) -> None:
        # the teacher is kept out of the module's children, so Lightning does not move it
        for t in self._teacher:
            t.to(self.device)

    def on_fit_end(self) -> None:
        for t in self._teacher:
            t.cpu()

    def on_train_epoch_start(self) -> None:
        self._train = RunningStats()

    def training_loss(self, logits: torch.Tensor, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss to optimise, plain cross-entropy): CE blended with distillation if enabled."""
        ce = self.loss(logits, y)
        if not self._teacher:
            return ce, ce
        with torch.no_grad():
            t_logits = self._teacher[0](x)
        kd = distillation_loss(logits, t_logits, self.temperature)
        return (1.0 - self.distill) * ce + self.distill * kd, ce

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss, ce = self.training_loss(logits, x, y)
        self._train.update(ce, logits, y)
        # the rate this step uses (read before the scheduler steps past it)
        self._lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = RunningStats()
        # DDP syncs BN buffers only before a training forward: every rank scores rank 0's
        broadcast_buffers(self.model)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self._val.update(F.cross_entropy(logits, y), logits, y)

    def on_validation_epoch_end(self) -> None:
        stats = self.compute_epoch_stats()
        # rank 0's numbers everywhere: every rank's callbacks take the same decisions
        self.epoch_stats = dict(zip(stats, broadcast_floats(list(stats.values()), self.device)))

    def compute_epoch_stats(self) -> dict[str, float]:
        """The epoch's statistics over every rank (subclasses add their own)."""
        tl, ta = self._train.reduced(self.device).result()
        vl, va = self._val.reduced(self.device).result()
        lr = getattr(self, "_lr", math.nan)
        return {"train_loss": tl, "train_acc": ta, "val_loss": vl, "val_acc": va, "lr": lr}

    def configure_optimizers(self):
        o = self.optim
        opt = torch.optim.SGD(self.parameters(), lr=o.lr, momentum=o.momentum,
                              weight_decay=o.weight_decay, nesterov=o.nesterov and o.momentum > 0)
        if o.schedule == "constant":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        # a one-cycle of 4 steps or fewer has no warm-up step to give (torch's divides by
        # zero at exactly 4): such a run anneals from the peak like cosine
        if o.schedule == "onecycle" and total > 4:
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=o.lr, total_steps=total, pct_start=0.25, anneal_strategy="linear",
                div_factor=10.0, final_div_factor=100.0)
        elif o.schedule in ("cosine", "onecycle"):
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        else:
            raise ValueError(f"unknown LR schedule {o.schedule!r}")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
