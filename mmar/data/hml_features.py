"""The HumanML3D motion representation (263 numbers per frame; 251 for KIT-ML) and its inverse.

Feature extraction follows the published HumanML3D processing (``process_file`` in the
HumanML3D repository's ``motion_representation`` notebook) step by step, vectorised over
frames with numpy in float64:

1. optional uniform skeleton: every bone is rescaled to the length of a target skeleton, keeping
   its direction, and the root trajectory is scaled by the ratio of the leg lengths
   (``target_offsets``; the published data uses the first frame of clip ``000021``, which users
   must supply: :func:`target_offsets_from_joints`);
2. put on the floor (lowest joint of the clip at y = 0);
3. root XZ of frame 0 at the origin;
4. rotate about Y so that frame 0 faces Z+, with
   ``across = (r_hip - l_hip) + (r_shoulder - l_shoulder)``, ``forward = Y x across``;
5. foot contacts: squared per-frame displacement of ankle and foot below the threshold
   (0.002 for HumanML3D);
6. inverse kinematics on the bone directions (``t2m`` raw offsets, Gaussian-smoothed facing with
   sigma 20 frames) giving the root rotation ``r_rot`` (world -> facing frame) and per-bone
   rotations, stored as continuous 6D (first two matrix columns);
7. the per-frame vector, ``T - 1`` frames out of ``T``::

     [0]      root angular velocity about Y (half angle, radians per frame)
     [1:3]    root linear velocity in XZ, in the facing frame of the next frame
     [3]      root height
     [4:67]   joints 1..21 relative to the root XZ, rotated into the facing frame (ric)
     [67:193] 6D rotations of joints 1..21
     [193:259] velocities of all 22 joints in the facing frame of the current frame
     [259:263] foot contacts: left ankle, left foot, right ankle, right foot

:func:`recover_from_ric` (jax.numpy, jit-able, any leading batch axes) integrates the root and
returns joint positions.

Faithful quirks kept from the published code (they define the published numbers):

* the IK forward direction uses ``(l_hip - r_hip) + (r_sho - l_sho)`` (the published skeleton
  code unpacks the face joints in a different order than ``process_file``); the facing is
  dominated by the shoulders either way;
* frame 0's IK root rotation is not forced to identity, so :func:`recover_from_ric` returns the
  normalised motion rotated about Y by the (small) smoothed facing angle of frame 0; the
  ``implied`` positions of :func:`joints_to_features` apply the same rotation;
* the root velocity uses the facing of frame t+1, the joint velocities that of frame t.

Deviations (documented, each with a switch where it changes numbers):

* ``fix_facing_wrap=True`` (default): the root angular velocity is ``arcsin`` of the Y
  component of ``r_rot[t+1] r_rot[t]^-1``; the published code applies ``arcsin`` to that
  quaternion as is, which has ``w < 0`` whenever the facing angle crosses +-180 degrees between
  two frames, so the recovered root turns the wrong way at such frames (a few degrees of
  heading error for the rest of the clip). We take the shortest-arc quaternion first; the
  feature changes only at those frames. ``fix_facing_wrap=False`` reproduces the published code.
* uniform skeleton retargeting is off unless ``target_offsets`` is given (the 000021 reference
  skeleton is part of the licensed data).
* degenerate bone directions exactly opposite to the raw offset (where the published code
  produces NaN) get a 180-degree rotation about a perpendicular axis instead.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmar import geometry
from mmar import geometry_np as gnp
from mmar.errors import DataFormatError, ShapeError
from mmar.skeleton import FACE_JOINTS, FOOT_LEFT, FOOT_RIGHT, KINEMATIC_CHAINS

# --------------------------------------------------------------------------
# skeleton constants
# --------------------------------------------------------------------------

_T2M_RAW_OFFSETS = np.array(
    [
        [0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, -1, 0], [0, 1, 0],
        [0, -1, 0], [0, -1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0],
        [-1, 0, 0], [0, 0, 1], [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0],
        [0, -1, 0],
    ],
    np.float64,
)
_KIT_RAW_OFFSETS = np.array(
    [
        [0, 0, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0], [0, -1, 0],
        [0, -1, 0], [-1, 0, 0], [0, -1, 0], [0, -1, 0], [1, 0, 0], [0, -1, 0], [0, -1, 0],
        [0, 0, 1], [0, 0, 1], [-1, 0, 0], [0, -1, 0], [0, -1, 0], [0, 0, 1], [0, 0, 1],
    ],
    np.float64,
)

KIT_NAMES: tuple[str, ...] = (
    "root", "BP", "BT", "BLN", "BUN", "LS", "LE", "LW", "RS", "RE", "RW", "LH", "LK", "LA",
    "LMrot", "LF", "RH", "RK", "RA", "RMrot", "RF",
)


def _parents_from_chains(chains, num_joints):
    parents = [-1] * num_joints
    for chain in chains:
        for a, b in zip(chain[:-1], chain[1:]):
            parents[b] = a
    return tuple(parents)


@dataclasses.dataclass(frozen=True)
class HmlSpec:
    """Constants of one text-to-motion skeleton (HumanML3D ``t2m`` or ``kit``)."""

    kind: str
    num_joints: int
    chains: tuple[tuple[int, ...], ...]
    raw_offsets: np.ndarray
    face_joints: tuple[int, int, int, int]  # r_hip, l_hip, r_shoulder, l_shoulder
    feet_right: tuple[int, int]
    feet_left: tuple[int, int]
    leg_joints: tuple[int, int]  # bones whose lengths give the uniform-skeleton scale
    foot_threshold: float
    fps: float

    @property
    def parents(self) -> tuple[int, ...]:
        return _parents_from_chains(self.chains, self.num_joints)

    @property
    def feature_dim(self) -> int:
        return feature_dim(self.num_joints)


HUMANML3D = HmlSpec(
    kind="humanml3d",
    num_joints=22,
    chains=KINEMATIC_CHAINS,
    raw_offsets=_T2M_RAW_OFFSETS,
    face_joints=FACE_JOINTS,
    feet_right=FOOT_RIGHT,
    feet_left=FOOT_LEFT,
    leg_joints=(5, 8),
    foot_threshold=0.002,
    fps=20.0,
)
KIT = HmlSpec(
    kind="kit",
    num_joints=21,
    chains=((0, 11, 12, 13, 14, 15), (0, 16, 17, 18, 19, 20), (0, 1, 2, 3, 4), (3, 5, 6, 7),
            (3, 8, 9, 10)),
    raw_offsets=_KIT_RAW_OFFSETS,
    face_joints=(11, 16, 5, 8),
    feet_right=(14, 15),
    feet_left=(19, 20),
    leg_joints=(17, 18),
    foot_threshold=0.05,
    fps=12.5,
)
SPECS = {"humanml3d": HUMANML3D, "t2m": HUMANML3D, "kit": KIT}


def get_spec(kind: str | HmlSpec) -> HmlSpec:
    if isinstance(kind, HmlSpec):
        return kind
    try:
        return SPECS[kind.lower()]
    except KeyError:
        raise ValueError(f"unknown skeleton kind {kind!r}; expected one of {sorted(SPECS)}") from None


def feature_dim(joints_num: int) -> int:
    """``4 + 3 (J-1) + 6 (J-1) + 3 J + 4``: 263 for 22 joints, 251 for 21."""
    return 4 + 9 * (joints_num - 1) + 3 * joints_num + 4


def feature_slices(joints_num: int = 22) -> dict[str, slice]:
    """The feature groups: root_rot_vel, root_lin_vel, root_y, ric, rot, vel, contacts."""
    j = joints_num
    a = 4 + 3 * (j - 1)
    b = a + 6 * (j - 1)
    c = b + 3 * j
    return {
        "root_rot_vel": slice(0, 1),
        "root_lin_vel": slice(1, 3),
        "root_y": slice(3, 4),
        "ric": slice(4, a),
        "rot": slice(a, b),
        "vel": slice(b, c),
        "contacts": slice(c, c + 4),
    }


# --------------------------------------------------------------------------
# smoothing
# --------------------------------------------------------------------------

def gaussian_smooth(x: np.ndarray, sigma: float = 20.0, truncate: float = 4.0) -> np.ndarray:
    """Gaussian filter along axis 0 with edge ('nearest') padding, kernel radius
    ``int(truncate * sigma + 0.5)`` -- the same result as
    ``scipy.ndimage.gaussian_filter1d(x, sigma, axis=0, mode='nearest')``."""
    x = np.asarray(x, np.float64)
    r = int(truncate * float(sigma) + 0.5)
    k = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 * k * k / float(sigma) ** 2)
    w /= w.sum()
    pad = [(r, r)] + [(0, 0)] * (x.ndim - 1)
    xp = np.pad(x, pad, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(xp, 2 * r + 1, axis=0)  # (T, ..., 2r+1)
    return win @ w


# --------------------------------------------------------------------------
# skeleton utilities
# --------------------------------------------------------------------------

def _check_joints(joints, spec: HmlSpec, what="joints") -> np.ndarray:
    p = np.asarray(joints, np.float64)
    if p.ndim != 3 or p.shape[1:] != (spec.num_joints, 3):
        raise ShapeError(f"{what} must be (T, {spec.num_joints}, 3) for {spec.kind}, got {p.shape}")
    if p.shape[0] < 2:
        raise ShapeError(f"{what} needs at least 2 frames, got {p.shape[0]}")
    if not np.all(np.isfinite(p)):
        raise ShapeError(f"{what} contain NaN or inf")
    return p


def target_offsets_from_joints(joints0: np.ndarray, kind: str | HmlSpec = "humanml3d") -> np.ndarray:
    """Skeleton offsets in the published form (bone length times the raw direction) from one
    frame of joint positions, e.g. frame 0 of HumanML3D's reference clip ``000021``."""
    spec = get_spec(kind)
    p = np.asarray(joints0, np.float64)
    if p.shape != (spec.num_joints, 3):
        raise ShapeError(f"joints0 must be ({spec.num_joints}, 3), got {p.shape}")
    par = np.array(spec.parents[1:])
    lengths = np.linalg.norm(p[1:] - p[par], axis=-1)
    out = spec.raw_offsets.copy()
    out[1:] *= lengths[:, None]
    return out


