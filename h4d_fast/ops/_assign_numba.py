"""Numba (CPU, parallel) backend of the linear assignment op.

The Hungarian method of :mod:`h4d_fast.ops._assign_torch`: its :func:`~h4d_fast.ops._assign_torch.hungarian_min`
compiled as it stands (same loops, same order, float64), one ``prange`` iteration per problem;
scratch arrays are allocated per problem.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from ._assign_torch import clean_scores, hungarian_min

# the reference's Hungarian method itself, compiled (one definition, :func:`hungarian_min`)
_hungarian_min = numba.njit(cache=True)(hungarian_min)


@numba.njit(cache=True)
def assign_one(s: np.ndarray, out: np.ndarray) -> None:
    """One problem ``s [R, C]`` (cleaned scores) -> ``out [R]``."""
    R, C = s.shape
    for r in range(R):
        out[r] = -1
    if R == 0 or C == 0:
        return
    if R <= C:
        col = _hungarian_min(-s)
        for r in range(R):
            out[r] = col[r]
    else:  # the columns take the rows
        row_of = _hungarian_min(np.ascontiguousarray(-s.T))
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
