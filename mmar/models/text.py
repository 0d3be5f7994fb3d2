"""Pluggable text encoders: a tokenizer, one protocol, and three implementations.

The scale-wise transformer reads text through :class:`mmar.models.conditioning.TextCrossAttention`,
which takes per-token features ``(B, L, D)`` with a mask ``(B, L)`` (``L <= max_len``; True =
real token). Every encoder here produces exactly that, plus a pooled vector ``(B, D)`` (for an
AdaLN condition without attentive pooling, or a text embedding for retrieval)::

    ids, mask = tokenizer.encode(texts)                  # host, numpy, static (B, max_len)
    tokens, pooled = encoder.encode(variables, ids, mask)  # jit-able
    cond = TextCrossAttention(text_dim=encoder.dim, max_len=encoder.max_len, ...)(tokens, mask)

Protocol (:class:`TextEncoder`): attributes ``dim`` and ``max_len``, and
``encode(variables, ids (B, L) int32, mask (B, L) bool) -> (tokens (B, L, dim), pooled (B, dim))``
with ``L <= max_len``. In every implementation ``tokens`` is exactly zero at padded positions,
the outputs at real positions do not depend on what the padded positions hold, and ``pooled``
ignores padding.

Implementations:

* :class:`TransformerTextEncoder` (default; Flax Linen, trained here from scratch together with
  the generator or evaluator, nothing downloaded) with the word-level :class:`Tokenizer` built
  from the captions. Pre-norm transformer, key-padding-masked attention, learned absolute
  positions; ``pooled`` is the final-normed output at the ``[CLS]`` position (``pool='cls'``,
  default) or the masked mean over real tokens (``pool='mean'``).
* :class:`PrecomputedTextFeatures` -- features a user computed offline with T5 or CLIP, read
  from one ``.npz`` file (format below; :func:`save_text_features` /
  :func:`precompute_text_features` write it, ``tools/precompute_text_features.py`` runs a local
  Hugging Face T5 over a caption list). Its "token ids" are the captions' row numbers in the file.
* :class:`FlaxT5TextEncoder` -- adapter for ``transformers``' ``FlaxT5EncoderModel`` (optional
  dependency, ``transformers>=4.40,<5``: Flax models were removed in transformers 5). Imported
  lazily; nothing in this module needs ``transformers`` otherwise.

Tokenizer fallbacks (documented behaviour, tested):

* text is lower-cased (after Unicode NFKC) and split into words and single punctuation
  characters (``"bye-bye,"`` -> ``bye - bye ,``);
* unknown words map to ``[UNK]``; every encode adds them to ``Tokenizer.unknown_counts``
  (a :class:`collections.Counter`; :meth:`Tokenizer.unknown_words` lists them for any texts
  without encoding); ``unknown='error'`` raises :class:`TextInputError` instead;
* empty text (nothing left after splitting: ``""``, ``"   "``) raises :class:`TextInputError`
  naming the index;
* over-long text (more than ``max_len - 2`` pieces) is truncated to its first ``max_len - 2``
  pieces, still between ``[CLS]`` and ``[EOS]``, with a :class:`TextTruncatedWarning` that says
  how many texts were cut (``overflow='error'`` raises :class:`TextInputError` instead).

Sequence layout: ``[CLS] w_1 .. w_n [EOS] [PAD] ..``; ``mask`` is True on ``[CLS]``, the words
and ``[EOS]``. Ids: ``[PAD]=0, [UNK]=1, [CLS]=2, [EOS]=3``, then words by falling corpus count
(ties alphabetical).

Precomputed feature file (``.npz``, read without pickle):

========== ============== ==========================================================
key        shape / dtype  meaning
========== ============== ==========================================================
texts      (N,) str       captions, unique after whitespace collapsing (case kept)
features   (N, L, D) f16  per-token features, zero where ``mask`` is False (f32 too)
mask       (N, L) bool    True = real token (at least one per row)
pooled     (N, D)         optional pooled vector; if absent, the masked mean is used
encoder    () str         optional: what produced them (e.g. ``google/t5-v1_1-base``)
========== ============== ==========================================================

MoScale uses T5-v1.1-base with 20 tokens (``max_len=20``, ``D=768``), ScaleMoGen Flan-T5-XL
(``D=2048``); see ``../shared/reference/next-scale-notes.md``.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import re
import unicodedata
import warnings
import zipfile
from typing import Any, Callable, Iterable, NamedTuple, Protocol, Sequence, runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import ConfigError, DataFormatError, MmarError, ShapeError

Array = jax.Array

__all__ = [
    "PAD", "UNK", "CLS", "EOS", "SPECIAL_TOKENS",
    "TextInputError", "CaptionNotFoundError", "TextTruncatedWarning",
    "Tokenizer", "split_words",
    "TextEncoder", "TextFeatures", "masked_mean",
    "TextEncoderConfig", "TransformerTextEncoder",
    "PrecomputedTextFeatures", "save_text_features", "precompute_text_features",
    "FlaxT5TextEncoder", "hf_tokenize",
]

PAD, UNK, CLS, EOS = "[PAD]", "[UNK]", "[CLS]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, CLS, EOS)
PAD_ID, UNK_ID, CLS_ID, EOS_ID = 0, 1, 2, 3

_TOKENIZER_FORMAT = "mmar.text.Tokenizer"
_WORD_RE = re.compile(r"\w+|[^\w\s]")


class TextInputError(MmarError, ValueError):
    """A text cannot be encoded: empty, over-long (with ``overflow='error'``), made of unknown
    words (with ``unknown='error'``), or not a string."""


class CaptionNotFoundError(TextInputError, KeyError):
    """A caption is missing from a precomputed feature file."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class TextTruncatedWarning(UserWarning):
    """Some texts were longer than the tokenizer's ``max_len`` and were truncated."""