def uniform_skeleton(joints: np.ndarray, target_offsets: np.ndarray,
                     kind: str | HmlSpec = "humanml3d") -> np.ndarray:
    """Retarget positions onto ``target_offsets``: each bone keeps its direction and takes the
    target length (``rot(raw -> bone) @ target_offset``, as the published FK does); the root
    trajectory is scaled by the ratio of the leg lengths (bones ``leg_joints``)."""
    spec = get_spec(kind)
    p = _check_joints(joints, spec)
    tgt = np.asarray(target_offsets, np.float64)
    if tgt.shape != (spec.num_joints, 3):
        raise ShapeError(f"target_offsets must be ({spec.num_joints}, 3), got {tgt.shape}")
    parents = spec.parents
    par = np.array(parents[1:])
    src_len = np.linalg.norm(p[0, 1:] - p[0, par], axis=-1)  # bone j at index j-1
    l1, l2 = spec.leg_joints
    src_leg = src_len[l1 - 1] + src_len[l2 - 1]
    tgt_leg = np.abs(tgt[l1]).max() + np.abs(tgt[l2]).max()
    scale = tgt_leg / src_leg
    bone = gnp.normalize(p[:, 1:] - p[:, par])  # (T, J-1, 3)
    rot = gnp.quaternion_between(spec.raw_offsets[1:][None], bone)  # (T, J-1, 4)
    step = gnp.quaternion_rotate(rot, np.broadcast_to(tgt[1:], bone.shape))
    out = np.empty_like(p)
    out[:, 0] = p[:, 0] * scale
    for j in range(1, spec.num_joints):
        out[:, j] = out[:, parents[j]] + step[:, j - 1]
    return out


