"""ScaleMoGen's skeletal-temporal multi-scale residual BSQ quantiser.

The latent is a grid ``z (B, T, J, C)``: ``T = 49`` time steps (196 frames / 4), ``J = 7`` body
groups (0 root, 1 left lower, 2 right lower, 3 spine, 4 left upper, 5 right upper, 6 head) and
``C = 24`` channels (the VQ-VAE projects 384 -> 24 before and 24 -> 384 after; those
projections are not part of this module). Scale ``k`` has a time length ``L_k = T // f`` and a
partition of the 7 groups into ``G_k`` token groups (ScaleMoGen ``ctf_mapping_id: 5``):

* time factors ``(49, 24, 16, 7, 4, 2, 1)`` -> lengths ``1, 2, 3, 7, 12, 24, 49``;
* group chains G0 ``{all}``; G1 ``{0,3}{1,2,4,5,6}``; G2 ``{0,3}{1,2}{4,5,6}``;
  G3 ``{0}{3}{1,2}{4,5}{6}``; G4 singletons;
* 11 scales ``(time index, chain index)``: (0,0) (1,0) (1,1) (2,1) (3,1) (3,2) (4,2) (5,2)
  (5,3) (6,3) (6,4) with ``1, 2, 4, 6, 14, 21, 36, 72, 120, 245, 343`` tokens = 864.

Per scale (ScaleMoGen ``ScaleMoGenBSQ.forward``)::

    r      = r * valid                                       # zero padded time steps
    x      = group_mean(area_down(r, L_k))                  # (B, L_k, G_k, C)
    q      = BSQ(x) * valid_k * keep_k                      # +-1/sqrt(C), straight-through
    up     = replicate_to_joints(linear_up(q, T))           # (B, T, J, C)
    r      = r - up;   f_hat = f_hat + up

The last scale is the full grid (no resampling, no grouping). Tokens are flattened time-major:
token ``t * G_k + g``, groups in the order of the chain. A token is its 24 bits.
Implementation: on the flattened time-major grid ``(B, T*J, C)``, each scale's resize + group
mean is one constant ``(N_k, T*J)`` matrix ``kron(time_matrix, group_pool_matrix)`` (and the
up-sampling its ``(T*J, N_k)`` counterpart), built once with numpy and applied in float32.

* **Gradients**: no global straight-through; each scale's BSQ straight-through estimator
  passes the gradient, and the residual is *not* detached (ScaleMoGen
  ``remove_residual_detach: True``; ``config.detach_residual`` switches to VAR's detached
  residual).
* **Stochastic depth** (``train=True``, ScaleMoGen ``use_stochastic_depth``, ``drop_rate 0.5``,
  ``keep_last_quant``): each non-final scale is dropped w.p. ``drop_rate`` for the whole batch;
  a dropped scale contributes zero and its auxiliary loss is left out of the mean. Its codes
  are still returned (what BSQ gives; unused).
* **Validity**: valid latent length ``v`` per sample; scale ``k`` keeps ``ceil(v / f)`` time
  steps (ScaleMoGen ``ceil(m / (4 s))`` in frames), clipped to ``L_k``.
* **Losses**: per scale the BSQ auxiliary loss (:mod:`mmar.models.quantizers.bsq`); ``loss`` is
  the mean over kept scales (ScaleMoGen multiplies it by 4 in the tokenizer loss).
* **Bit correction** (:meth:`SkeletalQuantizer.corrupt_and_requantize`, Infinity-style): each
  scale's bits are flipped at a rate drawn from ``{0, 0.01, ..., flip_max}`` per batch; the
  flipped bits are re-quantised into the input and the residual, so later targets correct them.
* **Teacher-forcing inputs** for scale ``k >= 1``: the accumulated code map resized with
  ``config.tf_down`` (ScaleMoGen: 'trilinear' = linear in time) to ``L_k`` and group-averaged;
  the last scale gets the full accumulated grid.

Differences from the official code: padded tokens decode to zero (ScaleMoGen's requantised
padding bits decode to ``-1/sqrt(24)`` vectors); the residual is masked before the corrupted
pass as in the tokenizer (``flip_requant`` does not mask it).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import ConfigError, ShapeError
from mmar.models.quantizers.bsq import BSQConfig, bits_to_codes, bsq_codes, bsq_losses
from mmar.models.quantizers.resample import HIGHEST, MODES, resample_matrix
from mmar.models.quantizers.temporal import length_mask

Array = jax.Array
F32 = jnp.float32

#: ScaleMoGen's group chains G0..G4 over the 7 body groups.
SCALEMOGEN_GROUP_CHAINS: tuple[tuple[tuple[int, ...], ...], ...] = (
    ((0, 1, 2, 3, 4, 5, 6),),
    ((0, 3), (1, 2, 4, 5, 6)),
    ((0, 3), (1, 2), (4, 5, 6)),
    ((0,), (3,), (1, 2), (4, 5), (6,)),
    ((0,), (1,), (2,), (3,), (4,), (5,), (6,)),
)
#: ScaleMoGen ``ctf_mapping_id: 5``: (time-factor index, chain index) per scale.
SCALEMOGEN_MAPPING: tuple[tuple[int, int], ...] = (
    (0, 0), (1, 0), (1, 1), (2, 1), (3, 1), (3, 2), (4, 2), (5, 2), (5, 3), (6, 3), (6, 4),
)
#: ScaleMoGen ``temp_scales`` (down-sampling factors of the 49-step latent).
SCALEMOGEN_TIME_FACTORS: tuple[int, ...] = (49, 24, 16, 7, 4, 2, 1)
#: Body groups of the 7-group latent.
BODY_GROUPS: tuple[str, ...] = ("root", "left_lower", "right_lower", "spine", "left_upper", "right_upper", "head")


@dataclasses.dataclass(frozen=True)
class SkeletalQuantizerConfig:
    """Configuration of :class:`SkeletalQuantizer` (defaults: ScaleMoGen, HumanML3D)."""

    num_steps: int = 49
    num_groups: int = 7
    time_factors: tuple[int, ...] = SCALEMOGEN_TIME_FACTORS
    group_chains: tuple[tuple[tuple[int, ...], ...], ...] = SCALEMOGEN_GROUP_CHAINS
    mapping: tuple[tuple[int, int], ...] = SCALEMOGEN_MAPPING
    bsq: BSQConfig = BSQConfig()
    drop_rate: float = 0.5  # VQ stochastic depth (training)
    keep_first: bool = False
    keep_last: bool = True
    down: str = "area"
    up: str = "linear"
    tf_down: str = "linear"
    detach_residual: bool = False
    valid_rounding: str = "ceil"  # 'ceil' | 'floor'

    def __post_init__(self):
        if self.num_steps < 1 or self.num_groups < 1:
            raise ConfigError("SkeletalQuantizerConfig: num_steps and num_groups must be >= 1")
        for name in ("down", "up", "tf_down"):
            if getattr(self, name) not in MODES:
                raise ConfigError(f"SkeletalQuantizerConfig.{name} must be one of {MODES}")
        if self.valid_rounding not in ("floor", "ceil"):
            raise ConfigError("SkeletalQuantizerConfig.valid_rounding must be 'floor' or 'ceil'")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ConfigError("SkeletalQuantizerConfig.drop_rate must be in [0, 1)")
        for chain in self.group_chains:
            flat = sorted(j for g in chain for j in g)
            if flat != list(range(self.num_groups)):
                raise ConfigError(f"each group chain must partition range({self.num_groups}), got {chain}")
        for t_idx, s_idx in self.mapping:
            if not (0 <= t_idx < len(self.time_factors) and 0 <= s_idx < len(self.group_chains)):
                raise ConfigError(f"SkeletalQuantizerConfig.mapping entry {(t_idx, s_idx)} out of range")
            if self.num_steps // self.time_factors[t_idx] < 1:
                raise ConfigError(f"time factor {self.time_factors[t_idx]} leaves no step of {self.num_steps}")
        t_last, s_last = self.mapping[-1]
        if self.num_steps // self.time_factors[t_last] != self.num_steps or any(
            len(g) != 1 for g in self.group_chains[s_last]
        ):
            raise ConfigError("the last scale must be the full grid (time factor 1, singleton groups)")

    @property
    def num_scales(self) -> int:
        return len(self.mapping)

    def scale(self, k: int) -> tuple[int, int, tuple[tuple[int, ...], ...]]:
        """``(time length, time factor, groups)`` of scale ``k``."""
        t_idx, s_idx = self.mapping[k]
        f = self.time_factors[t_idx]
        return self.num_steps // f, f, self.group_chains[s_idx]

    @property
    def token_counts(self) -> tuple[int, ...]:
        return tuple(self.scale(k)[0] * len(self.scale(k)[2]) for k in range(self.num_scales))

    @property
    def num_tokens(self) -> int:
        return int(sum(self.token_counts))

    @property
    def code_dim(self) -> int:
        return self.bsq.dim

    def is_last(self, k: int) -> bool:
        return k == self.num_scales - 1


SCALEMOGEN_SKELETAL = SkeletalQuantizerConfig()


def group_pool_matrix(groups: Sequence[Sequence[int]], num_joints: int) -> np.ndarray:
    """``(G, J)`` matrix averaging each group's joints."""
    p = np.zeros((len(groups), num_joints), np.float32)
    for g, js in enumerate(groups):
        p[g, list(js)] = 1.0 / len(js)
    return p


