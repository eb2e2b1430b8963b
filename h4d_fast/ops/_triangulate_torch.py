"""Torch reference of weighted DLT and RANSAC view-set triangulation.

Works on undistorted normalized image coordinates ``xy`` with 3x4 projection matrices
(``[R | t]`` for normalized coordinates), batched over any leading dimensions. This is the
oracle the fused kernels are tested against; it is plain torch and runs on any device.

Weighted DLT (inhomogeneous form). Each view contributes the two rows
``w (x P_3 - P_1)`` and ``w (y P_3 - P_2)`` of ``A [2V, 4]``; with ``A = [M | m]`` the point is
the least-squares solution of ``M X = -m``, solved through the 3x3 normal equations in closed
form (adjugate / determinant): no SVD, the same arithmetic a kernel does in registers. For
metric scenes (points at finite distance) this equals the homogeneous SVD solution up to noise.

RANSAC (the Harmony4D rule, exhaustive over view pairs):
    candidates  c_v > conf_thr and xy_v finite
    hypothesis  each pair (i < j) of candidates, in lexicographic order -> weighted DLT X_ij
    consistency a hypothesis counts only if it lies in front of both of its cameras and reprojects
                into both within err_thr (the reference accepts any pair: two rays that miss
                each other by far, e.g. one person's wrist in one view and the other person's
                in another, then still yield a point)
    inliers     the pair plus every candidate v in front of the camera with 0.5 |xy_v - pi_v(X_ij)| < err_thr
    winner      the largest inlier set; ties -> the earliest pair
    final       weighted DLT on the winner's inliers, then ``refine_steps`` iterations of
                confidence-weighted Huber Gauss-Newton on the reprojection error
A point with fewer than ``min_views`` inliers (or fewer than 2 candidates) is invalid: NaN
coordinates, empty inlier mask, ``n_inliers = 0``.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import torch
from torch import Tensor

from ._triangulate_math import solve3


@lru_cache(maxsize=64)
def view_pairs(V: int) -> tuple[tuple[int, int], ...]:
    """All view pairs ``(i, j), i < j`` in the earliest-first order that breaks ties."""
    return tuple(itertools.combinations(range(V), 2))


def _pairs_tensor(V: int, device: torch.device) -> Tensor:
    p = view_pairs(V)
    if not p:
        return torch.zeros(0, 2, dtype=torch.long, device=device)
    return torch.tensor(p, dtype=torch.long, device=device)


def solve3x3(M: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Closed-form solve of ``M x = b`` for symmetric ``M [..., 3, 3]``; returns ``(x [..., 3], det [...])``."""
    m = M[..., 0, 0], M[..., 0, 1], M[..., 0, 2], M[..., 1, 1], M[..., 1, 2], M[..., 2, 2]  # the unique entries
    x0, x1, x2, det = solve3(*m, b[..., 0], b[..., 1], b[..., 2])
    return torch.stack([x0, x1, x2], -1), det


