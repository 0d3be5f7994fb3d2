"""Optimizer: AdamW + warm-up and cosine / step / constant decay, global-norm clipping, EMA.

Public API:

- ``make_schedule(cfg: OptimConfig, total_steps) -> optax.Schedule`` (float32 learning rate of
  a step), built from optax's schedules. Linear warm-up from 0 to ``lr`` over
  ``warmup_steps``, then
  ``cosine``: cosine decay to ``lr * end_lr_factor`` at ``decay_steps`` (warm-up included;
  None = ``total_steps``; at least one step after the warm-up) with
  ``optax.cosine_decay_schedule`` joined to the warm-up by ``optax.join_schedules``;
  ``step``: ``lr * decay_factor ** (number of boundaries <= step)``
  (``optax.piecewise_constant_schedule``; boundaries are absolute steps, a boundary listed twice
  counts twice, one inside the warm-up scales it); ``constant``: ``lr``
  (``optax.constant_schedule``). For ``step`` and ``constant`` the warm-up is a factor
  ``min(1, step / warmup_steps)``.
- ``decay_mask(params) -> pytree of bool``: weight decay applies to every param except biases,
  norm scales, all params with ndim <= 1 and embeddings (any path part containing 'embed').
- ``make_optimizer(cfg, total_steps) -> (optax.GradientTransformation, schedule)``:
  ``clip_by_global_norm(grad_clip)`` (if set) followed by ``adamw`` with the mask; with
  ``cfg.frozen`` (regular expressions over the ``'/'``-joined param paths) the params they match
  get zero updates (``optax.multi_transform`` with ``optax.set_to_zero``) and the clipping and
  AdamW see only the others. A pattern that matches no param, or patterns that freeze every
  param, raise :class:`ConfigError` when the optimizer state is built.
- ``frozen_labels(params, patterns) -> pytree of 'train' | 'frozen'``.
- ``ema_update(ema, params, decay)``: ``decay * ema + (1 - decay) * params``.
"""
from __future__ import annotations

import collections
import re
from typing import Any

import jax
import jax.numpy as jnp
import optax

from mmar.errors import ConfigError
from mmar.train.config import OptimConfig

__all__ = ["make_schedule", "decay_mask", "make_optimizer", "frozen_labels", "ema_update"]

_NO_DECAY_NAMES = ("bias", "scale")


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    lr = float(cfg.lr)
    warmup = int(cfg.warmup_steps)
    if warmup < 0:
        raise ConfigError(f"optim.warmup_steps: must be >= 0, got {warmup}")
    kind = cfg.schedule
    if kind == "cosine":
        decay_steps = int(cfg.decay_steps if cfg.decay_steps is not None else total_steps)
        end = lr * float(cfg.end_lr_factor)
        sched = _warmup_then(_cosine(lr, end, max(decay_steps - warmup, 1)), lr, warmup)
    elif kind == "step":
        sched = _warmup_times(lr, warmup, optax.piecewise_constant_schedule(1.0, _step_scales(cfg)))
    elif kind == "constant":
        sched = _warmup_times(lr, warmup, optax.constant_schedule(1.0))
    else:
        raise ConfigError(f"optim.schedule: unknown schedule {kind!r} (use 'cosine', 'step' or 'constant')")
    return lambda step: jnp.asarray(sched(step), jnp.float32)


def _ramp(peak: float, warmup: int) -> optax.Schedule:
    """``peak * min(1, step / warmup)``, the linear warm-up from 0.

    Not ``optax.linear_schedule(0, peak, warmup)``: that evaluates ``peak - peak * (1 - step /
    warmup)`` in float32, which is off by up to ~1e-4 relative in the first steps of a long warm-up.
    """
    return lambda step: peak * jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup)


def _warmup_then(decay: optax.Schedule, lr: float, warmup: int) -> optax.Schedule:
    """The warm-up to ``lr``, then ``decay`` counted from the end of the warm-up."""
    return optax.join_schedules([_ramp(lr, warmup), decay], [warmup]) if warmup else decay


