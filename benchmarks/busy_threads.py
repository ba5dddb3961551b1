"""How torch's OpenMP threads behave on a busy machine (BENCHMARKS.md section 52).

On a 2-core machine, a 2-thread torch process beside one other busy process (a second
one-thread job) spends its time in OpenMP spin-waits: every parallel op waits for the
thread whose core is taken. This times three workloads, each in a fresh
subprocess (OpenMP reads its settings when torch loads), under each thread setting, with
and without busy processes beside them, in interleaved rounds (medians):

- ``demo``: ``alphaprune demo`` end to end (a VGG-11 at width 0.25 on the digits);
- ``resnet20``: 12 SGD steps of the registry's resnet20 at batch 128 on random 32x32
  images (the first 2 not timed);
- ``infer1``: 300 forward passes of resnet20 at batch 1 in eval mode (the first 50 not
  timed): the small ops of a batch-1 latency measurement.

Settings: libgomp's default (as many threads as cores; a waiting thread spins 300,000
times before it sleeps: set as ``GOMP_SPINCOUNT=300000``, which any wait policy alphaprune
would choose leaves alone), ``OMP_WAIT_POLICY=PASSIVE`` (it sleeps at once),
``GOMP_SPINCOUNT=10000`` (a short spin), and ``OMP_NUM_THREADS=1``. A busy process is
a pure-Python loop (one core's worth of work).

    python benchmarks/busy_threads.py --rounds 3 --busy 0 1 > benchmarks/results/threads/busy.txt
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

SETTINGS = {"default": {"GOMP_SPINCOUNT": "300000"}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
            "spin10k": {"GOMP_SPINCOUNT": "10000"}, "one": {"OMP_NUM_THREADS": "1"}}
ENV_KEYS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
RESNET20 = """
import time, torch
from alphaprune.models.registry import create_model
m = create_model("resnet20", num_classes=10)
opt = torch.optim.SGD(m.parameters(), lr=0.01)
x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
for i in range(12):
    if i == 2:
        t = time.perf_counter()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(m(x), y).backward()
    opt.step()
print(time.perf_counter() - t)
"""
INFER1 = """
import time, torch
from alphaprune.models.registry import create_model
m = create_model("resnet20", num_classes=10).eval()
x = torch.randn(1, 3, 32, 32)
with torch.no_grad():
    for i in range(300):
        if i == 50:
            t = time.perf_counter()
        m(x)
print(time.perf_counter() - t)
"""


def _env(setting: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    return {**env, **SETTINGS[setting]}


def run_once(workload: str, setting: str) -> float:
    """Seconds the workload took in a fresh process under ``setting``."""
    if workload in ("resnet20", "infer1"):
        code = RESNET20 if workload == "resnet20" else INFER1
        out = subprocess.run([sys.executable, "-c", code], env=_env(setting), check=True,
                             capture_output=True, text=True).stdout
        return float(out.strip().splitlines()[-1])
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "alphaprune", "demo", "--out", tmp], env=_env(setting),
                       check=True, capture_output=True)
        return time.perf_counter() - t


def busy(n: int) -> list[subprocess.Popen]:
    """``n`` processes that each keep one core busy."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1], help="busy processes beside")
    ap.add_argument("--workloads", nargs="+", default=["resnet20", "infer1", "demo"])
    args = ap.parse_args()
    print(f"cores {os.cpu_count()}, python {sys.version.split()[0]}; seconds, median of {args.rounds}")
    for n in args.busy:
        hogs = busy(n)
        try:
            times = {(w, s): [] for w in args.workloads for s in SETTINGS}
            for _ in range(args.rounds):
                for key in times:  # interleaved: each round runs every cell once
                    times[key].append(run_once(*key))
            for (w, s), ts in times.items():
                print(f"busy {n}  {w:<9} {s:<8} {statistics.median(ts):8.2f}   "
                      + " ".join(f"{t:.2f}" for t in ts), flush=True)
        finally:
            for h in hogs:
                h.kill()


if __name__ == "__main__":
    main()
