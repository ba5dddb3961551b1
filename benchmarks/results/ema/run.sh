#!/bin/bash
# BENCHMARKS 58: resnet20 at 50% of the FLOPs (section 55's cell, from the retrained 30-epoch
# resnet20), objective selection only, with and without --final-ema, seeds 0-5 decided before
# any ran. Torch-Pruning's rows are section 55's (its source is unchanged since).
# AP_BASE runs a clone of the source before --final-ema, AP a clone with it; one thread per
# job, two jobs side by side. TARGET (default 0.5): the share removed, of MATCH (default flops);
# SUBSET (default 5000): training images.
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1 OUT=${OUT:-/tmp/bench/ema}
one() {  # ARM SEED
  local ap=$AP extra=(--final-ema "$1")
  [ "$1" = base ] && ap=$AP_BASE extra=()
  "$ap" compare --checkpoint /tmp/bench/resnet20_e30/model.pt --data ../shared/datasets/cifar10/train \
    --train-subset ${SUBSET:-5000} --budget 8 --targets ${TARGET:-0.5} --match ${MATCH:-flops} --methods os-step --step-size 0.25 \
    --train-seed "$2" "${extra[@]}" --no-progress --out "$OUT/$1_s$2" > "$OUT/$1_s$2.log" 2>&1
}
export -f one; export AP AP_BASE TARGET SUBSET MATCH
mkdir -p "$OUT"
for s in ${SEEDS:-0 1 2 3 4 5}; do for arm in ${ARMS:-base 1}; do echo "$arm $s"; done; done \
  | xargs -P 2 -L 1 bash -c 'one $0 $1'
