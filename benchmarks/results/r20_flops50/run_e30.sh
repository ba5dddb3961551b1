#!/bin/bash
# resnet20 at 50% of the FLOPs (section 13's default row, section 23's protocol: 8 epochs on
# 5,000 images) from the 30-epoch resnet20 (section 30's teacher, test 0.8570) instead of
# the 12-epoch one: objective selection (auto widths, streams cut) against Torch-Pruning
# sized to the same FLOPs, seeds 0 and 1, one thread, beside one other job.
# (session 23: `alphaprune` from a clone of a0c7668 in /tmp/s23/p)
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1
for s in 0 1; do
  alphaprune compare --checkpoint /tmp/bench/resnet20_e30/model.pt --data ../shared/datasets/cifar10/train \
    --train-subset 5000 --budget 8 --targets 0.5 --match flops --methods os-step,tp-l1 --step-size 0.25 \
    --train-seed $s --no-progress --out /tmp/bench/r20x_e30/cmp_s$s
done