def _warmup_times(lr: float, warmup: int, factor: optax.Schedule) -> optax.Schedule:
    """The warm-up to ``lr`` (or ``lr``) times ``factor`` (so boundaries stay absolute steps)."""
    ramp = _ramp(lr, warmup) if warmup else optax.constant_schedule(lr)
    return lambda step: ramp(step) * factor(step)


def _cosine(lr: float, end: float, span: int) -> optax.Schedule:
    """Cosine from ``lr`` to ``end`` over ``span`` steps, then ``end``: ``end`` plus
    ``optax.cosine_decay_schedule`` from ``lr - end`` to 0, taken on the progress ``count / span``
    with ``decay_steps=1``.

    This rounds as mmar's schedule always did, bit for bit; ``decay_steps=span`` would take
    ``cos((pi * count) / span)`` instead of ``cos(pi * (count / span))`` (up to 1e-3 relative
    apart in the last steps of a decay to 0) and ``alpha=end / lr`` would round the rest differently.
    """
    decay = optax.cosine_decay_schedule(lr - end, decay_steps=1)
    return lambda count: decay(jnp.asarray(count, jnp.float32) / span) + end


def _step_scales(cfg: OptimConfig) -> dict[int, float]:
    """``{boundary: decay_factor ** (times it is listed)}`` for ``optax.piecewise_constant_schedule``."""
    factor = float(cfg.decay_factor)
    if factor < 0:
        raise ConfigError(f"optim.decay_factor: must be >= 0, got {factor}")
    counts = collections.Counter(int(b) for b in cfg.boundaries)
    return {b: factor**n for b, n in counts.items()}


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


def frozen_labels(params: Any, patterns) -> Any:
    """``'frozen'`` where a param's ``'/'``-joined path (``encoder/level0_conv0/STConv_0/temporal/kernel``)
    matches one of ``patterns`` (``re.search``), ``'train'`` elsewhere."""
    try:
        regexes = [re.compile(str(p)) for p in patterns]
    except re.error as e:
        raise ConfigError(f"optim.frozen: bad regular expression: {e}") from e
    hits = [0] * len(regexes)

    def one(path: tuple, _x: Any) -> str:
        name = "/".join(_path_names(path))
        found = [i for i, r in enumerate(regexes) if r.search(name)]
        for i in found:
            hits[i] += 1
        return "frozen" if found else "train"

    labels = jax.tree_util.tree_map_with_path(one, params)
    unused = [str(p) for p, n in zip(patterns, hits) if n == 0]
    if unused:
        names = ["/".join(_path_names(k)) for k, _ in jax.tree_util.tree_leaves_with_path(params)]
        raise ConfigError(f"optim.frozen: {unused} match no param (params are e.g. {names[:4]})")
    if all(v == "frozen" for v in jax.tree_util.tree_leaves(labels)):
        raise ConfigError(f"optim.frozen: {list(patterns)} freeze every param: nothing would train")
    return labels


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
    tx = optax.chain(*parts)
    patterns = tuple(cfg.frozen or ())
    if patterns:
        for pat in patterns:  # bad syntax fails here; unmatched patterns when the state is built
            try:
                re.compile(str(pat))
            except re.error as e:
                raise ConfigError(f"optim.frozen: bad regular expression {pat!r}: {e}") from e
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                                   lambda params: frozen_labels(params, patterns))
    return tx, schedule


def ema_decay_at(decay: float, step: Any, warmup: bool = True) -> Any:
    """The EMA decay of update ``step`` (0-based): ``decay``, or with ``warmup``
    ``min(decay, (1 + step) / (10 + step))`` (TensorFlow's ``ExponentialMovingAverage`` with
    ``num_updates``)."""
    if not warmup:
        return decay
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema: Any, params: Any, decay: Any) -> Any:
    return jax.tree_util.tree_map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema, params)
