"""Temporal multi-scale residual quantiser: API/jit, exactness, coarse-to-fine error, EMA
codebook, dead-code revival, straight-through gradients, masks and MoScale's corruption.

Compiled functions are shared through module fixtures (one compile each) to keep this fast.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar.errors import ConfigError, ShapeError
from mmar.models.quantizers.resample import resample_matrix
from mmar.models.quantizers.temporal import (
    MOSCALE_TEMPORAL,
    MOTIONMAR_TEMPORAL,
    TemporalQuantizer,
    TemporalQuantizerConfig,
    revive_dead_codes,
    scale_valid_lengths,
)

B, T, D, K = 4, 8, 4, 16
LEARNED = TemporalQuantizerConfig(
    lengths=(2, 4, 8), codebook_size=K, code_dim=D, codebook="learned", distance="cosine",
    down="linear", phi=0.5, phi_share=4,
)
EMA = TemporalQuantizerConfig(
    lengths=(2, 4, 8), codebook_size=K, code_dim=D, codebook="ema", distance="l2", down="area",
    tf_down="area", phi=0.0, factors=(4, 2, 1), valid_rounding="floor", reset_min_factor=0.0,
)
FULL = jnp.ones((B, T), bool)
Q = TemporalQuantizer


def _z(seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), (B, T, D))


def _bundle(cfg):
    """Jitted entry points of one configuration, compiled once per module."""
    q = TemporalQuantizer(cfg)
    variables = jax.jit(q.init)(jax.random.PRNGKey(1), _z())

    @jax.jit
    def api(v, z, mask):
        out = q.apply(v, z, mask)
        codes = q.apply(v, z, mask, method=Q.encode_codes)
        return {
            "out": out,
            "codes": codes,
            "dec": q.apply(v, codes, method=Q.decode_codes),
            "part": [q.apply(v, codes, n, method=Q.partial_reconstruction) for n in (1, 2)],
            "tf": q.apply(v, codes, method=Q.teacher_forcing_inputs),
            "rec": q.apply(v, z, mask, method=Q.reconstructions),
        }

    @jax.jit
    def train(v, z, mask, key):
        out, upd = q.apply(v, z, mask, train=True, rng=key, mutable=["vq"])
        return out, {**v, **upd}

    @jax.jit
    def corrupt(v, z, key, gamma_max, mask):
        c = q.apply(v, z, key, gamma_max, mask, method=Q.corrupt_and_requantize)
        c["tf"] = q.apply(v, c["input_codes"], method=Q.teacher_forcing_inputs)
        return c

    return q, variables, api, train, corrupt


@pytest.fixture(scope="module")
def ema():
    return _bundle(EMA)


@pytest.fixture(scope="module")
def learned():
    return _bundle(LEARNED)


def _with_codebook(cfg, variables, cb):
    if cfg.codebook == "learned":
        return {**variables, "params": {**variables["params"], "codebook": jnp.asarray(cb)}}
    return {**variables, "vq": {**variables["vq"], "codebook": jnp.asarray(cb)}}


def test_presets_and_schedule_rules():
    assert MOTIONMAR_TEMPORAL.lengths == (5, 10, 20) and MOTIONMAR_TEMPORAL.codebook_size == 1024
    assert MOTIONMAR_TEMPORAL.code_dim == 64 and MOTIONMAR_TEMPORAL.codebook == "learned"
    assert MOSCALE_TEMPORAL.lengths == (6, 12, 24, 49) and MOSCALE_TEMPORAL.codebook_size == 512
    assert MOSCALE_TEMPORAL.code_dim == 512 and MOSCALE_TEMPORAL.codebook == "ema"
    assert MOSCALE_TEMPORAL.num_phi == 0 and MOSCALE_TEMPORAL.ema_decay == 0.99
    assert MOSCALE_TEMPORAL.num_tokens == 91 and MOTIONMAR_TEMPORAL.num_tokens == 35
    # VAR's partially shared phi: 4 convs, the one whose tick is nearest to k/(K-1)
    ticks = np.linspace(1 / 12, 11 / 12, 4)
    want = [int(np.argmin(np.abs(ticks - k / 2))) for k in range(3)]
    assert [MOTIONMAR_TEMPORAL.phi_index(k) for k in range(3)] == want
    assert [dataclasses.replace(LEARNED, phi_share=0).phi_index(k) for k in range(3)] == [0, 1, 2]
    assert [dataclasses.replace(LEARNED, phi_share=1).phi_index(k) for k in range(3)] == [0, 0, 0]
    # MoScale valid token counts: (m // 4) // s
    v = jnp.array([49, 40, 10, 3])
    got = [np.asarray(x).tolist() for x in scale_valid_lengths(MOSCALE_TEMPORAL, v)]
    assert got == [[6, 5, 1, 0], [12, 10, 2, 0], [24, 20, 5, 1], [49, 40, 10, 3]]
    ceil_cfg = dataclasses.replace(LEARNED, valid_rounding="ceil")
    assert [np.asarray(x).tolist() for x in scale_valid_lengths(ceil_cfg, jnp.array([8, 3]))] == [[2, 1], [4, 2], [8, 3]]
    with pytest.raises(ConfigError):
        TemporalQuantizerConfig(lengths=(4, 2))
    with pytest.raises(ConfigError):
        TemporalQuantizerConfig(codebook="fsq")


@pytest.mark.parametrize("name", ["learned", "ema"])
def test_api_shapes_and_consistency(name, request):
    q, v, api, _, corrupt = request.getfixturevalue(name)
    cfg = q.config
    z = _z()
    r = api(v, z, FULL)
    out = r["out"]
    assert out["z_q"].shape == out["f_hat"].shape == (B, T, D)
    assert [c.shape for c in out["codes"]] == [(B, 2), (B, 4), (B, 8)]
    assert all(c.dtype == jnp.int32 and int(c.min()) >= 0 and int(c.max()) < K for c in out["codes"])
    assert out["usage"].shape == out["perplexity"].shape == (3,)
    assert np.all((np.asarray(out["usage"]) > 0) & (np.asarray(out["usage"]) <= 1))
    assert np.all(np.asarray(out["perplexity"]) >= 1)
    assert out["residuals"].shape == (B * 14, D) and out["residual_mask"].shape == (B * 14,)
    for a, b in zip(r["codes"], out["codes"]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(r["dec"], out["f_hat"], atol=1e-5)
    np.testing.assert_allclose(out["z_q"], out["f_hat"], atol=1e-5)
    np.testing.assert_allclose(r["rec"][-1], r["dec"], atol=1e-5)
    for n in (1, 2):
        np.testing.assert_allclose(r["part"][n - 1], r["rec"][n - 1], atol=1e-5)
    # teacher forcing: f_hat after scale k-1 resized to L_k
    assert [x.shape for x in r["tf"]] == [(B, 4, D), (B, 8, D)]
    w = resample_matrix(T, 4, cfg.teacher_forcing_mode)
    np.testing.assert_allclose(r["tf"][0], np.einsum("lt,btd->bld", w, r["rec"][0]), atol=1e-5)
    np.testing.assert_allclose(r["tf"][1], r["rec"][1], atol=1e-5)
    c = corrupt(v, z, jax.random.PRNGKey(3), 0.0, FULL)
    for a, b in zip(c["inputs"], r["tf"]):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert float(out["commit_loss"]) > 0 and float(out["loss"]) > 0
    with pytest.raises(ShapeError):
        q.apply(v, jnp.zeros((1, T + 1, D)))


def test_exact_reconstruction_when_latent_lies_on_codebook_entries(ema):
    q, v, api, _, _ = ema
    cb = np.array(jax.random.normal(jax.random.PRNGKey(5), (K, D)))
    cb[0] = 0.0  # a zero code takes the (zero) residual of the finer scales
    v = _with_codebook(EMA, v, cb)
    # the latent is constant in time and equal to codebook entries: the coarsest scale is exact
    z = jnp.broadcast_to(jnp.asarray(cb[[3, 11, 7, 3]])[:, None, :], (B, T, D))
    out = api(v, z, FULL)["out"]
    np.testing.assert_array_equal(out["codes"][0], [[3, 3], [11, 11], [7, 7], [3, 3]])
    for c in out["codes"][1:]:
        np.testing.assert_array_equal(c, 0)
    np.testing.assert_allclose(out["z_q"], z, atol=1e-6)
    np.testing.assert_allclose(out["commit_loss"], 0.0, atol=1e-10)


def test_reconstruction_error_decreases_with_scales(ema):
    q, v, api, train, _ = ema
    t = np.linspace(0, 1, T)
    rng = np.random.default_rng(0)
    amp, freq, phase = rng.normal(size=(3, B, D, 3))
    sig = np.sum(amp[..., None] * np.sin(2 * np.pi * (0.3 + 0.5 * np.abs(freq[..., None])) * t + phase[..., None]), 2)
    z = jnp.asarray(sig.transpose(0, 2, 1), jnp.float32)  # (B, T, D), smooth in time
    for i in range(30):  # fit the EMA codebook on this data
        _, v = train(v, z, FULL, jax.random.PRNGKey(i))
    rec = api(v, z, FULL)["rec"]
    errs = [float(jnp.mean((r - z) ** 2)) for r in rec]
    base = float(jnp.mean(z**2))
    assert base > errs[0] > errs[1] > errs[2], (base, errs)


def test_straight_through_and_codebook_gradients(learned):
    q, v, *_ = learned
    z = _z()
    w = jax.random.normal(jax.random.PRNGKey(7), z.shape)

    @jax.jit
    def grads(v, z):
        def f(p, z):
            out = q.apply({**v, "params": p}, z)
            return jnp.sum(out["z_q"] * w), out

        (_, out), (g_p, g_z) = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(v["params"], z)
        g_loss = jax.grad(lambda p: q.apply({**v, "params": p}, z)["loss"])(v["params"])
        g_commit = jax.grad(lambda z: q.apply(v, z)["commit_loss"])(z)
        return g_z, g_p, g_loss, g_commit

    g_z, g_p, g_loss, g_commit = grads(v, z)
    np.testing.assert_allclose(g_z, w, atol=1e-6)  # straight-through: identity to the input
    assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(g_p))
    assert float(jnp.abs(g_loss["codebook"]).max()) > 0  # the codebook loss trains the codebook ...
    phis = [k for k in g_loss if k.startswith("phis")]
    assert len(phis) == 3 and all(float(jnp.abs(g_loss[k]["kernel"]).max()) > 0 for k in phis)  # ... and phi
    assert float(jnp.abs(g_commit).max()) > 0


def test_validity_masks_zero_padded_tokens_and_residuals(ema):
    q, v, api, _, _ = ema
    z = _z()
    mask = jnp.arange(T)[None, :] < jnp.array([[8], [5], [2], [8]])
    z2 = z.at[1, 5:].set(100.0).at[2, 2:].set(-50.0)  # garbage beyond the valid lengths
    ra, rb = api(v, z, mask), api(v, z2, mask)
    a, b = ra["out"], rb["out"]
    # floor(v / f): lengths 8 -> (2, 4, 8), 5 -> (1, 2, 5), 2 -> (0, 1, 2)
    for k, valid in enumerate([[2, 1, 0, 2], [4, 2, 1, 4], [8, 5, 2, 8]]):
        c = np.asarray(a["codes"][k])
        for i, n in enumerate(valid):
            assert np.all(c[i, :n] >= 0) and np.all(c[i, n:] == -1)
        np.testing.assert_array_equal(a["codes"][k], b["codes"][k])
        assert np.asarray(a["code_masks"][k]).sum(1).tolist() == valid
    np.testing.assert_allclose(a["commit_loss"], b["commit_loss"], rtol=1e-5)
    assert float(a["residual_mask"].sum()) == 5 + 11 + 23
    np.testing.assert_allclose(ra["dec"], a["f_hat"], atol=1e-5)  # -1 decodes to a zero vector


def test_ema_initialisation_update_and_dead_code_reset(ema):
    q, v, _, train, _ = ema
    mu = EMA.ema_decay
    z = _z(2)
    # first training batch: the codebook is initialised from scale-0 residuals, then updated
    out, v1 = train(v, z, FULL, jax.random.PRNGKey(0))
    assert float(v["vq"]["initialized"]) == 0.0 and float(v1["vq"]["initialized"]) == 1.0
    s0 = np.asarray(out["residuals"])[: B * 2]  # scale-0 vectors
    cb1 = np.asarray(v1["vq"]["codebook"])
    assert np.min(np.linalg.norm(cb1[:, None] - np.asarray(out["residuals"])[None], axis=-1), 1).max() < 3.0
    assert np.min(np.linalg.norm(np.asarray(v1["vq"]["code_sum"])[:, None] - s0[None], axis=-1), 1).max() < 1.0
    # second batch: EMA sums / counts; a far away (never used) code is dead and re-seeded
    v1 = {"vq": {**v1["vq"], "codebook": v1["vq"]["codebook"].at[5].set(1e3),
                 "code_count": v1["vq"]["code_count"].at[5].set(0.5)}}
    out2, v2 = train(v1, z, FULL, jax.random.PRNGKey(1))
    x = np.asarray(out2["residuals"])
    idx = np.concatenate([np.asarray(c).reshape(-1) for c in out2["codes"]])
    assert 5 not in idx
    old_sum, old_count = np.asarray(v1["vq"]["code_sum"]), np.asarray(v1["vq"]["code_count"])
    new_cb = np.asarray(v2["vq"]["codebook"])
    cnt = np.bincount(idx, minlength=K)
    count = mu * old_count + (1 - mu) * cnt
    np.testing.assert_allclose(v2["vq"]["code_count"], count, atol=1e-6)
    moved = 0
    for k in range(K):
        sel = x[idx == k]
        want_sum = mu * old_sum[k] + (1 - mu) * sel.sum(0)
        np.testing.assert_allclose(v2["vq"]["code_sum"][k], want_sum, atol=1e-5)
        if count[k] >= 1.0:  # alive: sum / count, pulled towards the assigned vectors
            np.testing.assert_allclose(new_cb[k], want_sum / count[k], atol=1e-5)
            if len(sel):
                m = sel.mean(0)
                old_k = np.asarray(v1["vq"]["codebook"][k])
                assert np.linalg.norm(new_cb[k] - m) <= np.linalg.norm(old_k - m) + 1e-6
                moved += 1
        else:  # dead: replaced by a current residual vector
            assert np.min(np.linalg.norm(x - new_cb[k], axis=-1)) < 1e-6
    assert moved >= 3 and count[5] < 1.0


def test_learned_dead_code_revival(learned):
    q, v, _, train, _ = learned
    z = _z()
    out, v1 = train(v, z, FULL, jax.random.PRNGKey(0))
    count = np.asarray(v1["vq"]["code_count"])
    idx = np.concatenate([np.asarray(c).reshape(-1) for c in out["codes"]])
    np.testing.assert_allclose(count, 0.99 + 0.01 * np.bincount(idx, minlength=K), atol=1e-6)
    np.testing.assert_array_equal(v1["params"]["codebook"], v["params"]["codebook"])  # params untouched
    stats = {"code_count": jnp.asarray(count).at[jnp.array([2, 9])].set(0.1).at[jnp.array([0, 1])].set(5.0)}
    params, new_stats, n = jax.jit(
        lambda p, s, x, w: revive_dead_codes(p, s, x, jax.random.PRNGKey(3), residual_mask=w, threshold=1.0)
    )(v["params"], stats, out["residuals"], out["residual_mask"])
    dead = np.asarray(stats["code_count"]) < 1.0
    assert int(n) == dead.sum() and dead[2] and dead[9] and not dead[0]
    old = np.asarray(v["params"]["codebook"])
    new = np.asarray(params["codebook"])
    np.testing.assert_array_equal(new[~dead], old[~dead])
    x = np.asarray(out["residuals"])
    for k in np.where(dead)[0]:
        assert np.min(np.linalg.norm(x - new[k], axis=-1)) < 1e-6
    np.testing.assert_allclose(np.asarray(new_stats["code_count"])[dead], 1.0)
    np.testing.assert_array_equal(params["phis_0"]["kernel"], v["params"]["phis_0"]["kernel"])


def _recompute_targets(cfg, cb, z, mask, input_codes):
    """Scale k's codes of the (masked) residual left by the *input* codes of scales < k."""
    m_full = np.asarray(mask)[..., None]
    z = np.asarray(z, np.float64) * m_full
    vks = [np.asarray(x) for x in scale_valid_lengths(cfg, jnp.sum(mask, 1))]
    f_hat = np.zeros_like(z)
    targets = []
    for k, length in enumerate(cfg.lengths):
        down = np.einsum("lt,btd->bld", resample_matrix(T, length, cfg.down), (z - f_hat) * m_full)
        tgt = ((down[..., None, :] - cb[None, None]) ** 2).sum(-1).argmin(-1)
        valid = np.arange(length)[None] < vks[k][:, None]
        targets.append(np.where(valid, tgt, -1))
        inp = np.asarray(input_codes[k])
        e = np.where((inp >= 0)[..., None], cb[np.maximum(inp, 0)], 0.0)
        f_hat = f_hat + np.einsum("tl,bld->btd", resample_matrix(length, T, cfg.up), e)
    return targets


