#!/bin/bash
# MobileNetV2 (CIFAR layout, width 0.35; benchmarks/models/mobilenet_v2.py) on the real
# images: pretrained 8 epochs on the whole train split, then objective selection against
# Torch-Pruning's L1 cut at 50% of the parameters removed, 8 epochs on 5,000 images
# (section 8's protocol), seeds 0 and 1, one thread per job.
# (session 22: /tmp/s22/ap ran the training from a copy of src as of 3aa0d38; /tmp/s22b/ap
#  the compare rows from a copy as of 1c696fb, the commit that cuts depthwise convs)
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1
D=../shared/datasets/cifar10/train
M=benchmarks/models/mobilenet_v2.py:mobilenet_v2
alphaprune inspect --model $M --model-kwargs '{"width": 0.35}' > /tmp/bench/mnv2_inspect.txt
alphaprune train --model $M --model-kwargs '{"width": 0.35}' --data $D --epochs 8 --no-progress \
    --out /tmp/bench/mnv2_035
for s in 0 1; do
  alphaprune compare --checkpoint /tmp/bench/mnv2_035/model.pt --data $D --train-subset 5000 --budget 8 \
      --targets 0.5 --step-size 0.25 --methods os-step,tp-l1 --train-seed $s --no-progress --out /tmp/bench/mnv2_cmp_s$s
done
