"""Per-block rematerialisation (``ScaleARConfig.remat``): same parameters, loss and gradients as
without it, every call path still runs (training forward, KV-cached scale decoding, the
``fori_loop`` next-token decoder of T2M-GPT), less temporary memory in the compiled gradient, and
the option reaches the networks from every task config."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar.errors import ConfigError
from mmar.models.scale_ar import (
    MOSCALE_SCHEDULE,
    REMAT_POLICIES,
    AdaLNBlock,
    ScaleARConfig,
    ScaleARTransformer,
    ScaleSchedule,
    block_class,
    moscale_config,
    motionmar_config,
    scalemogen_config,
)

# LLVM optimisation off: half the XLA compile time, same numerics (as tests/test_models_scale_ar.py)
FAST = {"xla_backend_optimization_level": 0}
jit = functools.partial(jax.jit, compiler_options=FAST)
# XLA's CPU pipeline removes jax.checkpoint's optimisation barriers before scheduling (pass
# "cse_barrier_expander"), so a default CPU build merges the recomputation back and shows no
# saving; the GPU compiler removes them only after scheduling. Keep them to measure what remat does.
CPU_KEEP_BARRIERS = {"xla_disable_hlo_passes": "cse_barrier_expander"}

POLICIES = ("full", "dots", "dots_no_batch")
SCHED_1D = ScaleSchedule.from_lengths((2, 3, 4))
SCHED_2D = ScaleSchedule.from_grid(((1, 1), (2, 2), (3, 3)))
TINY = dict(width=32, depth=2, heads=2, mlp_ratio=2.0, mlp_round=1)
B = 3


def _variants(remat: str = "none") -> dict[str, ScaleARConfig]:
    """The three systems' tiny transformers with every stochastic layer on (dropout, attention
    dropout, drop-path and, for the MotionMAR one, the learned null condition)."""
    kw = dict(TINY, remat=remat)
    return {
        "moscale": moscale_config(schedule=SCHED_1D, input_dim=24, cond_dim=16, memory_dim=12, vocab_size=9,
                                  dropout=0.1, attn_dropout=0.1, drop_path=0.2, **kw),
        "scalemogen": scalemogen_config(schedule=SCHED_2D, num_bits=5, memory_dim=12, init_std=None, dropout=0.1,
                                        drop_path=0.2, **kw),
        "motionmar": motionmar_config(schedule=SCHED_1D, vocab_size=11, null_cond=True, cond_drop_prob=0.5,
                                      drop_path=0.2, **kw),
    }


def _inputs(cfg: ScaleARConfig, seed: int = 0) -> dict:
    r = np.random.default_rng(seed)
    N = cfg.schedule.total
    out = {"x": r.normal(size=(B, N, cfg.input_dim or cfg.width)).astype(np.float32),
           "cond": r.normal(size=(B, cfg.cond_width)).astype(np.float32),
           "key_mask": np.arange(N)[None, :] < np.array([[N], [N - 2], [N - 3]])}
    if cfg.cross_attention:
        out["memory"] = r.normal(size=(B, 4, cfg.memory_width)).astype(np.float32)
        out["memory_mask"] = np.arange(4)[None, :] < np.array([[4], [2], [1]])
    else:
        out["additive"] = r.normal(size=(B, N, cfg.width)).astype(np.float32)
    return out


def _random_variables(shapes, seed: int = 1, std: float = 0.2):
    """Random values for the variables' shapes (no init compiled); unlike the init (AdaLN gammas
    start at 1e-5), gradients flow through every block."""
    r = np.random.default_rng(seed)
    return jax.tree.map(lambda p: (std * r.normal(size=p.shape)).astype(p.dtype), shapes)


def _init(cfg: ScaleARConfig, inp: dict):
    """The variables' shapes."""
    model = ScaleARTransformer(cfg)
    return jax.eval_shape(lambda k: model.init(k, **inp), jax.random.PRNGKey(0))


# --------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------

