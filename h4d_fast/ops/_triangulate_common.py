"""Host-side pieces shared by the triangulation kernel backends (numba, Triton, CuPy).

Imports none of those libraries. Holds the projection-matrix layout, the cached pair table, input
checks, the flattened inputs every kernel reads and the entry points that run a backend's launch
(:func:`kernel_dlt`, :func:`kernel_ransac`), and the autograd wrappers (forward = a kernel,
backward = the torch reference).

The numba, Triton and CuPy backends compute their outputs without autograd. When an input
requires a gradient, their result is wrapped in a :class:`torch.autograd.Function` whose backward
*recomputes the final solve with the torch reference under autograd* and backpropagates through it:

* ``triangulate_dlt``: :func:`~h4d_fast.ops._triangulate_torch.triangulate_dlt_torch` on the same inputs.
* ``triangulate_ransac``: the reference's final stage on the kernel's inlier set -- candidate mask,
  weighted DLT on the inliers, ``refine_steps`` Huber IRLS steps, NaN where the kernel found the
  point invalid (:func:`ransac_final_reference`). The inlier selection is piecewise constant, so
  this is exactly the gradient of the reference for the same inlier set.

The inlier mask and the inlier count are marked non-differentiable. Double backward is not
supported (``once_differentiable``). Points the kernel found invalid get zero gradients.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._triangulate_torch import refine_huber, triangulate_dlt_torch, view_pairs

MAX_KERNEL_VIEWS = 32  # GPU RANSAC kernels: the inlier set is a 32-bit mask, one view per warp lane

DltKernel = Callable[[Tensor, Tensor, Tensor], Tensor]
RansacKernel = Callable[[Tensor, Tensor, Tensor], "tuple[Tensor, Tensor, Tensor]"]


def needs_grad(*tensors: Tensor) -> bool:
    """True when autograd is on and one of ``tensors`` requires a gradient."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def ransac_final_reference(
    xy: Tensor,
    P: Tensor,
    conf: Tensor,
    inliers: Tensor,
    n_inliers: Tensor,
    conf_thr: float,
    refine_steps: int,
    huber_delta: float,
) -> Tensor:
    """The reference's final RANSAC stage for a given inlier set (differentiable in xy, P, conf).

    Args:
        xy: ``[..., V, 2]``; P: ``[V, 3, 4]`` or ``[..., V, 3, 4]``; conf: ``[..., V]``.
        inliers: ``[..., V]`` bool winning inlier set (empty where invalid).
        n_inliers: ``[...]`` int64, 0 where the point is invalid.
    Returns:
        ``[..., 3]`` points, NaN where ``n_inliers == 0``.
    """
    lead, V = xy.shape[:-2], xy.shape[-2]
    Pe = P.to(xy.dtype).expand(*lead, V, 3, 4)  # [..., V, 3, 4]
    cf = conf.to(xy.dtype)  # [..., V]
    cand = (cf > conf_thr) & torch.isfinite(xy).all(-1)  # [..., V]
    xy0 = torch.where(cand[..., None], xy, torch.zeros_like(xy))  # [..., V, 2]
    w = torch.where(cand, cf, torch.zeros_like(cf))
    wf = torch.where(inliers, w, torch.zeros_like(w))  # [..., V]
    X = triangulate_dlt_torch(xy0, Pe, wf)  # [..., 3]
    if refine_steps > 0:
        X = refine_huber(X, xy0, Pe, wf, refine_steps, huber_delta)
    return torch.where((n_inliers > 0)[..., None], X, torch.full_like(X, float("nan")))


def _grads(out: Tensor, inputs: tuple[Tensor, ...], needed: tuple[bool, ...], g: Tensor) -> list[Tensor | None]:
    req = [t for t, n in zip(inputs, needed) if n]
    got = iter(torch.autograd.grad(out, req, g, allow_unused=True)) if req else iter(())
    return [next(got) if n else None for n in needed]


