"""Temporal multi-scale residual vector quantiser (VAR's quantiser, in time).

A latent sequence ``z (B, T, D)`` is quantised at ``K`` increasing lengths ``L_1 < ... < L_K = T``
with one codebook shared by all scales::

    r = z;  f_hat = 0
    for k in 1..K:
        r     = r * valid                              # zero the residual beyond the valid length
        idx_k = nearest_code(down(r, L_k))             # (B, L_k) tokens of scale k
        h     = phi_k(up(codebook[idx_k], T))          # linear up-sampling, optional phi conv
        r     = r - h;   f_hat = f_hat + h
    z_q = z + sg(f_hat - z)                            # straight-through

Configurations of the papers (:data:`MOTIONMAR_TEMPORAL`, :data:`MOSCALE_TEMPORAL`):

==================  ==============================  ==================================
                    MotionMAR (models/var, VQVAE)   MoScale (model/vq/quantizer.py)
==================  ==============================  ==================================
lengths, T          (5, 10, 20), 20                 (6, 12, 24, 49), 49
codebook            learned 1024 x 64               EMA 512 x 512 (mu 0.99)
code search         cosine (``using_znorm``)        squared L2; Gumbel (tau 0.5) in training
down / up           linear / linear                 area / linear
teacher forcing     linear resize of f_hat          area resize of f_hat
phi                 0.5 h + 0.5 conv3(h), 4 shared  identity (``quant_resi: 0``)
valid lengths       none (fixed windows)            ``(m // 4) // factor``, factors 8,4,2,1
==================  ==============================  ==================================

**phi** (VAR's ``quant_resi``): ``phi(h) = (1 - r) h + r conv_k(h)`` with ``r = config.phi``
(``0`` disables it). ``config.phi_share`` follows VAR: ``0`` = one conv per scale, ``1`` = one conv
shared by all scales, ``n >= 2`` = ``n`` convs, scale ``k`` uses the conv whose tick
(``linspace(1/(3n), 1-1/(3n), n)`` for ``n = 4``, ``linspace(1/(2n), 1-1/(2n), n)`` otherwise) is
nearest to ``k / (K-1)`` (MotionMAR: its 3 scales use convs 0, 2, 3 of 4).

**Codebook variants** (``config.codebook``):

* ``'learned'`` -- a ``params`` entry ``codebook (K, D)`` trained by the VAR losses
  ``codebook_loss = mean_k MSE(f_hat_k, sg(z))`` (also trains phi) and
  ``commit_loss = mean_k MSE(z, sg(f_hat_k))``; ``loss = codebook_loss + beta * commit_loss``.
  The collection ``'vq'`` keeps ``code_count``, the EMA (decay ``ema_decay``) of code hits over
  all scales, for :func:`revive_dead_codes` which the trainer calls on the params.
* ``'ema'`` -- the codebook lives in the non-trainable collection ``'vq'`` (``codebook``,
  ``code_sum``, ``code_count``, ``initialized``) and is updated functionally: in training,
  ``apply(..., train=True, mutable=['vq'])`` returns the new statistics (MoScale's update:
  ``sum <- mu sum + (1-mu) sum_batch``, ``count <- mu count + (1-mu) count_batch``,
  ``codebook = sum / count``; codes with ``count < dead_threshold`` are replaced by random
  current residual vectors when the batch holds more than ``reset_min_factor * K`` valid
  vectors). With ``data_init`` the first training batch initialises the codebook from random
  scale-0 residuals (MoScale tiles the first ones). ``loss = beta * commit_loss`` (plus
  ``codebook_loss`` when phi is on, the only thing it trains then).

**Validity masks.** ``mask (B, T)`` marks valid latent steps (a prefix per sample); the valid
length ``v`` gives per-scale lengths ``floor(v / f_k)`` or ``ceil(v / f_k)`` with ``f_k =
config.factors[k]`` (MoScale: floor with 8,4,2,1) or ``f_k = T / L_k`` when ``factors`` is None.
Padded tokens are returned as code ``-1`` (MoScale's convention) and decode to zero vectors.

**Randomness** is explicit: ``rng`` arguments, or the ``'vq'`` RNG stream
(``apply(..., rngs={'vq': key})``) when ``rng`` is None and the call needs one (EMA training,
Gumbel assignment).

Public methods (call with ``module.apply(variables, ..., method=TemporalQuantizer.<name>)``):
``__call__``, ``encode_codes``, ``decode_codes``, ``partial_reconstruction``,
``teacher_forcing_inputs``, ``codebook_vectors``, ``scale_contribution``, ``next_scale_input``, ``corrupt_and_requantize``, ``reconstructions``.
All math is float32 with ``Precision.HIGHEST``; the scale loop is unrolled in Python.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import ConfigError, ShapeError
from mmar.models.quantizers.resample import HIGHEST, MODES, resample

Array = jax.Array
F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class TemporalQuantizerConfig:
    """Configuration of :class:`TemporalQuantizer` (defaults: MotionMAR)."""

    lengths: tuple[int, ...] = (5, 10, 20)
    codebook_size: int = 1024
    code_dim: int = 64
    codebook: str = "learned"  # 'learned' | 'ema'
    distance: str = "cosine"  # 'l2' | 'cosine'
    beta: float = 1.0  # commitment weight inside ``loss``
    ema_decay: float = 0.99  # EMA codebook decay, and decay of the hit counts
    down: str = "linear"  # residual down-sampling: 'area' | 'linear'
    up: str = "linear"  # code-map up-sampling
    tf_down: str | None = None  # teacher-forcing resize of f_hat; None = ``down``
    phi: float = 0.5  # phi residual ratio; 0 = identity
    phi_share: int = 4  # 0 per scale, 1 shared, n>=2 partially shared (VAR)
    phi_kernel: int = 3
    factors: tuple[float, ...] | None = None  # per-scale factors for valid lengths
    valid_rounding: str = "floor"  # 'floor' | 'ceil'
    sample_temperature: float = 0.0  # Gumbel code sampling in training (0 = argmin)
    dead_threshold: float = 1.0  # EMA hit count below which a code is dead
    reset_min_factor: float = 5.0  # EMA reset only if #valid vectors > factor * K
    data_init: bool = True  # EMA: initialise from the first training batch
    init_std: float = 1.0  # N(0, init_std^2) initial codebook

    def __post_init__(self):
        lengths = tuple(int(l) for l in self.lengths)
        object.__setattr__(self, "lengths", lengths)
        if not lengths or any(l < 1 for l in lengths):
            raise ConfigError(f"TemporalQuantizerConfig.lengths must be positive, got {self.lengths}")
        if any(b < a for a, b in zip(lengths, lengths[1:])):
            raise ConfigError(f"TemporalQuantizerConfig.lengths must be non-decreasing, got {lengths}")
        if self.codebook not in ("learned", "ema"):
            raise ConfigError(f"TemporalQuantizerConfig.codebook must be 'learned' or 'ema', got {self.codebook!r}")
        if self.distance not in ("l2", "cosine"):
            raise ConfigError(f"TemporalQuantizerConfig.distance must be 'l2' or 'cosine', got {self.distance!r}")
        for name in ("down", "up"):
            if getattr(self, name) not in MODES:
                raise ConfigError(f"TemporalQuantizerConfig.{name} must be one of {MODES}")
        if self.tf_down is not None and self.tf_down not in MODES:
            raise ConfigError(f"TemporalQuantizerConfig.tf_down must be one of {MODES} or None")
        if self.valid_rounding not in ("floor", "ceil"):
            raise ConfigError("TemporalQuantizerConfig.valid_rounding must be 'floor' or 'ceil'")
        if self.factors is not None:
            object.__setattr__(self, "factors", tuple(self.factors))
            if len(self.factors) != len(lengths):
                raise ConfigError("TemporalQuantizerConfig.factors must have one entry per scale")
        if self.codebook_size < 2 or self.code_dim < 1:
            raise ConfigError("TemporalQuantizerConfig: codebook_size >= 2 and code_dim >= 1 required")
        if self.phi_share < 0:
            raise ConfigError("TemporalQuantizerConfig.phi_share must be >= 0")

    @property
    def num_scales(self) -> int:
        return len(self.lengths)

    @property
    def num_tokens(self) -> int:
        return int(sum(self.lengths))

    @property
    def latent_length(self) -> int:
        return self.lengths[-1]

    @property
    def teacher_forcing_mode(self) -> str:
        return self.down if self.tf_down is None else self.tf_down

    @property
    def num_phi(self) -> int:
        if self.phi == 0:
            return 0
        return self.num_scales if self.phi_share == 0 else self.phi_share

    def phi_index(self, k: int) -> int:
        """Which phi conv scale ``k`` uses (VAR's tick rule)."""
        n = self.num_phi
        if n <= 1:
            return 0
        s = self.num_scales
        at = 0.0 if s == 1 else k / (s - 1)
        if self.phi_share == 0:
            n = s
        ticks = np.linspace(1 / 3 / n, 1 - 1 / 3 / n, n) if n == 4 else np.linspace(1 / 2 / n, 1 - 1 / 2 / n, n)
        return int(np.argmin(np.abs(ticks - at)))


#: MotionMAR TMT quantiser (official code: VQVAE/quantize.py, config vqvae_S1.yaml).
MOTIONMAR_TEMPORAL = TemporalQuantizerConfig()

#: MoScale HRVQVAE quantiser (official code: model/vq/quantizer.py, config train_hrvqvae.yaml).
MOSCALE_TEMPORAL = TemporalQuantizerConfig(
    lengths=(6, 12, 24, 49),
    codebook_size=512,
    code_dim=512,
    codebook="ema",
    distance="l2",
    beta=1.0,
    ema_decay=0.99,
    down="area",
    up="linear",
    tf_down="area",
    phi=0.0,
    factors=(8, 4, 2, 1),
    valid_rounding="floor",
    sample_temperature=0.5,
)


# --------------------------------------------------------------------------
# helpers (pure)
# --------------------------------------------------------------------------

def scale_valid_lengths(config: TemporalQuantizerConfig, valid: Array) -> list[Array]:
    """Per-scale valid token counts ``(B,)`` int32 from valid latent lengths ``valid (B,)``."""
    valid = jnp.asarray(valid, jnp.int32)
    t = config.latent_length
    out = []
    for k, l in enumerate(config.lengths):
        if config.factors is not None:
            f = config.factors[k]
            if float(f) == int(f):
                f = int(f)
                vk = valid // f if config.valid_rounding == "floor" else -((-valid) // f)
            else:
                x = valid.astype(F32) / float(f)
                vk = (jnp.floor(x) if config.valid_rounding == "floor" else jnp.ceil(x)).astype(jnp.int32)
        else:
            vk = (valid * l) // t if config.valid_rounding == "floor" else -((-valid * l) // t)
        out.append(jnp.clip(vk, 0, l).astype(jnp.int32))
    return out


def length_mask(lengths: Array, size: int) -> Array:
    """``(B, size)`` bool, True where ``index < lengths``."""
    return jnp.arange(size)[None, :] < jnp.asarray(lengths)[:, None]


def _masked_mse(a: Array, b: Array, w: Array) -> Array:
    """Mean of ``(a-b)^2`` over valid steps and channels, ``w (..., B, T)``; with a leading
    scale axis, the mean over scales of the per-scale means."""
    d = a.shape[-1]
    err = jnp.sum((a - b) ** 2, -1) * w
    return jnp.sum(err) / jnp.maximum(jnp.sum(jnp.broadcast_to(w, err.shape)) * d, 1.0)


def _sample_rows(x: Array, w: Array, n: int, rng: Array) -> Array:
    """``n`` rows of ``x (N, D)`` drawn uniformly (with replacement) among rows with ``w > 0``
    (among all rows when none is valid)."""
    valid = w > 0
    total = jnp.sum(valid.astype(jnp.int32))
    cum = jnp.cumsum(valid.astype(jnp.int32))
    u = jax.random.uniform(rng, (n,), F32)
    r = jnp.minimum(jnp.floor(u * jnp.maximum(total, 1)).astype(jnp.int32), jnp.maximum(total - 1, 0))
    idx_valid = jnp.searchsorted(cum, r, side="right")  # the (r+1)-th valid row
    idx_any = jnp.floor(u * x.shape[0]).astype(jnp.int32)
    idx = jnp.clip(jnp.where(total > 0, idx_valid, idx_any), 0, x.shape[0] - 1)
    return x[idx]


def _perplexity(counts: Array) -> Array:
    """exp(entropy) of histograms ``counts (..., K)``."""
    p = counts / jnp.maximum(jnp.sum(counts, -1, keepdims=True), 1.0)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), -1))


