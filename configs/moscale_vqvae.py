"""MoScale stage 1: the residual tokenizer ("HRVQVAE") at the paper's size, on the Bandai
captioned motion data (HumanML3D features at 20 fps, 196-frame windows).

Model: the official ``config/train_hrvqvae.yaml`` (width 512, 196 -> 49 latent steps, attention
blocks, EMA codebook 512 x 512, scales 6 / 12 / 24 / 49, no phi, Gumbel assignment at 0.5).
Optimiser: AdamW (0.9, 0.99), lr 3e-4, no weight decay, gradient clipping 0.5, batch 256, x0.3
at epochs 300 and 700 (counted after the warm-up), 1,000 epochs. The official schedule counts
epochs of HumanML3D; here an epoch is one pass over the 1,903 Bandai training motions (7.43
steps of 256), so 1,000 epochs = 7,434 steps. The official warm-up of 2,000 iterations is
about 20 HumanML3D epochs; it is kept as 20 epochs (149 steps), not as 2,000 steps (270 Bandai
epochs). Evaluation every 250 steps on the validation split; best checkpoint by full-scale
MPJPE (``mpjpe_cm``).

    mmar train configs/moscale_vqvae.py --workdir runs/moscale_vqvae
"""
from mmar.tasks.moscale_vqvae import MoScaleDataConfig, MoScaleVQVAEModelConfig
from mmar.train.config import Config, OptimConfig, TrainConfig

TASK = "moscale_vqvae"
BANDAI_TRAIN_MOTIONS = 1903  # load_t2m("bandai") train split (docs/results.md)


def steps_per_epoch(batch_size: int, motions: int = BANDAI_TRAIN_MOTIONS) -> float:
    return motions / batch_size


def moscale_vqvae_experiment(name: str, model: MoScaleVQVAEModelConfig, *, batch_size: int = 256,
                             epochs: float = 1000, warmup_epochs: float = 20, milestones=(300, 700),
                             lr: float = 3e-4, eval_every: int = 250, data: MoScaleDataConfig | None = None,
                             motions: int = BANDAI_TRAIN_MOTIONS) -> Config:
    """The official HRVQVAE optimisation, its epochs converted to steps of ``batch_size``."""
    spe = steps_per_epoch(batch_size, motions)
    warmup = max(int(round(warmup_epochs * spe)), 1)
    steps = int(round(epochs * spe))
    boundaries = tuple(int(round(warmup + m * spe)) for m in milestones)
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
    return moscale_vqvae_experiment("moscale_vqvae", MoScaleVQVAEModelConfig())
