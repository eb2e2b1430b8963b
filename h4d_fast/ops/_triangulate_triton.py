"""Triton backend of weighted DLT and RANSAC view-set triangulation (fused, one launch per call).

Algorithm: the rule of :mod:`h4d_fast.ops._triangulate_torch` --

* candidates ``conf > conf_thr`` with finite xy (xy zeroed and weight 0 elsewhere);
* one hypothesis per view pair ``i < j`` (lexicographic order): the 2-view weighted DLT through
  the 3x3 normal equations, solved in registers by the adjugate, with the reference's singularity
  test;
* inliers: every candidate view with ``z > 0`` and reprojection error ``0.5 |xy - pi(X)| < err_thr``
  (tested without a division as ``|Xc_xy - xy z|^2 < (2 err_thr z)^2``); a hypothesis is void
  unless both views are candidates, the solution is finite and both of its own views are inliers
  (in front of both cameras, the two rays meet);
* winner: the largest inlier set, ties to the earliest pair. Each hypothesis gets the key
  ``count * 1024 + (1023 - pair index)`` (-1 when void), so one integer max picks both;
* final: weighted DLT on the winner's inliers, then ``refine_steps`` Huber IRLS Gauss-Newton steps
  with the reference's damping; invalid (fewer than ``max(min_views, 2)`` inliers or non-finite)
  points get NaN, an empty mask and ``n = 0``.

Launch layout (``_ransac_kernel``): a 1-D grid of ``cdiv(N, BLOCK_P)`` programs. A program owns
BLOCK_P points and walks the pair list in chunks of BLOCK_C; the working tile is
``[BLOCK_P points, BLOCK_C pairs]``, one hypothesis per element (BLOCK_P * BLOCK_C / threads
hypotheses per thread give the instruction-level parallelism). For each chunk a loop over the
views (V <= 32, a runtime loop: unrolling it makes compile time explode) reprojects every
hypothesis of the tile into view v; a shared projection ``[V, 3, 4]`` is read as uniform scalars,
per-point projections as ``[BLOCK_P, 1]`` columns. The best key and its inlier bitmask (int32, one
bit per view) stay per tile element across chunks (elementwise max, no reduction in the loop);
one row reduction after the loop yields each point's winner. The final solve and the refinement
steps then work on a ``[BLOCK_P points, VP views]`` tile (VP = next power of two >= V) whose
per-view terms are summed by row reductions. No host synchronisation; thresholds are read from a
small cached device tensor in the input dtype (Triton passes Python floats as float32; this way
float64 compares exactly like the reference) and the pair table is a cached device tensor.

Guarantees: same candidates, same hypotheses, same tie rule and the same DLT/refinement formulas as
the reference, computed in the input dtype (float32 or float64). Floating-point summation order
and the division-free inlier test may differ from torch in the last bits, so inlier decisions can
only differ for errors within rounding of the threshold. ``triangulate_dlt`` (``_dlt_kernel``): one
point per lane, a runtime loop over any number of views.

Gradients: X is differentiable in xy, conf (and P) through
:mod:`h4d_fast.ops._triangulate_common`.
"""

from __future__ import annotations

import os
import types
from functools import lru_cache

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._triangulate_common import (
    MAX_KERNEL_VIEWS,
    FlatInputs,
    RansacParams,
    check_kernel_inputs,
    kernel_dlt,
    kernel_ransac,
    pair_table,
    ransac_output_buffers,
)
from ._triangulate_math import normal_terms, solve3

# Tile of the RANSAC kernel: BLOCK_P points x BLOCK_C pairs over RANSAC_WARPS warps, i.e. 8 (float32)
# or 4 (float64) hypotheses per thread. float32 needs ~150 registers (sm_90, no spills); float64
# halves the pair chunk to stay below 255 registers.
RANSAC_BLOCK_P = 16  # points per program
RANSAC_BLOCK_C = {torch.float32: 64, torch.float64: 32}  # pairs per chunk (at most)
RANSAC_WARPS = 4
DLT_BLOCK = 128
INTERPRET_BLOCK_P = 128  # under TRITON_INTERPRET=1 (CPU tests) few large programs are much faster


