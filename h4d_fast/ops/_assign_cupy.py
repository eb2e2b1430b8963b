"""CuPy backend of the linear assignment op: ``h4d_fast/csrc/assign.cu``, one GPU thread per problem.

The same Hungarian method as :mod:`h4d_fast.ops._assign_torch` (float64, same order of steps),
launched on the current torch stream without host synchronisation. ``min(R, C)`` and ``max(R, C)``
up to 64 (larger problems raise; the numba backend has no limit).
"""

from __future__ import annotations

import cupy  # noqa: F401  (a missing CuPy fails at dispatch, not at launch)
import numpy as np
import torch
from torch import Tensor

from . import _cuda_source as cs
from ._assign_torch import clean_scores

MAX_N = 64  # h4d::kMaxN in h4d_fast/csrc/assign.cu
BLOCK = 64


def linear_assignment_cupy(score: Tensor, min_score: float) -> Tensor:
    """``score [..., R, C]`` (CUDA) -> ``[..., R]`` int64 (see :mod:`h4d_fast.ops._assign_torch`)."""
    *lead, R, C = score.shape
    if max(R, C) > MAX_N:
        raise ValueError(f"linear_assignment (cupy): at most {MAX_N} rows and columns, got {R} x {C}")
    B = 1
    for n in lead:
        B *= n
    s = clean_scores(score, min_score).reshape(B, R, C).contiguous()
    out = torch.empty(B, R, dtype=torch.long, device=score.device)
    if B * R:
        cs.launch("assign.cu", "h4d_assign_f64", score.device, (B + BLOCK - 1) // BLOCK, BLOCK,
                  (cs.ptr(s), np.int64(B), np.int32(R), np.int32(C), cs.ptr(out)))
    return out.reshape(*lead, R)
