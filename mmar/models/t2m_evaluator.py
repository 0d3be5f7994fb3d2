"""Text-motion evaluator (Guo et al. 2022, "Generating Diverse and Natural 3D Human Motions from
Text", the ``text_mot_match`` model every HumanML3D / KIT-ML result is measured with), trained
here from scratch.

Two encoders map a caption and a motion into one 512-d space in which matching pairs are close
(Euclidean); R-precision, MM-Dist, FID and Diversity (:mod:`mmar.eval.t2m`) are computed on
these embeddings::

    net = T2MEvaluatorConfig(vocab_size=tokenizer.vocab_size)
    model = T2MEvaluator(net)
    text_emb, motion_emb = model.apply({"params": p}, motion, lengths, ids, mask)

Architecture (as the official ``MovementConvEncoder``, ``MotionEncoderBiGRUCo`` and
``TextEncoderBiGRUCo``; sizes are :class:`T2MEvaluatorConfig`'s, the paper's by default):

* movement encoder: the features without the 4 foot-contact channels (HumanML3D 259 of 263),
  zeroed beyond the motion's ``length // 4 * 4`` frames; Conv1d(k4, s2, p1) -> dropout ->
  LeakyReLU(0.2), twice (512 channels, time / 4: one step per 4 frames, the *unit length*),
  then a Linear;
* motion encoder: Linear(512 -> 1024) -> bi-GRU(1024) over the ``length // 4`` valid steps,
  learned initial states -> [last forward state, last backward state] (2048) -> Linear(1024)
  -> LayerNorm -> LeakyReLU(0.2) -> Linear(512);
* text encoder: word embedding (300) -> Linear(512) -> bi-GRU(512) over the caption's tokens
  ([CLS] w_1 .. w_n [EOS], :class:`mmar.models.text.Tokenizer`) -> [last forward, last backward]
  (1024) -> Linear(512) -> LayerNorm -> LeakyReLU(0.2) -> Linear(512).

The GRUs are PyTorch's formulation (``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``) with the
input projections of all steps computed in one matmul; padding never reaches a state (the state
is held after the last valid step; the backward direction reads the valid steps reversed), so
embeddings do not depend on what the padding holds or how long it is.

Deviations from the official evaluator (each for a reason that holds here):

* **No GloVe / POS.** The official text encoder reads frozen GloVe-300 vectors plus a 15-way
  part-of-speech one-hot (Linear 15 -> 300, added). Nothing can be downloaded here, and Bandai
  captions have no POS tags, so the 300-d word vectors are a learned embedding over the
  tokenizer's vocabulary of the *training* captions (unknown words -> ``[UNK]``).
* **Movement encoder trained jointly.** Officially it is pre-trained as the encoder of a motion
  auto-encoder (``Comp_v6_KLD005``) and frozen (``.detach()``) while the matching is learned;
  here it is trained end to end with the matching loss (one stage; its dropout 0.2 stays on in
  training as the only regulariser of the motion side).
* **Padding fully masked.** The first convolution's outputs beyond the motion's end are zeroed
  too, so an embedding does not depend on how much padding follows the motion (officially the
  bias of padded steps reaches the last valid step of a motion shorter than 196 frames).
* **Loss** (:func:`matching_loss`): ``"margin"`` is the official contrastive loss
  (``train_tex_mot_match``: ``mean d(t_i, m_i)^2 + mean max(0, margin - d(t_i, m_{i+s}))^2``,
  margin 10, negatives by shifting the batch by ``s``), except that ``s`` is drawn from
  ``[1, B - 1]`` (the official ``randint(0, B - 1)`` can draw 0, which makes every "negative" a
  positive) and a shifted pair whose two motions have the same caption set (``group``) is not
  used as a negative (Bandai captions come from the clip's content and style, so such pairs
  are true matches; on HumanML3D every motion has its own captions and nothing changes).
  ``"infonce"`` is a symmetric InfoNCE on negative Euclidean distances over the whole batch
  (same-group pairs masked), an alternative with B - 1 negatives per pair.

:class:`FrozenT2MEvaluator` is the trained evaluator as results use it: weights, the tokenizer
and the feature mean / std it was trained with, one :meth:`~FrozenT2MEvaluator.fingerprint`
over all of them (:func:`evaluator_fingerprint`) that every text-to-motion result prints, and
jitted, fixed-shape embedding of texts and motions.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import ConfigError, ShapeError

Array = jax.Array

__all__ = [
    "T2MEvaluatorConfig", "BiGRU", "MovementEncoder", "MotionEncoder", "TextEncoder", "T2MEvaluator",
    "matching_loss", "evaluator_fingerprint", "FrozenT2MEvaluator", "LOSSES",
]

LOSSES = ("margin", "infonce")


@dataclasses.dataclass(frozen=True)
class T2MEvaluatorConfig:
    """Sizes of the evaluator (defaults: Guo et al.'s HumanML3D evaluator, about 20 M
    parameters with a 300-word vocabulary)."""

    vocab_size: int
    word_dim: int = 300  # GloVe-300 in the official model; a learned embedding here
    text_hidden: int = 512  # text bi-GRU width (dim_text_hidden)
    movement_hidden: int = 512  # first conv's channels (dim_movement_enc_hidden)
    movement_latent: int = 512  # movement features (dim_movement_latent)
    motion_hidden: int = 1024  # motion bi-GRU width (dim_motion_hidden)
    embed_dim: int = 512  # shared embedding (dim_coemb_hidden)
    dropout: float = 0.2  # movement encoder dropout
    contact_dims: int = 4  # trailing feature channels left out (foot contacts)
    unit_length: int = 4  # frames per movement step (two stride-2 convolutions); fixed

    FIXED = ("unit_length",)

    def __post_init__(self):
        sizes = dict(vocab_size=self.vocab_size, word_dim=self.word_dim, text_hidden=self.text_hidden,
                     movement_hidden=self.movement_hidden, movement_latent=self.movement_latent,
                     motion_hidden=self.motion_hidden, embed_dim=self.embed_dim)
        bad = {k: v for k, v in sizes.items() if int(v) < 1}
        if bad or self.vocab_size < 5:
            raise ConfigError(f"T2MEvaluatorConfig sizes must be positive (vocab_size >= 5), got {bad or sizes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"T2MEvaluatorConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.contact_dims < 0:
            raise ConfigError(f"T2MEvaluatorConfig.contact_dims must be >= 0, got {self.contact_dims}")
        if self.unit_length != 4:
            raise ConfigError("T2MEvaluatorConfig.unit_length is 4 (two stride-2 convolutions)")

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


# --------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------

def _torch_uniform(fan: int):
    """PyTorch's default GRU initialisation: U(-1/sqrt(H), 1/sqrt(H))."""
    bound = 1.0 / math.sqrt(fan)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


