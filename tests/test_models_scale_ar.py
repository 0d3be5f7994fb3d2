"""Scale-wise AR transformer: schedule and masks, causality, KV-cached decoding, CFG, grads."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar.errors import ConfigError, ShapeError
from mmar.models.scale_ar import (
    MOSCALE_SCHEDULE,
    MOTIONMAR_SCHEDULE,
    SCALEMOGEN_SCHEDULE,
    ScaleARConfig,
    ScaleARTransformer,
    ScaleSchedule,
    cfg_logits,
    cfg_weight,
    moscale_config,
    motionmar_config,
    sample_cond_drop,
    scalemogen_config,
)

# Tests compile with LLVM optimisation off: half the XLA compile time, same numerics.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

SCHED_1D = ScaleSchedule.from_lengths((2, 3, 4))
SCHED_2D = ScaleSchedule.from_grid(((1, 1), (2, 2), (3, 3)))
TINY = dict(width=32, depth=2, heads=2, mlp_ratio=2.0, mlp_round=1, dropout=0.0, drop_path=0.0)


def _variants(**overrides):
    """Tiny versions of the three systems' transformers."""
    tiny = dict(TINY, **overrides)
    return {
        "motionmar": motionmar_config(schedule=SCHED_1D, vocab_size=11, null_cond=True, **tiny),
        "moscale": moscale_config(schedule=SCHED_1D, input_dim=24, cond_dim=16, memory_dim=12,
                                  vocab_size=9, **tiny),
        "scalemogen": scalemogen_config(schedule=SCHED_2D, num_bits=5, memory_dim=12, init_std=None, **tiny),
    }


def _inputs(cfg: ScaleARConfig, B=4, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 5)
    N = cfg.schedule.total
    x = jax.random.normal(ks[0], (B, N, cfg.input_dim or cfg.width))
    cond = jax.random.normal(ks[1], (B, cfg.cond_width))
    additive = jax.random.normal(ks[2], (B, N, cfg.width))
    mem = mmask = None
    if cfg.cross_attention:
        mem = jax.random.normal(ks[3], (B, 4, cfg.memory_width))
        mmask = jnp.arange(4)[None, :] < (jnp.arange(B) % 4 + 1)[:, None]
    return dict(x=x, cond=cond, additive=additive, memory=mem, memory_mask=mmask)


B = 4  # every jitted call of a variant uses this batch, so each function compiles once


def _random_variables(model, inp, seed=0, std=0.3):
    """Random parameters with the model's tree structure, drawn on the host: jitting Flax's
    per-parameter initialisers costs seconds of XLA compile time on CPU (one RNG kernel per
    parameter); the real initialisation is exercised once in test_initialisation."""
    shapes = jax.eval_shape(lambda i: model.init(jax.random.PRNGKey(0), **i), inp)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, std, s.shape).astype(np.float32)), shapes)


@pytest.fixture(scope="module", params=["motionmar", "moscale", "scalemogen"])
def variant(request):
    cfg = _variants()[request.param]
    model = ScaleARTransformer(cfg)
    inp = _inputs(cfg)
    variables = _random_variables(model, inp)
    cd0 = jnp.zeros(B, bool) if cfg.null_cond else None
    all_valid = jnp.ones((B, cfg.schedule.total), bool)
    jf = jit(lambda v, i, km, cd: model.apply(v, **i, key_mask=km, cond_drop=cd))

    def fwd(v, i, km=None, cd=None):
        return jf(v, i, all_valid if km is None else km, cd0 if cd is None else cd)

    return request.param, cfg, model, variables, inp, fwd


def _row0(inp):
    """Inputs whose B rows are all copies of row 0."""
    return jax.tree.map(lambda a: jnp.broadcast_to(a[:1], a.shape), inp)


