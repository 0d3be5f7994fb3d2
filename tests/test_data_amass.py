"""AMASS loader: tiny files in the real AMASS / SMPL-H npz formats, FK checked against an
independent numpy implementation of SMPL's joint transforms."""
from __future__ import annotations

import os

import numpy as np
import pytest

from mmar.data import amass
from mmar.data.clip import Clip
from mmar.errors import DataFormatError
from mmar.skeleton import SMPL22_NAMES, SMPL22_PARENTS

SMPLH_PARENTS = list(SMPL22_PARENTS) + [
    20, 22, 23, 20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35,
    21, 37, 38, 21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50,
]
# rough SMPL rest joints (metres, model frame: Y up, facing +Z, left = +X)
BODY_REST = np.array([
    [0.0, 0.0, 0.0], [0.06, -0.09, 0.0], [-0.06, -0.09, 0.0], [0.0, 0.11, 0.0],
    [0.1, -0.47, 0.0], [-0.1, -0.47, 0.0], [0.0, 0.25, 0.0], [0.1, -0.87, -0.04],
    [-0.1, -0.87, -0.04], [0.0, 0.3, 0.02], [0.12, -0.93, 0.08], [-0.12, -0.93, 0.08],
    [0.0, 0.51, -0.01], [0.08, 0.42, -0.01], [-0.08, 0.42, -0.01], [0.0, 0.6, 0.04],
    [0.2, 0.45, -0.03], [-0.2, 0.45, -0.03], [0.46, 0.45, -0.05], [-0.46, 0.45, -0.05],
    [0.71, 0.46, -0.05], [-0.71, 0.46, -0.05],
])
N_VERTS = 2 * 52 + 6  # two vertices per joint plus a few unused ones
T = 8  # one clip length for most tests keeps the number of compiled shapes small


def make_body_model(path, seed=0, sparse=False, num_betas=16):
    """A fake SMPL-H model.npz: the J_regressor averages two vertices per joint."""
    rng = np.random.default_rng(seed)
    joints = np.zeros((52, 3))
    joints[:22] = BODY_REST + [0.0, 0.93, 0.0]
    for j in range(22, 52):
        joints[j] = joints[SMPLH_PARENTS[j]] + rng.normal(0, 0.03, 3)
    v_template = rng.normal(0, 0.05, (N_VERTS, 3))
    j_reg = np.zeros((52, N_VERTS))
    for j in range(52):
        d = rng.normal(0, 0.02, 3)
        v_template[2 * j] = joints[j] + d
        v_template[2 * j + 1] = joints[j] - d
        j_reg[j, 2 * j] = j_reg[j, 2 * j + 1] = 0.5
    shapedirs = rng.normal(0, 0.01, (N_VERTS, 3, num_betas))
    kintree = np.array([[4294967295] + SMPLH_PARENTS[1:], list(range(52))], np.int64)
    arrays = dict(
        v_template=v_template, shapedirs=shapedirs, kintree_table=kintree,
        weights=rng.uniform(size=(N_VERTS, 52)), posedirs=rng.normal(size=(N_VERTS, 3, 459)) * 1e-3,
        f=rng.integers(0, N_VERTS, (20, 3)).astype(np.uint32),
    )
    if sparse:
        scipy_sparse = pytest.importorskip("scipy.sparse")
        arrays["J_regressor"] = np.array(scipy_sparse.csc_matrix(j_reg), dtype=object)
    else:
        arrays["J_regressor"] = j_reg
    np.savez(path, **arrays)
    return arrays, j_reg


def make_amass(path, frames=24, fps=120.0, seed=1, gender="male", drop=None, amp=0.4):
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / fps
    poses = amp * np.sin(2 * np.pi * t * rng.uniform(0.3, 2.0, (1, 156)) + rng.uniform(0, 6, (1, 156)))
    poses[:, :3] += [np.pi / 2, 0.0, 0.3]  # a typical Z-up root orientation
    trans = np.cumsum(rng.normal(0, 0.01, (frames, 3)), 0) + [0.3, -0.2, 0.0]
    arrays = dict(
        poses=poses, trans=trans, betas=rng.normal(0, 1.0, 16), dmpls=rng.normal(0, 1, (frames, 8)),
        gender=np.array(gender), mocap_framerate=np.array(fps),
    )
    for k in drop or ():
        arrays.pop(k)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    np.savez(path, **arrays)
    return arrays


# ------------------------------------------------------------- independent reference