_xavier = nn.initializers.xavier_normal()  # the official init_weight for Linear / Conv1d


def _flip_valid(x: Array, lengths: Array) -> Array:
    """``x (B, T, F)`` with each row's first ``lengths[b]`` steps reversed (padding stays last)."""
    T = x.shape[1]
    t = jnp.arange(T)[None, :]
    idx = jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return jnp.take_along_axis(x, idx[..., None], axis=1)


class _GRU(nn.Module):
    """One direction of a masked GRU: ``(x (B, T, F), lengths (B,), h0 (B, H)) -> h (B, H)``, the
    state after step ``lengths[b] - 1`` (``h0`` when the length is 0)."""

    hidden: int

    @nn.compact
    def __call__(self, x: Array, lengths: Array, h0: Array) -> Array:
        H = self.hidden
        init = _torch_uniform(H)
        xi = nn.Dense(3 * H, kernel_init=init, bias_init=init, name="input")(x)  # r, z, n
        wh = self.param("recurrent_kernel", init, (H, 3 * H))
        bh = self.param("recurrent_bias", init, (3 * H,))
        valid = jnp.arange(x.shape[1])[None, :] < lengths[:, None]

        def step(h, inp):
            xt, vt = inp
            hh = h @ wh + bh
            r = jax.nn.sigmoid(xt[:, :H] + hh[:, :H])
            z = jax.nn.sigmoid(xt[:, H:2 * H] + hh[:, H:2 * H])
            n = jnp.tanh(xt[:, 2 * H:] + r * hh[:, 2 * H:])
            return jnp.where(vt[:, None], (1.0 - z) * n + z * h, h), None

        h, _ = jax.lax.scan(step, h0, (jnp.swapaxes(xi, 0, 1), valid.T))
        return h


