#!/bin/bash
# resnet20 at 50% of the FLOPs from the 30-epoch resnet20 (section 30) with `--recipe
# onecycle` (run_onecycle.sh's command on the stronger teacher): straight to alpha = 0,
# distilled throughout, one lr cycle up to 0.05 over the 8 epochs. Seeds 0 and 1 first;
# more only if both lead run_e30_seeds.sh's rows. One thread per job, two side by side.
# (session 25: /tmp/s25/ap runs a clone of 43c2449)
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_NUM_THREADS=1
AP=${AP:-/tmp/s25/ap}
one() {
  "$AP" prune --checkpoint /tmp/bench/resnet20_e30/model.pt --data ../shared/datasets/cifar10/train \
    --train-subset 5000 --flops 0.5 --prune-streams --recipe onecycle --step-size 1.0 --final-max-epochs 8 \
    --final-patience 8 --max-total-epochs 8 --lr 0.01 --schedule constant --final-lr 0.05 \
    --final-schedule onecycle --train-seed "$1" --no-progress --out "/tmp/bench/r20x_e30_h/onecycle_s$1" \
    > "/tmp/bench/r20x_e30_h/onecycle_s$1.log" 2>&1
}
export -f one; export AP
printf '%s\n' ${SEEDS:-0 1} | xargs -P 2 -I{} bash -c 'one {}'
