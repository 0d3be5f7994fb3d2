"""Sparse-to-full-body reconstruction metrics (AGRoL conventions).

Every metric is computed per clip and then averaged over clips with equal weight
(a long clip counts as much as a short one), as the published AMASS tables do.

Metrics and units (keys of the returned dicts):

``mpjre_deg``
    Mean per-joint rotation error in **degrees**: the mean absolute difference of
    the *components* of the local axis-angle vectors of the 21 body joints 1..21
    (the root orientation, joint 0, is excluded), each component difference
    wrapped to ``[-pi, pi]``, times ``180 / pi``. This is AGRoL's definition; it
    is **not** a geodesic angle (a rotation of ``a`` degrees about the x axis
    alone gives ``a / 3`` for that joint, since y and z differ by 0).
``mpjpe_cm``
    Mean Euclidean joint position error over frames and all 22 joints, in cm.
``mpjve_cm_s``
    Same on velocities ``(p[1:] - p[:-1]) * fps``, in cm/s.
``jitter_m_s3`` / ``gt_jitter_m_s3``
    Mean norm of the third difference ``(p[3:] - 3 p[2:-1] + 3 p[1:-2] - p[:-3])
    * fps**3`` of the predicted (resp. ground-truth) positions over all 22
    joints, in **m/s^3** (coefficient 1, as AGRoL's script prints it; the
    published tables label that column ``10^2 m/s^3``). Jitter grows steeply
    with the frame rate: compare only at equal fps.
``hand_pe_cm``, ``upper_pe_cm``, ``lower_pe_cm``, ``root_pe_cm``
    MPJPE over the joint groups :data:`mmar.skeleton.HANDS`, ``UPPER``,
    ``LOWER`` and ``ROOT``, in cm.

Options shared by every entry point:

``align_head`` (default ``True``)
    Translate the predicted body, frame by frame, so that the predicted head
    (joint 15) coincides with the ground-truth head before anything is
    measured, as AGRoL places its predictions from the tracked head. The
    translation is applied to positions only (rotations are local and thus
    unaffected); velocities and jitter are measured on the placed body.
``skip_first`` (default ``1``)
    Number of leading frames dropped from both sequences before measuring
    (docs/design.md, first-frame rule: frame 0 has no velocity features).

Rotations given as matrices are reduced to their first two columns (6D) and
re-orthonormalised with :func:`mmar.geometry.rot6d_to_matrix` before the axis-angle
conversion, so slightly non-orthonormal network outputs are handled the same way in
either layout.

Implementation: clips are concatenated along frames in groups of about 8k frames;
positions are evaluated with vectorised float64 numpy (the third difference times
``fps**3`` amplifies rounding) and rotations with one jit-compiled float32 call of
:func:`mmar.geometry.matrix_to_axis_angle` per group, padded to a few fixed batch
sizes so that clip lengths never trigger recompilation. A test set of thousands of
clips takes seconds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mmar import geometry
from mmar.data.arrays import check_npz_file, nonfinite_report
from mmar.errors import DataFormatError, ShapeError
from mmar.skeleton import HANDS, HEAD, LOWER, NUM_JOINTS, ROOT, UPPER

BODY_JOINTS = tuple(range(1, NUM_JOINTS))  # MPJRE joints: all but the root

METRIC_KEYS: tuple[str, ...] = (
    "mpjre_deg",
    "mpjpe_cm",
    "mpjve_cm_s",
    "jitter_m_s3",
    "gt_jitter_m_s3",
    "hand_pe_cm",
    "upper_pe_cm",
    "lower_pe_cm",
    "root_pe_cm",
)

# Clips are evaluated in groups of about _GROUP_FRAMES concatenated frames (vectorised
# numpy for positions, one jit call for rotations). Rotation batches are padded to one of
# _ROT_BUCKETS frames so that only a few shapes are ever compiled.
_GROUP_FRAMES = 8192
_ROT_BUCKETS = (256, 2048, 8192)


@dataclass(frozen=True)
class ClipPoses:
    """One clip's arrays for the sparse metrics.

    Attributes:
      joints: ``(T, 22, 3)`` global joint positions in metres, SMPL-22 order.
      rot: local rotations, ``(T, 22, 3, 3)`` matrices or ``(T, 22, 6)`` 6D
        (first two matrix columns); the layout is detected from the shape.
        ``None`` if unavailable (then MPJRE is not reported).
      fps: frame rate in Hz, or ``None`` to take it from the other side / argument.
    """

    joints: Any
    rot: Any = None
    fps: float | None = None


ClipLike = ClipPoses | Mapping[str, Any]


# --------------------------------------------------------------------------
# input normalisation
# --------------------------------------------------------------------------

def _as_clip(obj: ClipLike, name: str, side: str) -> ClipPoses:
    if isinstance(obj, ClipPoses):
        return obj
    if isinstance(obj, Mapping):
        if "joints" not in obj:
            raise DataFormatError(f"{side} clip {name!r} has no 'joints' entry (keys: {sorted(obj)})")
        rot = None
        for key in ("rot", "rot6d", "local_rot"):
            if key in obj and obj[key] is not None:
                rot = obj[key]
                break
        fps = obj.get("fps")
        return ClipPoses(joints=obj["joints"], rot=rot, fps=None if fps is None else float(np.asarray(fps)))
    raise DataFormatError(
        f"{side} clip {name!r}: expected ClipPoses or a mapping with 'joints', got {type(obj).__name__}"
    )


def _check_joints(x: Any, name: str, side: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[1:] != (NUM_JOINTS, 3):
        raise ShapeError(f"{side} clip {name!r}: joints must be (T, {NUM_JOINTS}, 3), got {x.shape}")
    return x


def _rot_to_6d(x: Any, name: str, side: str) -> np.ndarray:
    """Local rotations as ``(T, 22, 6)`` float32 (matrices keep their first two columns)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4 and x.shape[1:] == (NUM_JOINTS, 3, 3):
        # first two columns [c0, c1]
        return np.swapaxes(x[..., :2], -1, -2).reshape(x.shape[0], NUM_JOINTS, 6)
    if x.ndim == 3 and x.shape[1:] == (NUM_JOINTS, 6):
        return x
    raise ShapeError(
        f"{side} clip {name!r}: rotations must be (T, {NUM_JOINTS}, 3, 3) or (T, {NUM_JOINTS}, 6), "
        f"got {x.shape}"
    )


