"""VQ-VAEs around the multi-scale quantisers: shapes/jit, straight-through gradients to the
encoder, coarse-to-fine reconstruction API and a few optimisation steps on tiny motion batches."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmar.errors import ConfigError, ShapeError
from mmar.models.quantizers.bsq import BSQConfig
from mmar.models.quantizers.skeletal import SkeletalQuantizerConfig
from mmar.models.quantizers.temporal import TemporalQuantizerConfig
from mmar.models.vqvae import (
    MOSCALE_LOSS,
    MOSCALE_VQVAE,
    MOTIONMAR_VQVAE,
    SCALEMOGEN_LOSS,
    SCALEMOGEN_VQVAE,
    SkeletalVQVAE,
    SkeletalVQVAEConfig,
    TemporalVQVAE,
    TemporalVQVAEConfig,
    AttnBlock1D,
    hml_joint_layout,
    vqvae_loss,
)

LEARNED_Q = TemporalQuantizerConfig(lengths=(2, 4, 8), codebook_size=16, code_dim=4, codebook="learned",
                                    distance="cosine", down="linear", phi=0.5, phi_share=4, beta=0.25)
EMA_Q = TemporalQuantizerConfig(lengths=(2, 4, 8), codebook_size=16, code_dim=4, codebook="ema", distance="l2",
                                down="area", tf_down="area", phi=0.0, factors=(4, 2, 1), reset_min_factor=0.0)
# MotionMAR-like: no down-sampling, decoder conditioned on per-frame sparse features
MMAR_TINY = TemporalVQVAEConfig(in_dim=12, width=16, down_t=0, depth=1, dropout=0.0, attn=False, cond_dim=5,
                                quantizer=LEARNED_Q)
# MoScale-like: 4x down-sampling (32 -> 8), EMA codebook, masks (the attention blocks are tested
# on their own below: they dominate compile time)
MOSCALE_TINY = TemporalVQVAEConfig(in_dim=10, width=16, down_t=2, depth=1, dropout=0.0, attn=False, quantizer=EMA_Q)
SKEL_Q = SkeletalQuantizerConfig(num_steps=4, time_factors=(4, 2, 1), mapping=((0, 0), (1, 1), (1, 3), (2, 4)),
                                 bsq=BSQConfig(dim=6))
SKEL_TINY = SkeletalVQVAEConfig(latent_dim=16, n_extra_layers=0, dropout=0.0, quantizer=SKEL_Q)


def _key(seed):
    # XLA's RngBitGenerator keys: far cheaper to compile than threefry on CPU (test speed only)
    return jax.random.key(seed, impl="unsafe_rbg")


def _motion(b, t, f, seed=0):
    """Smooth synthetic 'motion' features (sums of sinusoids)."""
    rng = np.random.default_rng(seed)
    tt = np.linspace(0, 1, t)[None, :, None]
    amp, freq, phase = rng.normal(size=(3, b, 1, f))
    x = amp * np.sin(2 * np.pi * (0.5 + np.abs(freq)) * tt + phase) + 0.3 * rng.normal(size=(b, 1, f))
    return jnp.asarray(x, jnp.float32)


def test_presets():
    assert MOSCALE_VQVAE.num_frames == 196 and MOSCALE_VQVAE.quantizer.latent_length == 49
    assert MOSCALE_VQVAE.width == 512 and MOSCALE_VQVAE.attn and MOSCALE_VQVAE.in_dim == 263
    assert MOTIONMAR_VQVAE.num_frames == 20 and MOTIONMAR_VQVAE.down_t == 0 and MOTIONMAR_VQVAE.width == 512
    assert MOTIONMAR_VQVAE.code_dim == 64 and MOTIONMAR_VQVAE.cond_dim == 54
    assert SCALEMOGEN_VQVAE.num_frames == 196 and SCALEMOGEN_VQVAE.feature_dim == 263
    assert SCALEMOGEN_VQVAE.latent_dim == 384 and SCALEMOGEN_VQVAE.quantizer.num_tokens == 864
    with pytest.raises(ConfigError):
        SkeletalVQVAEConfig(n_layers=1)


@pytest.mark.parametrize("name", ["moscale", "motionmar", "scalemogen"])
def test_paper_configurations_trace(name):
    """The full-size models build and give the right shapes (traced only, nothing compiled)."""
    cls, cfg = {"moscale": (TemporalVQVAE, MOSCALE_VQVAE), "motionmar": (TemporalVQVAE, MOTIONMAR_VQVAE),
                "scalemogen": (SkeletalVQVAE, SCALEMOGEN_VQVAE)}[name]
    model = cls(cfg)
    f = cfg.in_dim if cls is TemporalVQVAE else cfg.feature_dim
    x = jax.ShapeDtypeStruct((2, cfg.num_frames, f), jnp.float32)
    mask = jax.ShapeDtypeStruct((2, cfg.num_frames), jnp.bool_)
    cond = jax.ShapeDtypeStruct((2, cfg.num_frames, 54), jnp.float32) if getattr(cfg, "cond_dim", 0) else None
    v = jax.eval_shape(lambda x, m, c: model.init(jax.random.PRNGKey(0), x, m, *([c] if c is not None else [])),
                       x, mask, cond)
    out = jax.eval_shape(lambda v, x, m, c: model.apply(v, x, m, *([c] if c is not None else [])), v, x, mask, cond)
    assert out["recon"].shape == (2, cfg.num_frames, f)
    if name == "scalemogen":
        assert [c.shape[1] for c in out["codes"]] == list(SCALEMOGEN_VQVAE.quantizer.token_counts)
        assert out["z"].shape == (2, 49, 7, 24)
    else:
        assert [c.shape[1] for c in out["codes"]] == list(cfg.quantizer.lengths)
        assert out["z"].shape == (2, cfg.quantizer.latent_length, cfg.code_dim)


def test_hml_joint_layout_round_trip():
    gather, scatter, dims = hml_joint_layout()
    assert dims[0] == 7 and dims[1] == 12 and dims[7] == dims[10] == dims[8] == dims[11] == 13
    assert gather.shape == (22, 13) and scatter.shape == (263,)
    x = np.random.default_rng(0).normal(size=(2, 263))
    xp = np.concatenate([x, np.zeros((2, 1))], -1)
    per_joint = xp[:, gather]  # (2, 22, 13), padding slots read the zero column
    np.testing.assert_array_equal(per_joint.reshape(2, -1)[:, scatter], x)
    # joint 0 = root (4) + root velocity (193:196); joint 1 = ric 4:7, rot 67:73, vel 196:199
    np.testing.assert_array_equal(gather[0, :7], [0, 1, 2, 3, 193, 194, 195])
    np.testing.assert_array_equal(gather[1, :12], [4, 5, 6, *range(67, 73), 196, 197, 198])
    assert gather[7, 12] == 259 and gather[11, 12] == 262  # contacts of joints 7, 10, 8, 11


def test_attention_block_masks_padding_and_keeps_shape():
    blk = AttnBlock1D(16, heads=2, dropout=0.1)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 16))
    lengths = jnp.array([6, 4])
    v = blk.init(_key(0), x, lengths)
    f = jax.jit(lambda v, x: blk.apply(v, x, lengths))
    y = f(v, x)
    assert y.shape == x.shape and bool(jnp.all(jnp.isfinite(y)))
    # padded keys are ignored: changing sample 1 beyond its length leaves its valid outputs
    y2 = f(v, x.at[1, 4:].set(50.0))
    np.testing.assert_allclose(y2[1, :4], y[1, :4], atol=1e-5)
    np.testing.assert_allclose(y2[0], y[0], atol=1e-6)
    assert float(jnp.abs(y - x).max()) > 0  # not an identity


def _train_steps(model, variables, x, kwargs, loss_kw, steps, lr=3e-3):
    """Adam steps; returns the trained variables, the losses and the first step's gradients."""
    tx = optax.adam(lr)
    params = variables["params"]
    extra = {k: v for k, v in variables.items() if k != "params"}
    state = tx.init(params)
    mutable = list(extra)

    @jax.jit
    def step(params, extra, state, key):
        k1, k2 = jax.random.split(key)

        def loss_fn(p):
            out, upd = model.apply({"params": p, **extra}, x, **kwargs, train=True,
                                   rngs={"dropout": k1, "vq": k2}, mutable=mutable)
            loss, _ = vqvae_loss(out, x, kwargs.get("mask"), **loss_kw)
            return loss, upd

        (loss, upd), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), {**extra, **upd}, state, loss, g

    losses, grads = [], None
    for i in range(steps):
        params, extra, state, loss, g = step(params, extra, state, _key(i + 1))
        grads = g if grads is None else grads
        losses.append(float(loss))
    return {"params": params, **extra}, losses, grads


