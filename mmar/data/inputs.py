"""Motion input from the command line: BVH files, directories and archives, AMASS ``.npz`` files
(with a user-supplied SMPL-H body model), HumanML3D / KIT-ML folders and converted npz files,
told apart by :func:`input_format` and read into SMPL-22 clips or arrays in the ``mmar convert``
layout."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from mmar.errors import MmarError

__all__ = ["FORMATS", "input_format", "load_inputs", "load_eval_arrays"]

FORMATS = ("bvh", "amass", "humanml3d", "kit")
_BVH_SUFFIXES = (".bvh",)
_ARCHIVE_SUFFIXES = (".tar.xz", ".tar.gz", ".tgz", ".tar")


def input_format(path: str | os.PathLike, kind: str | None = None) -> str:
    """The format of an input path (one of :data:`FORMATS`); ``kind`` forces it."""
    p = Path(path)
    if kind:
        return kind
    if p.is_dir():
        if (p / "new_joint_vecs").is_dir():
            return "humanml3d"
        if any(p.rglob("*_poses.npz")) and not any(p.rglob("*.bvh")):
            return "amass"
        return "bvh"
    name = p.name.lower()
    if name.endswith(_BVH_SUFFIXES) or name.endswith(_ARCHIVE_SUFFIXES):
        return "bvh"
    if name.endswith(".npz"):
        return "amass"
    raise MmarError(f"{path}: cannot tell the format (expected .bvh, a directory, an archive "
                    f"{'/'.join(_ARCHIVE_SUFFIXES)}, an AMASS .npz or a HumanML3D folder)")


def load_inputs(inputs: Sequence[str], *, kind: str | None = None, scale: float = 0.01, fps: float | None = None,
                body_model: str | None = None, splits: Sequence[str] = ("train", "val", "test"), workers: int = 2,
                progress: bool = True) -> tuple[list, list[str]]:
    """SMPL-22 clips of every input, each read by its format -> ``(clips, errors)``: a malformed
    file is reported in ``errors`` and the others are still read. ``fps`` is the AMASS target
    rate (resampling of the other formats is the caller's)."""
    for path in inputs:
        if not os.path.exists(path):
            raise MmarError(f"{path}: no such file or directory")
    clips, errors = [], []
    bvh = [i for i in inputs if input_format(i, None if kind in (None, "bvh") else kind) == "bvh"]
    amass = [i for i in inputs if i not in bvh and input_format(i, kind) == "amass"]
    hml = [i for i in inputs if i not in bvh and i not in amass]
    if bvh:
        from mmar.data.sources import load_clips

        # retargeting to SMPL-22 happens in the worker processes (joint map guessed by names)
        src_clips, errs = load_clips(bvh, scale=scale, workers=workers, progress=progress, on_error="ignore",
                                     retarget="auto")
        errors.extend(errs)
        clips.extend(src_clips)
    if amass:
        if not body_model:
            raise MmarError("AMASS input needs --body-model SMPLH.npz (the licensed SMPL-H body model file)")
        from mmar.data import amass as am

        bm = am.load_body_model(body_model)
        for path in amass:
            if Path(path).is_dir():
                clips.extend(am.load_amass(path, bm, fps=fps))
            else:
                try:
                    clips.append(am.load_amass_clip(path, bm, fps=fps))
                except MmarError as e:
                    errors.append(str(e))
    for path in hml:
        from mmar.data import humanml3d as h

        for split in splits:
            for rec in h.load_humanml3d(path, split, kind=kind or "humanml3d"):
                clips.append(h.to_clip(rec))
    return clips, errors


def load_eval_arrays(path: str, fps: float | None, workers: int = 2) -> tuple[dict, list[str]]:
    """Ground-truth arrays ``{clip: arrays}`` of ``path`` at ``fps`` -> ``(arrays, errors)``: a
    converted npz (which must already be at ``fps``) or BVH input (resampled to ``fps``)."""
    from mmar.data.clip import clips_to_arrays, load_arrays, resample_clips

    if path.endswith(".npz"):
        arrays = load_arrays(path)
        if fps and any(abs(float(a["fps"]) - fps) > 1e-6 for a in arrays.values()):
            raise MmarError(f"{path}: clips are not at {fps:g} fps; convert with --fps {fps:g}")
        return arrays, []
    from mmar.data.sources import load_clips

    if not os.path.exists(path):
        raise MmarError(f"{path}: no such file or directory")
    clips, errors = load_clips([path], scale=0.01, workers=workers, progress=True, on_error="ignore", retarget="auto")
    if not clips:
        raise MmarError(f"{path}: no clip could be read" + (f" ({errors[0]})" if errors else ""))
    if fps:
        clips = resample_clips(clips, fps)
    return dict(zip([c.name for c in clips], clips_to_arrays(clips))), errors
