"""Procedural SMPL-layout skeletons, batched forward kinematics, COCO-17 from the tree, body capsules.

Conventions (the SMPL family's): the rest pose is a T-pose, y up, facing +z, the body's left on +x,
all joint frames aligned with the rest frame. A pose is ``global_orient [.., 3]`` + ``body_pose
[.., 23*3]`` (axis-angle per joint of :data:`h4d_fast.constants.SMPL_PARENTS`) + ``transl [.., 3]``;
world joints are the rest joints rotated about the root joint, then shifted: ``posed_root =
J_rest[0] + transl``. The generator's world frame is z-up, so ``global_orient`` contains the
y-up -> z-up rotation.

A :class:`Skeleton` carries what the generator needs about one body: rest joints, the five COCO
face points as offsets in the head joint's frame, and capsule radii for occlusion. It is built
procedurally from anthropometric segment proportions (:func:`make_skeleton`), or from a body model's
rest joints and face vertices through :meth:`Skeleton.from_rest` (the hook for a real SMPL model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..constants import NUM_SMPL_JOINTS, SMPL_PARENTS
from .rotations import axis_angle_to_matrix

# SMPL joint indices used here.
PELVIS, L_HIP, R_HIP, SPINE1, L_KNEE, R_KNEE, SPINE2, L_ANKLE, R_ANKLE, SPINE3 = range(10)
L_FOOT, R_FOOT, NECK, L_COLLAR, R_COLLAR, HEAD, L_SHOULDER, R_SHOULDER = range(10, 18)
L_ELBOW, R_ELBOW, L_WRIST, R_WRIST, L_HAND, R_HAND = range(18, 24)
HEAD_CENTRE = 24  # extra point index (head sphere centre) in capsule definitions

# COCO-17 body keypoints -> SMPL tree joints (index 5.. of COCO).
COCO_BODY_JOINTS: tuple[int, ...] = (L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST, L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE)

# Body capsules: (name, end point a, end point b) as indices into joints24 + [head centre].
CAPSULES: tuple[tuple[str, int, int], ...] = (
    ("torso_core", PELVIS, SPINE3),
    ("torso_left", L_HIP, L_SHOULDER),
    ("torso_right", R_HIP, R_SHOULDER),
    ("neck", NECK, HEAD),
    ("head", HEAD_CENTRE, HEAD_CENTRE),
    ("upper_arm_l", L_SHOULDER, L_ELBOW),
    ("upper_arm_r", R_SHOULDER, R_ELBOW),
    ("forearm_l", L_ELBOW, L_WRIST),
    ("forearm_r", R_ELBOW, R_WRIST),
    ("hand_l", L_WRIST, L_HAND),
    ("hand_r", R_WRIST, R_HAND),
    ("thigh_l", L_HIP, L_KNEE),
    ("thigh_r", R_HIP, R_KNEE),
    ("shin_l", L_KNEE, L_ANKLE),
    ("shin_r", R_KNEE, R_ANKLE),
    ("foot_l", L_ANKLE, L_FOOT),
    ("foot_r", R_ANKLE, R_FOOT),
)
CAPSULE_INDEX = {name: i for i, (name, _, _) in enumerate(CAPSULES)}
NUM_CAPSULES = len(CAPSULES)
# Capsule radius as a fraction of body height (limb and torso widths are further scaled by build).
CAPSULE_RADIUS_FRAC: dict[str, float] = {
    "torso_core": 0.066, "torso_left": 0.05, "torso_right": 0.05, "neck": 0.032, "head": 0.062,
    "upper_arm_l": 0.027, "upper_arm_r": 0.027, "forearm_l": 0.021, "forearm_r": 0.021,
    "hand_l": 0.017, "hand_r": 0.017, "thigh_l": 0.045, "thigh_r": 0.045,
    "shin_l": 0.03, "shin_r": 0.03, "foot_l": 0.022, "foot_r": 0.022,
}
# Own capsules a COCO keypoint sits in (never occlude it).
_ATTACHED: dict[int, tuple[str, ...]] = {
    0: ("neck", "head"), 1: ("neck", "head"), 2: ("neck", "head"), 3: ("neck", "head"), 4: ("neck", "head"),
    5: ("torso_left", "upper_arm_l"), 6: ("torso_right", "upper_arm_r"),
    7: ("upper_arm_l", "forearm_l"), 8: ("upper_arm_r", "forearm_r"),
    9: ("forearm_l", "hand_l"), 10: ("forearm_r", "hand_r"),
    11: ("torso_core", "torso_left", "thigh_l"), 12: ("torso_core", "torso_right", "thigh_r"),
    13: ("thigh_l", "shin_l"), 14: ("thigh_r", "shin_r"),
    15: ("shin_l", "foot_l"), 16: ("shin_r", "foot_r"),
}
ATTACHED_MASK = torch.zeros(17, NUM_CAPSULES, dtype=torch.bool)  # [17, C] True = own capsule ignored
for _k, _names in _ATTACHED.items():
    for _n in _names:
        ATTACHED_MASK[_k, CAPSULE_INDEX[_n]] = True

# --- anthropometric rest skeleton (fractions of body height H; x lateral (+left), y above floor, z forward)
# Segment proportions follow the classic Drillis-Contini table: thigh 0.245 H, shank 0.246 H,
# ankle height 0.039 H, upper arm 0.186 H, forearm 0.146 H, shoulder height ~0.81 H, eyes 0.936 H.
_LATERAL = {L_HIP: 0.041, L_KNEE: 0.044, L_ANKLE: 0.043, L_FOOT: 0.052, L_COLLAR: 0.044, L_SHOULDER: 0.101}
_REST_FRAC: dict[int, tuple[float, float, float]] = {
    PELVIS: (0.0, 0.575, 0.0),
    L_HIP: (0.0, 0.530, 0.002),
    SPINE1: (0.0, 0.635, -0.008),
    L_KNEE: (0.0, 0.285, 0.006),
    SPINE2: (0.0, 0.700, -0.006),
    L_ANKLE: (0.0, 0.039, -0.012),
    SPINE3: (0.0, 0.738, 0.010),
    L_FOOT: (0.0, 0.012, 0.072),
    NECK: (0.0, 0.836, -0.012),
    L_COLLAR: (0.0, 0.806, -0.006),
    HEAD: (0.0, 0.872, 0.012),
    L_SHOULDER: (0.0, 0.808, -0.012),
}
_UPPER_ARM, _FOREARM, _HAND = 0.186, 0.146, 0.05
# Face points relative to the head joint (fractions of H): nose, left eye, right eye, left ear, right ear.
_FACE_FRAC = ((0.0, 0.033, 0.062), (0.018, 0.064, 0.050), (-0.018, 0.064, 0.050), (0.043, 0.050, -0.004), (-0.043, 0.050, -0.004))
_HEAD_CENTRE_FRAC = (0.0, 0.063, 0.006)


@dataclass
class Skeleton:
    """One body's rest geometry (SMPL joint layout, metres, rest frame y-up / +z forward / +x left).

    Attributes:
        rest_joints: ``[24, 3]`` rest (T-pose) joint positions; the pelvis is near the origin.
        face_offsets: ``[5, 3]`` nose, left eye, right eye, left ear, right ear relative to the head
            joint, in the head joint's (rest-aligned) frame.
        head_centre: ``[3]`` head-sphere centre relative to the head joint.
        radii: ``[C]`` capsule radii in :data:`CAPSULES` order.
        height: standing height in metres (informational).
        build: lateral width factor (informational; already baked into joints and radii).
        name: free label.
    """

    rest_joints: Tensor
    face_offsets: Tensor
    head_centre: Tensor
    radii: Tensor
    height: float
    build: float = 1.0
    name: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.rest_joints.shape) != (NUM_SMPL_JOINTS, 3):
            raise ValueError(f"Skeleton.rest_joints: expected [24, 3], got {tuple(self.rest_joints.shape)}")
        if tuple(self.face_offsets.shape) != (5, 3):
            raise ValueError(f"Skeleton.face_offsets: expected [5, 3], got {tuple(self.face_offsets.shape)}")
        if tuple(self.radii.shape) != (NUM_CAPSULES,):
            raise ValueError(f"Skeleton.radii: expected [{NUM_CAPSULES}], got {tuple(self.radii.shape)}")

    @staticmethod
    def from_rest(
        rest_joints: Tensor | np.ndarray,
        face_offsets: Tensor | np.ndarray,
        head_centre: Tensor | np.ndarray | None = None,
        radii: Tensor | np.ndarray | None = None,
        name: str = "",
    ) -> "Skeleton":
        """Hook for a body model: rest joints ``[24, 3]`` (e.g. ``J_regressor @ v_template``) and the five
        face points ``[5, 3]`` relative to the head joint. Head sphere and capsule radii default to
        proportions of the height estimated from the joints."""
        J = torch.as_tensor(np.asarray(rest_joints), dtype=torch.float64)
        fo = torch.as_tensor(np.asarray(face_offsets), dtype=torch.float64)
        H = float(skeleton_height(J))
        hc = torch.tensor(_HEAD_CENTRE_FRAC, dtype=torch.float64) * H if head_centre is None else torch.as_tensor(np.asarray(head_centre), dtype=torch.float64)
        r = default_radii(H) if radii is None else torch.as_tensor(np.asarray(radii), dtype=torch.float64)
        return Skeleton(J, fo, hc, r, height=H, name=name)

    def bone_lengths(self) -> Tensor:
        """``[23]`` rest distances joint -> parent (joints 1..23)."""
        par = torch.tensor(SMPL_PARENTS[1:])
        return (self.rest_joints[1:] - self.rest_joints[par]).norm(dim=-1)


SkeletonFn = Callable[[int, np.random.Generator], Skeleton]
"""Optional hook ``(person_index, rng) -> Skeleton`` (e.g. a body model with sampled shape)."""


def default_radii(height: float, build: float = 1.0) -> Tensor:
    """``[C]`` capsule radii (metres) for a body of this height and lateral build."""
    r = []
    for name, _, _ in CAPSULES:
        w = build if name not in ("head", "neck") else 1.0
        r.append(CAPSULE_RADIUS_FRAC[name] * height * w)
    return torch.tensor(r, dtype=torch.float64)


def make_skeleton(height: float, build: float = 1.0, arm_scale: float = 1.0, leg_scale: float = 1.0, name: str = "") -> Skeleton:
    """Procedural rest skeleton from segment proportions.

    Args:
        height: standing height in metres (e.g. 1.62-1.90).
        build: lateral width factor (hips, shoulders, capsule radii), ~0.9-1.15.
        arm_scale, leg_scale: small proportion variations of the arm / leg segment lengths.
    """
    H = float(height)
    J = np.zeros((NUM_SMPL_JOINTS, 3))
    for j, (x, y, z) in _REST_FRAC.items():
        J[j] = (x, y, z)
    for j, lat in _LATERAL.items():
        J[j, 0] = lat * build
    # legs: keep the floor fixed, stretch the segments about it
    for j in (L_HIP, L_KNEE, L_ANKLE, L_FOOT):
        J[j, 1] = J[j, 1] * leg_scale
    J[PELVIS, 1] = J[L_HIP, 1] + 0.045
    # the upper body rides on the hips
    dy = J[PELVIS, 1] - 0.575
    for j in (SPINE1, SPINE2, SPINE3, NECK, L_COLLAR, HEAD, L_SHOULDER):
        J[j, 1] += dy
    # arms in the T-pose along +x
    sh = J[L_SHOULDER]
    J[L_ELBOW] = sh + (_UPPER_ARM * arm_scale, 0.0, -0.004)
    J[L_WRIST] = J[L_ELBOW] + (_FOREARM * arm_scale, 0.0, 0.0)
    J[L_HAND] = J[L_WRIST] + (_HAND * arm_scale, -0.003, -0.004)
    # mirror left -> right
    for lj, rj in ((L_HIP, R_HIP), (L_KNEE, R_KNEE), (L_ANKLE, R_ANKLE), (L_FOOT, R_FOOT), (L_COLLAR, R_COLLAR),
                   (L_SHOULDER, R_SHOULDER), (L_ELBOW, R_ELBOW), (L_WRIST, R_WRIST), (L_HAND, R_HAND)):
        J[rj] = J[lj] * (-1.0, 1.0, 1.0)
    J = J * H
    floor_y = -J[PELVIS, 1]
    J = J - J[PELVIS]  # pelvis at the origin
    face = np.asarray(_FACE_FRAC) * H
    return Skeleton(
        rest_joints=torch.tensor(J, dtype=torch.float64),
        face_offsets=torch.tensor(face, dtype=torch.float64),
        head_centre=torch.tensor(_HEAD_CENTRE_FRAC, dtype=torch.float64) * H,
        radii=default_radii(H, build),
        height=H,
        build=float(build),
        name=name,
        extra={"floor_y": float(floor_y)},
    )


def skeleton_height(rest_joints: Tensor) -> Tensor:
    """Standing height ``[...]`` estimated from rest joints ``[..., 24, 3]`` (y up): head joint above the
    ankles over the anthropometric fraction of the height between them."""
    J = rest_joints
    return (J[..., HEAD, 1] - J[..., [L_ANKLE, R_ANKLE], 1].mean(-1)) / (0.872 - 0.039)


def random_skeletons(rng: np.random.Generator, height_range: tuple[float, float], build_range: tuple[float, float], n: int = 2) -> list[Skeleton]:
    """``n`` procedural skeletons with distinct heights (at least 6 cm apart) and builds from ``rng``."""
    lo, hi = height_range
    hs = rng.uniform(lo, hi, size=n)
    for _ in range(20):
        if n < 2 or np.min(np.diff(np.sort(hs))) >= min(0.06, (hi - lo) / (2 * n)):
            break
        hs = rng.uniform(lo, hi, size=n)
    builds = rng.uniform(*build_range, size=n)
    arm = rng.uniform(0.97, 1.03, size=n)
    leg = rng.uniform(0.97, 1.03, size=n)
    return [make_skeleton(float(hs[i]), float(builds[i]), float(arm[i]), float(leg[i]), name=f"person{i}") for i in range(n)]


# ------------------------------------------------------------------- kinematics
_PARENTS = SMPL_PARENTS


def fk_matrices(rest_joints: Tensor, rot_local: Tensor, transl: Tensor) -> tuple[Tensor, Tensor]:
    """Forward kinematics from local rotation matrices.

    Args:
        rest_joints: ``[..., 24, 3]`` (broadcast against the pose batch).
        rot_local: ``[..., 24, 3, 3]`` local joint rotations (index 0 = global orientation).
        transl: ``[..., 3]``.
    Returns:
        joints ``[..., 24, 3]`` world positions and global rotations ``[..., 24, 3, 3]``.
    """
    batch = torch.broadcast_shapes(rest_joints.shape[:-2], rot_local.shape[:-3], transl.shape[:-1])
    J = rest_joints.to(rot_local.dtype).expand(*batch, NUM_SMPL_JOINTS, 3)
    Rl = rot_local.expand(*batch, NUM_SMPL_JOINTS, 3, 3)
    G: list[Tensor] = [Rl[..., 0, :, :]]
    X: list[Tensor] = [J[..., 0, :] + transl.to(rot_local.dtype).expand(*batch, 3)]
    for i in range(1, NUM_SMPL_JOINTS):
        p = _PARENTS[i]
        off = J[..., i, :] - J[..., p, :]
        X.append(X[p] + (G[p] @ off[..., None])[..., 0])
        G.append(G[p] @ Rl[..., i, :, :])
    return torch.stack(X, -2), torch.stack(G, -3)


def forward_kinematics(
    rest_joints: Tensor,
    global_orient: Tensor,
    body_pose: Tensor,
    transl: Tensor,
    return_rotations: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Batched SMPL-tree forward kinematics from axis-angle parameters.

    Args:
        rest_joints: ``[P?, 24, 3]`` rest joints, broadcast against the pose batch (e.g. ``[P, 24, 3]``
            with poses ``[F, P, ...]``).
        global_orient: ``[..., 3]`` root axis-angle.
        body_pose: ``[..., 69]`` axis-angle of joints 1..23.
        transl: ``[..., 3]``; ``posed_root = rest_joints[0] + transl``.
        return_rotations: also return the global joint rotations ``[..., 24, 3, 3]``.
    Returns:
        joints ``[..., 24, 3]`` (and rotations).
    """
    aa = torch.cat([global_orient[..., None, :], body_pose.reshape(*body_pose.shape[:-1], NUM_SMPL_JOINTS - 1, 3)], -2)
    joints, G = fk_matrices(rest_joints, axis_angle_to_matrix(aa), transl)
    return (joints, G) if return_rotations else joints