def _root_quat(p: np.ndarray, spec: HmlSpec, smooth: bool) -> np.ndarray:
    """IK root rotation (world -> facing frame), with the published joint order quirk."""
    r_hip, l_hip, sdr_r, sdr_l = spec.face_joints
    # published IK unpacks (l_hip, r_hip, sdr_r, sdr_l) = face_joints
    across = (p[:, l_hip] - p[:, r_hip]) + (p[:, sdr_r] - p[:, sdr_l])
    across = gnp.normalize(across)
    forward = np.cross(np.array([0.0, 1.0, 0.0]), across)
    if smooth:
        forward = gaussian_smooth(forward, 20.0)
    forward = gnp.normalize(forward)
    return gnp.quaternion_between(forward, np.array([0.0, 0.0, 1.0]))


def _ik_quats(p: np.ndarray, root_quat: np.ndarray, spec: HmlSpec) -> np.ndarray:
    """Per-joint quaternions of the published IK: joint c stores the rotation of the bone
    ``parent(c) -> c`` relative to the previous bone of its chain (the root rotation for the
    first bone of a chain)."""
    T, J = p.shape[:2]
    parents = spec.parents
    par = np.array(parents[1:])
    bone = gnp.normalize(p[:, 1:] - p[:, par])
    swing = np.concatenate(
        [root_quat[:, None], gnp.quaternion_between(spec.raw_offsets[1:][None], bone)], 1
    )  # (T, J, 4); swing[:, c] = world rotation raw(c) -> bone(c); swing[:, 0] = root
    prev = np.zeros(J, np.int64)  # index into swing of the rotation preceding c in its chain
    for chain in spec.chains:
        for k in range(1, len(chain)):
            prev[chain[k]] = 0 if k == 1 else chain[k - 1]
    quats = gnp.quaternion_multiply(gnp.quaternion_conjugate(swing[:, prev]), swing)
    quats[:, 0] = root_quat
    return quats


