"""The text-to-motion protocol as a library (mmar.eval.t2m_protocol) on synthetic captioned
motions, without training: a tiny Guo et al. evaluator with random weights (the real embedding
path) and an "oracle" evaluator that knows the synthetic classes (so that R-precision means
something). A generator that returns the drawn ground-truth windows reproduces the real-motion
row; noise scores far worse; the generator is asked for the pooled pairs only, with the drawn
captions and window lengths; MultiModality; the real-motion tool still wraps the library;
``mmar eval`` of a text-to-motion run (needs ``--evaluator``, prints the T2M metrics)."""
from __future__ import annotations

import importlib.util
import json
import types
from pathlib import Path

import numpy as np
import pytest

from mmar.data.t2m import T2MDataset, T2MMotion, T2MSplit, feature_stats, pad_windows, train_lengths
from mmar.eval import t2m_protocol as proto
from mmar.models.generated import GeneratedMotions
from mmar.tasks import make_task
from mmar.tasks.t2m_evaluator import T2MEvaluatorDataConfig, T2MEvaluatorModelConfig
from mmar.train.config import Config

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = (
    ("a person walks forward.", "someone is walking ahead."),
    ("a person jumps up high.", "someone jumps."),
    ("a person waves a hand.", "someone is waving."),
    ("a person turns around.", "someone turns on the spot."),
)
MAX_LEN = 64
TEST_SIZE = 70  # two full pools of 32, six motions left out


def synthetic(seed: int = 0, sizes=(48, 32, TEST_SIZE)) -> tuple[T2MDataset, np.ndarray]:
    """Four classes (a class-specific oscillation along a random direction of the 263 features,
    plus noise), two captions each, 40-64 frames; and the directions ``(4, 263)``."""
    rng = np.random.default_rng(seed)
    pattern = rng.normal(size=(len(CLASSES), 263))
    splits = {}
    for name, n in zip(("train", "val", "test"), sizes):
        motions = []
        for i in range(n):
            k = i % len(CLASSES)
            T = int(rng.integers(40, MAX_LEN + 1))
            t = np.arange(T)[:, None] / 20.0
            f = np.sin(2 * np.pi * (0.5 + k) * t + rng.uniform(0, 6)) * pattern[k] + 0.3 * rng.normal(size=(T, 263))
            motions.append(T2MMotion(f"{name}_{i:03d}", f.astype(np.float32), list(CLASSES[k]), f"clip{i}"))
        splits[name] = T2MSplit(name, motions)
    norm = feature_stats([m.features for m in splits["train"]])
    return T2MDataset("bandai", "humanml3d", 20.0, 40, MAX_LEN, splits, norm.mean, norm.std), pattern


@pytest.fixture(scope="module")
def data():
    return synthetic()[0]  # normalised with its training split's statistics, as the evaluators below


@pytest.fixture(scope="module")
def ev(data):
    """Guo et al.'s evaluator, tiny, random weights (shapes by ``jax.eval_shape``: no compiled
    initialisation), tokenizer and statistics of the synthetic training split."""
    import jax

    m = T2MEvaluatorModelConfig(word_dim=8, text_hidden=8, movement_hidden=8, movement_latent=8, motion_hidden=12,
                                embed_dim=6, max_text_len=10)
    task = make_task(Config(name="tiny", task="t2m_evaluator", model=m,
                            data=T2MEvaluatorDataConfig(max_len=MAX_LEN)), benchmark=data)
    batch = next(task.train_iterator(0))
    shapes = jax.eval_shape(lambda r: task.init(r, batch), jax.random.PRNGKey(0))["params"]
    rng = np.random.default_rng(0)

    def draw(path, x):  # kernels ~ 1 / sqrt(fan in), unit layer-norm scales: embeddings that vary
        name = path[-1].key
        if name == "scale":
            return np.ones(x.shape, np.float32)
        if name in ("kernel", "recurrent_kernel"):
            return (rng.normal(size=x.shape) / np.sqrt(np.prod(x.shape[:-1]))).astype(np.float32)
        return (rng.normal(size=x.shape) * (1.0 if name == "embedding" else 0.1)).astype(np.float32)

    params = jax.tree_util.tree_map_with_path(draw, shapes)
    return task.frozen({"params": params, "assets": task.assets()},
                       {"source": "bandai", "step": 0, "workdir": "tiny", "selected": "random"})


