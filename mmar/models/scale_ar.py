"""One scale-wise autoregressive transformer shared by MotionMAR, MoScale and ScaleMoGen.

The three systems (see ``../shared/reference/next-scale-notes.md`` sections 2, 3 and 5) all
predict a pyramid of token maps, coarse to fine, with one transformer whose attention is
*block-causal across scales and bidirectional within a scale*. They differ in the schedule,
the position scheme, the attention scale, whether AdaLN is shared, whether a cross-attention
sub-layer reads text, and the head. This module covers all of them:

* :class:`ScaleSchedule` -- per-scale token counts (1D lengths, or ``(time, groups)`` grids
  flattened time-major), per-token scale id and ``(time, group)`` index, the block-causal
  mask (query scale >= key scale) with an optional key padding mask, per-token validity
  from per-scale valid lengths, and the scale-normalised RoPE positions.
* :class:`ScaleARConfig` / :class:`ScaleARTransformer` -- the Linen module. Inputs are
  per-token input embeddings ``x (B, N, C_in)`` built by the caller (scale-0 sos tokens +
  projected teacher-forcing features), the AdaLN condition ``cond (B, C_cond)``, an optional
  per-token additive condition ``(B, N, C)`` (MotionMAR's per-scale sparse features), an
  optional cross-attention memory ``(B, M, C_mem)`` with mask ``(B, M)``, and an optional key
  padding mask ``(B, N)``. Output: logits ``(B, N, K)`` (categorical head) or
  ``(B, N, bits, 2)`` (bitwise head).
* KV cache: :meth:`ScaleARTransformer.init_cache` allocates fixed buffers for all N positions;
  :meth:`ScaleARTransformer.decode_scale` runs only scale k's tokens against the cached prefix
  plus themselves, writes their K/V at the static offset of scale k and returns scale k's
  logits -- one forward pass per scale at inference. Re-running the same scale (MoScale's
  mask-and-repredict) overwrites the same slots, so the prefix is reused across refinement
  steps; run the scale once more with its final tokens before moving on so the cache holds
  the K/V of the final token channel (MoScale recomputes the prefix instead; same values).
  For a causal schedule (one token per scale: next-token models),
  :meth:`ScaleARTransformer.decode_position` runs one token at a traced position against the
  whole buffer under a mask, so a ``lax.fori_loop`` decodes with one compilation.
* Rematerialisation: ``ScaleARConfig.remat`` (``'none'``, ``'full'``, ``'dots'``,
  ``'dots_no_batch'``) wraps every block in ``nn.remat`` with that ``jax.checkpoint`` policy
  (:func:`block_class`), trading backward-pass compute for activation memory; parameter names,
  values and gradients are unchanged, so checkpoints load either way.
* Classifier-free guidance: :func:`sample_cond_drop` (per-sample Bernoulli), the learned null
  condition inside the transformer (``null_cond=True``) and :func:`cfg_logits` with the three
  guidance formulas.

Block (pre-norm, VAR/Infinity style; ``LN`` has no affine parameters)::

    gamma1, gamma2, scale1, scale2, shift1, shift2 = Linear(SiLU(cond))          # per block
        (shared_adaln: one Linear for all blocks + a learned per-block (6, C) offset)
    x = x + DropPath(gamma1 * SelfAttn(LN(x) * (1 + scale1) + shift1))      # block-causal
    x = x + CrossAttn(LayerNorm_affine(x), memory)                          # optional, ungated
    x = x + DropPath(gamma2 * FFN(LN(x) * (1 + scale2) + shift2))            # GELU-tanh
    head: LN(x) * (1 + scale) + shift  (AdaLN-before-head)  ->  Linear(C, K or 2*bits)

Self-attention: ``qkv = x W`` (no bias) plus learned q- and v-biases (no k-bias). Scale
variants: ``'var'`` 0.25/sqrt(d); ``'standard'`` 1/sqrt(d); ``'cosine'`` l2-normalised q and k,
q multiplied by a learned per-head ``exp(min(s_h, log 100))`` (``s_h`` initialised to log 4),
optionally also by 1/sqrt(d) (``cosine_sqrt_d``; ScaleMoGen calls SDPA with its default
scale, MotionMAR uses scale 1). RoPE (after the cosine normalisation) rotates interleaved
pairs ``(x[2i], x[2i+1])``; 2D splits the pairs half time, half group.

Configurations of the three published transformers: :func:`motionmar_config`,
:func:`moscale_config`, :func:`scalemogen_config` (and the schedules ``MOTIONMAR_SCHEDULE``,
``MOSCALE_SCHEDULE``, ``SCALEMOGEN_SCHEDULE``). Everything here is fp32, jit-able and uses
static shapes; ``decode_scale`` takes the scale index as a static Python int.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import ConfigError, ShapeError

Array = jax.Array

ATTN_SCALES = ("var", "standard", "cosine")
POSITIONS = ("learned_abs", "rope_1d_scale_normalized", "rope_2d_scale_normalized", "none")
HEADS = ("categorical", "bitwise")
CFG_MODES = ("motionmar", "moscale", "var", "scalemogen")
#: per-block rematerialisation (gradient checkpointing) policies, see :func:`remat_policy`
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")


# --------------------------------------------------------------------------
# schedule
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ScaleSchedule:
    """Token layout of a scale pyramid.

    ``shapes[k] = (time_k, groups_k)``; scale k has ``time_k * groups_k`` tokens, flattened
    time-major (token ``t * groups_k + g``). Scales are concatenated in order, so the whole
    sequence has ``N = sum_k time_k * groups_k`` positions. 1D schedules have ``groups_k = 1``.
    Build with :meth:`from_lengths` (1D) or :meth:`from_grid` (2D).
    """

    shapes: tuple[tuple[int, int], ...]

    def __post_init__(self):
        shapes = tuple((int(t), int(g)) for t, g in self.shapes)
        if not shapes:
            raise ConfigError("ScaleSchedule needs at least one scale")
        if any(t < 1 or g < 1 for t, g in shapes):
            raise ConfigError(f"ScaleSchedule sizes must be >= 1, got {shapes}")
        object.__setattr__(self, "shapes", shapes)

    @classmethod
    def from_lengths(cls, lengths: Sequence[int]) -> "ScaleSchedule":
        """1D schedule, e.g. MotionMAR ``[5, 10, 20]`` or MoScale ``[6, 12, 24, 49]``."""
        return cls(tuple((int(n), 1) for n in lengths))

    @classmethod
    def from_grid(cls, shapes: Sequence[tuple[int, int]]) -> "ScaleSchedule":
        """2D schedule of ``(time, groups)`` per scale (ScaleMoGen)."""
        return cls(tuple((int(t), int(g)) for t, g in shapes))

    # ---- sizes ---------------------------------------------------------
    @property
    def num_scales(self) -> int:
        return len(self.shapes)

    @property
    def lengths(self) -> tuple[int, ...]:
        """Tokens per scale."""
        return tuple(t * g for t, g in self.shapes)

    @property
    def time_lengths(self) -> tuple[int, ...]:
        return tuple(t for t, _ in self.shapes)

    @property
    def group_counts(self) -> tuple[int, ...]:
        return tuple(g for _, g in self.shapes)

    @property
    def total(self) -> int:
        return int(sum(self.lengths))

    @property
    def starts(self) -> tuple[int, ...]:
        return tuple(int(s) for s in np.cumsum((0,) + self.lengths[:-1]))

    @property
    def ends(self) -> tuple[int, ...]:
        return tuple(int(e) for e in np.cumsum(self.lengths))

    @property
    def max_time(self) -> int:
        return max(self.time_lengths)

    @property
    def max_groups(self) -> int:
        return max(self.group_counts)

    @property
    def is_2d(self) -> bool:
        return self.max_groups > 1

    def scale_slice(self, k: int) -> slice:
        return slice(self.starts[k], self.ends[k])

    def split(self, x, axis: int = 1) -> list:
        """Split an array along ``axis`` (length N) into the per-scale pieces."""
        if x.shape[axis] != self.total:
            raise ShapeError(f"expected length {self.total} on axis {axis}, got {x.shape}")
        idx = [slice(None)] * x.ndim
        out = []
        for k in range(self.num_scales):
            idx[axis] = self.scale_slice(k)
            out.append(x[tuple(idx)])
        return out

    # ---- per-token indices (numpy, static) ----------------------------
    @property
    def scale_ids(self) -> np.ndarray:
        """(N,) scale index of every position."""
        return np.concatenate([np.full(n, k, np.int32) for k, n in enumerate(self.lengths)])

    @property
    def time_index(self) -> np.ndarray:
        """(N,) time index of every position within its scale."""
        return np.concatenate([np.repeat(np.arange(t, dtype=np.int32), g) for t, g in self.shapes])

    @property
    def group_index(self) -> np.ndarray:
        """(N,) group index of every position within its scale."""
        return np.concatenate([np.tile(np.arange(g, dtype=np.int32), t) for t, g in self.shapes])

    def normalized_positions(self, time_extent: int | None = None, group_extent: int | None = None) -> np.ndarray:
        """(N, 2) scale-normalised positions ``(round(t * T / T_k), round(g * G / G_k))``.

        ``T`` / ``G`` default to the finest time length / largest group count (MoScale: 49,
        ScaleMoGen: 49 and 7). Rounding is half-to-even, as ``torch.round``.
        """
        T = self.max_time if time_extent is None else int(time_extent)
        G = self.max_groups if group_extent is None else int(group_extent)
        tl = np.asarray(self.time_lengths, np.float64)[self.scale_ids]
        gl = np.asarray(self.group_counts, np.float64)[self.scale_ids]
        tp = np.round(self.time_index * (T / tl)).astype(np.int32)
        gp = np.round(self.group_index * (G / gl)).astype(np.int32)
        return np.stack([tp, gp], axis=-1)

    # ---- masks ---------------------------------------------------------
    def block_causal(self) -> np.ndarray:
        """(N, N) bool; ``[q, k]`` is True where query q may attend key k (scale(q) >= scale(k))."""
        s = self.scale_ids
        return s[:, None] >= s[None, :]

    def attention_mask(self, key_mask: Array | None = None) -> Array:
        """Block-causal mask, ``(N, N)``; with a key padding mask ``(B, N)`` (True = valid)
        the result is ``(B, N, N)`` and padded keys are hidden from every query."""
        m = jnp.asarray(self.block_causal())
        if key_mask is None:
            return m
        key_mask = jnp.asarray(key_mask, bool)
        if key_mask.ndim != 2 or key_mask.shape[1] != self.total:
            raise ShapeError(f"key_mask must be (B, {self.total}), got {key_mask.shape}")
        return m[None] & key_mask[:, None, :]

    def token_mask(self, valid_time: Array) -> Array:
        """Per-token validity ``(B, N)`` from valid time lengths per scale ``(B, num_scales)``
        (token valid iff its time index < the valid length of its scale). Use MoScale's
        ``(m // 4) // s`` or ScaleMoGen's ``ceil(m / (4 s))`` to build ``valid_time``."""
        valid_time = jnp.asarray(valid_time)
        if valid_time.ndim != 2 or valid_time.shape[1] != self.num_scales:
            raise ShapeError(f"valid_time must be (B, {self.num_scales}), got {valid_time.shape}")
        per_tok = valid_time[:, jnp.asarray(self.scale_ids)]
        return jnp.asarray(self.time_index)[None, :] < per_tok


MOTIONMAR_SCHEDULE = ScaleSchedule.from_lengths((5, 10, 20))
MOSCALE_SCHEDULE = ScaleSchedule.from_lengths((6, 12, 24, 49))
SCALEMOGEN_SCHEDULE = ScaleSchedule.from_grid(
    ((1, 1), (2, 1), (2, 2), (3, 2), (7, 2), (7, 3), (12, 3), (24, 3), (24, 5), (49, 5), (49, 7))
)


# --------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ScaleARConfig:
    """Configuration of :class:`ScaleARTransformer`.

    ``input_dim=None``: the inputs are already ``width`` wide (the caller embeds them);
    otherwise a ``Linear(input_dim, width)`` is applied to them. ``cond_dim`` (AdaLN condition
    width) and ``memory_dim`` default to ``width``. ``num_levels`` (level-embedding table size)
    defaults to the number of scales. ``pos_start``: a learned ``(L_0, C)`` table added to the
    scale-0 tokens. ``mlp_round``: the FFN hidden width is ``round(width * mlp_ratio /
    mlp_round) * mlp_round``. ``null_cond``: condition dropout (training, or the unconditional
    half at inference) replaces ``cond`` by a learned null vector and zeroes the per-token
    additive condition; set it False when the conditioner implements the drop itself (text
    systems replace the caption by learned rows; MotionMAR zeroes its sparse features).
    ``init_std=None`` means ``sqrt(1 / (3 width))`` (VAR's automatic choice).
    ``remat``: per-block rematerialisation (gradient checkpointing) in the backward pass, see
    :func:`remat_policy`: ``'none'`` (store every activation), ``'full'`` (store only each
    block's inputs, recompute the block), ``'dots'`` (store the matmul outputs, attention's
    included), ``'dots_no_batch'`` (store the matmuls without batch dimensions: the projections
    and the FFN, not the attention scores). Same parameters, values and gradients; less
    activation memory for more compute.
    """

    schedule: ScaleSchedule
    width: int = 512
    depth: int = 8
    heads: int = 8
    mlp_ratio: float = 4.0
    mlp_round: int = 1
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    attn_scale: str = "var"
    cosine_sqrt_d: bool = False
    positions: str = "learned_abs"
    rope_base: float = 1e4
    rope_freq_repeat: int = 1
    rope_time_extent: int | None = None
    rope_group_extent: int | None = None
    level_embedding: bool = True
    num_levels: int | None = None
    pos_start: bool = True
    input_dim: int | None = None
    cond_dim: int | None = None
    shared_adaln: bool = False
    cross_attention: bool = False
    memory_dim: int | None = None
    head: str = "categorical"
    vocab_size: int = 1024
    num_bits: int = 24
    head_adaln: bool = True
    cond_drop_prob: float = 0.1
    null_cond: bool = True
    norm_eps: float = 1e-6
    init_std: float | None = None
    init_head: float = 0.02
    init_adaln: float = 0.5
    init_adaln_gamma: float = 1e-5
    remat: str = "none"

    def __post_init__(self):
        if not isinstance(self.schedule, ScaleSchedule):
            raise ConfigError("ScaleARConfig.schedule must be a ScaleSchedule")
        for name in ("width", "depth", "heads", "mlp_round", "vocab_size", "num_bits", "rope_freq_repeat"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"ScaleARConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ConfigError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.attn_scale not in ATTN_SCALES:
            raise ConfigError(f"attn_scale must be one of {ATTN_SCALES}, got {self.attn_scale!r}")
        if self.positions not in POSITIONS:
            raise ConfigError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.remat not in REMAT_POLICIES:
            raise ConfigError(f"ScaleARConfig.remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
        for name in ("dropout", "attn_dropout", "drop_path", "cond_drop_prob"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ConfigError(f"ScaleARConfig.{name} must lie in [0, 1), got {getattr(self, name)}")
        axes = {"rope_1d_scale_normalized": 1, "rope_2d_scale_normalized": 2}.get(self.positions)
        if axes is not None and self.head_dim % (2 * axes * self.rope_freq_repeat):
            raise ConfigError(
                f"head_dim {self.head_dim} must be divisible by {2 * axes * self.rope_freq_repeat} for {self.positions}"
                f" with rope_freq_repeat={self.rope_freq_repeat}")
        if self.num_levels is not None and self.num_levels < self.schedule.num_scales:
            raise ConfigError(f"num_levels {self.num_levels} < number of scales {self.schedule.num_scales}")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def cond_width(self) -> int:
        return self.width if self.cond_dim is None else int(self.cond_dim)

    @property
    def memory_width(self) -> int:
        return self.width if self.memory_dim is None else int(self.memory_dim)

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.width * self.mlp_ratio / self.mlp_round) * self.mlp_round)

    @property
    def std(self) -> float:
        return math.sqrt(1.0 / self.width / 3.0) if self.init_std is None else float(self.init_std)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Trailing shape of the logits per token."""
        return (self.vocab_size,) if self.head == "categorical" else (self.num_bits, 2)


def motionmar_config(**overrides) -> ScaleARConfig:
    """MotionMAR's transformer (Flipped111/MotionMAR models/__init__.py, utils/arg_util.py):
    depth 8, width = 64 * depth = 512, heads = depth = 8, MLP x4, drop-path 0.1 * 8 / 24,
    cosine attention with scale 1 (``anorm=True``), learned absolute positions + level
    embedding + ``pos_start``, per-block AdaLN, no cross-attention, 1024-way head,
    condition drop 0.1 done by zeroing the sparse features (``null_cond=False``; pass the same
    drop mask to :class:`mmar.models.conditioning.SparseScaleControl`)."""
    kw: dict[str, Any] = dict(
        schedule=MOTIONMAR_SCHEDULE, width=512, depth=8, heads=8, mlp_ratio=4.0,
        dropout=0.0, drop_path=0.1 * 8 / 24, attn_scale="cosine", cosine_sqrt_d=False,
        positions="learned_abs", level_embedding=True, pos_start=True, input_dim=None,
        shared_adaln=False, cross_attention=False, head="categorical", vocab_size=1024,
        cond_drop_prob=0.1, null_cond=False,
    )
    kw.update(overrides)
    return ScaleARConfig(**kw)


def moscale_config(**overrides) -> ScaleARConfig:
    """MoScale's transformer (notes section 2): 16 layers, width 768, 8 heads (head_dim 96),
    MLP x4, dropout 0.1, drop-path 0.1 * 16 / 24, attention scale 0.25/sqrt(d), 1D
    scale-normalised RoPE (24 frequencies, each on two adjacent pairs), level embedding (4),
    ``pos_start`` on the 6 sos tokens, input ``Linear(768, 768)`` of the concatenated
    [VAR channel | token channel], AdaLN condition 384-d, per-block AdaLN, cross-attention on
    a 384-d memory, 512-way head; condition drop by the text conditioner (``null_cond=False``)."""
    kw: dict[str, Any] = dict(
        schedule=MOSCALE_SCHEDULE, width=768, depth=16, heads=8, mlp_ratio=4.0,
        dropout=0.1, drop_path=0.1 * 16 / 24, attn_scale="var",
        positions="rope_1d_scale_normalized", rope_freq_repeat=2, level_embedding=True,
        pos_start=True, input_dim=768, cond_dim=384, shared_adaln=False, cross_attention=True,
        memory_dim=384, head="categorical", vocab_size=512, cond_drop_prob=0.1, null_cond=False,
    )
    kw.update(overrides)
    return ScaleARConfig(**kw)


def scalemogen_config(**overrides) -> ScaleARConfig:
    """ScaleMoGen's predictor ``scalemogen_layer12`` (notes section 3): 12 blocks, width 768,
    8 heads, MLP 3072, drop-path 0.1, dropout 0, shared AdaLN + per-block offsets, cosine
    attention with learned per-head scale *and* 1/sqrt(d), 2D scale-normalised RoPE
    (extents 49 x 7), level embedding table of 15, one sos token + ``pos_start``,
    cross-attention on a 768-d memory, bitwise head (24 bits x 2), init std sqrt(1/(9C));
    condition drop by the text conditioner (``null_cond=False``)."""
    kw: dict[str, Any] = dict(
        schedule=SCALEMOGEN_SCHEDULE, width=768, depth=12, heads=8, mlp_ratio=4.0, mlp_round=256,
        dropout=0.0, drop_path=0.1, attn_scale="cosine", cosine_sqrt_d=True,
        positions="rope_2d_scale_normalized", level_embedding=True, num_levels=15, pos_start=True,
        input_dim=None, shared_adaln=True, cross_attention=True, memory_dim=768, head="bitwise",
        num_bits=24, cond_drop_prob=0.1, null_cond=False, init_std=math.sqrt(1.0 / 768 / 9),
    )
    kw.update(overrides)
    return ScaleARConfig(**kw)


# --------------------------------------------------------------------------
# CFG
# --------------------------------------------------------------------------

def sample_cond_drop(key: Array, batch: int, prob: float) -> Array:
    """Per-sample condition-drop mask ``(batch,)`` (True = drop), Bernoulli(prob)."""
    if prob <= 0:
        return jnp.zeros((batch,), bool)
    return jax.random.bernoulli(key, prob, (batch,))


def cfg_weight(scale_k, num_scales: int, mode: str, guidance: float, moscale_step: float = 0.25):
    """Guidance strength used by :func:`cfg_logits` at scale ``scale_k``.

    * ``'motionmar'``: ``w = guidance`` (constant; logits ``w c - (w - 1) u``).
    * ``'moscale'``: ``t = guidance + step - step * k`` (decreasing; s=5 -> 5.25, 5.0, 4.75, 4.5).
    * ``'var'`` / ``'scalemogen'``: ``t = guidance * k / (K - 1)`` (0 at scale 0, ramps up).
    """
    if mode not in CFG_MODES:
        raise ConfigError(f"cfg mode must be one of {CFG_MODES}, got {mode!r}")
    if mode == "motionmar":
        return guidance
    if mode == "moscale":
        return guidance + moscale_step - moscale_step * scale_k
    return guidance * scale_k / max(num_scales - 1, 1)


def cfg_logits(cond_logits: Array, uncond_logits: Array, scale_k, num_scales: int, mode: str,
               guidance: float, moscale_step: float = 0.25) -> Array:
    """Classifier-free guidance on logits (works for categorical and bitwise logits).

    ``'motionmar'``: ``w c - (w - 1) u`` (no ramp). ``'moscale'``: ``(1 + t) c - t u`` with
    ``t = s + 0.25 - 0.25 k`` (decreasing). ``'var'`` / ``'scalemogen'``: ``(1 + t) c - t u``
    with ``t = s k / (K - 1)`` (ramping up). ``scale_k`` may be a Python int or a traced scalar.
    """
    t = cfg_weight(scale_k, num_scales, mode, guidance, moscale_step)
    if mode == "motionmar":
        return t * cond_logits - (t - 1.0) * uncond_logits
    return (1.0 + t) * cond_logits - t * uncond_logits


# --------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------

def _trunc_normal(std: float, mult: float = 1.0):
    """torch ``trunc_normal_(std=std)`` (absolute bounds +-2) times ``mult``."""

    def init(key, shape, dtype=jnp.float32):
        lo, hi = -2.0 / std, 2.0 / std
        return (std * mult) * jax.random.truncated_normal(key, lo, hi, shape, dtype)

    return init


def _adaln_init(std: float, width: int, n: int, gamma_mult: float, other_mult: float):
    """Kernel init of a ``Linear(D, n * width)`` AdaLN map: trunc-normal, gamma columns (the
    first 2 * width when n == 6) times ``gamma_mult``, the rest times ``other_mult``."""

    def init(key, shape, dtype=jnp.float32):
        w = _trunc_normal(std)(key, shape, dtype)
        n_gamma = 2 * width if n == 6 else 0
        mult = jnp.concatenate([jnp.full((n_gamma,), gamma_mult, dtype),
                                jnp.full((shape[-1] - n_gamma,), other_mult, dtype)])
        return w * mult

    return init


def _rope_tables(cfg: ScaleARConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """cos / sin tables ``(N, head_dim // 2)`` for the configured RoPE, or None."""
    if cfg.positions not in ("rope_1d_scale_normalized", "rope_2d_scale_normalized"):
        return None
    n_axes = 1 if cfg.positions == "rope_1d_scale_normalized" else 2
    pos = cfg.schedule.normalized_positions(cfg.rope_time_extent, cfg.rope_group_extent).astype(np.float64)
    pairs = cfg.head_dim // 2 // n_axes
    n_freq = pairs // cfg.rope_freq_repeat
    freq = cfg.rope_base ** (-np.arange(n_freq, dtype=np.float64) / n_freq)
    freq = np.repeat(freq, cfg.rope_freq_repeat)  # each frequency on `repeat` adjacent pairs
    angles = np.concatenate([pos[:, a:a + 1] * freq[None, :] for a in range(n_axes)], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def _apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotate interleaved pairs of ``x (B, L, H, D)`` by tables ``(L, D/2)``."""
    xs = x.reshape(*x.shape[:-1], -1, 2)
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    x0, x1 = xs[..., 0], xs[..., 1]
    out = jnp.stack([c * x0 - s * x1, s * x0 + c * x1], axis=-1)
    return out.reshape(x.shape)


def _attend(q: Array, k: Array, v: Array, mask: Array | None, scale: float, drop: nn.Module | None,
            deterministic: bool) -> Array:
    """``q (B,Lq,H,D)``, ``k, v (B,Lk,H,D)``, ``mask`` broadcastable to ``(B,H,Lq,Lk)`` (True =
    attend). Fully masked rows give a uniform average instead of NaN."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    w = jax.nn.softmax(logits, axis=-1)
    if drop is not None:
        w = drop(w, deterministic=deterministic)
    return jnp.einsum("bhqk,bkhd->bqhd", w, v)


class _LN(nn.Module):
    """LayerNorm without affine parameters (VAR's ``ln_wo_grad``)."""

    eps: float = 1e-6

    @nn.compact
    def __call__(self, x):
        return nn.LayerNorm(epsilon=self.eps, use_bias=False, use_scale=False)(x)


class _SelfAttention(nn.Module):
    cfg: ScaleARConfig

    def setup(self):
        c = self.cfg
        self.qkv = nn.Dense(3 * c.width, use_bias=False, kernel_init=_trunc_normal(c.std))
        self.q_bias = self.param("q_bias", nn.initializers.zeros, (c.width,))
        self.v_bias = self.param("v_bias", nn.initializers.zeros, (c.width,))
        if c.attn_scale == "cosine":
            self.log_scale = self.param("log_scale", nn.initializers.constant(math.log(4.0)), (c.heads,))
        self.proj = nn.Dense(c.width, kernel_init=_trunc_normal(c.std, 1.0 / math.sqrt(2 * c.depth)))
        self.attn_drop = nn.Dropout(c.attn_dropout) if c.attn_dropout > 0 else None
        self.proj_drop = nn.Dropout(c.dropout)

    def qkv_heads(self, x: Array, rope: tuple[Array, Array] | None):
        c = self.cfg
        B, L, _ = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, c.heads, c.head_dim)
        q = qkv[:, :, 0] + self.q_bias.reshape(c.heads, c.head_dim)
        k = qkv[:, :, 1]
        v = qkv[:, :, 2] + self.v_bias.reshape(c.heads, c.head_dim)
        if c.attn_scale == "cosine":
            mult = jnp.exp(jnp.minimum(self.log_scale, math.log(100.0)))
            q = q / jnp.maximum(jnp.linalg.norm(q, axis=-1, keepdims=True), 1e-12) * mult[:, None]
            k = k / jnp.maximum(jnp.linalg.norm(k, axis=-1, keepdims=True), 1e-12)
        if rope is not None:
            q = _apply_rope(q, *rope)
            k = _apply_rope(k, *rope)
        return q, k, v

    @property
    def scale(self) -> float:
        c = self.cfg
        if c.attn_scale == "var":
            return 0.25 / math.sqrt(c.head_dim)
        if c.attn_scale == "standard":
            return 1.0 / math.sqrt(c.head_dim)
        return 1.0 / math.sqrt(c.head_dim) if c.cosine_sqrt_d else 1.0

    def out(self, q, k, v, mask, deterministic: bool) -> Array:
        B, L = q.shape[:2]
        o = _attend(q, k, v, mask, self.scale, self.attn_drop, deterministic).reshape(B, L, self.cfg.width)
        return self.proj_drop(self.proj(o), deterministic=deterministic)


class _CrossAttention(nn.Module):
    """Cross-attention on a memory (q with bias, k without, v with bias), 1/sqrt(d) scale."""

    cfg: ScaleARConfig

    @nn.compact
    def __call__(self, x: Array, memory: Array, memory_mask: Array | None, deterministic: bool) -> Array:
        c = self.cfg
        B, L, _ = x.shape
        M = memory.shape[1]
        init = _trunc_normal(c.std)
        q = nn.Dense(c.width, kernel_init=init, name="q")(x).reshape(B, L, c.heads, c.head_dim)
        k = nn.Dense(c.width, use_bias=False, kernel_init=init, name="k")(memory).reshape(B, M, c.heads, c.head_dim)
        v = nn.Dense(c.width, kernel_init=init, name="v")(memory).reshape(B, M, c.heads, c.head_dim)
        mask = None if memory_mask is None else jnp.asarray(memory_mask, bool)[:, None, None, :]
        o = _attend(q, k, v, mask, 1.0 / math.sqrt(c.head_dim), None, True).reshape(B, L, c.width)
        o = nn.Dense(c.width, kernel_init=_trunc_normal(c.std, 1.0 / math.sqrt(2 * c.depth)), name="proj")(o)
        return nn.Dropout(c.dropout)(o, deterministic=deterministic)


class AdaLNBlock(nn.Module):
    """One AdaLN transformer block (self-attention, optional cross-attention, FFN)."""

    cfg: ScaleARConfig
    index: int

    def setup(self):
        c = self.cfg
        self.ln = _LN(c.norm_eps)
        self.attn = _SelfAttention(c)
        if c.shared_adaln:
            def offset_init(key, shape, dtype=jnp.float32):
                w = jax.random.normal(key, shape, dtype) / math.sqrt(c.width)
                mult = jnp.asarray([c.init_adaln_gamma] * 2 + [c.init_adaln] * 4, dtype)[:, None]
                return w * mult

            self.ada_offset = self.param("ada_offset", offset_init, (6, c.width))
        else:
            init = _adaln_init(c.std, c.width, 6, c.init_adaln_gamma, c.init_adaln)
            self.ada = nn.Dense(6 * c.width, kernel_init=init)
        if c.cross_attention:
            self.ca_norm = nn.LayerNorm(epsilon=c.norm_eps)
            self.cross = _CrossAttention(c)
        self.fc1 = nn.Dense(c.mlp_hidden, kernel_init=_trunc_normal(c.std))
        self.fc2 = nn.Dense(c.width, kernel_init=_trunc_normal(c.std, 1.0 / math.sqrt(2 * c.depth)))
        self.ffn_drop = nn.Dropout(c.dropout)
        self.path_rate = c.drop_path * self.index / max(c.depth - 1, 1)

    def _drop_path(self, y: Array, deterministic: bool) -> Array:
        if deterministic or self.path_rate <= 0:
            return y
        keep = 1.0 - self.path_rate
        m = jax.random.bernoulli(self.make_rng("dropout"), keep, (y.shape[0],) + (1,) * (y.ndim - 1))
        return y * m / keep

    def modulation(self, cond: Array, shared: Array | None) -> Array:
        """(B, 6, C): gamma1, gamma2, scale1, scale2, shift1, shift2."""
        if self.cfg.shared_adaln:
            return shared + self.ada_offset[None]
        return self.ada(nn.silu(cond)).reshape(cond.shape[0], 6, self.cfg.width)

    def __call__(self, x: Array, mod: Array, rope, mask, memory, memory_mask, prefix_kv=None,
                 deterministic: bool = True):
        """Returns ``(x, (k, v))`` with this chunk's keys/values ``(B, L, H, D)``. With
        ``prefix_kv`` the queries also attend the given prefix keys/values (KV cache).

        Under rematerialisation (:func:`block_class`) ``deterministic`` is a static argument:
        pass every argument positionally (keyword arguments of ``jax.checkpoint`` are traced)."""
        g1, g2, s1, s2, b1, b2 = [mod[:, i][:, None, :] for i in range(6)]
        h = self.ln(x) * (1.0 + s1) + b1
        q, k, v = self.attn.qkv_heads(h, rope)
        if prefix_kv is not None:
            kk = jnp.concatenate([prefix_kv[0], k], axis=1)
            vv = jnp.concatenate([prefix_kv[1], v], axis=1)
        else:
            kk, vv = k, v
        x = x + self._drop_path(self.attn.out(q, kk, vv, mask, deterministic) * g1, deterministic)
        if self.cfg.cross_attention:
            x = x + self.cross(self.ca_norm(x), memory, memory_mask, deterministic)
        h = self.ln(x) * (1.0 + s2) + b2
        h = self.ffn_drop(self.fc2(nn.gelu(self.fc1(h), approximate=True)), deterministic=deterministic)
        x = x + self._drop_path(h * g2, deterministic)
        return x, (k, v)


def remat_policy(name: str):
    """The ``jax.checkpoint`` policy of a :attr:`ScaleARConfig.remat` name (None for ``'none'``):
    ``'full'`` saves nothing inside a block, ``'dots'`` every matmul output,
    ``'dots_no_batch'`` the matmuls without batch dimensions (not attention's einsums)."""
    if name not in REMAT_POLICIES:
        raise ConfigError(f"ScaleARConfig.remat must be one of {REMAT_POLICIES}, got {name!r}")
    return {
        "none": None,
        "full": jax.checkpoint_policies.nothing_saveable,
        "dots": jax.checkpoint_policies.dots_saveable,
        "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    }[name]


#: position of ``deterministic`` in ``AdaLNBlock.__call__`` counting ``self`` (a Python bool
#: that selects code paths: static under ``nn.remat``)
_BLOCK_STATIC_ARGNUMS = (8,)


def block_class(cfg: ScaleARConfig) -> type[nn.Module]:
    """:class:`AdaLNBlock`, or its ``nn.remat`` version under ``cfg.remat`` (same parameter
    names and values; the blocks run in an unrolled Python loop, so CSE prevention stays on)."""
    if cfg.remat == "none":
        return AdaLNBlock
    return nn.remat(AdaLNBlock, policy=remat_policy(cfg.remat), prevent_cse=True,
                    static_argnums=_BLOCK_STATIC_ARGNUMS)


# --------------------------------------------------------------------------
# transformer
# --------------------------------------------------------------------------

class ScaleARTransformer(nn.Module):
    """Scale-wise autoregressive transformer (see the module docstring).

    Training / teacher forcing::

        logits = model.apply(variables, x, cond, additive=None, memory=None, memory_mask=None,
                             key_mask=None, cond_drop=None, train=True, rngs={"dropout": key})

    ``cond_drop (B,)`` marks samples whose condition is replaced (``null_cond=True``); when it
    is None, ``train=True`` and ``cond_drop_prob > 0``, it is drawn from the ``dropout`` rng.
    Inference, one pass per scale::

        cache = model.init_cache(B)
        for k in range(schedule.num_scales):                       # static Python loop
            logits_k, cache = model.decode_scale(params, cache, x_k, k, cond, ...)
            # x_{k+1} is built by the caller from the tokens sampled at scale k

    Classifier-free guidance at inference: run a batch of 2B (conditional rows first, then
    the same rows with ``cond_drop=True`` -- or the conditioner's dropped output when
    ``null_cond=False``), then ``cfg_logits(l[:B], l[B:], k, K, mode, guidance)``.
    """

    config: ScaleARConfig

    def setup(self):
        c = self.config
        sch = c.schedule
        std = c.std
        if c.input_dim is not None:
            self.in_proj = nn.Dense(c.width, kernel_init=_trunc_normal(std))
        if c.pos_start:
            self.pos_start = self.param("pos_start", _trunc_normal(std), (sch.lengths[0], c.width))
        if c.positions == "learned_abs":
            self.pos_embed = self.param("pos_embed", _trunc_normal(std), (sch.total, c.width))
        if c.level_embedding:
            self.level_embed = self.param("level_embed", _trunc_normal(std), (c.num_levels or sch.num_scales, c.width))
        if c.null_cond:
            self.null_embed = self.param("null_cond", _trunc_normal(std), (c.cond_width,))
        if c.shared_adaln:
            self.shared_ada = nn.Dense(6 * c.width, kernel_init=_trunc_normal(std))
        block = block_class(c)
        self.blocks = [block(c, i, name=f"block_{i}") for i in range(c.depth)]
        if c.head_adaln:
            self.head_ada = nn.Dense(2 * c.width, kernel_init=_adaln_init(std, c.width, 2, 1.0, c.init_adaln))
            self.head_ln = _LN(c.norm_eps)
        else:
            self.head_ln = nn.LayerNorm(epsilon=c.norm_eps)
        n_out = c.vocab_size if c.head == "categorical" else 2 * c.num_bits
        self.head = nn.Dense(n_out, kernel_init=_trunc_normal(std, c.init_head))

    # ---- pieces -----------------------------------------------------------
    def _check(self, x, cond, start: int, length: int, additive, memory, key_mask):
        c = self.config
        in_w = c.width if c.input_dim is None else c.input_dim
        if x.ndim != 3 or x.shape[1] != length or x.shape[2] != in_w:
            raise ShapeError(f"ScaleARTransformer: x must be (B, {length}, {in_w}), got {x.shape}")
        B = x.shape[0]
        if cond.shape != (B, c.cond_width):
            raise ShapeError(f"ScaleARTransformer: cond must be ({B}, {c.cond_width}), got {cond.shape}")
        if additive is not None and additive.shape != (B, length, c.width):
            raise ShapeError(f"ScaleARTransformer: additive must be ({B}, {length}, {c.width}), got {additive.shape}")
        if c.cross_attention:
            if memory is None:
                raise ShapeError("ScaleARTransformer: cross_attention=True needs a memory (B, M, C_mem)")
            if memory.ndim != 3 or memory.shape[0] != B or memory.shape[2] != c.memory_width:
                raise ShapeError(f"ScaleARTransformer: memory must be ({B}, M, {c.memory_width}), got {memory.shape}")
        if key_mask is not None and key_mask.shape != (B, c.schedule.total):
            raise ShapeError(f"ScaleARTransformer: key_mask must be ({B}, {c.schedule.total}), got {key_mask.shape}")

    def _cond(self, cond: Array, additive: Array | None, cond_drop: Array | None, train: bool):
        c = self.config
        if not c.null_cond:
            return cond, additive
        if cond_drop is None and train and c.cond_drop_prob > 0:
            cond_drop = sample_cond_drop(self.make_rng("dropout"), cond.shape[0], c.cond_drop_prob)
        if cond_drop is None:
            return cond, additive
        drop = jnp.asarray(cond_drop, bool)
        cond = jnp.where(drop[:, None], self.null_embed[None, :], cond)
        if additive is not None:
            additive = jnp.where(drop[:, None, None], 0.0, additive)
        return cond, additive

    def _embed(self, x: Array, additive: Array | None, start: int, end: int) -> Array:
        c = self.config
        sch = c.schedule
        h = self.in_proj(x) if c.input_dim is not None else x
        if additive is not None:
            h = h + additive
        if c.pos_start and start < sch.lengths[0]:
            ps = jnp.concatenate([self.pos_start, jnp.zeros((sch.total - sch.lengths[0], c.width), h.dtype)])
            h = h + ps[start:end][None]
        if c.level_embedding:
            h = h + self.level_embed[jnp.asarray(sch.scale_ids[start:end])][None]
        if c.positions == "learned_abs":
            h = h + self.pos_embed[start:end][None]
        return h

    def _rope(self, start: int, end: int):
        tabs = _rope_tables(self.config)
        if tabs is None:
            return None
        return jnp.asarray(tabs[0][start:end]), jnp.asarray(tabs[1][start:end])

    def _head(self, h: Array, cond: Array) -> Array:
        c = self.config
        if c.head_adaln:
            ss = self.head_ada(nn.silu(cond)).reshape(cond.shape[0], 2, c.width)
            h = self.head_ln(h) * (1.0 + ss[:, 0][:, None]) + ss[:, 1][:, None]
        else:
            h = self.head_ln(h)
        out = self.head(h)
        if c.head == "bitwise":
            out = out.reshape(*out.shape[:-1], c.num_bits, 2)
        return out

    def _mods(self, cond: Array) -> list[Array]:
        shared = None
        if self.config.shared_adaln:
            shared = self.shared_ada(nn.silu(cond)).reshape(cond.shape[0], 6, self.config.width)
        return [b.modulation(cond, shared) for b in self.blocks]

    # ---- full forward -------------------------------------------------------
    def __call__(self, x: Array, cond: Array, additive: Array | None = None, memory: Array | None = None,
                 memory_mask: Array | None = None, key_mask: Array | None = None,
                 cond_drop: Array | None = None, train: bool = False) -> Array:
        """Teacher-forced forward over all N positions -> logits ``(B, N, K)`` or ``(B, N, bits, 2)``."""
        c = self.config
        N = c.schedule.total
        self._check(x, cond, 0, N, additive, memory, key_mask)
        cond, additive = self._cond(cond, additive, cond_drop, train)
        h = self._embed(x, additive, 0, N)
        mask = c.schedule.attention_mask(key_mask)
        mask = mask[None, None] if mask.ndim == 2 else mask[:, None]
        rope = self._rope(0, N)
        for blk, mod in zip(self.blocks, self._mods(cond)):
            h, _ = blk(h, mod, rope, mask, memory, memory_mask, None, not train)  # positional: see block_class
        return self._head(h, cond)

    # ---- cached decoding ------------------------------------------------------
    def decode_step(self, cache: dict, x: Array, k: int, cond: Array, additive: Array | None,
                memory: Array | None, memory_mask: Array | None, key_mask: Array | None,
                cond_drop: Array | None):
        c = self.config
        sch = c.schedule
        start, end = sch.starts[k], sch.ends[k]
        self._check(x, cond, start, end - start, additive, memory, key_mask)
        cond, additive = self._cond(cond, additive, cond_drop, False)
        h = self._embed(x, additive, start, end)
        mask = jnp.asarray(sch.block_causal()[start:end, :end])[None, None]
        if key_mask is not None:
            mask = mask & jnp.asarray(key_mask, bool)[:, None, None, :end]
        rope = self._rope(start, end)
        ks, vs = [], []
        for i, (blk, mod) in enumerate(zip(self.blocks, self._mods(cond))):
            prefix = (cache["k"][i, :, :start], cache["v"][i, :, :start]) if start > 0 else None
            h, (kk, vv) = blk(h, mod, rope, mask, memory, memory_mask, prefix, True)
            ks.append(kk)
            vs.append(vv)
        at = (0, 0, start, 0, 0)  # static offset of scale k
        new_cache = {
            "k": jax.lax.dynamic_update_slice(cache["k"], jnp.stack(ks).astype(cache["k"].dtype), at),
            "v": jax.lax.dynamic_update_slice(cache["v"], jnp.stack(vs).astype(cache["v"].dtype), at),
        }
        return self._head(h, cond), new_cache

    def decode_position(self, cache: dict, x: Array, pos: Array, cond: Array, memory: Array | None = None,
                        memory_mask: Array | None = None, cond_drop: Array | None = None):
        """One token at a *traced* position ``pos`` of a causal schedule (every scale one token,
        ``ScaleSchedule.from_lengths((1,) * N)``: next-token models), for a ``lax.fori_loop``
        decoder: ``x (B, 1, C_in)``; its query attends the whole fixed cache buffer under a mask
        (the keys / values of positions ``< pos``) plus itself; its K/V are written at ``pos``.
        Returns ``(logits (B, 1, ...), new_cache)``: the logits :meth:`__call__` gives at
        ``pos`` when the cache holds the positions before it."""
        c = self.config
        sch = c.schedule
        if any(n != 1 for n in sch.lengths):
            raise ConfigError(f"decode_position needs a causal schedule (one token per scale), got {sch.lengths}")
        N = sch.total
        self._check(x, cond, 0, 1, None, memory, None)
        cond, _ = self._cond(cond, None, cond_drop, False)
        pos = jnp.asarray(pos, jnp.int32)
        h = self.in_proj(x) if c.input_dim is not None else x
        if c.pos_start:  # scale 0 is position 0
            h = h + jnp.where(pos == 0, 1.0, 0.0) * self.pos_start[0][None, None]
        if c.level_embedding:  # the level of position p is p
            h = h + jax.lax.dynamic_slice_in_dim(self.level_embed, pos, 1)[None]
        if c.positions == "learned_abs":
            h = h + jax.lax.dynamic_slice_in_dim(self.pos_embed, pos, 1)[None]
        tabs = _rope_tables(c)
        rope = None if tabs is None else tuple(jax.lax.dynamic_slice_in_dim(jnp.asarray(t), pos, 1) for t in tabs)
        mask = jnp.concatenate([jnp.arange(N) < pos, jnp.ones((1,), bool)])[None, None, None, :]
        ks, vs = [], []
        for i, (blk, mod) in enumerate(zip(self.blocks, self._mods(cond))):
            h, (kk, vv) = blk(h, mod, rope, mask, memory, memory_mask, (cache["k"][i], cache["v"][i]), True)
            ks.append(kk)
            vs.append(vv)
        at = (0, 0, pos, 0, 0)
        new_cache = {
            "k": jax.lax.dynamic_update_slice(cache["k"], jnp.stack(ks).astype(cache["k"].dtype), at),
            "v": jax.lax.dynamic_update_slice(cache["v"], jnp.stack(vs).astype(cache["v"].dtype), at),
        }
        return self._head(h, cond), new_cache

    def init_cache(self, batch: int, dtype=jnp.float32) -> dict:
        """Zero KV buffers ``{'k', 'v'}`` of shape ``(depth, batch, N, heads, head_dim)``."""
        c = self.config
        shape = (c.depth, int(batch), c.schedule.total, c.heads, c.head_dim)
        return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}

    def decode_scale(self, params, cache: dict, x_k: Array, k: int, cond: Array,
                     additive_k: Array | None = None, memory: Array | None = None,
                     memory_mask: Array | None = None, key_mask: Array | None = None,
                     cond_drop: Array | None = None) -> tuple[Array, dict]:
        """Run scale ``k`` (static int) only: ``x_k (B, L_k, C_in)``, ``additive_k (B, L_k, C)``,
        ``key_mask`` over the whole sequence ``(B, N)``. Its queries attend the cached prefix
        (scales < k) and scale k itself; its K/V are written at the static offset of scale k.
        Returns ``(logits_k, new_cache)``. ``params``: the ``params`` collection or the whole
        variables dict."""
        if not isinstance(k, (int, np.integer)) or not 0 <= int(k) < self.config.schedule.num_scales:
            raise ConfigError(
                f"decode_scale: k must be a static int in [0, {self.config.schedule.num_scales}), got {k!r}")
        variables = params if "params" in params else {"params": params}
        return self.apply(variables, cache, x_k, int(k), cond, additive_k, memory, memory_mask, key_mask,
                          cond_drop, method=ScaleARTransformer.decode_step)


def num_params(params) -> int:
    """Total number of parameters of a pytree."""
    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))
