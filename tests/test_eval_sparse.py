import time

import numpy as np
import pytest

from mmar import geometry
from mmar.errors import DataFormatError, MmarError, ShapeError
from mmar.eval import sparse
from mmar.eval.sparse import (
    METRIC_KEYS,
    ClipPoses,
    clip_metrics,
    load_clip_npz,
    metrics_from_npz,
    sparse_metrics,
    sparse_metrics_per_clip,
)

FPS = 60.0


def _rx(deg):
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float32)


_POOL = []


def _rotation_pool():
    # one eager conversion of a fixed shape (eager jax ops compile once per shape)
    if not _POOL:
        aa = np.random.default_rng(123).uniform(-1.0, 1.0, size=(4096, 3)).astype(np.float32)
        _POOL.append(np.asarray(geometry.axis_angle_to_matrix(aa)))
    return _POOL[0]


def _to6d(rot):
    return np.concatenate([rot[..., :, 0], rot[..., :, 1]], axis=-1)


def _random_clip(rng, t=30, fps=FPS):
    joints = rng.normal(size=(t, 22, 3)) * 0.3
    rot = _rotation_pool()[rng.integers(0, 4096, size=(t, 22))]
    return ClipPoses(joints=joints, rot=rot, fps=fps)


def _identity_rot(t):
    return np.broadcast_to(np.eye(3, dtype=np.float32), (t, 22, 3, 3)).copy()


def test_identical_inputs_give_zero():
    rng = np.random.default_rng(0)
    clip = _random_clip(rng)
    m = clip_metrics(clip, clip)
    assert set(m) == set(METRIC_KEYS)
    for k in METRIC_KEYS:
        if k in ("jitter_m_s3", "gt_jitter_m_s3"):
            continue
        # float32 inside: a newer XLA (jax 0.11.2) rounds the two identical branches of the
        # rotation error differently, by about 4e-7 degrees; every other metric stays at 0
        assert m[k] == pytest.approx(0.0, abs=1e-5 if k == "mpjre_deg" else 1e-9), k
    assert m["jitter_m_s3"] == pytest.approx(m["gt_jitter_m_s3"])
    assert m["gt_jitter_m_s3"] > 0


def test_constant_offset_exact_mpjpe():
    rng = np.random.default_rng(1)
    gt = _random_clip(rng)
    offset = np.array([0.03, 0.04, 0.0])  # 5 cm
    pred = ClipPoses(joints=gt.joints + offset, rot=gt.rot, fps=FPS)
    m = clip_metrics(pred, gt, align_head=False)
    for k in ("mpjpe_cm", "hand_pe_cm", "upper_pe_cm", "lower_pe_cm", "root_pe_cm"):
        assert m[k] == pytest.approx(5.0, abs=1e-9), k
    assert m["mpjve_cm_s"] == pytest.approx(0.0, abs=1e-6)
    assert m["jitter_m_s3"] == pytest.approx(m["gt_jitter_m_s3"], rel=1e-9)
    # head alignment removes any rigid per-frame translation
    m = clip_metrics(pred, gt, align_head=True)
    assert m["mpjpe_cm"] == pytest.approx(0.0, abs=1e-9)


def test_head_alignment_per_frame():
    rng = np.random.default_rng(2)
    gt = _random_clip(rng, t=20)
    drift = rng.normal(size=(20, 1, 3))  # a different translation every frame
    pj = gt.joints + drift
    pj[:, 0] += np.array([0.0, 0.02, 0.0])  # pelvis 2 cm off relative to the head
    pred = ClipPoses(joints=pj, rot=gt.rot, fps=FPS)
    m = clip_metrics(pred, gt)  # align_head defaults to True
    assert m["root_pe_cm"] == pytest.approx(2.0, abs=1e-9)
    assert m["mpjpe_cm"] == pytest.approx(2.0 / 22, abs=1e-9)
    assert m["lower_pe_cm"] == pytest.approx(2.0 / 9, abs=1e-9)
    assert m["hand_pe_cm"] == pytest.approx(0.0, abs=1e-9)
    assert m["upper_pe_cm"] == pytest.approx(0.0, abs=1e-9)
    unaligned = clip_metrics(pred, gt, align_head=False)
    assert unaligned["mpjpe_cm"] > 10.0


