"""Clip type: retargeting to SMPL-22, sparse features, resampling, npz layout."""
import numpy as np
import pytest

from mmar import geometry as g
from mmar.data import clip as C
from mmar.errors import DataFormatError, ShapeError
from mmar.skeleton import SMPL22_NAMES, SMPL22_PARENTS

RNG = np.random.default_rng(1)

# A Bandai-shaped skeleton: joint_Root above Hips, no spine2.
BANDAI_TREE = [
    ("joint_Root", None), ("Hips", "joint_Root"), ("Spine", "Hips"), ("Chest", "Spine"),
    ("Neck", "Chest"), ("Head", "Neck"), ("Shoulder_L", "Chest"), ("UpperArm_L", "Shoulder_L"),
    ("LowerArm_L", "UpperArm_L"), ("Hand_L", "LowerArm_L"), ("Shoulder_R", "Chest"),
    ("UpperArm_R", "Shoulder_R"), ("LowerArm_R", "UpperArm_R"), ("Hand_R", "LowerArm_R"),
    ("UpperLeg_L", "Hips"), ("LowerLeg_L", "UpperLeg_L"), ("Foot_L", "LowerLeg_L"),
    ("Toes_L", "Foot_L"), ("UpperLeg_R", "Hips"), ("LowerLeg_R", "UpperLeg_R"),
    ("Foot_R", "LowerLeg_R"), ("Toes_R", "Foot_R"),
]


def bandai_like_clip(T=12, per_frame_trans=False):
    names = [n for n, _ in BANDAI_TREE]
    parents = [-1 if p is None else names.index(p) for _, p in BANDAI_TREE]
    offsets = RNG.normal(scale=0.2, size=(len(names), 3)).astype(np.float32)
    q = RNG.normal(size=(T, len(names), 4))
    q[..., 0] += 3.0  # moderate rotations
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    local = np.asarray(g.quaternion_to_matrix(q.astype(np.float32)))
    root = RNG.normal(size=(T, 3)).astype(np.float32)
    trans = None
    if per_frame_trans:
        trans = np.broadcast_to(offsets, (T,) + offsets.shape).copy()
        trans[:, 0] = root
    skel = C.Skeleton(names, parents, offsets)
    return C.Clip("dataset-1_walk_normal_001", skel, local, root, 30.0, local_trans=trans,
                  labels={"content": "walk"})


@pytest.mark.parametrize("per_frame_trans", [False, True])
def test_retarget_keeps_mapped_positions_and_rotations(per_frame_trans):
    src = bandai_like_clip(per_frame_trans=per_frame_trans)
    Gs, Ps = src.global_transforms()
    smpl = src.retarget()  # joint map guessed from names
    assert smpl.skeleton.names == SMPL22_NAMES
    Gt, Pt = smpl.global_transforms()
    idx = src.skeleton.index
    for j, spec in enumerate(C.JOINT_MAPS["bandai"]):
        if isinstance(spec, tuple):
            want = 0.5 * (Ps[:, idx(spec[1])] + Ps[:, idx(spec[2])])
            want_rot = Gs[:, idx(spec[1])]
        else:
            want, want_rot = Ps[:, idx(spec)], Gs[:, idx(spec)]
        np.testing.assert_allclose(Pt[:, j], want, atol=1e-5)
        np.testing.assert_allclose(Gt[:, j], want_rot, atol=1e-5)
    assert smpl.labels == src.labels and smpl.fps == 30.0


def test_guess_joint_map_and_register():
    assert C.guess_joint_map([n for n, _ in BANDAI_TREE]) == "bandai"
    with pytest.raises(KeyError):
        C.guess_joint_map(["a", "b"])
    with pytest.raises(ShapeError):
        C.register_joint_map("bad", ["a"] * 3)


def test_sparse_features_layout_and_first_frame_rule():
    smpl = bandai_like_clip(T=10).retarget("bandai")
    G, P = smpl.global_transforms()
    s = np.asarray(C.sparse_features(G, P))
    assert s.shape == (10, 54)
    for k, j in enumerate((15, 20, 21)):
        np.testing.assert_allclose(s[:, k * 6:(k + 1) * 6], g.matrix_to_rot6d(G[:, j]), atol=1e-6)
        np.testing.assert_allclose(s[:, 36 + 3 * k: 39 + 3 * k], P[:, j], atol=1e-6)
        np.testing.assert_allclose(s[1:, 45 + 3 * k: 48 + 3 * k], P[1:, j] - P[:-1, j], atol=1e-5)
        vel = np.asarray(g.rot6d_to_matrix(s[1:, 18 + 6 * k: 24 + 6 * k]))
        np.testing.assert_allclose(G[:-1, j] @ vel, G[1:, j], atol=1e-5)
    # frame 0: identity rotation velocity and zero position difference
    np.testing.assert_allclose(s[0, 18:36], np.tile([1, 0, 0, 0, 1, 0], 3), atol=1e-5)
    np.testing.assert_allclose(s[0, 45:54], 0, atol=1e-7)
    # batched call equals per-clip calls
    sb = np.asarray(C.sparse_features(np.stack([G, G]), np.stack([P, P])))
    np.testing.assert_allclose(sb[1], s, atol=1e-6)


