"""tools/vq_scales.py: per-scale reconstruction of both multi-scale quantisers on tiny random
models and synthetic clips (no data, no checkpoint; reading a real ``scalemogen_vqvae`` run with
``load_skeletal_run`` is tested in tests/test_tasks_scalemogen_vqvae.py)."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from mmar.data import hml_features as hf
from mmar.data import t2m
from mmar.models.quantizers.skeletal import SCALEMOGEN_SKELETAL
from mmar.models.vqvae import SCALEMOGEN_VQVAE, SkeletalVQVAE
from mmar.skeleton import SMPL22_PARENTS
from mmar.tasks.base import BenchmarkDataConfig
from mmar.tasks.tmt_vqvae import TMTVQVAEModelConfig, TMTVQVAETask
from mmar.train.config import Config

_PATH = Path(__file__).resolve().parents[1] / "tools" / "vq_scales.py"
_spec = importlib.util.spec_from_file_location("vq_scales", _PATH)
vq_scales = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vq_scales)


def _rodrigues(aa):
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)[..., None]
    k = aa / np.maximum(np.linalg.norm(aa, axis=-1, keepdims=True), 1e-12)
    K = np.zeros(aa.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K = K - np.swapaxes(K, -1, -2)
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * K @ K


def _clip(rng, T):
    """A synthetic clip in the benchmark layout, numpy FK only (no compilation)."""
    offsets = rng.normal(scale=0.12, size=(22, 3)).astype(np.float32)
    offsets[1:, 1] -= 0.05  # keep bones long enough for the HumanML3D IK
    t = np.arange(T)[:, None, None] / 30.0
    aa = 0.4 * np.sin(2 * np.pi * 0.8 * t + rng.uniform(0, 6, size=(1, 22, 3)))
    rot = _rodrigues(aa)
    root = np.stack([0.5 * t[:, 0, 0], 0.9 + 0.05 * np.sin(3 * t[:, 0, 0]), 0.1 * t[:, 0, 0]], -1)
    G, p = [rot[:, 0]], [root]
    for j in range(1, 22):
        G.append(G[SMPL22_PARENTS[j]] @ rot[:, j])
        p.append(p[SMPL22_PARENTS[j]] + G[SMPL22_PARENTS[j]] @ offsets[j].astype(np.float64))
    return {"joints": np.stack(p, 1).astype(np.float32),
            "rot6d": np.concatenate([rot[..., :, 0], rot[..., :, 1]], -1).astype(np.float32),
            "sparse": rng.normal(size=(T, 54)).astype(np.float32), "offsets": offsets,
            "fps": np.float32(30.0)}


def _random_variables(init, *args, seed=0):
    """Random variables of ``init``'s structure (``jax.eval_shape``: no init compile, which is
    slower than everything else here)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(init, *args)
    return jax.tree.map(lambda s: (0.3 * rng.normal(size=s.shape)).astype(s.dtype), shapes)


@pytest.fixture(scope="module")
def bench():
    rng = np.random.default_rng(3)
    # test: 2 + 2 + 1 = 5 windows of 20 frames, one batch of 5 (one compiled shape)
    return {split: {f"{split}{i}": _clip(rng, T) for i, T in enumerate(lengths)}
            for split, lengths in (("train", (44, 38, 50, 47)), ("test", (41, 45, 30)))}