def _resolve_fps(name: str, fps: float | None, pred: ClipPoses, gt: ClipPoses) -> float:
    if fps is not None:
        value = float(fps)
    else:
        candidates = [float(c.fps) for c in (gt, pred) if c.fps is not None]
        if not candidates:
            raise DataFormatError(f"clip {name!r}: no frame rate given (set ClipPoses.fps or pass fps=)")
        if len(candidates) == 2 and abs(candidates[0] - candidates[1]) > 1e-6 * max(candidates):
            raise DataFormatError(
                f"clip {name!r}: prediction fps {candidates[1]:g} differs from ground truth "
                f"{candidates[0]:g}"
            )
        value = candidates[0]
    if not np.isfinite(value) or value <= 0:
        raise DataFormatError(f"clip {name!r}: fps must be positive, got {value!r}")
    return value


@dataclass
class _Prepared:
    name: str
    pred_joints: np.ndarray
    gt_joints: np.ndarray
    pred_rot6d: np.ndarray | None
    gt_rot6d: np.ndarray | None
    fps: float


def _prepare(name: str, pred: ClipLike, gt: ClipLike, fps: float | None, skip_first: int) -> _Prepared:
    p = _as_clip(pred, name, "prediction")
    g = _as_clip(gt, name, "ground-truth")
    pj = _check_joints(p.joints, name, "prediction")
    gj = _check_joints(g.joints, name, "ground-truth")
    if pj.shape[0] != gj.shape[0]:
        raise ShapeError(
            f"clip {name!r}: prediction has {pj.shape[0]} frames, ground truth {gj.shape[0]}"
        )
    need = skip_first + 4
    if gj.shape[0] < need:
        raise ShapeError(
            f"clip {name!r}: {gj.shape[0]} frames; the metrics need at least {need} "
            f"(skip_first={skip_first} plus 4 for jitter)"
        )
    pr = gr = None
    if p.rot is not None and g.rot is not None:
        pr = _rot_to_6d(p.rot, name, "prediction")
        gr = _rot_to_6d(g.rot, name, "ground-truth")
    for side, joints, rot in (("prediction", pj, pr), ("ground-truth", gj, gr)):
        report = nonfinite_report({"joints": joints, "rot": rot})
        if report is not None:
            raise DataFormatError(f"{side} clip {name!r}: {report}; no metric is computed from non-finite poses")
    if pr is not None:
        for side, r in (("prediction", pr), ("ground-truth", gr)):
            if r.shape[0] != gj.shape[0]:
                raise ShapeError(
                    f"{side} clip {name!r}: {r.shape[0]} rotation frames but {gj.shape[0]} joint frames"
                )
        pr, gr = pr[skip_first:], gr[skip_first:]
    return _Prepared(
        name=name,
        pred_joints=pj[skip_first:],
        gt_joints=gj[skip_first:],
        pred_rot6d=pr,
        gt_rot6d=gr,
        fps=_resolve_fps(name, fps, p, g),
    )


