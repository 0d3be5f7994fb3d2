"""ScaleMoGen's text-to-motion predictor (stage 2): bit-wise next-scale prediction on the
skeletal-temporal token maps of :class:`mmar.models.vqvae.SkeletalVQVAE`
(``../shared/reference/next-scale-notes.md`` section 3, ``../shared/seeds/scalemogen.txt``).

Sequence: the ``N = 864`` tokens of the tokenizer's 11 scales (``1, 2, 4, 6, 14, 21, 36, 72,
120, 245, 343``; scale ``k`` is a ``L_k x G_k`` (time x body-group) map, flattened time-major).
Inputs:

* scale 0: one start token = the attentive pool of the caption (one learned query; the same
  vector is the AdaLN condition), plus ``pos_start``;
* scale ``k > 0``: ``Linear(24, width)`` of the accumulated code map of scales ``< k``
  resized to ``L_k`` (linear in time) and averaged over each of scale ``k``'s groups
  (:func:`next_scale_input`; the tokenizer's ``teacher_forcing_inputs``).

The transformer (:class:`mmar.models.scale_ar.ScaleARTransformer`, :func:`scalemogen_config`):
shared AdaLN with per-block offsets, cosine attention with a learned per-head scale (and
``1/sqrt(d)``), 2D scale-normalised RoPE over (time, body group), level embedding, block-causal
mask plus padded keys, cross-attention on the caption, and a **bit-wise head**: ``Linear(width,
2 * 24)`` = 24 independent binary softmaxes per token.

Text: :class:`mmar.models.text.TransformerTextEncoder` trained with the predictor (the official
code reads frozen Flan-T5-XL features; the encoder is pluggable through
:class:`mmar.models.conditioning.TextCrossAttention`). A length head as MoScale's.

Training (:func:`bit_loss`): per-bit cross-entropy, mean over the 24 bits, padded tokens
zeroed, tokens of scale ``k`` weighted ``1 / sqrt(N_k)`` normalised over all positions; the
inputs come from the tokenizer's bit-flip correction
(:meth:`~mmar.models.quantizers.skeletal.SkeletalQuantizer.corrupt_and_requantize`: each
scale's bits flipped at a rate ``~ U{0, 0.01, ..., 0.30}``, later labels re-quantised).

Sampling (:func:`sample`): one pass per scale against the KV cache; classifier-free guidance
on the logits with the VAR ramp ``t = s k / (K - 1)`` (mode ``'scalemogen'``), logits divided
by the per-bit temperature (1.3), one Bernoulli draw per bit (Gumbel noise may come in as an
input). With an :class:`EditInputs`, the per-bit rule of zero-shot editing
(:func:`edit_bits`) picks, per token and bit, the new sample or the source's bit.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import ConfigError, ShapeError
from mmar.models.conditioning import TextCrossAttention
from mmar.models.quantizers.bsq import bits_to_codes
from mmar.models.quantizers.resample import HIGHEST
from mmar.models.quantizers.skeletal import (SkeletalQuantizerConfig, scale_down_matrix, scale_up_matrix,
                                             scale_valid_lengths)
from mmar.models.quantizers.temporal import length_mask
from mmar.models.scale_ar import ScaleARConfig, ScaleARTransformer, ScaleSchedule, cfg_logits
from mmar.models.text import TextEncoderConfig, TransformerTextEncoder

Array = jax.Array

__all__ = ["ScaleMoGenConfig", "ScaleMoGen", "SamplingConfig", "EditInputs", "schedule_of", "scale_weights",
           "bit_loss", "next_scale_input", "scale_contribution", "token_masks", "edit_bits", "sample",
           "source_bit_probs", "num_params"]


def schedule_of(q: SkeletalQuantizerConfig) -> ScaleSchedule:
    """The transformer's (time, groups) schedule of a skeletal quantiser."""
    return ScaleSchedule.from_grid(tuple((q.scale(k)[0], len(q.scale(k)[2])) for k in range(q.num_scales)))


