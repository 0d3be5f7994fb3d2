"""Binary spherical quantisation (BSQ; Zhao et al. 2024), as used by ScaleMoGen.

A ``d``-dimensional vector (ScaleMoGen: ``d = 24``) is l2-normalised to ``u``, then quantised
to the nearest corner of the hypercube on the unit sphere, ``q = sign(u) / sqrt(d)``. The
implicit vocabulary has ``2^d`` entries and is never materialised; a token is its ``d`` bits
``b = (q > 0)``. Everything here is a pure function (BSQ has no parameters).

Straight-through estimator (``BSQConfig.ste``):

* ``'identity'`` (default; ScaleMoGen ``new_quant: True``): ``q = u + sg(sign(u)/sqrt(d) - u)``,
  the gradient w.r.t. ``u`` is the identity.
* ``'scaled'`` (the older BSQ/Infinity form): ``q = (u + sg(sign(u) - u)) / sqrt(d)``, the
  gradient is scaled by ``1/sqrt(d)``.

Auxiliary loss (ScaleMoGen ``BSQ.forward``), on valid tokens only::

    p      = sigmoid(-4 u inv_temp / sqrt(d))          per-bit probability (analytic)
    H_ps   = mean_tokens sum_bits H(p)                 per-sample entropy
    H_cb   = sum_bits H(mean_tokens p)                 codebook entropy (per-bit factorisation)
    commit = mean((u - sg(q))^2)
    loss   = commit_weight * commit
             + entropy_weight * zeta * (gamma0 H_ps - gamma H_cb) / inv_temp

with ``inv_temp = 100``, ``commit_weight = 0.25``, ``entropy_weight = 0.1``,
``gamma0 = gamma = zeta = 1`` by default. ``H`` is the binary entropy in nats.
ScaleMoGen only computes the entropy term in training; here it is always computed (the caller
decides whether to use the loss).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import ConfigError, ShapeError

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class BSQConfig:
    """Constants of BSQ (defaults: ScaleMoGen)."""

    dim: int = 24
    inv_temperature: float = 100.0
    commit_weight: float = 0.25
    entropy_weight: float = 0.1
    gamma0: float = 1.0  # weight of the per-sample entropy
    gamma: float = 1.0  # weight of the codebook entropy
    zeta: float = 1.0  # weight of the whole entropy penalty
    ste: str = "identity"  # 'identity' | 'scaled'

    def __post_init__(self):
        if int(self.dim) < 1:
            raise ConfigError(f"BSQConfig.dim must be >= 1, got {self.dim}")
        if self.ste not in ("identity", "scaled"):
            raise ConfigError(f"BSQConfig.ste must be 'identity' or 'scaled', got {self.ste!r}")
        if self.inv_temperature <= 0:
            raise ConfigError("BSQConfig.inv_temperature must be > 0")


def l2_normalize(z: Array, eps: float = 1e-12) -> Array:
    """``z / max(||z||, eps)`` along the last axis (PyTorch ``F.normalize``)."""
    # sqrt(max(|z|^2, eps^2)): finite gradient at z = 0 (padded tokens), like PyTorch's
    n = jnp.sqrt(jnp.maximum(jnp.sum(z * z, axis=-1, keepdims=True), eps * eps))
    return z / n


def bits_to_codes(bits: Array, dim: int | None = None) -> Array:
    """Bits ``(..., d)`` in {0, 1} -> codes ``(..., d)`` in ``{-1, +1} / sqrt(d)`` (unit norm)."""
    bits = jnp.asarray(bits)
    d = bits.shape[-1] if dim is None else int(dim)
    if bits.shape[-1] != d:
        raise ShapeError(f"bits_to_codes: last axis {bits.shape[-1]} != dim {d}")
    return (bits.astype(jnp.float32) * 2.0 - 1.0) / jnp.sqrt(jnp.float32(d))


def codes_to_bits(codes: Array) -> Array:
    """Codes (any real vectors) -> bits ``(codes > 0)`` as int32."""
    return (jnp.asarray(codes) > 0).astype(jnp.int32)


def bits_to_index(bits: Array) -> Array:
    """Bits ``(..., d)`` (most significant first, as BSQ's ``2**arange(d-1, -1, -1)``) -> int32
    index in ``[0, 2^d)``. Needs ``d <= 31``."""
    bits = jnp.asarray(bits).astype(jnp.int32)
    d = bits.shape[-1]
    if d > 31:
        raise ShapeError(f"bits_to_index: {d} bits do not fit in int32")
    weights = (2 ** jnp.arange(d - 1, -1, -1)).astype(jnp.int32)
    return jnp.sum(bits * weights, axis=-1).astype(jnp.int32)


def index_to_bits(index: Array, dim: int) -> Array:
    """Inverse of :func:`bits_to_index`: ``(...)`` int -> ``(..., dim)`` int32 bits."""
    index = jnp.asarray(index).astype(jnp.int32)
    weights = (2 ** jnp.arange(dim - 1, -1, -1)).astype(jnp.int32)
    return ((index[..., None] & weights) != 0).astype(jnp.int32)


def _binary_entropy_from_logits(a: Array) -> Array:
    """Entropy (nats) of a Bernoulli with ``p = sigmoid(a)``, stable for any ``a``:
    ``-log p = softplus(-a)``, ``-log(1-p) = softplus(a)``."""
    p = jax.nn.sigmoid(a)
    return p * jax.nn.softplus(-a) + (1.0 - p) * jax.nn.softplus(a)


def _binary_entropy(p: Array) -> Array:
    p = jnp.clip(p, 0.0, 1.0)
    return -(p * jnp.log(jnp.maximum(p, 1e-30)) + (1.0 - p) * jnp.log(jnp.maximum(1.0 - p, 1e-30)))


def bsq_entropies(u: Array, inv_temperature: float, mask: Array | None = None) -> tuple[Array, Array]:
    """``(H_per_sample, H_codebook)`` of normalised vectors ``u (..., d)`` (valid tokens only).

    ``mask`` broadcasts to ``u.shape[:-1]`` (1 = valid token).
    """
    out = bsq_losses([u], [mask], BSQConfig(dim=u.shape[-1], inv_temperature=inv_temperature))
    return out["per_sample_entropy"][0], out["codebook_entropy"][0]


def bsq_codes(z: Array, config: BSQConfig = BSQConfig(), mask: Array | None = None) -> dict:
    """The quantisation of :func:`bsq_quantize` without the losses: ``q``, ``bits``, ``u``."""
    cfg = config
    z = jnp.asarray(z, jnp.float32)
    if z.shape[-1] != cfg.dim:
        raise ShapeError(f"bsq_quantize: last axis must be {cfg.dim}, got {tuple(z.shape)}")
    q_scale = 1.0 / jnp.sqrt(jnp.float32(cfg.dim))
    u = l2_normalize(z)
    sign = jnp.where(u > 0, 1.0, -1.0).astype(jnp.float32)
    if cfg.ste == "identity":
        q = u + jax.lax.stop_gradient(sign * q_scale - u)
    else:
        q = (u + jax.lax.stop_gradient(sign - u)) * q_scale
    if mask is not None:
        w = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), z.shape[:-1])
        q = q * w[..., None]
    return {"q": q, "bits": codes_to_bits(q), "u": u}


def bsq_losses(us: Sequence[Array], masks: Sequence[Array | None], config: BSQConfig = BSQConfig()) -> dict:
    """BSQ auxiliary losses of several token sets at once (one per scale).

    ``us[s] (..., d)`` are normalised vectors (``bsq_codes(...)['u']``) and ``masks[s]`` their
    validity (broadcasting to ``us[s].shape[:-1]``, or None). All sets are concatenated so the
    transcendental math is traced once (cheap to compile for 11 scales). Returns a dict of
    ``(S,)`` arrays: ``loss``, ``commit``, ``per_sample_entropy``, ``codebook_entropy`` and
    ``bit_mean`` (the fraction of one-bits on valid tokens).
    """
    cfg = config
    d = cfg.dim
    xs, ws, seg = [], [], []
    for s, (u, m) in enumerate(zip(us, masks)):
        u = jnp.asarray(u, jnp.float32).reshape(-1, d)
        w = jnp.ones((u.shape[0],), jnp.float32) if m is None else jnp.broadcast_to(
            jnp.asarray(m, jnp.float32), jnp.shape(us[s])[:-1]).reshape(-1)
        xs.append(u)
        ws.append(w)
        seg.append(np.full((u.shape[0],), s, np.int32))
    n_sets = len(xs)
    u = jnp.concatenate(xs, 0)
    w = jnp.concatenate(ws, 0)
    seg = jnp.asarray(np.concatenate(seg))
    q = jnp.where(u > 0, 1.0, -1.0) / jnp.sqrt(jnp.float32(d))
    sq = jnp.sum((u - q) ** 2, -1)  # q carries no gradient (a constant of u)
    a = -4.0 * u * (cfg.inv_temperature / jnp.sqrt(jnp.float32(d)))
    p = jax.nn.sigmoid(a)
    h = jnp.sum(_binary_entropy_from_logits(a), -1)
    n = jnp.maximum(jax.ops.segment_sum(w, seg, n_sets), 1.0)
    commit = jax.ops.segment_sum(sq * w, seg, n_sets) / (n * d)
    per_sample = jax.ops.segment_sum(h * w, seg, n_sets) / n
    avg_p = jax.ops.segment_sum(p * w[:, None], seg, n_sets) / n[:, None]  # (S, d)
    codebook = jnp.sum(_binary_entropy(avg_p), -1)
    penalty = cfg.gamma0 * per_sample - cfg.gamma * codebook
    loss = cfg.commit_weight * commit + cfg.entropy_weight * cfg.zeta * penalty / cfg.inv_temperature
    ones = jax.ops.segment_sum(jnp.sum((u > 0).astype(jnp.float32), -1) * w, seg, n_sets) / (n * d)
    return {"loss": loss, "commit": commit, "per_sample_entropy": per_sample, "codebook_entropy": codebook,
            "bit_mean": ones}


def bsq_quantize(z: Array, config: BSQConfig = BSQConfig(), mask: Array | None = None) -> dict:
    """Quantise ``z (..., d)`` with BSQ.

    Args:
      z: vectors to quantise (cast to float32), last axis ``config.dim``.
      mask: optional validity mask broadcasting to ``z.shape[:-1]``; invalid tokens get
        ``q = 0`` and bits 0 and are left out of the losses.

    Returns a dict: ``q`` (straight-through codes, ``+-1/sqrt(d)`` on valid tokens), ``bits``
    (int32), ``u`` (the normalised input), ``loss`` (the auxiliary loss above), ``commit``,
    ``per_sample_entropy``, ``codebook_entropy``.
    """
    out = bsq_codes(z, config, mask)
    losses = bsq_losses([out["u"]], [mask], config)
    out.update({k: v[0] for k, v in losses.items()})
    return out
