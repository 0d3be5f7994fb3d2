"""A next-token text-to-motion baseline (T2M-GPT style) built to be compared with MoScale
(:mod:`mmar.models.moscale`): a causal transformer over the *finest-scale* tokens of the same
frozen MoScale tokenizer, with MoScale's text conditioning and length head.

Tokens: the ``T' = latent_length`` (49) codes of the frozen tokenizer's codebook nearest to the
encoder latent ``z`` (argmin, :func:`mmar.models.quantizers.temporal.nearest_codes`; one scale,
no residual), ``-1`` beyond the valid latent length ``length // unit``. Decoding: ``f_hat =
codebook[codes]`` (zero at padding) -> the tokenizer's decoder.

Sequence (``T'`` positions, causal): position 0 = the text pool's start token
(:class:`~mmar.models.conditioning.TextCrossAttention` with one query, ``Linear(cond_dim,
width)``); position ``i > 0`` = the embedding of token ``i - 1`` (a learned table of ``V + 1``
rows, codes then ``[PAD]``, ``code_dim`` wide, then ``Linear(code_dim, width)``). Position ``i``
predicts token ``i``. The transformer is :class:`~mmar.models.scale_ar.ScaleARTransformer`
(MoScale's AdaLN blocks with cross-attention on the text memory) over the schedule of ``T'``
one-token scales (block-causal = causal) with learned absolute positions. T2M-GPT's End token
is not modelled: the length is given (or drawn from the length head, as MoScale), so the
official extra position after the last code, which only predicts End, is left out.

Text, conditioning and classifier-free guidance exactly as MoScale: the caption encoder
(:class:`~mmar.models.text.TransformerTextEncoder`), the AdaLN condition = the pooled query,
cross-attention on the memory, the conditioner drops the caption (learned rows); the length
head ``MLP(stop_gradient(pooled))`` over ``max_frames / unit`` classes.

Sampling (:func:`sample`): ``T'`` steps of a ``lax.fori_loop`` (one compilation whatever the
length) with a KV cache (:meth:`~mmar.models.scale_ar.ScaleARTransformer.decode_position`),
CFG on a batch of 2B with a constant weight (``(1 + s) c - s u``, MoScale's formula without its
per-scale ramp, s = 5), top-p 0.9, temperature 1, Gumbel noise folded from one key per step.
Positions beyond a motion's valid latent length get ``[PAD]`` (code -1). ``use_cache=False``
runs the whole sequence at every step (the same tokens).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmar.errors import ConfigError, ShapeError
from mmar.models.conditioning import TextCrossAttention
from mmar.models.sampling import gumbel_noise, sample_categorical
from mmar.models.scale_ar import ScaleARConfig, ScaleARTransformer, cfg_logits
from mmar.models.text import TextEncoderConfig, TransformerTextEncoder

Array = jax.Array

__all__ = ["T2MGPTConfig", "T2MGPT", "T2MSamplingConfig", "sample", "shift_inputs", "corrupt_codes"]


@dataclasses.dataclass(frozen=True)
class T2MGPTConfig:
    """``transformer``: a causal schedule of ``T'`` one-token scales, ``input_dim=None``,
    ``cross_attention=True``, ``null_cond=False``, a categorical head over the codes; the rest as
    :class:`mmar.models.moscale.MoScaleConfig`. ``transformer.remat`` selects the per-block
    rematerialisation of training (:attr:`mmar.models.scale_ar.ScaleARConfig.remat`): the
    baseline's block stack is the same :class:`~mmar.models.scale_ar.AdaLNBlock` stack."""

    transformer: ScaleARConfig
    text: TextEncoderConfig
    code_dim: int
    codebook_size: int
    pool_heads: int = 2
    length_hidden: int = 256
    length_classes: int = 49
    unit: int = 4

    def __post_init__(self):
        t = self.transformer
        if any(n != 1 for n in t.schedule.lengths):
            raise ConfigError(f"T2MGPT: the schedule must be causal (one token per scale), got {t.schedule.lengths}")
        if t.input_dim is not None:
            raise ConfigError("T2MGPT: the transformer's inputs are embedded here (input_dim=None)")
        if not t.cross_attention or t.null_cond:
            raise ConfigError("T2MGPT: the transformer needs cross_attention=True and null_cond=False")
        if t.vocab_size != self.codebook_size or t.head != "categorical":
            raise ConfigError(f"T2MGPT: a categorical head over the {self.codebook_size} codes is needed, got "
                              f"{t.head} with vocab_size {t.vocab_size}")
        if t.cond_width % self.pool_heads:
            raise ConfigError(f"T2MGPT: cond_dim {t.cond_width} is not divisible by pool_heads {self.pool_heads}")

    @property
    def pad_id(self) -> int:
        return self.codebook_size

    @property
    def length(self) -> int:
        """Token positions ``T'``."""
        return self.transformer.schedule.total


