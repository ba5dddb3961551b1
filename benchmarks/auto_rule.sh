#!/bin/bash
# BENCHMARKS.md section 16: auto's one-standard-error rule. What auto chooses (every
# candidate's score, its paired standard error to the top score, the activation elements its
# fused network writes, and its measured speed-up at batch 128) on the cells of sections 10
# and 13, then the resnet20 65%-of-the-FLOPs cell trained with the new default (seed 0), and
# resnet20 --speedup 1.5 at batch 128 with the streams whole and cut.
#
#   DATA=../shared/datasets/cifar10/train OUT=/tmp/bench bash benchmarks/auto_rule.sh
#
# $OUT/resnet20/model.pt and $OUT/vgg16_w025/model.pt: the pretrained models of section 8
# (trained with the commands of sections 7 and 1). One job at a time, one thread; about 45
# minutes.
set -eu
: "${DATA:?set DATA to the dataset}" "${OUT:?set OUT to a results folder}"
ALPHAPRUNE=${ALPHAPRUNE:-alphaprune}
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=1
here=$(dirname "$0")
R=$OUT/auto_rule
mkdir -p "$R"
choice() { "$PYTHON" "$here/auto_choice.py" "$@" --data "$DATA" --time 128; }
choice "$OUT/resnet20/model.pt" flops 0.5,0.65,0.75 --prune-streams > "$R/auto_choice_resnet20_flops_streams.txt"
choice "$OUT/resnet20/model.pt" flops 0.5,0.65 > "$R/auto_choice_resnet20_flops.txt"
choice "$OUT/vgg16_w025/model.pt" flops 0.5,0.75 > "$R/auto_choice_vgg16_w025_flops.txt"
# parameter targets (scores only)
"$PYTHON" "$here/auto_choice.py" "$OUT/vgg16_w025/model.pt" params 0.65,0.9 --data "$DATA" \
  > "$R/auto_choice_vgg16_w025_params.txt"
"$PYTHON" "$here/auto_choice.py" "$OUT/resnet20/model.pt" params 0.5,0.7 --data "$DATA" \
  > "$R/auto_choice_resnet20_params.txt"
# --flops' defaults: --solver auto, --prune-streams
"$ALPHAPRUNE" compare --checkpoint "$OUT/resnet20/model.pt" --targets 0.65 --match flops \
  --methods os-step --train-seed 0 --data "$DATA" --train-subset 5000 --budget 8 \
  --step-size 0.25 --no-progress --out "$R/r20_default_s0" > "$R/r20_default_s0.log" 2>&1
for s in no-prune-streams prune-streams; do
  "$ALPHAPRUNE" prune --checkpoint "$OUT/resnet20/model.pt" --data "$DATA" --train-subset 5000 \
    --speedup 1.5 --latency-batch 128 --step-size 0.25 --patience 2 --max-epochs-per-phase 1 \
    --final-max-epochs 5 --final-patience 5 --max-total-epochs 8 --lr 0.01 --schedule constant \
    --no-progress --$s --out "$R/sp15_r20_$s" > "$R/sp15_r20_$s.log" 2>&1
done