class KernelDLTFunction(torch.autograd.Function):
    """``X = kernel(xy, P, w)`` with the gradient of :func:`triangulate_dlt_torch`."""

    @staticmethod
    def forward(ctx, xy: Tensor, P: Tensor, w: Tensor, kernel: DltKernel) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(xy, P, w)
        return kernel(xy.detach(), P.detach(), w.detach())

    @staticmethod
    @once_differentiable
    def backward(ctx, gX: Tensor):  # type: ignore[override]
        xy, P, w = ctx.saved_tensors
        needed = tuple(ctx.needs_input_grad[:3])
        with torch.enable_grad():
            ins = tuple(t.detach().requires_grad_(n) for t, n in zip((xy, P, w), needed))
            X = triangulate_dlt_torch(*ins)
            g = _grads(X, ins, needed, gX)
        return g[0], g[1], g[2], None


class KernelRansacFunction(torch.autograd.Function):
    """``(X, inliers, n) = kernel(xy, P, conf)``; X carries the gradient of the reference's final stage."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, xy: Tensor, P: Tensor, conf: Tensor, kernel: RansacKernel, conf_thr: float, refine_steps: int, huber_delta: float
    ) -> tuple[Tensor, Tensor, Tensor]:
        X, inl, n = kernel(xy.detach(), P.detach(), conf.detach())
        ctx.mark_non_differentiable(inl, n)
        ctx.save_for_backward(xy, P, conf, inl, n)
        ctx.params = (conf_thr, refine_steps, huber_delta)
        return X, inl, n

    @staticmethod
    @once_differentiable
    def backward(ctx, gX: Tensor, _g_inl: Tensor | None, _g_n: Tensor | None):  # type: ignore[override]
        xy, P, conf, inl, n = ctx.saved_tensors
        needed = tuple(ctx.needs_input_grad[:3])
        with torch.enable_grad():
            ins = tuple(t.detach().requires_grad_(nd) for t, nd in zip((xy, P, conf), needed))
            X = ransac_final_reference(ins[0], ins[1], ins[2], inl, n, *ctx.params)
            g = _grads(X, ins, needed, gX)
        return g[0], g[1], g[2], None, None, None, None


def dlt_with_grad(kernel: DltKernel, xy: Tensor, P: Tensor, w: Tensor) -> Tensor:
    """Run a DLT kernel, attaching the reference gradient when an input requires one."""
    if needs_grad(xy, P, w):
        return KernelDLTFunction.apply(xy, P, w, kernel)
    return kernel(xy.detach(), P.detach(), w.detach())


def ransac_with_grad(
    kernel: RansacKernel, xy: Tensor, P: Tensor, conf: Tensor, conf_thr: float, refine_steps: int, huber_delta: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Run a RANSAC kernel, attaching the reference gradient of X when an input requires one."""
    if needs_grad(xy, P, conf):
        return KernelRansacFunction.apply(xy, P, conf, kernel, conf_thr, refine_steps, huber_delta)
    return kernel(xy.detach(), P.detach(), conf.detach())


def split_projections(P: Tensor, lead: tuple[int, ...], V: int) -> tuple[Tensor, bool]:
    """Projection matrices for a kernel: ``([V, 3, 4], False)`` when shared, else ``([N, V, 3, 4], True)``.

    ``P`` is ``[V, 3, 4]`` or broadcastable ``[..., V, 3, 4]``; per-point matrices are materialized
    contiguous over the flattened leading dimensions ``N = prod(lead)``.
    """
    if P.dim() == 3 or all(s == 1 for s in P.shape[:-3]):
        return P.reshape(V, 3, 4).contiguous(), False
    return P.expand(*lead, V, 3, 4).reshape(math.prod(lead), V, 3, 4).contiguous(), True


@lru_cache(maxsize=64)
def pair_table(V: int, device: torch.device) -> Tensor:
    """``[C, 2]`` int32 view pairs ``i < j`` in lexicographic order (the tie order), cached per device.

    Copied from pinned memory without blocking the host (created once per view count and device).
    """
    host = torch.tensor(view_pairs(V), dtype=torch.int32).reshape(-1, 2).contiguous()
    return host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host


def check_kernel_inputs(op: str, backend: str, xy: Tensor, max_views: int | None = None) -> None:
    """Clear errors for what the GPU kernels do not support (dtype, too many views)."""
    if xy.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{op} ({backend}): supports float32 and float64 inputs, got {xy.dtype}")
    if max_views is not None and xy.shape[-2] > max_views:
        raise ValueError(f"{op} ({backend}): at most {max_views} views are supported, got {xy.shape[-2]}")


