"""tfds builders writing ArrayRecord files: Bandai Namco (synthetic clips and a small real
subset), AMASS (tiny files in the real formats), HumanML3D; read back without TensorFlow."""
import shutil
import sys
import tarfile
import types

import numpy as np
import pytest

from mmar import geometry as g
from mmar.data import clip as C
from mmar.data import pipeline as P
from mmar.data import tfds_builders as tb
from mmar.errors import ConfigError, DataFormatError
from mmar.skeleton import SMPL22_PARENTS

RNG = np.random.default_rng(11)


def smpl_clip(name, T, labels=None, texts=()):
    q = RNG.normal(size=(T, 22, 4))
    q[..., 0] += 3.0
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    local = np.asarray(g.quaternion_to_matrix(q.astype(np.float32)))
    offsets = RNG.normal(scale=0.1, size=(22, 3)).astype(np.float32)
    root = RNG.normal(size=(T, 3)).astype(np.float32)
    return C.Clip(name, C.smpl22_skeleton(offsets), local, root, 30.0, labels=dict(labels or {}),
                  texts=list(texts))


def _text(x):
    return x.decode() if isinstance(x, bytes) else str(x)


def _by_name(src):
    return {_text(src[i]["name"]): src[i] for i in range(len(src))}


def _assert_motion_record(rec, arrays):
    for k in ("joints", "rot6d", "root", "sparse", "offsets"):
        assert rec[k].dtype == np.float32
        np.testing.assert_allclose(rec[k], arrays[k], atol=1e-6, err_msg=k)
    assert float(rec["fps"]) == float(arrays["fps"])


# --------------------------------------------------------------------------
# Bandai Namco
# --------------------------------------------------------------------------

FAKE_BANDAI = [
    ("dataset-1_walk_happy_001", 50), ("dataset-1_walk_sad_002", 44), ("dataset-2_run_active_001", 61),
    ("dataset-2_run_elderly_003", 48), ("dataset-2_walk_feminine_010", 47),
]


def test_bandai_builder_with_synthetic_clips(tmp_path, monkeypatch):
    clips = []
    for name, T in FAKE_BANDAI:
        d, content, style, _ = name.split("_")
        clips.append(smpl_clip(name, T, {"dataset": int(d[-1]), "content": content, "style": style},
                               texts=[f"a person does {content}", f"{style} {content}"]))
    calls = []

    def fake_load(manual_dir, config, workers):
        calls.append((manual_dir, config.fps, tuple(config.datasets)))
        return list(reversed(clips))

    def fake_split(cs):
        return {"train": [c for c in cs if "_00" in c.name and not c.name.endswith("3")],
                "val": [c for c in cs if c.name.endswith("3")],
                "test": [c for c in cs if "_01" in c.name]}

    monkeypatch.setattr(tb, "_bandai_clips", fake_load)
    monkeypatch.setattr(tb, "_split_clips", fake_split)
    manual = tmp_path / "raw"
    manual.mkdir()
    (manual / "README").write_text("placeholder: tfds wants a non-empty manual_dir")
    data_dir = tmp_path / "tfds"
    b = tb.prepare("bandai_namco", data_dir, manual)
    assert b.builder_config.name == "fps30" and calls == [(str(manual), 30.0, (1, 2))]
    assert {s: b.info.splits[s].num_examples for s in ("train", "val", "test")} == {
        "train": 3, "val": 1, "test": 1}
    assert list((data_dir / "bandai_namco" / "fps30" / "2.0.0").glob("*.array_record-*"))
    ref = dict(zip([c.name for c in clips], P.clips_to_arrays(clips)))
    train = tb.data_source("bandai", "train", data_dir)
    recs = _by_name(train)
    assert set(recs) == {"dataset-1_walk_happy_001", "dataset-1_walk_sad_002", "dataset-2_run_active_001"}
    for name, rec in recs.items():
        _assert_motion_record(rec, ref[name])
        d, content, style, _ = name.split("_")
        assert int(rec["dataset"]) == int(d[-1])
        assert _text(rec["content"]) == content and _text(rec["style"]) == style
        assert [_text(t) for t in rec["captions"]] == [f"a person does {content}", f"{style} {content}"]
    # prepared once: a second prepare reuses the files
    tb.prepare("bandai_namco", data_dir, manual)
    assert len(calls) == 1
    # the pipeline reads the split back (sorted by name) and windows it
    arr = P.ClipArrays.from_tfds(str(data_dir), "train")
    want = P.ClipArrays.from_clips([c for c in clips if c.name in recs])
    assert arr.names == want.names
    for k in want.frames:
        np.testing.assert_allclose(arr.frames[k], want.frames[k], atol=1e-6)
    np.testing.assert_allclose(arr.per_clip["offsets"], want.per_clip["offsets"])
    ds = P.WindowDataset.from_tfds(str(data_dir), "train", window=41, keys=["sparse", "head"])
    assert len(ds) == (50 - 41) + (44 - 41) + (61 - 41)
    batch = next(P.make_train_iterator(ds, batch_size=4, seed=0, shard=None))
    assert batch["sparse"].shape == (4, 41, 54) and batch["head"].shape == (4, 41, 3)