def rodrigues(aa):
    theta = np.linalg.norm(aa)
    if theta < 1e-12:
        return np.eye(3)
    k = aa / theta
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * K @ K


def smpl_joints_reference(model_arrays, j_reg, poses, trans, betas):
    """SMPL joint positions the way SMPL computes them: 4x4 transforms
    A_j = A_parent [R_j | J_j - J_parent], posed joint = trans + A_j[:3, 3]."""
    v_shaped = model_arrays["v_template"] + model_arrays["shapedirs"] @ betas
    J = j_reg @ v_shaped
    out = np.zeros((poses.shape[0], 22, 3))
    for t in range(poses.shape[0]):
        A = [None] * 22
        for j in range(22):
            T = np.eye(4)
            T[:3, :3] = rodrigues(poses[t, 3 * j: 3 * j + 3])
            p = SMPL22_PARENTS[j]
            T[:3, 3] = J[j] if p < 0 else J[j] - J[p]
            A[j] = T if p < 0 else A[p] @ T
            out[t, j] = A[j][:3, 3] + trans[t]
    return out


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "smplh" / "male" / "model.npz"
    path.parent.mkdir(parents=True)
    arrays, j_reg = make_body_model(path)
    return str(path), arrays, j_reg


# ------------------------------------------------------------- tests

def test_body_model_rest_joints(model_file):
    path, arrays, j_reg = model_file
    bm = amass.load_body_model(path)
    assert bm.num_betas == 16 and bm.parents[:22] == SMPL22_PARENTS
    betas = np.linspace(-1, 1, 16)
    want = j_reg @ (arrays["v_template"] + arrays["shapedirs"] @ betas)
    np.testing.assert_allclose(bm.rest_joints(betas), want, atol=1e-12)
    J, off = bm.body_offsets(betas)
    np.testing.assert_allclose(off[1:], J[1:] - J[list(SMPL22_PARENTS[1:])], atol=1e-12)


def test_fk_matches_smpl_reference_z_up(model_file, tmp_path):
    path, arrays, j_reg = model_file
    bm = amass.load_body_model(path)
    f = tmp_path / "CMU" / "01" / "01_01_poses.npz"
    a = make_amass(str(f), frames=T)
    clip = amass.load_amass_clip(str(f), bm, frame="z_up")
    assert isinstance(clip, Clip) and clip.skeleton.names == SMPL22_NAMES
    assert clip.fps == 120.0 and clip.num_frames == T
    want = smpl_joints_reference(arrays, j_reg, a["poses"], a["trans"], a["betas"])
    np.testing.assert_allclose(clip.joints(), want, atol=1e-5)
    # the pelvis is trans + J0 (the root rotation acts about J0)
    J0 = bm.rest_joints(a["betas"])[0]
    np.testing.assert_allclose(clip.root_pos, a["trans"] + J0, atol=1e-6)


