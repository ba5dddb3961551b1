#!/bin/bash
# BENCHMARKS.md section 18, from the repository root. The committed rows (*_0ac5692.jsonl)
# ran this with the code of commit 0ac5692 (PYTHONPATH=/tmp/s12/src2, a copy of it), in an
# older row format. The other training jobs on this machine (alphaprune.cli processes)
# are paused while the searches time, and resumed at the end (a SIGKILL of this script
# would leave them paused: `pkill -CONT -f alphaprune.cli`).
pkill -STOP -f alphaprune.cli
trap 'pkill -CONT -f alphaprune.cli' EXIT
export OMP_NUM_THREADS=1 PYTHONPATH=src
for m in vgg16_w025 resnet20; do
  .venv/bin/python benchmarks/speedup_confirm.py /tmp/bench/$m/model.pt \
    --data ../shared/datasets/cifar10/train --speedup 2 --batch 128 --repeats 4 \
    > benchmarks/results/speedup_confirm/${m}_b128.jsonl
done
# Section 22 (session 15, the search of 2ef9465: Kesten's rule, closest on either side):
# *_b128_kesten4.jsonl, the same command per model, each alone on the machine (the resnet20
# pretrain paused during the VGG rows), VGG-16/4 as a random-weight model file
# (/tmp/bench/vgg16_rand/model.pt: create_model('vgg16', width=0.25) seeded 0, save_model):
#   OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/speedup_confirm.py \
#     /tmp/bench/$m/model.pt --data ../shared/datasets/cifar10/train --speedup 2 --batch 128 \
#     --repeats 4 > benchmarks/results/speedup_confirm/${m}_b128_kesten4.jsonl
# for m in vgg16_rand resnet20.
