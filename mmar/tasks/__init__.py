"""Tasks bind a model family to its data, loss and evaluation for :func:`mmar.train.train`."""
from __future__ import annotations

import json
import os

from mmar.errors import ConfigError

SPARSE_BODY_KINDS = ("agrol_mlp", "mem_mlp", "mlp_vqvae")
MOTIONMAR_KINDS = ("motionmar", "tmt_vqvae")


def _kind(cfg) -> str | None:
    m = cfg.model
    return m.get("kind") if isinstance(m, dict) else getattr(m, "kind", None)


def make_task(cfg, **kwargs):
    """The task of an experiment config, chosen by ``cfg.model.kind``."""
    kind = _kind(cfg)
    if kind in SPARSE_BODY_KINDS:
        from mmar.tasks.sparse_body import SparseBodyTask

        return SparseBodyTask(cfg, **kwargs)
    if kind in MOTIONMAR_KINDS:
        from mmar.tasks.motionmar import MotionMARTask

        return MotionMARTask(cfg, **kwargs)
    raise ConfigError(f"no task for model config {type(cfg.model).__name__} (kind {kind!r})")


def base_config(workdir: str | os.PathLike | None = None):
    """Typed defaults the saved config of a run (``workdir/config.json``) is read into: the
    model section of the run's task family and the shared sparse-body data section."""
    from mmar.tasks.sparse_body import SparseBodyDataConfig, SparseBodyModelConfig
    from mmar.train.config import Config

    kind = None
    if workdir is not None:
        try:
            with open(os.path.join(workdir, "config.json")) as f:
                kind = (json.load(f).get("config", {}).get("model") or {}).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None  # load_saved_config reports a missing or malformed file
    if kind in MOTIONMAR_KINDS:
        from mmar.tasks.motionmar import MotionMARModelConfig

        return Config(model=MotionMARModelConfig(), data=SparseBodyDataConfig())
    return Config(model=SparseBodyModelConfig(), data=SparseBodyDataConfig())
