"""MoScale's predictor as a task (mmar.tasks.moscale, mmar.models.moscale) on a tiny synthetic
captioned dataset and a tiny tokenizer run: the paper config is the official transformer, every
field is reachable with --set, the MaskGIT masking and the cross-scale corruption reach the loss,
training lowers the loss, a checkpoint alone generates (with and without the KV cache the same
tokens under one seed), the length estimator, refinement steps, and clear errors for bad input."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mmar.run
from mmar.data import t2m
from mmar.errors import CheckpointError, ConfigError, MmarError
from mmar.models.moscale import MoScale, SamplingConfig, maskgit_tokens, sample
from mmar.models.scale_ar import moscale_config
from mmar.models.vqvae import MOSCALE_VQVAE, TemporalVQVAE
from mmar.tasks import make_task
from mmar.tasks.moscale import MoScaleGenDataConfig, MoScaleModelConfig, MoScaleTask
from mmar.train import train
from mmar.train.config import Config, OptimConfig, TrainConfig, apply_overrides

from test_tasks_moscale_vqvae import _motions, tiny_config

TINY = dict(width=32, depth=2, heads=2, cond_dim=24, memory_dim=24, pool_heads=2, text_width=16, text_depth=1,
            text_heads=2, length_hidden=16, dropout=0.0, drop_path=0.0, rope_freq_repeat=1)


def moscale_config_for(vq_wd, steps=40, **model) -> Config:
    return Config(name="tiny_moscale", task="moscale",
                  model=MoScaleModelConfig(tokenizer_workdir=str(vq_wd), **{**TINY, **model}),
                  data=MoScaleGenDataConfig(eval_batch=8, val_masks=1),
                  optim=OptimConfig(lr=2e-3, warmup_steps=0, schedule="constant"),
                  train=TrainConfig(steps=steps, batch_size=8, log_every=5, eval_every=steps, ckpt_every=steps,
                                    progress=False, async_checkpoint=False, best_metric="val_ce", best_mode="min"))


@pytest.fixture(scope="module")
def dataset():
    splits = {"train": t2m.T2MSplit("train", _motions(12, 1, "tr")), "val": t2m.T2MSplit("val", _motions(5, 2, "va"))}
    norm = t2m.feature_stats([m.features for m in splits["train"]])
    return t2m.T2MDataset("bandai", "humanml3d", 20.0, 40, 196, splits, norm.mean, norm.std)


@pytest.fixture(scope="module")
def vq_run(dataset, tmp_path_factory):
    wd = tmp_path_factory.mktemp("vq")
    cfg = tiny_config(steps=10)
    train(make_task(cfg, benchmark=dataset), cfg, wd)
    return wd


@pytest.fixture(scope="module")
def run(dataset, vq_run, tmp_path_factory):
    wd = tmp_path_factory.mktemp("moscale")
    cfg = moscale_config_for(vq_run)
    _, hist = train(make_task(cfg, benchmark=dataset), cfg, wd)
    return wd, hist, mmar.run.load(wd, benchmark=dataset)


def test_paper_config_is_the_official_transformer(dataset):
    cfg = Config(task="moscale", model=MoScaleModelConfig(), data=MoScaleGenDataConfig())
    task = MoScaleTask(cfg, dataset=dataset)
    net = task.net_config(MOSCALE_VQVAE, vocab_size=100)
    assert net.transformer == moscale_config()
    assert (net.code_dim, net.codebook_size, net.pool_heads, net.unit, net.length_classes) == (512, 512, 3, 4, 49)
    # every field is reachable with --set
    apply_overrides(cfg, ["model.depth=3", "model.rope_base=500", "model.init_head=0.5", "model.steps=1,1,2,2",
                          "model.gamma_max=0", "model.text_depth=1"])
    net = MoScaleTask(cfg, dataset=dataset).net_config(MOSCALE_VQVAE, vocab_size=100)
    assert (net.transformer.depth, net.transformer.rope_base, net.transformer.init_head, net.text.depth) == \
        (3, 500, 0.5, 1)
    assert MoScaleTask(cfg, dataset=dataset).sampling().steps == (1, 1, 2, 2)


def test_config_errors():
    with pytest.raises(ConfigError, match="test split"):
        MoScaleTask(Config(task="moscale", model=MoScaleModelConfig(), data=MoScaleGenDataConfig(eval_split="test")))
    cfg = Config(task="moscale", model=MoScaleModelConfig(), data=MoScaleGenDataConfig(),
                 train=TrainConfig(best_metric="fid"))
    with pytest.raises(ConfigError, match="evaluator_workdir"):
        MoScaleTask(cfg)
    with pytest.raises(ConfigError, match="gamma_max"):
        MoScaleModelConfig(gamma_max=1.5)
    with pytest.raises(ConfigError, match="tokenizer_workdir"):
        MoScaleTask(Config(task="moscale", model=MoScaleModelConfig(), data=MoScaleGenDataConfig())).stage1()


def test_maskgit_tokens_mask_only_valid_positions():
    from mmar.models.moscale import MoScaleConfig
    from mmar.models.scale_ar import ScaleARConfig, ScaleSchedule
    from mmar.models.text import TextEncoderConfig

    sch = ScaleSchedule.from_lengths((2, 4, 8))
    cfg = MoScaleConfig(ScaleARConfig(schedule=sch, width=16, depth=1, heads=2, input_dim=16, cross_attention=True,
                                      null_cond=False, vocab_size=10, cond_dim=8, memory_dim=8),
                        TextEncoderConfig(vocab_size=20, width=8, depth=1, heads=2), code_dim=4, codebook_size=10,
                        pool_heads=2)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 10, (64, 14))
    codes[:, 10:] = -1  # padding
    toks, masked = maskgit_tokens(jax.random.PRNGKey(0), jnp.asarray(codes), cfg)
    toks, masked = np.asarray(toks), np.asarray(masked)
    assert not masked[:, 10:].any() and (toks[:, 10:] == cfg.pad_id).all()
    assert masked.sum(1).min() >= 1
    m = masked & (toks == cfg.mask_id)
    assert 0.6 < m.sum() / masked.sum() < 0.95  # 80 % [MASK]
    assert 0.2 < masked.sum() / (64 * 10) < 0.9  # cos schedule: mean ratio 2/pi
    assert ((toks < 10) | (toks == cfg.mask_id) | (toks == cfg.pad_id)).all()


def test_corruption_reaches_the_loss(dataset, vq_run):
    def metrics(gamma):
        task = make_task(moscale_config_for(vq_run, gamma_max=gamma), benchmark=dataset)
        b = next(task.train_iterator(0))
        v = task.init(jax.random.PRNGKey(0), b)
        extra = {k: x for k, x in v.items() if k != "params"}
        return [task.loss(v["params"], extra, b, jax.random.PRNGKey(s), 0)[1][0] for s in range(3)]

    clean = metrics(0.0)
    noisy = metrics(0.59)
    assert all(float(m["corrupted"]) == 0.0 for m in clean)
    assert max(float(m["corrupted"]) for m in noisy) > 0.05
    assert all(np.isfinite(float(m["ce"])) for m in clean + noisy)


def test_training_lowers_the_loss_and_saves_a_self_contained_checkpoint(run):
    wd, hist, r = run
    ce = [h["train/ce"] for h in hist if "train/ce" in h]
    assert ce[-1] < ce[0]
    assert {"val_ce", "val_acc"} <= {k.split("/")[-1] for h in hist for k in h}
    assert {"params", "tokenizer", "assets"} <= set(r.variables)
    assert isinstance(r.task, MoScaleTask)


def test_generation_cache_parity_and_lengths(run):
    _, _, r = run
    task = r.task
    net_cfg, vq_cfg, tok, _, _ = task._frozen(r.variables)
    ids, mask = tok.encode(["a person moves 1", "a person moves 3"])
    lengths = jnp.asarray([60, 196])
    outs = [sample(MoScale(net_cfg), r.variables["params"], TemporalVQVAE(vq_cfg), r.variables["tokenizer"],
                   jnp.asarray(ids), jnp.asarray(mask), lengths, jax.random.PRNGKey(3),
                   SamplingConfig(steps=(1, 2, 3, 2), use_cache=c)) for c in (True, False)]
    for a, b in zip(outs[0]["codes"], outs[1]["codes"]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(outs[0]["features"]), np.asarray(outs[1]["features"]), atol=1e-5)
    codes = [np.asarray(c) for c in outs[0]["codes"]]
    assert (codes[-1][0, 15:] == -1).all() and (codes[-1][0, :15] >= 0).all()  # 60 frames -> 15 latent steps
    assert (codes[-1][1] >= 0).all()
    g = task.generate(r.variables, ["a person moves 1", "a person moves 3"], [60, 196], seed=1, steps=2)
    assert g.features.shape == (2, 196, 263) and list(g.lengths) == [60, 196]
    assert np.all(g.features[0, 60:] == 0) and np.isfinite(g.features).all()
    g2 = task.generate(r.variables, ["a person moves 1", "a person moves 3"], [60, 196], seed=1, steps=2)
    np.testing.assert_array_equal(g.features, g2.features)  # one seed, one result
    auto = task.generate(r.variables, ["a person moves 2"] * 3, None, seed=0, steps=(1, 1, 1, 1))
    assert all(40 <= n <= 196 and n % 4 == 0 for n in auto.lengths)


def test_generation_errors(run, dataset):
    _, _, r = run
    task = r.task
    with pytest.raises(MmarError, match="empty"):
        task.generate(r.variables, ["   "], [60])
    with pytest.raises(MmarError, match="no text"):
        task.generate(r.variables, [], [60])
    for bad in ([-8], [10_000], [float("nan")], [60, 60]):
        with pytest.raises(MmarError):
            task.generate(r.variables, ["a person moves"], bad)
    with pytest.raises(ConfigError, match="one count per scale"):
        task.generate(r.variables, ["a person moves"], [60], steps=(1, 2))
    other = {"params": r.variables["params"]}
    with pytest.raises(CheckpointError, match="not a moscale checkpoint"):
        task.generate(other, ["a person moves"], [60])


def test_stage1_must_be_a_tokenizer_run(dataset, run):
    wd, _, _ = run
    cfg = moscale_config_for(wd)  # a moscale run named as the tokenizer
    with pytest.raises(CheckpointError, match="moscale_vqvae run"):
        make_task(cfg, benchmark=dataset).stage1()
