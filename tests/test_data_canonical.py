"""The canonical rest pose (docs/design.md, "Canonical rest pose"): one motion gives the same
sparse input and joints whatever the skeleton's local axes and rest pose.

Each test re-expresses a clip in other joint frames (``G' = G A_j``: the local axes turned, the
rest pose changed: arms lowered into an A-pose and the whole body turned), writes it with
:func:`mmar.data.bvh.write_bvh`, reads both back and compares the ``mmar convert`` arrays."""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from mmar import geometry_np as gnp
from mmar.data.bandai import BANDAI_TPOSE
from mmar.data.bvh import FILE_FRAMES, read_bvh, rest_alignment, write_bvh
from mmar.data.clip import JOINT_MAPS, Clip, MissingJointsError, Skeleton, clips_to_arrays
from mmar.errors import DataFormatError
from mmar.skeleton import SMPL22_NAMES, SMPL22_PARENTS

REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def reframe(clip: Clip, A: np.ndarray) -> Clip:
    """The same motion with joint j's frame turned by ``A[j]`` (``G' = G A_j``): local
    rotations ``A_p^T L A_j``, offsets and per-frame translations ``A_p^T o``."""
    par = clip.skeleton.parents
    L = clip.local_rot.astype(np.float64)
    out = np.empty_like(L)
    out[:, 0] = L[:, 0] @ A[0]
    off = clip.skeleton.offsets.astype(np.float64).copy()
    trans = None if clip.local_trans is None else clip.local_trans.astype(np.float64).copy()
    for j in range(1, len(par)):
        Ap = A[par[j]]
        out[:, j] = Ap.T @ L[:, j] @ A[j]
        off[j] = Ap.T @ off[j]
        if trans is not None:
            trans[:, j] = trans[:, j] @ Ap  # (A_p^T t)^T
    return Clip(clip.name, Skeleton(clip.skeleton.names, par, off), out, clip.root_pos, clip.fps, local_trans=trans)


def axis_angle(axis, deg) -> np.ndarray:
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    h = np.radians(deg) / 2
    return gnp.quaternion_to_matrix(np.concatenate([[np.cos(h)], np.sin(h) * axis]))


def random_rotation(seed: int) -> np.ndarray:
    return gnp.quaternion_to_matrix(np.random.default_rng(seed).normal(size=4))


def a_pose_frames(names, rest_rot: np.ndarray, forward: np.ndarray, arms: dict[str, int], world: np.ndarray,
                  degrees: float = 40.0) -> np.ndarray:
    """``A_j`` whose zero pose is the rest pose (global rotations ``rest_rot``) with the arms
    lowered by ``degrees`` in the body's frontal plane (about ``forward``; ``arms``: joint ->
    +1 left, -1 right) and the whole body turned by ``world^T``."""
    A = np.empty((len(names), 3, 3))
    for j, n in enumerate(names):
        S = axis_angle(forward, -arms[n] * degrees) if n in arms else np.eye(3)
        A[j] = rest_rot[j].T @ S.T @ world
    return A


def compare(a: Clip, b: Clip, joint_map: str, atol: float = 1e-4) -> None:
    ra, rb = clips_to_arrays([a.retarget(joint_map), b.retarget(joint_map)])
    np.testing.assert_allclose(rb["joints"], ra["joints"], atol=atol)
    np.testing.assert_allclose(rb["sparse"], ra["sparse"], atol=atol)
    np.testing.assert_allclose(rb["rot6d"], ra["rot6d"], atol=atol)
    np.testing.assert_allclose(rb["offsets"], ra["offsets"], atol=atol)


def declared_rotations(names, parents, pose) -> np.ndarray:
    rot = np.tile(np.eye(3), (len(names), 1, 1))
    for j, n in enumerate(names):
        if n in pose:
            x, y = (gnp.axis_vector(v) for v in pose[n])
            rot[j] = np.stack([x, y, np.cross(x, y)], -1)
        elif parents[j] >= 0:
            rot[j] = rot[parents[j]]
    return rot


def chest_forward(clip: Clip, joint_map: str, rest_rot: np.ndarray) -> np.ndarray:
    """The canonical forward axis of spine3 in the rest pose (world)."""
    mapping = JOINT_MAPS[joint_map]
    al = rest_alignment(clip.skeleton.names, clip.skeleton.parents, clip.skeleton.offsets, mapping)
    spec = mapping[9]
    src = clip.skeleton.index(spec if isinstance(spec, str) else spec[1])
    return (rest_rot[src] @ al.rotations[9])[:, 2]


# --------------------------------------------------------------------------
# a synthetic Mixamo-style skeleton (T-pose rest, world-aligned frames)
# --------------------------------------------------------------------------

