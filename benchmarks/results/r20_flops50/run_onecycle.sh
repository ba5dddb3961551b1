#!/bin/bash
# resnet20 at 50% of the FLOPs (section 23's protocol) with `--recipe onecycle`: straight to
# alpha = 0, distilled, one lr cycle up to 0.05 over the 8 epochs (full_budget.sh's onecycle
# row at this budget). Seed 0, one job beside another job.
# (session 22: /tmp/s22/ap is `alphaprune` run from a copy of src as of 3aa0d38)
cd /work/main
export OMP_NUM_THREADS=1
D=../shared/datasets/cifar10/train
d=/tmp/bench/r20x/onecycle_s0
/tmp/s22/ap prune --checkpoint /tmp/bench/resnet20/model.pt --data $D --train-subset 5000 --flops 0.5 --prune-streams \
  --recipe onecycle --step-size 1.0 --final-max-epochs 8 --final-patience 8 --max-total-epochs 8 \
  --lr 0.01 --schedule constant --final-lr 0.05 --final-schedule onecycle --train-seed 0 --no-progress --out $d
