"""Captioned motion data for text-to-motion models: Bandai Namco, HumanML3D and KIT-ML through
one path.

:func:`load_t2m` returns a :class:`T2MDataset`: per split (``train`` / ``val`` / ``test``) a
list of :class:`T2MMotion` (HumanML3D features ``(T, 263)``, KIT ``(T, 251)``, unnormalised
float32; its captions; name, source clip and first frame in it), and the mean / std of the
training split. Changing ``source`` is the only change between the datasets::

    ds = load_t2m("bandai")                                   # ../shared/data/bandai-namco
    ds = load_t2m("humanml3d", root="/data/HumanML3D")        # the published folder layout
    ds = load_t2m("kit", root="/data/KIT-ML")
    it = ds.train_iterator(batch_size=64, seed=0)             # grain, checkpointable
    batch = next(it)  # motion (64, 196, 263) normalised, length (64,), mask (64, 196), text [64]
    for batch in ds.eval_iterator("test", batch_size=32): ...

Sources
-------
``"bandai"``: the Bandai Namco clips (:func:`mmar.data.bandai.load_bandai`, retargeted to
SMPL-22, resampled from 30 to ``fps`` = 20 in the load workers), HumanML3D features of the whole
clip (:func:`clip_features`, i.e. :func:`mmar.data.hml_features.joints_to_features`: ``T``
frames of joints give ``T - 1`` feature frames), the fixed split of :mod:`mmar.data.splits`,
captions from :func:`mmar.data.captions.captions_for` (12-16 phrasings per clip, from the clip
name, so never stale in the cache). Segment rule (:func:`segment_bounds`): a clip of ``T``
feature frames gives the non-overlapping segments ``[0, 196), [196, 392), ...``, plus the tail
``[196 k, T)`` when it has at least ``min_len`` = 40 frames (a shorter tail is dropped); a clip
with ``T < min_len`` gives nothing and is listed in ``info["dropped_clips"]``. A segment's
features are a slice of the whole clip's features (as HumanML3D cuts its captioned sub-ranges
from a motion's features). Segments are named ``<clip>`` when they cover the whole clip, else
``<clip>_<first>_<stop>`` (frames, as :mod:`mmar.data.humanml3d` names sub-ranges).
On the released data (2,789 clips) this gives train 1,903 / val 242 / test 236 motions
(188,122 / 23,417 / 23,534 frames, lengths 40-196, median 94; 435 clips of fewer than 40
feature frames -- 2 s -- dropped: 357 / 35 / 43; 218 tail frames dropped; only 36 training
motions reach 196 frames: the clips are short). ``tools/bench_t2m_data.py`` measures it.
Converting takes about a minute (parsing the BVH files); the result is cached outside the
project (``$MMAR_CACHE_DIR`` or ``~/.cache/mmar``, see :func:`mmar.data.benchmark.cache_dir`),
keyed by the data's ``SHA256SUMS`` and every setting that changes the arrays. The cache holds
data derived from CC BY-NC 4.0 material: it stays on your machine.

``"humanml3d"`` / ``"kit"``: a folder in the published layout, read by
:func:`mmar.data.humanml3d.load_humanml3d` with its own split lists and texts (whole-motion
captions gathered, captioned time ranges as their own entries). As the published loader it
keeps motions of ``min_len <= T < 200`` frames (``min_len`` 40, KIT 24) and crops to
``max_len`` = 196 in the iterators; ``fps`` is the folder's (20, KIT 12.5).

Normalisation
-------------
Mean and std over every frame of the training split's motions (float64), the std grouped as
HumanML3D's ``Std.npy`` (:func:`mmar.data.hml_features.group_std`, ``feat_bias`` 1), entries
below 1e-8 set to 1 -- the rule of :meth:`mmar.data.hml_features.Normalizer.from_data`, computed
motion by motion so that HumanML3D's millions of frames are never copied into one float64
array. ``stats="folder"`` uses a HumanML3D/KIT folder's ``Mean.npy`` / ``Std.npy`` instead (to
compare with published numbers). :meth:`T2MDataset.save_stats` / :func:`load_stats` keep them
in an npz beside a run.

Batches
-------
Training (:func:`make_t2m_train_iterator`), following the MoMask / MoScale training loader
(``Text2MotionDataset.__getitem__``; see ``../shared/reference/next-scale-notes.md`` section 1):
every motion once per epoch in a seeded permutation; per motion one caption drawn at random;
length ``n = min(T, crop_len) // 4 * 4`` (unit length 4), minus one more unit with probability
1/3 (the loaders' ``"double"`` coin) -- *except* when that would go below ``min_len`` (the
official code does not check, so a 40-frame motion can become 36; here every length stays in
``[min_len, crop_len]``); a window of ``n`` frames at a uniformly random start; normalised,
then zero-padded to ``crop_len`` (196). Evaluation (:func:`make_t2m_eval_iterator`) follows
ScaleMoGen's deterministic evaluation loader: every motion once in split order, the *first*
caption (or every caption with ``captions="all"``), ``n = min(T, crop_len) // 4 * 4`` frames
centred in the motion, no coin.

Every batch is ``{"motion": (B, L, D) float32, "length": (B,) int32, "mask": (B, L) bool,
"text": list of B str, "index": (B,) int32 motion index in the split, "start": (B,) int32
first frame of the window in the motion}`` (evaluation adds ``"valid": (B,) bool``, False on
the rows that pad the last batch). The padding of ``motion`` is 0 (normalised space).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from mmar.data import hml_features as hf
from mmar.data.pipeline import EpochBatches
from mmar.errors import ConfigError, DataFormatError, ShapeError

__all__ = [
    "SOURCES", "SPLITS", "UNIT_LENGTH", "DEFAULT_MAX_LEN", "DEFAULT_MIN_LEN", "CACHE_VERSION",
    "T2MMotion", "T2MSplit", "T2MDataset", "load_t2m", "load_stats", "feature_stats",
    "clip_features", "segment_bounds", "pad_windows", "train_lengths", "eval_window",
    "make_t2m_train_iterator", "make_t2m_eval_iterator", "T2MEvalIterator",
]

SOURCES = ("bandai", "humanml3d", "kit")
SPLITS = ("train", "val", "test")
UNIT_LENGTH = 4  # frames per latent step of the 4x-downsampling tokenizers
DEFAULT_MAX_LEN = 196
DEFAULT_MIN_LEN = {"bandai": 40, "humanml3d": 40, "kit": 24}
FOLDER_MAX_LEN = 199  # the published loaders keep motions shorter than 200 frames
UNIT_DROP_PROB = 1.0 / 3.0  # the official loaders' "double" coin
CACHE_VERSION = 1
_EPS = 1e-8


# --------------------------------------------------------------------------
# building blocks (shared with tools/vq_scales.py)
# --------------------------------------------------------------------------

def clip_features(joints: np.ndarray, step: int = 1, kind: str = "humanml3d") -> np.ndarray:
    """HumanML3D features ``(T' - 1, D)`` of joint positions ``(T, J, 3)`` taken every ``step``
    frames (``step=3`` turns 60-fps arrays into 20 fps)."""
    return hf.joints_to_features(np.asarray(joints)[::int(step)], kind=kind)


def segment_bounds(length: int, max_len: int = DEFAULT_MAX_LEN, min_len: int = 40) -> list[tuple[int, int]]:
    """``[(first, stop), ...]``: non-overlapping windows of ``max_len`` frames from frame 0, the
    last (partial) one kept when it has at least ``min_len`` frames; nothing for a motion
    shorter than ``min_len``."""
    if max_len < 1 or min_len < 1:
        raise ConfigError(f"max_len and min_len must be positive, got {max_len}, {min_len}")
    out = []
    for s in range(0, int(length), int(max_len)):
        e = min(s + int(max_len), int(length))
        if e - s >= min_len:
            out.append((s, e))
    return out


def pad_windows(windows: Sequence[np.ndarray], num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack windows ``(n_i, D)`` (``n_i <= num_frames``) into ``x (B, num_frames, D)`` float32,
    zero padded, and ``mask (B, num_frames)`` (True on the frames of the window)."""
    if not len(windows):
        raise ShapeError("no window to pad")
    D = np.shape(windows[0])[-1]
    x = np.zeros((len(windows), num_frames, D), np.float32)
    m = np.zeros((len(windows), num_frames), bool)
    for i, w in enumerate(windows):
        n = len(w)
        if n > num_frames:
            raise ShapeError(f"window {i} has {n} frames, more than {num_frames}")
        x[i, :n] = w
        m[i, :n] = True
    return x, m


def train_lengths(lengths: np.ndarray, rng: np.random.Generator, crop_len: int = DEFAULT_MAX_LEN,
                  unit: int = UNIT_LENGTH, drop_prob: float = UNIT_DROP_PROB,
                  min_len: int = 40) -> np.ndarray:
    """Training window lengths of motions of ``lengths`` frames: ``min(T, crop_len)`` rounded
    down to a multiple of ``unit``, one ``unit`` less with probability ``drop_prob`` unless that
    goes below ``min_len`` (one ``rng.random`` draw per motion)."""
    L = np.asarray(lengths, np.int64)
    n = np.minimum(L, crop_len) // unit * unit
    coin = rng.random(L.shape) < drop_prob
    return np.where(coin & (n - unit >= min_len), n - unit, n)


def eval_window(length: int, crop_len: int = DEFAULT_MAX_LEN, unit: int = UNIT_LENGTH) -> tuple[int, int]:
    """``(start, n)`` of the evaluation window: ``n = min(T, crop_len) // unit * unit`` frames
    centred in the motion."""
    n = min(int(length), int(crop_len)) // unit * unit
    return (int(length) - n) // 2, n


def feature_stats(features: Sequence[np.ndarray], joints_num: int | None = None,
                  feat_bias: float = 1.0, eps: float = _EPS) -> hf.Normalizer:
    """Mean and grouped std over all frames of ``features`` (list of ``(T, D)``), the rule of
    :meth:`hf.Normalizer.from_data` with ``group=True``, accumulated motion by motion in
    float64 (two passes) instead of on one concatenated copy."""
    feats = [np.asarray(f) for f in features if len(f)]
    if not feats:
        raise ShapeError("no frames to compute the mean / std from")
    D = feats[0].shape[-1]
    if joints_num is None:
        joints_num = {263: 22, 251: 21}.get(D)
        if joints_num is None:
            raise ShapeError(f"cannot infer joints_num from feature size {D}")
    if D != hf.feature_dim(joints_num):
        raise ShapeError(f"features must have {hf.feature_dim(joints_num)} numbers per frame "
                         f"for {joints_num} joints, got {D}")
    n = sum(len(f) for f in feats)
    total = np.zeros(D, np.float64)
    for f in feats:
        total += f.sum(0, dtype=np.float64)
    mean = total / n
    sq = np.zeros(D, np.float64)
    for f in feats:
        d = f.astype(np.float64) - mean
        sq += np.einsum("td,td->d", d, d)
    std = hf.group_std(np.sqrt(sq / n), joints_num, feat_bias)
    std = np.where(std < eps, 1.0, std)
    return hf.Normalizer(mean, std)


# --------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------

@dataclasses.dataclass(eq=False)
class T2MMotion:
    """One motion of a text-to-motion split.

    Attributes:
      name: unique within the split (``<clip>`` or ``<clip>_<first>_<stop>``).
      features: ``(T, D)`` float32, unnormalised (D = 263, KIT 251).
      captions: the texts describing it (at least one).
      clip: the source clip / motion id.
      start: first frame of this motion in the source clip's features.
      tokens: per caption the ``word/POS`` tokens (HumanML3D / KIT), else ``None``.
    """

    name: str
    features: np.ndarray
    captions: list[str]
    clip: str
    start: int = 0
    tokens: list[list[str]] | None = None

    @property
    def length(self) -> int:
        return int(self.features.shape[0])


class T2MSplit:
    """The motions of one split, in a fixed order (``split[i]`` is motion ``i``)."""

    def __init__(self, name: str, motions: Sequence[T2MMotion]):
        self.name = name
        self.motions = list(motions)
        self.lengths = np.array([m.length for m in self.motions], np.int64)
        self.num_captions = np.array([len(m.captions) for m in self.motions], np.int64)
        bad = [m.name for m, k in zip(self.motions, self.num_captions) if k == 0]
        if bad:
            raise DataFormatError(f"split {name!r}: motions without a caption: {bad[:5]}")

    def __len__(self) -> int:
        return len(self.motions)

    def __getitem__(self, i: int) -> T2MMotion:
        return self.motions[i]

    def __iter__(self) -> Iterator[T2MMotion]:
        return iter(self.motions)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.motions]

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())

    def summary(self) -> dict[str, Any]:
        L = self.lengths
        return {
            "motions": len(self), "clips": len({m.clip for m in self.motions}),
            "frames": int(L.sum()), "min_len": int(L.min()) if len(L) else 0,
            "median_len": float(np.median(L)) if len(L) else 0.0, "max_len": int(L.max()) if len(L) else 0,
            "captions": int(self.num_captions.sum()),
        }

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for m in self.motions:
            h.update(f"{m.name}:{m.length};".encode())
        return h.hexdigest()[:16]