# --------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------

def joints_to_features(
    joints: np.ndarray,
    kind: str | HmlSpec = "humanml3d",
    target_offsets: np.ndarray | None = None,
    foot_threshold: float | None = None,
    fix_facing_wrap: bool = True,
    return_positions: bool = False,
):
    """HumanML3D features ``(T-1, 263)`` (KIT: 251) from joint positions ``(T, J, 3)``.

    ``joints`` are Y-up world positions at the dataset rate (20 fps for HumanML3D; resample
    first). ``target_offsets`` enables uniform-skeleton retargeting (see module doc).
    With ``return_positions=True`` also returns ``implied (T, J, 3)``: the normalised
    positions (retargeted, on the floor, frame-0 root XZ at the origin, facing Z+, rotated by
    frame 0's IK facing) that :func:`recover_from_ric` reproduces for frames ``0..T-2``.
    """
    spec = get_spec(kind)
    p = _check_joints(joints, spec)
    thr = spec.foot_threshold if foot_threshold is None else float(foot_threshold)
    if target_offsets is not None:
        p = uniform_skeleton(p, target_offsets, spec)
    else:
        p = p.copy()

    # put on the floor, root XZ of frame 0 at the origin
    p[..., 1] -= p[..., 1].min()
    p = p - p[0, 0] * np.array([1.0, 0.0, 1.0])

    # frame 0 faces Z+
    r_hip, l_hip, sdr_r, sdr_l = spec.face_joints
    across = (p[0, r_hip] - p[0, l_hip]) + (p[0, sdr_r] - p[0, sdr_l])
    across = gnp.normalize(across)
    fwd0 = gnp.normalize(np.cross(np.array([0.0, 1.0, 0.0]), across))
    q0 = gnp.quaternion_between(fwd0, np.array([0.0, 0.0, 1.0]))
    p = gnp.quaternion_rotate(q0, p)

    # foot contacts
    def contact(ids):
        d = p[1:, list(ids)] - p[:-1, list(ids)]
        return (np.sum(d * d, -1) < thr).astype(np.float64)

    feet_l = contact(spec.feet_left)
    feet_r = contact(spec.feet_right)

    # IK with the smoothed facing
    r_rot = _root_quat(p, spec, smooth=True)  # (T, 4), world -> facing
    quats = _ik_quats(p, r_rot, spec)
    mats = gnp.quaternion_to_matrix(quats, normalize=False)
    cont6d = gnp.matrix_to_rot6d(mats)  # (T, J, 6)

    root_vel = gnp.quaternion_rotate(r_rot[1:], p[1:, 0] - p[:-1, 0])
    dq = gnp.quaternion_multiply(r_rot[1:], gnp.quaternion_conjugate(r_rot[:-1]))
    if fix_facing_wrap:
        dq = np.where(dq[:, :1] < 0, -dq, dq)
    r_velocity = np.arcsin(np.clip(dq[:, 2], -1.0, 1.0))

    ric = p.copy()
    ric[..., 0] -= p[:, :1, 0]
    ric[..., 2] -= p[:, :1, 2]
    ric = gnp.quaternion_rotate(r_rot[:, None], ric)
    root_y = ric[:, 0, 1]

    local_vel = gnp.quaternion_rotate(r_rot[:-1, None], p[1:] - p[:-1])

    T, J = p.shape[:2]
    feats = np.concatenate(
        [
            r_velocity[:, None],
            root_vel[:, [0, 2]],
            root_y[:-1, None],
            ric[:-1, 1:].reshape(T - 1, -1),
            cont6d[:-1, 1:].reshape(T - 1, -1),
            local_vel.reshape(T - 1, -1),
            feet_l,
            feet_r,
        ],
        -1,
    ).astype(np.float32)
    if not return_positions:
        return feats
    implied = gnp.quaternion_rotate(r_rot[0], p).astype(np.float32)
    return feats, implied


