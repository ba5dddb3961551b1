#!/bin/bash
# Issue 16's full-budget rows on the lent GPU machine, in one device call (benchmarks/gpu/README.md):
# unpack the carried images, decode them once, run full_budget.sh's ROWS (JOBS at a time per
# checkpoint) for at most LIMIT seconds, and send back one archive of every row's results (models left out).
#
#   run(command="ROWS='kd@0.65 ...' bash benchmarks/gpu/grid.sh", carry=[".gpu"], timeout_s=600)
#
# .gpu/ (git-ignored) holds what the machine lacks: cifar10.npz (images.py pack), model.pt
# (the pretrained network) and the torch-pruning wheel (the machine has torch, lightning,
# scikit-learn, matplotlib and PyYAML, not torch-pruning).
# A row "NAME:kd@0.7" starts from .gpu/NAME.pt instead of model.pt: each checkpoint's rows
# run as one full_budget.sh (JOBS at a time each), side by side, into rows/NAME/, and come
# back in results-NAME.jsonl.
set -u
LIMIT=${LIMIT:-480}  # seconds for the rows; unfinished rows are cut off, finished ones come back
JOBS=${JOBS:-8}
THREADS=${THREADS:-2}  # OMP threads per row: all rows x THREADS should not pass the 16 cores
# SMOKE=1 (the default) first runs every row for one epoch on 1,000 images and stops the
# call at once if one of them fails: a code fault then costs a minute of device time, not
# the whole grid
SMOKE=${SMOKE:-1}
SMOKE_LIMIT=${SMOKE_LIMIT:-120}  # seconds for the smoke (a busy CPU check needs more)
ROWS=${ROWS:-kd@0.35 kd@0.65 kd@0.9 tp-l1@0.35 tp-l1@0.65 tp-l1@0.9 unstructured@0.65 unstructured@0.9}
EPOCHS=${EPOCHS:-30}
names() {  # the checkpoints the rows start from: NAME of a "NAME:row", model for a plain row
  local r; for r in $ROWS; do if [[ $r == *:* ]]; then echo "${r%%:*}"; else echo model; fi; done | sort -u
}
rows_of() {  # the rows that start from checkpoint $1, without their "NAME:"
  local r; for r in $ROWS; do
    if [[ $r == *:* ]]; then [ "${r%%:*}" = "$1" ] && echo "${r#*:}"; else [ "$1" = model ] && echo "$r"; fi
  done
}
CKPTS=$(names) source benchmarks/gpu/setup.sh
echo "ROWS=$ROWS EPOCHS=$EPOCHS JOBS=$JOBS LIMIT=$LIMIT" >> "$OUT/env.txt"

dir_of() {  # dir_of OUTDIR NAME: where the rows from checkpoint NAME run
  if [ "$2" = model ]; then echo "$1"; else echo "$1/$2"; fi
}
row_dir() {  # row_dir OUTDIR NAME ROW: a row's folder, method-target, "-sN" for "#N" (full_budget.sh)
  local d=${3%%#*}; d="$(dir_of "$1" "$2")/${d/@/-}"; [[ $3 == *#* ]] && d+="-s${3#*#}"; echo "$d"
}

rows() {  # rows OUTDIR EPOCHS SUBSET LIMIT: full_budget.sh's ROWS, JOBS at a time per
  # checkpoint, cut off at LIMIT s
  local start n pids=(); start=$(date +%s)
  set -m  # each checkpoint's rows run in their own process group, so the limit stops them all
  for n in $(names); do
    local mine; mine=$(rows_of "$n" | paste -sd' ')
    [ -n "$mine" ] || continue
    CKPT="$G/$n.pt" DATA="$W/data/train" OUT="$(dir_of "$1" "$n")" BALANCE=1 JOBS=$JOBS EPOCHS=$2 \
      SUBSET=$3 ROWS="$mine" OMP_NUM_THREADS=$THREADS ALPHAPRUNE="$W/ap" bash benchmarks/full_budget.sh &
    pids+=($!)
  done
  (( ${#pids[@]} )) || { set +m; return 0; }
  within "$4" "${pids[@]}"
  set +m
  echo "rows in $1 ran $(( $(date +%s) - start )) s" | tee -a "$OUT/env.txt"
}

if [ "$SMOKE" = 1 ]; then
  rm -rf "$W/smoke"
  rows "$W/smoke" 1 1000 "$SMOKE_LIMIT"
  for n in $(names); do for r in $(rows_of "$n"); do
    d=$(row_dir "$W/smoke" "$n" "$r")
    if ! grep -qs '"target": 0\.[0-9]' "$d/results.jsonl" && ! [ -f "$d/pruned.pt" ]; then
      echo "smoke row $n:$r failed; its log:" | tee -a "$OUT/env.txt"
      tail -30 "$(dir_of "$W/smoke" "$n")/$r.log" | tee -a "$OUT/env.txt"
      tar czf "$OUT/smoke.tar.gz" -C "$W" --exclude='*.pt' --exclude=checkpoints --exclude=tensorboard smoke
      exit 1
    fi
  done; done
  echo "smoke: every row ran" | tee -a "$OUT/env.txt"
fi
rows "$W/rows" "$EPOCHS" "${SUBSET:-}" "$LIMIT"
for n in $(names); do
  f=results-$n.jsonl; [ "$n" = model ] && f=results.jsonl
  for r in $(rows_of "$n"); do
    d=$(row_dir "$W/rows" "$n" "$r")
    cat "$d/results.jsonl" 2>/dev/null
    # a prune row (onecycle) writes summary.json, not results.jsonl: its score to the console
    grep -som1 '"test_acc_after": [0-9.]*' "$d/summary.json" | sed "s|^|$n:$r |" >&2
  done > "$OUT/$f"
  echo "$f:"; grep -v pretrained "$OUT/$f" | cut -c1-160
done
tar czf "$OUT/rows.tar.gz" -C "$W" --exclude='*.pt' --exclude=checkpoints --exclude=tensorboard rows
