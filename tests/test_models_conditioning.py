"""Conditioning: resampling operators, MotionMAR's scale-aware sparse control, text
cross-attention conditioning, and gradients through conditioner + transformer."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar.errors import ConfigError, ShapeError
from mmar.models.conditioning import (
    Conditioner,
    Conditioning,
    SparseScaleControl,
    TextCrossAttention,
    area_resample_matrix,
    linear_resample_matrix,
    schedule_resample_matrix,
)
from mmar.models.scale_ar import MOTIONMAR_SCHEDULE, ScaleARTransformer, ScaleSchedule, moscale_config, motionmar_config

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
RNG = np.random.default_rng(0)


def _normal(*shape, scale=1.0):
    return (RNG.normal(size=shape) * scale).astype(np.float32)


def _random_variables(module, *args, std=0.3, **kwargs):
    """Host-drawn random parameters with the module's structure (no per-parameter RNG compile)."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args, **kwargs))
    rng = np.random.default_rng(1)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, std, s.shape).astype(np.float32)), shapes)


# ---------------------------------------------------------------- resampling

def test_linear_resample_matrix():
    x = _normal(5, 3)
    up = linear_resample_matrix(5, 20) @ x
    ref = np.asarray(jax.image.resize(jnp.asarray(x), (20, 3), "linear"))  # same when upsampling
    np.testing.assert_allclose(up, ref, atol=1e-5)
    np.testing.assert_allclose(linear_resample_matrix(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    d = linear_resample_matrix(20, 5)  # no antialias: each output mixes two neighbours
    assert ((d > 0).sum(1) == 2).all()
    np.testing.assert_allclose(d.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(linear_resample_matrix(7, 7), np.eye(7))
    with pytest.raises(ConfigError):
        linear_resample_matrix(0, 3)


def test_area_resample_matrix_uneven_windows():
    a = area_resample_matrix(49, 6)
    windows = [np.nonzero(r)[0] for r in a]
    assert [(w[0], w[-1] + 1) for w in windows] == [(0, 9), (8, 17), (16, 25), (24, 33), (32, 41), (40, 49)]
    np.testing.assert_allclose(a.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(area_resample_matrix(4, 2), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    np.testing.assert_allclose(area_resample_matrix(6, 6), np.eye(6))


def test_schedule_resample_matrix_2d_repeats_groups():
    sch = ScaleSchedule.from_grid(((1, 1), (2, 3)))
    m = schedule_resample_matrix(sch, 4)
    assert m.shape == (7, 4)
    lin = linear_resample_matrix(4, 2)
    np.testing.assert_allclose(m[1:4], np.repeat(lin[:1], 3, 0))
    np.testing.assert_allclose(m[4:7], np.repeat(lin[1:], 3, 0))


# ---------------------------------------------------------------- sparse control

C = 16


@pytest.fixture(scope="module")
def sparse_control():
    B, T = 3, 20
    sparse = _normal(B, T, 54)
    mod = SparseScaleControl(MOTIONMAR_SCHEDULE, C)
    variables = _random_variables(mod, sparse)

    @jit
    def run(v, x, drop):
        out = {}
        for name, kw in {"align": {}, "global": {"align": False}, "time": {"pool": "time"},
                         "area": {"resample": "area"}}.items():
            m = SparseScaleControl(MOTIONMAR_SCHEDULE, C, **kw)
            out[name] = m.apply(v, x)
        out["drop"] = mod.apply(v, x, drop=drop)
        return out

    return variables, sparse, run(variables, sparse, jnp.array([False, True, False]))


def test_sparse_control_per_scale_shapes(sparse_control):
    variables, sparse, out = sparse_control
    c = out["align"]
    assert isinstance(c, Conditioning)
    assert c.additive.shape == (3, 35, C) and c.adaln.shape == (3, C) and c.sos.shape == (3, 5, C)
    assert c.memory is None and c.memory_mask is None
    s0, s1, s2 = MOTIONMAR_SCHEDULE.split(np.asarray(c.additive))
    assert s0.shape == (3, 5, C) and s1.shape == (3, 10, C) and s2.shape == (3, 20, C)
    # the finest scale holds the per-frame features (20 -> 20 is the identity); the others
    # are their linear (half-pixel) resampling
    np.testing.assert_allclose(s0, np.einsum("st,btc->bsc", linear_resample_matrix(20, 5), s2), atol=1e-5)
    np.testing.assert_allclose(s1, np.einsum("st,btc->bsc", linear_resample_matrix(20, 10), s2), atol=1e-5)
    sos = np.asarray(variables["params"]["sos"])
    np.testing.assert_allclose(c.adaln, sos + np.asarray(c.additive).mean(1), atol=1e-5)  # sos + mean
    np.testing.assert_allclose(c.sos, np.broadcast_to(sos, (3, 5, C)))
    np.testing.assert_allclose(out["time"].adaln, sos + s2.mean(1), atol=1e-5)
    a0 = MOTIONMAR_SCHEDULE.split(np.asarray(out["area"].additive))[0]
    np.testing.assert_allclose(a0, np.einsum("st,btc->bsc", area_resample_matrix(20, 5), s2), atol=1e-5)


def test_sparse_control_alignment_off_removes_additive_term(sparse_control):
    variables, sparse, out = sparse_control
    assert out["global"].additive is None
    np.testing.assert_allclose(out["global"].adaln, out["align"].adaln, atol=1e-6)  # same global condition


def test_sparse_control_drop_zeroes_features(sparse_control):
    variables, sparse, out = sparse_control
    d, a = out["drop"], out["align"]
    sos = np.asarray(variables["params"]["sos"])
    assert not np.asarray(d.additive[1]).any()
    np.testing.assert_allclose(d.adaln[1], sos, atol=1e-6)
    np.testing.assert_allclose(d.additive[0], a.additive[0], atol=1e-6)
    with pytest.raises(ShapeError):
        SparseScaleControl(MOTIONMAR_SCHEDULE, C).apply(variables, sparse[..., :50])


def test_conditioners_satisfy_protocol():
    assert isinstance(SparseScaleControl(MOTIONMAR_SCHEDULE, C), Conditioner)
    assert isinstance(TextCrossAttention(8, 8, 8), Conditioner)


# ---------------------------------------------------------------- text

def test_text_cross_attention():
    B, L, D = 3, 5, 12
    text = _normal(B, L, D)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
    mod = TextCrossAttention(D, memory_dim=10, pool_dim=8, num_queries=3, pool_heads=2, cond_reduce="max", max_len=6)
    variables = _random_variables(mod, text, mask)
    text2 = text + _normal(B, L, D) * (~mask)[..., None]  # change padded tokens only

    @jit
    def run(v, t, t2, drop):
        return mod.apply(v, t, mask), mod.apply(v, t2, mask), mod.apply(v, t, mask, drop=drop), \
            mod.apply(v, t2, mask, drop=drop)

    a, b, d, d2 = run(variables, text, text2, jnp.array([False, True, False]))
    assert a.memory.shape == (B, L, 10) and a.sos.shape == (B, 3, 8) and a.adaln.shape == (B, 8)
    np.testing.assert_array_equal(a.memory_mask, mask)
    np.testing.assert_allclose(a.adaln, np.asarray(a.sos).max(1), atol=1e-6)
    np.testing.assert_allclose(a.sos, b.sos, atol=1e-5)        # padded tokens are ignored
    np.testing.assert_allclose(np.asarray(a.memory)[mask], np.asarray(b.memory)[mask], atol=1e-5)
    # dropped sample: independent of the caption (learned uncond rows), others unchanged
    np.testing.assert_allclose(d.sos[1], d2.sos[1], atol=1e-6)
    np.testing.assert_allclose(d.memory[1], d2.memory[1], atol=1e-6)
    assert not np.allclose(d.sos[1], a.sos[1])
    np.testing.assert_allclose(d.sos[0], a.sos[0], atol=1e-6)
    with pytest.raises(ShapeError):
        mod.apply(variables, _normal(B, 7, D))  # longer than max_len


# ---------------------------------------------------------------- end to end

class _MotionMARLike(nn.Module):
    """sos + projected teacher-forcing features -> transformer with scale-aware control."""

    width: int
    align: bool = True

    @nn.compact
    def __call__(self, sparse, tf_feats, drop):
        cfg = motionmar_config(width=self.width, depth=1, heads=2, vocab_size=13, drop_path=0.0)
        c = SparseScaleControl(cfg.schedule, self.width, align=self.align, name="control")(sparse, drop=drop)
        x = jnp.concatenate([c.sos, nn.Dense(self.width, name="word_embed")(tf_feats)], axis=1)
        return ScaleARTransformer(cfg, name="ar")(x, c.adaln, additive=c.additive)


class _MoScaleLike(nn.Module):
    """Text conditioning -> sos tokens, AdaLN condition and cross-attention memory."""

    @nn.compact
    def __call__(self, text, mask, tf_feats, drop):
        sch = ScaleSchedule.from_lengths((2, 3, 4))
        cfg = moscale_config(schedule=sch, width=16, depth=1, heads=2, input_dim=16, cond_dim=8, memory_dim=8,
                             vocab_size=7, dropout=0.0, drop_path=0.0)
        c = TextCrossAttention(text.shape[-1], memory_dim=8, pool_dim=8, num_queries=2, pool_heads=2,
                               max_len=6, name="text")(text, mask, drop=drop)
        x = jnp.concatenate([nn.Dense(16, name="sos_in")(c.sos), tf_feats], axis=1)
        return ScaleARTransformer(cfg, name="ar")(x, c.adaln, memory=c.memory, memory_mask=c.memory_mask)


def _assert_all_grads(g):
    for path, leaf in jax.tree_util.tree_flatten_with_path(g)[0]:
        leaf = np.asarray(leaf)
        assert np.isfinite(leaf).all(), jax.tree_util.keystr(path)
        assert np.abs(leaf).max() > 0, jax.tree_util.keystr(path)


def test_gradients_through_sparse_control_and_transformer():
    B = 2
    sparse, tf = _normal(B, 20, 54), _normal(B, 30, 6)
    labels = RNG.integers(0, 13, (B, 35))
    drop = jnp.array([False, True])
    model = _MotionMARLike(16)
    v = _random_variables(model, sparse, tf, drop)

    def loss(p):
        logits = model.apply({"params": p}, sparse, tf, drop)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1))

    val, g = jit(jax.value_and_grad(loss))(v["params"])
    assert np.isfinite(float(val))
    _assert_all_grads(g)
    out_global = jit(lambda p: _MotionMARLike(16, align=False).apply({"params": p}, sparse, tf, drop))(v["params"])
    assert out_global.shape == (B, 35, 13)


def test_gradients_through_text_conditioning_and_transformer():
    B = 2
    text, tf = _normal(B, 5, 12), _normal(B, 7, 16)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    drop = jnp.array([True, False])  # one dropped sample so the learned uncond rows get gradient
    model = _MoScaleLike()
    v = _random_variables(model, text, mask, tf, drop)

    def loss(p):
        return jnp.mean(jnp.square(model.apply({"params": p}, text, mask, tf, drop)))

    g = jit(jax.grad(loss))(v["params"])
    _assert_all_grads(g)
    unc = np.asarray(g["text"]["cfg_uncond"])
    assert np.abs(unc[:3]).max() > 0 and not unc[3:].any()  # only the rows under the mask
