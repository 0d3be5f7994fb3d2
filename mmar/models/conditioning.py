"""Pluggable conditioning for the scale-wise AR transformer (:mod:`mmar.models.scale_ar`).

A conditioner maps the task's condition (sparse tracking signal, text features, ...) to the
four inputs the transformer understands, bundled as :class:`Conditioning`:

* ``adaln (B, C_cond)`` -- the AdaLN condition vector;
* ``additive (B, N, C)`` or None -- a per-token term added to the token embeddings;
* ``memory (B, M, C_mem)`` / ``memory_mask (B, M)`` or None -- the cross-attention memory;
* ``sos (B, L_0, C_sos)`` or None -- the scale-0 start tokens the caller feeds as inputs.

Every conditioner takes ``drop (B,)`` (True = drop the condition, for classifier-free
guidance: sample it with :func:`mmar.models.scale_ar.sample_cond_drop` in training, use
``[False] * B + [True] * B`` for the unconditional half at inference).

Implementations:

* :class:`SparseScaleControl` -- MotionMAR's scale-aware control (SAC): ``Linear(54, C)``,
  ``Conv1d(k3) -> ReLU -> Conv1d(k3)`` over time, then resampled to every scale's time length
  with a constant matrix (``'linear'``: half-pixel, no antialias, as
  ``F.interpolate(mode='linear', align_corners=False)``; or ``'area'``: adaptive average
  pooling) and added to that scale's tokens. AdaLN condition = learned sos + the mean of the
  concatenated per-scale features (the reference code averages over all N tokens;
  ``pool='time'`` averages over frames instead). ``align=False`` is the ablation without
  per-scale alignment: no per-token term, the same global condition. Dropping zeroes the
  features (so the condition becomes the sos vector), as the reference trainer does.
* :class:`TextCrossAttention` -- precomputed text features ``(B, L, D)`` + mask: RMSNorm,
  memory MLP ``D -> C -> C`` (GELU-tanh) for cross-attention, attentive pooling with learned
  queries giving the sos tokens and the AdaLN condition (max / mean / first over queries).
  Dropping replaces the caption by the first ``L`` rows of a learned ``(max_len, D)`` table
  under the same mask (MoScale ``cfg_uncond``, ScaleMoGen ``cfg_uncond``).
  MoScale: ``TextCrossAttention(768, memory_dim=384, pool_dim=384, num_queries=6,
  pool_heads=3, cond_reduce='max', max_len=20)``; ScaleMoGen (Flan-T5-XL):
  ``TextCrossAttention(2048, memory_dim=768, pool_dim=768, num_queries=1, pool_heads=16,
  max_len=512)``.

Resampling operators (:func:`linear_resample_matrix`, :func:`area_resample_matrix`) are
constant numpy matrices ``(dst, src)``; ``jax.image.resize`` antialiases when downsampling,
unlike torch, so it is not used.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Protocol, runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import ConfigError, ShapeError
from mmar.models.scale_ar import ScaleSchedule

Array = jax.Array


# --------------------------------------------------------------------------
# resampling matrices
# --------------------------------------------------------------------------

def linear_resample_matrix(src: int, dst: int) -> np.ndarray:
    """``(dst, src)`` matrix of 1D linear interpolation with half-pixel centres and no
    antialiasing (torch ``interpolate(mode='linear', align_corners=False)``)."""
    src, dst = int(src), int(dst)
    if src < 1 or dst < 1:
        raise ConfigError(f"resample sizes must be >= 1, got {src} -> {dst}")
    m = np.zeros((dst, src), np.float64)
    scale = src / dst
    for i in range(dst):
        x = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(math.floor(x)), src - 1)
        i1 = min(i0 + 1, src - 1)
        lam = x - i0
        m[i, i0] += 1.0 - lam
        m[i, i1] += lam
    return m.astype(np.float32)


def area_resample_matrix(src: int, dst: int) -> np.ndarray:
    """``(dst, src)`` matrix of adaptive average pooling (torch ``mode='area'``): output i
    averages inputs ``floor(i src / dst) .. ceil((i + 1) src / dst) - 1`` (uneven windows)."""
    src, dst = int(src), int(dst)
    if src < 1 or dst < 1:
        raise ConfigError(f"resample sizes must be >= 1, got {src} -> {dst}")
    m = np.zeros((dst, src), np.float64)
    for i in range(dst):
        a = (i * src) // dst
        b = -((-(i + 1) * src) // dst)
        m[i, a:b] = 1.0 / (b - a)
    return m.astype(np.float32)


def resample_matrix(src: int, dst: int, mode: str = "linear") -> np.ndarray:
    if mode == "linear":
        return linear_resample_matrix(src, dst)
    if mode == "area":
        return area_resample_matrix(src, dst)
    raise ConfigError(f"resample mode must be 'linear' or 'area', got {mode!r}")


def schedule_resample_matrix(schedule: ScaleSchedule, frames: int, mode: str = "linear") -> np.ndarray:
    """``(N, frames)`` matrix taking per-frame features to every token of the schedule: each
    scale's time length is resampled from ``frames``; 2D scales repeat it over groups."""
    rows = []
    for t, g in schedule.shapes:
        r = resample_matrix(frames, t, mode)
        rows.append(np.repeat(r, g, axis=0))
    return np.concatenate(rows, axis=0)


