#!/bin/bash
# resnet20 at 50% of the FLOPs from the 30-epoch resnet20 (section 30's command), six seeds
# decided before any ran (0-5), objective selection and Torch-Pruning. One thread per job,
# two jobs side by side. What ran:
#   BENCHMARKS 34: src as of 43c2449 (session 25: /tmp/s25/ap runs a clone of it), into
#     /tmp/bench/r20x_e30_h. Seeds 0 and 1 repeat section 30's rows, which ran with src as
#     of a0c7668, before ship_bn_stats restored a ResNet's stem and stream BNs (0d6b0f7).
#   BENCHMARKS 55: AP=/tmp/bench/ap (a clone of 9b32472, which resolves --feature-distill 20
#     itself) OUT=/tmp/bench/r20x_e30b, from the retrained 30-epoch resnet20 (session 35).
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1 OUT=${OUT:-/tmp/bench/r20x_e30_h}
AP=${AP:-/tmp/s25/ap}
one() {
  "$AP" compare --checkpoint /tmp/bench/resnet20_e30/model.pt --data ../shared/datasets/cifar10/train \
    --train-subset 5000 --budget 8 --targets 0.5 --match flops --methods os-step,tp-l1 --step-size 0.25 \
    --train-seed "$1" --no-progress --out "$OUT/cmp_s$1" > "$OUT/s$1.log" 2>&1
}
export -f one; export AP
mkdir -p "$OUT"
printf '%s\n' ${SEEDS:-0 1 2 3 4 5} | xargs -P 2 -I{} bash -c 'one {}'
