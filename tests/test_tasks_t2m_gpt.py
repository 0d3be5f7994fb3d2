"""The next-token baseline (mmar.tasks.t2m_gpt) on a tiny synthetic captioned dataset and a tiny
tokenizer run made here: the loss falls, the transformer is causal, sampling with and without
the KV cache gives the same motions, padding is [PAD] / zero and lengths are kept, generate
refuses bad requests and other tasks' checkpoints, the token floor reports both token sets,
and the small config has about MoScale small's parameter count."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mmar.run
from mmar.data import t2m
from mmar.errors import CheckpointError, ConfigError, MmarError
from mmar.tasks import make_task
from mmar.tasks.moscale import MoScaleGenDataConfig
from mmar.tasks.t2m_gpt import T2MGPTModelConfig, finest_tokens, token_floor
from mmar.train import train
from mmar.train.config import Config, OptimConfig, TrainConfig

from test_tasks_moscale_vqvae import _motions, tiny_config

STEPS = 30
TEXTS = ["a person moves 1", "a person moves 2", "a person moves 3"]


def _config(tokenizer: str, steps: int = STEPS) -> Config:
    m = T2MGPTModelConfig(tokenizer_workdir=tokenizer, width=32, depth=2, heads=2, cond_dim=24, memory_dim=24,
                          pool_heads=2, text_width=16, text_depth=1, text_heads=2, length_hidden=16, dropout=0.0,
                          drop_path=0.0)
    return Config(name="tiny_t2m_gpt", task="t2m_gpt", model=m, data=MoScaleGenDataConfig(eval_batch=8),
                  optim=OptimConfig(lr=2e-3, warmup_steps=0, schedule="constant"),
                  train=TrainConfig(steps=steps, batch_size=8, log_every=1, eval_every=steps, ckpt_every=steps,
                                    progress=False, async_checkpoint=False, best_metric="val_ce", best_mode="min"))


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    """XLA's backend (LLVM) optimisation off for every graph this module compiles, the task's own
    jits (train steps, evaluation, sampler, token floor) included: they compile in about half the time
    and run only a few times on tiny models (same HLO, same semantics). Restored afterwards."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture(scope="module")
def dataset():
    splits = {"train": t2m.T2MSplit("train", _motions(12, 1, "tr")), "val": t2m.T2MSplit("val", _motions(5, 2, "va"))}
    norm = t2m.feature_stats([m.features for m in splits["train"]])
    return t2m.T2MDataset("bandai", "humanml3d", 20.0, 40, 196, splits, norm.mean, norm.std)


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory):
    vq_wd = tmp_path_factory.mktemp("vq")
    cfg = tiny_config(steps=1)
    train(make_task(cfg, benchmark=dataset), cfg, vq_wd)
    wd = tmp_path_factory.mktemp("t2m_gpt")
    cfg = _config(str(vq_wd))
    _, hist = train(make_task(cfg, benchmark=dataset), cfg, wd)
    return vq_wd, mmar.run.load(wd, benchmark=dataset), hist


def test_loss_falls_and_validation_runs(runs):
    _, run, hist = runs
    losses = [h["train/loss"] for h in hist if "train/loss" in h]
    assert len(losses) == STEPS and np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])
    ev = [h for h in hist if "eval/val_ce" in h][-1]
    assert np.isfinite(ev["eval/val_ce"]) and 0 <= ev["eval/val_acc"] <= 1
    assert {"train/ce", "train/length_ce", "train/corrupted"} <= {k for h in hist for k in h}
    corrupted = np.mean([h["train/corrupted"] for h in hist if "train/corrupted" in h])
    assert 0.3 < corrupted < 0.7  # pkeep 0.5: half the inputs replaced (a random code may equal the true one)


