"""One dispatch point per op: a registry of backends and the rule that picks one.

Backends: ``torch`` (the reference, any device), ``numba`` (CPU, parallel), ``triton`` (CUDA)
and ``cupy`` (CUDA, ``h4d_fast/csrc/*.cu``). ``backend="auto"`` picks triton for CUDA tensors and
numba for CPU tensors when they are importable, else torch, quietly. An explicitly requested
backend that cannot run raises :class:`~h4d_fast.errors.BackendUnavailable`. The environment
variable ``H4D_BACKEND`` (or ``H4D_BACKEND_<OP>``, e.g. ``H4D_BACKEND_TRIANGULATE_RANSAC``)
replaces ``auto`` for benchmarking; an explicit argument still wins.

Nothing here imports Triton, CuPy or Numba until a backend is actually used.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch

from ..errors import BackendUnavailable

BACKENDS: tuple[str, ...] = ("torch", "numba", "triton", "cupy")


@dataclass(frozen=True)
class Impl:
    """One backend of one op: where the function lives and which devices it runs on."""

    op: str
    backend: str
    module: str  # relative to h4d_fast.ops
    function: str
    devices: tuple[str, ...]  # "cpu", "cuda"
    requires: tuple[str, ...] = ()  # importable modules it needs


_REGISTRY: dict[tuple[str, str], Impl] = {}


def register(impl: Impl) -> None:
    _REGISTRY[(impl.op, impl.backend)] = impl


def registered(op: str) -> list[str]:
    return [b for b in BACKENDS if (op, b) in _REGISTRY]


@lru_cache(maxsize=None)
def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _cuda_usable() -> bool:
    return torch.cuda.is_available()


def why_unavailable(op: str, backend: str, device: torch.device) -> str | None:
    """``None`` if ``backend`` can run ``op`` on ``device``, else the reason."""
    if backend not in BACKENDS:
        return f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})"
    impl = _REGISTRY.get((op, backend))
    if impl is None:
        return f"{op} has no {backend} backend (available: {', '.join(registered(op))})"
    if device.type not in impl.devices:
        return f"the {backend} backend of {op} runs on {'/'.join(impl.devices)}, not on {device.type} tensors"
    for mod in impl.requires:
        if not _importable(mod):
            return f"the {backend} backend of {op} needs the Python package '{mod}', which is not installed"
    if "cuda" in impl.devices and device.type == "cuda" and not _cuda_usable():
        return "Not compiled with GPU support / no CUDA device"
    if backend == "triton" and os.environ.get("TRITON_INTERPRET") != "1" and device.type != "cuda":
        return "triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for CPU testing)"
    return None


def _auto_order(device: torch.device) -> tuple[str, ...]:
    return ("triton", "cupy", "torch") if device.type == "cuda" else ("numba", "torch")


def resolve(op: str, device: torch.device, backend: str | None = "auto") -> str:
    """The backend that will run ``op`` on ``device`` (see module docstring for the rule)."""
    req = (backend or "auto").lower()
    if req == "auto":
        env = os.environ.get(f"H4D_BACKEND_{op.upper()}") or os.environ.get("H4D_BACKEND")
        if env and env.lower() != "auto":
            req = env.lower()
    if req != "auto":
        reason = why_unavailable(op, req, device)
        if reason is not None:
            raise BackendUnavailable(f"{op}: backend '{req}' is unavailable: {reason}")
        return req
    for b in _auto_order(device):
        if why_unavailable(op, b, device) is None:
            return b
    return "torch"


def get(op: str, backend: str) -> Callable:
    impl = _REGISTRY[(op, backend)]
    mod = importlib.import_module(f"h4d_fast.ops.{impl.module}")
    return getattr(mod, impl.function)


def dispatch(op: str, device: torch.device, backend: str | None = "auto") -> tuple[str, Callable]:
    """``(backend name, function)`` for ``op`` on ``device``.

    An auto-selected backend whose import fails falls back to torch quietly; an explicitly
    requested one re-raises as :class:`BackendUnavailable`.
    """
    name = resolve(op, device, backend)
    try:
        return name, get(op, name)
    except Exception as e:  # import/compile failure of an optional backend
        explicit = (backend or "auto").lower() != "auto" or bool(
            os.environ.get(f"H4D_BACKEND_{op.upper()}") or os.environ.get("H4D_BACKEND")
        )
        if explicit or name == "torch":
            raise BackendUnavailable(f"{op}: backend '{name}' failed to load: {e}") from e
        return "torch", get(op, "torch")
