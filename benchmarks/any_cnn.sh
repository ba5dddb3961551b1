#!/bin/bash
# The Any-CNN benchmarks (BENCHMARKS.md section 7): resnet20 pretrained on the CIFAR-10
# images, then objective selection against Torch-Pruning L1 at 50% and 70% of the
# parameters removed (8 epochs on a stratified 5,000-image part of the train split, the
# section 5 protocol), and the VGG-16/4 rows of section 5 (65% and 90%) re-run after the
# redesign (graph-traced units, BlendedNet, the generic Torch-Pruning baseline).
#
#   DATA=../shared/datasets/cifar10/train OUT=/tmp/bench bash benchmarks/any_cnn.sh
#
# One thread per job, two jobs at a time; rerunning resumes (finished rows are skipped).
# ONLY=resnet20 or ONLY=vgg16 runs one of the two parts.
# Expects $OUT/vgg16_w025/model.pt from section 1's command; trains $OUT/resnet20 itself
# (12 epochs on the 40,000 training images, about 45 min on one thread).
set -eu
: "${DATA:?set DATA to the dataset}" "${OUT:?set OUT to a results folder}"
ALPHAPRUNE=${ALPHAPRUNE:-alphaprune}
export OMP_NUM_THREADS=1
COMMON=(--data "$DATA" --train-subset 5000 --budget 8 --step-size 0.25 --decay-rate 1.2
        --mu 0.25 --factor 0.25 --no-progress)

ONLY=${ONLY:-all}

rows() {  # checkpoint folder targets: os-step and tp-l1 side by side, then one merging pass
  local ckpt=$1 dir=$2 targets=$3
  "$ALPHAPRUNE" compare --checkpoint "$ckpt" "${COMMON[@]}" --targets "$targets" \
    --methods os-step --out "$dir" > "$dir.os.log" 2>&1 &
  sleep 60  # the first job writes pretrained.pt and its row before the second reads them
  "$ALPHAPRUNE" compare --checkpoint "$ckpt" "${COMMON[@]}" --targets "$targets" \
    --methods tp-l1 --out "$dir" > "$dir.tp.log" 2>&1
  wait
  # every row is finished: this pass re-measures all latencies side by side, writes tables
  "$ALPHAPRUNE" compare --checkpoint "$ckpt" "${COMMON[@]}" --targets "$targets" \
    --methods os-step,tp-l1 --out "$dir"
}

if [ "$ONLY" != vgg16 ]; then
  [ -f "$OUT/resnet20/model.pt" ] || "$ALPHAPRUNE" train --model resnet20 --data "$DATA" \
    --epochs 12 --no-progress --out "$OUT/resnet20"
  rows "$OUT/resnet20/model.pt" "$OUT/r20cmp" 0.5,0.7
fi
if [ "$ONLY" != resnet20 ]; then
  rows "$OUT/vgg16_w025/model.pt" "$OUT/vggcmp" 0.65,0.9
fi
