"""Shared pieces of the experiment configs (each experiment is one file in configs/)."""
from __future__ import annotations

from mmar.tasks.base import BenchmarkDataConfig
from mmar.train.config import Config, OptimConfig, TrainConfig


def sparse_body_config(name: str, task: str, model, *, steps: int = 20000,
                       batch_size: int = 256, lr: float = 3e-4) -> Config:
    """The Bandai sparse-to-full-body protocol: AGRoL's optimiser (AdamW, lr 3e-4, weight
    decay 1e-4, batch 256), cosine decay with 500 warm-up steps, evaluation on the validation
    split every 2,000 steps, best checkpoint by MPJPE."""
    return Config(
        name=name,
        task=task,
        model=model,
        data=BenchmarkDataConfig(),
        optim=OptimConfig(lr=lr, warmup_steps=500, schedule="cosine", end_lr_factor=0.01,
                          weight_decay=1e-4, grad_clip=1.0),
        train=TrainConfig(steps=steps, batch_size=batch_size, log_every=100, eval_every=2000,
                          ckpt_every=2000, best_metric="mpjpe_cm", best_mode="min"),
    )


def motionmar_experiment(name: str, task: str, model, *, steps: int = 40000, batch_size: int = 256, lr: float = 2e-4,
                         eval_every: int = 2000) -> Config:
    """MotionMAR on the Bandai protocol (same data, split and metrics as the MLPs): AdamW
    (weight decay 0.05 as VAR), warm-up 500 steps + cosine, gradient clipping 2.0, evaluation
    on the validation split every ``eval_every`` steps; best checkpoint by MPJPE (for the
    TMT VQ-VAE: reconstruction MPJPE with all scales)."""
    return Config(
        name=name,
        task=task,
        model=model,
        data=BenchmarkDataConfig(),
        optim=OptimConfig(lr=lr, warmup_steps=500, schedule="cosine", end_lr_factor=0.01,
                          weight_decay=0.05, grad_clip=2.0),
        train=TrainConfig(steps=steps, batch_size=batch_size, log_every=100, eval_every=eval_every,
                          ckpt_every=eval_every, best_metric="mpjpe_cm", best_mode="min"),
    )