@dataclasses.dataclass(eq=False)
class T2MDataset:
    """Captioned motions of every split and the normalisation statistics.

    Attributes:
      source: ``"bandai"``, ``"humanml3d"`` or ``"kit"``.
      kind: feature layout, ``"humanml3d"`` (22 joints, 263) or ``"kit"`` (21 joints, 251).
      fps: frame rate of the features.
      min_len, max_len: shortest motion kept; training / evaluation window (and Bandai segment)
        length.
      splits: ``{"train": T2MSplit, ...}``.
      mean, std: ``(D,)`` float32 (see the module doc).
      info: how the data was built (dropped clips and frames, cache file, timings).
    """

    source: str
    kind: str
    fps: float
    min_len: int
    max_len: int
    splits: dict[str, T2MSplit]
    mean: np.ndarray
    std: np.ndarray
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        spec = hf.get_spec(self.kind)
        self.kind = spec.kind
        D = spec.feature_dim
        for s, sp in self.splits.items():
            for m in sp.motions:
                if m.features.ndim != 2 or m.features.shape[1] != D:
                    raise ShapeError(f"{self.source} {s} motion {m.name}: features must be (T, {D}) "
                                     f"for {spec.kind}, got {m.features.shape}")
        self._set_stats(self.mean, self.std)

    def _set_stats(self, mean, std) -> None:
        norm = hf.Normalizer(mean, std)
        if norm.mean.shape != (self.feature_dim,):
            raise ShapeError(f"mean / std must have {self.feature_dim} entries for {self.kind}, "
                             f"got {norm.mean.shape[0]}")
        self.mean, self.std = norm.mean, norm.std
        self._norm = norm

    def __getitem__(self, split: str) -> T2MSplit:
        try:
            return self.splits[split]
        except KeyError:
            raise ConfigError(f"split {split!r} is not loaded (have {sorted(self.splits)})") from None

    @property
    def feature_dim(self) -> int:
        return hf.get_spec(self.kind).feature_dim

    @property
    def num_joints(self) -> int:
        return hf.get_spec(self.kind).num_joints

    @property
    def normalizer(self) -> hf.Normalizer:
        return self._norm

    def normalize(self, x):
        """``(x - mean) / std`` (numpy in, float32 numpy out; jax arrays stay jax)."""
        self._check_dim(x)
        return self._norm.normalize(x)

    def denormalize(self, x):
        """``x * std + mean``."""
        self._check_dim(x)
        return self._norm.denormalize(x)

    def _check_dim(self, x) -> None:
        if np.shape(x)[-1:] != (self.feature_dim,):
            raise ShapeError(f"features must end in {self.feature_dim} numbers for {self.kind}, "
                             f"got shape {np.shape(x)}")

    def save_stats(self, path: str | os.PathLike) -> None:
        """Write ``mean``, ``std`` and what they were computed on to an npz file."""
        meta = {"source": self.source, "kind": self.kind, "fps": self.fps, "min_len": self.min_len,
                "max_len": self.max_len, "stats": self.info.get("stats", "train"),
                "train": self.splits["train"].fingerprint() if "train" in self.splits else None}
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:  # np.savez would append .npz to a name without it
            np.savez(f, mean=self.mean, std=self.std, meta=np.array(json.dumps(meta)))

    def load_stats(self, path: str | os.PathLike) -> "T2MDataset":
        """Use the mean / std of an npz written by :meth:`save_stats` (e.g. a run's); returns
        ``self``."""
        norm = load_stats(path)
        if norm.mean.shape != (self.feature_dim,):
            raise ShapeError(f"{path}: mean / std have {norm.mean.shape[0]} entries, this "
                             f"{self.kind} dataset has {self.feature_dim} features")
        self._set_stats(norm.mean, norm.std)
        self.info["stats"] = str(path)
        return self

    def summary(self) -> dict[str, dict[str, Any]]:
        return {s: sp.summary() for s, sp in self.splits.items()}

    def train_iterator(self, batch_size: int = 64, seed: int = 0, **kwargs) -> "Any":
        """:func:`make_t2m_train_iterator` on this dataset."""
        return make_t2m_train_iterator(self, batch_size, seed, **kwargs)

    def eval_iterator(self, split: str = "test", batch_size: int = 32, **kwargs) -> "T2MEvalIterator":
        """:func:`make_t2m_eval_iterator` on this dataset."""
        return make_t2m_eval_iterator(self, split, batch_size, **kwargs)


