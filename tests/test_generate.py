"""mmar generate (mmar/generate.py and its command): durations and captions checked, the npz
readable by render / the convert-layout loaders, GIF, BVH round trip within 1 cm, the command
end to end. A fake text-to-motion run returns real HumanML3D features (of a Bandai clip when
the data is there, else of a synthetic walk), so no model is trained here."""
from __future__ import annotations

import json
import tarfile
import types

import numpy as np
import pytest
from PIL import Image

from mmar import cli
from mmar import generate as G
from mmar import geometry_np as gnp
from mmar.data import hml_features as hf
from mmar.data.arrays import JOINT_MAPS, load_arrays
from mmar.data.bvh import parse_bvh_arrays, read_bvh
from mmar.errors import CheckpointError, ConfigError, DataFormatError, MmarError, OutputError
from mmar.models.generated import GeneratedMotions
from mmar.skeleton import SMPL22_NAMES, SMPL22_PARENTS

# SMPL-like rest offsets (Y up, facing +Z, left = +X), metres
OFFSETS = np.array([
    [0, 0, 0], [0.06, -0.09, 0], [-0.06, -0.09, 0], [0, 0.11, 0], [0.04, -0.38, 0],
    [-0.04, -0.38, 0], [0, 0.14, 0], [0, -0.40, -0.04], [0, -0.40, -0.04], [0, 0.05, 0.02],
    [0.02, -0.06, 0.12], [-0.02, -0.06, 0.12], [0, 0.21, -0.03], [0.08, 0.12, -0.01],
    [-0.08, 0.12, -0.01], [0, 0.09, 0.05], [0.12, 0.03, -0.02], [-0.12, 0.03, -0.02],
    [0.26, 0, -0.02], [-0.26, 0, -0.02], [0.25, 0.01, 0], [-0.25, 0.01, 0],
])


def walk_joints(T: int = 240, seed: int = 0) -> np.ndarray:
    """A rigid SMPL-22 body walking on a curve while turning (numpy FK), 20 fps."""
    rng = np.random.default_rng(seed)
    t = np.arange(T) / 20.0
    ang = 0.35 * np.sin(t[:, None, None] * rng.uniform(0.5, 3, (1, 22, 3)) + rng.uniform(0, 6, (1, 22, 3)))
    yaw = np.linspace(0.3, 2.5, T)
    ang[:, 0] = np.stack([0.1 * np.sin(t), yaw, np.zeros(T)], -1)
    R = gnp.euler_to_matrix(ang, "YXZ")
    root = np.stack([np.cumsum(0.03 * np.sin(yaw)), 0.95 + 0.02 * np.sin(3 * t), np.cumsum(0.03 * np.cos(yaw))], -1)
    return gnp.forward_kinematics(R, OFFSETS, SMPL22_PARENTS, root)[1]


def bandai_joints(bandai_dir) -> np.ndarray:
    """The first clip of the 'wave right hand' archive on SMPL-22 at 20 fps (numpy only)."""
    path = bandai_dir / "Bandai-Namco-Research-Motiondataset-2_wave-right-hand.tar.xz"
    if not path.exists():
        pytest.skip(f"{path.name} not available")
    with tarfile.open(path, "r:xz") as tar:
        member = next(m for m in tar if m.name.endswith(".bvh"))
        text = tar.extractfile(member).read().decode("utf-8")
    d = parse_bvh_arrays(text, member.name, scale=0.01)
    d = d.retarget(JOINT_MAPS["bandai"], SMPL22_NAMES, SMPL22_PARENTS).resample(20.0)
    return d.global_transforms()[1]


class FakeT2M:
    """A text-to-motion task whose 'samples' are windows of real features, chosen by the seed."""

    is_text_to_motion = True
    fps = 20.0
    min_frames = 40
    max_frames = 196
    spec = hf.HUMANML3D

    def __init__(self, feats: np.ndarray):
        self.feats = np.asarray(feats, np.float32)
        self.calls = []

    def generate(self, variables, texts, lengths=None, *, seed=0, steps=None, guidance=None, top_p=None,
                 temperature=None, batch_size=32):
        self.calls.append({"texts": list(texts), "lengths": None if lengths is None else list(lengths), "seed": seed,
                           "steps": steps, "guidance": guidance, "batch_size": batch_size})
        lengths = np.full(len(texts), 48) if lengths is None else np.asarray(lengths)
        rng = np.random.default_rng(seed)
        x = np.zeros((len(texts), int(lengths.max()), self.feats.shape[1]), np.float32)
        for i, n in enumerate(lengths):
            s = int(rng.integers(0, len(self.feats) - n + 1))
            x[i, :n] = self.feats[s:s + n]
        return GeneratedMotions(x, lengths, texts, self.fps, "humanml3d", seconds=0.25)


