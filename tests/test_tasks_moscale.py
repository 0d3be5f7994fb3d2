"""MoScale's predictor as a task (mmar.tasks.moscale, mmar.models.moscale) on a tiny synthetic
captioned dataset and a tiny tokenizer run: the paper config is the official transformer, every
field is reachable with --set, the MaskGIT masking and the cross-scale corruption reach the loss,
training lowers the loss, a checkpoint alone generates (with and without the KV cache the same
tokens under one seed), the length estimator, refinement steps, and clear errors for bad input."""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mmar.run
from mmar.data import t2m
from mmar.errors import CheckpointError, ConfigError, MmarError
from mmar.models.moscale import maskgit_tokens
from mmar.models.scale_ar import moscale_config
from mmar.models.vqvae import MOSCALE_VQVAE
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


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    """XLA's backend (LLVM) optimisation off for every graph this module compiles, the task's own
    jits (train step, evaluation, sampler, editor) included: they compile in about half the time
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
    # jit-compiled: op-by-op dispatch compiles each small op on its own
    toks, masked = jax.jit(maskgit_tokens, static_argnums=2)(jax.random.PRNGKey(0), jnp.asarray(codes), cfg)
    toks, masked = np.asarray(toks), np.asarray(masked)
    assert not masked[:, 10:].any() and (toks[:, 10:] == cfg.pad_id).all()
    assert masked.sum(1).min() >= 1
    m = masked & (toks == cfg.mask_id)
    assert 0.6 < m.sum() / masked.sum() < 0.95  # 80 % [MASK]
    assert 0.2 < masked.sum() / (64 * 10) < 0.9  # cos schedule: mean ratio 2/pi
    assert ((toks < 10) | (toks == cfg.mask_id) | (toks == cfg.pad_id)).all()


def test_cross_scale_corruption_requantizes_later_labels(dataset, vq_run):
    task = make_task(moscale_config_for(vq_run, gamma_max=0.59), benchmark=dataset)
    clean_task = make_task(moscale_config_for(vq_run, gamma_max=0.0), benchmark=dataset)
    vq_cfg, vq_vars, _ = task.stage1()
    b = next(task.train_iterator(0))
    # each side compiled once (the key is an argument: one compilation serves every seed)
    targets = jax.jit(lambda bb, r: task._targets(vq_cfg, vq_vars, bb, r))
    clean, clean_labels, _ = jax.jit(lambda bb, r: clean_task._targets(vq_cfg, vq_vars, bb, r))(b, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(clean), np.asarray(clean_labels))
    L0 = vq_cfg.quantizer.lengths[0]
    changed_inputs = changed_labels = 0
    for s in range(4):
        inp, labels, var_in = targets(b, jax.random.PRNGKey(s))
        inp, labels = np.asarray(inp), np.asarray(labels)
        np.testing.assert_array_equal(labels[:, :L0], np.asarray(clean)[:, :L0])  # scale 0: clean labels
        np.testing.assert_array_equal(labels < 0, np.asarray(clean) < 0)  # padding untouched
        changed_inputs += int(((inp != labels) & (labels >= 0)).sum())
        changed_labels += int((labels[:, L0:] != np.asarray(clean)[:, L0:]).sum())  # re-quantised later scales
        assert len(var_in) == len(vq_cfg.quantizer.lengths) - 1
    assert changed_inputs > 0 and changed_labels > 0


def test_training_lowers_the_loss_and_saves_a_self_contained_checkpoint(run):
    wd, hist, r = run
    ce = [h["train/ce"] for h in hist if "train/ce" in h]
    assert ce[-1] < ce[0]
    assert max(h["train/corrupted"] for h in hist if "train/corrupted" in h) > 0  # corruption in the loss
    assert {"val_ce", "val_acc"} <= {k.split("/")[-1] for h in hist for k in h}
    assert {"params", "tokenizer", "assets"} <= set(r.variables)
    assert isinstance(r.task, MoScaleTask)


def test_generation_cache_parity_and_lengths(run):
    from mmar.tasks.moscale import _generate

    _, _, r = run
    task = r.task
    texts, lengths, steps = ["a person moves 1", "a person moves 3"], [60, 196], (1, 2, 3, 2)
    g = task.generate(r.variables, texts, lengths, seed=1, steps=steps)
    nocache = task.generate(r.variables, texts, lengths, seed=1, steps=steps, use_cache=False)
    np.testing.assert_allclose(g.features, nocache.features, atol=1e-5)  # same tokens, same motion
    assert g.features.shape == (2, 196, 263) and list(g.lengths) == lengths
    assert np.all(g.features[0, 60:] == 0) and np.isfinite(g.features).all()
    g2 = task.generate(r.variables, texts, lengths, seed=1, steps=steps)
    np.testing.assert_array_equal(g.features, g2.features)  # one seed, one result
    net_cfg, vq_cfg, tok, _, _ = task._frozen(r.variables)
    ids, mask = tok.encode(texts)
    out = _generate(r.variables["params"], r.variables["tokenizer"], jnp.asarray(ids), jnp.asarray(mask),
                    jnp.asarray(lengths), jax.random.fold_in(jax.random.PRNGKey(1), 0), net_cfg=net_cfg,
                    vq_cfg=vq_cfg, sc=task.sampling(steps=steps))
    codes = [np.asarray(c) for c in out["codes"]]
    assert (codes[-1][0, 15:] == -1).all() and (codes[-1][0, :15] >= 0).all()  # 60 frames -> 15 latent steps
    assert (codes[-1][1] >= 0).all() and (codes[0][0, :1] >= 0).all() and (codes[0][0, 1:] == -1).all()
    auto = task.generate(r.variables, ["a person moves 2"] * 2, None, seed=0, steps=steps)
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


def test_temporal_and_semantic_edits(run, dataset):
    from mmar.edit import edit_grid, edit_task, make_request

    _, _, r = run
    task = edit_task(r)
    mo = dataset["val"][0]
    n = min(len(mo.features), 196) // 4 * 4
    req = make_request("a person moves 2", n, keep_frames=f"0:{n // 2}", num_groups=1)
    res = task.edit(r.variables, mo.features[:n], n, req.text, edit_grid(req, n, num_groups=1), num=2,
                    steps=(1, 2, 2, 2))
    assert res.edited.features.shape == (2, 196, 263) and np.isfinite(res.edited.features).all()
    for src, ed, m in zip(res.source_bits, res.edited_bits, res.editable):
        np.testing.assert_array_equal(ed[:, ~m], np.broadcast_to(src[~m], ed[:, ~m].shape))  # fixed to the source
    assert res.editable[-1][n // 8 + 1:n // 4].all() and not res.editable[-1][:n // 8].any()
    assert any((ed[:, m] != src[m]).any() for src, ed, m in zip(res.source_bits, res.edited_bits, res.editable))
    sem = task.edit(r.variables, mo.features[:n], n, "a person moves 3", np.zeros((49, 1), bool), semantic=True,
                    gamma=2)
    for k in range(2):
        np.testing.assert_array_equal(sem.edited_bits[k][0], sem.source_bits[k])
    with pytest.raises(ConfigError, match="whole body"):
        task.edit(r.variables, mo.features[:n], n, "a person moves", np.ones((49, 7), bool))
