"""The sparse-to-full-body task end to end on a small synthetic benchmark: AGRoL-MLP and the
two-stage Mem-MLP (VQ-VAE, then Mem-MLP with it frozen) train, evaluate online, and the
command line evaluates a checkpoint into files that `mmar metrics` and `mmar render` read."""
import json

import numpy as np
import pytest

from _sparse_body_fixtures import synthetic_benchmark, tiny_config
from mmar import cli
from mmar.data.clip import load_arrays, save_arrays
from mmar.errors import CheckpointError, ConfigError
from mmar.tasks import make_task
from mmar.train import train
from mmar.train.checkpoint import load_params


@pytest.fixture(scope="module")
def bench():
    return synthetic_benchmark()


@pytest.fixture(scope="module")
def runs(bench, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for kind, extra in (("agrol_mlp", {}), ("mlp_vqvae", {}),
                        ("mem_mlp", {"vqvae_workdir": str(root / "mlp_vqvae")})):
        cfg = tiny_config(kind, steps=6, **extra)
        _, history = train(make_task(cfg, benchmark=bench), cfg, root / kind)
        out[kind] = (root / kind, history)
    return out


def test_training_reduces_loss_and_reports_metrics(runs):
    for kind, (_, history) in runs.items():
        losses = [h["train/loss"] for h in history if "train/loss" in h]
        assert losses[-1] < losses[0], (kind, losses)
        evals = {k for h in history for k in h if k.startswith("eval/")}
        if kind == "mlp_vqvae":
            assert {"eval/rot6d_l2", "eval/perplexity", "eval/usage"} <= evals
        else:
            assert {"eval/mpjpe_cm", "eval/jitter_m_s3", "eval/gt_jitter_m_s3", "eval/mpjre_deg"} <= evals


def test_vqvae_dead_code_remedy_runs_in_the_trainer(bench):
    """post_update re-initialises dead codes with the batch's encoder outputs every
    ``vq_revive_every`` steps and leaves the codebook alone on other steps."""
    import jax
    import jax.numpy as jnp

    cfg = tiny_config("mlp_vqvae", vq_revive_every=2)
    task = make_task(cfg, benchmark=bench)
    batch = next(iter(task.train_iterator(0)))
    variables = task.init(jax.random.PRNGKey(0), batch)
    params = variables.pop("params")
    loss, (metrics, new) = task.loss(params, variables, batch, jax.random.PRNGKey(1), 0)
    assert {"vq_stats", "revive"} == set(new) and 0.0 <= float(metrics["dead"]) <= 1.0
    extra = {**variables, **new}
    same, _ = task.post_update(params, extra, jax.random.PRNGKey(2), jnp.asarray(0))
    np.testing.assert_array_equal(same["codebook"], params["codebook"])
    revived, extra2 = task.post_update(params, extra, jax.random.PRNGKey(2), jnp.asarray(1))
    cb, z = np.asarray(revived["codebook"]), np.asarray(new["revive"]["z_e"])
    dead = np.asarray(new["vq_stats"]["code_count"]) < cfg.model.vq_revive_threshold
    assert dead.any()
    for k in np.flatnonzero(dead):
        assert np.min(np.abs(z - cb[k]).sum(-1)) < 1e-6
    np.testing.assert_array_equal(cb[~dead], np.asarray(params["codebook"])[~dead])
    assert np.all(np.asarray(extra2["vq_stats"]["code_count"]) >= cfg.model.vq_revive_threshold)


@pytest.mark.parametrize("feed", ["blend", "scheduled"])
def test_mem_mlp_self_fed_memory_trains(runs, bench, tmp_path, feed):
    """``model.memory_feed=blend``: windows of W + 2 frames, the memory of the last W frames
    blends the ground truth with the model's own prediction of the previous window
    (``scheduled``: from the ground truth to that blend over the first half of the steps)."""
    cfg = tiny_config("mem_mlp", steps=2, vqvae_workdir=str(runs["mlp_vqvae"][0]), memory_feed=feed)
    task = make_task(cfg, benchmark=bench)
    assert task.frames_per_window == cfg.model.window + 2
    _, history = train(task, cfg, tmp_path / feed)
    assert all(np.isfinite(h["train/loss"]) for h in history if "train/loss" in h)
    with pytest.raises(ConfigError, match="memory_feed"):
        make_task(tiny_config("mem_mlp", vqvae_workdir="x", memory_feed="pred"), benchmark=bench)


def test_mem_mlp_ik_refines_online_predictions(runs, bench):
    """``model.ik=true`` runs L-BFGS IK from the rotation head toward the position head on
    every predicted frame (one skeleton per clip of the batch)."""
    import dataclasses

    variables, _ = load_params(runs["mem_mlp"][0])
    cfg = tiny_config("mem_mlp", vqvae_workdir=str(runs["mlp_vqvae"][0]))
    clips = dict(list(sorted(bench["test"].items()))[:2])
    plain = make_task(cfg, benchmark=bench).predict_clips(variables, clips)
    cfg.model = dataclasses.replace(cfg.model, ik=True, ik_iters=3)
    ik = make_task(cfg, benchmark=bench).predict_clips(variables, clips)
    for n in clips:
        assert ik[n]["rot6d"].shape == plain[n]["rot6d"].shape and np.all(np.isfinite(ik[n]["joints"]))
        assert not np.allclose(ik[n]["rot6d"], plain[n]["rot6d"])
    cfg.model = dataclasses.replace(cfg.model, ik_smooth=0.1)  # frames in order, coupled
    coupled = make_task(cfg, benchmark=bench).predict_clips(variables, clips)
    for n in clips:
        assert coupled[n]["rot6d"].shape == plain[n]["rot6d"].shape and np.all(np.isfinite(coupled[n]["joints"]))
        assert not np.allclose(coupled[n]["rot6d"], ik[n]["rot6d"])


def test_mem_mlp_checkpoint_is_self_contained(runs, monkeypatch):
    monkeypatch.chdir(runs["mem_mlp"][0].parent)  # a relative run directory works too
    variables, cfg = load_params(runs["mem_mlp"][0].name)
    assert "vqvae" in variables and cfg["task"] == "mem_mlp"
    vq, _ = load_params(runs["mlp_vqvae"][0])
    np.testing.assert_array_equal(variables["vqvae"]["params"]["codebook"], vq["params"]["codebook"])
    assert "loss_uncertainty" in variables["params"]


def test_online_prediction_is_causal(runs, bench):
    cfg = tiny_config("agrol_mlp")
    task = make_task(cfg, benchmark=bench)
    variables, _ = load_params(runs["agrol_mlp"][0])
    clips = bench["test"]
    name = sorted(clips)[0]
    full = task.predict_clips(variables, {name: clips[name]})[name]
    T = clips[name]["sparse"].shape[0]
    cut = {k: (v[: T // 2] if np.ndim(v) and v.shape[0] == T else v) for k, v in clips[name].items()}
    half = task.predict_clips(variables, {name: cut})[name]
    np.testing.assert_allclose(half["joints"], full["joints"][: T // 2], atol=1e-4)
    # the body is placed by the tracked head
    np.testing.assert_allclose(full["joints"][:, 15], clips[name]["sparse"][:, 36:39], atol=1e-5)


def test_cli_eval_metrics_render(runs, bench, tmp_path, capsys):
    gt = tmp_path / "gt.npz"
    save_arrays(str(gt), bench["test"])
    pred, metrics = tmp_path / "pred.npz", tmp_path / "m.json"
    rc = cli.main(["eval", "--checkpoint", str(runs["mem_mlp"][0]), "--data", str(gt), "--set", "data.fps=30",
                   "--out", str(metrics), "--save-pred", str(pred)])
    assert rc == 0
    result = json.loads(metrics.read_text())
    assert {"all", "dataset-1"} <= set(result) and result["all"]["clips"] == 2
    assert result["checkpoint"]["step"] == 6 and result["skipped"] == []
    assert set(load_arrays(str(pred))) == set(bench["test"])
    capsys.readouterr()
    assert cli.main(["metrics", "--pred", str(pred), "--gt", str(gt)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["mpjpe_cm"] == pytest.approx(result["all"]["mpjpe_cm"], rel=1e-6)
    gif = tmp_path / "cmp.gif"
    assert cli.main(["render", str(pred), "--compare", str(gt), "--out", str(gif)]) == 0
    assert gif.stat().st_size > 1000


def test_bad_configs_and_checkpoints(runs, bench, tmp_path):
    with pytest.raises(ConfigError, match="vqvae_workdir"):
        make_task(tiny_config("mem_mlp"), benchmark=bench)
    with pytest.raises(ConfigError, match="transformer"):
        make_task(tiny_config("transformer"), benchmark=bench)
    # a Mem-MLP pointed at an AGRoL run instead of a VQ-VAE
    cfg = tiny_config("mem_mlp", vqvae_workdir=str(runs["agrol_mlp"][0]))
    with pytest.raises(CheckpointError, match="mlp_vqvae"):
        train(make_task(cfg, benchmark=bench), cfg, tmp_path / "wrong")
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "nothing")]) == 2


def test_cli_export_with_model_card(runs, tmp_path, capsys):
    for kind, mode in (("agrol_mlp", "window"), ("mem_mlp", "stream")):
        out = tmp_path / f"{kind}.tflite"
        assert cli.main(["export", "--checkpoint", str(runs[kind][0]), "--out", str(out)]) == 0
        card = json.loads((tmp_path / f"{kind}.json").read_text())
        assert card["mode"] == mode and card["file_bytes"] == out.stat().st_size
        assert card["parity_max_abs_vs_jax"] < 1e-4
        assert card["latency_ms_single_thread"]["median"] > 0
        assert card["coordinate_frame"].startswith("Y up") and "sparse_layout" in card
    # the VQ-VAE is not a sparse-to-full-body model; nothing is written
    bad = tmp_path / "vq.tflite"
    assert cli.main(["export", "--checkpoint", str(runs["mlp_vqvae"][0]), "--out", str(bad)]) == 2
    assert cli.main(["export", "--checkpoint", str(runs["agrol_mlp"][0]), "--out", str(bad), "--mode", "stream"]) == 2
    assert cli.main(["export", "--checkpoint", str(runs["agrol_mlp"][0]), "--out", str(bad), "--quantize", "int3"]) == 2
    assert not bad.exists() and not (tmp_path / "vq.json").exists()
