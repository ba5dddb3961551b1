#!/bin/bash
# resnet20 at 50% of the FLOPs (section 34's cell), objective selection only, with a coarser
# alpha schedule: --step-size 0.5 (one alpha > 0 phase) and 1.0 (straight to alpha = 0 with
# the hand-over's lr, not onecycle), seeds 0 and 1, against section 34's rows (step 0.25).
# One thread per job, two jobs side by side; src as of 61a921e.
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1
one() {  # one STEP SEED
  .venv/bin/alphaprune compare --checkpoint /tmp/bench/resnet20_e30/model.pt --data ../shared/datasets/cifar10/train \
    --train-subset 5000 --budget 8 --targets 0.5 --match flops --methods os-step --step-size "$1" \
    --train-seed "$2" --no-progress --out "/tmp/bench/r20x_steps/st$1_s$2" > "/tmp/bench/r20x_steps/st$1_s$2.log" 2>&1
}
export -f one
mkdir -p /tmp/bench/r20x_steps
printf '%s\n' "0.5 0" "1.0 0" "0.5 1" "1.0 1" | xargs -P 2 -L 1 bash -c 'one $0 $1'