def fake_run(feats, task=None):
    return types.SimpleNamespace(task=task or FakeT2M(feats), variables={"params": {}}, checkpoint="runs/fake/1",
                                 workdir="runs/fake", config=types.SimpleNamespace(task="moscale"), skipped_steps=[])


@pytest.fixture(scope="module")
def walk_feats():
    return hf.joints_to_features(walk_joints())


def fk_from_bvh(path, scale=0.01) -> np.ndarray:
    """Joint positions (T, 22, 3) in SMPL-22 order of a BVH file (numpy FK)."""
    clip = read_bvh(path, scale=scale)
    _, pos = gnp.forward_kinematics(clip.local_rot, clip.skeleton.offsets, clip.skeleton.parents, clip.root_pos)
    return pos[:, [clip.skeleton.names.index(n) for n in SMPL22_NAMES]]


# --------------------------------------------------------------------------- checks


def test_seconds_to_frames_and_its_errors():
    assert G.seconds_to_frames(2.0) == 40
    assert G.seconds_to_frames(3.1) == 60  # 62 frames, down to a multiple of 4
    assert G.seconds_to_frames("9.8") == 196
    assert G.seconds_to_frames(9.9) == 196  # 198 -> 196
    assert G.seconds_to_frames(4.0, fps=12.5, min_frames=24, max_frames=196) == 48
    for bad in (0, -1.0, float("nan"), float("inf"), "abc", None, True):
        with pytest.raises(ConfigError, match="seconds"):
            G.seconds_to_frames(bad)
    for bad in (1.9, 10.0, 1e308):
        with pytest.raises(ConfigError, match=r"2 to 9\.8 s at 20 fps"):
            G.seconds_to_frames(bad)


def test_generate_refuses_bad_requests(walk_feats):
    run = fake_run(walk_feats)
    for texts in ([], [""], ["a person walks", "   "], [3]):
        with pytest.raises(ConfigError, match="caption|no caption"):
            G.generate_motions(run, texts)
    bad = [dict(seconds=-2), dict(seconds=float("nan")), dict(seconds=1e9), dict(seconds=2, lengths=[40]),
           dict(lengths=[41]), dict(lengths=[200]), dict(lengths=[float("nan")]), dict(lengths=[40, 44]),
           dict(num=0), dict(batch_size=0), dict(steps="2,x"), dict(steps=0), dict(guidance=float("inf")),
           dict(top_p=1.5), dict(temperature=0), dict(seed=1.5)]
    for kw in bad:
        with pytest.raises(ConfigError):
            G.generate_motions(run, ["a person walks"], **kw)
    assert run.task.calls == []  # nothing reached the model
    sparse = types.SimpleNamespace(task=types.SimpleNamespace(), variables={}, workdir="runs/mem",
                                   config=types.SimpleNamespace(task="mem_mlp"))
    with pytest.raises(CheckpointError, match=r"runs/mem: task 'mem_mlp' is not a text-to-motion model"):
        G.generate_motions(sparse, ["a person walks"])


def test_num_samples_seed_and_order(walk_feats):
    run = fake_run(walk_feats)
    texts = ["a person walks", " a person waves "]
    gen = G.generate_motions(run, texts, seconds=3, num=2, seed=5, steps="2,3", guidance=4.0, batch_size=3)
    call = run.task.calls[-1]
    # one call, sample-major; the result comes back caption-major
    assert call["texts"] == ["a person walks", "a person waves"] * 2
    assert call["lengths"] == [60] * 4 and call["seed"] == 5 and call["steps"] == (2, 3) and call["guidance"] == 4.0
    assert call["batch_size"] == 3
    assert gen.texts == ["a person walks", "a person walks", "a person waves", "a person waves"]
    assert gen.lengths.tolist() == [60] * 4
    again = G.generate_motions(run, texts, seconds=3, num=2, seed=5)
    np.testing.assert_array_equal(again.features, gen.features)
    other = G.generate_motions(run, texts, seconds=3, num=2, seed=6)
    assert not np.array_equal(other.features, gen.features)
    # no duration: the task's estimator chooses (lengths=None reaches it)
    G.generate_motions(run, texts)
    assert run.task.calls[-1]["lengths"] is None
    assert G.parse_steps("10") == 10 and G.parse_steps([4]) == (4,) and G.parse_steps(None) is None
    assert G.motion_names(["A person walks.", "a person walks", "Überall!", "***"]) == [
        "a_person_walks_0", "a_person_walks_1", "uberall_0", "motion_0"]


