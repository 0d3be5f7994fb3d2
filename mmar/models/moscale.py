"""MoScale's text-to-motion predictor (stage 2): a text conditioner, the two input channels and
the scale-wise transformer of :mod:`mmar.models.scale_ar`, with the training-time token
corruption and the sampler (``../shared/reference/next-scale-notes.md`` section 2).

Sequence: the ``N = sum(L_k)`` tokens of the tokenizer's scales (6 / 12 / 24 / 49), coarse to
fine. Every position carries two channels, concatenated (``width / 2`` each) and projected by
the transformer's input ``Linear(width, width)``:

1. the *VAR channel*: scale 0 = the ``L_0`` start tokens of the text pool
   (``Linear(cond_dim, width / 2)``); scale ``k > 0`` = the accumulated ``f_hat`` of scales
   ``< k`` area-resized to ``L_k`` (``Linear(code_dim, width / 2)``);
2. the *token channel*: a learned table of ``V + 2`` rows (``V`` codes, then ``[MASK]`` and
   ``[PAD]``; :data:`MASK_OFFSET`, :data:`PAD_OFFSET`), ``code_dim`` wide, then
   ``Linear(code_dim, width / 2)`` (the official ``use_learned_token_map``).

Text: :class:`mmar.models.text.TransformerTextEncoder` (trained with the predictor; the
official code reads frozen T5-base features) -> :class:`mmar.models.conditioning.TextCrossAttention`
(RMSNorm; memory MLP for cross-attention; ``L_0`` learned queries pooling the caption into the
start tokens; AdaLN condition = max over them; classifier-free dropping replaces the encoded
caption by learned rows). A small length head (``MLP(pooled text)`` -> ``max_frames / 4``
classes, MoMask's length estimator; its input is stop-gradient so it does not shape the text
features) predicts the motion length in units of 4 frames when the user gives none.

Training (:func:`maskgit_tokens`): one ``u ~ U(0, 1)`` per motion, ``n = max(1, round(N
cos(pi u / 2)))`` random valid positions masked over *all* scales at once; of those 10 % get a
random id, 80 % ``[MASK]``, 10 % stay; visible valid positions get a random id with a
probability drawn once per batch from ``U(0, 0.1)``; padded positions carry ``[PAD]``;
cross-entropy over the masked positions. Cross-scale corruption (the tokenizer's
:meth:`~mmar.models.quantizers.temporal.TemporalQuantizer.corrupt_and_requantize`) builds the
VAR channel and the token channel from corrupted codes and takes the labels re-quantised from
the corrupted residual.

Sampling (:func:`sample`): per scale, the VAR channel from the tokens sampled so far,
mask-and-repredict (:func:`mmar.models.sampling.mask_and_repredict`) with ``steps[k]``
refinement steps against the KV cache of the coarser scales, classifier-free guidance with the
decreasing ramp ``t = s + 0.25 - 0.25 k`` (:func:`mmar.models.scale_ar.cfg_logits`, mode
``'moscale'``), top-p; then the scale runs once more with its final tokens so the cache holds
their keys and values. ``use_cache=False`` recomputes the whole prefix at every step (the
official code's way); both give the same tokens. Randomness: one key, folded per scale and
step (or Gumbel noise as input when exporting).
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
from mmar.models.sampling import mask_and_repredict
from mmar.models.scale_ar import ScaleARConfig, ScaleARTransformer, cfg_logits
from mmar.models.text import TextEncoderConfig, TransformerTextEncoder

Array = jax.Array

__all__ = ["MoScaleConfig", "MoScale", "MASK_OFFSET", "PAD_OFFSET", "maskgit_tokens", "sample",
           "length_bins", "lengths_from_bins", "SamplingConfig", "EditInputs"]

MASK_OFFSET = 0  # [MASK] = codebook_size + 0
PAD_OFFSET = 1  # [PAD] = codebook_size + 1


@dataclasses.dataclass(frozen=True)
class MoScaleConfig:
    """The predictor: ``transformer`` (``input_dim = width``, ``cross_attention=True``,
    ``null_cond=False``: the conditioner drops the caption), ``text`` (the text encoder),
    ``code_dim`` / ``codebook_size`` of the tokenizer, the text pool's heads, the length head's
    width and number of classes (``max_frames / unit``). ``transformer.remat`` selects the
    per-block rematerialisation of training (:attr:`mmar.models.scale_ar.ScaleARConfig.remat`;
    the text encoder is not rematerialised)."""

    transformer: ScaleARConfig
    text: TextEncoderConfig
    code_dim: int
    codebook_size: int
    pool_heads: int = 3
    length_hidden: int = 256
    length_classes: int = 49
    unit: int = 4

    def __post_init__(self):
        t = self.transformer
        if t.input_dim != t.width or t.width % 2:
            raise ConfigError(f"MoScale: the transformer's input_dim must equal its (even) width, got "
                              f"input_dim={t.input_dim}, width={t.width}")
        if not t.cross_attention or t.null_cond:
            raise ConfigError("MoScale: the transformer needs cross_attention=True and null_cond=False")
        if t.vocab_size != self.codebook_size or t.head != "categorical":
            raise ConfigError(f"MoScale: a categorical head over the {self.codebook_size} codes is needed, got "
                              f"{t.head} with vocab_size {t.vocab_size}")
        if t.cond_width % self.pool_heads:
            raise ConfigError(f"MoScale: cond_dim {t.cond_width} is not divisible by pool_heads {self.pool_heads}")

    @property
    def mask_id(self) -> int:
        return self.codebook_size + MASK_OFFSET

    @property
    def pad_id(self) -> int:
        return self.codebook_size + PAD_OFFSET

    @property
    def lengths(self) -> tuple[int, ...]:
        return self.transformer.schedule.lengths


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """``steps``: refinement steps per scale (the official (1, 2, 5, 10)); ``guidance``: CFG
    scale ``s`` of the ramp; ``top_p`` 0 = off; ``use_cache``: KV cache of the coarser scales."""

    steps: tuple[int, ...] = (1, 2, 5, 10)
    guidance: float = 5.0
    guidance_step: float = 0.25
    top_p: float = 0.9
    top_k: int = 0
    temperature: float = 1.0
    use_cache: bool = True


@struct.dataclass
class EditInputs:
    """Zero-shot editing inputs of :func:`sample`: the source's ``codes`` per scale ``[(B,
    L_k)]`` and ``editable [(B, L_k)]`` bool. Region edits: the tokens outside the editable
    ones are fixed to the source's (never masked, never changed) while mask-and-repredict fills
    the rest under the new caption. ``semantic=True``: scales ``< gamma`` are the source's,
    later scales are regenerated (the categorical analogue of ScaleMoGen's rule; the per-bit
    probability test has no counterpart in mask-and-repredict)."""

    codes: Sequence[Array]
    editable: Sequence[Array]
    gamma: int = struct.field(pytree_node=False, default=2)
    semantic: bool = struct.field(pytree_node=False, default=False)


def length_bins(lengths: Array, unit: int, classes: int) -> Array:
    """Length class of ``lengths`` frames: ``lengths // unit - 1`` clipped to ``[0, classes)``."""
    return jnp.clip(jnp.asarray(lengths, jnp.int32) // unit - 1, 0, classes - 1)


def lengths_from_bins(bins: Array, unit: int) -> Array:
    return (jnp.asarray(bins, jnp.int32) + 1) * unit


def _trunc(std: float):
    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.truncated_normal(key, -2.0 / std, 2.0 / std, shape, dtype)
    return init


class MoScale(nn.Module):
    """See the module docstring. Entry points (``method=`` of ``apply``): ``__call__``
    (training forward), :meth:`condition`, :meth:`scale_inputs`, :meth:`decode`,
    :meth:`full_logits`, :meth:`length_logits`."""

    config: MoScaleConfig

    def setup(self):
        c = self.config
        t = c.transformer
        half = t.width // 2
        std = t.std
        self.text_encoder = TransformerTextEncoder(c.text)
        self.conditioner = TextCrossAttention(
            text_dim=c.text.width, memory_dim=t.memory_width, pool_dim=t.cond_width,
            num_queries=t.schedule.lengths[0], pool_heads=c.pool_heads, cond_reduce="max", max_len=c.text.max_len)
        self.sos_proj = nn.Dense(half, kernel_init=_trunc(std))
        self.var_proj = nn.Dense(half, kernel_init=_trunc(std))
        self.token_table = self.param("token_table", _trunc(0.02), (c.codebook_size + 2, c.code_dim))
        self.tok_proj = nn.Dense(half, kernel_init=_trunc(std))
        self.transformer = ScaleARTransformer(t)
        self.len_fc1 = nn.Dense(c.length_hidden)
        self.len_fc2 = nn.Dense(c.length_classes)

    # ---- conditioning -----------------------------------------------------------
    def condition(self, ids: Array, mask: Array, drop: Array | None = None, train: bool = False):
        """``(Conditioning, pooled text (B, text width))`` of tokenized captions."""
        tokens, pooled = self.text_encoder(ids, mask, train)
        return self.conditioner(tokens, mask, drop=drop, train=train), pooled

    def length_logits(self, pooled: Array) -> Array:
        h = nn.gelu(self.len_fc1(jax.lax.stop_gradient(pooled)), approximate=True)
        return self.len_fc2(h)

    # ---- inputs -----------------------------------------------------------------
    def _tokens(self, tokens: Array) -> Array:
        c = self.config
        tokens = jnp.asarray(tokens, jnp.int32)
        return self.tok_proj(jnp.take(self.token_table, jnp.clip(tokens, 0, c.codebook_size + 1), axis=0))

    def scale_inputs(self, k: int, var_or_sos: Array, tokens_k: Array) -> Array:
        """Input embeddings ``(B, L_k, width)`` of scale ``k`` (static): ``var_or_sos`` is the
        start tokens ``(B, L_0, cond_dim)`` for ``k = 0``, else the resized ``f_hat (B, L_k,
        code_dim)``; ``tokens_k (B, L_k)`` the token channel ids (codes, [MASK], [PAD])."""
        var = self.sos_proj(var_or_sos) if k == 0 else self.var_proj(var_or_sos)
        return jnp.concatenate([var, self._tokens(tokens_k)], -1)

    def sequence_inputs(self, sos: Array, var_inputs: Sequence[Array], tokens: Array) -> Array:
        """Inputs ``(B, N, width)`` of the whole sequence: ``var_inputs`` lists the resized
        ``f_hat`` of scales ``1..K-1``; ``tokens (B, N)``."""
        lengths = self.config.lengths
        if len(var_inputs) != len(lengths) - 1:
            raise ShapeError(f"MoScale: {len(lengths) - 1} VAR inputs expected, got {len(var_inputs)}")
        var = jnp.concatenate([self.sos_proj(sos)] + [self.var_proj(v) for v in var_inputs], axis=1)
        return jnp.concatenate([var, self._tokens(tokens)], -1)

    # ---- transformer ----------------------------------------------------------------
    def full_logits(self, x: Array, cond, train: bool = False) -> Array:
        return self.transformer(x, cond.adaln, memory=cond.memory, memory_mask=cond.memory_mask, train=train)

    def decode(self, cache: dict, x_k: Array, k: int, cond) -> tuple[Array, dict]:
        return self.transformer.decode_step(cache, x_k, k, cond.adaln, None, cond.memory, cond.memory_mask,
                                            None, None)

    def __call__(self, ids: Array, text_mask: Array, tokens: Array, var_inputs: Sequence[Array],
                 drop: Array | None = None, train: bool = False) -> tuple[Array, Array]:
        """Teacher-forced logits ``(B, N, V)`` and length logits ``(B, classes)``."""
        cond, pooled = self.condition(ids, text_mask, drop, train)
        x = self.sequence_inputs(cond.sos, var_inputs, tokens)
        return self.full_logits(x, cond, train), self.length_logits(pooled)


# --------------------------------------------------------------------------
# training-time token masking
# --------------------------------------------------------------------------

def maskgit_tokens(rng: Array, codes: Array, cfg: MoScaleConfig, *, random_frac: float = 0.1,
                   keep_frac: float = 0.1, visible_noise_max: float = 0.1) -> tuple[Array, Array]:
    """MaskGIT corruption over all scales at once (module docstring). ``codes (B, N)`` int with
    ``-1`` at padded positions -> ``(tokens (B, N) int32`` for the token channel, ``masked (B,
    N) bool``: the positions the loss reads)."""
    B, N = codes.shape
    V = cfg.codebook_size
    r_u, r_rank, r_kind, r_id, r_vis, r_vis_p, r_vis_id = jax.random.split(rng, 7)
    valid = codes >= 0
    ratio = jnp.cos(jnp.pi / 2 * jax.random.uniform(r_u, (B,)))
    n = jnp.maximum(1, jnp.round(N * ratio)).astype(jnp.int32)
    score = jnp.where(valid, jax.random.uniform(r_rank, (B, N)), 2.0)
    rank = jnp.argsort(jnp.argsort(score, axis=1), axis=1)
    masked = (rank < n[:, None]) & valid
    kind = jax.random.uniform(r_kind, (B, N))
    rand_ids = jax.random.randint(r_id, (B, N), 0, V)
    toks = jnp.where(kind < random_frac, rand_ids, jnp.where(kind < 1.0 - keep_frac, cfg.mask_id, codes))
    toks = jnp.where(masked, toks, codes)
    p_vis = jax.random.uniform(r_vis_p, (), minval=0.0, maxval=visible_noise_max)
    flip = (jax.random.uniform(r_vis, (B, N)) < p_vis) & valid & ~masked
    toks = jnp.where(flip, jax.random.randint(r_vis_id, (B, N), 0, V), toks)
    toks = jnp.where(valid, toks, cfg.pad_id)
    return toks.astype(jnp.int32), masked


# --------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------

def _twice(x):
    return None if x is None else jnp.concatenate([x, x], axis=0)


def sample(net: MoScale, params, vq, vq_vars, ids: Array, text_mask: Array, lengths: Array, key: Array,
           sc: SamplingConfig, noise: Sequence[Array] | None = None, edit: EditInputs | None = None) -> dict:
    """Generate token pyramids and features for captions ``ids, text_mask (B, L)`` and motion
    ``lengths (B,)`` frames (multiples of ``unit``; valid latent steps ``lengths // unit``).

    ``net``: the :class:`MoScale` module, ``params`` its params; ``vq`` the
    :class:`~mmar.models.vqvae.TemporalVQVAE`, ``vq_vars`` its variables. ``noise``: optional
    per-scale Gumbel noise ``(steps[k], B, L_k, V)``; ``edit``: zero-shot editing
    (:class:`EditInputs`). Traceable (wrap in ``jax.jit`` with the
    modules and ``sc`` static). Returns ``{"codes": [(B, L_k)] (-1 at padding), "features":
    (B, frames, F)`` normalised, zero beyond the length, ``"mask": (B, frames)}``."""
    from mmar.models.quantizers.resample import resample
    from mmar.models.quantizers.temporal import length_mask, scale_valid_lengths

    c = net.config
    q = vq.config.quantizer
    K = len(c.lengths)
    if tuple(q.lengths) != tuple(c.lengths):
        raise ConfigError(f"MoScale scales {c.lengths} differ from the tokenizer's {q.lengths}")
    if len(sc.steps) != K:
        raise ConfigError(f"sampling steps must give one count per scale ({K}), got {sc.steps}")
    B = ids.shape[0]
    lengths = jnp.asarray(lengths, jnp.int32)
    params, vq_vars = jax.tree.map(jnp.asarray, (params, vq_vars))  # numpy weights index badly under tracing
    drop = jnp.concatenate([jnp.zeros((B,), bool), jnp.ones((B,), bool)])
    cond, _ = net.apply({"params": params}, _twice(ids), _twice(text_mask), drop, method=MoScale.condition)
    cb = vq.apply(vq_vars, method=lambda m: m.quantizer.codebook_vectors())
    latent_valid = lengths // c.unit
    vks = scale_valid_lengths(q, latent_valid)
    f_hat = jnp.zeros((B, q.latent_length, q.code_dim), jnp.float32)
    sch = c.transformer.schedule
    cache = net.apply({"params": params}, 2 * B, method=lambda m, b: m.transformer.init_cache(b)) if sc.use_cache \
        else None
    seq_x = jnp.zeros((2 * B, sch.total, c.transformer.width), jnp.float32)  # uncached path: inputs so far
    codes = []
    for k in range(K):
        L = c.lengths[k]
        valid = length_mask(vks[k], L)
        var_in = cond.sos if k == 0 else _twice(resample(f_hat, L, q.teacher_forcing_mode))
        start, end = sch.starts[k], sch.ends[k]

        def inputs(toks, var_in=var_in, k=k):
            return net.apply({"params": params}, k, var_in, _twice(toks), method=MoScale.scale_inputs)

        def logits_of(x_k, k=k, start=start, end=end, seq_x=seq_x, cache=cache):
            if sc.use_cache:
                lg, _ = net.apply({"params": params}, cache, x_k, k, cond, method=MoScale.decode)
            else:
                x = jax.lax.dynamic_update_slice(seq_x, x_k, (0, start, 0))
                lg = net.apply({"params": params}, x, cond, method=MoScale.full_logits)[:, start:end]
            return cfg_logits(lg[:B], lg[B:], k, K, "moscale", sc.guidance, sc.guidance_step)

        def predict(toks, mask, valid=valid, inputs=inputs, logits_of=logits_of):
            t = jnp.where(mask, c.mask_id, toks)
            t = jnp.where(valid, t, c.pad_id)
            return logits_of(inputs(t))

        init = jnp.where(valid, c.mask_id, c.pad_id).astype(jnp.int32)
        fixed = None
        if edit is not None:
            if edit.semantic:
                fixed = valid & (k < edit.gamma)
            else:
                fixed = valid & ~jnp.asarray(edit.editable[k], bool)
            init = jnp.where(fixed, jnp.asarray(edit.codes[k], jnp.int32), init)
        toks, _, _ = mask_and_repredict(
            predict, init, int(sc.steps[k]), noise=None if noise is None else noise[k], fixed=fixed,
            key=None if noise is not None else jax.random.fold_in(key, k), valid=valid,
            temperature=sc.temperature, top_k=sc.top_k, top_p=sc.top_p)
        toks = jnp.where(valid, toks, c.pad_id)
        x_k = inputs(toks)
        if sc.use_cache:  # the cache keeps the final tokens' keys and values
            _, cache = net.apply({"params": params}, cache, x_k, k, cond, method=MoScale.decode)
        else:
            seq_x = jax.lax.dynamic_update_slice(seq_x, x_k, (0, start, 0))
        code_k = jnp.where(valid, toks, -1)
        codes.append(code_k)
        e = jnp.take(cb, jnp.maximum(code_k, 0), axis=0) * valid[..., None]
        f_hat = f_hat + vq.apply(vq_vars, k, e, method=lambda m, k_, e_: m.quantizer.scale_contribution(k_, e_))
    frames = vq.config.num_frames
    fmask = length_mask(lengths, frames)
    feats = vq.apply(vq_vars, f_hat, fmask, method=lambda m, z, mk: m.decode_latent(z, mk))
    feats = feats * fmask[..., None]
    return {"codes": codes, "features": feats, "mask": fmask}


def num_params(params: Any) -> int:
    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))