def _check_skip(skip_first: int) -> int:
    if int(skip_first) != skip_first or skip_first < 0:
        raise ValueError(f"skip_first must be a non-negative integer, got {skip_first!r}")
    return int(skip_first)


# --------------------------------------------------------------------------
# evaluation of a group of clips (concatenated along frames)
# --------------------------------------------------------------------------

@jax.jit
def _frame_rotation_error(pred6d: jax.Array, gt6d: jax.Array) -> jax.Array:
    """``(N, 21, 6)`` x2 -> ``(N,)`` sum over joints and components of the wrapped
    absolute axis-angle difference, in radians."""
    ap = geometry.matrix_to_axis_angle(geometry.rot6d_to_matrix(pred6d))
    ag = geometry.matrix_to_axis_angle(geometry.rot6d_to_matrix(gt6d))
    d = ap - ag
    d = jnp.where(d > jnp.pi, d - 2 * jnp.pi, d)
    d = jnp.where(d < -jnp.pi, d + 2 * jnp.pi, d)
    return jnp.sum(jnp.abs(d), axis=(-1, -2))


def _rotation_frame_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-frame summed wrapped axis-angle error (radians) of ``(N, 21, 6)`` arrays."""
    n = pred.shape[0]
    out = np.empty(n, dtype=np.float64)
    start = 0
    while start < n:
        stop = min(start + _ROT_BUCKETS[-1], n)
        m = stop - start
        size = next(b for b in _ROT_BUCKETS if b >= m)
        p, g = pred[start:stop], gt[start:stop]
        if size != m:
            # zero 6D rows stay finite through rot6d_to_matrix; they are dropped below
            pad = ((0, size - m), (0, 0), (0, 0))
            p, g = np.pad(p, pad), np.pad(g, pad)
        out[start:stop] = np.asarray(_frame_rotation_error(p, g), dtype=np.float64)[:m]
        start = stop
    return out


def _segment_mean(values: np.ndarray, offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over the segments starting at ``offsets`` with ``counts`` valid
    entries; entries between a segment's last valid one and the next offset must be 0."""
    return np.add.reduceat(values, offsets) / counts


def _norm3(x: np.ndarray) -> np.ndarray:
    """Euclidean norm over a last axis of size 3 (faster than a generic reduction)."""
    return np.sqrt(x[..., 0] * x[..., 0] + x[..., 1] * x[..., 1] + x[..., 2] * x[..., 2])


def _evaluate_group(clips: list[_Prepared], align_head: bool) -> list[dict[str, float]]:
    lengths = np.array([c.gt_joints.shape[0] for c in clips])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ends = offsets + lengths  # exclusive
    fps = np.array([c.fps for c in clips], dtype=np.float64)
    pred = np.concatenate([c.pred_joints for c in clips], axis=0).astype(np.float64, copy=False)
    gt = np.concatenate([c.gt_joints for c in clips], axis=0).astype(np.float64, copy=False)
    if align_head:
        pred = pred + (gt[:, HEAD : HEAD + 1] - pred[:, HEAD : HEAD + 1])

    err = _norm3(pred - gt)  # (N, 22) metres
    out: dict[str, np.ndarray] = {}
    out["mpjpe_cm"] = _segment_mean(err.mean(1), offsets, lengths) * 100.0

    # velocity error: diff index i = frame i+1 minus frame i; the index ends-1 crosses
    # into the next clip and is zeroed (the last clip's one lies past the array)
    dv = np.diff(pred - gt, axis=0)
    vel = _norm3(dv).mean(1)
    vel[ends[:-1] - 1] = 0.0
    out["mpjve_cm_s"] = _segment_mean(vel, offsets, lengths - 1) * fps * 100.0

    def jitter(x: np.ndarray) -> np.ndarray:
        third = x[3:] - 3.0 * x[2:-1] + 3.0 * x[1:-2] - x[:-3]
        j = _norm3(third).mean(1)
        for k in (1, 2, 3):  # third differences reaching into the next clip
            j[ends[:-1] - k] = 0.0
        return _segment_mean(j, offsets, lengths - 3) * fps**3

    out["jitter_m_s3"] = jitter(pred)
    out["gt_jitter_m_s3"] = jitter(gt)
    for key, group in (("hand_pe_cm", HANDS), ("upper_pe_cm", UPPER), ("lower_pe_cm", LOWER), ("root_pe_cm", ROOT)):
        out[key] = _segment_mean(err[:, list(group)].mean(1), offsets, lengths) * 100.0

    results = [{k: float(v[i]) for k, v in out.items()} for i in range(len(clips))]

    rot_idx = [i for i, c in enumerate(clips) if c.pred_rot6d is not None]
    if rot_idx:
        body = slice(BODY_JOINTS[0], BODY_JOINTS[-1] + 1)
        pr = np.concatenate([clips[i].pred_rot6d[:, body] for i in rot_idx], axis=0)
        gr = np.concatenate([clips[i].gt_rot6d[:, body] for i in rot_idx], axis=0)
        rl = lengths[rot_idx]
        ro = np.concatenate([[0], np.cumsum(rl)[:-1]])
        mpjre = np.degrees(_segment_mean(_rotation_frame_errors(pr, gr), ro, rl * 3 * len(BODY_JOINTS)))
        for i, v in zip(rot_idx, mpjre):
            results[i] = {"mpjre_deg": float(v), **results[i]}
    return results


