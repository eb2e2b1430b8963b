"""Torch reference of object keypoint similarity (OKS) and OKS duplicate removal.

This is the oracle the kernels are tested against; it runs on any torch device.

OKS (COCO formula, with the reference pipeline's choices):
    valid_k = (c_a,k > kpt_thr) & (c_b,k > kpt_thr)
    area    = (A_a + A_b) / 2, A = area of the box spanned by a pose's keypoints with c > kpt_thr
    e_k     = |x_a,k - x_b,k|^2 / (2 sigma_k)^2 / (area + eps) / 2
    OKS     = mean over valid k of exp(-e_k)      (0 when no keypoint is valid in both)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..constants import COCO_SIGMAS

EPS = float(torch.finfo(torch.float64).eps)  # pycocotools' np.spacing(1)


def oks_lead_shape(kpts_a: Tensor, kpts_b: Tensor, areas: Tensor | None = None) -> torch.Size:
    """The broadcast leading shape of the pairwise OKS inputs (``kpts_a [..., A, J, 3]``,
    ``kpts_b [..., B, J, 3]``, ``areas [..., A, B]``). numpy's rule: ``torch.broadcast_shapes``
    imports torch._refs and sympy, 0.5 s of a fresh process."""
    return torch.Size(np.broadcast_shapes(kpts_a.shape[:-3], kpts_b.shape[:-3], *(() if areas is None else (areas.shape[:-2],))))


def keypoint_box_area(kpts: Tensor, kpt_thr: float = 0.2) -> Tensor:
    """Area of the box spanned by the confident keypoints.

    Args:
        kpts: ``[..., J, 3]`` (x, y, conf).
    Returns:
        ``[...]`` area in squared pixels (0 with fewer than one confident keypoint).
    """
    ok = kpts[..., 2] > kpt_thr
    big = torch.finfo(kpts.dtype).max
    x, y = kpts[..., 0], kpts[..., 1]
    x1 = torch.where(ok, x, torch.full_like(x, big)).amin(-1)
    x2 = torch.where(ok, x, torch.full_like(x, -big)).amax(-1)
    y1 = torch.where(ok, y, torch.full_like(y, big)).amin(-1)
    y2 = torch.where(ok, y, torch.full_like(y, -big)).amax(-1)
    area = (x2 - x1) * (y2 - y1)
    return torch.where(ok.any(-1), area, torch.zeros_like(area))


def oks_torch(
    kpts_a: Tensor,
    kpts_b: Tensor,
    areas: Tensor | None = None,
    sigmas: Tensor | None = None,
    kpt_thr: float = 0.2,
) -> Tensor:
    """Pairwise OKS between two sets of poses.

    Args:
        kpts_a: ``[..., A, J, 3]``.
        kpts_b: ``[..., B, J, 3]``.
        areas: ``[..., A, B]`` (or broadcastable) object areas; ``None`` = the mean of the two
            keypoint-box areas, as the reference pipeline computes it.
        sigmas: ``[J]`` per-keypoint sigmas (COCO's by default).
    Returns:
        ``[..., A, B]`` OKS in ``[0, 1]``.
    """
    if sigmas is None:
        sigmas = torch.tensor(COCO_SIGMAS, dtype=kpts_a.dtype, device=kpts_a.device)
    sigmas = sigmas.to(kpts_a)
    var = (2 * sigmas) ** 2  # [J]
    a = kpts_a[..., :, None, :, :]  # [..., A, 1, J, 3]
    b = kpts_b[..., None, :, :, :]  # [..., 1, B, J, 3]
    if areas is None:
        area_a = keypoint_box_area(kpts_a, kpt_thr)  # [..., A]
        area_b = keypoint_box_area(kpts_b, kpt_thr)  # [..., B]
        areas = 0.5 * (area_a[..., :, None] + area_b[..., None, :])
    d2 = (a[..., 0] - b[..., 0]) ** 2 + (a[..., 1] - b[..., 1]) ** 2  # [..., A, B, J]
    e = d2 / var / (areas[..., None] + EPS) / 2
    valid = (a[..., 2] > kpt_thr) & (b[..., 2] > kpt_thr)
    s = torch.where(valid, torch.exp(-e), torch.zeros_like(e)).sum(-1)
    n = valid.sum(-1)
    return torch.where(n > 0, s / n.clamp_min(1).to(s.dtype), torch.zeros_like(s))


def detection_scores(kpts: Tensor, kpt_thr: float = 0.2) -> Tensor:
    """``[..., D, J, 3] -> [..., D]``: mean confidence of the confident keypoints (the keep-best ranking)."""
    c = kpts[..., 2]
    ok = c > kpt_thr
    return torch.where(ok, c, torch.zeros_like(c)).sum(-1) / ok.sum(-1).clamp_min(1).to(c.dtype)


def dedup_oks_torch(
    kpts: Tensor,
    valid: Tensor,
    thr: float = 0.7,
    policy: str = "drop-both",
    kpt_thr: float = 0.2,
    scores: Tensor | None = None,
    sigmas: Tensor | None = None,
) -> Tensor:
    """Remove duplicate detections within each view-frame by OKS.

    Args:
        kpts: ``[..., D, J, 3]`` detections of one view-frame per leading index.
        valid: ``[..., D]`` bool, the slot holds a detection.
        thr: two valid detections with ``OKS > thr`` are duplicates.
        policy: ``"drop-both"`` -- every detection that duplicates another is removed (the
            reference code); ``"keep-best"`` -- greedy: in order of decreasing score (ties: lower
            slot first) keep a detection unless it duplicates one already kept.
        scores: ``[..., D]`` ranking for keep-best (default: mean confident keypoint confidence).
    Returns:
        ``[..., D]`` bool keep mask (a subset of ``valid``).
    """
    if policy not in ("drop-both", "keep-best"):
        raise ValueError(f"dedup_oks: unknown policy {policy!r} (drop-both or keep-best)")
    D = kpts.shape[-3]
    o = oks_torch(kpts, kpts, sigmas=sigmas, kpt_thr=kpt_thr)  # [..., D, D]
    eye = torch.eye(D, dtype=torch.bool, device=kpts.device)
    pair_ok = valid[..., :, None] & valid[..., None, :] & ~eye
    dup = (o > thr) & pair_ok  # [..., D, D]
    if policy == "drop-both":
        return valid & ~dup.any(-1)
    if scores is None:
        scores = detection_scores(kpts, kpt_thr)
    # rank: higher score first, ties -> lower slot first. better[i, j]: j ranks before i.
    idx = torch.arange(D, device=kpts.device)
    s_i, s_j = scores[..., :, None], scores[..., None, :]
    better = (s_j > s_i) | ((s_j == s_i) & (idx[None, :] < idx[:, None]))  # [..., D, D]
    order = better.sum(-1)  # [..., D] rank of each slot (0 = best)
    keep = torch.zeros_like(valid)
    # Process ranks in order; a slot is kept unless it duplicates an already-kept better slot.
    for r in range(D):
        at_r = order == r  # [..., D] one-hot
        blocked = (dup & better & keep[..., None, :]).any(-1)  # [..., D]
        keep = keep | (at_r & valid & ~blocked)
    return keep