def invalid_ransac_outputs(lead: tuple[int, ...], V: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Outputs for a call with nothing to triangulate (no points or fewer than two views)."""
    return (
        torch.full((*lead, 3), float("nan"), dtype=dtype, device=device),
        torch.zeros((*lead, V), dtype=torch.bool, device=device),
        torch.zeros(lead, dtype=torch.int64, device=device),
    )


class FlatInputs(NamedTuple):
    """What the kernels read, flattened over the leading dimensions ``lead`` (``N`` points) and
    contiguous, in ``xy``'s dtype."""

    lead: tuple[int, ...]
    N: int
    V: int
    P: Tensor  # [V, 3, 4] when shared (per_point False), else [N, V, 3, 4]
    per_point: bool
    xy: Tensor  # [N, V, 2]
    w: Tensor  # [N, V] weights (DLT) or confidences (RANSAC)


class RansacParams(NamedTuple):
    """The scalar arguments of :func:`~h4d_fast.ops._triangulate_torch.triangulate_ransac_torch`."""

    conf_thr: float
    err_thr: float
    min_views: int
    refine_steps: int
    huber_delta: float


def flat_kernel_inputs(xy: Tensor, P: Tensor, w: Tensor) -> FlatInputs:
    """The inputs of a kernel call (see :class:`FlatInputs`)."""
    lead, V = tuple(xy.shape[:-2]), xy.shape[-2]
    N = math.prod(lead)
    Pk, per_point = split_projections(P.to(xy.dtype), lead, V)  # [V, 3, 4] or [N, V, 3, 4]
    xyc = xy.reshape(N, V, 2).contiguous()  # [N, V, 2]
    wc = w.to(xy.dtype).reshape(N, V).contiguous()  # [N, V]
    return FlatInputs(lead, N, V, Pk, per_point, xyc, wc)


def ransac_output_buffers(N: int, V: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Uninitialised kernel outputs: ``X [N, 3]``, inliers ``[N, V]`` uint8, counts ``[N]`` int64."""
    X = torch.empty(N, 3, dtype=dtype, device=device)  # [N, 3]
    inl = torch.empty(N, V, dtype=torch.uint8, device=device)  # [N, V]
    n = torch.empty(N, dtype=torch.int64, device=device)  # [N]
    return X, inl, n


DltLaunch = Callable[[FlatInputs], Tensor]  # -> X [N, 3] (N > 0)
RansacLaunch = Callable[[FlatInputs, RansacParams], "tuple[Tensor, Tensor, Tensor]"]  # -> X [N, 3], inliers [N, V], n [N]


def kernel_dlt(launch: DltLaunch, xy: Tensor, P: Tensor, w: Tensor) -> Tensor:
    """A backend's weighted DLT: the flattened inputs to its ``launch`` (skipped when there are no
    points), ``[..., 3]`` back, with the reference gradient when an input requires one."""

    def forward(xy: Tensor, P: Tensor, w: Tensor) -> Tensor:
        k = flat_kernel_inputs(xy, P, w)
        X = launch(k) if k.N else torch.empty(0, 3, dtype=xy.dtype, device=xy.device)
        return X.reshape(*k.lead, 3)

    return dlt_with_grad(forward, xy, P, w)


def kernel_ransac(launch: RansacLaunch, xy: Tensor, P: Tensor, conf: Tensor, prm: RansacParams) -> tuple[Tensor, Tensor, Tensor]:
    """A backend's RANSAC: the flattened inputs to its ``launch`` (skipped when there are no points
    or fewer than two views: every point is then invalid), the outputs reshaped to ``[..., 3]``,
    ``[..., V]`` bool and ``[...]``, with the reference gradient of X when an input requires one."""

    def forward(xy: Tensor, P: Tensor, conf: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lead, V = tuple(xy.shape[:-2]), xy.shape[-2]
        if math.prod(lead) == 0 or V < 2:
            return invalid_ransac_outputs(lead, V, xy.dtype, xy.device)
        X, inl, n = launch(flat_kernel_inputs(xy, P, conf), prm)
        return X.reshape(*lead, 3), inl.view(torch.bool).reshape(*lead, V), n.reshape(lead)

    return ransac_with_grad(forward, xy, P, conf, prm.conf_thr, prm.refine_steps, prm.huber_delta)