def test_policies_and_validation():
    assert REMAT_POLICIES == ("none", "full", "dots", "dots_no_batch")
    assert ScaleARConfig(schedule=SCHED_1D).remat == "none"
    assert block_class(ScaleARConfig(schedule=SCHED_1D)) is AdaLNBlock
    assert issubclass(block_class(ScaleARConfig(schedule=SCHED_1D, remat="full")), AdaLNBlock)
    with pytest.raises(ConfigError, match=r"ScaleARConfig\.remat must be one of .*dots_no_batch.*'offload'"):
        ScaleARConfig(schedule=SCHED_1D, remat="offload")
    from mmar.models.motionmar import MotionMARConfig

    assert MotionMARConfig(remat="dots").ar_config().remat == "dots"
    with pytest.raises(ConfigError, match=r"MotionMARConfig\.remat"):
        MotionMARConfig(remat=True)


def test_every_task_passes_remat_to_its_network():
    from mmar.models.motionmar import MotionMARConfig
    from mmar.models.vqvae import MOSCALE_VQVAE, SCALEMOGEN_VQVAE
    from mmar.tasks.base import frozen_config
    from mmar.tasks.motionmar import MotionMARModelConfig
    from mmar.tasks.moscale import MoScaleGenDataConfig, MoScaleModelConfig, MoScaleTask
    from mmar.tasks.scalemogen import ScaleMoGenModelConfig, ScaleMoGenTask
    from mmar.tasks.t2m_gpt import T2MGPTModelConfig, T2MGPTTask
    from mmar.train.config import Config, apply_overrides

    for name, model_cls, task_cls, vq in (("moscale", MoScaleModelConfig, MoScaleTask, MOSCALE_VQVAE),
                                          ("scalemogen", ScaleMoGenModelConfig, ScaleMoGenTask, SCALEMOGEN_VQVAE),
                                          ("t2m_gpt", T2MGPTModelConfig, T2MGPTTask, MOSCALE_VQVAE)):
        assert model_cls().remat == "none"
        with pytest.raises(ConfigError, match=r"model\.remat must be one of"):
            model_cls(remat="everything")
        cfg = Config(task=name, model=model_cls(), data=MoScaleGenDataConfig())
        assert task_cls(cfg).net_config(vq, vocab_size=100).transformer.remat == "none"
        apply_overrides(cfg, ["model.remat=dots_no_batch"])  # what `--set model.remat=...` does
        assert task_cls(cfg).net_config(vq, vocab_size=100).transformer.remat == "dots_no_batch"
        apply_overrides(cfg, ["model.remat=some"])
        with pytest.raises(ConfigError, match=r"model\.remat must be one of"):
            task_cls(cfg)
    given = dict(vocab_size=1024, pose_dim=132, mrn_unroll=False)
    assert frozen_config(MotionMARConfig, MotionMARModelConfig(), **given).ar_config().remat == "none"
    assert frozen_config(MotionMARConfig, MotionMARModelConfig(remat="full"), **given).ar_config().remat == "full"


# --------------------------------------------------------------------------
# parameters, loss and gradients
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["moscale", "scalemogen", "motionmar"])
def test_parameter_tree_is_unchanged(name):
    """Same names, shapes and dtypes: checkpoints load with remat on or off."""
    base = _variants()[name]
    inp = _inputs(base)
    ref = _init(base, inp)
    names = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(ref)}
    assert "['params']['block_1']['fc1']['kernel']" in names
    for policy in POLICIES:
        got = _init(_variants(policy)[name], inp)
        assert jax.tree.structure(got) == jax.tree.structure(ref), policy
        assert jax.tree.map(lambda a: (a.shape, a.dtype), got) == jax.tree.map(lambda a: (a.shape, a.dtype), ref)


def _loss_and_grads(cfg: ScaleARConfig, variables, inp: dict):
    model = ScaleARTransformer(cfg)
    w = jax.random.normal(jax.random.PRNGKey(7), (B, cfg.schedule.total) + cfg.out_shape)
    data = {k: v for k, v in inp.items() if k not in ("x", "memory")}

    def loss(v, x, memory):
        logits = model.apply(v, x, memory=memory, train=True, rngs={"dropout": jax.random.PRNGKey(3)}, **data)
        return jnp.mean(logits * w) + 0.1 * jnp.mean(logits ** 2)

    return jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(variables, inp["x"], inp.get("memory"))


