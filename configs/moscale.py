"""MoScale's next-scale text-to-motion predictor on the Bandai captioned motions, paper size.

Model: the official ``config/train_moscale.yaml`` transformer (16 blocks, width 768, 8 heads,
RoPE 1D scale-normalised, attention scale 0.25/sqrt(d), AdaLN 384-d, cross-attention on a
384-d text memory, dropout 0.1, drop-path 0.1 x 16 / 24; ``../shared/reference/next-scale-notes.md``
section 2) over the scales of a ``moscale_vqvae`` run, with this package's text encoder (4 x
256, trained with the predictor) in place of frozen T5-base. Training corruption: MaskGIT over
all scales (10 % random / 80 % [MASK] / 10 % kept, visible noise U(0, 0.1)) and cross-scale
corruption gamma ~ U[0, 0.6]. Sampling defaults: steps (1, 2, 5, 10) per scale, CFG 5 with the
decreasing ramp, top-p 0.9, temperature 1.

Optimiser: AdamW (0.9, 0.98), lr 3e-4, weight decay 0.05 (not on biases, norms, embeddings:
:func:`mmar.train.optim.decay_mask`), gradient clipping 2.0, batch 64; warm-up 10 epochs, then
cosine towards 0.01 x planned over 250 epochs and stopped at epoch 120, as the official run
(an epoch is 1,903 / 64 = 29.7 Bandai steps). The official warm-up starts at 0.005 x; here at 0.
Validation every 10 epochs on ``val`` (FID of generated motions when ``data.evaluator_workdir``
is set, else the teacher-forced loss); never the test split::

    mmar train configs/moscale.py --workdir runs/moscale \\
        --set model.tokenizer_workdir=runs/moscale_vqvae --set data.evaluator_workdir=runs/t2m_eval
"""
from mmar.tasks.moscale import MoScaleGenDataConfig, MoScaleModelConfig
from mmar.train.config import Config, OptimConfig, TrainConfig

BANDAI_TRAIN_MOTIONS = 1903


def moscale_experiment(name: str, model: MoScaleModelConfig, *, batch_size: int = 64, epochs: float = 120,
                       planned_epochs: float = 250, warmup_epochs: float = 10, lr: float = 3e-4,
                       eval_every_epochs: float = 10, data: MoScaleGenDataConfig | None = None,
                       motions: int = BANDAI_TRAIN_MOTIONS) -> Config:
    """The official MoScale optimisation, epochs converted to steps of ``batch_size``."""
    spe = motions / batch_size
    data = data or MoScaleGenDataConfig()
    every = max(int(round(eval_every_epochs * spe)), 1)
    best = ("fid", "min") if data.evaluator_workdir else ("val_ce", "min")
    return Config(
        name=name,
        task="moscale",
        model=model,
        data=data,
        optim=OptimConfig(lr=lr, warmup_steps=max(int(round(warmup_epochs * spe)), 1), schedule="cosine",
                          decay_steps=int(round(planned_epochs * spe)), end_lr_factor=0.01, weight_decay=0.05,
                          b1=0.9, b2=0.98, grad_clip=2.0),
        train=TrainConfig(steps=int(round(epochs * spe)), batch_size=batch_size, log_every=50, eval_every=every,
                          ckpt_every=every, best_metric=best[0], best_mode=best[1]),
    )


def get_config() -> Config:
    return moscale_experiment("moscale", MoScaleModelConfig())
