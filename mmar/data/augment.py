"""Augmentation of sparse-to-full-body training batches: left-right mirroring and random yaw.

Both act on a batch of the training pipeline (:mod:`mmar.data.pipeline`) inside the jitted
training step, per sample, and keep every array consistent with the others: the 54 sparse
numbers, the local 6D rotations ``rot6d`` (root orientation global), world ``joints``,
``root``, ``head`` and the per-clip ``offsets``.

**Mirroring** reflects the world in the plane ``x = 0`` (``M = diag(-1, 1, 1)``; +Y is up, +Z
the canonical facing axis, so a mirrored person still faces the same way) and swaps left and
right. Rotations are expressed relative to the canonical T-pose (:mod:`mmar.skeleton`: every
joint's rest orientation is the identity and the rest pose is left-right symmetric), so a
global rotation ``R`` becomes ``M R M``, and so does every local rotation
(``(M A M)^T (M B M) = M A^T B M``) and every rotation velocity ``R_{t-1}^T R_t``; positions,
position differences and bone offsets become ``M p``; joint ``left_x`` takes the mirrored
values of ``right_x`` and the two hand trackers swap. In the 6D layout (the first two matrix
columns) ``M R M`` is a sign flip, exact and cheap: column 0 ``(a, b, c) -> (a, -b, -c)``,
column 1 ``(a, b, c) -> (-a, b, c)``.

**Yaw** turns the whole window about the vertical axis through the world origin by an angle
drawn uniformly in ``[0, 2 pi)``: global rotations ``R -> Y R`` (the root's local rotation and
the trackers'), positions and differences ``p -> Y p``; rotation velocities and the other local
rotations do not change. Models in the heading frame (``model.frame="heading"``) are invariant
to it by construction; it is the augmentation for the world-frame layout.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mmar.skeleton import (
    NUM_JOINTS,
    SMPL22_NAMES,
    SPARSE_DIM,
    SPARSE_POS,
    SPARSE_POSVEL,
    SPARSE_ROT6D,
    SPARSE_ROTVEL,
)

__all__ = ["MIRROR_JOINTS", "mirror_batch", "yaw_batch", "augment_batch"]


def _mirror_perm(names) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}
    out = []
    for n in names:
        if n.startswith("left_"):
            out.append(index["right_" + n[5:]])
        elif n.startswith("right_"):
            out.append(index["left_" + n[6:]])
        else:
            out.append(index[n])
    return np.asarray(out, np.int32)


#: joint ``j`` of a mirrored pose takes the (reflected) values of joint ``MIRROR_JOINTS[j]``
MIRROR_JOINTS: np.ndarray = _mirror_perm(SMPL22_NAMES)
_TRACKERS = np.asarray([0, 2, 1], np.int32)  # head, left wrist, right wrist -> swap the hands
_SIGN6 = np.asarray([1, -1, -1, -1, 1, 1], np.float32)  # M R M on the two 6D columns
_SIGN3 = np.asarray([-1, 1, 1], np.float32)  # M p


def _sparse_perm_and_sign() -> tuple[np.ndarray, np.ndarray]:
    """Index and sign vectors with ``mirrored = sparse[..., perm] * sign``."""
    perm = np.arange(SPARSE_DIM)
    sign = np.ones(SPARSE_DIM, np.float32)
    for sl, width, s in ((SPARSE_ROT6D, 6, _SIGN6), (SPARSE_ROTVEL, 6, _SIGN6),
                         (SPARSE_POS, 3, _SIGN3), (SPARSE_POSVEL, 3, _SIGN3)):
        for k, src in enumerate(_TRACKERS):
            dst = slice(sl.start + k * width, sl.start + (k + 1) * width)
            perm[dst] = np.arange(sl.start + src * width, sl.start + (src + 1) * width)
            sign[dst] = s
    return perm, sign


_SPARSE_PERM, _SPARSE_SIGN = _sparse_perm_and_sign()


def _mirror_arrays(batch: dict) -> dict:
    out = {}
    for k, v in batch.items():
        if k == "sparse":
            out[k] = v[..., _SPARSE_PERM] * _SPARSE_SIGN
        elif k == "rot6d":
            out[k] = v[..., MIRROR_JOINTS, :] * _SIGN6
        elif k in ("joints", "offsets"):
            out[k] = v[..., MIRROR_JOINTS, :] * _SIGN3
        elif k in ("root", "head"):
            out[k] = v * _SIGN3
        else:
            out[k] = v
    return out


def _select(flags: jax.Array, new: dict, old: dict) -> dict:
    def pick(a, b):
        if not hasattr(a, "ndim") or a.ndim == 0 or a.shape[:1] != flags.shape:
            return b
        return jnp.where(flags.reshape(flags.shape + (1,) * (a.ndim - 1)), a, b)

    return {k: pick(new[k], old[k]) for k in old}


def mirror_batch(batch: dict, flags: jax.Array | None = None) -> dict:
    """Left-right mirror of the samples where ``flags (B,)`` is true (all when ``None``)."""
    batch = {k: (jnp.asarray(v) if k in _AUGMENTED else v) for k, v in batch.items()}
    mirrored = _mirror_arrays(batch)
    return mirrored if flags is None else _select(jnp.asarray(flags, bool), mirrored, batch)


_AUGMENTED = ("sparse", "rot6d", "joints", "offsets", "root", "head")


def _yaw_matrix(angle: jax.Array) -> jax.Array:
    c, s = jnp.cos(angle), jnp.sin(angle)
    z, o = jnp.zeros_like(c), jnp.ones_like(c)
    return jnp.stack([jnp.stack([c, z, s], -1), jnp.stack([z, o, z], -1), jnp.stack([-s, z, c], -1)], -2)


def _rotate(Y: jax.Array, v: jax.Array) -> jax.Array:
    """``Y (B, 3, 3)`` applied to ``v (B, ..., 3)``."""
    Yb = Y.reshape(Y.shape[:1] + (1,) * (v.ndim - 2) + (3, 3))
    return jnp.einsum("...ij,...j->...i", Yb, v)


def yaw_batch(batch: dict, angle: jax.Array) -> dict:
    """The batch turned about the vertical axis through the origin by ``angle (B,)`` radians."""
    Y = _yaw_matrix(jnp.asarray(angle, jnp.float32))
    out = dict(batch)
    if "sparse" in batch:
        sp = jnp.asarray(batch["sparse"])
        lead = sp.shape[:-1]
        rot = _rotate(Y, sp[..., SPARSE_ROT6D].reshape(lead + (6, 3))).reshape(lead + (18,))
        pos = _rotate(Y, sp[..., SPARSE_POS].reshape(lead + (3, 3))).reshape(lead + (9,))
        vel = _rotate(Y, sp[..., SPARSE_POSVEL].reshape(lead + (3, 3))).reshape(lead + (9,))
        out["sparse"] = jnp.concatenate([rot, sp[..., SPARSE_ROTVEL], pos, vel], -1)
    if "rot6d" in batch:
        r = jnp.asarray(batch["rot6d"])
        root = _rotate(Y, r[..., 0, :].reshape(r.shape[:-2] + (2, 3))).reshape(r.shape[:-2] + (6,))
        out["rot6d"] = jnp.concatenate([root[..., None, :], r[..., 1:, :]], -2)
    for k in ("joints", "root", "head"):
        if k in batch:
            out[k] = _rotate(Y, jnp.asarray(batch[k]))
    return out


def augment_batch(batch: dict, rng: jax.Array, *, mirror: float = 0.0, yaw: bool = False) -> dict:
    """Mirror each sample with probability ``mirror``, then turn each by a random yaw if
    ``yaw``; the identity (the batch as given) when neither is asked for."""
    if mirror <= 0.0 and not yaw:
        return batch
    k_mirror, k_yaw = jax.random.split(jax.random.fold_in(rng, 0x4D49))
    B = jnp.shape(batch["sparse"])[0]
    if mirror > 0.0:
        batch = mirror_batch(batch, jax.random.bernoulli(k_mirror, mirror, (B,)))
    if yaw:
        batch = yaw_batch(batch, jax.random.uniform(k_yaw, (B,), maxval=2 * np.pi))
    return batch


assert len(MIRROR_JOINTS) == NUM_JOINTS
