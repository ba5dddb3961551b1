#!/bin/bash
# resnet20 at 50% of the FLOPs (section 34's cell), objective selection only, distillation
# weight 1.0 (the teacher's soft labels alone) and 0.9 instead of the default 0.7, seeds 0
# and 1, against section 34's rows. One thread per job, two jobs side by side; src as of b34de24.
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1
one() {  # one WEIGHT SEED
  .venv/bin/alphaprune compare --checkpoint /tmp/bench/resnet20_e30/model.pt --data ../shared/datasets/cifar10/train \
    --train-subset 5000 --budget 8 --targets 0.5 --match flops --methods os-step --step-size 0.25 --distill "$1" \
    --train-seed "$2" --no-progress --out "/tmp/bench/r20x_kd/kd$1_s$2" > "/tmp/bench/r20x_kd/kd$1_s$2.log" 2>&1
}
export -f one
mkdir -p /tmp/bench/r20x_kd
printf '%s\n' "1.0 0" "1.0 1" "0.9 0" "0.9 1" | xargs -P 2 -L 1 bash -c 'one $0 $1'
