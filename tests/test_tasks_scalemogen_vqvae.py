"""ScaleMoGen's skeletal-temporal BSQ tokenizer as a task of the one trainer
(mmar.tasks.scalemogen_vqvae), on the tiny synthetic captioned dataset of
test_tasks_moscale_vqvae: the loss falls, evaluation reports per-scale reconstruction and bit
use, every model field is reachable with --set, and the run loads through mmar.run.load."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

import mmar.run
from mmar.errors import ConfigError
from mmar.tasks import make_task
from mmar.tasks.scalemogen_vqvae import MoScaleDataConfig, ScaleMoGenVQVAEModelConfig, vqvae_config
from mmar.train import train
from mmar.train.config import Config, OptimConfig, TrainConfig, apply_overrides

from test_tasks_moscale_vqvae import dataset  # noqa: F401  (fixture)

TASK = "scalemogen_vqvae"
TINY = dict(latent_dim=16, n_extra_layers=0, dropout=0.0)
STEPS = 30


def tiny_config(steps: int = 6, **model) -> Config:
    return Config(name="tiny_scalemogen_vq", task=TASK, model=ScaleMoGenVQVAEModelConfig(**{**TINY, **model}),
                  data=MoScaleDataConfig(eval_batch=8),
                  optim=OptimConfig(lr=2e-3, warmup_steps=0, schedule="constant", b2=0.99, grad_clip=0.5),
                  train=TrainConfig(steps=steps, batch_size=8, log_every=1, eval_every=0, ckpt_every=steps,
                                    progress=False, async_checkpoint=False, best_metric="mpjpe_cm"))


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):  # noqa: F811
    wd = tmp_path_factory.mktemp("scalemogen_vq")
    cfg = tiny_config(steps=STEPS)
    task = make_task(cfg, benchmark=dataset)
    state, hist = train(task, cfg, wd)
    return wd, task, state, hist


def test_model_config_is_the_official_tokenizer():
    from mmar.models.vqvae import SCALEMOGEN_LOSS, SCALEMOGEN_VQVAE

    m = ScaleMoGenVQVAEModelConfig()
    assert vqvae_config(m) == SCALEMOGEN_VQVAE
    assert ((0, 4, m.root_weight), (*m.vel_slice, m.vel_weight)) == SCALEMOGEN_LOSS["terms"]
    assert m.vq_weight == SCALEMOGEN_LOSS["vq_weight"]
    # every field is reachable with --set (nested tuples as JSON)
    cfg = Config(task=TASK, model=m, data=MoScaleDataConfig())
    apply_overrides(cfg, ["model.latent_dim=32", "model.code_dim=8", "model.drop_rate=0.25", "model.ste=scaled",
                          "model.inv_temperature=50", "model.time_factors=49,16,1",
                          "model.mapping=[[0,0],[1,1],[2,4]]", "model.n_layers=3", "model.tf_down=area"])
    v = vqvae_config(cfg.model)
    assert v.latent_dim == 32 and v.n_layers == 3 and v.quantizer.bsq.dim == 8 and v.quantizer.bsq.ste == "scaled"
    assert v.quantizer.bsq.inv_temperature == 50 and v.quantizer.drop_rate == 0.25
    assert v.quantizer.mapping == ((0, 0), (1, 1), (2, 4)) and v.quantizer.num_scales == 3
    assert v.quantizer.tf_down == "area" and v.quantizer.time_factors == (49, 16, 1)
    hash(v)  # a static jit argument


@pytest.mark.parametrize("name", ["scalemogen_vqvae", "scalemogen_vqvae_small", "scalemogen_vqvae_smooth"])
def test_configs_load(name):
    from mmar.train.config import load_config

    cfg = load_config(f"configs/{name}.py", ["model.drop_rate=0.25"])
    assert cfg.task == TASK and cfg.model.drop_rate == 0.25
    assert vqvae_config(cfg.model).num_frames == 196
    if name.endswith("smooth"):  # the small tokenizer's architecture: its decoder swaps into its predictor
        small = load_config("configs/scalemogen_vqvae_small.py", ["model.drop_rate=0.25"])
        assert vqvae_config(cfg.model) == vqvae_config(small.model) and cfg.model.jerk_weight > 0
        assert cfg.optim.frozen and cfg.train.best_metric is None
    else:
        assert cfg.train.best_metric == "mpjpe_cm" and cfg.model.jerk_weight == 0


def test_training_lowers_the_loss(run):
    wd, task, state, hist = run
    losses = [h["train/loss"] for h in hist if "train/loss" in h]
    assert len(losses) == STEPS and np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])
    trained = {k for h in hist for k in h}
    assert {"train/rec", "train/root", "train/vel", "train/vq", "train/scales_kept"} <= trained
    kept = [h["train/scales_kept"] for h in hist if "train/scales_kept" in h]
    assert min(kept) >= 1 and max(kept) <= 11 and len(set(kept)) > 1  # stochastic depth
    assert set(state.extra_vars) == set()  # BSQ has no state


def test_evaluation_per_scale(run):
    wd, task, state, hist = run
    ev = {k[5:]: v for h in hist for k, v in h.items() if k.startswith("eval/")}
    assert ev["motions"] == 5
    for n in range(1, 12):
        for key in ("rec", "feat_l1", "mpjpe_cm", "mpjpe_root_cm"):
            assert np.isfinite(ev[f"{key}_scales{n}"])
    for k in range(11):
        assert 0 <= ev[f"bit_ones_scale{k}"] <= 1 and 0 <= ev[f"bit_entropy_scale{k}"] <= 1
        assert 0 < ev[f"distinct_scale{k}"] <= 1
    assert ev["tokens_scale0"] == 5  # one token per motion
    assert ev["tokens_scale0"] < ev["tokens_scale4"] < ev["tokens_scale10"]
    assert ev["mpjpe_cm"] == ev["mpjpe_cm_scales11"] and ev["rec"] == ev["rec_scales11"]
    assert ev["rec_scales11"] < ev["rec_scales1"]
    assert ev["jerk_data"] > 0 and ev["jerk_recon"] > 0  # m/s^3 of the full-scale decoding and the data


def test_jerk_error_is_zero_on_the_data_and_has_finite_gradients(dataset):  # noqa: F811
    import jax.numpy as jnp

    from mmar.tasks.scalemogen_vqvae import jerk_error

    m = dataset["train"][0]
    x = jnp.asarray(m.features[None, :40] - dataset.mean) / jnp.asarray(dataset.std)
    mask = jnp.ones((1, 40), bool).at[:, 36:].set(False)
    args = (jnp.asarray(dataset.mean), jnp.asarray(dataset.std), 22, 20.0)
    assert float(jerk_error(x, x, mask, *args)) < 1e-3
    noisy = x + 0.05 * jax.random.normal(jax.random.PRNGKey(0), x.shape)
    assert float(jerk_error(noisy, x, mask, *args)) > 1.0
    g = jax.grad(lambda y: jerk_error(y, x, mask, *args))(x)  # at zero error: the eps keeps it finite
    assert np.all(np.isfinite(np.asarray(g)))
    # padded frames (mask False) do not count
    far = x.at[:, 38:].add(10.0)
    assert float(jerk_error(far, x, mask, *args)) < 1e-3


def test_checkpoint_loads_through_run_load(run, dataset):  # noqa: F811
    wd, task, state, hist = run
    r = mmar.run.load(wd, benchmark=dataset)
    assert r.config.task == TASK and isinstance(r.config.model, ScaleMoGenVQVAEModelConfig)
    assert r.config.model.latent_dim == 16 and r.step == STEPS
    assert r.task.vq_cfg == task.vq_cfg  # nested tuples survive the JSON round trip
    for a, b in zip(jax.tree_util.tree_leaves(r.variables["params"]), jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_configs(dataset):  # noqa: F811
    with pytest.raises(ConfigError, match="vel_slice"):
        make_task(tiny_config(vel_slice=(4, 300)), benchmark=dataset)
    cfg = tiny_config()
    cfg.data = dataclasses.replace(cfg.data, source="kit")
    with pytest.raises(ConfigError, match="KIT"):
        make_task(cfg)
    with pytest.raises(ConfigError, match="recon"):
        ScaleMoGenVQVAEModelConfig(recon="l1")


def test_vq_scales_tool_measures_the_run(run, dataset):  # noqa: F811
    """tools/vq_scales.py skeletal --run DIR: the trained run, a run trained by the one trainer."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "vq_scales.py"
    spec = importlib.util.spec_from_file_location("vq_scales_smg", path)
    vq_scales = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vq_scales)
    wd, task, state, hist = run
    model, params, norm, info = vq_scales.load_skeletal_run(wd, benchmark=dataset)
    assert model.config == task.vq_cfg and info["steps"] == STEPS
    np.testing.assert_array_equal(norm.mean, dataset.mean)
    val = {m.name: m.features for m in dataset.splits["val"].motions}
    x, mask, index = vq_scales.cut_windows({k: norm.normalize(v) for k, v in val.items()}, 196)
    res = vq_scales.skeletal_scale_eval(model, params, x, mask, norm, batch=8, progress=False)
    assert res["num_scales"] == 11 and all(np.isfinite(res["mpjpe_cm"]))
    np.testing.assert_allclose(res["mpjpe_cm"][-1], res["full_mpjpe_cm"], rtol=1e-4, atol=1e-4)