@pytest.mark.parametrize("name,policies", [("moscale", ("full", "dots_no_batch")), ("scalemogen", ("dots",))])
def test_loss_and_gradients_equal_without_remat(name, policies):
    """Training forward with dropout, attention dropout and drop-path drawn from the same rngs:
    identical loss and gradients (parameters and inputs); every policy on at least one system
    (each compile costs seconds; the block without cross-attention is traced by the parameter
    test above and differentiated in the T2M-GPT test below with learned positions)."""
    base = _variants()[name]
    inp = _inputs(base)
    variables = _random_variables(_init(base, inp))
    ref_loss, ref_grads = _loss_and_grads(base, variables, inp)
    assert np.isfinite(float(ref_loss))
    assert float(jnp.abs(ref_grads[0]["params"]["block_0"]["fc1"]["kernel"]).max()) > 1e-4
    for policy in policies:
        loss, grads = _loss_and_grads(_variants(policy)[name], variables, inp)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, atol=1e-7, err_msg=policy)
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7, err_msg=policy),
                     grads, ref_grads)


# --------------------------------------------------------------------------
# sampling paths
# --------------------------------------------------------------------------

def test_kv_cached_scale_decoding_runs_under_remat():
    """``decode_scale`` (one cached pass per scale, as MotionMAR / MoScale / ScaleMoGen sample)
    gives the teacher-forced logits of the model without remat."""
    base = _variants()["moscale"]
    cfg = _variants("full")["moscale"]
    inp = _inputs(base)
    variables = _random_variables(_init(base, inp))
    full = jit(ScaleARTransformer(base).apply)(variables, inp["x"], inp["cond"], memory=inp["memory"],
                                               memory_mask=inp["memory_mask"])
    model = ScaleARTransformer(cfg)

    @jit
    def decode_all(v, x, cond, memory, memory_mask):
        cache, out = model.init_cache(B), []
        for k in range(cfg.schedule.num_scales):
            lg, cache = model.decode_scale(v, cache, x[:, cfg.schedule.scale_slice(k)], k, cond, memory=memory,
                                           memory_mask=memory_mask)
            out.append(lg)
        return jnp.concatenate(out, axis=1)

    got = decode_all(variables, inp["x"], inp["cond"], inp["memory"], inp["memory_mask"])
    np.testing.assert_allclose(got, full, rtol=1e-4, atol=1e-5)


