"""ScaleMoGen's predictor small enough for a 2-core CPU, at MoScale small's budget
(``configs/moscale_small.py``): the structure of ``configs/scalemogen.py`` with

- width 192 (768), 4 blocks (12), 2 heads (8; head width 96 as the official), pooled text /
  AdaLN 128 (768; projected to the width for the start token), caption memory 128 (768), text
  pool 2 heads (16), text encoder 2 x 128 (4 x 256) -- MoScale small's text side;
- batch 16 (the official batch; MoScale small uses 32): a step reads 864 tokens per motion
  against MoScale's 91, and costs about 1.8 s on the 2-core machine at this size (width 256 /
  4 heads / batch 32: 6.6 s), so 1,500 steps take about 46 minutes;
- MoScale small's optimisation otherwise (AdamW 0.9 / 0.98, lr 3e-4, weight decay 0.05, clip
  2.0, warm-up 150, cosine planned over 3,000 steps, stopped at 1,500 steps as the MoScale and
  next-token rows of ``docs/results.md``); the official constant 5.9e-6 is for 100 epochs of a
  180 M model;
- validation every 750 steps (FID when ``data.evaluator_workdir`` is set).

It reads the small tokenizer (``configs/scalemogen_vqvae_small.py``)::

    mmar train configs/scalemogen_small.py --workdir runs/scalemogen_small \\
        --set model.tokenizer_workdir=runs/scalemogen_vq --set data.evaluator_workdir=runs/t2m_eval
"""
from configs.scalemogen import scalemogen_experiment
from mmar.tasks.moscale import MoScaleGenDataConfig
from mmar.tasks.scalemogen import ScaleMoGenModelConfig

BATCH = 16
STEPS = 1500
PLANNED = 3000
WARMUP = 150
EVAL_EVERY = 750


def small_model(**kw) -> ScaleMoGenModelConfig:
    base = dict(width=192, depth=4, heads=2, cond_dim=128, memory_dim=128, pool_heads=2, text_width=128,
                text_depth=2, text_heads=4, drop_path=0.1 * 4 / 12)
    return ScaleMoGenModelConfig(**{**base, **kw})


def get_config():
    cfg = scalemogen_experiment("scalemogen_small", small_model(), batch_size=BATCH,
                                data=MoScaleGenDataConfig(eval_batch=32))
    cfg.train.steps = STEPS
    cfg.train.eval_every = cfg.train.ckpt_every = EVAL_EVERY
    cfg.train.best_metric, cfg.train.best_mode = "fid", "min"
    cfg.optim.lr, cfg.optim.schedule, cfg.optim.warmup_steps = 3e-4, "cosine", WARMUP
    cfg.optim.decay_steps, cfg.optim.end_lr_factor = PLANNED, 0.01
    cfg.optim.weight_decay, cfg.optim.b1, cfg.optim.b2, cfg.optim.grad_clip = 0.05, 0.9, 0.98, 2.0
    return cfg
