"""Zero-shot motion editing for next-scale text-to-motion models: what to keep, where to edit.

A source motion (HumanML3D features, 263 numbers per frame, 22 SMPL joints, 20 fps) is
tokenised and re-generated with a new caption while a region of it is kept. This module is
the model-independent part (numpy only; the ``mmar edit`` command and the models' edit
samplers are thin layers over it):

* :func:`parse_keep_frames`, :func:`parse_keep_joints` read the command-line options
  (``"0:60,120:180"``, ``"legs,root"``);
* :class:`EditRequest` (built and checked by :func:`make_request`) holds the caption and the
  kept region; its :attr:`EditRequest.kind` is ``'temporal'``, ``'body_part'``,
  ``'temporal+body_part'`` or ``'semantic'``;
* :func:`edit_grid` turns a request into the editable cells of the latent grid
  ``(num_steps, num_groups)`` (ScaleMoGen: 49 steps of 4 frames x 7 body groups; a temporal
  tokenizer such as MoScale's: one group);
* :func:`token_edit_masks` (:func:`skeletal_token_masks`, :func:`temporal_token_masks`) turn
  the grid into per-scale editable-token masks through the tokenizer's down-sampling matrices;
* :func:`load_source` reads the source motion (an npz of ``mmar generate`` or a Bandai Namco
  BVH clip) into an :class:`EditSource`.

Latent grid and kept cells
--------------------------
Latent step ``t`` covers frames ``[4 t, 4 t + 4)``; the clip's valid latent length is
``ceil(length / 4)`` (steps beyond it are padding). Body group ``g`` is one of
:data:`mmar.models.quantizers.skeletal.BODY_GROUPS` (0 root, 1 left lower, 2 right lower,
3 spine, 4 left upper, 5 right upper, 6 head). A cell ``(t, g)`` is **kept** iff

* ``keep_frames`` is None, or every frame of step ``t`` inside the clip is kept, **and**
* ``keep_groups`` is None, or ``g`` is in ``keep_groups``;

in a semantic edit (neither given) nothing is hard-kept. Every other valid cell is
**editable** (regenerated). A frame range that covers part of a latent step does not keep
that step: the kept region is rounded inwards to whole steps.

A token of scale ``k`` is editable iff every cell it pools (a nonzero weight in its row of the
tokenizer's down-sampling matrix) is editable; with ``valid_steps`` given, padding cells are
left out of that test (the quantisers zero the residual there, so they do not shape the token)
and a token that pools padding only is not editable.

Joints of the body groups
-------------------------
The tokenizer pools 22 joints -> 12 parts -> 7 groups with overlapping membership
(:data:`mmar.models.vqvae.POOL_22_TO_12`, :data:`mmar.models.vqvae.POOL_12_TO_7`): e.g. the
pelvis feeds the root, both leg groups and the spine group. For metrics each joint is given
to exactly one group (:data:`GROUP_JOINTS`, a partition of the 22 joints, every joint inside
its group's pooled set)::

    0 root         pelvis (0)
    1 left_lower   left hip, knee, ankle, foot (1, 4, 7, 10)
    2 right_lower  right hip, knee, ankle, foot (2, 5, 8, 11)
    3 spine        spine1, spine2, spine3 (3, 6, 9)
    4 left_upper   left collar, shoulder, elbow, wrist (13, 16, 18, 20)
    5 right_upper  right collar, shoulder, elbow, wrist (14, 17, 19, 21)
    6 head         neck, head (12, 15)
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmar.errors import ConfigError, DataFormatError, ShapeError, few

__all__ = [
    "NUM_STEPS", "NUM_GROUPS", "UNIT", "MIN_FRAMES", "MAX_FRAMES", "FPS", "HML_DIM",
    "BODY_GROUP_NAMES", "JOINT_GROUPS", "GROUP_JOINTS", "EDIT_KINDS",
    "parse_keep_frames", "parse_keep_joints", "EditRequest", "make_request", "valid_steps",
    "kept_steps", "edit_grid", "token_edit_masks", "skeletal_token_masks", "temporal_token_masks",
    "EditSource", "load_source", "edit_task", "edit_motion", "save_edit", "keep_root_channels", "ROOT_CHANNELS",
    "composite_kept_frames",
    "fade_weights",
]

NUM_STEPS = 49  # latent steps of 196 frames
NUM_GROUPS = 7  # body groups of the skeletal latent
UNIT = 4  # frames per latent step
MIN_FRAMES = 40  # shortest source clip (2 s at 20 fps, the text-to-motion data's minimum)
MAX_FRAMES = 196
FPS = 20.0
HML_DIM = 263  # HumanML3D features of the 22-joint SMPL skeleton

#: The 7 body groups of the skeletal latent, in order (as ``skeletal.BODY_GROUPS``).
BODY_GROUP_NAMES: tuple[str, ...] = (
    "root", "left_lower", "right_lower", "spine", "left_upper", "right_upper", "head",
)

#: Names accepted by ``--keep-joints`` -> latent body-group ids.
JOINT_GROUPS: dict[str, tuple[int, ...]] = {
    "root": (0,),
    "left_leg": (1,),
    "right_leg": (2,),
    "spine": (3,),
    "left_arm": (4,),
    "right_arm": (5,),
    "head": (6,),
    "torso": (0, 3),
    "legs": (1, 2),
    "arms": (4, 5),
    "lower": (0, 1, 2),
    "upper": (3, 4, 5, 6),
    # the group names of the tokenizer, as aliases
    "left_lower": (1,),
    "right_lower": (2,),
    "left_upper": (4,),
    "right_upper": (5,),
}

#: The 22 SMPL joints of each of the 7 body groups (a partition of 0..21; see the module doc).
GROUP_JOINTS: tuple[tuple[int, ...], ...] = (
    (0,),
    (1, 4, 7, 10),
    (2, 5, 8, 11),
    (3, 6, 9),
    (13, 16, 18, 20),
    (14, 17, 19, 21),
    (12, 15),
)

EDIT_KINDS = ("temporal", "body_part", "temporal+body_part", "semantic")

_INT_RE = re.compile(r"^\d+$")


# --------------------------------------------------------------------------
# parsing the options
# --------------------------------------------------------------------------

def parse_keep_frames(text: str, length: int) -> np.ndarray:
    """Frames to keep, ``(length,)`` bool, from half-open frame ranges ``"0:60,120:180"``.

    Each comma-separated item is ``START:STOP`` (frames ``START <= f < STOP``); ``":60"``
    starts at 0 and ``"120:"`` runs to the end of the clip. Ranges may overlap (their union is
    kept). Raises :class:`ConfigError` on malformed text, an empty range (``STOP <= START``)
    or a range outside ``[0, length]``.
    """
    length = _check_length(length)
    if not isinstance(text, str):
        raise ConfigError(f"keep-frames must be text such as '0:60,120:180', got {type(text).__name__}")
    if not text.strip():
        raise ConfigError("keep-frames is empty: give frame ranges such as '0:60,120:180'")
    keep = np.zeros((length,), bool)
    for item in text.split(","):
        s = item.strip()
        if not s:
            raise ConfigError(f"keep-frames {text!r}: empty item (stray comma); expected START:STOP ranges")
        if s.count(":") != 1:
            raise ConfigError(f"keep-frames item {s!r} is not a START:STOP frame range (e.g. '0:60', ':60', '120:')")
        a_s, b_s = (p.strip() for p in s.split(":"))
        for part in (a_s, b_s):
            if part and not _INT_RE.match(part):
                raise ConfigError(f"keep-frames item {s!r}: {part!r} is not a non-negative whole frame number")
        a = int(a_s) if a_s else 0
        b = int(b_s) if b_s else length
        if a > length or b > length:
            raise ConfigError(f"keep-frames range {s!r} ({a}:{b}) is outside the clip of {length} frames "
                              f"(ranges must lie in 0:{length})")
        if b <= a:
            raise ConfigError(f"keep-frames range {s!r} ({a}:{b}) is empty: STOP must be greater than START")
        keep[a:b] = True
    return keep


def parse_keep_joints(text: str) -> tuple[int, ...]:
    """Sorted body-group ids of comma-separated :data:`JOINT_GROUPS` names (their union).

    Names are case-insensitive and ``-`` may stand for ``_`` (``left-arm``). Raises
    :class:`ConfigError` for an unknown name (listing the valid ones) or an empty list.
    """
    if not isinstance(text, str):
        raise ConfigError(f"keep-joints must be text such as 'legs,root', got {type(text).__name__}")
    valid = ", ".join(JOINT_GROUPS)
    names = [n.strip().lower().replace("-", "_") for n in text.split(",")]
    names = [n for n in names if n]
    if not names:
        raise ConfigError(f"keep-joints is empty: nothing to keep; give body groups among: {valid}")
    out: set[int] = set()
    for n in names:
        if n not in JOINT_GROUPS:
            raise ConfigError(f"unknown body group {n!r} in keep-joints {text!r}; valid names: {valid}")
        out.update(JOINT_GROUPS[n])
    return tuple(sorted(out))


# --------------------------------------------------------------------------
# the request
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class EditRequest:
    """An edit: the new caption and the region of the source to keep.

    ``keep_frames``: bool per source frame (None: no temporal constraint); ``keep_groups``:
    sorted latent body-group ids (None: no body-part constraint). Both None is a semantic
    edit (nothing hard-kept). Stored read-only; compare requests by their fields.
    Check it against a clip with :meth:`validate` (or build it with :func:`make_request`).
    """

    text: str
    keep_frames: np.ndarray | None = None
    keep_groups: tuple[int, ...] | None = None

    def __post_init__(self):
        if not isinstance(self.text, str):
            raise ConfigError(f"EditRequest.text must be a string, got {type(self.text).__name__}")
        if self.keep_frames is not None:
            kf = np.asarray(self.keep_frames)
            if kf.ndim != 1 or kf.dtype != bool:
                raise ShapeError(f"EditRequest.keep_frames must be a 1-d bool array (one entry per source frame), "
                                 f"got {kf.dtype} {kf.shape}")
            kf = kf.copy()
            kf.flags.writeable = False
            object.__setattr__(self, "keep_frames", kf)
        if self.keep_groups is not None:
            try:
                groups = tuple(sorted({int(g) for g in self.keep_groups}))
            except (TypeError, ValueError):
                raise ConfigError(f"EditRequest.keep_groups must be body-group ids, got {self.keep_groups!r}") from None
            bad = [g for g in groups if not 0 <= g < NUM_GROUPS]
            if bad:
                raise ConfigError(f"EditRequest.keep_groups: body-group ids must be in 0..{NUM_GROUPS - 1} "
                                  f"({', '.join(BODY_GROUP_NAMES)}), got {bad}")
            object.__setattr__(self, "keep_groups", groups)

    @property
    def kind(self) -> str:
        """``'temporal'`` (frames only), ``'body_part'`` (groups only), ``'temporal+body_part'``
        (both) or ``'semantic'`` (neither)."""
        if self.keep_frames is not None and self.keep_groups is not None:
            return "temporal+body_part"
        if self.keep_frames is not None:
            return "temporal"
        if self.keep_groups is not None:
            return "body_part"
        return "semantic"

    def validate(self, length: int, num_groups: int = NUM_GROUPS, unit: int = UNIT,
                 num_steps: int = NUM_STEPS) -> "EditRequest":
        """Check the request against a clip of ``length`` frames and a latent grid of
        ``num_steps`` steps of ``unit`` frames by ``num_groups`` body groups; returns ``self``.

        Raises :class:`ConfigError` for an empty caption, a clip longer than the grid, a keep
        set that keeps nothing (no whole latent step, or no body group) or everything (nothing
        to edit), and body-part keeps on a one-group (temporal) tokenizer; :class:`ShapeError`
        when ``keep_frames`` does not have one entry per frame.
        """
        if not self.text.strip():
            raise ConfigError("the edit caption (text) is empty")
        length = _check_length(length)
        if valid_steps(length, unit) > num_steps:
            raise ConfigError(f"the clip has {length} frames; the model edits at most {num_steps * unit} "
                              f"({num_steps} latent steps of {unit} frames)")
        if self.keep_frames is not None:
            if self.keep_frames.shape != (length,):
                raise ShapeError(f"keep_frames has {self.keep_frames.shape[0]} entries for a clip of {length} frames")
            if not kept_steps(self, length, unit).any():
                ranges = _ranges_text(self.keep_frames)
                raise ConfigError(
                    f"nothing to keep: the kept frames ({ranges or 'none'}) cover no whole latent step of {unit} "
                    f"frames (steps start at multiples of {unit}); widen the ranges")
        if self.keep_groups is not None and not self.keep_groups:
            raise ConfigError("nothing to keep: the kept body-group list is empty")
        grid = edit_grid(self, length, num_steps=num_steps, num_groups=num_groups, unit=unit)
        if self.kind != "semantic" and not grid.any():
            raise ConfigError("nothing to edit: the request keeps every frame and every body group of the clip")
        return self


def make_request(text: str, length: int, keep_frames: str | np.ndarray | None = None,
                 keep_joints: str | Sequence[int] | None = None, *, num_groups: int = NUM_GROUPS,
                 unit: int = UNIT, num_steps: int = NUM_STEPS) -> EditRequest:
    """An :class:`EditRequest` from the command-line options, validated for a clip of
    ``length`` frames. ``keep_frames``: ranges text (:func:`parse_keep_frames`) or a bool
    array; ``keep_joints``: names text (:func:`parse_keep_joints`) or group ids."""
    kf = parse_keep_frames(keep_frames, length) if isinstance(keep_frames, str) else keep_frames
    kg = parse_keep_joints(keep_joints) if isinstance(keep_joints, str) else keep_joints
    return EditRequest(text, kf, None if kg is None else tuple(kg)).validate(length, num_groups, unit, num_steps)


def _check_length(length: Any) -> int:
    try:
        n = int(length)
    except (TypeError, ValueError):
        raise ConfigError(f"clip length must be a whole number of frames, got {length!r}") from None
    if n < 1 or n != length:
        raise ConfigError(f"clip length must be a positive whole number of frames, got {length!r}")
    return n


def _ranges_text(mask: np.ndarray) -> str:
    """``"0:60, 120:180"`` of the True runs of a bool vector."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.flatnonzero(m[1:] != m[:-1])
    return ", ".join(f"{a}:{b}" for a, b in zip(d[::2], d[1::2]))


