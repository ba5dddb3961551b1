#!/bin/bash
# Issue 16's published anchors on the lent GPU machine (benchmarks/gpu/README.md): pretrain
# each model on the whole 40,000-image train split, then prune it at a published cut with
# the product's defaults, every model's chain side by side, for at most LIMIT seconds; a
# second call on the still-warm machine resumes whatever the limit stopped.
#
#   run(command="LIMIT=430 bash benchmarks/gpu/anchors.sh", carry=[".gpu"], timeout_s=500)
#
# ANCHORS lists MODEL:TARGET=VALUE rows; one pretraining per MODEL, then its rows side by side:
#   vgg16:prune=0.873     CHIP 93.18% and CORING 93.83% at 87.3% of the parameters removed
#                         (78.6% of the FLOPs), full-width VGG-16-BN
#   vgg16:prune=0.966     DECORE 92.44% at 96.6% of the parameters removed
#   resnet56:flops=0.611  DepGraph 93.64% (from 93.53%) at a 2.57x FLOP reduction
# Their pretraining ran 160-300 epochs; ours runs PRE_EPOCHS, the pruning EPOCHS
# (--max-total-epochs): state both next to theirs.
set -u
LIMIT=${LIMIT:-430}
THREADS=${THREADS:-4}  # OMP threads per process
ANCHORS=${ANCHORS:-vgg16:prune=0.873 resnet56:flops=0.611}
PRE_EPOCHS=${PRE_EPOCHS:-40}
EPOCHS=${EPOCHS:-30}
SUBSET=${SUBSET:-}  # a CPU check's small train subset (--train-subset); empty: all 40,000
CKPTS= source benchmarks/gpu/setup.sh
echo "ANCHORS=$ANCHORS PRE_EPOCHS=$PRE_EPOCHS EPOCHS=$EPOCHS THREADS=$THREADS LIMIT=$LIMIT" >> "$OUT/env.txt"
A=$W/anchors
sub=${SUBSET:+--train-subset $SUBSET}

resume_if() {  # resume_if DIR: --resume when DIR holds an interrupted run's checkpoint (a
  # run stopped during its first save has none: started again, it clears the folder)
  [ -f "$1/checkpoints/last.ckpt" ] && echo --resume
}

chain() {  # chain MODEL: pretrain MODEL, then prune it at each of its anchors' targets
  local m=$1 d=$A/$1 a t pids=()
  if [ ! -f "$d/pre/model.pt" ]; then
    "$W/ap" train --model "$m" --data "$W/data/train" $sub --epochs "$PRE_EPOCHS" --no-progress \
      --out "$d/pre" $(resume_if "$d/pre") >> "$d/pre.log" 2>&1 || { echo "failed: $m pretraining" >&2; return 1; }
  fi
  for a in $ANCHORS; do
    [ "${a%%:*}" = "$m" ] || continue
    t=${a#*:}
    [ -f "$d/$t/pruned.pt" ] && continue
    "$W/ap" prune --checkpoint "$d/pre/model.pt" --data "$W/data/train" $sub --"${t%%=*}" "${t#*=}" \
      --max-total-epochs "$EPOCHS" --no-progress --out "$d/$t" $(resume_if "$d/$t") >> "$d/$t.log" 2>&1 ||
      echo "failed: $a (see $d/$t.log)" >&2 &
    pids+=($!)
  done
  wait "${pids[@]}"
}

start=$(date +%s) pids=()
set -m  # each chain in its own process group, so the limit stops all of it
for m in $(for a in $ANCHORS; do echo "${a%%:*}"; done | sort -u); do
  mkdir -p "$A/$m"
  OMP_NUM_THREADS=$THREADS chain "$m" &
  pids+=($!)
done
within "$LIMIT" "${pids[@]}"
set +m
echo "anchors ran $(( $(date +%s) - start )) s" | tee -a "$OUT/env.txt"
for f in "$A"/*/*.log; do  # each run's last line: its accuracy, or where it stopped
  [ -f "$f" ] || continue
  echo "$(basename "$(dirname "$f")") $(basename "$f" .log): $(tail -n 1 "$f")"
done | tee "$OUT/anchors.txt"
tar czf "$OUT/anchors.tar.gz" -C "$W" --exclude='*.pt' --exclude=checkpoints --exclude=tensorboard anchors
