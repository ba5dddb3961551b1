"""Does importing alphaprune before torch shorten OpenMP's spin-wait? (BENCHMARKS.md
section 52.) Beside one busy process (a pure-Python loop), 300 batch-1 forward passes of
resnet20 (the last 250 timed; ``busy_threads.py``'s ``infer1``) in a fresh process that
imports alphaprune first, and in one that imports torch first; five times each,
alternating. The environment's OpenMP settings are removed so that alphaprune's default
applies.

    python benchmarks/import_order.py > benchmarks/results/threads/import_order.txt
"""

from __future__ import annotations

import os
import subprocess
import sys

from busy_threads import INFER1  # this folder: python benchmarks/import_order.py

# the batch-1 workload of busy_threads.py, after the import under test
PROBE = ("import sys\nif sys.argv[1] == 'alphaprune-first':\n    import alphaprune\n" + INFER1
         + "from alphaprune.openmp import wait_policy\nprint(wait_policy())\n")


ROUNDS = 5


def main() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        print(f"cores {os.cpu_count()}, one busy process beside; 250 batch-1 passes of resnet20")
        for _ in range(ROUNDS):
            for order in ("alphaprune-first", "torch-first"):
                out = subprocess.run([sys.executable, "-c", PROBE, order], env=env, check=True,
                                     capture_output=True, text=True).stdout.split("\n")
                print(f"{order:<17} {float(out[0]):6.2f} s  ({out[1]})", flush=True)
    finally:
        hog.kill()


if __name__ == "__main__":
    main()