@pytest.fixture(scope="module")
def synthetic_tfds(tmp_path_factory):
    """A prepared ``bandai_namco`` (fps30) of the FAKE_BANDAI clips: four in train, one in val."""
    clips = [smpl_clip(name, T, {"dataset": int(name[8]), "content": name.split("_")[1],
                                 "style": name.split("_")[2]}) for name, T in FAKE_BANDAI]
    root = tmp_path_factory.mktemp("synthetic_tfds")
    manual = root / "raw"
    manual.mkdir()
    (manual / "README").write_text("placeholder: tfds wants a non-empty manual_dir")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tb, "_bandai_clips", lambda manual_dir, config, workers: list(reversed(clips)))
        mp.setattr(tb, "_split_clips", lambda cs: {"train": cs[:4], "val": cs[4:]})
        tb.prepare("bandai_namco", root / "tfds", manual)
    arrays = dict(zip([c.name for c in clips], P.clips_to_arrays(clips)))
    train = sorted(c.name for c in clips)[:4]
    return root / "tfds", {n: arrays[n] for n in train}


def test_clip_records_index_and_partial_decode(synthetic_tfds):
    data_dir, ref = synthetic_tfds
    recs = tb.ClipRecords("bandai_namco", "train", data_dir)
    assert len(recs) == 4 and set(recs.frame_keys) == {"joints", "rot6d", "root", "sparse"}
    assert sorted(recs.names) == sorted(ref)
    assert recs.lengths.dtype == np.int64
    assert dict(zip(recs.names, recs.lengths.tolist())) == {n: len(a["sparse"]) for n, a in ref.items()}
    i = recs.names.index("dataset-2_run_active_001")
    rec = recs.read(i, ["sparse"])
    assert rec["name"] == "dataset-2_run_active_001"
    assert not {"joints", "rot6d", "root"} & set(rec)  # left encoded
    np.testing.assert_array_equal(rec["sparse"], ref[rec["name"]]["sparse"])
    np.testing.assert_array_equal(rec["offsets"], ref[rec["name"]]["offsets"])
    assert float(rec["fps"]) == 30.0 and _text(rec["content"]) == "run"
    full = recs.read(i)
    for k in recs.frame_keys:
        np.testing.assert_array_equal(full[k], ref[rec["name"]][k])
    with pytest.raises(ConfigError, match="split 'test'"):
        tb.ClipRecords("bandai_namco", "test", data_dir)
    with pytest.raises(DataFormatError, match="not prepared"):
        tb.ClipRecords("bandai_namco", "train", data_dir, config="fps60")


@pytest.mark.parametrize("keys", [None, ["sparse", "head"], ["rot6d", "joints", "offsets", "clip"]])
def test_from_tfds_equals_from_records(synthetic_tfds, keys):
    """The record path gives the same arrays (hence the same batches) as the in-memory one."""
    data_dir, ref = synthetic_tfds
    want = P.ClipArrays.from_arrays(ref, keys)
    for threads in (0, 2):
        got = P.ClipArrays.from_tfds(str(data_dir), "train", keys=keys, num_threads=threads)
        assert got.names == want.names
        np.testing.assert_array_equal(got.bounds, want.bounds)
        assert sorted(got.frames) == sorted(want.frames) and sorted(got.per_clip) == sorted(want.per_clip)
        for k in want.frames:
            assert got.frames[k].dtype == np.float32
            np.testing.assert_array_equal(got.frames[k], want.frames[k], err_msg=k)
        for k in want.per_clip:
            np.testing.assert_array_equal(got.per_clip[k], want.per_clip[k], err_msg=k)
    batch_keys = [k for k in (keys or P.DEFAULT_KEYS) if k in P.FRAME_KEYS]
    a = P.make_train_iterator(got, 12, batch_size=6, seed=4, shard=None, keys=batch_keys)
    b = P.make_train_iterator(want, 12, batch_size=6, seed=4, shard=None, keys=batch_keys)
    for _ in range(5):
        x, y = next(a), next(b)
        for k in batch_keys:
            np.testing.assert_array_equal(x[k], y[k])


