"""MoScale's residual tokenizer as a task of the one trainer (mmar.tasks.moscale_vqvae), on a tiny
synthetic captioned dataset: the loss falls, the EMA codebook moves through the 'vq'
collection, padding enters neither the loss nor the codebook statistics, evaluation reports
per-scale reconstruction (MPJPE not growing with more scales) and codebook use, and the run
loads through mmar.run.load."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

import mmar.run
from mmar.data import hml_features as hf
from mmar.data import t2m
from mmar.errors import ConfigError
from mmar.tasks import make_task
from mmar.tasks.moscale_vqvae import MoScaleDataConfig, MoScaleVQVAEModelConfig, vqvae_config
from mmar.train import train
from mmar.train.config import Config, OptimConfig, TrainConfig, apply_overrides

from test_data_hml_features import synthetic_joints

TASK = "moscale_vqvae"
TINY = dict(width=32, depth=1, attn=False, attn_heads=2, dropout=0.0, attn_dropout=0.0, codebook_size=32, code_dim=16)


def tiny_config(steps: int = 6, **model) -> Config:
    return Config(name="tiny_moscale_vq", task=TASK, model=MoScaleVQVAEModelConfig(**{**TINY, **model}),
                  data=MoScaleDataConfig(eval_batch=8),
                  optim=OptimConfig(lr=1e-3, warmup_steps=0, schedule="constant", b2=0.99, grad_clip=0.5),
                  train=TrainConfig(steps=steps, batch_size=8, log_every=1, eval_every=0, ckpt_every=steps,
                                    progress=False, async_checkpoint=False, best_metric="mpjpe_cm"))


def _motions(n: int, seed: int, prefix: str) -> list[t2m.T2MMotion]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        T = int(rng.integers(45, 230))
        f = hf.joints_to_features(synthetic_joints(T + 1, seed=seed * 100 + i, spin=float(rng.uniform(0, 3))))
        out.append(t2m.T2MMotion(f"{prefix}{i}", f.astype(np.float32), [f"a person moves {i}"], f"{prefix}{i}"))
    return out


@pytest.fixture(scope="module")
def dataset():
    splits = {"train": t2m.T2MSplit("train", _motions(12, 1, "tr")), "val": t2m.T2MSplit("val", _motions(5, 2, "va"))}
    norm = t2m.feature_stats([m.features for m in splits["train"]])
    return t2m.T2MDataset("bandai", "humanml3d", 20.0, 40, 196, splits, norm.mean, norm.std)


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    wd = tmp_path_factory.mktemp("moscale_vq")
    cfg = tiny_config(steps=120)
    task = make_task(cfg, benchmark=dataset)
    before = task.evaluate_vqvae(_init_vars(task, dataset))
    state, hist = train(task, cfg, wd)
    return wd, task, state, hist, before


def _init_vars(task, dataset):
    batch = next(task.train_iterator(0))
    return jax.jit(task.init)(jax.random.PRNGKey(0), batch)


def test_model_config_is_the_official_hrvqvae():
    from mmar.models.vqvae import MOSCALE_VQVAE

    assert vqvae_config(MoScaleVQVAEModelConfig()) == MOSCALE_VQVAE
    m = MoScaleVQVAEModelConfig()
    assert (m.vel_weight, tuple(m.vel_slice), m.root_weight, m.vq_weight) == (0.5, (4, 67), 0.0, 0.02)
    # every field is reachable with --set
    cfg = Config(task=TASK, model=m, data=MoScaleDataConfig())
    apply_overrides(cfg, ["model.lengths=4,8,16,32", "model.factors=8,4,2,1", "model.codebook_size=64",
                          "model.phi=0.5", "model.sample_temperature=0", "data.source=kit"])
    v = vqvae_config(cfg.model, 251)
    assert v.quantizer.lengths == (4, 8, 16, 32) and v.num_frames == 128 and v.quantizer.phi == 0.5
    assert v.quantizer.codebook_size == 64 and v.in_dim == 251


def test_batches_hold_arrays_only(dataset):
    task = make_task(tiny_config(), benchmark=dataset)
    it = task.train_iterator(0)
    b = next(it)
    assert set(b) == {"motion", "mask", "length"}
    assert b["motion"].shape == (8, 196, 263) and b["mask"].shape == (8, 196)
    assert np.all(b["motion"][~b["mask"]] == 0) and np.all(b["length"] % 4 == 0)
    state = it.get_state()
    nxt = next(it)
    it.set_state(state)
    np.testing.assert_array_equal(next(it)["motion"], nxt["motion"])


def test_padding_enters_neither_loss_nor_codebook_statistics(dataset):
    task = make_task(tiny_config(attn=True), benchmark=dataset)  # with the key-padding masks
    batch = next(task.train_iterator(3))
    v = _init_vars(task, dataset)
    params, extra = v["params"], {"vq": v["vq"]}
    lengths = batch["length"].copy()
    assert lengths.min() < 196  # some padding to test
    noisy = dict(batch)
    noisy["motion"] = np.where(batch["mask"][..., None], batch["motion"],
                               np.random.default_rng(0).normal(0, 5, batch["motion"].shape)).astype(np.float32)
    rng = jax.random.PRNGKey(1)
    step = jax.jit(jax.value_and_grad(lambda p, bt: task.loss(p, extra, bt, rng, 0), has_aux=True))
    ((la, (ma, ea)), ga), ((lb, (mb, eb)), gb) = step(params, batch), step(params, noisy)
    np.testing.assert_allclose(la, lb, rtol=1e-6)
    for k in ("code_sum", "code_count", "codebook"):
        np.testing.assert_allclose(ea["vq"]["quantizer"][k], eb["vq"]["quantizer"][k], rtol=1e-6, atol=1e-6)
    # the gradient ignores the padded frames too
    for a, b in zip(jax.tree_util.tree_leaves(ga), jax.tree_util.tree_leaves(gb)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # the EMA counts grow by exactly the valid tokens: sum_k min(floor((length // 4) / f_k), L_k);
    # the first step data-initialises (count 1 per code before the update)
    mu = task.m.ema_decay
    got = (np.asarray(ea["vq"]["quantizer"]["code_count"]) - mu).sum() / (1 - mu)
    want = sum(int(min((l // 4) // f, L)) for l in lengths for f, L in zip((8, 4, 2, 1), (6, 12, 24, 49)))
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_training_lowers_the_loss_and_moves_the_ema_codebook(run):
    wd, task, state, hist, before = run
    losses = [h["train/loss"] for h in hist if "train/loss" in h]
    assert len(losses) == 120
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])
    vq = state.extra_vars["vq"]["quantizer"]
    assert float(vq["initialized"]) == 1.0
    assert "codebook" not in state.params.get("quantizer", {})  # EMA, not a parameter
    cb, count = np.asarray(vq["codebook"]), np.asarray(vq["code_count"])
    alive = count >= task.m.dead_threshold  # dead codes were reset to data vectors instead
    assert alive.sum() >= 8
    np.testing.assert_allclose(cb[alive], np.asarray(vq["code_sum"])[alive] / count[alive, None], rtol=1e-4, atol=1e-5)
    trained = {k for h in hist for k in h}
    assert {"train/rec", "train/vel", "train/commit", "train/perplexity_scale0", "train/usage"} <= trained


def test_evaluation_per_scale(run):
    wd, task, state, hist, before = run
    ev = {k[5:]: v for h in hist for k, v in h.items() if k.startswith("eval/")}
    assert ev["motions"] == 5
    for n in range(1, 5):
        for key in ("rec", "feat_l1", "mpjpe_cm", "mpjpe_root_cm"):
            assert np.isfinite(ev[f"{key}_scales{n}"])
    for k in range(4):
        assert 0 < ev[f"usage_scale{k}"] <= 1 and ev[f"perplexity_scale{k}"] >= 1
    assert ev["tokens_scale0"] < ev["tokens_scale1"] < ev["tokens_scale2"] < ev["tokens_scale3"]
    assert ev["mpjpe_cm"] == ev["mpjpe_cm_scales4"]
    # trained: better than at initialisation, and more scales do not make it (much) worse
    assert ev["mpjpe_root_cm"] < before["mpjpe_root_cm"]
    assert ev["rec_scales4"] < ev["rec_scales1"]
    assert ev["mpjpe_root_cm_scales4"] <= ev["mpjpe_root_cm_scales1"] * 1.05
    assert ev["mpjpe_cm_scales4"] <= ev["mpjpe_cm_scales1"] * 1.1


def test_checkpoint_loads_through_run_load(run, dataset):
    wd, task, state, hist, before = run
    r = mmar.run.load(wd, benchmark=dataset)
    assert r.config.task == TASK and isinstance(r.config.model, MoScaleVQVAEModelConfig)
    assert r.config.model.codebook_size == 32 and tuple(r.config.model.lengths) == (6, 12, 24, 49)
    assert r.step == 120
    np.testing.assert_array_equal(r.variables["vq"]["quantizer"]["codebook"],
                                  np.asarray(state.extra_vars["vq"]["quantizer"]["codebook"]))
    ev = r.task.evaluate_vqvae(r.variables)
    final = [h for h in hist if "eval/mpjpe_cm" in h][-1]
    assert ev["mpjpe_cm"] == pytest.approx(final["eval/mpjpe_cm"], rel=1e-5)
    best = mmar.run.load(wd / "best", benchmark=dataset)
    assert best.step == 120


def test_bad_configs(dataset):
    with pytest.raises(ConfigError, match="vel_slice"):
        make_task(tiny_config(vel_slice=(4, 300)), benchmark=dataset)
    cfg = tiny_config()
    cfg.data = dataclasses.replace(cfg.data, source="nope")
    with pytest.raises(ConfigError, match="source"):
        make_task(cfg)
    with pytest.raises(ConfigError, match="recon"):
        MoScaleVQVAEModelConfig(recon="l1")
