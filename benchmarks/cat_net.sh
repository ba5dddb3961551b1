#!/bin/bash
# Pruning a user model of benchmarks/models/NAME.py against Torch-Pruning (BENCHMARKS.md
# sections 44, 46 and 48: inception, squeezenet, googlenet, mobilenet_v3), trained 15
# epochs on a stratified 10,000-image part of the train split, then objective selection (os-step) against
# Torch-Pruning L1 at 50% of the parameters and at 50% of the FLOPs removed, 8 epochs on
# 5,000 images (the section 5 protocol), training seeds 0 and 1; one thread per job, two
# jobs side by side.
#
#   DATA=../shared/datasets/cifar10/train OUT=/tmp/bench/squeezenet_bench bash benchmarks/cat_net.sh squeezenet
#
# ROWS (default "params:0 params:1 flops:0 flops:1"): MATCH:SEED pairs to run. METHODS
# (default os-step,tp-l1): compare's --methods. TARGET (default 0.5): the share removed;
# another target's folders are named MATCH<TARGET>_sSEED. EXTRA: more compare options.
# Rerunning resumes (compare skips finished rows; the trained model is kept).
set -eu
NAME=${1:?name the model: a file of benchmarks/models/, without .py}
: "${DATA:?set DATA to the dataset}" "${OUT:?set OUT to a results folder}"
export DATA OUT OMP_NUM_THREADS=1 AP=${AP:-alphaprune}
MODEL=benchmarks/models/$NAME.py:$NAME
mkdir -p "$OUT"
[ -f "$OUT/train/model.pt" ] || "$AP" train --model "$MODEL" --data "$DATA" --train-subset 10000 \
  --epochs 15 --no-progress --out "$OUT/train" > "$OUT/train.log" 2>&1
one() {  # one MATCH:SEED
  local match=${1%%:*} seed=${1##*:} target=${TARGET:-0.5}
  local name=$match$([ "$target" = 0.5 ] || echo "$target")_s$seed
  "$AP" compare --checkpoint "$OUT/train/model.pt" --data "$DATA" --train-subset 5000 --budget 8 \
    --targets "$target" --match "$match" --methods "${METHODS:-os-step,tp-l1}" --step-size 0.25 --train-seed "$seed" \
    --no-progress ${EXTRA:-} --out "$OUT/$name" > "$OUT/$name.log" 2>&1
}
export -f one
printf '%s\n' ${ROWS:-params:0 params:1 flops:0 flops:1} | xargs -P 2 -L 1 bash -c 'one "$0"'