# ----------------------------------------------------------------------------- device helpers
def _device_function(fn):
    """A formula of :mod:`h4d_fast.ops._triangulate_math` as a Triton device function: rebuilt over
    that module's globals plus ``tl`` (the Triton interpreter of ``TRITON_INTERPRET=1`` runs only
    functions that see ``triton.language``; the math module imports no backend)."""
    return triton.jit(types.FunctionType(fn.__code__, {**fn.__globals__, "tl": tl}, fn.__name__))


_normal_terms = _device_function(normal_terms)
_solve3 = _device_function(solve3)


@triton.jit
def _finite(x):
    return tl.abs(x) < float("inf")


@triton.jit
def _load_view(xy_ptr, conf_ptr, pt, v, mask, conf_thr, V):
    """View ``v`` of points ``pt`` with the candidate rule: ``(x0, y0, w, cand)``, zeros off-candidate."""
    off = pt * V + v
    x = tl.load(xy_ptr + 2 * off, mask=mask, other=0.0)
    y = tl.load(xy_ptr + 2 * off + 1, mask=mask, other=0.0)
    c = tl.load(conf_ptr + off, mask=mask, other=0.0)
    cand = (c > conf_thr) & _finite(x) & _finite(y) & mask
    return tl.where(cand, x, 0.0), tl.where(cand, y, 0.0), tl.where(cand, c, 0.0), cand


@triton.jit
def _load_P(P_ptr, pt, v, mask, V, PER_POINT: tl.constexpr):
    """The 12 entries (row-major) of view ``v``'s 3x4 matrix: shared ``[V, 3, 4]`` or per point ``[N, V, 3, 4]``."""
    if PER_POINT:
        b = P_ptr + (pt * V + v) * 12
        p0 = tl.load(b + 0, mask=mask, other=0.0)
        p1 = tl.load(b + 1, mask=mask, other=0.0)
        p2 = tl.load(b + 2, mask=mask, other=0.0)
        p3 = tl.load(b + 3, mask=mask, other=0.0)
        p4 = tl.load(b + 4, mask=mask, other=0.0)
        p5 = tl.load(b + 5, mask=mask, other=0.0)
        p6 = tl.load(b + 6, mask=mask, other=0.0)
        p7 = tl.load(b + 7, mask=mask, other=0.0)
        p8 = tl.load(b + 8, mask=mask, other=0.0)
        p9 = tl.load(b + 9, mask=mask, other=0.0)
        p10 = tl.load(b + 10, mask=mask, other=0.0)
        p11 = tl.load(b + 11, mask=mask, other=0.0)
    else:
        b = P_ptr + v * 12
        p0 = tl.load(b + 0)
        p1 = tl.load(b + 1)
        p2 = tl.load(b + 2)
        p3 = tl.load(b + 3)
        p4 = tl.load(b + 4)
        p5 = tl.load(b + 5)
        p6 = tl.load(b + 6)
        p7 = tl.load(b + 7)
        p8 = tl.load(b + 8)
        p9 = tl.load(b + 9)
        p10 = tl.load(b + 10)
        p11 = tl.load(b + 11)
    return p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11


@triton.jit
def _view_terms(x, y, w, p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11):
    """One view's share of the DLT normal equations: ``w^2 (r1 r1^T + r2 r2^T)`` (6) and ``w^2 (r1[:3] r1[3] + r2[:3] r2[3])`` (3)."""
    xm = tl.where(w > 0, x, 0.0)  # the reference zeroes xy where w <= 0
    ym = tl.where(w > 0, y, 0.0)
    w2 = w * w
    a0 = xm * p8 - p0
    a1 = xm * p9 - p1
    a2 = xm * p10 - p2
    a3 = xm * p11 - p3
    b0 = ym * p8 - p4
    b1 = ym * p9 - p5
    b2 = ym * p10 - p6
    b3 = ym * p11 - p7
    return _normal_terms(w2, a0, a1, a2, a3, b0, b1, b2, b3)


