"""The compact columnar form of a whole capture in memory.

Shapes (``F`` frames, ``V`` cameras, ``D`` detection slots per view-frame, ``P`` people,
``J = 17`` COCO keypoints):

* detections ``kpts``  ``[F, V, D, J, 3]`` float -- ``x, y`` in pixels, ``conf`` in ``[0, 1]``;
  empty slots are all zero.
* detections ``boxes`` ``[F, V, D, 5]`` float -- ``x1, y1, x2, y2, score`` in pixels.
* detections ``valid`` ``[F, V, D]`` bool -- the slot holds a detection.
* detections ``identity`` ``[F, V, D]`` long, optional -- the person index a detection is known to
  belong to (a crop prompted by that person's 3D track), ``-1`` where unknown; the identity stage
  assigns such a detection to that person instead of matching it.
* identity boxes ``init_boxes`` ``[V, P, 4]`` + ``init_valid`` ``[V, P]`` -- each person's box in
  each view at the first frame (the annotator's boxes in Harmony4D).
* 3D poses ``[F, P, J, 4]`` -- ``x, y, z`` in metres (world frame) and ``valid`` in ``{0, 1}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import torch
from torch import Tensor

from .camera import CameraSet
from .constants import DEFAULT_PERSON_NAMES, NUM_COCO


@dataclass
class Detections:
    """2D detections of a whole capture, padded to ``D`` slots per view-frame."""

    kpts: Tensor  # [F, V, D, J, 3]
    boxes: Tensor  # [F, V, D, 5]
    valid: Tensor  # [F, V, D] bool
    identity: Optional[Tensor] = None  # [F, V, D] long, -1 = unknown (prompted detections know their person)

    def __post_init__(self) -> None:
        if self.kpts.dim() != 5 or self.kpts.shape[-2:] != (NUM_COCO, 3):
            raise ValueError(f"Detections.kpts: expected [F, V, D, {NUM_COCO}, 3], got {tuple(self.kpts.shape)}")
        F, V, D = self.kpts.shape[:3]
        if tuple(self.boxes.shape) != (F, V, D, 5):
            raise ValueError(f"Detections.boxes: expected {(F, V, D, 5)}, got {tuple(self.boxes.shape)}")
        if tuple(self.valid.shape) != (F, V, D):
            raise ValueError(f"Detections.valid: expected {(F, V, D)}, got {tuple(self.valid.shape)}")
        if self.identity is not None and tuple(self.identity.shape) != (F, V, D):
            raise ValueError(f"Detections.identity: expected {(F, V, D)}, got {tuple(self.identity.shape)}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(F, V, D)``."""
        F, V, D = self.kpts.shape[:3]
        return F, V, D

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Detections":
        ident = None if self.identity is None else self.identity.to(device)
        return Detections(self.kpts.to(device=device, dtype=dtype), self.boxes.to(device=device, dtype=dtype), self.valid.to(device), ident)

    def frames(self, index: slice | Tensor | list[int]) -> "Detections":
        ident = None if self.identity is None else self.identity[index]
        return Detections(self.kpts[index], self.boxes[index], self.valid[index], ident)

    def views(self, index: Tensor | list[int]) -> "Detections":
        idx = torch.as_tensor(index, dtype=torch.long, device=self.kpts.device)
        ident = None if self.identity is None else self.identity[:, idx]
        return Detections(self.kpts[:, idx], self.boxes[:, idx], self.valid[:, idx], ident)

    @staticmethod
    def empty(F: int, V: int, D: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> "Detections":
        return Detections(
            torch.zeros(F, V, D, NUM_COCO, 3, dtype=dtype, device=device),
            torch.zeros(F, V, D, 5, dtype=dtype, device=device),
            torch.zeros(F, V, D, dtype=torch.bool, device=device),
        )

    @staticmethod
    def from_lists(per_frame_view: list[list[list[tuple[Tensor, Tensor]]]], dtype: torch.dtype = torch.float32) -> "Detections":
        """Pack ``[frame][view] -> list of (kpts [J, 3], box [5])`` into padded tensors."""
        F = len(per_frame_view)
        V = len(per_frame_view[0]) if F else 0
        D = max((len(dets) for fr in per_frame_view for dets in fr), default=0)
        out = Detections.empty(F, V, max(D, 1), dtype=dtype)
        for f, fr in enumerate(per_frame_view):
            for v, dets in enumerate(fr):
                for d, (k, b) in enumerate(dets):
                    out.kpts[f, v, d] = torch.as_tensor(k, dtype=dtype)
                    out.boxes[f, v, d] = torch.as_tensor(b, dtype=dtype)
                    out.valid[f, v, d] = True
        return out


@dataclass
class Capture:
    """One multi-view capture: cameras, 2D detections and first-frame identity boxes.

    ``frame_ids`` are the file indices (Harmony4D counts from 1: ``00001.npy``).
    """

    cameras: CameraSet
    detections: Detections
    frame_ids: list[int]
    person_names: list[str] = field(default_factory=lambda: list(DEFAULT_PERSON_NAMES))
    init_boxes: Optional[Tensor] = None  # [V, P, 4]
    init_valid: Optional[Tensor] = None  # [V, P] bool
    name: str = "capture"

    def __post_init__(self) -> None:
        F, V, _ = self.detections.shape
        if V != len(self.cameras):
            raise ValueError(f"Capture: {len(self.cameras)} cameras but detections for {V} views")
        if len(self.frame_ids) != F:
            raise ValueError(f"Capture: {len(self.frame_ids)} frame ids for {F} frames")
        if self.init_boxes is not None:
            P = len(self.person_names)
            if tuple(self.init_boxes.shape) != (V, P, 4):
                raise ValueError(f"Capture.init_boxes: expected {(V, P, 4)}, got {tuple(self.init_boxes.shape)}")
            if self.init_valid is None:
                self.init_valid = torch.ones(V, P, dtype=torch.bool)

    @property
    def num_frames(self) -> int:
        return self.detections.shape[0]

    @property
    def num_views(self) -> int:
        return len(self.cameras)

    @property
    def num_people(self) -> int:
        return len(self.person_names)

    def select_views(self, index: list[int]) -> "Capture":
        """The same capture seen by a subset of the cameras (e.g. the first N, as in Table 2)."""
        idx = list(index)
        return replace(
            self,
            cameras=self.cameras.subset(idx),
            detections=self.detections.views(idx),
            init_boxes=None if self.init_boxes is None else self.init_boxes[idx],
            init_valid=None if self.init_valid is None else self.init_valid[idx],
        )

    def select_frames(self, start: int, stop: int) -> "Capture":
        return replace(self, detections=self.detections.frames(slice(start, stop)), frame_ids=self.frame_ids[start:stop])


@dataclass
class GroundTruth:
    """What the synthetic generator knows: 3D keypoints and (when a body model drives it) body parameters.

    Attributes:
        poses3d: ``[F, P, J, 4]`` world keypoints + valid.
        smpl: optional dict of ``[F, P, ...]`` tensors (``global_orient [F,P,3]``, ``body_pose [F,P,69]``,
            ``transl [F,P,3]``, ``betas [P,10]``) and ``vertices [F,P,N,3]`` when available.
    """

    poses3d: Tensor
    smpl: Optional[dict[str, Tensor]] = None