def test_read_texts(tmp_path):
    f = tmp_path / "captions.txt"
    f.write_bytes("\ufeffa person walks\r\n\n   \n  a person jumps twice  \nune personne salue\n".encode("utf-8"))
    assert G.read_texts(str(f)) == ["a person walks", "a person jumps twice", "une personne salue"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataFormatError, match="empty.txt: no caption"):
        G.read_texts(str(empty))
    with pytest.raises(DataFormatError, match="missing.txt: file not found"):
        G.read_texts(str(tmp_path / "missing.txt"))
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"walk\ncaf\xe9\n")
    with pytest.raises(DataFormatError, match=r"latin.txt:2: not UTF-8"):
        G.read_texts(str(latin))
    binary = tmp_path / "b.npz"
    binary.write_bytes(b"PK\x03\x04\x00\x00")
    with pytest.raises(DataFormatError, match="NUL"):
        G.read_texts(str(binary))


# --------------------------------------------------------------------------- files


def test_npz_layout_read_by_render_and_loaders(tmp_path, walk_feats):
    from mmar.data.inputs import finite_clip_arrays
    from mmar.viz.render import render_npz

    gen = G.generate_motions(fake_run(walk_feats), ["a person walks in a circle", "a person waves"], seconds=2.2)
    out = tmp_path / "gen.npz"
    res = G.save_generated(gen, str(out))
    assert res["names"] == ["a_person_walks_in_a_circle_0", "a_person_waves_0"] and res["lengths"] == [44, 44]
    data = load_arrays(str(out))
    assert sorted(data) == sorted(res["names"])
    a = data["a_person_waves_0"]
    assert a["joints"].shape == (44, 22, 3) and a["joints"].dtype == np.float32
    assert a["features"].shape == (44, 263) and float(a["fps"]) == 20.0
    assert str(a["caption"]) == "a person waves"
    np.testing.assert_array_equal(a["root"], a["joints"][:, 0])
    # the joints are the motion the features describe: bone lengths of the synthetic body
    par = list(SMPL22_PARENTS[1:])
    np.testing.assert_allclose(np.linalg.norm(a["joints"][:, 1:] - a["joints"][:, par], axis=-1),
                               np.broadcast_to(np.linalg.norm(OFFSETS[1:], axis=-1), (44, 21)), atol=1e-4)
    good, errors = finite_clip_arrays(data, str(out))
    assert len(good) == 2 and errors == []
    # rotations of the fitted skeleton: `mmar metrics` reads a generated file like a converted one
    assert a["rot6d"].shape == (44, 22, 6) and a["sparse"].shape == (44, 54) and a["offsets"].shape == (22, 3)
    from mmar.eval.sparse import metrics_from_npz

    m = metrics_from_npz(str(out), str(out))
    assert m["mpjpe_cm"] == 0.0 and m["mpjre_deg"] == 0.0 and m["jitter_m_s3"] > 0
    gif = tmp_path / "r.gif"
    render_npz(str(out), str(gif), clip="a_person_waves_0", max_frames=2, size=(64, 64))
    with Image.open(gif) as im:
        assert im.n_frames == 2 and im.size == (64, 64)


def test_gif_shows_the_first_four(tmp_path, walk_feats):
    gen = G.generate_motions(fake_run(walk_feats), ["walk", "run", "jump", "wave", "sit"], seconds=2)
    res = G.save_generated(gen, str(tmp_path / "g.npz"), gif=str(tmp_path / "g.gif"), gif_max_frames=3,
                           gif_size=(64, 64))
    assert res["gif_motions"] == 4 and len(res["names"]) == 5
    with Image.open(tmp_path / "g.gif") as im:
        assert im.n_frames == 3 and im.size == (4 * 64, 64)


