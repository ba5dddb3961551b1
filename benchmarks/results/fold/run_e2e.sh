#!/bin/bash
# BENCHMARKS 57: issue 14's resnet20 cell (section 55's command, objective selection only)
# before and after the fold, side by side: for each seed the two jobs run at the same time,
# one thread each, so they share the machine's load. OLD and NEW are alphaprune commands
# running clones of the two commits (session 37: e286961 against 65dd6a9, a9c5f3f and 5063561, each a worktree run
# as `PYTHONPATH=<worktree>/src python -m alphaprune`).
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1 OUT=${OUT:-/tmp/bench/fold_e2e}
mkdir -p "$OUT"
for s in ${SEEDS:-0 1}; do
  for w in old new; do
    ap=$OLD; [ $w = new ] && ap=$NEW
    $ap compare --checkpoint /tmp/bench/resnet20_e30/model.pt --data ../shared/datasets/cifar10/train \
      --train-subset 5000 --budget 8 --targets 0.5 --match flops --methods os-step --step-size 0.25 \
      --train-seed "$s" --no-progress --out "$OUT/${w}_s$s" > "$OUT/${w}_s$s.log" 2>&1 &
  done
  wait
done
