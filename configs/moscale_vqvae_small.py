"""MoScale's residual tokenizer, small enough for a 2-core CPU: 3,000 steps of 32 windows in
about 15-20 minutes (measured on a loaded 2-core EPYC, see docs/results.md).

Same structure as ``configs/moscale_vqvae.py`` (conv + attention encoder/decoder, 196 -> 49
latent steps, EMA codebook of 512 codes, scales 6 / 12 / 24 / 49, no phi, Gumbel assignment,
official loss weights and AdamW settings) with these changes:

- width 64 (512), code_dim 64 (512), 2 residual blocks per level (3), 4 attention heads (8);
- dropout 0 (0.2 / 0.1): on CPU the dropout masks cost more than the model (0.69 vs 0.29 s a
  step at batch 32), and a 0.5 M-parameter model trained for 3,000 steps does not overfit;
- batch 32 (256), so the dead-code rules are scaled by 32 / 256 to keep their meaning ("dead"
  = hit less than once per 256 motions; reset only when a batch holds more than 5 x 512 x
  32 / 256 = 320 valid vectors): ``dead_threshold`` 0.125 (1), ``reset_min_factor`` 0.625 (5);
- 3,000 steps (about 50 epochs of the 1,903 training motions) with warm-up 100 steps and
  x0.3 at 30 % and 70 % of the steps after it (the official 300 / 700 of 1,000 epochs);
  evaluation every 500 steps.

    mmar train configs/moscale_vqvae_small.py --workdir /tmp/runs/moscale_vq
"""
from configs.moscale_vqvae import moscale_vqvae_experiment
from mmar.tasks.moscale_vqvae import MoScaleVQVAEModelConfig

BATCH = 32
STEPS = 3000
WARMUP = 100


def get_config():
    model = MoScaleVQVAEModelConfig(width=64, code_dim=64, depth=2, attn_heads=4, dropout=0.0, attn_dropout=0.0,
                                    dead_threshold=1.0 * BATCH / 256, reset_min_factor=5.0 * BATCH / 256)
    cfg = moscale_vqvae_experiment("moscale_vqvae_small", model, batch_size=BATCH, eval_every=500)
    cfg.train.steps = STEPS
    cfg.optim.warmup_steps = WARMUP
    cfg.optim.boundaries = tuple(int(WARMUP + f * (STEPS - WARMUP)) for f in (0.3, 0.7))
    return cfg