def _check_bvh_round_trip(joints, tmp_path, name):
    """joints -> features -> 'generated' -> npz + BVH -> read back -> FK: within 1 cm."""
    feats = hf.joints_to_features(joints)
    gen = GeneratedMotions(feats[None, :96], [96], ["a person moves"], 20.0)
    bvh = tmp_path / f"{name}.bvh"
    res = G.save_generated(gen, str(tmp_path / f"{name}.npz"), bvh=str(bvh))
    assert res["bvh"] == [str(bvh)]
    want = load_arrays(str(tmp_path / f"{name}.npz"))["a_person_moves_0"]["joints"]
    got = fk_from_bvh(bvh)
    err = np.linalg.norm(got - want, axis=-1).max()
    assert got.shape == want.shape and err < 0.01, f"{name}: BVH round trip off by {err * 1000:.2f} mm"
    clip = read_bvh(bvh, scale=0.01)
    assert clip.fps == 20.0 and set(clip.skeleton.names) == set(SMPL22_NAMES)
    # rest pose: a T-pose facing +Z (legs down, arms out sideways)
    off = dict(zip(clip.skeleton.names, clip.skeleton.offsets))
    assert off["left_knee"][1] < -0.2 and off["left_elbow"][0] > 0.1 and off["right_elbow"][0] < -0.1
    assert off["left_foot"][2] > 0.05
    return err


def test_bvh_round_trip_synthetic(tmp_path):
    assert _check_bvh_round_trip(walk_joints(120, seed=3), tmp_path, "walk") < 1e-3


def test_bvh_round_trip_real_bandai(tmp_path, bandai_dir):
    assert _check_bvh_round_trip(bandai_joints(bandai_dir), tmp_path, "bandai") < 1e-3


def test_bvh_of_an_imperfect_motion_stays_close():
    """Bone lengths that vary between frames (as in generated motions): the fitted skeleton
    keeps each joint near its target; errors do not pile up along the chains."""
    j = walk_joints(80, seed=1)
    j = j + np.random.default_rng(0).normal(scale=0.003, size=j.shape)
    clip = G.joints_to_bvh_clip(j, 20.0)
    _, pos = gnp.forward_kinematics(clip.local_rot, clip.skeleton.offsets, SMPL22_PARENTS, clip.root_pos)
    err = np.linalg.norm(pos - j, axis=-1)
    assert err.mean() < 0.01 and err.max() < 0.04
    with pytest.raises(MmarError, match="not finite"):
        G.joints_to_bvh_clip(np.full((3, 22, 3), np.nan), 20.0)
    with pytest.raises(MmarError, match=r"\(T, 22, 3\)"):
        G.joints_to_bvh_clip(np.zeros((3, 21, 3)), 20.0)


def test_several_bvh_files_and_a_nonfinite_motion(tmp_path, walk_feats):
    gen = G.generate_motions(fake_run(walk_feats), ["walk", "wave"], seconds=2, num=2)
    gen.features[1, 5, 10] = np.nan
    res = G.save_generated(gen, str(tmp_path / "m.npz"), bvh=str(tmp_path / "m.bvh"))
    assert res["names"] == ["walk_0", "wave_0", "wave_1"] and len(res["skipped"]) == 1
    assert "walk_1" in res["skipped"][0]
    assert res["bvh"] == [str(tmp_path / f"m_{k}.bvh") for k in range(3)]
    assert sorted(load_arrays(str(tmp_path / "m.npz"))) == ["walk_0", "wave_0", "wave_1"]
    gen.features[:] = np.nan
    with pytest.raises(MmarError, match="no motion written"):
        G.save_generated(gen, str(tmp_path / "none.npz"))
    assert not (tmp_path / "none.npz").exists()


def test_kit_motions_npz_only(tmp_path):
    rng = np.random.default_rng(0)
    gen = GeneratedMotions(0.01 * rng.normal(size=(1, 30, 251)), [28], ["a person walks"], 12.5, kind="kit")
    with pytest.raises(ConfigError, match="SMPL-22"):
        G.save_generated(gen, str(tmp_path / "k.npz"), gif=str(tmp_path / "k.gif"))
    assert not (tmp_path / "k.npz").exists()
    G.save_generated(gen, str(tmp_path / "k.npz"))
    a = load_arrays(str(tmp_path / "k.npz"))["a_person_walks_0"]
    assert a["joints"].shape == (28, 21, 3) and float(a["fps"]) == 12.5


# --------------------------------------------------------------------------- the command


