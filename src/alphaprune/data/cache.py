"""Cache of decoded datasets as ``.npz`` files keyed by path, size and mtime."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

__all__ = ["cache_dir_default", "cache_key", "load_cached", "save_cached"]


def cache_dir_default() -> Path:
    """``$ALPHAPRUNE_CACHE`` if set, else ``~/.cache/alphaprune``."""
    env = os.environ.get("ALPHAPRUNE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "alphaprune"


def cache_key(root: Path, files: list[Path]) -> str:
    """Hash of the root path and every file's relative path, size and mtime."""
    h = hashlib.sha256(str(root).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _path(key: str, cache_dir) -> Path:
    return Path(cache_dir or cache_dir_default()) / f"{key}.npz"


def load_cached(key: str, cache_dir=None):
    """Return ``(x, y, classes)`` from the cache, or None when absent or unreadable."""
    p = _path(key, cache_dir)
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            return z["x"], z["y"], json.loads(str(z["classes"]))
    except Exception:  # a torn or foreign file: decode again
        return None


def save_cached(key: str, x: np.ndarray, y: np.ndarray, classes: list[str], cache_dir=None) -> None:
    """Write the arrays atomically (temp file + rename); a failure to cache is not fatal."""
    p = _path(key, cache_dir)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, x=x, y=y, classes=np.array(json.dumps(classes)))
        os.replace(tmp, p)
    except OSError:
        pass