@dataclasses.dataclass(frozen=True)
class T2MSamplingConfig:
    """CFG weight ``s`` (constant: ``(1 + s) c - s u``), top-p (0 = off), top-k, temperature."""

    guidance: float = 5.0
    top_p: float = 0.9
    top_k: int = 0
    temperature: float = 1.0
    use_cache: bool = True


def _trunc(std: float):
    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.truncated_normal(key, -2.0 / std, 2.0 / std, shape, dtype)
    return init


def shift_inputs(codes: Array, pad_id: int) -> Array:
    """Input ids ``(B, T' - 1)`` of positions ``1..T'-1``: tokens ``0..T'-2``, ``[PAD]`` for ``-1``."""
    c = jnp.asarray(codes, jnp.int32)[:, :-1]
    return jnp.where(c >= 0, c, pad_id)


def corrupt_codes(rng: Array, codes: Array, codebook_size: int, pkeep: float) -> Array:
    """T2M-GPT's input corruption (``train_t2m_trans.py``): every valid code is kept with
    probability ``tau`` and otherwise replaced by a uniform random code (which may equal it);
    ``tau = pkeep`` (the official ``--pkeep``) or, for ``pkeep < 0``, ``tau ~ U(0, 1)`` once per
    batch (the official ``--pkeep -1``). ``-1`` (padding) stays."""
    r_tau, r_keep, r_id = jax.random.split(rng, 3)
    tau = jax.random.uniform(r_tau, ()) if pkeep < 0 else jnp.float32(pkeep)
    keep = jax.random.uniform(r_keep, codes.shape) < tau
    rand = jax.random.randint(r_id, codes.shape, 0, codebook_size)
    return jnp.where((codes < 0) | keep, codes, rand).astype(jnp.int32)


class T2MGPT(nn.Module):
    """See the module docstring. Entry points (``method=`` of ``apply``): ``__call__``
    (teacher-forced forward), :meth:`condition`, :meth:`sequence_inputs`, :meth:`token_inputs`,
    :meth:`full_logits`, :meth:`decode`, :meth:`length_logits`."""

    config: T2MGPTConfig

    def setup(self):
        c = self.config
        t = c.transformer
        self.text_encoder = TransformerTextEncoder(c.text)
        self.conditioner = TextCrossAttention(
            text_dim=c.text.width, memory_dim=t.memory_width, pool_dim=t.cond_width, num_queries=1,
            pool_heads=c.pool_heads, cond_reduce="max", max_len=c.text.max_len)
        self.sos_proj = nn.Dense(t.width, kernel_init=_trunc(t.std))
        self.token_table = self.param("token_table", _trunc(0.02), (c.codebook_size + 1, c.code_dim))
        self.tok_proj = nn.Dense(t.width, kernel_init=_trunc(t.std))
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
    def token_inputs(self, ids: Array) -> Array:
        """``(B, L, width)`` embeddings of input ids (codes or ``[PAD]``)."""
        ids = jnp.clip(jnp.asarray(ids, jnp.int32), 0, self.config.pad_id)
        return self.tok_proj(jnp.take(self.token_table, ids, axis=0))

    def sos_inputs(self, sos: Array) -> Array:
        return self.sos_proj(sos)

    def sequence_inputs(self, sos: Array, ids: Array) -> Array:
        """``(B, T', width)``: the start token then the embeddings of ``ids (B, T' - 1)``."""
        if ids.shape[1] != self.config.length - 1:
            raise ShapeError(f"T2MGPT: {self.config.length - 1} input ids expected, got {ids.shape}")
        return jnp.concatenate([self.sos_proj(sos), self.token_inputs(ids)], axis=1)

    # ---- transformer ------------------------------------------------------------
    def full_logits(self, x: Array, cond, train: bool = False) -> Array:
        return self.transformer(x, cond.adaln, memory=cond.memory, memory_mask=cond.memory_mask, train=train)

    def decode(self, cache: dict, x: Array, pos: Array, cond) -> tuple[Array, dict]:
        return self.transformer.decode_position(cache, x, pos, cond.adaln, cond.memory, cond.memory_mask)

    def __call__(self, ids: Array, text_mask: Array, inputs: Array, drop: Array | None = None,
                 train: bool = False) -> tuple[Array, Array]:
        """Teacher-forced logits ``(B, T', V)`` for input ids ``(B, T' - 1)`` (see
        :func:`shift_inputs`) and length logits ``(B, classes)``."""
        cond, pooled = self.condition(ids, text_mask, drop, train)
        x = self.sequence_inputs(cond.sos, inputs)
        return self.full_logits(x, cond, train), self.length_logits(pooled)


