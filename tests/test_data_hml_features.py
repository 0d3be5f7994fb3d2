"""HumanML3D features: a loop-by-loop re-implementation of the published processing as a
reference, exact round trips, KIT, normalisation, and a real Bandai Namco clip."""
from __future__ import annotations

import os
import tarfile

import numpy as np
import pytest

from mmar import geometry
from mmar import geometry_np as gnp
from mmar.data import hml_features as hf
from mmar.data.clip import Clip, Skeleton
from mmar.errors import DataFormatError, ShapeError
from mmar.skeleton import SMPL22_PARENTS



# rough SMPL rest offsets (Y up, facing +Z, left = +X)
SMPL_OFFSETS = np.array([
    [0, 0, 0], [0.06, -0.09, 0], [-0.06, -0.09, 0], [0, 0.11, 0], [0.04, -0.38, 0],
    [-0.04, -0.38, 0], [0, 0.14, 0], [0, -0.40, -0.04], [0, -0.40, -0.04], [0, 0.05, 0.02],
    [0.02, -0.06, 0.12], [-0.02, -0.06, 0.12], [0, 0.21, -0.03], [0.08, 0.12, -0.01],
    [-0.08, 0.12, -0.01], [0, 0.09, 0.05], [0.12, 0.03, -0.02], [-0.12, 0.03, -0.02],
    [0.26, 0, -0.02], [-0.26, 0, -0.02], [0.25, 0.01, 0], [-0.25, 0.01, 0],
])


def _rodrigues(aa):
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)[..., None]
    k = aa / np.maximum(np.linalg.norm(aa, axis=-1, keepdims=True), 1e-12)
    K = np.zeros(aa.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    K = K - np.swapaxes(K, -1, -2)
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * K @ K


def synthetic_joints(T=90, seed=0, spin=1.5 * np.pi, offsets=SMPL_OFFSETS, parents=SMPL22_PARENTS):
    """A body that walks on a curve while turning ``spin`` radians (numpy FK, no compiles)."""
    rng = np.random.default_rng(seed)
    J = len(parents)
    t = np.arange(T) / 20.0
    aa = 0.3 * np.sin(t[:, None, None] * rng.uniform(0.5, 3, (1, J, 3)) + rng.uniform(0, 6, (1, J, 3)))
    yaw = np.linspace(0, spin, T) + 0.4
    aa[:, 0] = np.stack([0.1 * np.sin(t), np.zeros(T), np.zeros(T)], -1)
    R = _rodrigues(aa)
    R[:, 0] = _rodrigues(np.stack([np.zeros(T), yaw, np.zeros(T)], -1)) @ R[:, 0]
    root = np.stack([np.cumsum(0.02 * np.cos(yaw)), 0.95 + 0.02 * np.sin(3 * t),
                     np.cumsum(0.02 * np.sin(yaw))], -1) + [1.0, 0.1, -2.0]
    G = [R[:, 0]]
    p = [root]
    for j in range(1, J):
        G.append(G[parents[j]] @ R[:, j])
        p.append(p[parents[j]] + G[parents[j]] @ np.asarray(offsets[j], np.float64))
    return np.stack(p, 1)


# --------------------------------------------------------- reference (published structure)

def q_mul(a, b):
    w1, x1, y1, z1 = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    w2, x2, y2, z2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], -1)


def q_inv(q):
    return np.concatenate([q[..., :1], -q[..., 1:]], -1)


def q_rot(q, v):
    q = np.broadcast_to(q, v.shape[:-1] + (4,))
    vq = np.concatenate([np.zeros(v.shape[:-1] + (1,)), v], -1)
    return q_mul(q_mul(q, vq), q_inv(q))[..., 1:]


