"""VQ-VAEs around the multi-scale quantisers: a 1D conv VQ-VAE over time (MotionMAR / MoScale)
and a skeletal-temporal VQ-VAE (ScaleMoGen).

:class:`TemporalVQVAE` -- pose features ``x (B, T, F)`` -> latent ``(B, T / 2^down_t, D)`` ->
:class:`~mmar.models.quantizers.temporal.TemporalQuantizer` -> decoder -> ``(B, T, F)``.
The conv stack follows MoScale's ``EncoderAttn`` / ``DecoderAttn`` (model/cnn_networks.py,
model/blocks.py)::

    encoder: Conv1d(F -> W, k3) + ReLU
             down_t x [Conv1d(k4, s2, p1) -> Resnet1D -> AttnBlock?]     (stride 1, k3 if down_t = 0)
             Conv1d(W -> D, k3)
    decoder: Conv1d(D (+ cond) -> W, k3) + ReLU
             down_t x [Resnet1D -> nearest x2 -> Conv1d(k3) -> AttnBlock?]
             Conv1d(W -> W, k3) -> ReLU -> Conv1d(W -> F, k3)
    Resnet1D: depth blocks, dilations growth^(depth-1) ... 1 (9, 3, 1), each
              x + Dropout(Conv1d_k1(act(Conv1d_k3_dil(act(x)))))
    AttnBlock: pre-LN 8-head self-attention with RoPE, key-padding mask and a per-head sigmoid
               output gate, then pre-LN FFN x4 (GELU), dropout 0.1.

Presets: :data:`MOSCALE_VQVAE` (HumanML3D 263 features, width 512, 196 -> 49 steps, attention,
EMA 512 x 512 codebook, scales 6/12/24/49) and :data:`MOTIONMAR_VQVAE` (132 = 22 x 6D rotations,
20-frame windows, width 512, ``down_t = 0`` so 20 frames -> 20 latent steps -- the official
``TransformerVQVAE`` does not down-sample and its scales (5, 10, 20) end at the window length;
learned 1024 x 64 codebook; the decoder is conditioned on the 54 sparse features, as the
official ``post_quant_emb(cat(z_q, up_sparse(sparse)))``). *Simplification*: MotionMAR's
official encoder/decoder are 4-layer transformer stacks (``Stack``); here they are the conv
stack above (``attn=True`` adds attention blocks).

:class:`SkeletalVQVAE` -- ScaleMoGen's tokenizer (scalemogen/models/vq/{encdec,motion_tokenizer}.py,
models/skeleton/{conv,pool}.py), compact but faithful::

    per-joint 2-layer MLPs (HumanML3D: root 7 = root 4 + root velocity 3, joints 12 = ric 3 +
        rot 6 + vel 3, contact joints 7, 10, 8, 11: +1) -> (B, T, 22, C)
    encoder: n_layers x [(n_extra + 1) ResSTConv -> STPool]       22 -> 12 -> 7 joints, T -> T/4
    Linear C -> 24 -> SkeletalQuantizer (BSQ, 11 scales) -> Linear 24 -> C
    decoder: n_layers x [STUnpool -> (n_extra + 1) ResSTConv]      7 -> 12 -> 22 joints, x4 time
    per-joint 2-layer MLPs back to the features
    STConv(x)    = Linear1(x) + D^-1 A Linear2(x) (graph incl. self loops) + Conv1d_k3 over time
    ResSTConv(x) = x + Dropout(STConv(GELU(STConv(GELU(x)))))
    STPool       = softmax-normalised learnable joint pooling (overlapping groups) + AvgPool(2)
    STUnpool     = ReLU'd learnable (J_fine x J_coarse) matrix + linear x2 time up-sampling

*Simplifications*: the per-joint MLPs are batched with inputs zero-padded to the largest joint
input (13), so their weight tensors are ``(22, 13, C)`` (rows of padded inputs are never used);
the decoder mask uses the quantiser's ``ceil`` rule (ScaleMoGen masks the decoder input with
``m // 4``).

Both models return the reconstruction, the quantiser losses and statistics, and expose
``reconstruct_with_scales(x, n)`` (decode from the first ``n`` scales only). Training losses:
:func:`vqvae_loss` (masked SmoothL1 + weighted feature slices + weighted VQ loss; presets
:data:`MOSCALE_LOSS`, :data:`SCALEMOGEN_LOSS`).

RNG streams in training: ``'dropout'`` and ``'vq'``; the temporal EMA codebook additionally
needs ``mutable=['vq']``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import ConfigError, ShapeError
from mmar.models.quantizers.resample import resample
from mmar.models.quantizers.skeletal import SCALEMOGEN_SKELETAL, SkeletalQuantizer, SkeletalQuantizerConfig
from mmar.models.quantizers.temporal import (
    MOSCALE_TEMPORAL,
    MOTIONMAR_TEMPORAL,
    TemporalQuantizer,
    TemporalQuantizerConfig,
    length_mask,
)
from mmar.skeleton import NUM_JOINTS, SMPL22_PARENTS

Array = jax.Array
F32 = jnp.float32


def _activation(name: str):
    name = name.lower()
    if name == "relu":
        return nn.relu
    if name == "gelu":
        return lambda x: nn.gelu(x, approximate=False)
    if name == "silu":
        return nn.silu
    if name == "leakyrelu":
        return lambda x: nn.leaky_relu(x, 0.1)
    raise ConfigError(f"unknown activation {name!r}")


def _lengths(mask: Array | None, b: int, t: int) -> Array:
    if mask is None:
        return jnp.full((b,), t, jnp.int32)
    mask = jnp.asarray(mask)
    if mask.shape != (b, t):
        raise ShapeError(f"mask must be {(b, t)}, got {tuple(mask.shape)}")
    return jnp.sum(mask.astype(jnp.int32), axis=1)


def _masked_mean(err: Array, mask: Array | None) -> Array:
    """Mean of ``err (B, T, ...)`` over valid frames and all trailing elements."""
    if mask is None:
        return jnp.mean(err)
    w = jnp.asarray(mask, F32).reshape(mask.shape + (1,) * (err.ndim - 2))
    w = jnp.broadcast_to(w, err.shape)
    return jnp.sum(err * w) / jnp.maximum(jnp.sum(w), 1.0)


def smooth_l1(a: Array, b: Array, beta: float = 1.0) -> Array:
    """Element-wise SmoothL1 (PyTorch default ``beta = 1``)."""
    d = jnp.abs(a - b)
    return jnp.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)


# ==========================================================================
# 1D conv building blocks
# ==========================================================================

class ResConv1DBlock(nn.Module):
    """``x + Dropout(Conv_k1(act(Conv_k3_dilated(act(x)))))`` (MoScale ``ResConv1DBlock``, no norm)."""

    width: int
    dilation: int = 1
    activation: str = "relu"
    dropout: float = 0.2

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        act = _activation(self.activation)
        d = self.dilation
        h = nn.Conv(self.width, (3,), kernel_dilation=(d,), padding=[(d, d)], name="conv1")(act(x))
        h = nn.Conv(self.width, (1,), name="conv2")(act(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        return x + h


class Resnet1D(nn.Module):
    """``depth`` residual blocks with dilations ``growth^(depth-1), ..., growth, 1``."""

    width: int
    depth: int = 3
    growth: int = 3
    activation: str = "relu"
    dropout: float = 0.2

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        for i in reversed(range(self.depth)):
            x = ResConv1DBlock(self.width, self.growth**i, self.activation, self.dropout)(x, train)
        return x


def _rope(x: Array, base: float = 10000.0) -> Array:
    """Rotary embedding (rotate-half form, as MoScale's ``RotaryPositionEmbedding``) of
    ``x (B, T, H, Dh)`` at positions ``0..T-1``."""
    t, dh = x.shape[1], x.shape[-1]
    inv = 1.0 / (base ** (np.arange(0, dh, 2, dtype=np.float32) / dh))
    freqs = np.outer(np.arange(t, dtype=np.float32), inv)
    emb = np.concatenate([freqs, freqs], -1)  # (T, Dh)
    cos = jnp.asarray(np.cos(emb))[None, :, None, :]
    sin = jnp.asarray(np.sin(emb))[None, :, None, :]
    x1, x2 = x[..., : dh // 2], x[..., dh // 2:]
    return x * cos + jnp.concatenate([-x2, x1], -1) * sin


class AttnBlock1D(nn.Module):
    """Pre-LN self-attention (RoPE, key-padding mask, per-head sigmoid output gate) + pre-LN FFN."""

    width: int
    heads: int = 8
    dropout: float = 0.1
    ffn_ratio: int = 4

    @nn.compact
    def __call__(self, x: Array, lengths: Array | None = None, train: bool = False) -> Array:
        b, t, c = x.shape
        if c % self.heads:
            raise ConfigError(f"attention width {c} is not divisible by {self.heads} heads")
        dh = c // self.heads
        h = nn.LayerNorm(name="norm1")(x)
        qkv = nn.Dense(3 * c, name="qkv")(h).reshape(b, t, 3, self.heads, dh)
        qk = _rope(qkv[:, :, :2].reshape(b, t, 2 * self.heads, dh)).reshape(b, t, 2, self.heads, dh)
        q, k, v = qk[:, :, 0], qk[:, :, 1], qkv[:, :, 2]
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
        if lengths is not None:
            s = jnp.where(length_mask(lengths, t)[:, None, None, :], s, -1e30)
        a = nn.Dropout(self.dropout)(jax.nn.softmax(s, -1), deterministic=not train)
        o = jnp.einsum("bhqk,bkhd->bqhd", a, v)
        o = o * jax.nn.sigmoid(nn.Dense(self.heads, name="gate")(h))[..., None]
        x = x + nn.Dense(c, name="out")(o.reshape(b, t, c))
        h = nn.LayerNorm(name="norm2")(x)
        h = nn.Dense(c * self.ffn_ratio, name="ffn1")(h)
        h = nn.Dropout(self.dropout)(nn.gelu(h, approximate=False), deterministic=not train)
        h = nn.Dropout(self.dropout)(nn.Dense(c, name="ffn2")(h), deterministic=not train)
        return x + h


# ==========================================================================
# temporal VQ-VAE
# ==========================================================================

@dataclasses.dataclass(frozen=True)
class TemporalVQVAEConfig:
    """Configuration of :class:`TemporalVQVAE` (defaults: MoScale, HumanML3D)."""

    in_dim: int = 263
    width: int = 512
    down_t: int = 2  # number of stride-2 stages (196 -> 49); 0 = no down-sampling
    depth: int = 3  # residual blocks per Resnet1D (dilations 9, 3, 1)
    dilation_growth: int = 3
    activation: str = "relu"
    dropout: float = 0.2
    attn: bool = True
    attn_heads: int = 8
    attn_dropout: float = 0.1
    cond_dim: int = 0  # per-frame decoder condition (MotionMAR: 54 sparse features)
    latent_rounding: str = "floor"  # valid latent steps = floor / ceil(len / 2^down_t)
    quantizer: TemporalQuantizerConfig = MOSCALE_TEMPORAL

    def __post_init__(self):
        if self.in_dim < 1 or self.width < 1 or self.down_t < 0 or self.depth < 0:
            raise ConfigError("TemporalVQVAEConfig: in_dim, width >= 1 and down_t, depth >= 0 required")
        if self.latent_rounding not in ("floor", "ceil"):
            raise ConfigError("TemporalVQVAEConfig.latent_rounding must be 'floor' or 'ceil'")
        if self.attn and self.width % self.attn_heads:
            raise ConfigError("TemporalVQVAEConfig.width must be divisible by attn_heads")

    @property
    def code_dim(self) -> int:
        return self.quantizer.code_dim

    @property
    def num_frames(self) -> int:
        """Frames per window: latent length x 2^down_t."""
        return self.quantizer.latent_length * 2**self.down_t


MOSCALE_VQVAE = TemporalVQVAEConfig()
MOTIONMAR_VQVAE = TemporalVQVAEConfig(
    in_dim=NUM_JOINTS * 6,
    width=512,
    down_t=0,
    depth=3,
    dropout=0.0,
    attn=False,
    cond_dim=54,
    quantizer=MOTIONMAR_TEMPORAL,
)


class ConvEncoder1D(nn.Module):
    config: TemporalVQVAEConfig

    @nn.compact
    def __call__(self, x: Array, lengths: Array | None, train: bool = False) -> Array:
        cfg = self.config
        h = nn.relu(nn.Conv(cfg.width, (3,), padding=[(1, 1)], name="embed")(x))
        for i in range(max(cfg.down_t, 1)):
            if cfg.down_t > 0:
                h = nn.Conv(cfg.width, (4,), strides=(2,), padding=[(1, 1)], name=f"down{i}")(h)
                lengths = None if lengths is None else lengths // 2
            else:
                h = nn.Conv(cfg.width, (3,), padding=[(1, 1)], name=f"down{i}")(h)
            h = Resnet1D(cfg.width, cfg.depth, cfg.dilation_growth, cfg.activation, cfg.dropout, name=f"res{i}")(h, train)
            if cfg.attn:
                h = AttnBlock1D(cfg.width, cfg.attn_heads, cfg.attn_dropout, name=f"attn{i}")(h, lengths, train)
        return nn.Conv(cfg.code_dim, (3,), padding=[(1, 1)], name="out")(h)


class ConvDecoder1D(nn.Module):
    config: TemporalVQVAEConfig

    @nn.compact
    def __call__(self, z: Array, lengths: Array | None, train: bool = False) -> Array:
        cfg = self.config
        h = nn.relu(nn.Conv(cfg.width, (3,), padding=[(1, 1)], name="embed")(z))
        for i in range(max(cfg.down_t, 1)):
            h = Resnet1D(cfg.width, cfg.depth, cfg.dilation_growth, cfg.activation, cfg.dropout, name=f"res{i}")(h, train)
            if cfg.down_t > 0:
                h = jnp.repeat(h, 2, axis=1)  # nearest x2
                lengths = None if lengths is None else lengths * 2
            h = nn.Conv(cfg.width, (3,), padding=[(1, 1)], name=f"up{i}")(h)
            if cfg.attn:
                h = AttnBlock1D(cfg.width, cfg.attn_heads, cfg.attn_dropout, name=f"attn{i}")(h, lengths, train)
        h = nn.relu(nn.Conv(cfg.width, (3,), padding=[(1, 1)], name="out1")(h))
        return nn.Conv(cfg.in_dim, (3,), padding=[(1, 1)], name="out2")(h)


class TemporalVQVAE(nn.Module):
    """1D conv VQ-VAE with the temporal multi-scale quantiser.

    ``__call__(x (B, T, F), mask (B, T) | None, cond (B, T, cond_dim) | None, train=False)``
    returns the quantiser's dict (``z_q``, ``codes``, ``commit_loss``, ``codebook_loss``,
    ``loss``, ``usage``, ``perplexity``, ...) plus ``recon (B, T, F)``, ``z (B, T', D)`` (encoder
    output) and ``latent_mask (B, T')``. Training: ``rngs={'dropout': k1, 'vq': k2}`` and, with
    the EMA codebook, ``mutable=['vq']``.

    Methods: ``encode``, ``encode_codes``, ``decode_latent``, ``decode_codes``,
    ``reconstruct_with_scales``, ``latent_lengths``.
    """

    config: TemporalVQVAEConfig = TemporalVQVAEConfig()

    def setup(self):
        cfg = self.config
        self.encoder = ConvEncoder1D(cfg)
        self.decoder = ConvDecoder1D(cfg)
        self.quantizer = TemporalQuantizer(cfg.quantizer)
        if cfg.cond_dim:
            self.cond_proj = nn.Dense(cfg.code_dim)

    def _check(self, x: Array) -> Array:
        cfg = self.config
        if x.ndim != 3 or x.shape[1] != cfg.num_frames or x.shape[2] != cfg.in_dim:
            raise ShapeError(f"TemporalVQVAE: x must be (B, {cfg.num_frames}, {cfg.in_dim}), got {tuple(x.shape)}")
        return jnp.asarray(x, F32)

    def latent_lengths(self, mask: Array | None, b: int) -> Array:
        """Valid latent steps ``(B,)`` from a frame mask ``(B, T)``."""
        cfg = self.config
        lengths = _lengths(mask, b, cfg.num_frames)
        f = 2**cfg.down_t
        return lengths // f if cfg.latent_rounding == "floor" else -((-lengths) // f)

    def encode(self, x: Array, mask: Array | None = None, train: bool = False) -> Array:
        """Continuous latent ``z (B, T', D)``."""
        x = self._check(x)
        lengths = None if mask is None else _lengths(mask, x.shape[0], x.shape[1])
        if mask is not None:
            x = x * jnp.asarray(mask, F32)[..., None]
        return self.encoder(x, lengths, train)

    def encode_codes(self, x: Array, mask: Array | None = None) -> list[Array]:
        z = self.encode(x, mask)
        return self.quantizer.encode_codes(z, self._latent_mask(mask, x.shape[0]))

    def _latent_mask(self, mask: Array | None, b: int) -> Array | None:
        if mask is None:
            return None
        return length_mask(self.latent_lengths(mask, b), self.config.quantizer.latent_length)

    def decode_latent(self, z_q: Array, mask: Array | None = None, cond: Array | None = None,
                      train: bool = False) -> Array:
        """Features ``(B, T, F)`` from a (quantised) latent ``(B, T', D)``."""
        cfg = self.config
        b = z_q.shape[0]
        lat_mask = self._latent_mask(mask, b)
        if lat_mask is not None:
            z_q = z_q * lat_mask[..., None].astype(z_q.dtype)
        if cfg.cond_dim:
            if cond is None or cond.shape != (b, cfg.num_frames, cfg.cond_dim):
                raise ShapeError(f"TemporalVQVAE: cond must be (B, {cfg.num_frames}, {cfg.cond_dim})")
            c = resample(cond, z_q.shape[1], "area", axis=1) if cfg.down_t else jnp.asarray(cond, F32)
            z_q = jnp.concatenate([z_q, self.cond_proj(c)], -1)
        lengths = None if mask is None else self.latent_lengths(mask, b)
        return self.decoder(z_q, lengths, train)

    def decode_codes(self, codes: Sequence[Array], mask: Array | None = None, cond: Array | None = None) -> Array:
        return self.decode_latent(self.quantizer.decode_codes(codes), mask, cond)

    def reconstruct_with_scales(self, x: Array, num_scales: int, mask: Array | None = None,
                                cond: Array | None = None) -> Array:
        """Reconstruction from the first ``num_scales`` scales only (static int)."""
        codes = self.encode_codes(x, mask)
        return self.decode_latent(self.quantizer.partial_reconstruction(codes, num_scales), mask, cond)

    def __call__(self, x: Array, mask: Array | None = None, cond: Array | None = None, train: bool = False) -> dict:
        z = self.encode(x, mask, train)
        lat_mask = self._latent_mask(mask, x.shape[0])
        out = dict(self.quantizer(z, lat_mask, train=train))
        out["recon"] = self.decode_latent(out["z_q"], mask, cond, train)
        out["z"] = z
        out["latent_mask"] = (
            jnp.ones(z.shape[:2], bool) if lat_mask is None else lat_mask
        )
        return out


# ==========================================================================
# skeletal-temporal VQ-VAE (ScaleMoGen)
# ==========================================================================

def _adjacency(edges: Sequence[tuple[int, int]], n: int) -> np.ndarray:
    a = np.eye(n, dtype=np.float32)
    for i, j in edges:
        a[i, j] = a[j, i] = 1.0
    return a


def _adj_from_lists(adj: Sequence[Sequence[int]]) -> np.ndarray:
    return _adjacency([(i, j) for i, ns in enumerate(adj) for j in ns], len(adj))


#: SMPL-22 kinematic tree (ScaleMoGen ``t2m_adj_list``).
SMPL22_ADJACENCY = _adjacency([(p, j) for j, p in enumerate(SMPL22_PARENTS) if p >= 0], NUM_JOINTS)
#: ScaleMoGen pooling of the 22 joints into 12 parts (overlapping; STPool depth 0, t2m).
POOL_22_TO_12: tuple[tuple[int, ...], ...] = (
    (0, 1, 2, 3), (0, 1, 4), (4, 7, 10), (0, 2, 5), (5, 8, 11), (0, 3, 6, 9), (9, 6, 12, 13, 14),
    (9, 13, 16), (16, 18, 20), (9, 14, 17), (17, 19, 21), (9, 12, 15),
)
ADJ_12 = _adj_from_lists([[1, 3, 5], [0, 2], [1], [0, 4], [3], [0, 6], [5, 7, 9, 11], [6, 8], [7], [6, 10], [9], [6]])
#: 12 parts -> 7 body groups (root, left lower, right lower, spine, left upper, right upper, head).
POOL_12_TO_7: tuple[tuple[int, ...], ...] = ((0, 1, 3, 5), (0, 1, 2), (0, 3, 4), (0, 5, 6), (6, 7, 8), (6, 9, 10), (6, 11))
ADJ_7 = _adj_from_lists([[1, 2, 3], [0], [0], [0, 4, 5, 6], [3], [3], [3]])
#: 7 -> 7 (a third level, ScaleMoGen's ``depth >= 2`` pooling).
POOL_7_TO_7: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3), (0, 1), (0, 2), (0, 3), (3, 4), (3, 5), (3, 6))
SKELETON_LEVELS = (
    (SMPL22_ADJACENCY, POOL_22_TO_12),
    (ADJ_12, POOL_12_TO_7),
    (ADJ_7, POOL_7_TO_7),
)
HML_CONTACT_JOINTS: tuple[int, ...] = (7, 10, 8, 11)


