"""ScaleMoGen skeletal-temporal BSQ quantiser: the 864-token schedule, API/jit, stochastic
depth, masks and bit correction with re-quantisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar.errors import ConfigError, ShapeError
from mmar.models.quantizers.bsq import BSQConfig
from mmar.models.quantizers.resample import resample_matrix
from mmar.models.quantizers.skeletal import (
    SCALEMOGEN_SKELETAL,
    SkeletalQuantizer,
    SkeletalQuantizerConfig,
    group_pool_matrix,
    scale_down_matrix,
    scale_up_matrix,
    scale_valid_lengths,
)

Q = SkeletalQuantizer
B, T, J, C = 3, 4, 7, 6
# a tiny schedule: (1, G0) (2, G1) (2, G3) (4, G4) -> 1, 4, 10, 28 tokens
TINY = SkeletalQuantizerConfig(num_steps=T, time_factors=(4, 2, 1), mapping=((0, 0), (1, 1), (1, 3), (2, 4)),
                               bsq=BSQConfig(dim=C))


def _z(seed=0, cfg=TINY, b=B):
    return jax.random.normal(jax.random.PRNGKey(seed), (b, cfg.num_steps, cfg.num_groups, cfg.code_dim))


@pytest.fixture(scope="module")
def tiny():
    q = SkeletalQuantizer(TINY)

    @jax.jit
    def api(z, mask):
        out = q.apply({}, z, mask)
        codes = q.apply({}, z, mask, method=Q.encode_codes)
        return {
            "out": out,
            "codes": codes,
            "dec": q.apply({}, codes, mask, method=Q.decode_codes),
            "part": [q.apply({}, codes, n, mask, method=Q.partial_reconstruction) for n in (1, 2, 3)],
            "tf": q.apply({}, codes, mask, method=Q.teacher_forcing_inputs),
            "rec": q.apply({}, z, mask, method=Q.reconstructions),
        }

    @jax.jit
    def train(z, key):
        return q.apply({}, z, train=True, rng=key)

    @jax.jit
    def corrupt(z, key, flip_max, mask):
        c = q.apply({}, z, key, flip_max, mask, method=Q.corrupt_and_requantize)
        c["tf"] = q.apply({}, c["input_bits"], mask, method=Q.teacher_forcing_inputs)
        return c

    return q, api, train, corrupt


def test_scalemogen_schedule_has_864_tokens():
    cfg = SCALEMOGEN_SKELETAL
    assert cfg.num_scales == 11 and cfg.code_dim == 24 and (cfg.num_steps, cfg.num_groups) == (49, 7)
    assert cfg.token_counts == (1, 2, 4, 6, 14, 21, 36, 72, 120, 245, 343)
    assert cfg.num_tokens == sum(cfg.token_counts) == 864
    lengths = [cfg.scale(k)[0] for k in range(11)]
    assert lengths == [1, 2, 2, 3, 7, 7, 12, 24, 24, 49, 49]
    groups = [cfg.scale(k)[2] for k in range(11)]
    assert groups[2] == ((0, 3), (1, 2, 4, 5, 6)) and groups[8] == ((0,), (3,), (1, 2), (4, 5), (6,))
    # valid lengths: ceil(v / factor), factor = 49, 24, 16, 7, 4, 2, 1
    v = jnp.array([49, 10, 1])
    got = [np.asarray(x).tolist() for x in scale_valid_lengths(cfg, v)]
    assert got[0] == [1, 1, 1] and got[3] == [3, 1, 1] and got[4] == [7, 2, 1] and got[6] == [12, 3, 1]
    assert got[7] == [24, 5, 1] and got[10] == [49, 10, 1]
    # down = area in time then mean over each group's joints; up = linear in time, replicated
    w = scale_down_matrix(cfg, 2, "area")
    want = np.kron(resample_matrix(49, 2, "area"), group_pool_matrix(groups[2], 7))
    np.testing.assert_allclose(w, want)
    assert w.shape == (4, 343) and scale_up_matrix(cfg, 2).shape == (343, 4)
    np.testing.assert_allclose(scale_up_matrix(cfg, 2).sum(1), 1.0, atol=1e-6)
    with pytest.raises(ConfigError):
        SkeletalQuantizerConfig(mapping=((0, 0), (1, 1)))  # last scale must be the full grid
    with pytest.raises(ConfigError):
        SkeletalQuantizerConfig(group_chains=(((0, 1),),))


def test_full_scalemogen_schedule_jit_and_masks():
    q = SkeletalQuantizer(SCALEMOGEN_SKELETAL)
    z = _z(cfg=SCALEMOGEN_SKELETAL, b=2)
    mask = jnp.arange(49)[None, :] < jnp.array([[49], [10]])

    @jax.jit
    def run(z, mask):
        out = q.apply({}, z, mask)
        return out, q.apply({}, out["codes"], mask, method=Q.decode_codes)

    out, dec = run(z, mask)
    assert [c.shape for c in out["codes"]] == [(2, n, 24) for n in SCALEMOGEN_SKELETAL.token_counts]
    assert out["z_q"].shape == (2, 49, 7, 24)
    np.testing.assert_allclose(dec, out["z_q"], atol=1e-5)
    # sample 1 has 10 valid steps: e.g. scale 4 (7 steps x 2 groups) keeps ceil(10/7) = 2 steps
    assert int(out["token_masks"][4][1].sum()) == 2 * 2 and int(out["token_masks"][10][1].sum()) == 10 * 7
    assert int(out["codes"][10][1, 70:].sum()) == 0  # padded tokens: bits 0, zero codes
    assert out["scale_losses"].shape == (11,) and bool(jnp.all(jnp.isfinite(out["scale_losses"])))


def test_api_shapes_and_consistency(tiny):
    q, api, _, corrupt = tiny
    z = _z()
    mask = jnp.ones((B, T), bool)
    r = api(z, mask)
    out = r["out"]
    assert [c.shape for c in out["codes"]] == [(B, 1, C), (B, 4, C), (B, 10, C), (B, 28, C)]
    assert all(c.dtype == jnp.int32 for c in out["codes"])
    assert out["z_q"].shape == (B, T, J, C) and out["keep"].tolist() == [1.0] * 4
    for a, b in zip(r["codes"], out["codes"]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(r["dec"], out["z_q"], atol=1e-5)
    np.testing.assert_allclose(r["rec"][-1], out["z_q"], atol=1e-5)
    for n in (1, 2, 3):
        np.testing.assert_allclose(r["part"][n - 1], r["rec"][n - 1], atol=1e-5)
    # the coarsest scale: one token = sign of the mean over time and groups, replicated
    mean0 = np.asarray(z).mean((1, 2))
    np.testing.assert_array_equal(out["codes"][0][:, 0], (mean0 > 0).astype(np.int32))
    np.testing.assert_allclose(r["rec"][0], np.broadcast_to(np.sign(mean0)[:, None, None] / np.sqrt(C), (B, T, J, C)),
                               atol=1e-6)
    # the last scale quantises the full grid
    last_in = np.asarray(z) - np.asarray(r["rec"][-2])
    np.testing.assert_array_equal(out["codes"][-1], (last_in > 0).reshape(B, T * J, C).astype(np.int32))
    # teacher forcing: accumulated map resized (linear) and group-averaged; last = full grid
    assert [x.shape for x in r["tf"]] == [(B, 4, C), (B, 10, C), (B, 28, C)]
    for k in (1, 2):
        flat = np.asarray(r["rec"][k - 1]).reshape(B, T * J, C)
        np.testing.assert_allclose(r["tf"][k - 1], np.einsum("nm,bmc->bnc", scale_down_matrix(TINY, k, "linear"), flat),
                                   atol=1e-5)
    np.testing.assert_allclose(r["tf"][2], np.asarray(r["rec"][2]).reshape(B, T * J, C), atol=1e-6)
    c = corrupt(z, jax.random.PRNGKey(0), 0.0, mask)
    for a, b in zip(c["inputs"], r["tf"]):
        np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ShapeError):
        q.apply({}, jnp.zeros((1, T, J, C + 1)))


def test_stochastic_depth_drops_whole_scales(tiny):
    q, api, train, _ = tiny
    z = _z(1)
    keeps = {}
    for seed in range(300):
        if (0.0, 0.0, 0.0, 1.0) in keeps and (1.0, 1.0, 1.0, 1.0) in keeps and seed >= 20:
            break
        out = train(z, jax.random.PRNGKey(seed))
        keep = tuple(np.asarray(out["keep"]).tolist())
        assert keep[-1] == 1.0  # the final scale is never dropped
        np.testing.assert_allclose(out["loss"], np.sum(out["scale_losses"] * out["keep"]) / np.sum(out["keep"]),
                                   rtol=1e-5)
        keeps[keep] = out
    assert len(keeps) > 3  # a whole-batch decision per scale, varying with the key
    # with every non-final scale dropped, the last scale quantises the latent itself
    only_last = keeps[(0.0, 0.0, 0.0, 1.0)]
    np.testing.assert_allclose(only_last["z_q"], np.sign(np.asarray(z)) / np.sqrt(C), atol=1e-6)
    full = keeps[(1.0, 1.0, 1.0, 1.0)]
    np.testing.assert_allclose(full["z_q"], api(z, jnp.ones((B, T), bool))["out"]["z_q"], atol=1e-5)


def test_gradients_flow_through_every_scale():
    q = SkeletalQuantizer(TINY)
    z = _z(2)
    w = jax.random.normal(jax.random.PRNGKey(3), z.shape)
    g, g_loss = jax.jit(lambda z: (jax.grad(lambda z: jnp.sum(q.apply({}, z)["z_q"] * w))(z),
                                   jax.grad(lambda z: q.apply({}, z)["loss"])(z)))(z)
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0
    assert bool(jnp.all(jnp.isfinite(g_loss))) and float(jnp.abs(g_loss).max()) > 0


def _recompute_targets(cfg, z, mask, input_bits):
    """Bits of each scale for the residual left by the *input* (flipped) bits of scales < k."""
    b = z.shape[0]
    full = np.repeat(np.asarray(mask), J, axis=1)[..., None]
    r = np.asarray(z, np.float64).reshape(b, T * J, C)
    vks = [np.asarray(x) for x in scale_valid_lengths(cfg, jnp.sum(mask, 1))]
    f_hat = np.zeros_like(r)
    out = []
    for k in range(cfg.num_scales):
        length, _, groups = cfg.scale(k)
        x = (r - f_hat) * full
        if k < cfg.num_scales - 1:
            x = np.einsum("nm,bmc->bnc", scale_down_matrix(cfg, k, cfg.down), x)
        tok = np.repeat(np.arange(length)[None] < vks[k][:, None], len(groups), axis=1)[..., None]
        out.append(((x > 0) & tok).astype(np.int32))
        q = (np.asarray(input_bits[k]) * 2.0 - 1.0) / np.sqrt(C) * tok
        f_hat = f_hat + (np.einsum("mn,bnc->bmc", scale_up_matrix(cfg, k), q) if k < cfg.num_scales - 1 else q)
    return out


def test_bit_correction_flips_and_requantises(tiny):
    q, api, _, corrupt = tiny
    z = _z(3)
    mask = jnp.arange(T)[None, :] < jnp.array([[4], [3], [1]])
    clean = api(z, mask)["codes"]
    c0 = corrupt(z, jax.random.PRNGKey(0), 0.0, mask)
    np.testing.assert_array_equal(c0["flip_rates"], 0.0)
    for a, b, c in zip(c0["input_bits"], c0["target_bits"], clean):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
    n_flipped = 0
    for seed in range(3):
        c1 = corrupt(z, jax.random.PRNGKey(seed + 1), 0.3, mask)
        rates = np.asarray(c1["flip_rates"])
        assert np.all((rates >= 0) & (rates <= 0.3 + 1e-6))
        np.testing.assert_allclose(rates * 100, np.round(rates * 100), atol=1e-4)  # U{0, 0.01, ..., 0.30}
        ref = _recompute_targets(TINY, z, mask, c1["input_bits"])
        for k in range(TINY.num_scales):
            np.testing.assert_array_equal(c1["target_bits"][k], ref[k])
            tm = np.asarray(c1["token_masks"][k])
            diff = np.asarray(c1["input_bits"][k]) != np.asarray(c1["target_bits"][k])
            assert not diff[~tm].any()  # padded tokens are never flipped
            n_flipped += int(diff.sum())
        np.testing.assert_array_equal(c1["target_bits"][0], clean[0])
        for a, b in zip(c1["inputs"], c1["tf"]):
            np.testing.assert_allclose(a, b, atol=1e-5)
    assert n_flipped > 0
