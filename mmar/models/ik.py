"""Optional L-BFGS inverse kinematics of Mem-MLP (supplementary, "Inverse Kinematics").

The rotation head's local rotations are refined so that forward kinematics matches the
(more accurate) joint positions of the position head. Per frame we minimise::

    E(r) = sum_j || place(FK(r))_j - target_j ||^2  +  reg * || r - r_init ||^2

over the 22 local 6D rotations ``r`` (132 numbers, root orientation included), where
``place`` translates the FK body (root at the origin) so its head lands on the tracked head
(``docs/design.md``), i.e. the root translation is not a free variable. The optimiser is
``optax.lbfgs`` (zoom line search, memory 10) run for a fixed number of iterations (15, as in
the paper) inside ``lax.fori_loop``; every frame is solved independently (``vmap``).
The result is re-orthonormalised (6D -> matrix -> 6D).

``smooth > 0`` (not in the paper) couples the frames of a sequence: they are solved in order
(``lax.scan`` over time, causal, as a stream would), each from the network's rotations as
before, with ``smooth * sum_j || pose(r)_j - pose(r_prev)_j ||^2`` added, ``pose`` being the FK
joints relative to the head (the body's shape, not where it stands) and ``r_prev`` the previous
frame's solution. On the Bandai test split it trades a little position error for less jitter;
it does not remove the jitter IK adds on a body of other proportions (docs/results.md, "IK
out of distribution: coupling the frames"). Pulling the rotations themselves toward the
previous solution, or starting from it, lets the bones' twist (which no joint position sees)
drift away from the network's, and was dropped for that.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from mmar import geometry
from mmar.errors import ShapeError
from mmar.models.body import fk_rot6d, place_at_head
from mmar.skeleton import HEAD, SMPL22_PARENTS

Array = jax.Array


def ik_objective(
    rot6d: Array,
    rot6d_init: Array,
    target: Array,
    head_pos: Array,
    offsets: Array,
    parents: Sequence[int] = SMPL22_PARENTS,
    reg: float = 1e-3,
    head_index: int = HEAD,
) -> Array:
    """The IK energy of one frame (``rot6d (J, 6)``, ``target (J, 3)``, ``head_pos (3,)``)."""
    _, joints = fk_rot6d(rot6d, offsets, parents)
    joints = place_at_head(joints, head_pos, head_index)
    pos_err = jnp.sum((joints - target) ** 2)
    return pos_err + reg * jnp.sum((rot6d - rot6d_init) ** 2)


def ik_refine(
    rot6d_init: Array,
    target: Array,
    offsets: Array,
    head_pos: Array | None = None,
    parents: Sequence[int] = SMPL22_PARENTS,
    iters: int = 15,
    reg: float = 1e-3,
    memory_size: int = 10,
    head_index: int = HEAD,
    smooth: float = 0.0,
) -> Array:
    """Refine local rotations toward target joint positions with L-BFGS.

    Args:
      rot6d_init: ``(..., J, 6)`` initial local rotations (the rotation head).
      target: ``(..., J, 3)`` target global joint positions (the position head's ``pos``).
      offsets: ``(J, 3)`` skeleton offsets, or offsets broadcastable to ``(..., J, 3)`` (one
        skeleton per clip of a batch, e.g. ``(B, 1, J, 3)`` for ``(B, T, J, 6)`` rotations).
      head_pos: ``(..., 3)`` tracked head position used to place the body; defaults to the
        target's head joint.
      iters: L-BFGS iterations (static; 15 in the paper).
      reg: weight of the pull toward ``rot6d_init``.
      smooth: 0 solves every frame independently (the paper). Above 0 the axis before the
        joints is time (``(..., T, J, 6)``): frames are solved in order and each frame's
        head-relative joints are pulled toward the previous solution's with this weight.

    Returns:
      ``(..., J, 6)`` refined, orthonormal 6D rotations. Jit-able.
    """
    rot6d_init = jnp.asarray(rot6d_init)
    target = jnp.asarray(target, rot6d_init.dtype)
    if rot6d_init.shape[-1] != 6 or target.shape[-1] != 3 or rot6d_init.shape[:-1] != target.shape[:-1]:
        raise ShapeError(
            f"ik_refine: rot6d (..., J, 6) and target (..., J, 3) must agree, got "
            f"{tuple(rot6d_init.shape)} and {tuple(target.shape)}"
        )
    if head_pos is None:
        head_pos = target[..., head_index, :]
    head_pos = jnp.broadcast_to(jnp.asarray(head_pos, rot6d_init.dtype), target.shape[:-2] + (3,))
    offsets = jnp.asarray(offsets, rot6d_init.dtype)
    parents = tuple(int(p) for p in parents)
    batch = rot6d_init.shape[:-2]
    J = rot6d_init.shape[-2]
    try:
        offsets = jnp.broadcast_to(offsets, batch + (J, 3))
    except ValueError as e:
        raise ShapeError(f"ik_refine: offsets {tuple(offsets.shape)} do not broadcast to {batch + (J, 3)}") from e
    if smooth:
        if rot6d_init.ndim < 3:
            raise ShapeError(f"ik_refine: smooth > 0 needs a time axis, (..., T, J, 6); got {tuple(rot6d_init.shape)}")
        T = rot6d_init.shape[-3]
        seq = _solve_sequence(
            rot6d_init.reshape((-1, T, J, 6)),
            target.reshape((-1, T, J, 3)),
            head_pos.reshape((-1, T, 3)),
            offsets.reshape((-1, T, J, 3)),
            jnp.asarray(reg, rot6d_init.dtype),
            jnp.asarray(smooth, rot6d_init.dtype),
            parents=parents,
            iters=int(iters),
            memory_size=int(memory_size),
            head_index=int(head_index),
        )
        return seq.reshape(batch + (J, 6))
    flat = _solve_frames(
        rot6d_init.reshape((-1, J, 6)),
        target.reshape((-1, J, 3)),
        head_pos.reshape((-1, 3)),
        offsets.reshape((-1, J, 3)),
        jnp.asarray(reg, rot6d_init.dtype),
        parents=parents,
        iters=int(iters),
        memory_size=int(memory_size),
        head_index=int(head_index),
    )
    out = geometry.matrix_to_rot6d(geometry.rot6d_to_matrix(flat))
    return out.reshape(batch + (J, 6))


def _lbfgs(fun, start, iters, memory_size):
    """``iters`` L-BFGS steps on ``fun`` from ``start`` (fixed trip count)."""
    opt = optax.lbfgs(memory_size=memory_size)
    value_and_grad = optax.value_and_grad_from_state(fun)

    def step(_, carry):
        r, state = carry
        value, grad = value_and_grad(r, state=state)
        updates, state = opt.update(grad, state, r, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(r, updates), state

    r, _ = jax.lax.fori_loop(0, iters, step, (start, opt.init(start)))
    return r


@functools.partial(jax.jit, static_argnames=("parents", "iters", "memory_size", "head_index"))
def _solve_sequence(r0s, targets, heads, offsets, reg, smooth, *, parents, iters, memory_size, head_index):
    """``(N, T, J, 6)``: frames in order (``lax.scan``), each from its init with its head-relative
    joints pulled toward the previous solution's; the N sequences in parallel (vmap). The first
    frame's "previous" is its own init."""

    def pose(r, off):  # joints relative to the head: the body's shape, not where it stands
        _, j = fk_rot6d(r, off, parents)
        return j - j[head_index]

    def solve(r0, tgt, hp, off, prev):
        prev_pose = pose(prev, off)

        def fun(r):
            return (ik_objective(r, r0, tgt, hp, off, parents, reg, head_index)
                    + smooth * jnp.sum((pose(r, off) - prev_pose) ** 2))

        r = _lbfgs(fun, r0, iters, memory_size)
        return geometry.matrix_to_rot6d(geometry.rot6d_to_matrix(r))

    def frame(prev, xs):
        r = jax.vmap(solve)(*xs, prev)
        return r, r

    xs = tuple(jnp.swapaxes(a, 0, 1) for a in (r0s, targets, heads, offsets))  # time first
    _, rs = jax.lax.scan(frame, r0s[:, 0], xs)
    return jnp.swapaxes(rs, 0, 1)


@functools.partial(jax.jit, static_argnames=("parents", "iters", "memory_size", "head_index"))
def _solve_frames(r0s, targets, heads, offsets, reg, *, parents, iters, memory_size, head_index):
    """L-BFGS on every frame of ``(N, J, 6)`` (offsets ``(N, J, 3)``) independently (vmap),
    fixed trip count."""

    def solve(r0, tgt, hp, off):
        def fun(r):
            return ik_objective(r, r0, tgt, hp, off, parents, reg, head_index)

        return _lbfgs(fun, r0, iters, memory_size)

    return jax.vmap(solve)(r0s, targets, heads, offsets)
