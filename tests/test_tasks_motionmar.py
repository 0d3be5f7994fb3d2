"""MotionMAR's two-stage task end to end on a small synthetic benchmark: the TMT VQ-VAE trains
(with the dead-code remedy) and reports reconstruction per number of scales and codebook use
per scale; MotionMAR trains over it frozen, predicts online through the same evaluation as the
MLPs, and `mmar eval` runs it with and without the MRN."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _sparse_body_fixtures import synthetic_benchmark
from mmar import cli
from mmar.data.clip import save_arrays
from mmar.errors import CheckpointError, ConfigError
import dataclasses

from mmar.tasks import make_task, task_class
from mmar.tasks.base import BenchmarkDataConfig
from mmar.train import train
from mmar.train.checkpoint import load_params
from mmar.train.config import Config, OptimConfig, TrainConfig


def tiny(kind: str, steps: int = 6, **model) -> Config:
    """A tiny config of task ``kind`` (``tmt_vqvae`` or ``motionmar``)."""
    cls = task_class(kind).ModelConfig
    small = dict(lengths=(5, 10, 20), vq_width=32, vq_depth=1, codebook_size=32, code_dim=8, width=32, depth=1, heads=2,
                 mrn_hidden=16, mrn_layers=1, drop_path=0.0, vq_revive_every=2, eval_hop=5, predict_chunk=32)
    known = {f.name for f in dataclasses.fields(cls)}
    m = cls(**{**{k: v for k, v in small.items() if k in known}, **model})
    return Config(name=f"tiny_{kind}", task=kind, model=m, data=BenchmarkDataConfig(max_eval_clips=2),
                  optim=OptimConfig(lr=2e-3, warmup_steps=0, schedule="constant"),
                  train=TrainConfig(steps=steps, batch_size=8, log_every=2, eval_every=0, ckpt_every=steps,
                                    progress=False, async_checkpoint=False))


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    """XLA's backend (LLVM) optimisation off for every graph this module compiles, the task's own
    jits (train steps, evaluation, online prediction, export) included: they compile in about half the time
    and run only a few times on tiny models (same HLO, same semantics). Restored afterwards."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture(scope="module")
def bench():
    return synthetic_benchmark()


@pytest.fixture(scope="module")
def runs(bench, tmp_path_factory):
    root = tmp_path_factory.mktemp("mm")
    out = {}
    cfg = tiny("tmt_vqvae", steps=6)
    out["vq"] = (root / "vq", train(make_task(cfg, benchmark=bench), cfg, root / "vq")[1])
    cfg = tiny("motionmar", steps=4, vqvae_workdir=str(root / "vq"))
    out["ar"] = (root / "ar", train(make_task(cfg, benchmark=bench), cfg, root / "ar")[1])
    return out


def test_stages_train_and_report(runs):
    vq_hist, ar_hist = runs["vq"][1], runs["ar"][1]
    final = {k: v for h in vq_hist for k, v in h.items() if k.startswith("eval/")}
    for n in (1, 2, 3):
        assert np.isfinite(final[f"eval/mpjpe_cm_scales{n}"])
    for k in range(3):
        assert 0 < final[f"eval/usage_scale{k}"] <= 1 and final[f"eval/perplexity_scale{k}"] >= 1
    losses = [h["train/loss"] for h in ar_hist if "train/loss" in h]
    assert losses[-1] < losses[0]
    ev = {k for h in ar_hist for k in h if k.startswith("eval/")}
    assert {"eval/mpjpe_cm", "eval/jitter_m_s3", "eval/gt_jitter_m_s3"} <= ev
    trained = {k for h in ar_hist for k in h}
    assert {"train/ce", "train/mrn_rot", "train/acc_scale0", "train/acc_scale2"} <= trained


