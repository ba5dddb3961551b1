"""Synthetic run folders (prune and train) written without any training.

The files follow what ``alphaprune prune`` / ``alphaprune train`` write: ``config.yaml``,
``metrics.csv`` (one row per epoch), ``phases.csv`` (one row per alpha phase, prune only) and
``summary.json``.
"""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import yaml

PRUNE_METRIC_COLS = ["epoch", "phase", "alpha", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                     "ship_val_loss", "ship_val_acc", "seconds"]
TRAIN_METRIC_COLS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
PHASE_COLS = ["phase", "alpha", "epochs", "best_epoch", "best_val_loss", "best_val_acc",
              "best_ship_val_acc", "stop_reason", "detail"]

# (alpha, epochs) of each phase; alpha = 0 is the final phase
PHASES = [(0.75, 3), (0.5, 3), (0.25, 2), (0.0, 3)]

PRUNE_SETTINGS = {
    "checkpoint": "runs/base/model.pt", "model": None, "prune": 0.65, "scheduler": "step",
    "step_size": 0.25, "decay_rate": None, "mu": None, "factor": None, "cooldown": None,
    "threshold": 0.015, "patience": 2, "min_delta": 0.0, "max_epochs_per_phase": 3,
    "final_patience": None, "final_max_epochs": None, "final_lr": None, "max_total_epochs": 1000,
    "train_original": True, "handover": "blend", "branch_init": "select", "importance": "bn",
    "monitor": "val_loss", "channels_last": True,
    "optim": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "nesterov": True,
              "schedule": "constant", "label_smoothing": 0.0},
    "data": {"data": "digits", "val_frac": 0.1, "test_frac": 0.1, "seed": 0, "subset": None,
             "train_subset": None, "cache_dir": None, "batch_size": 128},
}

PRUNE_SUMMARY = {
    "arch": "vgg11", "target_reduction": 0.65, "achieved_reduction": 0.6412,
    "params_before": 1234567, "params_after": 443001,
    "flops_before": 313524224, "flops_after": 98765432,
    "test_acc_before": 0.91234, "test_acc_after": 0.90567,
    "val_acc_before": 0.9251, "val_acc_after": 0.9132,
    "file_bytes_before": 4939776, "file_bytes_after": 1742848,   # 4,824 and 1,702 KiB
    "latency": {
        "before": {"latency_b1_ms": 1.23456, "latency_b128_ms": 45.67, "throughput_img_s": 2802.7},
        "after": {"latency_b1_ms": 0.5678, "latency_b128_ms": 20.04, "throughput_img_s": 6387.2},
    },
    "epochs": 11, "seconds": 123.4, "train_seconds": 110.2,
}

TRAIN_SETTINGS = {
    "model": "vgg11", "width": 0.25, "widths": None, "epochs": 4, "channels_last": True,
    "optim": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005, "nesterov": True,
              "schedule": "onecycle", "label_smoothing": 0.0},
    "data": {"data": "digits", "val_frac": 0.1, "test_frac": 0.1, "seed": 0, "subset": None,
             "train_subset": None, "cache_dir": None, "batch_size": 128},
}

TRAIN_SUMMARY = {"model": "vgg11", "params": 612345, "flops": 12345678, "best_epoch": 3,
                 "seconds": 42.0, "val_acc": 0.9312, "val_loss": 0.2211, "test_acc": 0.9276,
                 "test_loss": 0.2345}


def _write_csv(path: Path, cols: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def prune_metrics(phases=PHASES) -> list[dict]:
    """Plausible per-epoch rows: loss falls within a phase, jumps a little at each hand-over."""
    rows, epoch = [], 0
    for p, (alpha, n) in enumerate(phases):
        for k in range(n):
            vl = 0.9 - 0.1 * p - 0.05 * k
            rows.append({"epoch": epoch, "phase": p, "alpha": alpha,
                         "train_loss": round(vl - 0.1, 4), "train_acc": round(0.7 + 0.05 * p + 0.02 * k, 4),
                         "val_loss": round(vl, 4), "val_acc": round(0.68 + 0.05 * p + 0.02 * k, 4),
                         "lr": 0.01, "ship_val_loss": round(vl + 0.6 * alpha, 4),
                         "ship_val_acc": round(0.4 + 0.12 * p + 0.02 * k, 4),
                         "seconds": round(10.0 + 0.1 * epoch, 3)})
            epoch += 1
    return rows


def phase_rows(metrics: list[dict]) -> list[dict]:
    """One phases.csv row per phase, best = the lowest val_loss (the last epoch here)."""
    out = []
    for p in sorted({r["phase"] for r in metrics}):
        rows = [r for r in metrics if r["phase"] == p]
        best = min(range(len(rows)), key=lambda i: rows[i]["val_loss"])
        reason = "max_epochs" if len(rows) >= 3 else "patience"
        out.append({"phase": p, "alpha": rows[0]["alpha"], "epochs": len(rows), "best_epoch": best + 1,
                    "best_val_loss": rows[best]["val_loss"], "best_val_acc": rows[best]["val_acc"],
                    "best_ship_val_acc": rows[best]["ship_val_acc"], "stop_reason": reason,
                    "detail": reason})
    return out


def write_prune_run(path: Path, phases=PHASES, summary: dict | None = PRUNE_SUMMARY,
                    settings: dict | None = None) -> Path:
    """A finished (``summary`` given) or unfinished (``summary=None``) prune run folder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"command": "prune", "prune": copy.deepcopy(settings or PRUNE_SETTINGS)}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    metrics = prune_metrics(phases)
    _write_csv(path / "metrics.csv", PRUNE_METRIC_COLS, metrics)
    _write_csv(path / "phases.csv", PHASE_COLS, phase_rows(metrics))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary, indent=2))
    return path


def train_metrics(n: int = 4) -> list[dict]:
    return [{"epoch": e, "train_loss": round(1.5 - 0.3 * e, 4), "train_acc": round(0.5 + 0.1 * e, 4),
             "val_loss": round(1.4 - 0.28 * e, 4), "val_acc": round(0.55 + 0.1 * e, 4),
             "lr": round(0.05 / (e + 1), 5), "seconds": 9.5} for e in range(n)]


def write_train_run(path: Path, epochs: int = 4, summary: dict | None = TRAIN_SUMMARY) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"command": "train", "train": copy.deepcopy(TRAIN_SETTINGS)}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    _write_csv(path / "metrics.csv", TRAIN_METRIC_COLS, train_metrics(epochs))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary, indent=2))
    return path