def dlt_normal_equations(xy: Tensor, P: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Normal equations of the weighted inhomogeneous DLT.

    Args:
        xy: ``[..., V, 2]`` normalized coordinates.
        P: ``[..., V, 3, 4]`` projection matrices.
        w: ``[..., V]`` row weights (0 excludes a view).
    Returns:
        ``(M [..., 3, 3], rhs [..., 3])`` with ``M X = rhs``.
    """
    r1 = xy[..., 0, None] * P[..., 2, :] - P[..., 0, :]  # [..., V, 4]
    r2 = xy[..., 1, None] * P[..., 2, :] - P[..., 1, :]  # [..., V, 4]
    w2 = (w * w)[..., None, None]  # [..., V, 1, 1]
    M = (w2 * (r1[..., :3, None] * r1[..., None, :3] + r2[..., :3, None] * r2[..., None, :3])).sum(-3)
    rhs = -(w2[..., 0] * (r1[..., :3] * r1[..., 3:] + r2[..., :3] * r2[..., 3:])).sum(-2)
    return M, rhs


def triangulate_dlt_torch(xy: Tensor, P: Tensor, w: Tensor) -> Tensor:
    """Weighted DLT of one point per leading index.

    Args:
        xy: ``[..., V, 2]`` normalized image coordinates (NaN rows must carry ``w = 0``).
        P: ``[V, 3, 4]`` or ``[..., V, 3, 4]`` projection matrices.
        w: ``[..., V]`` weights (confidences); rows are multiplied by ``w``.
    Returns:
        ``[..., 3]`` points; NaN where the system is singular (fewer than two usable views).
    """
    P = P.to(xy.dtype).expand(*xy.shape[:-1], 3, 4)
    xy0 = torch.where((w > 0)[..., None], xy, torch.zeros_like(xy))
    M, rhs = dlt_normal_equations(xy0, P, w.to(xy.dtype))
    X, det = solve3x3(M, rhs)
    scale = (M.diagonal(dim1=-2, dim2=-1).sum(-1) / 3) ** 3
    bad = ~(det.abs() > 1e-10 * scale.abs()) | ~torch.isfinite(X).all(-1)
    return torch.where(bad[..., None], torch.full_like(X, float("nan")), X)


def triangulate_dlt_svd_torch(xy: Tensor, P: Tensor, w: Tensor) -> Tensor:
    """Homogeneous weighted DLT: the last right singular vector of ``A [..., 2V, 4]``.

    Same arguments as :func:`triangulate_dlt_torch`. Rows are multiplied by ``w``; a view with
    ``w = 0`` (or non-finite ``xy``) contributes nothing. NaN where fewer than two views are usable
    or the solution lies at infinity.
    """
    P = P.to(xy.dtype).expand(*xy.shape[:-1], 3, 4)
    use = (w > 0) & torch.isfinite(xy).all(-1)
    xy0 = torch.where(use[..., None], xy, torch.zeros_like(xy))
    wz = torch.where(use, w.to(xy.dtype), torch.zeros_like(w, dtype=xy.dtype))
    r1 = (xy0[..., 0, None] * P[..., 2, :] - P[..., 0, :]) * wz[..., None]  # [..., V, 4]
    r2 = (xy0[..., 1, None] * P[..., 2, :] - P[..., 1, :]) * wz[..., None]
    A = torch.stack([r1, r2], -2).flatten(-3, -2)  # [..., 2V, 4]
    Xh = torch.linalg.svd(A, full_matrices=False).Vh[..., -1, :]  # [..., 4]
    X = Xh[..., :3] / Xh[..., 3:]
    bad = (use.sum(-1) < 2) | ~torch.isfinite(X).all(-1) | (Xh[..., 3].abs() < 1e-12)
    return torch.where(bad[..., None], torch.full_like(X, float("nan")), X)


def project_normalized(X: Tensor, P: Tensor) -> tuple[Tensor, Tensor]:
    """``X [..., 3]`` through ``P [..., V, 3, 4]`` -> ``(xy [..., V, 2], z [..., V])``."""
    Xc = torch.einsum("...vij,...j->...vi", P[..., :3], X) + P[..., 3]
    z = Xc[..., 2]
    zs = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    return Xc[..., :2] / zs[..., None], z


def refine_huber(X: Tensor, xy: Tensor, P: Tensor, w: Tensor, steps: int, delta: float, damping: float = 1e-9) -> Tensor:
    """Confidence-weighted Huber Gauss-Newton on the reprojection error (IRLS), ``steps`` iterations.

    Args:
        X: ``[..., 3]`` start points; xy ``[..., V, 2]``; P ``[..., V, 3, 4]``; w ``[..., V]`` (0 = unused view).
    """
    for _ in range(steps):
        Xc = torch.einsum("...vij,...j->...vi", P[..., :3], X) + P[..., 3]  # [..., V, 3]
        z = Xc[..., 2]
        ok = (w > 0) & (z > 1e-9)
        zs = torch.where(ok, z, torch.ones_like(z))
        proj = Xc[..., :2] / zs[..., None]
        r = torch.where(ok[..., None], proj - xy, torch.zeros_like(proj))  # [..., V, 2]
        e = r.norm(dim=-1)
        h = torch.where(e <= delta, torch.ones_like(e), delta / e.clamp_min(1e-30))
        wv = torch.where(ok, w * h, torch.zeros_like(w))  # [..., V]
        # d proj / d Xc = 1/z [[1, 0, -x/z], [0, 1, -y/z]]; d Xc / d X = R
        R = P[..., :3]
        iz = 1.0 / zs
        J0 = iz[..., None] * (R[..., 0, :] - proj[..., 0, None] * R[..., 2, :])  # [..., V, 3]
        J1 = iz[..., None] * (R[..., 1, :] - proj[..., 1, None] * R[..., 2, :])
        H = (wv[..., None, None] * (J0[..., :, None] * J0[..., None, :] + J1[..., :, None] * J1[..., None, :])).sum(-3)
        g = (wv[..., None] * (J0 * r[..., 0, None] + J1 * r[..., 1, None])).sum(-2)
        tr = H.diagonal(dim1=-2, dim2=-1).sum(-1)
        H = H + (damping * tr + 1e-30)[..., None, None] * torch.eye(3, dtype=H.dtype, device=H.device)
        dX, det = solve3x3(H, -g)
        good = torch.isfinite(dX).all(-1) & (det.abs() > 0)
        X = torch.where(good[..., None], X + dX, X)
    return X


def triangulate_ransac_torch(
    xy: Tensor,
    P: Tensor,
    conf: Tensor,
    conf_thr: float = 0.5,
    err_thr: float = 0.01,
    min_views: int = 2,
    refine_steps: int = 3,
    huber_delta: float = 0.005,
    chunk: int = 4096,
) -> tuple[Tensor, Tensor, Tensor]:
    """RANSAC view-set triangulation (see module docstring).

    Args:
        xy: ``[..., V, 2]`` normalized image coordinates (NaN = missing).
        P: ``[V, 3, 4]`` or ``[..., V, 3, 4]`` projection matrices.
        conf: ``[..., V]`` confidences.
        chunk: points processed at once (bounds the ``[N, C, V]`` hypothesis tensor).
    Returns:
        X ``[..., 3]`` (NaN where invalid), inliers ``[..., V]`` bool, n_inliers ``[...]`` int64.
    """
    lead = xy.shape[:-2]
    V = xy.shape[-2]
    P = P.to(xy.dtype).expand(*lead, V, 3, 4).reshape(-1, V, 3, 4)
    xyf = xy.reshape(-1, V, 2)
    cf = conf.to(xy.dtype).reshape(-1, V)
    N = xyf.shape[0]
    X_out = torch.full((N, 3), float("nan"), dtype=xy.dtype, device=xy.device)
    inl_out = torch.zeros(N, V, dtype=torch.bool, device=xy.device)
    n_out = torch.zeros(N, dtype=torch.long, device=xy.device)
    pairs = _pairs_tensor(V, xy.device)  # [C, 2]
    if N == 0 or pairs.shape[0] == 0:
        return X_out.reshape(*lead, 3), inl_out.reshape(*lead, V), n_out.reshape(lead)
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        X, inl, n = _ransac_chunk(xyf[s:e], P[s:e], cf[s:e], pairs, conf_thr, err_thr, min_views, refine_steps, huber_delta)
        X_out[s:e], inl_out[s:e], n_out[s:e] = X, inl, n
    return X_out.reshape(*lead, 3), inl_out.reshape(*lead, V), n_out.reshape(lead)


def _ransac_chunk(xy, P, conf, pairs, conf_thr, err_thr, min_views, refine_steps, huber_delta):
    N, V = conf.shape
    C = pairs.shape[0]
    cand = (conf > conf_thr) & torch.isfinite(xy).all(-1)  # [N, V]
    xy0 = torch.where(cand[..., None], xy, torch.zeros_like(xy))
    w = torch.where(cand, conf, torch.zeros_like(conf))
    i, j = pairs[:, 0], pairs[:, 1]  # [C]
    pair_ok = cand[:, i] & cand[:, j]  # [N, C]
    # 2-view hypotheses
    xy2 = torch.stack([xy0[:, i], xy0[:, j]], -2)  # [N, C, 2, 2]
    P2 = torch.stack([P[:, i], P[:, j]], -3)  # [N, C, 2, 3, 4]
    w2 = torch.stack([w[:, i], w[:, j]], -1)  # [N, C, 2]
    Xh = triangulate_dlt_torch(xy2, P2, w2)  # [N, C, 3]
    # reprojection into every view
    Xc = torch.einsum("nvij,ncj->ncvi", P[..., :3], Xh) + P[:, None, :, :, 3]  # [N, C, V, 3]
    z = Xc[..., 2]
    proj = Xc[..., :2] / torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)[..., None]  # [N, C, V, 2]
    err = 0.5 * (proj - xy0[:, None]).norm(dim=-1)  # [N, C, V]
    inl = cand[:, None, :] & (z > 0) & (err < err_thr)  # [N, C, V]
    in_pair = torch.zeros(C, V, dtype=torch.bool, device=xy.device)
    in_pair[torch.arange(C, device=xy.device), i] = True
    in_pair[torch.arange(C, device=xy.device), j] = True
    # a hypothesis is void if it lies behind one of its own two cameras or if its own two views
    # disagree (reprojection error at or above the threshold: the two rays do not meet)
    own_ok = ((z > 0) & (err < err_thr)) | ~in_pair  # [N, C, V]
    hyp_ok = pair_ok & torch.isfinite(Xh).all(-1) & own_ok.all(-1)  # [N, C]
    inl = (inl | in_pair) & hyp_ok[..., None]
    count = inl.sum(-1)  # [N, C]
    best = count.argmax(-1)  # first maximum = earliest pair
    best_inl = inl[torch.arange(N, device=xy.device), best]  # [N, V]
    n = best_inl.sum(-1)
    wf = torch.where(best_inl, w, torch.zeros_like(w))
    X = triangulate_dlt_torch(xy0, P, wf)
    if refine_steps > 0:
        X = refine_huber(X, xy0, P, wf, refine_steps, huber_delta)
    ok = (n >= max(min_views, 2)) & torch.isfinite(X).all(-1)
    X = torch.where(ok[:, None], X, torch.full_like(X, float("nan")))
    best_inl = best_inl & ok[:, None]
    n = torch.where(ok, n, torch.zeros_like(n))
    return X, best_inl, n
