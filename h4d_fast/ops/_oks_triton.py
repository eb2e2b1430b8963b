"""Triton backend of OKS and OKS duplicate removal (one launch per call).

Algorithm: the definitions of :mod:`h4d_fast.ops._oks_torch` --

    valid_k = (c_a,k > kpt_thr) & (c_b,k > kpt_thr)
    area    = given, or the mean of the two keypoint-box areas (confident keypoints; 0 if none)
    e_k     = |x_a,k - x_b,k|^2 / (2 sigma_k)^2 / (area + eps) / 2
    OKS     = mean over valid k of exp(-e_k)   (0 when no keypoint is valid in both)

Launch layouts:

* ``_oks_kernel``: a 1-D grid over all ``T * A * B`` pose pairs (``T`` = flattened leading dims),
  one pair per lane; a keypoint loop computes the two box areas (unless given), then the OKS sum.
* ``_dedup_kernel``: one program per view-frame (``T`` programs for the whole sequence), D <= 32
  detections. The program builds the ``[D, D]`` OKS matrix as a register tile (keypoint loop over
  ``[D, 1] x [1, D]`` broadcasts), thresholds it into the duplicate matrix and applies the policy in
  the same launch: ``drop-both`` = valid and no duplicate; ``keep-best`` = the reference's rank loop
  (rank by score descending, ties to the lower slot; at rank r a slot is kept unless it duplicates
  a better slot already kept). Default scores (mean confident confidence) are computed in-kernel.

Guarantees: the reference's formulas and tie rules, computed in the input dtype (float32/float64);
thresholds are read from a small device tensor in that dtype. Results may differ from torch in
the last bits (summation order, ``exp``), so a decision can only differ when an OKS lies within
rounding of ``thr``. Not differentiable.
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._oks_host import (
    MAX_DETECTIONS,  # noqa: F401 (the kernels' limit)
    DedupInputs,
    OksInputs,
    kernel_dedup,
    kernel_oks,
)
from ._oks_host import coco_var as _coco_var
from ._oks_torch import EPS

OKS_BLOCK = 128


@triton.jit
def _box_area(k_ptr, J, kpt_thr, mask, BLOCK: tl.constexpr):
    """Keypoint-box area of the poses at ``k_ptr`` (``[BLOCK]`` pointers to ``[J, 3]``), 0 if none is confident."""
    big = tl.full([BLOCK], float("inf"), dtype=k_ptr.dtype.element_ty)
    x1 = big
    y1 = big
    x2 = -big
    y2 = -big
    cnt = tl.zeros([BLOCK], tl.int32)
    for j in range(J):
        x = tl.load(k_ptr + 3 * j, mask=mask, other=0.0)
        y = tl.load(k_ptr + 3 * j + 1, mask=mask, other=0.0)
        c = tl.load(k_ptr + 3 * j + 2, mask=mask, other=0.0)
        ok = c > kpt_thr
        x1 = tl.where(ok, tl.minimum(x1, x), x1)
        x2 = tl.where(ok, tl.maximum(x2, x), x2)
        y1 = tl.where(ok, tl.minimum(y1, y), y1)
        y2 = tl.where(ok, tl.maximum(y2, y), y2)
        cnt += ok.to(tl.int32)
    return tl.where(cnt > 0, (x2 - x1) * (y2 - y1), 0.0)


@triton.jit(do_not_specialize=["total", "A", "B", "J"])  # no recompilation for new sizes
def _oks_kernel(
    a_ptr,  # [T, A, J, 3]
    b_ptr,  # [T, B, J, 3]
    area_ptr,  # [T, A, B] (HAS_AREA)
    var_ptr,  # [J] (2 sigma)^2
    prm_ptr,  # [1] kpt_thr
    out_ptr,  # [T, A, B]
    total,  # T * A * B
    A,
    B,
    J,
    HAS_AREA: tl.constexpr,
    EPS_: tl.constexpr,
    BLOCK: tl.constexpr,
):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)  # [BLOCK] pair index
    m = idx < total
    t = idx // (A * B)
    r = idx % (A * B)
    ia = r // B
    ib = r % B
    pa = a_ptr + (t * A + ia) * J * 3  # [BLOCK] pose pointers
    pb = b_ptr + (t * B + ib) * J * 3
    kpt_thr = tl.load(prm_ptr)
    if HAS_AREA:
        area = tl.load(area_ptr + idx, mask=m, other=0.0)
    else:
        area = 0.5 * (_box_area(pa, J, kpt_thr, m, BLOCK) + _box_area(pb, J, kpt_thr, m, BLOCK))
    s = tl.zeros([BLOCK], dtype=a_ptr.dtype.element_ty)
    n = tl.zeros([BLOCK], tl.int32)
    for j in range(J):
        xa = tl.load(pa + 3 * j, mask=m, other=0.0)
        ya = tl.load(pa + 3 * j + 1, mask=m, other=0.0)
        ca = tl.load(pa + 3 * j + 2, mask=m, other=0.0)
        xb = tl.load(pb + 3 * j, mask=m, other=0.0)
        yb = tl.load(pb + 3 * j + 1, mask=m, other=0.0)
        cb = tl.load(pb + 3 * j + 2, mask=m, other=0.0)
        var = tl.load(var_ptr + j)
        dx = xa - xb
        dy = ya - yb
        e = (dx * dx + dy * dy) / var / (area + EPS_) / 2.0
        ok = (ca > kpt_thr) & (cb > kpt_thr)
        s += tl.where(ok, tl.exp(-e), 0.0)
        n += ok.to(tl.int32)
    res = tl.where(n > 0, s / tl.maximum(n, 1).to(s.dtype), 0.0)
    tl.store(out_ptr + idx, res, mask=m)


@triton.jit(do_not_specialize=["D", "J"])
def _dedup_kernel(
    k_ptr,  # [T, D, J, 3]
    valid_ptr,  # [T, D] uint8
    score_ptr,  # [T, D] (HAS_SCORES)
    var_ptr,  # [J]
    prm_ptr,  # [2] (kpt_thr, thr)
    keep_ptr,  # [T, D] uint8 out
    D,
    J,
    HAS_SCORES: tl.constexpr,
    KEEP_BEST: tl.constexpr,
    EPS_: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, BLOCK_D)  # [BD] detection slot
    im = i < D
    kpt_thr = tl.load(prm_ptr)
    thr = tl.load(prm_ptr + 1)
    base = k_ptr + t * D * J * 3
    valid = (tl.load(valid_ptr + t * D + i, mask=im, other=0) != 0) & im  # [BD]

    # per-detection keypoint-box area and default score (mean confident confidence), one keypoint pass
    big = tl.full([BLOCK_D], float("inf"), dtype=k_ptr.dtype.element_ty)
    x1 = big
    y1 = big
    x2 = -big
    y2 = -big
    csum = tl.zeros([BLOCK_D], dtype=k_ptr.dtype.element_ty)
    ccnt = tl.zeros([BLOCK_D], tl.int32)
    for j in range(J):
        pk = base + (i * J + j) * 3
        x = tl.load(pk, mask=im, other=0.0)
        y = tl.load(pk + 1, mask=im, other=0.0)
        c = tl.load(pk + 2, mask=im, other=0.0)
        ok = c > kpt_thr
        x1 = tl.where(ok, tl.minimum(x1, x), x1)
        x2 = tl.where(ok, tl.maximum(x2, x), x2)
        y1 = tl.where(ok, tl.minimum(y1, y), y1)
        y2 = tl.where(ok, tl.maximum(y2, y), y2)
        csum += tl.where(ok, c, 0.0)
        ccnt += ok.to(tl.int32)
    area = tl.where(ccnt > 0, (x2 - x1) * (y2 - y1), 0.0)  # [BD]
    if HAS_SCORES:
        score = tl.load(score_ptr + t * D + i, mask=im, other=0.0)
    else:
        score = csum / tl.maximum(ccnt, 1).to(csum.dtype)

    # pairwise OKS tile [BD, BD]
    ii = i[:, None]
    jj = i[None, :]
    m2 = im[:, None] & im[None, :]
    den = 0.5 * (area[:, None] + area[None, :]) + EPS_  # [BD, BD] area + eps
    s = tl.zeros([BLOCK_D, BLOCK_D], dtype=k_ptr.dtype.element_ty)
    n = tl.zeros([BLOCK_D, BLOCK_D], tl.int32)
    for j in range(J):
        pa = base + (ii * J + j) * 3  # [BD, 1]
        pb = base + (jj * J + j) * 3  # [1, BD]
        xa = tl.load(pa, mask=im[:, None], other=0.0)
        ya = tl.load(pa + 1, mask=im[:, None], other=0.0)
        ca = tl.load(pa + 2, mask=im[:, None], other=0.0)
        xb = tl.load(pb, mask=im[None, :], other=0.0)
        yb = tl.load(pb + 1, mask=im[None, :], other=0.0)
        cb = tl.load(pb + 2, mask=im[None, :], other=0.0)
        var = tl.load(var_ptr + j)
        dx = xa - xb
        dy = ya - yb
        e = (dx * dx + dy * dy) / var / den / 2.0
        ok = (ca > kpt_thr) & (cb > kpt_thr)
        s += tl.where(ok, tl.exp(-e), 0.0)
        n += ok.to(tl.int32)
    o = tl.where(n > 0, s / tl.maximum(n, 1).to(s.dtype), 0.0)
    dup = (o > thr) & valid[:, None] & valid[None, :] & (ii != jj) & m2  # [BD, BD]

    if KEEP_BEST:
        si = score[:, None]
        sj = score[None, :]
        better = ((sj > si) | ((sj == si) & (jj < ii))) & m2  # better[i, j]: j ranks before i
        order = tl.sum(better.to(tl.int32), axis=1)  # [BD] rank, 0 = best
        keep = tl.zeros([BLOCK_D], tl.int32)
        for r in range(D):  # the reference's rank loop: all slots of rank r decide on the kept set so far
            blocked = tl.max((dup & better & (keep[None, :] != 0)).to(tl.int32), axis=1)  # [BD]
            keep = tl.where((order == r) & valid & (blocked == 0), 1, keep)
    else:
        keep = (valid & (tl.max(dup.to(tl.int32), axis=1) == 0)).to(tl.int32)
    tl.store(keep_ptr + t * D + i, keep.to(tl.uint8), mask=im)


# ----------------------------------------------------------------------------- host side
@lru_cache(maxsize=64)
def _params(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Thresholds as a cached device tensor in the data dtype (Triton passes Python floats as float32),
    copied from pinned memory without blocking the host."""
    host = torch.tensor(values, dtype=dtype)
    return host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host