def test_circular_motion_analytic_jitter_and_velocity():
    t, amp, freq = 120, 0.1, 2.0  # 10 cm radius, 2 Hz
    w, h = 2 * np.pi * freq, 1.0 / FPS
    time_s = np.arange(t) * h
    circle = amp * np.stack([np.cos(w * time_s), np.sin(w * time_s), np.zeros(t)], -1)
    pred = np.broadcast_to(circle[:, None, :], (t, 22, 3))
    gt = np.zeros((t, 22, 3))
    m = clip_metrics({"joints": pred, "fps": FPS}, {"joints": gt}, align_head=False)
    chord = 2 * np.sin(w * h / 2)
    # third difference of a uniform circular motion has constant norm amp * chord^3
    assert m["jitter_m_s3"] == pytest.approx(amp * chord**3 * FPS**3, rel=1e-9)
    assert m["jitter_m_s3"] == pytest.approx(amp * w**3, rel=0.02)  # continuous limit
    assert m["gt_jitter_m_s3"] == 0.0
    assert m["mpjve_cm_s"] == pytest.approx(100 * amp * chord * FPS, rel=1e-9)
    assert m["mpjpe_cm"] == pytest.approx(10.0, rel=1e-9)
    assert "mpjre_deg" not in m  # no rotations given


@pytest.mark.parametrize("six_d", [False, True])
def test_known_rotation_angle(six_d):
    t = 12
    gt_rot = _identity_rot(t)
    pred_rot = gt_rot.copy()
    pred_rot[:, 5] = _rx(30.0)
    pred_rot[:, 0] = _rx(90.0)  # root orientation is excluded
    joints = np.zeros((t, 22, 3))
    if six_d:
        pred_rot = _to6d(pred_rot)
        gt_rot = _to6d(gt_rot)
    m = clip_metrics(ClipPoses(joints, pred_rot, FPS), ClipPoses(joints, gt_rot, FPS))
    # one joint differs by 30 deg in one axis-angle component: 30 / (21 joints * 3)
    assert m["mpjre_deg"] == pytest.approx(30.0 / 63, abs=1e-4)


def test_rotation_wraps_at_pi():
    t = 8
    gt_rot = _identity_rot(t)
    pred_rot = gt_rot.copy()
    gt_rot[:, 7] = _rx(179.0)
    pred_rot[:, 7] = _rx(-179.0)  # axis-angle x: +179 deg vs -179 deg -> 2 deg apart
    joints = np.zeros((t, 22, 3))
    m = clip_metrics(ClipPoses(joints, pred_rot, FPS), ClipPoses(joints, gt_rot, FPS))
    assert m["mpjre_deg"] == pytest.approx(2.0 / 63, abs=2e-4)


def test_matrix_and_6d_inputs_agree():
    rng = np.random.default_rng(3)
    gt, pred = _random_clip(rng), _random_clip(rng)
    a = clip_metrics(pred, gt)
    b = clip_metrics(
        {"joints": pred.joints, "rot6d": _to6d(pred.rot), "fps": FPS},
        {"joints": gt.joints, "local_rot": gt.rot},
    )
    assert a["mpjre_deg"] > 1.0
    for k in METRIC_KEYS:
        assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-5), k


def test_skip_first_frame():
    rng = np.random.default_rng(4)
    gt = _random_clip(rng)
    pj, pr = gt.joints.copy(), gt.rot.copy()
    pj[0] += 1.0
    pj[0, 15] -= 1.0  # keep the head so alignment does not hide the error
    pr[0, 3] = _rx(45.0)
    pred = ClipPoses(pj, pr, FPS)
    m = clip_metrics(pred, gt)  # skip_first=1 by default
    assert m["mpjpe_cm"] == pytest.approx(0.0, abs=1e-9)
    assert m["mpjre_deg"] == pytest.approx(0.0, abs=1e-6)
    m0 = clip_metrics(pred, gt, skip_first=0)
    assert m0["mpjpe_cm"] > 1.0 and m0["mpjre_deg"] > 0.01


def test_clip_average_is_unweighted():
    def clip(t, off):
        g = np.zeros((t, 22, 3))
        return ClipPoses(g + np.array([off, 0, 0]), None, FPS), ClipPoses(g, None, FPS)

    (pa, ga), (pb, gb) = clip(11, 0.01), clip(41, 0.03)
    m = sparse_metrics({"a": pa, "b": pb}, {"a": ga, "b": gb}, align_head=False)
    assert m["mpjpe_cm"] == pytest.approx(2.0, abs=1e-9)  # frame-weighted would be 2.6
    per = sparse_metrics_per_clip({"a": pa, "b": pb}, {"a": ga, "b": gb}, align_head=False)
    assert per["a"]["mpjpe_cm"] == pytest.approx(1.0) and per["b"]["mpjpe_cm"] == pytest.approx(3.0)