@dataclasses.dataclass(frozen=True)
class ScaleMoGenConfig:
    """The predictor: ``transformer`` (bitwise head with ``num_bits = code_dim``,
    ``input_dim=None``, ``cross_attention=True``, ``null_cond=False``: the conditioner drops the
    caption), ``text`` (the text encoder), the tokenizer's ``quantizer``, the pool's heads, the
    length head (``length_classes = max_frames / unit``). ``transformer.remat`` selects the
    per-block rematerialisation of training (:attr:`mmar.models.scale_ar.ScaleARConfig.remat`;
    the text encoder is not rematerialised)."""

    transformer: ScaleARConfig
    text: TextEncoderConfig
    quantizer: SkeletalQuantizerConfig
    pool_heads: int = 16
    length_hidden: int = 256
    length_classes: int = 49
    unit: int = 4

    def __post_init__(self):
        t, q = self.transformer, self.quantizer
        if t.head != "bitwise" or t.num_bits != q.code_dim:
            raise ConfigError(f"ScaleMoGen: a bitwise head over the {q.code_dim} bits is needed, got head={t.head!r} "
                              f"with num_bits={t.num_bits}")
        if t.input_dim is not None:
            raise ConfigError("ScaleMoGen: the transformer takes width-wide inputs (input_dim=None)")
        if not t.cross_attention or t.null_cond:
            raise ConfigError("ScaleMoGen: the transformer needs cross_attention=True and null_cond=False")
        if t.schedule != schedule_of(q):
            raise ConfigError(f"ScaleMoGen: the transformer's schedule {t.schedule.lengths} is not the tokenizer's "
                              f"{q.token_counts}")
        if t.cond_width % self.pool_heads:
            raise ConfigError(f"ScaleMoGen: cond_dim {t.cond_width} is not divisible by pool_heads {self.pool_heads}")

    @property
    def num_scales(self) -> int:
        return self.quantizer.num_scales

    @property
    def num_bits(self) -> int:
        return self.quantizer.code_dim


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """``guidance``: CFG scale ``s`` of the ramp ``t = s k / (K - 1)`` (official 7);
    ``temperature``: per-bit logit temperature (official 1.3)."""

    guidance: float = 7.0
    temperature: float = 1.3


@struct.dataclass
class EditInputs:
    """Zero-shot editing inputs of :func:`sample` (AREdit's rule, ScaleMoGen ``edit_utils``):
    ``bits`` -- the source's bits per scale ``[(B, N_k, C)]``; ``editable`` -- ``[(B, N_k)]``
    bool, tokens the edit may regenerate; ``p_src`` -- ``[(B, N_k, C)]`` the probability the
    source condition gives the source's bit (teacher-forced, :func:`source_bit_probs`);
    ``gamma`` -- scales ``< gamma`` take the new sample only where editable; ``tau`` -- at scales
    ``>= gamma`` a bit outside the editable tokens is resampled where ``p_src - p_tgt > tau``
    (only with ``soft=True``: semantic edits; region edits keep every source bit outside)."""

    bits: Sequence[Array]
    editable: Sequence[Array]
    p_src: Sequence[Array]
    gamma: int = struct.field(pytree_node=False, default=3)
    tau: float = struct.field(pytree_node=False, default=0.1)
    soft: bool = struct.field(pytree_node=False, default=False)


# --------------------------------------------------------------------------
# token-map helpers (pure functions of the quantiser config)
# --------------------------------------------------------------------------

def next_scale_input(q: SkeletalQuantizerConfig, k: int, f_hat: Array) -> Array:
    """Input of scale ``k >= 1``: the flat accumulated map ``(B, T*J, C)`` resized to scale
    ``k`` (``q.tf_down``) and group-averaged -> ``(B, N_k, C)``."""
    if q.is_last(k):
        return f_hat
    w = jnp.asarray(scale_down_matrix(q, k, q.tf_down))
    return jnp.einsum("nm,bmc->bnc", w, f_hat, precision=HIGHEST)


def scale_contribution(q: SkeletalQuantizerConfig, k: int, bits: Array, valid: Array | None = None) -> Array:
    """``(B, T*J, C)``: the up-sampled code map of scale ``k``'s bits ``(B, N_k, C)`` (padded
    tokens, ``valid (B, N_k)`` False, contribute zero)."""
    codes = bits_to_codes(bits, q.code_dim)
    if valid is not None:
        codes = codes * valid[..., None].astype(codes.dtype)
    if q.is_last(k):
        return codes
    w = jnp.asarray(scale_up_matrix(q, k))
    return jnp.einsum("mn,bnc->bmc", w, codes, precision=HIGHEST)


def token_masks(q: SkeletalQuantizerConfig, latent_valid: Array) -> list[Array]:
    """Valid tokens ``[(B, N_k)]`` of motions with ``latent_valid (B,)`` valid latent steps."""
    out = []
    for k, vk in enumerate(scale_valid_lengths(q, latent_valid)):
        length, _, groups = q.scale(k)
        m = length_mask(vk, length)[:, :, None]
        out.append(jnp.broadcast_to(m, (vk.shape[0], length, len(groups))).reshape(vk.shape[0], -1))
    return out


