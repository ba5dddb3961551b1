#!/bin/bash
# time --speedup's search with the background training paused (alone on the machine)
cd /work/main
pkill -STOP -f alphaprune.cli
trap 'pkill -CONT -f alphaprune.cli' EXIT
export OMP_NUM_THREADS=1 PYTHONPATH=/tmp/s12/src2
date +%T
.venv/bin/python benchmarks/speedup_confirm.py /tmp/bench/vgg16_w025/model.pt --data ../shared/datasets/cifar10/train --speedup 2 --batch 128 --repeats 4 > /tmp/s12/confirm_vgg.jsonl
date +%T
.venv/bin/python benchmarks/speedup_confirm.py /tmp/bench/resnet20/model.pt --data ../shared/datasets/cifar10/train --speedup 2 --batch 128 --repeats 4 > /tmp/s12/confirm_r20.jsonl
date +%T
