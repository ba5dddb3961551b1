"""Fixtures of the report tests: synthetic run folders (see :mod:`.synthetic`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .synthetic import write_prune_run, write_train_run


@pytest.fixture
def prune_run(tmp_path) -> Path:
    """A finished prune run: 4 phases (alpha 0.75, 0.5, 0.25, 0), 11 epochs, summary.json."""
    return write_prune_run(tmp_path / "prune_run")


@pytest.fixture
def train_run(tmp_path) -> Path:
    """A finished train run: 4 epochs, no alpha/phase columns, summary with params and accuracies."""
    return write_train_run(tmp_path / "train_run")
