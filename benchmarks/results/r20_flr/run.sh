#!/bin/bash
# BENCHMARKS 60: issue 14's resnet20 cell (50% of the FLOPs, 8 epochs x 5,000 images) from
# section 30's 30-epoch resnet20 retrained by its command, with today's defaults and one lever:
# the alpha = 0 phase's peak lr doubled (--final-lr 0.02) under the --final-ema default.
# Arms: "default" (os-step and tp-l1, one compare), "flr" (os-step --final-lr 0.02). Seeds 0-5
# decided before any ran; one thread per job, two jobs side by side. AP: alphaprune of the
# source named in BENCHMARKS (a worktree at a fixed commit).
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1 OUT=${OUT:-/tmp/bench/r20_flr}
one() {  # ARM SEED
  local extra=(--methods os-step,tp-l1)
  [ "$1" = flr ] && extra=(--methods os-step --final-lr 0.02)
  "$AP" compare --checkpoint /tmp/bench/resnet20_e30/model.pt --data ../shared/datasets/cifar10/train \
    --train-subset 5000 --budget 8 --targets 0.5 --match flops --step-size 0.25 \
    --train-seed "$2" "${extra[@]}" --no-progress --out "$OUT/$1_s$2" > "$OUT/$1_s$2.log" 2>&1
}
export -f one; export AP
mkdir -p "$OUT"
for s in ${SEEDS:-0 1 2 3 4 5}; do for arm in ${ARMS:-default flr}; do echo "$arm $s"; done; done \
  | xargs -P 2 -L 1 bash -c 'one $0 $1'