def _assert_reaches(grads, names):
    for name in names:
        leaves = jax.tree.leaves(grads[name])
        assert all(bool(jnp.all(jnp.isfinite(l))) for l in leaves), name
        assert max(float(jnp.abs(l).max()) for l in leaves) > 0, name


# MotionMAR-like: trained on the reconstruction alone (vq_weight 0), so any gradient reaching the
# encoder went through the straight-through estimator. MoScale-like (EMA codebook, 4x
# down-sampling, masks): API and one EMA training pass (EMA training is covered by the quantiser
# tests).
@pytest.mark.parametrize(
    "cfg,loss_kw,train_steps",
    [(MMAR_TINY, {"vq_weight": 0.0}, 20), (MOSCALE_TINY, MOSCALE_LOSS, 0)],
    ids=["motionmar", "moscale"],
)
def test_temporal_vqvae(cfg, loss_kw, train_steps):
    model = TemporalVQVAE(cfg)
    b, t = 4, cfg.num_frames
    x = _motion(b, t, cfg.in_dim)
    kwargs = {}
    if cfg.cond_dim:
        kwargs["cond"] = _motion(b, t, cfg.cond_dim, seed=1)
    if cfg.down_t:
        kwargs["mask"] = jnp.arange(t)[None, :] < jnp.array([[t], [t], [24], [13]])
    variables = jax.jit(lambda k: model.init(k, x, **kwargs))(_key(0))

    @jax.jit
    def evaluate(v):
        out = model.apply(v, x, **kwargs)
        dec = model.apply(v, out["codes"], kwargs.get("mask"), kwargs.get("cond"), method=TemporalVQVAE.decode_codes)
        coarse = model.apply(v, x, 1, kwargs.get("mask"), kwargs.get("cond"), method=TemporalVQVAE.reconstruct_with_scales)
        return out, dec, coarse, vqvae_loss(out, x, kwargs.get("mask"), **loss_kw)[0]

    out, dec, coarse, loss0 = evaluate(variables)
    lat = cfg.quantizer.latent_length
    assert out["recon"].shape == (b, t, cfg.in_dim) and out["z"].shape == (b, lat, 4)
    assert [c.shape for c in out["codes"]] == [(b, 2), (b, 4), (b, 8)]
    np.testing.assert_allclose(dec, out["recon"], atol=1e-4)
    assert coarse.shape == out["recon"].shape and float(jnp.abs(coarse - out["recon"]).max()) > 0
    if "mask" in kwargs:  # 24 frames -> 6 latent steps, 13 -> 3; codes padded with -1
        assert out["latent_mask"].sum(1).tolist() == [8, 8, 6, 3]
        assert int(out["codes"][2][3, 3]) == -1 and int(out["codes"][0][3, 1]) == -1
    with pytest.raises(ShapeError):
        model.apply(variables, x[:, :-1], **kwargs)

    if cfg.quantizer.codebook == "ema":
        out_t, upd = jax.jit(lambda v: model.apply(v, x, **kwargs, train=True, rngs={"vq": _key(1)}, mutable=["vq"]))(
            variables)
        assert float(upd["vq"]["quantizer"]["initialized"]) == 1.0
        assert out_t["recon"].shape == (b, t, cfg.in_dim) and bool(jnp.isfinite(out_t["loss"]))
    if not train_steps:
        return
    # a few optimisation steps reduce the loss; the straight-through estimator carries the
    # reconstruction gradient to the encoder
    trained, losses, grads = _train_steps(model, variables, x, kwargs, loss_kw, steps=train_steps)
    _assert_reaches(grads, ["encoder", "decoder"])
    loss1 = evaluate(trained)[3]
    assert np.all(np.isfinite(losses))
    assert float(loss1) < 0.8 * float(loss0), (float(loss0), float(loss1), losses[:3], losses[-3:])


