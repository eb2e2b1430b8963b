"""A small body-part segmentation of a SMPL-layout body model's vertices, from its skinning weights.

Each vertex belongs to the joint with the largest linear-blend-skinning weight, and each of the 24
SMPL tree joints to one of :data:`PART_NAMES` (:data:`PART_OF_JOINT`, by joint name): the part is
the body segment that the joint's rotation moves (``left_hip`` -> ``left_thigh``, ``left_knee``
-> ``left_lower_leg``, ...). Nothing here is stored: the labels follow from whatever body model is
loaded (the embedded default, or the user's own SMPL files), so no SMPL-derived data is shipped.

    parts = body_parts(load_body_model())          # BodyParts(names, vertex_part [V])
    parts.names[parts.vertex_part[i]]              # "left_hand", ...
    parts.regions(contact)                         # [..., V] bool -> [..., R] bool
    parts.region_names(contact[f, 0])              # -> ["left_hand", "chest"]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from ..constants import NUM_SMPL_JOINTS, SMPL_JOINT_NAMES

PART_NAMES: tuple[str, ...] = (
    "head", "neck", "chest", "abdomen", "hips",
    "left_upper_arm", "left_forearm", "left_hand",
    "right_upper_arm", "right_forearm", "right_hand",
    "left_thigh", "left_lower_leg", "left_foot",
    "right_thigh", "right_lower_leg", "right_foot",
)  # fmt: skip
"""The parts, in label order (``vertex_part`` indexes this tuple)."""

PART_OF_JOINT: dict[str, str] = {
    "pelvis": "hips",
    "spine1": "abdomen",
    "spine2": "chest",
    "spine3": "chest",
    "left_collar": "chest",
    "right_collar": "chest",
    "neck": "neck",
    "head": "head",
    "left_shoulder": "left_upper_arm",
    "left_elbow": "left_forearm",
    "left_wrist": "left_hand",
    "left_hand": "left_hand",
    "right_shoulder": "right_upper_arm",
    "right_elbow": "right_forearm",
    "right_wrist": "right_hand",
    "right_hand": "right_hand",
    "left_hip": "left_thigh",
    "left_knee": "left_lower_leg",
    "left_ankle": "left_foot",
    "left_foot": "left_foot",
    "right_hip": "right_thigh",
    "right_knee": "right_lower_leg",
    "right_ankle": "right_foot",
    "right_foot": "right_foot",
}
"""SMPL tree joint -> the part its skinning weight moves."""


def joint_part_ids(joint_names: Sequence[str] = SMPL_JOINT_NAMES) -> Tensor:
    """``[J]`` int64 part label of each joint (:data:`PART_OF_JOINT`)."""
    missing = [n for n in joint_names if n not in PART_OF_JOINT]
    if missing:
        raise ValueError(f"no body part for joint(s) {missing}")
    return torch.tensor([PART_NAMES.index(PART_OF_JOINT[n]) for n in joint_names], dtype=torch.long)


def segment_vertices(lbs_weights: Tensor, joint_names: Sequence[str] = SMPL_JOINT_NAMES) -> Tensor:
    """Part label of every vertex: the part of its most-weighted joint.

    Args:
        lbs_weights: ``[V, J]`` skinning weights (``J = len(joint_names)``, 24 for SMPL layouts).
        joint_names: the name of each weight column.
    Returns:
        ``[V]`` int64 indices into :data:`PART_NAMES`.
    """
    if lbs_weights.dim() != 2 or lbs_weights.shape[1] != len(joint_names):
        raise ValueError(f"lbs_weights: expected [V, {len(joint_names)}], got {tuple(lbs_weights.shape)}")
    return joint_part_ids(joint_names).to(lbs_weights.device)[lbs_weights.argmax(1)]


@dataclass(frozen=True)
class BodyParts:
    """A vertex segmentation: ``names [R]`` and ``vertex_part [V]`` (int64 into ``names``)."""

    names: tuple[str, ...]
    vertex_part: Tensor

    @property
    def num_parts(self) -> int:
        return len(self.names)

    def one_hot(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """``[V, R]`` membership matrix."""
        vp = self.vertex_part.to(device) if device is not None else self.vertex_part
        return torch.nn.functional.one_hot(vp, self.num_parts).to(dtype)

    def regions(self, vertex_mask: Tensor) -> Tensor:
        """Which parts hold at least one flagged vertex: ``[..., V]`` bool -> ``[..., R]`` bool."""
        if vertex_mask.shape[-1] != self.vertex_part.shape[0]:
            raise ValueError(f"vertex mask has {vertex_mask.shape[-1]} vertices, the segmentation {self.vertex_part.shape[0]}")
        oh = self.one_hot(vertex_mask.device)
        return (vertex_mask.to(oh.dtype) @ oh) > 0

    def region_names(self, vertex_mask: Tensor) -> list[str]:
        """Names of the parts flagged in one ``[V]`` mask, in :attr:`names` order."""
        if vertex_mask.dim() != 1:
            raise ValueError(f"region_names takes one [V] mask, got {tuple(vertex_mask.shape)}")
        hit = self.regions(vertex_mask[None])[0]
        return [n for n, h in zip(self.names, hit.tolist()) if h]


def body_parts(body: Any) -> BodyParts:
    """The segmentation of a loaded body model (:class:`~h4d_fast.body.model.BodyModel`, a
    ``smplx.SMPL`` module or anything with ``lbs_weights [V, 24]``)."""
    w = getattr(body, "lbs_weights", None)
    if w is None:
        smpl = getattr(body, "smpl", None)
        w = getattr(smpl, "lbs_weights", None)
    if w is None:
        raise TypeError(f"{type(body).__name__}: no lbs_weights to segment")
    w = torch.as_tensor(w).detach()
    if w.shape[-1] != NUM_SMPL_JOINTS:
        raise ValueError(f"expected skinning weights over the {NUM_SMPL_JOINTS} SMPL joints, got {tuple(w.shape)}")
    return BodyParts(PART_NAMES, segment_vertices(w.float()).cpu())


__all__ = ["PART_NAMES", "PART_OF_JOINT", "BodyParts", "body_parts", "joint_part_ids", "segment_vertices"]