def q_between(a, b):
    v = np.cross(a, b)
    w = np.sqrt((a ** 2).sum(-1, keepdims=True) * (b ** 2).sum(-1, keepdims=True)) + (a * b).sum(-1, keepdims=True)
    q = np.concatenate([w, v], -1)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def reference_features(positions, spec, thr):
    from scipy.ndimage import gaussian_filter1d

    p = positions.copy()
    p[:, :, 1] -= p.min(axis=0).min(axis=0)[1]
    init = p[0]
    p = p - init[0] * np.array([1, 0, 1])
    r_hip, l_hip, sdr_r, sdr_l = spec.face_joints
    across = (init[r_hip] - init[l_hip]) + (init[sdr_r] - init[sdr_l])
    across = across / np.linalg.norm(across)
    fwd = np.cross(np.array([0, 1, 0]), across)
    fwd = fwd / np.linalg.norm(fwd)
    p = q_rot(q_between(fwd, np.array([0.0, 0, 1])), p)
    glob = p.copy()
    fl, fr = list(spec.feet_left), list(spec.feet_right)
    feet_l = (((glob[1:, fl] - glob[:-1, fl]) ** 2).sum(-1) < thr).astype(np.float32)
    feet_r = (((glob[1:, fr] - glob[:-1, fr]) ** 2).sum(-1) < thr).astype(np.float32)
    # IK, the published loops (note the swapped unpacking of the face joints)
    l_h, r_h, s_r, s_l = spec.face_joints
    acr = (glob[:, r_h] - glob[:, l_h]) + (glob[:, s_r] - glob[:, s_l])
    acr = acr / np.linalg.norm(acr, axis=-1, keepdims=True)
    forward = np.cross(np.array([[0, 1, 0]]), acr, axis=-1)
    forward = gaussian_filter1d(forward, 20, axis=0, mode="nearest")
    forward = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    root_quat = q_between(forward, np.array([[0.0, 0, 1]]).repeat(len(forward), 0))
    quat = np.zeros(glob.shape[:-1] + (4,))
    quat[:, 0] = root_quat
    for chain in spec.chains:
        R = root_quat
        for j in range(len(chain) - 1):
            u = spec.raw_offsets[chain[j + 1]][None].repeat(len(glob), 0)
            v = glob[:, chain[j + 1]] - glob[:, chain[j]]
            v = v / np.linalg.norm(v, axis=-1, keepdims=True)
            R_loc = q_mul(q_inv(R), q_between(u, v))
            quat[:, chain[j + 1]] = R_loc
            R = q_mul(R, R_loc)
    w, x, y, z = np.moveaxis(quat, -1, 0)
    c0 = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y + w * z), 2 * (x * z - w * y)], -1)
    c1 = np.stack([2 * (x * y - w * z), 1 - 2 * (x * x + z * z), 2 * (y * z + w * x)], -1)
    cont6d = np.concatenate([c0, c1], -1)
    r_rot = quat[:, 0].copy()
    vel = q_rot(r_rot[1:], glob[1:, 0] - glob[:-1, 0])
    r_vel = q_mul(r_rot[1:], q_inv(r_rot[:-1]))
    ric = glob.copy()
    ric[..., 0] -= ric[:, 0:1, 0]
    ric[..., 2] -= ric[:, 0:1, 2]
    ric = q_rot(np.repeat(r_rot[:, None], glob.shape[1], 1), ric)
    T = len(glob)
    local_vel = q_rot(np.repeat(r_rot[:-1, None], glob.shape[1], 1), glob[1:] - glob[:-1])
    return np.concatenate([
        np.arcsin(r_vel[:, 2:3]), vel[:, [0, 2]], ric[:-1, 0, 1:2], ric[:-1, 1:].reshape(T - 1, -1),
        cont6d[:-1, 1:].reshape(T - 1, -1), local_vel.reshape(T - 1, -1), feet_l, feet_r,
    ], -1)


# --------------------------------------------------------- tests

def test_dims_and_slices():
    assert hf.feature_dim(22) == 263 and hf.feature_dim(21) == 251
    sl = hf.feature_slices(22)
    sizes = {k: s.stop - s.start for k, s in sl.items()}
    assert sizes == {"root_rot_vel": 1, "root_lin_vel": 2, "root_y": 1, "ric": 63, "rot": 126,
                     "vel": 66, "contacts": 4}
    assert sl["contacts"].stop == 263
    assert hf.HUMANML3D.parents == SMPL22_PARENTS


def test_gaussian_smooth_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(0).normal(size=(37, 3))
    np.testing.assert_allclose(hf.gaussian_smooth(x, 20), ndimage.gaussian_filter1d(x, 20, axis=0, mode="nearest"),
                               atol=1e-12)


