"""Numba (CPU, parallel) backend of weighted DLT and RANSAC view-set triangulation.

Algorithm: the rule of :mod:`h4d_fast.ops._triangulate_torch`, written as scalar loops:

* candidates ``conf > conf_thr`` with finite xy; hypotheses over candidate pairs ``i < j`` in
  lexicographic order, each a 2-view weighted DLT (3x3 normal equations, adjugate solve, the same
  singularity test);
* a view is an inlier when it is a candidate, in front of the camera and ``0.5 |xy - pi(X)| <
  err_thr``; a hypothesis is void unless both of its own views are inliers (in front of both
  cameras, the two rays meet); the largest inlier set wins, the earliest pair on ties (strict ``>``
  while scanning pairs in order);
* final weighted DLT on the winner's inliers and ``refine_steps`` Huber IRLS Gauss-Newton steps
  (same damping as :func:`refine_huber`).

Layout: one ``prange`` iteration per point (flattened leading dims); views and pairs are plain
loops, the winning inlier set is kept in the output row. Inputs are converted to float64
and all arithmetic is float64 (one compiled specialization per kernel, cached on disk); thresholds
are first rounded to the input dtype so candidate tests match the reference bit for bit; outputs
are cast back to the input dtype. Any number of views.

Gradients: X is differentiable in xy, conf (and P) through
:mod:`h4d_fast.ops._triangulate_common` (the backward recomputes the final solve with the torch
reference).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor

from ._triangulate_common import FlatInputs, RansacParams, kernel_dlt, kernel_ransac
from ._triangulate_math import normal_terms, solve3

# ----------------------------------------------------------------------------- scalar helpers
_normal_terms = numba.njit(cache=True, error_model="numpy")(normal_terms)
_solve3 = numba.njit(cache=True, error_model="numpy")(solve3)


@numba.njit(cache=True, error_model="numpy")
def _view_terms(x: float, y: float, w: float, P: np.ndarray, v: int):
    """One view's contribution ``w^2 (r1 r1^T + r2 r2^T)`` (6 unique) and ``w^2 (r1[:3] r1[3] + r2[:3] r2[3])`` (3)."""
    if not (w > 0.0):  # the reference zeroes xy where w <= 0 (also NaN w)
        x = 0.0
        y = 0.0
    w2 = w * w
    a0 = x * P[v, 2, 0] - P[v, 0, 0]
    a1 = x * P[v, 2, 1] - P[v, 0, 1]
    a2 = x * P[v, 2, 2] - P[v, 0, 2]
    a3 = x * P[v, 2, 3] - P[v, 0, 3]
    b0 = y * P[v, 2, 0] - P[v, 1, 0]
    b1 = y * P[v, 2, 1] - P[v, 1, 1]
    b2 = y * P[v, 2, 2] - P[v, 1, 2]
    b3 = y * P[v, 2, 3] - P[v, 1, 3]
    return _normal_terms(w2, a0, a1, a2, a3, b0, b1, b2, b3)


@numba.njit(cache=True, error_model="numpy")
def _finite3(x0, x1, x2) -> bool:
    return math.isfinite(x0) and math.isfinite(x1) and math.isfinite(x2)


@numba.njit(cache=True, error_model="numpy")
def _dlt_solve(m00, m01, m02, m11, m12, m22, s0, s1, s2):
    """Solve ``M X = -s`` with the reference's singularity test; NaN when singular or non-finite."""
    x0, x1, x2, det = _solve3(m00, m01, m02, m11, m12, m22, -s0, -s1, -s2)
    t = (m00 + m11 + m22) / 3.0
    scale = t * t * t
    if not (abs(det) > 1e-10 * abs(scale)) or not _finite3(x0, x1, x2):
        return math.nan, math.nan, math.nan
    return x0, x1, x2


@numba.njit(cache=True, error_model="numpy")
def _hypothesis(xy, cand, w, P, i, j, err_thr, mask):
    """Inlier count of the 2-view hypothesis ``(i, j)`` (-1 if void, ``mask`` then partial); its inlier set goes to ``mask``."""
    ti = _view_terms(xy[i, 0], xy[i, 1], w[i], P, i)
    tj = _view_terms(xy[j, 0], xy[j, 1], w[j], P, j)
    X0, X1, X2 = _dlt_solve(
        ti[0] + tj[0], ti[1] + tj[1], ti[2] + tj[2], ti[3] + tj[3], ti[4] + tj[4], ti[5] + tj[5],
        ti[6] + tj[6], ti[7] + tj[7], ti[8] + tj[8],
    )
    if not _finite3(X0, X1, X2):
        return -1
    V = w.shape[0]
    count = 0
    for v in range(V):
        c0 = P[v, 0, 0] * X0 + P[v, 0, 1] * X1 + P[v, 0, 2] * X2 + P[v, 0, 3]
        c1 = P[v, 1, 0] * X0 + P[v, 1, 1] * X1 + P[v, 1, 2] * X2 + P[v, 1, 3]
        z = P[v, 2, 0] * X0 + P[v, 2, 1] * X1 + P[v, 2, 2] * X2 + P[v, 2, 3]
        if cand[v] and z > 0.0:
            zs = z if abs(z) >= 1e-12 else 1e-12
            dx = c0 / zs - xy[v, 0]
            dy = c1 / zs - xy[v, 1]
            hit = 0.5 * math.sqrt(dx * dx + dy * dy) < err_thr
        else:
            hit = False
        if (v == i or v == j) and not hit:  # behind one of its own cameras, or its own two rays disagree
            return -1
        if hit:
            count += 1
        mask[v] = hit
    return count


