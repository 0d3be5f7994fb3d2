"""The heading frame: sparse inputs and targets relative to where the user stands and faces.

A sparse-to-full-body model that reads the 54 world-frame numbers (``mmar.skeleton``) has to
learn every position on the floor and every facing direction separately. In the *heading
frame* of a frame's head those two things are gone:

* **rotation**: the yaw ``H = Ry(psi)`` (about the world up axis Y) that turns the +Z axis onto
  the head's horizontal forward direction (the head's +Z axis, the facing axis of the canonical
  rest pose, ``docs/design.md``); pitch and roll of the head stay in the data;
* **origin**: the head's ground position ``o = (h_x, 0, h_z)``; the height stays in the data.

``H`` maps heading-frame vectors to world vectors (``v_world = H v``). The functions here
express world quantities in a frame (``to_frame``) and bring them back (``from_frame``):

========================  ===============================  ==========================
quantity                  to the frame                     back to the world
========================  ===============================  ==========================
position ``p``            ``H^T (p - o)``                  ``H p + o``
direction / difference    ``H^T d``                        ``H d``
global rotation ``R``     ``H^T R`` (6D: both columns)     ``H R``
rotation velocity         ``R_{t-1}^T R_t``: unchanged     unchanged
local joint rotations     unchanged (only the root's is    unchanged
                          global: ``H^T R_root``)
========================  ===============================  ==========================

Turning the whole world by a yaw ``Y`` and shifting it on the floor by ``s`` (``s_y = 0``)
turns the head's forward axis by ``Y`` too, so ``H -> Y H`` and ``o -> Y o + s``: everything
expressed in the frame is unchanged (up to float rounding). A window model uses the frame of
its window's **last** frame (the newest, so a streaming model never looks ahead).

Straight up or down: when the head's forward axis is within about 0.6 degrees of vertical (the
length of its horizontal part is below :data:`VERTICAL_EPS`) its horizontal direction is
rounding noise. The heading then comes from the head's up axis (+Y of the head) instead:
its horizontal part times ``-f_y`` (``f`` the forward axis), i.e. the direction the top of the
head points when looking down and the opposite one when looking up -- for a head that is not
rolled, the same direction the forward axis gives just before it reaches vertical. Outside
that cone the heading is exactly the one of the nearest-neighbour floor
(:mod:`mmar.models.nearest`: ``yaw = atan2(f_x, f_z)``). A degenerate input (zero rotation
numbers) gets the identity heading.

Pure ``jax.numpy``, jit- and vmap-able, no sort, no trigonometry (``cos psi`` and ``sin psi``
come straight from the normalised horizontal direction), so the transform converts to TFLite
builtins inside an exported model. Every function takes a :class:`HeadingFrame` whose batch
shape is a prefix of the array's batch shape (a frame per window applies to all its frames
and joints).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mmar import geometry
from mmar.errors import ConfigError, ShapeError
from mmar.skeleton import SPARSE_DIM, SPARSE_HEAD_POS, SPARSE_POS, SPARSE_POSVEL, SPARSE_ROT6D

Array = jax.Array

#: the model input / target frames of the sparse tasks (``model.frame``)
FRAMES = ("world", "heading")
#: the head's facing axis (+Z, as in the canonical rest pose) and the fallback axis (+Y)
FACING_AXIS = 2
UP_AXIS = 1
#: below this horizontal length of the facing axis the up axis gives the heading (~0.57 deg)
VERTICAL_EPS = 1e-2

__all__ = [
    "FRAMES", "HeadingFrame", "check_frame", "head_frame", "window_frame",
    "vectors_to_frame", "vectors_from_frame", "points_to_frame", "points_from_frame",
    "rot6d_to_frame", "rot6d_from_frame", "sparse_to_frame", "sparse_from_frame",
    "pose_to_frame", "pose_from_frame",
]


def check_frame(frame: str, who: str = "model.frame") -> str:
    """``frame`` if it is one of :data:`FRAMES`, else :class:`ConfigError`."""
    if frame not in FRAMES:
        raise ConfigError(f"{who} must be one of {FRAMES}, got {frame!r}")
    return frame


class HeadingFrame(NamedTuple):
    """``H = Ry(psi)`` as ``cos psi``, ``sin psi`` (shape ``(...,)``) and the origin ``o``
    ``(..., 3)`` (``o_y = 0``). ``H e_z = (sin psi, 0, cos psi)`` is the head's heading."""

    cos: Array
    sin: Array
    origin: Array

    def matrix(self) -> Array:
        """``H (..., 3, 3)``, heading frame -> world."""
        c, s = self.cos, self.sin
        o, i = jnp.zeros_like(c), jnp.ones_like(c)
        return jnp.stack([jnp.stack([c, o, s], -1), jnp.stack([o, i, o], -1), jnp.stack([-s, o, c], -1)], -2)