class BiGRU(nn.Module):
    """Bidirectional masked GRU with learned initial states (the official ``self.hidden``):
    ``(x (B, T, F), lengths (B,)) -> [last forward state, last backward state] (B, 2H)``."""

    hidden: int

    @nn.compact
    def __call__(self, x: Array, lengths: Array) -> Array:
        B = x.shape[0]
        h0 = self.param("initial_state", nn.initializers.normal(1.0), (2, self.hidden))
        lengths = jnp.asarray(lengths, jnp.int32)
        fwd = _GRU(self.hidden, name="forward")(x, lengths, jnp.broadcast_to(h0[0], (B, self.hidden)))
        bwd = _GRU(self.hidden, name="backward")(_flip_valid(x, lengths), lengths,
                                                 jnp.broadcast_to(h0[1], (B, self.hidden)))
        return jnp.concatenate([fwd, bwd], axis=-1)


def _head(x: Array, hidden: int, out: int) -> Array:
    """Linear -> LayerNorm -> LeakyReLU(0.2) -> Linear (the official ``output_net``)."""
    x = nn.Dense(hidden, kernel_init=_xavier, name="out_fc1")(x)
    x = nn.LayerNorm(epsilon=1e-5, name="out_norm")(x)
    return nn.Dense(out, kernel_init=_xavier, name="out_fc2")(nn.leaky_relu(x, 0.2))


class MovementEncoder(nn.Module):
    """``(motion (B, T, D), mask (B, T)) -> movements (B, T // 4, movement_latent)``; frames
    outside ``mask`` (a True prefix of a multiple of 4 frames) are zeroed first (as the official
    zero padding), and so are the first convolution's outputs beyond the motion's end (the
    official code lets the bias of padded steps reach the last valid ones, so an embedding
    depended on how much padding followed)."""

    cfg: T2MEvaluatorConfig

    @nn.compact
    def __call__(self, motion: Array, mask: Array, train: bool = False) -> Array:
        c = self.cfg
        D = motion.shape[-1] - c.contact_dims
        if D < 1:
            raise ShapeError(f"motion has {motion.shape[-1]} features, not more than contact_dims={c.contact_dims}")
        if motion.shape[1] % c.unit_length:
            raise ShapeError(f"motion length {motion.shape[1]} must be a multiple of {c.unit_length}")
        x = jnp.where(mask[..., None], motion[..., :D], 0.0)
        for i, width in enumerate((c.movement_hidden, c.movement_latent)):
            x = nn.Conv(width, (4,), strides=(2,), padding=((1, 1),), kernel_init=_xavier, name=f"conv{i}")(x)
            x = nn.Dropout(c.dropout)(x, deterministic=not train)
            x = nn.leaky_relu(x, 0.2)
            mask = mask[:, 1::2]  # valid steps at half the rate (lengths are multiples of 4)
            if i == 0:  # the second conv reads zeros beyond the end, however long the padding
                x = jnp.where(mask[..., None], x, 0.0)
        return nn.Dense(c.movement_latent, kernel_init=_xavier, name="out")(x)


class MotionEncoder(nn.Module):
    """``(movements (B, S, F), steps (B,)) -> (B, embed_dim)``."""

    cfg: T2MEvaluatorConfig

    @nn.compact
    def __call__(self, movements: Array, steps: Array) -> Array:
        c = self.cfg
        x = nn.Dense(c.motion_hidden, kernel_init=_xavier, name="input")(movements)
        h = BiGRU(c.motion_hidden, name="gru")(x, steps)
        return _head(h, c.motion_hidden, c.embed_dim)