def test_from_tfds_chosen_clips_and_errors(synthetic_tfds):
    data_dir, ref = synthetic_tfds
    names = ["dataset-2_run_active_001", "dataset-1_walk_happy_001"]
    got = P.ClipArrays.from_tfds(str(data_dir), "train", keys=["sparse"], names=names)
    want = P.ClipArrays.from_arrays({n: ref[n] for n in names}, ["sparse"])
    assert got.names == tuple(sorted(names)) == want.names
    np.testing.assert_array_equal(got.frames["sparse"], want.frames["sparse"])
    empty = P.ClipArrays.from_tfds(str(data_dir), "train", keys=["sparse"], names=[])
    assert empty.num_clips == 0 and empty.frames["sparse"].shape == (0, 54)
    with pytest.raises(ConfigError, match="not in the split"):
        P.ClipArrays.from_tfds(str(data_dir), "train", names=["dataset-9_nope_x_001"])
    with pytest.raises(ConfigError, match="unknown keys"):
        P.ClipArrays.from_tfds(str(data_dir), "train", keys=["sparse", "velocity"])
    ds = P.WindowDataset.from_tfds(str(data_dir), "train", window=41, keys=["sparse"])
    assert len(ds) == sum(max(len(a["sparse"]) - 1 - 41 + 1, 0) for a in ref.values())


def test_data_source_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset"):
        tb.get_builder("kit_ml", tmp_path)
    with pytest.raises(DataFormatError, match="not prepared"):
        tb.data_source("bandai_namco", "train", tmp_path)
    with pytest.raises(DataFormatError, match="manual_dir"):
        tb.prepare("bandai_namco", tmp_path, tmp_path / "missing")
    assert set(tb.BandaiNamco.builder_configs) == {"fps30", "fps60", "fps20"}
    assert tb.BandaiNamco.builder_configs["fps60"].fps == 60.0


@pytest.fixture(scope="module")
def tiny_bandai(bandai_dir, tmp_path_factory):
    """A Bandai root with one small archive: the first 8 clips of one dataset-2 content."""
    root = tmp_path_factory.mktemp("bandai")
    name = "Bandai-Namco-Research-Motiondataset-2_raise-up-both-hands.tar.xz"
    n = 0
    with tarfile.open(bandai_dir / name, "r:xz") as tin, tarfile.open(root / name, "w:xz") as tout:
        for m in tin:
            if m.isfile() and m.name.endswith((".bvh", ".json")):
                tout.addfile(m, tin.extractfile(m))
                n += 1
                if n == 16:
                    break
    shutil.copytree(bandai_dir / "cfg-2", root / "cfg-2")
    return root


@pytest.mark.data
def test_bandai_builder_real_subset(tiny_bandai, tmp_path):
    bandai = pytest.importorskip("mmar.data.bandai")
    data_dir = tmp_path / "tfds"
    cfg = tb.BandaiNamcoConfig(name="tiny", fps=30.0, datasets=(2,))
    b = tb.prepare("bandai_namco", data_dir, tiny_bandai, config=cfg, workers=1)
    counts = {s: b.info.splits[s].num_examples for s in b.info.splits}
    assert counts == {"train": 6, "val": 1, "test": 1}  # one stratum of 8 clips
    clips = bandai.load_bandai(tiny_bandai, datasets=(2,), workers=1, progress=False)
    ref = dict(zip([c.name for c in clips], P.clips_to_arrays(clips)))
    seen = {}
    for split in counts:
        for name, rec in _by_name(tb.data_source("bandai_namco", split, data_dir, config=cfg)).items():
            seen[name] = split
            _assert_motion_record(rec, ref[name])
            assert rec["fps"] == 30.0 and int(rec["dataset"]) == 2
            assert _text(rec["content"]) == "raise-up-both-hands"
            assert _text(rec["style"]) == name.split("_")[2]
            assert len(rec["captions"]) > 0
    from mmar.data.splits import split_clips

    want = {c.name: s for s, cs in split_clips(clips).items() for c in cs}
    assert seen == want

    # a resampled config: 60 fps
    cfg60 = tb.BandaiNamcoConfig(name="tiny60", fps=60.0, datasets=(2,))
    tb.prepare("bandai_namco", data_dir, tiny_bandai, config=cfg60, workers=1)
    for name, rec in _by_name(tb.data_source("bandai_namco", "train", data_dir, config=cfg60)).items():
        T30 = ref[name]["joints"].shape[0]
        assert rec["fps"] == 60.0
        assert rec["joints"].shape[0] == g.resample_length(T30, 30.0, 60.0)
        np.testing.assert_allclose(rec["joints"][::2][:T30], ref[name]["joints"][: len(rec["joints"][::2])],
                                   atol=1e-4)


