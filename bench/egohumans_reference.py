"""The EgoHumans / Harmony4D triangulation as the reference computes it, point by point in numpy / scipy.

Written for this repository from the description in ``../shared/docs/reference-pipeline.md``
(section 2.4): the oracle of :mod:`h4d_fast.compat.egohumans`'s tests and the "original" of the
``adapters`` benchmark (the reference package itself is not on PyPI). Per point: every pair of
views in order -> confidence-weighted SVD DLT -> inliers ``0.5 |x - proj(X)| < eps`` plus the
pair -> largest set (earliest pair on ties) -> weighted DLT on the inliers ->
``scipy.optimize.least_squares(0.5 |x - proj(X)| per inlier view, loss="huber", method="trf")``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares


def dlt(P: np.ndarray, pts: np.ndarray, include_confidence: bool = True) -> np.ndarray:
    """SVD DLT of ``P [n, 3, 4]``, ``pts [n, 3]`` (x, y, confidence) -> ``[3]``."""
    w = pts[:, 2] / pts[:, 2].max()
    A = np.zeros((2 * len(P), 4))
    for j in range(len(P)):
        A[2 * j] = pts[j, 0] * P[j, 2] - P[j, 0]
        A[2 * j + 1] = pts[j, 1] * P[j, 2] - P[j, 1]
        if include_confidence:
            A[2 * j : 2 * j + 2] *= w[j]
    h = np.linalg.svd(A, full_matrices=False)[2][3]
    return h[:3] / h[3]


def reproj(X: np.ndarray, pts: np.ndarray, P: np.ndarray) -> np.ndarray:
    """``0.5 |x - proj(X)|`` per view ``[n]``."""
    Xh = np.append(X, 1.0)
    q = P @ Xh  # [n, 3]
    return 0.5 * np.linalg.norm(pts[:, :2] - q[:, :2] / q[:, 2:], axis=1)


def triangulate_ransac(P: np.ndarray, pts: np.ndarray, eps: float = 0.01, include_confidence: bool = True,
                       direct_optimization: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One point: ``(X [3], inliers (sorted view indices), error per inlier view)``."""
    n = len(P)
    best: set = set()
    for i in range(n):
        for j in range(i + 1, n):
            X = dlt(P[[i, j]], pts[[i, j]])
            e = reproj(X, pts, P)
            s = {i, j} | {v for v in range(n) if e[v] < eps}
            if len(s) > len(best):
                best = s
    if not best:
        best = set(range(n))
    idx = np.array(sorted(best))
    X = dlt(P[idx], pts[idx], include_confidence)
    if direct_optimization:
        X = least_squares(lambda x: reproj(x, pts[idx], P[idx]), X, loss="huber", method="trf").x
    return X, idx, reproj(X, pts[idx], P[idx])


__all__ = ["dlt", "reproj", "triangulate_ransac"]
