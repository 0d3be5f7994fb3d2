"""HumanML3D / KIT-ML loaders on tiny datasets written in the published layout."""
from __future__ import annotations

import numpy as np
import pytest

from mmar.data import hml_features as hf
from mmar.data import humanml3d as h
from mmar.data.clip import load_arrays, save_arrays
from mmar.errors import DataFormatError, ShapeError
from mmar.skeleton import SMPL22_NAMES, SMPL22_PARENTS

from test_data_hml_features import SMPL_OFFSETS, synthetic_joints


def write_dataset(root, kind="humanml3d", motions=None, texts=None, splits=None, joints=True):
    spec = hf.get_spec(kind)
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "new_joints").mkdir()
    (root / "texts").mkdir()
    for mid, feats in motions.items():
        np.save(root / "new_joint_vecs" / f"{mid}.npy", feats)
        if joints and feats.shape[1] == spec.feature_dim:
            np.save(root / "new_joints" / f"{mid}.npy", np.asarray(hf.recover_from_ric(feats, spec.num_joints)))
    for mid, lines in texts.items():
        (root / "texts" / f"{mid}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for split, ids in splits.items():
        (root / f"{split}.txt").write_text("\n".join(ids) + "\n")
    all_feats = np.concatenate(list(motions.values()))
    hf.Normalizer.from_data(all_feats).save(str(root))


@pytest.fixture(scope="module")
def features():
    p = synthetic_joints(T=61, spin=1.5 * np.pi)  # 60 feature frames = 3 s at 20 fps
    return hf.joints_to_features(p)


def caption(text, start=0.0, end=0.0):
    tokens = " ".join(f"{w}/NOUN" for w in text.split())
    return f"{text}#{tokens}#{start}#{end}"


@pytest.fixture
def dataset(tmp_path, features):
    motions = {"000001": features, "000002": features[:50], "M000001": features[::-1].copy(),
               "000003": features[:30]}
    texts = {
        "000001": [caption("a person walks in a circle"), caption("someone turns around", 0.5, 2.75),
                   caption("too short", 0.0, 1.0), caption("a man walks", "nan", "nan")],
        "000002": [caption("only a part", 0.0, 2.2)],
        "M000001": [caption("mirrored walk")],
        "000003": [caption("too short overall")],
    }
    write_dataset(tmp_path, motions=motions, texts=texts,
                  splits={"train": ["000001", "000002", "M000001", "000003"], "test": ["000002"]})
    return tmp_path


def test_load_entries_like_the_published_loader(dataset, features):
    entries = h.load_humanml3d(dataset, "train", progress=False)
    names = [e.name for e in entries]
    # sub-clip entries first, then the whole motion (if it has a whole-motion caption);
    # 000002 has only a sub-range caption; 000003 is shorter than 40 frames
    assert names == ["000001_10_55", "000001", "000002_0_44", "M000001"]
    whole = entries[1]
    assert whole.texts == ["a person walks in a circle", "a man walks"]  # NaN times = whole
    assert whole.tokens[0] == ["a/NOUN", "person/NOUN", "walks/NOUN", "in/NOUN", "a/NOUN", "circle/NOUN"]
    np.testing.assert_array_equal(whole.features, features)
    sub = entries[0]
    assert sub.texts == ["someone turns around"] and sub.start == 10 and sub.length == 45
    np.testing.assert_array_equal(sub.features, features[10:55])  # int(0.5*20):int(2.75*20)
    assert entries[2].length == 44 and entries[2].fps == 20.0
    # length filters
    assert [e.name for e in h.load_humanml3d(dataset, "train", min_len=10, progress=False)] == [
        "000001_10_55", "000001_0_20", "000001", "000002_0_44", "M000001", "000003"]
    # a motion longer than max_len is dropped with its sub-ranges (as published)
    assert [e.name for e in h.load_humanml3d(dataset, "train", max_len=50, progress=False)] == [
        "000002_0_44"]
    assert [e.name for e in h.load_humanml3d(dataset, "test", progress=False)] == ["000002_0_44"]


def test_joints_and_crop(dataset):
    entries = h.load_humanml3d(dataset, "train", load_joints=True, progress=False)
    e = entries[1]
    assert e.joints.shape == (60, 22, 3)
    np.testing.assert_allclose(e.joints, np.asarray(hf.recover_from_ric(e.features)), atol=1e-6)
    np.testing.assert_allclose(entries[0].joints, e.joints[10:55])
    c = e.crop(48, np.random.default_rng(0), unit=4)
    assert c.length == 48 and c.joints.shape[0] == 48
    np.testing.assert_array_equal(c.features, e.features[c.start:c.start + 48])
    assert e.crop(196).length == 60 and e.crop(45, unit=4).length == 44


def test_malformed_line_names_file_and_line(dataset):
    path = dataset / "texts" / "000002.txt"
    path.write_text(caption("fine") + "\nno separators here\n")
    with pytest.raises(DataFormatError) as err:
        h.load_humanml3d(dataset, "train", progress=False)
    assert err.value.path == str(path) and err.value.line == 2
    assert f"{path}:2:" in str(err.value)
    path.write_text(caption("fine") + "\n\n" + "words#w/NOUN#zero#1.0\n")
    with pytest.raises(DataFormatError) as err:
        h.parse_text_file(str(path))
    assert err.value.line == 3 and "start/end" in str(err.value)


def test_missing_and_misshapen_files(dataset, features):
    (dataset / "texts" / "M000001.txt").unlink()
    with pytest.raises(DataFormatError, match="M000001.txt"):
        h.load_humanml3d(dataset, "train", progress=False)
    np.save(dataset / "new_joint_vecs" / "000002.npy", features[:, :251])
    with pytest.raises(DataFormatError, match="000002.npy"):
        h.load_humanml3d(dataset, "test", progress=False)
    with pytest.raises(DataFormatError, match="val.txt"):
        h.load_humanml3d(dataset, "val", progress=False)


def test_normalizer_files(dataset):
    n = h.load_normalizer(str(dataset))
    assert n.mean.shape == (263,) and np.all(n.std > 0)


def test_to_clip_and_arrays(dataset, tmp_path):
    e = h.load_humanml3d(dataset, "train", progress=False)[1]
    clip = h.to_clip(e)
    assert clip.skeleton.names == SMPL22_NAMES and clip.fps == 20.0 and clip.num_frames == 60
    assert clip.texts == e.texts
    pos = np.asarray(hf.recover_from_ric(e.features))
    np.testing.assert_allclose(clip.joints(), pos, atol=1e-5)  # FK reproduces the positions
    g_rot, _ = clip.global_transforms()
    # bone rotations agree with the positions: raw offset direction -> bone direction
    par = np.array(SMPL22_PARENTS[1:])
    bones = pos[:, 1:] - pos[:, par]
    bones /= np.linalg.norm(bones, axis=-1, keepdims=True)
    mapped = np.einsum("tjab,jb->tja", g_rot[:, 1:], hf.HUMANML3D.raw_offsets[1:])
    np.testing.assert_allclose(mapped, bones, atol=1e-4)
    # the pelvis heading is the recovered one: body Z+ -> world forward
    half, _ = hf.recover_root_rot_pos(e.features)
    theta = -2 * np.asarray(half)
    np.testing.assert_allclose(g_rot[:, 0, :, 2], np.stack([np.sin(theta), 0 * theta, np.cos(theta)], -1), atol=1e-5)

    arrays = h.to_arrays(e)
    assert arrays["joints"].shape == (60, 22, 3) and arrays["rot6d"].shape == (60, 22, 6)
    assert arrays["root"].shape == (60, 3) and arrays["sparse"].shape == (60, 54)
    np.testing.assert_allclose(arrays["joints"], pos, atol=1e-5)
    np.testing.assert_allclose(arrays["sparse"][:, 36:45], pos[:, [15, 20, 21]].reshape(60, 9), atol=1e-5)
    np.testing.assert_allclose(arrays["sparse"][0, 45:], 0.0)  # first-frame rule
    save_arrays(str(tmp_path / "hml.npz"), {e.name: arrays})
    back = load_arrays(str(tmp_path / "hml.npz"))
    np.testing.assert_array_equal(back["000001"]["rot6d"], arrays["rot6d"])

    # rotations composed from the 6D block: same positions, bones off by one constant yaw
    alt = h.to_clip(e, rotations="features")
    np.testing.assert_allclose(alt.joints(), pos, atol=1e-5)


def test_positions_clip(features):
    pos = np.asarray(hf.recover_from_ric(features))
    clip = h.positions_clip(pos, fps=20.0)
    np.testing.assert_allclose(clip.joints(), pos, atol=1e-5)
    with pytest.raises(ShapeError):
        h.positions_clip(pos[:, :21])


def test_kit_layout(tmp_path):
    spec = hf.KIT
    offsets = spec.raw_offsets * np.linspace(0.08, 0.3, 21)[:, None]
    feats = hf.joints_to_features(synthetic_joints(T=41, offsets=offsets, parents=spec.parents), kind="kit")
    assert feats.shape == (40, 251)
    write_dataset(tmp_path, kind="kit", motions={"00001": feats, "00002": feats[:20]},
                  texts={"00001": [caption("a person waves"), caption("part", 0.8, 2.8)],
                         "00002": [caption("short")]},
                  splits={"train": ["00001", "00002"]})
    entries = h.load_humanml3d(tmp_path, "train", kind="kit", progress=False)
    # KIT: min length 24, sub-ranges cut at 12.5 fps: int(0.8 * 12.5) = 10, int(2.8 * 12.5) = 35
    assert [e.name for e in entries] == ["00001_10_35", "00001"]
    np.testing.assert_array_equal(entries[0].features, feats[10:35])
    assert entries[1].fps == 12.5 and entries[1].num_joints == 21
    clip = h.to_clip(entries[1])
    assert clip.skeleton.names == hf.KIT_NAMES
    np.testing.assert_allclose(clip.joints(), np.asarray(hf.recover_from_ric(feats, 21)), atol=1e-5)
    with pytest.raises(ShapeError):
        h.to_arrays(entries[1])
    # a HumanML3D-sized file in a KIT dataset is rejected with its name
    np.save(tmp_path / "new_joint_vecs" / "00001.npy", np.zeros((40, 263), np.float32))
    with pytest.raises(DataFormatError, match="00001.npy"):
        h.load_humanml3d(tmp_path, "train", kind="kit", progress=False)