@pytest.mark.parametrize("frame", ["swap", "humanml3d"])
def test_y_up_conversion(model_file, tmp_path, frame):
    path, arrays, j_reg = model_file
    bm = amass.load_body_model(path)
    f = tmp_path / "a_poses.npz"
    a = make_amass(str(f), frames=T)
    zup = amass.load_amass_clip(str(f), bm, frame="z_up")
    yup = amass.load_amass_clip(str(f), bm, frame=frame)
    M = amass.FRAMES[frame]
    if frame == "swap":
        np.testing.assert_array_equal(M, [[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    # positions: M @ p, to 1e-5
    np.testing.assert_allclose(yup.joints(), zup.joints() @ M.T, atol=1e-5)
    want = smpl_joints_reference(arrays, j_reg, a["poses"], a["trans"], a["betas"]) @ M.T
    np.testing.assert_allclose(yup.joints(), want, atol=1e-5)
    # global rotations: M R M^T, still proper rotations
    g_z, _ = zup.global_transforms()
    g_y, _ = yup.global_transforms()
    np.testing.assert_allclose(g_y, np.einsum("ab,tjbc,dc->tjad", M, g_z, M), atol=1e-5)
    R = yup.local_rot
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
    # up is +Y: the head is above the pelvis in every frame (the fake root stands up in Z-up)
    assert np.all(yup.joints()[:, 15, 1] > yup.joints()[:, 0, 1])


def test_swap_mirrors_but_humanml3d_frame_keeps_chirality(model_file, tmp_path):
    """left x up = forward for a real body; the swap (a reflection) flips it."""
    path, _, _ = model_file
    bm = amass.load_body_model(path)
    f = tmp_path / "a_poses.npz"
    make_amass(str(f), frames=T, amp=0.0)

    def handedness(clip):
        p = clip.joints()[0]
        left = p[16] - p[17]
        up = p[15] - p[0]
        fwd = p[10] - p[7]  # toe direction of the left foot (model rest feet point +Z)
        return np.sign(np.dot(np.cross(left, up), fwd))

    assert handedness(amass.load_amass_clip(str(f), bm, frame="z_up")) == 1
    assert handedness(amass.load_amass_clip(str(f), bm, frame="humanml3d")) == 1
    assert handedness(amass.load_amass_clip(str(f), bm, frame="swap")) == -1


def test_stride_and_resample(model_file, tmp_path):
    path, arrays, j_reg = model_file
    bm = amass.load_body_model(path)
    f = tmp_path / "a_poses.npz"
    make_amass(str(f), frames=2 * T - 1, fps=120.0)
    full = amass.load_amass_clip(str(f), bm)
    half = amass.load_amass_clip(str(f), bm, fps=60)
    assert half.fps == 60 and half.num_frames == T
    np.testing.assert_allclose(half.local_rot, full.local_rot[::2], atol=1e-7)
    np.testing.assert_allclose(half.root_pos, full.root_pos[::2], atol=1e-7)
    np.testing.assert_allclose(half.skeleton.offsets, full.skeleton.offsets)
    assert amass.load_amass_clip(str(f), bm, fps=120).num_frames == 2 * T - 1
    # non-integer ratio (100 -> 60): slerp through Clip.resample
    g = tmp_path / "b_poses.npz"
    make_amass(str(g), frames=13, fps=100.0)
    src = amass.load_amass_clip(str(g), bm)
    res = amass.load_amass_clip(str(g), bm, fps=60)
    assert res.fps == 60 and res.num_frames == T  # int((13 - 1) * 0.6) + 1
    np.testing.assert_allclose(res.local_rot, src.resample(60).local_rot, atol=1e-6)
    # output frame 3 (t = 0.05 s) falls on source frame 5
    np.testing.assert_allclose(res.local_rot[3], src.local_rot[5], atol=1e-5)
    np.testing.assert_allclose(res.root_pos[3], src.root_pos[5], atol=1e-6)
    # frame 1 (t = 1/60 s) lies 2/3 of the way from source frame 1 to 2
    np.testing.assert_allclose(res.root_pos[1], src.root_pos[1] / 3 + 2 * src.root_pos[2] / 3, atol=1e-6)


def test_betas_and_gender_models(tmp_path):
    male = tmp_path / "m.npz"
    female = tmp_path / "f.npz"
    make_body_model(male, seed=0)
    make_body_model(female, seed=5)
    bms = {"male": amass.load_body_model(male), "female": amass.load_body_model(female)}
    f = tmp_path / "a_poses.npz"
    a = make_amass(str(f), frames=T, gender="female")
    clip = amass.load_amass_clip(str(f), bms)
    ref = amass.load_amass_clip(str(f), bms["female"])
    np.testing.assert_allclose(clip.joints(), ref.joints())
    assert clip.labels["gender"] == "female"
    plain = amass.load_amass_clip(str(f), bms["female"], use_betas=False)
    J0 = bms["female"].rest_joints()[0]
    np.testing.assert_allclose(plain.root_pos, (a["trans"] + J0) @ amass.FRAMES["humanml3d"].T, atol=1e-6)
    with pytest.raises(DataFormatError, match="gender"):
        amass.load_amass_clip(str(f), {"male": bms["male"]})


def test_missing_keys_name_the_file(model_file, tmp_path):
    bm = amass.load_body_model(model_file[0])
    for key in ("poses", "trans", "mocap_framerate"):
        f = tmp_path / f"no_{key}_poses.npz"
        make_amass(str(f), frames=T, drop=[key])
        with pytest.raises(DataFormatError) as e:
            amass.load_amass_clip(str(f), bm)
        assert str(f) in str(e.value) and key in str(e.value)
    f = tmp_path / "nobetas_poses.npz"
    make_amass(str(f), frames=T, drop=["betas"])
    with pytest.raises(DataFormatError, match="betas"):
        amass.load_amass_clip(str(f), bm)
    assert amass.load_amass_clip(str(f), bm, use_betas=False).num_frames == T
    bad = tmp_path / "bad_poses.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match="bad_poses.npz"):
        amass.load_amass_clip(str(bad), bm)
    short = tmp_path / "short_poses.npz"
    np.savez(short, poses=np.zeros((3, 30)), trans=np.zeros((3, 3)), mocap_framerate=120.0)
    with pytest.raises(DataFormatError, match="poses"):
        amass.load_amass_clip(str(short), bm, use_betas=False)


def test_body_model_errors_and_sparse_regressor(tmp_path):
    path = tmp_path / "sparse.npz"
    _, j_reg = make_body_model(path, sparse=True)
    with pytest.raises(DataFormatError, match="allow_pickle"):
        amass.load_body_model(path)
    bm = amass.load_body_model(path, allow_pickle=True)
    dense = tmp_path / "dense.npz"
    make_body_model(dense)
    np.testing.assert_allclose(bm.j_template, amass.load_body_model(dense).j_template)
    missing = tmp_path / "missing.npz"
    np.savez(missing, v_template=np.zeros((4, 3)))
    with pytest.raises(DataFormatError, match="J_regressor"):
        amass.load_body_model(missing)
    with pytest.raises(DataFormatError, match="not found"):
        amass.load_body_model(tmp_path / "nope.npz")
    arrays = dict(np.load(dense))
    arrays["kintree_table"] = arrays["kintree_table"].copy()
    arrays["kintree_table"][0, 5] = 1  # wrong parent for right_knee
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **arrays)
    with pytest.raises(DataFormatError, match="SMPL body tree"):
        amass.load_body_model(wrong)


def test_load_tree_and_split(model_file, tmp_path):
    bm = amass.load_body_model(model_file[0])
    root = tmp_path / "amass"
    rels = []
    for subset, subj, n in [("CMU", "01", 6), ("CMU", "02", 4), ("BMLrub", "rub001", 5),
                            ("MPI_HDM05", "bk", 5), ("HumanEva", "S1", 2)]:
        for i in range(n):
            rel = f"{subset}/{subj}/{subj}_{i:02d}_poses.npz"
            make_amass(str(root / rel), frames=6, fps=120.0 if i % 2 else 60.0, seed=i)
            rels.append(rel)
        np.savez(root / subset / subj / "shape.npz", betas=np.zeros(16), gender=np.array("male"))
    found = amass.find_amass_files(root)
    assert found == sorted(rels) and not any(f.endswith("shape.npz") for f in found)
    assert amass.find_amass_files(root, subsets=["BioMotionLab_NTroje"]) == [r for r in sorted(rels) if r.startswith("BMLrub")]

    clips = amass.load_amass(root, bm, fps=60, subsets=["HumanEva", "MPI_HDM05"], workers=2, progress=False)
    assert [c.name for c in clips] == [f"HumanEva-S1-S1_{i:02d}" for i in range(2)] + [f"MPI_HDM05-bk-bk_{i:02d}" for i in range(5)]
    assert all(c.fps == 60 for c in clips)
    assert [c.num_frames for c in clips[:2]] == [6, 3]  # 60 fps kept, 120 fps strided

    s1 = amass.agrol_s1_split(root)
    assert sorted(s1["train"] + s1["test"]) == sorted(r for r in rels if not r.startswith("HumanEva"))
    assert not set(s1["train"]) & set(s1["test"])
    assert sum(r.startswith("CMU") for r in s1["test"]) == 1  # round(0.1 * 10)
    assert s1 == amass.agrol_s1_split(files=found)  # deterministic
    # published lists in AGRoL's data_split layout
    sd = tmp_path / "data_split"
    for sub, tr, te in [("CMU", rels[:9], rels[9:10]), ("BioMotionLab_NTroje", rels[10:14], rels[14:15]),
                        ("MPI_HDM05", rels[15:19], rels[19:20])]:
        (sd / sub).mkdir(parents=True)
        (sd / sub / "train_split.txt").write_text("\n".join(tr) + "\n")
        (sd / sub / "test_split.txt").write_text("\n".join(te) + "\n")
    pub = amass.agrol_s1_split(split_dir=sd)
    assert pub["test"] == [rels[9], rels[14], rels[19]] and len(pub["train"]) == 17
    test_clips = amass.load_amass(root, bm, files=pub["test"], workers=1, progress=False)
    assert [c.name for c in test_clips] == ["CMU-02-02_03", "BMLrub-rub001-rub001_04", "MPI_HDM05-bk-bk_04"]