def nearest_codes(x: Array, codebook: Array, distance: str = "l2", rng: Array | None = None,
                  temperature: float = 0.0) -> Array:
    """Code index ``(...)`` int32 of vectors ``x (..., D)``: argmin squared L2 (or argmax cosine);
    with ``rng`` and ``temperature > 0``, Gumbel-max sampling of ``softmax(-dist / temperature)``
    (MoScale's stochastic training assignment)."""
    x = jnp.asarray(x, F32)
    cb = jnp.asarray(codebook, F32)
    if distance == "cosine":
        xn = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
        cn = cb / jnp.maximum(jnp.linalg.norm(cb, axis=-1, keepdims=True), 1e-12)
        logits = jnp.einsum("...d,kd->...k", xn, cn, precision=HIGHEST)
    else:
        logits = -(
            jnp.sum(x * x, -1, keepdims=True)
            - 2.0 * jnp.einsum("...d,kd->...k", x, cb, precision=HIGHEST)
            + jnp.sum(cb * cb, -1)
        )
    if rng is not None and temperature > 0:
        logits = logits / temperature + jax.random.gumbel(rng, logits.shape, F32)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def _lookup(codebook: Array, codes: Array) -> Array:
    """Code vectors of ``codes (B, L)``; code ``-1`` (padding) gives zeros."""
    codes = jnp.asarray(codes, jnp.int32)
    e = jnp.take(codebook, jnp.maximum(codes, 0), axis=0)
    return e * (codes >= 0)[..., None].astype(e.dtype)


