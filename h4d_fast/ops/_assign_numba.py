"""Numba (CPU, parallel) backend of the linear assignment op.

The Hungarian method of :mod:`h4d_fast.ops._assign_torch` step for step (same loops, same order,
float64), one ``prange`` iteration per problem; scratch arrays are allocated per problem.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from ._assign_torch import clean_scores


@numba.njit(cache=True)
def _hungarian_min(cost: np.ndarray, n: int, m: int, transposed: bool, col: np.ndarray) -> None:
    """``cost`` is ``[n, m]`` (or ``[m, n]`` read transposed); writes ``col[n]``."""
    inf = np.inf
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, np.int64)
    way = np.zeros(m + 1, np.int64)
    minv = np.empty(m + 1)
    used = np.empty(m + 1, np.bool_)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv[:] = inf
        used[:] = False
        while True:
            used[j0] = True
            i0 = p[j0]
            delta = inf
            j1 = 0
            for j in range(1, m + 1):
                if not used[j]:
                    c = cost[j - 1, i0 - 1] if transposed else cost[i0 - 1, j - 1]
                    cur = c - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j] = cur
                        way[j] = j0
                    if minv[j] < delta:
                        delta = minv[j]
                        j1 = j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while True:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
            if j0 == 0:
                break
    for i in range(n):
        col[i] = -1
    for j in range(1, m + 1):
        if p[j] != 0:
            col[p[j] - 1] = j - 1


@numba.njit(cache=True)
def assign_one(s: np.ndarray, out: np.ndarray) -> None:
    """One problem ``s [R, C]`` (cleaned scores) -> ``out [R]``."""
    R, C = s.shape
    for r in range(R):
        out[r] = -1
    if R == 0 or C == 0:
        return
    neg = -s
    if R <= C:
        col = np.empty(R, np.int64)
        _hungarian_min(neg, R, C, False, col)
        for r in range(R):
            out[r] = col[r]
    else:
        row_of = np.empty(C, np.int64)
        _hungarian_min(neg, C, R, True, row_of)
        for c in range(C):
            out[row_of[c]] = c
    for r in range(R):
        c = out[r]
        if c >= 0 and not (s[r, c] > 0.0):
            out[r] = -1


@numba.njit(cache=True, parallel=True)
def _assign_batch(s: np.ndarray, out: np.ndarray) -> None:
    for b in numba.prange(s.shape[0]):
        assign_one(s[b], out[b])


def assign_batch_numpy(s: np.ndarray) -> np.ndarray:
    """Cleaned scores ``[B, R, C]`` float64 -> ``[B, R]`` int64 (for callers already on numpy)."""
    out = np.empty(s.shape[:2], np.int64)
    if s.shape[0]:
        _assign_batch(np.ascontiguousarray(s, dtype=np.float64), out)
    return out


def linear_assignment_numba(score: Tensor, min_score: float) -> Tensor:
    """``score [..., R, C]`` -> ``[..., R]`` int64 (see :mod:`h4d_fast.ops._assign_torch`)."""
    *lead, R, C = score.shape
    B = 1
    for n in lead:
        B *= n
    s = clean_scores(score, min_score).reshape(B, R, C).cpu().numpy()
    return torch.from_numpy(assign_batch_numpy(s)).reshape(*lead, R).to(score.device)
