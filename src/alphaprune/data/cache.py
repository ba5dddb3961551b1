"""Cache of decoded datasets: one ``.npz`` file per dataset folder, holding the
fingerprint (every file's path, size and mtime) it was decoded from."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

__all__ = ["cache_dir_default", "cache_key", "cache_slot", "load_cached", "save_cached"]


def cache_dir_default() -> Path:
    """``$ALPHAPRUNE_CACHE`` if set, else ``~/.cache/alphaprune``."""
    env = os.environ.get("ALPHAPRUNE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "alphaprune"


# bumped whenever decoding changes what the same files decode to (2: 16-bit images scaled,
# mixed sizes resized to the most common one), so arrays an older version cached are decoded
# again
DECODER_VERSION = 2


def cache_key(root: Path, files: list[Path]) -> str:
    """Fingerprint of a dataset: hash of the decoder's version, the root path and every
    file's relative path, size and mtime."""
    h = hashlib.sha256(f"decoder {DECODER_VERSION}\n{root}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def cache_slot(root: Path) -> str:
    """The cache file's name for the dataset folder ``root``: a folder keeps one file, which
    a changed folder replaces, so the cache does not grow with every change."""
    return "d" + hashlib.sha256(str(root).encode()).hexdigest()[:23]


def _path(name: str, cache_dir) -> Path:
    return Path(cache_dir or cache_dir_default()) / f"{name}.npz"


def _read(p: Path, key: str | None):
    """``(x, y, classes)`` from ``p`` if it holds the fingerprint ``key`` (``None``: a file
    of the old layout, named by its fingerprint), else None."""
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            if key is not None and ("key" not in z.files or str(z["key"]) != key):
                return None
            x, y, classes = z["x"], z["y"], json.loads(str(z["classes"]))
    except Exception:  # a torn or foreign file: decode again
        return None
    return (x, y, classes) if _consistent(x, y, classes) else None


def _consistent(x: np.ndarray, y: np.ndarray, classes) -> bool:
    """Whether cached arrays can be a dataset: one integer label per image, each naming one
    of the classes (a cache edited or written by something else is decoded again)."""
    return (isinstance(classes, list) and len(classes) > 0 and x.ndim == 4 and y.ndim == 1
            and len(x) == len(y) and np.issubdtype(y.dtype, np.integer)
            and (len(y) == 0 or (int(y.min()) >= 0 and int(y.max()) < len(classes))))


def load_cached(slot: str, key: str, cache_dir=None):
    """Return ``(x, y, classes)`` cached for the folder ``slot`` (:func:`cache_slot`) with
    the fingerprint ``key`` (:func:`cache_key`), or None when absent, stale or unreadable.

    A file of the layout before slots (named by its fingerprint) is moved into the slot."""
    got = _read(_path(slot, cache_dir), key)
    if got is not None:
        return got
    legacy = _path(key, cache_dir)
    got = _read(legacy, None)
    if got is not None and save_cached(slot, key, *got, cache_dir=cache_dir):
        legacy.unlink(missing_ok=True)
    return got


def save_cached(slot: str, key: str, x: np.ndarray, y: np.ndarray, classes: list[str],
                cache_dir=None) -> bool:
    """Write the arrays and their fingerprint to the folder's slot, atomically (temp file +
    rename), replacing a stale one. A failure to cache is not fatal: returns False."""
    p = _path(slot, cache_dir)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, x=x, y=y, classes=np.array(json.dumps(classes)), key=np.array(key))
        os.replace(tmp, p)
        return True
    except OSError:
        return False
