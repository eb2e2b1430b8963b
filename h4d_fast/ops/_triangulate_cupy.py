"""CuPy backend of weighted DLT and RANSAC view-set triangulation: the CUDA kernels of ``h4d_fast/csrc/triangulate.cu``.

Algorithm: the rule of :mod:`h4d_fast.ops._triangulate_torch` (candidates, lexicographic 2-view
hypotheses with the adjugate DLT solve, void unless both own views are inliers -- in front of the
camera and within ``err_thr`` --, inlier count, earliest-pair arg-max, final weighted DLT on the
inliers and Huber IRLS refinement), fused into one launch.

Launch layout: ``h4d_ransac_{f32,f64}`` -- one warp per point, 4 points per 128-thread block; lane
``v`` loads view ``v`` (V <= 32) into shared memory once, the lanes split the view pairs, a warp
butterfly arg-max over packed ``(count, -pair)`` keys picks the winner (earliest pair on ties),
and the final DLT / refinement steps sum per-view terms across the lanes. ``h4d_dlt_{f32,f64}`` --
one thread per point, any V. Kernels run on the current torch stream, no host synchronisation.
Details in the header of ``h4d_fast/csrc/triangulate.cu``.

Gradients: X is differentiable in xy, conf (and P) through :mod:`h4d_fast.ops._triangulate_common`.
"""

from __future__ import annotations

import math

import cupy  # noqa: F401  (imported here so that a missing CuPy fails at dispatch, not at launch)
import numpy as np
import torch
from torch import Tensor

from . import _cuda_source as cs
from ._triangulate_common import (
    MAX_KERNEL_VIEWS,
    check_kernel_inputs,
    dlt_with_grad,
    flat_kernel_inputs,
    invalid_ransac_outputs,
    pair_table,
    ransac_output_buffers,
    ransac_with_grad,
)

RANSAC_WARPS = 4  # h4d::kRansacWarps in h4d_fast/csrc/triangulate.cu
DLT_BLOCK = 128


def _dlt_forward(xy: Tensor, P: Tensor, w: Tensor) -> Tensor:
    V = xy.shape[-2]
    lead, N, Pk, per_point, xyc, wc = flat_kernel_inputs(xy, P, w)
    X = torch.empty(N, 3, dtype=xy.dtype, device=xy.device)  # [N, 3]
    if N:
        cs.launch(
            "triangulate.cu", f"h4d_dlt_{cs.suffix(xy.dtype)}", xy.device, (N + DLT_BLOCK - 1) // DLT_BLOCK, DLT_BLOCK,
            (cs.ptr(xyc), cs.ptr(wc), cs.ptr(Pk), np.int64(V * 12 if per_point else 0), np.int64(N), np.int32(V), cs.ptr(X)),
        )
    return X.reshape(*lead, 3)


def triangulate_dlt_cupy(xy: Tensor, P: Tensor, w: Tensor) -> Tensor:
    """Weighted DLT (see :func:`~h4d_fast.ops._triangulate_torch.triangulate_dlt_torch`), one CUDA launch.

    Args:
        xy: ``[..., V, 2]``; P: ``[V, 3, 4]`` or ``[..., V, 3, 4]``; w: ``[..., V]``; any V.
    Returns:
        ``[..., 3]`` (NaN where singular). Differentiable in xy, P, w.
    """
    check_kernel_inputs("triangulate_dlt", "cupy", xy)
    return dlt_with_grad(_dlt_forward, xy, P, w)


def triangulate_ransac_cupy(
    xy: Tensor,
    P: Tensor,
    conf: Tensor,
    conf_thr: float = 0.5,
    err_thr: float = 0.01,
    min_views: int = 2,
    refine_steps: int = 3,
    huber_delta: float = 0.005,
) -> tuple[Tensor, Tensor, Tensor]:
    """RANSAC view-set triangulation in one fused CUDA launch (see module docstring).

    Args:
        xy: ``[..., V, 2]`` (V <= 32); P: ``[V, 3, 4]`` or ``[..., V, 3, 4]``; conf: ``[..., V]``.
    Returns:
        X ``[..., 3]`` (NaN where invalid, differentiable), inliers ``[..., V]`` bool, n ``[...]`` int64.
    """
    check_kernel_inputs("triangulate_ransac", "cupy", xy, MAX_KERNEL_VIEWS)
    V = xy.shape[-2]
    dtype = xy.dtype

    def forward(xy: Tensor, P: Tensor, conf: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lead = tuple(xy.shape[:-2])
        N = math.prod(lead)
        dev = xy.device
        C = V * (V - 1) // 2
        if N == 0 or C == 0:  # nothing to triangulate: every point is invalid
            return invalid_ransac_outputs(lead, V, dtype, dev)
        _, _, Pk, per_point, xyc, cf = flat_kernel_inputs(xy, P, conf)
        X, inl, n = ransac_output_buffers(N, V, dtype, dev)
        cs.launch(
            "triangulate.cu", f"h4d_ransac_{cs.suffix(dtype)}", dev, (N + RANSAC_WARPS - 1) // RANSAC_WARPS, 32 * RANSAC_WARPS,
            (
                cs.ptr(xyc), cs.ptr(cf), cs.ptr(Pk), np.int64(V * 12 if per_point else 0), cs.ptr(pair_table(V, dev)),
                np.int64(N), np.int32(V), np.int32(C), cs.scalar(conf_thr, dtype), cs.scalar(err_thr, dtype),
                np.int32(max(int(min_views), 2)), np.int32(refine_steps), cs.scalar(huber_delta, dtype),
                cs.ptr(X), cs.ptr(inl), cs.ptr(n),
            ),
        )
        return X.reshape(*lead, 3), inl.view(torch.bool).reshape(*lead, V), n.reshape(lead)

    return ransac_with_grad(forward, xy, P, conf, conf_thr, refine_steps, huber_delta)