def test_cli_generate_end_to_end(tmp_path, monkeypatch, capsys, walk_feats):
    import mmar.run

    run = fake_run(walk_feats)
    monkeypatch.setattr(mmar.run, "load", lambda path, **kw: run)
    out, gif, bvh = tmp_path / "m.npz", tmp_path / "m.gif", tmp_path / "m.bvh"
    rc = cli.main(["generate", "--checkpoint", "runs/fake", "--text", "a person waves with the right hand",
                   "--seconds", "2", "--seed", "3", "--steps", "1,2", "--out", str(out), "--gif", str(gif),
                   "--bvh", str(bvh)])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert res["motions"] == 1 and res["lengths"] == [40] and res["out"] == str(out) and res["bvh"] == [str(bvh)]
    assert res["names"] == ["a_person_waves_with_the_right_hand_0"] and res["sampling_seconds"] == 0.25
    assert run.task.calls[-1]["steps"] == (1, 2) and run.task.calls[-1]["seed"] == 3
    assert out.exists() and bvh.exists() and gif.exists()
    assert np.linalg.norm(fk_from_bvh(bvh) - load_arrays(str(out))[res["names"][0]]["joints"], axis=-1).max() < 0.01

    captions = tmp_path / "captions.txt"
    captions.write_text("a person walks\n\na person jumps\n")
    rc = cli.main(["generate", "--checkpoint", "runs/fake", "--texts", str(captions), "--num", "2",
                   "--batch-size", "3", "--out", str(tmp_path / "t.npz"), "--bvh", str(tmp_path / "t.bvh")])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["motions"] == 4 and res["texts"] == 2 and len(res["bvh"]) == 4
    assert run.task.calls[-1]["texts"] == ["a person walks", "a person jumps"] * 2
    assert sorted(load_arrays(str(tmp_path / "t.npz"))) == ["a_person_jumps_0", "a_person_jumps_1",
                                                             "a_person_walks_0", "a_person_walks_1"]


def test_cli_generate_errors_before_any_work(tmp_path, monkeypatch, capsys, walk_feats):
    import mmar.run

    def no_load(*a, **k):
        raise AssertionError("the run must not be loaded")

    monkeypatch.setattr(mmar.run, "load", no_load)
    base = ["generate", "--checkpoint", "runs/fake"]
    cases = [
        (["--text", "walk", "--seconds", "nan", "--out", str(tmp_path / "a.npz")], "seconds"),
        (["--text", "walk", "--seconds", "-1", "--out", str(tmp_path / "a.npz")], "seconds"),
        (["--text", "  ", "--out", str(tmp_path / "a.npz")], "empty"),
        (["--text", "walk", "--num", "0", "--out", str(tmp_path / "a.npz")], "num"),
        (["--text", "walk", "--out", str(tmp_path)], "is a directory"),
        (["--text", "walk", "--out", str(tmp_path / "a.npz"), "--gif", str(tmp_path / "a.txt")], "animation"),
        (["--texts", str(tmp_path / "none.txt"), "--out", str(tmp_path / "a.npz")], "file not found"),
    ]
    for args, msg in cases:
        assert cli.main(base + args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("mmar generate: error:") and msg in err and err.count("\n") == 1, err
    for args in ([], ["--text", "a", "--texts", "f.txt"]):
        with pytest.raises(SystemExit) as e:
            cli.main(base + args + ["--out", str(tmp_path / "a.npz")])
        assert e.value.code == 2
    capsys.readouterr()
    # a run of another task, and a too long duration: after loading, before sampling
    sparse = types.SimpleNamespace(task=types.SimpleNamespace(), variables={}, workdir="runs/mem",
                                   config=types.SimpleNamespace(task="mem_mlp"), skipped_steps=[])
    monkeypatch.setattr(mmar.run, "load", lambda path, **kw: sparse)
    assert cli.main(base + ["--text", "walk", "--out", str(tmp_path / "a.npz")]) == 2
    assert "task 'mem_mlp' is not a text-to-motion model" in capsys.readouterr().err
    run = fake_run(walk_feats)
    monkeypatch.setattr(mmar.run, "load", lambda path, **kw: run)
    assert cli.main(base + ["--text", "walk", "--seconds", "12", "--out", str(tmp_path / "a.npz")]) == 2
    assert "2 to 9.8 s" in capsys.readouterr().err and run.task.calls == []
    assert not (tmp_path / "a.npz").exists()


def test_output_checks(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="not a directory"):
        G.check_outputs(str(tmp_path / "file" / "x.npz"))
    with pytest.raises(ConfigError, match="bvh_scale"):
        G.check_outputs(None, bvh="x.bvh", bvh_scale=0)
