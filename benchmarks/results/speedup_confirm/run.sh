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