def test_checkpoint_is_self_contained_and_online(runs, bench):
    variables, cfg = load_params(runs["ar"][0])
    assert cfg["task"] == "motionmar" and "vqvae" in variables
    vq, _ = load_params(runs["vq"][0])
    np.testing.assert_array_equal(variables["vqvae"]["params"]["quantizer"]["codebook"],
                                  vq["params"]["quantizer"]["codebook"])
    task = make_task(tiny("motionmar", vqvae_workdir=str(runs["vq"][0])), benchmark=bench)
    clips = bench["test"]
    name = sorted(clips)[0]
    full = task.predict_clips(variables, {name: clips[name]})[name]
    T = clips[name]["sparse"].shape[0]
    assert full["joints"].shape == (T, 22, 3) and full["rot6d"].shape == (T, 22, 6)
    cut = {k: (v[: T // 2] if np.ndim(v) and v.shape[0] == T else v) for k, v in clips[name].items()}
    half = task.predict_clips(variables, {name: cut})[name]
    np.testing.assert_allclose(half["joints"], full["joints"][: T // 2], atol=1e-4)  # causal
    np.testing.assert_allclose(full["joints"][:, 15], clips[name]["sparse"][:, 36:39], atol=1e-5)  # head-placed


def test_dead_codes_are_revived_on_schedule(bench):
    task = make_task(tiny("tmt_vqvae"), benchmark=bench)
    params = {"quantizer": {"codebook": jnp.zeros((32, 8))}, "other": jnp.ones(3)}
    count = jnp.where(jnp.arange(32) < 4, 0.0, 5.0)  # codes 0..3 dead
    extra = {"vq": {"quantizer": {"code_count": count}},
             "revive": {"x": jnp.ones((40, 8)), "w": jnp.ones((40,))}}
    p1, e1 = task.post_update(params, extra, jax.random.PRNGKey(0), jnp.asarray(0))  # not a revival step
    np.testing.assert_array_equal(p1["quantizer"]["codebook"], 0.0)
    p2, e2 = task.post_update(params, extra, jax.random.PRNGKey(0), jnp.asarray(1))  # (step + 1) % 2 == 0
    cb = np.asarray(p2["quantizer"]["codebook"])
    np.testing.assert_array_equal(cb[:4], 1.0)
    np.testing.assert_array_equal(cb[4:], 0.0)
    assert float(e2["vq"]["quantizer"]["code_count"][0]) > 0


def test_cli_eval_with_and_without_mrn(runs, bench, tmp_path, capsys):
    gt = tmp_path / "gt.npz"
    save_arrays(str(gt), bench["test"])
    res = {}
    for refine in ("true", "false"):
        out = tmp_path / f"m_{refine}.json"
        rc = cli.main(["eval", "--checkpoint", str(runs["ar"][0]), "--data", str(gt), "--set", "data.fps=30",
                       "--set", f"model.refine={refine}", "--set", "model.hop=5", "--out", str(out)])
        assert rc == 0
        res[refine] = json.loads(out.read_text())["all"]
    assert res["true"]["clips"] == 2
    assert res["true"]["mpjpe_cm"] != pytest.approx(res["false"]["mpjpe_cm"], rel=1e-9)


def test_bad_configs(runs, bench, tmp_path):
    with pytest.raises(ConfigError, match="vqvae_workdir"):
        make_task(tiny("motionmar"), benchmark=bench)
    with pytest.raises(ConfigError, match="diffusion"):
        make_task(tiny("diffusion"), benchmark=bench)
    with pytest.raises(ConfigError, match="scales"):  # AR scales differ from the VQ-VAE's
        from mmar.models.motionmar import MotionMARConfig, check_compatible
        from mmar.tasks.tmt_vqvae import vqvae_config

        check_compatible(MotionMARConfig(lengths=(20,), code_dim=8, vocab_size=32), vqvae_config(tiny("tmt_vqvae").model))
    cfg = tiny("motionmar", vqvae_workdir=str(runs["ar"][0]))  # a MotionMAR run is not a VQ-VAE
    with pytest.raises(CheckpointError, match="tmt_vqvae"):
        train(make_task(cfg, benchmark=bench), cfg, tmp_path / "wrong")
    cfg = tiny("motionmar", vqvae_workdir=str(runs["vq"][0]), vq_width=64)  # not the VQ-VAE's architecture
    with pytest.raises(ConfigError, match="vq_width=64"):
        train(make_task(cfg, benchmark=bench), cfg, tmp_path / "wrong2")
    task = make_task(tiny("tmt_vqvae"), benchmark=bench)
    with pytest.raises(ConfigError, match="not a sparse-to-full-body"):
        task.predict_clips({}, bench["test"])


def test_cli_export_motionmar_with_card(runs, tmp_path, capsys, monkeypatch):
    from mmar.export import motionmar as MM

    # the window function jit-compiled (converted and run as JAX the same): the card's JAX reference pass
    # would otherwise dispatch (and compile) its ops one by one
    window_fn = MM.motionmar_window_fn
    monkeypatch.setattr(MM, "motionmar_window_fn", lambda *a, **kw: jax.jit(window_fn(*a, **kw)))
    out = tmp_path / "mm.tflite"
    assert cli.main(["export", "--checkpoint", str(runs["ar"][0]), "--out", str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["model"] == "motionmar" and card["mode"] == "window" and card["window"] == 20
    assert card["parity_max_abs_vs_jax"] < 1e-4
    assert cli.main(["export", "--checkpoint", str(runs["vq"][0]), "--out", str(tmp_path / "vq.tflite")]) == 2
    assert not (tmp_path / "vq.tflite").exists()
