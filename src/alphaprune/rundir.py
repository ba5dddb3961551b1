"""Run folders: refuse to clobber finished runs, resume interrupted ones, save config."""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
from pathlib import Path

import yaml

try:
    import fcntl
except ImportError:  # Windows: run folders are marked but not locked
    fcntl = None

from alphaprune.atomic import atomic_write_text
from alphaprune.errors import UserError
from alphaprune.parallel import is_leader

__all__ = ["prepare_run_dir", "write_config", "read_config", "recorded", "make_dir", "write_json",
           "pending", "finish", "has_progress", "claim", "check_replaceable",
           "releasing_run_dirs", "LAST_CKPT", "CONFIG", "MARKER", "COMPARE_MARKER",
           "COMPARE_RESULTS", "COMPARE_SETTINGS", "is_comparison"]

CONFIG = "config.yaml"
LAST_CKPT = Path("checkpoints") / "last.ckpt"
# written into every folder alphaprune makes for a run, and locked while a process writes
# there: only a folder that holds it may be cleared, and two processes cannot share one
MARKER = ".alphaprune-run"
# the same for a comparison's folder: not a run, so train and prune never clear it
COMPARE_MARKER = ".alphaprune-compare"
COMPARE_RESULTS = "results.jsonl"  # a comparison's rows, one JSON object per line
COMPARE_SETTINGS = "compare.yaml"  # what every row of a comparison shares
_RUN_MARKERS = (MARKER, CONFIG, "metrics.csv")
_COMPARISON = (COMPARE_MARKER, COMPARE_RESULTS, COMPARE_SETTINGS)
_LOCKS: dict[str, tuple[int, int]] = {}  # resolved folder -> (fd, inode) this process holds


def is_comparison(path: Path) -> bool:
    """Whether ``path`` is a folder ``alphaprune compare`` made (its marker, rows or
    settings)."""
    return path.is_dir() and any((path / m).exists() for m in _COMPARISON)


def prepare_run_dir(out: str | Path, finished_file: str, force: bool = False,
                    resume: bool = False, keep=()) -> tuple[Path, Path | None]:
    """Check the run folder and return ``(path, checkpoint to resume from or None)``.

    * new or empty folder: used as is;
    * ``resume``: the folder must hold an unfinished run with a checkpoint;
    * ``force``: an earlier *run* folder is cleared (a folder that is not a run never is,
      nor one that holds a path in ``keep``, such as the input checkpoint);
    * a run folder left before its first checkpoint (nothing to resume, nothing to lose) is
      cleared and reused;
    * otherwise an existing run is refused, finished or not.
    """
    out = Path(out)
    _check_out(out)
    if is_comparison(out):
        raise UserError(f"--out {out} holds an alphaprune comparison, not a run: choose another "
                        "--out")
    is_run = out.is_dir() and any((out / m).exists() for m in _RUN_MARKERS)
    finished = (out / finished_file).exists()
    if resume:
        if finished:
            raise UserError(f"run {out} is already finished ({finished_file} exists): nothing to "
                            "resume; use --force to start it again")
        if not (out / LAST_CKPT).exists():
            raise UserError(f"run {out} has no checkpoint to resume from: start it without --resume")
        if is_leader():  # the process that writes; the others read the checkpoint only
            claim(out)
        return out, out / LAST_CKPT
    if out.is_dir() and any(out.iterdir()):
        if not is_run:
            raise UserError(f"--out {out} is a non-empty folder that is not an alphaprune run: "
                            "choose a new folder")
        stray = not finished and not has_progress(out)  # killed before a checkpoint
        if not force and not stray:
            state = "a finished run" if finished else "an unfinished run"
            raise UserError(f"{out} already holds {state}: pass --resume to continue it, --force "
                            "to replace it, or choose another --out")
        check_replaceable(out, keep)
        shutil.rmtree(out)
    claim(make_dir(out))
    return out, None


def check_replaceable(out: Path, keep=()) -> None:
    """Refuse, in one line, to clear ``out`` unless alphaprune made it (it holds
    :data:`MARKER`), no other process is writing there, and it holds neither the current
    directory nor a path in ``keep`` (an input of the run)."""
    if not (out / MARKER).is_file():
        raise UserError(f"--out {out} holds a config.yaml or metrics.csv but no {MARKER}: "
                        "alphaprune did not make it (or a version before the marker did), so it "
                        "will not delete it; remove it yourself or choose another --out")
    _refuse_to_delete(out, keep)
    claim(out)  # a process still writing there holds the lock: refused before anything goes


