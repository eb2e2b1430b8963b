"""CuPy backend of OKS and OKS duplicate removal: the CUDA kernels of ``h4d_fast/csrc/oks.cu``.

Definitions: :mod:`h4d_fast.ops._oks_torch`. Launch layouts (details in the header of
``h4d_fast/csrc/oks.cu``):

* ``h4d_oks_{f32,f64}`` -- one thread per pose pair over all ``T * A * B`` pairs.
* ``h4d_dedup_{f32,f64}`` -- one warp per view-frame (4 per block), lane = detection slot (D <= 32):
  the OKS row, the duplicate bitmask and the policy (``drop-both`` or the reference's keep-best rank
  loop via warp ballots) in one launch over the whole sequence.

Arithmetic in the input dtype; launches on the current torch stream, no host synchronisation. Not
differentiable.
"""

from __future__ import annotations

import cupy  # noqa: F401  (imported here so that a missing CuPy fails at dispatch, not at launch)
import numpy as np
import torch
from torch import Tensor

from . import _cuda_source as cs
from ._oks_host import (
    MAX_DETECTIONS,  # noqa: F401 (the kernels' limit)
    dedup_inputs,
    oks_inputs,
)
from ._oks_host import coco_var as _coco_var

OKS_BLOCK = 128
DEDUP_WARPS = 4  # h4d::kDedupWarps in h4d_fast/csrc/oks.cu


def oks_cupy(
    kpts_a: Tensor, kpts_b: Tensor, areas: Tensor | None = None, sigmas: Tensor | None = None, kpt_thr: float = 0.2
) -> Tensor:
    """Pairwise OKS (see :func:`~h4d_fast.ops._oks_torch.oks_torch`) in one CUDA launch.

    Args:
        kpts_a: ``[..., A, J, 3]``; kpts_b: ``[..., B, J, 3]`` (leading dims broadcast);
        areas: ``[..., A, B]`` (broadcastable) or ``None``; sigmas: ``[J]``.
    Returns:
        ``[..., A, B]`` in the dtype of ``kpts_a`` (not differentiable).
    """
    x = oks_inputs("cupy", kpts_a, kpts_b, areas, sigmas)
    lead, A, B, J, total, var, out = x.lead, x.A, x.B, x.J, x.total, x.var, x.out
    if total == 0:
        return out.reshape(*lead, A, B)
    dtype, dev = kpts_a.dtype, kpts_a.device
    a, b = x.a, x.b
    ar = x.areas
    cs.launch(
        "oks.cu", f"h4d_oks_{cs.suffix(dtype)}", dev, (total + OKS_BLOCK - 1) // OKS_BLOCK, OKS_BLOCK,
        (cs.ptr(a), cs.ptr(b), cs.ptr(ar), cs.ptr(var), np.int64(total), np.int32(A), np.int32(B), np.int32(J),
         cs.scalar(kpt_thr, dtype), cs.ptr(out)),
    )
    return out.reshape(*lead, A, B)


def dedup_oks_cupy(
    kpts: Tensor,
    valid: Tensor,
    thr: float = 0.7,
    policy: str = "drop-both",
    kpt_thr: float = 0.2,
    scores: Tensor | None = None,
) -> Tensor:
    """OKS duplicate removal (see :func:`~h4d_fast.ops._oks_torch.dedup_oks_torch`): one warp per view-frame.

    Args:
        kpts: ``[..., D, J, 3]`` (D <= 32); valid: ``[..., D]`` bool; scores: ``[..., D]`` or ``None``.
    Returns:
        ``[..., D]`` bool keep mask.
    """
    x = dedup_inputs("cupy", kpts, valid, policy, scores)
    lead, T, D, J, keep = x.lead, x.T, x.D, x.J, x.keep
    if T * D == 0:
        return keep.view(torch.bool).reshape(*lead, D)
    dtype, dev = kpts.dtype, kpts.device
    k, vd = x.kpts, x.valid
    sc = x.scores
    cs.launch(
        "oks.cu", f"h4d_dedup_{cs.suffix(dtype)}", dev, (T + DEDUP_WARPS - 1) // DEDUP_WARPS, 32 * DEDUP_WARPS,
        (cs.ptr(k), cs.ptr(vd), cs.ptr(sc), cs.ptr(_coco_var(J, dtype, dev)), np.int64(T), np.int32(D), np.int32(J),
         cs.scalar(kpt_thr, dtype), cs.scalar(thr, dtype), np.int32(policy == "keep-best"), cs.ptr(keep)),
    )
    return keep.view(torch.bool).reshape(*lead, D)