def test_mpjre_average_over_clips_and_chunks(monkeypatch):
    rng = np.random.default_rng(5)
    pred = {f"c{i}": _random_clip(rng, t=20 + 7 * i) for i in range(6)}
    gt = {f"c{i}": _random_clip(rng, t=20 + 7 * i) for i in range(6)}
    per = sparse_metrics_per_clip(pred, gt)
    single = {n: clip_metrics(pred[n], gt[n])["mpjre_deg"] for n in pred}
    for n in pred:
        assert per[n]["mpjre_deg"] == pytest.approx(single[n], rel=1e-5)
    # small groups of clips and rotation batches split into several chunks agree
    monkeypatch.setattr(sparse, "_GROUP_FRAMES", 50)
    monkeypatch.setattr(sparse, "_ROT_BUCKETS", (32,))
    chunked = sparse_metrics_per_clip(pred, gt)
    for n in pred:
        for k in METRIC_KEYS:
            assert chunked[n][k] == pytest.approx(per[n][k], rel=1e-5), (n, k)
    avg = sparse_metrics(pred, gt)
    assert avg["mpjre_deg"] == pytest.approx(np.mean([per[n]["mpjre_deg"] for n in pred]))


def test_fps_argument_and_errors():
    rng = np.random.default_rng(6)
    gt = _random_clip(rng)
    pred = ClipPoses(gt.joints * 1.1, gt.rot, fps=30.0)
    with pytest.raises(DataFormatError, match="'walk'.*fps"):
        sparse_metrics({"walk": pred}, {"walk": gt})
    # an explicit fps overrides both
    m = sparse_metrics({"walk": pred}, {"walk": gt}, fps=30.0)
    assert m["mpjve_cm_s"] > 0
    with pytest.raises(DataFormatError, match="'run'.*frame rate"):
        clip_metrics({"joints": gt.joints}, {"joints": gt.joints}, name="run")


def test_mismatched_keys_and_shapes():
    rng = np.random.default_rng(7)
    a, b = _random_clip(rng), _random_clip(rng)
    with pytest.raises(DataFormatError, match="'jump'"):
        sparse_metrics({"walk": a}, {"walk": b, "jump": b})
    with pytest.raises(DataFormatError, match="'extra'"):
        sparse_metrics({"walk": a, "extra": a}, {"walk": b})
    bad = ClipPoses(a.joints[:, :21], a.rot, FPS)
    with pytest.raises(ShapeError, match="'walk'.*joints"):
        sparse_metrics({"walk": bad}, {"walk": b})
    short = ClipPoses(a.joints[:20], a.rot[:20], FPS)
    with pytest.raises(ShapeError, match="'walk'.*frames"):
        sparse_metrics({"walk": short}, {"walk": b})
    badrot = ClipPoses(a.joints, a.rot[..., :2], FPS)
    with pytest.raises(ShapeError, match="'walk'.*rotations"):
        sparse_metrics({"walk": badrot}, {"walk": b})
    tiny = ClipPoses(a.joints[:4], a.rot[:4], FPS)
    with pytest.raises(ShapeError, match="at least 5"):
        clip_metrics(tiny, tiny)


def _write_npz(path, clips):
    arrays = {}
    for name, c in clips.items():
        arrays[f"{name}/joints"] = np.asarray(c.joints, np.float32)
        arrays[f"{name}/rot6d"] = _to6d(c.rot)
        arrays[f"{name}/root"] = np.asarray(c.joints[:, 0], np.float32)
        arrays[f"{name}/fps"] = np.float32(c.fps)
    np.savez(path, **arrays)


def test_metrics_from_npz(tmp_path):
    rng = np.random.default_rng(8)
    gt = {"s1/walk_01": _random_clip(rng, 25), "run": _random_clip(rng, 40)}
    pred = {"s1/walk_01": _random_clip(rng, 25), "run": _random_clip(rng, 40)}
    _write_npz(tmp_path / "gt.npz", gt)
    _write_npz(tmp_path / "pred.npz", pred)
    m = metrics_from_npz(tmp_path / "pred.npz", tmp_path / "gt.npz")
    expected = sparse_metrics(pred, gt)
    for k in METRIC_KEYS:
        assert m[k] == pytest.approx(expected[k], rel=1e-4, abs=1e-4), k
    per = metrics_from_npz(tmp_path / "pred.npz", tmp_path / "gt.npz", per_clip=True)
    assert set(per) == {"s1/walk_01", "run"}


