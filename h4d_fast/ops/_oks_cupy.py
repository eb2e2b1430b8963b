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

import math
from functools import lru_cache

import cupy  # noqa: F401  (imported here so that a missing CuPy fails at dispatch, not at launch)
import numpy as np
import torch
from torch import Tensor

from ..constants import COCO_SIGMAS
from . import _cuda_source as cs

MAX_DETECTIONS = 32
OKS_BLOCK = 128
DEDUP_WARPS = 4  # h4d::kDedupWarps in h4d_fast/csrc/oks.cu


def _check_dtype(op: str, k: Tensor) -> None:
    if k.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{op} (cupy): supports float32 and float64 inputs, got {k.dtype}")


def _var(sigmas: Tensor | None, J: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(2 sigma)^2`` ``[J]`` in the data dtype, as the reference computes it (COCO's sigmas by default)."""
    if sigmas is None:  # computed on the host, copied without blocking it (cached by the caller)
        s = torch.tensor(COCO_SIGMAS, dtype=dtype)
        if s.numel() != J:
            raise ValueError(f"oks: {s.numel()} COCO keypoint sigmas for {J} keypoints")
        var = ((2 * s) ** 2).contiguous()
        return var.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else var
    s = sigmas.to(device=device, dtype=dtype)
    if s.numel() != J:
        raise ValueError(f"oks: {s.numel()} keypoint sigmas for {J} keypoints")
    return ((2 * s) ** 2).reshape(J).contiguous()


@lru_cache(maxsize=16)
def _coco_var(J: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    return _var(None, J, dtype, device)


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
    _check_dtype("oks", kpts_a)
    dtype, dev = kpts_a.dtype, kpts_a.device
    A, B, J = kpts_a.shape[-3], kpts_b.shape[-3], kpts_a.shape[-2]
    lead = torch.broadcast_shapes(kpts_a.shape[:-3], kpts_b.shape[:-3], *(() if areas is None else (areas.shape[:-2],)))
    T = math.prod(lead)
    var = _coco_var(J, dtype, dev) if sigmas is None else _var(sigmas, J, dtype, dev)
    out = torch.empty(T, A, B, dtype=dtype, device=dev)  # [T, A, B]
    total = T * A * B
    if total == 0:
        return out.reshape(*lead, A, B)
    a = kpts_a.detach().expand(*lead, A, J, 3).reshape(T, A, J, 3).contiguous()  # [T, A, J, 3]
    b = kpts_b.detach().to(dtype).expand(*lead, B, J, 3).reshape(T, B, J, 3).contiguous()  # [T, B, J, 3]
    ar = None if areas is None else areas.detach().to(dtype).expand(*lead, A, B).reshape(T, A, B).contiguous()
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
    _check_dtype("dedup_oks", kpts)
    if policy not in ("drop-both", "keep-best"):
        raise ValueError(f"dedup_oks: unknown policy {policy!r} (drop-both or keep-best)")
    D, J = kpts.shape[-3], kpts.shape[-2]
    if D > MAX_DETECTIONS:
        raise ValueError(f"dedup_oks (cupy): at most {MAX_DETECTIONS} detections per view-frame, got {D}")
    lead = kpts.shape[:-3]
    T = math.prod(lead)
    dtype, dev = kpts.dtype, kpts.device
    keep = torch.empty(T, D, dtype=torch.uint8, device=dev)  # [T, D]
    if T * D == 0:
        return keep.view(torch.bool).reshape(*lead, D)
    k = kpts.detach().reshape(T, D, J, 3).contiguous()  # [T, D, J, 3]
    vd = valid.reshape(T, D).to(torch.uint8).contiguous()  # [T, D]
    sc = None if scores is None else scores.detach().to(dtype).expand(*lead, D).reshape(T, D).contiguous()
    cs.launch(
        "oks.cu", f"h4d_dedup_{cs.suffix(dtype)}", dev, (T + DEDUP_WARPS - 1) // DEDUP_WARPS, 32 * DEDUP_WARPS,
        (cs.ptr(k), cs.ptr(vd), cs.ptr(sc), cs.ptr(_coco_var(J, dtype, dev)), np.int64(T), np.int32(D), np.int32(J),
         cs.scalar(kpt_thr, dtype), cs.scalar(thr, dtype), np.int32(policy == "keep-best"), cs.ptr(keep)),
    )
    return keep.view(torch.bool).reshape(*lead, D)
