#!/bin/bash
# Residual streams cut (--prune-streams) on resnet20 at equal FLOPs (BENCHMARKS.md section
# 13): objective selection with the stream units against section 8's rows without them and
# Torch-Pruning sized to the same FLOPs. Same protocol as sections 8 and 10: 8 epochs on a
# stratified 5,000-image part of the train split, one thread per job, seeds 0 and 1.
#
#   DATA=../shared/datasets/cifar10/train OUT=/tmp/bench JOBS=2 bash benchmarks/streams.sh
#
# Expects $OUT/resnet20/model.pt (section 8) and the $OUT/fast/r20_* folders of sections 8 and 10. Rerunning
# resumes; the last step times every model side by side twice (fast_table.py, into
# $OUT/streams_view_summary and $OUT/streams_view_summary2): run it on an idle machine.
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
  # the uniform ratio with the streams cut alike (auto keeps them whole at 50 and 65%)
  for seed in 0 1; do
    echo "$OUT/streams/r20_streams_uni_s$seed $R20 --targets 0.5,0.65 --match flops --methods os-step --prune-streams --solver ratio --balance 0 --train-seed $seed"
  done
  # a parameter target (balance 1, the --prune default) beside section 10's r20_p50
  echo "$OUT/streams/r20_streams_p50 $R20 --targets 0.5 --match params --methods os-step --prune-streams --train-seed 0"
  # Torch-Pruning at 75% of the FLOPs (50 and 65% are section 8's r20_tp_s*)
  for seed in 0 1; do
    echo "$OUT/streams/r20_tp75_s$seed $R20 --targets 0.75 --match flops --methods tp-l1 --balance 0 --prune-streams --train-seed $seed"
  done
}

mkdir -p "$OUT/streams"
jobs | xargs -P "${JOBS:-2}" -L 1 bash -c \
  'dir=$0; "'"$ALPHAPRUNE"'" compare "$@" '"$COMMON"' --out "$dir" > "$dir.log" 2>&1 || echo "FAILED: $dir"'
# the speed table: the seed-0 folders of this section beside section 8's resnet20 rows
# without streams (uniform widths, Torch-Pruning at 50 / 65%), timed side by side on an
# otherwise idle machine
mkdir -p "$OUT/streams_view"
for d in r20_streams_s0 r20_streams_uni_s0 r20_tp75_s0; do ln -sfn "$OUT/streams/$d" "$OUT/streams_view/$d"; done
for d in r20_b0_s0 r20_tp_s0 r20_sens_s0; do ln -sfn "$OUT/fast/$d" "$OUT/streams_view/$d"; done
for pass in "" 2; do
  "${PYTHON:-python}" "$(dirname "$0")/fast_table.py" "$OUT/streams_view" --out "$OUT/streams_view_summary$pass"
done
# --speedup 2 at batch 128 without and with the streams, one after the other (each times
# candidates and checks the result side by side: nothing else may run)
for s in no-prune-streams prune-streams; do
  "$ALPHAPRUNE" prune --checkpoint "$OUT/resnet20/model.pt" --data "$DATA" --train-subset 5000 \
    --speedup 2 --latency-batch 128 --step-size 0.25 --patience 2 --max-epochs-per-phase 1 \
    --final-max-epochs 5 --final-patience 5 --max-total-epochs 8 --lr 0.01 --schedule constant \
    --no-progress --$s --out "$OUT/sp_r20_$s" > "$OUT/sp_r20_$s.log" 2>&1 || echo "FAILED: sp_r20_$s"
done
