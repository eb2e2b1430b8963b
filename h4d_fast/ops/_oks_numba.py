"""Numba (CPU, parallel) backend of OKS and OKS duplicate removal.

Algorithm: the definitions of :mod:`h4d_fast.ops._oks_torch` as scalar loops --

    valid_k = (c_a,k > kpt_thr) & (c_b,k > kpt_thr)
    area    = given, or the mean of the two keypoint-box areas (confident keypoints; 0 if none)
    e_k     = |x_a,k - x_b,k|^2 / (2 sigma_k)^2 / (area + eps) / 2
    OKS     = mean over valid k of exp(-e_k)   (0 when no keypoint is valid in both)

``dedup_oks`` computes the ``D x D`` OKS matrix of each view-frame and applies the policy:
``drop-both`` removes every detection that duplicates another valid one; ``keep-best`` visits the
slots by rank (score descending, ties to the lower slot) and keeps a slot unless it duplicates a
better slot already kept -- the reference's rank loop, step for step.

Layout: ``oks`` -- one ``prange`` iteration per (leading index, a) row, looping over b and the
keypoints; ``dedup_oks`` -- one ``prange`` iteration per view-frame. Inputs are converted to float64
(one compiled specialization per kernel, cached on disk); ``kpt_thr`` and ``thr`` are first rounded
to the input dtype so the threshold tests match the reference; the default keep-best scores are the
reference's :func:`detection_scores` (so ties are the reference's ties). Outputs are not
differentiable.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor

from ..constants import COCO_SIGMAS
from ._oks_torch import EPS, detection_scores, oks_lead_shape


@numba.njit(cache=True, error_model="numpy")
def _box_area(k: np.ndarray, thr: float) -> float:
    """Area of the box of the keypoints with ``conf > thr`` (``k [J, 3]``); 0 if there is none."""
    x1 = y1 = math.inf
    x2 = y2 = -math.inf
    any_ok = False
    for j in range(k.shape[0]):
        if k[j, 2] > thr:
            any_ok = True
            x1 = min(x1, k[j, 0])
            x2 = max(x2, k[j, 0])
            y1 = min(y1, k[j, 1])
            y2 = max(y2, k[j, 1])
    return (x2 - x1) * (y2 - y1) if any_ok else 0.0


@numba.njit(cache=True, error_model="numpy")
def _oks_pair(a: np.ndarray, b: np.ndarray, area: float, var: np.ndarray, thr: float) -> float:
    """OKS of two poses ``[J, 3]`` with a given area."""
    s = 0.0
    n = 0
    for j in range(a.shape[0]):
        if a[j, 2] > thr and b[j, 2] > thr:
            dx = a[j, 0] - b[j, 0]
            dy = a[j, 1] - b[j, 1]
            e = (dx * dx + dy * dy) / var[j] / (area + EPS) / 2.0
            s += math.exp(-e)
            n += 1
    return s / n if n > 0 else 0.0


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _oks_kernel(a, b, areas, has_areas, var, thr, out):
    """a ``[T, A, J, 3]``, b ``[T, B, J, 3]``, areas ``[T, A, B]`` (ignored unless ``has_areas``) -> out ``[T, A, B]``."""
    T, A = a.shape[0], a.shape[1]
    B = b.shape[1]
    for r in numba.prange(T * A):
        t = r // A
        i = r % A
        area_a = 0.0 if has_areas else _box_area(a[t, i], thr)
        for k in range(B):
            area = areas[t, i, k] if has_areas else 0.5 * (area_a + _box_area(b[t, k], thr))
            out[t, i, k] = _oks_pair(a[t, i], b[t, k], area, var, thr)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _dedup_kernel(k, valid, scores, var, kpt_thr, thr, keep_best, keep):
    """k ``[T, D, J, 3]``, valid ``[T, D]``, scores ``[T, D]`` -> keep ``[T, D]`` (bool)."""
    T, D = valid.shape
    for t in numba.prange(T):
        area = np.empty(D)
        for i in range(D):
            area[i] = _box_area(k[t, i], kpt_thr)
        dup = np.zeros((D, D), dtype=np.bool_)
        for i in range(D):
            if not valid[t, i]:
                continue
            for m in range(i + 1, D):
                if valid[t, m] and _oks_pair(k[t, i], k[t, m], 0.5 * (area[i] + area[m]), var, kpt_thr) > thr:
                    dup[i, m] = True
                    dup[m, i] = True
        if not keep_best:
            for i in range(D):
                keep[t, i] = valid[t, i]
                for m in range(D):
                    if dup[i, m]:
                        keep[t, i] = False
            continue
        # rank: number of slots that come before i (higher score, ties -> lower slot)
        s = scores[t]
        order = np.zeros(D, dtype=np.int64)
        for i in range(D):
            for m in range(D):
                if s[m] > s[i] or (s[m] == s[i] and m < i):
                    order[i] += 1
        kept = np.zeros(D, dtype=np.bool_)
        for r in range(D):
            new = np.zeros(D, dtype=np.bool_)
            for i in range(D):
                if order[i] != r or not valid[t, i]:
                    continue
                blocked = False
                for m in range(D):
                    if dup[i, m] and kept[m] and (s[m] > s[i] or (s[m] == s[i] and m < i)):
                        blocked = True
                new[i] = not blocked
            for i in range(D):
                kept[i] = kept[i] or new[i]
        for i in range(D):
            keep[t, i] = kept[i]


def _np64(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(device="cpu", dtype=torch.float64).numpy())


def _as_dtype(value: float, dtype: torch.dtype) -> float:
    return float(torch.tensor(value, dtype=dtype))


def _var(sigmas: Tensor | None, J: int, dtype: torch.dtype) -> np.ndarray:
    """``(2 sigma)^2`` in the input dtype, as the reference computes it, then float64."""
    s = torch.tensor(COCO_SIGMAS, dtype=dtype) if sigmas is None else sigmas.detach().cpu().to(dtype)
    if s.numel() != J:
        raise ValueError(f"oks: {s.numel()} keypoint sigmas for {J} keypoints")
    return _np64((2 * s) ** 2)


def oks_numba(
    kpts_a: Tensor, kpts_b: Tensor, areas: Tensor | None = None, sigmas: Tensor | None = None, kpt_thr: float = 0.2
) -> Tensor:
    """Pairwise OKS (see :func:`~h4d_fast.ops._oks_torch.oks_torch`), numba on CPU.

    Args:
        kpts_a: ``[..., A, J, 3]``; kpts_b: ``[..., B, J, 3]`` (leading dims broadcast);
        areas: ``[..., A, B]`` (broadcastable) or ``None``; sigmas: ``[J]``.
    Returns:
        ``[..., A, B]`` in the dtype of ``kpts_a`` (not differentiable).
    """
    dtype = kpts_a.dtype
    A, B, J = kpts_a.shape[-3], kpts_b.shape[-3], kpts_a.shape[-2]
    lead = oks_lead_shape(kpts_a, kpts_b, areas)
    var = _var(sigmas, J, dtype)
    T = math.prod(lead)
    a = _np64(kpts_a.expand(*lead, A, J, 3).reshape(T, A, J, 3))  # [T, A, J, 3]
    b = _np64(kpts_b.to(dtype).expand(*lead, B, J, 3).reshape(T, B, J, 3))  # [T, B, J, 3]
    if areas is not None:
        ar = _np64(areas.to(dtype).expand(*lead, A, B).reshape(T, A, B))  # [T, A, B]
    else:
        ar = np.zeros((1, 1, 1))
    out = np.zeros((a.shape[0], A, B))
    if out.size:
        _oks_kernel(a, b, ar, areas is not None, var, _as_dtype(kpt_thr, dtype), out)
    return torch.from_numpy(out).to(dtype).reshape(*lead, A, B)


def dedup_oks_numba(
    kpts: Tensor,
    valid: Tensor,
    thr: float = 0.7,
    policy: str = "drop-both",
    kpt_thr: float = 0.2,
    scores: Tensor | None = None,
) -> Tensor:
    """OKS duplicate removal (see :func:`~h4d_fast.ops._oks_torch.dedup_oks_torch`), numba on CPU.

    Args:
        kpts: ``[..., D, J, 3]``; valid: ``[..., D]`` bool; scores: ``[..., D]`` or ``None``.
    Returns:
        ``[..., D]`` bool keep mask.
    """
    if policy not in ("drop-both", "keep-best"):
        raise ValueError(f"dedup_oks: unknown policy {policy!r} (drop-both or keep-best)")
    dtype = kpts.dtype
    D, J = kpts.shape[-3], kpts.shape[-2]
    lead = kpts.shape[:-3]
    var = _var(None, J, dtype)
    T = math.prod(lead)
    k = _np64(kpts.reshape(T, D, J, 3))  # [T, D, J, 3]
    vd = np.ascontiguousarray(valid.detach().cpu().reshape(T, D).numpy().astype(np.bool_))  # [T, D]
    keep_best = policy == "keep-best"
    if keep_best:
        sc = detection_scores(kpts, kpt_thr) if scores is None else scores.to(dtype)
        s = _np64(sc.expand(*lead, D).reshape(T, D))  # [T, D]
    else:
        s = np.zeros((1, 1))
    keep = np.zeros(vd.shape, dtype=np.bool_)
    if keep.size:
        _dedup_kernel(k, vd, s, var, _as_dtype(kpt_thr, dtype), _as_dtype(thr, dtype), keep_best, keep)
    return torch.from_numpy(keep).reshape(*lead, D)