def group_unpool_matrix(groups: Sequence[Sequence[int]], num_joints: int) -> np.ndarray:
    """``(J, G)`` matrix replicating each group's value to its joints."""
    u = np.zeros((num_joints, len(groups)), np.float32)
    for g, js in enumerate(groups):
        u[list(js), g] = 1.0
    return u


@functools.lru_cache(maxsize=None)
def scale_down_matrix(config: SkeletalQuantizerConfig, k: int, mode: str) -> np.ndarray:
    """``(N_k, T*J)`` matrix: time resize (``mode``) then group mean, on the time-major flat grid
    (``kron(time_matrix, group_pool_matrix)``)."""
    length, _, groups = config.scale(k)
    w = np.kron(resample_matrix(config.num_steps, length, mode), group_pool_matrix(groups, config.num_groups))
    w = w.astype(np.float32)
    w.flags.writeable = False
    return w


@functools.lru_cache(maxsize=None)
def scale_up_matrix(config: SkeletalQuantizerConfig, k: int) -> np.ndarray:
    """``(T*J, N_k)`` matrix: time up-sampling (``config.up``) and replication to the joints."""
    length, _, groups = config.scale(k)
    w = np.kron(resample_matrix(length, config.num_steps, config.up), group_unpool_matrix(groups, config.num_groups))
    w = w.astype(np.float32)
    w.flags.writeable = False
    return w