def _check_features(features, joints_num):
    f = jnp.asarray(features)
    d = feature_dim(joints_num)
    if f.shape[-1] != d or f.ndim < 2:
        raise ShapeError(f"features must be (..., T, {d}) for {joints_num} joints, got {f.shape}")
    return f


def recover_root_rot_pos(features, joints_num: int | None = None):
    """Root heading and trajectory from the first 4 feature channels.

    Returns ``(half_angle (..., T), root_pos (..., T, 3))``: the IK root rotation of frame t is
    a rotation by ``2 * half_angle[t]`` about +Y (quaternion ``(cos a, 0, sin a, 0)``)."""
    f = jnp.asarray(features) if joints_num is None else _check_features(features, joints_num)
    rot_vel = f[..., 0]
    zero = jnp.zeros_like(rot_vel[..., :1])
    half = jnp.cumsum(jnp.concatenate([zero, rot_vel[..., :-1]], -1), -1)
    theta = 2.0 * half
    c, s = jnp.cos(theta), jnp.sin(theta)
    vx = jnp.concatenate([zero, f[..., :-1, 1]], -1)
    vz = jnp.concatenate([zero, f[..., :-1, 2]], -1)
    # world step = r_rot^-1 applied to the facing-frame velocity (rotation by -theta about Y)
    dx = c * vx - s * vz
    dz = s * vx + c * vz
    pos = jnp.stack([jnp.cumsum(dx, -1), f[..., 3], jnp.cumsum(dz, -1)], -1)
    return half, pos


def _yaw_matrix(theta):
    c, s = jnp.cos(theta), jnp.sin(theta)
    o, i = jnp.zeros_like(theta), jnp.ones_like(theta)
    return jnp.stack(
        [jnp.stack([c, o, s], -1), jnp.stack([o, i, o], -1), jnp.stack([-s, o, c], -1)], -2
    )


def recover_from_ric(features, joints_num: int = 22):
    """Joint positions ``(..., T, J, 3)`` from features ``(..., T, D)`` (jax.numpy, jitted)."""
    f = _check_features(features, joints_num)
    return _recover_from_ric_jit(f, joints_num)


