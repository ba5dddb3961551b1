"""torch's CPU threads on a busy machine: a short spin before a waiting thread sleeps.

torch runs each CPU op on OpenMP threads (libgomp in the PyTorch wheels). By default a
thread that waits for the others spins about 300,000 times before it sleeps. When another
job holds one of the cores, every op waits for the thread whose core is taken while its
peers spin through their time slices, and training runs many times slower than the lost
core explains. A short spin keeps the idle machine's speed and recovers part of that (how
much varies from run to run); sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) recovers
more but slows the idle machine several-fold at batch 1 (measured: BENCHMARKS.md section
52). One thread (``OMP_NUM_THREADS=1``) is the fastest setting whenever another job
holds a core.

OpenMP reads its settings once, when torch loads, so the ``alphaprune`` package sets
``GOMP_SPINCOUNT=10000`` on import, before it imports torch, unless the environment sets
``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` (yours win). Where torch was imported first (a
script that imports torch, then alphaprune) nothing changes. The latency table's cache key
and the timings' records carry :func:`wait_policy`.
"""

from __future__ import annotations

import os
import sys

__all__ = ["SPINS", "short_spin", "wait_policy"]

SPINS = 10_000
_KEYS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
_state: str | None = None


def short_spin() -> str:
    """Set ``GOMP_SPINCOUNT`` to :data:`SPINS` if torch is not loaded yet and the
    environment sets no wait policy of its own (idempotent); returns :func:`wait_policy`."""
    global _state
    if _state is None:
        given = [f"{k}={os.environ[k]}" for k in _KEYS if k in os.environ]
        if given:
            _state = ", ".join(given) + " (environment)"
        elif "torch" in sys.modules:
            _state = "OpenMP default (torch was loaded before alphaprune)"
        else:
            os.environ["GOMP_SPINCOUNT"] = str(SPINS)
            _state = f"GOMP_SPINCOUNT={SPINS}"
    return _state


def wait_policy() -> str:
    """How long torch's waiting OpenMP threads spin in this process, and who chose it."""
    return short_spin()