def _groups(clips: list[_Prepared]) -> list[list[_Prepared]]:
    groups: list[list[_Prepared]] = [[]]
    frames = 0
    for c in clips:
        t = c.gt_joints.shape[0]
        if groups[-1] and frames + t > _GROUP_FRAMES:
            groups.append([])
            frames = 0
        groups[-1].append(c)
        frames += t
    return groups


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------

def _evaluate(
    pairs: list[tuple[str, ClipLike, ClipLike]],
    fps: float | None,
    align_head: bool,
    skip_first: int,
) -> dict[str, dict[str, float]]:
    skip_first = _check_skip(skip_first)
    prepared = [_prepare(name, p, g, fps, skip_first) for name, p, g in pairs]
    results: dict[str, dict[str, float]] = {}
    for group in _groups(prepared):
        with np.errstate(over="ignore", invalid="ignore"):  # a non-finite result is an error below
            group_results = _evaluate_group(group, bool(align_head))
        for c, r in zip(group, group_results):
            bad = [k for k, v in r.items() if not np.isfinite(v)]
            if bad:
                raise DataFormatError(f"clip {c.name!r}: {', '.join(bad)} not finite ({r[bad[0]]}): the poses are too "
                                      f"large to measure")
            results[c.name] = r
    return results


def _check_keys(pred: Mapping[str, Any], gt: Mapping[str, Any], where: str = "") -> list[str]:
    missing = sorted(set(gt) - set(pred))
    extra = sorted(set(pred) - set(gt))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} ground-truth clip(s) have no prediction: {_few(missing)}")
        if extra:
            parts.append(f"{len(extra)} predicted clip(s) have no ground truth: {_few(extra)}")
        raise DataFormatError(f"{where}clip names differ; " + "; ".join(parts))
    if not gt:
        raise DataFormatError(f"{where}no clips to evaluate")
    return sorted(gt)


def _few(names: list[str], k: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:k])
    return shown + (f", ... ({len(names) - k} more)" if len(names) > k else "")


def clip_metrics(
    pred: ClipLike,
    gt: ClipLike,
    fps: float | None = None,
    *,
    align_head: bool = True,
    skip_first: int = 1,
    name: str = "clip",
) -> dict[str, float]:
    """Metrics of one clip; see the module docstring for keys and units.

    Args:
      pred, gt: :class:`ClipPoses` or mappings with ``joints`` (T, 22, 3) metres and
        optionally ``rot``/``rot6d``/``local_rot`` ((T, 22, 3, 3) or (T, 22, 6)) and ``fps``.
      fps: frame rate in Hz; overrides the clips' own.
      align_head: translate the prediction per frame so its head (joint 15) matches the
        ground-truth head (AGRoL placement).
      skip_first: leading frames dropped from both before measuring.
      name: clip name used in error messages.

    ``mpjre_deg`` is present only when both sides carry rotations.
    """
    return _evaluate([(name, pred, gt)], fps, align_head, skip_first)[name]


