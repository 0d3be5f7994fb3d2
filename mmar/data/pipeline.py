"""Grain input pipeline of the sparse-to-full-body models: random windows over the clips of
a split.

Design (throughput first). Per-record Python work is what makes a window pipeline slow, so
nothing here touches one window at a time:

* :class:`ClipArrays` holds every clip of a split in memory as *concatenated* per-frame
  arrays (``sparse (N, 54)``, ``rot6d (N, 22, 6)``, ``joints (N, 22, 3)``, ``root (N, 3)``,
  ``head (N, 3)``) plus clip boundaries. It is loaded once, from a list of
  :class:`~mmar.data.clip.Clip` (:meth:`ClipArrays.from_clips`), from the ``mmar convert``
  npz layout (:meth:`ClipArrays.from_arrays`) or from the ArrayRecord files written by
  :mod:`mmar.data.tfds_builders` (:meth:`ClipArrays.from_tfds`: a grain pass over the
  records that decodes only the requested arrays of the chosen clips, in read threads,
  straight into the concatenated arrays).
* :class:`WindowDataset` numbers every valid window ``(clip, start)`` of length ``W`` and
  turns a vector of window ids into a batch with one ``np.take`` per array.
* :func:`make_train_iterator` is a grain ``MapDataset`` whose element ``i`` is *batch* ``i``:
  the window ids of a batch come from a per-epoch permutation (seeded, the same on every
  host). Global batch ``i`` is the next ``batch_size * hosts`` windows of that stream and each
  host reads its own contiguous part of it (host ``k`` of ``n`` by
  ``grain.sharding.ShardByJaxProcess`` by default), so the global batches do not depend on
  the number of hosts: ``n`` processes train on exactly the batches of one process with the
  same global batch, and a run may resume under another process count. Batches run on across
  epoch boundaries. The iterator is grain's, so its state is a small JSON-serialisable dict
  and ``set_state`` restores the exact position.

Windows and the first-frame rule (``docs/design.md``): frame 0 of a clip has no velocity, so
a window never contains it. A clip of ``T`` frames yields windows starting at frames
``1, 1 + stride, ...`` up to ``T - W``. Clips shorter than ``W + 1`` frames are **skipped**
by default (``short="skip"``; their names are in ``WindowDataset.skipped``). With
``short="pad"`` such a clip yields one window from frame 1 whose missing tail repeats the
clip's last frame, and every batch carries a boolean ``mask (B, W)`` (True on real frames).

Batches are ``dict[str, np.ndarray]`` with leading ``(B, W)`` axes for per-frame keys:
``sparse (B, W, 54)``, ``rot6d (B, W, 22, 6)``, ``joints (B, W, 22, 3)``, ``root (B, W, 3)``,
``head (B, W, 3)`` (tracked head position, ``joints[..., 15, :]``, used to place the body in
the world). Optional keys: ``offsets (B, 22, 3)`` and ``fps (B,)`` of the window's clip,
``clip (B,)`` clip index, ``start (B,)`` first frame of the window within its clip, ``mask``.

Memory: every host holds the whole split, only the requested keys (1 kB per frame with every
key; the Bandai train split at 30 fps is 0.30 M frames: 0.31 GB, or 69 MB for ``sparse`` +
``head``). :meth:`ClipArrays.from_tfds` allocates those arrays once and fills them, so its
peak is the kept arrays plus a few records; building from mappings (``from_arrays``,
``from_records``) holds the per-clip arrays and their concatenation at once
(``tools/bench_data_source.py``). One core makes far more than 20,000 windows of 41 frames
per second (``tools/bench_pipeline.py``: about 3e5 windows/s with ``sparse``, 6e4 with every
key), so ``worker_count=0`` is the normal setting; worker processes (``mp_prefetch``) give the
same stream but each receives a pickled copy of the arrays and takes seconds to start.

Short clips: the Bandai clips are short (median 120 frames at 30 fps). At 30 fps a window of
41 frames skips 55 of the 2,235 train clips, 60 frames skip 357 and 196 frames skip 1,731:
use ``short="pad"`` (and the ``mask``) or the 60 fps data for long windows.
"""
from __future__ import annotations

import dataclasses
import sys
import threading
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from mmar.errors import ConfigError, ShapeError
from mmar.data.clip import clips_to_arrays, resample_clips  # noqa: F401  (re-exported)
from mmar.skeleton import HEAD, NUM_JOINTS, SMPL22_NAMES, SMPL22_PARENTS, SPARSE_DIM, SPARSE_JOINTS