def _recover_from_ric_impl(f, joints_num):
    half, root = recover_root_rot_pos(f)
    ric = f[..., 4 : 4 + 3 * (joints_num - 1)].reshape(f.shape[:-1] + (joints_num - 1, 3))
    inv = _yaw_matrix(-2.0 * half)  # facing -> world
    pos = jnp.einsum("...ab,...jb->...ja", inv, ric)
    pos = pos + jnp.stack([root[..., 0], jnp.zeros_like(root[..., 0]), root[..., 2]], -1)[..., None, :]
    return jnp.concatenate([root[..., None, :], pos], -2)


_recover_from_ric_jit = jax.jit(_recover_from_ric_impl, static_argnums=1)


def recover_rotations(features, kind: str | HmlSpec = "humanml3d"):
    """Rotations carried by the features.

    Returns ``(local (..., T, J, 3, 3), bone_global (..., T, J, 3, 3))``: ``local[..., 0]`` is
    the IK root rotation recovered from the angular velocity (world -> facing frame, as the
    published ``recover_from_rot`` uses it), ``local[..., j]`` the 6D block of joint j (the
    rotation of the bone ``parent(j) -> j`` relative to the previous bone of its chain, or to
    the root for the first bone of a chain); ``bone_global[..., j]`` (j >= 1) composes them
    along the chains: the world rotation taking the raw offset direction of joint j onto the
    bone ``parent(j) -> j`` (swing only, no twist). ``bone_global[..., 0]`` is the root rotation.

    Caveat of the published representation: the 6D block is relative to the IK root of frame t,
    ``r_rot[t]``, while the root recovered from the angular velocity is
    ``r_rot[t] r_rot[0]^-1`` and :func:`recover_from_ric` positions are rotated by
    ``r_rot[0]``; so ``bone_global`` is off the recovered positions by a constant yaw of twice
    the frame-0 IK heading. That heading is not zero in general: it is Gaussian-smoothed over
    +-80 frames and uses the published hip/shoulder quirk, while frame 0 is turned to Z+ with
    the unsmoothed, unquirked direction (a few degrees to tens of degrees on real clips).
    :func:`bone_rotations` on the recovered positions gives rotations consistent with them.
    """
    spec = get_spec(kind)
    J = spec.num_joints
    f = _check_features(features, J)
    half, _ = recover_root_rot_pos(f)
    root = _yaw_matrix(2.0 * half)
    sl = feature_slices(J)["rot"]
    d6 = f[..., sl].reshape(f.shape[:-1] + (J - 1, 6))
    rest = geometry.rot6d_to_matrix(d6)
    local = jnp.concatenate([root[..., None, :, :], rest], -3)
    glob = [None] * J
    glob[0] = root
    for chain in spec.chains:
        R = root
        for c in chain[1:]:
            R = R @ local[..., c, :, :]
            glob[c] = R
    return local, jnp.stack(glob, -3)


def bone_rotations(joints, kind: str | HmlSpec = "humanml3d") -> np.ndarray:
    """The published IK's world bone rotations computed from positions ``(..., J, 3)``:
    ``out[..., j]`` (j >= 1) is the shortest rotation taking the raw offset direction of joint j
    onto the bone ``parent(j) -> j``; ``out[..., 0]`` is the identity."""
    spec = get_spec(kind)
    p = np.asarray(joints, np.float64)
    if p.shape[-2:] != (spec.num_joints, 3):
        raise ShapeError(f"joints must be (..., {spec.num_joints}, 3), got {p.shape}")
    par = np.array(spec.parents[1:])
    bone = p[..., 1:, :] - p[..., par, :]
    bone = bone / np.maximum(np.linalg.norm(bone, axis=-1, keepdims=True), 1e-12)
    q = gnp.quaternion_between(np.broadcast_to(spec.raw_offsets[1:], bone.shape), bone)
    out = np.broadcast_to(np.eye(3), p.shape[:-1] + (3, 3)).copy()
    out[..., 1:, :, :] = gnp.quaternion_to_matrix(q, normalize=False)
    return out


# --------------------------------------------------------------------------
# normalisation
# --------------------------------------------------------------------------

