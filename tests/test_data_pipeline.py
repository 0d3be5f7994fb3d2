"""Window pipeline: arrays of many clips, windows, determinism, state, sharding."""
import json

import numpy as np
import pytest

from mmar import geometry as g
from mmar.data import clip as C
from mmar.data import pipeline as P
from mmar.errors import ConfigError, ShapeError
from mmar.skeleton import SMPL22_NAMES

RNG = np.random.default_rng(3)
LENGTHS = {"a": 60, "b": 45, "c": 20, "d": 90, "e": 42}  # e: exactly W + 1 for W = 41
W = 41


def smpl_clip(name, T, per_frame_trans=False, fps=30.0):
    q = RNG.normal(size=(T, 22, 4))
    q[..., 0] += 3.0
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    local = np.asarray(g.quaternion_to_matrix(q.astype(np.float32)))
    offsets = RNG.normal(scale=0.1, size=(22, 3)).astype(np.float32)
    root = np.cumsum(RNG.normal(scale=0.01, size=(T, 3)), 0).astype(np.float32)
    trans = None
    if per_frame_trans:
        trans = (offsets + RNG.normal(scale=0.01, size=(T, 22, 3))).astype(np.float32)
    return C.Clip(name, C.smpl22_skeleton(offsets), local, root, fps, local_trans=trans)


@pytest.fixture(scope="module")
def clips():
    return [smpl_clip(n, T, per_frame_trans=(n == "d")) for n, T in LENGTHS.items()]


@pytest.fixture(scope="module")
def arrays(clips):
    return P.ClipArrays.from_clips(clips)


@pytest.fixture(scope="module")
def wds(arrays):
    return P.WindowDataset(arrays, W, keys=list(P.DEFAULT_KEYS) + ["clip", "start", "offsets"])


@pytest.fixture(scope="module")
def same_length_clips():
    return [smpl_clip("p", 12), smpl_clip("q", 12, per_frame_trans=True), smpl_clip("r", 12)]


def _reference_arrays(c):
    """Per-clip reference computed directly with geometry, independent of the batched path."""
    g_rot, g_pos = g.forward_kinematics(c.local_rot, c.skeleton.offsets if c.local_trans is None
                                        else c.local_trans, c.skeleton.parents, c.root_pos)
    return {"joints": np.asarray(g_pos), "rot6d": np.asarray(g.matrix_to_rot6d(c.local_rot)),
            "root": c.root_pos, "sparse": np.asarray(C.sparse_features(g_rot, g_pos)),
            "fps": np.float32(c.fps), "offsets": c.skeleton.offsets}


def test_clips_to_arrays_matches_clip_to_arrays(same_length_clips):
    for c, a in zip(same_length_clips, P.clips_to_arrays(same_length_clips)):
        ref = _reference_arrays(c)
        assert set(ref) == set(a)
        for k in ref:
            np.testing.assert_allclose(a[k], ref[k], atol=2e-5, err_msg=f"{c.name}/{k}")


def test_clips_to_arrays_spans_chunks(monkeypatch, same_length_clips):
    monkeypatch.setattr(C, "_FK_CHUNK", 5)  # every clip straddles chunk boundaries
    monkeypatch.setattr(C, "_FK_FN", None)
    for c, a in zip(same_length_clips, P.clips_to_arrays(same_length_clips)):
        ref = _reference_arrays(c)
        for k in ("joints", "sparse", "rot6d"):
            np.testing.assert_allclose(a[k], ref[k], atol=2e-5, err_msg=f"{c.name}/{k}")


def test_resample_clips_matches_clip_resample(same_length_clips):
    clips = list(same_length_clips) + [smpl_clip("s", 12, fps=20.0)]
    got = P.resample_clips(clips, 20.0)
    assert got[-1] is clips[-1]  # already at 20 fps
    for c, r in zip(clips[:-1], got):
        assert r.fps == 20.0 and r.num_frames == 8
        np.testing.assert_allclose(r.local_rot, g.resample_rotations(c.local_rot, c.fps, 20.0), atol=1e-6)
        np.testing.assert_allclose(r.root_pos, g.resample_positions(c.root_pos, c.fps, 20.0), atol=1e-6)
        if c.local_trans is not None:
            np.testing.assert_allclose(r.local_trans, g.resample_positions(c.local_trans, c.fps, 20.0),
                                       atol=1e-6)