# Per-frame arrays a ClipArrays can hold, with their trailing shapes.
FRAME_KEYS: dict[str, tuple[int, ...]] = {
    "sparse": (SPARSE_DIM,),
    "rot6d": (NUM_JOINTS, 6),
    "joints": (NUM_JOINTS, 3),
    "root": (3,),
    "head": (3,),
}
# Per-clip arrays (gathered once per window).
CLIP_KEYS: dict[str, tuple[int, ...]] = {"offsets": (NUM_JOINTS, 3), "fps": ()}
DEFAULT_KEYS: tuple[str, ...] = ("sparse", "rot6d", "joints", "root", "head")
INDEX_KEYS = ("clip", "start", "mask")



# --------------------------------------------------------------------------
# in-memory split
# --------------------------------------------------------------------------

@dataclasses.dataclass
class ClipArrays:
    """The clips of a split as concatenated arrays.

    Attributes:
      names: clip names, sorted.
      bounds: ``(C + 1,)`` int64; clip ``c`` owns frames ``bounds[c]:bounds[c + 1]``.
      frames: per-frame arrays ``key -> (N, ...)`` float32 (keys of :data:`FRAME_KEYS`).
      per_clip: per-clip arrays ``key -> (C, ...)`` (``offsets``, ``fps``).
    """

    names: tuple[str, ...]
    bounds: np.ndarray
    frames: dict[str, np.ndarray]
    per_clip: dict[str, np.ndarray]

    def __post_init__(self):
        self.names = tuple(self.names)
        self.bounds = np.asarray(self.bounds, np.int64)
        C = len(self.names)
        if self.bounds.shape != (C + 1,) or self.bounds[0] != 0 or np.any(np.diff(self.bounds) < 0):
            raise ShapeError(f"bounds must be ({C + 1},) non-decreasing from 0, got {self.bounds}")
        N = int(self.bounds[-1])
        for k, v in self.frames.items():
            if v.shape[0] != N:
                raise ShapeError(f"frame array {k!r} has {v.shape[0]} frames, bounds say {N}")
        for k, v in self.per_clip.items():
            if v.shape[0] != C:
                raise ShapeError(f"per-clip array {k!r} has {v.shape[0]} rows for {C} clips")

    @property
    def num_clips(self) -> int:
        return len(self.names)

    @property
    def num_frames(self) -> int:
        return int(self.bounds[-1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.bounds)

    def clip(self, i: int) -> dict[str, Any]:
        """The arrays of clip ``i`` (views), with ``name``."""
        a, b = self.bounds[i], self.bounds[i + 1]
        out: dict[str, Any] = {"name": self.names[i]}
        out.update({k: v[a:b] for k, v in self.frames.items()})
        out.update({k: v[i] for k, v in self.per_clip.items()})
        return out

    def subset(self, indices: Sequence[int]) -> "ClipArrays":
        """A new ClipArrays holding the given clips in the given order (copies)."""
        idx = np.asarray(indices, np.int64)
        lengths = self.lengths[idx]
        frame_idx = np.concatenate(
            [np.arange(self.bounds[i], self.bounds[i + 1]) for i in idx] or [np.zeros(0, np.int64)]
        )
        return ClipArrays(
            names=[self.names[i] for i in idx],
            bounds=np.concatenate([[0], np.cumsum(lengths)]),
            frames={k: v[frame_idx] for k, v in self.frames.items()},
            per_clip={k: v[idx] for k, v in self.per_clip.items()},
        )

    # ---- constructors ----------------------------------------------------

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]],
                     keys: Sequence[str] | None = None) -> "ClipArrays":
        """From mappings with ``name`` and the ``mmar convert`` arrays (``joints``,
        ``rot6d``, ``root``, ``sparse``, ``offsets``, ``fps``; ``head`` is derived from
        ``joints``). ``keys`` limits the per-frame arrays kept (default: all available)."""
        want = _wanted_frame_keys(keys)
        items = []
        for rec in records:
            name = rec["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            arrs: dict[str, np.ndarray] = {}
            for k in want:
                if k == "head" and "head" not in rec:
                    if "joints" not in rec:
                        continue
                    arrs["head"] = np.asarray(rec["joints"], np.float32)[:, HEAD]
                elif k in rec:
                    arrs[k] = np.asarray(rec[k], np.float32)
            per = {}
            if "offsets" in rec:
                per["offsets"] = np.asarray(rec["offsets"], np.float32)
            if "fps" in rec:
                per["fps"] = np.asarray(rec["fps"], np.float32).reshape(())
            items.append((name, arrs, per))
        items.sort(key=lambda t: t[0])
        names = [n for n, _, _ in items]
        if len(set(names)) != len(names):
            raise ShapeError("duplicate clip names")
        if not items:
            return cls((), np.zeros(1, np.int64), {k: np.zeros((0,) + FRAME_KEYS[k], np.float32)
                                                   for k in want}, {})
        frame_keys = set.intersection(*(set(a) for _, a, _ in items))
        clip_keys = set.intersection(*(set(p) for _, _, p in items))
        lengths = []
        for name, arrs, _ in items:
            Ts = {k: v.shape[0] for k, v in arrs.items()}
            if len(set(Ts.values())) > 1:
                raise ShapeError(f"clip {name}: arrays of different lengths {Ts}")
            for k in frame_keys:
                if arrs[k].shape[1:] != FRAME_KEYS[k]:
                    raise ShapeError(f"clip {name}: {k} must be (T, {FRAME_KEYS[k]}), "
                                     f"got {arrs[k].shape}")
            lengths.append(next(iter(Ts.values())) if Ts else 0)
        frames = {k: np.concatenate([a[k] for _, a, _ in items]) for k in sorted(frame_keys)}
        per_clip = {k: np.stack([p[k] for _, _, p in items]) for k in sorted(clip_keys)}
        return cls(names, np.concatenate([[0], np.cumsum(lengths)]), frames, per_clip)

    @classmethod
    def from_clips(cls, clips: Sequence[Any], keys: Sequence[str] | None = None) -> "ClipArrays":
        """From SMPL-22 :class:`~mmar.data.clip.Clip` objects (FK and sparse features are
        computed here)."""
        arrays = clips_to_arrays(clips)
        return cls.from_records(({"name": c.name, **a} for c, a in zip(clips, arrays)), keys)

    @classmethod
    def from_arrays(cls, clips: Mapping[str, Mapping[str, np.ndarray]],
                    keys: Sequence[str] | None = None) -> "ClipArrays":
        """From ``{clip: {key: array}}`` (the ``mmar convert`` npz layout, see
        :func:`mmar.data.clip.load_arrays`)."""
        return cls.from_records(({"name": n, **a} for n, a in clips.items()), keys)

    @classmethod
    def from_data_source(cls, source: Any, keys: Sequence[str] | None = None) -> "ClipArrays":
        """From a random-access source of records (``builder.as_data_source(split)``)."""
        return cls.from_records((source[i] for i in range(len(source))), keys)

    @classmethod
    def from_tfds(cls, data_dir: str, split: str, name: str = "bandai_namco",
                  config: str | None = None, keys: Sequence[str] | None = None, *,
                  names: Sequence[str] | None = None, num_threads: int = 2) -> "ClipArrays":
        """From the ArrayRecord files of a prepared :mod:`mmar.data.tfds_builders` dataset
        (see :meth:`from_clip_records`)."""
        from mmar.data.tfds_builders import ClipRecords

        return cls.from_clip_records(ClipRecords(name, split, data_dir, config), keys,
                                     names=names, num_threads=num_threads)

    @classmethod
    def from_clip_records(cls, records: Any, keys: Sequence[str] | None = None, *,
                          names: Sequence[str] | None = None,
                          num_threads: int = 2) -> "ClipArrays":
        """From a :class:`mmar.data.tfds_builders.ClipRecords` (a prepared split).

        The split's index (names, lengths) gives the clip boundaries first; then a grain pass
        over the chosen records (``num_threads`` read threads: zlib releases the GIL) decodes
        only the per-frame arrays of ``keys`` and copies each into its place. Memory: the kept
        arrays, once. The result equals :meth:`from_records` of the same clips and keys.

        Args:
          records: the split.
          keys: per-frame arrays to keep (default: every one the records have).
          names: the clips to read (default: all).
          num_threads: grain read threads (0: read in this thread).
        """
        import grain

        want = _wanted_frame_keys(keys)
        have = set(records.frame_keys)
        kept = sorted(k for k in want if k in have or (k == "head" and "joints" in have))
        decode = {"joints" if k == "head" else k for k in kept}
        all_names = records.names
        if len(set(all_names)) != len(all_names):
            raise ShapeError("duplicate clip names")
        if names is None:
            idx = sorted(range(len(all_names)), key=all_names.__getitem__)
        else:
            pos = {n: i for i, n in enumerate(all_names)}
            missing = sorted(set(names) - set(pos))
            if missing:
                raise ConfigError(f"clips not in the split: {missing[:5]}"
                                  f"{' ...' if len(missing) > 5 else ''}")
            idx = [pos[n] for n in sorted(set(names))]
        lengths = np.asarray(records.lengths, np.int64)[idx]
        bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        N, C = int(bounds[-1]), len(idx)
        frames = {k: np.empty((N,) + FRAME_KEYS[k], np.float32) for k in kept}
        clip_keys = [k for k in CLIP_KEYS if k in records.features]
        per_clip = {k: np.empty((C,) + CLIP_KEYS[k], np.float32) for k in clip_keys}
        if C:
            dataset = grain.MapDataset.source(idx).map(_ReadClip(records, decode))
            read = grain.ReadOptions(num_threads=num_threads,
                                     prefetch_buffer_size=max(1, 4 * num_threads))
            it = iter(dataset.to_iter_dataset(read))
            try:
                for c, rec in enumerate(it):
                    a, b = bounds[c], bounds[c + 1]
                    for k in kept:
                        v = rec["joints"][:, HEAD] if k == "head" else rec[k]
                        if v.shape != (b - a,) + FRAME_KEYS[k]:
                            raise ShapeError(f"clip {rec['name']}: {k} must be ({b - a}, "
                                             f"{FRAME_KEYS[k]}), got {v.shape}")
                        frames[k][a:b] = v
                    for k in clip_keys:
                        per_clip[k][c] = np.asarray(rec[k], np.float32).reshape(CLIP_KEYS[k])
            finally:  # stop the read threads now, not when the iterator is collected
                close = getattr(it, "close", None)
                if close is not None:
                    close()
        return cls([all_names[i] for i in idx], bounds, frames, per_clip)


def _wanted_frame_keys(keys: Sequence[str] | None) -> set[str]:
    """The per-frame arrays asked for by ``keys`` (None: all); unknown keys raise."""
    unknown = set(keys or ()) - set(FRAME_KEYS) - set(CLIP_KEYS) - set(INDEX_KEYS)
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)}; known: "
                          f"{sorted(FRAME_KEYS) + sorted(CLIP_KEYS) + list(INDEX_KEYS)}")
    return set(FRAME_KEYS if keys is None else keys) & set(FRAME_KEYS)