def test_matches_published_processing_loop_by_loop():
    pytest.importorskip("scipy.ndimage")
    p = synthetic_joints(T=70, spin=0.8 * np.pi)  # turns, but no +-180 crossing
    ref = reference_features(p, hf.HUMANML3D, 0.002)
    for fix in (True, False):
        got = hf.joints_to_features(p, fix_facing_wrap=fix)
        assert got.shape == (69, 263) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=2e-5)


def test_facing_wrap_fix():
    p = synthetic_joints(T=90, spin=1.5 * np.pi)
    feats, implied = hf.joints_to_features(p, return_positions=True)
    rec = np.asarray(hf.recover_from_ric(feats))
    assert rec.shape == (89, 22, 3)
    assert np.abs(rec - implied[:-1]).max() < 1e-4
    # the published arcsin picks the wrong sign when the heading crosses +-180 degrees
    raw, implied2 = hf.joints_to_features(p, return_positions=True, fix_facing_wrap=False)
    differ = np.flatnonzero(raw[:, 0] != feats[:, 0])
    assert 1 <= len(differ) <= 3
    np.testing.assert_allclose(np.delete(raw, differ, 0), np.delete(feats, differ, 0))
    assert np.abs(np.asarray(hf.recover_from_ric(raw)) - implied2[:-1]).max() > 0.05
    pytest.importorskip("scipy.ndimage")
    np.testing.assert_allclose(raw, reference_features(p, hf.HUMANML3D, 0.002), atol=2e-5)


def test_normalisation_steps_and_contacts():
    p = synthetic_joints(T=40, spin=np.pi / 2)
    feats, implied = hf.joints_to_features(p, return_positions=True)
    assert implied[..., 1].min() == pytest.approx(0.0, abs=1e-6)  # on the floor
    np.testing.assert_allclose(implied[0, 0, [0, 2]], 0.0, atol=1e-6)  # root XZ at origin
    # frame 0 faces (nearly) Z+: across = r - l points to -X
    across = (implied[0, 2] - implied[0, 1]) + (implied[0, 17] - implied[0, 16])
    assert across[0] < 0 and abs(across[2]) < 0.35 * abs(across[0])
    # a body that stands still has every foot in contact; translated bodies give equal features
    still = np.repeat(p[:1], 10, 0)
    f = hf.joints_to_features(still)
    np.testing.assert_array_equal(f[:, -4:], 1.0)
    np.testing.assert_allclose(hf.joints_to_features(p + [3.0, 1.0, -5.0]), feats, atol=1e-5)


def test_uniform_skeleton():
    p = synthetic_joints(T=20, spin=0.5)
    target = hf.target_offsets_from_joints(synthetic_joints(T=1 + 1, seed=3)[0] * 1.3)
    out = hf.uniform_skeleton(p, target)
    par = np.array(SMPL22_PARENTS[1:])
    lengths = np.linalg.norm(out[:, 1:] - out[:, par], axis=-1)
    np.testing.assert_allclose(lengths, np.broadcast_to(np.linalg.norm(target[1:], axis=-1), lengths.shape), atol=1e-9)
    d_in = (p[:, 1:] - p[:, par]) / np.linalg.norm(p[:, 1:] - p[:, par], axis=-1, keepdims=True)
    d_out = (out[:, 1:] - out[:, par]) / lengths[..., None]
    np.testing.assert_allclose(d_out, d_in, atol=1e-9)
    np.testing.assert_allclose(out[:, 0], p[:, 0] * 1.3, atol=1e-9)  # leg ratio
    feats, implied = hf.joints_to_features(p, target_offsets=target, return_positions=True)
    np.testing.assert_allclose(np.asarray(hf.recover_from_ric(feats)), implied[:-1], atol=1e-4)


def test_kit_round_trip():
    spec = hf.KIT
    lengths = np.linspace(0.08, 0.3, 21)
    offsets = spec.raw_offsets * lengths[:, None]
    p = synthetic_joints(T=30, spin=2.5 * np.pi, offsets=offsets, parents=spec.parents)
    feats, implied = hf.joints_to_features(p, kind="kit", return_positions=True)
    assert feats.shape == (29, 251)
    np.testing.assert_allclose(np.asarray(hf.recover_from_ric(feats, 21)), implied[:-1], atol=1e-4)
    with pytest.raises(ShapeError):
        hf.recover_from_ric(feats, 22)


