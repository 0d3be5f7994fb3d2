#!/usr/bin/env bash
# Runs small versions of the documented commands (quickstart, train AGRoL-MLP / TMT VQ-VAE / MotionMAR,
# export, tools/bench_export.py) on one checkout into OUTDIR, so that two checkouts (before and
# after a refactor) can be compared with tools/same_figures_compare.py:
#
#   git worktree add /tmp/base <old commit>; ln -s $PWD/.venv /tmp/base/.venv
#   bash tools/same_figures.sh /tmp/base /tmp/cmp/base; bash tools/same_figures.sh $PWD /tmp/cmp/new
#   .venv/bin/python tools/same_figures_compare.py /tmp/cmp/base /tmp/cmp/new
#
# Data: ../shared/data/bandai-namco (or $MMAR_BANDAI_DIR); nothing is written inside the checkout.
set -x
CO=$1; OUT=$2
export TF_CPP_MIN_LOG_LEVEL=2
D=${MMAR_BANDAI_DIR:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data/bandai-namco}
PY=${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
cd $CO
mkdir -p $OUT
$PY experiments/quickstart.py --steps 300 --vq-steps 100 --out $OUT/qs --data $D > $OUT/quickstart.log 2>&1
S="--set data.root=$D --set data.max_eval_clips=4"
$PY -m mmar.cli train configs/agrol_mlp_41.py --workdir $OUT/agrol --set model.dim=128 --set model.depth=3 --set train.steps=200 --set train.eval_every=100 --set train.ckpt_every=100 --set train.batch_size=32 --set optim.lr=0.001 --set optim.warmup_steps=20 $S > $OUT/agrol.log 2>&1
$PY -m mmar.cli train configs/motionmar_vqvae.py --workdir $OUT/mmvq --set model.vq_width=64 --set model.vq_depth=1 --set train.steps=60 --set train.eval_every=60 --set train.ckpt_every=60 --set train.batch_size=16 --set optim.warmup_steps=5 $S > $OUT/mmvq.log 2>&1
$PY -m mmar.cli train configs/motionmar.py --workdir $OUT/mm --set model.vq_width=64 --set model.vq_depth=1 --set model.width=64 --set model.depth=2 --set model.heads=2 --set model.mrn_hidden=32 --set model.vqvae_workdir=$OUT/mmvq --set train.steps=40 --set train.eval_every=40 --set train.ckpt_every=40 --set train.batch_size=16 --set optim.warmup_steps=5 $S > $OUT/mm.log 2>&1
$PY -m mmar.cli export --checkpoint $OUT/agrol --out $OUT/agrol.tflite > $OUT/export_agrol.log 2>&1
$PY -m mmar.cli export --checkpoint $OUT/qs/mem_mlp --out $OUT/mem.tflite > $OUT/export_mem.log 2>&1
$PY -m mmar.cli export --checkpoint $OUT/mm --out $OUT/mm.tflite > $OUT/export_mm.log 2>&1
$PY tools/bench_export.py $OUT/agrol $OUT/qs/mem_mlp $OUT/mm --split test --max-clips 6 --iters 30 --quantize none,fp16 --data $D > $OUT/bench_export.log 2>&1
echo ALLDONE > $OUT/done
