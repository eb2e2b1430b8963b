"""Shared pieces of the benchmarks: run context and time budget, timers, environment record.

Timing rules (see /work/.library/device/METHOD.md):

* every system is called once untimed first (module load, JIT compilation, autotuning), then
  timed ``repeats`` times (fewer when its time cap runs out; at least once) and the median is
  reported with the 20th/80th percentiles;
* CUDA work: CUDA events around each call, the L2 cache flushed (a 256 MB buffer zeroed)
  before every call and the input sets rotated, so no call reads the previous call's data
  from cache;
* CPU work: ``time.perf_counter`` around each call;
* peak GPU memory: ``torch.cuda.max_memory_allocated`` during one extra call, minus what was
  allocated before it (the inputs), i.e. the memory the call itself needed;
* a slow CPU system is timed on a subset of its work items (points, view-frames) when the whole
  set does not fit its time cap, and the time scaled linearly to the whole set (the result
  says ``extrapolated: true`` and on how many items it was measured).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# ----------------------------------------------------------------------------- budget / context
class Budget:
    """Wall-clock budget of a whole run (seconds since it was created)."""

    def __init__(self, total_s: float):
        self.t0 = time.perf_counter()
        self.total = float(total_s)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.total - self.elapsed()


@dataclass
class Context:
    """What every workload receives from the runner."""

    device: torch.device
    quick: bool = False
    full: bool = False
    budget: Budget = field(default_factory=lambda: Budget(1e9))
    seed: int = 0
    repeats: int | None = None  # timed calls per system (default 20 on CUDA, 5 on CPU)
    verbose: bool = True
    cache: dict = field(default_factory=dict)
    tmp: Path | None = None  # scratch folder (end-to-end sequences)
    frames: int | None = None  # frames of every workload (``--frames``; default: each workload's own)
    anipose: dict[str, float] = field(default_factory=dict)  # aniposelib sampling: points, cap_s, total_s
    sweep_kind: str | None = None  # ``--sweep``: quick / reduced / full (default: by device and --quick/--full)
    images_src: Path | None = None  # ``--images-src``: the Pose2Sim demo folder (image workloads)
    onnx_models: list[Path] = field(default_factory=list)  # ``--onnx``: user pose models the detect workload also times

    def frames_or(self, default: int) -> int:
        """``--frames`` when given, else ``default``."""
        return int(self.frames) if self.frames else int(default)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def n_repeats(self) -> int:
        if self.repeats:
            return int(self.repeats)
        return 20 if self.cuda else (3 if self.quick else 5)

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"[{self.budget.elapsed():6.1f}s] {msg}", file=sys.stderr, flush=True)

    def cap(self, seconds: float, reserve: float = 0.0) -> float:
        """``seconds``, or less when the run's budget (minus ``reserve``) has less left."""
        return max(0.0, min(seconds, self.budget.left() - reserve))


