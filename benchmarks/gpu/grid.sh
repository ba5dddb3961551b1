#!/bin/bash
# Issue 16's full-budget rows on the lent GPU machine, in one device call (benchmarks/gpu/README.md):
# unpack the carried images, decode them once, run full_budget.sh's ROWS 8 at a time for at
# most LIMIT seconds, and send back one archive of every row's results (models left out).
#
#   run(command="ROWS='kd@0.65 ...' bash benchmarks/gpu/grid.sh", carry=[".gpu"], timeout_s=600)
#
# .gpu/ (git-ignored) holds what the machine lacks: cifar10.npz (images.py pack), model.pt
# (the pretrained network) and the torch-pruning wheel (the machine has torch, lightning,
# scikit-learn, matplotlib and PyYAML, not torch-pruning).
set -u
: "${OUT:?OUT is set by the device tool: the folder whose files come back}"
LIMIT=${LIMIT:-480}  # seconds for the rows; unfinished rows are cut off, finished ones come back
JOBS=${JOBS:-8}
THREADS=${THREADS:-2}  # OMP threads per row: JOBS x THREADS should not pass the 16 cores
# SMOKE=1 (the default) first runs every row for one epoch on 1,000 images and stops the
# call at once if one of them fails: a code fault then costs a minute of device time, not
# the whole grid
SMOKE=${SMOKE:-1}
ROWS=${ROWS:-kd@0.35 kd@0.65 kd@0.9 tp-l1@0.35 tp-l1@0.65 tp-l1@0.9 unstructured@0.65 unstructured@0.9}
EPOCHS=${EPOCHS:-30}
PY=${PY:-python3}  # the machine's python3 holds torch
G=$PWD/.gpu W=/tmp/ap-grid
for f in cifar10.npz model.pt; do
  [ -f "$G/$f" ] || { echo "missing $G/$f: prepare .gpu as benchmarks/gpu/README.md says" >&2; exit 2; }
done
mkdir -p "$W"
{ date -u; nvidia-smi -L; "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
  sha256sum "$G/model.pt"; echo "ROWS=$ROWS EPOCHS=$EPOCHS JOBS=$JOBS LIMIT=$LIMIT"; } > "$OUT/env.txt" 2>&1
"$PY" -m pip install -q --no-index --no-deps --upgrade --target "$W/site" "$G"/*.whl || exit 1
export PYTHONPATH="$W/site:$PWD/src" ALPHAPRUNE_CACHE="$W/cache"
# a warm machine called again keeps the images and the rows, and the rows resume
if [ ! -d "$W/data/train" ]; then
  rm -rf "$W/data/new" && "$PY" benchmarks/gpu/images.py unpack "$G/cifar10.npz" "$W/data/new" &&
    mv "$W/data/new" "$W/data/train" || exit 1
fi
# decode once here, not in each of the JOBS processes at once
"$PY" -c "import sys; from alphaprune.data import load_dataset; print(len(load_dataset(sys.argv[1]).y), 'images')" \
  "$W/data/train" || exit 1
printf '#!/bin/bash\nexec %s -m alphaprune.cli "$@"\n' "$PY" > "$W/ap" && chmod +x "$W/ap"

rows() {  # rows OUTDIR EPOCHS SUBSET LIMIT: full_budget.sh's ROWS, JOBS at a time, cut off at LIMIT s
  local start; start=$(date +%s)
  set -m  # the rows run in their own process group, so the time limit stops all of them
  CKPT="$G/model.pt" DATA="$W/data/train" OUT="$1" BALANCE=1 JOBS=$JOBS EPOCHS=$2 SUBSET=$3 ROWS="$ROWS" \
    OMP_NUM_THREADS=$THREADS ALPHAPRUNE="$W/ap" bash benchmarks/full_budget.sh &
  local pid=$!
  ( sleep "$4"; echo "time limit: stopping the rows" >&2; kill -TERM -- -"$pid" ) 2>/dev/null &
  local guard=$!
  wait "$pid"
  kill "$guard" 2>/dev/null
  set +m
  echo "rows in $1 ran $(( $(date +%s) - start )) s" | tee -a "$OUT/env.txt"
}

if [ "$SMOKE" = 1 ]; then
  rm -rf "$W/smoke"
  rows "$W/smoke" 1 1000 120
  for r in $ROWS; do  # a row's folder: method-target, "-sN" for "#N" (full_budget.sh)
    d=${r%%#*}; d="$W/smoke/${d/@/-}"; [[ $r == *#* ]] && d+="-s${r#*#}"
    if ! grep -qs '"target": 0\.[0-9]' "$d/results.jsonl" && ! [ -f "$d/pruned.pt" ]; then
      echo "smoke row $r failed; its log:" | tee -a "$OUT/env.txt"
      tail -30 "$W/smoke/$r.log" | tee -a "$OUT/env.txt"
      tar czf "$OUT/smoke.tar.gz" -C "$W" --exclude='*.pt' --exclude=checkpoints --exclude=tensorboard smoke
      exit 1
    fi
  done
  echo "smoke: every row ran" | tee -a "$OUT/env.txt"
fi
rows "$W/rows" "$EPOCHS" "${SUBSET:-}" "$LIMIT"
cat "$W"/rows/*/results.jsonl > "$OUT/results.jsonl" 2>/dev/null
tar czf "$OUT/rows.tar.gz" -C "$W" --exclude='*.pt' --exclude=checkpoints --exclude=tensorboard rows
grep -v pretrained "$OUT/results.jsonl" | cut -c1-160
