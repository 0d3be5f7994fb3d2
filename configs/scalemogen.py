"""ScaleMoGen's bit-wise next-scale text-to-motion predictor on the Bandai captioned motions,
paper size (``scalemogen_layer12``; ``../shared/reference/next-scale-notes.md`` section 3).

Model: 12 blocks, width 768, 8 heads, MLP 3072, drop-path 0.1, dropout 0; shared AdaLN with
per-block offsets; cosine attention with a learned per-head scale and ``1/sqrt(d)``; 2D
scale-normalised RoPE over (time, body group); level embedding (15); one start token from the
attentive text pool (16 heads); cross-attention on a 768-d caption memory; bit-wise head (24
binary softmaxes per token) with per-bit cross-entropy weighted ``1/sqrt(N_k)``; bit-flip
correction at rates ``U{0, ..., 0.30}``; sampling CFG 7 with the VAR ramp, per-bit temperature
1.3. Text: this package's encoder (4 x 256, trained with the predictor) in place of frozen
Flan-T5-XL. Tokenizer: a ``scalemogen_vqvae`` run (``configs/scalemogen_vqvae.py``).

Optimiser (``train_scalemogen_predictor.py``): AdamW (0.9, 0.97), weight decay 0.005, constant
lr ``6e-3 x batch / 256 / 64`` (5.9e-6 at the official batch 16), 100 epochs. The official
clip ``5 (0.3^(20 p) + 0.2)`` falls from 6 to about 1 within the first tenth of training; here
a constant 1.0. Validation every 10 epochs (FID of generated validation motions when
``data.evaluator_workdir`` is set, else the teacher-forced loss)::

    mmar train configs/scalemogen.py --workdir runs/scalemogen \\
        --set model.tokenizer_workdir=runs/scalemogen_vqvae --set data.evaluator_workdir=runs/t2m_eval
"""
from mmar.tasks.moscale import MoScaleGenDataConfig
from mmar.tasks.scalemogen import ScaleMoGenModelConfig
from mmar.train.config import Config, OptimConfig, TrainConfig

BANDAI_TRAIN_MOTIONS = 1903
OFFICIAL_BATCH = 16


def scalemogen_experiment(name: str, model: ScaleMoGenModelConfig, *, batch_size: int = OFFICIAL_BATCH,
                          epochs: float = 100, lr: float | None = None, eval_every_epochs: float = 10,
                          data: MoScaleGenDataConfig | None = None, motions: int = BANDAI_TRAIN_MOTIONS) -> Config:
    """The official predictor optimisation, epochs converted to steps of ``batch_size``."""
    spe = motions / batch_size
    data = data or MoScaleGenDataConfig(eval_batch=32)
    every = max(int(round(eval_every_epochs * spe)), 1)
    best = ("fid", "min") if data.evaluator_workdir else ("val_ce", "min")
    return Config(
        name=name,
        task="scalemogen",
        model=model,
        data=data,
        optim=OptimConfig(lr=6e-3 * batch_size / 256 / 64 if lr is None else lr, warmup_steps=0,
                          schedule="constant", weight_decay=0.005, b1=0.9, b2=0.97, grad_clip=1.0),
        train=TrainConfig(steps=int(round(epochs * spe)), batch_size=batch_size, log_every=50, eval_every=every,
                          ckpt_every=every, best_metric=best[0], best_mode=best[1]),
    )


def get_config() -> Config:
    return scalemogen_experiment("scalemogen", ScaleMoGenModelConfig())