class _ReadClip:
    """Record ``i`` of a ``ClipRecords`` with the per-frame arrays ``keys`` decoded."""

    def __init__(self, records: Any, keys: Iterable[str]):
        self.records, self.keys = records, tuple(keys)

    def __call__(self, i: int) -> dict[str, Any]:
        return self.records.read(i, self.keys)


# --------------------------------------------------------------------------
# windows
# --------------------------------------------------------------------------

class WindowDataset:
    """Every window of ``window`` frames of a :class:`ClipArrays` (frame 0 of a clip never
    included), numbered ``0 .. len - 1`` clip by clip, and a vectorised batch gather.

    Args:
      clips: the split.
      window: frames per window ``W``.
      stride: frames between the starts of consecutive windows of a clip.
      short: ``"skip"`` (default) drops clips of fewer than ``W + 1`` frames; ``"pad"``
        gives them one window from frame 1, padded with the last frame, and adds ``mask``.
      keys: the arrays of a batch (default: the per-frame arrays of :data:`DEFAULT_KEYS`
        that ``clips`` holds); may add ``offsets``, ``fps``, ``clip``, ``start``, ``mask``.
    """

    def __init__(self, clips: ClipArrays, window: int, *, stride: int = 1, short: str = "skip",
                 keys: Sequence[str] | None = None):
        if window < 1 or stride < 1:
            raise ConfigError(f"window and stride must be positive, got {window}, {stride}")
        if short not in ("skip", "pad"):
            raise ConfigError(f"short must be 'skip' or 'pad', got {short!r}")
        self.clips = clips
        self.window = int(window)
        self.stride = int(stride)
        self.short = short
        if keys is None:
            keys = [k for k in DEFAULT_KEYS if k in clips.frames]
        keys = list(dict.fromkeys(keys))
        if short == "pad" and "mask" not in keys:
            keys.append("mask")
        for k in keys:
            if k in FRAME_KEYS and k not in clips.frames:
                raise ConfigError(f"key {k!r} was not loaded (have {sorted(clips.frames)})")
            if k in CLIP_KEYS and k not in clips.per_clip:
                raise ConfigError(f"key {k!r} was not loaded (have {sorted(clips.per_clip)})")
            if k not in FRAME_KEYS and k not in CLIP_KEYS and k not in INDEX_KEYS:
                raise ConfigError(f"unknown key {k!r}")
        self.keys = tuple(keys)
        usable = clips.lengths - 1  # frames 1 .. T-1
        counts = np.where(usable >= window, (usable - window) // stride + 1, 0)
        if short == "pad":
            counts = np.where((usable >= 1) & (usable < window), 1, counts)
        self.counts = counts.astype(np.int64)
        self.cum = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.skipped = tuple(n for n, c in zip(clips.names, self.counts) if c == 0)
        self._ar = np.arange(window, dtype=np.int64)
        self._flat = {k: v.reshape(v.shape[0], -1) for k, v in clips.frames.items()}

    def __len__(self) -> int:
        return int(self.cum[-1])

    @classmethod
    def from_clips(cls, clips: Sequence[Any], window: int, *, keys: Sequence[str] | None = None,
                   **kwargs) -> "WindowDataset":
        """From a list of SMPL-22 :class:`~mmar.data.clip.Clip` (no tfds)."""
        return cls(ClipArrays.from_clips(clips, keys=keys), window, keys=keys, **kwargs)

    @classmethod
    def from_tfds(cls, data_dir: str, split: str, window: int, *, name: str = "bandai_namco",
                  config: str | None = None, keys: Sequence[str] | None = None,
                  **kwargs) -> "WindowDataset":
        """From a prepared :mod:`mmar.data.tfds_builders` dataset's split."""
        arrays = ClipArrays.from_tfds(data_dir, split, name=name, config=config, keys=keys)
        return cls(arrays, window, keys=keys, **kwargs)

    def with_window(self, window: int, **kwargs) -> "WindowDataset":
        """The same clips with another window length (no copy of the arrays)."""
        kw = dict(stride=self.stride, short=self.short, keys=self.keys)
        kw.update(kwargs)
        return WindowDataset(self.clips, window, **kw)

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(clip index, start frame within the clip)`` of window ids."""
        ids = np.asarray(ids, np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"window ids out of range [0, {len(self)})")
        c = np.searchsorted(self.cum, ids, side="right") - 1
        return c, 1 + (ids - self.cum[c]) * self.stride

    def gather(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """The batch of windows ``ids`` (one ``np.take`` per array)."""
        c, start = self.locate(ids)
        return self._gather_at(c, start)

    def _gather_at(self, c: np.ndarray, start: np.ndarray,
                   mask_frames: np.ndarray | None = None) -> dict[str, np.ndarray]:
        B, W = len(c), self.window
        bounds = self.clips.bounds
        frames = (bounds[c] + start)[:, None] + self._ar
        mask = None
        if self.short == "pad" or mask_frames is not None or "mask" in self.keys:
            end = bounds[c + 1][:, None]
            mask = frames < end
            if mask_frames is not None:
                mask &= mask_frames
            frames = np.minimum(frames, end - 1)
        flat = frames.reshape(-1)
        out: dict[str, np.ndarray] = {}
        for k in self.keys:
            if k in FRAME_KEYS:
                out[k] = np.take(self._flat[k], flat, axis=0).reshape((B, W) + FRAME_KEYS[k])
            elif k in CLIP_KEYS:
                out[k] = self.clips.per_clip[k][c]
            elif k == "clip":
                out[k] = c.astype(np.int32)
            elif k == "start":
                out[k] = start.astype(np.int32)
            elif k == "mask":
                out[k] = mask
        return out


# --------------------------------------------------------------------------
# iterators
# --------------------------------------------------------------------------

def _shard_options(shard: Any, drop_remainder: bool):
    from grain import sharding

    if shard is None:
        return sharding.ShardOptions(0, 1, drop_remainder)
    if isinstance(shard, str):
        if shard != "auto":
            raise ConfigError(f"shard must be 'auto', None, (index, count) or ShardOptions, got {shard!r}")
        return sharding.ShardByJaxProcess(drop_remainder=drop_remainder)
    if isinstance(shard, sharding.ShardOptions):
        return sharding.ShardOptions(shard.shard_index, shard.shard_count, drop_remainder)
    index, count = shard
    return sharding.ShardOptions(int(index), int(count), drop_remainder)


class EpochBatches:
    """The item indices of batch ``b`` of this host's endless shuffled stream (grain-friendly:
    a batch depends on nothing but its number, so the stream resumes from a batch count).

    Epoch ``e`` is the permutation ``default_rng([seed, e]).permutation(num_items)``; this
    host reads positions ``[lo, hi)`` of it (an even split with the remainder dropped, so
    that every host runs the same number of steps). Position ``p`` of the host's
    stream is epoch ``p // (hi - lo)``, entry ``lo + p % (hi - lo)``; batches run across
    epoch boundaries. Batch ``b`` is positions ``b * step + offset + [0, batch_size)``
    (``step`` defaults to ``batch_size``): with ``lo, hi = 0, num_items``, ``step`` the
    global batch and ``offset`` this host's first row of it, hosts share one global stream
    (:func:`make_train_iterator`). Subclasses turn :meth:`ids` into a batch in ``__call__``.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, lo: int, hi: int, *,
                 step: int | None = None, offset: int = 0):
        self.num_items, self.batch_size, self.seed, self.lo, self.per_epoch = num_items, batch_size, seed, lo, hi - lo
        self.step = batch_size if step is None else int(step)
        self.offset = int(offset)
        self._perms: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_perms"], d["_lock"] = {}, None
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._lock = threading.Lock()

    def _perm(self, epoch: int) -> np.ndarray:
        with self._lock:
            p = self._perms.get(epoch)
            if p is None:
                rng = np.random.default_rng([self.seed, epoch])
                p = rng.permutation(self.num_items)[self.lo:self.lo + self.per_epoch]
                if len(self._perms) >= 2:
                    self._perms.pop(min(self._perms))
                self._perms[epoch] = p
            return p

    def ids(self, b: int) -> np.ndarray:
        """Item indices ``(batch_size,)`` of batch ``b``."""
        pos = int(b) * self.step + self.offset + np.arange(self.batch_size, dtype=np.int64)
        epoch, k = np.divmod(pos, self.per_epoch)
        e0, e1 = int(epoch[0]), int(epoch[-1])
        if e0 == e1:
            return self._perm(e0)[k]
        ids = np.empty_like(k)
        for e in range(e0, e1 + 1):
            sel = epoch == e
            ids[sel] = self._perm(e)[k[sel]]
        return ids