def _partial_mask(sch: ScaleSchedule):
    valid = [[max(t - 1, 1) for t in sch.time_lengths], list(sch.time_lengths)] * (B // 2)
    return sch.token_mask(jnp.array(valid))


# ---------------------------------------------------------------- schedule

def test_schedule_layout():
    s = SCHED_1D
    assert s.num_scales == 3 and s.total == 9 and s.lengths == (2, 3, 4)
    assert s.starts == (0, 2, 5) and s.ends == (2, 5, 9)
    np.testing.assert_array_equal(s.scale_ids, [0, 0, 1, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(s.time_index, [0, 1, 0, 1, 2, 0, 1, 2, 3])
    assert MOTIONMAR_SCHEDULE.total == 35 and MOSCALE_SCHEDULE.total == 91
    assert SCALEMOGEN_SCHEDULE.lengths == (1, 2, 4, 6, 14, 21, 36, 72, 120, 245, 343)
    assert SCALEMOGEN_SCHEDULE.total == 864 and SCALEMOGEN_SCHEDULE.is_2d
    g = SCHED_2D  # time-major flattening
    np.testing.assert_array_equal(g.time_index, [0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(g.group_index, [0, 0, 1, 0, 1, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    parts = s.split(jnp.arange(9)[None])
    assert [p.shape[1] for p in parts] == [2, 3, 4]


def test_block_causal_mask_three_scales():
    m = np.asarray(SCHED_1D.attention_mask())
    expected = np.zeros((9, 9), bool)
    expected[0:2, 0:2] = True                       # scale 0: itself, bidirectional
    expected[2:5, 0:5] = True                       # scale 1: scale 0 + itself
    expected[5:9, 0:9] = True                       # scale 2: everything
    np.testing.assert_array_equal(m, expected)
    # bidirectional within a scale: the first token of a scale sees the last one
    assert m[5, 8] and m[2, 4] and not m[4, 5]


def test_key_padding_mask():
    km = SCHED_1D.token_mask(jnp.array([[2, 2, 3], [1, 3, 4]]))
    np.testing.assert_array_equal(km[0], [1, 1, 1, 1, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(km[1], [1, 0, 1, 1, 1, 1, 1, 1, 1])
    m = np.asarray(SCHED_1D.attention_mask(km))
    assert m.shape == (2, 9, 9)
    assert not m[0, :, 4].any() and not m[0, :, 8].any()
    np.testing.assert_array_equal(m[1], SCHED_1D.block_causal() & np.asarray(km[1])[None])
    with pytest.raises(ShapeError):
        SCHED_1D.attention_mask(jnp.ones((2, 8), bool))


def test_scale_normalized_positions():
    pos = MOSCALE_SCHEDULE.normalized_positions()
    np.testing.assert_array_equal(pos[:6, 0], [0, 8, 16, 24, 33, 41])  # round(i * 49 / 6), half-even
    np.testing.assert_array_equal(pos[-49:, 0], np.arange(49))
    pos2 = SCALEMOGEN_SCHEDULE.normalized_positions()
    last = pos2[-343:]
    assert last[:, 0].max() == 48 and last[:, 1].max() == 6
    s2 = SCALEMOGEN_SCHEDULE.starts[2]  # (2 time, 2 groups): groups at 0 and round(7/2)=4
    np.testing.assert_array_equal(pos2[s2:s2 + 4], [[0, 0], [0, 4], [24, 0], [24, 4]])


def test_config_validation():
    with pytest.raises(ConfigError):
        ScaleARConfig(schedule=SCHED_1D, width=30, heads=4)
    with pytest.raises(ConfigError):
        ScaleARConfig(schedule=SCHED_1D, attn_scale="bad")
    with pytest.raises(ConfigError):
        ScaleARConfig(schedule=SCHED_1D, width=24, heads=2, positions="rope_2d_scale_normalized", rope_freq_repeat=2)


# ---------------------------------------------------------------- model

def test_output_shapes_and_jit(variant):
    name, cfg, model, variables, inp, fwd = variant
    out = fwd(variables, inp)
    assert out.shape == (B, cfg.schedule.total) + cfg.out_shape
    assert np.isfinite(np.asarray(out)).all()


def test_causality_across_scales(variant):
    """Changing a token of scale k changes logits at scales >= k only (all of scale k, i.e.
    attention is bidirectional within a scale). Row 0 is the reference, row k+1 perturbs the
    last token of scale k."""
    name, cfg, model, variables, inp, fwd = variant
    sch = cfg.schedule
    assert sch.num_scales == B - 1
    base = _row0(inp)
    x = base["x"]
    for k in range(sch.num_scales):
        j = sch.ends[k] - 1
        x = x.at[k + 1, j].add(jax.random.normal(jax.random.PRNGKey(k), x.shape[2:]))
    out = np.asarray(fwd(variables, dict(base, x=x)))
    for k in range(sch.num_scales):
        diff = np.abs(out[k + 1] - out[0]).reshape(sch.total, -1).max(axis=-1)
        assert (diff[: sch.starts[k]] == 0).all(), (name, k, diff)
        assert (diff[sch.starts[k]:] > 1e-6).all(), (name, k, diff)


def test_padded_keys_are_ignored(variant):
    name, cfg, model, variables, inp, fwd = variant
    km = _partial_mask(cfg.schedule)
    base = np.asarray(fwd(variables, inp, km))
    pad = ~np.asarray(km)
    assert pad.any()
    noise = jax.random.normal(jax.random.PRNGKey(7), inp["x"].shape) * pad[..., None]
    out = np.asarray(fwd(variables, dict(inp, x=inp["x"] + noise), km))
    np.testing.assert_allclose(out[~pad], base[~pad], atol=1e-6)


def test_kv_cached_decode_equals_full_forward(variant):
    """Per-scale cached decoding == one teacher-forced pass (padding, memory mask, additive
    condition and condition drop included). Scale 1 is first run with other inputs and then
    re-run, as mask-and-repredict does: the re-run overwrites the slots of scale 1."""
    name, cfg, model, variables, inp, fwd = variant
    sch = cfg.schedule
    km = _partial_mask(sch)
    cd = jnp.array([False, True] * (B // 2)) if cfg.null_cond else None
    full = fwd(variables, inp, km, cd)

    @jit
    def decode_all(v, i):
        cache = model.init_cache(B)
        outs = []
        for k in range(sch.num_scales):
            sl = sch.scale_slice(k)
            kw = dict(additive_k=i["additive"][:, sl], memory=i["memory"], memory_mask=i["memory_mask"],
                      key_mask=km, cond_drop=cd)
            if k == 1:
                _, cache = model.decode_scale(v, cache, i["x"][:, sl] + 1.0, k, i["cond"], **kw)
            lo, cache = model.decode_scale(v, cache, i["x"][:, sl], k, i["cond"], **kw)
            outs.append(lo)
        return jnp.concatenate(outs, axis=1), cache

    dec, cache = decode_all(variables, inp)
    np.testing.assert_allclose(np.asarray(dec), np.asarray(full), atol=1e-4, rtol=1e-4)
    assert cache["k"].shape == (cfg.depth, B, sch.total, cfg.heads, cfg.head_dim)
    assert float(jnp.abs(cache["k"][:, :, -1]).max()) > 0  # the last scale was written
    with pytest.raises(ConfigError):
        model.decode_scale(variables, cache, inp["x"][:, :1], sch.num_scales, inp["cond"])


@pytest.mark.parametrize("name", ["motionmar", "moscale", "scalemogen"])
def test_gradients_reach_every_parameter(name):
    cfg = _variants(depth=1)[name]  # one block: every code path, half the compile time
    model = ScaleARTransformer(cfg)
    inp = _inputs(cfg)
    variables = _random_variables(model, inp)
    cd = jnp.array([False, True] * (B // 2)) if cfg.null_cond else None

    def loss(params, x):
        out = model.apply({"params": params}, **dict(inp, x=x), cond_drop=cd)
        return jnp.mean(jnp.sin(out) * out)

    g, gx = jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], inp["x"])
    for path, leaf in jax.tree_util.tree_flatten_with_path(g)[0]:
        leaf = np.asarray(leaf)
        assert np.isfinite(leaf).all(), path
        assert np.abs(leaf).max() > 0, (name, jax.tree_util.keystr(path))
    assert np.abs(np.asarray(gx)).max() > 0


def test_training_mode_dropout_drop_path_and_cond_drop():
    cfg = motionmar_config(schedule=SCHED_1D, vocab_size=7, null_cond=True, cond_drop_prob=0.5,
                           **dict(TINY, dropout=0.1, drop_path=0.2))
    model = ScaleARTransformer(cfg)
    inp = _inputs(cfg, B=8)
    variables = _random_variables(model, inp)

    @jit
    def run(v, key, cond, additive, cd):
        i = dict(inp, cond=cond, additive=additive)
        train = model.apply(v, **i, train=True, rngs={"dropout": key})
        return train, model.apply(v, **i, cond_drop=cd)

    ones = jnp.ones(8, bool)
    key = lambda i: jax.random.key(i, impl="rbg")  # noqa: E731 - fast to compile on CPU
    a, e1 = run(variables, key(1), inp["cond"], inp["additive"], ones)
    b, e2 = run(variables, key(2), inp["cond"], inp["additive"], ones)
    assert a.shape == (8, 9, 7) and not np.allclose(a, b)
    np.testing.assert_allclose(e1, e2, atol=0)  # evaluation is deterministic
    # dropping the condition = feeding the null vector and no additive term
    null = jnp.broadcast_to(variables["params"]["null_cond"], inp["cond"].shape)
    _, manual = run(variables, key(1), null, jnp.zeros_like(inp["additive"]), ~ones)
    np.testing.assert_allclose(e1, manual, rtol=1e-5, atol=1e-5)
    m = sample_cond_drop(jax.random.PRNGKey(0), 10000, 0.1)
    assert m.shape == (10000,) and 0.08 < float(m.mean()) < 0.12


def test_initialisation():
    """The real (VAR-style) initialisation: shapes, cosine scale log 4, tiny AdaLN gammas,
    zero biases, scaled head."""
    cfg = scalemogen_config(schedule=SCHED_2D, width=32, depth=1, heads=2, mlp_round=1, num_bits=5,
                            memory_dim=12, shared_adaln=False)
    model = ScaleARTransformer(cfg)
    inp = _inputs(cfg)
    # the 'rbg' generator compiles much faster on CPU than threefry (one RNG per parameter)
    p = jit(model.init)(jax.random.key(3, impl="rbg"), **inp)["params"]
    shapes = jax.eval_shape(lambda i: model.init(jax.random.PRNGKey(0), **i), inp)["params"]
    assert jax.tree.map(lambda a: a.shape, p) == jax.tree.map(lambda a: a.shape, shapes)
    blk = p["block_0"]
    np.testing.assert_allclose(blk["attn"]["log_scale"], np.log(4.0), rtol=1e-6)
    ada = np.asarray(blk["ada"]["kernel"])
    C, std = cfg.width, cfg.std
    assert ada.shape == (cfg.cond_width, 6 * C)
    assert 0.5 * std * 1e-5 < ada[:, : 2 * C].std() < 1.5 * std * 1e-5       # gammas x 1e-5
    assert 0.2 * std < ada[:, 2 * C:].std() < 0.8 * std                     # scale/shift x 0.5
    assert not np.any(np.asarray(blk["ada"]["bias"]))
    head = np.asarray(p["head"]["kernel"])
    assert head.shape == (C, 2 * cfg.num_bits) and head.std() < 3 * cfg.init_head * std
    assert np.abs(np.asarray(p["pos_start"])).max() <= 2.0
    out = model.apply({"params": p}, **inp)
    assert out.shape == (B, cfg.schedule.total, cfg.num_bits, 2) and np.isfinite(np.asarray(out)).all()


def test_shape_errors():
    cfg = _variants()["moscale"]
    model = ScaleARTransformer(cfg)
    inp = jax.eval_shape(lambda: _inputs(cfg))
    with pytest.raises(ShapeError):
        jax.eval_shape(lambda i: model.init(jax.random.PRNGKey(1), **dict(i, x=jnp.zeros((B, 8, 24)))), inp)
    with pytest.raises(ShapeError):
        jax.eval_shape(lambda i: model.init(jax.random.PRNGKey(1), **dict(i, memory=None)), inp)


# ---------------------------------------------------------------- CFG

def test_cfg_formulas():
    c, u = jnp.array([2.0, -1.0]), jnp.array([1.0, 0.5])
    np.testing.assert_allclose(cfg_logits(c, u, 2, 3, "motionmar", 3.0), 3 * c - 2 * u)
    np.testing.assert_allclose(cfg_logits(c, u, 0, 3, "motionmar", 3.0), 3 * c - 2 * u)  # no ramp
    ts = [cfg_weight(k, 4, "moscale", 5.0) for k in range(4)]
    np.testing.assert_allclose(ts, [5.25, 5.0, 4.75, 4.5])
    np.testing.assert_allclose(cfg_logits(c, u, 1, 4, "moscale", 5.0), 6.0 * c - 5.0 * u)
    np.testing.assert_allclose(cfg_logits(c, u, 0, 11, "var", 7.0), c)  # no guidance at scale 0
    np.testing.assert_allclose(cfg_logits(c, u, 10, 11, "scalemogen", 7.0), 8.0 * c - 7.0 * u)
    np.testing.assert_allclose(cfg_logits(c, u, 5, 11, "var", 7.0), 4.5 * c - 3.5 * u)
    traced = jit(lambda k: cfg_logits(c, u, k, 11, "var", 7.0))(jnp.int32(5))
    np.testing.assert_allclose(traced, 4.5 * c - 3.5 * u, rtol=1e-6)
    with pytest.raises(ConfigError):
        cfg_logits(c, u, 0, 3, "bad", 1.0)


# ---------------------------------------------------------------- presets

@pytest.mark.parametrize("make,shape", [
    (motionmar_config, (1, 35, 1024)), (moscale_config, (1, 91, 512)), (scalemogen_config, (1, 864, 24, 2)),
])
def test_published_presets_trace(make, shape):
    cfg = make()
    model = ScaleARTransformer(cfg)
    inp = jax.eval_shape(lambda: _inputs(cfg, B=1))
    out = jax.eval_shape(lambda i: model.init_with_output(jax.random.PRNGKey(0), **i)[0], inp)
    assert out.shape == shape