def hml_joint_layout(num_joints: int = NUM_JOINTS, contact_joints: Sequence[int] = HML_CONTACT_JOINTS
                     ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Per-joint layout of HumanML3D features (``4 + 9 (J-1) + 3 J + 4``).

    Returns ``(gather (J, S), scatter (F,), dims (J,))``: ``gather[j, s]`` is the feature index of
    slot ``s`` of joint ``j`` (``F`` = padding), ``scatter[f] = j * S + s`` and ``dims[j]`` the
    number of used slots. Joint 0: root (4) + its velocity (3); joint ``i >= 1``: ric (3), rot
    (6), vel (3); contact joints get their contact channel last.
    """
    j = num_joints
    a = 4 + 3 * (j - 1)
    b_ = a + 6 * (j - 1)
    c = b_ + 3 * j
    f = c + 4
    slots: list[list[int]] = [[0, 1, 2, 3, b_, b_ + 1, b_ + 2]]
    for i in range(1, j):
        slots.append(
            [4 + 3 * (i - 1) + d for d in range(3)] + [a + 6 * (i - 1) + d for d in range(6)]
            + [b_ + 3 * i + d for d in range(3)]
        )
    for cidx, jidx in enumerate(contact_joints):
        slots[jidx].append(c + cidx)
    s = max(len(x) for x in slots)
    gather = np.full((j, s), f, np.int32)
    scatter = np.zeros((f,), np.int32)
    for ji, sl in enumerate(slots):
        gather[ji, : len(sl)] = sl
        for si, fi in enumerate(sl):
            scatter[fi] = ji * s + si
    return gather, scatter, tuple(len(x) for x in slots)


@functools.lru_cache(maxsize=None)
def _hml_layout(num_joints: int) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    return hml_joint_layout(num_joints)


@dataclasses.dataclass(frozen=True)
class SkeletalVQVAEConfig:
    """Configuration of :class:`SkeletalVQVAE` (defaults: ScaleMoGen, HumanML3D)."""

    layout: str = "hml263"  # 'hml263' | 'per_joint' (features (B, T, J * per_joint_dim))
    num_joints: int = NUM_JOINTS
    per_joint_dim: int = 6
    latent_dim: int = 384
    n_layers: int = 2  # pooling levels (22 -> 12 -> 7 joints, T -> T / 4)
    n_extra_layers: int = 1
    kernel_size: int = 3
    activation: str = "gelu"
    dropout: float = 0.1
    latent_rounding: str = "ceil"
    quantizer: SkeletalQuantizerConfig = SCALEMOGEN_SKELETAL

    def __post_init__(self):
        if self.layout not in ("hml263", "per_joint"):
            raise ConfigError("SkeletalVQVAEConfig.layout must be 'hml263' or 'per_joint'")
        if self.num_joints != NUM_JOINTS:
            raise ConfigError("SkeletalVQVAEConfig: only the SMPL-22 skeleton pooling is defined")
        if not 1 <= self.n_layers <= len(SKELETON_LEVELS):
            raise ConfigError(f"SkeletalVQVAEConfig.n_layers must be in 1..{len(SKELETON_LEVELS)}")
        if self.n_layers < 2:
            raise ConfigError("SkeletalVQVAEConfig: n_layers >= 2 needed to reach the 7 body groups")
        if self.quantizer.num_groups != 7:
            raise ConfigError("SkeletalVQVAEConfig: the quantiser grid must have 7 body groups")
        if self.kernel_size % 2 != 1:
            raise ConfigError("SkeletalVQVAEConfig.kernel_size must be odd")
        if self.latent_rounding not in ("floor", "ceil"):
            raise ConfigError("SkeletalVQVAEConfig.latent_rounding must be 'floor' or 'ceil'")

    @property
    def feature_dim(self) -> int:
        if self.layout == "hml263":
            return 4 + 9 * (self.num_joints - 1) + 3 * self.num_joints + 4
        return self.num_joints * self.per_joint_dim

    @property
    def num_frames(self) -> int:
        return self.quantizer.num_steps * 2**self.n_layers


SCALEMOGEN_VQVAE = SkeletalVQVAEConfig()


class PerJointMLP(nn.Module):
    """One 2-layer MLP per joint, batched: ``(B, T, J, S) -> (B, T, J, out)``."""

    hidden: int
    out_dim: int
    activation: str = "gelu"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        j, s = x.shape[-2:]
        init = nn.initializers.lecun_normal(batch_axis=(0,))
        w1 = self.param("w1", init, (j, s, self.hidden))
        b1 = self.param("b1", nn.initializers.zeros, (j, self.hidden))
        w2 = self.param("w2", init, (j, self.hidden, self.out_dim))
        b2 = self.param("b2", nn.initializers.zeros, (j, self.out_dim))
        h = _activation(self.activation)(jnp.einsum("btjs,jsh->btjh", x, w1) + b1)
        return jnp.einsum("btjh,jho->btjo", h, w2) + b2


class STConv(nn.Module):
    """Graph conv (self + degree-normalised neighbours) plus a temporal conv, ``(B, T, J, C)``."""

    adjacency: tuple[tuple[float, ...], ...]
    width: int
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x: Array) -> Array:
        adj = np.asarray(self.adjacency, np.float32)
        a = adj / (adj.sum(-1, keepdims=True) + 1e-6)
        h1 = nn.Dense(self.width, name="linear1")(x)
        h2 = jnp.einsum("ij,btjc->btic", jnp.asarray(a, F32), nn.Dense(self.width, name="linear2")(x))
        p = self.kernel_size // 2
        ht = nn.Conv(self.width, (self.kernel_size, 1), padding=[(p, p), (0, 0)], name="temporal")(x)
        return h1 + h2 + ht


class ResSTConv(nn.Module):
    adjacency: tuple[tuple[float, ...], ...]
    width: int
    kernel_size: int = 3
    activation: str = "gelu"
    dropout: float = 0.1

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        act = _activation(self.activation)
        h = STConv(self.adjacency, self.width, self.kernel_size)(act(x))
        h = STConv(self.adjacency, self.width, self.kernel_size)(act(h))
        return x + nn.Dropout(self.dropout)(h, deterministic=not train)


def _as_tuple(a: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in np.asarray(a))


def _pool_weights(mapping: Sequence[Sequence[int]], n_in: int) -> np.ndarray:
    w = np.zeros((len(mapping), n_in), np.float32)
    for i, js in enumerate(mapping):
        w[i, list(js)] = 1.0
    return w / w.sum(-1, keepdims=True)


class STPool(nn.Module):
    """Learnable softmax-normalised joint pooling over each part's joints + average pooling x2."""

    mapping: tuple[tuple[int, ...], ...]
    num_in: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        w0 = _pool_weights(self.mapping, self.num_in)
        mask = jnp.asarray(w0 > 0)
        logits = self.param("pool", lambda _k, _s: jnp.asarray(w0), w0.shape)
        logits = jnp.where(mask, logits, -1e30)
        w = jax.nn.softmax(logits, axis=-1) * mask
        y = jnp.einsum("ij,btjc->btic", w, x)
        b, t = y.shape[:2]
        t2 = t // 2
        return y[:, : 2 * t2].reshape(b, t2, 2, *y.shape[2:]).mean(2)


class STUnpool(nn.Module):
    """ReLU'd learnable (J_fine x J_coarse) unpooling matrix + linear x2 time up-sampling."""

    mapping: tuple[tuple[int, ...], ...]
    num_out: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        w0 = np.zeros((self.num_out, len(self.mapping)), np.float32)
        for i, js in enumerate(self.mapping):
            w0[list(js), i] = 1.0
        w = nn.relu(self.param("unpool", lambda _k, _s: jnp.asarray(w0), w0.shape))
        y = jnp.einsum("ji,btic->btjc", w, x)
        return resample(y, 2 * y.shape[1], "linear", axis=1)


class STConvEncoder(nn.Module):
    config: SkeletalVQVAEConfig

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        cfg = self.config
        n_in = cfg.num_joints
        for i in range(cfg.n_layers):
            adj, mapping = SKELETON_LEVELS[i]
            for e in range(cfg.n_extra_layers + 1):
                x = ResSTConv(_as_tuple(adj), cfg.latent_dim, cfg.kernel_size, cfg.activation, cfg.dropout,
                              name=f"level{i}_conv{e}")(x, train)
            x = STPool(mapping, n_in, name=f"level{i}_pool")(x)
            n_in = len(mapping)
        return x


class STConvDecoder(nn.Module):
    config: SkeletalVQVAEConfig

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        cfg = self.config
        for i in reversed(range(cfg.n_layers)):
            adj, mapping = SKELETON_LEVELS[i]
            x = STUnpool(mapping, adj.shape[0], name=f"level{i}_unpool")(x)
            for e in range(cfg.n_extra_layers + 1):
                x = ResSTConv(_as_tuple(adj), cfg.latent_dim, cfg.kernel_size, cfg.activation, cfg.dropout,
                              name=f"level{i}_conv{e}")(x, train)
        return x


class SkeletalVQVAE(nn.Module):
    """ScaleMoGen's skeletal-temporal BSQ VQ-VAE (see the module docstring).

    ``__call__(x (B, T, F), mask (B, T) | None, train=False)`` returns the quantiser's dict
    (``z_q`` -- 24-d grid, ``codes`` -- bits per scale, ``token_masks``, ``loss`` -- mean BSQ aux
    loss over kept scales, ``scale_losses``, ``keep``, entropies) plus ``recon (B, T, F)``,
    ``z (B, T', 7, 24)`` (projected encoder output) and ``latent_mask (B, T')``. Training:
    ``rngs={'dropout': k1, 'vq': k2}`` (the ``'vq'`` stream drives VQ stochastic depth).

    Methods: ``encode``, ``encode_codes``, ``decode_latent``, ``decode_codes``,
    ``reconstruct_with_scales``, ``latent_lengths``.
    """

    config: SkeletalVQVAEConfig = SkeletalVQVAEConfig()

    def setup(self):
        cfg = self.config
        slots = _hml_layout(cfg.num_joints)[0].shape[1] if cfg.layout == "hml263" else cfg.per_joint_dim
        self.joint_in = PerJointMLP(cfg.latent_dim, cfg.latent_dim, cfg.activation)
        self.joint_out = PerJointMLP(cfg.latent_dim, slots, cfg.activation)
        self.encoder = STConvEncoder(cfg)
        self.decoder = STConvDecoder(cfg)
        self.project_in = nn.Dense(cfg.quantizer.code_dim)
        self.project_out = nn.Dense(cfg.latent_dim)
        self.quantizer = SkeletalQuantizer(cfg.quantizer)

    # -- layout -------------------------------------------------------------------
    def _split(self, x: Array) -> Array:
        cfg = self.config
        b, t = x.shape[:2]
        if cfg.layout == "per_joint":
            return x.reshape(b, t, cfg.num_joints, cfg.per_joint_dim)
        xp = jnp.concatenate([x, jnp.zeros((b, t, 1), x.dtype)], -1)
        return xp[..., jnp.asarray(_hml_layout(cfg.num_joints)[0])]

    def _merge(self, y: Array) -> Array:
        cfg = self.config
        b, t = y.shape[:2]
        flat = y.reshape(b, t, -1)
        if cfg.layout == "per_joint":
            return flat
        return flat[..., jnp.asarray(_hml_layout(cfg.num_joints)[1])]

    def _check(self, x: Array) -> Array:
        cfg = self.config
        if x.ndim != 3 or x.shape[1] != cfg.num_frames or x.shape[2] != cfg.feature_dim:
            raise ShapeError(f"SkeletalVQVAE: x must be (B, {cfg.num_frames}, {cfg.feature_dim}), got {tuple(x.shape)}")
        return jnp.asarray(x, F32)

    def latent_lengths(self, mask: Array | None, b: int) -> Array:
        cfg = self.config
        lengths = _lengths(mask, b, cfg.num_frames)
        f = 2**cfg.n_layers
        return lengths // f if cfg.latent_rounding == "floor" else -((-lengths) // f)

    def _latent_mask(self, mask: Array | None, b: int) -> Array | None:
        if mask is None:
            return None
        return length_mask(self.latent_lengths(mask, b), self.config.quantizer.num_steps)

    # -- pieces -------------------------------------------------------------------
    def encode(self, x: Array, mask: Array | None = None, train: bool = False) -> Array:
        """Projected latent grid ``(B, T', 7, 24)`` (before quantisation)."""
        x = self._check(x)
        if mask is not None:
            x = x * jnp.asarray(mask, F32)[..., None]
        h = self.joint_in(self._split(x))
        return self.project_in(self.encoder(h, train))

    def encode_codes(self, x: Array, mask: Array | None = None) -> list[Array]:
        return self.quantizer.encode_codes(self.encode(x, mask), self._latent_mask(mask, x.shape[0]))

    def decode_latent(self, z_q: Array, mask: Array | None = None, train: bool = False) -> Array:
        """Features ``(B, T, F)`` from a (quantised) 24-d latent grid ``(B, T', 7, 24)``."""
        h = self.project_out(z_q)
        lat_mask = self._latent_mask(mask, z_q.shape[0])
        if lat_mask is not None:
            h = h * lat_mask[:, :, None, None].astype(h.dtype)
        h = self.decoder(h, train)
        return self._merge(self.joint_out(h))

    def decode_codes(self, codes: Sequence[Array], mask: Array | None = None) -> Array:
        lat_mask = self._latent_mask(mask, codes[0].shape[0])
        return self.decode_latent(self.quantizer.decode_codes(codes, lat_mask), mask)

    def reconstruct_with_scales(self, x: Array, num_scales: int, mask: Array | None = None) -> Array:
        """Reconstruction from the first ``num_scales`` scales only (static int)."""
        lat_mask = self._latent_mask(mask, x.shape[0])
        codes = self.quantizer.encode_codes(self.encode(x, mask), lat_mask)
        return self.decode_latent(self.quantizer.partial_reconstruction(codes, num_scales, lat_mask), mask)

    def __call__(self, x: Array, mask: Array | None = None, train: bool = False) -> dict:
        z = self.encode(x, mask, train)
        lat_mask = self._latent_mask(mask, x.shape[0])
        out = dict(self.quantizer(z, lat_mask, train=train))
        out["recon"] = self.decode_latent(out["z_q"], mask, train)
        out["z"] = z
        out["latent_mask"] = jnp.ones(z.shape[:2], bool) if lat_mask is None else lat_mask
        return out


# ==========================================================================
# losses
# ==========================================================================

#: MoScale: SmoothL1 on all 263 dims + 0.5 SmoothL1 on dims 4:67; 0.02 x commitment.
MOSCALE_LOSS = {"terms": ((4, 67, 0.5),), "vq_weight": 0.02}
#: ScaleMoGen: SmoothL1 + 0.5 root (0:4) + 0.5 local velocity (193:259); 4.0 x mean BSQ aux loss.
SCALEMOGEN_LOSS = {"terms": ((0, 4, 0.5), (193, 259, 0.5)), "vq_weight": 4.0}


def vqvae_loss(outputs: dict, x: Array, mask: Array | None = None, *,
               terms: Sequence[tuple[int, int, float]] = (), vq_weight: float = 1.0,
               recon: str = "smooth_l1") -> tuple[Array, dict]:
    """Reconstruction + weighted feature slices + ``vq_weight * outputs['loss']``.

    Args:
      outputs: the dict of :class:`TemporalVQVAE` or :class:`SkeletalVQVAE`.
      x: target features ``(B, T, F)``; mask: ``(B, T)`` valid frames.
      terms: extra ``(start, stop, weight)`` feature slices (e.g. :data:`MOSCALE_LOSS`).
      recon: ``'smooth_l1'`` (masked SmoothL1, beta 1) or ``'l2'`` (masked MSE).

    Returns ``(loss, metrics)``; metrics: ``loss``, ``rec``, ``vq``, ``term{i}`` and, when
    present, the mean ``usage`` / ``perplexity`` of the temporal quantiser.
    """
    if recon not in ("smooth_l1", "l2"):
        raise ConfigError(f"vqvae_loss: recon must be 'smooth_l1' or 'l2', got {recon!r}")
    x = jnp.asarray(x, F32)
    y = outputs["recon"]
    err = smooth_l1(y, x) if recon == "smooth_l1" else (y - x) ** 2
    rec = _masked_mean(err, mask)
    loss = rec
    metrics = {"rec": rec}
    for i, (a, b, w) in enumerate(terms):
        t = _masked_mean(err[..., a:b], mask)
        metrics[f"term{i}"] = t
        loss = loss + w * t
    vq = outputs["loss"]
    loss = loss + vq_weight * vq
    metrics["vq"] = vq
    metrics["loss"] = loss
    for k in ("usage", "perplexity"):
        if k in outputs:
            metrics[k] = jnp.mean(outputs[k])
    return loss, metrics