def test_to_arrays_and_npz_round_trip(tmp_path):
    smpl = bandai_like_clip(T=8).retarget("bandai")
    arrays = smpl.to_arrays()
    assert arrays["joints"].shape == (8, 22, 3) and arrays["rot6d"].shape == (8, 22, 6)
    assert arrays["root"].shape == (8, 3) and arrays["sparse"].shape == (8, 54)
    np.testing.assert_allclose(arrays["joints"][:, 0], arrays["root"], atol=1e-6)
    path = tmp_path / "clips.npz"
    C.save_arrays(str(path), {smpl.name: arrays})
    back = C.load_arrays(str(path))
    assert list(back) == [smpl.name]
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[smpl.name][k], v)
    with pytest.raises(ShapeError):
        bandai_like_clip().to_arrays()  # not SMPL-22 yet


def test_load_arrays_errors_and_atomic_save(tmp_path):
    with pytest.raises(DataFormatError, match="not found"):
        C.load_arrays(str(tmp_path / "missing.npz"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(DataFormatError, match="bad.npz"):
        C.load_arrays(str(bad))
    good = tmp_path / "good.npz"
    C.save_arrays(str(good), {"a": {"x": np.zeros(3)}})
    with pytest.raises(ValueError):
        C.save_arrays(str(good), {"a/b": {"x": np.ones(3)}})
    assert np.all(C.load_arrays(str(good))["a"]["x"] == 0)  # survived the failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz", "good.npz"]


def test_resample_and_slice():
    smpl = bandai_like_clip(T=31).retarget("bandai")
    up = smpl.resample(60)
    assert up.num_frames == 61 and up.fps == 60
    np.testing.assert_allclose(up.local_rot[::2], smpl.local_rot, atol=1e-5)
    np.testing.assert_allclose(up.root_pos[::2], smpl.root_pos, atol=1e-6)
    assert smpl.slice(3, 9).num_frames == 6


def test_clip_shape_validation():
    skel = C.smpl22_skeleton(np.zeros((22, 3)))
    with pytest.raises(ShapeError, match="local_rot"):
        C.Clip("x", skel, np.zeros((5, 21, 3, 3)), np.zeros((5, 3)), 30)
    with pytest.raises(ShapeError, match="root_pos"):
        C.Clip("x", skel, np.tile(np.eye(3), (5, 22, 1, 1)), np.zeros((4, 3)), 30)
    with pytest.raises(ShapeError):
        C.Skeleton(("a", "b"), (-1, 1), np.zeros((2, 3)))


def test_save_arrays_mode_interruption_and_stale_temps(tmp_path, monkeypatch):
    """Outputs get the user's umask (not mkstemp's 0600); an interrupted save leaves no
    temporary file; one left by a killed process is removed by the next save."""
    import os
    import subprocess
    import sys

    out = tmp_path / "o.npz"
    old = os.umask(0o022)
    try:
        C.save_arrays(str(out), {"a": {"x": np.zeros(3)}})
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        C.save_arrays(str(out), {"a": {"x": np.ones(3)}})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.npz"]
    assert np.all(C.load_arrays(str(out))["a"]["x"] == 0)
    # a temporary file of a process that no longer exists (killed during a save)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".o.npz.{int(dead.stdout)}.abc.tmp.npz"
    stale.write_bytes(b"x" * 100)
    C.save_arrays(str(out), {"a": {"x": np.ones(3)}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.npz"]


def test_output_checks_and_npz_magic(tmp_path):
    from mmar.data.arrays import check_writable
    from mmar.errors import OutputError

    with pytest.raises(OutputError, match="is a directory"):
        check_writable(str(tmp_path))
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="not a directory"):
        check_writable(str(tmp_path / "file" / "x.npz"))
    check_writable(str(tmp_path / "new" / "dir" / "x.npz"))  # created on save
    with pytest.raises(OutputError, match="is a directory"):
        C.save_arrays(str(tmp_path), {"a": {"x": np.zeros(3)}})
    rnd = tmp_path / "rnd.npz"
    rnd.write_bytes(bytes(range(1, 256)) * 10)
    with pytest.raises(DataFormatError, match=r"not an npz \(zip\) file"):
        C.load_arrays(str(rnd))
    np.save(tmp_path / "arr.npy", np.zeros(3))
    with pytest.raises(DataFormatError, match=r"\.npy array file"):
        C.load_arrays(str(tmp_path / "arr.npy"))
