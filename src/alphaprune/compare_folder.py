"""A comparison's folder: what it was run with, so a rerun continues only the same comparison.

``alphaprune compare`` is resumed by running it again into the same ``--out``. Its rows are
only comparable when they were trained from the same pretrained weights, on the same data,
for the same budget: the first run records those settings (:data:`SETTINGS`, with the
pretrained weights' SHA-256), and a rerun that changes any of them is refused, naming each.
Targets, methods and where it runs may change (new rows are added).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, fields
from pathlib import Path

import torch
import yaml

from alphaprune.errors import UserError
from alphaprune.pipeline import canonical_data
from alphaprune.rundir import COMPARE_MARKER, COMPARE_RESULTS, COMPARE_SETTINGS, write_config

__all__ = ["SETTINGS", "RESULTS", "check_folder", "predates_settings", "record_settings",
           "weights_sha256"]

SETTINGS = COMPARE_SETTINGS
RESULTS = COMPARE_RESULTS
# may differ between the runs of one comparison: they add rows or say where rows are trained
_FREE = ("targets", "methods", "checkpoint", "accelerator", "devices", "num_nodes", "strategy")


def weights_sha256(model) -> str:
    """SHA-256 of a model's weights (names, shapes, dtypes and values of its state_dict): the
    same network whichever file holds it."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _settings(cfg, model) -> dict:
    """The settings of ``cfg`` (a CompareConfig) that every row of one comparison shares,
    with the pretrained ``model``'s weights, as they read back from YAML."""
    record = {k: v for k, v in asdict(cfg).items() if k not in _FREE}
    # where the data is cached changes no row; a folder is the same however it is spelled
    data = {k: v for k, v in record["data"].items() if k != "cache_dir"}
    if isinstance(data.get("data"), str):
        data["data"] = canonical_data(data["data"])
    record["data"] = data
    record["pretrained_sha256"] = weights_sha256(model)
    return yaml.safe_load(yaml.safe_dump(record, sort_keys=True))


def _as_run(record: dict) -> dict:
    """A settings record with objective selection's options as its runs take them: an
    option given at its default equals one left out (``--solver ratio --balance 1`` on a
    parameter target, ``--distill 0.7``), so a rerun spelling a default out continues."""
    from alphaprune.prune import PruneConfig, resolve_solver
    from alphaprune.recipe import FINAL_EMA

    given = dict(record.get("os_options") or {})
    try:
        given.update(resolve_solver(given.get("solver"), given.get("balance"),
                                    record.get("match", "params")))
    except UserError:  # a contradiction the run itself refuses, naming it
        return record
    # compare's os- rows always run the hand-over (their scheduler's options are given),
    # whose recipe resolves an unset --final-ema to FINAL_EMA
    defaults = {f.name: f.default for f in fields(PruneConfig)} | {"final_ema": FINAL_EMA}
    given = {k: v for k, v in given.items() if k not in defaults or v != defaults[k]}
    return {**record, "os_options": given}


def _changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changes(a, b, f"{prefix}{k}.")
        elif a != b:
            shown = "other weights" if k == "pretrained_sha256" else f"{b!r}"
            was = "" if k == "pretrained_sha256" else f"recorded {a!r}, "
            out.append(f"{prefix}{k} ({was}given {shown})")
    return out


def check_folder(cfg, model, out: Path, rows: list[dict]) -> dict:
    """Refuse, in one line, an ``--out`` that holds something other than this comparison:
    a non-empty folder that is no comparison, or one whose method rows were trained with
    other settings (``rows``: those already written; before any, the settings may change,
    the pretrained weights not). Returns the settings to record (nothing is written).
    ``model``: the pretrained network."""
    settings = _settings(cfg, model)
    path = out / SETTINGS
    if path.is_file():
        try:
            old = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise UserError(f"{path} is corrupt ({type(e).__name__}): choose another --out") from e
        if not isinstance(old, dict):
            raise UserError(f"{path} is corrupt (not a mapping): choose another --out")
        changed = _changes(_as_run(old), _as_run(settings))
        if not _started(out, rows):
            # nothing to mismatch yet; the pretrained row was scored on the data
            changed = [c for c in changed if c.startswith(("pretrained_sha256", "data."))]
        if changed:
            raise UserError(f"{out} holds a comparison with other settings: "
                            f"{'; '.join(changed)}; rerun it with its own settings to continue "
                            "it, or choose another --out")
    elif out.is_dir() and not (out / RESULTS).exists() and any(
            p.name != COMPARE_MARKER for p in out.iterdir()):
        raise UserError(f"--out {out} is a non-empty folder that is not an alphaprune comparison: "
                        "choose a new folder")
    return settings


def predates_settings(out: Path, rows: list[dict]) -> bool:
    """``out`` holds a comparison's rows or runs but no recorded settings (it was made
    before they were recorded): its rows cannot be checked against this run's settings."""
    return _started(out, rows) and not (out / SETTINGS).is_file()


def _started(out: Path, rows: list[dict]) -> bool:
    """A method row, or a target's folder (its widths, a method's run), exists."""
    return any(r.get("method") != "pretrained" for r in rows) or any(
        d.is_dir() for d in out.glob("p*"))


def record_settings(out: Path, settings: dict) -> None:
    """Write the settings :func:`check_folder` returned (atomically): a folder from before
    they were recorded records the settings of the run that continues it."""
    write_config(out, settings, SETTINGS)