def load_stats(path: str | os.PathLike) -> hf.Normalizer:
    """The :class:`~mmar.data.hml_features.Normalizer` of an npz written by
    :meth:`T2MDataset.save_stats`."""
    p = str(path)
    if not os.path.exists(p):
        raise DataFormatError("statistics file not found", p)
    try:
        with np.load(p, allow_pickle=False) as z:
            mean, std = np.array(z["mean"]), np.array(z["std"])
    except (KeyError, ValueError, OSError) as e:
        raise DataFormatError(f"not an npz with 'mean' and 'std' ({e})", p) from e
    try:
        return hf.Normalizer(mean, std)
    except ShapeError as e:
        raise DataFormatError(str(e), p) from e


# --------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------

def load_t2m(
    source: str = "bandai",
    root: str | os.PathLike | None = None,
    fps: float | None = None,
    min_len: int | None = None,
    max_len: int = DEFAULT_MAX_LEN,
    *,
    splits: Sequence[str] = SPLITS,
    stats: Any = "train",
    datasets: Sequence[int] = (1, 2),
    contents: Sequence[str] | None = None,
    max_clips: int | None = None,
    use_cache: bool = True,
    workers: int = 2,
    progress: bool = True,
    on_error: str = "warn",
) -> T2MDataset:
    """The text-to-motion dataset of ``source`` (see the module doc).

    Args:
      source: ``"bandai"``, ``"humanml3d"`` or ``"kit"``.
      root: data directory (Bandai: default ``$MMAR_BANDAI_DIR`` or the shared data; required
        for the folder sources).
      fps: Bandai frame rate (default 20); the folder sources have theirs (20, KIT 12.5) and
        refuse another.
      min_len: shortest motion kept (default 40, KIT 24).
      max_len: window length of the iterators and the Bandai segment length.
      splits: which splits to hold; each must end up non-empty.
      stats: ``"train"`` (mean / grouped std of the training split), ``"folder"`` (``Mean.npy``
        / ``Std.npy`` of a HumanML3D / KIT folder), a path written by :meth:`T2MDataset.save_stats`
        or a :class:`~mmar.data.hml_features.Normalizer`.
      datasets, contents: Bandai only, which clips (:func:`~mmar.data.bandai.load_bandai`).
      max_clips: Bandai only, keep at most this many clips per split (evenly spaced names; for
        tests and quick runs).
      use_cache: Bandai only, read / write the converted features under ``$MMAR_CACHE_DIR``.
      workers, progress, on_error: Bandai loading (:func:`~mmar.data.bandai.load_bandai`).
    """
    t0 = time.perf_counter()
    if source not in SOURCES:
        raise ConfigError(f"unknown text-to-motion source {source!r}; expected one of {SOURCES}")
    splits = tuple(splits)
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown or not splits:
        raise ConfigError(f"splits must be a non-empty subset of {SPLITS}, got {splits}")
    lo = DEFAULT_MIN_LEN[source] if min_len is None else int(min_len)
    hi = int(max_len)
    if lo < UNIT_LENGTH or hi < lo:
        raise ConfigError(f"need {UNIT_LENGTH} <= min_len <= max_len, got min_len={lo}, max_len={hi}")
    if isinstance(stats, str) and stats == "train" and "train" not in splits:
        raise ConfigError("stats='train' needs the train split in splits")
    if source == "bandai":
        from mmar.data.arrays import check_fps

        rate = check_fps(20.0 if fps is None else fps, "fps")
        loaded, info = _load_bandai(root, rate, lo, hi, splits, tuple(datasets),
                                    None if contents is None else tuple(contents), max_clips,
                                    use_cache, workers, progress, on_error)
        kind, where = "humanml3d", str(info.get("root", ""))
    else:
        spec = hf.get_spec(source)
        if fps is not None and abs(float(fps) - spec.fps) > 1e-6:
            raise ConfigError(f"{source} features are at {spec.fps:g} fps; fps={fps!r} cannot be applied "
                              "to a folder (leave fps unset)")
        rate, kind = spec.fps, spec.kind
        loaded, info = _load_folder(root, spec, lo, hi, splits, progress)
        where = str(root)
    for s in splits:
        if not loaded[s]:
            why = info.get("empty_reason", {}).get(s, "")
            raise DataFormatError(f"{source} split {s!r} has no motion of at least {lo} frames"
                                  + (f" ({why})" if why else ""), where)
    parts = {s: T2MSplit(s, loaded[s]) for s in splits}
    if isinstance(stats, hf.Normalizer):
        norm, info["stats"] = stats, "given"
    elif stats == "train":
        norm = feature_stats([m.features for m in parts["train"]], hf.get_spec(kind).num_joints)
        info["stats"] = "train"
    elif stats == "folder":
        if source == "bandai":
            raise ConfigError("stats='folder' is for the HumanML3D / KIT folders (Mean.npy, Std.npy)")
        from mmar.data.humanml3d import load_normalizer

        norm, info["stats"] = load_normalizer(str(root)), "folder"
    elif isinstance(stats, (str, os.PathLike)):
        norm, info["stats"] = load_stats(stats), str(stats)
    else:
        raise ConfigError(f"stats must be 'train', 'folder', a path or a Normalizer, got {stats!r}")
    info["load_s"] = time.perf_counter() - t0
    return T2MDataset(source, kind, float(rate), lo, hi, parts, norm.mean, norm.std, info)