def scale_valid_lengths(config: SkeletalQuantizerConfig, valid: Array) -> list[Array]:
    """Per-scale valid time lengths ``(B,)`` from valid latent lengths ``valid (B,)``."""
    valid = jnp.asarray(valid, jnp.int32)
    out = []
    for k in range(config.num_scales):
        length, f, _ = config.scale(k)
        vk = -((-valid) // f) if config.valid_rounding == "ceil" else valid // f
        out.append(jnp.clip(vk, 0, length).astype(jnp.int32))
    return out


class SkeletalQuantizer(nn.Module):
    """Skeletal-temporal multi-scale residual BSQ (no parameters; see the module docstring).

    ``__call__(z (B, T, J, C), mask (B, T) | None, train=False, rng=None)`` returns a dict:
    ``z_q (B, T, J, C)``; ``codes`` -- list of bits ``(B, N_k, C)`` int32 per scale;
    ``token_masks`` -- list of ``(B, N_k)`` bool; ``loss`` (mean BSQ aux loss over kept scales);
    ``scale_losses``, ``commit``, ``per_sample_entropy``, ``codebook_entropy``, ``keep`` -- each
    ``(K,)``; ``bit_mean (K,)`` -- the fraction of one-bits per scale (valid tokens).

    ``rng`` (or the ``'vq'`` RNG stream) is needed only for stochastic depth in training.
    """

    config: SkeletalQuantizerConfig = SkeletalQuantizerConfig()

    # -- pieces --------------------------------------------------------------------
    def _check(self, z: Array) -> Array:
        cfg = self.config
        z = jnp.asarray(z, F32)
        want = (cfg.num_steps, cfg.num_groups, cfg.code_dim)
        if z.ndim != 4 or tuple(z.shape[1:]) != want:
            raise ShapeError(f"SkeletalQuantizer: z must be (B, {want[0]}, {want[1]}, {want[2]}), got {tuple(z.shape)}")
        return z

    def _valid(self, b: int, mask: Array | None) -> Array:
        t = self.config.num_steps
        if mask is None:
            return jnp.full((b,), t, jnp.int32)
        mask = jnp.asarray(mask)
        if mask.shape != (b, t):
            raise ShapeError(f"SkeletalQuantizer: mask must be {(b, t)}, got {tuple(mask.shape)}")
        return jnp.sum(mask.astype(jnp.int32), axis=1)

    def _flat(self, x: Array) -> Array:
        cfg = self.config
        return x.reshape(x.shape[0], cfg.num_steps * cfg.num_groups, x.shape[-1])

    def _grid(self, x: Array) -> Array:
        cfg = self.config
        return x.reshape(x.shape[0], cfg.num_steps, cfg.num_groups, x.shape[-1])

    def _down(self, k: int, x: Array, mode: str) -> Array:
        """Flat grid ``(B, T*J, C)`` -> scale-``k`` tokens ``(B, N_k, C)`` (time-major)."""
        cfg = self.config
        if cfg.is_last(k):
            return x
        w = jnp.asarray(scale_down_matrix(cfg, k, mode))
        return jnp.einsum("nm,bmc->bnc", w, x, precision=HIGHEST)

    def _up(self, k: int, q: Array) -> Array:
        """Scale-``k`` tokens ``(B, N_k, C)`` -> flat grid ``(B, T*J, C)``."""
        cfg = self.config
        if cfg.is_last(k):
            return q
        w = jnp.asarray(scale_up_matrix(cfg, k))
        return jnp.einsum("mn,bnc->bmc", w, q, precision=HIGHEST)

    def _token_mask(self, k: int, vk: Array) -> Array:
        """``(B, N_k)`` bool valid tokens."""
        length, _, groups = self.config.scale(k)
        m = length_mask(vk, length)[:, :, None]
        return jnp.broadcast_to(m, (vk.shape[0], length, len(groups))).reshape(vk.shape[0], -1)

    def _bits_to_tokens(self, k: int, bits: Array, vk: Array | None) -> Array:
        cfg = self.config
        n_tok = cfg.token_counts[k]
        if bits.ndim != 3 or bits.shape[1:] != (n_tok, cfg.code_dim):
            raise ShapeError(f"bits of scale {k} must be (B, {n_tok}, {cfg.code_dim}), got {tuple(bits.shape)}")
        q = bits_to_codes(bits, cfg.code_dim)
        if vk is not None:
            q = q * self._token_mask(k, vk)[..., None].astype(F32)
        return q

    def _loop(self, z: Array, valid: Array, *, keep: Array | None = None, flip_rng: Array | None = None,
              flip_max: float | Array = 0.0) -> dict:
        cfg = self.config
        b, t, j, c = z.shape
        full = jnp.repeat(length_mask(valid, t), j, axis=1).astype(F32)[..., None]  # (B, T*J, 1)
        vks = scale_valid_lengths(cfg, valid)
        residual = self._flat(z)
        f_hat = jnp.zeros_like(residual)
        out = {k: [] for k in ("codes", "input_codes", "masks", "us", "inputs")}
        if flip_rng is not None:
            r_rate, flip_rng = jax.random.split(flip_rng)
            steps = jnp.round(jnp.asarray(flip_max, F32) * 100.0)  # rates in {0, 0.01, ..., flip_max}
            u = jax.random.uniform(r_rate, (cfg.num_scales,), F32)
            rates = jnp.minimum(jnp.floor(u * (steps + 1.0)), steps) * 0.01
        for k in range(cfg.num_scales):
            if k > 0:
                out["inputs"].append(self._down(k, jax.lax.stop_gradient(f_hat), cfg.tf_down))
            residual = residual * full
            x = self._down(k, residual, cfg.down)  # (B, N_k, C)
            m = self._token_mask(k, vks[k])  # (B, N_k)
            bq = bsq_codes(x, cfg.bsq, m)
            q = bq["q"]
            bits = bq["bits"]
            bits_in = bits
            if flip_rng is not None:
                flip = (jax.random.uniform(jax.random.fold_in(flip_rng, k), bits.shape) < rates[k]) & m[..., None]
                bits_in = jnp.where(flip, 1 - bits, bits)
                q = bits_to_codes(bits_in, cfg.code_dim) * m[..., None].astype(F32)
            if keep is not None:
                q = q * keep[k]
            h = self._up(k, q)
            residual = residual - (jax.lax.stop_gradient(h) if cfg.detach_residual else h)
            f_hat = f_hat + h
            out["codes"].append(bits)
            out["input_codes"].append(bits_in)
            out["masks"].append(m)
            out["us"].append(bq["u"])
        if flip_rng is not None:
            out["rates"] = rates
        out["f_hat"] = self._grid(f_hat)
        return out

    def _keep(self, train: bool, rng: Array | None) -> Array | None:
        cfg = self.config
        if not train or cfg.drop_rate <= 0:
            return None
        if rng is None:
            rng = self.make_rng("vq")
        u = jax.random.uniform(rng, (cfg.num_scales,))
        keep = (u >= cfg.drop_rate).astype(F32)
        protect = np.zeros((cfg.num_scales,), bool)
        if cfg.keep_first:
            protect[0] = True
        if cfg.keep_last:
            protect[-1] = True
        return jnp.where(jnp.asarray(protect), 1.0, keep)

    # -- full pass -----------------------------------------------------------------
    def __call__(self, z: Array, mask: Array | None = None, train: bool = False, rng: Array | None = None) -> dict:
        cfg = self.config
        z = self._check(z)
        valid = self._valid(z.shape[0], mask)
        keep = self._keep(train and not self.is_initializing(), rng)
        res = self._loop(z, valid, keep=keep)
        keep_v = jnp.ones((cfg.num_scales,), F32) if keep is None else keep
        aux = bsq_losses(res["us"], res["masks"], cfg.bsq)
        scale_losses = aux["loss"]
        loss = jnp.sum(scale_losses * keep_v) / jnp.maximum(jnp.sum(keep_v), 1.0)
        return {
            "z_q": res["f_hat"],
            "codes": res["codes"],
            "token_masks": res["masks"],
            "loss": loss,
            "scale_losses": scale_losses,
            "commit": aux["commit"],
            "per_sample_entropy": aux["per_sample_entropy"],
            "codebook_entropy": aux["codebook_entropy"],
            "keep": keep_v,
            "bit_mean": aux["bit_mean"],
        }

    # -- token-level API --------------------------------------------------------------
    def encode_codes(self, z: Array, mask: Array | None = None) -> list[Array]:
        """Bits per scale: list of ``(B, N_k, C)`` int32 (0 at padded tokens)."""
        z = self._check(z)
        res = self._loop(z, self._valid(z.shape[0], mask))
        return [jax.lax.stop_gradient(c) for c in res["codes"]]

    def reconstructions(self, z: Array, mask: Array | None = None) -> list[Array]:
        """The accumulated grid after each scale: list of ``(B, T, J, C)``."""
        z = self._check(z)
        valid = self._valid(z.shape[0], mask)
        cfg = self.config
        codes = self._loop(z, valid)["codes"]
        vks = scale_valid_lengths(cfg, valid)
        out, f_hat = [], jnp.zeros_like(self._flat(z))
        for k in range(cfg.num_scales):
            f_hat = f_hat + self._up(k, self._bits_to_tokens(k, codes[k], vks[k]))
            out.append(self._grid(f_hat))
        return out

    def partial_reconstruction(self, codes: Sequence[Array], num_scales: int, mask: Array | None = None) -> Array:
        """``f_hat (B, T, J, C)`` from the first ``num_scales`` scales of bit ``codes``.

        ``mask (B, T)`` (valid latent steps) zeroes padded tokens; without it every token is
        decoded.
        """
        cfg = self.config
        n = int(num_scales)
        if not 0 <= n <= cfg.num_scales or len(codes) < n:
            raise ShapeError(f"partial_reconstruction: need 0 <= num_scales <= len(codes), got {n}, {len(codes)}")
        b = codes[0].shape[0]
        vks = None if mask is None else scale_valid_lengths(cfg, self._valid(b, mask))
        f_hat = jnp.zeros((b, cfg.num_steps * cfg.num_groups, cfg.code_dim), F32)
        for k in range(n):
            f_hat = f_hat + self._up(k, self._bits_to_tokens(k, codes[k], None if vks is None else vks[k]))
        return self._grid(f_hat)

    def decode_codes(self, codes: Sequence[Array], mask: Array | None = None) -> Array:
        """``f_hat (B, T, J, C)`` from the bits of all scales."""
        if len(codes) != self.config.num_scales:
            raise ShapeError(f"decode_codes: expected {self.config.num_scales} scales, got {len(codes)}")
        return self.partial_reconstruction(codes, self.config.num_scales, mask)

    def teacher_forcing_inputs(self, codes: Sequence[Array], mask: Array | None = None) -> list[Array]:
        """Next-scale inputs for ``k = 1..K-1``: list of ``(B, N_k, C)`` (time-major tokens):
        the accumulated code map of scales ``< k`` resized with ``config.tf_down`` and
        group-averaged."""
        cfg = self.config
        b = codes[0].shape[0]
        vks = None if mask is None else scale_valid_lengths(cfg, self._valid(b, mask))
        f_hat = jnp.zeros((b, cfg.num_steps * cfg.num_groups, cfg.code_dim), F32)
        out = []
        for k in range(cfg.num_scales - 1):
            f_hat = f_hat + self._up(k, self._bits_to_tokens(k, codes[k], None if vks is None else vks[k]))
            out.append(self._down(k + 1, f_hat, cfg.tf_down))
        return out

    def corrupt_and_requantize(self, z: Array, rng: Array, flip_max: float | Array = 0.30,
                               mask: Array | None = None) -> dict:
        """Infinity/ScaleMoGen bit correction (``flip_requant``), all stop-gradient.

        Per scale a flip rate ``r_k`` is drawn uniformly from ``{0, 0.01, ..., flip_max}`` (one per
        batch and scale; ``flip_max`` may be traced); each valid bit is flipped w.p. ``r_k``; the flipped bits are
        re-quantised and used for ``f_hat`` and the residual. Returns ``input_bits`` (flipped),
        ``target_bits`` (clean bits of each scale given the flipped prefix), ``inputs`` (``K-1``
        next-scale inputs ``(B, N_k, C)`` built from the flipped prefix), ``token_masks``,
        ``flip_rates (K,)`` and ``f_hat``.
        """
        z = jax.lax.stop_gradient(self._check(z))
        res = self._loop(z, self._valid(z.shape[0], mask), flip_rng=rng, flip_max=flip_max)
        sg = jax.lax.stop_gradient
        return {
            "input_bits": [sg(c) for c in res["input_codes"]],
            "target_bits": [sg(c) for c in res["codes"]],
            "inputs": [sg(x) for x in res["inputs"]],
            "token_masks": res["masks"],
            "flip_rates": sg(res["rates"]),
            "f_hat": sg(res["f_hat"]),
        }

