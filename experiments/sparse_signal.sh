#!/usr/bin/env bash
# One row of the sparse-tracking training-signal ablations (docs/results.md, "Learning more per
# CPU-hour"): train CONFIG with the given overrides into ROOT/NAME, then evaluate it online on a
# split (whole split and its dataset-1 part, jitter beside the ground truth's) into ROOT/NAME.json.
#
#   experiments/sparse_signal.sh ROOT NAME CONFIG [--set KEY=VALUE ...]
#
# Environment: STEPS (default 1000), SPLIT (default val), CORES (taskset list, e.g. 0 to run two
# rows side by side on a 2-core machine, one core each; default: all cores).
set -euo pipefail
root=$1 name=$2 config=$3
shift 3
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
pin=()
if [[ -n "${CORES:-}" ]]; then pin=(taskset -c "$CORES"); fi
mkdir -p "$root"
cd "$here"
start=$(date +%s)
"${pin[@]}" "$py" -m mmar.cli train "$config" --workdir "$root/$name" --set train.steps="${STEPS:-1000}" \
  --set train.eval_every=0 --set train.ckpt_every="${STEPS:-1000}" --set train.progress=false "$@" \
  > "$root/$name.train.log" 2>&1
mid=$(date +%s)
ema=()
if grep -q '"ema_decay": [0-9]' "$root/$name/config.json" 2>/dev/null; then ema=(--ema); fi
"${pin[@]}" "$py" -m mmar.cli eval --checkpoint "$root/$name" --split "${SPLIT:-val}" "${ema[@]}" \
  --out "$root/$name.json" > "$root/$name.eval.log" 2>&1
end=$(date +%s)
echo "$name: train $((mid - start)) s, eval $((end - mid)) s" | tee -a "$root/times.txt"
