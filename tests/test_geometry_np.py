"""The numpy geometry core (mmar.geometry_np) against the JAX one (mmar.geometry) on random
inputs, its own round trips, and that it (and the headset runtime) import without JAX."""
import itertools
import subprocess
import sys

import numpy as np
import pytest

from mmar import geometry
from mmar import geometry_np as gnp
from mmar.skeleton import HEAD, SMPL22_PARENTS

TAIT_BRYAN = ["".join(p) for p in itertools.permutations("XYZ")]
PROPER = ["XYX", "XZX", "YXY", "YZY", "ZXZ", "ZYZ"]


def _quats(rng, shape):
    q = rng.normal(size=shape + (4,))
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _rots(rng, shape):
    return gnp.quaternion_to_matrix(_quats(rng, shape))


def _jax(x):
    return np.asarray(x, np.float64)


# --------------------------------------------------------------------------
# 6D and quaternions
# --------------------------------------------------------------------------

def test_rot6d_matches_jax_and_round_trips():
    rng = np.random.default_rng(0)
    d6 = rng.normal(size=(4, 50, 6))
    R = gnp.rot6d_to_matrix(d6)
    assert R.shape == (4, 50, 3, 3) and R.dtype == np.float64
    np.testing.assert_allclose(R, _jax(geometry.rot6d_to_matrix(d6)), atol=2e-6)
    np.testing.assert_allclose(np.einsum("...ji,...jk->...ik", R, R), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    # matrix -> 6D -> matrix is exact up to rounding; 6D of a rotation is its first two columns
    np.testing.assert_allclose(gnp.rot6d_to_matrix(gnp.matrix_to_rot6d(R)), R, atol=1e-12)
    np.testing.assert_array_equal(gnp.matrix_to_rot6d(R), np.concatenate([R[..., :, 0], R[..., :, 1]], -1))
    np.testing.assert_allclose(gnp.matrix_to_rot6d(R), _jax(geometry.matrix_to_rot6d(R)), atol=1e-6)
    # float32 in, float32 out (computed in the input's precision)
    assert gnp.rot6d_to_matrix(d6.astype(np.float32)).dtype == np.float32


def test_quaternion_matrix_match_jax_and_round_trip():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(300, 4))  # not normalised: quaternion_to_matrix normalises
    R = gnp.quaternion_to_matrix(q)
    np.testing.assert_allclose(R, _jax(geometry.quaternion_to_matrix(q)), atol=2e-6)
    q2 = gnp.matrix_to_quaternion(R)
    assert np.all(q2[:, 0] >= 0)
    np.testing.assert_allclose(q2, _jax(geometry.matrix_to_quaternion(R)), atol=2e-6)
    qn = q / np.linalg.norm(q, axis=-1, keepdims=True)
    qn = np.where(qn[:, :1] < 0, -qn, qn)
    np.testing.assert_allclose(q2, qn, atol=1e-12)
    # without normalisation the same matrix for unit quaternions
    np.testing.assert_allclose(gnp.quaternion_to_matrix(qn, normalize=False), R, atol=1e-14)
    # matrices near 180 degrees (every Shepperd branch)
    for axis in np.eye(3):
        Rpi = _jax(geometry.axis_angle_to_matrix(np.pi * axis * (1 - 1e-7)))
        np.testing.assert_allclose(gnp.quaternion_to_matrix(gnp.matrix_to_quaternion(Rpi)), Rpi, atol=1e-6)


def test_quaternion_algebra_matches_jax():
    rng = np.random.default_rng(2)
    a, b = _quats(rng, (5, 40)), _quats(rng, (40,))
    ab = gnp.quaternion_multiply(a, b)
    np.testing.assert_allclose(ab, _jax(geometry.quaternion_multiply(a, b)), atol=1e-6)
    # the product composes rotations: R(a b) = R(a) R(b)
    np.testing.assert_allclose(gnp.quaternion_to_matrix(ab),
                               gnp.quaternion_to_matrix(a) @ gnp.quaternion_to_matrix(b), atol=1e-12)
    np.testing.assert_allclose(gnp.quaternion_conjugate(a), _jax(geometry.quaternion_conjugate(a)), atol=1e-7)
    ident = gnp.quaternion_multiply(a, gnp.quaternion_conjugate(a))
    np.testing.assert_allclose(ident, np.broadcast_to([1.0, 0, 0, 0], ident.shape), atol=1e-12)
    v = rng.normal(size=(5, 40, 3))
    np.testing.assert_allclose(gnp.quaternion_rotate(a, v), gnp.matvec(gnp.quaternion_to_matrix(a), v), atol=1e-12)


