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

import glob
import math
import os
import tempfile
import zipfile
from typing import Any, Mapping, Sequence

import numpy as np

from mmar.errors import ConfigError, DataFormatError, OutputError, ShapeError
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

def check_writable(path: str, what: str = "--out") -> None:
    """Raise :class:`OutputError` now, before any work, when ``path`` cannot be written: it is
    a directory, a parent is a file, or the nearest existing directory is not writable."""
    p = os.path.abspath(os.fspath(path))
    if os.path.isdir(p):
        raise OutputError(f"{path}: is a directory; {what} needs a file name")
    d = os.path.dirname(p)
    while not os.path.exists(d):
        d = os.path.dirname(d)
    if not os.path.isdir(d):
        raise OutputError(f"{path}: cannot create it, {d} is not a directory")
    if not os.access(d, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: directory {d} is not writable")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, or no permission to ask: assume alive
        return True
    return True


def _remove_stale_temps(d: str, base: str) -> None:
    """Temporary files of earlier saves to the same name whose process is gone (killed during a
    save): ``.<name>.<pid>.<random>.tmp.npz``."""
    for f in glob.glob(os.path.join(glob.escape(d), f".{glob.escape(base)}.*.tmp.npz")):
        rest = os.path.basename(f)[len(base) + 2:]
        pid = rest.split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                os.remove(f)
            except OSError:
                pass


def save_arrays(path: str, clips: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """Write ``{clip: {key: array}}`` as one npz with ``<clip>/<key>`` entries, atomically
    (a temporary file ``.<name>.<pid>.*.tmp.npz`` in the same directory, renamed into place,
    so an existing file survives a failed write). The temporary file is removed on any error
    or interruption; one left by a process killed during a save is removed by the next save to
    the same name. The file gets the mode of a newly created file (``0o666`` less the umask).
    Raises :class:`OutputError` when the file cannot be written."""
    flat = {}
    for clip, arrays in clips.items():
        if "/" in clip:
            raise ValueError(f"clip name {clip!r} must not contain '/'")
        for key, arr in arrays.items():
            flat[f"{clip}/{key}"] = np.asarray(arr)
    check_writable(path, "the output")
    d = os.path.dirname(os.path.abspath(path)) or "."
    base = os.path.basename(path)
    try:
        os.makedirs(d, exist_ok=True)
        _remove_stale_temps(d, base)
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.{os.getpid()}.", suffix=".tmp.npz", dir=d)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from e
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **flat)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except OSError as e:
            raise OutputError(f"{path}: cannot write ({e.strerror or e})") from e
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def check_npz_file(path: str) -> None:
    """Raise :class:`DataFormatError` unless ``path`` starts like an npz (zip) file: a missing
    file, an ``.npy`` array, a pickle (refused: never unpickled) or anything else are each
    named as such."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except FileNotFoundError:
        raise DataFormatError("file not found", path) from None
    except OSError as e:
        raise DataFormatError(f"cannot read file ({e.strerror or e})", path) from e
    if head.startswith(_ZIP_MAGIC):
        return
    if head.startswith(b"\x93NUMPY"):
        raise DataFormatError("an .npy array file, not an npz (zip) file", path)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise DataFormatError("contains pickled data, which is refused (not an npz file)", path)
    raise DataFormatError("not an npz (zip) file" + (" (empty file)" if not head else ""), path)


def load_arrays(path: str) -> dict[str, dict[str, np.ndarray]]:
    """Read an npz in the ``mmar convert`` layout back into ``{clip: {key: array}}``."""
    check_npz_file(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            out: dict[str, dict[str, np.ndarray]] = {}
            for k in z.files:
                if "/" not in k:
                    raise DataFormatError(f"key {k!r} is not of the form <clip>/<array>", path)
                clip, key = k.rsplit("/", 1)
                out.setdefault(clip, {})[key] = z[k]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        if isinstance(e, DataFormatError):
            raise
        raise DataFormatError(f"not a readable npz file ({e})", path) from e
    return out


# --------------------------------------------------------------------------
# checks shared by every conversion step
# --------------------------------------------------------------------------

#: per-frame arrays (leading axis = frames) of the convert layout and of clips
PER_FRAME_KEYS = frozenset({"joints", "rot6d", "root", "sparse", "local_rot", "root_pos", "local_trans", "rot"})

#: frame rates accepted anywhere (BVH Frame Time, --fps, stored fps): finite and in this range
FPS_RANGE = (0.01, 100_000.0)


def nonfinite_report(arrays: Mapping[str, Any]) -> str | None:
    """``None`` when every float array of ``arrays`` is finite, else one line naming the first
    array with NaN/Inf, how many values and the first frame (or index) holding one."""
    for key, a in arrays.items():
        if a is None:
            continue
        a = np.asarray(a)
        if not np.issubdtype(a.dtype, np.inexact):
            continue
        bad = ~np.isfinite(a)
        if not bad.any():
            continue
        n = int(bad.sum())
        if a.ndim == 0:
            where = ""
        else:
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            where = f", first at frame {first[0]}" if key in PER_FRAME_KEYS else f", first at index {list(first)}"
        return f"{key}: {n} non-finite value{'s' if n != 1 else ''} (NaN/Inf){where}"
    return None


def check_finite(arrays: Mapping[str, Any], what: str, path: str | None = None) -> None:
    """Raise :class:`DataFormatError` (``path``: what: report) when an array is not finite."""
    report = nonfinite_report(arrays)
    if report is not None:
        raise DataFormatError(f"{what}: {report}", path)


def check_fps(fps: Any, what: str = "fps") -> float:
    """``fps`` as a float, or :class:`ConfigError` unless it is finite and within
    :data:`FPS_RANGE`."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: expected a number, got {fps!r}") from None
    lo, hi = FPS_RANGE
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ConfigError(f"{what}: must be a frame rate between {lo:g} and {hi:g} per second, got {fps!r}")
    return value
