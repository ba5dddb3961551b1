#!/bin/bash
# resnet20 at 50% of the FLOPs from the 30-epoch resnet20: objective selection with another
# width choice than auto's (which picked the ratio widths with two streams cut), seeds 0 and
# 1: `--solver sensitivity` (auto's runner-up, lower loss on its search images) and
# `--no-prune-streams` (the streams whole, the inner convs cut deeper). One thread per job,
# two side by side. (session 25: /tmp/s25/ap runs a clone of 43c2449)
# Then, as the streams-whole row led auto's on test on both seeds (tied on validation),
# seeds 2-5 of it: ROWS2=1 bash run_e30_solver.sh
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1
AP=${AP:-/tmp/s25/ap}
one() {  # one NAME SEED FLAGS...
  local name=$1 seed=$2; shift 2
  "$AP" compare --checkpoint /tmp/bench/resnet20_e30/model.pt --data ../shared/datasets/cifar10/train \
    --train-subset 5000 --budget 8 --targets 0.5 --match flops --methods os-step --step-size 0.25 "$@" \
    --train-seed "$seed" --no-progress --out "/tmp/bench/r20x_e30_h/${name}_s$seed" \
    > "/tmp/bench/r20x_e30_h/${name}_s$seed.log" 2>&1
}
export -f one; export AP
if [ "${ROWS2:-0}" = 1 ]; then
  printf '%s\n' "whole 2 --no-prune-streams" "whole 3 --no-prune-streams" \
    "whole 4 --no-prune-streams" "whole 5 --no-prune-streams" | xargs -P 2 -I{} bash -c 'one {}'
  exit
fi
printf '%s\n' "sens 0 --solver sensitivity" "sens 1 --solver sensitivity" \
  "whole 0 --no-prune-streams" "whole 1 --no-prune-streams" | xargs -P 2 -I{} bash -c 'one {}'
