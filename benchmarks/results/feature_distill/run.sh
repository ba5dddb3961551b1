#!/bin/bash
# NET (vgg: VGG-16/4, test 0.8488; r20: the 30-epoch resnet20, test 0.8570), 8 epochs x
# 5,000 images: objective selection's row with and without feature distillation
# (--feature-distill 20), training seeds 0 and 1, one thread per job, two jobs side by side
# (BENCHMARKS 40). At T of the M removed: NET=vgg T=0.5 M=flops is section 8's cell (the
# default), NET=vgg T=0.65 M=params and NET=r20 T=0.5 M=params the parameter targets.
# SUBSET=20000: on 20,000 images instead of 5,000; SEEDS="0": that seed only.
# AP=echo prints the commands instead of running them (into the logs).
cd "$(dirname "$0")/../../.."  # the repository root
export NET=${NET:-vgg} T=${T:-0.5} M=${M:-flops} SUBSET=${SUBSET:-5000}
case $NET in vgg) CKPT=/tmp/bench/vgg16_w025/model.pt ;; r20) CKPT=/tmp/bench/resnet20_e30/model.pt ;;
  *) echo "NET is vgg or r20" >&2; exit 2 ;; esac
export CKPT OMP_NUM_THREADS=1 AP=${AP:-.venv/bin/alphaprune} DIR=/tmp/bench/fd_${NET}_${M}${T}$([ "$SUBSET" = 5000 ] || echo "_n$SUBSET")
one() {  # one SEED OPTION VALUE NAME (OPTION and VALUE may be empty)
  "$AP" compare --checkpoint "$CKPT" --data ../shared/datasets/cifar10/train \
    --train-subset "$SUBSET" --budget 8 --targets "$T" --match "$M" --methods os-step --step-size 0.25 \
    ${2:+"$2"} ${3:+"$3"} --train-seed "$1" --no-progress --out "$DIR/$4_s$1" > "$DIR/$4_s$1.log" 2>&1
}
export -f one
mkdir -p "$DIR"
for s in ${SEEDS:-0 1}; do echo "$s - - default"; done > "$DIR/jobs"
for s in ${SEEDS:-0 1}; do echo "$s --feature-distill 20 fd20"; done >> "$DIR/jobs"
cat "$DIR/jobs" |
  sed 's/ - - / "" "" /' | xargs -P 2 -L 1 bash -c 'one "$0" "$1" "$2" "$3"'
