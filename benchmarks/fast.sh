#!/bin/bash
# The Fast benchmarks (BENCHMARKS.md section 8): objective selection against Torch-Pruning L1
# at equal FLOPs (`compare --match flops`), VGG-16/4 at 50% and 75% of the FLOPs removed and
# resnet20 at 50% and 65% (69% is the most a CIFAR ResNet's inner convs can remove), with
# the width balance under a FLOPs target measured (0, 0.5, 1). 8 epochs on a stratified
# 5,000-image part of the train split (the section 5 protocol), one seed per cell unless
# SEEDS says otherwise.
#
#   DATA=../shared/datasets/cifar10/train OUT=/tmp/bench bash benchmarks/fast.sh
#
# Expects $OUT/vgg16_w025/model.pt and $OUT/resnet20/model.pt (section 1's and section 7's
# commands). One thread per job, JOBS (2) at a time, each in its own folder (rerunning
# resumes); then benchmarks/fast_table.py re-measures every model's latency side by side
# with nothing else running and writes the table and the Pareto plot.
set -eu
: "${DATA:?set DATA to the dataset}" "${OUT:?set OUT to a results folder}"
ALPHAPRUNE=${ALPHAPRUNE:-alphaprune}
SEEDS=${SEEDS:-0}
export OMP_NUM_THREADS=1
COMMON="--data $DATA --train-subset 5000 --budget 8 --step-size 0.25 --match flops --no-progress"

jobs() {  # one line per job, longest first: folder, then compare's own arguments
  for seed in $SEEDS; do
    for b in 0 1; do
      echo "$OUT/fast/r20_b${b}_s$seed --checkpoint $OUT/resnet20/model.pt --targets 0.5,0.65 --methods os-step --balance $b --train-seed $seed"
    done
    for b in 0 0.5 1; do
      echo "$OUT/fast/vgg_b${b}_s$seed --checkpoint $OUT/vgg16_w025/model.pt --targets 0.5,0.75 --methods os-step --balance $b --train-seed $seed"
    done
    # Torch-Pruning is sized to objective selection's uniform widths (--balance 0: the
    # default of --flops when these ran; today's default is --solver auto)
    echo "$OUT/fast/r20_tp_s$seed --checkpoint $OUT/resnet20/model.pt --targets 0.5,0.65 --methods tp-l1 --balance 0 --train-seed $seed"
    echo "$OUT/fast/vgg_tp_s$seed --checkpoint $OUT/vgg16_w025/model.pt --targets 0.5,0.75 --methods tp-l1 --balance 0 --train-seed $seed"
  done
}

mkdir -p "$OUT/fast"
jobs | xargs -P "${JOBS:-2}" -L 1 bash -c \
  'dir=$0; "'"$ALPHAPRUNE"'" compare "$@" '"$COMMON"' --out "$dir" > "$dir.log" 2>&1 || echo "FAILED: $dir"'
"${PYTHON:-python}" "$(dirname "$0")/fast_table.py" "$OUT/fast" --out "$OUT/fast/summary"
