"""Steady CPU timings: glibc's malloc keeps freed memory in the process.

By default glibc hands every allocation above a threshold (128 KiB at start) its own fresh
``mmap`` and returns it to the system on free, so each forward pass page-faults its
activations in again; and glibc moves that threshold with what the process freed before.
A model's time then depends on its tensor sizes against that threshold and on the
process's history, not only on its arithmetic: the same model timed far apart between
processes, and the in-place and out-of-place forms of a residual sum timed apart although
they compute the same (BENCHMARKS.md section 24). With a fixed threshold far above
any activation and no trimming, freed memory is reused as jemalloc or tcmalloc (which the
PyTorch CPU tuning guide recommends) reuse it, and those differences go.

The ``alphaprune`` command sets this at start (training runs faster with it too); the
library's timing functions set it before they time, so a process that times a model keeps
it from then on. Elsewhere than glibc nothing is changed, nor where the environment sets
``ALPHAPRUNE_KEEP_FREED_MEMORY=0`` (for a process short of memory: what it freed stays
mapped, and its timings are then glibc's unsteady ones).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory", "allocator_state", "OPT_OUT"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 1 << 30          # no activation of a CPU model comes near it
_TRIM_THRESHOLD = (1 << 31) - 1    # the largest an int holds: never trim
OPT_OUT = "ALPHAPRUNE_KEEP_FREED_MEMORY"
_state: str | None = None


def keep_freed_memory() -> str:
    """Make glibc keep and reuse freed memory (idempotent); returns :func:`allocator_state`."""
    global _state
    if _state is None:
        if os.environ.get(OPT_OUT, "1").strip() == "0":
            _state = f"unchanged ({OPT_OUT}=0)"
        else:
            _state = _set_glibc() or "unchanged (not glibc)"
    return _state


def allocator_state() -> str:
    """What :func:`keep_freed_memory` did in this process ("not set" before it ran)."""
    return _state or "not set"


def _set_glibc() -> str | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) != 1 or \
            mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) != 1:
        return None
    return "glibc, freed memory kept"