# --------------------------------------------------------------------------
# interface
# --------------------------------------------------------------------------

class Conditioning(NamedTuple):
    """What a conditioner hands to :class:`mmar.models.scale_ar.ScaleARTransformer`."""

    adaln: Array
    additive: Array | None = None
    memory: Array | None = None
    memory_mask: Array | None = None
    sos: Array | None = None


@runtime_checkable
class Conditioner(Protocol):
    """``conditioner(*inputs, drop=None, train=False) -> Conditioning``."""

    def __call__(self, *inputs, drop: Array | None = None, train: bool = False) -> Conditioning: ...


def _drop_mask(drop, batch: int) -> Array | None:
    if drop is None:
        return None
    drop = jnp.asarray(drop, bool)
    if drop.shape != (batch,):
        raise ShapeError(f"drop must be ({batch},), got {drop.shape}")
    return drop


def _trunc_normal(std: float):
    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.truncated_normal(key, -2.0 / std, 2.0 / std, shape, dtype)

    return init


# --------------------------------------------------------------------------
# MotionMAR: sparse scale-aware control
# --------------------------------------------------------------------------

class SparseScaleControl(nn.Module):
    """MotionMAR's scale-aware control. ``sparse (B, T, sparse_dim)`` -> :class:`Conditioning`
    with ``additive (B, N, width)`` (None when ``align=False``), ``adaln (B, width)`` and
    ``sos (B, L_0, width)``."""

    schedule: ScaleSchedule
    width: int
    sparse_dim: int = 54
    kernel_size: int = 3
    align: bool = True
    resample: str = "linear"
    pool: str = "tokens"
    conv_std: float = 0.02

    @nn.compact
    def __call__(self, sparse: Array, drop: Array | None = None, train: bool = False) -> Conditioning:  # noqa: ARG002
        if self.pool not in ("tokens", "time"):
            raise ConfigError(f"SparseScaleControl.pool must be 'tokens' or 'time', got {self.pool!r}")
        if sparse.ndim != 3 or sparse.shape[-1] != self.sparse_dim:
            raise ShapeError(f"SparseScaleControl: sparse must be (B, T, {self.sparse_dim}), got {sparse.shape}")
        B, T, _ = sparse.shape
        C = self.width
        std = math.sqrt(1.0 / C / 3.0)
        h = nn.Dense(C, kernel_init=_trunc_normal(std), name="input_proj")(sparse)
        conv = dict(kernel_size=(self.kernel_size,), padding="SAME", kernel_init=_trunc_normal(self.conv_std))
        h = nn.Conv(C, name="conv1", **conv)(h)
        h = nn.Conv(C, name="conv2", **conv)(nn.relu(h))
        drop = _drop_mask(drop, B)
        if drop is not None:
            h = jnp.where(drop[:, None, None], 0.0, h)
        R = jnp.asarray(schedule_resample_matrix(self.schedule, T, self.resample))
        per_token = jnp.einsum("nt,btc->bnc", R, h)
        pooled = per_token.mean(axis=1) if self.pool == "tokens" else h.mean(axis=1)
        sos = self.param("sos", _trunc_normal(std), (C,))
        adaln = sos[None, :] + pooled
        sos_tokens = jnp.broadcast_to(sos, (B, self.schedule.lengths[0], C))
        return Conditioning(adaln=adaln, additive=per_token if self.align else None, sos=sos_tokens)


# --------------------------------------------------------------------------
# text: RMSNorm + memory MLP + attentive pooling
# --------------------------------------------------------------------------