class _TrainBatch(EpochBatches):
    """This host's part of global batch ``b`` of the stream of windows (see
    :class:`EpochBatches`; every window of an epoch's permutation, ``batch_size`` rows from
    position ``b * step + offset``)."""

    def __init__(self, ds: WindowDataset, batch_size: int, seed: int, step: int, offset: int):
        super().__init__(len(ds), batch_size, seed, 0, len(ds), step=step, offset=offset)
        self.ds = ds

    def __call__(self, b: int) -> dict[str, np.ndarray]:
        return self.ds.gather(self.ids(b))


class BatchIterator:
    """An iterator of batches whose position is saved and restored with
    :meth:`get_state` / :meth:`set_state` (a JSON-serialisable dict). The state also
    records the pipeline's settings and ``set_state`` refuses a state of another pipeline.

    ``per_host``: settings that may differ between the saved state and this iterator (the
    host's shard and its part of the batch, for a stream whose position means the same
    global batch on any number of hosts; its settings then hold ``global_batch_size``)."""

    def __init__(self, dataset: Any, settings: dict[str, Any], num_threads: int,
                 prefetch: int, worker_count: int, per_host: Sequence[str] = ()):
        import grain

        self._settings = settings
        self._per_host = tuple(per_host)
        ro = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
        ids = dataset.to_iter_dataset(ro)
        if worker_count > 0:
            ids = ids.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
        self._it = iter(ids)

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._it)

    def get_state(self) -> dict[str, Any]:
        return {"pipeline": dict(self._settings), "iterator": self._it.get_state()}

    def _comparable(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}
        if self._per_host:
            shard, batch = out.get("shard"), out.get("batch_size")
            old_state = "global_batch_size" not in out  # saved before it was recorded
            if old_state and isinstance(shard, list) and len(shard) == 2 and isinstance(batch, int):
                out["global_batch_size"] = batch * int(shard[1])
            for k in self._per_host:
                out.pop(k, None)
        return out

    def set_state(self, state: Mapping[str, Any]) -> None:
        saved = self._comparable(dict(state.get("pipeline", {})))
        mine = self._comparable(self._settings)
        if saved != mine:
            diff = {k: (saved.get(k), mine.get(k)) for k in set(saved) | set(mine)
                    if saved.get(k) != mine.get(k)}
            raise ConfigError(f"iterator state is from another pipeline (saved, this): {diff}")
        self._it.set_state(state["iterator"])

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