def _few(items, k: int = 5) -> str:
    """The first ``k`` of ``items`` (repr), then how many more: for error messages."""
    items = list(items)
    shown = ", ".join(repr(x) for x in items[:k])
    return shown + (f", ... ({len(items) - k} more)" if len(items) > k else "")


def _as_text_list(texts: str | Iterable[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TextInputError(f"text {i} is not a string: {type(t).__name__} {t!r:.60}")
    return out


def split_words(text: str, lowercase: bool = True) -> list[str]:
    """NFKC-normalise, lower-case, split into words (``\\w+``) and single punctuation marks."""
    text = unicodedata.normalize("NFKC", text)
    if lowercase:
        text = text.lower()
    return _WORD_RE.findall(text)


def _check_overflow_mode(overflow: str, unknown: str) -> None:
    if overflow not in ("truncate", "error"):
        raise ConfigError(f"overflow must be 'truncate' or 'error', got {overflow!r}")
    if unknown not in ("unk", "error"):
        raise ConfigError(f"unknown must be 'unk' or 'error', got {unknown!r}")


def _warn_truncated(cut: list[tuple[int, int]], texts: list[str], max_len: int, what: str) -> None:
    i, n = cut[0]
    warnings.warn(
        f"{what}: {len(cut)} of {len(texts)} texts longer than max_len={max_len} were truncated "
        f"(first: text {i}, {n} tokens: {texts[i]!r:.80})", TextTruncatedWarning, stacklevel=3)


# --------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------

class Tokenizer:
    """Word-level tokenizer with a fixed ``max_len`` (static shapes; ``[CLS]`` and ``[EOS]``
    included). Build from a corpus with :meth:`build`, store with :meth:`save` / :meth:`load`."""

    def __init__(self, vocab: Sequence[str], max_len: int, lowercase: bool = True):
        vocab = list(vocab)
        if tuple(vocab[:4]) != SPECIAL_TOKENS:
            raise ConfigError(f"Tokenizer vocab must start with {list(SPECIAL_TOKENS)}, got {vocab[:4]}")
        if len(set(vocab)) != len(vocab):
            dup = [w for w, c in collections.Counter(vocab).items() if c > 1]
            raise ConfigError(f"Tokenizer vocab has duplicate entries: {_few(dup)}")
        if int(max_len) < 3:
            raise ConfigError(f"Tokenizer max_len must be >= 3 ([CLS] word [EOS]), got {max_len}")
        self.vocab: tuple[str, ...] = tuple(vocab)
        self.max_len = int(max_len)
        self.lowercase = bool(lowercase)
        self._index = {w: i for i, w in enumerate(self.vocab)}
        self.unknown_counts: collections.Counter = collections.Counter()

    # ---- construction ----------------------------------------------------
    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1, max_len: int | None = None,
              max_vocab: int | None = None, lowercase: bool = True) -> "Tokenizer":
        """Vocabulary of the words seen at least ``min_count`` times (at most ``max_vocab``
        words, most frequent first). ``max_len=None`` fits the corpus: the longest text plus
        ``[CLS]`` and ``[EOS]``, so no corpus text is truncated."""
        texts = _as_text_list(texts)
        counts: collections.Counter = collections.Counter()
        longest = 0
        for t in texts:
            w = split_words(t, lowercase)
            counts.update(w)
            longest = max(longest, len(w))
        if not counts:
            raise TextInputError("Tokenizer.build: the corpus has no words")
        # split_words never yields a special token ("[PAD]" -> "[", "pad", "]")
        words = sorted((w for w, c in counts.items() if c >= int(min_count)), key=lambda w: (-counts[w], w))
        if max_vocab is not None:
            words = words[: int(max_vocab)]
        return cls(list(SPECIAL_TOKENS) + words, longest + 2 if max_len is None else int(max_len), lowercase)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    pad_id, unk_id, cls_id, eos_id = PAD_ID, UNK_ID, CLS_ID, EOS_ID

    def split(self, text: str) -> list[str]:
        return split_words(text, self.lowercase)

    # ---- encoding --------------------------------------------------------
    def unknown_words(self, texts: str | Iterable[str]) -> collections.Counter:
        """Counter of the words of ``texts`` that are not in the vocabulary (no side effect)."""
        out: collections.Counter = collections.Counter()
        for t in _as_text_list(texts):
            out.update(w for w in self.split(t) if w not in self._index)
        return out

    def reset_unknown_counts(self) -> None:
        self.unknown_counts.clear()

    def encode(self, texts: str | Iterable[str], overflow: str = "truncate",
               unknown: str = "unk") -> tuple[np.ndarray, np.ndarray]:
        """``ids (B, max_len) int32`` and ``mask (B, max_len) bool``; see the module doc for
        unknown words (``unknown='unk'|'error'``), empty and over-long texts
        (``overflow='truncate'|'error'``)."""
        _check_overflow_mode(overflow, unknown)
        texts = _as_text_list(texts)
        B, L = len(texts), self.max_len
        ids = np.full((B, L), PAD_ID, np.int32)
        mask = np.zeros((B, L), bool)
        cut: list[tuple[int, int]] = []
        unk: collections.Counter = collections.Counter()
        for b, t in enumerate(texts):
            words = self.split(t)
            if not words:
                raise TextInputError(f"text {b} is empty ({t!r}): nothing to encode")
            if len(words) > L - 2:
                if overflow == "error":
                    raise TextInputError(f"text {b} has {len(words)} words, more than max_len - 2 = {L - 2}: "
                                         f"{t!r:.80}")
                cut.append((b, len(words) + 2))
                words = words[: L - 2]
            row = [self._index.get(w, UNK_ID) for w in words]
            unk.update(w for w, i in zip(words, row) if i == UNK_ID)
            n = len(row) + 2
            ids[b, :n] = [CLS_ID, *row, EOS_ID]
            mask[b, :n] = True
        if unk and unknown == "error":
            raise TextInputError(f"{sum(unk.values())} unknown words: {_few(sorted(unk))}")
        self.unknown_counts.update(unk)
        if cut:
            _warn_truncated(cut, texts, L, "Tokenizer.encode")
        return ids, mask

    def decode(self, ids: Any, mask: Any | None = None) -> list[str]:
        """Tokens of each row joined by spaces, ``[PAD]``/``[CLS]``/``[EOS]`` left out (``[UNK]``
        kept); with ``mask``, only its True positions."""
        ids = np.asarray(ids)
        if ids.ndim == 1:
            ids = ids[None]
        keep = np.ones(ids.shape, bool) if mask is None else np.asarray(mask, bool).reshape(ids.shape)
        out = []
        for row, m in zip(ids, keep):
            out.append(" ".join(self.vocab[int(i)] for i, k in zip(row, m)
                                if k and int(i) not in (PAD_ID, CLS_ID, EOS_ID)))
        return out

    # ---- JSON --------------------------------------------------------------
    def to_json(self) -> dict:
        return {"format": _TOKENIZER_FORMAT, "version": 1, "max_len": self.max_len,
                "lowercase": self.lowercase, "vocab": list(self.vocab)}

    @classmethod
    def from_json(cls, obj: dict, path: str | None = None) -> "Tokenizer":
        if not isinstance(obj, dict) or obj.get("format") != _TOKENIZER_FORMAT:
            raise DataFormatError(f"not a tokenizer file (format must be {_TOKENIZER_FORMAT!r})", path)
        if obj.get("version") != 1:
            raise DataFormatError(f"unsupported tokenizer version {obj.get('version')!r}", path)
        try:
            return cls(obj["vocab"], obj["max_len"], obj.get("lowercase", True))
        except KeyError as err:
            raise DataFormatError(f"tokenizer file lacks {err}", path) from None
        except ConfigError as err:
            raise DataFormatError(str(err), path) from None

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, ensure_ascii=False, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
        except json.JSONDecodeError as err:
            raise DataFormatError(f"invalid JSON: {err.msg}", path, err.lineno) from None
        return cls.from_json(obj, path)

    def __eq__(self, other) -> bool:
        return isinstance(other, Tokenizer) and self.to_json() == other.to_json()

    __hash__ = None  # mutable (unknown_counts)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, max_len={self.max_len})"


# --------------------------------------------------------------------------
# protocol
# --------------------------------------------------------------------------

class TextFeatures(NamedTuple):
    tokens: Any   # (B, L, D), zero at padding
    mask: Any     # (B, L) bool
    pooled: Any   # (B, D)


@runtime_checkable
class TextEncoder(Protocol):
    """``encode(variables, ids (B, L), mask (B, L)) -> (tokens (B, L, dim), pooled (B, dim))``,
    ``L <= max_len``; tokens zero at padding, pooled independent of padding."""

    dim: int
    max_len: int

    def encode(self, variables: Any, ids: Array, mask: Array) -> tuple[Array, Array]: ...


def masked_mean(x: Array, mask: Array) -> Array:
    """Mean of ``x (B, L, D)`` over the True positions of ``mask (B, L)`` (0 for empty rows)."""
    m = jnp.asarray(mask, x.dtype)[..., None]
    return (x * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)


def _check_ids(ids, mask, max_len: int, what: str):
    ids = jnp.asarray(ids)
    mask = jnp.asarray(mask, bool)
    if ids.ndim != 2 or mask.shape != ids.shape:
        raise ShapeError(f"{what}: ids and mask must both be (B, L), got {ids.shape} and {mask.shape}")
    if ids.shape[1] > max_len:
        raise ShapeError(f"{what}: length {ids.shape[1]} exceeds max_len {max_len}")
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ShapeError(f"{what}: ids must be integers, got {ids.dtype}")
    return ids, mask


# --------------------------------------------------------------------------
# default: a small transformer trained here
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    """``pool``: ``'cls'`` (output at the [CLS] position) or ``'mean'`` (masked mean)."""

    vocab_size: int
    width: int = 256
    depth: int = 4
    heads: int = 4
    max_len: int = 32
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    pool: str = "cls"
    init_std: float = 0.02

    def __post_init__(self):
        if self.vocab_size < len(SPECIAL_TOKENS) + 1:
            raise ConfigError(f"TextEncoderConfig.vocab_size must cover the 4 special tokens and a word, "
                              f"got {self.vocab_size}")
        if self.width < 1 or self.depth < 1 or self.heads < 1 or self.max_len < 3:
            raise ConfigError(f"TextEncoderConfig sizes out of range: width={self.width} depth={self.depth} "
                              f"heads={self.heads} max_len={self.max_len}")
        if self.width % self.heads:
            raise ConfigError(f"TextEncoderConfig.width {self.width} not divisible by heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"TextEncoderConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.pool not in ("cls", "mean"):
            raise ConfigError(f"TextEncoderConfig.pool must be 'cls' or 'mean', got {self.pool!r}")

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer, **kw) -> "TextEncoderConfig":
        return cls(vocab_size=tokenizer.vocab_size, max_len=tokenizer.max_len, **kw)


class _TextBlock(nn.Module):
    cfg: TextEncoderConfig

    @nn.compact
    def __call__(self, h: Array, key_mask: Array, deterministic: bool) -> Array:
        c = self.cfg
        init = nn.initializers.normal(c.init_std)
        out_init = nn.initializers.normal(c.init_std / math.sqrt(2 * c.depth))
        a = nn.LayerNorm(name="ln1")(h)
        a = nn.MultiHeadDotProductAttention(
            num_heads=c.heads, qkv_features=c.width, out_features=c.width, dropout_rate=c.dropout,
            kernel_init=init, out_kernel_init=out_init, name="attn",
        )(a, a, mask=key_mask, deterministic=deterministic)
        h = h + nn.Dropout(c.dropout)(a, deterministic=deterministic)
        m = nn.LayerNorm(name="ln2")(h)
        m = nn.Dense(int(c.width * c.mlp_ratio), kernel_init=init, name="fc1")(m)
        m = nn.Dense(c.width, kernel_init=out_init, name="fc2")(nn.gelu(m, approximate=True))
        return h + nn.Dropout(c.dropout)(m, deterministic=deterministic)


class TransformerTextEncoder(nn.Module):
    """Small pre-norm transformer text encoder (the default :class:`TextEncoder`).

    ``__call__(ids (B, L), mask (B, L), train=False) -> (tokens (B, L, width), pooled (B, width))``,
    ``L <= max_len``. Token + learned position embeddings; each block ``h += Attn(LN(h))``
    (keys masked by ``mask``), ``h += MLP(LN(h))`` (GELU-tanh); a final LayerNorm. ``tokens``
    is zeroed at padding; ``pooled`` is the [CLS] output (``pool='cls'``; the tokenizer puts
    [CLS] at position 0) or the masked mean. Dropout (``train=True``) needs a ``'dropout'`` rng.
    """

    config: TextEncoderConfig

    @property
    def dim(self) -> int:
        return self.config.width

    @property
    def max_len(self) -> int:
        return self.config.max_len

    @nn.compact
    def __call__(self, ids: Array, mask: Array, train: bool = False) -> tuple[Array, Array]:
        c = self.config
        ids, mask = _check_ids(ids, mask, c.max_len, "TransformerTextEncoder")
        L = ids.shape[1]
        init = nn.initializers.normal(c.init_std)
        h = nn.Embed(c.vocab_size, c.width, embedding_init=init, name="token_emb")(ids)
        pos = self.param("pos_emb", init, (c.max_len, c.width))
        h = h + pos[None, :L]
        h = nn.Dropout(c.dropout)(h, deterministic=not train)
        key_mask = mask[:, None, None, :]  # (B, 1, 1, L): every query sees the real keys only
        for i in range(c.depth):
            h = _TextBlock(c, name=f"block{i}")(h, key_mask, not train)
        h = nn.LayerNorm(name="ln_out")(h)
        tokens = jnp.where(mask[..., None], h, 0.0)
        pooled = h[:, 0] if c.pool == "cls" else masked_mean(h, mask)
        return tokens, pooled

    @nn.nowrap
    def encode(self, variables: Any, ids: Array, mask: Array, train: bool = False,
               rngs: Any = None) -> tuple[Array, Array]:
        """Protocol entry point: ``self.apply(variables, ids, mask, train)``."""
        return self.apply(variables, ids, mask, train, rngs=rngs)


# --------------------------------------------------------------------------
# precomputed features (T5 / CLIP run offline)
# --------------------------------------------------------------------------

def _caption_key(text: str) -> str:
    return " ".join(text.split())


def save_text_features(path: str | os.PathLike, texts: Sequence[str], features: Any, mask: Any,
                       pooled: Any | None = None, encoder: str = "", dtype: Any = np.float16) -> None:
    """Write the ``.npz`` read by :class:`PrecomputedTextFeatures` (format in the module doc).
    Features at masked-out positions are zeroed; ``dtype`` is the stored float type."""
    texts = [_caption_key(t) for t in _as_text_list(texts)]
    features = np.asarray(features, np.float32)
    mask = np.asarray(mask, bool)
    N = len(texts)
    if features.ndim != 3 or features.shape[0] != N or mask.shape != features.shape[:2]:
        raise ShapeError(f"save_text_features: need features (N={N}, L, D) and mask (N, L), "
                         f"got {features.shape} and {mask.shape}")
    if N and not mask.any(axis=1).all():
        raise ShapeError(f"save_text_features: rows without any real token: {_few(np.nonzero(~mask.any(1))[0])}")
    dup = [t for t, c in collections.Counter(texts).items() if c > 1]
    if dup:
        raise TextInputError(f"save_text_features: duplicate captions: {_few(dup)}")
    arrays = {"texts": np.asarray(texts, dtype=str), "features": (features * mask[..., None]).astype(dtype),
              "mask": mask, "encoder": np.asarray(str(encoder))}
    if pooled is not None:
        pooled = np.asarray(pooled, np.float32)
        if pooled.shape != (N, features.shape[2]):
            raise ShapeError(f"save_text_features: pooled must be ({N}, {features.shape[2]}), got {pooled.shape}")
        arrays["pooled"] = pooled.astype(dtype)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def precompute_text_features(path: str | os.PathLike, texts: Iterable[str],
                             encode_fn: Callable[[list[str]], tuple[Any, Any] | tuple[Any, Any, Any]],
                             batch_size: int = 64, encoder: str = "", dtype: Any = np.float16) -> int:
    """Run ``encode_fn(batch of texts) -> (features (b, L, D), mask (b, L)[, pooled (b, D)])``
    over the unique captions of ``texts`` and save them with :func:`save_text_features`.
    Every batch is padded to ``batch_size`` (repeating its last text) so a jitted ``encode_fn``
    compiles once. Returns the number of captions written."""
    uniq = list(dict.fromkeys(_caption_key(t) for t in _as_text_list(texts)))
    if not uniq:
        raise TextInputError("precompute_text_features: no texts")
    feats, masks, pools = [], [], []
    for s in range(0, len(uniq), int(batch_size)):
        chunk = uniq[s: s + int(batch_size)]
        n = len(chunk)
        out = encode_fn(chunk + [chunk[-1]] * (int(batch_size) - n))
        feats.append(np.asarray(out[0], np.float32)[:n])
        masks.append(np.asarray(out[1], bool)[:n])
        if len(out) > 2 and out[2] is not None:
            pools.append(np.asarray(out[2], np.float32)[:n])
    pooled = np.concatenate(pools) if pools else None
    save_text_features(path, uniq, np.concatenate(feats), np.concatenate(masks), pooled, encoder, dtype)
    return len(uniq)


class PrecomputedTextFeatures:
    """Per-token features read from a ``.npz`` file (format in the module doc).

    ``lookup(texts)`` gives numpy :class:`TextFeatures` (host side, e.g. in a data pipeline).
    As a :class:`TextEncoder`: ``tokenize(texts) -> (ids, mask)`` where every position of row b
    holds caption b's row number in the file, and ``encode(self.variables, ids, mask)`` gathers
    the rows (jit-able; ``variables`` puts the whole table on the device, so use ``lookup`` for
    large files). Captions are matched after collapsing whitespace; case matters (T5 and CLIP
    are case-sensitive). A caption missing from the file raises :class:`CaptionNotFoundError`.
    """

    def __init__(self, texts: Sequence[str], features: np.ndarray, mask: np.ndarray,
                 pooled: np.ndarray | None = None, encoder: str = "", path: str | None = None):
        self.path = path
        self.texts = [str(t) for t in texts]
        self.features = np.asarray(features)
        self.mask = np.asarray(mask, bool)
        N = len(self.texts)
        if self.features.ndim != 3 or self.features.shape[0] != N or self.mask.shape != self.features.shape[:2]:
            raise DataFormatError(f"need texts (N,), features (N, L, D), mask (N, L); got N={N}, "
                                  f"{self.features.shape}, {self.mask.shape}", path)
        if N == 0:
            raise DataFormatError("no captions in the file", path)
        if not self.mask.any(axis=1).all():
            raise DataFormatError(f"rows without any real token: {_few(np.nonzero(~self.mask.any(1))[0])}", path)
        if pooled is not None:
            pooled = np.asarray(pooled)
            if pooled.shape != (N, self.features.shape[2]):
                raise DataFormatError(f"pooled must be ({N}, {self.features.shape[2]}), got {pooled.shape}", path)
        self.pooled = pooled
        self.encoder = str(encoder)
        self._row = {}
        for i, t in enumerate(self.texts):
            k = _caption_key(t)
            if k in self._row:
                raise DataFormatError(f"duplicate caption {t!r} (rows {self._row[k]} and {i})", path)
            self._row[k] = i

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PrecomputedTextFeatures":
        path = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in ("texts", "features", "mask") if k not in z.files]
                if missing:
                    raise DataFormatError(f"missing arrays {missing} (has {sorted(z.files)})", path)
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            if isinstance(err, DataFormatError):
                raise
            raise DataFormatError(f"cannot read text features: {err}", path) from None
        return cls(arrays["texts"].tolist(), arrays["features"], arrays["mask"], arrays.get("pooled"),
                   str(arrays["encoder"]) if "encoder" in arrays else "", path)

    @property
    def dim(self) -> int:
        return int(self.features.shape[2])

    @property
    def max_len(self) -> int:
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return len(self.texts)

    def __contains__(self, text: str) -> bool:
        return _caption_key(text) in self._row

    def rows(self, texts: str | Iterable[str]) -> np.ndarray:
        """``(B,) int32`` row of each caption; :class:`CaptionNotFoundError` lists the missing."""
        texts = _as_text_list(texts)
        keys = [_caption_key(t) for t in texts]
        missing = [t for t, k in zip(texts, keys) if k not in self._row]
        if missing:
            where = f" in {self.path}" if self.path else ""
            raise CaptionNotFoundError(f"{len(missing)} of {len(texts)} captions have no precomputed features"
                                       f"{where}: {_few(missing, 3)}")
        return np.asarray([self._row[k] for k in keys], np.int32)

    def _pooled_rows(self, r: np.ndarray) -> np.ndarray:
        if self.pooled is not None:
            return self.pooled[r].astype(np.float32)
        f, m = self.features[r].astype(np.float32), self.mask[r]
        return (f * m[..., None]).sum(1) / np.maximum(m.sum(1, keepdims=True), 1)

    def lookup(self, texts: str | Iterable[str]) -> TextFeatures:
        """Numpy ``tokens (B, L, D) f32``, ``mask (B, L)``, ``pooled (B, D)`` of the captions."""
        r = self.rows(texts)
        m = self.mask[r]
        return TextFeatures(self.features[r].astype(np.float32) * m[..., None], m, self._pooled_rows(r))

    def tokenize(self, texts: str | Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        r = self.rows(texts)
        return np.repeat(r[:, None], self.max_len, axis=1), self.mask[r]

    @property
    def variables(self) -> dict:
        """The table as device arrays for :meth:`encode`."""
        r = np.arange(len(self))
        return {"features": jnp.asarray(self.features, jnp.float32), "pooled": jnp.asarray(self._pooled_rows(r))}

    def encode(self, variables: Any, ids: Array, mask: Array) -> tuple[Array, Array]:
        ids, mask = _check_ids(ids, mask, self.max_len, "PrecomputedTextFeatures")
        row = ids[:, 0]
        L = ids.shape[1]
        tokens = jnp.take(variables["features"], row, axis=0)[:, :L]
        return jnp.where(mask[..., None], tokens, 0.0), jnp.take(variables["pooled"], row, axis=0)


# --------------------------------------------------------------------------
# optional: transformers' Flax T5 encoder
# --------------------------------------------------------------------------

def _import_transformers():
    try:
        import transformers  # noqa: PLC0415
    except ImportError as err:
        raise ImportError("FlaxT5TextEncoder needs the optional package transformers>=4.40,<5 "
                          "(Flax models were removed in transformers 5): "
                          "pip install 'transformers>=4.40,<5'") from err
    return transformers


def hf_tokenize(tokenizer: Any, texts: str | Iterable[str], max_len: int,
                overflow: str = "truncate") -> tuple[np.ndarray, np.ndarray]:
    """Tokenize with a Hugging Face tokenizer to static ``(B, max_len)`` ids and a bool mask,
    with the same fallbacks as :meth:`Tokenizer.encode`: empty text raises
    :class:`TextInputError`; longer texts are truncated (their end-of-sequence token kept) with a
    :class:`TextTruncatedWarning`, or raise with ``overflow='error'``. Unknown pieces are the
    tokenizer's own business (sentencepiece rarely produces ``<unk>``)."""
    _check_overflow_mode(overflow, "unk")
    texts = _as_text_list(texts)
    for i, t in enumerate(texts):
        if not t.strip():
            raise TextInputError(f"text {i} is empty ({t!r}): nothing to encode")
    full = tokenizer(texts, add_special_tokens=True)["input_ids"]
    cut = [(i, len(x)) for i, x in enumerate(full) if len(x) > max_len]
    if cut:
        if overflow == "error":
            i, n = cut[0]
            raise TextInputError(f"text {i} has {n} tokens, more than max_len = {max_len}: {texts[i]!r:.80}")
        _warn_truncated(cut, texts, max_len, "hf_tokenize")
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=int(max_len), return_tensors="np")
    return np.asarray(enc["input_ids"], np.int32), np.asarray(enc["attention_mask"], bool)


