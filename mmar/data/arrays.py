"""numpy-only pieces of the clip arrays: joint maps and the npz layout of ``mmar convert``.

This module imports neither JAX nor TensorFlow, so the reference TFLite runtime
(:mod:`mmar.export.runtime`) and import workers can use it. :mod:`mmar.data.clip` re-exports
the names it held before they moved here (``JOINT_MAPS``, ``register_joint_map``,
``guess_joint_map``, ``save_arrays``, ``load_arrays``): the objects are the same, so
``register_joint_map`` through either module updates the one table.

The numpy sparse input and SMPL-22 arrays (:func:`mmar.geometry_np.sparse_features`,
:func:`mmar.geometry_np.smpl22_arrays`) and the sparse layout
(:data:`mmar.skeleton.SPARSE_SLICES`) live in :mod:`mmar.geometry_np` and
:mod:`mmar.skeleton`.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from typing import Mapping, Sequence

import numpy as np

from mmar.errors import DataFormatError, ShapeError
from mmar.skeleton import NUM_JOINTS, SMPL22_NAMES

# A joint map lists, for each SMPL-22 joint in order, the source joint name, or a tuple
# ("mid", a, b) for a joint placed at the midpoint of two source joints (its rotation is a's).
JointSpec = str | tuple[str, str, str]

JOINT_MAPS: dict[str, tuple[JointSpec, ...]] = {
    "bandai": (
        "Hips", "UpperLeg_L", "UpperLeg_R", "Spine", "LowerLeg_L", "LowerLeg_R",
        ("mid", "Spine", "Chest"), "Foot_L", "Foot_R", "Chest", "Toes_L", "Toes_R", "Neck",
        "Shoulder_L", "Shoulder_R", "Head", "UpperArm_L", "UpperArm_R", "LowerArm_L",
        "LowerArm_R", "Hand_L", "Hand_R",
    ),
    "lafan1": (
        "Hips", "LeftUpLeg", "RightUpLeg", "Spine", "LeftLeg", "RightLeg", "Spine1",
        "LeftFoot", "RightFoot", "Spine2", "LeftToe", "RightToe", "Neck", "LeftShoulder",
        "RightShoulder", "Head", "LeftArm", "RightArm", "LeftForeArm", "RightForeArm",
        "LeftHand", "RightHand",
    ),
    "smpl22": SMPL22_NAMES,
}


def register_joint_map(name: str, mapping: Sequence[JointSpec]) -> None:
    """Add a skeleton's joint-name map (22 entries in SMPL-22 order)."""
    if len(mapping) != NUM_JOINTS:
        raise ShapeError(f"joint map {name!r} needs {NUM_JOINTS} entries, got {len(mapping)}")
    JOINT_MAPS[name] = tuple(mapping)


def guess_joint_map(names: Sequence[str]) -> str:
    """The first registered map whose source joints are all present in ``names``."""
    have = set(names)
    for key, mapping in JOINT_MAPS.items():
        needed = set()
        for spec in mapping:
            needed |= set(spec[1:]) if isinstance(spec, tuple) else {spec}
        if needed <= have:
            return key
    raise KeyError(f"no registered joint map fits the joints {sorted(have)}; use register_joint_map")


# --------------------------------------------------------------------------
# the npz layout of mmar convert
# --------------------------------------------------------------------------

def save_arrays(path: str, clips: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """Write ``{clip: {key: array}}`` as one npz with ``<clip>/<key>`` entries, atomically
    (a temporary file renamed into place, so an existing file survives a failed write)."""
    flat = {}
    for clip, arrays in clips.items():
        if "/" in clip:
            raise ValueError(f"clip name {clip!r} must not contain '/'")
        for key, arr in arrays.items():
            flat[f"{clip}/{key}"] = np.asarray(arr)
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=d)
    os.close(fd)
    try:
        np.savez(tmp, **flat)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_arrays(path: str) -> dict[str, dict[str, np.ndarray]]:
    """Read an npz in the ``mmar convert`` layout back into ``{clip: {key: array}}``."""
    if not os.path.exists(path):
        raise DataFormatError("file not found", path)
    try:
        with np.load(path, allow_pickle=False) as z:
            out: dict[str, dict[str, np.ndarray]] = {}
            for k in z.files:
                if "/" not in k:
                    raise DataFormatError(f"key {k!r} is not of the form <clip>/<array>", path)
                clip, key = k.rsplit("/", 1)
                out.setdefault(clip, {})[key] = z[k]
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        if isinstance(e, DataFormatError):
            raise
        raise DataFormatError(f"not a readable npz file ({e})", path) from e
    return out