# --------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------

def _twice(x):
    return jnp.concatenate([x, x], axis=0)


def sample(net: T2MGPT, params, vq, vq_vars, ids: Array, text_mask: Array, lengths: Array, key: Array,
           sc: T2MSamplingConfig) -> dict:
    """Generate tokens and features for captions ``ids, text_mask (B, L)`` and motion ``lengths
    (B,)`` frames (multiples of ``unit``; valid latent steps ``lengths // unit``). ``vq``: the
    :class:`~mmar.models.vqvae.TemporalVQVAE`, ``vq_vars`` its variables. Traceable (jit with the
    modules and ``sc`` static). Returns ``{"codes": (B, T')`` (-1 at padding), ``"features":
    (B, frames, F)`` normalised, zero beyond the length, ``"mask": (B, frames)}``."""
    from mmar.models.quantizers.temporal import _lookup, length_mask

    c = net.config
    q = vq.config.quantizer
    T = c.length
    if q.latent_length != T or q.codebook_size != c.codebook_size:
        raise ConfigError(f"T2MGPT: {T} positions over {c.codebook_size} codes, the tokenizer has "
                          f"{q.latent_length} latent steps and {q.codebook_size} codes")
    B = ids.shape[0]
    P = {"params": params}
    lengths = jnp.asarray(lengths, jnp.int32)
    valid = length_mask(lengths // c.unit, T)  # (B, T')
    drop = jnp.concatenate([jnp.zeros((B,), bool), jnp.ones((B,), bool)])
    cond, _ = net.apply(P, _twice(ids), _twice(text_mask), drop, method=T2MGPT.condition)
    sos = net.apply(P, cond.sos, method=T2MGPT.sos_inputs)  # (2B, 1, width)

    def pick(i, logits):
        lg = cfg_logits(logits[:B], logits[B:], 0, 1, "moscale", sc.guidance, 0.0)
        nz = gumbel_noise(jax.random.fold_in(key, i), lg.shape, lg.dtype)
        tok = sample_categorical(lg, nz, sc.temperature, sc.top_k, sc.top_p).astype(jnp.int32)
        return jnp.where(jax.lax.dynamic_index_in_dim(valid, i, 1, keepdims=False), tok, c.pad_id)

    tokens = jnp.full((B, T), c.pad_id, jnp.int32)
    if sc.use_cache:
        cache = net.apply(P, 2 * B, method=lambda m, b: m.transformer.init_cache(b))

        def body(i, carry):
            toks, cache, x = carry
            lg, cache = net.apply(P, cache, x, i, cond, method=T2MGPT.decode)
            tok = pick(i, lg[:, 0])
            x = net.apply(P, _twice(tok[:, None]), method=T2MGPT.token_inputs)
            return jax.lax.dynamic_update_index_in_dim(toks, tok, i, 1), cache, x

        tokens, _, _ = jax.lax.fori_loop(0, T, body, (tokens, cache, sos))
    else:
        def body(i, toks):
            x = net.apply(P, cond.sos, _twice(toks[:, :-1]), method=T2MGPT.sequence_inputs)
            lg = net.apply(P, x, cond, method=T2MGPT.full_logits)
            tok = pick(i, jax.lax.dynamic_index_in_dim(lg, i, 1, keepdims=False))
            return jax.lax.dynamic_update_index_in_dim(toks, tok, i, 1)

        tokens = jax.lax.fori_loop(0, T, body, tokens)
    codes = jnp.where(valid, tokens, -1)
    cb = vq.apply(vq_vars, method=lambda m: m.quantizer.codebook_vectors())
    f_hat = _lookup(cb, codes)
    frames = vq.config.num_frames
    fmask = length_mask(lengths, frames)
    feats = vq.apply(vq_vars, f_hat, fmask, method=lambda m, z, mk: m.decode_latent(z, mk))
    return {"codes": codes, "features": feats * fmask[..., None], "mask": fmask}
