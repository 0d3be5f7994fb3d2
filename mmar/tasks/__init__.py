"""Tasks bind a model family to its data, loss and evaluation for :func:`mmar.train.train`."""
from __future__ import annotations

from mmar.errors import ConfigError


def make_task(cfg, **kwargs):
    """The task of an experiment config, chosen by the type of ``cfg.model``."""
    from mmar.tasks.sparse_body import SparseBodyModelConfig, SparseBodyTask

    if isinstance(cfg.model, SparseBodyModelConfig) or (
        isinstance(cfg.model, dict) and cfg.model.get("kind") in ("agrol_mlp", "mem_mlp", "mlp_vqvae")
    ):
        return SparseBodyTask(cfg, **kwargs)
    raise ConfigError(f"no task for model config {type(cfg.model).__name__}")
