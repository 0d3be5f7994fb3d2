"""The numpy geometry core: rotations, forward kinematics, resampling and the sparse input.

The numpy counterpart of :mod:`mmar.geometry` (JAX), with the same conventions (see that
module's docstring): rotation matrices act on column vectors, quaternions are ``(w, x, y,
z)``, 6D is the first two matrix columns ``[R[:, 0], R[:, 1]]``, a BVH Euler order such as
``"ZXY"`` means ``R = Rz(a0) @ Rx(a1) @ Ry(a2)``, and forward kinematics is
``G[j] = G[parent[j]] @ L[j]``, ``p[j] = p[parent[j]] + G[parent[j]] @ offset[j]``.

This module imports only numpy (plus :mod:`mmar.skeleton` and :mod:`mmar.errors`, both plain
Python), so the BVH import workers and the headset runtime (:mod:`mmar.export.runtime`) use it
where JAX is not installed. It is the one numpy implementation of each operation; every other
module imports from here.

Precision: functions compute in float64 where the data import needs it (Euler angles,
quaternions, forward kinematics, slerp: inputs are cast to float64) and in the input's
precision otherwise (6D conversions, quaternion algebra, :func:`sparse_features`).
:func:`smpl22_arrays` and :func:`body_in_world` return float32, as the ``mmar convert``
arrays; both agree with their float32 JAX counterparts to float32 rounding.

The quaternion helpers :func:`quaternion_multiply`, :func:`quaternion_conjugate`,
:func:`quaternion_rotate`, :func:`quaternion_between`, :func:`normalize` and
``quaternion_to_matrix(q, normalize=False)`` carry the exact numerics of the published
HumanML3D processing (:mod:`mmar.data.hml_features`).
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from mmar.errors import ShapeError
from mmar.skeleton import HEAD, NUM_JOINTS, SMPL22_PARENTS, SPARSE_HEAD_POS, SPARSE_JOINTS, SPARSE_SLICES

__all__ = [
    "matvec",
    "normalize",
    "matrix_to_rot6d",
    "rot6d_to_matrix",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "quaternion_multiply",
    "quaternion_conjugate",
    "quaternion_rotate",
    "quaternion_between",
    "slerp",
    "euler_to_matrix",
    "matrix_to_euler",
    "forward_kinematics",
    "resample_index",
    "sparse_features",
    "smpl22_arrays",
    "body_in_world",
    "axis_vector",
    "frame_from_directions",
    "rotation_between_frames",
]

_AXIS = {"X": 0, "Y": 1, "Z": 2}


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

def matvec(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Batched ``a @ v`` of ``(..., 3, 3)`` matrices and ``(..., 3)`` vectors."""
    return np.einsum("...ij,...j->...i", a, v)


def normalize(v: np.ndarray) -> np.ndarray:
    """``v / |v|`` over the last axis (no guard against a zero norm)."""
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# --------------------------------------------------------------------------
# 6D
# --------------------------------------------------------------------------

def matrix_to_rot6d(m: np.ndarray) -> np.ndarray:
    """First two columns, ``(..., 3, 3) -> (..., 6)`` as ``[c0, c1]``."""
    m = np.asarray(m)
    return np.concatenate([m[..., :, 0], m[..., :, 1]], -1)


def rot6d_to_matrix(d6: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Gram-Schmidt on the two columns, the third is their cross product; computes in the
    input's float precision."""
    d6 = np.asarray(d6)
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / np.maximum(np.linalg.norm(a1, axis=-1, keepdims=True), eps)
    a2 = a2 - np.sum(b1 * a2, -1, keepdims=True) * b1
    b2 = a2 / np.maximum(np.linalg.norm(a2, axis=-1, keepdims=True), eps)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], -1)


# --------------------------------------------------------------------------
# quaternions (w, x, y, z)
# --------------------------------------------------------------------------