def sparse_metrics_per_clip(
    pred: Mapping[str, ClipLike],
    gt: Mapping[str, ClipLike],
    fps: float | None = None,
    *,
    align_head: bool = True,
    skip_first: int = 1,
) -> dict[str, dict[str, float]]:
    """Per-clip metrics, ``{clip name: {metric: value}}``; arguments as :func:`sparse_metrics`."""
    names = _check_keys(pred, gt)
    return _evaluate([(n, pred[n], gt[n]) for n in names], fps, align_head, skip_first)


def sparse_metrics(
    pred: Mapping[str, ClipLike],
    gt: Mapping[str, ClipLike],
    fps: float | None = None,
    *,
    align_head: bool = True,
    skip_first: int = 1,
) -> dict[str, float]:
    """Metrics averaged over clips with equal weight per clip (not per frame).

    Args:
      pred, gt: ``{clip name: clip}`` with the same names; each clip as in :func:`clip_metrics`.
      fps: frame rate in Hz for every clip; default: each clip's own ``fps``.
      align_head: AGRoL head placement of the prediction (default ``True``).
      skip_first: leading frames dropped per clip (default 1, the first-frame rule).

    Returns:
      ``{metric: value}`` with the keys of :data:`METRIC_KEYS` (units in the names:
      deg, cm, cm/s, m/s^3). ``mpjre_deg`` is present only when every clip carries
      rotations on both sides.

    Raises:
      DataFormatError: clip names differ, or a frame rate is missing / inconsistent.
      ShapeError: a clip's arrays have the wrong shape or lengths differ.
    """
    per_clip = sparse_metrics_per_clip(pred, gt, fps, align_head=align_head, skip_first=skip_first)
    return average_clip_metrics(per_clip)


