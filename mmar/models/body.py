"""Body helpers shared by the sparse-to-full-body models: the 54-number sparse layout,
6D -> local matrices -> forward kinematics, and placing the body in the world from the
tracked head (``docs/design.md``, "Placing the body in the world").

Sparse layout per frame (joints head 15, left wrist 20, right wrist 21, in that order; the
slices are defined in :mod:`mmar.skeleton`)::

    [ 0:18]  global rotation, 6D             (SPARSE_ROT6D)
    [18:36]  rotation velocity R_{t-1}^T R_t (SPARSE_ROTVEL)
    [36:45]  global position                 (SPARSE_POS; head = 36:39)
    [45:54]  position difference p_t-p_{t-1} (SPARSE_POSVEL)

All functions take arbitrary leading batch dimensions, are pure and jit-able.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from mmar import geometry
from mmar.errors import ShapeError
from mmar.skeleton import (  # noqa: F401  (the sparse layout, re-exported by mmar.models)
    HEAD,
    SMPL22_PARENTS,
    SPARSE_DIM,
    SPARSE_HEAD_POS,
    SPARSE_POS,
    SPARSE_POSVEL,
    SPARSE_ROT6D,
    SPARSE_ROTVEL,
)

Array = jax.Array


def _check_sparse(sparse: Array) -> None:
    if sparse.shape[-1] != SPARSE_DIM:
        raise ShapeError(f"sparse features must end in {SPARSE_DIM}, got shape {tuple(sparse.shape)}")


def sparse_positions(sparse: Array) -> Array:
    """Tracked global positions ``(..., 3, 3)`` of head, left wrist, right wrist."""
    _check_sparse(sparse)
    return sparse[..., SPARSE_POS].reshape(sparse.shape[:-1] + (3, 3))


def sparse_rotations(sparse: Array) -> Array:
    """Tracked global rotation matrices ``(..., 3, 3, 3)`` of head, left and right wrist."""
    _check_sparse(sparse)
    return geometry.rot6d_to_matrix(sparse[..., SPARSE_ROT6D].reshape(sparse.shape[:-1] + (3, 6)))


def tracked_head(sparse: Array) -> Array:
    """The tracked head position ``sparse[..., 36:39]``, shape ``(..., 3)``."""
    _check_sparse(sparse)
    return sparse[..., SPARSE_HEAD_POS]


def rot6d_to_local(rot6d: Array) -> Array:
    """``(..., J, 6)`` local 6D rotations -> ``(..., J, 3, 3)`` matrices (Gram-Schmidt)."""
    if rot6d.shape[-1] != 6:
        raise ShapeError(f"rot6d must end in 6, got shape {tuple(rot6d.shape)}")
    return geometry.rot6d_to_matrix(rot6d)


def fk_rot6d(
    rot6d: Array,
    offsets: Array,
    parents: Sequence[int] = SMPL22_PARENTS,
    root_pos: Array | None = None,
) -> tuple[Array, Array]:
    """Forward kinematics from local 6D rotations.

    Args:
      rot6d: ``(..., J, 6)`` local rotations (root orientation included).
      offsets: ``(J, 3)`` (or ``(..., J, 3)``) joint offsets in the parent frame; the root
        offset is ignored.
      parents: static parent list.
      root_pos: ``(..., 3)`` root position; **defaults to the origin** (unlike
        :func:`mmar.geometry.forward_kinematics`, whose default is ``offsets[0]``).

    Returns:
      ``(global_rot (..., J, 3, 3), joints (..., J, 3))``.
    """
    local = rot6d_to_local(rot6d)
    if root_pos is None:
        root_pos = jnp.zeros(local.shape[:-3] + (3,), local.dtype)
    return geometry.forward_kinematics(local, offsets, parents, root_pos=root_pos)


def place_at_head(joints: Array, head_pos: Array, head_index: int = HEAD) -> Array:
    """Translate ``joints (..., J, 3)`` so that joint ``head_index`` lands on ``head_pos (..., 3)``."""
    return joints - joints[..., head_index : head_index + 1, :] + head_pos[..., None, :]


def body_in_world(
    rot6d: Array,
    offsets: Array,
    sparse: Array,
    parents: Sequence[int] = SMPL22_PARENTS,
    head_index: int = HEAD,
) -> Array:
    """World joint positions ``(..., J, 3)`` of predicted local rotations.

    FK runs with the root at the origin, then the body is translated so the predicted head
    coincides with the tracked head ``sparse[..., 36:39]`` (AGRoL's evaluation placement).
    The root translation is ``result[..., 0, :]``.
    """
    _, joints = fk_rot6d(rot6d, offsets, parents)
    return place_at_head(joints, tracked_head(sparse), head_index)


def head_relative(joints: Array, head_pos: Array) -> Array:
    """``joints - head_pos``: positions in a world-aligned frame centred on the head."""
    return joints - head_pos[..., None, :]