def _oks_launch(x: OksInputs, kpt_thr: float) -> None:
    dtype, dev = x.out.dtype, x.out.device
    ar = x.out if x.areas is None else x.areas
    block = OKS_BLOCK if os.environ.get("TRITON_INTERPRET") != "1" else max(16, min(1024, triton.next_power_of_2(x.total)))
    _oks_kernel[(triton.cdiv(x.total, block),)](
        x.a, x.b, ar, x.var, _params((float(kpt_thr),), dtype, dev), x.out, x.total, x.A, x.B, x.J,
        HAS_AREA=x.areas is not None, EPS_=EPS, BLOCK=block, num_warps=4,
    )


def oks_triton(kpts_a: Tensor, kpts_b: Tensor, areas: Tensor | None = None, sigmas: Tensor | None = None, kpt_thr: float = 0.2) -> Tensor:
    """Pairwise OKS (:func:`~h4d_fast.ops._oks_torch.oks_torch`) in one Triton launch; not differentiable."""
    return kernel_oks("triton", _oks_launch, kpts_a, kpts_b, areas, sigmas, kpt_thr)


def _dedup_launch(x: DedupInputs, thr: float, keep_best: bool, kpt_thr: float) -> None:
    dtype, dev = x.kpts.dtype, x.kpts.device
    block_d = max(2, triton.next_power_of_2(x.D))
    _dedup_kernel[(x.T,)](
        x.kpts, x.valid, x.kpts if x.scores is None else x.scores, _coco_var(x.J, dtype, dev),
        _params((float(kpt_thr), float(thr)), dtype, dev), x.keep, x.D, x.J,
        HAS_SCORES=x.scores is not None, KEEP_BEST=keep_best, EPS_=EPS, BLOCK_D=block_d,
        num_warps=1 if block_d <= 8 else (2 if block_d <= 16 else 4),  # <= 8 tile elements per thread
    )


def dedup_oks_triton(kpts: Tensor, valid: Tensor, thr: float = 0.7, policy: str = "drop-both", kpt_thr: float = 0.2,
                     scores: Tensor | None = None) -> Tensor:
    """OKS duplicate removal (:func:`~h4d_fast.ops._oks_torch.dedup_oks_torch`), one program per view-frame, D <= 32."""
    return kernel_dedup("triton", _dedup_launch, kpts, valid, thr, policy, kpt_thr, scores)