@numba.njit(cache=True, error_model="numpy")
def _refine(X0, X1, X2, xy, wf, P, steps, delta):
    """``steps`` confidence-weighted Huber Gauss-Newton iterations (the reference's :func:`refine_huber`)."""
    V = wf.shape[0]
    for _ in range(steps):
        h00 = h01 = h02 = h11 = h12 = h22 = 0.0
        g0 = g1 = g2 = 0.0
        for v in range(V):
            if not (wf[v] > 0.0):
                continue
            c0 = P[v, 0, 0] * X0 + P[v, 0, 1] * X1 + P[v, 0, 2] * X2 + P[v, 0, 3]
            c1 = P[v, 1, 0] * X0 + P[v, 1, 1] * X1 + P[v, 1, 2] * X2 + P[v, 1, 3]
            z = P[v, 2, 0] * X0 + P[v, 2, 1] * X1 + P[v, 2, 2] * X2 + P[v, 2, 3]
            if not (z > 1e-9):
                continue
            px = c0 / z
            py = c1 / z
            rx = px - xy[v, 0]
            ry = py - xy[v, 1]
            e = math.sqrt(rx * rx + ry * ry)
            h = 1.0 if e <= delta else delta / max(e, 1e-30)
            wv = wf[v] * h
            iz = 1.0 / z
            j00 = iz * (P[v, 0, 0] - px * P[v, 2, 0])
            j01 = iz * (P[v, 0, 1] - px * P[v, 2, 1])
            j02 = iz * (P[v, 0, 2] - px * P[v, 2, 2])
            j10 = iz * (P[v, 1, 0] - py * P[v, 2, 0])
            j11 = iz * (P[v, 1, 1] - py * P[v, 2, 1])
            j12 = iz * (P[v, 1, 2] - py * P[v, 2, 2])
            h00 += wv * (j00 * j00 + j10 * j10)
            h01 += wv * (j00 * j01 + j10 * j11)
            h02 += wv * (j00 * j02 + j10 * j12)
            h11 += wv * (j01 * j01 + j11 * j11)
            h12 += wv * (j01 * j02 + j11 * j12)
            h22 += wv * (j02 * j02 + j12 * j12)
            g0 += wv * (j00 * rx + j10 * ry)
            g1 += wv * (j01 * rx + j11 * ry)
            g2 += wv * (j02 * rx + j12 * ry)
        damp = 1e-9 * (h00 + h11 + h22) + 1e-30
        d0, d1, d2, det = _solve3(h00 + damp, h01, h02, h11 + damp, h12, h22 + damp, -g0, -g1, -g2)
        if _finite3(d0, d1, d2) and abs(det) > 0.0:
            X0 += d0
            X1 += d1
            X2 += d2
    return X0, X1, X2


# ----------------------------------------------------------------------------- kernels
@numba.njit(cache=True, error_model="numpy")
def _dlt_point(xy, w, P):
    """Weighted DLT of one point: xy ``[V, 2]``, w ``[V]``, P ``[V, 3, 4]`` -> ``(X0, X1, X2)`` (NaN when singular)."""
    m00 = m01 = m02 = m11 = m12 = m22 = s0 = s1 = s2 = 0.0
    for v in range(w.shape[0]):
        t = _view_terms(xy[v, 0], xy[v, 1], w[v], P, v)
        m00 += t[0]
        m01 += t[1]
        m02 += t[2]
        m11 += t[3]
        m12 += t[4]
        m22 += t[5]
        s0 += t[6]
        s1 += t[7]
        s2 += t[8]
    return _dlt_solve(m00, m01, m02, m11, m12, m22, s0, s1, s2)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _dlt_kernel(xy, w, P, X_out):
    """Weighted DLT, one ``prange`` iteration per point. xy ``[N, V, 2]``, w ``[N, V]``, P ``[Np, V, 3, 4]`` -> X_out ``[N, 3]``."""
    for p in numba.prange(w.shape[0]):
        X_out[p, 0], X_out[p, 1], X_out[p, 2] = _dlt_point(xy[p], w[p], P[p % P.shape[0]])


