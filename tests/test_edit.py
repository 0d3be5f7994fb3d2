"""mmar.edit: keep-region parsing and validation, the editable latent grid, per-scale token
masks on the real ScaleMoGen / MoScale quantiser layouts, and loading the source motion (a real
Bandai Namco BVH clip read from ../shared, npz files in the ``mmar generate`` layout)."""
from __future__ import annotations

import tarfile

import numpy as np
import pytest

from mmar import edit as E
from mmar.data.arrays import save_arrays
from mmar.errors import ConfigError, DataFormatError, MmarError, ShapeError

# A person standing at the origin, Y up, facing +z (left = +x): SMPL-22 rest positions.
REST = np.array([
    (0.0, 0.95, 0.0), (0.09, 0.90, 0.0), (-0.09, 0.90, 0.0), (0.0, 1.05, 0.0), (0.10, 0.50, 0.02),
    (-0.10, 0.50, 0.02), (0.0, 1.18, 0.0), (0.10, 0.08, 0.0), (-0.10, 0.08, 0.0), (0.0, 1.30, 0.0),
    (0.10, 0.02, 0.12), (-0.10, 0.02, 0.12), (0.0, 1.50, 0.0), (0.07, 1.42, 0.0), (-0.07, 1.42, 0.0),
    (0.0, 1.62, 0.03), (0.18, 1.40, 0.0), (-0.18, 1.40, 0.0), (0.45, 1.40, 0.0), (-0.45, 1.40, 0.0),
    (0.70, 1.40, 0.0), (-0.70, 1.40, 0.0),
])