# --------------------------------------------------------------------------
# AMASS
# --------------------------------------------------------------------------

SMPLH_PARENTS = list(SMPL22_PARENTS) + [20, 22, 23, 20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35,
                                        21, 37, 38, 21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50]


def write_body_model(path):
    """A fake SMPL-H model.npz: joint j is the mean of vertices 2j and 2j+1."""
    rng = np.random.default_rng(0)
    joints = np.zeros((52, 3))
    for j in range(1, 52):
        joints[j] = joints[SMPLH_PARENTS[j]] + rng.normal(0, 0.1, 3)
    V = 2 * 52
    v = np.repeat(joints, 2, 0) + rng.normal(0, 0.01, (V, 3)) * np.tile([[1], [-1]], (52, 1))
    j_reg = np.zeros((52, V))
    for j in range(52):
        j_reg[j, 2 * j] = j_reg[j, 2 * j + 1] = 0.5
    kintree = np.array([[4294967295] + SMPLH_PARENTS[1:], list(range(52))], np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, v_template=v, shapedirs=rng.normal(0, 0.01, (V, 3, 16)), J_regressor=j_reg,
             kintree_table=kintree, weights=rng.uniform(size=(V, 52)),
             f=rng.integers(0, V, (10, 3)).astype(np.uint32))


def write_amass_file(path, frames, rate=120.0, seed=0):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, poses=rng.normal(0, 0.3, (frames, 156)), trans=rng.normal(0, 1, (frames, 3)),
             betas=rng.normal(0, 1, 16), dmpls=np.zeros((frames, 8)), gender=np.array("male"),
             mocap_framerate=np.array(rate))


def test_amass_builder_with_published_lists(tmp_path):
    amass = pytest.importorskip("mmar.data.amass", reason="mmar.data.amass not written yet")
    raw = tmp_path / "amass"
    write_body_model(raw / "body_models" / "smplh" / "male" / "model.npz")
    files = {  # folder names of the newer AMASS release; the lists use the older ones
        "CMU": ["CMU/01/01_01_poses.npz", "CMU/01/01_02_poses.npz", "CMU/02/02_01_poses.npz"],
        "BioMotionLab_NTroje": ["BMLrub/rub001/0001_walk_poses.npz", "BMLrub/rub002/0002_run_poses.npz"],
        "MPI_HDM05": ["HDM05/bk/HDM_bk_01_poses.npz", "HDM05/dg/HDM_dg_01_poses.npz"],
    }
    old = {"BMLrub": "BioMotionLab_NTroje", "HDM05": "MPI_HDM05"}
    for k, rels in enumerate(files.values()):
        for i, rel in enumerate(rels):
            write_amass_file(raw / rel, frames=9 + 2 * i, seed=10 * k + i)
        write_amass_file(raw / rels[0].rsplit("/", 1)[0] / "shape.npz", frames=1)  # ignored
    for subset, rels in files.items():
        d = raw / "data_split" / subset
        d.mkdir(parents=True)
        listed = [old.get(r.split("/")[0], r.split("/")[0]) + "/" + r.split("/", 1)[1] for r in rels]
        (d / "train_split.txt").write_text("\n".join(listed[1:]) + "\n")
        (d / "test_split.txt").write_text(listed[0] + "\n")
    data_dir = tmp_path / "tfds"
    b = tb.prepare("amass", data_dir, raw)
    assert b.builder_config.name == "s1"
    assert {s: b.info.splits[s].num_examples for s in b.info.splits} == {"train": 4, "test": 3}
    model = amass.load_body_model(str(raw / "body_models" / "smplh" / "male" / "model.npz"))
    test = _by_name(tb.data_source("amass", "test", data_dir))
    assert set(test) == {"CMU-01-01_01", "BMLrub-rub001-0001_walk", "HDM05-bk-HDM_bk_01"}
    for name, rec in test.items():
        rel = files[{"CMU": "CMU", "BMLrub": "BioMotionLab_NTroje", "HDM05": "MPI_HDM05"}[
            name.split("-")[0]]][0]
        ref_clip = amass.load_amass_clip(str(raw / rel), model, fps=60, use_betas=False, name=name)
        assert ref_clip.num_frames == 5  # 9 frames at 120 fps, stride 2
        _assert_motion_record(rec, P.clips_to_arrays([ref_clip])[0])
        assert _text(rec["subset"]) == {"CMU": "CMU", "BMLrub": "BioMotionLab_NTroje",
                                        "HDM05": "MPI_HDM05"}[name.split("-")[0]]


