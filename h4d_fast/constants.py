"""Fixed tables: COCO-17 keypoints, OKS sigmas, limbs, left/right pairs, the SMPL kinematic tree.

Everything here is public convention (COCO keypoint definition, the 24-joint SMPL tree
layout); nothing is derived from licensed model data.
"""

from __future__ import annotations

#: distortion coefficients per camera (:class:`h4d_fast.camera.CameraSet` ``dist`` layout)
NUM_DIST = 8

COCO17_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
NUM_COCO = 17

# COCO keypoint sigmas (the pycocotools values).
COCO_SIGMAS: tuple[float, ...] = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)

# Left/right mirror of each COCO index (used for flips and swap checks).
COCO_FLIP: tuple[int, ...] = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)

# The 19 COCO skeleton limbs, 0-based (the COCO annotation file's skeleton, face limbs included).
COCO_LIMBS: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
    (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

# Eight left/right limb pairs, as indices into COCO_LIMBS:
# leg (ankle-knee), thigh, torso side, upper arm, forearm, face (nose-eye), ear (eye-ear), neck (ear-shoulder).
COCO_SYMMETRIC_LIMB_PAIRS: tuple[tuple[int, int], ...] = (
    (0, 2), (1, 3), (5, 6), (8, 9), (10, 11), (13, 14), (15, 16), (17, 18),
)

# Body (non-face) limbs: the ones whose length is stable enough for outlier rejection.
COCO_BODY_LIMBS: tuple[int, ...] = tuple(range(12))

# --- SMPL 24-joint kinematic tree (public layout of the SMPL family) ---
SMPL_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)
SMPL_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21,
)
NUM_SMPL_JOINTS = 24

# COCO-17 -> SMPL-45 joint slots used by the reference pipeline (mmhuman3d mapping with the
# SMPL hips): body joints come from the kinematic tree, the five face points are vertex joints.
COCO_TO_SMPL45: tuple[int, ...] = (
    24, 26, 25, 28, 27,  # nose, left_eye, right_eye, left_ear, right_ear (smplx order: nose, reye, leye, rear, lear)
    16, 17, 18, 19, 20, 21,  # shoulders, elbows, wrists (L, R)
    1, 2, 4, 5, 7, 8,  # hips, knees, ankles (L, R)
)
# COCO indices that map onto SMPL tree joints (not face vertices).
COCO_BODY_FROM_SMPL24: dict[int, int] = {
    5: 16, 6: 17, 7: 18, 8: 19, 9: 20, 10: 21, 11: 1, 12: 2, 13: 4, 14: 5, 15: 7, 16: 8,
}

DEFAULT_PERSON_NAMES: tuple[str, ...] = ("aria01", "aria02")
