"""One clip type for every source (BVH, AMASS, HumanML3D, KIT-ML), retargeting to SMPL-22,
and the arrays of the ``mmar convert`` layout.

A :class:`Clip` holds local joint rotations on its own skeleton, the root translation in
metres (Y up, see ``docs/design.md``), the frame rate, labels and captions. Importers produce
clips on the source skeleton; :meth:`Clip.retarget` maps them to SMPL-22 with a joint-name map
that is plain data (:data:`JOINT_MAPS`), so a user can register a new skeleton, and expresses
rotations from the canonical T-pose (:func:`mmar.data.bvh.rest_alignment`).

The joint maps, ``SPARSE_SLICES`` and the npz reader / writer (``save_arrays``,
``load_arrays``) live in the numpy-only :mod:`mmar.data.arrays` and are re-exported here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmar import geometry
# numpy-only pieces live in mmar.data.arrays (importable without JAX); re-exported here
from mmar.data.arrays import (  # noqa: F401
    JOINT_MAPS,
    JointSpec,
    check_fps,
    guess_joint_map,
    load_arrays,
    register_joint_map,
    save_arrays,
)
# importing mmar.data.bvh also registers its joint maps (CMU ASF / BVH and Mixamo names)
from mmar.data.bvh import REST_POSES, register_rest_pose, rest_alignment  # noqa: F401
from mmar.errors import DataFormatError, ShapeError, few
from mmar.skeleton import NUM_JOINTS, SMPL22_NAMES, SMPL22_PARENTS, SPARSE_JOINTS, SPARSE_SLICES  # noqa: F401


@dataclasses.dataclass(frozen=True)
class Skeleton:
    """Joint names, parent indices (parents precede children) and rest offsets in metres."""

    names: tuple[str, ...]
    parents: tuple[int, ...]
    offsets: np.ndarray  # (J, 3)

    def __post_init__(self):
        offsets = np.asarray(self.offsets, np.float32)
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "parents", tuple(int(p) for p in self.parents))
        J = len(self.names)
        if len(self.parents) != J or offsets.shape != (J, 3):
            raise ShapeError(
                f"skeleton with {J} names needs {J} parents and offsets of shape ({J}, 3), "
                f"got {len(self.parents)} parents and offsets {offsets.shape}"
            )
        if self.parents[0] != -1 or any(not 0 <= p < j for j, p in enumerate(self.parents) if j):
            raise ShapeError("skeleton parents must list every parent before its children, root -1")

    @property
    def num_joints(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"joint {name!r} not in skeleton {self.names}") from None


class MissingJointsError(DataFormatError, KeyError):
    """A joint map needs joints that the skeleton lacks; the message names them, the map and the
    file."""

    def __init__(self, map_name: str, missing: Sequence[str], source: str | None = None):
        self.map_name = map_name
        self.missing = tuple(missing)
        super().__init__(f"joint map {map_name!r} needs joint{'s' if len(missing) > 1 else ''} the skeleton lacks: "
                         f"{few(missing, 10)}", source or None)

    def __str__(self) -> str:  # KeyError would show the repr
        return Exception.__str__(self)


def smpl22_skeleton(offsets: np.ndarray) -> Skeleton:
    return Skeleton(SMPL22_NAMES, SMPL22_PARENTS, offsets)


@dataclasses.dataclass
class Clip:
    """A motion clip on some skeleton.

    Attributes:
      name: unique clip id (e.g. ``dataset-1_bow_active_001``).
      skeleton: the clip's skeleton.
      local_rot: ``(T, J, 3, 3)`` float32 local rotations.
      root_pos: ``(T, 3)`` world position of joint 0 in metres.
      fps: frames per second.
      local_trans: optional ``(T, J, 3)`` per-frame joint translations (BVH position
        channels) that replace the rest offsets; ``None`` uses ``skeleton.offsets``.
      labels: free-form labels (``{"content": "walk", "style": "happy", ...}``).
      texts: captions.
      source: where the clip came from (path, archive member).
    """

    name: str
    skeleton: Skeleton
    local_rot: np.ndarray
    root_pos: np.ndarray
    fps: float
    local_trans: np.ndarray | None = None
    labels: dict[str, Any] = dataclasses.field(default_factory=dict)
    texts: list[str] = dataclasses.field(default_factory=list)
    source: str = ""

    def __post_init__(self):
        self.local_rot = np.asarray(self.local_rot, np.float32)
        self.root_pos = np.asarray(self.root_pos, np.float32)
        T, J = self.local_rot.shape[:2] if self.local_rot.ndim == 4 else (None, None)
        if self.local_rot.ndim != 4 or self.local_rot.shape[1:] != (self.skeleton.num_joints, 3, 3):
            raise ShapeError(
                f"clip {self.name}: local_rot must be (T, {self.skeleton.num_joints}, 3, 3), "
                f"got {self.local_rot.shape}"
            )
        if self.root_pos.shape != (T, 3):
            raise ShapeError(f"clip {self.name}: root_pos must be ({T}, 3), got {self.root_pos.shape}")
        if self.local_trans is not None:
            self.local_trans = np.asarray(self.local_trans, np.float32)
            if self.local_trans.shape != (T, J, 3):
                raise ShapeError(
                    f"clip {self.name}: local_trans must be ({T}, {J}, 3), got {self.local_trans.shape}"
                )
        if not (0 < self.fps < float("inf")):
            raise ShapeError(f"clip {self.name}: fps must be positive and finite, got {self.fps}")

    @property
    def num_frames(self) -> int:
        return int(self.local_rot.shape[0])

    def _offsets(self) -> np.ndarray:
        return self.skeleton.offsets if self.local_trans is None else self.local_trans

    def global_transforms(self) -> tuple[np.ndarray, np.ndarray]:
        """``(global_rot (T, J, 3, 3), global_pos (T, J, 3))`` by forward kinematics."""
        g_rot, g_pos = _fk(self.local_rot, self._offsets(), self.skeleton.parents, self.root_pos)
        return np.asarray(g_rot), np.asarray(g_pos)

    def joints(self) -> np.ndarray:
        return self.global_transforms()[1]

    def retarget(self, joint_map: str | Sequence[JointSpec] | None = None, canonical: bool | str = "auto") -> "Clip":
        """Map onto SMPL-22 by joint names. Global positions of mapped joints are kept, and their
        global rotations re-expressed from the canonical T-pose (docs/design.md, "Canonical rest
        pose"; :func:`mmar.data.bvh.rest_alignment`: ``canonical="auto"`` keeps the file's joint
        frames, with a warning, when the skeleton's rest pose is not recognised, ``True`` raises
        then, ``False`` always keeps them); local rotations are re-derived on the SMPL-22 tree;
        each offset is the median over frames of the bone vector in its parent's frame (exact
        for the constant bone lengths of a mocap skeleton). Runs in numpy
        (:meth:`mmar.data.bvh.BvhData.retarget`, the same code the import workers use).

        A joint the map needs but the skeleton lacks raises :class:`MissingJointsError` (a
        :class:`~mmar.errors.DataFormatError` and a ``KeyError``) naming every missing joint, the
        map and the clip's source."""
        if isinstance(joint_map, str):
            map_name = joint_map
            mapping = JOINT_MAPS[joint_map]
        elif joint_map is None:
            map_name = guess_joint_map(self.skeleton.names)
            mapping = JOINT_MAPS[map_name]
        else:
            map_name = "custom"
            mapping = tuple(joint_map)
        if len(mapping) != NUM_JOINTS:
            raise ShapeError(f"joint map needs {NUM_JOINTS} entries, got {len(mapping)}")
        from mmar.data.bvh import BvhData

        have = set(self.skeleton.names)
        missing = [n for spec in mapping for n in (spec[1:] if isinstance(spec, tuple) else (spec,))
                   if n not in have]
        if missing:  # name every missing joint before any work
            raise MissingJointsError(map_name, sorted(set(missing), key=missing.index), self.source or self.name)
        src = BvhData(names=self.skeleton.names, parents=self.skeleton.parents,
                      offsets=self.skeleton.offsets, channels=(), local_rot=self.local_rot,
                      root_pos=self.root_pos, local_trans=self.local_trans, fps=self.fps,
                      frame_time=1.0 / self.fps)
        # one implementation, numpy
        out = src.retarget(mapping, SMPL22_NAMES, SMPL22_PARENTS, canonical=canonical)
        local, offsets = out.local_rot, out.offsets
        return Clip(
            name=self.name,
            skeleton=smpl22_skeleton(offsets),
            local_rot=local,
            root_pos=out.root_pos,
            fps=self.fps,
            labels=dict(self.labels),
            texts=list(self.texts),
            source=self.source,
        )

    def resample(self, fps: float) -> "Clip":
        """Slerp rotations and linearly interpolate translations to a new frame rate."""
        return resample_clips([self], fps)[0]

    def slice(self, start: int, stop: int) -> "Clip":
        trans = None if self.local_trans is None else self.local_trans[start:stop]
        return dataclasses.replace(
            self, local_rot=self.local_rot[start:stop], root_pos=self.root_pos[start:stop],
            local_trans=trans,
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The ``mmar convert`` arrays of a SMPL-22 clip (see docs/design.md)."""
        return clips_to_arrays([self])[0]


def _fk(local_rot, offsets, parents, root_pos):
    """FK of one clip, padded to a multiple of 256 frames so clip lengths share compilations."""
    T = local_rot.shape[0]
    pad = (-T) % 256
    local_rot = np.asarray(local_rot, np.float32)
    offsets = np.asarray(offsets, np.float32)
    root_pos = np.asarray(root_pos, np.float32)
    if pad:
        local_rot = np.concatenate([local_rot, np.broadcast_to(np.eye(3, dtype=np.float32),
                                                               (pad,) + local_rot.shape[1:])])
        root_pos = np.concatenate([root_pos, np.zeros((pad, 3), np.float32)])
        if offsets.ndim == 3:
            offsets = np.concatenate([offsets, np.zeros((pad,) + offsets.shape[1:], np.float32)])
    g_rot, g_pos = _fk_compiled(tuple(parents))(local_rot, offsets, root_pos)
    return np.asarray(g_rot)[:T], np.asarray(g_pos)[:T]


_FK_CACHE: dict[tuple[int, ...], Any] = {}


def _fk_compiled(parents: tuple[int, ...]):
    fn = _FK_CACHE.get(parents)
    if fn is None:
        fn = jax.jit(lambda r, o, p: geometry.forward_kinematics(r, o, parents, p))
        _FK_CACHE[parents] = fn
    return fn


def sparse_features(global_rot, global_pos, joints: Sequence[int] = SPARSE_JOINTS):
    """The 54-number AGRoL input per frame from SMPL-22 global rotations and positions.

    Blocks, each over ``joints`` (head, left wrist, right wrist): global 6D (18), rotation
    velocity ``R_{t-1}^T R_t`` in 6D (18), global position (9), position difference
    ``p_t - p_{t-1}`` (9). Frame 0 gets identity / zero velocity (the first-frame rule).
    Works on ``(T, 22, 3, 3)`` / ``(T, 22, 3)`` or with extra leading batch axes.
    """
    global_rot = jnp.asarray(global_rot)
    global_pos = jnp.asarray(global_pos)
    j = jnp.asarray(joints)
    R = global_rot[..., j, :, :]
    p = global_pos[..., j, :]
    R_prev = jnp.concatenate([R[..., :1, :, :, :], R[..., :-1, :, :, :]], -4)
    p_prev = jnp.concatenate([p[..., :1, :, :], p[..., :-1, :, :]], -3)
    vel = jnp.swapaxes(R_prev, -1, -2) @ R
    lead = R.shape[:-3]
    return jnp.concatenate(
        [
            geometry.matrix_to_rot6d(R).reshape(lead + (-1,)),
            geometry.matrix_to_rot6d(vel).reshape(lead + (-1,)),
            p.reshape(lead + (-1,)),
            (p - p_prev).reshape(lead + (-1,)),
        ],
        -1,
    )


_FK_CHUNK = 2048


# --------------------------------------------------------------------------
# computing the arrays of many clips at once
# --------------------------------------------------------------------------

_FK_FN = None


def _fk_chunk_fn():
    """One jitted function over a fixed chunk of frames (a single compilation, whatever the
    clip lengths): global rotations and positions, and local 6D rotations."""
    global _FK_FN
    if _FK_FN is None:
        def fn(local_rot, offsets, root):
            g_rot, g_pos = geometry.forward_kinematics(local_rot, offsets, SMPL22_PARENTS, root)
            sp = np.asarray(SPARSE_JOINTS)
            return g_pos, geometry.matrix_to_rot6d(local_rot), g_rot[:, sp], g_pos[:, sp]

        _FK_FN = jax.jit(fn)
    return _FK_FN


def clips_to_arrays(clips: Sequence[Any], progress: bool = False) -> list[dict[str, np.ndarray]]:
    """The ``mmar convert`` arrays (``joints``, ``rot6d``, ``root``, ``sparse``, ``fps``,
    ``offsets``) of many SMPL-22 clips, equal to ``[c.to_arrays() for c in clips]`` but
    computed on concatenated frames in fixed-size chunks, so that clips of different lengths
    share one compiled function instead of compiling once per length."""
    if not clips:
        return []
    for c in clips:
        if c.skeleton.names != SMPL22_NAMES:
            raise ShapeError(f"clip {c.name}: retarget to SMPL-22 before exporting arrays")
        if c.num_frames < 1:
            raise ShapeError(f"clip {c.name}: has no frames")
    lengths = np.array([c.num_frames for c in clips], np.int64)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    N = int(bounds[-1])
    fn = _fk_chunk_fn()
    joints = np.empty((N, NUM_JOINTS, 3), np.float32)
    rot6d = np.empty((N, NUM_JOINTS, 6), np.float32)
    s_rot = np.empty((N, len(SPARSE_JOINTS), 3, 3), np.float32)
    s_pos = np.empty((N, len(SPARSE_JOINTS), 3), np.float32)
    # Fill fixed-size chunks; a clip may straddle chunks (FK is per frame).
    ci, fi = 0, 0  # current clip and frame within it
    starts = range(0, N, _FK_CHUNK)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="forward kinematics", unit="chunk")
    for s in starts:
        n = min(_FK_CHUNK, N - s)
        rot = np.tile(np.eye(3, dtype=np.float32), (_FK_CHUNK, NUM_JOINTS, 1, 1))
        off = np.zeros((_FK_CHUNK, NUM_JOINTS, 3), np.float32)
        root = np.zeros((_FK_CHUNK, 3), np.float32)
        k = 0
        while k < n:
            c = clips[ci]
            m = min(n - k, c.num_frames - fi)
            rot[k:k + m] = c.local_rot[fi:fi + m]
            root[k:k + m] = c.root_pos[fi:fi + m]
            off[k:k + m] = c.skeleton.offsets if c.local_trans is None else c.local_trans[fi:fi + m]
            k += m
            fi += m
            if fi == c.num_frames:
                ci, fi = ci + 1, 0
        out = fn(rot, off, root)
        joints[s:s + n], rot6d[s:s + n], s_rot[s:s + n], s_pos[s:s + n] = (
            np.asarray(o)[:n] for o in out
        )
    sparse = np.asarray(sparse_features(s_rot, s_pos, joints=tuple(range(len(SPARSE_JOINTS)))),
                        np.float32).copy()
    # First-frame rule at every clip start: identity rotation velocity, zero position step.
    first = bounds[:-1]
    ident6 = np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), len(SPARSE_JOINTS))
    sparse[first, SPARSE_SLICES["rotvel6d"]] = ident6
    sparse[first, SPARSE_SLICES["posdiff"]] = 0.0
    out = []
    for i, c in enumerate(clips):
        a, b = bounds[i], bounds[i + 1]
        out.append({
            "joints": joints[a:b],
            "rot6d": rot6d[a:b],
            "root": c.root_pos.astype(np.float32),
            "sparse": sparse[a:b],
            "fps": np.asarray(c.fps, np.float32),
            "offsets": c.skeleton.offsets.astype(np.float32),
        })
    return out


_SLERP_FN = None


def _slerp_chunk_fn():
    global _SLERP_FN
    if _SLERP_FN is None:
        def fn(r0, r1, w):
            q0 = geometry.matrix_to_quaternion(r0)
            q1 = geometry.matrix_to_quaternion(r1)
            return geometry.quaternion_to_matrix(geometry.slerp(q0, q1, w[:, None, None]))

        _SLERP_FN = jax.jit(fn)
    return _SLERP_FN


def resample_clips(clips: Sequence[Any], fps: float) -> list[Any]:
    """``[c.resample(fps) for c in clips]`` (slerp of rotations, linear translations, the same
    sample times as :func:`mmar.geometry.resample_rotations`) computed on concatenated frames
    in fixed-size chunks: one compilation for any number of clip lengths. ``fps`` must be a
    finite rate within :data:`mmar.data.arrays.FPS_RANGE` (:class:`ConfigError` otherwise)."""
    fps = check_fps(fps, "fps")
    todo = [i for i, c in enumerate(clips) if abs(c.fps - fps) >= 1e-6]
    out = list(clips)
    if not todo:
        return out
    i0s, i1s, ws, bounds = [], [], [], [0]
    base = 0
    for i in todo:
        c = clips[i]
        T = c.num_frames
        n_out = geometry.resample_length(T, c.fps, fps)
        t = np.arange(n_out, dtype=np.float32) * np.float32(c.fps / fps)
        i0 = np.clip(np.floor(t + np.float32(1e-5)).astype(np.int64), 0, T - 1)
        i1 = np.minimum(i0 + 1, T - 1)
        w = np.clip(t - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
        i0s.append(base + i0)
        i1s.append(base + i1)
        ws.append(w)
        base += T
        bounds.append(bounds[-1] + n_out)
    rot = np.concatenate([clips[i].local_rot for i in todo])
    i0, i1, w = np.concatenate(i0s), np.concatenate(i1s), np.concatenate(ws)
    N, J = len(w), rot.shape[1]
    new_rot = np.empty((N, J, 3, 3), np.float32)
    fn = _slerp_chunk_fn()
    for s in range(0, N, _FK_CHUNK):
        n = min(_FK_CHUNK, N - s)
        a = np.tile(np.eye(3, dtype=np.float32), (_FK_CHUNK, J, 1, 1))
        b = a.copy()
        ww = np.zeros(_FK_CHUNK, np.float32)
        a[:n], b[:n], ww[:n] = rot[i0[s:s + n]], rot[i1[s:s + n]], w[s:s + n]
        new_rot[s:s + n] = np.asarray(fn(a, b, ww))[:n]

    def lerp(x, lo, hi, wk):
        wk = wk.reshape((-1,) + (1,) * (x.ndim - 1))
        return (x[lo] * (1 - wk) + x[hi] * wk).astype(np.float32)

    for k, i in enumerate(todo):
        c = clips[i]
        lo, hi = bounds[k], bounds[k + 1]
        off = int(i0s[k][0]) if len(i0s[k]) else 0
        l0, l1 = i0s[k] - off, i1s[k] - off
        trans = None if c.local_trans is None else lerp(c.local_trans, l0, l1, ws[k])
        out[i] = dataclasses.replace(c, local_rot=new_rot[lo:hi], root_pos=lerp(c.root_pos, l0, l1, ws[k]),
                                     local_trans=trans, fps=fps)
    return out
