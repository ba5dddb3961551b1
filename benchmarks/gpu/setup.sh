# Sourced by grid.sh and anchors.sh on the lent GPU machine (benchmarks/gpu/README.md): check
# that .gpu/ holds what they need, record the machine in $OUT/env.txt, install the carried
# wheels, unpack and decode the carried images once, and write $W/ap, the alphaprune command.
#
#   CKPTS="model r20e30" source benchmarks/gpu/setup.sh   # then "$W/ap" train|prune|compare ...
#
# CKPTS names the carried checkpoints (.gpu/NAME.pt) the caller starts from; a warm machine
# called again keeps the images, the rows and their checkpoints (so rows resume).
: "${OUT:?OUT is set by the device tool: the folder whose files come back}"
PY=${PY:-python3}  # the machine's python3 holds torch
G=$PWD/.gpu W=${W:-/tmp/ap-grid}
for f in cifar10.npz $(for n in ${CKPTS:-}; do echo "$n.pt"; done); do
  [ -f "$G/$f" ] || { echo "missing $G/$f: prepare .gpu as benchmarks/gpu/README.md says" >&2; exit 2; }
done
mkdir -p "$W"
{ date -u; nvidia-smi -L; "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
  for n in ${CKPTS:-}; do sha256sum "$G/$n.pt"; done; } > "$OUT/env.txt" 2>&1
"$PY" -m pip install -q --no-index --no-deps --upgrade --target "$W/site" "$G"/*.whl || exit 1
export PYTHONPATH="$W/site:$PWD/src" ALPHAPRUNE_CACHE="$W/cache"
if [ ! -d "$W/data/train" ]; then
  rm -rf "$W/data/new" && "$PY" benchmarks/gpu/images.py unpack "$G/cifar10.npz" "$W/data/new" &&
    mv "$W/data/new" "$W/data/train" || exit 1
fi
# decode once here, not in each of the processes at once
"$PY" -c "import sys; from alphaprune.data import load_dataset; print(len(load_dataset(sys.argv[1]).y), 'images')" \
  "$W/data/train" || exit 1
printf '#!/bin/bash\nexec %s -m alphaprune.cli "$@"\n' "$PY" > "$W/ap" && chmod +x "$W/ap"

within() {  # within LIMIT PID...: wait for the PIDs (process-group leaders, started under
  # `set -m`), stopping their whole groups after LIMIT seconds
  local limit=$1; shift
  (( $# )) || return 0  # a bare wait would wait for the guard, LIMIT seconds
  ( sleep "$limit"; echo "time limit: stopping the rows" >&2
    for p in "$@"; do kill -TERM -- -"$p"; done ) 2>/dev/null &
  local guard=$!
  wait "$@"
  kill -- -"$guard" 2>/dev/null  # its group: the sleep too, which would hold the output open
}