@pytest.mark.parametrize("frame", ["world", "heading"])
def test_temporal_scales(bench, tmp_path, frame):
    """The script's decodings agree with evaluate_vqvae in either frame (a heading-frame run is
    coded and decoded in each window's heading frame: its forward pass equals all scales)."""
    m = TMTVQVAEModelConfig(lengths=(5, 10, 20), vq_width=16, vq_depth=1, codebook_size=16, code_dim=8, frame=frame)
    task = TMTVQVAETask(Config(name="tiny", task="tmt_vqvae", model=m, data=BenchmarkDataConfig()), bench)
    clips = bench["test"]
    win = vq_scales.temporal_windows(clips, task.window)
    n = sum((c["sparse"].shape[0] - 1) // 20 for c in clips.values())
    assert n == 5
    assert win["sparse"].shape == (n, 20, 54) and win["rot6d"].shape == (n, 20, 22, 6)
    assert win["joints"].shape == (n, 20, 22, 3) and win["offsets"].shape == (n, 22, 3)
    batch = {"sparse": win["sparse"][:2], "rot6d": win["rot6d"][:2]}
    variables = _random_variables(task.init, jax.random.key(0), batch)

    metrics = vq_scales.temporal_metrics(task, variables, clips, batch=5)
    assert metrics["windows"] == n and metrics["lengths"] == [5, 10, 20]
    for k in range(4):
        assert np.isfinite(metrics[f"mpjpe_cm_scales{k}"]) and np.isfinite(metrics[f"rot6d_l2_scales{k}"])
    for k in range(3):
        assert 0 < metrics[f"usage_scale{k}"] <= 1 and metrics[f"perplexity_scale{k}"] >= 1
    rec = vq_scales.temporal_reconstruct(task, variables, win, batch=5)
    assert sorted(rec, key=str) == [0, 1, 2, 3, "full"]
    assert all(r.shape == (n, 20, 22, 6) and p.shape == (n, 20, 22, 3) for r, p in rec.values())
    # the script's own decoding agrees with evaluate_vqvae, and all scales == the plain forward pass
    for k in (1, 2, 3):
        np.testing.assert_allclose(vq_scales.window_errors(*rec[k], win)[0], metrics[f"mpjpe_cm_scales{k}"], rtol=1e-4)
    full = vq_scales.window_errors(*rec["full"], win)
    np.testing.assert_allclose(metrics["mpjpe_cm_scales3"], full[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(metrics["rot6d_l2_scales3"], full[1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(metrics["mpjpe_cm_full"], full[0])
    assert "| 0 (sparse input only) |" in vq_scales.temporal_table(metrics)

    d = vq_scales.temporal_figure_data(task, variables, clips[sorted(clips)[0]], batch=5)
    assert sorted(d["recons"]) == [0, 1, 2, 3]
    assert all(r.shape == d["gt"].shape for r in d["recons"].values()) and d["gt"].shape[1:] == (22, 3)
    png = tmp_path / "t.png"
    vq_scales.plot_scales(png, "tiny", d["fps"], d["gt"], d["recons"],
                          {k: metrics[f"mpjpe_cm_scales{k}"] for k in range(4)})
    assert png.stat().st_size > 1000


def _tiny_skeletal(num_steps=4, seed=0):
    """The preset's group chains with a ``num_steps`` latent (``4 * num_steps`` frames) and 3
    scales (fast to compile), width 8, random parameters: ``(model, params)``."""
    q = dataclasses.replace(SCALEMOGEN_SKELETAL, num_steps=num_steps, time_factors=(num_steps, 2, 1),
                            mapping=((0, 0), (1, 1), (2, 4)))
    cfg = dataclasses.replace(SCALEMOGEN_VQVAE, latent_dim=8, n_extra_layers=0, dropout=0.0, quantizer=q)
    T = cfg.num_frames
    assert T == 4 * num_steps
    model = SkeletalVQVAE(cfg)
    x = np.zeros((2, T, cfg.feature_dim), np.float32)
    params = _random_variables(model.init, {"params": jax.random.key(0)}, x, np.ones((2, T), bool), seed=seed)
    return model, params["params"]


def test_skeletal_scales(bench, tmp_path):
    model, params = _tiny_skeletal()
    feats = vq_scales.build_hml_features(bench["train"], step=1, min_len=8, progress=False)
    assert all(f.shape[1] == 263 for f in feats.values())
    norm = hf.Normalizer.from_data(list(feats.values()), joints_num=22)

    test = vq_scales.build_hml_features(bench["test"], step=1, min_len=8, progress=False)
    x, mask, index = vq_scales.cut_windows({k: norm.normalize(v) for k, v in test.items()}, 16, min_len=8)
    assert x.shape == (len(index), 16, 263) and mask.shape == (len(index), 16)
    assert mask.sum() == sum(n for _, _, n in index)
    # one implementation: the features, segments and padding of mmar.data.t2m
    assert index == [(n, a, b - a) for n in sorted(test) for a, b in t2m.segment_bounds(len(test[n]), 16, 8)]
    name = sorted(feats)[0]
    np.testing.assert_array_equal(feats[name], t2m.clip_features(bench["train"][name]["joints"]))
    np.testing.assert_array_equal(x[0, :index[0][2]], norm.normalize(test[index[0][0]][:index[0][2]]))
    mask[0, 11:] = False  # one masked (partial) window
    res = vq_scales.skeletal_scale_eval(model, params, x, mask, norm, batch=3, keep=[0], progress=False)
    assert res["num_scales"] == 3 and len(res["mpjpe_cm"]) == 3 and len(res["mpjpe_root_cm"]) == 3
    assert all(np.isfinite(res["mpjpe_cm"])) and res["frames"] == int(mask.sum())
    # all scales == the plain forward pass
    np.testing.assert_allclose(res["mpjpe_cm"][-1], res["full_mpjpe_cm"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(res["mpjpe_root_cm"][-1], res["full_mpjpe_root_cm"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(res["feat_l1"][-1], res["full_feat_l1"], rtol=1e-4, atol=1e-6)
    tokens = [s["tokens"] for s in res["scales"]]
    assert tokens == [1, 2 * 2, 4 * 7]
    assert [s["valid_tokens"] for s in res["scales"]][0] == len(index)
    for s in res["scales"]:
        assert 0 < s["distinct_frac"] <= 1 and 0 <= s["bit_entropy"] <= 1
        assert np.isfinite(s["bsq_per_sample_entropy"]) and np.isfinite(s["bsq_codebook_entropy"])
    kept = res["kept"][0]
    assert kept["gt"].shape == (16, 22, 3) and all(kept[n].shape == (16, 22, 3) for n in (1, 2, 3))
    assert "forward pass (check)" in vq_scales.skeletal_table(res)


def test_outputs_inside_the_repo_are_refused():
    with pytest.raises(SystemExit):
        vq_scales._outside_repo(vq_scales.REPO_ROOT / "out.png", "--figure")
    vq_scales._outside_repo("/tmp/vq_scales/out.png", "--figure")


def test_skeletal_cli_measures_the_run(monkeypatch, tmp_path):
    """``skeletal --run DIR``: the model, parameters and statistics come from the run (here a stub
    of :func:`load_skeletal_run`), the test split is measured and the numbers written."""
    import mmar.data.benchmark

    rng = np.random.default_rng(5)
    # 60-fps arrays, every third frame: 100 and 45 feature frames, 29 (< 40: dropped); windows of
    # 48 frames: 2 full ones of "a" (its last 4 frames dropped), one partial (masked) of "b"
    bench = {"train": {}, "test": {"a": _clip(rng, 301), "b": _clip(rng, 136), "short": _clip(rng, 90)}}
    monkeypatch.setattr(mmar.data.benchmark, "load_sparse_benchmark", lambda data, fps: bench)
    model, params = _tiny_skeletal(num_steps=12, seed=1)
    feats = vq_scales.build_hml_features(bench["test"], progress=False)
    assert {k: len(v) for k, v in feats.items()} == {"a": 100, "b": 45}
    norm = hf.Normalizer.from_data(list(feats.values()), joints_num=22)
    calls = []

    def fake_load(run, benchmark=None):
        calls.append(run)
        return model, params, norm, {"run": str(run), "steps": 7, "batch": 4, "params": 123}

    monkeypatch.setattr(vq_scales, "load_skeletal_run", fake_load)
    out = tmp_path / "skel.json"
    vq_scales.main(["skeletal", "--run", str(tmp_path / "run"), "--json", str(out), "--eval-batch", "2"])
    assert calls == [str(tmp_path / "run")]
    res = json.loads(out.read_text())
    assert res["windows"] == 3 and res["frames"] == 2 * 48 + 45 and res["test_clips"] == 2
    assert res["num_scales"] == 3 and [s["tokens"] for s in res["scales"]] == [1, 6 * 2, 12 * 7]
    assert res["train"] == {"run": str(tmp_path / "run"), "steps": 7, "batch": 4, "params": 123}
    x, mask, _ = vq_scales.cut_windows({k: norm.normalize(v) for k, v in feats.items()}, 48)
    direct = vq_scales.skeletal_scale_eval(model, params, x, mask, norm, batch=2, progress=False)
    assert all(np.isfinite(direct["mpjpe_cm"]))
    np.testing.assert_allclose(res["mpjpe_cm"], direct["mpjpe_cm"], rtol=1e-5)
    np.testing.assert_allclose(res["full_mpjpe_cm"], direct["full_mpjpe_cm"], rtol=1e-5)
    assert "kept" not in res and "figure_clip" not in res  # no --figure


def test_the_training_loop_is_gone(capsys):
    """The tool measures only: the tokenizer is trained by ``mmar train``."""
    for name in ("train_skeletal", "save_skeletal", "load_skeletal", "sample_batch", "skeletal_config"):
        assert not hasattr(vq_scales, name)
    with pytest.raises(SystemExit):
        vq_scales.main(["skeletal", "--workdir", "/tmp/vq_scales/skel"])
    assert "mmar train configs/scalemogen_vqvae_small.py" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --run is required
        vq_scales.main(["skeletal", "--figure", "/tmp/vq_scales/s.png"])
    assert "--run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        vq_scales.main(["skeletal", "--run", "/tmp/runs/x", "--steps", "600"])
    assert "unrecognized arguments: --steps" in capsys.readouterr().err