def test_clips_to_arrays_needs_smpl22():
    c = smpl_clip("x", 5)
    bad = C.Clip("bad", C.Skeleton(tuple(f"j{i}" for i in range(22)), c.skeleton.parents,
                                   c.skeleton.offsets), c.local_rot, c.root_pos, 30.0)
    with pytest.raises(ShapeError, match="bad"):
        P.clips_to_arrays([bad])


def test_clip_arrays_layout(arrays, clips):
    assert arrays.names == tuple(sorted(LENGTHS))
    assert arrays.num_frames == sum(LENGTHS.values())
    assert list(arrays.lengths) == [LENGTHS[n] for n in arrays.names]
    d = arrays.clip(arrays.names.index("d"))
    ref = P.clips_to_arrays([c for c in clips if c.name == "d"])[0]
    np.testing.assert_allclose(d["sparse"], ref["sparse"], atol=2e-5)
    np.testing.assert_allclose(d["head"], ref["joints"][:, 15], atol=2e-5)
    assert d["fps"] == 30.0 and d["offsets"].shape == (22, 3)
    sub = arrays.subset([3, 0])
    assert sub.names == ("d", "a") and sub.num_frames == 150
    np.testing.assert_array_equal(sub.clip(0)["rot6d"], d["rot6d"])


def test_from_arrays_npz_roundtrip(tmp_path, clips, arrays):
    path = tmp_path / "x.npz"
    C.save_arrays(str(path), {c.name: a for c, a in zip(clips, P.clips_to_arrays(clips))})
    back = P.ClipArrays.from_arrays(C.load_arrays(str(path)), keys=["sparse", "head"])
    assert set(back.frames) == {"sparse", "head"}
    np.testing.assert_allclose(back.frames["sparse"], arrays.frames["sparse"], atol=2e-5)
    np.testing.assert_allclose(back.frames["head"], arrays.frames["head"], atol=2e-5)


def test_window_counts_skip_first_frame(wds, arrays):
    # windows start at 1 .. T - W; clips of fewer than W + 1 frames are skipped
    want = {n: max(0, T - 1 - W + 1) for n, T in LENGTHS.items()}
    got = dict(zip(arrays.names, wds.counts))
    assert got == want
    assert wds.skipped == ("c",)
    assert len(wds) == sum(want.values())
    batch = wds.gather(np.arange(len(wds)))
    assert batch["start"].min() >= 1
    for i in range(len(wds)):
        c, s = batch["clip"][i], batch["start"][i]
        clip = arrays.clip(c)
        assert s + W <= len(clip["sparse"])
        np.testing.assert_array_equal(batch["sparse"][i], clip["sparse"][s:s + W])
        np.testing.assert_array_equal(batch["rot6d"][i], clip["rot6d"][s:s + W])
        np.testing.assert_array_equal(batch["joints"][i], clip["joints"][s:s + W])
        np.testing.assert_array_equal(batch["root"][i], clip["root"][s:s + W])
        np.testing.assert_array_equal(batch["head"][i], clip["joints"][s:s + W, 15])
        np.testing.assert_array_equal(batch["offsets"][i], clip["offsets"])
    # every (clip, start) pair once
    pairs = set(zip(batch["clip"].tolist(), batch["start"].tolist()))
    assert len(pairs) == len(wds)


def test_window_shapes(wds):
    b = wds.gather(np.array([0, 5, 7]))
    assert b["sparse"].shape == (3, W, 54) and b["sparse"].dtype == np.float32
    assert b["rot6d"].shape == (3, W, 22, 6)
    assert b["joints"].shape == (3, W, 22, 3)
    assert b["root"].shape == (3, W, 3) and b["head"].shape == (3, W, 3)


def test_stride_and_pad(arrays):
    ds = P.WindowDataset(arrays, 30, stride=7, short="pad", keys=["sparse", "start", "clip"])
    assert ds.skipped == ()
    b = ds.gather(np.arange(len(ds)))
    assert b["mask"].shape == (len(ds), 30)
    ci = arrays.names.index("c")  # 20 frames: one padded window from frame 1
    sel = np.flatnonzero(b["clip"] == ci)
    assert len(sel) == 1 and b["start"][sel[0]] == 1
    m = b["mask"][sel[0]]
    assert m.sum() == 19 and m[:19].all()
    clip = arrays.clip(ci)["sparse"]
    np.testing.assert_array_equal(b["sparse"][sel[0], :19], clip[1:])
    np.testing.assert_array_equal(b["sparse"][sel[0], 19:], np.broadcast_to(clip[-1], (11, 54)))
    ai = arrays.names.index("a")  # 60 frames, starts 1, 8, ..., <= 30
    starts = sorted(b["start"][b["clip"] == ai].tolist())
    assert starts == list(range(1, 31, 7))
    assert b["mask"][b["clip"] == ai].all()


