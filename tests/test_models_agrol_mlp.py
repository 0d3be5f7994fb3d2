"""AGRoL-MLP: shapes, published parameter count, frame-mixing semantics, online prediction."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar.errors import ShapeError
from mmar.models.agrol_mlp import AGRoLMLP, AGRoLMLPConfig, FrameMix, pad_clip_start, predict_online


def _normal(seed, *shape):
    """Test data from numpy (cheaper than compiling eager jax.random ops per shape)."""
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


TINY = AGRoLMLPConfig(window=6, dim=16, depth=2)


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def tiny():
    model = AGRoLMLP(TINY)
    x = _normal(101, 3, TINY.window, 54)
    variables = model.init(jax.random.PRNGKey(0), x)
    return model, variables, x


def test_output_shape_and_jit(tiny):
    model, variables, x = tiny
    y = jax.jit(model.apply)(variables, x)
    assert y.shape == (3, TINY.window, 22, 6)
    np.testing.assert_allclose(y, model.apply(variables, x), atol=1e-5)
    assert bool(jnp.all(jnp.isfinite(y)))


def test_gradients_finite(tiny):
    model, variables, x = tiny
    g = jax.grad(lambda v: jnp.mean(model.apply(v, x) ** 2))(variables)
    leaves = jax.tree.leaves(g)
    assert all(bool(jnp.all(jnp.isfinite(l))) for l in leaves)
    assert any(float(jnp.abs(l).max()) > 0 for l in leaves)


def test_published_parameter_count():
    # AGRoL-MLP at its published configuration: 3.74M parameters (Mem-MLP paper, Table 16).
    model = AGRoLMLP(AGRoLMLPConfig())
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 196, 54)))
    assert _count(shapes["params"]) == 3_735_668


def test_tiny_parameter_count_formula(tiny):
    _, variables, _ = tiny
    W, C, D = TINY.window, TINY.dim, TINY.depth
    block = (W * W + W) + 2 * (2 * C) + (C * C + C)
    expected = (54 * C + C) + D * block + (C * 132 + 132)
    assert _count(variables["params"]) == expected


def test_framemix_is_conv1d_over_frames():
    x = _normal(102, 2, 5, 7)
    mod = FrameMix(3)
    v = mod.init(jax.random.PRNGKey(0), x)
    y = mod.apply(v, x)
    k, b = np.asarray(v["params"]["kernel"]), np.asarray(v["params"]["bias"])
    xn = np.asarray(x)
    ref = np.zeros((2, 3, 7))
    for i in range(3):
        for j in range(5):
            ref[:, i, :] += k[i, j] * xn[:, j, :]
        ref[:, i, :] += b[i]
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_wrong_window_raises(tiny):
    model, variables, _ = tiny
    with pytest.raises(ShapeError):
        model.apply(variables, jnp.zeros((1, TINY.window + 1, 54)))


def test_pad_clip_start():
    clip = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
    p = pad_clip_start(clip, 4, "edge")
    assert p.shape == (2, 6, 2)
    np.testing.assert_array_equal(p[:, :3], jnp.repeat(clip[:, :1], 3, 1))
    z = pad_clip_start(clip, 4, "zero")
    np.testing.assert_array_equal(z[:, :3], 0.0)
    np.testing.assert_array_equal(z[:, 3:], clip)


def test_predict_online_matches_windows(tiny):
    model, variables, _ = tiny
    W = TINY.window
    clip = _normal(103, 2, 9, 54)
    out = jax.jit(lambda v, c: predict_online(model, v, c))(variables, clip)
    assert out.shape == (2, 9, 22, 6)
    padded = pad_clip_start(clip, W)
    for t in (0, 4, 8):
        ref = model.apply(variables, padded[:, t : t + W])[:, -1]
        np.testing.assert_allclose(out[:, t], ref, atol=1e-5)