MIXAMO = [  # name, parent, offset in cm
    ("Hips", None, (0, 95, 0)), ("Spine", "Hips", (0, 9, 1)), ("Spine1", "Spine", (0, 11, 0)),
    ("Spine2", "Spine1", (0, 12, -1)), ("Neck", "Spine2", (0, 15, -1)), ("Head", "Neck", (0, 9, 2)),
    ("LeftShoulder", "Spine2", (6, 12, -1)), ("LeftArm", "LeftShoulder", (12, 0, 0)),
    ("LeftForeArm", "LeftArm", (27, 0, 0)), ("LeftHand", "LeftForeArm", (25, 0, 0)),
    ("RightShoulder", "Spine2", (-6, 12, -1)), ("RightArm", "RightShoulder", (-12, 0, 0)),
    ("RightForeArm", "RightArm", (-27, 0, 0)), ("RightHand", "RightForeArm", (-25, 0, 0)),
    ("LeftUpLeg", "Hips", (9, -6, 0)), ("LeftLeg", "LeftUpLeg", (0, -42, 1)), ("LeftFoot", "LeftLeg", (0, -41, -2)),
    ("LeftToeBase", "LeftFoot", (0, -6, 13)), ("RightUpLeg", "Hips", (-9, -6, 0)),
    ("RightLeg", "RightUpLeg", (0, -42, 1)), ("RightFoot", "RightLeg", (0, -41, -2)),
    ("RightToeBase", "RightFoot", (0, -6, 13)),
]


def mixamo_clip(T: int = 40, seed: int = 0) -> Clip:
    names = [f"mixamorig:{n}" for n, _, _ in MIXAMO]
    parents = [-1 if p is None else [n for n, _, _ in MIXAMO].index(p) for _, p, _ in MIXAMO]
    offsets = np.array([o for _, _, o in MIXAMO], np.float64) * 0.01
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(T, len(names), 4))
    q[..., 0] += 2.5
    local = gnp.quaternion_to_matrix(q)
    root = np.cumsum(rng.normal(scale=0.01, size=(T, 3)), 0) + [0, 0.95, 0]
    return Clip("mixamo_take", Skeleton(names, parents, offsets), local, root, 30.0)


def test_same_motion_same_input_mixamo_t_pose_vs_rotated_a_pose(tmp_path):
    a = mixamo_clip()
    names = a.skeleton.names
    assert rest_alignment(names, a.skeleton.parents, a.skeleton.offsets, JOINT_MAPS["mixamo"]).rest == "zero pose"
    rest = np.tile(np.eye(3), (len(names), 1, 1))
    arms = {f"mixamorig:{s}{n}": (1 if s == "Left" else -1) for s in ("Left", "Right")
            for n in ("Arm", "ForeArm", "Hand")}
    A = a_pose_frames(names, rest, chest_forward(a, "mixamo", rest), arms, random_rotation(3))
    write_bvh(a, tmp_path / "t_pose.bvh", scale=0.01)
    write_bvh(reframe(a, A), tmp_path / "a_pose.bvh", order="XYZ", scale=0.01)
    ta, tb = read_bvh(tmp_path / "t_pose.bvh", scale=0.01), read_bvh(tmp_path / "a_pose.bvh", scale=0.01)
    # the local axes really differ, and the rest poses too
    assert np.abs(tb.local_rot - ta.local_rot).max() > 0.5
    assert np.abs(tb.skeleton.offsets - ta.skeleton.offsets).max() > 0.1
    compare(ta, tb, "mixamo")
    # the zero-rotation pose of the second file is the A-pose, turned: still a standing pose
    assert rest_alignment(names, tb.skeleton.parents, tb.skeleton.offsets, JOINT_MAPS["mixamo"]).rest == "zero pose"


def test_canonical_frames_are_the_t_pose():
    """A skeleton standing in the canonical T-pose gets identity canonical rotations."""
    a = mixamo_clip(T=2)
    a.local_rot[:] = np.eye(3)
    smpl = a.retarget("mixamo")
    G, _ = smpl.global_transforms()
    ang = gnp.rotation_between_frames(np.eye(3), G[0])
    # each canonical frame follows its own bone: this skeleton's spine leans by up to 5 degrees,
    # its neck and head by 12.5, its feet point 25 degrees down; the rest is within 3 degrees
    np.testing.assert_allclose(ang[[7, 8, 10, 11]], np.degrees(np.arctan2(6, 13)), atol=0.01)
    np.testing.assert_allclose(ang[[12, 15]], np.degrees(np.arctan2(2, 9)), atol=0.01)
    assert np.delete(ang, [7, 8, 10, 11, 12, 15]).max() < 5.0
    off = smpl.skeleton.offsets
    assert off[4, 1] < -0.4 and off[6, 1] > 0.1 and off[18, 0] > 0.2 and off[19, 0] < -0.2 and off[10, 2] > 0.1


