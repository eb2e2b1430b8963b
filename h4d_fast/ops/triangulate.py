"""Triangulation: weighted DLT and RANSAC view-set triangulation, the public drop-in ops.

Both work on undistorted normalized coordinates (``CameraSet.pixels_to_normalized``) with the
cameras' 3x4 extrinsics as projection matrices, batched over any leading dimensions.
Definitions: :mod:`h4d_fast.ops._triangulate_torch` (the reference every backend matches).
"""

from __future__ import annotations

from torch import Tensor

from ..camera import CameraSet
from . import _backend
from ._backend import Impl, register

register(Impl("triangulate_dlt", "torch", "_triangulate_torch", "triangulate_dlt_torch", ("cpu", "cuda")))
register(Impl("triangulate_ransac", "torch", "_triangulate_torch", "triangulate_ransac_torch", ("cpu", "cuda")))
register(Impl("triangulate_dlt", "numba", "_triangulate_numba", "triangulate_dlt_numba", ("cpu",), ("numba",)))
register(Impl("triangulate_ransac", "numba", "_triangulate_numba", "triangulate_ransac_numba", ("cpu",), ("numba",)))
# triton lists "cpu" only so that TRITON_INTERPRET=1 can run it on CPU tensors (tests); without it
# _backend refuses CPU tensors ("triton kernels need CUDA tensors") and auto never picks it there.
register(Impl("triangulate_dlt", "triton", "_triangulate_triton", "triangulate_dlt_triton", ("cuda", "cpu"), ("triton",)))
register(Impl("triangulate_ransac", "triton", "_triangulate_triton", "triangulate_ransac_triton", ("cuda", "cpu"), ("triton",)))
register(Impl("triangulate_dlt", "cupy", "_triangulate_cupy", "triangulate_dlt_cupy", ("cuda",), ("cupy",)))
register(Impl("triangulate_ransac", "cupy", "_triangulate_cupy", "triangulate_ransac_cupy", ("cuda",), ("cupy",)))


def _projections(P_or_cams: Tensor | CameraSet, like: Tensor) -> Tensor:
    if isinstance(P_or_cams, CameraSet):
        return P_or_cams.extrinsics.to(device=like.device, dtype=like.dtype)
    if not isinstance(P_or_cams, Tensor):
        raise TypeError(f"expected projection matrices [..., V, 3, 4] or a CameraSet, got {type(P_or_cams).__name__}")
    if P_or_cams.shape[-2:] != (3, 4):
        raise ValueError(f"projection matrices: expected [..., V, 3, 4], got {tuple(P_or_cams.shape)}")
    return P_or_cams.to(device=like.device, dtype=like.dtype)


def _check(xy: Tensor, w: Tensor, P: Tensor) -> None:
    if xy.dim() < 2 or xy.shape[-1] != 2:
        raise ValueError(f"xy: expected [..., V, 2], got {tuple(xy.shape)}")
    if tuple(w.shape) != tuple(xy.shape[:-1]):
        raise ValueError(f"weights/conf: expected {tuple(xy.shape[:-1])}, got {tuple(w.shape)}")
    if P.shape[-3] != xy.shape[-2]:
        raise ValueError(f"{P.shape[-3]} projection matrices for {xy.shape[-2]} views")
    if not xy.is_floating_point():
        raise TypeError(f"xy: expected a floating dtype, got {xy.dtype}")


def triangulate_dlt(
    xy: Tensor, P_or_cams: Tensor | CameraSet, weights: Tensor, method: str = "normal", backend: str = "auto"
) -> Tensor:
    """Confidence-weighted linear triangulation.

    Args:
        xy: ``[..., V, 2]`` image coordinates matching ``P``: undistorted normalized coordinates
            with the extrinsics (a :class:`CameraSet`), or pixels with ``K [R | t]``.
        P_or_cams: ``[V, 3, 4]`` / ``[..., V, 3, 4]`` projection matrices, or a :class:`CameraSet`.
        weights: ``[..., V]`` row weights (0 = view unused).
        method: ``normal`` -- inhomogeneous least squares through the 3x3 normal equations (what
            the kernels compute); ``svd`` -- the homogeneous solution, last right singular vector
            of the weighted ``A [2V, 4]`` (the classic DLT of aniposelib, Pose2Sim and the
            Harmony4D code; torch only).
    Returns:
        ``[..., 3]`` points (NaN where fewer than two views are usable). Differentiable.
    """
    P = _projections(P_or_cams, xy)
    _check(xy, weights, P)
    if method == "svd":
        from ._triangulate_torch import triangulate_dlt_svd_torch

        return triangulate_dlt_svd_torch(xy, P, weights)
    if method != "normal":
        raise ValueError(f"triangulate_dlt: method must be 'normal' or 'svd', got {method!r}")
    _, fn = _backend.dispatch("triangulate_dlt", xy.device, backend)
    return fn(xy, P, weights)


def triangulate_ransac(
    xy: Tensor,
    P_or_cams: Tensor | CameraSet,
    conf: Tensor,
    conf_thr: float = 0.5,
    err_thr: float = 0.01,
    min_views: int = 2,
    refine_steps: int = 3,
    huber_delta: float = 0.005,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """RANSAC view-set triangulation (exhaustive over view pairs, largest inlier set wins).

    Args:
        xy: ``[..., V, 2]`` undistorted normalized coordinates (NaN = missing).
        P_or_cams: projection matrices ``[V, 3, 4]`` / ``[..., V, 3, 4]`` or a :class:`CameraSet`.
        conf: ``[..., V]`` keypoint confidences; a view is a candidate above ``conf_thr``.
        err_thr: inlier threshold on ``0.5 * |xy - proj(X)|`` (normalized units).
        min_views: fewest inliers for a valid point.
        refine_steps: robust Gauss-Newton iterations after the final weighted DLT.
        huber_delta: Huber threshold of that refinement.
    Returns:
        X ``[..., 3]`` (NaN where invalid), inlier mask ``[..., V]`` bool and ``n_inliers``
        ``[...]`` int64 (both non-differentiable).
    """
    P = _projections(P_or_cams, xy)
    _check(xy, conf, P)
    _, fn = _backend.dispatch("triangulate_ransac", xy.device, backend)
    return fn(xy, P, conf, conf_thr, err_thr, min_views, refine_steps, huber_delta)
