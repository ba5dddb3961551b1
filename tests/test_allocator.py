"""alphaprune.allocator: glibc keeps freed memory, so a tensor allocated again is not
page-faulted in again (what made CPU timings unsteady: BENCHMARKS.md section 24)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from alphaprune.allocator import OPT_OUT, allocator_state, keep_freed_memory
from alphaprune.latency import machine_key

_FAULTS = """
import resource, sys, torch
from alphaprune.allocator import keep_freed_memory
print(keep_freed_memory(), file=sys.stderr)  # the opt-out leaves glibc as it comes
for _ in range(12):  # kept memory settles after a few rounds (glibc's alignment slack)
    x = torch.empty(9 << 20).fill_(1)   # 36 MiB: above any threshold glibc moves to itself
    del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    x = torch.empty(9 << 20).fill_(1)
    del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


def _faults(mode: str) -> tuple[int, str]:
    env = {"OMP_NUM_THREADS": "1", "PATH": ""}
    if mode == "default":
        env[OPT_OUT] = "0"
    out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True,
                         check=True, env=env)
    return int(out.stdout.strip()), out.stderr.strip()


@glibc
def test_kept_memory_is_reused_without_page_faults():
    pages = 10 * (36 << 20) // 4096  # what faulting every allocation in afresh would take
    (default, opted_out), (kept, state) = _faults("default"), _faults("keep")
    assert f"unchanged ({OPT_OUT}=0)" in opted_out and "glibc, freed memory kept" in state
    assert default > pages // 2     # glibc's default maps each one afresh (or this is moot)
    assert kept < pages // 50


@glibc
def test_keep_freed_memory_is_idempotent_and_recorded():
    state = keep_freed_memory()
    assert state == "glibc, freed memory kept"
    assert keep_freed_memory() == state == allocator_state()
    assert machine_key(1)["allocator"] == state  # a latency table measured otherwise is stale