def test_amass_builder_seeded_split_and_missing_model(tmp_path):
    pytest.importorskip("mmar.data.amass", reason="mmar.data.amass not written yet")
    raw = tmp_path / "amass"
    for i in range(10):
        write_amass_file(raw / "CMU" / f"{i:02d}" / f"{i:02d}_01_poses.npz", frames=6, rate=60.0, seed=i)
    with pytest.raises(DataFormatError, match="body model"):
        tb.prepare("amass", tmp_path / "tfds", raw)
    write_body_model(raw / "smplh.npz")
    cfg = tb.AmassConfig(name="cmu_only", body_model="smplh.npz", use_betas=True)
    b = tb.prepare("amass", tmp_path / "tfds", raw, config=cfg)
    assert {s: b.info.splits[s].num_examples for s in b.info.splits} == {"train": 9, "test": 1}
    rec = tb.data_source("amass", "test", tmp_path / "tfds", config=cfg)[0]
    assert rec["joints"].shape == (6, 22, 3) and rec["fps"] == 60.0


# --------------------------------------------------------------------------
# HumanML3D
# --------------------------------------------------------------------------

def _check_humanml3d(data_dir, want, config=None):
    for split, recs in want.items():
        got = _by_name(tb.data_source("humanml3d", split, data_dir, config=config))
        assert set(got) == set(recs)
        for name, (feats, texts) in recs.items():
            assert got[name]["fps"] == 20.0
            np.testing.assert_array_equal(got[name]["features"], feats)
            assert got[name]["features"].dtype == np.float32
            assert [_text(t) for t in got[name]["texts"]] == texts


def test_humanml3d_builder_with_synthetic_records(tmp_path, monkeypatch):
    want = {
        "train": {"000001": (RNG.normal(size=(40, 263)).astype(np.float32), ["a man walks.", "walking"]),
                  "M000001": (RNG.normal(size=(40, 263)).astype(np.float32), ["a man walks."])},
        "test": {"000002": (RNG.normal(size=(28, 263)).astype(np.float32), ["a person jumps."])},
    }
    for s in ("train", "val", "test"):
        (tmp_path / f"{s}.txt").write_text("")

    def fake(root, split, kind):
        return [types.SimpleNamespace(name=n, features=f, texts=t)
                for n, (f, t) in want.get(split, {}).items()]

    monkeypatch.setattr(tb, "_humanml3d_records", fake)
    b = tb.prepare("humanml3d", tmp_path / "tfds", tmp_path)
    assert set(b.info.splits) == {"train", "test"}  # val has no records: not written
    _check_humanml3d(tmp_path / "tfds", want)


def test_humanml3d_builder_real_format(tmp_path):
    hml = pytest.importorskip("mmar.data.humanml3d", reason="mmar.data.humanml3d not written yet")
    root = tmp_path / "HumanML3D"
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "new_joints").mkdir()
    (root / "texts").mkdir()
    names = {"train": ["000001", "000003"], "val": ["000004"], "test": ["000002"]}
    for split, ns in names.items():
        (root / f"{split}.txt").write_text("\n".join(ns) + "\n")
        for i, n in enumerate(ns):
            T = 40 + 4 * i
            np.save(root / "new_joint_vecs" / f"{n}.npy", RNG.normal(size=(T, 263)).astype(np.float32))
            np.save(root / "new_joints" / f"{n}.npy", RNG.normal(size=(T + 1, 22, 3)).astype(np.float32))
            (root / "texts" / f"{n}.txt").write_text(
                f"a person walks forward {n}.#a/DET person/NOUN walk/VERB forward/ADV#0.0#0.0\n"
                f"someone strolls.#someone/PRON stroll/VERB#0.0#0.0\n")
    np.save(root / "Mean.npy", np.zeros(263, np.float32))
    np.save(root / "Std.npy", np.ones(263, np.float32))
    kind = tb.HumanML3D.builder_configs["humanml3d"].kind
    want = {}
    for split in names:
        want[split] = {str(r.name): (np.asarray(r.features, np.float32), [str(t) for t in r.texts])
                       for r in hml.load_humanml3d(str(root), split, kind)}
    tb.prepare("humanml3d", tmp_path / "tfds", root)
    _check_humanml3d(tmp_path / "tfds", want)


def test_training_path_does_not_import_tensorflow():
    """Data preparation, the pipeline, the trainer and the tasks run without TensorFlow (checked
    in a fresh interpreter: other tests in this process may have loaded it for export)."""
    import subprocess

    code = ("import sys, mmar.data.tfds_builders, mmar.data.pipeline, mmar.train, mmar.tasks.mem_mlp; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