def scale_weights(schedule: ScaleSchedule) -> np.ndarray:
    """``(N,)`` loss weight of each position: ``1 / sqrt(N_k)`` of its scale, summing to 1."""
    w = np.concatenate([np.full((n,), 1.0 / np.sqrt(n)) for n in schedule.lengths])
    return (w / w.sum()).astype(np.float32)


def bit_loss(logits: Array, bits: Array, valid: Array, schedule: ScaleSchedule,
             area_weighting: bool = True) -> tuple[Array, dict]:
    """ScaleMoGen's loss: ``logits (B, N, C, 2)``, target ``bits (B, N, C)``, ``valid (B, N)``.
    Per token the mean over bits of the binary cross-entropy; tokens weighted ``1 / sqrt(N_k)``
    (normalised over all N positions; ``area_weighting=False``: uniform ``1 / N``), padded
    tokens zeroed, batch mean. Metrics: ``bit_acc`` (valid bits), ``token_acc`` (all bits right),
    ``ce_scale{k}`` (unweighted mean CE per scale)."""
    if logits.shape[:3] != bits.shape or logits.shape[-1] != 2 or valid.shape != bits.shape[:2]:
        raise ShapeError(f"bit_loss: logits {logits.shape}, bits {bits.shape}, valid {valid.shape} disagree")
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    ce = -jnp.take_along_axis(logp, bits[..., None].astype(jnp.int32), -1)[..., 0].mean(-1)  # (B, N)
    v = valid.astype(jnp.float32)
    w = jnp.asarray(scale_weights(schedule)) if area_weighting else jnp.full((schedule.total,), 1.0 / schedule.total)
    loss = jnp.mean(jnp.sum(ce * v * w[None], axis=1))
    right = (jnp.argmax(logits, -1) == bits)
    n_valid = jnp.maximum(jnp.sum(v), 1.0)
    metrics = {"bit_acc": jnp.sum(jnp.mean(right, -1) * v) / n_valid,
               "token_acc": jnp.sum(jnp.all(right, -1) * v) / n_valid}
    for k in range(schedule.num_scales):
        sl = schedule.scale_slice(k)
        metrics[f"ce_scale{k}"] = jnp.sum(ce[:, sl] * v[:, sl]) / jnp.maximum(jnp.sum(v[:, sl]), 1.0)
    return loss, metrics


# --------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------

class ScaleMoGen(nn.Module):
    """See the module docstring. Entry points (``method=`` of ``apply``): ``__call__``
    (training forward), :meth:`condition`, :meth:`scale_inputs`, :meth:`decode`,
    :meth:`full_logits`, :meth:`length_logits`."""

    config: ScaleMoGenConfig

    def setup(self):
        c = self.config
        t = c.transformer
        std = t.std
        self.text_encoder = TransformerTextEncoder(c.text)
        self.conditioner = TextCrossAttention(
            text_dim=c.text.width, memory_dim=t.memory_width, pool_dim=t.cond_width, num_queries=1,
            pool_heads=c.pool_heads, cond_reduce="first", max_len=c.text.max_len)
        if t.cond_width != t.width:
            self.sos_proj = nn.Dense(t.width, kernel_init=nn.initializers.truncated_normal(std))
        self.word_embed = nn.Dense(t.width, kernel_init=nn.initializers.truncated_normal(std))
        self.transformer = ScaleARTransformer(t)
        self.len_fc1 = nn.Dense(c.length_hidden)
        self.len_fc2 = nn.Dense(c.length_classes)

    # ---- conditioning -------------------------------------------------------------
    def condition(self, ids: Array, mask: Array, drop: Array | None = None, train: bool = False):
        """``(Conditioning, pooled text (B, text width))`` of tokenized captions."""
        tokens, pooled = self.text_encoder(ids, mask, train)
        return self.conditioner(tokens, mask, drop=drop, train=train), pooled

    def length_logits(self, pooled: Array) -> Array:
        h = nn.gelu(self.len_fc1(jax.lax.stop_gradient(pooled)), approximate=True)
        return self.len_fc2(h)

    # ---- inputs -------------------------------------------------------------------
    def _sos(self, sos: Array) -> Array:
        t = self.config.transformer
        return self.sos_proj(sos) if t.cond_width != t.width else sos

    def scale_inputs(self, k: int, x: Array) -> Array:
        """Inputs ``(B, N_k, width)`` of scale ``k`` (static): ``x`` is the pooled start token
        ``(B, 1, cond_dim)`` for ``k = 0``, else the next-scale input ``(B, N_k, 24)``."""
        return self._sos(x) if k == 0 else self.word_embed(x)

    def sequence_inputs(self, sos: Array, inputs: Sequence[Array]) -> Array:
        """``(B, N, width)``: start token and the ``K - 1`` next-scale inputs."""
        if len(inputs) != self.config.num_scales - 1:
            raise ShapeError(f"ScaleMoGen: {self.config.num_scales - 1} next-scale inputs expected, got {len(inputs)}")
        return jnp.concatenate([self._sos(sos), self.word_embed(jnp.concatenate(list(inputs), axis=1))], axis=1)

    # ---- transformer ----------------------------------------------------------------
    def full_logits(self, x: Array, cond, key_mask: Array | None = None, train: bool = False) -> Array:
        return self.transformer(x, cond.adaln, memory=cond.memory, memory_mask=cond.memory_mask, key_mask=key_mask,
                                train=train)

    def decode(self, cache: dict, x_k: Array, k: int, cond, key_mask: Array | None = None) -> tuple[Array, dict]:
        return self.transformer.decode_step(cache, x_k, k, cond.adaln, None, cond.memory, cond.memory_mask,
                                            key_mask, None)

    def __call__(self, ids: Array, text_mask: Array, inputs: Sequence[Array], key_mask: Array | None = None,
                 drop: Array | None = None, train: bool = False) -> tuple[Array, Array]:
        """Teacher-forced bit logits ``(B, N, C, 2)`` and length logits ``(B, classes)``."""
        cond, pooled = self.condition(ids, text_mask, drop, train)
        x = self.sequence_inputs(cond.sos, inputs)
        return self.full_logits(x, cond, key_mask, train), self.length_logits(pooled)