class TextEncoder(nn.Module):
    """``(ids (B, L), mask (B, L)) -> (B, embed_dim)``; ``mask`` is a True prefix per row."""

    cfg: T2MEvaluatorConfig

    @nn.compact
    def __call__(self, ids: Array, mask: Array) -> Array:
        c = self.cfg
        w = nn.Embed(c.vocab_size, c.word_dim, embedding_init=nn.initializers.normal(1.0), name="words")(ids)
        x = nn.Dense(c.text_hidden, kernel_init=_xavier, name="input")(w)
        h = BiGRU(c.text_hidden, name="gru")(x, jnp.sum(mask, axis=-1).astype(jnp.int32))
        return _head(h, c.text_hidden, c.embed_dim)


class T2MEvaluator(nn.Module):
    """The evaluator: ``__call__(motion (B, T, D), lengths (B,), ids (B, L), mask (B, L), train)
    -> (text_emb (B, E), motion_emb (B, E))``; :meth:`encode_motion` and :meth:`encode_text`
    alone (``model.apply(v, ..., method="encode_text")``). ``T`` must be a multiple of 4; the
    motion uses its first ``lengths[b] // 4 * 4`` frames. Dropout (``train=True``) needs a
    ``'dropout'`` rng."""

    cfg: T2MEvaluatorConfig

    def setup(self):
        self.movement = MovementEncoder(self.cfg)
        self.motion = MotionEncoder(self.cfg)
        self.text = TextEncoder(self.cfg)

    def encode_motion(self, motion: Array, lengths: Array, train: bool = False) -> Array:
        steps = jnp.asarray(lengths, jnp.int32) // self.cfg.unit_length
        mask = jnp.arange(motion.shape[1])[None, :] < (steps * self.cfg.unit_length)[:, None]
        mov = self.movement(motion, mask, train)
        return self.motion(mov, steps)

    def encode_text(self, ids: Array, mask: Array) -> Array:
        return self.text(ids, jnp.asarray(mask, bool))

    def __call__(self, motion, lengths, ids, mask, train: bool = False):
        return self.encode_text(ids, mask), self.encode_motion(motion, lengths, train)


# --------------------------------------------------------------------------
# loss
# --------------------------------------------------------------------------

def _pairwise(a: Array, b: Array) -> Array:
    sq = jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2.0 * a @ b.T
    return jnp.sqrt(jnp.maximum(sq, 1e-12))


def matching_loss(text_emb: Array, motion_emb: Array, rng: Array, *, kind: str = "margin",
                  margin: float = 10.0, temperature: float = 0.1,
                  group: Array | None = None) -> tuple[Array, dict[str, Array]]:
    """Contrastive text-motion loss and its metrics (see the module doc).

    Args:
      text_emb, motion_emb: ``(B, E)``, row ``i`` a matching pair.
      rng: draws the batch shift of the margin loss.
      kind: ``"margin"`` (official) or ``"infonce"``.
      group: ``(B,) int`` caption-set id per pair; pairs of one group are never negatives.

    Returns:
      ``(loss, metrics)``: ``pos_dist`` / ``neg_dist`` (mean matched / unmatched distance),
      ``batch_top1`` (text -> motion retrieval among the batch), and the loss parts.
    """
    B = text_emb.shape[0]
    if B < 2:
        raise ShapeError(f"matching_loss needs at least 2 pairs, got {B}")
    if group is None:
        group = jnp.arange(B)
    group = jnp.asarray(group)
    dist = _pairwise(text_emb, motion_emb)
    pos = jnp.diagonal(dist)
    other = group[:, None] != group[None, :]  # usable negatives
    eye = jnp.eye(B, dtype=bool)
    metrics = {
        "pos_dist": jnp.mean(pos),
        "neg_dist": jnp.sum(jnp.where(eye, 0.0, dist)) / (B * (B - 1)),
        "batch_top1": jnp.mean(jnp.argmin(dist, axis=1) == jnp.arange(B)),
    }
    if kind == "margin":
        shift = jax.random.randint(rng, (), 1, B)
        partner = (jnp.arange(B) + shift) % B
        d_neg = jnp.linalg.norm(text_emb - motion_emb[partner], axis=-1)
        use = (group != group[partner]).astype(dist.dtype)
        loss_pos = jnp.mean(jnp.linalg.norm(text_emb - motion_emb, axis=-1) ** 2)
        loss_neg = jnp.sum(use * jnp.maximum(margin - d_neg, 0.0) ** 2) / jnp.maximum(jnp.sum(use), 1.0)
        metrics.update(loss_pos=loss_pos, loss_neg=loss_neg)
        return loss_pos + loss_neg, metrics
    if kind == "infonce":
        logits = jnp.where(other | eye, -dist / temperature, -1e9)
        labels = jnp.arange(B)
        lt = -jnp.mean(jax.nn.log_softmax(logits, axis=1)[labels, labels])
        lm = -jnp.mean(jax.nn.log_softmax(logits, axis=0)[labels, labels])
        metrics.update(loss_t2m=lt, loss_m2t=lm)
        return 0.5 * (lt + lm), metrics
    raise ConfigError(f"matching_loss kind must be one of {LOSSES}, got {kind!r}")


