"""Objective selection against its peers: a thin wrapper of ``alphaprune compare``.

    python benchmarks/compare.py --checkpoint MODEL.pt --data ../shared/datasets/cifar10/train \
        --out runs/cmp [--targets 0.35,0.65,0.9] [--budget 30] [--quick]

Every option of ``alphaprune compare --help`` applies. Results: OUT/results.json,
results.csv, results.md. Rerun the same command to resume. The recorded results and their
exact commands are in BENCHMARKS.md (section 5).
"""

import sys

from alphaprune.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
