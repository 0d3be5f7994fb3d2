"""MLP VQ-VAE: shapes, quantisation, straight-through gradients, codebook usage."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmar.errors import ShapeError
from mmar.models.mlp_vqvae import MLPVQVAE, MLPVQVAEConfig, vqvae_loss


def _normal(seed, *shape):
    """Test data from numpy (cheaper than compiling eager jax.random ops per shape)."""
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


TINY = MLPVQVAEConfig(hidden=32, enc_depth=2, dec_depth=2, code_dim=8, codebook_size=16)


@pytest.fixture(scope="module")
def tiny():
    model = MLPVQVAE(TINY)
    rot = _normal(101, 4, 5, 22, 6)
    sparse = _normal(102, 4, 5, 54)
    variables = model.init(jax.random.PRNGKey(0), rot, sparse)
    return model, variables, rot, sparse


def test_shapes_and_outputs(tiny):
    model, variables, rot, sparse = tiny
    out = jax.jit(model.apply)(variables, rot, sparse)
    assert out["recon"].shape == (4, 5, 22, 6)
    assert out["z_e"].shape == out["z_q"].shape == (4, 5, 8)
    assert out["indices"].shape == (4, 5)
    assert 0.0 < float(out["usage"]) <= 1.0
    assert 1.0 <= float(out["perplexity"]) <= TINY.codebook_size + 1e-3
    assert float(out["commit_loss"]) >= 0 and float(out["codebook_loss"]) >= 0


def test_encode_returns_codebook_entries(tiny):
    model, variables, rot, sparse = tiny
    codes = model.apply(variables, rot, sparse, method=MLPVQVAE.encode)
    idx = model.apply(variables, rot, sparse, method=MLPVQVAE.encode_indices)
    cb = variables["params"]["codebook"]
    np.testing.assert_allclose(codes, cb[idx], atol=0)
    # nearest entry
    z = model.apply(variables, rot, sparse, method=MLPVQVAE.encode_continuous)
    d = jnp.sum((z[..., None, :] - cb) ** 2, -1)
    np.testing.assert_array_equal(idx, jnp.argmin(d, -1))


def test_straight_through_gradient_reaches_encoder(tiny):
    model, variables, rot, sparse = tiny

    def rec_only(v):
        out = model.apply(v, rot, sparse)
        return jnp.mean((out["recon"] - rot) ** 2)

    g = jax.grad(rec_only)(variables)["params"]
    enc = jax.tree.leaves(g["encoder"])
    assert all(bool(jnp.all(jnp.isfinite(l))) for l in enc)
    assert max(float(jnp.abs(l).max()) for l in enc) > 0  # flows through the quantiser
    # the codebook is trained by the codebook loss, not by reconstruction
    assert float(jnp.abs(g["codebook"]).max()) == 0.0
    gl = jax.grad(lambda v: vqvae_loss(model.apply(v, rot, sparse), rot)[0])(variables)["params"]
    assert float(jnp.abs(gl["codebook"]).max()) > 0


def test_training_reduces_loss_and_reports_usage(tiny):
    model, variables, rot, sparse = tiny
    rot = jnp.tanh(rot)
    tx = optax.adam(3e-3)
    params = variables
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        (loss, m), g = jax.value_and_grad(lambda q: vqvae_loss(model.apply(q, rot, sparse), rot), has_aux=True)(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, m

    first = None
    for _ in range(30):
        params, state, m = step(params, state)
        first = first if first is not None else float(m["loss"])
    assert float(m["loss"]) < first
    assert set(m) >= {"rec", "commit", "codebook", "perplexity", "usage"}


def test_pose_only_and_missing_sparse():
    cfg = MLPVQVAEConfig(hidden=16, enc_depth=1, dec_depth=1, code_dim=4, codebook_size=8, use_sparse=False)
    model = MLPVQVAE(cfg)
    rot = jnp.zeros((3, 22, 6))
    v = model.init(jax.random.PRNGKey(0), rot)
    assert model.apply(v, rot, method=MLPVQVAE.encode).shape == (3, 4)
    m2 = MLPVQVAE(TINY)
    with pytest.raises(ShapeError):
        m2.init(jax.random.PRNGKey(0), rot)


def test_revive_dead_codes_replaces_only_dead_codes_with_encoder_outputs(tiny):
    from mmar.models.mlp_vqvae import revive_dead_codes

    _, variables, _, _ = tiny
    params = variables["params"]
    count = jnp.zeros((16,)).at[3].set(1.0).at[7].set(0.2)  # codes 3 and 7 alive at threshold 0.1
    z_e = _normal(103, 40, 8)
    new, new_count = revive_dead_codes(params, count, z_e, jax.random.PRNGKey(1), threshold=0.1)
    old_cb, cb = np.asarray(params["codebook"]), np.asarray(new["codebook"])
    np.testing.assert_array_equal(cb[[3, 7]], old_cb[[3, 7]])
    rows = np.asarray(z_e)
    for k in set(range(16)) - {3, 7}:  # every dead code is now one of the batch's encoder outputs
        assert np.min(np.abs(rows - cb[k]).sum(-1)) < 1e-6, k
    np.testing.assert_allclose(np.asarray(new_count), np.where(np.asarray(count) < 0.1, 0.1, count))
    assert set(new) == set(params) and new["encoder"] is params["encoder"]
