#!/bin/bash
# MobileNetV2 (width 0.35) at equal FLOPs: objective selection (--match flops, so its
# residual streams are cut too) against Torch-Pruning's L1 cut sized to the same FLOPs,
# 50% of the FLOPs removed, 8 epochs on 5,000 images, seeds 0 and 1, one thread per job.
# The pretrained model is run.sh's, trained again (it was in /tmp and did not survive).
# (session 23: /tmp/s23/p ran it from a clone of a0c7668)
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1
D=../shared/datasets/cifar10/train
M=benchmarks/models/mobilenet_v2.py:mobilenet_v2
[ -f /tmp/bench/mnv2_035/model.pt ] || alphaprune train --model $M --model-kwargs '{"width": 0.35}' \
    --data $D --epochs 8 --no-progress --out /tmp/bench/mnv2_035
for s in 0 1; do
  alphaprune compare --checkpoint /tmp/bench/mnv2_035/model.pt --data $D --train-subset 5000 --budget 8 \
      --targets 0.5 --match flops --step-size 0.25 --methods os-step,tp-l1 --train-seed $s --no-progress \
      --out /tmp/bench/mnv2_flops_s$s
done
# then the side-by-side timing of seed 0's models (one thread, interleaved rounds, medians),
# twice, beside one training job (session 23):
mkdir -p /tmp/bench/mnv2_view && ln -sfn /tmp/bench/mnv2_flops_s0 /tmp/bench/mnv2_view/mnv2_flops_s0
for pass in "" 2; do python benchmarks/fast_table.py /tmp/bench/mnv2_view --out /tmp/bench/mnv2_view_summary$pass; done
