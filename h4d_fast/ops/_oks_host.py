"""Host side shared by the OKS kernels (:mod:`._oks_cupy`, :mod:`._oks_triton`): dtype check, the
``(2 sigma)^2`` table, the flattened, contiguous inputs of the pairwise OKS and of the duplicate
removal (one definition of the shapes the kernels read), and the entry points that run a backend's
launch on them (:func:`kernel_oks`, :func:`kernel_dedup`)."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ..constants import COCO_SIGMAS
from ._oks_torch import oks_lead_shape

MAX_DETECTIONS = 32


def check_dtype(op: str, backend: str, k: Tensor) -> None:
    if k.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{op} ({backend}): supports float32 and float64 inputs, got {k.dtype}")


@lru_cache(maxsize=16)
def coco_var(J: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    return var_table(None, J, dtype, device)


def var_table(sigmas: Tensor | None, J: int, dtype: torch.dtype, device: torch.device) -> Tensor:
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


class OksInputs(NamedTuple):
    lead: tuple[int, ...]
    T: int
    A: int
    B: int
    J: int
    total: int
    var: Tensor  # [J]
    out: Tensor  # [T, A, B], to be filled
    a: Tensor | None  # [T, A, J, 3] (None when total == 0)
    b: Tensor | None  # [T, B, J, 3]
    areas: Tensor | None  # [T, A, B] or None


def oks_inputs(backend: str, kpts_a: Tensor, kpts_b: Tensor, areas: Tensor | None, sigmas: Tensor | None) -> OksInputs:
    """Checked, broadcast and flattened inputs of the pairwise OKS kernels."""
    check_dtype("oks", backend, kpts_a)
    dtype, dev = kpts_a.dtype, kpts_a.device
    A, B, J = kpts_a.shape[-3], kpts_b.shape[-3], kpts_a.shape[-2]
    lead = oks_lead_shape(kpts_a, kpts_b, areas)
    T = math.prod(lead)
    var = coco_var(J, dtype, dev) if sigmas is None else var_table(sigmas, J, dtype, dev)
    out = torch.empty(T, A, B, dtype=dtype, device=dev)  # [T, A, B]
    total = T * A * B
    if total == 0:
        return OksInputs(tuple(lead), T, A, B, J, total, var, out, None, None, None)
    a = kpts_a.detach().expand(*lead, A, J, 3).reshape(T, A, J, 3).contiguous()  # [T, A, J, 3]
    b = kpts_b.detach().to(dtype).expand(*lead, B, J, 3).reshape(T, B, J, 3).contiguous()  # [T, B, J, 3]
    ar = None if areas is None else areas.detach().to(dtype).expand(*lead, A, B).reshape(T, A, B).contiguous()
    return OksInputs(tuple(lead), T, A, B, J, total, var, out, a, b, ar)


class DedupInputs(NamedTuple):
    lead: tuple[int, ...]
    T: int
    D: int
    J: int
    keep: Tensor  # [T, D] uint8, to be filled
    kpts: Tensor | None  # [T, D, J, 3] (None when T * D == 0)
    valid: Tensor | None  # [T, D] uint8
    scores: Tensor | None  # [T, D] or None


def dedup_inputs(backend: str, kpts: Tensor, valid: Tensor, policy: str, scores: Tensor | None) -> DedupInputs:
    """Checked and flattened inputs of the duplicate-removal kernels (at most 32 detections)."""
    check_dtype("dedup_oks", backend, kpts)
    if policy not in ("drop-both", "keep-best"):
        raise ValueError(f"dedup_oks: unknown policy {policy!r} (drop-both or keep-best)")
    D, J = kpts.shape[-3], kpts.shape[-2]
    if D > MAX_DETECTIONS:
        raise ValueError(f"dedup_oks ({backend}): at most {MAX_DETECTIONS} detections per view-frame, got {D}")
    lead = kpts.shape[:-3]
    T = math.prod(lead)
    dtype, dev = kpts.dtype, kpts.device
    keep = torch.empty(T, D, dtype=torch.uint8, device=dev)  # [T, D]
    if T * D == 0:
        return DedupInputs(tuple(lead), T, D, J, keep, None, None, None)
    k = kpts.detach().reshape(T, D, J, 3).contiguous()  # [T, D, J, 3]
    vd = valid.reshape(T, D).to(torch.uint8).contiguous()  # [T, D]
    sc = None if scores is None else scores.detach().to(dtype).expand(*lead, D).reshape(T, D).contiguous()
    return DedupInputs(tuple(lead), T, D, J, keep, k, vd, sc)


OksLaunch = Callable[[OksInputs, float], None]  # (inputs, kpt_thr): fills inputs.out
DedupLaunch = Callable[[DedupInputs, float, bool, float], None]  # (inputs, thr, keep_best, kpt_thr): fills inputs.keep


def kernel_oks(backend: str, launch: OksLaunch, kpts_a: Tensor, kpts_b: Tensor, areas: Tensor | None, sigmas: Tensor | None,
               kpt_thr: float) -> Tensor:
    """A kernel backend's pairwise OKS: its ``launch`` on the checked, flattened inputs (skipped when
    there is no pair); ``[..., A, B]`` in the dtype of ``kpts_a``."""
    x = oks_inputs(backend, kpts_a, kpts_b, areas, sigmas)
    if x.total:
        launch(x, kpt_thr)
    return x.out.reshape(*x.lead, x.A, x.B)


def kernel_dedup(backend: str, launch: DedupLaunch, kpts: Tensor, valid: Tensor, thr: float, policy: str, kpt_thr: float,
                 scores: Tensor | None) -> Tensor:
    """A kernel backend's duplicate removal: its ``launch`` on the checked, flattened inputs (skipped
    when there is no detection slot); the ``[..., D]`` bool keep mask."""
    x = dedup_inputs(backend, kpts, valid, policy, scores)
    if x.T * x.D:
        launch(x, thr, policy == "keep-best", kpt_thr)
    return x.keep.view(torch.bool).reshape(*x.lead, x.D)
