"""Point-set alignment, in one place: weighted rigid (Kabsch) and similarity (Procrustes).

:mod:`h4d_fast.pipeline.fit_init` (``kabsch``) and :mod:`h4d_fast.eval.metrics`
(``procrustes_align``) re-export these.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["kabsch", "procrustes_align"]


def _proper_rotation(H: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The rotation of the SVD of a cross-covariance ``H [..., 3, 3]`` (reflection removed):
    ``R = V D U^T`` with ``D = diag(1, 1, sign det(V U^T))``; returns ``R``, the singular values
    ``S [..., 3]`` and ``D [..., 3, 3]``."""
    U, S, Vh = torch.linalg.svd(H)
    V = Vh.transpose(-1, -2)
    d = torch.sign(torch.linalg.det(V @ U.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)  # never 0 for orthogonal U, V; kept as a guard
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    return V @ D @ U.transpose(-1, -2), S, D


def kabsch(src: Tensor, dst: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted rigid alignment (no scale): ``R, t = argmin sum_k w_k |R src_k + t - dst_k|^2``.

    Args:
        src, dst: ``[..., J, 3]``; weight ``[..., J]`` (>= 0).
    Returns:
        R ``[..., 3, 3]`` (a proper rotation) and t ``[..., 3]``. Where the weights sum to 0 the
        result is the identity and ``t = 0``.
    """
    w = weight.to(src.dtype)[..., None]
    ws = w.sum(-2, keepdim=True)
    wn = w / ws.clamp_min(1e-12)
    mu_s = (src * wn).sum(-2, keepdim=True)
    mu_d = (dst * wn).sum(-2, keepdim=True)
    R, _, _ = _proper_rotation(((src - mu_s) * w).transpose(-1, -2) @ (dst - mu_d))
    t = (mu_d - mu_s @ R.transpose(-1, -2))[..., 0, :]
    ok = ws[..., 0, 0] > 0
    eye = torch.eye(3, dtype=src.dtype, device=src.device).expand_as(R)
    return torch.where(ok[..., None, None], R, eye), torch.where(ok[..., None], t, torch.zeros_like(t))


def procrustes_align(pred: Tensor, gt: Tensor, mask: Tensor) -> Tensor:
    """Similarity (scale, rotation, translation) alignment of ``pred`` onto ``gt`` per leading index.

    Args:
        pred, gt: ``[..., J, 3]``; mask ``[..., J]`` bool (points used for the fit).
    Returns:
        ``[..., J, 3]`` aligned prediction (unchanged where fewer than 3 points are usable).
    """
    m = mask.to(pred.dtype)[..., None]
    n = m.sum(-2, keepdim=True).clamp_min(1)
    mu_p = (pred * m).sum(-2, keepdim=True) / n
    mu_g = (gt * m).sum(-2, keepdim=True) / n
    p0 = (pred - mu_p) * m
    g0 = (gt - mu_g) * m
    R, S, D = _proper_rotation(p0.transpose(-1, -2) @ g0)
    var = (p0 * p0).sum((-1, -2))
    s = (S * D.diagonal(dim1=-2, dim2=-1)).sum(-1) / var.clamp_min(1e-12)
    aligned = s[..., None, None] * (pred - mu_p) @ R.transpose(-1, -2) + mu_g
    enough = mask.sum(-1) >= 3
    return torch.where(enough[..., None, None], aligned, pred)
