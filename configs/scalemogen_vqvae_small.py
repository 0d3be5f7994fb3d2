"""ScaleMoGen's skeletal-temporal BSQ tokenizer, small enough for a 2-core CPU: about 0.28-0.29 s
a training step at batch 16 (measured on the 2-core development machine: synthetic 196 x 263
windows, and a 20-step ``mmar train`` smoke run on the Bandai data at 3.45 steps/s), so about
5 minutes per 1,000 steps; 3,000 steps about 15 minutes plus evaluation.

Same structure as ``configs/scalemogen_vqvae.py`` (per-joint MLPs, 2 pooling levels 22 -> 12 -> 7
body groups, 196 -> 49 latent steps, the official quantiser: 11 BSQ scales of 24 bits, VQ
stochastic depth 0.5; the official loss weights and AdamW betas / clipping) with these changes
(the small model of the former, removed training loop of ``tools/vq_scales.py``):

- latent_dim 32 (384): the skeletal grid is 22 joints x 196 frames, width 64 already costs
  1.6 s a step at batch 32 on CPU;
- one ResSTConv per level (``n_extra_layers`` 0; official 1) and dropout 0 (0.1);
- batch 16 (64), lr 1e-3 (2e-4) for the small model and short run;
- 3,000 steps (about 25 epochs of the 1,903 training motions), warm-up 100 steps, x0.3 at 70 %
  of the steps (the official milestone 150k of about 180k iterations); evaluation every 500 steps.

    mmar train configs/scalemogen_vqvae_small.py --workdir /tmp/runs/scalemogen_vq
"""
from configs.scalemogen_vqvae import scalemogen_vqvae_experiment
from mmar.tasks.scalemogen_vqvae import ScaleMoGenVQVAEModelConfig

BATCH = 16
STEPS = 3000
WARMUP = 100


def get_config():
    model = ScaleMoGenVQVAEModelConfig(latent_dim=32, n_extra_layers=0, dropout=0.0)
    cfg = scalemogen_vqvae_experiment("scalemogen_vqvae_small", model, batch_size=BATCH, lr=1e-3, eval_every=500)
    cfg.train.steps = STEPS
    cfg.optim.warmup_steps = WARMUP
    cfg.optim.boundaries = (int(WARMUP + 0.7 * (STEPS - WARMUP)),)
    return cfg
