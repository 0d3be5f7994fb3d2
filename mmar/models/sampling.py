"""Token samplers for the scale-wise autoregressive transformer (:mod:`mmar.models.scale_ar`).

Randomness enters as **Gumbel noise arrays** (``gumbel_noise(key, shape)`` outside the
exported graph), so an exported (TFLite) sampler takes the noise as an input and contains no
RNG op, no ``jax.random.categorical`` and no sort:

* :func:`greedy` -- argmax.
* :func:`gumbel_max` -- ``argmax(logits / temperature + noise)``; with standard Gumbel noise this
  is an exact sample of ``softmax(logits / temperature)``.
* :func:`top_k_filter` -- keeps the k largest logits using ``lax.top_k`` with the static k
  (only the k-th value is used as a threshold; exact ties with it are kept too).
* :func:`top_p_filter` -- nucleus filter. It needs the logits in descending order, obtained
  with ``lax.top_k`` over the **whole vocabulary** (a full sort in disguise). It is therefore
  not part of the export path: export uses ``top_p=0`` (greedy, temperature and top-k only).
* :func:`sample_categorical` -- temperature + top-k + top-p + Gumbel-max in one call.
* :func:`sample_bits` -- per-bit sampling for the bitwise (BSQ) head ``(..., bits, 2)``;
  :func:`bits_to_codes` maps bits to the ``+-1/sqrt(bits)`` BSQ code vector.
* :func:`soft_codebook_mix` -- MotionMAR's soft decoding: ``softmax(logits / 2.75) @ codebook``
  (optionally over the top-k entries only).
* :func:`mask_and_repredict` -- MoScale's intra-scale refinement: a fixed number of
  predict / re-mask steps (``lax.fori_loop``) with a cosine schedule for the masked count,
  lowest-confidence re-masking (confidence 1e5 for tokens not re-predicted in the step) and
  a pairwise-comparison ranking instead of a sort.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import ConfigError, ShapeError

Array = jax.Array

KEPT_CONFIDENCE = 1e5
"""Confidence given to tokens that were not re-predicted in a refinement step (MoScale)."""

MOTIONMAR_SOFT_TEMPERATURE = 2.75
"""Softmax temperature of MotionMAR's soft codebook mix."""


# --------------------------------------------------------------------------
# noise and filters
# --------------------------------------------------------------------------

def gumbel_noise(key: Array, shape, dtype=jnp.float32) -> Array:
    """Standard Gumbel noise ``-log(-log(U))``, ``U ~ U(0, 1)`` (kept off 0 and 1)."""
    tiny = jnp.finfo(dtype).tiny
    u = jax.random.uniform(key, shape, dtype, minval=tiny, maxval=1.0)
    return -jnp.log(-jnp.log(u))


def greedy(logits: Array) -> Array:
    """Most likely id per position."""
    return jnp.argmax(logits, axis=-1)


