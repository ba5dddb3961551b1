#!/bin/bash
# BENCHMARKS 59: --final-ema on VGG-16/4 (section 1's pretrained model, retrained by its
# command), issue 14's cells: TARGET (default 0.5) of the FLOPs removed, 8 epochs x 5,000
# images. Arms: "0" and "1" are objective selection with --final-ema 0 / 1 (the same source),
# "tp" is Torch-Pruning L1 sized to the same FLOPs. Seeds decided before any ran; one thread
# per job, two jobs side by side. AP: the alphaprune command; CKPT: the pretrained model.
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1 OUT=${OUT:-/tmp/bench/ema_vgg}
one() {  # ARM SEED
  local extra=(--methods os-step --final-ema "$1")
  [ "$1" = tp ] && extra=(--methods tp-l1)
  "$AP" compare --checkpoint "$CKPT" --data ../shared/datasets/cifar10/train \
    --train-subset 5000 --budget 8 --targets "${TARGET:-0.5}" --match flops --step-size 0.25 \
    --train-seed "$2" "${extra[@]}" --no-progress --out "$OUT/$1_s$2" > "$OUT/$1_s$2.log" 2>&1
}
export -f one; export AP CKPT TARGET
mkdir -p "$OUT"
for s in ${SEEDS:-0 1 2 3}; do for arm in ${ARMS:-0 1 tp}; do echo "$arm $s"; done; done \
  | xargs -P 2 -L 1 bash -c 'one $0 $1'
