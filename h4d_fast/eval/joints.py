"""HMR2.0's 44-joint keypoint layout and conversions into it from COCO-17 and SMPL-45/24.

HMR2.0 (4D-Humans, Goel et al. 2023) supervises and predicts 44 keypoints: the 25 OpenPose
BODY_25 joints in OpenPose's order, then 19 "extra" joints, the first 19 of SPIN's 24
ground-truth joints (SPIN ``constants.JOINT_NAMES`` minus its nose, eyes and ears). Source of the
table: 4D-Humans ``hmr2/models/smpl_wrapper.py`` (``smpl_to_openpose = [24, 12, 17, 19, 21, 16,
18, 20, 0, 2, 5, 8, 1, 4, 7, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34]`` into smplx's SMPL-45
joints, then ``joint_regressor_extra`` = ``SMPL_to_J19.pkl``), the SPIN joint list it follows,
and the flip permutations of ``hmr2/datasets/utils.py``; written out by hand below.

Which slots each source fills (everything else gets confidence 0 and zero coordinates):

* **SMPL-45** (smplx order: 24 tree joints, nose, reye, leye, rear, lear, LBigToe, LSmallToe,
  LHeel, RBigToe, RSmallToe, RHeel, 10 fingertips): all 25 OpenPose slots, exactly as HMR2.0's
  ``smpl_to_openpose``; the 12 limb extras (ankles, knees, hips, wrists, elbows, shoulders) from
  the SMPL tree joints. The 7 torso/head extras (Neck (LSP), Top of Head (LSP), Pelvis (MPII),
  Thorax (MPII), Spine (H36M), Jaw (H36M), Head (H36M)) are regressed from the mesh vertices by
  HMR2.0's licensed ``SMPL_to_J19`` regressor: invalid here.
* **SMPL-24**: as SMPL-45 without the vertex joints: OpenPose nose, eyes, ears, toes and heels
  are invalid.
* **COCO-17**: OpenPose nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles and the
  12 limb extras; OpenPose Neck and MidHip are the midpoints of the shoulders / hips (OpenPose's
  own definition; confidence = the smaller of the two; ``derive_midpoints=False`` leaves them
  invalid); feet and the 7 torso/head extras invalid.

COCO hips and SMPL hips are different points (HMR2.0's ``update_hips`` moves SMPL's towards the
COCO ones); the conversion copies whatever the source has.

The Harmony4D benchmark matches HMR2.0 predictions to the ground truth in 2D with the first 24
keypoints reordered to the SMPL joints by :data:`OPENPOSE_TO_SMPL24` (:func:`hmr2_to_smpl24`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

NUM_HMR2 = 44

# name, SMPL-45 source, SMPL-24 source, COCO-17 source (-1: not available from that source)
HMR2_TABLE: tuple[tuple[str, int, int, int], ...] = (
    # --- OpenPose BODY_25
    ("OP Nose", 24, -1, 0),
    ("OP Neck", 12, 12, -1),  # COCO: midpoint of the shoulders (derived)
    ("OP RShoulder", 17, 17, 6),
    ("OP RElbow", 19, 19, 8),
    ("OP RWrist", 21, 21, 10),
    ("OP LShoulder", 16, 16, 5),
    ("OP LElbow", 18, 18, 7),
    ("OP LWrist", 20, 20, 9),
    ("OP MidHip", 0, 0, -1),  # COCO: midpoint of the hips (derived)
    ("OP RHip", 2, 2, 12),
    ("OP RKnee", 5, 5, 14),
    ("OP RAnkle", 8, 8, 16),
    ("OP LHip", 1, 1, 11),
    ("OP LKnee", 4, 4, 13),
    ("OP LAnkle", 7, 7, 15),
    ("OP REye", 25, -1, 2),
    ("OP LEye", 26, -1, 1),
    ("OP REar", 27, -1, 4),
    ("OP LEar", 28, -1, 3),
    ("OP LBigToe", 29, -1, -1),
    ("OP LSmallToe", 30, -1, -1),
    ("OP LHeel", 31, -1, -1),
    ("OP RBigToe", 32, -1, -1),
    ("OP RSmallToe", 33, -1, -1),
    ("OP RHeel", 34, -1, -1),
    # --- 19 extra joints (SPIN ground-truth joints 0..18)
    ("Right Ankle", 8, 8, 16),
    ("Right Knee", 5, 5, 14),
    ("Right Hip", 2, 2, 12),
    ("Left Hip", 1, 1, 11),
    ("Left Knee", 4, 4, 13),
    ("Left Ankle", 7, 7, 15),
    ("Right Wrist", 21, 21, 10),
    ("Right Elbow", 19, 19, 8),
    ("Right Shoulder", 17, 17, 6),
    ("Left Shoulder", 16, 16, 5),
    ("Left Elbow", 18, 18, 7),
    ("Left Wrist", 20, 20, 9),
    ("Neck (LSP)", -1, -1, -1),
    ("Top of Head (LSP)", -1, -1, -1),
    ("Pelvis (MPII)", -1, -1, -1),
    ("Thorax (MPII)", -1, -1, -1),
    ("Spine (H36M)", -1, -1, -1),
    ("Jaw (H36M)", -1, -1, -1),
    ("Head (H36M)", -1, -1, -1),
)  # fmt: skip

HMR2_JOINT_NAMES: tuple[str, ...] = tuple(r[0] for r in HMR2_TABLE)
HMR2_FROM_SMPL45: tuple[int, ...] = tuple(r[1] for r in HMR2_TABLE)
HMR2_FROM_SMPL24: tuple[int, ...] = tuple(r[2] for r in HMR2_TABLE)
HMR2_FROM_COCO17: tuple[int, ...] = tuple(r[3] for r in HMR2_TABLE)
# COCO-17 midpoints filling OpenPose Neck and MidHip
COCO_DERIVED: dict[int, tuple[int, int]] = {1: (5, 6), 8: (11, 12)}

# HMR2.0's horizontal-flip permutation (hmr2/datasets/utils.py: body_permutation + 25 + extra_permutation)
HMR2_FLIP: tuple[int, ...] = (
    0, 1, 5, 6, 7, 2, 3, 4, 8, 12, 13, 14, 9, 10, 11, 16, 15, 18, 17, 22, 23, 24, 19, 20, 21,
    30, 29, 28, 27, 26, 25, 36, 35, 34, 33, 32, 31, 37, 38, 39, 40, 41, 42, 43,
)  # fmt: skip

# The Harmony4D benchmark's reorder of HMR2.0's first 24 (OpenPose) keypoints to the 24 SMPL
# joints, used only for 2D matching: MidHip -> pelvis/spines, L/RSmallToe -> feet, Neck -> neck,
# shoulders -> collars, Nose -> head, wrists -> hands.
OPENPOSE_TO_SMPL24: tuple[int, ...] = (8, 12, 9, 8, 13, 10, 8, 14, 11, 8, 20, 23, 1, 5, 2, 0, 5, 2, 6, 3, 7, 4, 7, 4)

SOURCES = {"coco17": HMR2_FROM_COCO17, "smpl45": HMR2_FROM_SMPL45, "smpl24": HMR2_FROM_SMPL24}


def guess_source(num_joints: int) -> str:
    """``17 -> coco17``, ``45 -> smpl45``, ``24 -> smpl24`` (49 SPIN-style / 44 HMR2 are not sources)."""
    by = {17: "coco17", 45: "smpl45", 24: "smpl24"}
    if num_joints not in by:
        raise ValueError(f"cannot tell the joint layout of {num_joints} joints (expected 17 COCO, 24 or 45 SMPL)")
    return by[num_joints]


def _convert(kpts, source: str | None, dims: int, derive_midpoints: bool):
    is_np = isinstance(kpts, np.ndarray)
    x = torch.as_tensor(np.asarray(kpts)) if is_np else kpts
    if not x.is_floating_point():
        x = x.double()
    J, D = x.shape[-2], x.shape[-1]
    if D not in (dims, dims + 1):
        raise ValueError(f"expected [..., J, {dims}] or [..., J, {dims + 1}] keypoints, got {tuple(x.shape)}")
    src = source or guess_source(J)
    if src not in SOURCES:
        raise ValueError(f"unknown source layout {src!r} (known: {', '.join(SOURCES)})")
    table = SOURCES[src]
    need = max(table) + 1
    if J < need:
        raise ValueError(f"{src} keypoints need at least {need} joints, got {J}")
    xyz = x[..., :dims]
    conf = x[..., dims] if D == dims + 1 else torch.ones(x.shape[:-1], dtype=x.dtype, device=x.device)
    conf = torch.nan_to_num(conf, nan=0.0)
    finite = torch.isfinite(xyz).all(-1)
    conf = torch.where(finite, conf, torch.zeros_like(conf))
    xyz = torch.where(finite[..., None], xyz, torch.zeros_like(xyz))
    out = x.new_zeros(*x.shape[:-2], NUM_HMR2, dims + 1)
    dst = [i for i, s in enumerate(table) if s >= 0]
    srcs = [table[i] for i in dst]
    di = torch.tensor(dst, dtype=torch.long, device=x.device)
    si = torch.tensor(srcs, dtype=torch.long, device=x.device)
    out[..., di, :dims] = xyz[..., si, :]
    out[..., di, dims] = conf[..., si]
    if src == "coco17" and derive_midpoints:
        for slot, (a, b) in COCO_DERIVED.items():
            c = torch.minimum(conf[..., a], conf[..., b])
            ok = c > 0
            mid = 0.5 * (xyz[..., a, :] + xyz[..., b, :])
            out[..., slot, :dims] = torch.where(ok[..., None], mid, torch.zeros_like(mid))
            out[..., slot, dims] = torch.where(ok, c, torch.zeros_like(c))
    # invalid slots: zero coordinates
    out[..., :dims] = torch.where(out[..., dims:] > 0, out[..., :dims], torch.zeros_like(out[..., :dims]))
    return out.numpy() if is_np else out


def to_hmr2_2d(kpts: Tensor | np.ndarray, source: str | None = None, derive_midpoints: bool = True) -> Tensor | np.ndarray:
    """2D keypoints ``[..., J, 2]`` or ``[..., J, 3]`` (x, y, confidence) -> ``[..., 44, 3]``.

    ``source``: ``coco17`` / ``smpl45`` / ``smpl24`` (default: from ``J``). Missing confidence
    counts as 1; non-finite points and slots the source cannot fill get confidence 0 and zeros.
    """
    return _convert(kpts, source, 2, derive_midpoints)


def to_hmr2_3d(kpts: Tensor | np.ndarray, source: str | None = None, derive_midpoints: bool = True) -> Tensor | np.ndarray:
    """3D keypoints ``[..., J, 3]`` or ``[..., J, 4]`` (x, y, z, confidence/valid) -> ``[..., 44, 4]``."""
    return _convert(kpts, source, 3, derive_midpoints)


def to_hmr2(kpts: Tensor | np.ndarray, source: str | None = None, derive_midpoints: bool = True) -> Tensor | np.ndarray:
    """``[..., J, 2]`` -> 2D conversion; ``[..., J, 3]`` -> **3D** points (confidence 1);
    ``[..., J, 4]`` -> 3D with confidence. For 2D keypoints with a confidence channel use
    :func:`to_hmr2_2d` (``[..., J, 3]`` is ambiguous)."""
    D = kpts.shape[-1]
    return _convert(kpts, source, 2 if D == 2 else 3, derive_midpoints)


def hmr2_to_smpl24(kpts44: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """HMR2.0 keypoints ``[..., 44 (or >= 25), D]`` -> ``[..., 24, D]`` in the SMPL joint order
    through :data:`OPENPOSE_TO_SMPL24` (the benchmark's 2D matching input)."""
    return kpts44[..., list(OPENPOSE_TO_SMPL24), :]


def hmr2_table_markdown(rows: Sequence[tuple[str, int, int, int]] = HMR2_TABLE) -> str:
    """The conversion table as Markdown (index, name, SMPL-45, SMPL-24, COCO-17 sources)."""
    lines = ["| # | HMR2.0 joint | SMPL-45 | SMPL-24 | COCO-17 |", "|---|---|---|---|---|"]
    for i, (n, a, b, c) in enumerate(rows):
        cc = f"mid({COCO_DERIVED[i][0]},{COCO_DERIVED[i][1]})" if i in COCO_DERIVED else (str(c) if c >= 0 else "-")
        lines.append(f"| {i} | {n} | {a if a >= 0 else '-'} | {b if b >= 0 else '-'} | {cc} |")
    return "\n".join(lines)


__all__ = [
    "COCO_DERIVED",
    "HMR2_FLIP",
    "HMR2_FROM_COCO17",
    "HMR2_FROM_SMPL24",
    "HMR2_FROM_SMPL45",
    "HMR2_JOINT_NAMES",
    "HMR2_TABLE",
    "NUM_HMR2",
    "OPENPOSE_TO_SMPL24",
    "hmr2_table_markdown",
    "hmr2_to_smpl24",
    "to_hmr2",
    "to_hmr2_2d",
    "to_hmr2_3d",
]
