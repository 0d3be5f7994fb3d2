"""mmar.eval.editing: kept cells, kept error, jerk and seams on synthetic joints with known
answers (constant offsets, cubic trajectories, steps)."""
from __future__ import annotations

import numpy as np
import pytest

from mmar import edit as E
from mmar.eval import editing as M
from mmar.errors import ConfigError, DataFormatError, ShapeError

FPS = 20.0


def smooth_motion(T: int = 100, seed: int = 0) -> np.ndarray:
    """22 joints on slow sinusoids around a forward walk, metres."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)[:, None, None] / FPS
    base = rng.uniform(-0.5, 0.5, (1, 22, 3)) + np.array([0.0, 1.0, 0.0])
    walk = np.zeros((T, 1, 3))
    walk[..., 2] = 1.0 * t[..., 0]
    return base + walk + 0.05 * np.sin(2 * np.pi * 0.8 * t + rng.uniform(0, 6, (1, 22, 3)))


def cubic(T: int, a: np.ndarray, fps: float = FPS) -> np.ndarray:
    """Every joint on p(t) = a t^3 + c_j: third derivative 6 a everywhere."""
    t = np.arange(T)[:, None, None] / fps
    return a[None, None, :] * t ** 3 + np.linspace(0, 1, 22)[None, :, None]


# --------------------------------------------------------------------------- kept cells


def test_kept_cells_mask():
    r = E.make_request("x", 20, keep_frames="0:8")
    m = M.kept_cells_mask(r, 20)
    assert m.shape == (20, 22) and m[:8].all() and not m[8:].any()
    # a range ending inside a latent step keeps only the whole steps
    m = M.kept_cells_mask(E.make_request("x", 20, keep_frames="0:10"), 20)
    assert m[:8].all() and not m[8:].any()
    m = M.kept_cells_mask(E.make_request("x", 20, keep_joints="legs"), 20)
    legs = [1, 2, 4, 5, 7, 8, 10, 11]
    assert m[:, legs].all() and m.sum() == 20 * 8
    m = M.kept_cells_mask(E.make_request("x", 20, keep_frames="12:", keep_joints="head,root"), 20)
    assert m[12:][:, [0, 12, 15]].all() and m.sum() == 8 * 3
    assert not M.kept_cells_mask(E.make_request("x", 20), 20).any()
    # temporal edits work on any joint count; body-part ones need the 22 SMPL joints
    assert M.kept_cells_mask(E.make_request("x", 20, keep_frames="0:8"), 20, num_joints=21)[:8].all()
    with pytest.raises(ShapeError, match="22 SMPL joints"):
        M.kept_cells_mask(E.make_request("x", 20, keep_joints="legs"), 20, num_joints=21)


# --------------------------------------------------------------------------- kept error


def test_kept_error_constant_offset():
    src = smooth_motion(40)
    edited = src + np.array([0.02, 0.0, 0.0])  # 2 cm everywhere
    kept = np.ones((40, 22), bool)
    assert M.kept_error_cm(src, edited, kept) == pytest.approx(2.0)
    assert M.kept_error_cm(src, edited, kept, root_relative=True) == pytest.approx(0.0, abs=1e-9)
    # 3-4-5: a 5 cm offset on the right wrist only, outside the kept cells it does not count
    edited = src.copy()
    edited[:, 21] += [0.03, 0.04, 0.0]
    kept = np.zeros((40, 22), bool)
    kept[:, 21] = True
    assert M.kept_error_cm(src, edited, kept) == pytest.approx(5.0)
    kept[:, 20] = True  # half the kept cells unchanged
    assert M.kept_error_cm(src, edited, kept) == pytest.approx(2.5)
    kept[:] = False
    kept[:, :21] = True
    assert M.kept_error_cm(src, edited, kept) == pytest.approx(0.0)
    # root-relative: moving the pelvis by 1 cm moves every other joint by 1 cm relative to it
    edited = src.copy()
    edited[:, 0] += [0.0, 0.01, 0.0]
    all_cells = np.ones((40, 22), bool)
    assert M.kept_error_cm(src, edited, all_cells) == pytest.approx(1.0 / 22)
    assert M.kept_error_cm(src, edited, all_cells, root_relative=True) == pytest.approx(21.0 / 22)


def test_kept_error_errors():
    src = smooth_motion(20)
    with pytest.raises(ConfigError, match="no kept cell"):
        M.kept_error_cm(src, src, np.zeros((20, 22), bool))
    with pytest.raises(ShapeError, match="differ in shape"):
        M.kept_error_cm(src, src[:10], np.ones((20, 22), bool))
    with pytest.raises(ShapeError, match=r"bool \(T, J\)"):
        M.kept_error_cm(src, src, np.ones((20, 21), bool))
    with pytest.raises(ShapeError, match=r"\(T, J, 3\)"):
        M.kept_error_cm(src[..., :2], src[..., :2], np.ones((20, 22), bool))
    bad = src.copy()
    bad[3, 4, 1] = np.nan
    with pytest.raises(DataFormatError, match="non-finite"):
        M.kept_error_cm(src, bad, np.ones((20, 22), bool))


# --------------------------------------------------------------------------- jerk and seams


@pytest.mark.parametrize("fps", [20.0, 30.0])
def test_jerk_of_a_cubic_is_constant(fps):
    a = np.array([1.0, 2.0, 2.0])  # |a| = 3: jerk 6 |a| = 18 m/s^3
    j = M.jerk(cubic(50, a, fps), fps)
    assert j.shape == (47,)
    np.testing.assert_allclose(j, 18.0, rtol=1e-6)
    assert M.data_jerk(cubic(50, a, fps), fps) == pytest.approx(18.0, rel=1e-6)
    lin = np.arange(30)[:, None, None] * np.ones((1, 22, 3)) * 0.1  # constant velocity
    np.testing.assert_allclose(M.jerk(lin, fps), 0.0, atol=1e-9)
    with pytest.raises(ShapeError, match="at least 4 frames"):
        M.jerk(lin[:3], fps)
    with pytest.raises(ConfigError, match="fps"):
        M.jerk(lin, 0.0)


def test_seam_frames():
    assert M.seam_frames(E.make_request("x", 100, keep_frames="0:40"), 100) == [40]
    assert M.seam_frames(E.make_request("x", 100, keep_frames="0:40,60:"), 100) == [40, 60]
    assert M.seam_frames(E.make_request("x", 100, keep_frames="0:42"), 100) == [40]  # whole steps
    assert M.seam_frames(E.make_request("x", 100, keep_frames="8:"), 100) == [8]
    assert M.seam_frames(E.make_request("x", 100, keep_frames="8:", keep_joints="legs"), 100) == [8]
    assert M.seam_frames(E.make_request("x", 100, keep_joints="legs"), 100) == []
    assert M.seam_frames(E.make_request("x", 100), 100) == []


def test_seam_jerk_windows_and_ratio():
    src = smooth_motion(100)
    j = M.jerk(src, FPS)
    # seam at 40 between frames 39 and 40: samples t with |t + 2 - 40| <= 3, i.e. 35..41
    assert M.seam_jerk(src, [40], FPS, window=3) == pytest.approx(j[35:42].mean())
    assert M.seam_jerk(src, [40], FPS, window=0) == pytest.approx(j[38])
    # windows clipped at the ends, overlapping windows counted once
    assert M.seam_jerk(src, [2], FPS, window=3) == pytest.approx(j[0:4].mean())
    assert M.seam_jerk(src, [40, 42], FPS, window=3) == pytest.approx(j[35:44].mean())
    # a cubic: the same jerk everywhere, ratio 1
    c = cubic(100, np.array([0.0, 1.0, 0.0]))
    assert M.jerk_ratio(c, c, [40], FPS) == pytest.approx(1.0, rel=1e-6)
    # a 10 cm jump at the seam: far jerkier than the data
    jumped = src.copy()
    jumped[40:] += [0.1, 0.0, 0.0]
    assert M.jerk_ratio(jumped, src, [40], FPS) > 5.0
    assert M.jerk_ratio(src, src, [40], FPS) == pytest.approx(j[35:42].mean() / j.mean())
    with pytest.raises(ConfigError, match="no seam"):
        M.seam_jerk(src, [], FPS)
    with pytest.raises(ConfigError, match="not inside the motion"):
        M.seam_jerk(src, [100], FPS)
    still = np.zeros((30, 22, 3))
    with pytest.raises(DataFormatError, match="zero jerk"):
        M.jerk_ratio(src[:30], still, [10], FPS)


# --------------------------------------------------------------------------- summary


def test_summarize_temporal_edit():
    src = smooth_motion(100)
    r = E.make_request("jump", 100, keep_frames="0:40")
    edited = src.copy()
    edited[40:] += [0.0, 0.0, 0.10]  # the edited frames moved 10 cm, kept ones untouched
    recon = src + [0.02, 0.0, 0.0]
    s = M.summarize_edit(src, edited, r, FPS, recon_joints=recon)
    assert s["kind"] == "temporal" and s["frames"] == 100 and s["kept_cells"] == 40 * 22
    assert s["kept_fraction"] == pytest.approx(0.4)
    assert s["kept_error_cm"] == pytest.approx(0.0) and s["kept_error_root_cm"] == pytest.approx(0.0)
    assert s["recon_kept_error_cm"] == pytest.approx(2.0) and s["recon_kept_error_root_cm"] == pytest.approx(0.0)
    assert s["edited_change_cm"] == pytest.approx(10.0) and s["edited_change_root_cm"] == pytest.approx(0.0, abs=1e-9)
    assert s["seam_frames"] == [40]
    assert s["data_jerk"] == pytest.approx(M.data_jerk(src, FPS))
    assert s["seam_jerk"] == pytest.approx(M.seam_jerk(edited, [40], FPS))
    assert s["jerk_ratio"] == pytest.approx(s["seam_jerk"] / s["data_jerk"]) and s["jerk_ratio"] > 5.0
    assert s["source_seam_jerk"] == pytest.approx(M.seam_jerk(src, [40], FPS))


def test_summarize_body_part_and_semantic_edits():
    src = smooth_motion(60)
    r = E.make_request("wave", 60, keep_joints="legs")
    edited = src.copy()
    edited[:, [1, 4]] += [0.01, 0.0, 0.0]  # the kept left leg drifts 1 cm (2 of its 8 joints)
    edited[:, 20] += [0.0, 0.3, 0.0]  # the left wrist is raised 30 cm
    s = M.summarize_edit(src, edited, r, FPS)
    assert s["kind"] == "body_part" and s["kept_cells"] == 60 * 8
    assert s["kept_error_cm"] == pytest.approx(2 / 8)
    assert s["recon_kept_error_cm"] is None
    assert s["edited_change_cm"] == pytest.approx(30.0 / 14)
    assert s["seam_frames"] == [] and s["seam_jerk"] is None and s["jerk_ratio"] is None
    s = M.summarize_edit(src, edited, E.make_request("dance", 60), FPS)
    assert s["kind"] == "semantic" and s["kept_cells"] == 0 and s["kept_error_cm"] is None
    assert s["edited_change_cm"] == pytest.approx((30.0 + 2.0) / 22)
    with pytest.raises(ShapeError, match="differ in shape"):
        M.summarize_edit(src, edited[:40], r, FPS)
    with pytest.raises(ShapeError, match="60 entries for a clip of 40 frames"):
        M.summarize_edit(src[:40], edited[:40], E.make_request("x", 60, keep_frames="0:20"), FPS)
