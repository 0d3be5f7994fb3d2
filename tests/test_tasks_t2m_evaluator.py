"""The text-motion evaluator task end to end on a small synthetic captioned dataset: tokenized,
resumable batches; training lowers the loss; validation retrieval metrics and the best
checkpoint; the run loads through mmar.run.load into a frozen evaluator (tokenizer and
statistics inside the checkpoint, no data needed) with a stable fingerprint; the real-motion
tool's row; the config file and the refusals (test split, unknown loss)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from mmar.data.t2m import T2MDataset, T2MMotion, T2MSplit, feature_stats
from mmar.errors import ConfigError
from mmar.models.t2m_evaluator import FrozenT2MEvaluator
from mmar.run import load
from mmar.tasks import make_task, task_class
from mmar.tasks.t2m_evaluator import (
    T2MEvaluatorDataConfig,
    T2MEvaluatorModelConfig,
    caption_groups,
    load_evaluator,
)
from mmar.train import train
from mmar.train.checkpoint import load_params
from mmar.train.config import Config, OptimConfig, TrainConfig, load_config

REPO_ROOT = Path(__file__).resolve().parents[1]
TASK = "t2m_evaluator"
CLASSES = (
    ("walk", ("a person walks forward.", "someone is walking ahead.")),
    ("jump", ("a person jumps up high.", "someone jumps.")),
    ("wave", ("a person waves a hand.", "someone is waving.")),
    ("turn", ("a person turns around.", "someone turns on the spot.")),
)


def synthetic_t2m(seed: int = 0, sizes=(48, 40, 40), max_len: int = 64) -> T2MDataset:
    """Four motion classes (a class-specific oscillation of the 263 features plus noise), two
    captions each; 40-64 frames."""
    rng = np.random.default_rng(seed)
    pattern = rng.normal(size=(len(CLASSES), 263))
    splits = {}
    for name, n in zip(("train", "val", "test"), sizes):
        motions = []
        for i in range(n):
            k = i % len(CLASSES)
            T = int(rng.integers(40, max_len + 1))
            t = np.arange(T)[:, None] / 20.0
            f = np.sin(2 * np.pi * (0.5 + k) * t + rng.uniform(0, 6)) * pattern[k] + 0.3 * rng.normal(size=(T, 263))
            motions.append(T2MMotion(f"{name}_{i:03d}", f.astype(np.float32), list(CLASSES[k][1]), f"clip{i}"))
        splits[name] = T2MSplit(name, motions)
    norm = feature_stats([m.features for m in splits["train"]])
    return T2MDataset("bandai", "humanml3d", 20.0, 40, max_len, splits, norm.mean, norm.std)


def tiny(steps: int = 30, **model) -> Config:
    m = dict(word_dim=8, text_hidden=8, movement_hidden=8, movement_latent=8, motion_hidden=12, embed_dim=6,
             max_text_len=10)
    m.update(model)
    return Config(name="tiny_t2m_evaluator", task=TASK, model=T2MEvaluatorModelConfig(**m),
                  data=T2MEvaluatorDataConfig(max_len=64, eval_repeats=3),
                  optim=OptimConfig(lr=3e-3, schedule="constant", grad_clip=0.5),
                  train=TrainConfig(steps=steps, batch_size=8, log_every=5, eval_every=15, ckpt_every=15,
                                    best_metric="rprec_top1", best_mode="max", progress=False,
                                    async_checkpoint=False))


@pytest.fixture(scope="module")
def data():
    return synthetic_t2m()


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("t2m_eval") / "run"
    cfg = tiny()
    _, history = train(make_task(cfg, benchmark=data), cfg, workdir)
    return workdir, history


def test_batches_are_tokenized_and_resumable(data):
    task = make_task(tiny(), benchmark=data)
    it = task.train_iterator(0)
    b = next(it)
    assert set(b) == {"motion", "length", "text_ids", "text_mask", "group"}
    assert b["motion"].shape == (8, 64, 263) and b["text_ids"].shape == (8, 10) and b["text_ids"].dtype == np.int32
    assert b["text_mask"][:, 0].all() and (b["length"] % 4 == 0).all()
    words = task.tokenizer.decode(b["text_ids"], b["text_mask"])
    assert all(w.split()[0] in ("a", "someone") for w in words)
    np.testing.assert_array_equal(caption_groups(data["train"])[:8], [0, 1, 2, 3, 0, 1, 2, 3])
    state = it.get_state()
    want = next(it)
    again = task.train_iterator(0)
    again.set_state(state)
    got = next(again)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_training_lowers_the_loss_and_validates(run):
    _, history = run
    losses = [h["train/loss"] for h in history if "train/loss" in h]
    assert len(losses) == 6 and losses[-1] < losses[0]
    evals = [h for h in history if "eval/rprec_top1" in h]
    assert [h["step"] for h in evals] == [15, 30]
    for h in evals:
        for k in ("rprec_top1", "rprec_top2", "rprec_top3", "rprec_top1_first"):
            assert 0.0 <= h[f"eval/{k}"] <= 1.0
        assert h["eval/rprec_top1"] <= h["eval/rprec_top2"] <= h["eval/rprec_top3"]
        assert h["eval/mm_dist"] > 0
    assert {"train/pos_dist", "train/neg_dist", "train/loss_pos", "train/loss_neg", "train/batch_top1"} <= {
        k for h in history for k in h}


def test_checkpoint_loads_as_a_frozen_evaluator(run, data):
    workdir, _ = run
    r = load(workdir)
    assert r.step == 30 and set(r.variables) == {"params", "assets"}
    ev = r.task.frozen(r.variables)
    assert r.task._dataset is None  # tokenizer and statistics came from the checkpoint
    assert ev.tokenizer == make_task(tiny(), benchmark=data).tokenizer
    np.testing.assert_allclose(ev.mean, data.mean) and np.testing.assert_allclose(ev.std, data.std)
    best = load_evaluator(workdir)
    assert isinstance(best, FrozenT2MEvaluator) and best.info["selected"] == "best (validation)"
    assert (workdir / "best" / str(best.info["step"])).is_dir()
    variables, _ = load_params(workdir / "best")
    assert best.fingerprint == make_task(tiny()).frozen(variables).fingerprint  # stable
    latest = load_evaluator(workdir, checkpoint="latest")
    assert latest.info["step"] == 30
    if best.info["step"] != 30:
        assert latest.fingerprint != best.fingerprint
    sp = data["val"]
    emb = ev.embed_motion([m.features[:40] for m in sp.motions[:3]], [40] * 3, normalized=False)
    assert emb.shape == (3, 6) and np.isfinite(emb).all()
    assert ev.embed_text(["a person walks forward.", "an unseen word"]).shape == (2, 6)


def test_real_motion_tool(run, data):
    spec = importlib.util.spec_from_file_location("t2m_real_motion", REPO_ROOT / "tools" / "t2m_real_motion.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    ev = load_evaluator(run[0])
    res = tool.real_motion_row(ev, data, repeats=3, seed=1)
    assert res["settings"]["pairs_per_repeat"] == 32 and res["settings"]["diversity_pairs"] == 32
    for k in tool.METRICS:
        assert np.isfinite(res["mean"][k]) and res["ci95"][k] >= 0
    assert res["mean"]["rprec_top1"] <= res["mean"]["rprec_top3"] <= 1
    again = tool.real_motion_row(ev, data, repeats=3, seed=1)
    assert again["mean"] == res["mean"]  # seeded
    assert tool.format_row(res).startswith("| Real (test) |")
    json.dumps(res)


def test_config_file_and_refusals(data):
    cfg = load_config(REPO_ROOT / "configs" / "t2m_evaluator.py", ["model.motion_hidden=512", "train.steps=10"])
    assert task_class(cfg.task).__name__ == "T2MEvaluatorTask"
    assert cfg.model.motion_hidden == 512 and cfg.train.best_metric == "rprec_top1" and cfg.train.best_mode == "max"
    assert cfg.data.eval_split == "val" and cfg.optim.lr == 1e-4 and cfg.train.batch_size == 32
    bad = tiny()
    bad.data.eval_split = "test"
    with pytest.raises(ConfigError, match="never on the test split"):
        make_task(bad, benchmark=data)
    with pytest.raises(ConfigError, match="model.loss"):
        make_task(tiny(loss="triplet"), benchmark=data)


def test_infonce_trains(data, tmp_path):
    cfg = tiny(steps=10, loss="infonce")
    cfg.train.eval_every, cfg.train.best_metric = 0, None
    _, history = train(make_task(cfg, benchmark=data), cfg, tmp_path / "nce")
    losses = [h["train/loss"] for h in history if "train/loss" in h]
    assert np.isfinite(losses).all() and "train/loss_t2m" in history[0]