# --------------------------------------------------------------------------
# the frozen evaluator
# --------------------------------------------------------------------------

FINGERPRINT_VERSION = "mmar-t2m-evaluator-v1"


def _leaves_with_paths(tree: Any) -> list[tuple[str, np.ndarray]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    out = [(jax.tree_util.keystr(p), np.asarray(v)) for p, v in flat]
    return sorted(out, key=lambda kv: kv[0])


def evaluator_fingerprint(params: Any, tokenizer_json: dict, mean: Any, std: Any,
                          config: T2MEvaluatorConfig | dict | None = None, length: int = 12) -> str:
    """First ``length`` hex digits of a SHA-256 over everything that decides the embeddings:
    the architecture (``config``), every parameter (sorted by path; name, dtype, shape and
    little-endian bytes), the tokenizer (its JSON) and the feature mean / std (float32)."""
    h = hashlib.sha256(FINGERPRINT_VERSION.encode())
    if config is not None:
        cj = config.to_json() if isinstance(config, T2MEvaluatorConfig) else dict(config)
        h.update(json.dumps(cj, sort_keys=True).encode())
    for path, v in _leaves_with_paths(params):
        v = np.ascontiguousarray(v)
        v = v.astype(v.dtype.newbyteorder("<"), copy=False)
        h.update(f"{path}|{v.dtype.str}|{v.shape}".encode())
        h.update(v.tobytes())
    h.update(json.dumps(tokenizer_json, sort_keys=True, ensure_ascii=False).encode())
    for a in (mean, std):
        h.update(np.ascontiguousarray(np.asarray(a, "<f4")).tobytes())
    return h.hexdigest()[:length]


@functools.partial(jax.jit, static_argnames=("cfg",))
def _embed_motion(params, motion, lengths, *, cfg):
    return T2MEvaluator(cfg).apply({"params": params}, motion, lengths, method="encode_motion")


@functools.partial(jax.jit, static_argnames=("cfg",))
def _embed_text(params, ids, mask, *, cfg):
    return T2MEvaluator(cfg).apply({"params": params}, ids, mask, method="encode_text")


class FrozenT2MEvaluator:
    """A trained evaluator as metrics use it (no gradients, fixed shapes, numpy out).

    Attributes:
      config: :class:`T2MEvaluatorConfig`; params: its weights; tokenizer: the
        :class:`~mmar.models.text.Tokenizer` it was trained with; mean, std: ``(D,)`` feature
        statistics its motions are normalised with (generated motions must be normalised with
        *these*, not the generator's); fingerprint: :func:`evaluator_fingerprint`;
        info: where it came from (run, step, ...).
    """

    def __init__(self, config: T2MEvaluatorConfig, params: Any, tokenizer, mean: Any, std: Any,
                 info: dict | None = None, max_len: int = 196, motion_batch: int = 32, text_batch: int = 256):
        self.config = config
        self.params = jax.tree_util.tree_map(jnp.asarray, params)
        self.tokenizer = tokenizer
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        if self.mean.shape != self.std.shape or self.mean.ndim != 1:
            raise ShapeError(f"mean and std must both be (D,), got {self.mean.shape} and {self.std.shape}")
        self.info = dict(info or {})
        self.max_len = int(max_len) // config.unit_length * config.unit_length
        self.motion_batch, self.text_batch = int(motion_batch), int(text_batch)
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        """:func:`evaluator_fingerprint` of this evaluator (12 hex digits)."""
        if self._fingerprint is None:
            self._fingerprint = evaluator_fingerprint(self.params, self.tokenizer.to_json(), self.mean, self.std,
                                                      self.config)
        return self._fingerprint

    @property
    def feature_dim(self) -> int:
        return int(self.mean.shape[0])

    def normalize(self, features: Any) -> np.ndarray:
        return ((np.asarray(features, np.float32) - self.mean) / self.std).astype(np.float32)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, E)`` float32 embeddings of ``texts`` (batches of ``text_batch``, one compile)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return np.zeros((0, self.config.embed_dim), np.float32)
        ids, mask = self.tokenizer.encode(texts)
        return self.embed_tokens(ids, mask)

    def embed_tokens(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``(N, E)`` embeddings of already tokenized captions ``ids, mask (N, L)``."""
        out = []
        B = self.text_batch
        for s in range(0, len(ids), B):
            i, m = ids[s:s + B], mask[s:s + B]
            n = len(i)
            if n < B:  # pad with copies of the first row: same shapes, one compilation
                i = np.concatenate([i, np.repeat(i[:1], B - n, 0)])
                m = np.concatenate([m, np.repeat(m[:1], B - n, 0)])
            out.append(np.asarray(_embed_text(self.params, jnp.asarray(i), jnp.asarray(m), cfg=self.config))[:n])
        return np.concatenate(out).astype(np.float32)

    def embed_motion(self, motion: Any, lengths: Any, normalized: bool = True) -> np.ndarray:
        """``(N, E)`` embeddings of motions ``(N, T, D)`` with ``lengths (N,)`` (frames; the first
        ``length // 4 * 4`` are read). ``normalized=False``: raw features, normalised here with
        the evaluator's own mean / std. Padded to ``(motion_batch, max_len)`` per call."""
        motion = np.asarray(motion, np.float32)
        lengths = np.asarray(lengths, np.int64)
        if motion.ndim != 3 or motion.shape[2] != self.feature_dim or lengths.shape != motion.shape[:1]:
            raise ShapeError(f"need motion (N, T, {self.feature_dim}) and lengths (N,), got {motion.shape} "
                             f"and {lengths.shape}")
        if (lengths > self.max_len).any() or (lengths > motion.shape[1]).any():
            raise ShapeError(f"lengths must be <= min(T, {self.max_len}), got max {lengths.max()}")
        if not normalized:
            motion = self.normalize(motion)
        T = self.max_len
        out = []
        B = self.motion_batch
        for s in range(0, len(motion), B):
            x = np.zeros((B, T, self.feature_dim), np.float32)
            part = motion[s:s + B, :T]
            n = len(part)
            x[:n, :part.shape[1]] = part
            L = np.zeros(B, np.int32)
            L[:n] = lengths[s:s + B]
            out.append(np.asarray(_embed_motion(self.params, jnp.asarray(x), jnp.asarray(L), cfg=self.config))[:n])
        if not out:
            return np.zeros((0, self.config.embed_dim), np.float32)
        return np.concatenate(out).astype(np.float32)

    def __repr__(self) -> str:
        return f"FrozenT2MEvaluator(fingerprint={self.fingerprint}, vocab={self.tokenizer.vocab_size})"
