"""Text-to-motion data (mmar.data.t2m): a synthetic Bandai-like folder (archives, labels, cache),
generated HumanML3D and KIT folders through the same path, the grain training iterator
(determinism, resume, sharding) and the evaluation iterator; a small real-data check."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mmar.data import hml_features as hf
from mmar.data import t2m
from mmar.data.bandai import parse_clip_name
from mmar.data.bvh import write_bvh
from mmar.data.captions import captions_for
from mmar.data.clip import Clip, Skeleton
from mmar.data.splits import assign_splits
from mmar.errors import ConfigError, DataFormatError, ShapeError

from test_data_hml_features import _rodrigues, synthetic_joints
from test_data_humanml3d import caption, write_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------
# a synthetic Bandai Namco folder: one dataset-1 archive, label lists, JSON labels
# --------------------------------------------------------------------------

_BANDAI_JOINTS = (  # (name, parent, offset in metres; Y up, facing +Z, left = +X)
    ("joint_Root", -1, (0, 0, 0)), ("Hips", 0, (0, 0.93, 0)), ("Spine", 1, (0, 0.10, 0)),
    ("Chest", 2, (0, 0.25, 0)), ("Neck", 3, (0, 0.20, 0)), ("Head", 4, (0, 0.10, 0.03)),
    ("Shoulder_L", 3, (0.05, 0.15, 0)), ("UpperArm_L", 6, (0.12, 0, 0)), ("LowerArm_L", 7, (0.26, 0, 0)),
    ("Hand_L", 8, (0.25, 0, 0)), ("Shoulder_R", 3, (-0.05, 0.15, 0)), ("UpperArm_R", 10, (-0.12, 0, 0)),
    ("LowerArm_R", 11, (-0.26, 0, 0)), ("Hand_R", 12, (-0.25, 0, 0)),
    ("UpperLeg_L", 1, (0.09, -0.08, 0)), ("LowerLeg_L", 14, (0, -0.40, 0)), ("Foot_L", 15, (0, -0.40, -0.03)),
    ("Toes_L", 16, (0, -0.05, 0.13)), ("UpperLeg_R", 1, (-0.09, -0.08, 0)), ("LowerLeg_R", 18, (0, -0.40, 0)),
    ("Foot_R", 19, (0, -0.40, -0.03)), ("Toes_R", 20, (0, -0.05, 0.13)),
)
CONTENTS = ("walk", "bow")
STYLES = ("normal", "happy", "sad")
WALKS = ("walk_normal_001", "walk_normal_002", "walk_happy_001", "walk_happy_002", "walk_sad_001")
BOWS = ("bow_normal_001", "bow_sad_001")
NAMES = tuple(f"dataset-1_{n}" for n in WALKS + BOWS)


def _bandai_clip(name: str, T: int, seed: int) -> Clip:
    """A walking, turning body on the Bandai source skeleton at 30 fps, with the translation on
    ``Hips`` (per-frame ``local_trans``) as in the real files."""
    rng = np.random.default_rng(seed)
    names = tuple(j[0] for j in _BANDAI_JOINTS)
    parents = tuple(j[1] for j in _BANDAI_JOINTS)
    offsets = np.array([j[2] for j in _BANDAI_JOINTS], np.float64)
    J = len(names)
    t = np.arange(T) / 30.0
    aa = 0.3 * np.sin(t[:, None, None] * rng.uniform(0.5, 3, (1, J, 3)) + rng.uniform(0, 6, (1, J, 3)))
    aa[:, 0] = 0.0
    yaw = 0.4 * np.sin(0.5 * t) + rng.uniform(-1, 1)
    R = _rodrigues(aa)
    R[:, 1] = _rodrigues(np.stack([np.zeros(T), yaw, np.zeros(T)], -1)) @ R[:, 1]
    trans = np.broadcast_to(offsets, (T, J, 3)).copy()
    trans[:, 1] = np.stack([np.cumsum(0.03 * np.sin(yaw)), 0.93 + 0.02 * np.sin(4 * t),
                            np.cumsum(0.03 * np.cos(yaw))], -1)
    return Clip(name, Skeleton(names, parents, offsets.astype(np.float32)), R.astype(np.float32),
                np.zeros((T, 3), np.float32), fps=30.0, local_trans=trans.astype(np.float32))


def _lengths_by_split() -> dict[str, int]:
    """Clip lengths (30 fps) chosen so that every rule shows, whatever clip the split puts where:
    at 20 fps ``T30 -> int((T30 - 1) * 2 / 3) + 1`` frames, one feature frame fewer."""
    split = assign_splits(NAMES)
    walks = {s: sorted(n for n in NAMES if "walk" in n and split[n] == s) for s in ("train", "val", "test")}
    assert [len(walks[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    out = {walks["test"][0]: 400,   # 266 feature frames: segments [0, 196) + tail [196, 266)
           walks["val"][0]: 91}     # 60
    out.update(zip(walks["train"], (301, 62, 60)))  # 200: [0, 196), tail of 4 dropped; 40: kept; 39: dropped
    out.update({"dataset-1_bow_normal_001": 120, "dataset-1_bow_sad_001": 150})  # 79, 99 (train only)
    return out


def write_bandai(root: Path) -> dict[str, int]:
    """The folder layout of ../shared/data/bandai-namco with one dataset-1 archive."""
    lengths = _lengths_by_split()
    data = root / "src" / "Bandai-Namco-Research-Motiondataset-1" / "data"
    data.mkdir(parents=True)
    for i, name in enumerate(NAMES):
        write_bvh(_bandai_clip(name, lengths[name], i), data / f"{name}.bvh", scale=0.01)
        lab = parse_clip_name(name)
        (data / f"{name}.json").write_text(json.dumps({"content": CONTENTS.index(lab["content"]),
                                                       "style": STYLES.index(lab["style"])}))
    with tarfile.open(root / "Bandai-Namco-Research-Motiondataset-1.tar.xz", "w:xz") as tf:
        tf.add(data.parent, "Bandai-Namco-Research-Motiondataset-1")
    (root / "cfg-1").mkdir()
    (root / "cfg-1" / "content_label.txt").write_text("".join(f"dataset-1_{c}\n" for c in CONTENTS))
    (root / "cfg-1" / "style_label.txt").write_text("".join(f"dataset-1_{s}\n" for s in STYLES))
    return lengths


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMAR_CACHE_DIR", str(d))
        yield d


@pytest.fixture(scope="module")
def bandai_fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("bandai")
    return root, write_bandai(root)


@pytest.fixture(scope="module")
def ds(bandai_fake, cache_env):
    root, _ = bandai_fake
    return t2m.load_t2m("bandai", root=root, datasets=(1,), workers=1, progress=False, on_error="raise")


def _features(n: int) -> int:
    return int((n - 1) * 2 / 3 + 1e-6)  # 20-fps frames minus one


# --------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------

def test_segment_rule():
    assert t2m.segment_bounds(39, 196, 40) == []
    assert t2m.segment_bounds(40, 196, 40) == [(0, 40)]
    assert t2m.segment_bounds(196, 196, 40) == [(0, 196)]
    assert t2m.segment_bounds(235, 196, 40) == [(0, 196)]  # a tail of 39 is dropped
    assert t2m.segment_bounds(236, 196, 40) == [(0, 196), (196, 236)]
    assert t2m.segment_bounds(600, 196, 40) == [(0, 196), (196, 392), (392, 588)]
    x, m = t2m.pad_windows([np.ones((3, 2)), np.ones((5, 2))], 5)
    assert x.shape == (2, 5, 2) and m.sum(1).tolist() == [3, 5] and x[0, 3:].sum() == 0


def test_train_lengths_stay_in_range():
    rng = np.random.default_rng(0)
    L = rng.integers(40, 400, 20000)
    n = t2m.train_lengths(L, rng, 196, 4, 1 / 3, 40)
    assert n.min() >= 40 and n.max() <= 196 and np.all(n % 4 == 0) and np.all(n <= L)
    base = np.minimum(L, 196) // 4 * 4
    shorter = (n < base)[base > 40]
    assert abs(shorter.mean() - 1 / 3) < 0.02  # the official "double" coin
    assert np.all(t2m.train_lengths(L, rng, 196, 4, 0.0, 40) == base)
    assert t2m.train_lengths(np.array([40, 43, 44]), rng, 196, 4, 1.0, 40).tolist() == [40, 40, 40]
    assert t2m.eval_window(199) == (1, 196) and t2m.eval_window(47) == (1, 44)


# --------------------------------------------------------------------------
# Bandai (synthetic folder)
# --------------------------------------------------------------------------

def test_bandai_segments_splits_and_captions(ds, bandai_fake):
    _, lengths = bandai_fake
    split = assign_splits(NAMES)
    assert ds.source == "bandai" and ds.kind == "humanml3d" and ds.fps == 20.0 and ds.feature_dim == 263
    assert (ds.min_len, ds.max_len) == (40, 196)
    by_len = {n: _features(T) for n, T in lengths.items()}
    expect = {s: [] for s in t2m.SPLITS}
    for name in sorted(NAMES):
        segs = t2m.segment_bounds(by_len[name], 196, 40)
        for a, b in segs:
            expect[split[name]].append(name if (a, b) == (0, by_len[name]) else f"{name}_{a}_{b}")
    for s in t2m.SPLITS:
        assert ds[s].names == expect[s]
        for m in ds[s]:
            assert 40 <= m.length <= 196 and m.features.shape == (m.length, 263) and m.features.dtype == np.float32
            assert split[m.clip] == s and m.captions == captions_for(parse_clip_name(m.clip))
            assert len(m.captions) >= 12 and m.tokens is None
    assert sorted(m.length for m in ds["train"]) == [40, 79, 99, 196]
    assert [m.length for m in ds["test"]] == [196, 70] and [m.start for m in ds["test"]] == [0, 196]
    assert [m.length for m in ds["val"]] == [60]
    short = [n for n in NAMES if by_len[n] < 40]
    assert ds.info["dropped_clips"] == {"train": short, "val": [], "test": []}
    assert ds.info["dropped_tail_frames"]["train"] == 4 and ds.info["clips"]["train"] == 5
    assert ds.summary()["test"] == {"motions": 2, "clips": 1, "frames": 266, "min_len": 70,
                                    "median_len": 133.0, "max_len": 196,
                                    "captions": 2 * len(ds["test"][0].captions)}


def test_segments_are_slices_of_the_clip_features(ds, bandai_fake):
    """Both test segments come from one clip: together they are the features of the whole clip,
    recomputed here through load_bandai + clip_features (the one implementation)."""
    from mmar import geometry_np as gnp
    from mmar.data.bandai import load_bandai

    root, _ = bandai_fake
    name = ds["test"][0].clip
    clip = next(c for c in load_bandai(root, datasets=(1,), fps=20, workers=1, progress=False) if c.name == name)
    _, joints = gnp.forward_kinematics(clip.local_rot, clip.skeleton.offsets, clip.skeleton.parents, clip.root_pos)
    f = t2m.clip_features(joints)
    np.testing.assert_array_equal(np.concatenate([m.features for m in ds["test"]]), f)


def test_bandai_cache_outside_the_repo(ds, bandai_fake, cache_env):
    root, _ = bandai_fake
    path = Path(ds.info["cache"])
    assert path.parent == cache_env and path.exists() and REPO_ROOT not in path.parents
    assert ds.info["cached"] is False
    again = t2m.load_t2m("bandai", root=root, datasets=(1,), workers=1, progress=False)
    assert again.info["cached"] is True
    for s in t2m.SPLITS:
        assert again[s].names == ds[s].names
        for a, b in zip(again[s], ds[s]):
            np.testing.assert_array_equal(a.features, b.features)
            assert a.captions == b.captions and a.clip == b.clip and a.start == b.start
    np.testing.assert_array_equal(again.mean, ds.mean)
    # other settings, other file; a damaged file is rebuilt
    other = t2m.load_t2m("bandai", root=root, datasets=(1,), max_len=100, workers=1, progress=False)
    assert other.info["cache"] != ds.info["cache"] and max(m.length for m in other["test"]) == 100
    path.write_bytes(b"garbage")
    rebuilt = t2m.load_t2m("bandai", root=root, datasets=(1,), workers=1, progress=False)
    assert rebuilt.info["cached"] is False and rebuilt["train"].names == ds["train"].names
    assert not any(p.suffix != ".npz" for p in cache_env.iterdir())  # no temporary left over


def test_stats_from_train_only(ds, tmp_path):
    train = [m.features for m in ds["train"]]
    ref = hf.Normalizer.from_data(train, joints_num=22)
    np.testing.assert_allclose(ds.mean, ref.mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ds.std, ref.std, rtol=1e-5, atol=1e-7)
    everything = hf.Normalizer.from_data([m.features for s in t2m.SPLITS for m in ds[s]], joints_num=22)
    assert not np.allclose(ds.mean, everything.mean)
    # grouped like HumanML3D's Std.npy: one value per feature group
    for sl in hf.feature_slices(22).values():
        assert np.unique(ds.std[sl]).size == 1
    # round trip, numpy and jax
    x = ds["val"][0].features
    z = ds.normalize(x)
    assert z.dtype == np.float32
    np.testing.assert_allclose(ds.denormalize(z), x, rtol=1e-5, atol=1e-4)
    import jax.numpy as jnp

    np.testing.assert_allclose(np.asarray(ds.denormalize(ds.normalize(jnp.asarray(x)))), x, rtol=1e-5, atol=1e-4)
    with pytest.raises(ShapeError, match="263"):
        ds.normalize(np.zeros((3, 251), np.float32))
    # saved beside a run, loaded back
    ds.save_stats(tmp_path / "run" / "t2m_stats.npz")
    norm = t2m.load_stats(tmp_path / "run" / "t2m_stats.npz")
    np.testing.assert_array_equal(norm.mean, ds.mean)
    np.testing.assert_array_equal(norm.std, ds.std)
    meta = json.loads(str(np.load(tmp_path / "run" / "t2m_stats.npz")["meta"]))
    assert meta["source"] == "bandai" and meta["stats"] == "train" and meta["train"] == ds["train"].fingerprint()
    np.savez(tmp_path / "kit.npz", mean=np.zeros(251), std=np.ones(251))
    with pytest.raises(ShapeError, match="251"):
        ds.load_stats(tmp_path / "kit.npz")
    with pytest.raises(DataFormatError, match="not found"):
        t2m.load_stats(tmp_path / "none.npz")


# --------------------------------------------------------------------------
# iterators
# --------------------------------------------------------------------------

def _check_batch(ds, batch, B, W=196, split="train"):
    assert batch["motion"].shape == (B, W, 263) and batch["motion"].dtype == np.float32
    assert batch["length"].shape == (B,) and batch["length"].dtype == np.int32
    assert batch["mask"].shape == (B, W) and batch["mask"].dtype == bool
    assert isinstance(batch["text"], list) and len(batch["text"]) == B
    L = batch["length"]
    np.testing.assert_array_equal(batch["mask"], np.arange(W)[None] < L[:, None])
    assert np.all(batch["motion"][~batch["mask"]] == 0)
    for i in range(B):
        m = ds[split][int(batch["index"][i])]
        s, n = int(batch["start"][i]), int(L[i])
        assert 0 <= s and s + n <= m.length
        np.testing.assert_array_equal(batch["motion"][i, :n], ds.normalize(m.features[s:s + n]))
        if n:
            assert batch["text"][i] in m.captions


def test_train_batches(ds):
    it = ds.train_iterator(batch_size=8, seed=0, shard=None)
    batches = [next(it) for _ in range(25)]
    for b in batches:
        _check_batch(ds, b, 8)
        assert b["length"].min() >= 40 and b["length"].max() <= 196 and np.all(b["length"] % 4 == 0)
    idx = np.concatenate([b["index"] for b in batches])
    assert np.all(np.sort(idx[:4]) == np.arange(4))  # every motion once per epoch (4 motions)
    # random crops of the 196-frame motion: length 196 or 192, start 0..4
    lens = np.concatenate([b["length"] for b in batches])
    sel = [ds["train"][int(i)].length == 196 for i in idx]
    assert set(lens[sel]) == {192, 196}
    texts = {t for b in batches for t in b["text"]}
    assert len(texts) > 20  # captions drawn at random among 12-16 per motion
    # a shorter window crops every motion
    b = next(ds.train_iterator(batch_size=8, seed=1, shard=None, crop_len=64, unit_drop_prob=0.0))
    _check_batch(ds, b, 8, W=64)
    assert set(b["length"].tolist()) <= {40, 64}


def test_train_iterator_is_deterministic_and_resumes(ds):
    def take(it, n):
        return [next(it) for _ in range(n)]

    a = take(ds.train_iterator(8, seed=3, shard=None), 6)
    b = take(ds.train_iterator(8, seed=3, shard=None), 6)
    c = take(ds.train_iterator(8, seed=4, shard=None), 6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["motion"], y["motion"])
        assert x["text"] == y["text"]
    assert any(not np.array_equal(x["motion"], y["motion"]) for x, y in zip(a, c))

    it = ds.train_iterator(8, seed=3, shard=None, num_threads=2, prefetch=4)
    take(it, 3)
    state = json.loads(json.dumps(it.get_state()))
    rest = take(it, 3)
    it.close()
    fresh = ds.train_iterator(8, seed=3, shard=None)
    fresh.set_state(state)
    for x, y, z in zip(rest, take(fresh, 3), a[3:]):
        np.testing.assert_array_equal(x["motion"], y["motion"])
        np.testing.assert_array_equal(x["motion"], z["motion"])
        assert x["text"] == y["text"] == z["text"]
    with pytest.raises(ConfigError, match="another pipeline"):
        ds.train_iterator(8, seed=5, shard=None).set_state(state)


def test_train_iterator_shards(ds):
    it0 = ds.train_iterator(2, seed=0, shard=(0, 2), num_epochs=1)
    it1 = ds.train_iterator(2, seed=0, shard=(1, 2), num_epochs=1)
    i0 = np.concatenate([b["index"] for b in it0])
    i1 = np.concatenate([b["index"] for b in it1])
    assert len(i0) == len(i1) == 2 and not set(i0) & set(i1)
    with pytest.raises(ConfigError, match="fewer than"):
        ds.train_iterator(2, shard=(0, 8))


def test_eval_iterator(ds):
    batches = list(ds.eval_iterator("test", batch_size=3))
    assert len(batches) == 1
    b = batches[0]
    _check_batch(ds, b, 3, split="test")
    assert b["valid"].tolist() == [True, True, False] and b["length"].tolist() == [196, 68, 0]
    assert b["start"].tolist()[:2] == [0, 1]  # the centred window
    assert b["text"][:2] == [m.captions[0] for m in ds["test"]] and b["text"][2] == ""
    everything = list(ds.eval_iterator("train", batch_size=4, captions="all"))
    total = sum(len(m.captions) for m in ds["train"])
    assert sum(int(x["valid"].sum()) for x in everything) == total and len(everything) == -(-total // 4)
    pairs = [(int(i), t) for x in everything for i, t, v in zip(x["index"], x["text"], x["valid"]) if v]
    assert pairs == [(i, c) for i, m in enumerate(ds["train"]) for c in m.captions]
    assert len(list(ds.eval_iterator("test", batch_size=3, drop_remainder=True))) == 0
    # hosts get contiguous parts and the same number of batches
    parts = [list(ds.eval_iterator("train", batch_size=1, shard=(k, 3))) for k in range(3)]
    assert {len(p) for p in parts} == {2}
    got = [int(x["index"][0]) for p in parts for x in p if x["valid"][0]]
    assert got == list(range(4))
    with pytest.raises(ConfigError, match="first"):
        ds.eval_iterator("test", captions="some")


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------

def test_errors(bandai_fake, tmp_path, cache_env):
    root, _ = bandai_fake
    with pytest.raises(DataFormatError, match="not found"):
        t2m.load_t2m("bandai", root=tmp_path / "missing", progress=False)
    with pytest.raises(DataFormatError, match="humanml3d dataset folder not found"):
        t2m.load_t2m("humanml3d", root=tmp_path / "missing", progress=False)
    with pytest.raises(ConfigError, match="needs root"):
        t2m.load_t2m("kit", progress=False)
    # every val / test clip is shorter than 100 feature frames here
    with pytest.raises(DataFormatError, match="split 'val' has no motion of at least 100 frames"):
        t2m.load_t2m("bandai", root=root, datasets=(1,), min_len=100, workers=1, progress=False)
    with pytest.raises(ConfigError, match="unknown text-to-motion source"):
        t2m.load_t2m("amass")
    with pytest.raises(ConfigError, match="20 fps"):
        t2m.load_t2m("humanml3d", root=tmp_path, fps=30)
    with pytest.raises(ConfigError, match="train split"):
        t2m.load_t2m("bandai", root=root, splits=("test",))


# --------------------------------------------------------------------------
# HumanML3D and KIT folders: the same path
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hml_long():
    return hf.joints_to_features(synthetic_joints(T=241, spin=2 * np.pi))  # 240 frames


def _write_hml(root, feats, kind="humanml3d"):
    motions = {"000001": feats[:199], "000002": feats[10:130], "000003": feats[:60], "000004": feats[:30],
               "M000001": feats[20:219], "000005": feats[:80], "000006": feats[5:155], "000007": feats[:41]}
    texts = {k: [caption(f"a person does thing {k} {i}") for i in range(3)] for k in motions}
    texts["000003"].append(caption("the first part", 0.0, 2.5))  # a sub-range entry (50 frames)
    write_dataset(root, kind=kind, motions=motions, texts=texts,
                  splits={"train": ["000001", "000002", "000003", "000004", "M000001"],
                          "val": ["000005"], "test": ["000006", "000007"]})
    return motions


def test_humanml3d_folder(tmp_path, hml_long):
    motions = _write_hml(tmp_path, hml_long)
    ds = t2m.load_t2m("humanml3d", root=tmp_path, progress=False)
    assert ds.source == "humanml3d" and ds.kind == "humanml3d" and ds.fps == 20.0 and ds.min_len == 40
    # the published filter 40 <= T < 200 (000004 has 30 frames); sub-range entries first
    assert ds["train"].names == ["000001", "000002", "000003_0_50", "000003", "M000001"]
    assert ds["val"].names == ["000005"] and ds["test"].names == ["000006", "000007"]
    m = ds["train"][0]
    assert m.length == 199 and m.clip == "000001" and m.captions[0] == "a person does thing 000001 0"
    assert m.tokens[0][:2] == ["a/NOUN", "person/NOUN"]
    np.testing.assert_array_equal(m.features, motions["000001"])
    assert ds["train"][2].captions == ["the first part"] and ds["train"][2].clip == "000003"
    ref = hf.Normalizer.from_data([x.features for x in ds["train"]], joints_num=22)
    np.testing.assert_allclose(ds.mean, ref.mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ds.std, ref.std, rtol=1e-5, atol=1e-7)
    batches = [next(it) for it in [ds.train_iterator(4, seed=0, shard=None)] for _ in range(6)]
    for b in batches:
        _check_batch(ds, b, 4)
        assert b["length"].min() >= 40 and b["length"].max() <= 196 and np.all(b["length"] % 4 == 0)
    # the 199-frame motions are cut to 196 (or 192) at a random start
    crops = [(int(b["length"][i]), int(b["start"][i])) for b in batches for i in range(4)
             if ds["train"][int(b["index"][i])].length == 199]
    assert crops and all(n in (192, 196) and 0 <= s <= 199 - n for n, s in crops)
    e = next(iter(ds.eval_iterator("test", batch_size=2)))
    assert e["length"].tolist() == [148, 40] and e["start"].tolist() == [1, 0]
    # the folder's own Mean.npy / Std.npy (published statistics)
    folder = t2m.load_t2m("humanml3d", root=tmp_path, stats="folder", progress=False)
    np.testing.assert_array_equal(folder.mean, np.load(tmp_path / "Mean.npy"))
    # a KIT config on a HumanML3D folder: wrong feature size, named with its file
    with pytest.raises(DataFormatError, match=r"000001\.npy.*251"):
        t2m.load_t2m("kit", root=tmp_path, progress=False)


def test_kit_folder(tmp_path):
    spec = hf.KIT
    offsets = spec.raw_offsets * np.linspace(0.08, 0.3, 21)[:, None]
    feats = hf.joints_to_features(synthetic_joints(T=221, offsets=offsets, parents=spec.parents), kind="kit")
    assert feats.shape == (220, 251)
    motions = {"00001": feats[:150], "00002": feats[:30], "00003": feats[:20], "00004": feats[:199]}
    write_dataset(tmp_path, kind="kit", motions=motions,
                  texts={k: [caption(f"kit motion {k}"), caption("another")] for k in motions},
                  splits={"train": ["00001", "00004", "00003"], "val": ["00002"], "test": ["00001"]})
    ds = t2m.load_t2m("kit", root=tmp_path, progress=False)  # the one config change
    assert ds.kind == "kit" and ds.fps == 12.5 and ds.min_len == 24 and ds.feature_dim == 251
    assert ds["train"].names == ["00001", "00004"] and ds["val"].names == ["00002"]
    assert ds.mean.shape == ds.std.shape == (251,)
    for sl in hf.feature_slices(21).values():
        assert np.unique(ds.std[sl]).size == 1
    b = next(ds.train_iterator(4, seed=0, shard=None))
    assert b["motion"].shape == (4, 196, 251)
    assert b["length"].min() >= 24 and np.all(b["length"] % 4 == 0)
    e = next(iter(ds.eval_iterator("val", batch_size=1)))
    assert e["length"].tolist() == [28] and e["start"].tolist() == [1]
    assert e["text"] == ["kit motion 00002"]
    # an empty split is an error, naming the split
    (tmp_path / "val.txt").write_text("00003\n")
    with pytest.raises(DataFormatError, match="kit split 'val' has no motion of at least 24 frames"):
        t2m.load_t2m("kit", root=tmp_path, progress=False)


# --------------------------------------------------------------------------
# real data: a handful of dataset-1 clips (skipped without the shared data)
# --------------------------------------------------------------------------

def test_real_bandai_clips(bandai_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MMAR_CACHE_DIR", str(tmp_path))
    ds = t2m.load_t2m("bandai", root=bandai_dir, datasets=(1,), max_clips=3, progress=False)
    assert sum(ds.info["clips"].values()) == 9
    for s in t2m.SPLITS:
        assert len(ds[s]) >= 1
        for m in ds[s]:
            assert 40 <= m.length <= 196 and m.clip.startswith("dataset-1_")
            assert m.captions == captions_for(parse_clip_name(m.clip))
    assert np.all(np.isfinite(ds.mean)) and np.all(ds.std > 0)
    b = next(ds.train_iterator(4, seed=0, shard=None))
    _check_batch(ds, b, 4)
    # features recover a standing body: pelvis about 0.9 m above the floor
    pos = np.asarray(hf.recover_from_ric(ds["train"][0].features))
    assert 0.7 < float(np.median(pos[:, 0, 1])) < 1.1