class FlaxT5TextEncoder:
    """:class:`TextEncoder` over ``transformers``' Flax T5 encoder (``FlaxT5EncoderModel``; any
    Hugging Face Flax encoder whose module takes ``(input_ids, attention_mask)`` and returns
    ``last_hidden_state`` works). ``tokens`` = last hidden state, zeroed at padding;
    ``pooled`` = masked mean over real tokens (T5 has no [CLS]). ``variables`` is
    ``{"params": model.params}``; keep it frozen (``jax.lax.stop_gradient``) as MoScale does,
    or fine-tune it.

    Build with :meth:`from_model` (an instantiated ``FlaxT5EncoderModel``, e.g. a tiny random one
    ``FlaxT5EncoderModel(T5Config(...))``) or :meth:`from_pretrained` (a local directory only:
    nothing is downloaded). Tokenize with :func:`hf_tokenize` (``max_len`` 20 as MoScale).
    """

    def __init__(self, module: Any, dim: int, max_len: int = 20):
        if int(max_len) < 1:
            raise ConfigError(f"FlaxT5TextEncoder.max_len must be >= 1, got {max_len}")
        self.module = module
        self.dim = int(dim)
        self.max_len = int(max_len)

    @classmethod
    def from_model(cls, model: Any, max_len: int = 20) -> tuple["FlaxT5TextEncoder", dict]:
        """``(encoder, variables)`` from a transformers Flax model instance."""
        return cls(model.module, model.config.d_model, max_len), {"params": model.params}

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, max_len: int = 20,
                        **kwargs) -> tuple["FlaxT5TextEncoder", dict]:
        """Load ``FlaxT5EncoderModel`` from a local directory (``local_files_only``; pass
        ``from_pt=True`` for PyTorch weights, which needs torch)."""
        transformers = _import_transformers()
        kwargs.setdefault("local_files_only", True)
        model = transformers.FlaxT5EncoderModel.from_pretrained(os.fspath(path), **kwargs)
        return cls.from_model(model, max_len)

    def encode(self, variables: Any, ids: Array, mask: Array) -> tuple[Array, Array]:
        ids, mask = _check_ids(ids, mask, self.max_len, "FlaxT5TextEncoder")
        out = self.module.apply(variables, input_ids=ids, attention_mask=mask.astype(jnp.int32),
                                deterministic=True, return_dict=True)
        h = out.last_hidden_state
        return jnp.where(mask[..., None], h, 0.0), masked_mean(h, mask)