def top_k_filter(logits: Array, k: int) -> Array:
    """Set all but the ``k`` largest logits (last axis) to -inf. ``k <= 0`` or ``k >= V``:
    unchanged. Uses ``lax.top_k`` with static k (export-friendly)."""
    V = logits.shape[-1]
    k = int(k)
    if k <= 0 or k >= V:
        return logits
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_filter(logits: Array, p: float) -> Array:
    """Nucleus filter: keep the smallest set of most likely ids whose probability mass reaches
    ``p`` (the top id is always kept). ``p <= 0`` or ``p >= 1``: unchanged.

    Orders the vocabulary with ``lax.top_k(logits, V)`` -- a full sort; keep it out of the
    exported graph (export with ``top_p=0``)."""
    if p <= 0 or p >= 1:
        return logits
    V = logits.shape[-1]
    vals = jax.lax.top_k(logits, V)[0]
    probs = jax.nn.softmax(vals, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs
    n_keep = jnp.maximum(jnp.sum(before < p, axis=-1, keepdims=True), 1)
    thr = jnp.take_along_axis(vals, n_keep - 1, axis=-1)
    return jnp.where(logits < thr, -jnp.inf, logits)


def gumbel_max(logits: Array, noise: Array, temperature: float = 1.0) -> Array:
    """``argmax(logits / temperature + noise)``; ``noise`` has the logits' shape."""
    if noise.shape != logits.shape:
        raise ShapeError(f"gumbel_max: noise {noise.shape} must match logits {logits.shape}")
    return jnp.argmax(logits / temperature + noise, axis=-1)


def sample_categorical(logits: Array, noise: Array | None = None, temperature: float = 1.0,
                       top_k: int = 0, top_p: float = 0.0) -> Array:
    """Temperature, then top-k, then top-p, then Gumbel-max with the given noise. Without
    noise the result is the argmax of the filtered logits (greedy)."""
    x = logits / temperature
    x = top_k_filter(x, top_k)
    x = top_p_filter(x, top_p)
    if noise is None:
        return greedy(x)
    if noise.shape != logits.shape:
        raise ShapeError(f"sample_categorical: noise {noise.shape} must match logits {logits.shape}")
    return jnp.argmax(x + noise, axis=-1)


def token_confidence(logits: Array, ids: Array) -> Array:
    """``softmax(logits)[ids]`` (no temperature), e.g. MoScale's re-masking confidence."""
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.take_along_axis(probs, ids[..., None], axis=-1)[..., 0]


# --------------------------------------------------------------------------
# bitwise head
# --------------------------------------------------------------------------

def sample_bits(bit_logits: Array, noise: Array | None = None, temperature: float = 1.0) -> tuple[Array, Array]:
    """Sample each bit of a bitwise head independently.

    ``bit_logits (..., bits, 2)`` (index 1 = bit set), ``noise`` Gumbel noise of the same shape
    or None (greedy). Returns ``bits (..., bits)`` int32 in {0, 1} and the probability
    ``(..., bits)`` of each chosen bit (post-temperature); the token confidence is its mean
    over bits."""
    if bit_logits.shape[-1] != 2:
        raise ShapeError(f"sample_bits: last axis must be 2, got {bit_logits.shape}")
    x = bit_logits / temperature
    bits = greedy(x) if noise is None else gumbel_max(x, noise)
    probs = jnp.take_along_axis(jax.nn.softmax(x, axis=-1), bits[..., None], axis=-1)[..., 0]
    return bits.astype(jnp.int32), probs


def bits_to_codes(bits: Array) -> Array:
    """BSQ code vector of ``bits (..., n)``: ``(2 b - 1) / sqrt(n)``."""
    n = bits.shape[-1]
    return (2.0 * bits.astype(jnp.float32) - 1.0) / math.sqrt(n)


def bits_to_index(bits: Array) -> Array:
    """Integer index ``sum_i b_i 2^i`` of ``bits (..., n)`` (n <= 31)."""
    n = bits.shape[-1]
    if n > 31:
        raise ConfigError(f"bits_to_index supports at most 31 bits, got {n}")
    return jnp.sum(bits.astype(jnp.int32) << jnp.arange(n, dtype=jnp.int32), axis=-1)


# --------------------------------------------------------------------------
# MotionMAR soft decoding
# --------------------------------------------------------------------------

def soft_codebook_mix(logits: Array, codebook: Array, temperature: float = MOTIONMAR_SOFT_TEMPERATURE,
                      top_k: int = 0) -> Array:
    """MotionMAR's soft decoding: ``softmax(logits / temperature) @ codebook``.

    ``logits (..., V)``, ``codebook (V, D)`` -> ``(..., D)``. ``top_k > 0`` mixes only the k
    most likely entries (renormalised), as the reference ``soft_top_k`` option."""
    if codebook.ndim != 2 or codebook.shape[0] != logits.shape[-1]:
        raise ShapeError(f"soft_codebook_mix: codebook {codebook.shape} does not match logits {logits.shape}")
    if top_k > 0 and top_k < logits.shape[-1]:
        vals, idx = jax.lax.top_k(logits, int(top_k))
        w = jax.nn.softmax(vals / temperature, axis=-1)
        return jnp.einsum("...k,...kd->...d", w, codebook[idx])
    return jax.nn.softmax(logits / temperature, axis=-1) @ codebook


# --------------------------------------------------------------------------
# MoScale mask-and-repredict
# --------------------------------------------------------------------------

def mask_schedule(num_steps: int, length: int) -> np.ndarray:
    """Masked-token counts of the refinement steps: ``max(1, round(cos(pi t / 2) * L))`` for
    ``t = linspace(0, 1, S)``, followed by a final 0 (nothing masked after the last step).
    S=1 gives ``[L, 0]`` (one shot); the last step of S >= 2 re-predicts one token."""
    if num_steps < 1:
        raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
    t = np.linspace(0.0, 1.0, num_steps)
    counts = np.maximum(1, np.round(np.cos(np.pi * t / 2.0) * length)).astype(np.int32)
    return np.concatenate([counts, np.zeros(1, np.int32)])


def _rank_ascending(x: Array) -> Array:
    """Rank of each entry along the last axis in ascending order (ties by position), via
    pairwise comparisons: no sort, static shapes."""
    L = x.shape[-1]
    pos = jnp.arange(L)
    less = x[..., None, :] < x[..., :, None]                       # [i, j]: x_j < x_i
    tie = (x[..., None, :] == x[..., :, None]) & (pos[None, :] < pos[:, None])
    return jnp.sum(less | tie, axis=-1)


def lowest_confidence_mask(confidence: Array, count, eligible: Array | None = None) -> Array:
    """Bool mask of the ``count`` lowest-confidence positions (last axis), restricted to
    ``eligible``. ``count`` may be traced (scalar or per row)."""
    rank = _rank_ascending(confidence)
    m = rank < jnp.asarray(count)[..., None] if jnp.ndim(count) else rank < count
    return m if eligible is None else m & eligible


def mask_and_repredict(
    predict_fn: Callable[[Array, Array], Array],
    tokens: Array,
    num_steps: int,
    *,
    noise: Array | None = None,
    key: Array | None = None,
    fixed: Array | None = None,
    valid: Array | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.0,
) -> tuple[Array, Array, Array]:
    """MoScale's intra-scale refinement over a fixed number of steps (``lax.fori_loop``).

    ``predict_fn(tokens (B, L) int, mask (B, L) bool) -> logits (B, L, V)`` predicts every
    position of the scale given the current tokens, masked positions (True) being replaced by
    [MASK] by the caller (typically: build the token channel, run
    :meth:`ScaleARTransformer.decode_scale` against the cached prefix, apply CFG).

    Step j (``t = linspace(0, 1, S)[j]``): predict; sample ids (temperature / top-k / top-p /
    Gumbel noise ``noise[j]`` or noise drawn from ``key``; greedy when neither is given); write
    them at the masked positions; confidence = ``softmax(logits)`` probability of the sampled
    id (no temperature) at those positions and 1e5 elsewhere; then mask the
    ``max(1, round(cos(pi t_{j+1} / 2) L))`` lowest-confidence positions for the next step
    (``L`` = full scale length; nothing after the last step). Step 0 starts with every
    eligible position masked.

    ``fixed (B, L)``: known tokens (editing / completion) -- never masked, never changed.
    ``valid (B, L)``: padded positions (False) are never masked and keep their input token.
    ``noise``: ``(S, B, L, V)`` Gumbel noise (export path). Returns ``(tokens, confidence,
    mask)``; the final ``mask`` is all False.
    """
    S = int(num_steps)
    B, L = tokens.shape
    eligible = jnp.ones((B, L), bool)
    if fixed is not None:
        eligible = eligible & ~jnp.asarray(fixed, bool)
    if valid is not None:
        eligible = eligible & jnp.asarray(valid, bool)
    counts = jnp.asarray(mask_schedule(S, L))
    if noise is not None and noise.shape[:3] != (S, B, L):
        raise ShapeError(f"mask_and_repredict: noise must be ({S}, {B}, {L}, V), got {noise.shape}")

    def body(j, carry):
        toks, mask, _ = carry
        logits = predict_fn(toks, mask)
        if noise is not None:
            nz = noise[j]
        elif key is not None:
            nz = gumbel_noise(jax.random.fold_in(key, j), logits.shape, logits.dtype)
        else:
            nz = None
        ids = sample_categorical(logits, nz, temperature, top_k, top_p).astype(toks.dtype)
        toks = jnp.where(mask, ids, toks)
        conf = jnp.where(mask, token_confidence(logits, ids).astype(jnp.float32), KEPT_CONFIDENCE)
        mask = lowest_confidence_mask(conf, counts[j + 1], eligible)
        return toks, mask, conf

    init = (tokens, eligible, jnp.full((B, L), KEPT_CONFIDENCE, jnp.float32))
    toks, mask, conf = jax.lax.fori_loop(0, S, body, init)
    return toks, conf, mask
