"""The SMPL-22 body skeleton and the joint groups used by data, models and metrics.

The one home of every skeleton constant (joint indices, joint groups, the layout of the
54-number sparse input); plain Python, no numpy or JAX, so any module can import it.
"""
from __future__ import annotations

SMPL22_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
)
SMPL22_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19,
)
NUM_JOINTS = 22

# Tracked joints: the head (the body is placed so that its head meets the tracked head) and
# the wrists.
HEAD = 15
LEFT_WRIST = 20
RIGHT_WRIST = 21

# Sparse VR signals: head, left wrist, right wrist.
SPARSE_JOINTS: tuple[int, ...] = (HEAD, LEFT_WRIST, RIGHT_WRIST)
SPARSE_DIM = 54

# Layout of the 54 numbers per frame (three joints each, in SPARSE_JOINTS order).
SPARSE_ROT6D = slice(0, 18)  # global rotation, 6D
SPARSE_ROTVEL = slice(18, 36)  # rotation velocity R_{t-1}^T R_t, 6D
SPARSE_POS = slice(36, 45)  # global position
SPARSE_POSVEL = slice(45, 54)  # position difference p_t - p_{t-1}
SPARSE_HEAD_POS = slice(36, 39)  # the tracked head position (first of SPARSE_POS)
SPARSE_SLICES: dict[str, slice] = {
    "rot6d": SPARSE_ROT6D,
    "rotvel6d": SPARSE_ROTVEL,
    "pos": SPARSE_POS,
    "posdiff": SPARSE_POSVEL,
}

# Joint groups of the metrics (AGRoL conventions).
HANDS: tuple[int, ...] = (LEFT_WRIST, RIGHT_WRIST)
UPPER: tuple[int, ...] = (3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21)
LOWER: tuple[int, ...] = (0, 1, 2, 4, 5, 7, 8, 10, 11)
ROOT: tuple[int, ...] = (0,)

# HumanML3D kinematic chains and constants (the t2m skeleton of mmar.data.hml_features).
KINEMATIC_CHAINS: tuple[tuple[int, ...], ...] = (
    (0, 2, 5, 8, 11), (0, 1, 4, 7, 10), (0, 3, 6, 9, 12, 15), (9, 14, 17, 19, 21),
    (9, 13, 16, 18, 20),
)
FOOT_RIGHT: tuple[int, int] = (8, 11)
FOOT_LEFT: tuple[int, int] = (7, 10)
FACE_JOINTS: tuple[int, int, int, int] = (2, 1, 17, 16)  # r_hip, l_hip, r_shoulder, l_shoulder
MIRROR_RIGHT: tuple[int, ...] = (2, 5, 8, 11, 14, 17, 19, 21)
MIRROR_LEFT: tuple[int, ...] = (1, 4, 7, 10, 13, 16, 18, 20)
