"""MoScale's predictor small enough for a 2-core CPU (about 5.6 M parameters, 0.5 s a step at
batch 32): the recipe of ``configs/moscale.py`` with

- width 256 (768), 4 blocks (16), 4 heads (8), AdaLN / memory width 128 (384), text pool 2 heads
  (3), text encoder 2 x 128 (4 x 256);
- batch 32 (64), 3,000 steps (about 50 epochs of the 1,903 training motions; the official run
  stops at 120 of a planned 250), warm-up 150 steps, cosine to 0.01 x over the 3,000 steps;
- validation every 750 steps: FID of generated validation motions when ``data.evaluator_workdir``
  names a trained evaluator (the best checkpoint by it), else the teacher-forced loss.

It reads the small tokenizer (``configs/moscale_vqvae_small.py``)::

    mmar train configs/moscale_small.py --workdir runs/moscale_small \\
        --set model.tokenizer_workdir=runs/moscale_vq --set data.evaluator_workdir=runs/t2m_eval

The ablation without cross-scale corruption adds ``--set model.gamma_max=0``.
"""
from configs.moscale import moscale_experiment
from mmar.tasks.moscale import MoScaleGenDataConfig, MoScaleModelConfig

BATCH = 32
STEPS = 3000
WARMUP = 150
EVAL_EVERY = 750


def small_model(**kw) -> MoScaleModelConfig:
    base = dict(width=256, depth=4, heads=4, cond_dim=128, memory_dim=128, pool_heads=2, text_width=128,
                text_depth=2, text_heads=4, drop_path=0.1 * 4 / 24)
    return MoScaleModelConfig(**{**base, **kw})


def get_config():
    cfg = moscale_experiment("moscale_small", small_model(), batch_size=BATCH,
                             data=MoScaleGenDataConfig(eval_batch=32))
    cfg.train.steps = STEPS
    cfg.train.eval_every = cfg.train.ckpt_every = EVAL_EVERY
    cfg.train.best_metric, cfg.train.best_mode = "fid", "min"
    cfg.optim.warmup_steps = WARMUP
    cfg.optim.decay_steps = STEPS
    return cfg