def _load_folder(root, spec: hf.HmlSpec, lo: int, hi: int, splits, progress: bool):
    from mmar.data.humanml3d import load_humanml3d

    if root is None:
        raise ConfigError(f"source {spec.kind!r} needs root= (the dataset folder)")
    if not os.path.isdir(root):
        raise DataFormatError(f"{spec.kind} dataset folder not found", str(root))
    keep = max(FOLDER_MAX_LEN, hi)
    out = {}
    for s in splits:
        entries = load_humanml3d(str(root), s, kind=spec.kind, min_len=lo, max_len=keep, progress=progress)
        out[s] = [T2MMotion(name=e.name, features=e.features, captions=list(e.texts),
                            clip=os.path.splitext(os.path.basename(e.source))[0], start=int(e.start),
                            tokens=[list(t) for t in e.tokens])
                  for e in entries]
    info = {"root": str(root), "max_motion_len": keep,
            "empty_reason": {s: f"{s}.txt lists no motion of {lo}-{keep} frames with a caption"
                             for s in splits}}
    return out, info


# ---- Bandai ------------------------------------------------------------------

def _bandai_key(root: Path, settings: Mapping[str, Any]) -> str:
    sums = root / "SHA256SUMS"
    h = hashlib.sha256(json.dumps({"v": CACHE_VERSION, **settings}, sort_keys=True).encode())
    h.update(sums.read_bytes() if sums.exists() else str(root.resolve()).encode())
    return h.hexdigest()[:16]


