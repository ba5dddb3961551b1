#!/bin/bash
# Residual streams cut (--prune-streams) on resnet20 at equal FLOPs (BENCHMARKS.md section
# 13): objective selection with the stream units against section 8's rows without them and
# Torch-Pruning sized to the same FLOPs. Same protocol as sections 8 and 10: 8 epochs on a
# stratified 5,000-image part of the train split, one thread per job, seeds 0 and 1.
#
#   DATA=../shared/datasets/cifar10/train OUT=/tmp/bench JOBS=2 bash benchmarks/streams.sh
#
# Expects $OUT/resnet20/model.pt (section 7). Rerunning resumes; then
# benchmarks/fast_table.py "$OUT/streams" re-measures every model's latency side by side.
set -eu
: "${DATA:?set DATA to the dataset}" "${OUT:?set OUT to a results folder}"
ALPHAPRUNE=${ALPHAPRUNE:-alphaprune}
export OMP_NUM_THREADS=1
COMMON="--data $DATA --train-subset 5000 --budget 8 --step-size 0.25 --no-progress"
R20="--checkpoint $OUT/resnet20/model.pt"

jobs() {  # one line per job: folder, then compare's own arguments
  for seed in 0 1; do
    echo "$OUT/streams/r20_streams_s$seed $R20 --targets 0.5,0.65,0.75 --match flops --methods os-step --prune-streams --train-seed $seed"
  done
  # Torch-Pruning at 75% of the FLOPs (50 and 65% are section 8's r20_tp_s*)
  for seed in 0 1; do
    echo "$OUT/streams/r20_tp75_s$seed $R20 --targets 0.75 --match flops --methods tp-l1 --balance 0 --train-seed $seed"
  done
}

mkdir -p "$OUT/streams"
jobs | xargs -P "${JOBS:-2}" -L 1 bash -c \
  'dir=$0; "'"$ALPHAPRUNE"'" compare "$@" '"$COMMON"' --out "$dir" > "$dir.log" 2>&1 || echo "FAILED: $dir"'
