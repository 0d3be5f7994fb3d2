"""Visualisation: animated 3D skeletons of SMPL-22 joint positions (``mmar render``)."""
from mmar.viz.render import (
    COLORS,
    facing_direction,
    render,
    render_frame,
    render_frame_png,
    render_npz,
    world_to_plot,
)

__all__ = [
    "COLORS", "facing_direction", "render", "render_frame", "render_frame_png", "render_npz",
    "world_to_plot",
]
