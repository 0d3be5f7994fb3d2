"""ScaleMoGen stage 1: the skeletal-temporal BSQ tokenizer at the paper's size, on the Bandai
captioned motion data (HumanML3D features at 20 fps, 196-frame windows).

Model: the official ScaleMoGen tokenizer (``../shared/reference/next-scale-notes.md`` section 3:
per-joint MLPs, 2 levels of 2 ResSTConv + STPool, 22 -> 12 -> 7 body groups, 49 x 7 x 384 latent,
Linear 384 -> 24, 11 BSQ scales of 24 bits (864 tokens), VQ stochastic depth 0.5; loss SmoothL1
+ 0.5 root + 0.5 local velocity + 4.0 x mean BSQ aux loss).
Optimiser: AdamW (0.9, 0.99), lr 2e-4, gradient clipping 0.5, batch 64, 500 epochs, warm-up 2,000
iterations, x0.3 at 150k and 250k iterations. The official schedule counts HumanML3D
iterations (23,384 training motions, 365 steps of 64 an epoch): the warm-up is 5.5 epochs and
the milestones epochs 410.5 and 684 (the second lies past the 500 epochs and never fires). Here
an epoch is one pass over the 1,903 Bandai training motions (29.7 steps of 64), so 500 epochs =
14,867 steps, warm-up 163 steps, x0.3 at step 12,207. Weight decay: not given in the notes; 0.
Evaluation every 500 steps on the validation split; best checkpoint by full-scale MPJPE
(``mpjpe_cm``).

    mmar train configs/scalemogen_vqvae.py --workdir runs/scalemogen_vqvae
"""
from mmar.tasks.moscale_vqvae import MoScaleDataConfig
from mmar.tasks.scalemogen_vqvae import ScaleMoGenVQVAEModelConfig
from mmar.train.config import Config, OptimConfig, TrainConfig

TASK = "scalemogen_vqvae"
BANDAI_TRAIN_MOTIONS = 1903  # load_t2m("bandai") train split (docs/results.md)
HUMANML3D_TRAIN_MOTIONS = 23384  # the official epochs' size (HumanML3D train split)
OFFICIAL_BATCH = 64
OFFICIAL_WARMUP_ITERS = 2000
OFFICIAL_MILESTONE_ITERS = (150_000, 250_000)


def official_epochs(iters: float) -> float:
    """HumanML3D epochs of ``iters`` official iterations (batch 64)."""
    return iters / (HUMANML3D_TRAIN_MOTIONS / OFFICIAL_BATCH)


def scalemogen_vqvae_experiment(name: str, model: ScaleMoGenVQVAEModelConfig, *, batch_size: int = OFFICIAL_BATCH,
                                epochs: float = 500, lr: float = 2e-4, eval_every: int = 500,
                                data: MoScaleDataConfig | None = None,
                                motions: int = BANDAI_TRAIN_MOTIONS) -> Config:
    """The official tokenizer optimisation, its epochs converted to steps of ``batch_size``
    over ``motions`` training motions (milestones past the end are dropped)."""
    spe = motions / batch_size
    warmup = max(int(round(official_epochs(OFFICIAL_WARMUP_ITERS) * spe)), 1)
    steps = int(round(epochs * spe))
    boundaries = tuple(b for b in (int(round(official_epochs(m) * spe)) for m in OFFICIAL_MILESTONE_ITERS)
                       if b < steps)
    return Config(
        name=name,
        task=TASK,
        model=model,
        data=data or MoScaleDataConfig(),
        optim=OptimConfig(lr=lr, warmup_steps=warmup, schedule="step", boundaries=boundaries, decay_factor=0.3,
                          weight_decay=0.0, b1=0.9, b2=0.99, grad_clip=0.5),
        train=TrainConfig(steps=steps, batch_size=batch_size, log_every=50, eval_every=eval_every,
                          ckpt_every=eval_every, best_metric="mpjpe_cm", best_mode="min"),
    )


def get_config():
    return scalemogen_vqvae_experiment("scalemogen_vqvae", ScaleMoGenVQVAEModelConfig())