class RMSNorm(nn.Module):
    eps: float = 1e-6

    @nn.compact
    def __call__(self, x: Array) -> Array:
        w = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps) * w


class AttentivePool(nn.Module):
    """Learned queries ``(Q, heads, dim / heads)`` attend a masked sequence -> ``(B, Q, dim)``."""

    dim: int
    num_queries: int = 1
    heads: int = 1

    @nn.compact
    def __call__(self, x: Array, mask: Array | None) -> Array:
        if self.dim % self.heads:
            raise ConfigError(f"AttentivePool: dim {self.dim} not divisible by heads {self.heads}")
        B, L, _ = x.shape
        dh = self.dim // self.heads
        std = math.sqrt(1.0 / self.dim / 3.0)
        q = self.param("queries", _trunc_normal(std), (self.num_queries, self.heads, dh))
        k = nn.Dense(self.dim, use_bias=False, kernel_init=_trunc_normal(std), name="k")(x)
        k = k.reshape(B, L, self.heads, dh)
        v = nn.Dense(self.dim, kernel_init=_trunc_normal(std), name="v")(x).reshape(B, L, self.heads, dh)
        logits = jnp.einsum("qhd,blhd->bhql", q, k) / math.sqrt(dh)
        if mask is not None:
            logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
        w = jax.nn.softmax(logits, axis=-1)
        o = jnp.einsum("bhql,blhd->bqhd", w, v).reshape(B, self.num_queries, self.dim)
        return nn.Dense(self.dim, kernel_init=_trunc_normal(std), name="proj")(o)


class TextCrossAttention(nn.Module):
    """Text conditioning from precomputed encoder features ``text (B, L, text_dim)`` with
    ``text_mask (B, L)`` (True = real token; L <= max_len) -> :class:`Conditioning` with
    ``memory (B, L, memory_dim)``, ``memory_mask = text_mask``, ``sos (B, num_queries,
    pool_dim)`` and ``adaln (B, pool_dim)``."""

    text_dim: int
    memory_dim: int
    pool_dim: int
    num_queries: int = 1
    pool_heads: int = 1
    cond_reduce: str = "max"
    max_len: int = 20
    eps: float = 1e-6

    @nn.compact
    def __call__(self, text: Array, text_mask: Array | None = None, drop: Array | None = None,
                 train: bool = False) -> Conditioning:  # noqa: ARG002
        if self.cond_reduce not in ("max", "mean", "first"):
            raise ConfigError(f"TextCrossAttention.cond_reduce must be max/mean/first, got {self.cond_reduce!r}")
        if text.ndim != 3 or text.shape[-1] != self.text_dim:
            raise ShapeError(f"TextCrossAttention: text must be (B, L, {self.text_dim}), got {text.shape}")
        B, L, D = text.shape
        if L > self.max_len:
            raise ShapeError(f"TextCrossAttention: text length {L} exceeds max_len {self.max_len}")
        if text_mask is None:
            text_mask = jnp.ones((B, L), bool)
        text_mask = jnp.asarray(text_mask, bool)
        if text_mask.shape != (B, L):
            raise ShapeError(f"TextCrossAttention: text_mask must be ({B}, {L}), got {text_mask.shape}")
        uncond = self.param("cfg_uncond", lambda k, s: _trunc_normal(0.02)(k, s) / math.sqrt(D), (self.max_len, D))
        drop = _drop_mask(drop, B)
        if drop is not None:
            text = jnp.where(drop[:, None, None], uncond[None, :L], text)
        normed = RMSNorm(self.eps, name="text_norm")(text)
        std = math.sqrt(1.0 / self.memory_dim / 3.0)
        mem = nn.Dense(self.memory_dim, kernel_init=_trunc_normal(std), name="mem_fc1")(normed)
        mem = nn.Dense(self.memory_dim, kernel_init=_trunc_normal(std), name="mem_fc2")(nn.gelu(mem, approximate=True))
        sos = AttentivePool(self.pool_dim, self.num_queries, self.pool_heads, name="pool")(normed, text_mask)
        if self.cond_reduce == "max":
            adaln = sos.max(axis=1)
        elif self.cond_reduce == "mean":
            adaln = sos.mean(axis=1)
        else:
            adaln = sos[:, 0]
        return Conditioning(adaln=adaln, memory=mem, memory_mask=text_mask, sos=sos)
