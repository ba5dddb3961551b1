#!/bin/bash
# The auto solver's score with a short training of each candidate (--auto-steps, BENCHMARKS.md
# section 14): what each candidate scores untrained and after 40 and 160 steps, on every
# model and target whose trained outcome sections 10 and 13 measured, then the trained rows
# that settle the cells where the new score picks another allocation than the old one.
# Same protocol as sections 8, 10 and 13: 8 epochs on a stratified 5,000-image part of the
# train split, one thread per job, seeds 0 and 1.
#
#   DATA=../shared/datasets/cifar10/train OUT=/tmp/bench JOBS=2 bash benchmarks/auto_steps.sh
#
# Expects $OUT/vgg16_w025/model.pt (section 1) and $OUT/resnet20/model.pt (section 7).
# Rerunning resumes the training rows; the scores are recomputed.
set -eu
: "${DATA:?set DATA to the dataset}" "${OUT:?set OUT to a results folder}"
ALPHAPRUNE=${ALPHAPRUNE:-alphaprune}
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=1
HERE=$(cd "$(dirname "$0")" && pwd)
DIR=$OUT/auto_steps
mkdir -p "$DIR"
VGG=$OUT/vgg16_w025/model.pt R20=$OUT/resnet20/model.pt

scores() {  # one line per job: output name, then auto_choice.py's arguments
  echo "vgg_flops $VGG flops 0.5,0.75 --steps 40,160"
  echo "r20_flops_streams $R20 flops 0.65,0.5,0.75 --prune-streams --steps 40,160"
  echo "r20_flops $R20 flops 0.5,0.65 --steps 40"
  echo "vgg_params $VGG params 0.65,0.9 --steps 40"
}
scores | xargs -P "${JOBS:-2}" -L 1 bash -c \
  'name=$0; '"$PYTHON"' '"$HERE"'/auto_choice.py "$@" --data '"$DATA"' > '"$DIR"'/$name.txt'

COMMON="--data $DATA --train-subset 5000 --budget 8 --step-size 0.25 --no-progress"
rows() {  # one line per job: folder, then compare's own arguments
  for seed in 0 1; do
    # resnet20 75% with the streams: 40 steps pick the sensitivity widths (untrained: the
    # ratio, section 13's row)
    echo "$DIR/r20_sens75_s$seed --checkpoint $R20 --targets 0.75 --match flops --methods os-step --prune-streams --solver sensitivity --train-seed $seed"
  done
}
rows | xargs -P "${JOBS:-2}" -L 1 bash -c \
  'dir=$0; "'"$ALPHAPRUNE"'" compare "$@" '"$COMMON"' --out "$dir" > "$dir.log" 2>&1 || echo "FAILED: $dir"'
