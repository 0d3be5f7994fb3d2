"""Motion input from the command line: BVH files, directories and archives, AMASS ``.npz`` files
(with a user-supplied SMPL-H body model), HumanML3D / KIT-ML folders and converted npz files,
told apart by :func:`input_format` and read into SMPL-22 clips or arrays in the ``mmar convert``
layout."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from mmar.errors import MmarError

__all__ = ["FORMATS", "input_format", "load_inputs", "checked_arrays", "finite_clip_arrays", "load_eval_arrays"]

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
    """SMPL-22 clips of every input, each read by its format -> ``(clips, errors)``: a missing
    path, an input of unknown format or a malformed file is reported in ``errors`` and the
    others are still read. ``fps`` is the AMASS target rate (resampling of the other formats is
    the caller's); it must be a finite rate in :data:`mmar.data.arrays.FPS_RANGE`."""
    from mmar.data.arrays import check_fps

    if fps is not None:
        fps = check_fps(fps, "--fps")
    clips, errors = [], []
    formats: dict[str, str] = {}
    for path in inputs:
        if not os.path.exists(path):
            errors.append(f"{path}: no such file or directory")
            continue
        try:
            formats[path] = input_format(path, kind)
        except MmarError as e:
            errors.append(str(e))
    bvh = [i for i, f in formats.items() if f == "bvh"]
    amass = [i for i, f in formats.items() if f == "amass"]
    hml = [i for i, f in formats.items() if f not in ("bvh", "amass")]
    if bvh:
        from mmar.data.sources import load_clips

        # retargeting to SMPL-22 happens in the worker processes (joint map guessed by names)
        src_clips, errs = load_clips(bvh, scale=scale, workers=workers, progress=progress, on_error="ignore",
                                     retarget="auto")
        errors.extend(str(e) for e in errs)
        clips.extend(src_clips)
    if amass:
        from mmar.data import amass as am
        from mmar.data.arrays import check_npz_file

        if not body_model:
            for path in amass:
                try:
                    if not Path(path).is_dir():
                        check_npz_file(path)
                    errors.append(f"{path}: AMASS input needs --body-model SMPLH.npz (the licensed SMPL-H body "
                                  f"model file)")
                except MmarError as e:
                    errors.append(str(e))
            amass = []
        else:
            check_npz_file(body_model)
            bm = am.load_body_model(body_model)
        for path in amass:
            try:
                if Path(path).is_dir():
                    clips.extend(am.load_amass(path, bm, fps=fps))
                else:
                    check_npz_file(path)
                    clips.append(am.load_amass_clip(path, bm, fps=fps))
            except MmarError as e:
                errors.append(str(e))
    for path in hml:
        from mmar.data import humanml3d as h

        try:
            for split in splits:
                for rec in h.load_humanml3d(path, split, kind=formats[path] or "humanml3d"):
                    clips.append(h.to_clip(rec))
        except MmarError as e:
            errors.append(str(e))
    return clips, errors


def checked_arrays(clips: Sequence, progress: bool = False) -> tuple[dict, list[str]]:
    """The ``mmar convert`` arrays of SMPL-22 clips -> ``({clip: arrays}, errors)``: a clip
    whose arrays are not all finite after conversion (forward kinematics, features) is left out
    and reported, naming the clip, the array and the first frame."""
    from mmar.data.arrays import nonfinite_report
    from mmar.data.clip import clips_to_arrays

    out, errors = {}, []
    for c, arrays in zip(clips, clips_to_arrays(list(clips), progress=progress)):
        report = nonfinite_report(arrays)
        if report is None:
            out[c.name] = arrays
        else:
            errors.append(f"{c.source or c.name}: clip {c.name!r}: not converted, {report}")
    return out, errors


def finite_clip_arrays(arrays: dict, path: str) -> tuple[dict, list[str]]:
    """Split ``{clip: arrays}`` read from ``path`` into the clips whose arrays (and fps) are all
    finite and one error per other clip."""
    from mmar.data.arrays import check_fps, nonfinite_report
    from mmar.errors import ConfigError

    good, errors = {}, []
    for name, a in arrays.items():
        report = nonfinite_report(a)
        if report is None and "fps" in a:
            try:
                check_fps(a["fps"], "fps")
            except ConfigError as e:
                report = str(e)
        if report is None:
            good[name] = a
        else:
            errors.append(f"{path}: clip {name!r}: {report}")
    return good, errors


def load_eval_arrays(path: str, fps: float | None, workers: int = 2) -> tuple[dict, list[str]]:
    """Ground-truth arrays ``{clip: arrays}`` of ``path`` at ``fps`` -> ``(arrays, errors)``: a
    converted npz (which must already be at ``fps``) or BVH input (resampled to ``fps``). A file
    that cannot be read, or a clip with NaN/Inf values, is left out and reported in ``errors``."""
    from mmar.data.clip import load_arrays, resample_clips

    if path.endswith(".npz"):
        arrays, errors = finite_clip_arrays(load_arrays(path), path)
        if not arrays:
            raise MmarError(f"{path}: no usable clip" + (f" ({errors[0]})" if errors else ""))
        if fps and any(abs(float(a["fps"]) - fps) > 1e-6 for a in arrays.values()):
            raise MmarError(f"{path}: clips are not at {fps:g} fps; convert with --fps {fps:g}")
        return arrays, errors
    from mmar.data.sources import load_clips

    if not os.path.exists(path):
        raise MmarError(f"{path}: no such file or directory")
    clips, errs = load_clips([path], scale=0.01, workers=workers, progress=True, on_error="ignore", retarget="auto")
    errors = [str(e) for e in errs]
    if not clips:
        raise MmarError(f"{path}: no clip could be read" + (f" ({errors[0]})" if errors else ""))
    if fps:
        clips = resample_clips(clips, fps)
    arrays, bad = checked_arrays(clips)
    if not arrays:
        raise MmarError(f"{path}: no usable clip ({bad[0]})")
    return arrays, errors + bad