@triton.jit
def _dlt_solve(m00, m01, m02, m11, m12, m22, s0, s1, s2):
    """``M X = -s`` with the reference's singularity test (NaN when singular or non-finite)."""
    x0, x1, x2, det = _solve3(m00, m01, m02, m11, m12, m22, -s0, -s1, -s2)
    t = (m00 + m11 + m22) / 3.0
    scale = t * t * t
    good = (tl.abs(det) > 1e-10 * tl.abs(scale)) & _finite(x0) & _finite(x1) & _finite(x2)
    return tl.where(good, x0, float("nan")), tl.where(good, x1, float("nan")), tl.where(good, x2, float("nan"))


# ----------------------------------------------------------------------------- kernels
# (integer sizes are not specialized: a new N, V or C must not trigger a recompilation)
@triton.jit(do_not_specialize=["N", "V", "C", "min_inliers", "refine_steps"])
def _ransac_kernel(
    xy_ptr,  # [N, V, 2]
    conf_ptr,  # [N, V]
    P_ptr,  # [V, 3, 4] or [N, V, 3, 4]
    pairs_ptr,  # [C, 2] int32, lexicographic
    prm_ptr,  # [3] (conf_thr, err_thr, huber_delta) in the data dtype
    X_ptr,  # [N, 3] out
    inl_ptr,  # [N, V] uint8 out
    n_ptr,  # [N] int64 out
    N,
    V,
    C,
    min_inliers,  # max(min_views, 2)
    refine_steps,
    PER_POINT: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
    VP: tl.constexpr,  # next power of two >= V
):
    conf_thr = tl.load(prm_ptr + 0)
    err_thr = tl.load(prm_ptr + 1)
    delta = tl.load(prm_ptr + 2)
    thr4 = tl.where(err_thr > 0, 4.0 * err_thr * err_thr, 0.0)  # err < thr <=> d^2 < 4 thr^2 z^2 (never when thr <= 0)

    pt = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)  # [BP]
    pmask = pt < N
    pt2 = pt[:, None]  # [BP, 1]
    pm2 = pmask[:, None]

    # ---- hypotheses: tile [BLOCK_P points, BLOCK_C pairs]
    best_key = tl.full([BLOCK_P, BLOCK_C], -1, tl.int32)
    best_bits = tl.zeros([BLOCK_P, BLOCK_C], tl.int32)
    for c0 in range(0, C, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)  # [BC]
        cm = cc < C
        vi = tl.load(pairs_ptr + 2 * cc, mask=cm, other=0)[None, :]  # [1, BC]
        vj = tl.load(pairs_ptr + 2 * cc + 1, mask=cm, other=1)[None, :]
        m2 = pm2 & cm[None, :]  # [BP, BC]
        xi, yi, wi, ci = _load_view(xy_ptr, conf_ptr, pt2, vi, m2, conf_thr, V)  # [BP, BC]
        xj, yj, wj, cj = _load_view(xy_ptr, conf_ptr, pt2, vj, m2, conf_thr, V)
        q0, q1, q2, q3, q4, q5, q6, q7, q8, q9, q10, q11 = _load_P(P_ptr, pt2, vi, m2, V, PER_POINT)
        i0, i1, i2, i3, i4, i5, i6, i7, i8 = _view_terms(xi, yi, wi, q0, q1, q2, q3, q4, q5, q6, q7, q8, q9, q10, q11)
        q0, q1, q2, q3, q4, q5, q6, q7, q8, q9, q10, q11 = _load_P(P_ptr, pt2, vj, m2, V, PER_POINT)
        j0, j1, j2, j3, j4, j5, j6, j7, j8 = _view_terms(xj, yj, wj, q0, q1, q2, q3, q4, q5, q6, q7, q8, q9, q10, q11)
        X0, X1, X2 = _dlt_solve(i0 + j0, i1 + j1, i2 + j2, i3 + j3, i4 + j4, i5 + j5, i6 + j6, i7 + j7, i8 + j8)
        live = ci & cj & _finite(X0) & _finite(X1) & _finite(X2)  # [BP, BC]
        cnt = tl.zeros([BLOCK_P, BLOCK_C], tl.int32)
        bits = tl.zeros([BLOCK_P, BLOCK_C], tl.int32)
        for v in range(V):
            xv, yv, wv, cv = _load_view(xy_ptr, conf_ptr, pt2, v, pm2, conf_thr, V)  # [BP, 1]
            p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11 = _load_P(P_ptr, pt2, v, pm2, V, PER_POINT)
            cx = p0 * X0 + p1 * X1 + p2 * X2 + p3
            cy = p4 * X0 + p5 * X1 + p6 * X2 + p7
            z = p8 * X0 + p9 * X1 + p10 * X2 + p11
            dx = cx - xv * z
            dy = cy - yv * z
            hit = cv & (z > 0) & (dx * dx + dy * dy < thr4 * z * z)
            in_pair = (vi == v) | (vj == v)  # [1, BC]
            live = live & (hit | ~in_pair)  # own view behind the camera or off by >= err_thr: void
            cnt += hit.to(tl.int32)
            bits = bits | (hit.to(tl.int32) << v)
        key = tl.where(live, cnt * 1024 + (1023 - cc[None, :]), -1)  # larger count, then earlier pair
        better = key > best_key
        best_key = tl.where(better, key, best_key)
        best_bits = tl.where(better, bits, best_bits)

    top = tl.max(best_key, axis=1)  # [BP]
    # keys are unique per point (they encode the pair), so exactly one element matches (or none is live: bits 0)
    inl_bits = tl.sum(tl.where(best_key == top[:, None], best_bits, 0), axis=1)  # [BP]

    # ---- final weighted DLT on the winner's inliers: tile [BLOCK_P points, VP views], sums over views
    vv = tl.arange(0, VP)[None, :]  # [1, VP]
    pv = pt[:, None]  # [BP, 1]
    m2 = pmask[:, None] & (vv < V)  # [BP, VP]
    x, y, w, cand = _load_view(xy_ptr, conf_ptr, pv, vv, m2, conf_thr, V)  # [BP, VP]
    vc = tl.minimum(vv, V - 1)  # padding lanes read view V-1 (in bounds) and carry weight 0
    p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11 = _load_P(P_ptr, pv, vc, m2, V, PER_POINT)
    sel = (((inl_bits[:, None] >> vv) & 1) != 0) & m2  # [BP, VP] winner's inliers
    n = tl.sum(sel.to(tl.int32), axis=1)  # [BP]
    wf = tl.where(sel, w, 0.0)
    t0, t1, t2, t3, t4, t5, t6, t7, t8 = _view_terms(x, y, wf, p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11)
    X0, X1, X2 = _dlt_solve(
        tl.sum(t0, axis=1), tl.sum(t1, axis=1), tl.sum(t2, axis=1), tl.sum(t3, axis=1), tl.sum(t4, axis=1),
        tl.sum(t5, axis=1), tl.sum(t6, axis=1), tl.sum(t7, axis=1), tl.sum(t8, axis=1),
    )  # [BP]

    # ---- Huber IRLS Gauss-Newton (refine_huber), same tile
    for _ in range(refine_steps):
        a0 = X0[:, None]
        a1 = X1[:, None]
        a2 = X2[:, None]
        cx = p0 * a0 + p1 * a1 + p2 * a2 + p3  # [BP, VP]
        cy = p4 * a0 + p5 * a1 + p6 * a2 + p7
        z = p8 * a0 + p9 * a1 + p10 * a2 + p11
        ok = (wf > 0) & (z > 1e-9)
        zs = tl.where(ok, z, 1.0)
        px = cx / zs
        py = cy / zs
        rx = tl.where(ok, px - x, 0.0)
        ry = tl.where(ok, py - y, 0.0)
        e = tl.sqrt(rx * rx + ry * ry)
        h = tl.where(e <= delta, 1.0, delta / tl.maximum(e, 1e-30))
        wgt = tl.where(ok, wf * h, 0.0)
        iz = 1.0 / zs
        ja = iz * (p0 - px * p8)
        jb = iz * (p1 - px * p9)
        jc = iz * (p2 - px * p10)
        ka = iz * (p4 - py * p8)
        kb = iz * (p5 - py * p9)
        kc = iz * (p6 - py * p10)
        h00 = tl.sum(wgt * (ja * ja + ka * ka), axis=1)
        h01 = tl.sum(wgt * (ja * jb + ka * kb), axis=1)
        h02 = tl.sum(wgt * (ja * jc + ka * kc), axis=1)
        h11 = tl.sum(wgt * (jb * jb + kb * kb), axis=1)
        h12 = tl.sum(wgt * (jb * jc + kb * kc), axis=1)
        h22 = tl.sum(wgt * (jc * jc + kc * kc), axis=1)
        g0 = tl.sum(wgt * (ja * rx + ka * ry), axis=1)
        g1 = tl.sum(wgt * (jb * rx + kb * ry), axis=1)
        g2 = tl.sum(wgt * (jc * rx + kc * ry), axis=1)
        damp = 1e-9 * (h00 + h11 + h22) + 1e-30
        d0, d1, d2, det = _solve3(h00 + damp, h01, h02, h11 + damp, h12, h22 + damp, -g0, -g1, -g2)
        good = _finite(d0) & _finite(d1) & _finite(d2) & (tl.abs(det) > 0)
        X0 = tl.where(good, X0 + d0, X0)
        X1 = tl.where(good, X1 + d1, X1)
        X2 = tl.where(good, X2 + d2, X2)

    # ---- outputs
    valid = (n >= min_inliers) & _finite(X0) & _finite(X1) & _finite(X2)  # [BP]
    tl.store(X_ptr + 3 * pt + 0, tl.where(valid, X0, float("nan")), mask=pmask)
    tl.store(X_ptr + 3 * pt + 1, tl.where(valid, X1, float("nan")), mask=pmask)
    tl.store(X_ptr + 3 * pt + 2, tl.where(valid, X2, float("nan")), mask=pmask)
    tl.store(n_ptr + pt, tl.where(valid, n, 0).to(tl.int64), mask=pmask)
    tl.store(inl_ptr + pv * V + vv, (sel & valid[:, None]).to(tl.uint8), mask=m2)


