#!/bin/bash
# resnet20 at 50% of the FLOPs (section 23's protocol): objective selection's channel criterion
# --importance act (data; default l1), never measured in a benchmark; seeds 0 and 1, two jobs at a time.
# (session 18: /tmp/s18/ap2 is `alphaprune` run from a copy of src as of 5b18276)
cd /work/main
export OMP_NUM_THREADS=1
D=../shared/datasets/cifar10/train
COMMON="--checkpoint /tmp/bench/resnet20/model.pt --data $D --train-subset 5000 --budget 8 --targets 0.5 --match flops --no-progress --methods os-step --prune-streams --step-size 0.25"
jobs() {
  for s in 0 1; do echo "/tmp/bench/r20x/os_act_s$s --importance act --train-seed $s"; done
}
mkdir -p /tmp/bench/r20x
jobs | xargs -P 2 -L 1 bash -c 'dir=$0; /tmp/s18/ap2 compare "$@" '"$COMMON"' --out "$dir" > "$dir.log" 2>&1 || echo "FAILED: $dir"'
date > /tmp/bench/r20x/act_done
