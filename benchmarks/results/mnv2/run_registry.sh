#!/bin/bash
# The registry's MobileNetV2 for 32x32 images (`mobilenet_v2_cifar`, width 0.35), where the
# stem is a unit cut with the first block's depthwise conv: pretrained 8 epochs on the whole
# train split, then objective selection against Torch-Pruning at 50% of the parameters,
# 8 epochs on 5,000 images (section 8's protocol), seed 0, one thread per job.
# (session 23: /tmp/s23/p2 ran it from a clone of f1c1b6a, the commit after the registry model)
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1
D=../shared/datasets/cifar10/train
[ -f /tmp/bench/mnv2r_035/model.pt ] || alphaprune train --model mobilenet_v2_cifar --width 0.35 \
    --data $D --epochs 8 --no-progress --out /tmp/bench/mnv2r_035
alphaprune compare --checkpoint /tmp/bench/mnv2r_035/model.pt --data $D --train-subset 5000 --budget 8 \
    --targets 0.5 --step-size 0.25 --methods os-step,tp-l1 --train-seed 0 --no-progress --out /tmp/bench/mnv2r_cmp_s0