# --------------------------------------------------------------------------
# sampling and editing
# --------------------------------------------------------------------------

def _twice(x):
    return None if x is None else jnp.concatenate([x, x], axis=0)


def _guided(lg: Array, B: int, k: int, K: int, sc: SamplingConfig) -> Array:
    return cfg_logits(lg[:B], lg[B:], k, K, "scalemogen", sc.guidance) / sc.temperature


def edit_bits(k: int, new_bits: Array, p_new_one: Array, edit: EditInputs) -> Array:
    """The per-bit editing rule at scale ``k`` (static): ``new_bits (B, N_k, C)`` just sampled,
    ``p_new_one`` the target's probability of bit = 1 (after CFG and temperature).

    * ``k < gamma``: the new bit inside the editable tokens, the source's bit elsewhere;
    * ``k >= gamma``: also the new bit where ``soft`` and the target condition lowers the
      source bit's probability by more than ``tau`` (``p_src - p_tgt(b_src) > tau``)."""
    src = jnp.asarray(edit.bits[k], jnp.int32)
    take = jnp.broadcast_to(jnp.asarray(edit.editable[k], bool)[..., None], src.shape)
    if k >= edit.gamma and edit.soft:
        p_tgt_src = jnp.where(src == 1, p_new_one, 1.0 - p_new_one)
        take = take | (jnp.asarray(edit.p_src[k]) - p_tgt_src > edit.tau)
    return jnp.where(take, new_bits, src)