def _random_other_codes(rng: Array, codes: Array, k: int) -> Array:
    """A uniformly random code different from ``codes`` at every position."""
    r = jax.random.randint(rng, codes.shape, 0, k - 1, dtype=jnp.int32)
    return r + (r >= codes).astype(jnp.int32)


# --------------------------------------------------------------------------
# the module
# --------------------------------------------------------------------------

class TemporalQuantizer(nn.Module):
    """Multi-scale residual VQ over time (see the module docstring).

    ``__call__(z (B, T, D), mask (B, T) | None, train=False, rng=None)`` returns a dict:

    * ``z_q (B, T, D)`` -- straight-through quantised latent (gradient to ``z`` only);
    * ``f_hat (B, T, D)`` -- the same values, differentiable w.r.t. codebook and phi;
    * ``codes`` -- list of ``(B, L_k)`` int32 per scale (``-1`` at padded tokens);
    * ``code_masks`` -- list of ``(B, L_k)`` bool (valid tokens);
    * ``commit_loss``, ``codebook_loss``, ``loss`` (see the module docstring);
    * ``usage (K_scales,)`` -- fraction of the codebook used by each scale in this batch;
      ``perplexity (K_scales,)`` -- exp entropy of each scale's code histogram;
      ``perplexity_all`` -- over all scales;
    * ``residuals (N, D)``, ``residual_mask (N,)`` -- the down-sampled residual vectors of all
      scales (what was quantised), for :func:`revive_dead_codes`.

    In training with the EMA codebook, call with ``mutable=['vq']``.
    """

    config: TemporalQuantizerConfig = TemporalQuantizerConfig()

    def setup(self):
        cfg = self.config
        k, d = cfg.codebook_size, cfg.code_dim

        def cb_init(rng, shape):
            return jax.random.normal(rng, shape, F32) * cfg.init_std

        if cfg.codebook == "learned":
            self.codebook = self.param("codebook", cb_init, (k, d))
        else:
            self.ema_codebook = self.variable("vq", "codebook", lambda: cb_init(self.make_rng("params"), (k, d)))
            self.code_sum = self.variable("vq", "code_sum", lambda: jnp.array(self.ema_codebook.value))
            self.initialized = self.variable("vq", "initialized", lambda: jnp.zeros((), F32))
        self.code_count = self.variable("vq", "code_count", lambda: jnp.ones((k,), F32))
        self.phis = [
            nn.Conv(d, (cfg.phi_kernel,), padding="SAME", dtype=F32, param_dtype=F32, precision=HIGHEST)
            for _ in range(cfg.num_phi)
        ]

    # -- pieces ------------------------------------------------------------------
    def _codebook(self) -> Array:
        return self.codebook if self.config.codebook == "learned" else self.ema_codebook.value

    def _phi(self, k: int, h: Array) -> Array:
        cfg = self.config
        if cfg.num_phi == 0:
            return h
        r = abs(float(cfg.phi))
        return h * (1.0 - r) + self.phis[cfg.phi_index(k)](h) * r

    def _check(self, z: Array) -> Array:
        cfg = self.config
        z = jnp.asarray(z, F32)
        if z.ndim != 3 or z.shape[1] != cfg.latent_length or z.shape[2] != cfg.code_dim:
            raise ShapeError(
                f"TemporalQuantizer: z must be (B, {cfg.latent_length}, {cfg.code_dim}), got {tuple(z.shape)}"
            )
        return z

    def _valid(self, z: Array, mask: Array | None) -> Array:
        b, t = z.shape[:2]
        if mask is None:
            return jnp.full((b,), t, jnp.int32)
        mask = jnp.asarray(mask)
        if mask.shape != (b, t):
            raise ShapeError(f"TemporalQuantizer: mask must be {(b, t)}, got {tuple(mask.shape)}")
        return jnp.sum(mask.astype(jnp.int32), axis=1)

    def _up(self, k: int, e: Array) -> Array:
        return self._phi(k, resample(e, self.config.latent_length, self.config.up))

    def _loop(self, z: Array, valid: Array, cb: Array, *, assign_rng: Array | None = None,
              temperature: float = 0.0, corrupt_rng: Array | None = None, gamma_max: float | Array = 0.0) -> dict:
        """The scale loop. Returns per-scale lists and the accumulated ``f_hat``."""
        cfg = self.config
        b, t, d = z.shape
        full = length_mask(valid, t).astype(F32)  # (B, T)
        vks = scale_valid_lengths(cfg, valid)
        cb_sg = jax.lax.stop_gradient(cb)
        residual = jax.lax.stop_gradient(z)
        f_hat = jnp.zeros_like(z)
        out = {k: [] for k in ("codes", "input_codes", "masks", "downs", "f_hats", "inputs", "gammas")}
        if corrupt_rng is not None:
            g_rng, corrupt_rng = jax.random.split(corrupt_rng)
            gammas = jax.random.uniform(g_rng, (cfg.num_scales,), F32, 0.0, gamma_max)
        for k, length in enumerate(cfg.lengths):
            if k > 0:
                out["inputs"].append(resample(jax.lax.stop_gradient(f_hat), length, cfg.teacher_forcing_mode))
            residual = residual * full[..., None]
            down = resample(residual, length, cfg.down)  # (B, L, D)
            m = length_mask(vks[k], length)  # (B, L)
            rng_k = None if assign_rng is None else jax.random.fold_in(assign_rng, k)
            idx = nearest_codes(down, cb_sg, cfg.distance, rng_k, temperature)
            idx_in = idx
            if corrupt_rng is not None:
                r1, r2 = jax.random.split(jax.random.fold_in(corrupt_rng, k))
                flip = (jax.random.uniform(r1, idx.shape) < gammas[k]) & m
                idx_in = jnp.where(flip, _random_other_codes(r2, idx, cfg.codebook_size), idx)
            e = jnp.take(cb, idx_in, axis=0) * m[..., None].astype(F32)
            h = self._up(k, e)
            residual = residual - jax.lax.stop_gradient(h)
            f_hat = f_hat + h
            out["codes"].append(jnp.where(m, idx, -1).astype(jnp.int32))
            out["input_codes"].append(jnp.where(m, idx_in, -1).astype(jnp.int32))
            out["masks"].append(m)
            out["downs"].append(down)
            out["f_hats"].append(f_hat)
        if corrupt_rng is not None:
            out["gammas"] = gammas
        out["f_hat"] = f_hat
        out["full_mask"] = full
        return out

    # -- full pass -------------------------------------------------------------------
    def __call__(self, z: Array, mask: Array | None = None, train: bool = False, rng: Array | None = None) -> dict:
        cfg = self.config
        z = self._check(z)
        valid = self._valid(z, mask)
        b, t, d = z.shape
        kk = cfg.codebook_size
        ema = cfg.codebook == "ema"
        update = train and not self.is_initializing()
        stochastic = train and cfg.sample_temperature > 0
        if rng is None and ((update and ema) or stochastic):
            rng = self.make_rng("vq")
        if rng is not None:
            r_init, r_assign, r_reset = jax.random.split(rng, 3)
        cb = self._codebook()

        if update and ema:
            # data-dependent initialisation on the first training batch (scale-0 residuals)
            full = length_mask(valid, t).astype(F32)
            r0 = resample(jax.lax.stop_gradient(z) * full[..., None], cfg.lengths[0], cfg.down)
            m0 = length_mask(scale_valid_lengths(cfg, valid)[0], cfg.lengths[0])
            init_cb = _sample_rows(r0.reshape(-1, d), m0.reshape(-1).astype(F32), kk, r_init)
            init_cb = init_cb + jax.random.normal(jax.random.fold_in(r_init, 1), init_cb.shape) * (0.01 / np.sqrt(d))
            inited = self.initialized.value > 0.5 if cfg.data_init else jnp.array(True)
            cb = jnp.where(inited, cb, init_cb)
            sum_prev = jnp.where(inited, self.code_sum.value, init_cb)
            count_prev = jnp.where(inited, self.code_count.value, jnp.ones((kk,), F32))

        res = self._loop(z, valid, cb, assign_rng=r_assign if stochastic else None,
                         temperature=cfg.sample_temperature if stochastic else 0.0)
        full = res["full_mask"]
        f_hat = res["f_hat"]
        z_sg = jax.lax.stop_gradient(z)
        f_stack = jnp.stack(res["f_hats"])  # (S, B, T, D): all scales' losses in one op
        commit = _masked_mse(z[None], jax.lax.stop_gradient(f_stack), full[None])
        codebook_loss = _masked_mse(f_stack, z_sg[None], full[None])
        if ema:
            loss = cfg.beta * commit + (codebook_loss if cfg.num_phi > 0 else 0.0)
        else:
            loss = codebook_loss + cfg.beta * commit
        z_q = z + jax.lax.stop_gradient(f_hat - z)

        # statistics
        flat_x = jnp.concatenate([dn.reshape(-1, d) for dn in res["downs"]], 0)
        flat_w = jnp.concatenate([m.reshape(-1) for m in res["masks"]], 0).astype(F32)
        flat_i = jnp.concatenate([jnp.maximum(c, 0).reshape(-1) for c in res["codes"]], 0)
        flat_s = jnp.asarray(np.concatenate([np.full((b * l,), k * kk, np.int32) for k, l in enumerate(cfg.lengths)]))
        counts_s = jax.ops.segment_sum(flat_w, flat_i + flat_s, cfg.num_scales * kk).reshape(cfg.num_scales, kk)
        usage = jnp.mean((counts_s > 0).astype(F32), axis=-1)
        perp = _perplexity(counts_s)
        counts = jnp.sum(counts_s, axis=0)

        if update:
            mu = cfg.ema_decay
            if ema:
                sums = jax.ops.segment_sum(flat_x * flat_w[:, None], flat_i, kk)
                new_sum = mu * sum_prev + (1.0 - mu) * sums
                new_count = mu * count_prev + (1.0 - mu) * counts
                rand = _sample_rows(flat_x, flat_w, kk, r_reset)
                alive = new_count >= cfg.dead_threshold
                do_reset = jnp.sum(flat_w) > cfg.reset_min_factor * kk
                new_cb = new_sum / jnp.maximum(new_count, 1e-12)[:, None]
                new_cb = jnp.where(do_reset & ~alive[:, None], rand, new_cb)
                self.ema_codebook.value = new_cb
                self.code_sum.value = new_sum
                self.code_count.value = new_count
                self.initialized.value = jnp.ones((), F32)
            else:
                self.code_count.value = mu * self.code_count.value + (1.0 - mu) * counts

        return {
            "z_q": z_q,
            "f_hat": f_hat,
            "codes": res["codes"],
            "code_masks": res["masks"],
            "commit_loss": commit,
            "codebook_loss": codebook_loss,
            "loss": loss,
            "usage": usage,
            "perplexity": perp,
            "perplexity_all": _perplexity(counts),
            "residuals": flat_x,
            "residual_mask": flat_w,
        }

    # -- token-level API ------------------------------------------------------------------
    def encode_codes(self, z: Array, mask: Array | None = None) -> list[Array]:
        """Deterministic tokens: list of ``(B, L_k)`` int32 (``-1`` at padded tokens)."""
        z = self._check(z)
        res = self._loop(z, self._valid(z, mask), self._codebook())
        return [jax.lax.stop_gradient(c) for c in res["codes"]]

    def reconstructions(self, z: Array, mask: Array | None = None) -> list[Array]:
        """``f_hat`` after each scale: list of ``(B, T, D)`` (coarse-to-fine analysis)."""
        z = self._check(z)
        return self._loop(z, self._valid(z, mask), self._codebook())["f_hats"]

    def partial_reconstruction(self, codes: Sequence[Array], num_scales: int) -> Array:
        """``f_hat (B, T, D)`` from the first ``num_scales`` scales of ``codes`` (static int)."""
        cfg = self.config
        n = int(num_scales)
        if not 0 <= n <= cfg.num_scales or len(codes) < n:
            raise ShapeError(f"partial_reconstruction: need 0 <= num_scales <= len(codes), got {n}, {len(codes)}")
        cb = self._codebook()
        b = codes[0].shape[0] if codes else 0
        f_hat = jnp.zeros((b, cfg.latent_length, cfg.code_dim), F32)
        for k in range(n):
            self._check_codes(codes[k], k)
            f_hat = f_hat + self._up(k, _lookup(cb, codes[k]))
        return f_hat

    def decode_codes(self, codes: Sequence[Array]) -> Array:
        """``f_hat (B, T, D)`` from the tokens of all scales."""
        if len(codes) != self.config.num_scales:
            raise ShapeError(f"decode_codes: expected {self.config.num_scales} scales, got {len(codes)}")
        return self.partial_reconstruction(codes, self.config.num_scales)

    def codebook_vectors(self) -> Array:
        """The codebook ``(K, D)`` (learned parameter or EMA statistics)."""
        return self._codebook()

    def scale_contribution(self, k: int, e: Array) -> Array:
        """``phi_k(up(e))``: what scale ``k`` (static int) adds to ``f_hat (B, T, D)`` for the code
        vectors ``e (B, L_k, D)`` -- hard codebook rows or MotionMAR's soft codebook mix."""
        cfg = self.config
        if e.ndim != 3 or e.shape[1] != cfg.lengths[k] or e.shape[2] != cfg.code_dim:
            raise ShapeError(f"scale {k} vectors must be (B, {cfg.lengths[k]}, {cfg.code_dim}), got {tuple(e.shape)}")
        return self._up(k, jnp.asarray(e, F32))

    def next_scale_input(self, f_hat: Array, k: int) -> Array:
        """The input of scale ``k + 1`` given ``f_hat`` accumulated over scales ``<= k``:
        ``f_hat`` resized to ``L_{k+1}`` (as in :meth:`teacher_forcing_inputs`)."""
        return resample(f_hat, self.config.lengths[k + 1], self.config.teacher_forcing_mode)

    def teacher_forcing_inputs(self, codes: Sequence[Array]) -> list[Array]:
        """VAR's next-scale inputs: for ``k = 1..K-1``, ``f_hat`` accumulated over scales
        ``< k`` resized (``config.teacher_forcing_mode``) to ``L_k``: list of ``(B, L_k, D)``."""
        cfg = self.config
        cb = self._codebook()
        b = codes[0].shape[0]
        f_hat = jnp.zeros((b, cfg.latent_length, cfg.code_dim), F32)
        out = []
        for k in range(cfg.num_scales - 1):
            self._check_codes(codes[k], k)
            f_hat = f_hat + self._up(k, _lookup(cb, codes[k]))
            out.append(resample(f_hat, cfg.lengths[k + 1], cfg.teacher_forcing_mode))
        return out

    def corrupt_and_requantize(self, z: Array, rng: Array, gamma_max: float | Array = 0.6,
                               mask: Array | None = None) -> dict:
        """MoScale's cross-scale corruption (``quantize_all`` with ``perturb_rate``).

        For each scale a rate ``gamma_k ~ U[0, gamma_max]`` is drawn (one per batch and scale)
        and every valid code is replaced with probability ``gamma_k`` by a uniformly random
        *different* code (``gamma_max`` may be traced). The corrupted codes build ``f_hat`` and the residual, so the codes of
        later scales re-quantise what the corruption left. Returns a dict (all stop-gradient):

        * ``input_codes`` -- list of ``(B, L_k)`` corrupted codes (what the model is fed);
        * ``target_codes`` -- list of ``(B, L_k)`` clean codes of scale ``k`` given the
          corrupted prefix (the labels);
        * ``inputs`` -- list of ``K-1`` arrays ``(B, L_k, D)``, ``k = 1..K-1``: the resized
          accumulated (corrupted) ``f_hat`` after scale ``k-1``;
        * ``gammas (K,)``, ``f_hat (B, T, D)``.
        """
        z = self._check(z)
        res = self._loop(z, self._valid(z, mask), self._codebook(), corrupt_rng=rng, gamma_max=gamma_max)
        sg = jax.lax.stop_gradient
        return {
            "input_codes": [sg(c) for c in res["input_codes"]],
            "target_codes": [sg(c) for c in res["codes"]],
            "inputs": [sg(x) for x in res["inputs"]],
            "gammas": sg(res["gammas"]),
            "f_hat": sg(res["f_hat"]),
        }

    def _check_codes(self, c: Array, k: int) -> None:
        length = self.config.lengths[k]
        if c.ndim != 2 or c.shape[1] != length:
            raise ShapeError(f"codes of scale {k} must be (B, {length}), got {tuple(c.shape)}")


