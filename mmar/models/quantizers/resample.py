"""Time resampling as constant matrices, matching PyTorch's ``F.interpolate``.

The next-scale quantisers resize sequences between a handful of fixed lengths (49 -> 6, 6 -> 49,
20 -> 5, ...). Every such resize is linear in the input, so it is built once per
``(L_in, L_out, mode)`` as an ``(L_out, L_in)`` float32 numpy matrix and applied with one
``einsum`` (static shapes, jit-friendly, exact float32 with ``Precision.HIGHEST``).

Modes (all along one axis; the reference behaviour is PyTorch's, which the official MoScale,
ScaleMoGen, VAR and MotionMAR code use):

* ``'area'`` -- ``F.interpolate(mode='area')`` = adaptive average pooling: output ``i`` averages
  input window ``[floor(i L_in / L_out), ceil((i+1) L_in / L_out))``. Windows are uneven and may
  overlap when ``L_in`` is not a multiple of ``L_out`` (49 -> 6). Upsampling with 'area'
  repeats samples (nearest-like).
* ``'linear'`` -- ``F.interpolate(mode='linear', align_corners=False)``: half-pixel source
  coordinate ``src = (i + 0.5) L_in / L_out - 0.5`` clamped below at 0, linear blend of
  ``floor(src)`` and the next sample (clamped at the end). No antialiasing when downsampling
  (unlike ``jax.image.resize``). ScaleMoGen's 'trilinear' on a (1, T, J) grid reduces to this
  along time.
* ``'nearest'`` -- ``F.interpolate(mode='nearest')``: ``src = floor(i L_in / L_out)``.

``resample(x, length, mode, axis=1)`` applies the matrix; a same-length resize is the identity
for every mode and is skipped.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import ConfigError

Array = jax.Array

MODES = ("area", "linear", "nearest")
HIGHEST = jax.lax.Precision.HIGHEST


def _check(l_in: int, l_out: int) -> tuple[int, int]:
    l_in, l_out = int(l_in), int(l_out)
    if l_in < 1 or l_out < 1:
        raise ConfigError(f"resample lengths must be >= 1, got {l_in} -> {l_out}")
    return l_in, l_out


@functools.lru_cache(maxsize=None)
def _area(l_in: int, l_out: int) -> np.ndarray:
    w = np.zeros((l_out, l_in), np.float64)
    for i in range(l_out):
        start = (i * l_in) // l_out
        end = -((-(i + 1) * l_in) // l_out)  # ceil
        w[i, start:end] = 1.0 / (end - start)
    w = w.astype(np.float32)
    w.flags.writeable = False
    return w


@functools.lru_cache(maxsize=None)
def _linear(l_in: int, l_out: int) -> np.ndarray:
    w = np.zeros((l_out, l_in), np.float64)
    scale = l_in / l_out
    for i in range(l_out):
        src = max(scale * (i + 0.5) - 0.5, 0.0)
        i0 = min(int(np.floor(src)), l_in - 1)
        i1 = i0 + 1 if i0 < l_in - 1 else i0
        lam = src - i0
        w[i, i0] += 1.0 - lam
        w[i, i1] += lam
    w = w.astype(np.float32)
    w.flags.writeable = False
    return w


@functools.lru_cache(maxsize=None)
def _nearest(l_in: int, l_out: int) -> np.ndarray:
    w = np.zeros((l_out, l_in), np.float32)
    scale = l_in / l_out
    for i in range(l_out):
        w[i, min(int(np.floor(i * scale)), l_in - 1)] = 1.0
    w.flags.writeable = False
    return w


def area_matrix(l_in: int, l_out: int) -> np.ndarray:
    """``(l_out, l_in)`` adaptive-average-pooling matrix (PyTorch ``mode='area'``)."""
    return _area(*_check(l_in, l_out))


def linear_matrix(l_in: int, l_out: int) -> np.ndarray:
    """``(l_out, l_in)`` half-pixel linear interpolation matrix (``align_corners=False``)."""
    return _linear(*_check(l_in, l_out))


def nearest_matrix(l_in: int, l_out: int) -> np.ndarray:
    """``(l_out, l_in)`` nearest-neighbour matrix (PyTorch ``mode='nearest'``)."""
    return _nearest(*_check(l_in, l_out))


def resample_matrix(l_in: int, l_out: int, mode: str) -> np.ndarray:
    """The ``(l_out, l_in)`` matrix of ``mode`` (one of :data:`MODES`); read-only, cached."""
    if mode == "area":
        return area_matrix(l_in, l_out)
    if mode == "linear":
        return linear_matrix(l_in, l_out)
    if mode == "nearest":
        return nearest_matrix(l_in, l_out)
    raise ConfigError(f"unknown resample mode {mode!r}; expected one of {MODES}")


def resample(x: Array, length: int, mode: str, axis: int = 1) -> Array:
    """Resize ``x`` to ``length`` samples along ``axis`` (float32 math).

    ``x`` may have any number of dimensions; the other axes are carried along. The result is
    float32 (the resampling of quantiser residuals and code maps stays in full precision).
    """
    x = jnp.asarray(x, jnp.float32)
    axis = axis % x.ndim
    l_in = x.shape[axis]
    if mode not in MODES:
        raise ConfigError(f"unknown resample mode {mode!r}; expected one of {MODES}")
    if int(length) == l_in:
        return x
    w = jnp.asarray(resample_matrix(l_in, int(length), mode))
    y = jnp.tensordot(w, jnp.moveaxis(x, axis, 0), axes=(1, 0), precision=HIGHEST)
    return jnp.moveaxis(y, 0, axis)
