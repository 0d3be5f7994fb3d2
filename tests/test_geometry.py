"""Property tests of mmar.geometry: round trips, orthonormality, FK against hand computation."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar import geometry as g

RNG = np.random.default_rng(0)


def random_rotations(n, rng=RNG):
    q = rng.normal(size=(n, 4)).astype(np.float32)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return np.asarray(g.quaternion_to_matrix(q)), q


def rot_err(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def test_quaternion_matrix_round_trip():
    R, q = random_rotations(1000)
    q2 = np.asarray(g.matrix_to_quaternion(R))
    q = np.where(q[:, :1] < 0, -q, q)
    assert np.max(np.abs(q - q2)) < 2e-6
    assert rot_err(g.quaternion_to_matrix(q2), R) < 2e-6


def test_matrices_are_orthonormal():
    R, _ = random_rotations(500)
    eye = np.eye(3)
    assert np.max(np.abs(np.einsum("nji,njk->nik", R, R) - eye)) < 2e-6
    assert np.max(np.abs(np.linalg.det(R) - 1)) < 2e-6
    for fn, x in [
        (g.axis_angle_to_matrix, RNG.normal(size=(500, 3)) * 2),
        (g.rot6d_to_matrix, RNG.normal(size=(500, 6))),
        (lambda e: g.euler_to_matrix(e, "ZXY"), RNG.uniform(-4, 4, size=(500, 3))),
    ]:
        M = np.asarray(fn(jnp.asarray(x, jnp.float32)))
        assert np.max(np.abs(np.einsum("nji,njk->nik", M, M) - eye)) < 5e-6
        assert np.max(np.abs(np.linalg.det(M) - 1)) < 5e-6


def test_axis_angle_round_trip_including_small_and_near_pi():
    axes = RNG.normal(size=(300, 3))
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    angles = np.concatenate([RNG.uniform(0, np.pi - 1e-3, 280), [0.0, 1e-7, 1e-5, 1e-3] * 5])
    aa = (axes * angles[:, None]).astype(np.float32)
    back = np.asarray(g.matrix_to_axis_angle(g.axis_angle_to_matrix(aa)))
    assert np.max(np.abs(back - aa)) < 5e-5
    back_q = np.asarray(g.quaternion_to_axis_angle(g.axis_angle_to_quaternion(aa)))
    assert np.max(np.abs(back_q - aa)) < 5e-6
    # near pi: the axis may flip sign, the rotation must not change
    aa_pi = (axes[:20] * (np.pi - 1e-4)).astype(np.float32)
    M = g.axis_angle_to_matrix(aa_pi)
    assert rot_err(g.axis_angle_to_matrix(g.matrix_to_axis_angle(M)), M) < 1e-5


def test_axis_angle_matches_elementary_rotation():
    for axis, vec in [("X", [1, 0, 0]), ("Y", [0, 1, 0]), ("Z", [0, 0, 1])]:
        a = 0.7
        M = g.axis_angle_to_matrix(jnp.asarray(vec, jnp.float32) * a)
        order = axis + "".join(c for c in "XYZ" if c != axis)
        E = g.euler_to_matrix(jnp.asarray([a, 0, 0], jnp.float32), order)
        assert rot_err(M, E) < 1e-6


def test_rotation_about_z_moves_x_to_y():
    M = np.asarray(g.euler_to_matrix(jnp.asarray([90.0, 0, 0]), "ZXY", degrees=True))
    assert np.allclose(M @ np.array([1, 0, 0]), [0, 1, 0], atol=1e-6)


def test_rot6d_round_trip_and_layout():
    R, _ = random_rotations(200)
    d6 = np.asarray(g.matrix_to_rot6d(R))
    assert np.allclose(d6[:, :3], R[:, :, 0]) and np.allclose(d6[:, 3:], R[:, :, 1])
    assert rot_err(g.rot6d_to_matrix(d6), R) < 2e-6


@pytest.mark.parametrize("order", ["".join(p) for p in itertools.permutations("XYZ")] + ["ZXZ", "XYX", "YZY"])
def test_euler_round_trip_all_orders(order):
    R, _ = random_rotations(400)
    e = g.matrix_to_euler(R, order)
    assert rot_err(g.euler_to_matrix(e, order), R) < 1e-5
    # composition definition: R = R_a0 @ R_a1 @ R_a2
    e = RNG.uniform(-1, 1, size=(3,)).astype(np.float32)
    M = np.eye(3)
    for ax, ang in zip(order, e):
        M = M @ np.asarray(g.euler_to_matrix(jnp.asarray([ang, 0, 0]), ax + "".join(a for a in "XYZ" if a != ax)))
    assert rot_err(g.euler_to_matrix(e, order), M) < 1e-6


def test_euler_gimbal_lock():
    for b in (np.pi / 2, -np.pi / 2):
        e = np.array([[0.3, b, 0.5]], np.float32)
        R = g.euler_to_matrix(e, "ZXY")
        assert rot_err(g.euler_to_matrix(g.matrix_to_euler(R, "ZXY"), "ZXY"), R) < 1e-5


def test_euler_rejects_bad_order():
    with pytest.raises(ValueError):
        g.euler_to_matrix(np.zeros(3), "XQZ")


def test_fk_hand_computed_chain():
    # root at (1, 0, 0) rotated 90 deg about Z; child 2 m along x; grandchild 1 m along x
    # with the child rotated 90 deg about Z again.
    parents = (-1, 0, 1)
    offsets = np.array([[0, 0, 0], [2, 0, 0], [1, 0, 0]], np.float32)
    rz90 = np.asarray(g.euler_to_matrix(jnp.asarray([90.0, 0, 0]), "ZXY", degrees=True))
    local = np.stack([rz90, rz90, np.eye(3, dtype=np.float32)])[None]
    G, P = g.forward_kinematics(local, offsets, parents, root_pos=np.array([[1.0, 0, 0]]))
    P = np.asarray(P)[0]
    assert np.allclose(P[0], [1, 0, 0], atol=1e-6)
    assert np.allclose(P[1], [1, 2, 0], atol=1e-6)  # root rotation turns +x into +y
    assert np.allclose(P[2], [0, 2, 0], atol=1e-6)  # two 90s turn +x into -x
    assert np.allclose(np.asarray(G)[0, 2], rz90 @ rz90, atol=1e-6)


def test_fk_jit_vmap_and_global_to_local_inverse():
    parents = (-1, 0, 1, 1, 3)
    offsets = RNG.normal(size=(5, 3)).astype(np.float32)
    R, _ = random_rotations(4 * 5)
    local = R.reshape(4, 5, 3, 3)
    root = RNG.normal(size=(4, 3)).astype(np.float32)
    fk = jax.jit(lambda r, p: g.forward_kinematics(r, offsets, parents, p))
    G, P = fk(local, root)
    G2, P2 = jax.vmap(lambda r, p: g.forward_kinematics(r, offsets, parents, p))(local, root)
    assert rot_err(P, P2) < 1e-6
    assert rot_err(g.global_to_local(G, parents), local) < 2e-6
    # bone lengths are preserved
    for j, p in enumerate(parents[1:], 1):
        np.testing.assert_allclose(np.linalg.norm(P[:, j] - P[:, p], axis=-1),
                                   np.linalg.norm(offsets[j]), rtol=1e-5)


def test_fk_rejects_unsorted_parents():
    with pytest.raises(ValueError):
        g.forward_kinematics(np.tile(np.eye(3), (3, 1, 1)), np.zeros((3, 3)), (-1, 2, 0))


def test_slerp_endpoints_midpoint_and_constant_speed():
    q0 = np.array([1.0, 0, 0, 0], np.float32)
    q1 = np.asarray(g.axis_angle_to_quaternion(np.array([0, 0, 1.2], np.float32)))
    assert np.allclose(g.slerp(q0, q1, 0.0), q0, atol=1e-6)
    assert np.allclose(g.slerp(q0, q1, 1.0), q1, atol=1e-6)
    for t in (0.25, 0.5, 0.8):
        aa = np.asarray(g.quaternion_to_axis_angle(g.slerp(q0, q1, t)))
        assert np.allclose(aa, [0, 0, 1.2 * t], atol=1e-5)
    # shortest path: -q1 is the same rotation
    assert np.allclose(g.quaternion_to_matrix(g.slerp(q0, -q1, 0.5)),
                       g.quaternion_to_matrix(g.slerp(q0, q1, 0.5)), atol=1e-6)


def test_resample_30_to_60_and_20():
    T = 31
    t = np.arange(T) / 30.0
    angle = 0.9 * t  # constant angular velocity about Y
    aa = np.stack([np.zeros(T), angle, np.zeros(T)], -1).astype(np.float32)
    R = np.asarray(g.axis_angle_to_matrix(aa))
    pos = np.stack([t, 2 * t, -t], -1).astype(np.float32)
    for fps in (60, 20):
        n = g.resample_length(T, 30, fps)
        assert n == (61 if fps == 60 else 21)
        R2 = g.resample_rotations(R, 30, fps)
        t2 = np.arange(n) / fps
        want = np.asarray(g.axis_angle_to_matrix(np.stack([0 * t2, 0.9 * t2, 0 * t2], -1).astype(np.float32)))
        assert rot_err(R2, want) < 1e-5
        assert rot_err(g.resample_positions(pos, 30, fps), np.stack([t2, 2 * t2, -t2], -1)) < 1e-5


def test_gradients_are_finite_at_identity():
    f = lambda aa: jnp.sum(g.matrix_to_axis_angle(g.axis_angle_to_matrix(aa)) ** 2)
    grad = jax.grad(f)(jnp.zeros(3))
    assert np.all(np.isfinite(grad))
    grad6 = jax.grad(lambda d: jnp.sum(g.rot6d_to_matrix(d)))(jnp.asarray([1.0, 0, 0, 0, 1, 0]))
    assert np.all(np.isfinite(grad6))
