"""Mixed precision for any task: fp32 master weights and optimizer state, a lower-precision
forward and backward pass (``train.compute_dtype``).

The policy (as in ``jmp`` or maxtext's ``dtype`` / ``weight_dtype`` split), applied around a
task's ``loss`` without the task doing anything:

- the trained parameters are cast to the compute dtype on entry to the loss (the cast's
  transpose returns fp32 gradients, so the optimizer and its state stay fp32);
- every floating-point argument of an *outermost* Flax module call (``model.apply(...)`` and
  its ``method=``) is cast to the compute dtype, so Flax's dtype promotion runs every
  ``Dense``/``Conv``/attention in that dtype (Flax's normalisation layers reduce in fp32);
- every floating-point result of such a call is cast back to fp32, so losses, reductions and
  targets computed by the task stay fp32; the batch itself is not cast;
- non-trainable collections (BatchNorm statistics, VQ codebooks, frozen first stages) are not
  cast, and whatever the loss returns for them is cast back to their stored dtype.

``compute_dtype="float32"`` is the identity. Public API: :data:`COMPUTE_DTYPES`,
:func:`cast_floating`, :func:`with_compute_dtype`.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmar.errors import ConfigError

__all__ = ["COMPUTE_DTYPES", "cast_floating", "with_compute_dtype", "check_compute_dtype"]

COMPUTE_DTYPES = ("float32", "bfloat16")


def check_compute_dtype(name: str) -> Any:
    """The jnp dtype of ``train.compute_dtype``; ConfigError for other names."""
    if name not in COMPUTE_DTYPES:
        raise ConfigError(f"train.compute_dtype: expected one of {', '.join(COMPUTE_DTYPES)}, got {name!r}")
    return jnp.dtype(name)


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Every floating-point array leaf of ``tree`` as ``dtype``; other leaves unchanged."""

    def one(x):
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype:
            return jnp.asarray(x).astype(dtype)
        return x

    return jax.tree_util.tree_map(one, tree)


def with_compute_dtype(loss_fn: Callable, compute_dtype: str) -> Callable:
    """``loss_fn(params, extra_vars, batch, rng, step)`` run under the mixed-precision policy
    of the module doc. The returned loss and metrics are fp32; the returned extra collections
    have the dtypes of ``extra_vars``."""
    dtype = check_compute_dtype(compute_dtype)
    if dtype == jnp.float32:
        return loss_fn
    depth = threading.local()

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name == "setup":
            return next_fun(*args, **kwargs)
        level = getattr(depth, "level", 0)
        if level > 0:
            return next_fun(*args, **kwargs)
        depth.level = 1
        try:
            out = next_fun(*cast_floating(args, dtype), **cast_floating(kwargs, dtype))
        finally:
            depth.level = 0
        return cast_floating(out, jnp.float32)

    def wrapped(params, extra_vars, batch, rng, step):
        with nn.intercept_methods(interceptor):
            loss, (metrics, new_extra) = loss_fn(cast_floating(params, dtype), extra_vars, batch, rng, step)
        if new_extra:
            new_extra = _like(new_extra, extra_vars)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in (metrics or {}).items()}
        return jnp.asarray(loss, jnp.float32), (metrics, new_extra)

    return wrapped


def _like(new: Any, old: Any) -> Any:
    """``new`` with each leaf cast to the dtype of the leaf at the same path of ``old`` (leaves
    ``old`` lacks keep theirs)."""
    if isinstance(new, Mapping):
        return {k: _like(v, old.get(k) if isinstance(old, Mapping) else None) for k, v in new.items()}
    if old is not None and hasattr(new, "dtype") and hasattr(old, "dtype") and new.dtype != old.dtype:
        return jnp.asarray(new).astype(old.dtype)
    return new
