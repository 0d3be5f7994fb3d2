"""Nearest-neighbour floor: exact on its own training data, invariant to heading and position."""
import numpy as np

from mmar import geometry as g
from mmar.data.clip import Clip, smpl22_skeleton
from mmar.models.nearest import NearestNeighbor

RNG = np.random.default_rng(3)


def random_smpl_clip(T=40, name="c"):
    offsets = RNG.normal(scale=0.15, size=(22, 3)).astype(np.float32)
    # smooth random motion: integrate small random rotation velocities
    aa = np.cumsum(RNG.normal(scale=0.05, size=(T, 22, 3)), 0).astype(np.float32)
    local = np.asarray(g.axis_angle_to_matrix(aa))
    root = np.cumsum(RNG.normal(scale=0.01, size=(T, 3)), 0).astype(np.float32) + [0, 1, 0]
    return Clip(name, smpl22_skeleton(offsets), local, root, 30.0)


def rotate_clip_about_y(clip, angle, shift):
    Ry = np.asarray(g.euler_to_matrix(np.array([angle, 0, 0], np.float32), "YXZ"))
    local = clip.local_rot.copy()
    local[:, 0] = Ry @ local[:, 0]
    return Clip(clip.name, clip.skeleton, local, clip.root_pos @ Ry.T + shift, clip.fps), Ry


def test_exact_on_training_data_and_heading_invariant():
    clips = [random_smpl_clip(name=f"c{i}") for i in range(3)]
    arrays = [c.to_arrays() for c in clips]
    nn = NearestNeighbor().fit([a["sparse"] for a in arrays], [a["rot6d"] for a in arrays])
    a = arrays[1]
    rot, joints = nn.predict(a["sparse"], a["offsets"])
    np.testing.assert_allclose(rot[1:], a["rot6d"][1:], atol=1e-4)
    np.testing.assert_allclose(joints[1:], a["joints"][1:], atol=1e-4)

    moved, Ry = rotate_clip_about_y(clips[1], 1.3, np.array([2.0, 0.0, -1.0], np.float32))
    m = moved.to_arrays()
    np.testing.assert_allclose(m["joints"], a["joints"] @ Ry.T + [2.0, 0.0, -1.0], atol=1e-4)
    _, joints_m = nn.predict(m["sparse"], m["offsets"])
    np.testing.assert_allclose(joints_m[1:], m["joints"][1:], atol=1e-3)


def test_retrieves_from_other_clips_not_itself():
    clips = [random_smpl_clip(name=f"c{i}") for i in range(2)]
    arrays = [c.to_arrays() for c in clips]
    nn = NearestNeighbor(stride=2).fit([arrays[0]["sparse"]], [arrays[0]["rot6d"]])
    rot, joints = nn.predict(arrays[1]["sparse"], arrays[1]["offsets"])
    assert rot.shape == (40, 22, 6) and joints.shape == (40, 22, 3)
    # predictions are rows of the training set (up to the heading rotation of the root)
    train = nn.rot6d[:, 1:].reshape(len(nn.rot6d), -1)
    for t in (5, 20):
        assert np.min(np.abs(train - rot[t, 1:].reshape(-1)).max(-1)) < 1e-6


def test_predict_clips_equals_predict_per_clip():
    clips = [random_smpl_clip(T=30 + 7 * i, name=f"c{i}") for i in range(4)]
    arrays = {c.name: c.to_arrays() for c in clips}
    nn = NearestNeighbor(stride=2, chunk=16).fit([arrays["c0"]["sparse"]], [arrays["c0"]["rot6d"]])
    out = nn.predict_clips({n: arrays[n] for n in ("c1", "c2", "c3")})
    assert list(out) == ["c1", "c2", "c3"] and nn.predict_clips({}) == {}
    for n, p in out.items():
        rot, joints = nn.predict(arrays[n]["sparse"], arrays[n]["offsets"])
        np.testing.assert_array_equal(p["rot6d"], rot)
        np.testing.assert_allclose(p["joints"], joints, atol=1e-6)
        assert p["fps"] == arrays[n]["fps"]
