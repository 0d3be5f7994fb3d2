"""Body helpers: sparse layout, 6D FK on a hand-built chain, head placement."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar import geometry
from mmar.errors import ShapeError
from mmar.models.body import (
    body_in_world,
    fk_rot6d,
    head_relative,
    place_at_head,
    rot6d_to_local,
    sparse_positions,
    sparse_rotations,
    tracked_head,
)
from mmar.skeleton import SMPL22_PARENTS


def _normal(seed, *shape):
    """Test data from numpy (cheaper than compiling eager jax.random ops per shape)."""
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# a 3-joint chain: root -> a (1 up) -> b (1 along x of a)
CHAIN_PARENTS = (-1, 0, 1)
CHAIN_OFFSETS = jnp.array([[5.0, 5.0, 5.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def _rz(angle):
    return geometry.axis_angle_to_matrix(jnp.array([0.0, 0.0, angle]))


def test_chain_fk_by_hand():
    # root rotated +90 deg about z, joint a rotated +90 deg about z
    local = jnp.stack([_rz(jnp.pi / 2), _rz(jnp.pi / 2), jnp.eye(3)])
    rot6d = geometry.matrix_to_rot6d(local)
    g, p = fk_rot6d(rot6d, CHAIN_OFFSETS, CHAIN_PARENTS)
    # root at the origin (root offset ignored); a = Rz90 (0,1,0) = (-1,0,0);
    # b = a + Rz180 (1,0,0) = (-2,0,0)
    np.testing.assert_allclose(p, [[0, 0, 0], [-1, 0, 0], [-2, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(g[2], _rz(jnp.pi), atol=1e-6)


def test_chain_fk_root_pos_and_batch():
    local = jnp.broadcast_to(jnp.eye(3), (4, 3, 3, 3))
    rot6d = geometry.matrix_to_rot6d(local)
    root = jnp.arange(12.0).reshape(4, 3)
    _, p = fk_rot6d(rot6d, CHAIN_OFFSETS, CHAIN_PARENTS, root_pos=root)
    np.testing.assert_allclose(p[:, 2], root + jnp.array([1.0, 1.0, 0.0]), atol=1e-6)


def test_rot6d_to_local_orthonormal():
    x = _normal(100, 5, 22, 6)
    m = rot6d_to_local(x)
    np.testing.assert_allclose(m @ jnp.swapaxes(m, -1, -2), jnp.broadcast_to(jnp.eye(3), m.shape), atol=1e-5)
    with pytest.raises(ShapeError):
        rot6d_to_local(jnp.zeros((22, 9)))


def test_sparse_layout():
    s = jnp.arange(54.0)
    np.testing.assert_array_equal(tracked_head(s), [36.0, 37.0, 38.0])
    np.testing.assert_array_equal(sparse_positions(s)[2], [42.0, 43.0, 44.0])
    eye6 = geometry.matrix_to_rot6d(jnp.eye(3))
    s2 = jnp.concatenate([jnp.tile(eye6, 3), jnp.zeros(36)])
    np.testing.assert_allclose(sparse_rotations(s2), jnp.broadcast_to(jnp.eye(3), (3, 3, 3)), atol=1e-6)
    with pytest.raises(ShapeError):
        tracked_head(jnp.zeros(53))


def test_place_at_head_chain():
    _, p = fk_rot6d(geometry.matrix_to_rot6d(jnp.broadcast_to(jnp.eye(3), (3, 3, 3))), CHAIN_OFFSETS, CHAIN_PARENTS)
    head = jnp.array([10.0, 0.0, -1.0])
    q = place_at_head(p, head, head_index=2)
    np.testing.assert_allclose(q[2], head, atol=1e-6)
    np.testing.assert_allclose(q[1] - q[0], p[1] - p[0], atol=1e-6)
    np.testing.assert_allclose(head_relative(q, head)[2], 0.0, atol=1e-6)


def test_body_in_world_smpl_head_matches_tracked():
    offsets = _normal(101, 22, 3) * 0.1
    rot6d = geometry.matrix_to_rot6d(geometry.axis_angle_to_matrix(_normal(102, 7, 22, 3) * 0.3))
    sparse = _normal(103, 7, 54)
    joints = jax.jit(body_in_world)(rot6d, offsets, sparse)
    assert joints.shape == (7, 22, 3)
    np.testing.assert_allclose(joints[:, 15], sparse[:, 36:39], atol=1e-5)
    # same shape as plain FK up to translation
    _, ref = geometry.forward_kinematics(geometry.rot6d_to_matrix(rot6d), offsets, SMPL22_PARENTS)
    np.testing.assert_allclose(joints - joints[:, :1], ref - ref[:, :1], atol=1e-5)