def test_skeletal_vqvae():
    cfg = SKEL_TINY
    model = SkeletalVQVAE(cfg)
    b, t = 2, cfg.num_frames
    assert t == 16
    x = _motion(b, t, 263)
    mask = jnp.arange(t)[None, :] < jnp.array([[16], [10]])
    variables = jax.jit(lambda k: model.init(k, x, mask))(_key(0))

    @jax.jit
    def evaluate(v):
        out = model.apply(v, x, mask)
        dec = model.apply(v, out["codes"], mask, method=SkeletalVQVAE.decode_codes)
        coarse = model.apply(v, x, 1, mask, method=SkeletalVQVAE.reconstruct_with_scales)
        return out, dec, coarse, vqvae_loss(out, x, mask, **SCALEMOGEN_LOSS)[0]

    out, dec, coarse, loss0 = evaluate(variables)
    assert out["recon"].shape == (b, t, 263) and out["z"].shape == (b, 4, 7, 6)
    assert [c.shape for c in out["codes"]] == [(b, 1, 6), (b, 4, 6), (b, 10, 6), (b, 28, 6)]
    assert out["latent_mask"].sum(1).tolist() == [4, 3]  # ceil(10 / 4) = 3
    np.testing.assert_allclose(dec, out["recon"], atol=1e-4)
    assert coarse.shape == out["recon"].shape and float(jnp.abs(coarse - out["recon"]).max()) > 0

    trained, losses, grads = _train_steps(model, variables, x, {"mask": mask}, SCALEMOGEN_LOSS, steps=20)
    _assert_reaches(grads, ["joint_in", "encoder", "project_in", "project_out", "decoder", "joint_out"])
    loss1 = evaluate(trained)[3]
    assert np.all(np.isfinite(losses))
    assert float(loss1) < 0.8 * float(loss0), (float(loss0), float(loss1), losses[:3], losses[-3:])