def group_std(std: np.ndarray, joints_num: int = 22, feat_bias: float = 1.0) -> np.ndarray:
    """The published std post-processing: every feature group (root rotation velocity, root
    linear velocity, root height, ric, rotations, velocities, contacts) takes the mean std of
    the group; the root groups and the foot contacts are further divided by ``feat_bias``
    (1 in the published ``Std.npy``; the text-to-motion evaluators use 5)."""
    std = np.array(std, np.float64, copy=True)
    sl = feature_slices(joints_num)
    if std.shape[-1] != feature_dim(joints_num):
        raise ShapeError(f"std must have {feature_dim(joints_num)} entries, got {std.shape}")
    for key, s in sl.items():
        std[..., s] = std[..., s].mean(-1, keepdims=True)
        if key in ("root_rot_vel", "root_lin_vel", "root_y", "contacts"):
            std[..., s] /= feat_bias
    return std


@dataclasses.dataclass
class Normalizer:
    """z-normalisation ``(x - mean) / std`` of feature vectors."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self):
        self.mean = np.asarray(self.mean, np.float32)
        self.std = np.asarray(self.std, np.float32)
        if self.mean.shape != self.std.shape or self.mean.ndim != 1:
            raise ShapeError(f"mean {self.mean.shape} and std {self.std.shape} must be equal 1-D shapes")
        if np.any(~np.isfinite(self.std)) or np.any(self.std <= 0):
            raise ShapeError("std must be finite and positive")

    @classmethod
    def from_data(cls, features, joints_num: int | None = None, group: bool = True,
                  feat_bias: float = 1.0, eps: float = 1e-8) -> "Normalizer":
        """Mean and std over all frames of ``features`` (an array ``(N, D)`` or a list of
        ``(T, D)`` arrays). ``group=True`` applies :func:`group_std` (as the published
        ``Mean.npy``/``Std.npy`` were made); std entries below ``eps`` become 1."""
        if isinstance(features, (list, tuple)):
            data = np.concatenate([np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1]) for x in features], 0)
        else:
            data = np.asarray(features, np.float64)
            data = data.reshape(-1, data.shape[-1])
        mean = data.mean(0)
        std = data.std(0)
        if group:
            if joints_num is None:
                joints_num = {263: 22, 251: 21}.get(data.shape[-1])
                if joints_num is None:
                    raise ShapeError(f"cannot infer joints_num from feature size {data.shape[-1]}")
            std = group_std(std, joints_num, feat_bias)
        std = np.where(std < eps, 1.0, std)
        return cls(mean, std)

    @classmethod
    def load(cls, root: str, mean_file: str = "Mean.npy", std_file: str = "Std.npy") -> "Normalizer":
        arrs = []
        for name in (mean_file, std_file):
            path = os.path.join(root, name)
            if not os.path.exists(path):
                raise DataFormatError("file not found", path)
            try:
                arrs.append(np.load(path, allow_pickle=False))
            except (ValueError, OSError) as e:
                raise DataFormatError(f"not a readable .npy file ({e})", path) from e
        try:
            return cls(*arrs)
        except ShapeError as e:
            raise DataFormatError(str(e), os.path.join(root, std_file)) from e

    def save(self, root: str, mean_file: str = "Mean.npy", std_file: str = "Std.npy") -> None:
        os.makedirs(root, exist_ok=True)
        np.save(os.path.join(root, mean_file), self.mean)
        np.save(os.path.join(root, std_file), self.std)

    def normalize(self, x):
        if isinstance(x, np.ndarray):
            return ((x - self.mean) / self.std).astype(np.float32)
        return (x - jnp.asarray(self.mean)) / jnp.asarray(self.std)

    def denormalize(self, x):
        if isinstance(x, np.ndarray):
            return (x * self.std + self.mean).astype(np.float32)
        return x * jnp.asarray(self.std) + jnp.asarray(self.mean)


__all__ = [
    "HmlSpec", "HUMANML3D", "KIT", "KIT_NAMES", "SPECS", "get_spec", "feature_dim",
    "feature_slices", "gaussian_smooth", "target_offsets_from_joints", "uniform_skeleton",
    "joints_to_features", "recover_root_rot_pos", "recover_from_ric", "recover_rotations",
    "bone_rotations",
    "group_std", "Normalizer",
]