# --------------------------------------------------------------------------
# the latent grid and the token masks
# --------------------------------------------------------------------------

def valid_steps(length: int, unit: int = UNIT) -> int:
    """Valid latent steps of a clip of ``length`` frames: ``ceil(length / unit)``."""
    return -(-_check_length(length) // int(unit))


def kept_steps(request: EditRequest, length: int, unit: int = UNIT) -> np.ndarray:
    """``(valid_steps(length),)`` bool: the latent steps all of whose frames inside the clip
    are kept (all True without ``keep_frames``)."""
    n = valid_steps(length, unit)
    if request.keep_frames is None:
        return np.ones((n,), bool)
    kf = request.keep_frames
    if kf.shape != (length,):
        raise ShapeError(f"keep_frames has {kf.shape[0]} entries for a clip of {length} frames")
    pad = np.ones((n * unit,), bool)  # frames past the clip do not stop a step from being kept
    pad[:length] = kf
    return pad.reshape(n, unit).all(axis=1)


def edit_grid(request: EditRequest, length: int, num_steps: int = NUM_STEPS, num_groups: int = NUM_GROUPS,
              unit: int = UNIT) -> np.ndarray:
    """Editable cells of the latent grid, ``(num_steps, num_groups)`` bool (True = regenerated).

    Kept cells follow the rule of the module doc. Steps at or beyond the clip's valid latent
    length ``ceil(length / unit)`` are padding and False (neither kept nor generated). For a
    temporal tokenizer (one token stream for the whole body) pass ``num_groups=1``;
    ``keep_groups`` must then be None.
    """
    length = _check_length(length)
    n = valid_steps(length, unit)
    if n > num_steps:
        raise ConfigError(f"a clip of {length} frames needs {n} latent steps of {unit} frames; the grid has "
                          f"{num_steps} ({num_steps * unit} frames at most)")
    if request.keep_groups is not None:
        if num_groups == 1:
            raise ConfigError("this model's tokens cover the whole body (one token stream, no body groups): "
                              "body-part edits (keep-joints) need a skeletal tokenizer such as ScaleMoGen's")
        bad = [g for g in request.keep_groups if g >= num_groups]
        if bad:
            raise ConfigError(f"body groups {bad} do not exist in a latent of {num_groups} groups")
    grid = np.zeros((num_steps, num_groups), bool)
    if request.kind == "semantic":
        grid[:n] = True
        return grid
    steps = kept_steps(request, length, unit)
    groups = np.ones((num_groups,), bool)
    if request.keep_groups is not None:
        groups[:] = False
        groups[list(request.keep_groups)] = True
    grid[:n] = ~(steps[:, None] & groups[None, :])
    return grid


def token_edit_masks(down_matrices: Sequence[np.ndarray | None], grid: np.ndarray,
                     valid: np.ndarray | None = None) -> list[np.ndarray]:
    """Per-scale editable tokens, a list of ``(N_k,)`` bool.

    Args:
      down_matrices: per scale, the tokenizer's ``(N_k, num_steps * num_groups)`` down-sampling
        matrix on the time-major flattened grid (cell ``t * num_groups + g``); ``None`` stands
        for the identity (a last scale that is the grid itself).
      grid: ``(num_steps, num_groups)`` (or ``(num_steps,)`` for one group) editable cells
        (:func:`edit_grid`).
      valid: optional bool like ``grid``: the cells inside the clip. Cells outside it (padding)
        are left out of the test; a token that pools padding only is not editable.

    A token is editable iff it pools at least one (valid) cell and every (valid) cell with a
    nonzero weight in its row is editable. AND the result with the tokenizer's own per-scale
    token validity (its rounding of the valid length) before use.
    """
    g = np.asarray(grid)
    if g.dtype != bool or g.ndim not in (1, 2):
        raise ShapeError(f"grid must be a 1-d or 2-d bool array, got {g.dtype} {g.shape}")
    flat = g.reshape(-1)
    if valid is None:
        v = np.ones_like(flat)
    else:
        v = np.asarray(valid)
        if v.shape != g.shape or v.dtype != bool:
            raise ShapeError(f"valid must be a bool array of the grid's shape {g.shape}, got {v.dtype} {v.shape}")
        v = v.reshape(-1)
    out = []
    for k, w in enumerate(down_matrices):
        if w is None:
            out.append(flat & v)
            continue
        w = np.asarray(w)
        if w.ndim != 2 or w.shape[1] != flat.size:
            raise ShapeError(f"down-sampling matrix of scale {k} must be (N_k, {flat.size}) for a grid of shape "
                             f"{g.shape}, got {w.shape}")
        nz = (w != 0) & v[None, :]
        blocked = nz & ~flat[None, :]
        out.append(nz.any(axis=1) & ~blocked.any(axis=1))
    return out


def _valid_grid(grid: np.ndarray, steps: int | None) -> np.ndarray | None:
    if steps is None:
        return None
    steps = int(steps)
    if not 0 < steps <= grid.shape[0]:
        raise ConfigError(f"valid_steps must be in 1..{grid.shape[0]}, got {steps}")
    v = np.zeros(grid.shape, bool)
    v[:steps] = True
    return v


def skeletal_token_masks(cfg: Any, grid: np.ndarray, valid_steps: int | None = None) -> list[np.ndarray]:
    """:func:`token_edit_masks` of a skeletal quantiser
    (:class:`~mmar.models.quantizers.skeletal.SkeletalQuantizerConfig`; its ``down`` mode).

    ``grid`` is ``(cfg.num_steps, cfg.num_groups)``; ``valid_steps`` (``ceil(length / 4)``)
    leaves padding steps out of the test (see :func:`token_edit_masks`).
    """
    from mmar.models.quantizers.skeletal import scale_down_matrix

    g = np.asarray(grid)
    if g.shape != (cfg.num_steps, cfg.num_groups):
        raise ShapeError(f"grid must be ({cfg.num_steps}, {cfg.num_groups}) for this quantiser, got {g.shape}")
    mats = [None if cfg.is_last(k) else scale_down_matrix(cfg, k, cfg.down) for k in range(cfg.num_scales)]
    return token_edit_masks(mats, g, _valid_grid(g, valid_steps))


def temporal_token_masks(cfg_lengths: Sequence[int], latent_length: int, mode: str, grid: np.ndarray,
                         valid_steps: int | None = None) -> list[np.ndarray]:
    """:func:`token_edit_masks` of a temporal multi-scale quantiser: scale lengths
    ``cfg_lengths`` (e.g. MoScale ``(6, 12, 24, 49)``), latent length ``latent_length``, residual
    down-sampling ``mode`` (``'area'``, ``'linear'``, ``'nearest'``). ``grid`` is
    ``(latent_length,)`` or ``(latent_length, 1)`` (:func:`edit_grid` with ``num_groups=1``).
    """
    from mmar.models.quantizers.resample import resample_matrix

    g = np.asarray(grid)
    if g.shape not in ((latent_length,), (latent_length, 1)):
        raise ShapeError(f"grid must be ({latent_length},) or ({latent_length}, 1) for a temporal tokenizer, "
                         f"got {g.shape}")
    mats = [None if int(n) == int(latent_length) else resample_matrix(int(latent_length), int(n), mode)
            for n in cfg_lengths]
    return token_edit_masks(mats, g, _valid_grid(g, valid_steps))


# --------------------------------------------------------------------------
# the source motion
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class EditSource:
    """A source motion ready for editing.

    ``features (T, 263)`` float32 un-normalised HumanML3D features; ``joints (T, 22, 3)``
    float32 metres, Y up, from :func:`mmar.data.hml_features.recover_from_ric` of those
    features (root starting at the origin); ``length`` = T, a multiple of the latent unit;
    ``fps``; ``caption`` (the source's caption when known); ``path``; ``name`` (the npz motion
    or the clip name); ``start_frame`` (first frame of the crop in the converted motion);
    ``note`` (what was cropped, or None).
    """

    features: np.ndarray
    joints: np.ndarray
    length: int
    fps: float
    caption: str | None
    path: str
    name: str
    start_frame: int = 0
    note: str | None = None


def load_source(path: str | os.PathLike, *, max_frames: int = MAX_FRAMES, unit: int = UNIT, fps: float = FPS,
                start_frame: int = 0, name: str | None = None, min_frames: int = MIN_FRAMES,
                joint_map: str = "bandai", bvh_scale: float = 0.01) -> EditSource:
    """Read a source motion for editing.

    Accepts:

    * an ``.npz`` in the ``mmar generate`` layout (``<name>/features (T, 263)``, ``<name>/fps``,
      ``<name>/caption``; also ``mmar convert`` files holding ``<name>/joints (T, 22, 3)`` at
      ``fps``, converted with :func:`mmar.data.hml_features.joints_to_features`): the motion
      ``name``, by default the first in the file. Features of another width (KIT-ML's 251)
      raise :class:`DataFormatError` naming the skeleton mismatch.
    * a ``.bvh`` clip (default: the Bandai Namco skeleton, centimetres), converted as the
      Bandai text-to-motion data (:mod:`mmar.data.t2m`): retargeted to SMPL-22 with the
      ``joint_map`` of :data:`mmar.data.arrays.JOINT_MAPS`, resampled to ``fps``, joint
      positions by forward kinematics, HumanML3D features of the whole clip. The caption is
      the first of :func:`mmar.data.captions.captions_for` when the file name is a Bandai clip
      name (``dataset-N_<content>_<style>_<take>``).

    The motion is then cut to ``length = min(T - start_frame, max_frames)`` rounded down to a
    multiple of ``unit``, from ``start_frame`` (a crop is described in ``note``); shorter than
    ``min_frames`` raises :class:`DataFormatError`. Other files (missing, other extension,
    malformed) raise :class:`DataFormatError` naming the file.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise DataFormatError("source motion file not found", p)
    if os.path.isdir(p):
        raise DataFormatError("is a directory; the source motion must be an .npz or .bvh file", p)
    if int(unit) < 1 or int(max_frames) < int(unit) or int(min_frames) < 1:
        raise ConfigError(f"need unit >= 1, max_frames >= unit and min_frames >= 1, got unit={unit}, "
                          f"max_frames={max_frames}, min_frames={min_frames}")
    ext = Path(p).suffix.lower()
    if ext == ".npz":
        feats, caption, nm = _npz_features(p, name, float(fps))
    elif ext == ".bvh":
        if name is not None:
            raise ConfigError("name= selects a motion of an npz file; a BVH file holds one clip")
        feats, caption, nm = _bvh_features(p, float(fps), joint_map, float(bvh_scale))
    else:
        raise DataFormatError(f"unsupported source motion file type {ext or '(no extension)'!r}; "
                              "expected an .npz (mmar generate / convert) or a .bvh clip", p)
    if not np.isfinite(feats).all():
        raise DataFormatError(f"motion {nm!r} has non-finite feature values (NaN/Inf)", p)
    total = int(feats.shape[0])
    start = int(start_frame)
    if start != start_frame or start < 0 or start >= total:
        raise ConfigError(f"start_frame must be a whole frame in 0..{total - 1} for {p} ({total} frames), "
                          f"got {start_frame!r}")
    n = min(total - start, int(max_frames)) // int(unit) * int(unit)
    if n < int(min_frames):
        avail = total - start
        raise DataFormatError(f"motion {nm!r} has {avail} frames from frame {start} (at {fps:g} fps); editing needs "
                              f"at least {min_frames}", p)
    note = None
    if start > 0 or n < total:
        note = f"cropped to frames {start}:{start + n} of {total} (max {max_frames} frames, a multiple of {unit})"
    f = np.ascontiguousarray(feats[start:start + n], np.float32)
    return EditSource(features=f, joints=_joints_of(f), length=n, fps=float(fps), caption=caption, path=p,
                      name=nm, start_frame=start, note=note)


def _joints_of(features: np.ndarray) -> np.ndarray:
    from mmar.data.hml_features import recover_from_ric

    return np.asarray(recover_from_ric(features, 22), np.float32)


def _npz_features(p: str, name: str | None, fps: float) -> tuple[np.ndarray, str | None, str]:
    from mmar.data.arrays import load_arrays

    clips = load_arrays(p)
    if not clips:
        raise DataFormatError("the npz holds no motion", p)
    if name is None:
        name = next(iter(clips))
    elif name not in clips:
        raise DataFormatError(f"no motion {name!r} in the npz; it has {few(clips, 8)}", p)
    a = clips[name]
    caption = str(a["caption"]) if "caption" in a and np.asarray(a["caption"]).ndim == 0 else None

    def check_fps() -> None:
        if "fps" not in a:
            return
        try:
            rate = float(np.asarray(a["fps"]))
        except (TypeError, ValueError):
            raise DataFormatError(f"motion {name!r}: fps is not a number", p) from None
        if abs(rate - fps) > 1e-3:
            raise DataFormatError(f"motion {name!r} is at {rate:g} fps; editing needs {fps:g} fps "
                                  "HumanML3D motions", p)

    if "features" in a:
        f = np.asarray(a["features"])
        if f.ndim != 2 or not np.issubdtype(f.dtype, np.number):
            raise DataFormatError(f"motion {name!r}: features must be a (T, {HML_DIM}) number array, got "
                                  f"{f.dtype} {f.shape}", p)
        if f.shape[1] != HML_DIM:
            what = " (KIT-ML, 21 joints)" if f.shape[1] == 251 else ""
            raise DataFormatError(
                f"motion {name!r}: features are {f.shape[1]} wide{what}; editing needs HumanML3D features of the "
                f"22-joint SMPL skeleton ({HML_DIM} wide): skeleton mismatch", p)
        check_fps()
        return f.astype(np.float32), caption, name
    if "joints" in a:
        j = np.asarray(a["joints"])
        if j.ndim != 3 or j.shape[1:] != (22, 3):
            raise DataFormatError(f"motion {name!r}: joints must be (T, 22, 3) SMPL-22 positions, got {j.shape}: "
                                  "skeleton mismatch", p)
        if "fps" not in a:
            raise DataFormatError(f"motion {name!r} has joints but no fps", p)
        check_fps()
        if j.shape[0] < 2:
            raise DataFormatError(f"motion {name!r} has {j.shape[0]} frame(s)", p)
        if not np.isfinite(j).all():
            raise DataFormatError(f"motion {name!r} has non-finite joint positions", p)
        from mmar.data.hml_features import joints_to_features

        return joints_to_features(j.astype(np.float64)), caption, name
    raise DataFormatError(f"motion {name!r} has neither 'features' (mmar generate) nor 'joints' (mmar convert); "
                          f"keys: {few(sorted(a), 8)}", p)


def _bvh_features(p: str, fps: float, joint_map: str, scale: float) -> tuple[np.ndarray, str | None, str]:
    from mmar.data.arrays import JOINT_MAPS
    from mmar.data.bvh import decode_text, parse_bvh_arrays
    from mmar.data.t2m import clip_features
    from mmar.skeleton import SMPL22_NAMES, SMPL22_PARENTS

    if joint_map not in JOINT_MAPS:
        raise ConfigError(f"unknown joint map {joint_map!r}; registered: {', '.join(JOINT_MAPS)}")
    try:
        with open(p, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise DataFormatError(f"cannot read file ({e.strerror})", p) from e
    data = parse_bvh_arrays(decode_text(raw), p, scale)  # DataFormatError with file and line
    mapping = JOINT_MAPS[joint_map]
    needed: list[str] = []
    for spec in mapping:
        for n in (spec[1:] if isinstance(spec, tuple) else (spec,)):
            if n not in needed:
                needed.append(n)
    missing = [n for n in needed if n not in set(data.names)]
    if missing:
        raise DataFormatError(
            f"the BVH skeleton cannot be mapped to the 22 SMPL joints with the {joint_map!r} joint map: missing "
            f"joints {few(missing, 22)} (the file has {few(data.names, 8)})", p)
    data = data.retarget(mapping, SMPL22_NAMES, SMPL22_PARENTS).resample(fps)
    if data.num_frames < 2:
        raise DataFormatError(f"the clip has {data.num_frames} frame(s) at {fps:g} fps", p)
    _, joints = data.global_transforms()
    feats = clip_features(joints)
    stem = Path(p).stem
    return feats, _bandai_caption(stem), stem


def _bandai_caption(stem: str) -> str | None:
    try:
        from mmar.data.bandai import parse_clip_name
        from mmar.data.captions import captions_for

        caps = captions_for(parse_clip_name(stem))
    except (ValueError, KeyError):
        return None
    return caps[0] if caps else None


# --------------------------------------------------------------------------
# running an edit with a trained run
# --------------------------------------------------------------------------

def edit_task(run) -> Any:
    """The run's task when it can edit (it has ``edit`` and ``edit_groups``); else
    :class:`ConfigError` naming the task."""
    task = getattr(run, "task", None)
    if not callable(getattr(task, "edit", None)) or not getattr(task, "edit_groups", None):
        name = getattr(getattr(run, "config", None), "task", type(task).__name__)
        raise ConfigError(f"the run's task {name!r} cannot edit motions; editing needs a next-scale text-to-motion "
                          "run (scalemogen, or moscale for temporal and semantic edits)")
    return task


ROOT_CHANNELS = slice(0, 4)  # HumanML3D: root yaw velocity, root xz velocity, root height


def keep_root_channels(edited: np.ndarray, source_features: np.ndarray, request: EditRequest) -> np.ndarray:
    """``edited (n, T', F)`` with the source's root channels (yaw velocity, xz velocity, height:
    HumanML3D features 0:4) written back in every frame, for body-part edits that keep the root.

    The root's world path is integrated from these velocities, and the decoder mixes body
    groups: a kept lower body alone would still drift in the world as the regenerated upper
    body nudges the decoded root velocities (measured: 52 cm mean kept-cell error without, 2.1 cm
    with, `docs/results.md`). Not applied to temporal edits: there the switch from generated to
    source velocities at a seam makes the seam jerky (1.25-1.41 times the decoder's jerk with,
    0.93-0.95 without), and to semantic edits or body-part edits that regenerate the root."""
    out = np.array(edited, np.float32, copy=True)
    if request.keep_frames is not None or request.keep_groups is None or 0 not in request.keep_groups:
        return out
    T = int(source_features.shape[0])
    out[:, :T, ROOT_CHANNELS] = np.asarray(source_features, np.float32)[None, :, ROOT_CHANNELS]
    return out


RAMPS = ("smooth", "linear", "septic", "minjerk")
KEEP_FROM = ("source", "decoding")


def fade_weights(kept: np.ndarray, fade: int, ramp: str = "smooth") -> np.ndarray:
    """Per-frame weight of the kept motion for a 0/1 ``kept (T,)`` mask: 1 in kept frames,
    falling to 0 over ``fade`` frames on the edited side of each seam. ``ramp="linear"``:
    ``1 - d / (fade + 1)`` at ``d`` frames from the nearest kept frame; ``"smooth"``: the same
    through the quintic smootherstep ``6x^5 - 15x^4 + 10x^3``, whose first and second
    derivatives vanish at both ends, so that the blend adds no kink where the fade starts and
    stops; ``"septic"``: through ``-20x^7 + 70x^6 - 84x^5 + 35x^4``, whose third derivative
    vanishes there too (the blend adds no step in jerk at the seam; its largest third
    derivative, 52.5 / fade^3, is mid-fade, where the quintic's 60 / fade^3 is at the ends)."""
    if ramp not in RAMPS:
        raise ConfigError(f"cross-fade ramp must be one of {RAMPS}, got {ramp!r}")
    if ramp == "minjerk":
        raise ConfigError("ramp 'minjerk' is an offset, not a weight: see min_jerk_offsets")

    fade = int(fade)
    if fade < 0:
        raise ConfigError(f"cross-fade must be >= 0 frames, got {fade}")
    kept = np.asarray(kept, np.float64)
    T = kept.shape[0]
    idx = np.flatnonzero(kept > 0)
    if fade == 0 or idx.size == 0:
        return (kept > 0).astype(np.float32)
    d = np.min(np.abs(np.arange(T)[:, None] - idx[None, :]), axis=1).astype(np.float64)
    x = np.clip(1.0 - d / (fade + 1), 0.0, 1.0)
    if ramp == "smooth":
        x = x * x * x * (x * (6.0 * x - 15.0) + 10.0)
    elif ramp == "septic":
        x = x ** 4 * (35.0 + x * (-84.0 + x * (70.0 - 20.0 * x)))
    return x.astype(np.float32)


def seams_of(kept: np.ndarray) -> list[tuple[int, int, int]]:
    """The seams of a 0/1 ``kept (T,)`` mask as ``(k, direction, room)``: ``k`` the kept frame at
    the seam, ``direction`` +1 where the edited frames follow it and -1 where they precede it,
    ``room`` the frames the seam may use on the edited side (the whole edited run where it meets
    the clip's end, half of it where another seam closes it)."""
    kept = np.asarray(kept) > 0
    T = kept.shape[0]
    out = []
    for k in range(T):
        if not kept[k]:
            continue
        for direction in (1, -1):
            j = k + direction
            if not 0 <= j < T or kept[j]:
                continue
            n = 0
            while 0 <= j < T and not kept[j]:
                n, j = n + 1, j + direction
            out.append((k, direction, n if not 0 <= j < T else n // 2))
    return out


def min_jerk_offsets(edited: np.ndarray, kept_motion: np.ndarray, kept: np.ndarray, fade: int) -> np.ndarray:
    """Offsets that carry each seam's kept motion into ``edited (n, T, F)`` and die out with the
    least jerk: at a seam's kept frame ``k`` the difference ``d = kept_motion - edited`` and its
    first two time derivatives (central differences) start a quintic that reaches 0 with zero
    velocity and acceleration ``fade + 1`` frames into the edited side (the minimum-jerk
    polynomial of those end conditions; "inertialization" in game animation). ``edited + offset``
    then continues the kept frames to second order and becomes the generated motion over
    ``fade`` frames, keeping the generated motion's own dynamics in between (a cross-fade mixes
    two motions there: its jerk carries the weight's derivatives times their difference)."""
    g = np.asarray(edited, np.float64)
    T = int(kept.shape[0])
    d = np.asarray(kept_motion, np.float64)[None, :T] - g[:, :T]
    off = np.zeros_like(g)
    for k, direction, room in seams_of(kept):
        L = min(int(fade), int(room))
        if L < 1:
            continue
        nxt, prv = d[:, min(max(k + direction, 0), T - 1)], d[:, min(max(k - direction, 0), T - 1)]
        x0 = d[:, k]
        v0 = 0.5 * (nxt - prv)
        a0 = nxt - 2.0 * x0 + prv
        t1 = float(L + 1)
        A = -(a0 * t1 ** 2 + 6.0 * v0 * t1 + 12.0 * x0) / (2.0 * t1 ** 5)
        B = (3.0 * a0 * t1 ** 2 + 16.0 * v0 * t1 + 30.0 * x0) / (2.0 * t1 ** 4)
        C = -(3.0 * a0 * t1 ** 2 + 12.0 * v0 * t1 + 20.0 * x0) / (2.0 * t1 ** 3)
        for j in range(1, L + 1):
            t = float(j)
            off[:, k + direction * j] += (((((A * t + B) * t + C) * t + 0.5 * a0) * t + v0) * t + x0)
    return off.astype(np.float32)


def composite_kept_frames(edited: np.ndarray, kept_motion: np.ndarray, request: EditRequest, fade: int = 8,
                          unit: int = UNIT, ramp: str = "linear") -> np.ndarray:
    """Temporal edits: ``edited (n, T', F)`` with the kept frames taken from ``kept_motion
    (>= T, F)`` -- the source decoded through the tokenizer, or the source itself (then kept
    frames are the user's own frames) -- cross-faded over ``fade`` frames on the
    edited side of each seam (:func:`fade_weights`). Tokens that straddle a seam are already
    the source's, but the decoder's receptive field and the linear up-sampling of regenerated
    neighbours reach a few frames into the kept side; compositing holds kept frames to the
    source (or to the tokenizer's own error). Features are blended (root channels are
    velocities, so the world path stays continuous). ``ramp="minjerk"`` adds the minimum-jerk
    offsets of :func:`min_jerk_offsets` to the edited side instead of cross-fading (measured
    jerkier at the seams than the smooth cross-fade with this decoder: ``docs/results.md``,
    "Seams"). A no-op for body-part and semantic edits."""
    out = np.array(edited, np.float32, copy=True)
    if request.keep_frames is None or request.keep_groups is not None:
        return out
    T = int(request.keep_frames.shape[0])
    r = np.asarray(kept_motion, np.float32)
    if r.ndim != 2 or r.shape[0] < T or r.shape[1] != out.shape[-1]:
        raise ShapeError(f"kept motion must be ({T}+, {out.shape[-1]}) features, got {r.shape}")
    kept = np.repeat(kept_steps(request, T, unit), unit)[:T]
    if ramp == "minjerk":
        if int(fade) < 0:
            raise ConfigError(f"cross-fade must be >= 0 frames, got {fade}")
        out[:, :T] = np.where(kept[None, :, None], r[None, :T], out[:, :T] + min_jerk_offsets(out, r, kept, fade)[:, :T])
        return out
    w = fade_weights(kept, fade, ramp)
    out[:, :T] = w[None, :, None] * r[None, :T] + (1.0 - w[None, :, None]) * out[:, :T]
    return out


def edit_motion(run, source: EditSource, request: EditRequest, *, num: int = 1, seed: int = 0,
                source_text: str | None = None, guidance: float | None = None, temperature: float | None = None,
                gamma: int | None = None, tau: float | None = None, root_from_source: bool = True,
                composite: bool = True, keep_from: str = "source", fade: int = 16,
                ramp: str = "smooth") -> dict[str, Any]:
    """Edit ``source`` as ``request`` asks with the text-to-motion run ``run`` (a
    :class:`mmar.run.Run`): ``num`` edits (seeds ``seed``, ``seed + 1``, ... within one batch).

    ``source_text``: the source's caption for the semantic rule (default: the source's own
    caption when known, else the unconditional model). ``root_from_source``: body-part edits
    that keep the root get the source's root channels back (:func:`keep_root_channels`);
    ``composite``: temporal edits take their kept frames from ``keep_from`` (``"source"``: the
    source's own frames; ``"decoding"``: the source through the tokenizer), cross-faded over
    ``fade`` frames at each seam with ``ramp`` (:func:`composite_kept_frames`). Returns ``{"edited":
    GeneratedMotions, "recon": (T, 263) the source through the tokenizer, "source_joints",
    "recon_joints", "edited_joints" (list), "metrics" (list of :func:`mmar.eval.editing.summarize_edit`
    per edit), "editable_tokens" (per scale), "seconds"}``."""
    from mmar.eval.editing import summarize_edit

    task = edit_task(run)
    groups = int(task.edit_groups)
    T = int(source.length)
    request.validate(T, num_groups=groups)
    grid = edit_grid(request, T, num_groups=groups)
    if source_text is None:
        source_text = source.caption
    res = task.edit(run.variables, source.features, T, request.text, grid, semantic=request.kind == "semantic",
                    source_text=source_text, num=num, seed=seed, guidance=guidance, temperature=temperature,
                    gamma=gamma, tau=tau)
    if root_from_source:
        res.edited.features = keep_root_channels(res.edited.features, source.features, request)
    if composite:
        if keep_from not in KEEP_FROM:
            raise ConfigError(f"keep_from must be one of {KEEP_FROM}, got {keep_from!r}")
        kept_motion = source.features if keep_from == "source" else res.recon
        res.edited.features = composite_kept_frames(res.edited.features, kept_motion, request, fade=fade, ramp=ramp)
    recon_joints = _joints_of(res.recon[:T])
    edited_joints = [_joints_of(f[:T]) for f in res.edited.features]
    metrics = [summarize_edit(source.joints, e, request, source.fps, recon_joints) for e in edited_joints]
    return {"edited": res.edited, "recon": res.recon, "source_joints": source.joints, "recon_joints": recon_joints,
            "edited_joints": edited_joints, "metrics": metrics,
            "editable_tokens": [int(np.asarray(m).sum()) for m in res.editable], "seconds": float(res.seconds)}


def save_edit(result: dict[str, Any], source: EditSource, request: EditRequest, out_npz: str,
              gif: str | None = None, *, progress: bool = False) -> dict[str, Any]:
    """Write an edit: ``out_npz`` in the ``mmar generate`` layout with the motions ``source``,
    ``source_recon`` (through the tokenizer) and ``edit_0``, ``edit_1``, ... (atomic); ``gif``
    (``.gif`` / ``.mp4``): the source and up to three edits side by side. Returns the paths
    and motion names."""
    from mmar.generate import check_outputs, save_generated
    from mmar.models.generated import GeneratedMotions

    check_outputs(out_npz, gif)
    T = int(source.length)
    edited = result["edited"]
    n = len(edited.texts)
    feats = np.zeros((n + 2, edited.features.shape[1], edited.features.shape[2]), np.float32)
    feats[0, :T] = source.features
    feats[1] = result["recon"]
    feats[2:] = edited.features
    src_cap = source.caption or f"source: {Path(source.path).name}"
    texts = [src_cap, f"{src_cap} (through the tokenizer)"] + list(edited.texts)
    gen = GeneratedMotions(feats, np.full((n + 2,), T, np.int32), texts, edited.fps, edited.kind, edited.seconds)
    names = ["source", "source_recon"] + [f"edit_{i}" for i in range(n)]
    out = save_generated(gen, out_npz, names=names, progress=False)
    if gif:
        from mmar.viz.render import render

        shown = [0] + list(range(2, min(n, 3) + 2))
        titles = ["source" + (f": {source.caption}" if source.caption else "")] + \
            [f"{request.kind} edit: {request.text}"] * (len(shown) - 1)
        joints = [result["source_joints"]] + [result["edited_joints"][i - 2] for i in shown[1:]]
        render(joints, gif, float(source.fps), titles=[t if len(t) <= 48 else t[:45] + "..." for t in titles],
               progress=progress)
    return {"out": out["out"], "names": out["names"], "gif": str(gif) if gif else None, "skipped": out["skipped"]}
