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
from mmar.geometry_np import body_in_world, matrix_to_rot6d, rot6d_to_matrix
from mmar.models import body
from mmar.skeleton import SPARSE_DIM


_CHUNK = 4096


@jax.jit
def _frame_features(sparse, facing_axis_onehot):
    """Per-frame part of the features: head height, wrists relative to the head and all three
    orientations, in the heading frame; plus the inverse heading rotation."""
    head = body.sparse_rotations(sparse)[..., 0, :, :]
    f = jnp.einsum("tab,b->ta", head, facing_axis_onehot)
    yaw = jnp.arctan2(f[..., 0], f[..., 2])
    H = geometry.euler_to_matrix(jnp.stack([-yaw, 0 * yaw, 0 * yaw], -1), "YXZ")
    pos = body.sparse_positions(sparse)
    rel = jnp.einsum("tab,tjb->tja", H, pos[:, 1:] - pos[:, :1])
    canon = jnp.einsum("tab,tjbc->tjac", H, body.sparse_rotations(sparse))
    per_frame = jnp.concatenate(
        [pos[:, 0, 1:2], rel.reshape(-1, 6), geometry.matrix_to_rot6d(canon).reshape(-1, 18)], -1)
    return per_frame, jnp.swapaxes(H, -1, -2)


def lookup_features(sparse_clips, facing_axis: int, pos_weight: float = 3.0, vel_frames: int = 5):
    """Heading-invariant features of clips ``[(T_i, 54)]`` -> ``[(T_i, D)]`` and the inverse
    heading rotations ``[(T_i, 3, 3)]``. Frames are processed in fixed-size chunks, so any
    number of clip lengths shares one compiled function."""
    for s in sparse_clips:
        if s.ndim != 2 or s.shape[-1] != SPARSE_DIM:
            raise ShapeError(f"sparse input must be (T, {SPARSE_DIM}), got {tuple(s.shape)}")
    lengths = [len(s) for s in sparse_clips]
    allf = np.concatenate([np.asarray(s, np.float32) for s in sparse_clips])
    N = len(allf)
    pad = (-N) % _CHUNK
    allf = np.concatenate([allf, np.tile(allf[-1:], (pad, 1))]) if pad else allf
    onehot = jnp.eye(3, dtype=jnp.float32)[facing_axis]
    feats, hts = [], []
    for i in range(0, len(allf), _CHUNK):
        f, h = _frame_features(allf[i:i + _CHUNK], onehot)
        feats.append(np.asarray(f))
        hts.append(np.asarray(h))
    feats, hts = np.concatenate(feats)[:N], np.concatenate(hts)[:N]
    out_f, out_h, start = [], [], 0
    for T in lengths:
        f = feats[start:start + T].copy()
        rel = f[:, 1:7]
        prev = np.concatenate([np.repeat(rel[:1], vel_frames, 0), rel[:-vel_frames]], 0)[:T]
        f[:, :7] *= pos_weight
        out_f.append(np.concatenate([f, pos_weight * (rel - prev)], -1))
        out_h.append(hts[start:start + T])
        start += T
    return out_f, out_h


@dataclasses.dataclass
class NearestNeighbor:
    """``fit`` on training clips (sparse + local 6D rotations), ``predict`` per clip."""

    facing_axis: int = 2
    pos_weight: float = 3.0
    vel_frames: int = 5
    stride: int = 1
    chunk: int = 2048

    def fit(self, sparse_list, rot6d_list) -> "NearestNeighbor":
        feats, hts = lookup_features(list(sparse_list), self.facing_axis, self.pos_weight, self.vel_frames)
        sl = slice(1, None, self.stride)  # frame 0 has no velocity (first-frame rule)
        rot = np.concatenate([np.asarray(r)[sl] for r in rot6d_list]).astype(np.float32)
        Ht = np.concatenate([h[sl] for h in hts])
        # store the root orientation in the heading frame (H R_root)
        root = rot6d_to_matrix(rot[:, 0])
        rot[:, 0] = matrix_to_rot6d(np.swapaxes(Ht, -1, -2) @ root)
        self.features = jnp.asarray(np.concatenate([f[sl] for f in feats]), jnp.float32)
        self.rot6d = rot
        self._sqnorm = jnp.sum(self.features**2, -1)
        self._search = jax.jit(self._search_impl)
        return self

    def _search_impl(self, q):
        d = self._sqnorm[None, :] - 2.0 * q @ self.features.T
        return jnp.argmin(d, -1)

    def predict(self, sparse: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local 6D rotations ``(T, 22, 6)`` and world joints ``(T, 22, 3)`` for ``sparse (T, 54)``."""
        (f,), (Ht,) = lookup_features([np.asarray(sparse)], self.facing_axis, self.pos_weight, self.vel_frames)
        T = f.shape[0]
        pad = (-T) % self.chunk
        fq = jnp.pad(f, ((0, pad), (0, 0)))
        idx = np.concatenate([np.asarray(self._search(fq[i:i + self.chunk]))
                              for i in range(0, T + pad, self.chunk)])[:T]
        rot = self.rot6d[idx].copy()
        rot[:, 0] = matrix_to_rot6d(Ht @ rot6d_to_matrix(rot[:, 0]))
        return rot, body_in_world(rot, offsets, sparse)

    def predict_clips(self, clips) -> dict:
        """:meth:`predict` of every clip of ``{name: {"sparse", "offsets", "fps"}}``, with the
        queries of all clips searched together (the same result; one clip at a time pads each to
        a whole search chunk). Returns ``{name: {"rot6d", "joints", "fps"}}``."""
        names = list(clips)
        if not names:
            return {}
        feats, hts = lookup_features([np.asarray(clips[n]["sparse"]) for n in names], self.facing_axis,
                                     self.pos_weight, self.vel_frames)
        F = np.concatenate(feats)
        pad = (-len(F)) % self.chunk
        Fq = jnp.pad(jnp.asarray(F, jnp.float32), ((0, pad), (0, 0)))
        idx = np.concatenate([np.asarray(self._search(Fq[i:i + self.chunk])) for i in range(0, len(Fq), self.chunk)])
        out, start = {}, 0
        for n, f, Ht in zip(names, feats, hts):
            a = clips[n]
            rot = self.rot6d[idx[start:start + len(f)]].copy()
            start += len(f)
            rot[:, 0] = matrix_to_rot6d(Ht @ rot6d_to_matrix(rot[:, 0]))
            out[n] = {"rot6d": rot, "joints": body_in_world(rot, a["offsets"], a["sparse"]), "fps": a["fps"]}
        return out
