"""The Bandai sparse-to-full-body benchmark: the same data, split and frame rate for every model.

Clips are the SMPL-22 retargeted Bandai Namco clips, split by :mod:`mmar.data.splits`
(2,235 train / 277 val / 277 test clips), resampled from 30 to ``fps`` (default 60, the rate
of the AMASS protocols of AGRoL, Mem-MLP and MotionMAR, so window lengths in frames mean the
same time span as in the papers). Each split is held as ``{clip: arrays}`` in the
``mmar convert`` layout.

Converting all clips takes about a minute on two cores, so the arrays are cached outside the
project (``$MMAR_CACHE_DIR`` or ``~/.cache/mmar``), keyed by the data's ``SHA256SUMS`` and the
frame rate. The cache holds data derived from CC BY-NC 4.0 material: it stays on your machine.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np

from mmar.data.clip import clips_to_arrays, load_arrays, resample_clips, save_arrays

SPLITS = ("train", "val", "test")
_VERSION = 1


@dataclasses.dataclass
class SparseBenchmark:
    fps: float
    splits: dict[str, dict[str, dict[str, np.ndarray]]]  # split -> clip -> arrays

    def __getitem__(self, split: str) -> dict[str, dict[str, np.ndarray]]:
        return self.splits[split]

    def subset(self, split: str, max_clips: int | None = None) -> dict[str, dict[str, np.ndarray]]:
        names = sorted(self.splits[split])
        if max_clips is not None and max_clips < len(names):
            # keep the dataset-1 / dataset-2 mix: take evenly spaced clips
            idx = np.linspace(0, len(names) - 1, max_clips).round().astype(int)
            names = [names[i] for i in sorted(set(idx))]
        return {n: self.splits[split][n] for n in names}


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
