#!/bin/bash
# The registry's MobileNetV2 for 32x32 images (`mobilenet_v2_cifar`, width 0.35), where the
# stem is a unit cut with the first block's depthwise conv: pretrained 8 epochs on the whole
# train split, then objective selection against Torch-Pruning at 50% of the parameters and
# at 50% of the FLOPs, 8 epochs on 5,000 images (section 8's protocol), seeds 0 and 1, one
# thread per job, two jobs side by side.
# (session 23 started it from a clone of f1c1b6a and lost the machine after 4 of the 8
# pretraining epochs; session 25 resumed that training with --resume, two threads, alone,
# and ran the rows with /tmp/s25/ap2, a clone of 84b5ad6)
cd "$(dirname "$0")/../../.."  # the repository root
AP=${AP:-alphaprune}
D=../shared/datasets/cifar10/train
if [ ! -f /tmp/bench/mnv2r_035/model.pt ]; then
  R=; [ -d /tmp/bench/mnv2r_035/checkpoints ] && R=--resume
  OMP_NUM_THREADS=${TRAIN_THREADS:-1} "$AP" train --model mobilenet_v2_cifar --width 0.35 --data $D \
    --epochs 8 --no-progress --out /tmp/bench/mnv2r_035 $R || exit 1
fi
export OMP_NUM_THREADS=1 AP D
one() {  # one NAME SEED FLAGS...
  local name=$1 seed=$2; shift 2
  "$AP" compare --checkpoint /tmp/bench/mnv2r_035/model.pt --data $D --train-subset 5000 --budget 8 \
    --targets 0.5 --step-size 0.25 --methods os-step,tp-l1 "$@" --train-seed "$seed" --no-progress \
    --out "/tmp/bench/mnv2r_${name}_s$seed" > "/tmp/bench/mnv2r_${name}_s$seed.log" 2>&1
}
export -f one
[ "${SPEEDUP:-0}" = 1 ] ||
  printf '%s\n' "cmp 0" "cmp 1" "flops 0 --match flops" "flops 1 --match flops" | xargs -P 2 -I{} bash -c 'one {}'
# then, alone on the machine: --speedup 2 at batch 128 with training (section 22's command)
if [ "${SPEEDUP:-0}" = 1 ]; then
  OMP_NUM_THREADS=1 "$AP" prune --checkpoint /tmp/bench/mnv2r_035/model.pt --data $D --train-subset 5000 \
    --speedup 2 --latency-batch 128 --step-size 0.25 --patience 2 --max-epochs-per-phase 1 \
    --final-max-epochs 5 --final-patience 5 --max-total-epochs 8 --lr 0.01 --schedule constant \
    --train-seed ${SEED:-0} --no-progress --out /tmp/bench/mnv2r_sp2_s${SEED:-0} > /tmp/bench/mnv2r_sp2_s${SEED:-0}.log 2>&1
fi
