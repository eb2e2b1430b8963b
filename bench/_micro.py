"""Timing, version and command-line helpers shared by the kernel-only scripts (``bench_oks.py``,
``bench_triangulate.py``, ``bench_collision.py``)."""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Any, Callable

import torch


def _quantiles(ts: list[float], timer: str) -> dict[str, Any]:
    ts = sorted(ts)
    return {"p20_ms": ts[len(ts) // 5], "median_ms": statistics.median(ts), "p80_ms": ts[(4 * len(ts)) // 5], "timer": timer}


def time_ms(fn: Callable[[], Any], device: str, warmup: int, repeats: int) -> dict[str, Any]:
    """p20 / median / p80 milliseconds of ``fn()`` after ``warmup`` calls: ``triton.testing.do_bench``
    on CUDA (CUDA events when triton is missing or fails), ``perf_counter`` on CPU."""
    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
        try:
            import triton.testing

            q = triton.testing.do_bench(fn, warmup=25, rep=max(100, 20 * repeats), quantiles=[0.2, 0.5, 0.8])
            return {"p20_ms": q[0], "median_ms": q[1], "p80_ms": q[2], "timer": "triton.testing.do_bench"}
        except Exception:  # no (working) triton: CUDA events
            ts = []
            for _ in range(repeats):
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                fn()
                e.record()
                torch.cuda.synchronize()
                ts.append(s.elapsed_time(e))
            return _quantiles(ts, "cuda events")
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(1e3 * (time.perf_counter() - t0))
    return _quantiles(ts, "perf_counter")


def versions() -> dict[str, Any]:
    """Python, torch, numba, triton and cupy versions (None where a package is missing)."""
    v: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("numba", "triton", "cupy"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:  # not installed or broken
            v[mod] = None
    return v


def parse_args(doc: str | None, backends: tuple[str, ...], cpu_repeats: int, argv: list[str] | None,
               own: Callable[[argparse.ArgumentParser], None]) -> tuple[argparse.Namespace, torch.device, torch.dtype, int]:
    """The command line of a kernel-only script: the shared options (``--device --frames --cameras
    --people --dtype --backends --warmup --repeats --seed --json``) and the script's ``own``.
    Returns the arguments, the device, the dtype and the timed runs (``--repeats``, default 20 on
    CUDA, ``cpu_repeats`` on the CPU)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--cameras", type=int, default=20)
    ap.add_argument("--people", type=int, default=2)
    own(ap)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--backends", default=",".join(backends), help="comma-separated subset of " + ",".join(backends))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=None, help=f"timed runs (default: 20 on CUDA, {cpu_repeats} on CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device")
    return args, torch.device(args.device), getattr(torch, args.dtype), args.repeats or (20 if args.device == "cuda" else cpu_repeats)
