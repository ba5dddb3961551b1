#!/bin/bash
# resnet20 at 50% of the FLOPs (section 34's cell), objective selection only, distillation
# temperature 2 and 8 instead of the default 4 (compare --temperature, new in session 27),
# seeds 0 and 1, against section 34's rows. One thread per job, two jobs side by side.
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1
one() {  # one TEMPERATURE SEED
  .venv/bin/alphaprune compare --checkpoint /tmp/bench/resnet20_e30/model.pt --data ../shared/datasets/cifar10/train \
    --train-subset 5000 --budget 8 --targets 0.5 --match flops --methods os-step --step-size 0.25 --temperature "$1" \
    --train-seed "$2" --no-progress --out "/tmp/bench/r20x_t/t$1_s$2" > "/tmp/bench/r20x_t/t$1_s$2.log" 2>&1
}
export -f one
mkdir -p /tmp/bench/r20x_t
printf '%s\n' "2 0" "2 1" "8 0" "8 1" | xargs -P 2 -L 1 bash -c 'one $0 $1'