def test_quaternion_between():
    rng = np.random.default_rng(3)
    v0, v1 = rng.normal(size=(100, 3)), rng.normal(size=(100, 3))
    q = gnp.quaternion_between(v0, v1)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-12)
    got = gnp.quaternion_rotate(q, gnp.normalize(v0))
    np.testing.assert_allclose(got, gnp.normalize(v1), atol=1e-12)
    # the shortest arc: the axis is perpendicular to both vectors
    np.testing.assert_allclose(np.sum(q[:, 1:] * v0, -1), 0.0, atol=1e-12)
    # opposite vectors: a half turn about a perpendicular axis (Y when possible)
    q = gnp.quaternion_between(np.array([[1.0, 0, 0], [0, -1.0, 0]]), np.array([[-2.0, 0, 0], [0, 3.0, 0]]))
    np.testing.assert_allclose(q[0], [0, 0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(gnp.quaternion_rotate(q[1], [0, -1.0, 0]), [0, 1, 0], atol=1e-12)


def test_slerp_matches_jax():
    rng = np.random.default_rng(4)
    q0, q1 = _quats(rng, (200,)), _quats(rng, (200,))
    q1[:5] = gnp.normalize(q0[:5] + 1e-5)  # the nearly-equal (lerp) branch
    q1[5:10] = -q0[5:10]  # opposite signs: the same rotation
    t = rng.uniform(size=200)
    got = gnp.slerp(q0, q1, t)  # t of fewer dimensions gets a trailing axis
    np.testing.assert_allclose(got, gnp.slerp(q0, q1, t[:, None]), atol=0)
    np.testing.assert_allclose(got, _jax(geometry.slerp(q0, q1, t)), atol=2e-6)
    np.testing.assert_allclose(gnp.slerp(q0, q1, np.zeros(200)), q0, atol=1e-12)
    # the end point is q1 up to sign
    end = gnp.slerp(q0, q1, np.ones(200))
    np.testing.assert_allclose(np.abs(np.sum(end * q1, -1)), 1.0, atol=1e-9)


# --------------------------------------------------------------------------
# Euler angles
# --------------------------------------------------------------------------

def _elementary(axis, a):
    c, s, o, i = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    rows = {"X": [[i, o, o], [o, c, -s], [o, s, c]], "Y": [[c, o, s], [o, i, o], [-s, o, c]],
            "Z": [[c, -s, o], [s, c, o], [o, o, i]]}[axis]
    return np.stack([np.stack(r, -1) for r in rows], -2)


@pytest.mark.parametrize("order", TAIT_BRYAN + PROPER)
def test_euler_to_matrix_matches_jax(order):
    rng = np.random.default_rng(5)
    ang = rng.uniform(-np.pi, np.pi, (8, 30, 3))
    R = gnp.euler_to_matrix(ang, order)
    assert R.shape == (8, 30, 3, 3)
    np.testing.assert_allclose(R, _jax(geometry.euler_to_matrix(ang, order)), atol=2e-6)
    np.testing.assert_allclose(gnp.euler_to_matrix(np.rad2deg(ang), order, degrees=True), R, atol=1e-12)
    # R = R_a0 R_a1 R_a2 (column vectors, the first channel outermost)
    parts = [_elementary(axis, a) for axis, a in zip(order, np.moveaxis(ang, -1, 0))]
    np.testing.assert_allclose(parts[0] @ parts[1] @ parts[2], R, atol=1e-12)


@pytest.mark.parametrize("order", TAIT_BRYAN + PROPER)
def test_matrix_to_euler_matches_jax_and_round_trips(order):
    rng = np.random.default_rng(6)
    R = _rots(rng, (300,))
    ang = gnp.matrix_to_euler(R, order)
    np.testing.assert_allclose(gnp.euler_to_matrix(ang, order), R, atol=1e-12)
    if order in TAIT_BRYAN:
        assert np.all(np.abs(ang[:, 1]) <= np.pi / 2 + 1e-12)
    else:
        assert np.all((ang[:, 1] >= 0) & (ang[:, 1] <= np.pi + 1e-12))
    np.testing.assert_allclose(ang, _jax(geometry.matrix_to_euler(R, order)), atol=1e-3)
    deg = gnp.matrix_to_euler(R, order, degrees=True)
    np.testing.assert_allclose(deg, np.rad2deg(ang), atol=1e-10)
    # gimbal lock keeps the matrix (the first angle takes everything)
    mid = 90.0 if order in TAIT_BRYAN else 0.0
    lock = np.array([[30.0, mid, 0.0], [-50.0, -mid if order in TAIT_BRYAN else 180.0, 0.0]])
    L = gnp.euler_to_matrix(lock, order, degrees=True)
    np.testing.assert_allclose(gnp.euler_to_matrix(gnp.matrix_to_euler(L, order), order), L, atol=1e-6)


def test_euler_order_errors():
    with pytest.raises(ValueError, match="three of X/Y/Z"):
        gnp.euler_to_matrix(np.zeros(3), "XY")
    with pytest.raises(ValueError, match="three of X/Y/Z"):
        gnp.matrix_to_euler(np.eye(3), "XYW")
    with pytest.raises(ValueError, match="unsupported"):
        gnp.matrix_to_euler(np.eye(3), "XXY")


# --------------------------------------------------------------------------
# forward kinematics, resampling, sparse input, body placement
# --------------------------------------------------------------------------

def test_forward_kinematics_matches_jax():
    rng = np.random.default_rng(7)
    local = _rots(rng, (2, 6, 22))
    offsets = rng.normal(size=(22, 3))
    root = rng.normal(size=(2, 6, 3))
    g_rot, g_pos = gnp.forward_kinematics(local, offsets, SMPL22_PARENTS, root)
    r_rot, r_pos = geometry.forward_kinematics(local, offsets, SMPL22_PARENTS, root)
    assert g_rot.shape == (2, 6, 22, 3, 3) and g_pos.shape == (2, 6, 22, 3)
    np.testing.assert_allclose(g_rot, _jax(r_rot), atol=1e-5)
    np.testing.assert_allclose(g_pos, _jax(r_pos), atol=1e-5)
    # per-frame offsets, default root (offsets[..., 0, :])
    per_frame = offsets + 0.01 * rng.normal(size=(2, 6, 22, 3))
    g_rot, g_pos = gnp.forward_kinematics(local, per_frame, SMPL22_PARENTS)
    r_rot, r_pos = geometry.forward_kinematics(local, per_frame, SMPL22_PARENTS)
    np.testing.assert_allclose(g_pos, _jax(r_pos), atol=1e-5)
    np.testing.assert_allclose(g_pos[..., 0, :], per_frame[..., 0, :])
    # one leading axis gives the same numbers as two
    g1, p1 = gnp.forward_kinematics(local[1], offsets, SMPL22_PARENTS, root[1])
    g2, p2 = gnp.forward_kinematics(local, offsets, SMPL22_PARENTS, root)
    np.testing.assert_array_equal(p1, p2[1])
    np.testing.assert_array_equal(g1, g2[1])
    with pytest.raises(ValueError, match="parents"):
        gnp.forward_kinematics(local, offsets, SMPL22_PARENTS[:-1])


@pytest.mark.parametrize("src,dst,n", [(30, 60, 97), (30, 20, 97), (30, 120, 10), (25, 30, 50), (60, 60, 7)])
def test_resample_index_matches_jax(src, dst, n):
    i0, i1, w = gnp.resample_index(n, src, dst)
    r0, r1, rw = geometry._resample_index(n, src, dst)
    assert len(i0) == geometry.resample_length(n, src, dst)
    np.testing.assert_array_equal(i0, np.asarray(r0))
    np.testing.assert_array_equal(i1, np.asarray(r1))
    np.testing.assert_array_equal(w, np.asarray(rw, np.float64))
    with pytest.raises(ValueError, match="empty"):
        gnp.resample_index(0, src, dst)


def test_sparse_features_and_smpl22_arrays_match_jax():
    from mmar.data.clip import Clip, clips_to_arrays, smpl22_skeleton, sparse_features

    rng = np.random.default_rng(8)
    rot = _rots(rng, (2, 7, 22))
    pos = rng.normal(size=(2, 7, 22, 3))
    np.testing.assert_allclose(gnp.sparse_features(rot, pos), np.asarray(sparse_features(rot, pos)), atol=1e-5)
    local = _rots(rng, (9, 22)).astype(np.float32)
    offsets = (0.2 * rng.normal(size=(22, 3))).astype(np.float32)
    root = rng.normal(size=(9, 3)).astype(np.float32)
    got = gnp.smpl22_arrays(local, offsets, root, 30.0)
    clip = Clip(name="c", skeleton=smpl22_skeleton(offsets), local_rot=local, root_pos=root, fps=30.0)
    ref = clips_to_arrays([clip])[0]
    assert set(got) == set(ref)
    for key in got:
        assert got[key].dtype == np.float32, key
        np.testing.assert_allclose(got[key], ref[key], atol=2e-5, err_msg=key)
    np.testing.assert_array_equal(got["sparse"][0, 18:36], np.tile([1, 0, 0, 0, 1, 0], 3))
    np.testing.assert_array_equal(got["sparse"][0, 45:54], 0)


def test_body_in_world_matches_jax():
    from mmar.models.body import body_in_world

    rng = np.random.default_rng(9)
    rot6d = rng.normal(size=(12, 22, 6)).astype(np.float32)
    offsets = (0.2 * rng.normal(size=(22, 3))).astype(np.float32)
    sparse = rng.normal(size=(12, 54)).astype(np.float32)
    got = gnp.body_in_world(rot6d, offsets, sparse)
    assert got.dtype == np.float32 and got.shape == (12, 22, 3)
    np.testing.assert_allclose(got, np.asarray(body_in_world(rot6d, offsets, sparse)), atol=2e-5)
    np.testing.assert_allclose(got[:, HEAD], sparse[:, 36:39], atol=1e-6)
    # leading batch axes
    batched = gnp.body_in_world(rot6d.reshape(3, 4, 22, 6), offsets, sparse.reshape(3, 4, 54))
    np.testing.assert_array_equal(batched.reshape(12, 22, 3), got)


# --------------------------------------------------------------------------
# no JAX
# --------------------------------------------------------------------------

def test_geometry_np_and_runtime_import_without_jax():
    code = "import sys, mmar.geometry_np, mmar.export.runtime; assert 'jax' not in sys.modules, 'jax imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
