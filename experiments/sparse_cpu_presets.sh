#!/usr/bin/env bash
# The 60-minute CPU presets of the sparse-tracking models (README, "Sparse tracking on a CPU
# budget"; docs/results.md, "Learning more per CPU-hour"): train each preset into ROOT and
# evaluate it online on the test split (whole split and dataset-1, jitter beside the ground
# truth's, and every clip's metrics for tools/compare_runs.py); Mem-MLP with its EMA weights, with
# and without IK.
#
#   experiments/sparse_cpu_presets.sh ROOT [agrol|mem|motionmar|all]
#
# MotionMAR (its TMT VQ-VAE, then MAN + SAC + MRN) is evaluated with and without its refiner.
# Environment: CORES_AGROL / CORES_MEM / CORES_MM (taskset core lists; default: all cores) to run
# presets side by side on a 2-core machine ("all" starts the three at once); BUDGET=k (default 1)
# trains every stage for k times its steps with the same recipe (every schedule is a cosine over
# train.steps, so it stretches; evaluations stay as many, checkpoints every 2,000 steps at most so
# an interrupted run resumes close to where it stopped: rerun the same command).
set -euo pipefail
root=$1 which=${2:-all}
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
cd "$here"
mkdir -p "$root"
pin() { if [[ -n "$1" ]]; then echo taskset -c "$1"; fi; }
budget=${BUDGET:-1}
scaled() {  # CONFIG: the --set overrides that train it for BUDGET times its steps
  [[ "$budget" == 1 ]] && return 0
  "$py" - "$1" "$budget" <<'PY'
import sys
from mmar.train.config import load_config
t = load_config(sys.argv[1]).train
k = int(sys.argv[2])
steps = t.steps * k
print(f"--set train.steps={steps} --set train.eval_every={t.eval_every * k} "
      f"--set train.ckpt_every={min(t.ckpt_every * k or steps, 2000)}")
PY
}
timed() {  # NAME CMD...: run, log, and record the wall time; a failure stops the model's chain
  local name=$1; shift
  local t0; t0=$(date +%s); local rc=0
  "$@" > "$root/$name.log" 2>&1 || rc=$?
  if (( rc )) && grep -q "Termination timeout for" "$root/$name.log"; then
    # XLA gave up on a collective of the two CPU devices (docs/results.md, "The two devices and a
    # busy host"): keep that log, resume once on one device
    mv "$root/$name.log" "$root/$name.collective-timeout.log"
    echo "$name: a collective of the two CPU devices timed out; resuming on one (MMAR_CPU_DEVICES=1)" | tee -a "$root/times.txt" >&2
    rc=0
    MMAR_CPU_DEVICES=1 "$@" > "$root/$name.log" 2>&1 || rc=$?
  fi
  if (( rc )); then
    echo "$name: failed after $(( $(date +%s) - t0 )) s, rc $rc (rerun to resume; $root/$name.log):" | tee -a "$root/times.txt" >&2
    grep -v '^ *@' "$root/$name.log" | tail -n 3 >&2
    return "$rc"
  fi
  echo "$name: $(( $(date +%s) - t0 )) s" | tee -a "$root/times.txt"
}
agrol() {
  local p; p=$(pin "${CORES_AGROL:-}")
  timed agrol_train $p "$py" -m mmar.cli train configs/agrol_mlp_41_cpu.py --workdir "$root/agrol" --set train.progress=false \
    $(scaled configs/agrol_mlp_41_cpu.py)
  timed agrol_eval $p "$py" -m mmar.cli eval --per-clip --checkpoint "$root/agrol" --out "$root/agrol_test.json"
}
mem() {
  local p; p=$(pin "${CORES_MEM:-}")
  timed mem_vq_train $p "$py" -m mmar.cli train configs/mem_mlp_vqvae_cpu.py --workdir "$root/mem_vq" --set train.progress=false \
    $(scaled configs/mem_mlp_vqvae_cpu.py)
  timed mem_train $p "$py" -m mmar.cli train configs/mem_mlp_41_cpu.py --workdir "$root/mem" \
    --set model.vqvae_workdir="$root/mem_vq" --set train.progress=false $(scaled configs/mem_mlp_41_cpu.py)
  timed mem_eval_ik $p "$py" -m mmar.cli eval --per-clip --checkpoint "$root/mem" --ema --set model.ik=true --out "$root/mem_test_ik.json"
  timed mem_eval $p "$py" -m mmar.cli eval --per-clip --checkpoint "$root/mem" --ema --out "$root/mem_test.json"
}
motionmar() {
  local p; p=$(pin "${CORES_MM:-}")
  timed mm_vq_train $p "$py" -m mmar.cli train configs/motionmar_vqvae_cpu.py --workdir "$root/mm_vq" --set train.progress=false \
    $(scaled configs/motionmar_vqvae_cpu.py)
  timed mm_train $p "$py" -m mmar.cli train configs/motionmar_cpu.py --workdir "$root/mm" \
    --set model.vqvae_workdir="$root/mm_vq" --set train.progress=false $(scaled configs/motionmar_cpu.py)
  timed mm_eval $p "$py" -m mmar.cli eval --per-clip --checkpoint "$root/mm" --out "$root/mm_test.json"
  timed mm_eval_nomrn $p "$py" -m mmar.cli eval --per-clip --checkpoint "$root/mm" --set model.refine=false --out "$root/mm_test_nomrn.json"
}
case $which in
  agrol) agrol ;;
  mem) mem ;;
  motionmar) motionmar ;;
  all) agrol & mem & motionmar & wait ;;
  *) echo "usage: $0 ROOT [agrol|mem|motionmar|all]" >&2; exit 2 ;;
esac