# --------------------------------------------------------------------------
# real Bandai clip (its bones run along local X; the zero pose is no body pose)
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bandai_bvh(bandai_dir, tmp_path_factory):
    archive = bandai_dir / "Bandai-Namco-Research-Motiondataset-1.tar.xz"
    with tarfile.open(archive, "r|xz") as tf:
        for m in tf:
            if m.name.endswith(".bvh"):
                data, name = tf.extractfile(m).read(), m.name.rsplit("/", 1)[-1]
                break
    p = tmp_path_factory.mktemp("bandai") / name
    p.write_bytes(data)
    return p


@pytest.mark.data
def test_same_motion_same_input_bandai_vs_rotated_frames(bandai_bvh, tmp_path):
    a = read_bvh(bandai_bvh, scale=0.01)
    sk = a.skeleton
    al = rest_alignment(sk.names, sk.parents, sk.offsets, JOINT_MAPS["bandai"])
    assert al.rest == "declared T-pose of 'bandai'"
    D = declared_rotations(sk.names, sk.parents, BANDAI_TPOSE)
    arms = {f"{n}_{s}": (1 if s == "L" else -1) for s in "LR" for n in ("UpperArm", "LowerArm", "Hand")}
    A = a_pose_frames(sk.names, D, chest_forward(a, "bandai", D), arms, random_rotation(7))
    b_path = tmp_path / "rotated.bvh"
    write_bvh(reframe(a, A), b_path, order="YXZ", scale=0.01)
    b = read_bvh(b_path, scale=0.01)
    assert np.abs(b.skeleton.offsets - sk.offsets).max() > 0.1  # other local axes, another rest pose
    assert rest_alignment(sk.names, b.skeleton.parents, b.skeleton.offsets, JOINT_MAPS["bandai"]).rest == "zero pose"
    compare(a, b, "bandai")


@pytest.mark.data
def test_bandai_canonical_skeleton_points_along_the_t_pose(bandai_bvh):
    """With the declared T-pose, the SMPL-22 offsets of a Bandai clip run along the canonical
    directions (spine up, legs down, arms out, feet forward) and a standing frame's canonical
    rotations are near the identity for the trunk and head."""
    smpl = read_bvh(bandai_bvh, scale=0.01).retarget()
    off = smpl.skeleton.offsets
    unit = off / np.maximum(np.linalg.norm(off, axis=-1, keepdims=True), 1e-9)
    for j, d in [(3, "+Y"), (6, "+Y"), (9, "+Y"), (12, "+Y"), (15, "+Y"), (4, "-Y"), (5, "-Y"), (7, "-Y"),
                 (8, "-Y"), (10, "+Z"), (11, "+Z"), (16, "+X"), (17, "-X"), (18, "+X"), (19, "-X"), (20, "+X"),
                 (21, "-X")]:
        assert unit[j] @ gnp.axis_vector(d) > np.cos(np.radians(10)), (SMPL22_NAMES[j], unit[j])
    G, _ = smpl.global_transforms()
    pelvis = G[0, 0]
    for j, limit in [(3, 20.0), (6, 20.0), (9, 20.0), (12, 45.0), (15, 45.0)]:
        assert gnp.rotation_between_frames(pelvis, G[0, j]) < limit, SMPL22_NAMES[j]


# --------------------------------------------------------------------------
# the same HDM05 motion as ASF/AMC and as a BVH with other joint frames
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hdm05_clip(tmp_path_factory):
    from mmar.data.asf import read_asf_amc

    archive = REPO_ROOT.parent / "shared" / "data" / "hdm05-sample" / "HDM05-bk.tar.xz"
    if not archive.is_file():
        pytest.skip(f"HDM05 sample not found at {archive}")
    out = tmp_path_factory.mktemp("hdm05")
    names = ("HDM05-bk/HDM_bk.asf", "HDM05-bk/HDM_bk_hopBothLegs1hops_020_120.amc")
    with tarfile.open(archive, "r:xz") as tf:
        for n in names:
            (out / Path(n).name).write_bytes(tf.extractfile(n).read())
    return read_asf_amc(out / "HDM_bk.asf", out / Path(names[1]).name)


