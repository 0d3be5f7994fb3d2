"""Binary spherical quantisation: unit-norm codes, bit round trips, losses, straight-through."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar.errors import ConfigError, ShapeError
from mmar.models.quantizers.bsq import (
    BSQConfig,
    bits_to_codes,
    bits_to_index,
    bsq_losses,
    bsq_quantize,
    codes_to_bits,
    index_to_bits,
)

D = 24


@pytest.fixture(scope="module")
def quantized():
    z = jax.random.normal(jax.random.PRNGKey(0), (3, 5, D)) * 3.0
    mask = jnp.array([[1, 1, 1, 0, 0], [1] * 5, [1, 0, 0, 0, 0]], bool)
    out = jax.jit(lambda z, m: bsq_quantize(z, BSQConfig(), m))(z, mask)
    return z, mask, out


def test_codes_are_unit_norm_signs(quantized):
    z, mask, out = quantized
    q = np.asarray(out["q"])
    valid = np.asarray(mask)
    np.testing.assert_allclose(np.linalg.norm(q[valid], axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.abs(q[valid]), 1 / np.sqrt(D), atol=1e-7)
    np.testing.assert_array_equal(np.sign(q[valid]), np.sign(np.asarray(z)[valid]))
    assert np.all(q[~valid] == 0) and np.all(np.asarray(out["bits"])[~valid] == 0)
    u = np.asarray(out["u"])
    np.testing.assert_allclose(np.linalg.norm(u, axis=-1), 1.0, atol=1e-5)


def test_bits_round_trip(quantized):
    _, mask, out = quantized
    bits = out["bits"]
    assert bits.dtype == jnp.int32 and set(np.unique(bits)) <= {0, 1}
    codes = bits_to_codes(bits)
    valid = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(codes)[valid], np.asarray(out["q"])[valid], atol=1e-7)
    np.testing.assert_array_equal(codes_to_bits(codes), bits)
    idx = bits_to_index(bits)
    assert idx.dtype == jnp.int32 and int(idx.max()) < 2**D
    np.testing.assert_array_equal(index_to_bits(idx, D), bits)
    np.testing.assert_array_equal(bits_to_index(jnp.array([0] * 23 + [1])), 1)  # MSB first
    np.testing.assert_array_equal(bits_to_index(jnp.array([1] + [0] * 23)), 2**23)


def test_losses_match_hand_formula(quantized):
    z, mask, out = quantized
    cfg = BSQConfig()
    zn = np.asarray(z, np.float64)
    valid = np.asarray(mask)
    u = zn / np.linalg.norm(zn, axis=-1, keepdims=True)
    q = np.sign(u) / np.sqrt(D)
    commit = np.mean((u[valid] - q[valid]) ** 2)
    p = 1 / (1 + np.exp(4 * u * 100 / np.sqrt(D)))  # sigmoid(-4 u inv_temp / sqrt(d))

    def h(p):
        p = np.clip(p, 1e-300, 1 - 1e-16)
        return -(p * np.log(p) + (1 - p) * np.log1p(-p))

    h_ps = h(p[valid]).sum(-1).mean()
    h_cb = h(p[valid].mean(0)).sum()
    loss = 0.25 * commit + 0.1 * (h_ps - h_cb) / 100
    np.testing.assert_allclose(out["commit"], commit, rtol=1e-4)
    np.testing.assert_allclose(out["per_sample_entropy"], h_ps, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(out["codebook_entropy"], h_cb, rtol=1e-4)
    np.testing.assert_allclose(out["loss"], loss, rtol=1e-3, atol=1e-6)
    assert np.isfinite(float(out["loss"]))
    # several sets at once give the per-set values
    both = bsq_losses([out["u"], out["u"][:1]], [mask, mask[:1]], cfg)
    np.testing.assert_allclose(both["loss"][0], out["loss"], rtol=1e-5)
    assert both["loss"].shape == (2,)


def test_straight_through_gradients():
    z = jax.random.normal(jax.random.PRNGKey(1), (4, D))
    w = jax.random.normal(jax.random.PRNGKey(2), (4, D))

    def f(z, ste):
        return jnp.sum(bsq_quantize(z, BSQConfig(ste=ste))["q"] * w)

    g_id, g_sc = jax.jit(lambda z: (jax.grad(f)(z, "identity"), jax.grad(f)(z, "scaled")))(z)
    # d q / d u = I (identity) or I / sqrt(d) (scaled); u = z / |z| -> project w onto the tangent
    zn = np.asarray(z) / np.linalg.norm(np.asarray(z), axis=-1, keepdims=True)
    wn = np.asarray(w)
    tangent = (wn - np.sum(wn * zn, -1, keepdims=True) * zn) / np.linalg.norm(np.asarray(z), axis=-1, keepdims=True)
    np.testing.assert_allclose(g_id, tangent, atol=1e-5)
    np.testing.assert_allclose(g_sc, tangent / np.sqrt(D), atol=1e-5)


def test_config_and_shape_errors():
    with pytest.raises(ConfigError):
        BSQConfig(ste="none")
    with pytest.raises(ShapeError):
        bsq_quantize(jnp.zeros((2, 5)))
    # all-zero input: no NaN
    out = bsq_quantize(jnp.zeros((2, D)))
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in out.values())
