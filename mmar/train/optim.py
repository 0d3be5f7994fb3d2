"""Optimizer: AdamW + warm-up and cosine / step / constant decay, global-norm clipping, EMA.

Public API:

- ``make_schedule(cfg: OptimConfig, total_steps) -> optax.Schedule``. Linear warm-up from 0 to
  ``lr`` over ``warmup_steps``, then
  ``cosine``: cosine decay to ``lr * end_lr_factor`` at ``decay_steps`` (warm-up included;
  None = ``total_steps``); ``step``: ``lr * decay_factor ** (number of boundaries <= step)``;
  ``constant``: ``lr``.
- ``decay_mask(params) -> pytree of bool``: weight decay applies to every param except biases,
  norm scales, all params with ndim <= 1 and embeddings (any path part containing 'embed').
- ``make_optimizer(cfg, total_steps) -> (optax.GradientTransformation, schedule)``:
  ``clip_by_global_norm(grad_clip)`` (if set) followed by ``adamw`` with the mask.
- ``ema_update(ema, params, decay)``: ``decay * ema + (1 - decay) * params``.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from mmar.errors import ConfigError
from mmar.train.config import OptimConfig

__all__ = ["make_schedule", "decay_mask", "make_optimizer", "ema_update"]

_NO_DECAY_NAMES = ("bias", "scale")


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    lr = float(cfg.lr)
    warmup = int(cfg.warmup_steps)
    if warmup < 0:
        raise ConfigError(f"optim.warmup_steps: must be >= 0, got {warmup}")

    def warm(step: jax.Array) -> jax.Array:
        if warmup == 0:
            return jnp.ones((), jnp.float32)
        return jnp.minimum(1.0, step.astype(jnp.float32) / warmup)

    kind = cfg.schedule
    if kind == "constant":

        def sched(step):
            step = jnp.asarray(step)
            return lr * warm(step)

    elif kind == "cosine":
        decay_steps = int(cfg.decay_steps if cfg.decay_steps is not None else total_steps)
        span = max(decay_steps - warmup, 1)
        end = lr * float(cfg.end_lr_factor)

        def sched(step):
            step = jnp.asarray(step)
            t = jnp.clip((step.astype(jnp.float32) - warmup) / span, 0.0, 1.0)
            cos = end + (lr - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
            return jnp.where(step < warmup, lr * warm(step), cos)

    elif kind == "step":
        bounds = jnp.asarray(sorted(int(b) for b in cfg.boundaries), jnp.int32)
        factor = float(cfg.decay_factor)

        def sched(step):
            step = jnp.asarray(step)
            n = jnp.sum(step >= bounds) if bounds.size else 0
            return lr * warm(step) * factor**n

    else:
        raise ConfigError(f"optim.schedule: unknown schedule {kind!r} (use 'cosine', 'step' or 'constant')")
    return sched


def _path_names(path: tuple) -> list[str]:
    names = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                names.append(str(getattr(k, attr)).lower())
                break
        else:
            names.append(str(k).lower())
    return names


def decay_mask(params: Any) -> Any:
    """True where weight decay applies (see module docstring)."""

    def one(path: tuple, x: Any) -> bool:
        names = _path_names(path)
        if getattr(x, "ndim", 0) <= 1:
            return False
        if names and names[-1] in _NO_DECAY_NAMES:
            return False
        if any("embed" in n for n in names):
            return False
        return True

    return jax.tree_util.tree_map_with_path(one, params)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = make_schedule(cfg, total_steps)
    parts = []
    if cfg.grad_clip is not None:
        if cfg.grad_clip <= 0:
            raise ConfigError(f"optim.grad_clip: must be > 0 or None, got {cfg.grad_clip}")
        parts.append(optax.clip_by_global_norm(float(cfg.grad_clip)))
    parts.append(
        optax.adamw(
            learning_rate=schedule,
            b1=float(cfg.b1),
            b2=float(cfg.b2),
            eps=float(cfg.eps),
            weight_decay=float(cfg.weight_decay),
            mask=decay_mask,
        )
    )
    if cfg.ema_decay is not None and not 0.0 <= cfg.ema_decay < 1.0:
        raise ConfigError(f"optim.ema_decay: must be in [0, 1) or None, got {cfg.ema_decay}")
    return optax.chain(*parts), schedule


def ema_update(ema: Any, params: Any, decay: float) -> Any:
    return jax.tree_util.tree_map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema, params)