def test_recover_batched_and_rotations():
    p = synthetic_joints(T=30, spin=0.0)
    feats, implied = hf.joints_to_features(p, return_positions=True)
    batch = np.stack([feats, feats])
    rec = np.asarray(hf.recover_from_ric(batch))
    assert rec.shape == (2, 29, 22, 3)
    np.testing.assert_allclose(rec[1], implied[:-1], atol=1e-4)
    local, glob = hf.recover_rotations(feats)
    assert local.shape == (29, 22, 3, 3) and glob.shape == (29, 22, 3, 3)
    # composed bone rotations map the raw offset directions onto the bones, up to one constant
    # yaw (twice the frame-0 IK heading, see recover_rotations)
    par = np.array(SMPL22_PARENTS[1:])
    bones = implied[:-1, 1:] - implied[:-1, par]
    bones /= np.linalg.norm(bones, axis=-1, keepdims=True)
    mapped = np.einsum("tjab,jb->tja", np.asarray(glob)[:, 1:], hf.HUMANML3D.raw_offsets[1:])
    phi = np.arctan2(np.sum(bones[..., 2] * mapped[..., 0] - bones[..., 0] * mapped[..., 2]),
                     np.sum(bones[..., 0] * mapped[..., 0] + bones[..., 2] * mapped[..., 2]))
    Ry = _rodrigues(np.array([0.0, phi, 0.0]))
    np.testing.assert_allclose(mapped, bones @ Ry.T, atol=1e-4)
    exact = hf.bone_rotations(implied[:-1])
    np.testing.assert_allclose(np.einsum("tjab,jb->tja", exact[:, 1:], hf.HUMANML3D.raw_offsets[1:]),
                               bones, atol=1e-6)


def test_normalizer(tmp_path):
    rng = np.random.default_rng(0)
    data = [rng.normal(size=(30, 263)) * np.linspace(0.1, 3, 263) + 5, rng.normal(size=(20, 263))]
    n = hf.Normalizer.from_data(data)
    sl = hf.feature_slices(22)
    for s in sl.values():
        assert np.allclose(n.std[s], n.std[s][0])  # one std per feature group
    n5 = hf.Normalizer.from_data(data, feat_bias=5.0)
    np.testing.assert_allclose(n5.std[sl["root_y"]], n.std[sl["root_y"]] / 5, rtol=1e-6)
    np.testing.assert_allclose(n5.std[sl["ric"]], n.std[sl["ric"]], rtol=1e-6)
    plain = hf.Normalizer.from_data(np.concatenate(data), group=False)
    np.testing.assert_allclose(plain.std, np.concatenate(data).std(0), rtol=1e-5)
    x = data[0].astype(np.float32)
    np.testing.assert_allclose(n.denormalize(n.normalize(x)), x, atol=1e-4)
    np.testing.assert_allclose(np.asarray(n.normalize(__import__("jax").numpy.asarray(x))), n.normalize(x), atol=1e-5)
    n.save(str(tmp_path))
    m = hf.Normalizer.load(str(tmp_path))
    np.testing.assert_array_equal(m.mean, n.mean)
    with pytest.raises(DataFormatError, match="Mean.npy"):
        hf.Normalizer.load(str(tmp_path / "nowhere"))


# --------------------------------------------------------- real data

def _read_first_bvh(archive: str, contains: str = ""):
    with tarfile.open(archive, "r:xz") as tar:
        for m in tar:
            if m.name.endswith(".bvh") and contains in m.name:
                return m.name, tar.extractfile(m).read().decode("utf-8")
    raise FileNotFoundError(archive)


def _bvh_to_clip(name: str, text: str) -> Clip:
    """The project's BVH reader when present, else the minimal one below."""
    try:
        from mmar.data.bvh import parse_bvh
    except ImportError:
        return _bvh_clip(name, text)
    return parse_bvh(text, path=name, scale=0.01)


