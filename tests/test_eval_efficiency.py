import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar.eval import efficiency
from mmar.eval.efficiency import count_params, flops, latency


class _Mlp(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(32)(x))
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(4, use_bias=False)(x)


def test_count_params_dense_stack():
    params = _Mlp().init(jax.random.PRNGKey(0), jnp.zeros((1, 10)))["params"]
    expected = (10 * 32 + 32) + (32 * 16 + 16) + 16 * 4
    assert count_params(params) == expected
    assert count_params({"a": np.zeros((2, 3)), "b": [np.zeros(4)]}) == 10


def test_flops_of_matmul():
    m, k, n = 64, 128, 32
    a = jnp.ones((m, k), jnp.float32)
    b = jnp.ones((k, n), jnp.float32)
    f = flops(jnp.matmul, a, b)
    assert f == pytest.approx(2 * m * k * n, rel=0.1)
    # abstract shapes work too
    spec = jax.ShapeDtypeStruct((m, k), jnp.float32), jax.ShapeDtypeStruct((k, n), jnp.float32)
    assert flops(jnp.matmul, *spec) == pytest.approx(f)


def test_cost_dict_variants():
    assert efficiency._cost_dict({"flops": 3.0}) == {"flops": 3.0}
    assert efficiency._cost_dict([{"flops": 3.0, "x": 1}, {"flops": 2.0}])["flops"] == 5.0
    assert efficiency._cost_dict(None) == {}


def test_flops_missing_raises(monkeypatch):
    class _Compiled:
        def cost_analysis(self):
            return [{"bytes accessed": 1.0}]

    class _Lowered:
        def compile(self):
            return _Compiled()

    class _Jitted:
        def lower(self, *args, **kwargs):
            return _Lowered()

    monkeypatch.setattr(efficiency.jax, "jit", lambda fn: _Jitted())
    with pytest.raises(RuntimeError, match="no 'flops'"):
        flops(lambda x: x, 1.0)


def test_latency_keys_and_values():
    f = jax.jit(lambda x: jnp.tanh(x @ x))
    out = latency(f, jnp.ones((32, 32)), warmup=2, iters=10)
    assert set(out) >= {"median_ms", "p90_ms", "p99_ms", "mean_ms"}
    assert all(v > 0 for v in out.values())
    assert out["min_ms"] <= out["median_ms"] <= out["p90_ms"] <= out["p99_ms"]
    with pytest.raises(ValueError):
        latency(f, jnp.ones((2, 2)), iters=0)