def walking_joints(T: int = 120, seed: int = 0) -> np.ndarray:
    """The rest pose walking forward along +z with swinging limbs, 20 fps, metres."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)[:, None] / 20.0
    p = np.repeat(REST[None], T, 0).copy()
    p[..., 2] += 1.2 * t
    p += 0.05 * np.sin(2 * np.pi * 1.1 * t[..., None] + rng.uniform(0, 6, (1, 22, 3)))
    return p


# --------------------------------------------------------------------------- parsing


def test_parse_keep_frames_ranges_and_open_ends():
    k = E.parse_keep_frames("0:60,120:180", 196)
    assert k.dtype == bool and k.shape == (196,)
    assert k[:60].all() and not k[60:120].any() and k[120:180].all() and not k[180:].any()
    assert np.array_equal(E.parse_keep_frames(":60", 100), np.arange(100) < 60)
    assert np.array_equal(E.parse_keep_frames("70:", 100), np.arange(100) >= 70)
    assert E.parse_keep_frames(":", 100).all()
    # overlapping ranges: the union; spaces allowed
    assert np.array_equal(E.parse_keep_frames(" 0:10 , 5:20 ", 50), np.arange(50) < 20)
    assert np.array_equal(E.parse_keep_frames("90:100", 100), np.arange(100) >= 90)


@pytest.mark.parametrize("text, match", [
    ("abc", "not a START:STOP"),
    ("0-60", "not a START:STOP"),
    ("1:2:3", "not a START:STOP"),
    ("0:60,", "empty item"),
    ("", "empty"),
    ("-5:10", "not a non-negative"),
    ("a:10", "not a non-negative"),
    ("60:60", r"'60:60' \(60:60\) is empty"),
    ("70:60", "is empty"),
    ("100:", "is empty"),
    ("0:200", r"range '0:200' \(0:200\) is outside the clip of 100 frames"),
    ("150:", "outside the clip of 100 frames"),
])
def test_parse_keep_frames_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        E.parse_keep_frames(text, 100)


def test_parse_keep_joints():
    assert E.parse_keep_joints("legs") == (1, 2)
    assert E.parse_keep_joints("Left-Arm, root") == (0, 4)
    assert E.parse_keep_joints("arms,arms,right_arm") == (4, 5)
    assert E.parse_keep_joints("upper,lower") == tuple(range(7))
    assert E.parse_keep_joints("torso") == (0, 3)
    with pytest.raises(ConfigError, match=r"unknown body group 'tail'.*valid names: root, .*left_arm"):
        E.parse_keep_joints("legs,tail")
    for empty in ("", " , ,"):
        with pytest.raises(ConfigError, match="nothing to keep"):
            E.parse_keep_joints(empty)


def test_joint_groups_and_group_joints():
    from mmar.models.quantizers.skeletal import BODY_GROUPS
    from mmar.models.vqvae import POOL_12_TO_7, POOL_22_TO_12

    assert E.BODY_GROUP_NAMES == BODY_GROUPS
    want = {"root": (0,), "spine": (3,), "head": (6,), "torso": (0, 3), "left_leg": (1,), "right_leg": (2,),
            "legs": (1, 2), "lower": (0, 1, 2), "left_arm": (4,), "right_arm": (5,), "arms": (4, 5),
            "upper": (3, 4, 5, 6)}
    for k, v in want.items():
        assert E.JOINT_GROUPS[k] == v
    # a partition of the 22 joints, each joint inside its group's pooled set of the tokenizer
    flat = sorted(j for g in E.GROUP_JOINTS for j in g)
    assert len(E.GROUP_JOINTS) == 7 and flat == list(range(22))
    for g, joints in enumerate(E.GROUP_JOINTS):
        pooled = {j for part in POOL_12_TO_7[g] for j in POOL_22_TO_12[part]}
        assert set(joints) <= pooled, (g, joints, pooled)
    assert E.GROUP_JOINTS[1] == (1, 4, 7, 10) and E.GROUP_JOINTS[5] == (14, 17, 19, 21)
    assert E.GROUP_JOINTS[6] == (12, 15)


# --------------------------------------------------------------------------- the request


def test_request_kinds_and_immutability():
    kf = np.arange(100) < 40
    assert E.EditRequest("x").kind == "semantic"
    assert E.EditRequest("x", kf).kind == "temporal"
    assert E.EditRequest("x", None, (2, 1, 1)).keep_groups == (1, 2)
    assert E.EditRequest("x", None, (1,)).kind == "body_part"
    r = E.EditRequest("x", kf, (4, 5))
    assert r.kind == "temporal+body_part"
    kf[:] = False  # the request holds its own read-only copy
    assert r.keep_frames[:40].all()
    with pytest.raises(ValueError):
        r.keep_frames[0] = False
    with pytest.raises(AttributeError):
        r.text = "y"  # frozen
    with pytest.raises(ConfigError, match="0..6"):
        E.EditRequest("x", None, (7,))
    with pytest.raises(ShapeError, match="1-d bool"):
        E.EditRequest("x", np.ones((4, 4), bool))


def test_make_request():
    r = E.make_request("a person jumps", 196, keep_frames="0:60,120:", keep_joints=None)
    assert r.kind == "temporal" and r.keep_frames.sum() == 60 + 76 and r.text == "a person jumps"
    r = E.make_request("wave", 120, keep_joints="legs,root")
    assert r.kind == "body_part" and r.keep_groups == (0, 1, 2) and r.keep_frames is None
    r = E.make_request("wave", 120, keep_frames=":40", keep_joints="lower")
    assert r.kind == "temporal+body_part"
    assert E.make_request("dance", 120).kind == "semantic"
    assert E.make_request("x", 120, keep_frames=np.arange(120) < 8, keep_joints=[5, 4]).keep_groups == (4, 5)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(text="  "), ConfigError, "caption .* is empty"),
    (dict(text=""), ConfigError, "is empty"),
    (dict(keep_frames="1:4"), ConfigError, r"nothing to keep: the kept frames \(1:4\) cover no whole latent step"),
    (dict(keep_frames="2:7,9:15"), ConfigError, "nothing to keep"),
    (dict(keep_frames=np.zeros(120, bool)), ConfigError, r"nothing to keep: the kept frames \(none\)"),
    (dict(keep_joints=""), ConfigError, "nothing to keep"),
    (dict(keep_joints=()), ConfigError, "nothing to keep"),
    (dict(keep_frames="0:130"), ConfigError, "outside the clip of 120 frames"),
    (dict(keep_joints="arms,tail"), ConfigError, "unknown body group 'tail'"),
    (dict(keep_frames=":"), ConfigError, "nothing to edit"),
    (dict(keep_joints="upper,lower"), ConfigError, "nothing to edit"),
    (dict(keep_frames="0:120", keep_joints="root,legs,spine,arms,head"), ConfigError, "nothing to edit"),
    (dict(keep_frames=np.ones(100, bool)), ShapeError, "100 entries for a clip of 120 frames"),
    (dict(length=200), ConfigError, "200 frames; the model edits at most 196"),
    (dict(length=0), ConfigError, "positive whole number of frames"),
])
def test_request_validation_errors(kwargs, err, match):
    kwargs = {"text": "a person waves", "length": 120, **kwargs}
    with pytest.raises(err, match=match):
        E.make_request(kwargs.pop("text"), kwargs.pop("length"), **kwargs)


def test_partial_last_step_and_body_part_on_a_temporal_model():
    # 118 frames: step 29 holds frames 116, 117 only; keeping them keeps the step
    r = E.make_request("x", 118, keep_frames="0:8,116:")
    g = E.edit_grid(r, 118)
    assert not g[0:2].any() and g[2:29].all() and not g[29].any() and not g[30:].any()
    # keeping all but the partial step's first frame leaves it editable
    r = E.make_request("x", 118, keep_frames="0:116,117:")
    assert E.edit_grid(r, 118)[29].all() and not E.edit_grid(r, 118)[:29].any()
    with pytest.raises(ConfigError, match="tokens cover the whole body.*skeletal tokenizer such as ScaleMoGen"):
        E.make_request("x", 120, keep_joints="legs", num_groups=1)
    with pytest.raises(ConfigError, match="tokens cover the whole body"):
        E.edit_grid(E.EditRequest("x", None, (1,)), 120, num_groups=1)


# --------------------------------------------------------------------------- the grid


def test_edit_grid_temporal():
    r = E.make_request("x", 100, keep_frames="0:40,60:100")
    g = E.edit_grid(r, 100)
    assert g.shape == (49, 7) and g.dtype == bool
    want = np.zeros((49, 7), bool)
    want[10:15] = True  # frames 40..59; steps 25.. are padding
    assert np.array_equal(g, want)
    # a range ending inside a step does not keep that step
    g = E.edit_grid(E.make_request("x", 100, keep_frames="0:42"), 100)
    want = np.zeros((49, 7), bool)
    want[10:25] = True
    assert np.array_equal(g, want)
    # a temporal tokenizer: one group
    g1 = E.edit_grid(E.make_request("x", 100, keep_frames="0:42", num_groups=1), 100, num_groups=1)
    assert g1.shape == (49, 1) and np.array_equal(g1[:, 0], want[:, 0])


def test_edit_grid_body_both_semantic():
    g = E.edit_grid(E.make_request("x", 196, keep_joints="legs"), 196)
    want = np.ones((49, 7), bool)
    want[:, [1, 2]] = False
    assert np.array_equal(g, want)
    g = E.edit_grid(E.make_request("x", 196, keep_frames="0:80", keep_joints="arms"), 196)
    want = np.ones((49, 7), bool)
    want[:20, [4, 5]] = False
    assert np.array_equal(g, want)
    g = E.edit_grid(E.make_request("x", 60), 60)
    want = np.zeros((49, 7), bool)
    want[:15] = True
    assert np.array_equal(g, want)
    with pytest.raises(ConfigError, match="needs 50 latent steps"):
        E.edit_grid(E.EditRequest("x"), 200)


# --------------------------------------------------------------------------- token masks


def test_skeletal_token_masks_keep_lower_body():
    from mmar.models.quantizers.skeletal import SkeletalQuantizerConfig

    cfg = SkeletalQuantizerConfig()
    g = E.edit_grid(E.make_request("wave", 196, keep_joints="lower"), 196)
    m = E.skeletal_token_masks(cfg, g)
    assert [x.shape[0] for x in m] == list(cfg.token_counts)
    for k in range(5):  # chains G0 / G1: every token pools a lower-body group
        assert not m[k].any(), k
    # scales 5, 6, 7 (7, 12, 24 steps; groups {0,3} {1,2} {4,5,6}): the upper-group tokens only
    for k, n in ((5, 7), (6, 12), (7, 24)):
        assert np.array_equal(m[k].reshape(n, 3), np.tile([False, False, True], (n, 1))), k
    # scales 8, 9 (24, 49 steps; groups {0} {3} {1,2} {4,5} {6})
    for k, n in ((8, 24), (9, 49)):
        assert np.array_equal(m[k].reshape(n, 5), np.tile([False, True, False, True, True], (n, 1))), k
    # the last scale: exactly the upper cells
    assert np.array_equal(m[-1].reshape(49, 7), np.tile(np.isin(np.arange(7), (3, 4, 5, 6)), (49, 1)))
    assert np.array_equal(m[-1].reshape(49, 7), g)


def test_skeletal_token_masks_temporal_and_padding():
    from mmar.models.quantizers.skeletal import SkeletalQuantizerConfig

    cfg = SkeletalQuantizerConfig()
    g = E.edit_grid(E.make_request("x", 196, keep_frames=":96"), 196)
    m = E.skeletal_token_masks(cfg, g)
    # scale 8: 49 -> 24 (area windows [floor(49i/24), ceil(49(i+1)/24))): i >= 12 starts at step 24
    m8 = m[8].reshape(24, 5)
    assert np.array_equal(m8.all(1), np.arange(24) >= 12) and np.array_equal(m8.any(1), m8.all(1))
    # scale 6: 49 -> 12, window i >= 6 starts at step >= 24; scales 1, 2 (2 steps: windows
    # [0, 25) and [24, 49)): the second half; scale 0 (one token over everything): nothing
    assert np.array_equal(m[6].reshape(12, 3).all(1), np.arange(12) >= 6)
    assert np.array_equal(m[-1].reshape(49, 7).all(1), np.arange(49) >= 24)
    assert not m[0].any() and m[1].tolist() == [False, True]
    assert m[2].reshape(2, 2).tolist() == [[False, False], [True, True]]
    # 100 frames = 25 valid steps, keep lower body; scale 6 (49 -> 12): window 6 = steps 24..28
    g = E.edit_grid(E.make_request("x", 100, keep_joints="lower"), 100)
    strict = E.skeletal_token_masks(cfg, g)[6].reshape(12, 3)
    loose = E.skeletal_token_masks(cfg, g, valid_steps=E.valid_steps(100))[6].reshape(12, 3)
    assert np.array_equal(strict[:, 2], np.arange(12) < 6)  # padding steps 25..28 block window 6
    assert np.array_equal(loose[:, 2], np.arange(12) < 7)  # padding ignored; window 7 = steps 28..32: none valid
    assert not loose[:, :2].any()
    assert E.valid_steps(100) == 25 and E.valid_steps(101) == 26
    with pytest.raises(ShapeError, match=r"\(49, 7\)"):
        E.skeletal_token_masks(cfg, g[:, :1])


def test_temporal_token_masks_moscale():
    g = E.edit_grid(E.make_request("x", 196, keep_frames="0:96", num_groups=1), 196, num_groups=1)
    m = E.temporal_token_masks((6, 12, 24, 49), 49, "area", g)
    # area windows [floor(49 i / L), ceil(49 (i+1) / L)) must start at step >= 24
    assert np.array_equal(m[0], np.arange(6) >= 3)
    assert np.array_equal(m[1], np.arange(12) >= 6)
    assert np.array_equal(m[2], np.arange(24) >= 12)
    assert np.array_equal(m[3], np.arange(49) >= 24)
    # linear down-sampling blends two neighbours: a token is editable only if both are
    lin = E.temporal_token_masks((24, 49), 49, "linear", g[:, 0])
    from mmar.models.quantizers.resample import resample_matrix

    w = resample_matrix(49, 24, "linear")
    want = np.array([(g[w[i] != 0, 0]).all() for i in range(24)])
    assert np.array_equal(lin[0], want) and want.sum() == 12
    with pytest.raises(ShapeError, match=r"\(49,\) or \(49, 1\)"):
        E.temporal_token_masks((6, 49), 49, "area", np.ones((49, 7), bool))


def test_token_edit_masks_by_hand():
    w = np.array([[0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0.5, 0.5]])
    grid = np.array([False, True, True, True])
    m = E.token_edit_masks([w, None], grid)
    assert m[0].tolist() == [False, True, True] and m[1].tolist() == grid.tolist()
    valid = np.array([True, True, True, False])
    grid2 = np.array([False, True, True, False])  # the last cell is padding
    assert E.token_edit_masks([w], grid2)[0].tolist() == [False, True, False]
    assert E.token_edit_masks([w], grid2, valid)[0].tolist() == [False, True, True]
    with pytest.raises(ShapeError, match=r"scale 0 must be \(N_k, 4\)"):
        E.token_edit_masks([np.ones((2, 5))], grid)
    with pytest.raises(ShapeError, match="bool"):
        E.token_edit_masks([w], grid.astype(int))


# --------------------------------------------------------------------------- the source motion


@pytest.fixture(scope="module")
def bandai_bvh(bandai_dir, tmp_path_factory):
    """The first clip of dataset 1 (dataset-1_bye_feminine_001, 218 frames at 20 fps), copied to
    a temporary directory outside the repository (removed by pytest)."""
    arc = bandai_dir / "Bandai-Namco-Research-Motiondataset-1.tar.xz"
    with tarfile.open(arc, "r|xz") as tf:
        for m in tf:
            if m.name.endswith(".bvh"):
                out = tmp_path_factory.mktemp("bandai") / m.name.rsplit("/", 1)[1]
                out.write_bytes(tf.extractfile(m).read())
                return out
    pytest.skip("no BVH in the dataset-1 archive")


def test_load_source_bandai_bvh(bandai_bvh):
    from mmar.data.bandai import parse_clip_name
    from mmar.data.captions import captions_for
    from mmar.data.hml_features import recover_from_ric
    from mmar.data.sources import load_clips
    from mmar.data.t2m import clip_features
    from mmar import geometry_np as gnp

    s = E.load_source(bandai_bvh, max_frames=62, start_frame=8)
    assert s.length == 60 and s.features.shape == (60, 263) and s.joints.shape == (60, 22, 3)
    assert s.features.dtype == np.float32 and s.joints.dtype == np.float32 and s.fps == 20.0
    assert s.start_frame == 8 and s.note is not None and "8:68" in s.note
    assert s.name == bandai_bvh.stem and s.path == str(bandai_bvh)
    assert s.caption == captions_for(parse_clip_name(bandai_bvh.stem))[0]
    # the same features as the Bandai text-to-motion data (mmar.data.t2m._build_bandai)
    clips, _ = load_clips(str(bandai_bvh), scale=0.01, workers=1, progress=False, on_error="raise",
                          retarget="bandai", fps=20.0)
    c = clips[0]
    _, joints = gnp.forward_kinematics(c.local_rot, c.skeleton.offsets, c.skeleton.parents, c.root_pos)
    full = clip_features(joints)
    assert len(full) > 196
    np.testing.assert_allclose(s.features, full[8:68], atol=1e-5)
    np.testing.assert_allclose(s.joints, np.asarray(recover_from_ric(s.features, 22)), atol=1e-6)
    assert abs(s.joints[0, 0, 0]) < 1e-6 and 0.7 < s.joints[0, 0, 1] < 1.1  # root from the origin, pelvis height
    # the default crop: 196 frames from the start
    d = E.load_source(bandai_bvh, max_frames=196)
    assert d.length == 196 and f"0:196 of {len(full)}" in d.note
    # too short after the start frame; start frame outside the clip
    with pytest.raises(DataFormatError, match="editing needs at least 40"):
        E.load_source(bandai_bvh, start_frame=len(full) - 30)
    with pytest.raises(ConfigError, match="start_frame"):
        E.load_source(bandai_bvh, start_frame=len(full))


def test_load_source_bvh_errors(bandai_bvh, tmp_path):
    text = bandai_bvh.read_text()
    odd = tmp_path / "odd.bvh"
    odd.write_text(text.replace("Hand_L", "Paw_L").replace("Toes_R", "Claw_R"))
    want = r"odd\.bvh: .*cannot be mapped to the 22 SMPL joints.*missing joints 'Toes_R', 'Hand_L'"
    with pytest.raises(DataFormatError, match=want):
        E.load_source(odd)
    bad = tmp_path / "bad.bvh"
    bad.write_text("HIERARCHY\nROOT Hips\n{\n  OFFSET 0 0\n")
    with pytest.raises(DataFormatError, match=r"bad\.bvh"):
        E.load_source(bad)
    cut = tmp_path / "cut.bvh"
    cut.write_text(text[: len(text) // 2])  # frame lines missing
    with pytest.raises(DataFormatError, match=r"cut\.bvh:\d+: "):
        E.load_source(cut)


def _generate_npz(path, motions):
    """An npz in the mmar generate layout (mmar.generate.save_generated)."""
    from mmar import generate as G
    from mmar.models.generated import GeneratedMotions

    T = max(len(f) for f, _ in motions)
    D = motions[0][0].shape[1]
    x = np.zeros((len(motions), T, D), np.float32)
    for i, (f, _) in enumerate(motions):
        x[i, :len(f)] = f
    kind = "kit" if D == 251 else "humanml3d"
    gen = GeneratedMotions(x, [len(f) for f, _ in motions], [c for _, c in motions], 12.5 if D == 251 else 20.0,
                           kind=kind)
    return G.save_generated(gen, str(path))


def test_load_source_generate_npz(tmp_path):
    from mmar.data.hml_features import joints_to_features

    f1 = joints_to_features(walking_joints(121, seed=1))  # 120 frames
    f2 = joints_to_features(walking_joints(231, seed=2))  # 230 frames
    res = _generate_npz(tmp_path / "gen.npz", [(f1, "a person walks"), (f2, "a person walks fast")])
    names = res["names"]
    s = E.load_source(tmp_path / "gen.npz")
    assert s.name == names[0] and s.caption == "a person walks" and s.length == 120 and s.note is None
    np.testing.assert_allclose(s.features, f1, atol=1e-6)
    from mmar.data.arrays import load_arrays

    np.testing.assert_allclose(s.joints, load_arrays(str(tmp_path / "gen.npz"))[names[0]]["joints"], atol=1e-5)
    s2 = E.load_source(tmp_path / "gen.npz", name=names[1], start_frame=10, max_frames=100, unit=4)
    assert s2.length == 100 and s2.caption == "a person walks fast" and "10:110 of 230" in s2.note
    np.testing.assert_allclose(s2.features, f2[10:110], atol=1e-6)
    with pytest.raises(DataFormatError, match=r"no motion 'nope' in the npz; it has 'a_person_walks_0'"):
        E.load_source(tmp_path / "gen.npz", name="nope")


def test_load_source_npz_errors_and_convert_layout(tmp_path):
    rng = np.random.default_rng(0)
    _generate_npz(tmp_path / "kit.npz", [(0.01 * rng.normal(size=(60, 251)).astype(np.float32), "kit walk")])
    with pytest.raises(DataFormatError, match=r"kit\.npz: .*251 wide \(KIT-ML, 21 joints\).*skeleton mismatch"):
        E.load_source(tmp_path / "kit.npz")
    j = walking_joints(81)
    save_arrays(str(tmp_path / "conv.npz"), {"walk": {"joints": j.astype(np.float32), "fps": np.float32(20.0)}})
    s = E.load_source(tmp_path / "conv.npz")
    assert s.length == 80 and s.caption is None and s.features.shape == (80, 263)
    save_arrays(str(tmp_path / "conv30.npz"), {"walk": {"joints": j.astype(np.float32), "fps": np.float32(30.0)}})
    with pytest.raises(DataFormatError, match="at 30 fps; editing needs 20 fps"):
        E.load_source(tmp_path / "conv30.npz")
    save_arrays(str(tmp_path / "short.npz"), {"walk": {"joints": j[:30].astype(np.float32), "fps": np.float32(20.0)}})
    with pytest.raises(DataFormatError, match="has 29 frames .*at least 40"):
        E.load_source(tmp_path / "short.npz")
    save_arrays(str(tmp_path / "other.npz"), {"m": {"rot6d": np.zeros((50, 132), np.float32)}})
    with pytest.raises(DataFormatError, match="neither 'features'"):
        E.load_source(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DataFormatError, match=r"junk\.npz"):
        E.load_source(tmp_path / "junk.npz")
    (tmp_path / "clip.txt").write_text("hello")
    with pytest.raises(DataFormatError, match=r"clip\.txt: unsupported source motion file type '\.txt'"):
        E.load_source(tmp_path / "clip.txt")
    with pytest.raises(DataFormatError, match=r"missing\.bvh: source motion file not found"):
        E.load_source(tmp_path / "missing.bvh")
    with pytest.raises(MmarError, match="directory"):
        E.load_source(tmp_path)


def test_edit_task_refuses_models_that_cannot_edit():
    from types import SimpleNamespace

    from mmar.tasks.moscale import MoScaleTask
    from mmar.tasks.scalemogen import ScaleMoGenTask
    from mmar.tasks.t2m_gpt import T2MGPTTask

    def fake(cls, name):
        return SimpleNamespace(task=cls.__new__(cls), config=SimpleNamespace(task=name))

    with pytest.raises(ConfigError, match="'t2m_gpt' cannot edit"):
        E.edit_task(fake(T2MGPTTask, "t2m_gpt"))
    assert E.edit_task(fake(MoScaleTask, "moscale")).edit_groups == 1
    assert E.edit_task(fake(ScaleMoGenTask, "scalemogen")).edit_groups == 7
    with pytest.raises(ConfigError, match="cannot edit"):
        E.edit_task(SimpleNamespace(task=object(), config=SimpleNamespace(task="mem_mlp")))


def test_keep_root_channels_writes_back_the_source_root_for_body_part_edits():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(80, 263)).astype(np.float32)
    ed = rng.normal(size=(2, 96, 263)).astype(np.float32)
    lower = E.make_request("a person waves", 80, keep_joints="lower")
    out = E.keep_root_channels(ed, src, lower)
    np.testing.assert_array_equal(out[:, :80, :4], np.broadcast_to(src[:, :4], (2, 80, 4)))
    np.testing.assert_array_equal(out[:, :, 4:], ed[:, :, 4:])
    np.testing.assert_array_equal(out[:, 80:], ed[:, 80:])
    for req in (E.make_request("a person waves", 80, keep_joints="upper"), E.make_request("a person waves", 80),
                E.make_request("a person waves", 80, keep_frames="0:40"),
                E.make_request("a person waves", 80, keep_frames="0:40", keep_joints="lower")):
        np.testing.assert_array_equal(E.keep_root_channels(ed, src, req), ed)


def test_composite_kept_frames_takes_the_source_decoding_in_kept_frames():
    ed = np.zeros((2, 48, 263), np.float32)
    rec = np.ones((48, 263), np.float32)
    req = E.make_request("a person waves", 40, keep_frames="0:16")
    out = E.composite_kept_frames(ed, rec, req, fade=4)
    np.testing.assert_array_equal(out[:, :16], 1.0)  # kept frames: the source's decoding
    np.testing.assert_allclose(out[0, 16:21, 0], [0.8, 0.6, 0.4, 0.2, 0.0], atol=1e-6)  # cross-fade
    np.testing.assert_array_equal(out[:, 21:], 0.0)
    inb = E.make_request("a person waves", 40, keep_frames="0:8,32:40")
    out = E.composite_kept_frames(ed, rec, inb, fade=0)
    assert out[0, :8, 0].tolist() == [1.0] * 8 and out[0, 8:32, 0].tolist() == [0.0] * 24
    assert out[0, 32:40, 0].tolist() == [1.0] * 8
    for req in (E.make_request("a person waves", 40, keep_joints="lower"), E.make_request("a person waves", 40)):
        np.testing.assert_array_equal(E.composite_kept_frames(ed, rec, req), ed)


def test_fade_weights_smooth_ramp_has_no_kink_and_matches_linear_ends():
    kept = np.zeros(40)
    kept[:16] = 1
    lin = E.fade_weights(kept, 8, "linear")
    smo = E.fade_weights(kept, 8, "smooth")
    for w in (lin, smo):
        assert w[:16].tolist() == [1.0] * 16 and w[25:].tolist() == [0.0] * 15
        assert np.all(np.diff(w[15:25]) < 0) and w[16:24].min() > 0  # 8 frames of fade
    np.testing.assert_allclose(smo[19] + smo[20], 1.0, atol=1e-6)  # symmetric about the middle of the fade
    # the smooth ramp's second difference is small at both ends of the fade (no kink), the linear one's is not
    assert abs(np.diff(smo, 2)[14]) < 0.02 and abs(np.diff(lin, 2)[14]) > 0.09
    assert E.fade_weights(kept, 0, "smooth").tolist() == kept.tolist()
    with pytest.raises(ConfigError, match="ramp"):
        E.fade_weights(kept, 8, "cubic")
    with pytest.raises(ConfigError, match=">= 0"):
        E.fade_weights(kept, -1)


def test_fade_weights_septic_ramp_has_no_jerk_step_at_the_ends():
    """The septic ramp's third difference is small where the fade starts and stops, where the
    quintic's is largest (the septic's peaks mid-fade instead)."""
    kept = np.zeros(60)
    kept[:16] = 1
    smo = E.fade_weights(kept, 24, "smooth").astype(np.float64)
    sep = E.fade_weights(kept, 24, "septic").astype(np.float64)
    assert sep[:16].tolist() == [1.0] * 16 and sep[41:].tolist() == [0.0] * 19 and np.all(np.diff(sep[15:41]) < 0)
    np.testing.assert_allclose(sep[27] + sep[28], 1.0, atol=1e-6)  # symmetric about the middle of the fade
    d3s, d3p = np.abs(np.diff(smo, 3)), np.abs(np.diff(sep, 3))
    assert d3p[13] < 0.25 * d3s[13] and d3p[14] < 0.5 * d3s[14]  # the first frames of the fade: little jerk added
    assert d3p[38] < 0.5 * d3s[38] and d3p[39] < 0.25 * d3s[39]  # and the last
    assert np.argmax(d3p) in (26, 27, 28) and np.argmax(d3s) in (14, 38)  # where each puts its largest


def test_composite_kept_frames_from_the_source_itself():
    ed = np.zeros((1, 48, 263), np.float32)
    src = np.full((40, 263), 2.0, np.float32)  # the source: exactly T frames, shorter than the padded edit
    req = E.make_request("a person waves", 40, keep_frames="24:40")
    out = E.composite_kept_frames(ed, src, req, fade=4, ramp="smooth")
    np.testing.assert_array_equal(out[0, 24:40], 2.0)  # kept frames: the user's frames, exactly
    assert out[0, :19, 0].tolist() == [0.0] * 19 and np.all(np.diff(out[0, 19:24, 0]) > 0)
    np.testing.assert_array_equal(out[0, 40:], 0.0)  # padding untouched
    with pytest.raises(ShapeError, match="kept motion"):
        E.composite_kept_frames(ed, src[:30], req)


def test_seams_of_a_kept_mask():
    kept = np.zeros(40, bool)
    kept[:8] = kept[28:] = True  # in-between: two seams share a 20-frame gap
    assert E.seams_of(kept) == [(7, 1, 10), (28, -1, 10)]
    kept = np.zeros(40, bool)
    kept[24:] = True  # suffix: the edited run meets the clip's start
    assert E.seams_of(kept) == [(24, -1, 24)]
    assert E.seams_of(np.ones(10, bool)) == [] and E.seams_of(np.zeros(10, bool)) == []


def test_min_jerk_composite_continues_the_kept_motion_to_second_order():
    """Kept frames are the source's; across each seam the composite continues the source in value,
    velocity and acceleration (its first and second differences there are the source's up to the
    offset's own jerk, although the generated motion is far away), its jerk stays within the
    minimum-jerk bound ``60 |gap| / (fade + 1)^3`` of the gap it closes (a linear fade jumps far
    past it), and ``fade + 1`` frames in it is the generated motion; a constant gap decays
    monotonically."""
    T, fade = 64, 12
    t = np.arange(T, dtype=np.float64)[:, None] / 20.0
    src = np.tile(np.sin(2.0 * t) + 0.5 * t, (1, 263)).astype(np.float32)
    ed = np.tile(np.cos(3.0 * t) - 1.0, (1, 1, 263)).astype(np.float32)  # 3.0 below the source at frame 15
    req = E.make_request("a person waves", T, keep_frames="0:16,48:64")
    out = E.composite_kept_frames(ed, src, req, fade=fade, ramp="minjerk")
    np.testing.assert_array_equal(out[0, :16], src[:16])
    np.testing.assert_array_equal(out[0, 48:], src[48:])
    np.testing.assert_allclose(out[0, 16 + fade:48 - fade], ed[0, 16 + fade:48 - fade], atol=1e-6)
    x, s = out[0, :, 0], src[:, 0]
    gap = abs(src[15, 0] - ed[0, 15, 0])
    bound = 60.0 * gap / (fade + 1) ** 3
    for k in (15, 47):  # the last kept / edited frame before each seam
        for order, at in ((1, k), (2, k - 1)):
            assert abs(np.diff(x, order)[at] - np.diff(s, order)[at]) < 0.25 * bound, (k, order)
    assert np.abs(np.diff(x, 3)).max() < bound + 0.01
    lin = E.composite_kept_frames(ed, src, req, fade=fade, ramp="linear")[0, :, 0]
    assert np.abs(np.diff(lin, 3)).max() > 2.0 * bound
    # a constant gap (no velocity or acceleration difference) decays monotonically to 0
    flat = E.composite_kept_frames(np.zeros((1, T, 263), np.float32), np.ones((T, 263), np.float32),
                                   E.make_request("a person waves", T, keep_frames="0:16"), fade=fade, ramp="minjerk")
    assert np.all(np.diff(flat[0, 15:16 + fade + 1, 0]) < 0) and flat[0, 16 + fade:, 0].max() == 0.0
    with pytest.raises(ConfigError, match=">= 0"):
        E.composite_kept_frames(ed, src, req, fade=-1, ramp="minjerk")
    with pytest.raises(ConfigError, match="offset"):
        E.fade_weights(np.ones(4), 4, "minjerk")
