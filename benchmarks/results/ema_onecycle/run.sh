#!/bin/bash
# --final-ema on the onecycle recipe (BENCHMARKS 61): resnet20 at 70% of the parameters,
# 30 epochs x 20,000 images, where the default recipe is onecycle (issue 16's CPU cell).
# Arms --final-ema 0 (onecycle's default) and 1 on the same seed: onecycle trains every epoch
# (no early stop), so both arms' live weights follow one trajectory and the difference is
# the average's alone. Two jobs side by side, one thread each.
# AP=<alphaprune at a fixed commit> CKPT=<section 30's resnet20> OUT=<dir> SEEDS="0 1" bash run.sh
set -u
cd "$(dirname "$0")/../../.."
AP=${AP:-alphaprune}; CKPT=${CKPT:-/tmp/bench/resnet20_e30/model.pt}
OUT=${OUT:-/tmp/bench/ema_onecycle}; SEEDS=${SEEDS:-0 1}
mkdir -p "$OUT"
for s in $SEEDS; do
  for e in 0 1; do
    OMP_NUM_THREADS=1 "$AP" prune --checkpoint "$CKPT" --data ../shared/datasets/cifar10/train \
      --train-subset 20000 --prune 0.7 --max-total-epochs 30 --final-ema "$e" --train-seed "$s" \
      --no-progress --out "$OUT/ema${e}_s$s" > "$OUT/ema${e}_s$s.log" 2>&1 &
  done
  wait
done