def average_clip_metrics(per_clip: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Unweighted mean over clips of each metric present in every clip."""
    if not per_clip:
        raise DataFormatError("no clips to average")
    rows = list(per_clip.values())
    keys = [k for k in METRIC_KEYS if all(k in r for r in rows)]
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


# --------------------------------------------------------------------------
# npz files
# --------------------------------------------------------------------------

def load_clip_npz(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Read a converted npz (``<clip>/joints``, ``<clip>/rot6d``, ``<clip>/fps``, ...)
    into ``{clip: {field: array}}``. Raises :class:`DataFormatError` naming the file."""
    path = os.fspath(path)
    check_npz_file(path)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataFormatError("file not found", path=path) from None
    except Exception as e:  # zip / format errors
        raise DataFormatError(f"cannot read npz: {e}", path=path) from e
    clips: dict[str, dict[str, np.ndarray]] = {}
    with data:
        for key in data.files:
            clip, sep, field = key.rpartition("/")
            if not sep or not clip or not field:
                raise DataFormatError(f"key {key!r} is not of the form '<clip>/<field>'", path=path)
            clips.setdefault(clip, {})[field] = data[key]
    return clips


def _npz_clip(fields: dict[str, np.ndarray], clip: str, path: str) -> ClipPoses:
    if "joints" not in fields:
        raise DataFormatError(f"clip {clip!r} has no '{clip}/joints' array", path=path)
    rot = fields.get("rot6d", fields.get("local_rot"))
    fps = fields.get("fps")
    if fps is not None:
        fps = np.asarray(fps)
        if fps.size != 1:
            raise DataFormatError(f"clip {clip!r}: '{clip}/fps' must be a scalar, got shape {fps.shape}", path=path)
        fps = float(fps.reshape(()))
    return ClipPoses(joints=fields["joints"], rot=rot, fps=fps)


def metrics_from_npz(
    pred_path: str | os.PathLike,
    gt_path: str | os.PathLike,
    fps: float | None = None,
    *,
    align_head: bool = True,
    skip_first: int = 1,
    per_clip: bool = False,
) -> dict[str, float] | dict[str, dict[str, float]]:
    """:func:`sparse_metrics` on two npz files in the converted layout (docs/design.md).

    Each clip needs ``<clip>/joints``; rotations are read from ``<clip>/rot6d``
    (T, 22, 6) or ``<clip>/local_rot`` (T, 22, 3, 3); the frame rate from ``<clip>/fps``
    unless ``fps`` is given. With ``per_clip=True`` returns the per-clip dicts.

    Raises:
      DataFormatError: unreadable file, malformed key, missing array, clip names that
        differ between the files, missing/inconsistent fps (the message names file and clip).
      ShapeError: an array of the wrong shape or a frame-count mismatch (names the clip
        and file).
    """
    pred_path, gt_path = os.fspath(pred_path), os.fspath(gt_path)
    pred_raw = load_clip_npz(pred_path)
    gt_raw = load_clip_npz(gt_path)
    _check_keys(pred_raw, gt_raw, where=f"{pred_path} vs {gt_path}: ")
    pred = {c: _npz_clip(f, c, pred_path) for c, f in pred_raw.items()}
    gt = {c: _npz_clip(f, c, gt_path) for c, f in gt_raw.items()}
    try:
        out = sparse_metrics_per_clip(pred, gt, fps, align_head=align_head, skip_first=skip_first)
    except ShapeError as e:
        raise ShapeError(f"{pred_path} vs {gt_path}: {e}") from e
    except DataFormatError as e:
        raise DataFormatError(f"{pred_path} vs {gt_path}: {e}") from e
    return out if per_clip else average_clip_metrics(out)


# --------------------------------------------------------------------------
# turned and moved splits (heading invariance, docs/design.md "Heading frame")
# --------------------------------------------------------------------------

def yaw_matrix(yaw_deg: float) -> np.ndarray:
    """``Ry(yaw)`` (float64 ``(3, 3)``): a turn about the vertical axis Y; positive turns +Z
    towards +X."""
    a = np.deg2rad(float(yaw_deg))
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def turn_clip(arrays: Mapping[str, Any], yaw_deg: float = 0.0, shift: tuple[float, float] = (0.0, 0.0)) -> dict:
    """One clip of the ``mmar convert`` layout turned by ``yaw_deg`` about the vertical axis
    through the world origin, then moved on the floor by ``shift = (x, z)`` metres.

    Every array that carries a world orientation or position is changed (float64 arithmetic,
    each array keeps its dtype): ``joints``, ``root``/``root_pos`` (``Y p + s``); the root's
    local rotation, which is global (joint 0 of ``rot6d``, ``local_rot`` or ``rot``, 6D or
    matrices: ``Y R``); and ``sparse`` (global rotations ``Y R``, positions ``Y p + s``,
    position differences ``Y d``; rotation velocities ``R_{t-1}^T R_t`` are unchanged). The
    other arrays (``offsets``, ``fps``, local joint translations ...) are copied unchanged.
    """
    from mmar.skeleton import SPARSE_POS, SPARSE_POSVEL, SPARSE_ROT6D

    Y = yaw_matrix(yaw_deg)
    sx, sz = (float(v) for v in shift)
    s = np.array([sx, 0.0, sz])

    def points(p):
        return p @ Y.T + s

    def root_rotation(r):
        r = np.array(r, np.float64)
        if r.shape[-1] == 6:  # 6D: both columns turn as vectors
            r[..., 0, :] = (r[..., 0, :].reshape(r.shape[:-2] + (2, 3)) @ Y.T).reshape(r.shape[:-2] + (6,))
        elif r.shape[-2:] == (3, 3):
            r[..., 0, :, :] = Y @ r[..., 0, :, :]
        else:
            raise ShapeError(f"turn_clip: root rotations must be (..., J, 6) or (..., J, 3, 3), got {r.shape}")
        return r

    def sparse_turned(x):
        x = np.array(x, np.float64)
        lead = x.shape[:-1]
        x[..., SPARSE_ROT6D] = (x[..., SPARSE_ROT6D].reshape(lead + (6, 3)) @ Y.T).reshape(lead + (18,))
        x[..., SPARSE_POS] = points(x[..., SPARSE_POS].reshape(lead + (3, 3))).reshape(lead + (9,))
        x[..., SPARSE_POSVEL] = (x[..., SPARSE_POSVEL].reshape(lead + (3, 3)) @ Y.T).reshape(lead + (9,))
        return x

    conv = {"joints": points, "root": points, "root_pos": points, "rot6d": root_rotation,
            "local_rot": root_rotation, "rot": root_rotation, "sparse": sparse_turned}
    out = {}
    for k, v in arrays.items():
        if k in conv and v is not None:
            a = np.asarray(v)
            out[k] = np.asarray(conv[k](a.astype(np.float64)), a.dtype)
        else:
            out[k] = np.array(v, copy=True) if isinstance(v, np.ndarray) else v
    return out


def turn_clips(clips: Mapping[str, Mapping[str, Any]], yaw_deg: float = 0.0,
               shift: tuple[float, float] = (0.0, 0.0)) -> dict[str, dict]:
    """:func:`turn_clip` on every clip of ``{clip: arrays}``: the same split standing elsewhere
    and facing another way. A model whose inputs and targets are invariant (``model.frame=
    "heading"``) gives the same metrics on it as on the original."""
    return {n: turn_clip(a, yaw_deg, shift) for n, a in clips.items()}