def _as_window_dataset(source: Any, window: int | None, **kwargs) -> WindowDataset:
    if isinstance(source, WindowDataset):
        if window is not None and window != source.window:
            return source.with_window(window, **kwargs)
        if kwargs:
            return source.with_window(source.window, **kwargs)
        return source
    if window is None:
        raise ConfigError("window is required unless source is a WindowDataset")
    if isinstance(source, ClipArrays):
        return WindowDataset(source, window, **kwargs)
    return WindowDataset.from_clips(list(source), window, **kwargs)


def make_train_iterator(source: WindowDataset | ClipArrays | Sequence[Any],
                        window: int | None = None, batch_size: int = 256, seed: int = 0, *,
                        shard: Any = "auto", num_epochs: int | None = None,
                        worker_count: int = 0, num_threads: int = 1, prefetch: int = 2,
                        **window_kwargs) -> BatchIterator:
    """Shuffled batches of random windows, deterministic for a seed.

    Args:
      source: a :class:`WindowDataset`, a :class:`ClipArrays` or a list of SMPL-22 clips.
      window: frames per window (default: ``source.window``).
      batch_size: windows per batch of this host (the global batch is ``batch_size`` times
        the shard count); every batch is full.
      seed: shuffling seed (the same on every host).
      shard: ``"auto"`` (``grain.sharding.ShardByJaxProcess``: ``jax.process_index()`` of
        ``jax.process_count()``), ``None`` (no sharding), ``(index, count)`` or a
        ``grain.sharding.ShardOptions``. Host ``index`` reads rows ``[index * batch_size,
        (index + 1) * batch_size)`` of every global batch, so hosts see disjoint windows, run
        the same number of steps, and together read the batches of one unsharded iterator
        of the global batch size (the saved state resumes under another shard count with
        the same global batch).
      num_epochs: ``None`` repeats forever; otherwise ``num_epochs * windows //
        global_batch`` batches (batches run across epoch boundaries).
      worker_count: grain worker processes (0: in this process, the normal setting).
      num_threads, prefetch: grain read threads and prefetch buffer (batches) in this process;
        one thread prepares the next batches while the accelerator runs the step.
      window_kwargs: ``stride``, ``short``, ``keys`` for a new :class:`WindowDataset`.

    Returns:
      a :class:`BatchIterator` of ``dict[str, np.ndarray]`` (see the module docstring).
    """
    import grain

    ds = _as_window_dataset(source, window, **window_kwargs)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    opts = _shard_options(shard, drop_remainder=True)
    index, count = int(opts.shard_index), int(opts.shard_count)
    if not 0 <= index < count:
        raise ConfigError(f"shard index must be in [0, {count}), got {index}")
    if len(ds) < 1:
        raise ConfigError(
            f"no training windows of {ds.window} frames ({ds.clips.num_clips} clips)"
        )
    global_batch = int(batch_size) * count
    if num_epochs is None:
        num_batches = sys.maxsize // global_batch
    else:
        num_batches = int(num_epochs) * len(ds) // global_batch
    fn = _TrainBatch(ds, int(batch_size), seed, global_batch, index * int(batch_size))
    dataset = grain.MapDataset.range(num_batches).map(fn)
    settings = {
        "kind": "train", "window": ds.window, "stride": ds.stride, "short": ds.short,
        "keys": list(ds.keys), "batch_size": int(batch_size), "seed": int(seed),
        "shard": [index, count], "global_batch_size": global_batch,
        "num_windows": len(ds), "num_epochs": num_epochs,
    }
    return BatchIterator(dataset, settings, num_threads, prefetch, worker_count,
                         per_host=("shard", "batch_size"))


__all__ = [
    "ClipArrays", "WindowDataset", "EpochBatches", "BatchIterator", "make_train_iterator",
    "clips_to_arrays", "FRAME_KEYS", "CLIP_KEYS", "DEFAULT_KEYS",
]
