"""Animated 3D stick figures of SMPL-22 joint positions (the ``mmar render`` backend).

Input is world-frame joint positions ``(T, 22, 3)`` in metres, **Y up**, right-handed (see
``docs/design.md``). Matplotlib's 3D axes have Z up, so world ``(x, y, z)`` is drawn at plot
``(x, -z, y)``: a rotation of +90 degrees about X (determinant +1), so the picture is never
mirrored and a person's left stays on their left.

What a frame shows, per panel (several panels side by side, e.g. prediction and ground truth,
share one camera and one set of limits so they are directly comparable):

* bones of :data:`mmar.skeleton.SMPL22_PARENTS` as lines, left side / right side / spine in
  distinct colours (see :data:`COLORS`);
* the sparse (tracked) joints, head and wrists by default, as larger markers;
* a grid on the floor, at the lowest joint height over all clips;
* the root (pelvis) trajectory projected on the floor, faint, and the current root's shadow;
* a frame counter.

The camera is fixed: it frames the whole motion with equal scale on all axes and by default
looks at the first frame's person from 35 degrees off their front.

Frames are drawn efficiently: the static scene (floor, trajectory, titles) is drawn once and
each frame only redraws the moving artists over a saved background (blitting), which needs a
few milliseconds per frame.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from mmar.errors import ConfigError, DataFormatError, ShapeError
from mmar.skeleton import NUM_JOINTS, SMPL22_NAMES, SMPL22_PARENTS, SPARSE_JOINTS

__all__ = [
    "COLORS", "render", "render_npz", "render_frame_png", "render_frame", "world_to_plot", "writer_for",
    "facing_direction",
]

#: Colours of the drawing: bones by side (decided by the child joint's name), joints, markers.
COLORS = {
    "left": "#1f5fbf",     # blue
    "right": "#d43f2f",    # red
    "spine": "#3a3a3a",    # dark grey
    "joint": "#222222",
    "sparse": "#f2b01e",   # amber, with a dark edge
    "floor": "#b8b8b8",
    "trajectory": "#7a9a5a",
    "text": "#222222",
}

_DPI = 100
_DEFAULT_VIEW_OFFSET = 35.0  # degrees between the person's front and the camera
_DEFAULT_ELEV = 15.0


def world_to_plot(p: np.ndarray) -> np.ndarray:
    """World ``(..., 3)`` Y-up coordinates to matplotlib's Z-up plot coordinates ``(x, -z, y)``.

    This is a proper rotation (+90 degrees about X), not a reflection."""
    p = np.asarray(p)
    return np.stack([p[..., 0], -p[..., 2], p[..., 1]], -1)


def facing_direction(joints: np.ndarray) -> np.ndarray:
    """Horizontal unit forward vector(s) ``(..., 3)`` (world frame, y = 0) of SMPL-22 poses.

    ``left = up x forward`` in a right-handed Y-up frame, so ``forward = left x up`` with
    ``left`` the mean of the left-minus-right hip and shoulder vectors."""
    j = np.asarray(joints, np.float64)
    left = (j[..., 1, :] - j[..., 2, :]) + (j[..., 16, :] - j[..., 17, :])
    up = np.array([0.0, 1.0, 0.0])
    fwd = np.cross(left, up)
    fwd[..., 1] = 0.0
    n = np.linalg.norm(fwd, axis=-1, keepdims=True)
    return np.where(n > 1e-9, fwd / np.maximum(n, 1e-9), np.array([0.0, 0.0, 1.0]))


def _bone_side(j: int) -> str:
    name = SMPL22_NAMES[j]
    if name.startswith("left_"):
        return "left"
    if name.startswith("right_"):
        return "right"
    return "spine"


def _check_joints(joints_list) -> list[np.ndarray]:
    if isinstance(joints_list, np.ndarray) and joints_list.ndim == 3:
        joints_list = [joints_list]
    out = []
    for i, j in enumerate(joints_list):
        j = np.asarray(j, np.float32)
        if j.ndim != 3 or j.shape[1:] != (NUM_JOINTS, 3) or j.shape[0] < 1:
            raise ShapeError(
                f"render: joints[{i}] must be (T, {NUM_JOINTS}, 3) with T >= 1, got {j.shape}"
            )
        out.append(j)
    if not out:
        raise ShapeError("render: no joint arrays given")
    return out


def _frame_indices(T: int, stride: int | None, max_frames: int | None) -> np.ndarray:
    stride = 1 if stride is None else int(stride)
    if stride < 1:
        raise ConfigError(f"render: stride must be >= 1, got {stride}")
    idx = np.arange(0, T, stride)
    if max_frames is not None:
        if int(max_frames) < 1:
            raise ConfigError(f"render: max_frames must be >= 1, got {max_frames}")
        idx = idx[: int(max_frames)]
    return idx


def _nice_step(span: float) -> float:
    for step in (0.25, 0.5, 1.0, 2.0, 5.0):
        if span / step <= 12:
            return step
    return 10.0


class _Scene:
    """A figure with one 3D panel per clip; ``draw(t)`` renders frame ``t`` to RGB."""

    def __init__(
        self,
        clips: list[np.ndarray],
        titles: Sequence[str] | None,
        sparse_joints: Sequence[int],
        size: tuple[int, int],
        view: tuple[float, float] | None,
        num_frames_label: int,
        fps: float | None = None,
    ):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.clips = clips
        n = len(clips)
        W, H = int(size[0]), int(size[1])
        if W < 32 or H < 32:
            raise ConfigError(f"render: size must be at least 32x32 pixels per panel, got {size}")
        if titles is not None and len(titles) != n:
            raise ConfigError(f"render: {n} clips but {len(titles)} titles")
        self.sparse = tuple(int(s) for s in sparse_joints)
        if any(not 0 <= s < NUM_JOINTS for s in self.sparse):
            raise ConfigError(f"render: sparse joints must be in [0, {NUM_JOINTS}), got {self.sparse}")
        self.width, self.height = W * n, H
        self.num_frames_label = num_frames_label
        self.fps = fps

        self.fig = Figure(figsize=(W * n / _DPI, H / _DPI), dpi=_DPI, facecolor="white")
        self.canvas = FigureCanvasAgg(self.fig)

        # shared framing over every clip
        allp = np.concatenate([c.reshape(-1, 3) for c in clips], 0)
        allp = allp[np.all(np.isfinite(allp), -1)]
        if allp.size == 0:
            raise ShapeError("render: joint positions are all NaN / inf")
        self.floor = float(allp[:, 1].min())
        top = float(allp[:, 1].max())
        lo = allp.min(0)
        hi = allp.max(0)
        center = 0.5 * (lo + hi)
        pad = 0.25
        half_x = max(0.5 * (hi[0] - lo[0]) + pad, 0.6)
        half_z = max(0.5 * (hi[2] - lo[2]) + pad, 0.6)
        height = max(top - self.floor, 0.5) + 0.1
        # world x, z ranges -> plot X, Y; world y -> plot Z
        self.xlim = (center[0] - half_x, center[0] + half_x)
        self.ylim = (-center[2] - half_z, -center[2] + half_z)  # plot Y = -world z
        self.zlim = (self.floor, self.floor + height)

        if view is None:
            fwd = facing_direction(clips[0][0])
            fp = world_to_plot(fwd)
            azim = float(np.degrees(np.arctan2(fp[1], fp[0]))) + _DEFAULT_VIEW_OFFSET
            elev = _DEFAULT_ELEV
        else:
            elev, azim = float(view[0]), float(view[1])
        self.elev, self.azim = elev, azim

        self.axes = []
        self.bones = []        # per panel: list of (Line3D, child, parent)
        self.joint_dots = []
        self.sparse_dots = []
        self.shadows = []
        for i, clip in enumerate(clips):
            ax = self.fig.add_axes((i / n, 0.05, 1.0 / n, 0.87), projection="3d")
            self._setup_axes(ax)
            self._static(ax, clip)
            bones = []
            for j in range(1, NUM_JOINTS):
                (ln,) = ax.plot([], [], [], color=COLORS[_bone_side(j)], lw=2.6,
                                solid_capstyle="round", animated=True)
                bones.append((ln, j, SMPL22_PARENTS[j]))
            (dots,) = ax.plot([], [], [], ls="none", marker="o", ms=3.0, color=COLORS["joint"],
                              animated=True)
            (sp,) = ax.plot([], [], [], ls="none", marker="o", ms=9.0, mfc=COLORS["sparse"],
                            mec="#5a4100", mew=1.0, animated=True)
            (sh,) = ax.plot([], [], [], ls="none", marker="o", ms=6.0, color=COLORS["trajectory"],
                            alpha=0.8, animated=True)
            self.axes.append(ax)
            self.bones.append(bones)
            self.joint_dots.append(dots)
            self.sparse_dots.append(sp)
            self.shadows.append(sh)
            if titles is not None:
                self.fig.text((i + 0.5) / n, 0.985, str(titles[i]), ha="center", va="top",
                              fontsize=11, color=COLORS["text"])
        self.counter = self.fig.text(0.01, 0.01, "", ha="left", va="bottom", fontsize=9,
                                     color=COLORS["text"], family="monospace", animated=True)
        # legend (static)
        renderer = self.canvas.get_renderer()
        x = 0.99
        for key, label in (("sparse", "tracked"), ("right", "right"), ("left", "left")):
            t = self.fig.text(x, 0.01, label, ha="right", va="bottom", fontsize=9,
                              color=COLORS[key] if key != "sparse" else "#9a6c00")
            x -= (t.get_window_extent(renderer).width + 8.0) / self.width
        # background: everything static, drawn once; sets each Axes3D's projection matrix
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.fig.bbox)

    def _setup_axes(self, ax):
        ax.set_proj_type("persp", focal_length=1.6)
        ax.view_init(elev=self.elev, azim=self.azim)
        ax.set_xlim(*self.xlim)
        ax.set_ylim(*self.ylim)
        ax.set_zlim(*self.zlim)
        ax.set_box_aspect(
            (self.xlim[1] - self.xlim[0], self.ylim[1] - self.ylim[0], self.zlim[1] - self.zlim[0]),
            zoom=1.2,
        )
        ax.set_axis_off()
        ax.computed_zorder = False  # floor, grid, trajectory in this order; bones sorted by hand
        ax.set_facecolor("white")

    def _static(self, ax, clip):
        from mpl_toolkits.mplot3d.art3d import Line3DCollection, Poly3DCollection

        f = self.floor
        (x0, x1), (y0, y1) = self.xlim, self.ylim
        # floor: a faint plane and a grid on round coordinates
        plane = Poly3DCollection([[(x0, y0, f), (x1, y0, f), (x1, y1, f), (x0, y1, f)]],
                                 facecolor="#f3f3f3", edgecolor="none", zorder=0)
        ax.add_collection3d(plane)
        step = _nice_step(max(x1 - x0, y1 - y0))
        segs = []
        for gx in np.arange(np.ceil(x0 / step) * step, x1 + 1e-9, step):
            segs.append([(gx, y0, f), (gx, y1, f)])
        for gy in np.arange(np.ceil(y0 / step) * step, y1 + 1e-9, step):
            segs.append([(x0, gy, f), (x1, gy, f)])
        ax.add_collection3d(Line3DCollection(segs, colors=COLORS["floor"], linewidths=0.7,
                                             zorder=1))
        # root trajectory on the floor
        root = world_to_plot(clip[:, 0])
        ax.plot(root[:, 0], root[:, 1], np.full(len(root), f), color=COLORS["trajectory"],
                lw=1.5, alpha=0.5, zorder=2)

    def draw(self, t: int) -> np.ndarray:
        """RGB ``(H, W, 3)`` uint8 image of frame ``t`` (clamped per clip to its length)."""
        from mpl_toolkits.mplot3d import proj3d

        canvas = self.canvas
        canvas.restore_region(self.background)
        for ax, clip, bones, dots, sp, sh in zip(
            self.axes, self.clips, self.bones, self.joint_dots, self.sparse_dots, self.shadows
        ):
            p = world_to_plot(clip[min(t, len(clip) - 1)])
            # bones far to near (painter's order) from the projected depth of their midpoints
            mids = 0.5 * (p[[b[1] for b in bones]] + p[[b[2] for b in bones]])
            _, _, depth = proj3d.proj_transform(mids[:, 0], mids[:, 1], mids[:, 2], ax.M)
            order = np.argsort(-np.asarray(depth), kind="stable")
            for ln, c, par in bones:
                ln.set_data_3d(p[[par, c], 0], p[[par, c], 1], p[[par, c], 2])
            sh.set_data_3d([p[0, 0]], [p[0, 1]], [self.floor])
            dots.set_data_3d(p[:, 0], p[:, 1], p[:, 2])
            s = list(self.sparse)
            sp.set_data_3d(p[s, 0], p[s, 1], p[s, 2])
            ax.draw_artist(sh)
            for k in order:
                ax.draw_artist(bones[k][0])
            ax.draw_artist(dots)
            ax.draw_artist(sp)
        label = f"frame {t:>{len(str(self.num_frames_label))}d}/{self.num_frames_label}"
        if self.fps:
            label += f"  {t / self.fps:6.2f} s"
        self.counter.set_text(label)
        self.fig.draw_artist(self.counter)
        buf = np.asarray(canvas.buffer_rgba())
        return buf[..., :3].copy()

    def project(self, panel: int, world_points: np.ndarray) -> np.ndarray:
        """Pixel coordinates ``(N, 2)`` (x right, y down) of world points in a panel."""
        from mpl_toolkits.mplot3d import proj3d

        ax = self.axes[panel]
        p = world_to_plot(np.asarray(world_points, np.float64).reshape(-1, 3))
        x, y, _ = proj3d.proj_transform(p[:, 0], p[:, 1], p[:, 2], ax.M)
        disp = ax.transData.transform(np.stack([x, y], -1))
        return np.stack([disp[:, 0], self.height - disp[:, 1]], -1)

    def close(self):
        self.fig.clear()


def writer_for(out_path: str):
    """``'gif'`` or ``'ffmpeg'`` for an output path by its extension; a clear error for others
    (and for video without ffmpeg)."""
    ext = os.path.splitext(str(out_path))[1].lower()
    if ext == ".gif":
        return "gif"
    if ext in (".mp4", ".m4v", ".mov"):
        import importlib.util

        if importlib.util.find_spec("imageio_ffmpeg") is None:
            raise ConfigError(
                f"{out_path}: writing {ext} video needs ffmpeg through the imageio-ffmpeg package "
                "(pip install imageio-ffmpeg); or render to a .gif instead"
            )
        return "ffmpeg"
    raise ConfigError(f"{out_path}: unknown animation format {ext!r}; use .gif or .mp4")


def render(
    joints_list: Sequence[np.ndarray] | np.ndarray,
    out_path: str,
    fps: float,
    titles: Sequence[str] | None = None,
    sparse_joints: Sequence[int] = SPARSE_JOINTS,
    max_frames: int | None = None,
    stride: int | None = None,
    size: tuple[int, int] = (480, 480),
    view: tuple[float, float] | None = None,
    progress: bool = False,
) -> str:
    """Write an animation of one or more SMPL-22 motions side by side.

    Args:
      joints_list: list of ``(T, 22, 3)`` world-frame joint positions (metres, Y up), one
        panel each, left to right; a single array is one panel. Clips of different lengths
        are drawn up to the longest, shorter ones holding their last frame.
      out_path: ``.gif`` (Pillow) or ``.mp4`` (imageio with the imageio-ffmpeg package).
      fps: frame rate of the input; the output plays at ``fps / stride`` (real time).
      titles: one caption per panel.
      sparse_joints: joints drawn as large markers (default head and wrists).
      max_frames: keep at most this many output frames (after ``stride``).
      stride: draw every ``stride``-th frame (smaller GIFs).
      size: ``(width, height)`` in pixels of one panel; the output is
        ``(width * len(joints_list), height)``.
      view: ``(elevation, azimuth)`` in degrees of matplotlib's camera (Z-up plot frame, see
        :func:`world_to_plot`); default: 35 degrees off the first pose's front, 15 degrees up.
      progress: show a progress bar.

    Returns:
      ``out_path``.
    """
    clips = _check_joints(joints_list)
    if not fps or fps <= 0:
        raise ConfigError(f"render: fps must be positive, got {fps}")
    kind = writer_for(out_path)
    T = max(len(c) for c in clips)
    idx = _frame_indices(T, stride, max_frames)
    step = 1 if stride is None else int(stride)
    out_fps = float(fps) / step
    scene = _Scene(clips, titles, sparse_joints, size, view, T - 1, fps=float(fps))
    d = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(d, exist_ok=True)
    frames = _progress(idx, progress)
    try:
        if kind == "gif":
            _write_gif(scene, frames, out_path, out_fps)
        else:
            _write_video(scene, frames, out_path, out_fps)
    finally:
        scene.close()
    return str(out_path)


def _progress(idx, show: bool):
    if not show:
        return idx
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return idx
    return tqdm(idx, desc="render", unit="frame")


def _write_gif(scene: _Scene, frames, out_path: str, fps: float) -> None:
    from PIL import Image

    images = []
    palette = None
    for t in frames:
        im = Image.fromarray(scene.draw(int(t)))
        if palette is None:
            # one palette for the whole clip: consistent colours, fast quantisation
            palette = im.quantize(colors=255, method=Image.Quantize.MEDIANCUT)
        images.append(im.quantize(palette=palette, dither=Image.Dither.NONE))
    duration = max(int(round(1000.0 / fps)), 20)
    tmp = str(out_path) + ".tmp.gif"
    try:
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=duration, loop=0,
                       optimize=False, disposal=1)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_video(scene: _Scene, frames, out_path: str, fps: float) -> None:
    import imageio.v2 as imageio

    # libx264 / yuv420p needs even sizes: pad odd ones with one white row / column
    pad_h, pad_w = scene.height % 2, scene.width % 2
    writer = imageio.get_writer(out_path, fps=fps, codec="libx264", quality=7,
                                macro_block_size=1, pixelformat="yuv420p")
    try:
        for t in frames:
            img = scene.draw(int(t))
            if pad_h or pad_w:
                img = np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=255)
            writer.append_data(img)
    finally:
        writer.close()


def render_frame(
    joints: np.ndarray | Sequence[np.ndarray],
    frame: int,
    titles: Sequence[str] | None = None,
    sparse_joints: Sequence[int] = SPARSE_JOINTS,
    size: tuple[int, int] = (480, 480),
    view: tuple[float, float] | None = None,
) -> np.ndarray:
    """RGB image ``(H, W * panels, 3)`` of one frame, framed exactly as :func:`render` would."""
    clips = _check_joints(joints)
    T = max(len(c) for c in clips)
    if not -T <= frame < T:
        raise ConfigError(f"render_frame: frame {frame} out of range for {T} frames")
    scene = _Scene(clips, titles, sparse_joints, size, view, T - 1)
    try:
        return scene.draw(int(frame) % T)
    finally:
        scene.close()


def render_frame_png(
    joints: np.ndarray | Sequence[np.ndarray],
    frame: int,
    out_path: str,
    titles: Sequence[str] | None = None,
    sparse_joints: Sequence[int] = SPARSE_JOINTS,
    size: tuple[int, int] = (480, 480),
    view: tuple[float, float] | None = None,
) -> str:
    """Save one frame (as :func:`render` draws it) as a PNG; for checks and documentation."""
    from PIL import Image

    img = render_frame(joints, frame, titles=titles, sparse_joints=sparse_joints, size=size,
                       view=view)
    d = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(d, exist_ok=True)
    Image.fromarray(img).save(out_path)
    return str(out_path)


def _load_clip(path: str, clip: str | None) -> tuple[str, np.ndarray, float | None]:
    from mmar.data.clip import load_arrays

    data = load_arrays(str(path))
    names = sorted(data)
    if not names:
        raise DataFormatError("no clips in file", str(path))
    if clip is None:
        clip = names[0]
    if clip not in data:
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        raise DataFormatError(f"clip {clip!r} not found; available clips: {shown}", str(path))
    arrays = data[clip]
    if "joints" not in arrays:
        raise DataFormatError(f"clip {clip!r} has no 'joints' array (keys: {sorted(arrays)})",
                              str(path))
    j = np.asarray(arrays["joints"], np.float32)
    if j.ndim != 3 or j.shape[1:] != (NUM_JOINTS, 3):
        raise DataFormatError(f"clip {clip!r}: joints must be (T, {NUM_JOINTS}, 3), got {j.shape}",
                              str(path))
    fps = float(np.asarray(arrays["fps"]).reshape(-1)[0]) if "fps" in arrays else None
    return clip, j, fps


def render_npz(
    npz_path: str,
    out_path: str,
    clip: str | None = None,
    compare: str | None = None,
    *,
    fps: float | None = None,
    max_frames: int | None = None,
    stride: int | None = None,
    size: tuple[int, int] = (480, 480),
    sparse_joints: Sequence[int] = SPARSE_JOINTS,
    view: tuple[float, float] | None = None,
    progress: bool = False,
) -> str:
    """Render a clip of an npz in the ``mmar convert`` layout (``<clip>/joints``, ``<clip>/fps``).

    Args:
      npz_path: the npz file.
      out_path: ``.gif`` or ``.mp4``.
      clip: clip name; default the first in sorted order.
      compare: a second npz (e.g. predictions vs ground truth) whose clip of the same name is
        drawn in a panel to the right; panels are titled with the file names.
      fps: override the frame rate stored in the file (default: the file's, else 30).

    Raises:
      DataFormatError: naming the file, when the clip is missing in either file (listing the
        clips available there) or its arrays are malformed.
    """
    name, joints, file_fps = _load_clip(npz_path, clip)
    clips = [joints]
    titles = [f"{os.path.basename(str(npz_path))}: {name}"]
    if compare is not None:
        _, other, _ = _load_clip(compare, name)
        clips.append(other)
        titles = [os.path.basename(str(npz_path)), os.path.basename(str(compare))]
        titles = [f"{t}: {name}" for t in titles]
    rate = fps if fps is not None else (file_fps if file_fps and file_fps > 0 else 30.0)
    return render(clips, out_path, rate, titles=titles, sparse_joints=sparse_joints,
                  max_frames=max_frames, stride=stride, size=size, view=view, progress=progress)