@pytest.mark.data
def test_same_motion_same_input_asf_vs_bvh(hdm05_clip, tmp_path):
    a = hdm05_clip
    names = a.skeleton.names
    rest = np.tile(np.eye(3), (len(names), 1, 1))  # ASF joint frames are the world axes at rest
    arms = {f"{s}{n}": (1 if s == "l" else -1) for s in "lr"
            for n in ("humerus", "radius", "wrist", "hand", "fingers", "thumb")}
    A = a_pose_frames(names, rest, chest_forward(a, "cmu_asf", rest), arms, random_rotation(11))
    path = tmp_path / "hdm05_rotated.bvh"
    write_bvh(reframe(a, A), path, order="ZYX", scale=0.01)
    b = read_bvh(path, scale=0.01)
    assert b.fps == 120.0
    compare(a, b, "cmu_asf")


# --------------------------------------------------------------------------
# skeletons whose rest pose is not recognised; SMPL-22 files; missing joints
# --------------------------------------------------------------------------

def test_unrecognised_rest_pose_keeps_file_frames_with_a_warning():
    a = mixamo_clip(T=5)
    # bend the rest pose: a zero pose with the legs pointing up is no standing pose
    off = a.skeleton.offsets.copy()
    for j, n in enumerate(a.skeleton.names):
        if "Leg" in n or "Foot" in n or "Toe" in n:
            off[j, 1] = -off[j, 1]
    odd = Clip(a.name, Skeleton(a.skeleton.names, a.skeleton.parents, off), a.local_rot, a.root_pos, a.fps)
    al = rest_alignment(odd.skeleton.names, odd.skeleton.parents, off, JOINT_MAPS["mixamo"])
    assert al.rest == FILE_FRAMES and "zero pose" in al.reason and "degrees from its T-pose" in al.reason
    with pytest.warns(UserWarning, match="not recognised as a standing T- or A-pose"):
        kept = odd.retarget("mixamo")
    Gs, _ = odd.global_transforms()
    Gt, _ = kept.global_transforms()
    np.testing.assert_allclose(Gt[:, 0], Gs[:, 0], atol=1e-5)  # the file's frames, unchanged
    with pytest.raises(DataFormatError, match="not recognised"):
        odd.retarget("mixamo", canonical=True)
    plain = a.retarget("mixamo", canonical=False)
    np.testing.assert_allclose(plain.global_transforms()[0][:, 16], a.global_transforms()[0][:, 7], atol=1e-5)


def test_smpl22_files_are_canonical_as_they_are():
    rng = np.random.default_rng(2)
    offsets = rng.uniform(-0.2, 0.2, (22, 3))
    offsets[0] = 0
    q = rng.normal(size=(4, 22, 4))
    c = Clip("s", Skeleton(SMPL22_NAMES, SMPL22_PARENTS, offsets), gnp.quaternion_to_matrix(q), np.zeros((4, 3)), 30.0)
    out = c.retarget()
    np.testing.assert_allclose(out.local_rot, c.local_rot, atol=1e-5)
    np.testing.assert_allclose(out.skeleton.offsets, offsets, atol=1e-6)


def test_missing_joint_is_named_with_the_file(tmp_path):
    a = mixamo_clip(T=3)
    keep = [j for j, n in enumerate(a.skeleton.names) if n != "mixamorig:LeftHand"]
    sk = Skeleton([a.skeleton.names[j] for j in keep], [keep.index(a.skeleton.parents[j]) if j else -1 for j in keep],
                  a.skeleton.offsets[keep])
    clip = Clip(a.name, sk, a.local_rot[:, keep], a.root_pos, a.fps, source=str(tmp_path / "x.bvh"))
    with pytest.raises(MissingJointsError, match=r"x\.bvh: joint map 'mixamo' needs joints? the skeleton lacks: "
                                                  r"'mixamorig:LeftHand'"):
        clip.retarget("mixamo")


def test_frame_from_directions():
    R, s = gnp.frame_from_directions(np.array([0, -2.0, 0.1]), np.array([0.3, 0, 1.0]), "-Y", "+Z")
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(R @ [0, -1, 0], np.array([0, -2.0, 0.1]) / np.hypot(2.0, 0.1), atol=1e-12)
    assert (R @ [0, 0, 1])[2] > 0.95 and s > 0.9
    _, s = gnp.frame_from_directions(np.array([1.0, 0, 0]), np.array([2.0, 0, 0]), "+X", "+Z")
    assert s == 0.0  # parallel: degenerate, the caller refuses it
    with pytest.raises(ValueError, match="orthogonal"):
        gnp.frame_from_directions(np.ones(3), np.ones(3), "+X", "-X")
    assert gnp.rotation_between_frames(np.eye(3), axis_angle([0, 1, 0], 30)) == pytest.approx(30.0)
