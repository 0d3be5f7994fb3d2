"""Rotation representations, forward kinematics and resampling, in JAX.

Conventions used everywhere in mmar:

* Rotation matrices act on column vectors: ``v_world = R @ v_local``.
* Quaternions are ``(w, x, y, z)``, unit norm, ``w >= 0`` after conversion.
* Axis-angle is the rotation vector ``theta * axis`` (radians).
* 6D is the first two *columns* of the matrix, ``[R[:, 0], R[:, 1]]``
  (Zhou et al. 2019), 6 numbers per rotation.
* Euler angles follow BVH: a channel order such as ``"ZXY"`` means
  ``R = Rz(a0) @ Rx(a1) @ Ry(a2)`` with the angles given in that order
  (intrinsic rotations, the first channel outermost).
* Forward kinematics: ``G[j] = G[parent[j]] @ L[j]`` and
  ``p[j] = p[parent[j]] + G[parent[j]] @ offset[j]``; parents precede children.

Every function takes arrays with arbitrary leading batch dimensions, is pure,
and works under ``jax.jit`` and ``jax.vmap``. Functions are float32-stable:
no ``arccos`` near +-1 and no division by a vanishing norm.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

_EPS = 1e-8


# --------------------------------------------------------------------------
# axis-angle
# --------------------------------------------------------------------------

def _safe_norm(x: Array, axis: int = -1, keepdims: bool = False) -> Array:
    sq = jnp.sum(x * x, axis=axis, keepdims=keepdims)
    safe = jnp.where(sq > _EPS**2, sq, 1.0)
    return jnp.where(sq > _EPS**2, jnp.sqrt(safe), 0.0)


def skew(v: Array) -> Array:
    """Cross-product matrix ``[v]_x`` of ``(..., 3)`` vectors."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = jnp.zeros_like(x)
    return jnp.stack(
        [jnp.stack([o, -z, y], -1), jnp.stack([z, o, -x], -1), jnp.stack([-y, x, o], -1)], -2
    )


def axis_angle_to_matrix(aa: Array) -> Array:
    """Rodrigues' formula, ``(..., 3) -> (..., 3, 3)``; exact Taylor terms near 0."""
    aa = jnp.asarray(aa)
    theta2 = jnp.sum(aa * aa, -1)
    small = theta2 < 1e-6
    t2 = jnp.where(small, 1.0, theta2)
    t = jnp.sqrt(t2)
    a = jnp.where(small, 1.0 - theta2 / 6.0, jnp.sin(t) / t)
    b = jnp.where(small, 0.5 - theta2 / 24.0, (1.0 - jnp.cos(t)) / t2)
    k = skew(aa)
    eye = jnp.eye(3, dtype=aa.dtype)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def axis_angle_to_quaternion(aa: Array) -> Array:
    aa = jnp.asarray(aa)
    theta2 = jnp.sum(aa * aa, -1, keepdims=True)
    small = theta2 < 1e-6
    t = jnp.sqrt(jnp.where(small, 1.0, theta2))
    half = 0.5 * t
    s = jnp.where(small, 0.5 - theta2 / 48.0, jnp.sin(half) / t)
    w = jnp.where(small, 1.0 - theta2 / 8.0, jnp.cos(half))
    return jnp.concatenate([w, s * aa], -1)


def quaternion_to_axis_angle(q: Array) -> Array:
    """``(w, x, y, z) -> theta * axis`` with theta in ``[0, pi]``; uses atan2."""
    q = jnp.asarray(q)
    q = jnp.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    s = _safe_norm(v, keepdims=True)
    w = q[..., :1]
    theta = 2.0 * jnp.arctan2(s, w)
    small = s < 1e-6
    # theta / s -> 2 / w as s -> 0
    scale = jnp.where(small, 2.0 / jnp.where(small, w, 1.0), theta / jnp.where(small, 1.0, s))
    return v * scale


def matrix_to_axis_angle(m: Array) -> Array:
    return quaternion_to_axis_angle(matrix_to_quaternion(m))


# --------------------------------------------------------------------------
# quaternions
# --------------------------------------------------------------------------

def quaternion_to_matrix(q: Array) -> Array:
    q = jnp.asarray(q)
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    r0 = jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1)
    r1 = jnp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1)
    r2 = jnp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)
    return jnp.stack([r0, r1, r2], -2)


