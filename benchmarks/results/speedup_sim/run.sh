#!/bin/bash
# BENCHMARKS.md section 20: --speedup's search on simulated timings, the same draws for two
# versions of the search. old_147b0ab_*: the search of commit 147b0ab (full correction by
# the last miss, out of iterations the closest not short of the target); new_*: Kesten's
# shrinking correction and the closest on either side. s045: section 18's noise (0.045,
# 10% outliers); s08: a noisier machine (0.08, 20% outliers).
set -eu  # run from the repository root; the rows go beside this script
OLD=${OLD:?a checkout of commit 147b0ab}  # e.g. git worktree add /tmp/old 147b0ab
export OMP_NUM_THREADS=1
sim=benchmarks/speedup_sim.py
res=$(dirname "$0")
PYTHONPATH=$OLD/src python $sim --searches 300 > "$res/old_147b0ab_s045.jsonl"
PYTHONPATH=src python $sim --searches 300 > "$res/new_s045.jsonl"
PYTHONPATH=$OLD/src python $sim --searches 300 --sigma 0.08 --outliers 0.2 > "$res/old_147b0ab_s08.jsonl"
PYTHONPATH=src python $sim --searches 300 --sigma 0.08 --outliers 0.2 > "$res/new_s08.jsonl"
