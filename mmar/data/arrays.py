"""numpy-only pieces of the clip arrays: joint maps, the 54-number sparse input, and the npz
layout of ``mmar convert``.

This module imports neither JAX nor TensorFlow, so the reference TFLite runtime
(:mod:`mmar.export.runtime`) and import workers can use it. :mod:`mmar.data.clip` re-exports
the names it held before they moved here (``JOINT_MAPS``, ``register_joint_map``,
``guess_joint_map``, ``SPARSE_SLICES``, ``save_arrays``, ``load_arrays``): the objects are the
same, so ``register_joint_map`` through either module updates the one table.

:func:`sparse_features_np` and :func:`smpl22_arrays_np` are numpy twins (float64 inside) of
:func:`mmar.data.clip.sparse_features` and :func:`mmar.data.clip.clips_to_arrays` (JAX,
float32); they agree to float32 rounding (``tests/test_export_runtime.py`` checks it on real
Bandai clips).
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from typing import Mapping, Sequence

import numpy as np

from mmar.errors import DataFormatError, ShapeError
from mmar.skeleton import NUM_JOINTS, SMPL22_NAMES, SMPL22_PARENTS, SPARSE_JOINTS

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


SPARSE_SLICES = {
    "rot6d": slice(0, 18),
    "rotvel6d": slice(18, 36),
    "pos": slice(36, 45),
    "posdiff": slice(45, 54),
}


# --------------------------------------------------------------------------
# rotations and sparse features (numpy twins of mmar.geometry / mmar.data.clip)
# --------------------------------------------------------------------------

def matrix_to_rot6d_np(m: np.ndarray) -> np.ndarray:
    """numpy twin of :func:`mmar.geometry.matrix_to_rot6d`: ``(..., 3, 3) -> (..., 6)``, the
    first two columns ``[c0, c1]``."""
    m = np.asarray(m)
    return np.concatenate([m[..., :, 0], m[..., :, 1]], -1)


def rot6d_to_matrix_np(d6: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """numpy twin of :func:`mmar.geometry.rot6d_to_matrix` (Gram-Schmidt on the two columns,
    the third is their cross product); computes in the input's float precision."""
    d6 = np.asarray(d6)
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / np.maximum(np.linalg.norm(a1, axis=-1, keepdims=True), eps)
    a2 = a2 - np.sum(b1 * a2, -1, keepdims=True) * b1
    b2 = a2 / np.maximum(np.linalg.norm(a2, axis=-1, keepdims=True), eps)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], -1)


def sparse_features_np(global_rot: np.ndarray, global_pos: np.ndarray,
                       joints: Sequence[int] = SPARSE_JOINTS) -> np.ndarray:
    """numpy twin of :func:`mmar.data.clip.sparse_features`: the 54-number input per frame.

    ``global_rot (..., T, J, 3, 3)``, ``global_pos (..., T, J, 3)`` -> ``(..., T, 54)``: over
    ``joints`` (head, left wrist, right wrist) the global 6D rotation, the rotation velocity
    ``R_{t-1}^T R_t`` in 6D, the global position and the position difference ``p_t - p_{t-1}``;
    frame 0 gets identity / zero velocity (the first-frame rule of ``docs/design.md``; the
    identity is computed as ``R_0^T R_0``, exact up to rounding, as in the JAX function).
    Computes in the inputs' precision (float64 for the arrays of :func:`smpl22_arrays_np`).
    """
    j = np.asarray(joints)
    R = np.asarray(global_rot)[..., j, :, :]
    p = np.asarray(global_pos)[..., j, :]
    R_prev = np.concatenate([R[..., :1, :, :, :], R[..., :-1, :, :, :]], -4)
    p_prev = np.concatenate([p[..., :1, :, :], p[..., :-1, :, :]], -3)
    vel = np.swapaxes(R_prev, -1, -2) @ R
    lead = R.shape[:-3]
    return np.concatenate([
        matrix_to_rot6d_np(R).reshape(lead + (-1,)),
        matrix_to_rot6d_np(vel).reshape(lead + (-1,)),
        p.reshape(lead + (-1,)),
        (p - p_prev).reshape(lead + (-1,)),
    ], -1)


def smpl22_arrays_np(local_rot: np.ndarray, offsets: np.ndarray, root_pos: np.ndarray,
                     fps: float) -> dict[str, np.ndarray]:
    """The ``mmar convert`` arrays of one SMPL-22 clip, in numpy.

    numpy twin of ``mmar.data.clip.clips_to_arrays([clip])[0]`` (float64 forward kinematics,
    cast to float32): ``joints (T,22,3)``, ``rot6d (T,22,6)``, ``root (T,3)``, ``sparse
    (T,54)``, ``fps`` and ``offsets (22,3)``. ``local_rot (T,22,3,3)`` are local rotations on
    the SMPL-22 tree, ``offsets (22,3)`` its rest offsets in metres, ``root_pos (T,3)``.
    Frame 0's velocities are set to exactly identity / zero, as ``clips_to_arrays`` does.
    """
    from mmar.data.bvh import forward_kinematics_np

    local_rot = np.asarray(local_rot)
    if local_rot.ndim != 4 or local_rot.shape[1:] != (NUM_JOINTS, 3, 3) or local_rot.shape[0] < 1:
        raise ShapeError(f"smpl22_arrays_np: local_rot must be (T>=1, {NUM_JOINTS}, 3, 3), got {local_rot.shape}")
    offsets = np.asarray(offsets, np.float32)
    if offsets.shape != (NUM_JOINTS, 3):
        raise ShapeError(f"smpl22_arrays_np: offsets must be ({NUM_JOINTS}, 3), got {offsets.shape}")
    g_rot, g_pos = forward_kinematics_np(local_rot, offsets, SMPL22_PARENTS, root_pos)
    sparse = sparse_features_np(g_rot, g_pos).astype(np.float32)
    sparse[0, SPARSE_SLICES["rotvel6d"]] = np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), len(SPARSE_JOINTS))
    sparse[0, SPARSE_SLICES["posdiff"]] = 0.0
    return {
        "joints": g_pos.astype(np.float32),
        "rot6d": matrix_to_rot6d_np(local_rot).astype(np.float32),
        "root": np.asarray(root_pos, np.float32),
        "sparse": sparse,
        "fps": np.asarray(fps, np.float32),
        "offsets": offsets,
    }


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
