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

import cupy  # noqa: F401  (imported here so that a missing CuPy fails at dispatch, not at launch)
import numpy as np
import torch
from torch import Tensor

from . import _cuda_source as cs
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

RANSAC_WARPS = 4  # h4d::kRansacWarps in h4d_fast/csrc/triangulate.cu
DLT_BLOCK = 128


def _dlt_launch(k: FlatInputs) -> Tensor:
    X = torch.empty(k.N, 3, dtype=k.xy.dtype, device=k.xy.device)  # [N, 3]
    cs.launch(
        "triangulate.cu", f"h4d_dlt_{cs.suffix(k.xy.dtype)}", k.xy.device, (k.N + DLT_BLOCK - 1) // DLT_BLOCK, DLT_BLOCK,
        (cs.ptr(k.xy), cs.ptr(k.w), cs.ptr(k.P), np.int64(k.V * 12 if k.per_point else 0), np.int64(k.N), np.int32(k.V), cs.ptr(X)),
    )
    return X


def triangulate_dlt_cupy(xy: Tensor, P: Tensor, w: Tensor) -> Tensor:
    """Weighted DLT (:func:`~h4d_fast.ops._triangulate_torch.triangulate_dlt_torch`), one CUDA launch, any V."""
    check_kernel_inputs("triangulate_dlt", "cupy", xy)
    return kernel_dlt(_dlt_launch, xy, P, w)


def _ransac_launch(k: FlatInputs, prm: RansacParams) -> tuple[Tensor, Tensor, Tensor]:
    dtype, dev, V = k.xy.dtype, k.xy.device, k.V
    X, inl, n = ransac_output_buffers(k.N, V, dtype, dev)
    cs.launch(
        "triangulate.cu", f"h4d_ransac_{cs.suffix(dtype)}", dev, (k.N + RANSAC_WARPS - 1) // RANSAC_WARPS, 32 * RANSAC_WARPS,
        (
            cs.ptr(k.xy), cs.ptr(k.w), cs.ptr(k.P), np.int64(V * 12 if k.per_point else 0), cs.ptr(pair_table(V, dev)),
            np.int64(k.N), np.int32(V), np.int32(V * (V - 1) // 2), cs.scalar(prm.conf_thr, dtype), cs.scalar(prm.err_thr, dtype),
            np.int32(max(int(prm.min_views), 2)), np.int32(prm.refine_steps), cs.scalar(prm.huber_delta, dtype),
            cs.ptr(X), cs.ptr(inl), cs.ptr(n),
        ),
    )
    return X, inl, n


def triangulate_ransac_cupy(xy: Tensor, P: Tensor, conf: Tensor, conf_thr: float = 0.5, err_thr: float = 0.01, min_views: int = 2,
                            refine_steps: int = 3, huber_delta: float = 0.005) -> tuple[Tensor, Tensor, Tensor]:
    """RANSAC (:func:`~h4d_fast.ops._triangulate_torch.triangulate_ransac_torch`) in one fused CUDA launch, V <= 32."""
    check_kernel_inputs("triangulate_ransac", "cupy", xy, MAX_KERNEL_VIEWS)
    return kernel_ransac(_ransac_launch, xy, P, conf, RansacParams(conf_thr, err_thr, min_views, refine_steps, huber_delta))
