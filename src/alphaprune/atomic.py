"""Crash-safe writes: a temporary file in the target's folder, flushed, fsynced, renamed.

A crash, a kill or a full disk during a write leaves the previous file whole (or no file),
never a torn one; the temporary file is removed when the write fails.
"""

from __future__ import annotations

import glob
import os
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import torch

__all__ = ["atomic_write", "atomic_torch_save", "atomic_write_text", "temp_path", "publish"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary binary file beside ``path``, then rename it there."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def temp_path(path: str | os.PathLike, suffix: str = "") -> Path:
    """This process's temporary file beside ``path`` (``.NAME.PID.tmpSUFFIX``, for writers
    that need a file name, such as exporters), after removing the ones killed writers left;
    the folder is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path, suffix)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")


def publish(tmp: Path, path: str | os.PathLike, replace: bool = True) -> None:
    """Rename a finished temporary file (:func:`temp_path`) to ``path``, durably: the file's
    data and then the rename are synced to disk. ``replace=False``: only where nothing is
    at ``path`` when it lands (a hard link, which fails on an existing name: another
    writer that got there first raises ``FileExistsError``), never by a check made earlier."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    if replace:
        os.replace(tmp, path)
    else:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (FAT, SMB, some FUSE mounts): claim the name
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))  # or raise
            os.replace(tmp, path)
        else:
            tmp.unlink()
    _fsync_dir(Path(path).parent)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically. A Ctrl-C during the write is held until
    the file is in place: inside ``torch.save`` it would surface as a ``RuntimeError`` (the
    zip writer's), not as the interrupt it is."""
    with _sigint_held():
        atomic_write(path, lambda f: torch.save(obj, f))


@contextmanager
def _sigint_held():
    """Defer SIGINT over the block, then deliver it to the handler that was there."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers, and only it receives signals
        return
    held = []
    old = signal.signal(signal.SIGINT, lambda *_: held.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if held:
        signal.raise_signal(signal.SIGINT)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode()))


def _remove_stale(path: Path, suffix: str = "") -> None:
    """Remove temporary files of ``path`` left by writers that were killed mid-write
    (``kill -9`` runs no cleanup); a live process's file is left alone."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp{glob.escape(suffix)}"):
        pid = tmp.name[len(path.name) + 2:-len(".tmp" + suffix)]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); skipped where a folder cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
