"""Object keypoint similarity and OKS duplicate removal: the public drop-in ops.

``oks(kpts_a, kpts_b, areas=None)`` -> ``[..., A, B]`` and ``dedup_oks(kpts, valid)`` -> keep
mask, batched over any leading dimensions (frames, views). The definitions are in
:mod:`h4d_fast.ops._oks_torch`, the reference every backend is tested against.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _backend
from ._backend import Impl, register
from ._oks_torch import keypoint_box_area  # noqa: F401 (public: the keypoint-box area OKS uses by default)

register(Impl("oks", "torch", "_oks_torch", "oks_torch", ("cpu", "cuda")))
register(Impl("dedup_oks", "torch", "_oks_torch", "dedup_oks_torch", ("cpu", "cuda")))
register(Impl("oks", "numba", "_oks_numba", "oks_numba", ("cpu",), ("numba",)))
register(Impl("dedup_oks", "numba", "_oks_numba", "dedup_oks_numba", ("cpu",), ("numba",)))
# triton lists "cpu" only so that TRITON_INTERPRET=1 can run it on CPU tensors (tests); without it
# _backend refuses CPU tensors ("triton kernels need CUDA tensors") and auto never picks it there.
register(Impl("oks", "triton", "_oks_triton", "oks_triton", ("cuda", "cpu"), ("triton",)))
register(Impl("dedup_oks", "triton", "_oks_triton", "dedup_oks_triton", ("cuda", "cpu"), ("triton",)))
register(Impl("oks", "cupy", "_oks_cupy", "oks_cupy", ("cuda",), ("cupy",)))
register(Impl("dedup_oks", "cupy", "_oks_cupy", "dedup_oks_cupy", ("cuda",), ("cupy",)))


def _check_kpts(name: str, k: Tensor) -> None:
    if not isinstance(k, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(k).__name__}")
    if k.dim() < 3 or k.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape [..., N, J, 3], got {tuple(k.shape)}")
    if not k.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {k.dtype}")


def oks(
    kpts_a: Tensor,
    kpts_b: Tensor,
    areas: Tensor | None = None,
    sigmas: Tensor | None = None,
    kpt_thr: float = 0.2,
    backend: str = "auto",
) -> Tensor:
    """Pairwise object keypoint similarity (COCO formula).

    Args:
        kpts_a: ``[..., A, J, 3]`` poses (x, y, conf).
        kpts_b: ``[..., B, J, 3]`` poses.
        areas: ``[..., A, B]`` areas, or ``None`` for the mean keypoint-box area of each pair.
        sigmas: ``[J]`` keypoint sigmas (default: COCO).
        kpt_thr: a keypoint counts when its confidence exceeds this in both poses.
        backend: ``auto``, ``torch``, ``numba``, ``triton`` or ``cupy``.
    Returns:
        ``[..., A, B]`` OKS (0 where no keypoint counts).
    """
    _check_kpts("kpts_a", kpts_a)
    _check_kpts("kpts_b", kpts_b)
    if kpts_a.shape[-2] != kpts_b.shape[-2]:
        raise ValueError(f"oks: keypoint counts differ ({kpts_a.shape[-2]} vs {kpts_b.shape[-2]})")
    _, fn = _backend.dispatch("oks", kpts_a.device, backend)
    return fn(kpts_a, kpts_b, areas, sigmas, kpt_thr)


def dedup_oks(
    kpts: Tensor,
    valid: Tensor | None = None,
    thr: float = 0.7,
    policy: str = "drop-both",
    kpt_thr: float = 0.2,
    scores: Tensor | None = None,
    backend: str = "auto",
) -> Tensor:
    """Keep mask after removing OKS duplicates within each view-frame.

    Args:
        kpts: ``[..., D, J, 3]`` detections (``...`` = e.g. frames, views).
        valid: ``[..., D]`` bool slot occupancy (default: all valid).
        thr: OKS above which two detections are duplicates (0.7 in the paper).
        policy: ``drop-both`` (reference: both are removed) or ``keep-best`` (the more
            confident one stays, greedy in score order).
        scores: ``[..., D]`` ranking for keep-best (default: mean confident keypoint confidence).
    Returns:
        ``[..., D]`` bool, True = keep. Non-differentiable.
    """
    _check_kpts("kpts", kpts)
    if valid is None:
        valid = torch.ones(kpts.shape[:-2], dtype=torch.bool, device=kpts.device)
    if tuple(valid.shape) != tuple(kpts.shape[:-2]):
        raise ValueError(f"dedup_oks: valid has shape {tuple(valid.shape)}, expected {tuple(kpts.shape[:-2])}")
    if policy not in ("drop-both", "keep-best"):
        raise ValueError(f"dedup_oks: policy must be 'drop-both' or 'keep-best', got {policy!r}")
    _, fn = _backend.dispatch("dedup_oks", kpts.device, backend)
    with torch.no_grad():
        return fn(kpts, valid.bool(), thr, policy, kpt_thr, scores)
