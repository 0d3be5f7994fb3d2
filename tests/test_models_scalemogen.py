"""ScaleMoGen's predictor (mmar.models.scalemogen) on the official 11-scale, 864-token skeletal
schedule with a tiny transformer: the paper config, the next-scale inputs against the
quantiser's teacher forcing, the 1/sqrt(area) bit loss, cached sampling against the
teacher-forced forward, and the zero-shot editing rule."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar.errors import ConfigError, ShapeError
from mmar.models import scalemogen as smg
from mmar.models.quantizers.skeletal import SkeletalQuantizer, SkeletalQuantizerConfig
from mmar.models.scale_ar import ScaleARConfig, scalemogen_config
from mmar.models.text import TextEncoderConfig
from mmar.models.vqvae import SkeletalVQVAE, SkeletalVQVAEConfig

Q = SkeletalQuantizerConfig()

#: XLA's backend (LLVM) optimisation off for the graphs compiled here: the 11 unrolled scales
#: compile in about half the time and run only a few times (same HLO, same semantics).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def fast_jit(f, **kw):
    return jax.jit(f, compiler_options=FAST_COMPILE, **kw)


def tiny(**kw) -> smg.ScaleMoGenConfig:
    t = scalemogen_config(width=32, depth=2, heads=2, mlp_round=1, memory_dim=16, cond_dim=24, drop_path=0.0,
                          init_std=0.05, init_head=1.0, init_adaln_gamma=1.0)
    text = TextEncoderConfig(vocab_size=30, width=16, depth=1, heads=2, max_len=8, dropout=0.0)
    return smg.ScaleMoGenConfig(transformer=t, text=text, quantizer=Q, pool_heads=2, length_hidden=8, **kw)


@pytest.fixture(scope="module")
def model():
    cfg = tiny()
    net = smg.ScaleMoGen(cfg)
    vq_cfg = SkeletalVQVAEConfig(latent_dim=8, n_extra_layers=0, dropout=0.0)
    vq = SkeletalVQVAE(vq_cfg)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 196, 263)), jnp.float32)
    # jit-compiled: op-by-op initialisation dispatches (and compiles) thousands of small ops
    vq_vars = fast_jit(vq.init)({"params": jax.random.PRNGKey(1)}, x)
    ids = jnp.asarray([[1, 5, 6, 2, 0, 0, 0, 0], [1, 7, 8, 9, 2, 0, 0, 0]], jnp.int32)
    tmask = ids > 0
    inputs = [jnp.zeros((2, n, Q.code_dim), jnp.float32) for n in Q.token_counts[1:]]  # init reads shapes only
    params = fast_jit(net.init)({"params": jax.random.PRNGKey(2)}, ids, tmask, inputs)["params"]
    return cfg, net, params, vq, vq_vars, ids, tmask


def test_the_paper_schedule_and_config_checks():
    sch = smg.schedule_of(Q)
    assert sch.lengths == (1, 2, 4, 6, 14, 21, 36, 72, 120, 245, 343) and sch.total == 864
    assert sch == scalemogen_config().schedule
    w = smg.scale_weights(sch)
    assert w.sum() == pytest.approx(1.0) and w[0] / w[-1] == pytest.approx(np.sqrt(343))
    with pytest.raises(ConfigError, match="bitwise head"):
        smg.ScaleMoGenConfig(transformer=scalemogen_config(head="categorical"), text=tiny().text, quantizer=Q)
    with pytest.raises(ConfigError, match="schedule"):
        other = SkeletalQuantizerConfig(mapping=((0, 0), (6, 4)))
        smg.ScaleMoGenConfig(transformer=scalemogen_config(), text=tiny().text, quantizer=other)
    with pytest.raises(ConfigError, match="pool_heads"):
        smg.ScaleMoGenConfig(transformer=scalemogen_config(), text=tiny().text, quantizer=Q, pool_heads=5)


def test_next_scale_inputs_are_the_quantizers_teacher_forcing():
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(size=(2, 49, 7, 24)), jnp.float32)
    mask = jnp.asarray(np.arange(49)[None] < np.array([[30], [49]]))
    qz = SkeletalQuantizer(Q)

    # each side jit-compiled on its own (op-by-op dispatch of the 11 scales is slow)
    @fast_jit
    def quantizer_side(z, mask):
        codes = qz.apply({}, z, mask, method=SkeletalQuantizer.encode_codes)
        want = qz.apply({}, codes, mask, method=SkeletalQuantizer.teacher_forcing_inputs)
        return codes, want, qz.apply({}, codes, mask, method=SkeletalQuantizer.decode_codes)

    @fast_jit
    def predictor_side(codes):
        tm = smg.token_masks(Q, jnp.asarray([30, 49]))
        f_hat = jnp.zeros((2, 49 * 7, 24))
        got = []
        for k in range(Q.num_scales - 1):
            f_hat = f_hat + smg.scale_contribution(Q, k, codes[k], tm[k])
            got.append(smg.next_scale_input(Q, k + 1, f_hat))
        return got, f_hat + smg.scale_contribution(Q, Q.num_scales - 1, codes[-1], tm[-1]), tm

    codes, want, decoded = quantizer_side(z, mask)
    got, full, tm = predictor_side(codes)
    assert len(got) == len(want) == Q.num_scales - 1
    for k in range(Q.num_scales - 1):
        np.testing.assert_allclose(got[k], want[k], atol=1e-6)
    np.testing.assert_allclose(full.reshape(2, 49, 7, 24), decoded, atol=1e-6)
    assert [int(m[0].sum()) for m in tm][-1] == 30 * 7


def test_bit_loss_weights_and_values():
    sch = smg.schedule_of(Q)
    bit_loss = fast_jit(smg.bit_loss, static_argnames=("schedule", "area_weighting"))
    bits = jnp.asarray(np.random.default_rng(2).integers(0, 2, (2, 864, 24)), jnp.int32)
    valid = jnp.ones((2, 864), bool).at[1, 500:].set(False)
    uniform = jnp.zeros((2, 864, 24, 2))
    loss, m = bit_loss(uniform, bits, valid, sch)
    w = smg.scale_weights(sch)
    assert float(loss) == pytest.approx(np.log(2) * (1 + w[:500].sum()) / 2, rel=1e-5)
    perfect = jax.nn.one_hot(bits, 2) * 30.0
    loss, m = bit_loss(perfect, bits, valid, sch)
    assert float(loss) < 1e-6 and float(m["bit_acc"]) == 1.0 and float(m["token_acc"]) == 1.0
    flat, _ = bit_loss(uniform, bits, valid, sch, area_weighting=False)
    assert float(flat) == pytest.approx(np.log(2) * (1 + 500 / 864) / 2, rel=1e-5)
    with pytest.raises(ShapeError):
        smg.bit_loss(uniform[:, :10], bits, valid, sch)


@pytest.fixture(scope="module")
def sampler(model):
    """``run(ids, tmask, lengths, key, edit=None)``: the model's sampler, jit-compiled once per
    editing mode (the weights are closed over); ``probs(ids, tmask, bits, lengths)``:
    :func:`smg.source_bit_probs`, jit-compiled."""
    cfg, net, params, vq, vq_vars, _, _ = model
    sc = smg.SamplingConfig(guidance=3.0, temperature=1.3)
    run = fast_jit(lambda i, m, n, k, e=None: smg.sample(net, params, vq, vq_vars, i, m, n, k, sc, edit=e))
    probs = fast_jit(lambda i, m, b, n: smg.source_bit_probs(net, params, i, m, b, n, sc))
    return run, sc, probs


def test_cached_sampling_matches_the_teacher_forced_forward(model, sampler):
    cfg, net, params, vq, vq_vars, ids, tmask = model
    run, sc, probs = sampler
    lengths = jnp.asarray([120, 196])
    out = run(ids, tmask, lengths, jax.random.PRNGKey(3))
    bits = out["bits"]
    assert [b.shape[1] for b in bits] == list(Q.token_counts) and out["features"].shape == (2, 196, 263)
    assert int(out["token_masks"][-1][0].sum()) == 30 * 7 and not bits[-1][0, 30 * 7:].any()
    assert np.all(np.asarray(out["features"][0, 120:]) == 0)
    # the probability the cached pass gave each sampled bit == the full forward on those bits
    p = probs(ids, tmask, bits, lengths)
    for k in range(Q.num_scales):
        p_cached = jnp.where(bits[k] == 1, out["p_one"][k], 1 - out["p_one"][k])
        valid = np.asarray(out["token_masks"][k])
        np.testing.assert_allclose(np.asarray(p[k])[valid], np.asarray(p_cached)[valid], atol=2e-4)
    # not a constant: the bits depend on the noise, and guidance changes the probabilities
    out2 = run(ids, tmask, lengths, jax.random.PRNGKey(4))
    assert any(bool((a != b).any()) for a, b in zip(bits, out2["bits"]))


def test_editing_rule_keeps_and_regenerates(model, sampler):
    cfg, net, params, vq, vq_vars, ids, tmask = model
    run, sc, probs = sampler
    lengths = jnp.asarray([196, 196])
    key = jax.random.PRNGKey(5)
    src = run(ids[::-1], tmask[::-1], lengths, jax.random.PRNGKey(9))
    free = run(ids, tmask, lengths, key)
    p_src = probs(ids[::-1], tmask[::-1], src["bits"], lengths)

    def edit(editable, **kw):
        return run(ids, tmask, lengths, key, smg.EditInputs(bits=src["bits"], editable=editable, p_src=p_src, **kw))

    @functools.partial(fast_jit, static_argnames="gamma")
    def soft_edit(editable, tau, gamma):
        """``edit(editable, gamma=gamma, tau=tau, soft=True)`` with ``tau`` traced: one
        compilation serves every threshold."""
        e = smg.EditInputs(bits=src["bits"], editable=editable, p_src=p_src, gamma=gamma, tau=tau, soft=True)
        return smg.sample(net, params, vq, vq_vars, ids, tmask, lengths, key, sc, edit=e)

    none = [jnp.zeros(b.shape[:2], bool) for b in src["bits"]]
    kept = edit(none)
    for a, b in zip(kept["bits"], src["bits"]):
        np.testing.assert_array_equal(a, b)  # nothing editable: the source, bit for bit
    np.testing.assert_allclose(kept["features"], src["features"], atol=1e-5)
    every = [jnp.ones(b.shape[:2], bool) for b in src["bits"]]
    for a, b in zip(edit(every)["bits"], free["bits"]):
        np.testing.assert_array_equal(a, b)  # everything editable: the free sample of the same noise
    # the upper body (groups 4, 5, 6) of the finest scale only
    last = np.zeros((2, 343), bool)
    last[:, np.arange(343) % 7 >= 4] = True
    part = edit(none[:-1] + [jnp.asarray(last)])
    for k in range(Q.num_scales - 1):
        np.testing.assert_array_equal(part["bits"][k], src["bits"][k])
    lb, sb, fb = (np.asarray(x["bits"][-1]) for x in (part, src, free))
    np.testing.assert_array_equal(lb[~last], sb[~last])
    assert (lb[last] != sb[last]).any()
    # semantic: scales < gamma copied; later bits resampled only where p_src - p_tgt > tau
    never = soft_edit(none, 2.0, gamma=2)
    for a, b in zip(never["bits"], src["bits"]):
        np.testing.assert_array_equal(a, b)
    always = soft_edit(none, -2.0, gamma=2)
    for k in range(2):
        np.testing.assert_array_equal(always["bits"][k], src["bits"][k])
    assert any(bool((always["bits"][k] != src["bits"][k]).any()) for k in range(2, Q.num_scales))