class Oracle:
    """An evaluator (duck-typed) that knows the synthetic classes: a caption embeds as its class's
    one-hot, a motion as its rms amplitude along each class direction (about one-hot for real
    motions, near zero for noise)."""

    feature_dim = 263
    fingerprint = "oracle"

    def __init__(self, ds, pattern):
        self.mean, self.std = ds.mean, ds.std
        self.dirs = pattern / np.linalg.norm(pattern, axis=1, keepdims=True)
        self.scale = float(np.mean(np.linalg.norm(pattern, axis=1))) / np.sqrt(2)
        self.cls = {c: k for k, caps in enumerate(CLASSES) for c in caps}
        self.info = {"source": "bandai"}

    def normalize(self, x):
        return ((np.asarray(x, np.float32) - self.mean) / self.std).astype(np.float32)

    def embed_text(self, texts):
        return np.eye(len(CLASSES), dtype=np.float32)[[self.cls[t] for t in texts]]

    def embed_motion(self, x, lengths, normalized=True):
        x = np.asarray(x, np.float64)
        x = x * self.std + self.mean if normalized else x
        valid = np.arange(x.shape[1])[None, :] < np.asarray(lengths)[:, None]
        proj = np.einsum("ntd,kd->ntk", x, self.dirs) * valid[..., None]
        return (np.sqrt((proj ** 2).sum(1) / valid.sum(1)[:, None]) / self.scale).astype(np.float32)


@pytest.fixture(scope="module")
def oracle():
    ds, pattern = synthetic()
    return Oracle(ds, pattern), ds