def _load_bandai(root, fps, lo, hi, splits, datasets, contents, max_clips, use_cache, workers,
                 progress, on_error):
    from mmar.data.bandai import bandai_root, parse_clip_name
    from mmar.data.benchmark import cache_dir
    from mmar.data.captions import captions_for
    from mmar.data.splits import SPLIT_VERSION

    r = bandai_root(root)
    settings = {"fps": fps, "min_len": lo, "max_len": hi, "datasets": sorted(datasets),
                "contents": None if contents is None else sorted(contents), "max_clips": max_clips,
                "split": SPLIT_VERSION, "features": "hml263-fixwrap"}
    path = cache_dir() / f"t2m-bandai-{_bandai_key(r, settings)}.npz"
    arrays = None
    cached = False
    if use_cache and path.exists():
        try:
            arrays = _read_cache(path)
            cached = True
        except Exception:  # a damaged cache is rebuilt, never trusted
            arrays = None
    if arrays is None:
        arrays = _build_bandai(r, fps, lo, hi, datasets, contents, max_clips, workers, progress, on_error)
        if use_cache:
            _write_cache(path, arrays)
    info = dict(arrays["info"])
    info.update(root=str(r), cache=str(path) if use_cache else None, cached=cached)
    out = {}
    caps: dict[str, list[str]] = {}
    for s in splits:
        a = arrays[s]
        frames, bounds = a["frames"], a["bounds"]
        motions = []
        for i, (name, clip, start) in enumerate(zip(a["names"], a["clips"], a["starts"])):
            clip = str(clip)
            if clip not in caps:
                caps[clip] = captions_for(parse_clip_name(clip))
            motions.append(T2MMotion(name=str(name), features=frames[bounds[i]:bounds[i + 1]],
                                     captions=caps[clip], clip=clip, start=int(start)))
        out[s] = motions
    info["empty_reason"] = {
        s: f"{info['clips'][s]} clip(s) loaded, {len(info['dropped_clips'][s])} shorter than {lo} frames"
        for s in splits}
    return out, info


