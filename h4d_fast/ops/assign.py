"""Linear assignment: the maximum-total-score one-to-one matching of rows (people) to columns
(detection slots), batched over any leading dimensions (frames, views). The public drop-in op.

``linear_assignment(score [..., R, C], min_score)`` -> ``[..., R]`` int64 column per row, -1 where
a row is unmatched; pairs scoring ``<= min_score`` are never matched. Exact (the Hungarian method,
see :mod:`h4d_fast.ops._assign_torch` for the definition and the optimality argument), for any
sizes: ``O(n^2 m)`` per problem with ``n = min(R, C)``, ``m = max(R, C)``.

Backends: ``torch`` (the reference, plain loops on the host), ``numba`` (CPU, one thread per
problem), ``cupy`` (CUDA, ``h4d_fast/csrc/assign.cu``, one GPU thread per problem, ``n, m <= 64``).
``auto`` picks numba on the CPU, cupy on CUDA, and on CUDA without CuPy runs numba on a host copy.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _backend
from ._backend import Impl, register

register(Impl("linear_assignment", "torch", "_assign_torch", "linear_assignment_torch", ("cpu", "cuda")))
register(Impl("linear_assignment", "numba", "_assign_numba", "linear_assignment_numba", ("cpu",), ("numba",)))
register(Impl("linear_assignment", "cupy", "_assign_cupy", "linear_assignment_cupy", ("cuda",), ("cupy",)))


def linear_assignment(score: Tensor, min_score: float = 0.0, backend: str = "auto") -> Tensor:
    """Maximum-total-score one-to-one assignment of rows to columns.

    Args:
        score: ``[..., R, C]`` match scores (higher is better; NaN counts as no match).
        min_score: pairs scoring at or below this are never assigned (scores <= 0 never are).
        backend: ``auto``, ``torch``, ``numba`` or ``cupy``.
    Returns:
        ``[..., R]`` int64 column of each row (-1 = none), on ``score``'s device. Not differentiable.
    """
    if not isinstance(score, Tensor) or score.dim() < 2:
        raise ValueError(f"linear_assignment: expected a tensor [..., R, C], got {getattr(score, 'shape', type(score))}")
    if (backend or "auto").lower() == "auto" and score.device.type == "cuda":
        try:
            name = _backend.resolve("linear_assignment", score.device, "auto")
        except Exception:  # pragma: no cover
            name = "torch"
        if name == "torch" and _backend.why_unavailable("linear_assignment", "numba", torch.device("cpu")) is None:
            return _backend.get("linear_assignment", "numba")(score, min_score)
    _, fn = _backend.dispatch("linear_assignment", score.device, backend)
    return fn(score, min_score)