def quaternion_to_matrix(q: np.ndarray, normalize: bool = True) -> np.ndarray:
    """``(..., 4) -> (..., 3, 3)`` in float64. ``normalize=False`` skips the division by the
    norm (the published HumanML3D code, for quaternions already of unit norm)."""
    q = np.asarray(q, np.float64)
    if normalize:
        q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def matrix_to_quaternion(m: np.ndarray) -> np.ndarray:
    """``(..., 3, 3) -> (..., 4)`` with ``w >= 0``, float64 (Shepperd's method, branch-free:
    the best conditioned of the four candidates)."""
    m = np.asarray(m, np.float64)
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    tr = m00 + m11 + m22
    diag = np.stack([1 + tr, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    cands = np.stack([
        np.stack([diag[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
        np.stack([m21 - m12, diag[..., 1], m10 + m01, m02 + m20], -1),
        np.stack([m02 - m20, m10 + m01, diag[..., 2], m21 + m12], -1),
        np.stack([m10 - m01, m20 + m02, m21 + m12, diag[..., 3]], -1),
    ], -2)  # (..., 4, 4); row i = 4 q_i * q
    best = np.argmax(diag, -1)
    row = np.take_along_axis(cands, best[..., None, None], -2)[..., 0, :]
    q = row / (2.0 * np.sqrt(np.maximum(np.take_along_axis(diag, best[..., None], -1), 1e-12)))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` (apply ``b`` first), broadcasting."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b), -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def quaternion_conjugate(q: np.ndarray) -> np.ndarray:
    """``(w, -x, -y, -z)``: the inverse of a unit quaternion."""
    return np.asarray(q) * np.array([1.0, -1.0, -1.0, -1.0])


def quaternion_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors ``v (..., 3)`` by unit quaternions ``q (..., 4)`` (broadcasting):
    ``v + 2 (w (u x v) + u x (u x v))``."""
    w = q[..., :1]
    u = q[..., 1:]
    uv = np.cross(u, v)
    return v + 2.0 * (w * uv + np.cross(u, uv))


def quaternion_between(v0: np.ndarray, v1: np.ndarray) -> np.ndarray:
    """Unit quaternion rotating direction ``v0`` onto ``v1`` (HumanML3D's formula
    ``(|v0||v1| + v0.v1, v0 x v1)``, normalised), with a 180-degree rotation about a
    perpendicular axis (Y when possible) for opposite vectors."""
    v0, v1 = np.broadcast_arrays(v0, v1)
    xyz = np.cross(v0, v1)
    w = np.sqrt(np.sum(v0 * v0, -1) * np.sum(v1 * v1, -1)) + np.sum(v0 * v1, -1)
    q = np.concatenate([w[..., None], xyz], -1)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    scale = np.sqrt(np.sum(v0 * v0, -1) * np.sum(v1 * v1, -1))[..., None]
    bad = n < 1e-9 * np.maximum(scale, 1e-30)
    if np.any(bad):
        d = v0 / np.maximum(np.linalg.norm(v0, axis=-1, keepdims=True), 1e-30)
        y = np.array([0.0, 1.0, 0.0])
        x = np.array([1.0, 0.0, 0.0])
        use_y = np.abs(d[..., 1:2]) < 0.9
        ref = np.where(use_y, y, x)
        axis = ref - np.sum(ref * d, -1, keepdims=True) * d
        axis = axis / np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), 1e-30)
        alt = np.concatenate([np.zeros_like(axis[..., :1]), axis], -1)
        return np.where(bad, alt, q / np.where(bad, 1.0, n))
    return q / n


def slerp(q0: np.ndarray, q1: np.ndarray, t) -> np.ndarray:
    """Shortest-path spherical interpolation as :func:`mmar.geometry.slerp`; ``t``
    broadcasts against ``q[..., :1]`` (a ``t`` with fewer dimensions than ``q0`` gets a
    trailing axis)."""
    q0 = np.asarray(q0)
    q1 = np.asarray(q1)
    if np.ndim(t) < q0.ndim:
        t = np.asarray(t)[..., None]
    dot = np.sum(q0 * q1, -1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    dot = np.abs(dot)
    close = dot > 0.9995
    omega = np.arctan2(np.sqrt(np.maximum(1 - dot * dot, 0.0)), dot)
    so = np.sin(np.where(close, 1.0, omega))
    w0 = np.where(close, 1 - t, np.sin((1 - t) * omega) / so)
    w1 = np.where(close, t, np.sin(t * omega) / so)
    out = w0 * q0 + w1 * q1
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


# --------------------------------------------------------------------------
# Euler angles (BVH channel orders)
# --------------------------------------------------------------------------

def _check_order(order: str) -> str:
    order = order.upper()
    if len(order) != 3 or any(a not in _AXIS for a in order):
        raise ValueError(f"Euler order must be three of X/Y/Z, got {order!r}")
    return order


def _poly_mul(a: dict, b: dict) -> dict:
    out: dict = {}
    for ma, ca in a.items():
        for mb, cb in b.items():
            m = tuple(sorted(ma + mb))
            out[m] = out.get(m, 0.0) + ca * cb
    return {m: c for m, c in out.items() if c != 0.0}


@functools.lru_cache(maxsize=None)
def _euler_terms(order: str):
    """Closed form of ``R_a0 R_a1 R_a2``: per entry, a tuple of ``(coef, factors)`` where
    factors name ``("c", k)`` / ``("s", k)`` (cosine / sine of angle k)."""
    one, zero = {(): 1.0}, {}

    def elem(axis: str, k: int):
        c, s, ns = {(("c", k),): 1.0}, {(("s", k),): 1.0}, {(("s", k),): -1.0}
        if axis == "X":
            return [[one, zero, zero], [zero, c, ns], [zero, s, c]]
        if axis == "Y":
            return [[c, zero, s], [zero, one, zero], [ns, zero, c]]
        return [[c, ns, zero], [s, c, zero], [zero, zero, one]]

    def mul(A, B):
        C = []
        for i in range(3):
            row = []
            for k in range(3):
                acc: dict = {}
                for j in range(3):
                    for m, cf in _poly_mul(A[i][j], B[j][k]).items():
                        acc[m] = acc.get(m, 0.0) + cf
                row.append({m: cf for m, cf in acc.items() if cf != 0.0})
            C.append(row)
        return C

    M = mul(mul(elem(order[0], 0), elem(order[1], 1)), elem(order[2], 2))
    return tuple(tuple(tuple((cf, m) for m, cf in M[i][k].items()) for k in range(3)) for i in range(3))


def euler_to_matrix(angles: np.ndarray, order: str, degrees: bool = False) -> np.ndarray:
    """``(..., 3)`` angles in channel order -> ``R = R_a0 @ R_a1 @ R_a2`` (float64), any order
    of three axes. Evaluated in closed form (a few products per entry, shared between
    entries), not as matrix products: the BVH import's hot path."""
    order = _check_order(order)
    ang = np.asarray(angles, np.float64)
    if degrees:
        ang = np.deg2rad(ang)
    vals = {}
    for k in range(3):
        a_k = np.ascontiguousarray(ang[..., k])
        vals[("c", k)] = np.cos(a_k)
        vals[("s", k)] = np.sin(a_k)
    out = np.empty(ang.shape[:-1] + (3, 3), np.float64)
    prods: dict = {}
    for i, row in enumerate(_euler_terms(order)):
        for k, terms in enumerate(row):
            acc = None
            for cf, m in terms:
                if m not in prods:
                    if len(m) == 0:
                        prods[m] = 1.0
                    elif len(m) == 1:
                        prods[m] = vals[m[0]]
                    else:
                        head = prods.get(m[:-1])
                        if head is None:
                            head = vals[m[0]]
                            for f in m[1:-1]:
                                head = head * vals[f]
                        prods[m] = head * vals[m[-1]]
                t = prods[m] if cf == 1.0 else (-prods[m] if cf == -1.0 else cf * prods[m])
                acc = t if acc is None else acc + t
            out[..., i, k] = 0.0 if acc is None else acc
    return out


def matrix_to_euler(m: np.ndarray, order: str, degrees: bool = False) -> np.ndarray:
    """Inverse of :func:`euler_to_matrix` (float64), the branch of
    :func:`mmar.geometry.matrix_to_euler`: for Tait-Bryan orders (three distinct axes, the BVH
    orders) the middle angle is in ``[-pi/2, pi/2]``, for proper Euler orders (first == last
    axis) in ``[0, pi]``; at gimbal lock the first angle takes everything."""
    order = _check_order(order)
    m = np.asarray(m, np.float64)
    i, j, k = (_AXIS[a] for a in order)
    if i == k:
        out = _matrix_to_proper_euler(m, i, j)
    else:
        if len(set(order)) != 3:
            raise ValueError(f"unsupported Euler order {order!r}")
        sign = 1.0 if (j - i) % 3 == 1 else -1.0
        # R = R_i(a) R_j(b) R_k(c):  R[i, k] = sign * sin(b)
        sb = np.clip(sign * m[..., i, k], -1.0, 1.0)
        cb = np.sqrt(m[..., i, j] ** 2 + m[..., i, i] ** 2)
        b = np.arctan2(sb, cb)
        lock = cb < 1e-6
        a = np.where(lock, np.arctan2(sign * m[..., k, j], m[..., j, j]),
                     np.arctan2(-sign * m[..., j, k], m[..., k, k]))
        c = np.where(lock, 0.0, np.arctan2(-sign * m[..., i, j], m[..., i, i]))
        out = np.stack([a, b, c], -1)
    return np.rad2deg(out) if degrees else out


def _matrix_to_proper_euler(m: np.ndarray, i: int, j: int) -> np.ndarray:
    if i == j:
        raise ValueError("unsupported Euler order: repeated middle axis")
    k = 3 - i - j
    sign = 1.0 if (j - i) % 3 == 1 else -1.0
    cb = np.clip(m[..., i, i], -1.0, 1.0)
    sb = np.sqrt(m[..., i, j] ** 2 + m[..., i, k] ** 2)
    b = np.arctan2(sb, cb)
    lock = sb < 1e-6
    a = np.where(lock, np.arctan2(sign * m[..., k, j], m[..., j, j]), np.arctan2(m[..., j, i], -sign * m[..., k, i]))
    c = np.where(lock, 0.0, np.arctan2(m[..., i, j], sign * m[..., i, k]))
    return np.stack([a, b, c], -1)


# --------------------------------------------------------------------------
# forward kinematics and resampling
# --------------------------------------------------------------------------

def forward_kinematics(local_rot, offsets, parents: Sequence[int], root_pos=None):
    """Global rotations and positions of a kinematic tree, in float64.

    ``local_rot (..., J, 3, 3)``; ``offsets (J, 3)`` or per-frame ``(..., J, 3)`` (animated
    translations); ``parents`` with ``parents[0] == -1`` and ``parents[j] < j``; ``root_pos
    (..., 3)`` defaults to ``offsets[..., 0, :]``. Returns ``(global_rot (..., J, 3, 3),
    global_pos (..., J, 3))``.
    """
    R = np.asarray(local_rot, np.float64)
    batch, J = R.shape[:-3], R.shape[-3]
    if len(parents) != J:
        raise ValueError(f"forward_kinematics: {len(parents)} parents but local_rot has {J} joints")
    off = np.broadcast_to(np.asarray(offsets, np.float64), batch + (J, 3))
    g_rot = np.empty(batch + (J, 3, 3))
    g_pos = np.empty(batch + (J, 3))
    g_rot[..., 0, :, :] = R[..., 0, :, :]
    g_pos[..., 0, :] = off[..., 0, :] if root_pos is None else np.asarray(root_pos, np.float64)
    for j in range(1, J):
        p = parents[j]
        g_pos[..., j, :] = g_pos[..., p, :] + matvec(g_rot[..., p, :, :], off[..., j, :])
        g_rot[..., j, :, :] = g_rot[..., p, :, :] @ R[..., j, :, :]
    return g_rot, g_pos


def resample_index(num_frames: int, src_fps: float, dst_fps: float):
    """The time grid of :func:`mmar.geometry.resample_positions` (same float32 rounding):
    ``(i0, i1, w)``, output frame ``t`` lies at ``(1 - w) x[i0] + w x[i1]`` (``w`` float64)."""
    if num_frames < 1:
        raise ValueError("cannot resample an empty clip")
    n_out = int((num_frames - 1) * dst_fps / src_fps + 1e-6) + 1
    t = np.arange(n_out, dtype=np.float32) * np.float32(src_fps / dst_fps)
    i0 = np.clip(np.floor(t + np.float32(1e-5)).astype(np.int64), 0, num_frames - 1)
    i1 = np.minimum(i0 + 1, num_frames - 1)
    w = np.clip(t - i0, 0.0, 1.0).astype(np.float64)
    return i0, i1, w


# --------------------------------------------------------------------------
# the sparse input and SMPL-22 arrays
# --------------------------------------------------------------------------

def sparse_features(global_rot: np.ndarray, global_pos: np.ndarray,
                    joints: Sequence[int] = SPARSE_JOINTS) -> np.ndarray:
    """numpy counterpart of :func:`mmar.data.clip.sparse_features`: the 54-number input per
    frame.

    ``global_rot (..., T, J, 3, 3)``, ``global_pos (..., T, J, 3)`` -> ``(..., T, 54)``: over
    ``joints`` (head, left wrist, right wrist) the global 6D rotation, the rotation velocity
    ``R_{t-1}^T R_t`` in 6D, the global position and the position difference ``p_t - p_{t-1}``;
    frame 0 gets identity / zero velocity (the first-frame rule of ``docs/design.md``; the
    identity is computed as ``R_0^T R_0``, exact up to rounding, as in the JAX function).
    Computes in the inputs' precision (float64 for the arrays of :func:`smpl22_arrays`).
    """
    j = np.asarray(joints)
    R = np.asarray(global_rot)[..., j, :, :]
    p = np.asarray(global_pos)[..., j, :]
    R_prev = np.concatenate([R[..., :1, :, :, :], R[..., :-1, :, :, :]], -4)
    p_prev = np.concatenate([p[..., :1, :, :], p[..., :-1, :, :]], -3)
    vel = np.swapaxes(R_prev, -1, -2) @ R
    lead = R.shape[:-3]
    return np.concatenate([
        matrix_to_rot6d(R).reshape(lead + (-1,)),
        matrix_to_rot6d(vel).reshape(lead + (-1,)),
        p.reshape(lead + (-1,)),
        (p - p_prev).reshape(lead + (-1,)),
    ], -1)


def smpl22_arrays(local_rot: np.ndarray, offsets: np.ndarray, root_pos: np.ndarray,
                  fps: float) -> dict[str, np.ndarray]:
    """The ``mmar convert`` arrays of one SMPL-22 clip.

    numpy counterpart of ``mmar.data.clip.clips_to_arrays([clip])[0]`` (float64 forward
    kinematics, cast to float32): ``joints (T,22,3)``, ``rot6d (T,22,6)``, ``root (T,3)``,
    ``sparse (T,54)``, ``fps`` and ``offsets (22,3)``. ``local_rot (T,22,3,3)`` are local
    rotations on the SMPL-22 tree, ``offsets (22,3)`` its rest offsets in metres, ``root_pos
    (T,3)``. Frame 0's velocities are set to exactly identity / zero, as ``clips_to_arrays``
    does.
    """
    local_rot = np.asarray(local_rot)
    if local_rot.ndim != 4 or local_rot.shape[1:] != (NUM_JOINTS, 3, 3) or local_rot.shape[0] < 1:
        raise ShapeError(f"smpl22_arrays: local_rot must be (T>=1, {NUM_JOINTS}, 3, 3), got {local_rot.shape}")
    offsets = np.asarray(offsets, np.float32)
    if offsets.shape != (NUM_JOINTS, 3):
        raise ShapeError(f"smpl22_arrays: offsets must be ({NUM_JOINTS}, 3), got {offsets.shape}")
    g_rot, g_pos = forward_kinematics(local_rot, offsets, SMPL22_PARENTS, root_pos)
    sparse = sparse_features(g_rot, g_pos).astype(np.float32)
    sparse[0, SPARSE_SLICES["rotvel6d"]] = np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), len(SPARSE_JOINTS))
    sparse[0, SPARSE_SLICES["posdiff"]] = 0.0
    return {
        "joints": g_pos.astype(np.float32),
        "rot6d": matrix_to_rot6d(local_rot).astype(np.float32),
        "root": np.asarray(root_pos, np.float32),
        "sparse": sparse,
        "fps": np.asarray(fps, np.float32),
        "offsets": offsets,
    }


def body_in_world(rot6d: np.ndarray, offsets: np.ndarray, sparse: np.ndarray,
                  parents: Sequence[int] = SMPL22_PARENTS, head_index: int = HEAD) -> np.ndarray:
    """numpy counterpart of :func:`mmar.models.body.body_in_world`: world joints ``(..., J, 3)``
    (float32) of predicted local 6D rotations ``(..., J, 6)``: float64 FK with ``offsets (J, 3)``
    and the root at the origin, then translated so joint ``head_index`` meets the tracked head
    ``sparse[..., 36:39]``."""
    local = rot6d_to_matrix(np.asarray(rot6d, np.float64))
    _, joints = forward_kinematics(local, offsets, parents, np.zeros(local.shape[:-3] + (3,)))
    head = np.asarray(sparse, np.float64)[..., SPARSE_HEAD_POS]
    return (joints - joints[..., head_index:head_index + 1, :] + head[..., None, :]).astype(np.float32)


# --------------------------------------------------------------------------
# frames from directions (the canonical rest pose of mmar.data.bvh)
# --------------------------------------------------------------------------

_SIGNED_AXES = {"+X": (1.0, 0.0, 0.0), "-X": (-1.0, 0.0, 0.0), "+Y": (0.0, 1.0, 0.0),
                "-Y": (0.0, -1.0, 0.0), "+Z": (0.0, 0.0, 1.0), "-Z": (0.0, 0.0, -1.0)}


def axis_vector(axis: str) -> np.ndarray:
    """``"+X"``, ``"-Y"``, ... -> the unit vector (float64)."""
    try:
        return np.array(_SIGNED_AXES[axis.upper()], np.float64)
    except (KeyError, AttributeError):
        raise ValueError(f"axis must be one of {', '.join(_SIGNED_AXES)}, got {axis!r}") from None


def frame_from_directions(primary: np.ndarray, secondary: np.ndarray, primary_axis: str, secondary_axis: str,
                          min_sin: float = 0.0) -> tuple[np.ndarray, float]:
    """The rotation ``R`` (float64) that takes the unit vector of ``primary_axis`` onto the
    direction of ``primary`` and ``secondary_axis`` as close as possible to ``secondary``
    (Gram-Schmidt: the part of ``secondary`` orthogonal to ``primary``). The two axes must be
    different axes (``"+Y"``, ``"+Z"``; not ``"+X"``, ``"-X"``).

    Returns ``(R, s)`` with ``s`` the sine of the angle between ``primary`` and ``secondary``;
    ``R`` is only meaningful when ``s > min_sin`` (the caller checks), and a zero ``primary``
    gives ``s = 0``.
    """
    p = np.asarray(primary, np.float64)
    q = np.asarray(secondary, np.float64)
    a, b = axis_vector(primary_axis), axis_vector(secondary_axis)
    if abs(float(a @ b)) > 1e-9:
        raise ValueError(f"primary and secondary axes must be orthogonal, got {primary_axis} and {secondary_axis}")
    pn, qn = np.linalg.norm(p), np.linalg.norm(q)
    if pn < 1e-12 or qn < 1e-12:
        return np.eye(3), 0.0
    e1 = p / pn
    ortho = q - (q @ e1) * e1
    s = float(np.linalg.norm(ortho) / qn)
    if s <= max(min_sin, 1e-12):
        return np.eye(3), s
    e2 = ortho / np.linalg.norm(ortho)
    world = np.stack([e1, e2, np.cross(e1, e2)], -1)
    canon = np.stack([a, b, np.cross(a, b)], -1)
    return world @ canon.T, s


def rotation_between_frames(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle in degrees between rotation matrices ``a`` and ``b`` (``(..., 3, 3)``,
    broadcasting) -> ``(...)`` float64."""
    m = np.swapaxes(np.asarray(a, np.float64), -1, -2) @ np.asarray(b, np.float64)
    c = (np.trace(m, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))
