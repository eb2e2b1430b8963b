"""Locate, compile (CuPy/NVRTC, cached per device) and launch the CUDA kernels of ``h4d_fast/csrc/*.cu``.

The sources are package data (``h4d_fast/csrc``, carried by the wheel), read through
:mod:`importlib.resources`, so an installed h4d_fast finds them as a checkout does. Local
``#include "..."`` lines are inlined before compiling, so NVRTC needs no include path and an
installed (possibly zipped) package works. The same files are built ahead of time by the top-level
CMakeLists.txt (fatbin + test programs); this module only uses the runtime-compiled path.

Launches go to the current torch CUDA stream of the tensors' device (no synchronisation); device
pointers are passed by value as 64-bit integers.

CuPy is imported inside the functions that need it, so importing this module stays cheap.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.MULTILINE)
_PRAGMA_ONCE = re.compile(r"^[ \t]*#[ \t]*pragma[ \t]+once[ \t]*$", re.MULTILINE)
NVRTC_OPTIONS: tuple[str, ...] = ("--std=c++17",)


def _read(name: str) -> str:
    f = resources.files("h4d_fast") / "csrc" / name
    try:
        return f.read_text(encoding="utf-8")
    except (OSError, FileNotFoundError):
        raise FileNotFoundError(
            f"CUDA source {name!r} not found in the package (h4d_fast/csrc); the installation is incomplete: reinstall h4d_fast"
        ) from None


@lru_cache(maxsize=None)
def kernel_source(name: str) -> str:
    """Text of ``h4d_fast/csrc/<name>`` with its local ``#include "..."`` files inlined (each once)."""
    seen: set[str] = set()

    def expand(fname: str) -> str:
        seen.add(fname)
        text = _PRAGMA_ONCE.sub("", _read(fname))

        def sub(m: re.Match[str]) -> str:
            inc = m.group(1)
            return "" if inc in seen else f"// ---- begin {inc}\n{expand(inc)}\n// ---- end {inc}"

        return _INCLUDE.sub(sub, text)

    return expand(name)


@lru_cache(maxsize=None)
def _module(name: str, device: int) -> Any:
    import cupy

    with cupy.cuda.Device(device):
        return cupy.RawModule(code=kernel_source(name), options=NVRTC_OPTIONS)


@lru_cache(maxsize=None)
def get_function(name: str, kernel: str, device: int) -> Any:
    """The ``extern "C"`` kernel ``kernel`` of ``h4d_fast/csrc/<name>``, compiled for CUDA device ``device``."""
    import cupy

    with cupy.cuda.Device(device):
        return _module(name, device).get_function(kernel)


@lru_cache(maxsize=64)
def _external_stream(ptr: int, device: int) -> Any:
    import cupy

    with cupy.cuda.Device(device):
        return cupy.cuda.ExternalStream(ptr)


def ptr(t: Tensor | None) -> np.uint64:
    """A tensor's device pointer as a kernel argument (``None`` -> null)."""
    return np.uint64(0 if t is None else t.data_ptr())


def scalar(value: float, dtype: torch.dtype) -> np.floating:
    """A floating kernel argument of the kernel's data type."""
    return np.float32(value) if dtype == torch.float32 else np.float64(value)


def suffix(dtype: torch.dtype) -> str:
    """Entry point suffix of a data type: ``f32`` / ``f64``."""
    if dtype == torch.float32:
        return "f32"
    if dtype == torch.float64:
        return "f64"
    raise ValueError(f"CUDA kernels support float32 and float64, got {dtype}")


def launch(source: str, kernel: str, device: torch.device, grid: int, block: int, args: Sequence[Any]) -> None:
    """Launch ``kernel`` of ``h4d_fast/csrc/<source>`` on ``device``'s current torch stream (asynchronous)."""
    import cupy

    index = device.index if device.index is not None else torch.cuda.current_device()
    fn = get_function(source, kernel, index)
    stream = _external_stream(torch.cuda.current_stream(index).cuda_stream, index)
    with cupy.cuda.Device(index), stream:
        fn((int(grid),), (int(block),), tuple(args))
