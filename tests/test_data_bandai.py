"""Bandai Namco loading (real data, read from ../shared at run time) and BVH sources."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mmar.data import bandai
from mmar.data.bvh import write_bvh
from mmar.data.clip import JOINT_MAPS, Clip, Skeleton
from mmar.data.sources import iter_bvh_sources, list_bvh_names, load_clips
from mmar.errors import DataFormatError
from mmar.geometry_np import forward_kinematics
from mmar.skeleton import NUM_JOINTS, SMPL22_NAMES

# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ds1(bandai_dir):
    """All of dataset 1 (156 clips), retargeted to SMPL-22."""
    return bandai.load_bandai(bandai_dir, datasets=(1,), progress=False, on_error="raise")


@pytest.fixture(scope="module")
def ds2_part(bandai_dir):
    """The smallest dataset-2 archive (raise-up-both-hands), retargeted."""
    return bandai.load_bandai(bandai_dir, datasets=(2,), contents=["raise-up-both-hands"], progress=False,
                              on_error="raise")


@pytest.fixture(scope="module")
def ds1_source(bandai_dir):
    """A few dataset-1 clips on the source skeleton, by name."""
    archive = bandai_dir / "Bandai-Namco-Research-Motiondataset-1.tar.xz"
    clips, errors = load_clips(str(archive), scale=0.01, workers=1, progress=False, on_error="raise")
    assert not errors
    return {c.name: c for c in clips}


def _mapped_positions(src: Clip) -> np.ndarray:
    _, pos = forward_kinematics(src.local_rot, src.local_trans, src.skeleton.parents, src.root_pos)
    out = []
    for spec in JOINT_MAPS["bandai"]:
        if isinstance(spec, tuple):
            out.append(0.5 * (pos[:, src.skeleton.index(spec[1])] + pos[:, src.skeleton.index(spec[2])]))
        else:
            out.append(pos[:, src.skeleton.index(spec)])
    return np.stack(out, 1)


def _smpl_joints(c: Clip) -> np.ndarray:
    return forward_kinematics(c.local_rot, c.skeleton.offsets, c.skeleton.parents, c.root_pos)[1]


# --------------------------------------------------------------------------
# root, label lists, names
# --------------------------------------------------------------------------

def test_bandai_root_resolution(bandai_dir, monkeypatch, tmp_path):
    assert bandai.bandai_root(bandai_dir) == bandai_dir
    monkeypatch.setenv("MMAR_BANDAI_DIR", str(bandai_dir))
    assert bandai.bandai_root() == bandai_dir
    monkeypatch.delenv("MMAR_BANDAI_DIR")
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bandai-namco"
    if default.is_dir():  # ../shared beside the repository
        assert bandai.bandai_root().resolve() == default.resolve()
    with pytest.raises(DataFormatError, match="not found"):
        bandai.bandai_root(tmp_path / "missing")
    monkeypatch.setenv("MMAR_BANDAI_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataFormatError):
        bandai.bandai_root()


def test_label_lists(bandai_dir):
    c1, s1 = bandai.bandai_label_lists(1, bandai_dir)
    c2, s2 = bandai.bandai_label_lists(2, bandai_dir)
    assert (len(c1), len(s1), len(c2), len(s2)) == (17, 15, 10, 7)
    assert c1[0] == "walk" and "dance-short" in c1 and "chimpira" in s1
    assert c2[-1] == "raise-up-right-hand" and s2 == ("active", "elderly", "exhausted", "feminine", "masculine",
                                                      "normal", "youthful")
    assert not any(x.startswith("dataset-") for x in c1 + s1 + c2 + s2)


def test_parse_clip_name():
    assert bandai.parse_clip_name("dataset-2_walk-turn-left_active_015") == {
        "dataset": 2, "content": "walk-turn-left", "style": "active", "take": 15,
    }
    with pytest.raises(ValueError):
        bandai.parse_clip_name("walk_active_1")


def test_bandai_labels_checks_json_against_name():
    contents, styles = ("walk", "run"), ("normal", "happy")
    lab = bandai.bandai_labels("dataset-1_run_happy_002", {"content": 1, "style": 1}, contents, styles)
    assert lab == {"dataset": 1, "content": "run", "style": "happy", "content_id": 1, "style_id": 1, "take": 2}
    assert bandai.bandai_labels("dataset-1_run_happy_002", None, contents, styles) == lab
    with pytest.raises(DataFormatError, match="disagree"):
        bandai.bandai_labels("dataset-1_run_happy_002", {"content": 0, "style": 1}, contents, styles, "x.json")


# --------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------

def test_dataset1_loads_with_labels_and_captions(ds1, bandai_dir):
    assert len(ds1) == 156
    assert [c.name for c in ds1] == sorted(c.name for c in ds1)
    contents, styles = bandai.bandai_label_lists(1, bandai_dir)
    for c in ds1:
        lab = c.labels
        assert set(lab) == {"dataset", "content", "style", "content_id", "style_id", "take"}
        assert lab["dataset"] == 1 and contents[lab["content_id"]] == lab["content"]
        assert styles[lab["style_id"]] == lab["style"]
        assert c.name == f"dataset-1_{lab['content']}_{lab['style']}_{lab['take']:03d}"
        assert c.fps == 30.0
        assert c.skeleton.names == SMPL22_NAMES and c.local_rot.shape == (c.num_frames, NUM_JOINTS, 3, 3)
        assert c.local_trans is None
        assert len(c.texts) >= 3
        assert c.source.endswith(f"Bandai-Namco-Research-Motiondataset-1.tar.xz:"
                                 f"Bandai-Namco-Research-Motiondataset-1/data/{c.name}.bvh")
    frames = [c.num_frames for c in ds1]
    assert sum(frames) == 28965 and min(frames) >= 19


def test_dataset2_archive_loads(ds2_part, bandai_dir):
    assert len(ds2_part) == 391
    assert {c.labels["content"] for c in ds2_part} == {"raise-up-both-hands"}
    assert {c.labels["style"] for c in ds2_part} == set(bandai.bandai_label_lists(2, bandai_dir)[1])
    assert all(c.fps == 30.0 for c in ds2_part)


def test_y_up_and_on_the_ground(ds1, ds2_part):
    """Head above pelvis above feet along +Y, and the feet near y = 0 (not translated)."""
    lowest = []
    for c in ds1[::5] + ds2_part[::20]:
        j = _smpl_joints(c)
        assert np.median(j[:, 15, 1] - j[:, 0, 1]) > 0.3  # head above pelvis
        assert np.median(j[:, 0, 1] - j[:, [10, 11], 1].min(1)) > 0.6  # pelvis above toes
        feet = j[:, [7, 8, 10, 11], 1]
        lowest.append(feet.min())
        # every frame has some foot joint within 25 cm of the floor, except jumps
        assert np.mean(feet.min(1) < 0.25) > 0.8
    lowest = np.array(lowest)
    # the joint centres of ankles / toes sit a few centimetres above the floor y = 0
    assert lowest.min() > 0.0 and lowest.max() < 0.08, lowest


def test_retarget_is_exact_on_real_clips(ds1, ds1_source):
    """FK of the SMPL-22 clip reproduces the source joints it maps to within 1 mm (constant
    bone lengths), including the clips whose joint_Root carries the travel."""
    by_name = {c.name: c for c in ds1}
    names = ["dataset-1_dash_normal_001", "dataset-1_walk_normal_002", "dataset-1_bow_active_001",
             "dataset-1_kick_normal_001", "dataset-1_walk-left_tired_001"]
    for n in names:
        src = ds1_source[n]
        err = np.linalg.norm(_smpl_joints(by_name[n]) - _mapped_positions(src), axis=-1).max()
        assert err < 1e-3, (n, err)
    # joint_Root moves in dash_normal_001 (the travel is on it, not on Hips)
    assert np.ptp(ds1_source["dataset-1_dash_normal_001"].root_pos, axis=0).max() > 1.0


def test_position_channels_equal_offsets_except_root_and_hips(ds1_source):
    for n in list(ds1_source)[::10]:
        c = ds1_source[n]
        dev = np.abs(c.local_trans - c.skeleton.offsets).max(axis=(0, 2))
        assert dev[2:].max() < 1e-6, n  # Spine..Toes: constant bone lengths
        assert c.skeleton.names[:2] == ("joint_Root", "Hips")


def test_numpy_retarget_matches_clip_retarget(ds1, ds1_source):
    by_name = {c.name: c for c in ds1}
    for n in ["dataset-1_dash_normal_001", "dataset-1_bow_active_001"]:
        ref = ds1_source[n].retarget("bandai")
        ours = by_name[n]
        np.testing.assert_allclose(ours.local_rot, ref.local_rot, atol=1e-4)
        np.testing.assert_allclose(ours.root_pos, ref.root_pos, atol=1e-5)
        np.testing.assert_allclose(ours.skeleton.offsets, ref.skeleton.offsets, atol=1e-5)


# --------------------------------------------------------------------------
# sources: files, directories, archives, errors
# --------------------------------------------------------------------------

def _tiny_clip(name: str, seed: int) -> Clip:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(4, 3, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    R = np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)
    sk = Skeleton(("a", "b", "c"), (-1, 0, 1), np.array([[0, 0, 0], [0, 1, 0], [0, 1, 0]], np.float32))
    return Clip(name, sk, R, rng.normal(size=(4, 3)), fps=30.0)


def _make_inputs(tmp_path, n_good=3, bad=True):
    d = tmp_path / "bvh"
    (d / "sub").mkdir(parents=True)
    for i in range(n_good):
        p = (d / "sub" if i % 2 else d) / f"clip{i}.bvh"
        write_bvh(_tiny_clip(f"clip{i}", i), p)
        (p.with_suffix(".json")).write_text(json.dumps({"content": i, "style": 0}))
    if bad:
        text = (d / "clip0.bvh").read_text().splitlines()
        text[-2] = text[-2] + " 1"  # second-to-last frame line: one value too many
        (d / "sub" / "broken.bvh").write_text("\n".join(text) + "\n")
    return d


def _bad_line(d) -> int:
    return len((d / "sub" / "broken.bvh").read_text().splitlines()) - 1


def test_iter_sources_directory_and_archive(tmp_path):
    d = _make_inputs(tmp_path, bad=False)
    items = list(iter_bvh_sources(d))
    assert [n for n, *_ in items] == ["clip0", "clip2", "clip1"]  # sorted paths, recursive
    assert items[0][2] == {"content": 0, "style": 0}
    arch = tmp_path / "a.tar.xz"
    with tarfile.open(arch, "w:xz") as tf:
        # json before its bvh for one clip, after it for another, one without json
        tf.add(d / "clip1.json" if (d / "clip1.json").exists() else d / "sub" / "clip1.json", "x/clip1.json")
        tf.add(d / "sub" / "clip1.bvh", "x/clip1.bvh")
        tf.add(d / "clip0.bvh", "x/clip0.bvh")
        tf.add(d / "clip0.json", "x/clip0.json")
        tf.add(d / "clip2.bvh", "x/clip2.bvh")
        info = tarfile.TarInfo("x/readme.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    got = {n: (lab, src) for n, _t, lab, src in iter_bvh_sources(arch)}
    assert set(got) == {"clip0", "clip1", "clip2"}
    assert got["clip1"][0] == {"content": 1, "style": 0} and got["clip0"][0] == {"content": 0, "style": 0}
    assert got["clip2"][0] is None
    assert got["clip1"][1] == f"{arch}:x/clip1.bvh"
    assert sorted(list_bvh_names(arch)) == ["clip0", "clip1", "clip2"]
    with pytest.raises(DataFormatError, match="no such file"):
        list(iter_bvh_sources(tmp_path / "nope"))


@pytest.mark.parametrize("workers", [1, 2])
def test_load_clips_reports_bad_file_and_goes_on(tmp_path, workers):
    d = _make_inputs(tmp_path)
    with pytest.warns(UserWarning, match="broken.bvh"):
        clips, errors = load_clips([d], workers=workers, progress=False, on_error="warn")
    assert sorted(c.name for c in clips) == ["clip0", "clip1", "clip2"]
    assert len(errors) == 1
    err = errors[0]
    assert err.path.endswith("broken.bvh") and err.line == _bad_line(d)
    assert "expected 12" in str(err) and f"broken.bvh:{err.line}:" in str(err)
    c1 = next(c for c in clips if c.name == "clip1")
    assert c1.labels == {"content": 1, "style": 0}
    np.testing.assert_allclose(c1.root_pos, _tiny_clip("clip1", 1).root_pos, atol=1e-6)
    with pytest.raises(DataFormatError, match="broken.bvh"):
        load_clips([d], workers=workers, progress=False, on_error="raise")


def test_load_clips_from_archive_in_parallel_with_progress(tmp_path):
    d = _make_inputs(tmp_path)
    arch = tmp_path / "b.tar.gz"
    with tarfile.open(arch, "w:gz") as tf:
        tf.add(d, "data")
    loose = tmp_path / "loose.bvh"
    write_bvh(_tiny_clip("loose", 9), loose)
    with pytest.warns(UserWarning):
        clips, errors = load_clips([arch, loose], workers=2, progress=True)
    assert sorted(c.name for c in clips) == ["clip0", "clip1", "clip2", "loose"]
    assert clips[-1].name == "loose"  # input order kept
    assert len(errors) == 1 and errors[0].path == f"{arch}:data/sub/broken.bvh"
    assert errors[0].line == _bad_line(d)


def test_load_clips_retargets_in_workers(tmp_path):
    """retarget="auto" picks the registered map that fits (here the identity SMPL-22 map);
    a file no map fits is reported and skipped."""
    from mmar.skeleton import SMPL22_PARENTS

    rng = np.random.default_rng(5)
    q = rng.normal(size=(6, NUM_JOINTS, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    R = np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)
    offsets = rng.uniform(-0.2, 0.2, (NUM_JOINTS, 3)).astype(np.float32)
    offsets[0] = 0
    smpl = Clip("smpl", Skeleton(SMPL22_NAMES, SMPL22_PARENTS, offsets), R, rng.normal(size=(6, 3)), fps=60.0)
    write_bvh(smpl, tmp_path / "smpl.bvh")
    write_bvh(_tiny_clip("odd", 1), tmp_path / "odd.bvh")
    with pytest.warns(UserWarning, match="no registered joint map"):
        clips, errors = load_clips(tmp_path, workers=1, progress=False, retarget="auto")
    assert [c.name for c in clips] == ["smpl"] and len(errors) == 1 and errors[0].path.endswith("odd.bvh")
    c = clips[0]
    assert c.skeleton.names == SMPL22_NAMES and c.fps == 60.0
    np.testing.assert_allclose(_smpl_joints(c), _smpl_joints(smpl), atol=1e-5)
    np.testing.assert_allclose(c.skeleton.offsets, offsets, atol=1e-5)
    _, errors = load_clips(tmp_path / "odd.bvh", workers=1, progress=False, retarget="bandai", on_error="ignore")
    assert "joint map 'bandai' needs joints missing here" in str(errors[0])


def test_bad_json_labels_are_reported_and_the_clip_kept(tmp_path):
    write_bvh(_tiny_clip("c", 3), tmp_path / "c.bvh")
    (tmp_path / "c.json").write_text('{"content": 1,\n "style": }\n')
    clips, errors = load_clips(tmp_path, workers=1, progress=False, on_error="ignore")
    assert [c.name for c in clips] == ["c"] and clips[0].labels == {}
    assert len(errors) == 1 and errors[0].path.endswith("c.json") and errors[0].line == 2
    with pytest.raises(DataFormatError, match="bad JSON"):
        list(iter_bvh_sources(tmp_path))


def test_load_clips_resamples_in_workers(tmp_path):
    write_bvh(_tiny_clip("c", 4), tmp_path / "c.bvh")
    (full,), _ = load_clips(tmp_path, workers=1, progress=False)
    (half,), _ = load_clips(tmp_path, workers=1, progress=False, fps=20.0)
    ref = full.resample(20.0)
    assert half.fps == 20.0 and half.num_frames == ref.num_frames == 3
    np.testing.assert_allclose(half.local_rot, ref.local_rot, atol=2e-5)
    np.testing.assert_allclose(half.root_pos, ref.root_pos, atol=1e-5)


def test_archive_without_labels_streams(tmp_path, monkeypatch):
    from mmar.data import sources

    monkeypatch.setattr(sources, "_MAX_UNPAIRED", 2)
    write_bvh(_tiny_clip("c", 3), tmp_path / "c.bvh")
    arch = tmp_path / "many.tar"
    with tarfile.open(arch, "w") as tf:
        for i in range(5):
            tf.add(tmp_path / "c.bvh", f"d/c{i}.bvh")
    got = [(n, lab) for n, _t, lab, _s in iter_bvh_sources(arch)]
    assert got == [(f"c{i}", None) for i in range(5)]  # in archive order