def test_metrics_from_npz_errors(tmp_path):
    rng = np.random.default_rng(9)
    gt = {"walk": _random_clip(rng, 25), "run": _random_clip(rng, 40)}
    _write_npz(tmp_path / "gt.npz", gt)

    _write_npz(tmp_path / "missing.npz", {"walk": gt["walk"]})
    with pytest.raises(DataFormatError, match=r"missing\.npz.*'run'"):
        metrics_from_npz(tmp_path / "missing.npz", tmp_path / "gt.npz")

    _write_npz(tmp_path / "short.npz", {"walk": gt["walk"], "run": _random_clip(rng, 39)})
    with pytest.raises(ShapeError, match=r"short\.npz.*'run'.*39 frames"):
        metrics_from_npz(tmp_path / "short.npz", tmp_path / "gt.npz")

    arrays = dict(np.load(tmp_path / "gt.npz"))
    arrays["run/rot6d"] = arrays["run/rot6d"][..., :5]
    np.savez(tmp_path / "badrot.npz", **arrays)
    with pytest.raises(ShapeError, match=r"badrot\.npz.*'run'.*rotations"):
        metrics_from_npz(tmp_path / "badrot.npz", tmp_path / "gt.npz")

    arrays = dict(np.load(tmp_path / "gt.npz"))
    del arrays["walk/joints"]
    np.savez(tmp_path / "nojoints.npz", **arrays)
    with pytest.raises(DataFormatError, match=r"nojoints\.npz.*'walk'.*joints"):
        metrics_from_npz(tmp_path / "nojoints.npz", tmp_path / "gt.npz")

    np.savez(tmp_path / "flat.npz", joints=np.zeros((5, 22, 3)))
    with pytest.raises(DataFormatError, match=r"flat\.npz.*'joints'"):
        metrics_from_npz(tmp_path / "flat.npz", tmp_path / "gt.npz")

    with pytest.raises(MmarError, match="nothere"):
        metrics_from_npz(tmp_path / "nothere.npz", tmp_path / "gt.npz")


def test_many_clips_are_fast():
    # clips of many different lengths must not trigger a compile per length
    rng = np.random.default_rng(10)
    base = _random_clip(rng, 320)
    n = 150
    lengths = [280 + (i % 37) for i in range(n)]
    gt = {f"c{i}": ClipPoses(base.joints[:t], base.rot[:t], FPS) for i, t in enumerate(lengths)}
    pred = {
        f"c{i}": ClipPoses(base.joints[:t] + 0.01 * i / n, base.rot[:t], FPS)
        for i, t in enumerate(lengths)
    }
    sparse_metrics(pred, gt)  # compile
    t0 = time.perf_counter()
    m = sparse_metrics(pred, gt, align_head=False)
    elapsed = time.perf_counter() - t0
    assert m["mpjpe_cm"] == pytest.approx(np.mean([np.sqrt(3) * i / n for i in range(n)]), rel=1e-6)
    assert m["mpjre_deg"] == pytest.approx(0.0, abs=1e-6)
    assert elapsed < 10.0


def test_non_finite_poses_fail_naming_clip_and_frame(tmp_path, capsys):
    """Case 7: NaN/Inf in a prediction or ground truth is an error naming the clip and frame,
    never a bare NaN printed with exit code 0."""
    from mmar import cli

    rng = np.random.default_rng(0)
    gt = {n: {"joints": rng.normal(size=(12, 22, 3)).astype(np.float32), "fps": np.float32(30)} for n in "ab"}
    pred = {n: {k: np.array(v) for k, v in c.items()} for n, c in gt.items()}
    pred["b"]["joints"][5, 3, 1] = np.nan
    with pytest.raises(DataFormatError,
                       match=r"prediction clip 'b': joints: 1 non-finite value \(NaN/Inf\), first at frame 5"):
        sparse_metrics(pred, gt)
    pred["b"]["joints"] = pred["b"]["joints"].astype(np.float64)
    pred["b"]["joints"][5, 3, 1] = 1e200  # finite, but its squared error overflows
    with pytest.raises(DataFormatError, match=r"clip 'b': mpjpe_cm.* not finite"):
        sparse_metrics(pred, gt)
    from mmar.data.clip import save_arrays

    pred["b"]["joints"] = np.array(gt["b"]["joints"])
    pred["b"]["joints"][7, 0, 0] = np.inf
    save_arrays(str(tmp_path / "p.npz"), pred)
    save_arrays(str(tmp_path / "g.npz"), gt)
    capsys.readouterr()
    assert cli.main(["metrics", "--pred", str(tmp_path / "p.npz"), "--gt", str(tmp_path / "g.npz")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "clip 'b'" in err and "frame 7" in err and len(err.splitlines()) == 1


def test_random_bytes_are_not_called_pickles(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(np.random.default_rng(0).bytes(1000).replace(b"\x80", b"\x81"))
    with pytest.raises(DataFormatError, match=r"not an npz \(zip\) file"):
        load_clip_npz(bad)
    import pickle

    bad.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(DataFormatError, match="pickled data"):
        load_clip_npz(bad)