def test_bad_settings(arrays):
    with pytest.raises(ConfigError):
        P.WindowDataset(arrays, 0)
    with pytest.raises(ConfigError):
        P.WindowDataset(arrays, 10, short="crop")
    with pytest.raises(ConfigError):
        P.WindowDataset(arrays, 10, keys=["velocity"])
    with pytest.raises(ConfigError, match="no training windows"):
        P.make_train_iterator(arrays, window=500, batch_size=4, shard=None)
    with pytest.raises(ConfigError, match="window is required"):
        P.make_train_iterator(arrays, batch_size=4)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_same(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_train_iterator_deterministic(wds):
    a = _take(P.make_train_iterator(wds, batch_size=8, seed=1, shard=None), 6)
    b = _take(P.make_train_iterator(wds, batch_size=8, seed=1, shard=None), 6)
    c = _take(P.make_train_iterator(wds, batch_size=8, seed=2, shard=None), 6)
    _assert_same(a, b)
    assert not all(np.array_equal(x["start"], y["start"]) and np.array_equal(x["clip"], y["clip"])
                   for x, y in zip(a, c))
    assert a[0]["sparse"].shape == (8, W, 54)


def test_train_iterator_state_restores_position(wds):
    it = P.make_train_iterator(wds, batch_size=16, seed=7, shard=None)
    _take(it, 5)
    state = json.loads(json.dumps(it.get_state()))  # JSON-serialisable
    after = _take(it, 5)  # runs across an epoch boundary (73 windows, 16 per batch)
    fresh = P.make_train_iterator(wds, batch_size=16, seed=7, shard=None)
    fresh.set_state(state)
    _assert_same(_take(fresh, 5), after)
    other = P.make_train_iterator(wds, batch_size=16, seed=8, shard=None)
    with pytest.raises(ConfigError, match="seed"):
        other.set_state(state)


def test_train_iterator_threads_same_stream(wds):
    a = _take(P.make_train_iterator(wds, batch_size=8, seed=3, shard=None, num_threads=0), 12)
    b = _take(P.make_train_iterator(wds, batch_size=8, seed=3, shard=None, num_threads=2,
                                    prefetch=4), 12)
    _assert_same(a, b)


def test_epochs_visit_every_window_once(wds):
    n = len(wds)
    it = P.make_train_iterator(wds, batch_size=4, seed=0, shard=None, num_epochs=2)
    batches = list(it)
    assert len(batches) == 2 * n // 4
    ids = [(int(c), int(s)) for b in batches for c, s in zip(b["clip"], b["start"])]
    first, second = ids[:n], ids[n:]
    assert len(set(first)) == n  # one epoch is a permutation of every window
    assert len(set(second)) == len(second) == n - (2 * n) % 4
    assert first[: len(second)] != second  # each epoch has its own order


def test_shards_are_disjoint(wds):
    n = len(wds)
    per = n // 3
    seen = []
    for i in range(3):
        it = P.make_train_iterator(wds, batch_size=per, seed=5, shard=(i, 3), num_epochs=1)
        (b,) = list(it)
        seen.append({(int(c), int(s)) for c, s in zip(b["clip"], b["start"])})
        assert len(seen[-1]) == per
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    # grain's ShardOptions and the jax process default are accepted
    from grain import sharding

    it = P.make_train_iterator(wds, batch_size=4, seed=5, shard=sharding.ShardOptions(1, 3))
    assert it.get_state()["pipeline"]["shard"] == [1, 3]
    it = P.make_train_iterator(wds, batch_size=4, seed=5)  # "auto": one process here
    assert it.get_state()["pipeline"]["shard"] == [0, 1]


def test_train_iterator_from_clip_list_and_window_override(clips, wds):
    it = P.make_train_iterator(clips[:2], window=10, batch_size=3, seed=0, shard=None,
                               keys=["sparse", "head"])
    b = next(it)
    assert set(b) == {"sparse", "head"} and b["sparse"].shape == (3, 10, 54)
    it = P.make_train_iterator(wds, window=20, batch_size=3, seed=0, shard=None)
    assert next(it)["rot6d"].shape == (3, 20, 22, 6)
