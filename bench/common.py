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

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
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
def seed_list(spec: str) -> list[int]:
    """Seeds of a command-line list such as ``0-4,7,9-11``."""
    out: list[int] = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


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


def median_wall_s(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, int]:
    """Median wall time (seconds) of ``fn()``, synchronised before and after, over ``repeats`` calls
    after one untimed warm-up call; returns ``(median, calls timed)``."""
    ts = []
    for i in range(repeats + 1):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        if i:
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts), len(ts)


def repo_env() -> dict[str, str]:
    """The environment of a benchmark's child process: this checkout's ``h4d_fast`` first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def timed_h4d_runs(ctx: Context, cmd: list[str], out: Path, cap_s: float, max_runs: int, margin: float, label: str,
                   record: Callable[[dict[str, Any]], dict[str, Any]], long_s: float | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """``cmd`` (an ``h4d run ... --out OUT``) as separate processes, each timed from process start to
    exit (wall clock), up to ``max_runs`` times while the cap ``cap_s`` leaves ``margin`` times the
    last run's wall time (and, with ``long_s``, no third run after two longer than ``long_s``).

    Returns ``(runs, error)``: a run is ``{"wall_s", **record(OUT/timing.json)}`` or ``{"wall_s",
    "timeout": True}`` (the last one then); ``error`` is the message of a run that failed (None if none).
    """
    runs: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    while len(runs) < max_runs:
        left = cap_s - (time.perf_counter() - t_start)
        if runs and (left < margin * runs[-1]["wall_s"] or (long_s is not None and len(runs) >= 2 and runs[-1]["wall_s"] > long_s)):
            break
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, env=repo_env(), cwd=REPO, capture_output=True, text=True, timeout=max(30.0, left))
        except subprocess.TimeoutExpired:
            runs.append({"wall_s": time.perf_counter() - t0, "timeout": True})
            break
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            return runs, f"h4d run failed ({p.returncode}): {p.stderr[-2000:]}"
        tj = json.loads((out / "timing.json").read_text())
        runs.append({"wall_s": wall, **record(tj)})
        ctx.log(f"  {label} run {len(runs)}: {wall:.2f} s wall, {tj['total_s']:.2f} s in timing.json")
    return runs, None


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


# ----------------------------------------------------------------------------- image workloads (detect, images_to_meshes)
JPEG_QUALITY = 95
NO_DEMO = {"available": False, "absent": "the Pose2Sim demo folder is not here: pass --images-src DIR (or set H4D_DEMO_DATA)"}


def demo_source(ctx: Context | None = None, src: str | Path | None = None) -> Path | None:
    """The Pose2Sim demo folder: ``src``, the context's ``images_src``, ``$H4D_DEMO_DATA``, or the
    shared data folder near the checkout; None when absent."""
    from bench.detect_accuracy import demo_dir

    for c in (src, ctx.images_src if ctx is not None else None):
        if c and (Path(c) / "single_person" / "videos").is_dir():
            return Path(c)
    return demo_dir()


def ping_pong(n_src: int, n: int) -> list[int]:
    """``n`` source frame indices playing ``0..n_src-1`` forward, then backward, and so on."""
    if n_src < 2:
        return [0] * n
    period = 2 * (n_src - 1)
    return [(k % period) if (k % period) < n_src else period - (k % period) for k in range(n)]


def write_image_sequence(src: Path, seq: Path, frames: int, cameras: int, quality: int = JPEG_QUALITY) -> dict[str, Any]:
    """Write the image workloads' sequence from the demo folder ``src`` into ``seq``: its cameras
    replicated to ``cameras``, its frames played forward and backward to ``frames``, JPEG files of the
    videos' own size in the Harmony4D layout plus the cameras as a COLMAP model (the input described
    in :mod:`bench.images_to_meshes`).

    Returns:
        what was written: frames, cameras, image sizes, bytes, seconds.
    """
    import cv2
    import torch

    from h4d_fast.camera import CameraSet
    from h4d_fast.io.atomic import write_json
    from h4d_fast.io.calibration import read_calibration_info
    from h4d_fast.io.colmap import write_colmap

    t0 = time.perf_counter()
    cal = read_calibration_info(src / "calibration" / "Calib_qualisys.toml").cameras
    vids = sorted((src / "single_person" / "videos").glob("cam0*.mp4"))
    n_base = len(vids)
    encoded: list[list[bytes]] = []
    sizes = []
    counts = []
    for v in vids:
        cap = cv2.VideoCapture(str(v))
        counts.append(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        cap.release()
    n_src = min(counts)
    order = ping_pong(n_src, frames)
    need = max(order) + 1
    for v in vids:
        cap = cv2.VideoCapture(str(v))
        imgs = []
        while len(imgs) < need:
            ok, img = cap.read()
            if not ok:
                raise RuntimeError(f"{v}: ends after {len(imgs)} frames, {need} needed")
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
            imgs.append(buf.tobytes())
            size = (img.shape[1], img.shape[0])
        cap.release()
        encoded.append(imgs)
        sizes.append(size)
    names = [f"cam{i + 1:02d}" for i in range(cameras)]
    base = [i % n_base for i in range(cameras)]
    idx = torch.as_tensor(base)
    cams = CameraSet(names, [cal.model[i] for i in base], cal.intrinsics[idx], cal.dist[idx], cal.R[idx], cal.t[idx], cal.size[idx])
    write_colmap(seq / "colmap" / "workplace", cams)
    write_json(seq / "sequence.json", {"name": "images_to_meshes", "person_names": ["aria01"], "cameras": names, "frames": frames})
    total = 0
    for c, b in zip(names, base):
        d = seq / "exo" / c / "images"
        d.mkdir(parents=True, exist_ok=True)
        for k, s in enumerate(order):
            data = encoded[b][s]
            (d / f"{k + 1:05d}.jpg").write_bytes(data)
            total += len(data)
    return {"frames": frames, "cameras": cameras, "source_cameras": n_base, "source_frames": n_src, "image_sizes": sizes,
            "jpeg_quality": quality, "bytes": total, "write_s": time.perf_counter() - t0, "people": 1,
            "mean_jpeg_kb": round(total / max(1, frames * cameras) / 1024, 1)}


def image_script_main(key: str, run: Callable[[Context], dict[str, Any]], doc: str | None, argv: list[str] | None = None,
                      onnx: bool = False) -> dict[str, Any]:
    """The command line of an image workload (``python -m bench.detect``, ``bench.images_to_meshes``):
    ``--src --device --frames --quick --json`` (and ``--onnx`` with ``onnx``); prints ``run(ctx)`` or
    writes ``{"environment": ..., key: run(ctx)}`` to ``--json``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, help="the Pose2Sim demo folder (default: $H4D_DEMO_DATA or the shared data folder)")
    ap.add_argument("--device", choices=("cpu", "cuda"))
    ap.add_argument("--frames", type=int)
    if onnx:
        ap.add_argument("--onnx", type=Path, action="append", default=[], help="also time this top-down ONNX pose model (repeatable)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    ctx = context_for_script(args.device, args.quick)
    ctx.frames = args.frames
    ctx.images_src = args.src
    ctx.onnx_models = list(getattr(args, "onnx", []))
    ctx.tmp = Path(tempfile.mkdtemp(prefix="h4d_bench_"))
    return _report(key, ctx, run, args.json)


# ----------------------------------------------------------------------------- workload scripts
def best_kernel(S: dict[str, Any], cuda: bool) -> str | None:
    """The fused kernel that defines a kernel workload's figure (``triangulate_ransac_ms``, ...): the
    fastest available GPU backend on CUDA, numba on the CPU; None when none is available."""
    cands = ("h4d_triton", "h4d_cupy") if cuda else ("h4d_numba",)
    ok = [c for c in cands if S.get(c, {}).get("available")]
    return min(ok, key=lambda c: S[c]["median_ms"]) if ok else None


def workload_main(key: str, run: Callable[..., dict[str, Any]], doc: str | None, argv: list[str] | None = None,
                  options: tuple[tuple[str, dict[str, Any]], ...] = (), tmp: bool = False) -> dict[str, Any]:
    """The command line of a workload script (``python -m bench.collision``, ...): ``--device --quick``,
    the ``options`` (``(flag, argparse keywords)``; each passed to ``run`` by its name) and ``--json``;
    prints ``run(ctx, **options)`` or writes ``{"environment": ..., key: ...}`` to ``--json``. With
    ``tmp``, ``ctx.tmp`` is a temporary folder removed after the run."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"))
    ap.add_argument("--quick", action="store_true")
    for flag, kw in options:
        ap.add_argument(flag, **kw)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    ctx = context_for_script(args.device, args.quick)
    kwargs = {flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_")) for flag, _ in options}
    if not tmp:
        return _report(key, ctx, lambda c: run(c, **kwargs), args.json)
    import shutil

    ctx.tmp = Path(tempfile.mkdtemp(prefix="h4d_bench_"))
    try:
        return _report(key, ctx, lambda c: run(c, **kwargs), args.json)
    finally:
        shutil.rmtree(ctx.tmp, ignore_errors=True)


def _report(key: str, ctx: Context, run: Callable[[Context], dict[str, Any]], json_path: Path | None) -> dict[str, Any]:
    out = {"environment": environment(ctx.device), key: run(ctx)}
    if json_path:
        json_path.write_text(json.dumps(out, indent=2, default=str))
    else:
        print(json.dumps(out[key], indent=2, default=str))
    return out
