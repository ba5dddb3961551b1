#!/bin/bash
# Section 24's equal-latency pair again, the Torch-Pruning peer with --tp-round-to 8, sized to
# the same objective-selection model (its widths.json and trained row copied from section 24's
# folders, so only tp-l1 runs). One job at a time, machine alone.
cd /work/main
for s in 0 1; do
  src=/tmp/bench/r20_lat_s$s dst=/tmp/bench/r20_lat_r8_s$s
  rm -rf $dst; mkdir -p $dst/p50
  cp $src/pretrained.pt $dst/; cp $src/p50/widths.json $dst/p50/; cp -r $src/p50/os-step $dst/p50/
  head -2 $src/results.jsonl | sed "s#$src#$dst#g" > $dst/results.jsonl
  OMP_NUM_THREADS=1 /tmp/s18/ap2 compare --checkpoint /tmp/bench/resnet20/model.pt \
    --data ../shared/datasets/cifar10/train --train-subset 5000 --budget 8 --step-size 0.25 \
    --targets 0.5 --match latency --latency-batch 128 --methods os-step,tp-l1 --tp-round-to 8 \
    --train-seed $s --no-progress --out $dst > $dst.log 2>&1 || echo "FAILED $s"
done
OMP_NUM_THREADS=1 PYTHONPATH=/tmp/s18/src2 /work/main/.venv/bin/python benchmarks/share_runtimes.py /tmp/bench/resnet20/model.pt \
  --targets "" --runtimes eager,onnxruntime --rounds 3 --pruned \
  /tmp/bench/r20_lat_s0/p50/os-step/pruned.pt /tmp/bench/r20_lat_s0/p50/tp-l1/model.pt /tmp/bench/r20_lat_r8_s0/p50/tp-l1/model.pt \
  /tmp/bench/r20_lat_s1/p50/os-step/pruned.pt /tmp/bench/r20_lat_s1/p50/tp-l1/model.pt /tmp/bench/r20_lat_r8_s1/p50/tp-l1/model.pt \
  > /tmp/bench/r20_lat_r8_runtimes.txt 2>&1
date > /tmp/bench/r20_lat_r8.done