class GroundTruth:
    """A "generator" returning the ground-truth windows the real row draws (the draws redone
    here, independently of the library), checking that it is asked for them in order."""

    def __init__(self, ds, repeats: int, seed: int, split: str = "test", pool: int = 32):
        sp = self.sp = ds[split]
        N = len(sp)
        texts = [c for m in sp for c in m.captions]
        first = np.concatenate([[0], np.cumsum(sp.num_captions)[:-1]])
        self.queue, self.calls = [], []
        for seq in np.random.SeedSequence(seed).spawn(repeats):
            rng = np.random.default_rng(seq)
            n = train_lengths(sp.lengths, rng, ds.max_len, 4, 1.0 / 3.0, ds.min_len)
            starts = rng.integers(0, sp.lengths - n + 1)
            pick = first + rng.integers(0, sp.num_captions)
            sel = rng.permutation(N)[:N // pool * pool]
            self.queue += [(i, int(starts[i]), int(n[i]), texts[pick[i]]) for i in sel]

    def __call__(self, texts, lengths, seed):
        self.calls.append((list(texts), np.asarray(lengths).copy(), seed))
        items, self.queue = self.queue[:len(texts)], self.queue[len(texts):]
        assert [it[3] for it in items] == list(texts)
        assert [it[2] for it in items] == [int(x) for x in lengths]
        x, _ = pad_windows([self.sp[i].features[s:s + k] for i, s, k, _ in items], MAX_LEN)
        return GeneratedMotions(x, lengths, texts, fps=20.0, seconds=0.01 * len(texts))


def noise_generator(ev, calls=None, use_seed=True):
    def generate(texts, lengths, seed):
        if calls is not None:
            calls.append((list(texts), np.asarray(lengths).copy(), seed))
        rng = np.random.default_rng(seed if use_seed else 0)
        L = np.asarray(lengths)
        x = ev.mean + ev.std * rng.normal(size=(len(texts), int(L.max()), ev.feature_dim))
        x[np.arange(x.shape[1])[None, :] >= L[:, None]] = 0.0
        return GeneratedMotions(x, L, texts, fps=20.0)

    return generate


@pytest.fixture(scope="module")
def rows(ev, data):
    real = proto.real_motion_row(ev, data, repeats=3, seed=1)
    gt = GroundTruth(data, 3, 1)
    gen = proto.generated_row(gt, ev, data, repeats=3, seed=1, progress=False)
    return real, gen, gt


def test_ground_truth_generator_reproduces_the_real_row(rows, ev):
    real, gen, gt = rows
    assert not gt.queue  # every drawn pair asked for, in order
    for k in proto.METRICS:
        np.testing.assert_allclose(gen["mean"][k], real["mean"][k], rtol=1e-3, atol=1e-4, err_msg=k)
        np.testing.assert_allclose(gen["ci95"][k], real["ci95"][k], rtol=1e-2, atol=1e-4, err_msg=k)
    assert {k: v for k, v in gen["settings"].items() if k != "batch_size"} == real["settings"]
    assert gen["fingerprint"] == ev.fingerprint
    s = gen["seconds"]
    assert s["motions"] == 3 * 64 and s["sampling_per_motion"] == pytest.approx(0.01)


def test_ground_truth_scaled_is_told_apart(ev, data):
    """The equality above is not for want of sensitivity: 10 % louder windows move the numbers."""
    gt = GroundTruth(data, 3, 1)

    def louder(texts, lengths, seed):
        g = gt(texts, lengths, seed)
        g.features = g.features * 1.1
        return g

    real = proto.real_motion_row(ev, data, repeats=3, seed=1)
    res = proto.generated_row(louder, ev, data, repeats=3, seed=1, progress=False)
    for k in ("mm_dist", "diversity", "fid"):
        assert abs(res["mean"][k] - real["mean"][k]) > 1e-3 * max(real["mean"][k], 1e-2), k


def test_noise_scores_far_worse(oracle):
    ev, ds = oracle
    real = proto.real_motion_row(ev, ds, repeats=3, seed=1)
    gt = proto.generated_row(GroundTruth(ds, 3, 1), ev, ds, repeats=3, seed=1, progress=False)
    noise = proto.generated_row(noise_generator(ev), ev, ds, repeats=3, seed=1, progress=False)
    for k in proto.METRICS:
        np.testing.assert_allclose(gt["mean"][k], real["mean"][k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert real["mean"]["rprec_top3"] > 0.25  # 8 motions of each class per pool of 32: about 3 / 8
    assert noise["mean"]["fid"] > 50 * real["mean"]["fid"] + 0.1
    assert noise["mean"]["rprec_top3"] < real["mean"]["rprec_top3"] - 0.1
    for k in proto.METRICS:
        assert np.isfinite(noise["mean"][k]) and noise["ci95"][k] >= 0


def test_generator_is_asked_for_pooled_pairs_only(rows, ev, data):
    gt = rows[2]
    calls = []
    noise = proto.generated_row(noise_generator(ev, calls), ev, data, repeats=3, seed=1, batch_size=20,
                                progress=False)
    assert noise["settings"]["pairs_per_repeat"] == 64 and noise["settings"]["motions"] == TEST_SIZE
    assert [len(t) for t, _, _ in calls] == [20, 20, 20, 4] * 3  # batch_size 20, 64 pairs per repeat
    texts = {c for m in data["test"] for c in m.captions}
    for t, L, seed in calls:
        assert set(t) <= texts and isinstance(seed, int)
        assert (L % 4 == 0).all() and L.min() >= 40 and L.max() <= MAX_LEN
    assert len({s for _, _, s in calls}) == len(calls)  # a seed per chunk
    assert len(gt.calls) == 3 * 2 and all(len(t) == 32 for t, _, _ in gt.calls)
    seqs = np.random.SeedSequence(1).spawn(3)  # chunk c of repeat r: generation_seed(seqs[r], c)
    assert [s for _, _, s in calls] == [proto.generation_seed(q, c) for q in seqs for c in range(4)]


def test_multimodality(ev, data):
    res = proto.generated_row(noise_generator(ev), ev, data, repeats=1, seed=0, multimodality=3,
                              multimodality_samples=4, multimodality_pairs=3, progress=False)
    mm = res["multimodality"]
    assert mm["captions"] == 3 and mm["samples"] == 4 and mm["value"] > 0
    assert res["seconds"]["motions"] == 64 + 3 * 4
    same = proto.generated_row(noise_generator(ev, use_seed=False), ev, data, repeats=1, seed=0,
                               multimodality=3, multimodality_samples=4, multimodality_pairs=3, progress=False)
    assert same["multimodality"]["value"] == pytest.approx(0.0, abs=1e-5)  # the seed is ignored: one motion
    assert "multimodality" not in proto.generated_row(noise_generator(ev), ev, data, repeats=1,
                                                      progress=False)


def test_real_motion_tool_wraps_the_library(ev, data):
    spec = importlib.util.spec_from_file_location("t2m_real_motion", REPO_ROOT / "tools" / "t2m_real_motion.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.real_motion_row is proto.real_motion_row and tool.METRICS == proto.METRICS
    res = tool.real_motion_row(ev, data, repeats=2, seed=0)
    assert set(res) >= {"mean", "ci95", "deterministic", "settings", "seconds"}
    row = tool.format_row(res)
    assert row.startswith("| Real (test) |") and row.count("±") == 6
    assert proto.format_row(res, "MoScale").startswith("| MoScale |")
    with pytest.raises(SystemExit) as e:
        tool.main(["--help"])
    assert e.value.code == 0


def _fake_run(ds, ev, tmp_path, calls):
    class FakeT2MTask:
        is_text_to_motion = True
        dataset = ds

        def generate(self, variables, texts, lengths=None, *, seed=0, steps=None, guidance=None, top_p=None,
                     temperature=None, batch_size=32):
            calls.append({"steps": steps, "guidance": guidance, "batch_size": batch_size, "seed": seed})
            return noise_generator(ev)(texts, lengths, seed)

    return types.SimpleNamespace(workdir=tmp_path, config=types.SimpleNamespace(task="fake_t2m", data=None),
                                 task=FakeT2MTask(), variables={}, step=7, checkpoint=tmp_path / "checkpoints" / "7",
                                 skipped_steps=[])


def test_mmar_eval_of_a_text_to_motion_run(data, ev, tmp_path, monkeypatch, capsys):
    import mmar.run
    import mmar.tasks.t2m_evaluator
    from mmar.cli import main

    calls = []
    evaluator_dir = tmp_path / "evaluator"
    monkeypatch.setattr(mmar.run, "load", lambda *a, **k: _fake_run(data, ev, tmp_path, calls))

    def load_evaluator(path, checkpoint="best", step=None):
        assert Path(path) == evaluator_dir and checkpoint == "best"
        return ev

    monkeypatch.setattr(mmar.tasks.t2m_evaluator, "load_evaluator", load_evaluator)
    assert main(["eval", "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "mmar eval: error:" in err and "--evaluator" in err and "text-to-motion" in err
    assert not calls

    out = tmp_path / "t2m.json"
    rc = main(["eval", "--checkpoint", str(tmp_path), "--evaluator", str(evaluator_dir), "--repeats", "2",
               "--steps", "1,2", "--guidance", "2.5", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    res = json.loads(captured.out)
    assert res == json.loads(out.read_text())
    assert res["fingerprint"] == ev.fingerprint and res["evaluator"]["step"] == ev.info["step"]
    assert set(res["metrics"]["mean"]) == set(proto.METRICS) and res["settings"]["repeats"] == 2
    assert res["checkpoint"]["step"] == 7 and res["sampling"]["steps"] == [1, 2]
    assert len(calls) == 2 * 2 and {c["steps"] for c in calls} == {(1, 2)}
    assert {c["guidance"] for c in calls} == {2.5} and {c["batch_size"] for c in calls} == {32}

    assert main(["eval", "--checkpoint", str(tmp_path), "--evaluator", str(evaluator_dir), "--data", "x.npz"]) == 2
    assert "--data is not for text-to-motion runs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--checkpoint", str(tmp_path), "--steps", "0"])


def test_eval_dataset_takes_the_evaluator_statistics(data, ev, monkeypatch):
    import mmar.data.t2m
    from mmar.errors import ConfigError
    from mmar.eval.checkpoint import t2m_eval_dataset

    base = T2MDataset(data.source, data.kind, data.fps, data.min_len, data.max_len,
                      {"train": data["train"], "val": data["val"]}, data.mean * 0 + 1, data.std * 2)
    asked = []

    def load_t2m(source, root, fps, min_len, max_len, *, splits, stats, **kw):
        asked.append((source, root, splits, kw))
        np.testing.assert_array_equal(stats.mean, ev.mean)
        return T2MDataset(source, "humanml3d", 20.0, min_len, max_len, {"test": data["test"]}, stats.mean, stats.std)

    monkeypatch.setattr(mmar.data.t2m, "load_t2m", load_t2m)
    run = types.SimpleNamespace(config=types.SimpleNamespace(data=types.SimpleNamespace(
        source="bandai", root="/data", fps=None, max_clips=5, workers=1)))
    ds = t2m_eval_dataset(run, ev, ("train", "test"), base=base)
    assert asked == [("bandai", "/data", ("test",), {"max_clips": 5, "workers": 1, "progress": False})]
    assert list(ds.splits) == ["train", "test"] and ds["train"] is data["train"]
    np.testing.assert_array_equal(ds.mean, ev.mean) and np.testing.assert_array_equal(ds.std, ev.std)
    np.testing.assert_array_equal(base.mean, 1.0)  # the run's own dataset is left alone
    other = T2MDataset("humanml3d", data.kind, data.fps, data.min_len, data.max_len, base.splits, base.mean,
                       base.std)
    with pytest.raises(ConfigError, match="trained on bandai"):
        t2m_eval_dataset(run, ev, ("train", "test"), base=other)


def test_text_to_motion_flags_are_refused_for_other_runs(tmp_path, monkeypatch, capsys):
    import mmar.run
    from mmar.cli import main

    run = types.SimpleNamespace(workdir=tmp_path, config=types.SimpleNamespace(task="agrol_mlp"),
                                task=types.SimpleNamespace(), variables={}, step=1, checkpoint=tmp_path,
                                skipped_steps=[])
    monkeypatch.setattr(mmar.run, "load", lambda *a, **k: run)
    assert main(["eval", "--checkpoint", str(tmp_path), "--evaluator", "x", "--guidance", "2"]) == 2
    err = capsys.readouterr().err
    assert "--evaluator, --guidance: for text-to-motion runs only" in err and "agrol_mlp" in err
