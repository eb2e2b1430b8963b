"""What the image stage needs from a model: the two small interfaces every model implements.

Conventions (all tensors on the model's device):

* images and crops are ``float32`` RGB in ``[0, 1]``, channels first: ``[N, 3, H, W]``. A model
  applies its own normalisation (mean / std, BGR order, ...) inside ``__call__``.
* boxes are ``[x1, y1, x2, y2]`` in pixels of the full image, a score appended where one exists.
* a crop is cut from an image by a ``[2, 3]`` affine matrix ``A`` mapping crop pixel coordinates
  (pixel centres at integer positions) to image pixel coordinates: ``xy_img = A @ [x, y, 1]``.
  :attr:`PoseModel.box_scale` and :attr:`PoseModel.input_size` say how a person box becomes such
  a crop (centre kept, box enlarged by ``box_scale`` and padded to the input's aspect ratio);
  rotation is optional and given per crop in radians, ``t`` meaning
  ``A = [[s cos t, -s sin t, tx], [s sin t, s cos t, ty]]`` (so the crop's up direction is the
  image direction ``(sin t, -cos t)``; :func:`h4d_fast.detect.models.upright_rotation` gives the
  ``t`` that puts a person's shoulders above the hips, which BlazePose needs, see
  :mod:`h4d_fast.detect.models.blazepose`).
* pose output is COCO-17 (:data:`h4d_fast.constants.COCO17_NAMES`): ``[N, 17, 3]`` with ``x, y``
  in **crop** pixels and a confidence in ``[0, 1]``; the stage maps them back to the image with the
  crop's affine. A model with more keypoints (COCO-WholeBody-133, BlazePose-33) maps to COCO-17
  itself; ``keypoints_native`` may return the full set (the implementations in
  :mod:`h4d_fast.detect.models` all have it: ``[N, K, C]``, ``x, y`` in crop pixels first).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class PoseModel(Protocol):
    """A top-down 2D pose model on person crops."""

    name: str
    """Short name for logs and results (``"blazepose-full"``, the ONNX file's stem, ...)."""
    input_size: tuple[int, int]
    """``(H, W)`` of the crops the model takes."""
    box_scale: float
    """A person box is enlarged by this factor (about its centre) before cropping."""
    device: torch.device

    def __call__(self, crops: Tensor) -> Tensor:
        """``[N, 3, H, W]`` float RGB crops in ``[0, 1]`` -> ``[N, 17, 3]`` COCO-17 ``x, y`` (crop
        pixels) and confidence in ``[0, 1]``. ``N`` may be 0. Batched; no host sync required."""
        ...

    def to(self, device: torch.device | str) -> "PoseModel":
        """The model on ``device`` (may return ``self``)."""
        ...


@runtime_checkable
class PersonDetector(Protocol):
    """Finds people in whole images (the first frame, and people no track covers yet)."""

    name: str
    device: torch.device

    def __call__(self, images: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` float RGB images in ``[0, 1]`` -> per image a ``[K, 5]`` tensor of
        person boxes ``x1, y1, x2, y2, score`` in image pixels (after non-maximum suppression),
        best first."""
        ...

    def to(self, device: torch.device | str) -> "PersonDetector":
        ...
