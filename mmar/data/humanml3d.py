"""HumanML3D and KIT-ML datasets in their published layout.

::

    <root>/new_joint_vecs/<id>.npy   (T, 263) features (KIT: (T, 251), 21 joints)
    <root>/new_joints/<id>.npy       (T, 22, 3) joint positions (optional)
    <root>/texts/<id>.txt            caption#tokens#start#end per line
    <root>/{train,val,test}.txt      id lists (also train_val.txt, all.txt)
    <root>/Mean.npy, <root>/Std.npy  feature normalisation

Entries follow the published text-to-motion loader: a motion is used when
``min_len <= T <= max_len``; every caption with ``start == end == 0`` (or NaN) describes the
whole motion and they are gathered in one entry named ``<id>``; a caption with a time range
becomes its own entry holding ``features[int(start * fps):int(end * fps)]`` (fps 20 for
HumanML3D; 12.5 for KIT, where the published loader also used 20 -- every published KIT caption
covers the whole motion, so this does not change the data) if that crop passes the same length
filter. Sub-clip entries are named ``<id>_<first>_<stop>`` (frames) instead of the published
random letter prefix, so names are reproducible.

Unlike the published loader, which skips any file it cannot parse, a malformed caption line or
an unreadable / misshapen array raises :class:`~mmar.errors.DataFormatError` naming the file
(and line).

Clips. HumanML3D features carry positions exactly (``recover_from_ric``) and swing-only bone
rotations (see :func:`mmar.data.hml_features.recover_rotations`). :func:`to_clip` builds a
SMPL-22 :class:`~mmar.data.clip.Clip` whose forward kinematics reproduces the recovered
positions exactly: the global rotation of joint j (j >= 1) is HumanML3D's world bone rotation
of the bone ending at j (by default recomputed from the recovered positions with the published
IK, because the features' 6D block is expressed against a root heading that differs from the
recovered one by a constant yaw, see :func:`mmar.data.hml_features.recover_rotations`; pass
``rotations="features"`` to compose the 6D block instead), the pelvis gets the heading
recovered from the root angular velocity
(body -> world), local rotations are ``G_parent^T G_j``, and the bone vectors are stored as
per-frame ``local_trans`` (the skeleton offsets are their per-joint median, a nominal rest
pose). These rotations are HumanML3D's representation (no twist about the bone; they are not
SMPL joint rotations): rotation metrics are comparable between HumanML3D clips, not with AMASS
or BVH clips. :func:`to_arrays` is ``to_clip(m).to_arrays()`` -- the ``mmar convert`` arrays
(``joints``, ``rot6d``, ``root``, ``sparse``, ``fps``).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Sequence

import numpy as np

from mmar import geometry
from mmar.data import hml_features as hf
from mmar.data.clip import Clip, Skeleton, smpl22_skeleton
from mmar.errors import DataFormatError, ShapeError

DEFAULT_MIN_LEN = {"humanml3d": 40, "kit": 24}
DEFAULT_MAX_LEN = 199  # the published loader keeps motions shorter than 200 frames


@dataclasses.dataclass
class MotionText:
    """One dataset entry: a motion and the captions describing it.

    Attributes:
      name: ``<id>`` or ``<id>_<first>_<stop>`` for a captioned sub-range.
      features: ``(T, 263)`` (KIT ``(T, 251)``) float32, unnormalised.
      texts: captions.
      tokens: per caption, the ``word/POS`` tokens.
      kind: ``"humanml3d"`` or ``"kit"``.
      fps: 20 (HumanML3D) or 12.5 (KIT).
      joints: ``(T, J, 3)`` positions from ``new_joints`` when loaded, else ``None``.
      source: the feature file.
      start: first frame of this entry in the source motion.
    """

    name: str
    features: np.ndarray
    texts: list[str]
    tokens: list[list[str]]
    kind: str = "humanml3d"
    fps: float = 20.0
    joints: np.ndarray | None = None
    source: str = ""
    start: int = 0

    @property
    def length(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_joints(self) -> int:
        return hf.get_spec(self.kind).num_joints

    def crop(self, length: int, rng: np.random.Generator | None = None, unit: int = 1) -> "MotionText":
        """A window of at most ``length`` frames (rounded down to a multiple of ``unit``), at a
        random start when ``rng`` is given, else at the start."""
        n = min(length, self.length)
        if unit > 1:
            n = max(unit, n // unit * unit) if self.length >= unit else self.length
        s = 0 if rng is None else int(rng.integers(0, self.length - n + 1))
        j = None if self.joints is None else self.joints[s : s + n]
        return dataclasses.replace(self, features=self.features[s : s + n], joints=j, start=self.start + s)


def _load_npy(path: str) -> np.ndarray:
    if not os.path.exists(path):
        raise DataFormatError("file not found", path)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataFormatError(f"not a readable .npy file ({e})", path) from e


def read_split(root: str, split: str) -> list[str]:
    """Ids of ``<root>/<split>.txt``, one per line (blank lines ignored)."""
    path = os.path.join(root, f"{split}.txt")
    if not os.path.exists(path):
        raise DataFormatError("split list not found", path)
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def parse_text_file(path: str) -> list[tuple[str, list[str], float, float]]:
    """``(caption, tokens, start, end)`` per non-empty line of a HumanML3D text file.
    NaN times count as 0 (whole motion)."""
    if not os.path.exists(path):
        raise DataFormatError("file not found", path)
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            parts = line.rsplit("#", 3)
            if len(parts) != 4:
                raise DataFormatError(
                    f"expected 'caption#tokens#start#end', got {len(parts)} field(s)", path, lineno
                )
            caption, tokens, start, end = parts
            try:
                t0, t1 = float(start), float(end)
            except ValueError:
                raise DataFormatError(
                    f"start/end must be numbers (seconds), got {start!r} and {end!r}", path, lineno
                ) from None
            t0 = 0.0 if math.isnan(t0) else t0
            t1 = 0.0 if math.isnan(t1) else t1
            out.append((caption.strip(), tokens.split(" ") if tokens else [], t0, t1))
    return out


def load_humanml3d(
    root: str,
    split: str,
    kind: str = "humanml3d",
    min_len: int | None = None,
    max_len: int | None = None,
    load_joints: bool = False,
    progress: bool = True,
) -> list[MotionText]:
    """Entries of one split, in the order of the split file (sub-clips after their motion's
    whole-motion entry is decided, as in the published loader).

    Args:
      root: dataset folder.
      split: ``train``, ``val``, ``test`` (any ``<split>.txt``).
      kind: ``"humanml3d"`` (22 joints, 20 fps) or ``"kit"`` (21 joints, 12.5 fps).
      min_len: shortest kept entry in frames (default 40 for HumanML3D, 24 for KIT).
      max_len: longest kept entry (default 199: the published filter ``T < 200``; the 196-frame
        training window is taken later, e.g. :meth:`MotionText.crop`).
      load_joints: also read ``new_joints/<id>.npy``.
    """
    spec = hf.get_spec(kind)
    kind = spec.kind
    lo = DEFAULT_MIN_LEN[kind] if min_len is None else int(min_len)
    hi = DEFAULT_MAX_LEN if max_len is None else int(max_len)
    dim = spec.feature_dim
    ids = read_split(root, split)
    it = ids
    if progress and ids:
        from tqdm.auto import tqdm

        it = tqdm(ids, desc=f"{kind} {split}", unit="motion")
    out: list[MotionText] = []
    names: set[str] = set()
    for mid in it:
        fpath = os.path.join(root, "new_joint_vecs", f"{mid}.npy")
        feats = _load_npy(fpath)
        if feats.ndim != 2 or feats.shape[1] != dim:
            raise DataFormatError(f"features must be (T, {dim}) for {kind}, got {feats.shape}", fpath)
        feats = feats.astype(np.float32, copy=False)
        T = feats.shape[0]
        if T < lo or T > hi:
            continue
        joints = None
        if load_joints:
            jpath = os.path.join(root, "new_joints", f"{mid}.npy")
            joints = _load_npy(jpath).astype(np.float32, copy=False)
            joints = joints.reshape(joints.shape[0], -1, 3) if joints.ndim == 2 else joints
            if joints.shape != (T + 1, spec.num_joints, 3) and joints.shape != (T, spec.num_joints, 3):
                raise DataFormatError(
                    f"joints must be ({T}, {spec.num_joints}, 3) to match the features, got {joints.shape}",
                    jpath,
                )
            joints = joints[:T]
        tpath = os.path.join(root, "texts", f"{mid}.txt")
        whole_texts, whole_tokens = [], []
        subs = []
        for caption, tokens, t0, t1 in parse_text_file(tpath):
            if t0 == 0.0 and t1 == 0.0:
                whole_texts.append(caption)
                whole_tokens.append(tokens)
                continue
            a, b = int(t0 * spec.fps), int(t1 * spec.fps)
            sub = feats[a:b]
            if not lo <= sub.shape[0] <= hi:
                continue
            name = f"{mid}_{a}_{min(b, T)}"
            k = 1
            while name in names:
                k += 1
                name = f"{mid}_{a}_{min(b, T)}_{k}"
            names.add(name)
            subs.append(MotionText(
                name=name, features=sub, texts=[caption], tokens=[tokens], kind=kind,
                fps=spec.fps, joints=None if joints is None else joints[a:b], source=fpath, start=a,
            ))
        out.extend(subs)
        if whole_texts:
            names.add(mid)
            out.append(MotionText(
                name=mid, features=feats, texts=whole_texts, tokens=whole_tokens, kind=kind,
                fps=spec.fps, joints=joints, source=fpath,
            ))
    return out


def load_normalizer(root: str) -> hf.Normalizer:
    """``Mean.npy`` / ``Std.npy`` of a dataset folder."""
    return hf.Normalizer.load(root)


# --------------------------------------------------------------------------
# clips and converted arrays
# --------------------------------------------------------------------------

def _skeleton_for(spec: hf.HmlSpec, offsets: np.ndarray) -> Skeleton:
    if spec.kind == "humanml3d":
        return smpl22_skeleton(offsets)
    return Skeleton(hf.KIT_NAMES, spec.parents, offsets)


def features_to_clip(features: np.ndarray, kind: str = "humanml3d", name: str = "motion",
                     texts: Sequence[str] = (), source: str = "",
                     rotations: str = "positions") -> Clip:
    """A :class:`Clip` from features (see the module doc): exact recovered positions and
    HumanML3D bone rotations.

    ``rotations="positions"`` (default) recomputes the bone rotations from the recovered
    positions with the published IK (:func:`~mmar.data.hml_features.bone_rotations`), so
    rotations and positions agree; ``"features"`` composes the features' 6D block with the
    root from the angular velocity (:func:`~mmar.data.hml_features.recover_rotations`), which
    is off the positions by a constant yaw of twice the smoothed frame-0 heading."""
    spec = hf.get_spec(kind)
    f = np.asarray(features, np.float32)
    if f.ndim != 2 or f.shape[1] != spec.feature_dim:
        raise ShapeError(f"features must be (T, {spec.feature_dim}) for {spec.kind}, got {f.shape}")
    if rotations not in ("positions", "features"):
        raise ValueError(f"rotations must be 'positions' or 'features', got {rotations!r}")
    pos = np.asarray(hf.recover_from_ric(f, spec.num_joints), np.float64)  # (T, J, 3)
    _, glob_f = hf.recover_rotations(f, spec)
    glob_f = np.asarray(glob_f, np.float64)
    glob = hf.bone_rotations(pos, spec) if rotations == "positions" else glob_f.copy()
    # pelvis: the heading recovered from the angular velocity, facing frame -> world
    glob[:, 0] = np.swapaxes(glob_f[:, 0], -1, -2)
    parents = spec.parents
    par = np.array(parents[1:])
    local = np.asarray(geometry.global_to_local(glob, parents), np.float64)
    trans = np.zeros_like(pos)
    trans[:, 1:] = np.einsum("tjba,tjb->tja", glob[:, par], pos[:, 1:] - pos[:, par])
    offsets = np.median(trans, 0)
    offsets[0] = 0.0
    return Clip(
        name=name,
        skeleton=_skeleton_for(spec, offsets),
        local_rot=local.astype(np.float32),
        root_pos=pos[:, 0].astype(np.float32),
        fps=spec.fps,
        local_trans=trans.astype(np.float32),
        labels={"dataset": spec.kind, "representation": "humanml3d"},
        texts=list(texts),
        source=source,
    )


def to_clip(motion: MotionText, rotations: str = "positions") -> Clip:
    """The :class:`Clip` of a dataset entry (positions exact, HumanML3D bone rotations)."""
    return features_to_clip(motion.features, motion.kind, motion.name, motion.texts, motion.source,
                            rotations=rotations)


def positions_clip(joints: np.ndarray, fps: float = 20.0, name: str = "motion",
                   kind: str = "humanml3d") -> Clip:
    """A Clip carrying positions only (identity rotations, world-frame bone vectors as
    per-frame translations), e.g. for ``new_joints`` arrays."""
    spec = hf.get_spec(kind)
    p = np.asarray(joints, np.float32)
    if p.ndim != 3 or p.shape[1:] != (spec.num_joints, 3):
        raise ShapeError(f"joints must be (T, {spec.num_joints}, 3), got {p.shape}")
    par = np.array(spec.parents[1:])
    trans = np.zeros_like(p)
    trans[:, 1:] = p[:, 1:] - p[:, par]
    offsets = np.median(trans, 0)
    rot = np.broadcast_to(np.eye(3, dtype=np.float32), p.shape[:2] + (3, 3))
    return Clip(name=name, skeleton=_skeleton_for(spec, offsets), local_rot=rot, root_pos=p[:, 0],
                fps=fps, local_trans=trans, labels={"dataset": spec.kind, "representation": "positions"})


def to_arrays(motion: MotionText) -> dict[str, np.ndarray]:
    """The ``mmar convert`` arrays of a HumanML3D entry: ``joints (T,22,3)``, ``rot6d (T,22,6)``,
    ``root (T,3)``, ``sparse (T,54)``, ``fps`` (and ``offsets``). HumanML3D only (SMPL-22)."""
    if hf.get_spec(motion.kind).kind != "humanml3d":
        raise ShapeError(f"{motion.name}: only HumanML3D (SMPL-22) entries have the converted layout")
    return to_clip(motion).to_arrays()


__all__ = [
    "MotionText", "load_humanml3d", "read_split", "parse_text_file", "load_normalizer",
    "features_to_clip", "to_clip", "positions_clip", "to_arrays", "DEFAULT_MIN_LEN",
    "DEFAULT_MAX_LEN",
]
