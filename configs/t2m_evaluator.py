"""The text-motion evaluator (Guo et al.) on the Bandai captioned motions (``mmar.data.t2m``).

Paper size and schedule (``train_tex_mot_match``): 21.8 M parameters (bi-GRUs of 1024 / 512),
Adam at lr 1e-4, batch 32, gradient clipping 0.5, 300 epochs (Bandai: 1,903 training motions,
59 batches per epoch -> 17,700 steps), margin loss (10). Validation every 10 epochs on the
``val`` split; the best checkpoint by validation R-precision top-1 (never the test split)::

    mmar train configs/t2m_evaluator.py --workdir /tmp/runs/t2m_eval

On a 2-core CPU the paper size runs about 2.5 s per step (12 h for the schedule). The CPU
setting used for the Bandai result in docs/results.md (5.8 M parameters: bi-GRUs of 512 / 256,
128-d words, 256-channel movement encoder; about 0.7 s per step on 2 shared EPYC cores, 3,000
steps = 51 epochs in about 35 minutes; lr 3e-4 with a cosine decay instead of the official
constant 1e-4, for the six times shorter schedule)::

    mmar train configs/t2m_evaluator.py --workdir /tmp/runs/t2m_eval \
        --set model.motion_hidden=512 --set model.text_hidden=256 --set model.movement_hidden=256 \
        --set model.movement_latent=256 --set model.word_dim=128 --set train.steps=3000 \
        --set train.eval_every=295 --set train.ckpt_every=295 --set optim.lr=3e-4 \
        --set optim.schedule=cosine --set optim.end_lr_factor=0.05

(``task`` is the module path until ``t2m_evaluator`` is registered in ``mmar.tasks.TASKS``.)
"""
from mmar.tasks.t2m_evaluator import T2MEvaluatorDataConfig, T2MEvaluatorModelConfig
from mmar.train.config import Config, OptimConfig, TrainConfig

EPOCH = 59  # Bandai: 1,903 training motions // 32


def get_config() -> Config:
    return Config(
        name="t2m_evaluator",
        task="t2m_evaluator",
        model=T2MEvaluatorModelConfig(),
        data=T2MEvaluatorDataConfig(source="bandai", eval_split="val"),
        optim=OptimConfig(lr=1e-4, warmup_steps=0, schedule="constant", weight_decay=0.0, grad_clip=0.5),
        train=TrainConfig(steps=300 * EPOCH, batch_size=32, log_every=EPOCH, eval_every=10 * EPOCH,
                          ckpt_every=10 * EPOCH, best_metric="rprec_top1", best_mode="max"),
    )
