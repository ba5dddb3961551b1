#!/bin/bash
# resnet20 at 50% of the FLOPs: two ideas for issue 14's +3 points, two seeds, two jobs at a time
cd "$(dirname "$0")/../../.."  # the repository root (session 15 ran it with the src of 89c52b5)
export OMP_NUM_THREADS=1
D=../shared/datasets/cifar10/train
COMMON="--checkpoint /tmp/bench/resnet20/model.pt --data $D --train-subset 5000 --budget 8 --targets 0.5 --match flops --no-progress"
jobs() {
  for s in 0 1; do echo "/tmp/bench/r20x/os_step05_s$s --methods os-step --prune-streams --step-size 0.5 --train-seed $s"; done
  for s in 0 1; do echo "/tmp/bench/r20x/os_lr02_s$s --methods os-step --prune-streams --step-size 0.25 --lr 0.02 --train-seed $s"; done
  for s in 0 1; do echo "/tmp/bench/r20x/tp_lr02_s$s --methods tp-l1 --balance 0 --prune-streams --lr 0.02 --train-seed $s"; done
}
mkdir -p /tmp/bench/r20x
date > /tmp/bench/r20x/started
jobs | xargs -P 2 -L 1 bash -c 'dir=$0; alphaprune compare "$@" '"$COMMON"' --out "$dir" > "$dir.log" 2>&1 || echo "FAILED: $dir"'
date > /tmp/bench/r20x/done
# session 17 (src of 41365de), one job beside the VGG-16/4 training of section 1:
#   alphaprune compare $COMMON --methods os-step --prune-streams --step-size 1.0 --train-seed 0 \
#       --out /tmp/bench/r20x/os_step10_s0   -> os_step10_s0_{results.jsonl,phases.csv}
