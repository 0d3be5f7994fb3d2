"""Shared pieces of the experiment configs (each experiment is one file in configs/)."""
from __future__ import annotations

from mmar.tasks.sparse_body import SparseBodyDataConfig, SparseBodyModelConfig
from mmar.train.config import Config, OptimConfig, TrainConfig


def sparse_body_config(name: str, model: SparseBodyModelConfig, *, steps: int = 20000,
                       batch_size: int = 256, lr: float = 3e-4) -> Config:
    """The Bandai sparse-to-full-body protocol: AGRoL's optimiser (AdamW, lr 3e-4, weight
    decay 1e-4, batch 256), cosine decay with 500 warm-up steps, evaluation on the validation
    split every 2,000 steps, best checkpoint by MPJPE."""
    return Config(
        name=name,
        model=model,
        data=SparseBodyDataConfig(),
        optim=OptimConfig(lr=lr, warmup_steps=500, schedule="cosine", end_lr_factor=0.01,
                          weight_decay=1e-4, grad_clip=1.0),
        train=TrainConfig(steps=steps, batch_size=batch_size, log_every=100, eval_every=2000,
                          ckpt_every=2000, best_metric="mpjpe_cm", best_mode="min"),
    )
