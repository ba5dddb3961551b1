"""Does importing alphaprune before torch shorten OpenMP's spin-wait? (BENCHMARKS.md
section 52.) Beside one busy process (a pure-Python loop), 300 batch-1 forward passes of
resnet20 (the last 250 timed) in a fresh process that imports alphaprune first, and in one
that imports torch first; each twice, alternating. The environment's OpenMP settings are
removed so that alphaprune's default applies.

    python benchmarks/import_order.py > benchmarks/results/threads/import_order.txt
"""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import sys, time
if sys.argv[1] == "alphaprune-first":
    import alphaprune  # noqa: F401
import torch
from alphaprune.models.registry import create_model
from alphaprune.openmp import wait_policy
m = create_model("resnet20", num_classes=10).eval()
x = torch.randn(1, 3, 32, 32)
with torch.no_grad():
    for i in range(300):
        if i == 50:
            t = time.perf_counter()
        m(x)
print(f"{sys.argv[1]:<17} {time.perf_counter() - t:6.2f} s  ({wait_policy()})")
"""


def main() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        print(f"cores {os.cpu_count()}, one busy process beside; 250 batch-1 passes of resnet20")
        for _ in range(2):
            for order in ("alphaprune-first", "torch-first"):
                out = subprocess.run([sys.executable, "-c", PROBE, order], env=env, check=True,
                                     capture_output=True, text=True).stdout
                print(out.strip(), flush=True)
    finally:
        hog.kill()


if __name__ == "__main__":
    main()
