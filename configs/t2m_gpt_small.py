"""The next-token (T2M-GPT style) baseline with the budget and sizes of ``configs/moscale_small.py``
(about the same parameter count; ``mmar.tasks.t2m_gpt``):

- width 256, 4 blocks, 4 heads, AdaLN / memory width 128, text pool 2 heads, text encoder 2 x 128;
- batch 32, 3,000 steps, warm-up 150 steps, cosine to 0.01 x over the 3,000 steps;
- validation every 750 steps: FID of generated validation motions when ``data.evaluator_workdir``
  names a trained evaluator (the best checkpoint by it).

It reads the finest-scale tokens of the small MoScale tokenizer (``configs/moscale_vqvae_small.py``)::

    mmar train configs/t2m_gpt_small.py --workdir runs/t2m_gpt_small \\
        --set model.tokenizer_workdir=runs/moscale_vq --set data.evaluator_workdir=runs/t2m_eval
"""
from configs.moscale_small import BATCH, EVAL_EVERY, STEPS, WARMUP
from configs.t2m_gpt import t2m_gpt_experiment
from mmar.tasks.moscale import MoScaleGenDataConfig
from mmar.tasks.t2m_gpt import T2MGPTModelConfig


def small_model(**kw) -> T2MGPTModelConfig:
    base = dict(width=256, depth=4, heads=4, cond_dim=128, memory_dim=128, pool_heads=2, text_width=128,
                text_depth=2, text_heads=4, drop_path=0.1 * 4 / 24)
    return T2MGPTModelConfig(**{**base, **kw})


def get_config():
    cfg = t2m_gpt_experiment("t2m_gpt_small", small_model(), batch_size=BATCH,
                             data=MoScaleGenDataConfig(eval_batch=32))
    cfg.train.steps = STEPS
    cfg.train.eval_every = cfg.train.ckpt_every = EVAL_EVERY
    cfg.train.best_metric, cfg.train.best_mode = "fid", "min"
    cfg.optim.warmup_steps = WARMUP
    cfg.optim.decay_steps = STEPS
    return cfg