def test_causal(runs):
    from mmar.models.t2m_gpt import T2MGPT

    _, run, _ = runs
    net_cfg, _, tok, _, _ = run.task._frozen(run.variables)
    ids, mask = tok.encode(TEXTS[:2])
    T = net_cfg.length
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, net_cfg.codebook_size, (2, T - 1))
    f = jax.jit(lambda i: T2MGPT(net_cfg).apply({"params": run.variables["params"]}, ids, mask, i)[0])
    base = np.asarray(f(inputs))
    for i in (0, 7, T - 2):  # token i is the input of position i + 1
        changed = inputs.copy()
        changed[:, i:] = rng.integers(0, net_cfg.codebook_size + 1, (2, T - 1 - i))
        out = np.asarray(f(changed))
        np.testing.assert_allclose(out[:, :i + 1], base[:, :i + 1], rtol=1e-5, atol=1e-5)
        assert np.abs(out[:, i + 1] - base[:, i + 1]).max() > 1e-4


def test_cache_parity_padding_and_lengths(runs):
    _, run, _ = runs
    lengths = [61, 100, 196]
    g, codes = run.task.generate(run.variables, TEXTS, lengths, seed=3, return_codes=True)
    g2, codes2 = run.task.generate(run.variables, TEXTS, lengths, seed=3, use_cache=False, return_codes=True)
    np.testing.assert_array_equal(codes, codes2)
    np.testing.assert_allclose(g.features, g2.features, atol=1e-5)
    np.testing.assert_array_equal(g.lengths, [60, 100, 196])
    assert g.features.shape == (3, 196, 263) and np.all(np.isfinite(g.features))
    valid = np.arange(49)[None] < (g.lengths // 4)[:, None]
    assert np.all(codes[~valid] == -1) and np.all((codes[valid] >= 0) & (codes[valid] < 32))
    for i, n in enumerate(g.lengths):
        assert np.all(g.features[i, n:] == 0) and np.abs(g.features[i, :n]).sum() > 0
    # another seed, other tokens
    _, codes3 = run.task.generate(run.variables, TEXTS, lengths, seed=4, return_codes=True)
    assert not np.array_equal(codes, codes3)
    gl = run.task.generate(run.variables, TEXTS, None, seed=0)  # the length head's choice
    assert np.all(gl.lengths % 4 == 0) and np.all((gl.lengths >= 40) & (gl.lengths <= 196))


def test_generate_refuses(runs, dataset):
    from mmar.models.text import TextInputError
    from mmar.tasks.moscale import MoScaleModelConfig

    vq_wd, run, _ = runs
    gen = run.task.generate
    v = run.variables
    with pytest.raises(ConfigError, match="no text"):
        gen(v, [], [60])
    with pytest.raises(TextInputError):
        gen(v, ["a person moves 1", "  "], [60, 60])
    for bad in ([10], [500], [float("nan")], [-4]):
        with pytest.raises(ConfigError, match="lengths"):
            gen(v, TEXTS[:1], bad)
    with pytest.raises(MmarError, match="lengths"):
        gen(v, TEXTS[:2], [60])
    with pytest.raises(ConfigError, match="steps"):
        gen(v, TEXTS[:1], [60], steps=4)
    # a tokenizer run's variables; MoScale's predictor (same collections, other params)
    with pytest.raises(CheckpointError, match="tokenizer"):
        gen(mmar.run.load(vq_wd, benchmark=dataset).variables, TEXTS[:1], [60])
    ms_cfg = _config(str(vq_wd))
    ms_cfg.task = "moscale"
    ms_cfg.model = MoScaleModelConfig(tokenizer_workdir=str(vq_wd), width=32, depth=2, heads=2, cond_dim=24,
                                      memory_dim=24, pool_heads=2, text_width=16, text_depth=1, text_heads=2,
                                      length_hidden=16, rope_freq_repeat=1)
    ms = make_task(ms_cfg, benchmark=dataset)
    shapes = jax.eval_shape(ms.init, jax.random.PRNGKey(0), next(ms.train_iterator(0)))
    other = {**v, "params": jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes["params"])}
    with pytest.raises(CheckpointError, match="t2m_gpt"):
        gen(other, TEXTS[:1], [60])


