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
from torch import Tensor

from . import _cuda_source as cs
from ._oks_host import (
    MAX_DETECTIONS,  # noqa: F401 (the kernels' limit)
    DedupInputs,
    OksInputs,
    kernel_dedup,
    kernel_oks,
)
from ._oks_host import coco_var as _coco_var

OKS_BLOCK = 128
DEDUP_WARPS = 4  # h4d::kDedupWarps in h4d_fast/csrc/oks.cu


def _oks_launch(x: OksInputs, kpt_thr: float) -> None:
    dtype = x.out.dtype
    cs.launch(
        "oks.cu", f"h4d_oks_{cs.suffix(dtype)}", x.out.device, (x.total + OKS_BLOCK - 1) // OKS_BLOCK, OKS_BLOCK,
        (cs.ptr(x.a), cs.ptr(x.b), cs.ptr(x.areas), cs.ptr(x.var), np.int64(x.total), np.int32(x.A), np.int32(x.B), np.int32(x.J),
         cs.scalar(kpt_thr, dtype), cs.ptr(x.out)),
    )


def oks_cupy(kpts_a: Tensor, kpts_b: Tensor, areas: Tensor | None = None, sigmas: Tensor | None = None, kpt_thr: float = 0.2) -> Tensor:
    """Pairwise OKS (:func:`~h4d_fast.ops._oks_torch.oks_torch`) in one CUDA launch; not differentiable."""
    return kernel_oks("cupy", _oks_launch, kpts_a, kpts_b, areas, sigmas, kpt_thr)


def _dedup_launch(x: DedupInputs, thr: float, keep_best: bool, kpt_thr: float) -> None:
    dtype, dev = x.kpts.dtype, x.kpts.device
    cs.launch(
        "oks.cu", f"h4d_dedup_{cs.suffix(dtype)}", dev, (x.T + DEDUP_WARPS - 1) // DEDUP_WARPS, 32 * DEDUP_WARPS,
        (cs.ptr(x.kpts), cs.ptr(x.valid), cs.ptr(x.scores), cs.ptr(_coco_var(x.J, dtype, dev)), np.int64(x.T), np.int32(x.D),
         np.int32(x.J), cs.scalar(kpt_thr, dtype), cs.scalar(thr, dtype), np.int32(keep_best), cs.ptr(x.keep)),
    )


def dedup_oks_cupy(kpts: Tensor, valid: Tensor, thr: float = 0.7, policy: str = "drop-both", kpt_thr: float = 0.2,
                   scores: Tensor | None = None) -> Tensor:
    """OKS duplicate removal (:func:`~h4d_fast.ops._oks_torch.dedup_oks_torch`), one warp per view-frame, D <= 32."""
    return kernel_dedup("cupy", _dedup_launch, kpts, valid, thr, policy, kpt_thr, scores)
