"""Reading run folders: metrics, phases, summary, config."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from alphaprune.errors import UserError
from alphaprune.rundir import is_comparison

__all__ = ["Run", "read_run", "label_runs"]


def _float(v: str):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV file with numeric fields converted to float."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        # a row cut short by an interrupted write has None fields: drop it
        return [{k: _float(v) for k, v in row.items()} for row in csv.DictReader(f)
                if None not in row.values() and None not in row]


@dataclass
class Run:
    """Everything a report needs from one run folder."""

    path: Path
    metrics: list[dict]
    phases: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    label: str | None = None  # set where runs are shown together and folder names repeat

    @property
    def name(self) -> str:
        return self.label or self.path.resolve().name

    @property
    def command(self) -> str:
        return self.config.get("command", "prune" if self.phases else "train")


def _refuse_comparison(path: Path) -> None:
    """A comparison's folder, or a peer method's folder inside one (Torch-Pruning's, say: a
    model and its metrics, no settings of its own), is no run: name the page that holds it."""
    path = path.resolve()  # "." or a relative peer folder has its comparison above it
    if path.is_dir() and is_comparison(path):
        runs = sorted(path.glob("p*/os-*/config.yaml"))
        such = f", e.g. {runs[0].parent}" if runs else ""
        raise UserError(f"{path} is a comparison, not a run: its page is {path / 'results.md'} "
                        "(with pareto.png), written by compare; report one of its objective "
                        f"selection runs{such}")
    root = path.parent.parent
    if path.is_dir() and not (path / "config.yaml").exists() and is_comparison(root):
        raise UserError(f"{path} is {path.name}'s folder in the comparison {root}: its row is in "
                        f"{root / 'results.md'}; report only runs with their own settings "
                        "(the comparison's os-* folders)")


def read_run(path: str | Path) -> Run:
    """Load a run folder.

    Raises:
        UserError: the folder is not a run, or it has no finished epoch yet.
    """
    import yaml

    path = Path(path)
    _refuse_comparison(path)
    if not path.is_dir() or not ((path / "config.yaml").exists() or (path / "metrics.csv").exists()):
        raise UserError(f"{path} is not an alphaprune run folder (no config.yaml or metrics.csv): "
                        "pass the --out folder of 'train' or 'prune'")
    metrics = read_csv(path / "metrics.csv")
    if not metrics:
        raise UserError(f"run {path} has no finished epoch yet: report it once an epoch has ended")
    config, summary = {}, {}
    try:
        if (path / "config.yaml").exists():
            config = yaml.safe_load((path / "config.yaml").read_text()) or {}
        if (path / "summary.json").exists():
            summary = json.loads((path / "summary.json").read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise UserError(f"run {path} has a corrupt config.yaml or summary.json ({type(e).__name__}): "
                        "restore it or rerun with --force") from e
    return Run(path, metrics, read_csv(path / "phases.csv"), summary, config)


def label_runs(runs: list[Run]) -> None:
    """Label runs shown together by the shortest tail of their paths that tells them apart
    (``a/p`` and ``b/p``, not ``p`` twice).

    Raises:
        UserError: a run given twice.
    """
    paths = [r.path.resolve() for r in runs]
    twice = next((p for i, p in enumerate(paths) if p in paths[:i]), None)
    if twice is not None:
        raise UserError(f"run {twice} is given twice: name each run once")
    tails = [p.as_posix() for p in paths]
    for k in range(1, max((len(p.parts) for p in paths), default=0)):
        short = [PurePosixPath(*p.parts[-k:]).as_posix() for p in paths]
        if len(set(short)) == len(short):
            tails = short
            break
    for r, tail in zip(runs, tails, strict=True):
        r.label = tail
