"""Callbacks shared by ``train`` and ``prune``: CSV metrics, best weights, progress."""

from __future__ import annotations

import copy
import csv
import io
import math
import time
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

from alphaprune.atomic import atomic_write_text

__all__ = ["MetricsCSV", "BestWeights", "Progress", "append_csv_row"]


def append_csv_row(path: Path, row: dict) -> None:
    """Append one row, writing the header when the file is new."""
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _whole(row: dict) -> bool:
    """A row that was written whole: every column present and an integer epoch (a kill in
    the middle of an append leaves a short or torn last row)."""
    return None not in row and None not in row.values() and str(row.get("epoch", "")).isdigit()


class MetricsCSV(pl.Callback):
    """Writes one row per epoch to ``path`` from ``pl_module.epoch_row()`` or ``epoch_stats``.

    Rows of epochs after the resumed checkpoint are dropped first, so a resumed run's CSV
    has no duplicated epochs.
    """

    def __init__(self, path: Path, extra=None):
        self.path = Path(path)
        self.extra = extra  # callable(trainer, pl_module) -> dict of leading columns
        self._t0 = time.perf_counter()

    def on_train_start(self, trainer, pl_module):
        # here, not in on_fit_start: Lightning restores the epoch counter after on_fit_start,
        # and a kill between this epoch's row and its checkpoint leaves a row to drop
        if trainer.is_global_zero and self.path.exists() and trainer.current_epoch > 0:
            text = self.path.read_text(errors="replace")
            rows = list(csv.DictReader(io.StringIO(text, newline="")))
            # a row cut by a kill mid-append is short (and after the checkpoint anyway)
            keep = [r for r in rows if _whole(r) and int(r["epoch"]) < trainer.current_epoch]
            if keep and len(keep) != len(rows):
                # rewritten whole, atomically: a kill now leaves the old file, not half of it
                buf = io.StringIO(newline="")
                w = csv.DictWriter(buf, fieldnames=list(keep[0]))
                w.writeheader()
                w.writerows(keep)
                atomic_write_text(self.path, buf.getvalue())

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        row = {"epoch": trainer.current_epoch}
        if self.extra is not None:
            row.update(self.extra(trainer, pl_module))
        row.update(pl_module.epoch_stats)
        row["seconds"] = round(time.perf_counter() - self._t0, 3)
        if not trainer.is_global_zero:  # rank 0 alone writes
            return
        append_csv_row(self.path, row)
        if trainer.logger:  # TensorBoard, when installed
            trainer.logger.log_metrics({k: v for k, v in row.items() if k != "epoch"},
                                       step=trainer.current_epoch)


class BestWeights(pl.Callback):
    """Keeps the weights of the epoch with the lowest validation loss; restores them at the end."""

    def __init__(self):
        self.best_loss = math.inf
        self.best_epoch = -1
        self.best_state: dict | None = None

    def on_train_epoch_end(self, trainer, pl_module):
        loss = pl_module.epoch_stats.get("val_loss", math.nan)
        if loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, trainer.current_epoch
            self.best_state = copy.deepcopy(pl_module.model.state_dict())

    def on_fit_end(self, trainer, pl_module):
        if self.best_state is not None:
            pl_module.model.load_state_dict(self.best_state)

    def state_dict(self):
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch,
                "best_state": self.best_state}

    def load_state_dict(self, state):
        self.best_loss = state["best_loss"]
        self.best_epoch = state["best_epoch"]
        self.best_state = state["best_state"]


class Progress(TQDMProgressBar):
    """Lightning's progress bar plus the module's ``progress_info()`` (phase, alpha, epoch in
    phase, patience left, validation loss/accuracy), elapsed time and, for runs with a fixed
    number of epochs, an ETA."""

    def __init__(self):
        super().__init__(refresh_rate=10, leave=True)
        self._start, self._epoch0 = time.perf_counter(), 0

    def on_train_start(self, trainer, pl_module):
        # after a resume has restored the loop: time and epochs count from here
        super().on_train_start(trainer, pl_module)
        self._start, self._epoch0 = time.perf_counter(), trainer.current_epoch

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        info = getattr(pl_module, "progress_info", None)
        if callable(info):
            items.update(info())
        elapsed = time.perf_counter() - self._start
        items["elapsed"] = _fmt(elapsed)
        done = trainer.current_epoch - self._epoch0
        if not callable(info) and done > 0 and trainer.max_epochs and trainer.max_epochs > 0:
            items["eta"] = _fmt(elapsed / done * (trainer.max_epochs - trainer.current_epoch))
        return items


def _fmt(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
