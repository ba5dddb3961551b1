#!/bin/bash
# resnet20 at 50% of the FLOPs (section 23's protocol): objective selection on the labels
# alone (--distill 0), seeds 0 and 1, one job at a time beside one other job.
# (session 22: /tmp/s22/ap is `alphaprune` run from a copy of src as of 3aa0d38)
cd /work/main
export OMP_NUM_THREADS=1
D=../shared/datasets/cifar10/train
COMMON="--checkpoint /tmp/bench/resnet20/model.pt --data $D --train-subset 5000 --budget 8 --targets 0.5 --match flops --no-progress --methods os-step --prune-streams --step-size 0.25"
for s in 0 1; do
  dir=/tmp/bench/r20x/os_kd0_s$s
  /tmp/s22/ap compare $COMMON --distill 0 --train-seed $s --out $dir > $dir.log 2>&1 || echo "FAILED: $dir"
done