def head_frame(head_rot6d: Array, head_pos: Array) -> HeadingFrame:
    """The heading frame of a head with global rotation ``head_rot6d (..., 6)`` (re-orthonormalised)
    at ``head_pos (..., 3)`` (see the module docstring for the straight up / down fallback)."""
    R = geometry.rot6d_to_matrix(head_rot6d)
    f = R[..., :, FACING_AXIS]
    u = R[..., :, UP_AXIS]
    fx, fz = f[..., 0], f[..., 2]
    vertical = fx * fx + fz * fz < VERTICAL_EPS * VERTICAL_EPS
    ux, uz = -f[..., 1] * u[..., 0], -f[..., 1] * u[..., 2]
    dx = jnp.where(vertical, ux, fx)
    dz = jnp.where(vertical, uz, fz)
    n2 = dx * dx + dz * dz
    ok = n2 > 1e-12
    inv = jax.lax.rsqrt(jnp.where(ok, n2, 1.0))
    c = jnp.where(ok, dz * inv, 1.0)
    s = jnp.where(ok, dx * inv, 0.0)
    origin = jnp.stack([head_pos[..., 0], jnp.zeros_like(head_pos[..., 0]), head_pos[..., 2]], -1)
    return HeadingFrame(c, s, origin)


def _check_sparse(sparse: Array) -> None:
    if sparse.shape[-1] != SPARSE_DIM:
        raise ShapeError(f"sparse features must end in {SPARSE_DIM}, got shape {tuple(sparse.shape)}")


def window_frame(sparse: Array) -> HeadingFrame:
    """The heading frame of the last frame's head of a window ``sparse (..., W, 54)``
    (batch shape ``...``)."""
    _check_sparse(sparse)
    if sparse.ndim < 2:
        raise ShapeError(f"window_frame: sparse must be (..., W, {SPARSE_DIM}), got {tuple(sparse.shape)}")
    last = sparse[..., -1, :]
    return head_frame(last[..., SPARSE_ROT6D][..., :6], last[..., SPARSE_HEAD_POS])


def _fit(x: Array, rank: int) -> Array:
    """``x`` with trailing singleton axes up to ``rank`` axes (the frame's batch shape must be a
    prefix of the array's)."""
    if x.ndim > rank:
        raise ShapeError(f"heading frame of batch shape {x.shape} does not fit an array of batch rank {rank}")
    return x.reshape(x.shape + (1,) * (rank - x.ndim))


def _rotate(v: Array, frame: HeadingFrame, inverse: bool) -> Array:
    if v.shape[-1] != 3:
        raise ShapeError(f"vectors must end in 3, got shape {tuple(v.shape)}")
    c, s = _fit(frame.cos, v.ndim - 1).astype(v.dtype), _fit(frame.sin, v.ndim - 1).astype(v.dtype)
    if inverse:  # H^T v
        s = -s
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    return jnp.stack([c * x + s * z, y, c * z - s * x], -1)


def vectors_to_frame(v: Array, frame: HeadingFrame) -> Array:
    """Directions / differences ``(..., 3)`` -> ``H^T v``."""
    return _rotate(v, frame, inverse=True)


def vectors_from_frame(v: Array, frame: HeadingFrame) -> Array:
    """``H v``."""
    return _rotate(v, frame, inverse=False)


