"""MotionMAR's window model: cached next-scale inference agrees with teacher forcing, the MRN,
CFG, the sliding-window online path and its causality, and the training loss."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmar.errors import ConfigError, ShapeError
from mmar.models.motionmar import (
    MotionMAR,
    MotionMARConfig,
    ar_loss,
    check_compatible,
    infer_window,
    init_motionmar,
    predict_online,
    sliding_windows,
    teacher_forcing,
)
from mmar.models.quantizers.temporal import MOTIONMAR_TEMPORAL
from mmar.models.vqvae import MOTIONMAR_VQVAE, TemporalVQVAE

V, D = 32, 16


@pytest.fixture(scope="module")
def parts():
    q = dataclasses.replace(MOTIONMAR_TEMPORAL, codebook_size=V, code_dim=D)
    vcfg = dataclasses.replace(MOTIONMAR_VQVAE, width=32, depth=1, quantizer=q)
    vq = TemporalVQVAE(vcfg)
    key = jax.random.PRNGKey(0)
    pose = 0.3 * jax.random.normal(key, (3, 20, 132))
    sparse = jax.random.normal(jax.random.PRNGKey(1), (3, 20, 54))
    vq_vars = vq.init({"params": key, "dropout": key, "vq": key}, pose, None, sparse)
    cfg = MotionMARConfig(code_dim=D, vocab_size=V, width=32, depth=1, heads=2, mrn_hidden=16, mrn_layers=1,
                          drop_path=0.0)
    check_compatible(cfg, vcfg)
    model = MotionMAR(cfg)
    variables = init_motionmar(model, jax.random.PRNGKey(2))
    # a non-zero MRN output layer, so the refinement is not the identity
    p = jax.tree.map(lambda x: x, variables["params"])
    p["mrn"]["out"]["kernel"] = 0.05 * jax.random.normal(jax.random.PRNGKey(3), p["mrn"]["out"]["kernel"].shape)
    return model, {"params": p}, vq, vq_vars, sparse, pose


def test_cached_inference_matches_teacher_forcing(parts):
    model, variables, vq, vq_vars, sparse, _ = parts
    out = jax.jit(lambda s: infer_window(model, variables, vq, vq_vars, s, decode="greedy", refine=False))(sparse)
    ids = jnp.argmax(out["logits"], -1)
    sch = model.config.schedule
    codes = [ids[:, sch.starts[k]:sch.ends[k]] for k in range(sch.num_scales)]
    tf = vq.apply(vq_vars, codes, method=lambda m, c: m.quantizer.teacher_forcing_inputs(c))
    logits_tf = model.apply(variables, sparse, tf)
    np.testing.assert_allclose(out["logits"], logits_tf, atol=2e-4)
    # and the decoded pose is the VQ-VAE decoding of those codes
    pose = vq.apply(vq_vars, codes, None, sparse, method=TemporalVQVAE.decode_codes)
    np.testing.assert_allclose(out["pose_raw"], pose, atol=1e-4)


def test_soft_decoding_mrn_and_cfg(parts):
    model, variables, vq, vq_vars, sparse, _ = parts
    soft = infer_window(model, variables, vq, vq_vars, sparse)
    assert soft["pose"].shape == (3, 20, 132) and soft["logits"].shape == (3, 35, V)
    assert float(jnp.abs(soft["pose"] - soft["pose_raw"]).max()) > 1e-4  # the MRN acts
    g3 = infer_window(model, variables, vq, vq_vars, sparse, guidance=3.0)
    assert float(jnp.abs(g3["logits"] - soft["logits"]).max()) > 1e-4
    # sampling takes its noise as an input: zero noise at temperature 1 is greedy
    zeros = jnp.zeros((3, 35, V))
    s0 = infer_window(model, variables, vq, vq_vars, sparse, decode="sample", noise=zeros, temperature=1.0)
    gr = infer_window(model, variables, vq, vq_vars, sparse, decode="greedy")
    np.testing.assert_allclose(s0["pose"], gr["pose"], atol=1e-5)
    with pytest.raises(ShapeError, match="noise"):
        infer_window(model, variables, vq, vq_vars, sparse, decode="sample")
    with pytest.raises(ConfigError, match="decode"):
        infer_window(model, variables, vq, vq_vars, sparse, decode="beam")


def test_mrn_is_bidirectional_and_starts_as_identity(parts):
    model, variables, vq, vq_vars, sparse, pose = parts
    fresh = init_motionmar(model, jax.random.PRNGKey(5))
    np.testing.assert_allclose(model.apply(fresh, pose, sparse, method=MotionMAR.refine), pose, atol=1e-7)
    a = model.apply(variables, pose, sparse, method=MotionMAR.refine)
    b = model.apply(variables, pose.at[:, -1].add(1.0), sparse, method=MotionMAR.refine)
    assert float(jnp.abs(a[:, 0] - b[:, 0]).max()) > 1e-6  # the first frame sees the last one


def test_online_windows_are_causal_and_hops_agree(parts):
    model, variables, vq, vq_vars, _, _ = parts
    sp = jax.random.normal(jax.random.PRNGKey(7), (2, 24, 54))
    wins = sliding_windows(sp, 20, 1)
    assert wins.shape == (2, 24, 20, 54)
    np.testing.assert_array_equal(wins[:, 0, -1], sp[:, 0])
    np.testing.assert_array_equal(wins[:, 0, 0], sp[:, 0])  # edge padding at the start
    np.testing.assert_array_equal(wins[:, 23], sp[:, 4:24])
    online = jax.jit(lambda x: predict_online(model, variables, vq, vq_vars, x, hop=1, chunk=48))
    full = online(sp)
    hop4 = predict_online(model, variables, vq, vq_vars, sp, hop=4, chunk=5)
    np.testing.assert_allclose(full[:, 3::4], hop4[:, 3::4], atol=1e-5)
    cut = online(sp.at[:, 12:].set(0.0))
    np.testing.assert_allclose(cut[:, :12], full[:, :12], atol=1e-5)  # the future does not leak
    with pytest.raises(ShapeError, match="hop"):
        predict_online(model, variables, vq, vq_vars, sp[:, :23], hop=4)


def test_mrn_gets_no_gradient_into_the_transformer(parts):
    model, variables, vq, vq_vars, sparse, pose = parts
    params = variables["params"]
    codes, tf = teacher_forcing(vq, vq_vars, pose)
    assert [c.shape for c in codes] == [(3, 5), (3, 10), (3, 20)] and [x.shape for x in tf] == [(3, 10, D), (3, 20, D)]
    def grad(p, w):
        return jax.grad(lambda q: ar_loss(model, q, {}, vq, vq_vars, sparse, pose, jax.random.PRNGKey(0),
                                          mrn_weight=w)[0])(p)

    grads, grads_ce = jax.jit(lambda p: (grad(p, 1.0), grad(p, 0.0)))(params)
    for name in ("transformer", "sac", "word_embed"):
        for a, b in zip(jax.tree.leaves(grads[name]), jax.tree.leaves(grads_ce[name])):
            np.testing.assert_allclose(a, b, atol=1e-6)
    assert float(optax.tree.norm(grads["mrn"])) > 0


def test_shapes_and_compatibility_are_checked(parts):
    model, variables, vq, vq_vars, sparse, _ = parts
    with pytest.raises(ShapeError, match="sparse"):
        infer_window(model, variables, vq, vq_vars, sparse[:, :10])
    with pytest.raises(ConfigError, match="scales"):
        check_compatible(MotionMARConfig(lengths=(4, 20), code_dim=D, vocab_size=V), vq.config)
    with pytest.raises(ConfigError, match="codebook"):
        check_compatible(MotionMARConfig(code_dim=D, vocab_size=V + 1), vq.config)
    with pytest.raises(ConfigError, match="non-decreasing"):
        MotionMARConfig(lengths=(10, 5))


def test_one_scale_ablation_runs():
    q = dataclasses.replace(MOTIONMAR_TEMPORAL, lengths=(20,), codebook_size=V, code_dim=D)
    vq = TemporalVQVAE(dataclasses.replace(MOTIONMAR_VQVAE, width=16, depth=1, quantizer=q))
    key = jax.random.PRNGKey(0)
    pose, sparse = jnp.zeros((2, 20, 132)), jax.random.normal(key, (2, 20, 54))
    vq_vars = vq.init({"params": key, "dropout": key, "vq": key}, pose, None, sparse)
    cfg = MotionMARConfig(lengths=(20,), code_dim=D, vocab_size=V, width=16, depth=1, heads=2, mrn=False)
    check_compatible(cfg, vq.config)
    model = MotionMAR(cfg)
    variables = init_motionmar(model, key)
    codes, tf = teacher_forcing(vq, vq_vars, pose)
    assert len(codes) == 1 and tf == []
    out = infer_window(model, variables, vq, vq_vars, sparse, decode="greedy")
    assert out["logits"].shape == (2, 20, V)
    np.testing.assert_array_equal(out["pose"], out["pose_raw"])  # no MRN in this config
