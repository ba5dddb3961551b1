#!/bin/bash
# resnet20 at 50% of the FLOPs (section 34's cell: 8 epochs x 5,000 images, the 30-epoch
# resnet20), objective selection's row only, with one of its options changed:
#   run_e30_option.sh OPTION VALUE...
# runs each VALUE on training seeds 0 and 1 (SEEDS="2 3 4 5": those instead), one thread per
# job, two jobs side by side, against section 34's default rows (--step-size 0.25, --distill
# 0.7, --temperature 4). What ran:
#   BENCHMARKS 38: run_e30_option.sh --step-size 0.5 1.0   (src as of 61a921e)
#                  run_e30_option.sh --distill 1.0 0.9     (src as of b34de24)
#   BENCHMARKS 39: run_e30_option.sh --temperature 2 8     (src as of 751f3fd)
#   BENCHMARKS 40: run_e30_option.sh --feature-distill 1 5 0.3 20 50 100  (src as of e9c42e3;
#                  from 20 on 4e18add, which adds the train_feature_loss column)
#   BENCHMARKS 41: EXTRA="--feature-distill 20" run_e30_option.sh --feature-schedule handover linear
#                  (src as of 73a2c00 for handover, 98c86f0 for linear; the option was
#                  removed after it)
#   BENCHMARKS 42: run_e30_option.sh --mixup 0.2 1.0  (src as of 8918d25; the option was
#                  removed after it)
#                  EXTRA="--methods os-step,tp-l1" run_e30_option.sh --batch-size 64
#                  (src as of 8918d25: the same as 2246556 without --mixup)
# EXTRA: options every run gets (after the row's own, so EXTRA="--methods os-step,tp-l1"
# adds the Torch-Pruning row; before OPTION). AP=echo prints the commands instead of
# running them (into the logs).
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1 AP=${AP:-.venv/bin/alphaprune} OPT=${1:?usage: run_e30_option.sh OPTION VALUE...}
shift
export DIR=/tmp/bench/r20x_${OPT#--}
one() {  # one VALUE SEED; the option given last wins over the row's default
  "$AP" compare --checkpoint /tmp/bench/resnet20_e30/model.pt --data ../shared/datasets/cifar10/train \
    --train-subset 5000 --budget 8 --targets 0.5 --match flops --methods os-step --step-size 0.25 \
    $EXTRA "$OPT" "$1" --train-seed "$2" --no-progress --out "$DIR/$1_s$2" > "$DIR/$1_s$2.log" 2>&1
}
export -f one
mkdir -p "$DIR"
for v in "$@"; do for s in ${SEEDS:-0 1}; do echo "$v $s"; done; done | xargs -P 2 -L 1 bash -c 'one $0 $1'
