#!/bin/bash
# The comparison at the full budget (BENCHMARKS.md sections 5.1 and 5.2): 30 epochs per method on the
# whole 40,000-image train split, one `alphaprune compare` per method and target so they can
# run side by side (JOBS at a time), plus two variants of objective selection's schedule.
#
#   CKPT=/tmp/bench/vgg16_w025/model.pt DATA=../shared/datasets/cifar10/train \
#   OUT=/tmp/bench/full30 JOBS=8 bash benchmarks/full_budget.sh
#
# About 40 CPU-hours in all; on one H200 (--accelerator auto picks it) 8 jobs at a time took
# about 8 s per epoch each. Rerun the same command to resume unfinished rows. Each folder's
# results.jsonl holds its rows; `cat $OUT/*/results.jsonl` gathers them.
# BALANCE=0 (uniform widths, the default when the table ran) reproduces section 5.1;
# BALANCE=1 measures today's default (objective selection, scratch and kd; tp-l1 and
# unstructured do not depend on it): section 5.2, which lists its ROWS.
# rest@T: os-step with --final-takes-rest (issue 16).
# onecycle@T: objective selection straight to alpha = 0 with the kd peer's lr schedule (issue 16);
# onecycle-nokd@T: the same without distillation (--distill 0); onecycle-lrP@T: its one-cycle
# peaking at lr P (onecycle-lr0.02@0.7); onecycle-kdW@T: distillation weight W (onecycle-kd1.0@0.7);
# onecycle-sens@T: the widths of --solver sensitivity instead of the ratio solver's (BALANCE unused);
# onecycle-streams@T: the ratio solver's widths with the residual streams cut too (--prune-streams);
# onecycle-fdW@T: feature distillation of weight W added (--feature-distill W; onecycle-fd1@0.7).
# ROWS="os-step@0.65 os-step@0.65#1 kd@0.9" runs only those rows, in that order; a "#N" suffix
# repeats the row with --train-seed N (same split, other training randomness).
# EPOCHS=8 SUBSET=20000: the same rows at a smaller budget (issue 16's CPU checks, BENCHMARKS.md
# section 15): EPOCHS epochs on a stratified SUBSET-image part of the train split (the short
# and shorthot rows are laid out for 30 epochs and ignore EPOCHS).
{  # the whole script is read before it runs: editing this file mid-run cannot change a running one
set -u
: "${CKPT:?set CKPT to the pretrained model file}" "${DATA:?set DATA to the dataset}"
: "${OUT:?set OUT to a results folder}"
JOBS=${JOBS:-2}
EPOCHS=${EPOCHS:-30}
SUBSET=${SUBSET:+--train-subset $SUBSET}
BALANCE=${BALANCE:-0}
ALPHAPRUNE=${ALPHAPRUNE:-alphaprune}
mkdir -p "$OUT"
export CKPT DATA OUT ALPHAPRUNE BALANCE EPOCHS SUBSET

one() {  # method@target[#train-seed], or a variant name
  local row=${1%%#*} seed= sfx=
  [[ $1 == *#* ]] && seed="--train-seed ${1#*#}" && sfx="-s${1#*#}"
  case $row in
    straight@*)  # objective selection straight to alpha = 0: the whole budget at alpha = 0
      t=${row#*@}; "$ALPHAPRUNE" compare --checkpoint "$CKPT" --data "$DATA" $SUBSET --budget "$EPOCHS" \
        --step-size 1.0 --balance "$BALANCE" --methods os-step --targets "$t" --no-progress \
        $seed --out "$OUT/straight-$t$sfx" ;;
    short@*|shorthot@*)  # 3 alpha > 0 phases of 2 epochs, then 24 at alpha = 0 (compare gives
      # 6, 6, 6, 12); shorthot: the alpha = 0 phase starts its cosine from lr 0.05, not 0.01
      local kind=${row%@*} t=${row#*@} flr=
      [ "$kind" = shorthot ] && flr="--final-lr 0.05"
      local d="$OUT/$kind-$t$sfx"; [ -f "$d/pruned.pt" ] && return 0
      "$ALPHAPRUNE" prune --checkpoint "$CKPT" --data "$DATA" $SUBSET --prune "$t" --balance "$BALANCE" \
        --step-size 0.25 --patience 2 --max-epochs-per-phase 2 --final-max-epochs 24 \
        --final-patience 24 --max-total-epochs 30 --lr 0.01 --schedule constant $flr \
        --no-progress $seed --out "$d" $([ -f "$d/checkpoints/last.ckpt" ] && echo --resume) ;;
    onecycle@*|onecycle-nokd@*|onecycle-lr*@*|onecycle-kd*@*|onecycle-sens@*|onecycle-streams@*|onecycle-fd*@*)
      # alpha = 0 from the start: all epochs on the inherited weights, distilled from the pretrained network throughout, lr one-cycle up to
      # 0.05 (the kd peer's recipe; --recipe onecycle sets the same and names it in summary.json,
      # which rows run before session 18 record as handover); onecycle-nokd: the same on the
      # labels alone (--distill 0), as Torch-Pruning's row fine-tunes; onecycle-lrP: the
      # one-cycle's peak lr P instead of 0.05 (onecycle-lr0.02@0.7); onecycle-kdW: distillation
      # weight W instead of 0.7 (onecycle-kd1.0@0.7: the teacher's soft labels alone);
      # onecycle-sens: the sensitivity solver's widths (it takes no --balance); onecycle-streams:
      # the residual streams cut as well; onecycle-fdW: every unit's output also held to the
      # pretrained network's, weight W
      local kind=${row%@*} t=${row#*@} kdw= peak=0.05 widths="--balance $BALANCE"
      [ "$kind" = onecycle-sens ] && widths="--solver sensitivity"
      [ "$kind" = onecycle-streams ] && widths="--balance $BALANCE --prune-streams"
      [ "$kind" = onecycle-nokd ] && kdw="--distill 0"
      [[ $kind == onecycle-kd* ]] && kdw="--distill ${kind#onecycle-kd}"
      [[ $kind == onecycle-fd* ]] && kdw="--feature-distill ${kind#onecycle-fd}"
      [[ $kind == onecycle-lr* ]] && peak=${kind#onecycle-lr}
      local num='^[0-9]*[.]?[0-9]+$'  # a peak lr above 0; a weight from 0
      local w=${kind#onecycle-kd}; [[ $kind == onecycle-fd* ]] && w=${kind#onecycle-fd}
      if [[ ! ($peak =~ $num && $peak =~ [1-9]) || ($kind == onecycle-[kf]d* && ! $w =~ $num) ]]; then
        echo "row $1: write the value, as in onecycle-lr0.02@0.7, onecycle-kd1.0@0.7 or onecycle-fd1@0.7" >&2; return 2
      fi
      local d="$OUT/$kind-$t$sfx"; [ -f "$d/pruned.pt" ] && return 0
      "$ALPHAPRUNE" prune --checkpoint "$CKPT" --data "$DATA" $SUBSET --prune "$t" $widths \
        --recipe onecycle $kdw \
        --step-size 1.0 --final-max-epochs "$EPOCHS" --final-patience "$EPOCHS" --max-total-epochs "$EPOCHS" \
        --lr 0.01 --schedule constant --final-lr "$peak" --final-schedule onecycle \
        --no-progress $seed --out "$d" $([ -f "$d/checkpoints/last.ckpt" ] && echo --resume) ;;
    rest@*)  # the default os-step row, its alpha = 0 phase also taking the epochs the
      # alpha > 0 phases leave by stopping early (--final-takes-rest)
      t=${row#*@}; "$ALPHAPRUNE" compare --checkpoint "$CKPT" --data "$DATA" $SUBSET \
        --budget "$EPOCHS" --step-size 0.25 --balance "$BALANCE" --methods os-step --targets "$t" \
        --final-takes-rest --no-progress $seed --out "$OUT/rest-$t$sfx" ;;
    *)
      m=${row%@*}; t=${row#*@}; "$ALPHAPRUNE" compare --checkpoint "$CKPT" --data "$DATA" $SUBSET \
        --budget "$EPOCHS" --step-size 0.25 --decay-rate 1.2 --mu 0.25 --factor 0.25 --balance "$BALANCE" \
        --methods "$m" --targets "$t" --no-progress $seed --out "$OUT/$m-$t$sfx" ;;
  esac > "$OUT/$1.log" 2>&1 || echo "failed: $1 (see $OUT/$1.log)"
}
export -f one

ROWS=${ROWS:-os-step@0.65 tp-l1@0.65 os-step@0.9 tp-l1@0.9 os-step@0.35 tp-l1@0.35 \
  unstructured@0.65 kd@0.65 unstructured@0.9 kd@0.9 scratch@0.65 unstructured@0.35 \
  straight@0.65 straight@0.9 short@0.65 short@0.9}
printf '%s\n' $ROWS |
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} xargs -P "$JOBS" -I{} bash -c 'one {}'
exit
}
