"""Constant-matrix time resampling against PyTorch's formulas, computed by hand here."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar.errors import ConfigError
from mmar.models.quantizers.resample import (
    area_matrix,
    linear_matrix,
    nearest_matrix,
    resample,
    resample_matrix,
)


def ref_area(x: np.ndarray, n: int) -> np.ndarray:
    """Adaptive average pooling along axis 0: windows [floor(i L / n), ceil((i + 1) L / n))."""
    length = x.shape[0]
    out = []
    for i in range(n):
        a = math.floor(i * length / n)
        b = math.ceil((i + 1) * length / n)
        out.append(x[a:b].mean(0))
    return np.stack(out)


def ref_linear(x: np.ndarray, n: int) -> np.ndarray:
    """torch linear, align_corners=False: src = (i + 0.5) L / n - 0.5, clamped at 0."""
    length = x.shape[0]
    out = []
    for i in range(n):
        src = max((i + 0.5) * length / n - 0.5, 0.0)
        i0 = min(int(math.floor(src)), length - 1)
        i1 = min(i0 + 1, length - 1)
        lam = src - i0
        out.append((1 - lam) * x[i0] + lam * x[i1])
    return np.stack(out)


def test_area_49_to_6_uneven_windows():
    w = area_matrix(49, 6)
    assert w.shape == (6, 49) and w.dtype == np.float32
    # windows: [0,9) [8,17) [16,25) [24,33) [32,41) [40,49) -- 9 samples each, overlapping by one
    starts = [0, 8, 16, 24, 32, 40]
    for i, s in enumerate(starts):
        row = np.zeros(49)
        row[s:s + 9] = 1 / 9
        np.testing.assert_allclose(w[i], row, rtol=0, atol=1e-7)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)


@pytest.mark.parametrize("l_in,l_out", [(49, 6), (49, 12), (49, 24), (20, 5), (49, 3), (7, 7), (5, 12), (10, 3)])
def test_area_matches_adaptive_pool_formula(l_in, l_out):
    x = np.random.default_rng(0).normal(size=(l_in, 3))
    np.testing.assert_allclose(area_matrix(l_in, l_out) @ x, ref_area(x, l_out), atol=1e-5)


@pytest.mark.parametrize("l_in,l_out", [(6, 49), (12, 49), (24, 49), (5, 20), (10, 20), (20, 5), (49, 24), (1, 7), (3, 49)])
def test_linear_matches_half_pixel_formula(l_in, l_out):
    x = np.random.default_rng(1).normal(size=(l_in, 4))
    np.testing.assert_allclose(linear_matrix(l_in, l_out) @ x, ref_linear(x, l_out), atol=1e-5)


def test_linear_hand_values():
    # 2 -> 4: src = -0.25 (clamped 0), 0.25, 0.75, 1.25 (clamped index 1)
    x = np.array([0.0, 1.0])
    np.testing.assert_allclose(linear_matrix(2, 4) @ x, [0.0, 0.25, 0.75, 1.0], atol=1e-7)
    # 4 -> 2 (no antialias): src = 0.5, 2.5
    x = np.array([0.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(linear_matrix(4, 2) @ x, [0.5, 2.5], atol=1e-7)
    np.testing.assert_allclose(linear_matrix(5, 5), np.eye(5), atol=0)


def test_nearest_and_identity():
    np.testing.assert_array_equal(nearest_matrix(2, 4) @ np.array([1.0, 2.0]), [1, 1, 2, 2])
    np.testing.assert_array_equal(area_matrix(6, 6), np.eye(6))
    x = jnp.arange(12.0).reshape(1, 6, 2)
    np.testing.assert_array_equal(resample(x, 6, "area"), x)
    np.testing.assert_array_equal(resample(x, 6, "linear"), x)


def test_resample_axis_jit_and_matrix_cache():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 49, 3, 5))
    f = jax.jit(lambda x: (resample(x, 6, "area", axis=1), resample(x, 7, "linear", axis=-2)))
    a, b = f(x)
    assert a.shape == (2, 6, 3, 5) and b.shape == (2, 49, 7, 5)
    xn = np.asarray(x)
    np.testing.assert_allclose(a[1, :, 2], ref_area(xn[1, :, 2], 6), atol=1e-5)
    np.testing.assert_allclose(b[0, 5], ref_linear(xn[0, 5], 7), atol=1e-5)
    assert resample_matrix(49, 6, "area") is resample_matrix(49, 6, "area")  # built once
    with pytest.raises(ValueError):
        resample_matrix(49, 6, "area")[0, 0] = 1.0  # read-only
    with pytest.raises(ConfigError):
        resample_matrix(4, 2, "cubic")
    with pytest.raises(ConfigError):
        area_matrix(0, 2)