@numba.njit(cache=True, error_model="numpy")
def _ransac_point(xy, conf, P, conf_thr, err_thr, min_views, refine_steps, delta, X_out, inl_out, n_out):
    """Fused RANSAC of one point: xy ``[V, 2]``, conf ``[V]``, P ``[V, 3, 4]``; writes X_out ``[3]``,
    inl_out ``[V]`` (bool) and n_out ``[1]``."""
    V = conf.shape[0]
    cand = np.zeros(V, dtype=np.bool_)
    xy0 = np.zeros((V, 2))
    w = np.zeros(V)
    for v in range(V):
        ok = conf[v] > conf_thr and math.isfinite(xy[v, 0]) and math.isfinite(xy[v, 1])
        cand[v] = ok
        if ok:
            xy0[v, 0] = xy[v, 0]
            xy0[v, 1] = xy[v, 1]
            w[v] = conf[v]
    scratch = np.zeros(V, dtype=np.bool_)
    best = 0
    for v in range(V):
        inl_out[v] = False
    for i in range(V):
        if not cand[i]:
            continue
        for j in range(i + 1, V):
            if not cand[j]:
                continue
            c = _hypothesis(xy0, cand, w, P, i, j, err_thr, scratch)
            if c > best:  # strict: ties keep the earliest pair
                best = c
                for v in range(V):
                    inl_out[v] = scratch[v]
    X_out[0] = X_out[1] = X_out[2] = math.nan
    n_out[0] = 0
    if best == 0:
        return
    wf = np.zeros(V)  # the winner's inliers keep their weight (a zero weight adds exact zeros to the sums)
    n = 0
    for v in range(V):
        if inl_out[v]:
            n += 1
            wf[v] = w[v]
    X0, X1, X2 = _dlt_point(xy0, wf, P)
    if refine_steps > 0:
        X0, X1, X2 = _refine(X0, X1, X2, xy0, wf, P, refine_steps, delta)
    if n >= max(min_views, 2) and _finite3(X0, X1, X2):
        X_out[0], X_out[1], X_out[2] = X0, X1, X2
        n_out[0] = n
    else:
        for v in range(V):
            inl_out[v] = False


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _ransac_kernel(xy, conf, P, conf_thr, err_thr, min_views, refine_steps, delta, X_out, inl_out, n_out):
    """Fused RANSAC, one ``prange`` iteration per point. xy ``[N, V, 2]``, conf ``[N, V]``, P ``[Np, V, 3, 4]``
    (Np = 1 or N); outputs X ``[N, 3]``, inliers ``[N, V]`` bool, n ``[N]`` int64."""
    for p in numba.prange(conf.shape[0]):
        _ransac_point(
            xy[p], conf[p], P[p % P.shape[0]], conf_thr, err_thr, min_views, refine_steps, delta,
            X_out[p], inl_out[p], n_out[p:p + 1],
        )


# ----------------------------------------------------------------------------- wrappers
def _np64(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(device="cpu", dtype=torch.float64).numpy())


def _as_dtype(value: float, dtype: torch.dtype) -> float:
    """``value`` rounded to ``dtype`` (what the reference compares against), as a Python float."""
    return float(torch.tensor(value, dtype=dtype))


def _dlt_launch(k: FlatInputs) -> Tensor:
    X = np.empty((k.N, 3))
    _dlt_kernel(_np64(k.xy), _np64(k.w), _np64(k.P if k.per_point else k.P[None]), X)  # P [Np, V, 3, 4], Np = 1 or N
    return torch.from_numpy(X).to(k.xy.dtype)


def triangulate_dlt_numba(xy: Tensor, P: Tensor, w: Tensor) -> Tensor:
    """Weighted DLT (:func:`~h4d_fast.ops._triangulate_torch.triangulate_dlt_torch`), numba on CPU, any V."""
    return kernel_dlt(_dlt_launch, xy, P, w)


def _ransac_launch(k: FlatInputs, prm: RansacParams) -> tuple[Tensor, Tensor, Tensor]:
    dtype = k.xy.dtype
    X = np.full((k.N, 3), np.nan)
    inl = np.zeros((k.N, k.V), dtype=np.bool_)
    n = np.zeros(k.N, dtype=np.int64)
    _ransac_kernel(
        _np64(k.xy), _np64(k.w), _np64(k.P if k.per_point else k.P[None]), _as_dtype(prm.conf_thr, dtype), _as_dtype(prm.err_thr, dtype),
        int(prm.min_views), int(prm.refine_steps), _as_dtype(prm.huber_delta, dtype), X, inl, n,
    )
    return torch.from_numpy(X).to(dtype), torch.from_numpy(inl), torch.from_numpy(n)


def triangulate_ransac_numba(xy: Tensor, P: Tensor, conf: Tensor, conf_thr: float = 0.5, err_thr: float = 0.01, min_views: int = 2,
                             refine_steps: int = 3, huber_delta: float = 0.005) -> tuple[Tensor, Tensor, Tensor]:
    """RANSAC (:func:`~h4d_fast.ops._triangulate_torch.triangulate_ransac_torch`), numba on CPU, any V."""
    return kernel_ransac(_ransac_launch, xy, P, conf, RansacParams(conf_thr, err_thr, min_views, refine_steps, huber_delta))