def _build_bandai(r: Path, fps, lo, hi, datasets, contents, max_clips, workers, progress, on_error):
    """Per split the concatenated features of the segments, their bounds, names, clips and starts."""
    from mmar import geometry_np as gnp
    from mmar.data.bandai import load_bandai
    from mmar.data.benchmark import spaced_names
    from mmar.data.splits import split_clips

    t0 = time.perf_counter()
    clips = load_bandai(r, datasets=datasets, fps=fps, workers=workers, progress=progress,
                        on_error=on_error, captions=False, contents=contents)
    t_parse = time.perf_counter() - t0
    by_split = split_clips(clips)  # whole datasets / contents: whole strata
    arrays: dict[str, Any] = {}
    info: dict[str, Any] = {"clips": {}, "dropped_clips": {}, "dropped_tail_frames": {},
                            "feature_frames": {}}
    for s in SPLITS:
        part = by_split[s]
        if max_clips is not None:
            keep = set(spaced_names([c.name for c in part], max_clips))
            part = [c for c in part if c.name in keep]
        feats, names, cnames, starts, dropped = [], [], [], [], []
        tail = total = 0
        for c in sorted(part, key=lambda c: c.name):
            if c.num_frames < 2:
                dropped.append(c.name)
                continue
            offsets = c.skeleton.offsets if c.local_trans is None else c.local_trans
            _, joints = gnp.forward_kinematics(c.local_rot, offsets, c.skeleton.parents, c.root_pos)
            f = clip_features(joints)
            total += len(f)
            segs = segment_bounds(len(f), hi, lo)
            if not segs:
                dropped.append(c.name)
                continue
            tail += len(f) - segs[-1][1]  # a dropped tail
            for a, b in segs:
                feats.append(f[a:b])
                names.append(c.name if (a, b) == (0, len(f)) else f"{c.name}_{a}_{b}")
                cnames.append(c.name)
                starts.append(a)
        lengths = np.array([len(x) for x in feats], np.int64)
        arrays[s] = {
            "frames": np.concatenate(feats) if feats else np.zeros((0, 263), np.float32),
            "bounds": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "names": np.array(names, dtype=str), "clips": np.array(cnames, dtype=str),
            "starts": np.array(starts, np.int64),
        }
        info["clips"][s] = len(part)
        info["dropped_clips"][s] = dropped
        info["dropped_tail_frames"][s] = int(tail)
        info["feature_frames"][s] = int(total)
    info["parse_s"] = t_parse
    info["build_s"] = time.perf_counter() - t0
    arrays["info"] = info
    return arrays


def _write_cache(path: Path, arrays: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {"info": np.array(json.dumps(arrays["info"]))}
    for s in SPLITS:
        for k, v in arrays[s].items():
            flat[f"{s}__{k}"] = v
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **flat)
    os.replace(tmp, path)


