"""Closest points between 3D segments (batched torch), used for capsule tests."""

from __future__ import annotations

import torch
from torch import Tensor


def segment_params(a: Tensor, b: Tensor, c: Tensor, e: Tensor, f: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """Parameters ``(s, t)`` in ``[0, 1]`` of the closest points of segments ``p1 + s d1`` and ``p2 + t d2``.

    Takes only dot products (all broadcastable): ``a = d1.d1``, ``b = d1.d2``, ``c = d1.r``,
    ``e = d2.d2``, ``f = d2.r`` with ``r = p1 - p2``. Degenerate segments (points) are handled.
    """
    denom = a * e - b * b
    a_ok = a > eps
    e_ok = e > eps
    a_s = torch.where(a_ok, a, torch.ones_like(a))
    e_s = torch.where(e_ok, e, torch.ones_like(e))
    # general case: s from the infinite-line solution, clamped (parallel lines: s = 0)
    s = torch.where(denom > eps * (a * e + eps), (b * f - c * e) / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(denom))
    s = s.clamp(0, 1)
    t = (b * s + f) / e_s
    # t outside [0, 1]: clamp it and recompute s
    t_lo = t < 0
    t_hi = t > 1
    s = torch.where(t_lo, (-c / a_s).clamp(0, 1), s)
    s = torch.where(t_hi, ((b - c) / a_s).clamp(0, 1), s)
    t = t.clamp(0, 1)
    # second segment is a point
    s = torch.where(e_ok, s, (-c / a_s).clamp(0, 1))
    t = torch.where(e_ok, t, torch.zeros_like(t))
    # first segment is a point
    s = torch.where(a_ok, s, torch.zeros_like(s))
    t = torch.where(a_ok, t, (f / e_s).clamp(0, 1))
    return s, t


def segment_distance(p1: Tensor, q1: Tensor, p2: Tensor, q2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Closest points of segments ``[p1, q1]`` and ``[p2, q2]`` (``[..., 3]``, broadcast).

    Returns:
        dist ``[...]``, closest point on the first ``[..., 3]``, closest point on the second ``[..., 3]``.
    """
    d1 = q1 - p1
    d2 = q2 - p2
    r = p1 - p2
    a = (d1 * d1).sum(-1)
    b = (d1 * d2).sum(-1)
    c = (d1 * r).sum(-1)
    e = (d2 * d2).sum(-1)
    f = (d2 * r).sum(-1)
    s, t = segment_params(a, b, c, e, f)
    c1 = p1 + d1 * s[..., None]
    c2 = p2 + d2 * t[..., None]
    return (c1 - c2).norm(dim=-1), c1, c2


def point_segment_closest(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Closest point to ``x`` on segment ``[a, b]`` (``[..., 3]``, broadcast)."""
    d = b - a
    dd = (d * d).sum(-1, keepdim=True)
    t = ((x - a) * d).sum(-1, keepdim=True) / dd.clamp_min(1e-12)
    return a + d * t.clamp(0, 1)