def context_for_script(argv_device: str | None, quick: bool = False, budget_s: float = 1e9) -> Context:
    dev = torch.device(argv_device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return Context(device=dev, quick=quick, budget=Budget(budget_s))


# ----------------------------------------------------------------------------- availability
def missing(*modules: str) -> str | None:
    """``None`` when every module can be imported, else the reason (names the first missing)."""
    for m in modules:
        try:
            if importlib.util.find_spec(m) is None:
                return f"Python package '{m}' is not installed"
        except (ImportError, ValueError) as e:
            return f"Python package '{m}' cannot be found ({e})"
    return None


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def import_with_stubs(module: str, stubbable: dict[str, dict[str, Any]]) -> tuple[Any, list[str]]:
    """Import ``module``; when it fails only because one of ``stubbable``'s top-level packages is
    missing (a package it imports but the benchmarked code path never uses), put an empty stand-in
    module with the given attributes in ``sys.modules`` and retry. Returns the module and the
    names stubbed (record them with the result)."""
    stubbed: list[str] = []
    for _ in range(len(stubbable) + 1):
        try:
            return importlib.import_module(module), stubbed
        except ModuleNotFoundError as e:
            name = (e.name or "").split(".")[0]
            if name not in stubbable or name in stubbed:
                raise
            stub = types.ModuleType(name)
            stub.__dict__.update(stubbable[name])
            stub.__h4d_bench_stub__ = True  # type: ignore[attr-defined]
            sys.modules[name] = stub
            stubbed.append(name)
            for k in [k for k in sys.modules if k == module or k.startswith(module + ".")]:
                del sys.modules[k]
    raise ImportError(module)


# ----------------------------------------------------------------------------- timers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_FLUSH: dict[str, torch.Tensor] = {}


def _flush_buffer(device: torch.device) -> torch.Tensor:
    key = str(device)
    if key not in _FLUSH:
        _FLUSH[key] = torch.empty(256 * 2**20 // 4, dtype=torch.int32, device=device)
    return _FLUSH[key]


def _summary(ts: list[float]) -> dict[str, float]:
    s = sorted(ts)
    n = len(s)
    return {
        "median_ms": statistics.median(s),
        "p20_ms": s[min(n - 1, n // 5)],
        "p80_ms": s[min(n - 1, (4 * n) // 5)],
        "min_ms": s[0],
        "repeats": n,
    }


def measure(fn: Callable[[int], Any], device: torch.device, repeats: int, max_s: float, warmup: int = 1) -> dict[str, Any]:
    """Median time of ``fn(i)`` (``i`` = call index, for rotating input sets).

    The first ``warmup`` calls are untimed (the first one's wall time is reported as
    ``first_call_ms``: it includes compilation). Then up to ``repeats`` timed calls, stopping
    early (after at least one) when ``max_s`` seconds have passed since the start.
    """
    t_start = time.perf_counter()
    first_ms = None
    if warmup > 0:
        t0 = time.perf_counter()
        fn(0)
        sync(device)
        first_ms = 1e3 * (time.perf_counter() - t0)
    for w in range(1, warmup):
        if time.perf_counter() - t_start > max_s / 2:
            break
        fn(w)
    sync(device)
    ts: list[float] = []
    if device.type == "cuda":
        buf = _flush_buffer(device)
        for i in range(repeats):
            if ts and time.perf_counter() - t_start > max_s:
                break
            buf.zero_()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn(i + 1)
            e.record()
            e.synchronize()
            ts.append(s.elapsed_time(e))
        timer = "CUDA events (L2 flushed and inputs rotated before each call)"
    else:
        for i in range(repeats):
            if ts and time.perf_counter() - t_start > max_s:
                break
            t = time.perf_counter()
            fn(i + 1)
            ts.append(1e3 * (time.perf_counter() - t))
        timer = "time.perf_counter"
    return {**_summary(ts), "first_call_ms": first_ms, "timer": timer}


def peak_memory_mb(fn: Callable[[int], Any], device: torch.device) -> float | None:
    """Extra GPU memory one call of ``fn`` allocates at its peak (MiB); None on CPU."""
    if device.type != "cuda":
        return None
    sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn(0)
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def measure_scaled(
    run_n: Callable[[int, int], Any],
    n_total: int,
    device: torch.device,
    repeats: int,
    max_s: float,
    n_start: int = 256,
) -> dict[str, Any]:
    """Time ``run_n(n, i)`` (the first ``n`` of ``n_total`` work items; ``i`` = call index) and
    report the time of all ``n_total`` items, measured on the largest subset that fits ``max_s``
    and scaled linearly when it is not the whole set (``extrapolated``, ``measured_items``)."""
    t_start = time.perf_counter()
    n = min(n_total, max(1, n_start))
    run_n(min(n, 64), 0)  # warm-up / compilation on a small subset
    sync(device)
    while True:
        t0 = time.perf_counter()
        run_n(n, 0)
        sync(device)
        dt = time.perf_counter() - t0
        spent = time.perf_counter() - t_start
        left = max_s - spent
        if n >= n_total:
            break
        if dt * n_total / n * 3 <= left:  # the whole set, repeated a few times, fits
            n = n_total
            continue
        if dt * 4 * 3 > left:  # a 4x larger subset would not fit
            break
        n = min(n_total, n * 4)
    # already warm: no untimed call (a slow CPU system may afford only one or two calls)
    r = measure(lambda i: run_n(n, i), device, repeats, max(0.0, max_s - (time.perf_counter() - t_start)), warmup=0)
    scale = n_total / n
    for k in ("median_ms", "p20_ms", "p80_ms", "min_ms"):
        r[k] *= scale
    r.pop("first_call_ms", None)
    r["extrapolated"] = n < n_total
    r["measured_items"] = n
    r["total_items"] = n_total
    return r


# ----------------------------------------------------------------------------- environment
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git() -> dict[str, Any]:
    """Commit of the checkout; ``H4D_BENCH_COMMIT`` names it where the tree is a copy (the GPU
    machine's copy may carry stale git metadata), and ``dirty`` is then unknown (None)."""
    if os.environ.get("H4D_BENCH_COMMIT"):
        return {"commit": os.environ["H4D_BENCH_COMMIT"], "dirty": None}
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        if head.returncode == 0 and head.stdout.strip():
            st = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=10)
            return {"commit": head.stdout.strip(), "dirty": bool(st.stdout.strip()) if st.returncode == 0 else None}
    except Exception:  # no git on the machine
        pass
    return {"commit": os.environ.get("H4D_BENCH_COMMIT") or None, "dirty": None}


PACKAGES = ("numpy", "scipy", "numba", "triton", "cupy-cuda12x", "cupy-cuda13x", "cupy", "smplx", "aniposelib",
            "xtcocotools", "pycocotools", "opencv-python-headless", "opencv-contrib-python", "matplotlib", "pytest-benchmark")


def environment(device: torch.device) -> dict[str, Any]:
    """Device name, versions, command line and commit of this run."""
    env: dict[str, Any] = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "versions": {p: version(p) for p in PACKAGES if version(p) is not None},
        "command": " ".join([Path(sys.executable).name] + sys.argv) if sys.argv else None,
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": _git(),
        "env": {k: os.environ[k] for k in ("H4D_BACKEND", "H4D_CACHE", "TRITON_INTERPRET", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS",
                                            "NUMBA_NUM_THREADS") if k in os.environ},
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
        env["compute_capability"] = f"{p.major}.{p.minor}"
    return env


def absent(reason: str, **extra: Any) -> dict[str, Any]:
    return {"available": False, "reason": reason, **extra}


def fmt_ms(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 1e5:
        return f"{x / 1e3:,.0f} s"
    if x >= 1e4:
        return f"{x / 1e3:,.1f} s"
    if x >= 100:
        return f"{x:,.0f} ms"
    if x >= 1:
        return f"{x:.2f} ms"
    if x >= 0.01:
        return f"{x:.3f} ms"
    return f"{x * 1e3:.2f} us"