def matrix_to_quaternion(m: Array) -> Array:
    """Branch-free Shepperd method: builds the four candidates, keeps the best conditioned."""
    m = jnp.asarray(m)
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    tr = m00 + m11 + m22
    # 4*q_i^2 for each component
    diag = jnp.stack([1 + tr, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    cands = jnp.stack(
        [
            jnp.stack([diag[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
            jnp.stack([m21 - m12, diag[..., 1], m10 + m01, m02 + m20], -1),
            jnp.stack([m02 - m20, m10 + m01, diag[..., 2], m21 + m12], -1),
            jnp.stack([m10 - m01, m20 + m02, m21 + m12, diag[..., 3]], -1),
        ],
        -2,
    )  # (..., 4, 4); row i = 4 q_i * q
    best = jnp.argmax(diag, -1)
    row = jnp.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    denom = 2.0 * jnp.sqrt(jnp.maximum(jnp.take_along_axis(diag, best[..., None], -1), 1e-12))
    q = row / denom
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    return jnp.where(q[..., :1] < 0, -q, q)


def quaternion_multiply(a: Array, b: Array) -> Array:
    aw, ax, ay, az = jnp.moveaxis(jnp.asarray(a), -1, 0)
    bw, bx, by, bz = jnp.moveaxis(jnp.asarray(b), -1, 0)
    return jnp.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def quaternion_conjugate(q: Array) -> Array:
    q = jnp.asarray(q)
    return q * jnp.array([1.0, -1.0, -1.0, -1.0], dtype=q.dtype)


def slerp(q0: Array, q1: Array, t: Array) -> Array:
    """Shortest-path spherical interpolation; ``t`` broadcasts against ``q[..., :1]``."""
    q0 = jnp.asarray(q0)
    q1 = jnp.asarray(q1)
    t = jnp.asarray(t, dtype=q0.dtype)
    if t.ndim < q0.ndim:
        t = t[..., None]
    dot = jnp.sum(q0 * q1, -1, keepdims=True)
    q1 = jnp.where(dot < 0, -q1, q1)
    dot = jnp.abs(dot)
    close = dot > 0.9995
    omega = jnp.arctan2(jnp.sqrt(jnp.maximum(1 - dot * dot, 0.0)), dot)
    so = jnp.sin(jnp.where(close, 1.0, omega))
    w0 = jnp.where(close, 1 - t, jnp.sin((1 - t) * omega) / so)
    w1 = jnp.where(close, t, jnp.sin(t * omega) / so)
    out = w0 * q0 + w1 * q1
    return out / jnp.linalg.norm(out, axis=-1, keepdims=True)


# --------------------------------------------------------------------------
# 6D
# --------------------------------------------------------------------------

def matrix_to_rot6d(m: Array) -> Array:
    """First two columns, ``(..., 3, 3) -> (..., 6)`` as ``[c0, c1]``."""
    m = jnp.asarray(m)
    return jnp.concatenate([m[..., :, 0], m[..., :, 1]], -1)


def rot6d_to_matrix(d6: Array) -> Array:
    """Gram-Schmidt on the two columns; the third is their cross product."""
    d6 = jnp.asarray(d6)
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / jnp.maximum(jnp.linalg.norm(a1, axis=-1, keepdims=True), _EPS)
    a2 = a2 - jnp.sum(b1 * a2, -1, keepdims=True) * b1
    b2 = a2 / jnp.maximum(jnp.linalg.norm(a2, axis=-1, keepdims=True), _EPS)
    b3 = jnp.cross(b1, b2)
    return jnp.stack([b1, b2, b3], -1)


# --------------------------------------------------------------------------
# Euler angles (BVH channel orders)
# --------------------------------------------------------------------------

_AXIS = {"X": 0, "Y": 1, "Z": 2}


def _elementary(axis: str, angle: Array) -> Array:
    c, s = jnp.cos(angle), jnp.sin(angle)
    o, i = jnp.zeros_like(angle), jnp.ones_like(angle)
    if axis == "X":
        rows = [[i, o, o], [o, c, -s], [o, s, c]]
    elif axis == "Y":
        rows = [[c, o, s], [o, i, o], [-s, o, c]]
    elif axis == "Z":
        rows = [[c, -s, o], [s, c, o], [o, o, i]]
    else:
        raise ValueError(f"unknown rotation axis {axis!r}")
    return jnp.stack([jnp.stack(r, -1) for r in rows], -2)


def _check_order(order: str) -> str:
    order = order.upper()
    if len(order) != 3 or any(a not in _AXIS for a in order):
        raise ValueError(f"Euler order must be three of X/Y/Z, got {order!r}")
    return order


def euler_to_matrix(angles: Array, order: str, degrees: bool = False) -> Array:
    """``(..., 3)`` angles in channel order -> ``R = R_a0 @ R_a1 @ R_a2``."""
    order = _check_order(order)
    angles = jnp.asarray(angles)
    if degrees:
        angles = jnp.deg2rad(angles)
    r = _elementary(order[0], angles[..., 0])
    r = r @ _elementary(order[1], angles[..., 1])
    return r @ _elementary(order[2], angles[..., 2])


def matrix_to_euler(m: Array, order: str, degrees: bool = False) -> Array:
    """Inverse of :func:`euler_to_matrix` for Tait-Bryan orders (all three axes distinct)
    and proper Euler orders (first == last axis). Middle angle in [-pi/2, pi/2] (Tait-Bryan)
    or [0, pi] (proper)."""
    order = _check_order(order)
    m = jnp.asarray(m)
    i, j, k = (_AXIS[a] for a in order)
    if i == k:
        return _matrix_to_proper_euler(m, order, degrees)
    if len(set(order)) != 3:
        raise ValueError(f"unsupported Euler order {order!r}")
    # sign of the permutation (i, j, k)
    sign = 1.0 if (j - i) % 3 == 1 else -1.0
    # R = R_i(a) R_j(b) R_k(c):  R[i, k] = sign * sin(b)
    sb = jnp.clip(sign * m[..., i, k], -1.0, 1.0)
    cb = jnp.sqrt(jnp.maximum(m[..., i, j] ** 2 + m[..., i, i] ** 2, 0.0))
    b = jnp.arctan2(sb, cb)
    gimbal = cb < 1e-6
    a = jnp.arctan2(-sign * m[..., j, k], m[..., k, k])
    c = jnp.arctan2(-sign * m[..., i, j], m[..., i, i])
    # at gimbal lock put everything into a, c = 0
    a_lock = jnp.arctan2(sign * m[..., k, j], m[..., j, j])
    a = jnp.where(gimbal, a_lock, a)
    c = jnp.where(gimbal, 0.0, c)
    out = jnp.stack([a, b, c], -1)
    return jnp.rad2deg(out) if degrees else out


def _matrix_to_proper_euler(m: Array, order: str, degrees: bool) -> Array:
    i, j = _AXIS[order[0]], _AXIS[order[1]]
    if i == j:
        raise ValueError(f"unsupported Euler order {order!r}")
    k = 3 - i - j
    sign = 1.0 if (j - i) % 3 == 1 else -1.0
    cb = jnp.clip(m[..., i, i], -1.0, 1.0)
    sb = jnp.sqrt(jnp.maximum(m[..., i, j] ** 2 + m[..., i, k] ** 2, 0.0))
    b = jnp.arctan2(sb, cb)
    gimbal = sb < 1e-6
    a = jnp.arctan2(m[..., j, i], -sign * m[..., k, i])
    c = jnp.arctan2(m[..., i, j], sign * m[..., i, k])
    a_lock = jnp.arctan2(sign * m[..., k, j], m[..., j, j])
    a = jnp.where(gimbal, a_lock, a)
    c = jnp.where(gimbal, 0.0, c)
    out = jnp.stack([a, b, c], -1)
    return jnp.rad2deg(out) if degrees else out


# --------------------------------------------------------------------------
# forward kinematics
# --------------------------------------------------------------------------

def forward_kinematics(
    local_rot: Array,
    offsets: Array,
    parents: Sequence[int],
    root_pos: Array | None = None,
) -> tuple[Array, Array]:
    """Global rotations and positions of a kinematic tree.

    Args:
      local_rot: ``(..., J, 3, 3)`` rotation of each joint relative to its parent.
      offsets: ``(J, 3)`` or ``(..., J, 3)`` translation of each joint in its parent's
        frame (per-frame offsets allow animated position channels).
      parents: static sequence, ``parents[0] == -1`` and ``parents[j] < j``.
      root_pos: ``(..., 3)`` world position of joint 0; defaults to ``offsets[..., 0, :]``.

    Returns:
      ``(global_rot (..., J, 3, 3), global_pos (..., J, 3))``.
    """
    parents = tuple(int(p) for p in parents)
    local_rot = jnp.asarray(local_rot)
    offsets = jnp.asarray(offsets, dtype=local_rot.dtype)
    J = len(parents)
    if local_rot.shape[-3] != J or offsets.shape[-2] != J:
        raise ValueError(
            f"forward_kinematics: {J} parents but local_rot has {local_rot.shape[-3]} joints "
            f"and offsets {offsets.shape[-2]}"
        )
    if parents[0] != -1 or any(not (0 <= p < j) for j, p in enumerate(parents) if j > 0):
        raise ValueError("forward_kinematics: parents must be topologically sorted with root -1")
    batch = local_rot.shape[:-3]
    offsets = jnp.broadcast_to(offsets, batch + (J, 3))
    if root_pos is None:
        root_pos = offsets[..., 0, :]
    g_rot = [local_rot[..., 0, :, :]]
    g_pos = [jnp.broadcast_to(jnp.asarray(root_pos, local_rot.dtype), batch + (3,))]
    for j in range(1, J):
        p = parents[j]
        g_pos.append(g_pos[p] + jnp.einsum("...ab,...b->...a", g_rot[p], offsets[..., j, :]))
        g_rot.append(g_rot[p] @ local_rot[..., j, :, :])
    return jnp.stack(g_rot, -3), jnp.stack(g_pos, -2)


def global_to_local(global_rot: Array, parents: Sequence[int]) -> Array:
    """Inverse of the rotation part of FK: ``L[j] = G[parent]^T G[j]``."""
    global_rot = jnp.asarray(global_rot)
    parents = tuple(int(p) for p in parents)
    out = [global_rot[..., 0, :, :]]
    for j in range(1, len(parents)):
        out.append(jnp.swapaxes(global_rot[..., parents[j], :, :], -1, -2) @ global_rot[..., j, :, :])
    return jnp.stack(out, -3)


# --------------------------------------------------------------------------
# resampling between frame rates
# --------------------------------------------------------------------------

def resample_length(num_frames: int, src_fps: float, dst_fps: float) -> int:
    """Number of output frames covering the same time span (last sample <= last input)."""
    if num_frames < 1:
        raise ValueError("cannot resample an empty clip")
    return int((num_frames - 1) * dst_fps / src_fps + 1e-6) + 1


def _resample_index(num_frames: int, src_fps: float, dst_fps: float):
    n_out = resample_length(num_frames, src_fps, dst_fps)
    t = jnp.arange(n_out, dtype=jnp.float32) * (src_fps / dst_fps)
    i0 = jnp.clip(jnp.floor(t + 1e-5).astype(jnp.int32), 0, num_frames - 1)
    i1 = jnp.minimum(i0 + 1, num_frames - 1)
    w = jnp.clip(t - i0, 0.0, 1.0)
    return i0, i1, w


def resample_positions(x: Array, src_fps: float, dst_fps: float) -> Array:
    """Linear interpolation in time along axis 0 of ``(T, ...)``."""
    x = jnp.asarray(x)
    i0, i1, w = _resample_index(x.shape[0], src_fps, dst_fps)
    w = w.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
    return x[i0] * (1 - w) + x[i1] * w


def resample_rotations(rot: Array, src_fps: float, dst_fps: float) -> Array:
    """Slerp in time along axis 0 of ``(T, ..., 3, 3)`` rotation matrices."""
    rot = jnp.asarray(rot)
    q = matrix_to_quaternion(rot)
    i0, i1, w = _resample_index(rot.shape[0], src_fps, dst_fps)
    w = w.reshape((-1,) + (1,) * (q.ndim - 1)).astype(q.dtype)
    return quaternion_to_matrix(slerp(q[i0], q[i1], w))