def _origin(p: Array, frame: HeadingFrame) -> Array:
    o = frame.origin
    return o.reshape(o.shape[:-1] + (1,) * (p.ndim - o.ndim) + (3,)).astype(p.dtype)


def points_to_frame(p: Array, frame: HeadingFrame) -> Array:
    """Positions ``(..., 3)`` -> ``H^T (p - o)``."""
    if p.shape[-1] != 3:
        raise ShapeError(f"points must end in 3, got shape {tuple(p.shape)}")
    return vectors_to_frame(p - _origin(p, frame), frame)


def points_from_frame(p: Array, frame: HeadingFrame) -> Array:
    """``H p + o``."""
    if p.shape[-1] != 3:
        raise ShapeError(f"points must end in 3, got shape {tuple(p.shape)}")
    return vectors_from_frame(p, frame) + _origin(p, frame)


def _rot6d(r: Array, frame: HeadingFrame, inverse: bool) -> Array:
    if r.shape[-1] != 6:
        raise ShapeError(f"rot6d must end in 6, got shape {tuple(r.shape)}")
    cols = r.reshape(r.shape[:-1] + (2, 3))  # [R[:, 0], R[:, 1]]: both columns rotate as vectors
    return _rotate(cols, frame, inverse).reshape(r.shape)


def rot6d_to_frame(r: Array, frame: HeadingFrame) -> Array:
    """Global rotations in 6D ``(..., 6)`` -> ``H^T R`` (6D; linear, no re-orthonormalisation)."""
    return _rot6d(r, frame, inverse=True)


def rot6d_from_frame(r: Array, frame: HeadingFrame) -> Array:
    """``H R`` in 6D."""
    return _rot6d(r, frame, inverse=False)


def _sparse(sparse: Array, frame: HeadingFrame, inverse: bool) -> Array:
    _check_sparse(sparse)
    lead = sparse.shape[:-1]
    rot = _rot6d(sparse[..., SPARSE_ROT6D].reshape(lead + (3, 6)), frame, inverse).reshape(lead + (18,))
    pos = sparse[..., SPARSE_POS].reshape(lead + (3, 3))
    pos = points_to_frame(pos, frame) if inverse else points_from_frame(pos, frame)
    vel = _rotate(sparse[..., SPARSE_POSVEL].reshape(lead + (3, 3)), frame, inverse)
    return jnp.concatenate([rot, sparse[..., SPARSE_ROT6D.stop:SPARSE_POS.start], pos.reshape(lead + (9,)),
                            vel.reshape(lead + (9,))], -1)


def sparse_to_frame(sparse: Array, frame: HeadingFrame) -> Array:
    """The 54 sparse numbers ``(..., 54)`` in the frame: global rotations ``H^T R``, rotation
    velocities unchanged, positions ``H^T (p - o)``, position differences ``H^T d``."""
    return _sparse(sparse, frame, inverse=True)


def sparse_from_frame(sparse: Array, frame: HeadingFrame) -> Array:
    """Inverse of :func:`sparse_to_frame`."""
    return _sparse(sparse, frame, inverse=False)


def _pose(rot6d: Array, frame: HeadingFrame, inverse: bool) -> Array:
    if rot6d.ndim < 2 or rot6d.shape[-1] != 6:
        raise ShapeError(f"pose must be (..., J, 6), got shape {tuple(rot6d.shape)}")
    root = _rot6d(rot6d[..., 0, :], frame, inverse)
    return jnp.concatenate([root[..., None, :], rot6d[..., 1:, :]], -2)


def pose_to_frame(rot6d: Array, frame: HeadingFrame) -> Array:
    """Local 6D joint rotations ``(..., J, 6)``: the root's (global) orientation ``H^T R_root``,
    the other joints' local rotations unchanged."""
    return _pose(rot6d, frame, inverse=True)


def pose_from_frame(rot6d: Array, frame: HeadingFrame) -> Array:
    """Inverse of :func:`pose_to_frame`: ``R_root -> H R_root``."""
    return _pose(rot6d, frame, inverse=False)
