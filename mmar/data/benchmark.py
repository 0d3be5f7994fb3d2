"""The Bandai sparse-to-full-body benchmark: the same data, split and frame rate for every model.

Clips are the SMPL-22 retargeted Bandai Namco clips, split by :mod:`mmar.data.splits`
(2,235 train / 277 val / 277 test clips), resampled from 30 to ``fps`` (default 60, the rate
of the AMASS protocols of AGRoL, Mem-MLP and MotionMAR, so window lengths in frames mean the
same time span as in the papers). Each split is held as ``{clip: arrays}`` in the
``mmar convert`` layout.

Converting all clips takes about a minute on two cores, so the arrays are cached outside the
project (``$MMAR_CACHE_DIR`` or ``~/.cache/mmar``), keyed by the data's ``SHA256SUMS`` and the
frame rate. The cache holds data derived from CC BY-NC 4.0 material: it stays on your machine.

Two sources with one interface (``fps``, ``[split]``, ``subset``, ``clip_arrays``):

* :func:`load_sparse_benchmark` -> :class:`SparseBenchmark`: the npz cache, every array of
  every split read into memory at once.
* :class:`TfdsBenchmark`: a dataset prepared by :func:`mmar.data.tfds_builders.prepare`
  (``bandai_namco`` with config ``fps60``, or ``amass`` ``s1``...), read record by record:
  ``clip_arrays`` decodes only the arrays and clips asked for, ``subset`` only the chosen
  clips. The same clips give the same arrays, hence the same training batches.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np

from mmar.data.clip import clips_to_arrays, load_arrays, resample_clips, save_arrays

SPLITS = ("train", "val", "test")
# 2: rotations from the canonical T-pose (mmar.data.bvh.rest_alignment) instead of Bandai's bone frames
_VERSION = 2
# the per-clip arrays of the mmar convert layout, as the evaluation reads them
ARRAY_KEYS = ("joints", "rot6d", "root", "sparse", "offsets", "fps")


def spaced_names(names, max_clips: int | None = None) -> list[str]:
    """``names`` sorted, or ``max_clips`` evenly spaced of them (keeps the dataset-1 /
    dataset-2 mix of the sorted Bandai names)."""
    names = sorted(names)
    if max_clips is not None and max_clips < len(names):
        idx = np.linspace(0, len(names) - 1, max_clips).round().astype(int)
        names = [names[i] for i in sorted(set(idx))]
    return names


@dataclasses.dataclass
class SparseBenchmark:
    fps: float
    splits: dict[str, dict[str, dict[str, np.ndarray]]]  # split -> clip -> arrays

    def __getitem__(self, split: str) -> dict[str, dict[str, np.ndarray]]:
        return self.splits[split]

    def subset(self, split: str, max_clips: int | None = None) -> dict[str, dict[str, np.ndarray]]:
        return {n: self.splits[split][n] for n in spaced_names(self.splits[split], max_clips)}

    def clip_arrays(self, split: str, max_clips: int | None = None, keys=None):
        """The clips of :meth:`subset` as a :class:`mmar.data.pipeline.ClipArrays` of ``keys``."""
        from mmar.data.pipeline import ClipArrays

        return ClipArrays.from_arrays(self.subset(split, max_clips), keys)


class TfdsBenchmark:
    """The benchmark read from a dataset that :func:`mmar.data.tfds_builders.prepare` wrote
    to ``data_dir`` (ArrayRecord files, read through grain).

    Args:
      data_dir: the tfds data directory.
      fps: the frame rate the task expects; the dataset's config must have it.
      name: the dataset (``"bandai_namco"``, ``"amass"``).
      config: its builder config (default: ``f"fps{fps:g}"`` for Bandai, e.g. ``"fps60"``;
        the builder's default otherwise, e.g. AMASS ``"s1"``).
      num_threads: grain read threads of :meth:`clip_arrays`.
    """

    def __init__(self, data_dir: str, fps: float = 60.0, name: str = "bandai_namco",
                 config: str | None = None, num_threads: int = 2):
        from mmar.data.tfds_builders import builder_class, get_builder
        from mmar.errors import ConfigError

        if config is None and builder_class(name).name == "bandai_namco":
            config = f"fps{fps:g}"
        builder = get_builder(name, data_dir, config)
        have = getattr(builder.builder_config, "fps", None)
        if have is not None and float(have) != float(fps):
            raise ConfigError(f"{builder.name}/{builder.builder_config.name} holds {have:g} fps "
                              f"clips, the task expects {fps:g} fps")
        self.fps = float(fps)
        self.data_dir, self.name, self.config = str(data_dir), name, builder.builder_config.name
        self.num_threads = int(num_threads)
        self._records: dict[str, object] = {}

    def records(self, split: str):
        """The :class:`mmar.data.tfds_builders.ClipRecords` of ``split`` (opened once)."""
        if split not in self._records:
            from mmar.data.tfds_builders import ClipRecords

            self._records[split] = ClipRecords(self.name, split, self.data_dir, self.config)
        return self._records[split]

    def names(self, split: str) -> list[str]:
        return sorted(self.records(split).names)

    def __getitem__(self, split: str) -> dict[str, dict[str, np.ndarray]]:
        return self._read(split, self.names(split))

    def subset(self, split: str, max_clips: int | None = None) -> dict[str, dict[str, np.ndarray]]:
        return self._read(split, spaced_names(self.records(split).names, max_clips))

    def clip_arrays(self, split: str, max_clips: int | None = None, keys=None):
        """The clips of :meth:`subset` as a :class:`mmar.data.pipeline.ClipArrays` of ``keys``,
        decoded straight into its arrays (:meth:`ClipArrays.from_clip_records`)."""
        from mmar.data.pipeline import ClipArrays

        recs = self.records(split)
        names = None if max_clips is None else spaced_names(recs.names, max_clips)
        return ClipArrays.from_clip_records(recs, keys, names=names, num_threads=self.num_threads)

    def _read(self, split: str, names: list[str]) -> dict[str, dict[str, np.ndarray]]:
        """``{clip: arrays}`` of ``names`` in the ``mmar convert`` layout (writable copies)."""
        recs = self.records(split)
        pos = {n: i for i, n in enumerate(recs.names)}
        out = {}
        for n in names:
            rec = recs.read(pos[n], ARRAY_KEYS)
            out[n] = {k: np.array(rec[k], np.float32) for k in ARRAY_KEYS if k in rec}
        return out


def cache_dir() -> Path:
    return Path(os.environ.get("MMAR_CACHE_DIR", Path.home() / ".cache" / "mmar"))


def _data_key(root: Path, fps: float) -> str:
    sums = root / "SHA256SUMS"
    h = hashlib.sha256(f"v{_VERSION}-fps{fps:g}".encode())
    h.update(sums.read_bytes() if sums.exists() else str(root.resolve()).encode())
    return h.hexdigest()[:16]


def load_sparse_benchmark(root=None, fps: float = 60.0, use_cache: bool = True,
                          progress: bool = True) -> SparseBenchmark:
    """Train / val / test arrays of the Bandai benchmark at ``fps`` (cached after the first call)."""
    from mmar.data.bandai import bandai_root, load_bandai
    from mmar.data.splits import split_clips

    r = bandai_root(root)
    paths = {s: cache_dir() / f"bandai-{_data_key(r, fps)}-{s}.npz" for s in SPLITS}
    if use_cache and all(p.exists() for p in paths.values()):
        try:
            return SparseBenchmark(fps, {s: load_arrays(str(p)) for s, p in paths.items()})
        except Exception:  # a damaged cache is rebuilt, never trusted
            pass
    clips = load_bandai(r, progress=progress, captions=False)
    by_split = split_clips(clips)
    out = {}
    for s in SPLITS:
        part = resample_clips(by_split[s], fps)
        out[s] = dict(zip([c.name for c in part], clips_to_arrays(part, progress=progress)))
        if use_cache:
            save_arrays(str(paths[s]), out[s])
    return SparseBenchmark(float(fps), out)
