"""Camera and triangulation arithmetic the peers compute, in batched torch (any device).

* :func:`undistort_opencv`: ``cv2.undistortPoints`` (radial-tangential: OpenCV's fixed-point
  iteration with its default 5 iterations, which stops short of convergence under strong
  distortion, so a converged solver would differ) and ``cv2.fisheye.undistortPoints`` (Newton on
  the field angle; OpenCV stops at 1e-8, converged).
* :func:`homogeneous_dlt`: the homogeneous DLT solution (last right singular vector of the
  stacked rows ``A``) from the normal matrix ``M = A^T A``: the inhomogeneous solution, then eight
  multiplications by the adjugate of ``M`` (which scales ``M``'s eigenvector of the smallest
  eigenvalue by the product of the other three and every other one by a product that includes
  the smallest eigenvalue; so each step divides the error by ``lambda_2 / lambda_1``: ~1e4-1e6
  for consistent views, ~80 for a view 80 px off, infinite for exact data); where one more step
  still moves the estimate (the two smallest eigenvalues close: gross outliers among the views),
  ``torch.linalg.eigh`` of those matrices instead. Equal to the SVD to ~1e-12.
* :func:`dlt_rows_normal`: ``M`` per view from the rows ``w (x P_3 - P_1)``, ``w (y P_3 - P_2)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..camera import CameraSet, make_cameras
from ..ops._triangulate_torch import solve3x3

_CONVERGED = 1e-13  # change of the unit eigenvector estimate in one more adjugate step


def cameraset_opencv(K: np.ndarray, dist: list[np.ndarray], rvec_or_R: np.ndarray, tvec: np.ndarray, fisheye: list[bool],
                     size: np.ndarray | None = None, names: list[str] | None = None, device: torch.device | str = "cpu") -> CameraSet:
    """A float64 :class:`CameraSet` from OpenCV-style arrays: ``K [C, 3, 3]``, per-camera distortion
    (OpenCV order ``k1 k2 p1 p2 [k3 [k4 k5 k6]]``, fisheye ``k1..k4``), Rodrigues ``[C, 3]`` or
    rotation matrices ``[C, 3, 3]``, ``tvec [C, 3]``."""
    import cv2

    C = len(K)
    Rs = np.asarray(rvec_or_R, dtype=np.float64)
    if Rs.shape == (C, 3) or Rs.shape == (C, 3, 1):
        Rs = np.stack([cv2.Rodrigues(np.asarray(r, np.float64).reshape(3, 1))[0] for r in Rs.reshape(C, 3)])
    d = np.zeros((C, 8))
    for i, di in enumerate(dist):
        di = np.asarray(di, dtype=np.float64).reshape(-1)
        if di.size > 8 and np.any(di[8:] != 0):
            raise ValueError(f"camera {i}: distortion with {di.size} coefficients (thin prism / tilt) is not supported")
        d[i, : min(8, di.size)] = di[:8]
    Kn = np.asarray(K, dtype=np.float64).reshape(C, 3, 3)
    intr = np.stack([Kn[:, 0, 0], Kn[:, 1, 1], Kn[:, 0, 2], Kn[:, 1, 2]], -1)
    sz = np.zeros((C, 2), np.int64) if size is None else np.asarray(size, dtype=np.float64).reshape(C, 2).astype(np.int64)
    cams = make_cameras(names or [f"cam{i:02d}" for i in range(C)], ["fisheye" if f else "opencv" for f in fisheye], intr, Rs,
                        np.asarray(tvec, dtype=np.float64).reshape(C, 3), sz, d)
    return cams.to(device)


def undistort_opencv(uv: Tensor, cams: CameraSet, iters: int = 5) -> Tensor:
    """``uv [..., C, 2]`` pixels -> undistorted normalized coordinates as OpenCV computes them
    (module docstring). NaN stays NaN."""
    f = cams.intrinsics[:, :2].to(uv.dtype)
    c = cams.intrinsics[:, 2:].to(uv.dtype)
    x0 = (uv - c) / f
    d = cams.dist.to(uv.dtype)
    fish = torch.tensor([m == "fisheye" for m in cams.model], device=uv.device)
    out = x0
    if bool((~fish).any()):
        k1, k2, p1, p2, k3, k4, k5, k6 = d.unbind(-1)
        x, y = x0[..., 0], x0[..., 1]
        X0, Y0 = x, y
        for _ in range(iters):
            r2 = x * x + y * y
            icd = (1 + ((k6 * r2 + k5) * r2 + k4) * r2) / (1 + ((k3 * r2 + k2) * r2 + k1) * r2)
            dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
            dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
            x, y = (X0 - dx) * icd, (Y0 - dy) * icd
        out = torch.stack([x, y], -1)
    if bool(fish.any()):
        from ..camera import MODEL_ID, undistort

        fw = undistort(x0, d, torch.full((len(cams),), MODEL_ID["fisheye"], device=uv.device), iters=20)
        out = torch.where(fish[:, None], fw, out)
    return out


def dlt_rows_normal(xy: Tensor, P: Tensor, w: Tensor | None = None) -> Tensor:
    """Per-view normal matrices ``[..., V, 4, 4]`` of the DLT rows ``w (x P_3 - P_1)``, ``w (y P_3 - P_2)``.

    Args:
        xy: ``[..., V, 2]``; P ``[V, 3, 4]`` (or broadcastable ``[..., V, 3, 4]``); w ``[..., V]``
            (default 1; 0 removes the view; NaN coordinates must already carry w = 0).
    """
    r1 = xy[..., 0, None] * P[..., 2, :] - P[..., 0, :]  # [..., V, 4]
    r2 = xy[..., 1, None] * P[..., 2, :] - P[..., 1, :]
    if w is not None:
        r1, r2 = r1 * w[..., None], r2 * w[..., None]
    r1 = torch.nan_to_num(r1, nan=0.0)
    r2 = torch.nan_to_num(r2, nan=0.0)
    return r1[..., :, None] * r1[..., None, :] + r2[..., :, None] * r2[..., None, :]


def _adjugate4(M: Tensor) -> Tensor:
    """Adjugate ``[..., 4, 4]`` of symmetric ``M`` (cofactors; no division)."""
    m = [[M[..., i, j] for j in range(4)] for i in range(4)]

    def det3(r: tuple[int, int, int], c: tuple[int, int, int]) -> Tensor:
        a = m
        return (a[r[0]][c[0]] * (a[r[1]][c[1]] * a[r[2]][c[2]] - a[r[1]][c[2]] * a[r[2]][c[1]])
                - a[r[0]][c[1]] * (a[r[1]][c[0]] * a[r[2]][c[2]] - a[r[1]][c[2]] * a[r[2]][c[0]])
                + a[r[0]][c[2]] * (a[r[1]][c[0]] * a[r[2]][c[1]] - a[r[1]][c[1]] * a[r[2]][c[0]]))

    idx = (0, 1, 2, 3)
    rows = []
    for i in range(4):
        ri = tuple(k for k in idx if k != i)
        row = []
        for j in range(4):
            cj = tuple(k for k in idx if k != j)
            row.append(det3(cj, ri) * (1.0 if (i + j) % 2 == 0 else -1.0))  # adj = cofactor^T
        rows.append(torch.stack(row, -1))
    return torch.stack(rows, -2)


def homogeneous_dlt(M: Tensor, steps: int = 8) -> Tensor:
    """The homogeneous DLT point ``[..., 3]`` of normal matrices ``M [..., 4, 4]`` (module docstring).

    With rank below 3 (fewer than two independent views) the result is meaningless (NaN when the
    adjugate vanishes exactly): callers count the views.
    """
    x0, _ = solve3x3(M[..., :3, :3], -M[..., :3, 3])
    v = torch.cat([x0, torch.ones_like(x0[..., :1])], -1)
    v = torch.where(torch.isfinite(v), v, torch.zeros_like(v))
    v[..., 3] = 1.0
    adj = _adjugate4(M)
    for _ in range(steps):
        v = (adj @ v[..., None])[..., 0]
        v = v / v.norm(dim=-1, keepdim=True)
    # one more step tells whether it converged; where it did not (the two smallest eigenvalues
    # close, e.g. a gross outlier among few views), the eigendecomposition
    w = (adj @ v[..., None])[..., 0]
    w = w / w.norm(dim=-1, keepdim=True)
    slow = (w - v * torch.sign((w * v).sum(-1, keepdim=True))).norm(dim=-1) > _CONVERGED
    if bool(slow.any()):
        Ms = M[slow]
        good = torch.isfinite(Ms).all(-1).all(-1)
        vs = v[slow].clone()
        if bool(good.any()):
            vs[good] = torch.linalg.eigh(Ms[good])[1][..., :, 0]
        v = v.clone()
        v[slow] = vs
    X = v[..., :3] / v[..., 3:]
    bad = ~torch.isfinite(X).all(-1)
    return torch.where(bad[..., None], torch.full_like(X, float("nan")), X)


__all__ = ["cameraset_opencv", "dlt_rows_normal", "homogeneous_dlt", "undistort_opencv"]
