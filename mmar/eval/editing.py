"""Metrics of zero-shot motion edits (numpy only).

An edit (:class:`mmar.edit.EditRequest`) must keep a region of the source motion and change
the rest smoothly. On joint positions ``(T, 22, 3)`` (metres, Y up) of the source and of the
edit, both decoded from HumanML3D features with the same length:

* **kept error** (:func:`kept_error_cm`): mean Euclidean joint error, in cm, over the kept
  (frame, joint) cells (:func:`kept_cells_mask`), in global positions and root-relative
  (pelvis subtracted per frame). The tokenizer's own reconstruction error on the same cells
  (the source decoded through the tokenizer, ``recon_joints``) is the floor an edit can reach:
  the kept region is regenerated from its tokens, not copied;
* **seam jerk** (:func:`seam_jerk`): mean jerk magnitude (third finite difference times
  ``fps^3``, m/s^3, averaged over joints, :func:`jerk`) within ``window`` frames of the
  places where kept and edited time ranges meet (:func:`seam_frames`), against the source's
  mean jerk (:func:`data_jerk`); :func:`jerk_ratio` near or below 1 means the seams are no
  jerkier than the data (jerk grows steeply with fps: compare at one rate);
* **edited change** (cm): mean joint displacement from the source over the edited cells, to
  show that the edit did something.

Kept cells: the frames of kept latent steps (a step of 4 frames is kept only when all its
frames are; :func:`mmar.edit.kept_steps`) times the joints of the kept body groups
(:data:`mmar.edit.GROUP_JOINTS`, one group per joint); every joint for a temporal edit,
every frame for a body-part edit, nothing for a semantic edit.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mmar.edit import GROUP_JOINTS, UNIT, EditRequest, kept_steps
from mmar.errors import ConfigError, DataFormatError, ShapeError

__all__ = [
    "kept_cells_mask", "kept_error_cm", "jerk", "seam_frames", "seam_jerk", "data_jerk", "jerk_ratio",
    "summarize_edit",
]


def _joints(x: Any, what: str) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim != 3 or a.shape[-1] != 3 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ShapeError(f"{what} must be (T, J, 3) joint positions, got {a.shape}")
    if not np.isfinite(a).all():
        raise DataFormatError(f"{what} holds non-finite values (NaN/Inf)")
    return a


def _fps(fps: Any) -> float:
    try:
        f = float(fps)
    except (TypeError, ValueError):
        raise ConfigError(f"fps must be a positive number, got {fps!r}") from None
    if not np.isfinite(f) or f <= 0:
        raise ConfigError(f"fps must be a positive number, got {fps!r}")
    return f


def _kept_frames(request: EditRequest, length: int, unit: int) -> np.ndarray:
    """``(length,)`` bool: frames of the kept latent steps (all frames without keep_frames)."""
    steps = kept_steps(request, length, unit)
    return np.repeat(steps, unit)[:length]


def kept_cells_mask(request: EditRequest, length: int, num_joints: int = 22, unit: int = UNIT) -> np.ndarray:
    """``(length, num_joints)`` bool: the (frame, joint) cells the edit must keep (see the
    module doc). Body-part keeps need the 22 SMPL joints."""
    length = int(length)
    mask = np.zeros((length, int(num_joints)), bool)
    if request.kind == "semantic":
        return mask
    frames = _kept_frames(request, length, unit)
    joints = np.ones((int(num_joints),), bool)
    if request.keep_groups is not None:
        if num_joints != 22:
            raise ShapeError(f"body-part keeps are defined on the 22 SMPL joints, got {num_joints} joints")
        joints[:] = False
        for g in request.keep_groups:
            joints[list(GROUP_JOINTS[g])] = True
    mask[:] = frames[:, None] & joints[None, :]
    return mask


def _pair(source_joints, edited_joints, kept=None):
    a = _joints(source_joints, "source joints")
    b = _joints(edited_joints, "edited joints")
    if a.shape != b.shape:
        raise ShapeError(f"source and edited joints differ in shape: {a.shape} vs {b.shape}")
    if kept is not None:
        k = np.asarray(kept)
        if k.dtype != bool or k.shape != a.shape[:2]:
            raise ShapeError(f"kept must be a bool (T, J) = {a.shape[:2]} mask, got {k.dtype} {k.shape}")
        return a, b, k
    return a, b


def _cell_error_cm(a: np.ndarray, b: np.ndarray, cells: np.ndarray, root_relative: bool) -> float:
    if root_relative:
        a = a - a[:, :1]
        b = b - b[:, :1]
    d = np.linalg.norm(a - b, axis=-1)  # (T, J)
    return float(d[cells].mean() * 100.0)


def kept_error_cm(source_joints: np.ndarray, edited_joints: np.ndarray, kept: np.ndarray,
                  root_relative: bool = False) -> float:
    """Mean Euclidean joint-position error in cm over the ``kept (T, J)`` cells.

    ``root_relative=False`` compares global positions; ``True`` subtracts each motion's pelvis
    (joint 0) per frame first (the pelvis cells then count as 0). Raises :class:`ConfigError`
    when ``kept`` is empty, :class:`ShapeError` when shapes disagree.
    """
    a, b, k = _pair(source_joints, edited_joints, kept)
    if not k.any():
        raise ConfigError("kept_error_cm: no kept cell (a semantic edit keeps nothing)")
    return _cell_error_cm(a, b, k, bool(root_relative))


def jerk(joints: np.ndarray, fps: float) -> np.ndarray:
    """Per-frame mean jerk magnitude ``(T - 3,)`` in m/s^3: the norm of the third finite
    difference ``p[t+3] - 3 p[t+2] + 3 p[t+1] - p[t]`` times ``fps^3``, averaged over joints.
    Sample ``t`` uses frames ``t .. t+3``."""
    p = _joints(joints, "joints")
    f = _fps(fps)
    if p.shape[0] < 4:
        raise ShapeError(f"jerk needs at least 4 frames, got {p.shape[0]}")
    d3 = p[3:] - 3.0 * p[2:-1] + 3.0 * p[1:-2] - p[:-3]
    return np.linalg.norm(d3, axis=-1).mean(axis=-1) * f ** 3


def seam_frames(request: EditRequest, length: int, unit: int = UNIT) -> list[int]:
    """Frames ``f`` where kept and edited time ranges meet (frame ``f - 1`` on one side, ``f``
    on the other), for edits with kept frames (``'temporal'``, ``'temporal+body_part'``);
    empty otherwise. The kept time range is that of the kept latent steps."""
    if request.keep_frames is None:
        return []
    frames = _kept_frames(request, int(length), unit)
    return [int(f) for f in np.flatnonzero(frames[1:] != frames[:-1]) + 1]


def _seam_samples(seams: Sequence[int], num_samples: int, window: int) -> np.ndarray:
    """Jerk samples near the seams: sample ``t`` (frames ``t..t+3``, centre ``t + 1.5``) is
    within ``window`` frames of the seam between frames ``f - 1`` and ``f`` when
    ``|t + 2 - f| <= window``."""
    idx: set[int] = set()
    for f in seams:
        lo, hi = int(f) - 2 - window, int(f) - 2 + window
        idx.update(range(max(lo, 0), min(hi, num_samples - 1) + 1))
    return np.array(sorted(idx), np.int64)


def seam_jerk(joints: np.ndarray, seams: Sequence[int], fps: float, window: int = 3) -> float:
    """Mean jerk magnitude (m/s^3) over the jerk samples within ``window`` frames of the
    ``seams`` (:func:`seam_frames`). Raises :class:`ConfigError` without seams."""
    window = int(window)
    if window < 0:
        raise ConfigError(f"seam window must be >= 0 frames, got {window}")
    seams = [int(s) for s in seams]
    if not seams:
        raise ConfigError("seam_jerk: no seam (only temporal edits have seams)")
    j = jerk(joints, fps)
    T = j.shape[0] + 3
    bad = [s for s in seams if not 0 < s < T]
    if bad:
        raise ConfigError(f"seam frames {bad} are not inside the motion of {T} frames")
    idx = _seam_samples(seams, j.shape[0], window)
    return float(j[idx].mean())


def data_jerk(joints: np.ndarray, fps: float) -> float:
    """Mean jerk magnitude (m/s^3) over the whole motion."""
    return float(jerk(joints, fps).mean())


def jerk_ratio(edited_joints: np.ndarray, source_joints: np.ndarray, seams: Sequence[int], fps: float,
               window: int = 3) -> float:
    """Seam jerk of the edit over the mean jerk of the source (<= about 1: the seams are no
    jerkier than the data). Raises :class:`DataFormatError` for a source without motion."""
    ref = data_jerk(source_joints, fps)
    if ref <= 0.0:
        raise DataFormatError("the source motion has zero jerk (it does not move): no reference for the ratio")
    return seam_jerk(edited_joints, seams, fps, window) / ref


def summarize_edit(source_joints: np.ndarray, edited_joints: np.ndarray, request: EditRequest, fps: float,
                   recon_joints: np.ndarray | None = None, *, unit: int = UNIT, window: int = 3) -> dict[str, Any]:
    """The edit's numbers as a JSON-ready dict (None where a number does not apply):

    ``kind``, ``frames``, ``kept_cells`` (count) and ``kept_fraction`` of the (frame, joint)
    cells; ``kept_error_cm`` / ``kept_error_root_cm`` (global / root-relative, over the kept
    cells); ``recon_kept_error_cm`` / ``recon_kept_error_root_cm`` (the same for
    ``recon_joints``, the source decoded through the tokenizer); ``seam_frames``,
    ``seam_jerk``, ``source_seam_jerk`` (the source at the same frames), ``data_jerk`` (mean
    jerk of the source, m/s^3), ``edit_jerk`` (mean jerk of the edit), ``jerk_ratio`` (seam
    jerk / data jerk); ``edited_change_cm`` / ``edited_change_root_cm`` (mean displacement from
    the source over the edited cells).
    """
    a, b = _pair(source_joints, edited_joints)
    rate = _fps(fps)
    T, J = a.shape[:2]
    kept = kept_cells_mask(request, T, J, unit)
    edited = ~kept
    out: dict[str, Any] = {
        "kind": request.kind, "frames": int(T), "fps": rate,
        "kept_cells": int(kept.sum()), "kept_fraction": float(kept.mean()),
        "kept_error_cm": None, "kept_error_root_cm": None,
        "recon_kept_error_cm": None, "recon_kept_error_root_cm": None,
    }
    if kept.any():
        out["kept_error_cm"] = _cell_error_cm(a, b, kept, False)
        out["kept_error_root_cm"] = _cell_error_cm(a, b, kept, True)
        if recon_joints is not None:
            _, r = _pair(a, recon_joints)
            out["recon_kept_error_cm"] = _cell_error_cm(a, r, kept, False)
            out["recon_kept_error_root_cm"] = _cell_error_cm(a, r, kept, True)
    seams = seam_frames(request, T, unit)
    out["seam_frames"] = seams
    out["data_jerk"] = data_jerk(a, rate) if T >= 4 else None
    out["edit_jerk"] = data_jerk(b, rate) if T >= 4 else None
    out["seam_jerk"] = out["source_seam_jerk"] = out["jerk_ratio"] = None
    if seams and T >= 4:
        out["seam_jerk"] = seam_jerk(b, seams, rate, window)
        out["source_seam_jerk"] = seam_jerk(a, seams, rate, window)
        if out["data_jerk"] > 0:
            out["jerk_ratio"] = out["seam_jerk"] / out["data_jerk"]
    out["edited_change_cm"] = _cell_error_cm(a, b, edited, False) if edited.any() else None
    out["edited_change_root_cm"] = _cell_error_cm(a, b, edited, True) if edited.any() else None
    return out
