"""Tests of mmar.viz.render on a hand-built SMPL-22 stick figure (no data needed)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

from mmar.data.clip import save_arrays
from mmar.errors import ConfigError, DataFormatError, ShapeError
from mmar.viz import COLORS, facing_direction, render, render_frame, render_frame_png, render_npz
from mmar.viz import world_to_plot
from mmar.viz.render import _Scene

# A person standing at the origin, Y up, facing +z, so their left is +x (left = up x forward).
REST = np.array(
    [
        (0.0, 0.95, 0.0),     # 0 pelvis
        (0.09, 0.90, 0.0),    # 1 left_hip
        (-0.09, 0.90, 0.0),   # 2 right_hip
        (0.0, 1.05, 0.0),     # 3 spine1
        (0.10, 0.50, 0.02),   # 4 left_knee
        (-0.10, 0.50, 0.02),  # 5 right_knee
        (0.0, 1.18, 0.0),     # 6 spine2
        (0.10, 0.08, 0.0),    # 7 left_ankle
        (-0.10, 0.08, 0.0),   # 8 right_ankle
        (0.0, 1.30, 0.0),     # 9 spine3
        (0.10, 0.02, 0.12),   # 10 left_foot
        (-0.10, 0.02, 0.12),  # 11 right_foot
        (0.0, 1.50, 0.0),     # 12 neck
        (0.07, 1.45, 0.0),    # 13 left_collar
        (-0.07, 1.45, 0.0),   # 14 right_collar
        (0.0, 1.62, 0.03),    # 15 head
        (0.18, 1.43, 0.0),    # 16 left_shoulder
        (-0.18, 1.43, 0.0),   # 17 right_shoulder
        (0.22, 1.15, 0.0),    # 18 left_elbow
        (-0.22, 1.15, 0.0),   # 19 right_elbow
        (0.24, 0.90, 0.05),   # 20 left_wrist
        (-0.24, 0.90, 0.05),  # 21 right_wrist
    ],
    np.float32,
)


def motion(T: int = 6, heading_deg: float = 0.0) -> np.ndarray:
    """A short walk forward with the left hand rising; rotated about Y by ``heading_deg``."""
    j = np.repeat(REST[None], T, 0).copy()
    s = np.linspace(0.0, 1.0, T, dtype=np.float32)
    j[:, 20, 1] += 0.6 * s                 # left wrist rises
    j[:, 18, 1] += 0.2 * s
    j[:, :, 2] += 0.5 * s[:, None]         # walk forward (+z)
    a = np.radians(heading_deg)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]], np.float32)
    return j @ R.T


def gif_info(path):
    with Image.open(path) as im:
        return im.n_frames, im.size


def test_world_to_plot_is_a_rotation():
    M = world_to_plot(np.eye(3))  # rows: images of the world axes
    assert np.allclose(M @ M.T, np.eye(3))
    assert np.isclose(np.linalg.det(M), 1.0)  # proper: not mirrored
    assert np.allclose(world_to_plot(np.array([0.0, 1.0, 0.0])), [0, 0, 1])  # Y up -> plot Z up


def test_facing_direction():
    assert np.allclose(facing_direction(REST), [0, 0, 1], atol=1e-6)
    assert np.allclose(facing_direction(motion(2, 90.0)[0]), [1, 0, 0], atol=1e-6)


def test_gif_frames_and_size(tmp_path):
    out = tmp_path / "a.gif"
    assert render([motion(6)], str(out), fps=30, titles=["synthetic"], size=(160, 120)) == str(out)
    assert gif_info(out) == (6, (160, 120))


def test_side_by_side_doubles_width(tmp_path):
    out = tmp_path / "b.gif"
    render([motion(5), motion(4, 30.0)], str(out), fps=20, titles=["pred", "gt"], size=(160, 120))
    assert gif_info(out) == (5, (320, 120))  # the longer clip sets the length


def test_stride_and_max_frames(tmp_path):
    out = tmp_path / "c.gif"
    render([motion(9)], str(out), fps=30, stride=2, size=(96, 96))
    assert gif_info(out)[0] == 5
    with Image.open(out) as im:
        assert im.info["duration"] in (60, 70)  # 2 frames of 1/30 s, GIF rounds to 10 ms
    render([motion(9)], str(out), fps=30, stride=2, max_frames=3, size=(96, 96))
    assert gif_info(out)[0] == 3


def test_frames_differ(tmp_path):
    a = render_frame(motion(6), 0, size=(128, 128))
    b = render_frame(motion(6), 5, size=(128, 128))
    assert a.shape == (128, 128, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).sum() > 0


def _colour_columns(img: np.ndarray, hex_colour: str) -> np.ndarray:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    mask = np.abs(img.astype(int) - rgb).sum(-1) < 40
    return np.nonzero(mask)[1]


@pytest.mark.parametrize("heading", [0.0, 90.0, -135.0])
@pytest.mark.parametrize("view", ["front", "auto"])
def test_not_mirrored(heading, view):
    """Facing the camera, the person's left side (blue) is on the viewer's right."""
    j = motion(3, heading)
    if view == "front":
        fwd = world_to_plot(facing_direction(j[0]))
        v = (10.0, float(np.degrees(np.arctan2(fwd[1], fwd[0]))))
    else:
        v = None  # default camera: 35 degrees off the first pose's front
    img = render_frame(j, 0, size=(200, 200), view=v)
    left = _colour_columns(img, COLORS["left"])
    right = _colour_columns(img, COLORS["right"])
    assert len(left) > 20 and len(right) > 20
    assert left.mean() > right.mean() + 5


def test_upright_and_on_floor():
    j = motion(3)
    scene = _Scene([j], None, (15, 20, 21), (200, 200), None, 2)
    try:
        px = scene.project(0, j[0])
        assert px[15, 1] < px[12, 1] < px[0, 1] < px[4, 1] < px[7, 1]  # head above ... ankle
        assert scene.floor == pytest.approx(float(j[..., 1].min()))
        assert scene.zlim[0] == pytest.approx(scene.floor)
    finally:
        scene.close()


def test_render_frame_png(tmp_path):
    out = tmp_path / "f.png"
    render_frame_png(motion(4), 2, str(out), size=(150, 100))
    with Image.open(out) as im:
        assert im.size == (150, 100)


def test_bad_input(tmp_path):
    with pytest.raises(ShapeError):
        render([np.zeros((4, 21, 3))], str(tmp_path / "x.gif"), fps=30)
    with pytest.raises(ConfigError, match="unknown animation format"):
        render([motion(2)], str(tmp_path / "x.avi"), fps=30)
    with pytest.raises(ConfigError, match="titles"):
        render([motion(2)], str(tmp_path / "x.gif"), fps=30, titles=["a", "b"])


def test_mp4_without_ffmpeg_suggests_gif(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "imageio_ffmpeg" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"imageio-ffmpeg.*\.gif"):
        render([motion(2)], str(tmp_path / "x.mp4"), fps=30)


@pytest.fixture
def npz_pair(tmp_path):
    a, b = tmp_path / "gt.npz", tmp_path / "pred.npz"
    save_arrays(str(a), {
        "walk_b": {"joints": motion(4), "fps": np.float32(30)},
        "walk_a": {"joints": motion(3), "fps": np.float32(30)},
    })
    save_arrays(str(b), {"walk_a": {"joints": motion(3, 20.0), "fps": np.float32(30)}})
    return str(a), str(b)


def test_render_npz_default_clip_and_compare(npz_pair, tmp_path):
    gt, pred = npz_pair
    out = tmp_path / "n.gif"
    render_npz(gt, str(out), size=(120, 100))
    assert gif_info(out) == (3, (120, 100))  # first clip in sorted order: walk_a (3 frames)
    render_npz(gt, str(out), clip="walk_b", size=(120, 100))
    assert gif_info(out) == (4, (120, 100))
    render_npz(gt, str(out), clip="walk_a", compare=pred, size=(120, 100))
    assert gif_info(out) == (3, (240, 100))


def test_render_npz_missing_clip(npz_pair, tmp_path):
    gt, pred = npz_pair
    out = str(tmp_path / "m.gif")
    with pytest.raises(DataFormatError) as e:
        render_npz(gt, out, clip="run")
    assert gt in str(e.value) and "'run'" in str(e.value) and "walk_a, walk_b" in str(e.value)
    with pytest.raises(DataFormatError) as e:  # present in gt, missing in the compared file
        render_npz(gt, out, clip="walk_b", compare=pred)
    assert pred in str(e.value) and "'walk_b'" in str(e.value) and "walk_a" in str(e.value)