@triton.jit(do_not_specialize=["N", "V"])
def _dlt_kernel(
    xy_ptr,  # [N, V, 2]
    w_ptr,  # [N, V]
    P_ptr,  # [V, 3, 4] or [N, V, 3, 4]
    X_ptr,  # [N, 3] out
    N,
    V,
    PER_POINT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pt = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)  # [B]
    pmask = pt < N
    zero = tl.zeros([BLOCK], dtype=xy_ptr.dtype.element_ty)
    m00 = zero
    m01 = zero
    m02 = zero
    m11 = zero
    m12 = zero
    m22 = zero
    s0 = zero
    s1 = zero
    s2 = zero
    for v in range(V):
        off = pt * V + v
        x = tl.load(xy_ptr + 2 * off, mask=pmask, other=0.0)
        y = tl.load(xy_ptr + 2 * off + 1, mask=pmask, other=0.0)
        w = tl.load(w_ptr + off, mask=pmask, other=0.0)
        p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11 = _load_P(P_ptr, pt, v, pmask, V, PER_POINT)
        t0, t1, t2, t3, t4, t5, t6, t7, t8 = _view_terms(x, y, w, p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11)
        m00 += t0
        m01 += t1
        m02 += t2
        m11 += t3
        m12 += t4
        m22 += t5
        s0 += t6
        s1 += t7
        s2 += t8
    X0, X1, X2 = _dlt_solve(m00, m01, m02, m11, m12, m22, s0, s1, s2)
    tl.store(X_ptr + 3 * pt + 0, X0, mask=pmask)
    tl.store(X_ptr + 3 * pt + 1, X1, mask=pmask)
    tl.store(X_ptr + 3 * pt + 2, X2, mask=pmask)