def _read_cache(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        out: dict[str, Any] = {"info": json.loads(str(z["info"]))}
        for s in SPLITS:
            out[s] = {k: np.array(z[f"{s}__{k}"]) for k in ("frames", "bounds", "names", "clips", "starts")}
            if out[s]["bounds"].shape != (len(out[s]["names"]) + 1,):
                raise ValueError("inconsistent cache")
    return out


# --------------------------------------------------------------------------
# iterators
# --------------------------------------------------------------------------

def _shard(shard: Any) -> tuple[int, int]:
    """``(index, count)`` of this process: ``"auto"`` is ``jax.process_index()`` of
    ``jax.process_count()`` (grain's ``ShardByJaxProcess``), ``None`` is ``(0, 1)``."""
    from grain import sharding

    if shard is None:
        return 0, 1
    if isinstance(shard, str):
        if shard != "auto":
            raise ConfigError(f"shard must be 'auto', None, (index, count) or ShardOptions, got {shard!r}")
        opts = sharding.ShardByJaxProcess(drop_remainder=True)
        return int(opts.shard_index), int(opts.shard_count)
    if isinstance(shard, sharding.ShardOptions):
        return int(shard.shard_index), int(shard.shard_count)
    index, count = (int(v) for v in shard)
    if not 0 <= index < count:
        raise ConfigError(f"shard index must be in [0, {count}), got {index}")
    return index, count


def _assemble(split: T2MSplit, norm: hf.Normalizer, ids, starts, lengths, crop_len: int,
              texts: list[str]) -> dict[str, Any]:
    B = len(ids)
    D = norm.mean.shape[0]
    x = np.zeros((B, crop_len, D), np.float32)
    for i in range(B):
        s, n = int(starts[i]), int(lengths[i])
        if n:
            x[i, :n] = (split.motions[ids[i]].features[s:s + n] - norm.mean) / norm.std
    return {
        "motion": x,
        "length": np.asarray(lengths, np.int32),
        "mask": np.arange(crop_len)[None] < np.asarray(lengths)[:, None],
        "text": texts,
        "index": np.asarray(ids, np.int32),
        "start": np.asarray(starts, np.int32),
    }


class _TrainBatch(EpochBatches):
    """Batch ``b`` of this host's stream: epoch ``e`` is ``default_rng([seed, e]).permutation``
    of the split's motions, of which this host reads positions ``[lo, hi)``
    (:class:`mmar.data.pipeline.EpochBatches`); the crop, the coin and the caption of batch ``b``
    come from ``default_rng([seed, index, count, b])``, so a batch depends on nothing but its
    number (resumable, thread-order free)."""

    def __init__(self, split: T2MSplit, norm: hf.Normalizer, batch_size: int, seed: int,
                 shard: tuple[int, int], lo: int, hi: int, crop_len: int, unit: int,
                 drop_prob: float, min_len: int):
        super().__init__(len(split), batch_size, seed, lo, hi)
        self.split, self.norm, self.shard = split, norm, shard
        self.crop_len, self.unit, self.drop_prob, self.min_len = crop_len, unit, drop_prob, min_len

    def __call__(self, b: int) -> dict[str, Any]:
        ids = self.ids(b)
        rng = np.random.default_rng([self.seed, self.shard[0], self.shard[1], int(b)])
        L = self.split.lengths[ids]
        n = train_lengths(L, rng, self.crop_len, self.unit, self.drop_prob, self.min_len)
        starts = rng.integers(0, L - n + 1)
        which = rng.integers(0, self.split.num_captions[ids])
        texts = [self.split.motions[i].captions[j] for i, j in zip(ids, which)]
        return _assemble(self.split, self.norm, ids, starts, n, self.crop_len, texts)


def make_t2m_train_iterator(dataset: T2MDataset, batch_size: int = 64, seed: int = 0, *,
                            split: str = "train", crop_len: int | None = None,
                            unit: int = UNIT_LENGTH, unit_drop_prob: float = UNIT_DROP_PROB,
                            shard: Any = "auto", num_epochs: int | None = None,
                            num_threads: int = 1, prefetch: int = 2, worker_count: int = 0):
    """Shuffled training batches of ``split`` (see the module doc), deterministic for a seed.

    Args:
      dataset: a :class:`T2MDataset`.
      batch_size: motions per batch; every batch is full (batches run across epochs).
      seed: shuffling / cropping / caption seed (the same on every host).
      crop_len: window length (default ``dataset.max_len``, 196).
      unit, unit_drop_prob: lengths are multiples of ``unit``, one unit shorter with this
        probability (0 turns the coin off).
      shard: ``"auto"`` (``jax.process_index()`` of ``jax.process_count()``), ``None``,
        ``(index, count)`` or a ``grain.sharding.ShardOptions``: each epoch's permutation is
        split evenly between hosts (remainder dropped), so hosts see disjoint motions and run
        the same number of steps.
      num_epochs: ``None`` repeats forever, else ``num_epochs * motions_per_host // batch_size``
        batches.
      num_threads, prefetch, worker_count: grain read threads, prefetch buffer (batches) and
        worker processes (0: in this process).

    Returns:
      a :class:`mmar.data.pipeline.BatchIterator` (``get_state`` / ``set_state``; the state
      also records these settings and the split's fingerprint and refuses another pipeline's).
    """
    import grain

    from mmar.data.pipeline import BatchIterator

    sp = dataset[split]
    W = dataset.max_len if crop_len is None else int(crop_len)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    if unit < 1 or W < unit or not 0.0 <= unit_drop_prob <= 1.0:
        raise ConfigError(f"need unit >= 1, crop_len >= unit and 0 <= unit_drop_prob <= 1, got "
                          f"unit={unit}, crop_len={W}, unit_drop_prob={unit_drop_prob}")
    if len(sp) == 0:
        raise ConfigError(f"split {split!r} has no motions")
    if int(sp.lengths.min()) < unit:
        raise ConfigError(f"split {split!r} has motions shorter than the unit length {unit}")
    index, count = _shard(shard)
    per_host = len(sp) // count
    if per_host < 1:
        raise ConfigError(f"split {split!r} has {len(sp)} motions, fewer than the {count} hosts")
    lo, hi = per_host * index, per_host * (index + 1)
    num_batches = sys.maxsize // batch_size if num_epochs is None else int(num_epochs) * per_host // batch_size
    fn = _TrainBatch(sp, dataset.normalizer, int(batch_size), int(seed), (index, count), lo, hi, W,
                     int(unit), float(unit_drop_prob), min(dataset.min_len, W))
    ds = grain.MapDataset.range(num_batches).map(fn)
    settings = {
        "kind": "t2m_train", "source": dataset.source, "split": split, "motions": len(sp),
        "fingerprint": sp.fingerprint(), "crop_len": W, "unit": int(unit),
        "unit_drop_prob": float(unit_drop_prob), "batch_size": int(batch_size), "seed": int(seed),
        "shard": [index, count], "num_epochs": num_epochs,
    }
    return BatchIterator(ds, settings, num_threads, prefetch, worker_count)


class T2MEvalIterator:
    """Every motion of a split once, in split order, in batches of a fixed size (see
    :func:`make_t2m_eval_iterator`). Iterable any number of times; ``len()`` is the number of
    batches."""

    def __init__(self, dataset: T2MDataset, split: str, batch_size: int, crop_len: int, unit: int,
                 captions: str, drop_remainder: bool, shard: tuple[int, int]):
        sp = dataset[split]
        self.split, self.norm = sp, dataset.normalizer
        self.batch_size, self.crop_len, self.unit = batch_size, crop_len, unit
        if captions == "first":
            entries = [(i, 0) for i in range(len(sp))]
        elif captions == "all":
            entries = [(i, j) for i in range(len(sp)) for j in range(int(sp.num_captions[i]))]
        else:
            raise ConfigError(f"captions must be 'first' or 'all', got {captions!r}")
        index, count = shard
        if drop_remainder:  # every host the same number of full batches
            per_host = len(entries) // count
            self.num_batches = per_host // batch_size
            self.entries = entries[index * per_host:index * per_host + self.num_batches * batch_size]
        else:  # contiguous parts, the last batches padded with rows marked invalid
            per_host = -(-len(entries) // count)
            self.num_batches = -(-per_host // batch_size)
            self.entries = entries[index * per_host:(index + 1) * per_host]

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        B = self.batch_size
        for b in range(self.num_batches):
            part = self.entries[b * B:(b + 1) * B]
            valid = np.zeros(B, bool)
            valid[:len(part)] = True
            part = part + [(0, 0)] * (B - len(part))
            ids = np.array([i for i, _ in part], np.int64)
            win = [eval_window(self.split.lengths[i], self.crop_len, self.unit) for i in ids]
            starts = np.array([s for s, _ in win], np.int64)
            n = np.where(valid, [m for _, m in win], 0)
            texts = [self.split.motions[i].captions[j] if v else "" for (i, j), v in zip(part, valid)]
            out = _assemble(self.split, self.norm, ids, starts, n, self.crop_len, texts)
            out["valid"] = valid
            yield out


def make_t2m_eval_iterator(dataset: T2MDataset, split: str = "test", batch_size: int = 32, *,
                           crop_len: int | None = None, unit: int = UNIT_LENGTH,
                           captions: str = "first", drop_remainder: bool = False,
                           shard: Any = None) -> T2MEvalIterator:
    """Evaluation batches: every motion of ``split`` once (``captions="all"``: once per caption),
    in split order, the first caption, the centred window of ``min(T, crop_len) // unit * unit``
    frames (ScaleMoGen's deterministic evaluation loader).

    The last batch is padded to ``batch_size`` with rows whose ``valid`` is False (length 0,
    empty text) unless ``drop_remainder`` (then, as the published evaluation with
    ``drop_last``, the remainder is left out). ``shard`` (``None``, ``"auto"`` or
    ``(index, count)``) gives each host a contiguous part; every host runs the same number of
    batches.
    """
    W = dataset.max_len if crop_len is None else int(crop_len)
    if batch_size < 1 or unit < 1 or W < unit:
        raise ConfigError(f"need batch_size >= 1, unit >= 1 and crop_len >= unit, got {batch_size}, {unit}, {W}")
    if len(dataset[split]) == 0:
        raise ConfigError(f"split {split!r} has no motions")
    return T2MEvalIterator(dataset, split, int(batch_size), W, int(unit), captions, bool(drop_remainder),
                           _shard(shard))
