"""Mem-MLP: shapes, ablations, memory effect, losses with learned uncertainty, streaming."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmar.errors import ConfigError, ShapeError
from mmar.models.mem_mlp import (
    advance_window,
    MemMLP,
    MemMLPConfig,
    init_loss_uncertainty,
    init_stream_state,
    make_memory,
    make_streamer,
    mem_mlp_loss,
    predict_clip,
    stream_step,
    training_memory,
    zero_memory,
)
from mmar.models.mlp_vqvae import MLPVQVAE, MLPVQVAEConfig

W = 5
TINY = MemMLPConfig(window=W, dim=16, depth=4, head_depth=2, code_dim=8)
VQ = MLPVQVAEConfig(hidden=16, enc_depth=1, dec_depth=1, code_dim=8, codebook_size=16)
B = 2


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _data(seed, b=B, w=W):
    # numpy draws: cheaper than compiling eager jax.random ops for every shape
    rng = np.random.default_rng(seed)
    f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    return {"sparse": f(b, w, 54), "rot6d": f(b, w, 22, 6), "joints": f(b, w, 22, 3)}


@pytest.fixture(scope="module")
def setup():
    model = MemMLP(TINY)
    vq = MLPVQVAE(VQ)
    d = _data(1)
    vq_vars = vq.init(jax.random.PRNGKey(2), d["rot6d"], d["sparse"])
    mem = make_memory(d["sparse"] * 0.5, d["rot6d"], vq, vq_vars)
    variables = model.init(jax.random.PRNGKey(0), d["sparse"], mem)
    return model, variables, vq, vq_vars, d, mem


def test_output_shapes_and_global_positions(setup):
    model, variables, _, _, d, mem = setup
    out = jax.jit(lambda v, s, m: model.apply(v, s, m))(variables, d["sparse"], mem)
    assert out["rot6d"].shape == (B, W, 22, 6)
    assert out["pos"].shape == out["pos_rel"].shape == (B, W, 22, 3)
    np.testing.assert_allclose(out["pos"] - out["pos_rel"], jnp.broadcast_to(d["sparse"][..., None, 36:39], out["pos"].shape), atol=1e-5)


def test_memory_layers_and_param_groups(setup):
    _, variables, *_ = setup
    assert TINY.active_memory_layers() == (2, 4)
    names = set(variables["params"])
    assert {"memory2", "memory4", "rot_head", "pos_head", "input_fc"} <= names
    # memory after block 2 enters block 3 (index 2): frame mixing 2W -> W
    assert variables["params"]["block2"]["fc0"]["kernel"].shape == (W, 2 * W)
    assert variables["params"]["block1"]["fc0"]["kernel"].shape == (W, W)
    # memory after the last block enters both heads
    assert variables["params"]["rot_head"]["block0"]["fc0"]["kernel"].shape == (W, 2 * W)
    assert variables["params"]["pos_head"]["block0"]["fc0"]["kernel"].shape == (W, 2 * W)
    no_heads = dataclasses.replace(TINY, memory_into_heads=False)
    assert no_heads.active_memory_layers() == (2,)
    assert MemMLPConfig().active_memory_layers() == (2, 4, 6, 8, 10, 12)


def test_memory_changes_output(setup):
    model, variables, _, _, d, mem = setup
    a = model.apply(variables, d["sparse"], mem)["rot6d"]
    b = model.apply(variables, d["sparse"], None)["rot6d"]  # zeros
    assert float(jnp.abs(a - b).max()) > 1e-4
    off = MemMLP(dataclasses.replace(TINY, use_memory=False))
    v_off = off.init(jax.random.PRNGKey(0), d["sparse"])
    assert not any(k.startswith("memory") for k in v_off["params"])
    x = off.apply(v_off, d["sparse"], mem)["rot6d"]
    y = off.apply(v_off, d["sparse"], None)["rot6d"]
    np.testing.assert_array_equal(x, y)


def test_train_mode_blend_uses_rng(setup):
    model, variables, _, _, d, mem = setup
    f = jax.jit(lambda v, k: model.apply(v, d["sparse"], mem, train=True, rng=k)["rot6d"])
    a, b = f(variables, jax.random.PRNGKey(0)), f(variables, jax.random.PRNGKey(1))
    assert float(jnp.abs(a - b).max()) > 1e-5
    np.testing.assert_array_equal(a, f(variables, jax.random.PRNGKey(0)))
    c = model.apply(variables, d["sparse"], mem, rngs={"memory": jax.random.PRNGKey(0)}, train=True)["rot6d"]
    assert c.shape == a.shape


@pytest.mark.parametrize(
    "kw", [dict(use_pos_head=False), dict(use_code=False), dict(use_memory=False, use_pos_head=False), dict(memory_layers=(1, 3))]
)
def test_ablations(kw, setup):
    _, _, vq, vq_vars, d, _ = setup
    cfg = dataclasses.replace(TINY, **kw)
    model = MemMLP(cfg)
    mem = make_memory(d["sparse"], d["rot6d"], vq if cfg.use_code else None, vq_vars, cfg.code_dim)
    v = model.init(jax.random.PRNGKey(0), d["sparse"], mem)
    out = model.apply(v, d["sparse"], mem, train=True, rng=jax.random.PRNGKey(3))
    assert out["rot6d"].shape == (B, W, 22, 6)
    assert ("pos" in out) == cfg.use_pos_head
    loss, m = mem_mlp_loss(out, d, init_loss_uncertainty(cfg.use_pos_head))
    assert bool(jnp.isfinite(loss))
    assert ("pos" in m) == cfg.use_pos_head


def test_gradients_finite(setup):
    model, variables, _, _, d, mem = setup
    s = init_loss_uncertainty()

    def f(v, s):
        out = model.apply(v, d["sparse"], mem, train=True, rng=jax.random.PRNGKey(4))
        return mem_mlp_loss(out, d, s)[0]

    gv, gs = jax.jit(jax.grad(f, argnums=(0, 1)))(variables, s)
    leaves = jax.tree.leaves(gv)
    assert all(bool(jnp.all(jnp.isfinite(l))) for l in leaves)
    for name in ("memory2", "memory4", "block0", "rot_head", "pos_head"):
        assert max(float(jnp.abs(l).max()) for l in jax.tree.leaves(gv["params"][name])) > 0
    assert all(abs(float(gs[k])) > 0 for k in ("rot", "rot_vel", "pos", "vel"))


def test_uncertainty_weights_are_trainable(setup):
    model, variables, _, _, d, mem = setup
    out = model.apply(variables, d["sparse"], mem)
    s = init_loss_uncertainty()
    tx = optax.sgd(0.1)
    st = tx.init(s)
    g = jax.grad(lambda q: mem_mlp_loss(out, d, q)[0])(s)
    # d/ds [exp(-s) L + s] = 1 - L at s = 0
    _, m = mem_mlp_loss(out, d, s)
    for k in s:
        np.testing.assert_allclose(g[k], 1.0 - m[k], rtol=1e-5)
    u, st = tx.update(g, st, s)
    s2 = optax.apply_updates(s, u)
    assert all(float(s2[k]) != float(s[k]) for k in s)
    l1, m1 = mem_mlp_loss(out, d, s)
    l2, m2 = mem_mlp_loss(out, d, s2)
    assert float(l2) < float(l1)
    np.testing.assert_allclose(m2["w_pos"], jnp.exp(-s2["pos"]), rtol=1e-6)


def test_fixed_weights_and_mask(setup):
    model, variables, _, _, d, mem = setup
    out = model.apply(variables, d["sparse"], mem)
    _, m = mem_mlp_loss(out, d, weighting="fixed")
    l2, _ = mem_mlp_loss(out, d, weighting="fixed", weights={"rot": 2.0, "rot_vel": 0.0, "pos": 0.0, "vel": 0.0})
    np.testing.assert_allclose(l2, 2.0 * m["rot"], rtol=1e-6)
    full = jnp.ones((B, W))
    _, mf = mem_mlp_loss(out, dict(d, mask=full), weighting="fixed")
    np.testing.assert_allclose(mf["rot"], m["rot"], rtol=1e-6)
    half = full.at[:, : W // 2].set(0.0)
    _, mh = mem_mlp_loss(out, dict(d, mask=half), weighting="fixed")
    ref = jnp.mean(jnp.linalg.norm(out["rot6d"] - d["rot6d"], axis=-1)[:, W // 2 :])
    np.testing.assert_allclose(mh["rot"], ref, rtol=1e-5)
    with pytest.raises(ConfigError):
        mem_mlp_loss(out, d, None)


def test_training_memory_blend(setup):
    _, _, vq, vq_vars, d, _ = setup
    gt = training_memory(d["sparse"], d["rot6d"], vq, vq_vars)
    np.testing.assert_allclose(gt["rot6d"], make_memory(d["sparse"], d["rot6d"], vq, vq_vars)["rot6d"])
    pred = d["rot6d"] + 1.0
    mixed = training_memory(d["sparse"], d["rot6d"], vq, vq_vars, rot6d_prev_pred=pred, rng=jax.random.PRNGKey(0))
    assert mixed["code"].shape == (B, W, 8)
    assert float(jnp.abs(mixed["rot6d"] - gt["rot6d"]).max()) > 1e-4
    with pytest.raises(ConfigError):
        training_memory(d["sparse"], d["rot6d"], vq, vq_vars, rot6d_prev_pred=pred)


def test_bad_shapes_raise(setup):
    model, variables, _, _, d, mem = setup
    with pytest.raises(ShapeError):
        model.apply(variables, d["sparse"][:, :-1], mem)
    bad = dict(mem, code=mem["code"][..., :-1])
    with pytest.raises(ShapeError):
        model.apply(variables, d["sparse"], bad)


def test_stream_equals_offline(setup):
    model, variables, vq, vq_vars, _, _ = setup
    pad_mode = model.config.pad_mode
    T = 9
    clip = jnp.asarray(np.random.default_rng(7).normal(size=(B, T, 54)), jnp.float32)
    offline = jax.jit(lambda p, q, c: predict_clip(model, p, c, vq, q))(variables, vq_vars, clip)
    assert offline["rot6d"].shape == (B, T, 22, 6) and offline["pos"].shape == (B, T, 22, 3)

    init, step = make_streamer(model, vq)
    state = init(B)
    params = {"mem_mlp": variables, "vqvae": vq_vars}
    for t in range(T):
        state, pose = step(params, state, clip[:, t])
        for k in ("rot6d", "pos"):
            np.testing.assert_allclose(pose[k], offline[k][:, t], atol=1e-5, rtol=1e-5)
    assert int(state.t) == T

    # first frame uses zero memory on the padded window
    padded0 = jnp.repeat(clip[:, :1], W, 1) if pad_mode == "edge" else jnp.concatenate([jnp.zeros((B, W - 1, 54)), clip[:, :1]], 1)
    ref0 = model.apply(variables, padded0, zero_memory(TINY, B))["rot6d"][:, -1]
    np.testing.assert_allclose(offline["rot6d"][:, 0], ref0, atol=1e-5)
    # the memory really is autoregressive: frame 1 differs from a zero-memory prediction
    win1 = jnp.concatenate([padded0[:, 1:], clip[:, 1:2]], 1)
    ref1 = model.apply(variables, win1, None)["rot6d"][:, -1]
    assert float(jnp.abs(offline["rot6d"][:, 1] - ref1).max()) > 1e-5


@pytest.mark.parametrize("pad_mode", ["edge", "zero"])
def test_stream_windows_match_padding(pad_mode):
    from mmar.models.agrol_mlp import pad_clip_start

    clip = jnp.asarray(np.random.default_rng(8).normal(size=(1, 6, 54)), jnp.float32)
    padded = pad_clip_start(clip, 4, pad_mode)
    window = jnp.zeros((1, 4, 54))
    for t in range(6):
        window = advance_window(window, clip[:, t], jnp.int32(t), pad_mode)
        np.testing.assert_array_equal(window, padded[:, t : t + 4])


def test_stream_step_functional_form(setup):
    model, variables, vq, vq_vars, _, _ = setup
    state = init_stream_state(TINY, B)
    state, pose = stream_step(model, variables, state, jnp.ones((B, 54)), vq, vq_vars)
    assert pose["rot6d"].shape == (B, 22, 6)
    with pytest.raises(ConfigError):
        stream_step(model, variables, state, jnp.ones((B, 54)))


def test_paper_configuration_size():
    cfg = MemMLPConfig()
    assert cfg.window == 41 and cfg.depth == 12 and cfg.dim == 512 and cfg.code_dim == 64
    model = MemMLP(cfg)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 41, 54)))
    n = _count(shapes["params"])
    assert n == 5_199_965  # the paper reports 4.10M; see mmar/models/__init__.py