def test_token_floor_and_finest_tokens(runs, dataset):
    from mmar.models.vqvae import TemporalVQVAE

    vq_wd, _, _ = runs
    vq = mmar.run.load(vq_wd, benchmark=dataset)
    out = token_floor(vq.task.vq_cfg, vq.variables, dataset, "val", 8)
    assert out["motions"] == 5
    for name in ("multiscale", "finest", "latent"):
        assert np.isfinite(out[name]["mpjpe_root_cm"]) and out[name]["mpjpe_root_cm"] > 0
    assert 0 < out["finest"]["usage"] <= 1
    b = next(vq.task.train_iterator(0))
    codes = np.asarray(finest_tokens(TemporalVQVAE(vq.task.vq_cfg), vq.variables, b["motion"], b["mask"]))
    valid = np.arange(49)[None] < (b["length"] // 4)[:, None]
    assert np.all(codes[~valid] == -1) and np.all(codes[valid] >= 0)


def test_small_config_matches_moscale_small_size():
    from mmar.models.moscale import MoScale
    from mmar.models.t2m_gpt import T2MGPT
    from mmar.tasks.moscale_vqvae import MoScaleVQVAEModelConfig, vqvae_config
    from mmar.train.config import load_config

    vq_cfg = vqvae_config(MoScaleVQVAEModelConfig(codebook_size=512, code_dim=64), 263)
    counts = {}
    for name, net in (("moscale_small", MoScale), ("t2m_gpt_small", T2MGPT)):
        cfg = load_config(f"configs/{name}.py", ["train.best_metric=val_ce", "model.pkeep=0.4"
                                                 if name == "t2m_gpt_small" else "model.gamma_max=0.6"])
        nc = make_task(cfg).net_config(vq_cfg, 186)
        ids = jnp.zeros((1, nc.text.max_len), jnp.int32)
        if net is MoScale:
            args = (jnp.zeros((1, sum(nc.lengths)), jnp.int32), [jnp.zeros((1, n, 64)) for n in nc.lengths[1:]])
        else:
            args = (jnp.zeros((1, nc.length - 1), jnp.int32),)
            assert cfg.task == "t2m_gpt" and cfg.model.pkeep == 0.4 and cfg.train.steps == 3000
        shapes = jax.eval_shape(lambda k: net(nc).init(k, ids, ids > 0, *args), jax.random.PRNGKey(0))
        counts[name] = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes["params"]))
    assert counts["moscale_small"] == 5_625_265
    assert abs(counts["t2m_gpt_small"] / counts["moscale_small"] - 1) < 0.02


def test_decode_position_matches_the_full_forward():
    """RoPE, level embedding, pos_start and an input projection (learned positions: the cache
    parity test above)."""
    from mmar.models.scale_ar import ScaleARConfig, ScaleARTransformer, ScaleSchedule

    N, B = 7, 2
    c = ScaleARConfig(schedule=ScaleSchedule.from_lengths((1,) * N), width=16, depth=2, heads=2, input_dim=8,
                      positions="rope_1d_scale_normalized", level_embedding=True, pos_start=True, cross_attention=True, memory_dim=12,
                      null_cond=False, vocab_size=11)
    r = np.random.default_rng(0)
    x, cond = r.normal(size=(B, N, 8)).astype(np.float32), r.normal(size=(B, 16)).astype(np.float32)
    mem, mm = r.normal(size=(B, 5, 12)).astype(np.float32), np.arange(5)[None] < np.array([[3], [5]])
    model = ScaleARTransformer(c)
    v = jax.jit(model.init)(jax.random.PRNGKey(0), x, cond, memory=mem, memory_mask=mm)
    full = jax.jit(model.apply)(v, x, cond, memory=mem, memory_mask=mm)

    @jax.jit
    def step(cache, i):
        xi = jax.lax.dynamic_slice_in_dim(x, i, 1, axis=1)
        return model.apply(v, cache, xi, i, cond, mem, mm, method=ScaleARTransformer.decode_position)

    cache = model.init_cache(B)
    for i in range(N):
        lg, cache = step(cache, i)
        np.testing.assert_allclose(lg[:, 0], full[:, i], rtol=1e-4, atol=1e-5)
    m2 = ScaleARTransformer(dataclasses.replace(c, schedule=ScaleSchedule.from_lengths((1, 2, 4))))
    v2 = jax.eval_shape(m2.init, jax.random.PRNGKey(0), x, cond, memory=mem, memory_mask=mm)
    with pytest.raises(ConfigError, match="causal"):
        jax.eval_shape(lambda p: m2.apply(p, m2.init_cache(B), x[:, :1], 0, cond, mem, mm,
                                          method=ScaleARTransformer.decode_position), v2)
