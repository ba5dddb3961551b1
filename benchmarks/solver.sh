#!/bin/bash
# The width solvers and the FastNAS peer (BENCHMARKS.md section 10): objective selection
# with --solver sensitivity against the ratio rows of section 8 at equal FLOPs, NVIDIA
# ModelOpt FastNAS at equal FLOPs and equal parameters, and the solvers at equal measured
# latency (--match latency, batch 128). Same protocol as section 8: 8 epochs on a stratified
# 5,000-image part of the train split, one thread per job.
#
#   DATA=../shared/datasets/cifar10/train OUT=/tmp/bench JOBS=2 bash benchmarks/solver.sh
#
# Expects $OUT/vgg16_w025/model.pt and $OUT/resnet20/model.pt (sections 1 and 7). FastNAS
# needs the peers extra (make peers). Rerunning resumes; then benchmarks/fast_table.py
# re-measures every model's latency side by side and writes the table and Pareto plots.
set -eu
: "${DATA:?set DATA to the dataset}" "${OUT:?set OUT to a results folder}"
ALPHAPRUNE=${ALPHAPRUNE:-alphaprune}
export OMP_NUM_THREADS=1
COMMON="--data $DATA --train-subset 5000 --budget 8 --step-size 0.25 --no-progress"
VGG="--checkpoint $OUT/vgg16_w025/model.pt"
R20="--checkpoint $OUT/resnet20/model.pt"

jobs() {  # one line per job: folder, then compare's own arguments
  for seed in 0 1; do
    echo "$OUT/fast/vgg_sens_s$seed $VGG --targets 0.5,0.75 --match flops --methods os-step --solver sensitivity --train-seed $seed"
    echo "$OUT/fast/r20_sens_s$seed $R20 --targets 0.5,0.65 --match flops --methods os-step --solver sensitivity --train-seed $seed"
  done
  # FastNAS sized to the uniform widths' FLOPs (the default when these ran)
  echo "$OUT/fast/vgg_fastnas_s0 $VGG --targets 0.5,0.75 --match flops --methods modelopt-fastnas --balance 0 --train-seed 0"
  echo "$OUT/fast/r20_fastnas_s0 $R20 --targets 0.5,0.65 --match flops --methods modelopt-fastnas --balance 0 --train-seed 0"
  echo "$OUT/fast/vgg_lat_sens $VGG --targets 0.5 --match latency --latency-batch 128 --methods os-step,tp-l1 --solver sensitivity --train-seed 0"
  echo "$OUT/fast/vgg_lat_ratio $VGG --targets 0.5 --match latency --latency-batch 128 --methods os-step,tp-l1 --solver ratio --train-seed 0"
  echo "$OUT/fast/vgg_p65 $VGG --targets 0.65 --match params --methods os-step,modelopt-fastnas,tp-l1 --train-seed 0"
  echo "$OUT/fast/vgg_p65_sens $VGG --targets 0.65 --match params --methods os-step --solver sensitivity --train-seed 0"
  echo "$OUT/fast/r20_p50 $R20 --targets 0.5 --match params --methods os-step,tp-l1 --train-seed 0"
  echo "$OUT/fast/r20_p50_fastnas $R20 --targets 0.5 --match params --methods modelopt-fastnas --train-seed 0"
}

mkdir -p "$OUT/fast"
jobs | xargs -P "${JOBS:-2}" -L 1 bash -c \
  'dir=$0; "'"$ALPHAPRUNE"'" compare "$@" '"$COMMON"' --out "$dir" > "$dir.log" 2>&1 || echo "FAILED: $dir"'
# the table of section 10 measures the seed-0 folders of both sections only (fast_table.py
# reads every */results.jsonl below the folder it is given): a folder of links to them
mkdir -p "$OUT/view"
for d in vgg_b0_s0 vgg_b1_s0 vgg_tp_s0 vgg_sens_s0 vgg_fastnas_s0 vgg_lat_ratio vgg_lat_sens \
         vgg_p65 vgg_p65_sens r20_b0_s0 r20_b1_s0 r20_tp_s0 r20_sens_s0 r20_fastnas_s0; do
  ln -sfn "$OUT/fast/$d" "$OUT/view/$d"
done
"${PYTHON:-python}" "$(dirname "$0")/fast_table.py" "$OUT/view" --out "$OUT/view_summary"
