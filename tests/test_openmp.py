"""alphaprune.openmp: importing alphaprune before torch shortens OpenMP's spin-wait,
unless the environment chose a wait policy or torch was loaded first (BENCHMARKS.md
section 52)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PROBE = """
import os, sys
if sys.argv[1] == "torch-first":
    import torch  # noqa: F401
import alphaprune  # noqa: F401
from alphaprune.openmp import wait_policy
print(os.environ.get("GOMP_SPINCOUNT"), "|", wait_policy())
"""


def _probe(order: str, **env) -> tuple[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", _PROBE, order], env={**base, **env},
                         capture_output=True, text=True, check=True).stdout
    spins, state = (s.strip() for s in out.strip().split("|"))
    return spins, state


def test_importing_alphaprune_first_sets_a_short_spin():
    assert _probe("alphaprune-first") == ("10000", "GOMP_SPINCOUNT=10000")


@pytest.mark.parametrize("env, spins", [({"GOMP_SPINCOUNT": "500"}, "500"),
                                        ({"OMP_WAIT_POLICY": "ACTIVE"}, "None")])
def test_a_wait_policy_from_the_environment_wins(env, spins):
    got, state = _probe("alphaprune-first", **env)
    assert got == spins and state.endswith("(environment)")
    assert f"{next(iter(env))}={next(iter(env.values()))}" in state


def test_nothing_changes_where_torch_was_loaded_first():
    spins, state = _probe("torch-first")
    assert spins == "None" and "torch was loaded before alphaprune" in state
