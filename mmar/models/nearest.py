"""Nearest-neighbour lookup: the floor every sparse-to-full-body model must beat.

For each frame of the sparse input, find the training frame whose tracking signals are closest
and return that frame's full-body local rotations. A model that cannot beat this lookup on the
same split is not yet learning the task.

The lookup is made invariant to where the user stands and which way they face: features are
expressed in a *heading frame* (rotation about the up axis Y that brings the head's horizontal
facing vector to a fixed direction, origin below the head). The retrieved root orientation is
rotated back into the query's heading. Features per frame (all from the 54 sparse numbers):
head height, wrist positions relative to the head, head and wrist orientations in the heading
frame (6D), and head-relative wrist velocities over ``vel_frames`` frames. Positions are in
metres, weighted by ``pos_weight``.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from mmar import geometry
from mmar.errors import ShapeError
from mmar.models import body
from mmar.skeleton import SPARSE_DIM


def heading_rotation(sparse: jax.Array, facing_axis: int) -> jax.Array:
    """``(..., 3, 3)`` rotation about Y that maps the head's facing vector onto +Z.

    ``facing_axis`` is the head's local axis used as its facing direction (its horizontal
    projection gives the heading)."""
    head = body.sparse_rotations(sparse)[..., 0, :, :]
    f = head[..., :, facing_axis]
    yaw = jnp.arctan2(f[..., 0], f[..., 2])  # angle of f from +Z towards +X
    return geometry.euler_to_matrix(jnp.stack([-yaw, 0 * yaw, 0 * yaw], -1), "YXZ")


def lookup_features(sparse: jax.Array, facing_axis: int, pos_weight: float = 3.0, vel_frames: int = 5):
    """Heading-invariant features ``(T, D)`` of a clip's sparse input ``(T, 54)``."""
    if sparse.ndim != 2 or sparse.shape[-1] != SPARSE_DIM:
        raise ShapeError(f"sparse input must be (T, {SPARSE_DIM}), got {tuple(sparse.shape)}")
    H = heading_rotation(sparse, facing_axis)  # (T, 3, 3)
    Ht = jnp.swapaxes(H, -1, -2)
    pos = body.sparse_positions(sparse)  # (T, 3, 3): head, lwrist, rwrist
    rel = jnp.einsum("tab,tjb->tja", H, pos[:, 1:] - pos[:, :1])  # wrists relative to head
    rots = body.sparse_rotations(sparse)  # (T, 3, 3, 3)
    canon = jnp.einsum("tab,tjbc->tjac", H, rots)
    prev = jnp.concatenate([jnp.repeat(rel[:1], vel_frames, 0), rel[:-vel_frames]], 0)
    return jnp.concatenate(
        [
            pos_weight * pos[:, 0, 1:2],
            pos_weight * rel.reshape(-1, 6),
            geometry.matrix_to_rot6d(canon).reshape(-1, 18),
            pos_weight * (rel - prev).reshape(-1, 6),
        ],
        -1,
    ), Ht


@dataclasses.dataclass
class NearestNeighbor:
    """``fit`` on training clips (sparse + local 6D rotations), ``predict`` per clip."""

    facing_axis: int = 2
    pos_weight: float = 3.0
    vel_frames: int = 5
    stride: int = 1
    chunk: int = 2048

    def fit(self, sparse_list, rot6d_list) -> "NearestNeighbor":
        feats, rots = [], []
        for s, r in zip(sparse_list, rot6d_list):
            f, Ht = lookup_features(jnp.asarray(s), self.facing_axis, self.pos_weight, self.vel_frames)
            r = np.asarray(r)
            # store the root orientation in the heading frame (H R_root)
            root = geometry.rot6d_to_matrix(jnp.asarray(r[:, 0]))
            r = r.copy()
            r[:, 0] = np.asarray(geometry.matrix_to_rot6d(jnp.swapaxes(Ht, -1, -2) @ root))
            sl = slice(1, None, self.stride)  # frame 0 has no velocity (first-frame rule)
            feats.append(np.asarray(f)[sl])
            rots.append(r[sl])
        self.features = jnp.asarray(np.concatenate(feats), jnp.float32)
        self.rot6d = np.concatenate(rots).astype(np.float32)
        self._sqnorm = jnp.sum(self.features**2, -1)
        self._search = jax.jit(self._search_impl)
        return self

    def _search_impl(self, q):
        d = self._sqnorm[None, :] - 2.0 * q @ self.features.T
        return jnp.argmin(d, -1)

    def predict(self, sparse: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local 6D rotations ``(T, 22, 6)`` and world joints ``(T, 22, 3)`` for ``sparse (T, 54)``."""
        f, Ht = lookup_features(jnp.asarray(sparse), self.facing_axis, self.pos_weight, self.vel_frames)
        T = f.shape[0]
        pad = (-T) % self.chunk
        fq = jnp.pad(f, ((0, pad), (0, 0)))
        idx = np.concatenate([np.asarray(self._search(fq[i:i + self.chunk]))
                              for i in range(0, T + pad, self.chunk)])[:T]
        rot = self.rot6d[idx].copy()
        root = Ht @ geometry.rot6d_to_matrix(jnp.asarray(rot[:, 0]))
        rot[:, 0] = np.asarray(geometry.matrix_to_rot6d(root))
        joints = body.body_in_world(jnp.asarray(rot), jnp.asarray(offsets), jnp.asarray(sparse))
        return rot, np.asarray(joints)