def sample(net: ScaleMoGen, params, vq, vq_vars, ids: Array, text_mask: Array, lengths: Array, key: Array,
           sc: SamplingConfig, noise: Sequence[Array] | None = None, edit: EditInputs | None = None) -> dict:
    """Generate bit pyramids and features for captions ``ids, text_mask (B, L)`` and motion
    ``lengths (B,)`` frames. ``vq``: the :class:`~mmar.models.vqvae.SkeletalVQVAE`, ``vq_vars``
    its variables; ``noise``: optional per-scale Gumbel noise ``[(B, N_k, C, 2)]``; ``edit``:
    zero-shot editing (:class:`EditInputs`). Traceable (jit with the modules and ``sc``
    static). Returns ``{"bits": [(B, N_k, C)] (0 at padding), "token_masks", "p_one": [(B, N_k,
    C)] the guided probability of each bit being 1, "features": (B, frames, F)`` normalised,
    zero beyond the length, ``"mask"``}."""
    c = net.config
    q = c.quantizer
    K = q.num_scales
    if vq.config.quantizer != q:
        raise ConfigError("ScaleMoGen: the predictor's quantiser config differs from the tokenizer's")
    B = ids.shape[0]
    lengths = jnp.asarray(lengths, jnp.int32)
    params, vq_vars = jax.tree.map(jnp.asarray, (params, vq_vars))
    drop = jnp.concatenate([jnp.zeros((B,), bool), jnp.ones((B,), bool)])
    cond, _ = net.apply({"params": params}, _twice(ids), _twice(text_mask), drop, method=ScaleMoGen.condition)
    latent_valid = -((-lengths) // c.unit)
    tmasks = token_masks(q, latent_valid)
    key_mask = _twice(jnp.concatenate(tmasks, axis=1))
    cache = net.apply({"params": params}, 2 * B, method=lambda m, b: m.transformer.init_cache(b))
    f_hat = jnp.zeros((B, q.num_steps * q.num_groups, q.code_dim), jnp.float32)
    bits_out, p_out = [], []
    for k in range(K):
        src = cond.sos if k == 0 else _twice(next_scale_input(q, k, f_hat))
        x_k = net.apply({"params": params}, k, src, method=ScaleMoGen.scale_inputs)
        lg, cache = net.apply({"params": params}, cache, x_k, k, cond, key_mask, method=ScaleMoGen.decode)
        lg = _guided(lg, B, k, K, sc)
        if noise is not None:
            g = noise[k]
        else:
            g = jax.random.gumbel(jax.random.fold_in(key, k), lg.shape, jnp.float32)
        bits = jnp.argmax(lg + g, axis=-1).astype(jnp.int32)  # (B, N_k, C)
        p_one = jax.nn.softmax(lg, -1)[..., 1]
        if edit is not None:
            bits = edit_bits(k, bits, p_one, edit)
        bits = bits * tmasks[k][..., None]
        f_hat = f_hat + scale_contribution(q, k, bits, tmasks[k])
        bits_out.append(bits)
        p_out.append(p_one)
    frames = vq.config.num_frames
    fmask = length_mask(lengths, frames)
    grid = f_hat.reshape(B, q.num_steps, q.num_groups, q.code_dim)
    feats = vq.apply(vq_vars, grid, fmask, method=lambda m, z, mk: m.decode_latent(z, mk))
    feats = feats * fmask[..., None]
    return {"bits": bits_out, "token_masks": tmasks, "p_one": p_out, "features": feats, "mask": fmask}


def source_bit_probs(net: ScaleMoGen, params, ids: Array, text_mask: Array, bits: Sequence[Array],
                     lengths: Array, sc: SamplingConfig, conditional: Array | None = None) -> list[Array]:
    """``[(B, N_k, C)]``: the probability the model gives each of a source's ``bits`` (teacher
    forced on the source's own prefix), with CFG and temperature as in :func:`sample`. For rows
    where ``conditional (B,)`` is False (no source caption) the unconditional logits are used."""
    c = net.config
    q = c.quantizer
    K = q.num_scales
    B = ids.shape[0]
    latent_valid = -((-jnp.asarray(lengths, jnp.int32)) // c.unit)
    tmasks = token_masks(q, latent_valid)
    f_hat = jnp.zeros((B, q.num_steps * q.num_groups, q.code_dim), jnp.float32)
    inputs = []
    for k in range(K - 1):
        f_hat = f_hat + scale_contribution(q, k, bits[k], tmasks[k])
        inputs.append(next_scale_input(q, k + 1, f_hat))
    drop = jnp.concatenate([jnp.zeros((B,), bool), jnp.ones((B,), bool)])

    def fwd(m, i, tm, inp, km, d):
        cnd, _ = m.condition(i, tm, d)
        return m.full_logits(m.sequence_inputs(cnd.sos, inp), cnd, km)

    lg = net.apply({"params": params}, _twice(ids), _twice(text_mask), [_twice(x) for x in inputs],
                   _twice(jnp.concatenate(tmasks, 1)), drop, method=fwd)
    sch = c.transformer.schedule
    out = []
    for k in range(K):
        sl = sch.scale_slice(k)
        guided = _guided(lg[:, sl], B, k, K, sc)
        if conditional is not None:
            guided = jnp.where(jnp.asarray(conditional, bool)[:, None, None, None], guided,
                               lg[B:, sl] / sc.temperature)
        p_one = jax.nn.softmax(guided, -1)[..., 1]
        b = jnp.asarray(bits[k], jnp.int32)
        out.append(jnp.where(b == 1, p_one, 1.0 - p_one))
    return out


def num_params(params: Any) -> int:
    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))
