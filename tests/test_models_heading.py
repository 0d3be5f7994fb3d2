"""The heading frame (mmar.models.heading): round trips, invariance of what a model reads and
learns under any world yaw and floor shift, the floor's heading, the straight up / down
fallback; heading-mode AGRoL-MLP and Mem-MLP (streaming, memory in the current frame) give
world outputs that turn and move with the input."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar import geometry as g
from mmar.errors import ConfigError
from mmar.eval.sparse import turn_clip, yaw_matrix
from mmar.models import heading as hd
from mmar.models.agrol_mlp import AGRoLMLP, AGRoLMLPConfig, predict_online
from mmar.models.mem_mlp import MemMLP, MemMLPConfig, make_memory, make_streamer, predict_clip
from mmar.models.mlp_vqvae import MLPVQVAE, MLPVQVAEConfig
from mmar.models.nearest import lookup_features

YAWS = (37.0, 90.0, 180.0, -123.0)
SHIFT = (3.5, -2.0)


def _rotations(rng, shape):
    q = rng.normal(size=shape + (4,))
    return np.asarray(g.quaternion_to_matrix(jnp.asarray(q)), np.float64)


def _sparse(rng, shape):
    """Random but well-formed sparse numbers: orthonormal rotations, positions around 1.5 m."""
    rot = _rotations(rng, shape + (3,))
    vel = _rotations(rng, shape + (3,))
    pos = rng.normal(size=shape + (3, 3)) + [2.0, 1.5, -1.0]
    d = 0.05 * rng.normal(size=shape + (3, 3))
    r6 = lambda m: np.concatenate([m[..., :, 0], m[..., :, 1]], -1).reshape(shape + (18,))  # noqa: E731
    return np.concatenate([r6(rot), r6(vel), pos.reshape(shape + (9,)), d.reshape(shape + (9,))], -1).astype(np.float32)


def _clip(rng, B=2, T=12):
    """A clip dict (batch of B) in the convert layout: sparse, local rot6d, joints."""
    local = _rotations(rng, (B, T, 22))
    return {"sparse": _sparse(rng, (B, T)),
            "rot6d": np.concatenate([local[..., :, 0], local[..., :, 1]], -1).astype(np.float32),
            "joints": (rng.normal(size=(B, T, 22, 3)) + [1.0, 1.0, 2.0]).astype(np.float32)}


def _turned(arrays, yaw, shift=SHIFT):
    return turn_clip(arrays, yaw, shift)


def test_round_trips():
    rng = np.random.default_rng(0)
    a = _clip(rng)
    f = hd.window_frame(jnp.asarray(a["sparse"]))
    assert f.cos.shape == (2,) and f.origin.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(f.origin[:, 1]), 0.0)
    H = np.asarray(f.matrix())
    np.testing.assert_allclose(H @ np.swapaxes(H, -1, -2), np.broadcast_to(np.eye(3), H.shape), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(H), 1.0, atol=1e-6)
    for to, back, x in ((hd.sparse_to_frame, hd.sparse_from_frame, a["sparse"]),
                        (hd.pose_to_frame, hd.pose_from_frame, a["rot6d"]),
                        (hd.points_to_frame, hd.points_from_frame, a["joints"]),
                        (hd.vectors_to_frame, hd.vectors_from_frame, a["joints"]),
                        (hd.rot6d_to_frame, hd.rot6d_from_frame, a["rot6d"])):
        y = to(jnp.asarray(x), f)
        np.testing.assert_allclose(np.asarray(back(y, f)), x, atol=2e-6)
    # the last head sits at the frame's origin, facing +Z; velocities and local joints are untouched
    s = np.asarray(hd.sparse_to_frame(jnp.asarray(a["sparse"]), f))
    np.testing.assert_allclose(s[:, -1, [36, 38]], 0.0, atol=1e-6)
    fwd = np.asarray(g.rot6d_to_matrix(jnp.asarray(s[:, -1, :6])))[:, :, 2]
    np.testing.assert_allclose(fwd[:, 0], 0.0, atol=1e-6)
    assert np.all(fwd[:, 2] > 0)
    np.testing.assert_array_equal(s[..., 18:36], a["sparse"][..., 18:36])
    np.testing.assert_array_equal(np.asarray(hd.pose_to_frame(jnp.asarray(a["rot6d"]), f))[..., 1:, :],
                                  a["rot6d"][..., 1:, :])
    # the frame of a rotation matrix (6D is linear in it): H^T R
    R = np.asarray(g.rot6d_to_matrix(jnp.asarray(a["rot6d"][:, :, 0])))
    got = np.asarray(g.rot6d_to_matrix(hd.rot6d_to_frame(jnp.asarray(a["rot6d"][:, :, 0]), f)))
    np.testing.assert_allclose(got, np.swapaxes(H, -1, -2)[:, None] @ R, atol=1e-5)


@pytest.mark.parametrize("yaw", YAWS)
def test_inputs_and_targets_are_invariant(yaw):
    rng = np.random.default_rng(1)
    a = _clip(rng)
    b = _turned(a, yaw)
    fa, fb = hd.window_frame(jnp.asarray(a["sparse"])), hd.window_frame(jnp.asarray(b["sparse"]))
    np.testing.assert_allclose(np.asarray(fb.matrix()), yaw_matrix(yaw) @ np.asarray(fa.matrix()), atol=1e-6)
    for fn, key in ((hd.sparse_to_frame, "sparse"), (hd.pose_to_frame, "rot6d"), (hd.points_to_frame, "joints")):
        xa, xb = fn(jnp.asarray(a[key]), fa), fn(jnp.asarray(b[key]), fb)
        np.testing.assert_allclose(np.asarray(xb), np.asarray(xa), atol=1e-5, err_msg=key)
    # and the way back places the frame's values where the turned clip is
    back = hd.pose_from_frame(hd.pose_to_frame(jnp.asarray(a["rot6d"]), fa), fb)
    np.testing.assert_allclose(np.asarray(back), b["rot6d"], atol=1e-5)


def test_heading_is_the_floors_heading():
    rng = np.random.default_rng(2)
    sparse = _sparse(rng, (64,))
    f = hd.head_frame(jnp.asarray(sparse[:, :6]), jnp.asarray(sparse[:, 36:39]))
    (_,), (Ht,) = lookup_features([sparse], facing_axis=hd.FACING_AXIS)
    np.testing.assert_allclose(np.asarray(f.matrix()), Ht, atol=1e-5)  # the floor's heading -> world rotation
    # and in closed form: yaw = atan2(f_x, f_z) of the head's +Z axis
    fz = np.asarray(g.rot6d_to_matrix(jnp.asarray(sparse[:, :6])))[:, :, 2]
    yaw = np.arctan2(fz[:, 0], fz[:, 2])
    np.testing.assert_allclose(np.asarray(f.cos), np.cos(yaw), atol=1e-6)
    np.testing.assert_allclose(np.asarray(f.sin), np.sin(yaw), atol=1e-6)


def _head(yaw_deg, pitch_deg, roll_deg=0.0):
    """Head rotation Ry(yaw) Rx(pitch) Rz(roll) as 6D; positive pitch looks down."""
    R = g.euler_to_matrix(jnp.deg2rad(jnp.array([yaw_deg, pitch_deg, roll_deg], jnp.float32)), "YXZ")
    return g.matrix_to_rot6d(R)


def test_straight_up_or_down_uses_the_up_axis():
    pos = jnp.array([1.0, 1.6, 2.0])
    for yaw in (0.0, 30.0, -100.0):
        for pitch in (90.0, -90.0):
            for near in (pitch - np.sign(pitch) * 2.0, pitch):  # 2 deg off vertical and exactly vertical
                f = hd.head_frame(_head(yaw, near), pos)
                np.testing.assert_allclose([float(f.cos), float(f.sin)],
                                           [np.cos(np.deg2rad(yaw)), np.sin(np.deg2rad(yaw))], atol=1e-5)
    # a rolled head looking straight down faces where the top of the head points
    f = hd.head_frame(_head(0.0, 90.0, 20.0), pos)
    R = np.asarray(g.rot6d_to_matrix(_head(0.0, 90.0, 20.0)))
    up = R[:, 1] * [1, 0, 1] / np.linalg.norm(R[[0, 2], 1])
    np.testing.assert_allclose([float(f.sin), float(f.cos)], up[[0, 2]], atol=1e-5)
    # still invariant there, and a degenerate (all-zero) head gets the identity
    for yaw in YAWS:
        a = {"sparse": np.concatenate([np.tile(np.asarray(_head(10.0, 90.0, 20.0)), 3), np.zeros(18, np.float32),
                                       np.tile([1.0, 1.6, 2.0], 3), np.zeros(9)]).astype(np.float32)[None, None]}
        b = _turned(a, yaw)
        fa, fb = hd.window_frame(jnp.asarray(a["sparse"])), hd.window_frame(jnp.asarray(b["sparse"]))
        np.testing.assert_allclose(np.asarray(hd.sparse_to_frame(jnp.asarray(b["sparse"]), fb)),
                                   np.asarray(hd.sparse_to_frame(jnp.asarray(a["sparse"]), fa)), atol=1e-5)
    z = hd.head_frame(jnp.zeros(6), jnp.zeros(3))
    assert float(z.cos) == 1.0 and float(z.sin) == 0.0


def test_transform_is_jittable_without_sort():
    fn = jax.jit(lambda s: hd.sparse_to_frame(s, hd.window_frame(s)))
    x = jnp.asarray(_sparse(np.random.default_rng(3), (2, 4)))
    assert fn(x).shape == x.shape
    text = str(jax.make_jaxpr(lambda s: hd.sparse_to_frame(s, hd.window_frame(s)))(x))
    assert "sort" not in text and "atan" not in text
    with pytest.raises(ConfigError, match="frame"):
        AGRoLMLPConfig(frame="local")
    with pytest.raises(ConfigError, match="frame"):
        MemMLPConfig(frame="head")


# --------------------------------------------------------------------------
# models in heading mode: outputs turn and move with the input
# --------------------------------------------------------------------------

def _check_turned(out_a, out_b, yaw, shift=SHIFT, atol=2e-4):
    Y = yaw_matrix(yaw).astype(np.float32)
    ra, rb = np.asarray(out_a["rot6d"]), np.asarray(out_b["rot6d"])
    np.testing.assert_allclose(rb[..., 1:, :], ra[..., 1:, :], atol=atol)
    root_a = np.asarray(g.rot6d_to_matrix(jnp.asarray(ra[..., 0, :])))
    root_b = np.asarray(g.rot6d_to_matrix(jnp.asarray(rb[..., 0, :])))
    np.testing.assert_allclose(root_b, Y @ root_a, atol=atol)
    if "pos" in out_a:
        want = np.asarray(out_a["pos"]) @ Y.T + np.array([shift[0], 0.0, shift[1]], np.float32)
        np.testing.assert_allclose(np.asarray(out_b["pos"]), want, atol=atol)


def _max_diff(out_a, out_b):
    return float(np.abs(np.asarray(out_a["rot6d"])[..., 1:, :] - np.asarray(out_b["rot6d"])[..., 1:, :]).max())


def test_agrol_online_prediction_turns_with_the_input():
    rng = np.random.default_rng(4)
    a = _clip(rng, B=2, T=10)
    for frame in ("heading", "world"):
        model = AGRoLMLP(AGRoLMLPConfig(window=6, dim=16, depth=2, frame=frame))
        variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 6, 54)))
        run = jax.jit(lambda v, s: predict_online(model, v, s))
        outs = {yaw: {"rot6d": run(variables, jnp.asarray(_turned(a, yaw)["sparse"] if yaw else a["sparse"]))}
                for yaw in (0.0, 90.0)}
        if frame == "heading":
            _check_turned(outs[0.0], outs[90.0], 90.0)
        else:  # AGRoL's layout sees another input and answers with another pose
            assert _max_diff(outs[0.0], outs[90.0]) > 1e-3


@pytest.fixture(scope="module")
def mem_setup():
    cfg = MemMLPConfig(window=5, dim=16, depth=2, head_depth=1, code_dim=8, frame="heading")
    vq = MLPVQVAE(MLPVQVAEConfig(hidden=16, enc_depth=1, dec_depth=1, code_dim=8, codebook_size=16))
    vq_vars = vq.init(jax.random.PRNGKey(2), jnp.zeros((1, 22, 6)), jnp.zeros((1, 54)))
    variables = MemMLP(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 5, 54)))
    return cfg, vq, vq_vars, variables


def test_mem_mlp_stream_turns_with_the_input(mem_setup):
    cfg, vq, vq_vars, variables = mem_setup
    a = _clip(np.random.default_rng(5), B=2, T=11)
    for frame in ("heading", "world"):
        model = MemMLP(dataclasses.replace(cfg, frame=frame))
        run = jax.jit(lambda v, q, s: predict_clip(model, v, s, vq, q))
        out_a = run(variables, vq_vars, jnp.asarray(a["sparse"]))
        for yaw in (37.0, 180.0):
            out_b = run(variables, vq_vars, jnp.asarray(_turned(a, yaw)["sparse"]))
            if frame == "heading":
                _check_turned(out_a, out_b, yaw)
            else:
                assert _max_diff(out_a, out_b) > 1e-3
    # streaming frame by frame is the offline prediction, in heading mode too
    model = MemMLP(cfg)
    offline = jax.jit(lambda v, q, s: predict_clip(model, v, s, vq, q))(variables, vq_vars, jnp.asarray(a["sparse"]))
    init, step = make_streamer(model, vq)
    state, params = init(2), {"mem_mlp": variables, "vqvae": vq_vars}
    for t in range(a["sparse"].shape[1]):
        state, pose = step(params, state, jnp.asarray(a["sparse"][:, t]))
        for k in ("rot6d", "pos", "pos_rel"):
            np.testing.assert_allclose(pose[k], offline[k][:, t], atol=1e-5, err_msg=k)
    # the carried memory is the last window and its prediction in the world, without codes
    np.testing.assert_allclose(state.memory["rot6d"][:, -1],
                               g.matrix_to_rot6d(g.rot6d_to_matrix(offline["rot6d"][:, -1])), atol=1e-5)
    assert float(jnp.abs(state.memory["code"]).max()) == 0.0


def test_mem_mlp_memory_is_in_the_current_frame(mem_setup):
    """Frame 1 of a heading-mode stream: the memory (window 0 and its prediction, in the world)
    is expressed in window 1's frame, then encoded; frame 0 has the zero memory."""
    cfg, vq, vq_vars, variables = mem_setup
    model, W = MemMLP(cfg), cfg.window
    sparse = jnp.asarray(_clip(np.random.default_rng(6), B=2, T=2)["sparse"])

    @jax.jit
    def both(variables, vq_vars, sparse):
        out = predict_clip(model, variables, sparse, vq, vq_vars)
        win0 = jnp.repeat(sparse[:, :1], W, 1)
        win1 = jnp.concatenate([win0[:, 1:], sparse[:, 1:2]], 1)
        f0, f1 = hd.window_frame(win0), hd.window_frame(win1)
        zero = {k: jnp.zeros_like(v) for k, v in make_memory(win0, jnp.zeros((2, W, 22, 6)), vq, vq_vars).items()}
        out0 = model.apply(variables, hd.sparse_to_frame(win0, f0), zero)
        mem1 = make_memory(win0, hd.pose_from_frame(out0["rot6d"], f0), vq, vq_vars, cfg.code_dim, frame=f1)
        out1 = model.apply(variables, hd.sparse_to_frame(win1, f1), mem1)
        ref = {"rot6d": jnp.stack([hd.pose_from_frame(out0["rot6d"][:, -1], f0),
                                   hd.pose_from_frame(out1["rot6d"][:, -1], f1)], 1),
               "pos": hd.points_from_frame(out1["pos"][:, -1], f1)}
        return out, ref

    out, ref = both(variables, vq_vars, sparse)
    np.testing.assert_allclose(out["rot6d"], ref["rot6d"], atol=1e-5)
    np.testing.assert_allclose(out["pos"][:, 1], ref["pos"], atol=1e-5)
