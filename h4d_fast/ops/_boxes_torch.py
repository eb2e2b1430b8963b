"""Reference of :func:`h4d_fast.ops.boxes.mesh_boxes`: project with :meth:`CameraSet.project`, in
chunks of frames (at most ``PROJ_BUDGET`` projected points at a time), then min/max over the
vertices in front of the camera."""

from __future__ import annotations

import torch
from torch import Tensor

from ..camera import CameraSet

PROJ_BUDGET = 1 << 24  # projected points per chunk


def mesh_boxes_torch(cameras: CameraSet, verts: Tensor, chunk: int | None = None) -> Tensor:
    """``verts [F, P, N, 3]`` -> ``[V, F, P, 4]`` (see :func:`~h4d_fast.ops.boxes.mesh_boxes`)."""
    V = len(cameras)
    F, P, N = verts.shape[:3]
    step = chunk or max(1, PROJ_BUDGET // max(1, P * N * V))
    out = []
    for f0 in range(0, F, step):
        uv, depth = cameras.project(verts[f0 : f0 + step])  # [c, P, N, V, 2], [c, P, N, V]
        uv, front = uv.permute(3, 0, 1, 2, 4), (depth > 0).permute(3, 0, 1, 2)  # [V, c, P, N, 2]
        inf = torch.tensor(float("inf"), dtype=uv.dtype, device=uv.device)
        lo = torch.where(front[..., None], uv, inf).amin(3)
        hi = torch.where(front[..., None], uv, -inf).amax(3)
        box = torch.cat([lo, hi], -1)  # [V, c, P, 4]
        out.append(torch.where(front.any(3)[..., None], box, torch.full_like(box, float("nan"))))
    return torch.cat(out, 1) if out else verts.new_zeros(V, 0, P, 4)
