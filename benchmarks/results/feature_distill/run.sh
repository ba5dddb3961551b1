#!/bin/bash
# NET (vgg: VGG-16/4, test 0.8488; r20: the 30-epoch resnet20, test 0.8570), 8 epochs x
# 5,000 images: objective selection's row with and without feature distillation, training
# seeds 0 and 1, one thread per job, two jobs side by side (BENCHMARKS 40, 41). At T of the
# M removed: NET=vgg T=0.5 M=flops is section 8's cell (the default), NET=vgg T=0.65
# M=params and NET=r20 T=0.5 M=params the parameter targets.
# SUBSET=20000: on 20,000 images instead of 5,000; EPOCHS=30: 30 epochs instead of 8;
# SEEDS="0": that seed only.
# ROWS (default "default fd20"): the rows, each seed of each, in that order. default: no
# feature term (--feature-distill 0: what the default was before BENCHMARKS 41, and still
# is above its threshold); fdW: --feature-distill W. (BENCHMARKS 41's fd20-linear rows ran with
# --feature-schedule linear, on src as of 98c86f0; the option was removed after it.)
# AP=echo prints the commands instead of running them (into the logs).
cd "$(dirname "$0")/../../.."  # the repository root
export NET=${NET:-vgg} T=${T:-0.5} M=${M:-flops} SUBSET=${SUBSET:-5000} EPOCHS=${EPOCHS:-8}
case $NET in vgg) CKPT=/tmp/bench/vgg16_w025/model.pt ;; r20) CKPT=/tmp/bench/resnet20_e30/model.pt ;;
  *) echo "NET is vgg or r20" >&2; exit 2 ;; esac
export CKPT OMP_NUM_THREADS=1 AP=${AP:-.venv/bin/alphaprune} DIR=/tmp/bench/fd_${NET}_${M}${T}$([ "$SUBSET" = 5000 ] || echo "_n$SUBSET")$([ "$EPOCHS" = 8 ] || echo "_e$EPOCHS")
one() {  # one SEED ROW
  local opts=() w=${2#fd}
  case $2 in
    default) opts=(--feature-distill 0) ;;  # the feature term is on by default at small budgets
    fd*) opts=(--feature-distill "$w") ;;
    *) echo "unknown row $2" >&2; return 2 ;;
  esac
  "$AP" compare --checkpoint "$CKPT" --data ../shared/datasets/cifar10/train \
    --train-subset "$SUBSET" --budget "$EPOCHS" --targets "$T" --match "$M" --methods os-step --step-size 0.25 \
    "${opts[@]}" --train-seed "$1" --no-progress --out "$DIR/$2_s$1" > "$DIR/$2_s$1.log" 2>&1
}
export -f one
mkdir -p "$DIR"
for r in ${ROWS:-default fd20}; do for s in ${SEEDS:-0 1}; do echo "$s $r"; done; done > "$DIR/jobs"
xargs -P 2 -L 1 bash -c 'one "$0" "$1"' < "$DIR/jobs"