def claim(out: Path, marker: str = MARKER) -> Path:
    """Mark ``out`` as alphaprune's run folder (``marker``: a comparison's is another) and
    hold its lock until :func:`finish` or the command returns (:func:`releasing_run_dirs`):
    a second process writing into the same folder is refused in one line instead of
    interleaving its epochs with this one's. Only the writing process (rank 0) calls this.
    Without ``fcntl`` (Windows) the folder is marked but not locked."""
    path = Path(out) / marker
    key = str(Path(out).resolve())
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    inode = os.fstat(fd).st_ino
    held = _LOCKS.get(key)
    if held is not None and held[1] == inode:  # this process holds it already
        os.close(fd)
        return Path(out)
    if held is not None:  # the folder was cleared and made again: the old lock is moot
        _release(key)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:  # held: EWOULDBLOCK
            os.close(fd)
            raise UserError(f"another alphaprune process is writing to {out}: wait for it to "
                            "finish, or choose another --out") from e
        except OSError:  # a file system without locks (some network mounts): marked only
            pass
    _LOCKS[key] = (fd, inode)
    return Path(out)


def _release(key: str) -> None:
    fd, _ = _LOCKS.pop(key)
    os.close(fd)  # closing the descriptor drops the lock


def releasing_run_dirs(fn):
    """Decorate a command's function so that the run folders it claimed are released when
    it returns or raises (finished, out of budget, failed): in a notebook the process lives
    on, and a terminal must be able to resume the run it left."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = set(_LOCKS)
        try:
            return fn(*args, **kwargs)
        finally:
            for key in set(_LOCKS) - before:
                _release(key)
    return wrapper


def has_progress(out: Path) -> bool:
    """Whether ``--resume`` has something to continue: a resume checkpoint, or (a
    ``--folds`` run) a fold with a checkpoint or a model."""
    if (out / LAST_CKPT).exists():
        return True
    return any((d / LAST_CKPT).exists() or any(d.glob("*.pt")) for d in out.glob("fold*")
               if d.is_dir())


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: pass a folder path for the run")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {out} lies under {parent}, which is a file: pass a folder path")
            break


def make_dir(out: Path) -> Path:
    """``mkdir -p`` with a one-line error where the folder cannot be made."""
    _check_out(Path(out))
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        probe = Path(out) / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to --out {out} ({e.strerror or e}): choose a folder you "
                        "can write to") from e
    return Path(out)


def _refuse_to_delete(out: Path, keep) -> None:
    root = out.resolve()
    here = Path.cwd().resolve()
    if root == here or root in here.parents:
        raise UserError(f"--out {out} holds the current directory: clearing it would delete the "
                        "folder you are working in; choose another --out")
    for k in keep:
        if k and (root == Path(k).resolve() or root in Path(k).resolve().parents):
            raise UserError(f"--out {out} holds {k}, an input of this run: --force would delete "
                            "it; choose another --out")


def pending(out: Path, finished_file: str) -> Path:
    """Where the run's final file is written before the run is finished (see :func:`finish`)."""
    return Path(out) / f"{finished_file}.part"


def finish(out: Path, finished_file: str) -> Path:
    """Mark the run finished: its final file, written last, takes its name. Until then a
    kill leaves a run that ``--resume`` completes (the summary and report are rewritten)."""
    path = Path(out) / finished_file
    os.replace(pending(out, finished_file), path)
    key = str(Path(out).resolve())
    if key in _LOCKS:
        _release(key)
    return path


def write_config(out: Path, config: dict, name: str = CONFIG) -> None:
    """Write the resolved settings as YAML, atomically: a resume that records a new budget
    and is killed midway leaves the old file, not a torn one."""
    atomic_write_text(out / name, yaml.safe_dump(config, sort_keys=False))


def write_json(path: Path, data) -> None:
    """Write strict JSON atomically (temp file + rename): an interrupted write leaves no torn
    file, and a non-finite number is written as ``null`` (JSON has no NaN)."""
    atomic_write_text(path, json.dumps(_finite_or_null(data), indent=2, allow_nan=False))


def _finite_or_null(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite_or_null(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite_or_null(x) for x in v]
    return v


def read_config(out: Path) -> dict:
    """Read a run's resolved settings."""
    p = Path(out) / CONFIG
    if not p.exists():
        raise UserError(f"{out} is not a run folder (no {CONFIG}): pass the --out of a run")
    try:
        with open(p) as f:
            config = yaml.safe_load(f) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
        raise UserError(f"{p} is corrupt ({type(e).__name__}): the run cannot be resumed; start it "
                        "again with --force") from e
    if not isinstance(config, dict):
        raise UserError(f"{p} is corrupt (not a mapping): start the run again with --force")
    return config


def recorded(out: Path, command: str) -> dict:
    """The settings a run of ``command`` recorded (a one-line error for another command's run)."""
    config = read_config(out)
    other = config.get("command")
    if other not in ("train", "prune") or not isinstance(config.get(other), dict):
        raise UserError(f"{Path(out) / CONFIG} is corrupt (no run settings recorded): the run "
                        "cannot be resumed; start it again with --force")
    if not isinstance(config.get(command), dict):
        raise UserError(f"{out} is a '{other}' run, not a '{command}' run: resume it with "
                        f"'alphaprune {other} --resume --out {out}'")
    return config[command]
