#!/bin/bash
# BENCHMARKS 58: Torch-Pruning at 75% of the FLOPs of the retrained 30-epoch resnet20, sized to
# objective selection's widths (the cell of run.sh with TARGET=0.75), seeds 0-2. AP runs a
# clone of the source (its Torch-Pruning path is unchanged by --final-ema); one thread per job,
# two side by side.
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1 OUT=${OUT:-/tmp/bench/tp75}
one() {
  "$AP" compare --checkpoint /tmp/bench/resnet20_e30/model.pt --data ../shared/datasets/cifar10/train \
    --train-subset 5000 --budget 8 --targets 0.75 --match flops --methods tp-l1 --step-size 0.25 \
    --train-seed "$1" --no-progress --out "$OUT/tp_s$1" > "$OUT/tp_s$1.log" 2>&1
}
export -f one; export AP
mkdir -p "$OUT"
printf '%s\n' ${SEEDS:-0 1 2} | xargs -P 2 -I{} bash -c 'one {}'
