"""Pixel boxes of meshes seen by calibrated cameras: the public op.

``mesh_boxes(cameras, verts)`` -> ``[V, F, P, 4]``: for every camera, frame and person, the box
``x1, y1, x2, y2`` of the mesh's vertices projected into that camera (lens distortion included),
over the vertices in front of it; NaN where none is. The export writes these as ``bbox/<cam>``.
Every vertex in every camera is the bulk of an export's arithmetic (600 frames x 2 people x
13,380 vertices x 20 cameras = 321 million projections). Definition: :mod:`h4d_fast.ops._boxes_torch`
(the reference; any device); the Numba backend fuses projection and min/max on the CPU without
the reference's intermediate tensors.

Also the home of the IoU of ``(x1, y1, x2, y2)`` boxes (:func:`box_iou`, :func:`pairwise_box_iou`),
used by the evaluation, the identity stage, the synthetic detector and the BlazePose detector.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..camera import MODEL_ID, CameraSet
from . import _backend
from ._backend import Impl, register

register(Impl("mesh_boxes", "torch", "_boxes_torch", "mesh_boxes_torch", ("cpu", "cuda")))
register(Impl("mesh_boxes", "numba", "_boxes_numba", "mesh_boxes_numba", ("cpu",), ("numba",)))


def mesh_boxes(cameras: CameraSet, verts: Tensor, backend: str = "auto") -> Tensor:
    """Per camera the pixel box of each mesh's projected vertices, not clipped to the image.

    Args:
        cameras: ``V`` cameras (moved to ``verts``' device and dtype).
        verts: ``[F, P, N, 3]`` world points (metres).
        backend: ``auto`` (numba on CPU tensors, torch on CUDA), ``torch`` or ``numba``.
    Returns:
        ``[V, F, P, 4]`` ``x1, y1, x2, y2`` in ``verts``' dtype (NaN where no vertex is in front
        of the camera).
    """
    if verts.dim() != 4 or verts.shape[-1] != 3:
        raise ValueError(f"mesh_boxes: expected verts [F, P, N, 3], got {tuple(verts.shape)}")
    if not verts.is_floating_point():
        raise TypeError(f"mesh_boxes: expected a floating dtype, got {verts.dtype}")
    _, fn = _backend.dispatch("mesh_boxes", verts.device, backend)
    with torch.no_grad():
        return fn(cameras.to(device=verts.device), verts)


def is_fisheye(cameras: CameraSet) -> Tensor:
    """``[V]`` bool: the camera's lens is the fisheye model (else radial-tangential / pinhole)."""
    return cameras.model_id == MODEL_ID["fisheye"]


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of ``[..., 4]`` boxes (x1, y1, x2, y2), broadcast; 0 where the union is empty."""
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp_min(0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp_min(0)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0]).clamp_min(0) * (x[..., 3] - x[..., 1]).clamp_min(0)  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def pairwise_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every box of ``a [..., A, 4]`` with every box of ``b [..., B, 4]`` -> ``[..., A, B]``."""
    return box_iou(a[..., :, None, :], b[..., None, :, :])


__all__ = ["box_iou", "mesh_boxes", "pairwise_box_iou"]
