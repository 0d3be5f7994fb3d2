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

# --------------------------------------------------------------------------
# The canonical T-pose (docs/design.md, "Canonical rest pose")
# --------------------------------------------------------------------------
# The body stands upright facing +Z, Y up, its left side towards +X; legs straight down, arms
# straight out sideways (left arm along +X, palms down), feet pointing forward. In this pose
# the canonical frame of every SMPL-22 joint is the world frame: the global rotation of each
# joint is the identity. A source skeleton's joint frames are tied to these canonical frames
# through its own rest pose (mmar.data.bvh.rest_alignment): per joint, the frame whose
# `primary` axis points along a bone of the rest pose and whose `secondary` axis is as close
# as possible to a reference direction.
#
# One rule per SMPL-22 joint, in joint order:
#   (primary axis, (from joint, to joint), secondary axis, secondary reference)
# The primary direction is the rest-pose vector between the two joints (for a joint without
# children in SMPL-22 - head, wrists, feet - the bone that ends at it). The secondary
# reference is ("joints", a, b), the vector from joint a to joint b, or ("frame", k), the
# secondary axis of joint k's canonical frame (k is the pelvis 0 or spine3 9, whose frames
# are built first from joints alone).
CANONICAL_REST_RULES: tuple[tuple[str, tuple[int, int], str, tuple], ...] = (
    ("+X", (2, 1), "+Y", ("joints", 0, 9)),     # 0 pelvis: right hip -> left hip, up to spine3
    ("-Y", (1, 4), "+Z", ("frame", 0)),         # 1 left_hip: down the thigh, facing forward
    ("-Y", (2, 5), "+Z", ("frame", 0)),         # 2 right_hip
    ("+Y", (3, 6), "+X", ("frame", 0)),         # 3 spine1: up the spine, left as the pelvis
    ("-Y", (4, 7), "+Z", ("frame", 0)),         # 4 left_knee: down the shin
    ("-Y", (5, 8), "+Z", ("frame", 0)),         # 5 right_knee
    ("+Y", (6, 9), "+X", ("frame", 0)),         # 6 spine2
    ("+Z", (7, 10), "+X", ("frame", 0)),        # 7 left_ankle: along the foot to the toes
    ("+Z", (8, 11), "+X", ("frame", 0)),        # 8 right_ankle
    ("+Y", (9, 12), "+X", ("joints", 17, 16)),  # 9 spine3: up to the neck, right -> left shoulder
    ("+Z", (7, 10), "+X", ("frame", 0)),        # 10 left_foot (the foot bone)
    ("+Z", (8, 11), "+X", ("frame", 0)),        # 11 right_foot
    ("+Y", (12, 15), "+X", ("frame", 9)),       # 12 neck: up to the head
    ("+X", (13, 16), "+Z", ("frame", 9)),       # 13 left_collar: out to the shoulder
    ("-X", (14, 17), "+Z", ("frame", 9)),       # 14 right_collar
    ("+Y", (12, 15), "+X", ("frame", 9)),       # 15 head (the neck bone)
    ("+X", (16, 18), "+Z", ("frame", 9)),       # 16 left_shoulder: along the upper arm
    ("-X", (17, 19), "+Z", ("frame", 9)),       # 17 right_shoulder
    ("+X", (18, 20), "+Z", ("frame", 9)),       # 18 left_elbow: along the forearm
    ("-X", (19, 21), "+Z", ("frame", 9)),       # 19 right_elbow
    ("+X", (18, 20), "+Z", ("frame", 9)),       # 20 left_wrist (the forearm bone)
    ("-X", (19, 21), "+Z", ("frame", 9)),       # 21 right_wrist
)

# How far (degrees) each joint's primary direction may be from its canonical direction,
# measured in the pelvis frame, for a rest pose to count as a standing T- or A-pose (arms may
# hang down to 75 degrees below the horizontal; everything else within 50 degrees).
CANONICAL_REST_TOLERANCE_DEG: tuple[float, ...] = (
    50.0, 50.0, 50.0, 50.0, 50.0, 50.0, 50.0, 50.0, 50.0, 50.0, 50.0,
    50.0, 50.0, 75.0, 75.0, 50.0, 75.0, 75.0, 75.0, 75.0, 75.0, 75.0,
)