def coco17_from_skeleton(joints24: Tensor, head_rotation: Tensor, face_offsets: Tensor) -> Tensor:
    """COCO-17 keypoints from the tree.

    Args:
        joints24: ``[..., 24, 3]`` posed joints.
        head_rotation: ``[..., 3, 3]`` global rotation of the head joint (15), or the full global
            rotations ``[..., 24, 3, 3]`` (the head's is taken).
        face_offsets: ``[..., 5, 3]`` (broadcast) nose/eyes/ears relative to the head joint.
    Returns:
        ``[..., 17, 3]`` in COCO order.
    """
    if head_rotation.dim() == joints24.dim() + 1:  # full global rotations [..., 24, 3, 3]
        head_rotation = head_rotation[..., HEAD, :, :]
    fo = face_offsets.to(joints24.dtype)
    face = joints24[..., HEAD, None, :] + torch.einsum("...ij,...kj->...ki", head_rotation, fo)  # [..., 5, 3]
    body = joints24[..., list(COCO_BODY_JOINTS), :]  # [..., 12, 3]
    return torch.cat([face, body], -2)


def capsule_points(joints24: Tensor, head_rotation: Tensor, head_centre: Tensor) -> tuple[Tensor, Tensor]:
    """Capsule end points ``(a, b)``, each ``[..., C, 3]``, from posed joints and the head rotation ``[..., 3, 3]``."""
    hc = joints24[..., HEAD, :] + (head_rotation @ head_centre.to(joints24.dtype)[..., :, None])[..., 0]
    pts = torch.cat([joints24, hc[..., None, :]], -2)  # [..., 25, 3]
    ia = [a for _, a, _ in CAPSULES]
    ib = [b for _, _, b in CAPSULES]
    return pts[..., ia, :], pts[..., ib, :]