def test_corruption_and_requantisation(ema):
    q, v, api, _, corrupt = ema
    cb = np.asarray(v["vq"]["codebook"], np.float64)
    z = _z(4)
    mask = jnp.arange(T)[None, :] < jnp.array([[8], [8], [6], [3]])
    clean = api(v, z, mask)["codes"]
    # gamma = 0: nothing is corrupted, inputs and targets are the clean codes
    c0 = corrupt(v, z, jax.random.PRNGKey(0), 0.0, mask)
    for a, b, c in zip(c0["input_codes"], c0["target_codes"], clean):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
    # moderate rates: targets of later scales re-quantise the residual of the corrupted prefix
    c1 = corrupt(v, z, jax.random.PRNGKey(1), 0.6, mask)
    g = np.asarray(c1["gammas"])
    assert g.shape == (3,) and np.all((g >= 0) & (g <= 0.6))
    ref = _recompute_targets(EMA, cb, z, mask, c1["input_codes"])
    for k in range(3):
        np.testing.assert_array_equal(c1["target_codes"][k], ref[k])
    # every rate > 1 (gamma_max huge): every valid input code differs from its clean target
    c2 = corrupt(v, z, jax.random.PRNGKey(2), 1e9, mask)
    assert float(c2["gammas"].min()) > 1.0
    for a, b in zip(c2["input_codes"], c2["target_codes"]):
        a, b = np.asarray(a), np.asarray(b)
        valid = b >= 0
        assert np.all(a[valid] != b[valid]) and np.all((a[valid] >= 0) & (a[valid] < K))
        np.testing.assert_array_equal(a[~valid], -1)
    ref = _recompute_targets(EMA, cb, z, mask, c2["input_codes"])
    for k in range(3):
        np.testing.assert_array_equal(c2["target_codes"][k], ref[k])
    np.testing.assert_array_equal(c2["target_codes"][0], clean[0])  # scale 0 has no prefix
    assert any(np.any(np.asarray(a) != np.asarray(b)) for a, b in zip(c2["target_codes"][1:], clean[1:]))
    # the next-scale inputs are built from the corrupted codes
    for a, b in zip(c2["inputs"], c2["tf"]):
        np.testing.assert_allclose(a, b, atol=1e-5)
