"""L-BFGS IK: reduces the position error of a perturbed pose, jit-able, batched."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar import geometry
from mmar.errors import ShapeError
from mmar.models.body import body_in_world
from mmar.models.ik import ik_objective, ik_refine


def _normal(seed, *shape):
    """Test data from numpy (cheaper than compiling eager jax.random ops per shape)."""
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


T = 3


def _pose_problem():
    offsets = _normal(100, 22, 3) * 0.15
    true_aa = _normal(101, T, 22, 3) * 0.3
    true6 = geometry.matrix_to_rot6d(geometry.axis_angle_to_matrix(true_aa))
    sparse = jnp.zeros((T, 54)).at[:, 36:39].set(_normal(102, T, 3))
    target = body_in_world(true6, offsets, sparse)
    noisy_aa = true_aa + _normal(103, *true_aa.shape) * 0.15
    init6 = geometry.matrix_to_rot6d(geometry.axis_angle_to_matrix(noisy_aa))
    return offsets, sparse, target, init6


def _mpjpe(rot6d, offsets, sparse, target):
    return float(jnp.mean(jnp.linalg.norm(body_in_world(rot6d, offsets, sparse) - target, axis=-1)))


def test_ik_reduces_position_error():
    offsets, sparse, target, init6 = _pose_problem()
    head = sparse[:, 36:39]
    out = ik_refine(init6, target, offsets, head_pos=head, iters=15)
    assert out.shape == init6.shape
    assert bool(jnp.all(jnp.isfinite(out)))
    before = _mpjpe(init6, offsets, sparse, target)
    after = _mpjpe(out, offsets, sparse, target)
    assert after < 0.5 * before, (before, after)
    # result is a valid rotation in 6D form
    m = geometry.rot6d_to_matrix(out)
    np.testing.assert_allclose(geometry.matrix_to_rot6d(m), out, atol=1e-5)
    # objective decreased for every frame
    e0 = jax.vmap(lambda r, t, h: ik_objective(r, r, t, h, offsets))(init6, target, head)
    e1 = jax.vmap(lambda r, r0, t, h: ik_objective(r, r0, t, h, offsets))(out, init6, target, head)
    assert bool(jnp.all(e1 < e0))


def test_ik_default_head_batch_dims_and_jit():
    offsets, sparse, target, init6 = _pose_problem()
    out = ik_refine(init6[None], target[None], offsets)  # same frame count: reuses the compile
    assert out.shape == (1, T, 22, 6)
    # the whole refinement traces and lowers under an outer jit
    lowered = jax.jit(lambda r, t, o: ik_refine(r, t, o)).lower(init6, target, offsets)
    assert "while" in lowered.as_text()
    # a pose that already matches stays put (up to the regulariser)
    exact = geometry.matrix_to_rot6d(geometry.rot6d_to_matrix(init6))
    tgt = body_in_world(exact, offsets, sparse)
    same = ik_refine(exact, tgt, offsets, head_pos=sparse[:, 36:39])
    np.testing.assert_allclose(same, exact, atol=1e-4)


def test_ik_takes_one_skeleton_per_clip():
    """Offsets broadcastable to the batch (one skeleton per clip, as the evaluation passes
    them) give each clip the solve it would get alone."""
    offsets, sparse, target, init6 = _pose_problem()
    offs = jnp.stack([offsets, offsets * 1.1])[:, None]  # (2, 1, 22, 3)
    both = ik_refine(jnp.stack([init6, init6]), jnp.stack([target, target]), offs, iters=3)
    alone = ik_refine(init6, target, offsets * 1.1, iters=3)
    np.testing.assert_allclose(both[1], alone, atol=1e-5)
    with pytest.raises(ShapeError, match="offsets"):
        ik_refine(init6, target, jnp.zeros((T + 1, 22, 3)))


def _unreachable_sequence(n=8):
    """A smooth motion whose targets come from a body with 1.4 times longer bones than the one
    solved for (as a performer of other proportions), started from noisy per-frame inits."""
    offsets = _normal(200, 22, 3) * 0.15
    t = jnp.linspace(0.0, 1.0, n)[:, None, None]
    true_aa = _normal(201, 1, 22, 3) * 0.3 + t * _normal(202, 1, 22, 3) * 0.2
    true6 = geometry.matrix_to_rot6d(geometry.axis_angle_to_matrix(true_aa))
    sparse = jnp.zeros((n, 54)).at[:, 36:39].set(t[:, 0] * jnp.array([0.3, 0.0, 0.1]))
    target = body_in_world(true6, offsets * 1.4, sparse)
    init6 = geometry.matrix_to_rot6d(geometry.axis_angle_to_matrix(true_aa + _normal(203, n, 22, 3) * 0.15))
    return offsets, sparse, target, init6


def test_coupled_ik_is_smoother_and_still_reaches():
    """``smooth > 0`` solves frames in order, each pulled toward the previous solution's pose: on
    targets the skeleton cannot reach, from noisy inits, its frame-to-frame change is smaller
    than the independent solves', and it still moves the body toward the targets."""
    offsets, sparse, target, init6 = _unreachable_sequence()
    head = sparse[:, 36:39]
    alone = ik_refine(init6, target, offsets, head_pos=head, iters=15)
    coupled = ik_refine(init6, target, offsets, head_pos=head, iters=15, smooth=1.0)
    assert coupled.shape == init6.shape and bool(jnp.all(jnp.isfinite(coupled)))
    np.testing.assert_allclose(geometry.matrix_to_rot6d(geometry.rot6d_to_matrix(coupled)), coupled, atol=1e-5)

    def step_change(r):
        return float(jnp.mean(jnp.abs(jnp.diff(body_in_world(r, offsets, sparse), axis=0))))

    assert step_change(coupled) < step_change(alone), (step_change(coupled), step_change(alone))
    assert _mpjpe(coupled, offsets, sparse, target) < _mpjpe(init6, offsets, sparse, target)


def test_coupled_ik_is_causal_and_batched():
    offsets, sparse, target, init6 = _unreachable_sequence()
    out = ik_refine(init6, target, offsets, iters=3, smooth=0.1)
    later = ik_refine(init6, target.at[-2:, 18:].add(0.3), offsets, iters=3, smooth=0.1)  # arms move
    np.testing.assert_allclose(later[:-2], out[:-2], atol=1e-6)  # a frame never sees the future
    assert not np.allclose(later[-2:], out[-2:])
    both = ik_refine(jnp.stack([init6, init6]), jnp.stack([target, target]),
                     jnp.stack([offsets, offsets])[:, None], iters=3, smooth=0.1)
    np.testing.assert_allclose(both[1], out, atol=1e-4)  # float32 L-BFGS over a wider vmap
    with pytest.raises(ShapeError, match="time axis"):
        ik_refine(init6[0], target[0], offsets, smooth=0.1)