# ----------------------------------------------------------------------------- host side
@lru_cache(maxsize=64)
def _params(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Scalar parameters as a cached device tensor in the data dtype (exact comparisons in float64).

    (Triton passes Python floats as float32.) Copied from pinned memory without blocking the host.
    """
    host = torch.tensor(values, dtype=dtype)
    return host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host


def _dlt_launch(k: FlatInputs) -> Tensor:
    X = torch.empty(k.N, 3, dtype=k.xy.dtype, device=k.xy.device)  # [N, 3]
    _dlt_kernel[(triton.cdiv(k.N, DLT_BLOCK),)](k.xy, k.w, k.P, X, k.N, k.V, PER_POINT=k.per_point, BLOCK=DLT_BLOCK, num_warps=4)
    return X


def triangulate_dlt_triton(xy: Tensor, P: Tensor, w: Tensor) -> Tensor:
    """Weighted DLT (:func:`~h4d_fast.ops._triangulate_torch.triangulate_dlt_torch`), one Triton launch, any V."""
    check_kernel_inputs("triangulate_dlt", "triton", xy)
    return kernel_dlt(_dlt_launch, xy, P, w)


def _ransac_launch(k: FlatInputs, prm: RansacParams) -> tuple[Tensor, Tensor, Tensor]:
    dtype, dev, V = k.xy.dtype, k.xy.device, k.V
    C = V * (V - 1) // 2
    X, inl, n = ransac_output_buffers(k.N, V, dtype, dev)
    thr = _params((float(prm.conf_thr), float(prm.err_thr), float(prm.huber_delta)), dtype, dev)
    block_p = RANSAC_BLOCK_P
    block_c = min(RANSAC_BLOCK_C[dtype], max(16, triton.next_power_of_2(C)))
    if os.environ.get("TRITON_INTERPRET") == "1":
        block_p, block_c = INTERPRET_BLOCK_P, max(16, triton.next_power_of_2(C))
    _ransac_kernel[(triton.cdiv(k.N, block_p),)](
        k.xy, k.w, k.P, pair_table(V, dev), thr, X, inl, n, k.N, V, C, max(int(prm.min_views), 2), int(prm.refine_steps),
        PER_POINT=k.per_point, BLOCK_P=block_p, BLOCK_C=block_c, VP=max(2, triton.next_power_of_2(V)), num_warps=RANSAC_WARPS,
    )
    return X, inl, n


def triangulate_ransac_triton(xy: Tensor, P: Tensor, conf: Tensor, conf_thr: float = 0.5, err_thr: float = 0.01, min_views: int = 2,
                              refine_steps: int = 3, huber_delta: float = 0.005) -> tuple[Tensor, Tensor, Tensor]:
    """RANSAC (:func:`~h4d_fast.ops._triangulate_torch.triangulate_ransac_torch`) in one fused Triton launch, V <= 32."""
    check_kernel_inputs("triangulate_ransac", "triton", xy, MAX_KERNEL_VIEWS)
    return kernel_ransac(_ransac_launch, xy, P, conf, RansacParams(conf_thr, err_thr, min_views, refine_steps, huber_delta))
