#!/usr/bin/env bash
# The sparse-tracking models at paper size with the recipe of the CPU presets, for the first
# minutes of a lent accelerator (issue 15, item 5; README, "Training at scale"). Run it from the
# repository root on the accelerator machine, after tools/stage_accelerator.sh here:
#
#   experiments/sparse_accelerator.sh ROOT [agrol] [mem] [motionmar]     (default: agrol mem)
#
# Each model: paper width and depth (configs/agrol_mlp_41.py, configs/mem_mlp_41.py with its
# VQ-VAE, configs/motionmar.py with its TMT VQ-VAE) with the size-independent parts of the
# presets' recipe: the heading frame (model.frame=heading), the FK position loss
# (model.pos_weight=1), for Mem-MLP the scheduled self-fed memory with memory noise and EMA
# weights. Then the test split (whole and dataset-1, jitter, every clip) into ROOT/*_test.json.
#
# Environment:
#   STEPS_AGROL, STEPS_MEM_VQ, STEPS_MEM, STEPS_MM_VQ, STEPS_MM   steps of each stage (batch 256)
#   LR_AGROL, LR_MEM, LR_MM     learning rates (paper size is not swept: the defaults keep each
#                               paper's rate; the presets' higher rates were chosen at width 256)
#   DEADLINE=S                  seconds from the start after which no training stage starts and
#                               a running one is stopped (its run keeps its last checkpoint, a
#                               quarter of the steps apart; default 480); evaluations still run
#   EVAL_LIMIT=S                the time limit of each evaluation (default 300)
#   PYTHON                      the interpreter (default python3)
# Wheels in .accel/wheels are installed first (--no-index) and the data is read from the
# .accel/bandai-* parts (MMAR_BANDAI_DIR). Figures: ROOT/times.txt and the JSON files.
set -euo pipefail
root=$1; shift
models=("$@"); [[ ${#models[@]} -gt 0 ]] || models=(agrol mem)
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
cd "$here"
mkdir -p "$root"
t_start=$(date +%s)
deadline=$(( t_start + ${DEADLINE:-480} ))
log() { echo "$*" | tee -a "$root/times.txt"; }

if compgen -G ".accel/wheels/*.whl" > /dev/null; then
  "$py" -m pip install -q --no-index --no-deps --disable-pip-version-check .accel/wheels/*.whl
fi
if [[ -z "${MMAR_BANDAI_DIR:-}" ]] && compgen -G ".accel/bandai-*" > /dev/null; then
  export MMAR_BANDAI_DIR=$root/bandai
  mkdir -p "$MMAR_BANDAI_DIR"
  for f in .accel/bandai-*/*; do ln -sfn "$here/$f" "$MMAR_BANDAI_DIR/$(basename "$f")"; done
fi
"$py" -c "import jax; print('jax', jax.__version__, jax.devices())" | tee -a "$root/times.txt"

train() {  # NAME ARGS...: `mmar train ARGS` until the deadline (then stopped: the run keeps its
           # last checkpoint); fails when the deadline has passed before it could start
  local name=$1; shift
  local left=$(( deadline - $(date +%s) ))
  if (( left <= 0 )); then log "$name: skipped (deadline)"; return 1; fi
  limited "$left" "$name" "$py" -m mmar.cli train "$@" --set train.progress=false --set train.eval_every=0
}
evaluate() {  # NAME ARGS...: `mmar eval --per-clip ARGS` within EVAL_LIMIT
  local name=$1; shift
  limited "${EVAL_LIMIT:-300}" "$name" "$py" -m mmar.cli eval --per-clip "$@"
}
limited() {  # SECONDS NAME CMD...: run with a time limit, log the wall time and exit status;
             # fails unless the command succeeded or was stopped at the limit
  local limit=$1 name=$2; shift 2
  local t0; t0=$(date +%s); local rc=0
  timeout "$limit" "$@" > "$root/$name.log" 2>&1 || rc=$?
  log "$name: $(( $(date +%s) - t0 )) s, rc $rc$( ((rc == 124)) && echo " (stopped after $limit s)")"
  (( rc == 0 || rc == 124 )) || { tail -5 "$root/$name.log" >&2; return 1; }
}
recipe=(--set model.frame=heading --set model.pos_weight=1.0)

for m in "${models[@]}"; do
  case $m in
    agrol)
      s=${STEPS_AGROL:-20000}
      train agrol_train configs/agrol_mlp_41.py --workdir "$root/agrol" "${recipe[@]}" \
        --set train.steps="$s" --set train.ckpt_every=$(( s / 4 )) --set optim.lr="${LR_AGROL:-3e-4}" &&
      evaluate agrol_eval --checkpoint "$root/agrol" --out "$root/agrol_test.json" || true ;;
    mem)
      s=${STEPS_MEM:-20000}
      train mem_vq_train configs/mem_mlp_vqvae.py --workdir "$root/mem_vq" --set model.frame=heading \
        --set train.steps="${STEPS_MEM_VQ:-4000}" --set train.ckpt_every=1000 &&
      train mem_train configs/mem_mlp_41.py --workdir "$root/mem" "${recipe[@]}" \
        --set model.vqvae_workdir="$root/mem_vq" --set model.memory_feed=scheduled --set model.memory_noise=0.1 \
        --set optim.ema_decay=0.999 --set train.steps="$s" --set train.ckpt_every=$(( s / 4 )) \
        --set optim.lr="${LR_MEM:-3e-4}" &&
      evaluate mem_eval_ik --checkpoint "$root/mem" --ema --set model.ik=true --out "$root/mem_test_ik.json" || true ;;
    motionmar)
      s=${STEPS_MM:-40000}
      train mm_vq_train configs/motionmar_vqvae.py --workdir "$root/mm_vq" --set model.frame=heading \
        --set train.steps="${STEPS_MM_VQ:-10000}" --set train.ckpt_every=2500 &&
      train mm_train configs/motionmar.py --workdir "$root/mm" "${recipe[@]}" \
        --set model.vqvae_workdir="$root/mm_vq" --set train.steps="$s" --set train.ckpt_every=$(( s / 4 )) \
        --set optim.lr="${LR_MM:-2e-4}" &&
      evaluate mm_eval --checkpoint "$root/mm" --out "$root/mm_test.json" || true ;;
    *) echo "unknown model $m (agrol | mem | motionmar)" >&2; exit 2 ;;
  esac
done
log "total: $(( $(date +%s) - t_start )) s"