# --------------------------------------------------------------------------
# dead-code remedy for the learned codebook (called by the trainer)
# --------------------------------------------------------------------------

def revive_dead_codes(params: dict, stats: dict, batch_residuals: Array, rng: Array, *,
                      residual_mask: Array | None = None, threshold: float = 1.0) -> tuple[dict, dict, Array]:
    """Re-initialise dead codes with random current residual vectors (pure function).

    Args:
      params: the quantiser's ``params`` (with ``codebook (K, D)``, learned variant); for the EMA
        variant pass the quantiser's params anyway (may be empty) -- the codebook is then taken
        from ``stats``.
      stats: the quantiser's ``'vq'`` collection (``code_count (K,)`` and, for EMA,
        ``codebook``/``code_sum``).
      batch_residuals: ``(N, D)`` vectors to draw from (``out['residuals']``).
      rng: PRNG key.
      residual_mask: ``(N,)`` weights, draw only where > 0 (``out['residual_mask']``).
      threshold: codes whose EMA hit count is below it are dead.

    Returns ``(params, stats, num_revived)``. Revived codes get ``code_count = threshold`` (and,
    for EMA, ``code_sum = vector * threshold``) so they are not immediately revived again.
    """
    x = jnp.asarray(batch_residuals, F32)
    w = jnp.ones((x.shape[0],), F32) if residual_mask is None else jnp.asarray(residual_mask, F32)
    count = stats["code_count"]
    dead = count < threshold
    k = count.shape[0]
    rand = _sample_rows(x, w, k, rng)
    params = dict(params)
    stats = dict(stats)
    if "codebook" in params:
        params["codebook"] = jnp.where(dead[:, None], rand.astype(params["codebook"].dtype), params["codebook"])
    elif "codebook" in stats:
        stats["codebook"] = jnp.where(dead[:, None], rand, stats["codebook"])
        if "code_sum" in stats:
            stats["code_sum"] = jnp.where(dead[:, None], rand * threshold, stats["code_sum"])
    else:
        raise ConfigError("revive_dead_codes: no 'codebook' in params or stats")
    stats["code_count"] = jnp.where(dead, jnp.asarray(threshold, count.dtype), count)
    return params, stats, jnp.sum(dead.astype(jnp.int32))