def _bvh_clip(name: str, text: str) -> Clip:
    """Minimal BVH reader for the Bandai files (6 channels per joint, ZXY Euler, cm)."""
    tokens = text.split()
    names, parents, offsets, channels = [], [], [], []
    stack, i, last = [], 0, -1
    while tokens[i] != "MOTION":
        tok = tokens[i]
        if tok in ("ROOT", "JOINT"):
            names.append(tokens[i + 1])
            parents.append(stack[-1] if stack else -1)
            last = len(names) - 1
            i += 2
        elif tok == "End":
            last = None
            i += 2
        elif tok == "{":
            stack.append(last)
            i += 1
        elif tok == "}":
            stack.pop()
            i += 1
        elif tok == "OFFSET":
            if last is not None:
                offsets.append([float(t) for t in tokens[i + 1 : i + 4]])
            i += 4
        elif tok == "CHANNELS":
            n = int(tokens[i + 1])
            channels.append(tokens[i + 2 : i + 2 + n])
            i += 2 + n
        else:
            i += 1
    assert all(c == ["Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation"] for c in channels)
    frames = int(tokens[i + 2])
    frame_time = float(tokens[i + 5])
    data = np.array(tokens[i + 6 :], np.float64).reshape(frames, len(names), 6)
    rot = np.asarray(geometry.euler_to_matrix(data[..., 3:], "ZXY", degrees=True))
    trans = data[..., :3] * 0.01
    skel = Skeleton(tuple(names), tuple(parents), np.array(offsets) * 0.01)
    return Clip(name=name, skeleton=skel, local_rot=rot, root_pos=trans[:, 0], fps=1.0 / frame_time,
                local_trans=trans)


@pytest.mark.data
@pytest.mark.parametrize("archive,contains", [
    ("Bandai-Namco-Research-Motiondataset-1.tar.xz", ""),
    ("Bandai-Namco-Research-Motiondataset-2_walk-turn-left.tar.xz", ""),
])
def test_round_trip_real_bandai(bandai_dir, archive, contains):
    path = os.path.join(bandai_dir, archive)
    if not os.path.exists(path):
        pytest.skip(f"{archive} not available")
    member, text = _read_first_bvh(path, contains)
    clip = _bvh_to_clip(os.path.basename(member), text)
    # both readers agree on the Bandai skeleton
    np.testing.assert_allclose(clip.skeleton.offsets, _bvh_clip(member, text).skeleton.offsets, atol=1e-6)
    assert round(clip.fps) == 30 and clip.num_frames >= 120
    clip = clip.slice(0, 120)  # one length for both archives: shared compiled shapes
    smpl = clip.retarget("bandai").resample(20.0)
    joints = smpl.joints()
    assert joints.shape[1:] == (22, 3) and 1.2 < np.ptp(joints[0, :, 1]) < 2.2  # metres, Y up
    feats, implied = hf.joints_to_features(joints, return_positions=True)
    assert feats.shape == (len(joints) - 1, 263) and np.all(np.isfinite(feats))
    rec = np.asarray(hf.recover_from_ric(feats))
    err = np.abs(rec - implied[:-1]).max()
    assert err < 1e-3, f"{member}: round-trip error {err * 1000:.3f} mm"
    # the recovered motion is the input up to the floor / origin / heading normalisation:
    # bone lengths agree
    par = np.array(SMPL22_PARENTS[1:])
    np.testing.assert_allclose(np.linalg.norm(rec[:, 1:] - rec[:, par], axis=-1),
                               np.linalg.norm(joints[:-1, 1:] - joints[:-1, par], axis=-1), atol=1e-3)


def test_degenerate_bone_direction_stays_finite():
    q = gnp.quaternion_between(np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]),
                               np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0]]))
    R = gnp.quaternion_to_matrix(q, normalize=False)
    np.testing.assert_allclose(R[0] @ [0.0, -1.0, 0.0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(R[1] @ [0.0, 0.0, 1.0], [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(R[1][:, 1], [0, 1, 0], atol=1e-12)  # horizontal flip is a yaw
    # forearms pointing straight up: exactly opposite to their raw offset (0, -1, 0)
    p = synthetic_joints(T=12, spin=0.0)
    p[:, 20] = p[:, 18] + [0.0, 0.25, 0.0]
    p[:, 21] = p[:, 19] + [0.0, 0.25, 0.0]
    feats, implied = hf.joints_to_features(p, return_positions=True)
    assert np.all(np.isfinite(feats))
