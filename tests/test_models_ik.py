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