def test_t2m_gpt_remat_training_and_fori_loop_decoding():
    """The next-token baseline's transformer (the same AdaLN block stack over a causal schedule of
    one-token scales, learned positions, cross-attention on the text memory): equal loss and
    gradients with remat, and the ``lax.fori_loop`` KV-cached decoder of its sampler
    (``decode_position`` at a traced position) matches the full forward."""
    from mmar.models.t2m_gpt import T2MGPT, T2MGPTConfig
    from mmar.models.text import TextEncoderConfig

    T, V = 5, 10

    def net_cfg(remat):
        t = ScaleARConfig(schedule=ScaleSchedule.from_lengths((1,) * T), width=16, depth=2, heads=2,
                          cross_attention=True, memory_dim=12, cond_dim=8, null_cond=False, vocab_size=V,
                          level_embedding=False, pos_start=False, dropout=0.1, drop_path=0.2, remat=remat)
        return T2MGPTConfig(transformer=t, text=TextEncoderConfig(vocab_size=20, width=16, depth=1, heads=2),
                            code_dim=4, codebook_size=V, pool_heads=2, length_classes=T)

    base, rem = net_cfg("none"), net_cfg("full")
    ids = jnp.ones((B, 6), jnp.int32)
    codes = jnp.zeros((B, T - 1), jnp.int32)
    shapes = jax.eval_shape(T2MGPT(base).init, jax.random.PRNGKey(0), ids, ids > 0, codes)
    assert jax.tree.structure(jax.eval_shape(T2MGPT(rem).init, jax.random.PRNGKey(0), ids, ids > 0, codes)) == \
        jax.tree.structure(shapes)

    inp = _inputs(base.transformer)
    variables = {"params": _random_variables(shapes)["params"]["transformer"]}
    ref_loss, ref_grads = _loss_and_grads(base.transformer, variables, inp)
    loss, grads = _loss_and_grads(rem.transformer, variables, inp)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, atol=1e-7)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7), grads, ref_grads)

    model = ScaleARTransformer(rem.transformer)

    @jit
    def decode(v, x, cond, memory, memory_mask):
        full = model.apply(v, x, cond, memory=memory, memory_mask=memory_mask)

        def body(i, carry):
            cache, out = carry
            xi = jax.lax.dynamic_slice_in_dim(x, i, 1, axis=1)
            lg, cache = model.apply(v, cache, xi, i, cond, memory, memory_mask,
                                    method=ScaleARTransformer.decode_position)
            return cache, jax.lax.dynamic_update_slice_in_dim(out, lg, i, axis=1)

        _, got = jax.lax.fori_loop(0, T, body, (model.init_cache(B), jnp.zeros_like(full)))
        return got, full

    got, full = decode(variables, inp["x"], inp["cond"], inp["memory"], inp["memory_mask"])
    np.testing.assert_allclose(got, full, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------

def _compiled_grad(remat: str):
    """The compiled parameter gradient of a narrow, shallow transformer over MoScale's 91 tokens
    at batch 32: activations (B x N x width per op, B x heads x N x N attention scores per block)
    are far larger than the 60 k parameters."""
    cfg = moscale_config(schedule=MOSCALE_SCHEDULE, width=32, depth=4, heads=4, input_dim=32, cond_dim=32,
                         memory_dim=32, vocab_size=16, dropout=0.0, drop_path=0.0, remat=remat)
    model = ScaleARTransformer(cfg)
    Bm, N = 32, MOSCALE_SCHEDULE.total
    x = jax.ShapeDtypeStruct((Bm, N, 32), jnp.float32)
    cond = jax.ShapeDtypeStruct((Bm, 32), jnp.float32)
    mem = jax.ShapeDtypeStruct((Bm, 8, 32), jnp.float32)
    params = jax.eval_shape(lambda a, c, m: model.init(jax.random.PRNGKey(0), a, c, memory=m), x, cond, mem)

    def loss(p, a, c, m):
        return jnp.mean(model.apply(p, a, c, memory=m, train=True) ** 2)

    opts = dict(FAST, **(CPU_KEEP_BARRIERS if jax.default_backend() == "cpu" else {}))
    return jax.jit(jax.grad(loss)).lower(params, x, cond, mem).compile(compiler_options=opts)


def test_full_remat_needs_less_temporary_memory():
    none, full = _compiled_grad("none"), _compiled_grad("full")
    try:
        m_none, m_full = none.memory_analysis(), full.memory_analysis()
    except (NotImplementedError, AttributeError) as e:  # pragma: no cover - backend dependent
        pytest.skip(f"compiled memory_analysis() is unavailable on the {jax.default_backend()} backend: {e}")
    if m_none is None or m_full is None:  # pragma: no cover - backend dependent
        pytest.skip(f"compiled memory_analysis() returns nothing on the {jax.default_backend()} backend")
    t_none, t_full = m_none.temp_size_in_bytes, m_full.temp_size_in_bytes
    assert t_none > 20 * 2 ** 20, t_none  # activations dominate (parameters: 0.25 MB)
    assert t_full < 0.5 * t_none, (t_full, t_none)
    cost = [c[0] if isinstance(c, (list, tuple)) else c for c in (none.cost_analysis(), full.cost_analysis())]
    if all(c and "flops" in c for c in cost):  # the price: the forward pass of each block runs twice
        assert cost[1]["flops"] > 1.1 * cost[0]["flops"]
