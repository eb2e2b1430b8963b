"""Throughput of ``h4d run-many``: sequences per hour and how busy the GPU is kept.

    python bench/bench_run_many.py --json bench/results/run_many_cuda.json
    python bench/bench_run_many.py --n 4 --frames 120 --cameras 8 --variants serial,thread   # CPU smoke
    python bench/bench_run_many.py --root /data/captures --variants thread --extra "--set fit.enabled=false"

Standalone. Workload: ``--n`` synthetic captures (default 20 x 600 frames x 20 cameras, the
paper's size) written in the Harmony4D layout into a temp folder (``--distinct`` of them are
synthesized, the rest are copies: same compute, less set-up time), or the sequences under
``--root``. Each variant runs the real CLI in a subprocess,
``python -m h4d_fast.cli run-many ROOT --out OUT --force --quiet ...``, into its own output folder:

* ``serial``: ``--prefetch 0`` (load, then compute: the GPU idles while a capture is decoded);
* ``thread``: ``--prefetch 1`` (the default: a thread decodes the next capture during compute);
* ``process``: ``--prefetch 1 --loader process`` (the decode in a helper process, away from the GIL);
* ``devices``: ``--devices D`` (``--devices``, e.g. ``0,1``; one worker process per GPU);
* ``ray``: ``--ray`` (one Ray task per sequence on a local Ray instance).

Reported per variant: wall time of the command, sequences per hour (finished sequences / wall),
mean compute seconds per sequence (from ``OUT/run_many.json``), and GPU utilisation sampled every
0.5 s during the command (``torch.cuda.utilization`` through NVML when it works, else
``nvidia-smi --query-gpu=utilization.gpu``). NVML's utilisation is the fraction of the last sample
period in which a kernel was running, so the mean of the samples is the fraction of wall time the
GPU was busy: ``busy_fraction_wall`` over the whole command (start-up included) and
``busy_fraction_active`` between the first and the last busy sample (start-up excluded). On a
machine without a GPU the utilisation is reported as absent (``null``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {
    "serial": ["--prefetch", "0"],
    "thread": ["--prefetch", "1", "--loader", "thread"],
    "process": ["--prefetch", "1", "--loader", "process"],
    "devices": [],  # + --devices D
    "ray": ["--ray"],
}


# ----------------------------------------------------------------------------- workload
def _synth_one(args: tuple[str, int, int, int]) -> str:
    path, frames, cameras, seed = args
    from h4d_fast.io.harmony4d import write_sequence
    from h4d_fast.synth import make_capture

    cap, gt, meta = make_capture(num_frames=frames, num_cameras=cameras, seed=seed)
    write_sequence(Path(path), cap, gt=gt, scale_transform=meta["scale_transform"])
    return path


def make_workload(root: Path, n: int, frames: int, cameras: int, distinct: int, procs: int) -> float:
    import multiprocessing as mp

    t0 = time.perf_counter()
    distinct = max(1, min(distinct, n))
    names = [f"seq{i:03d}" for i in range(n)]
    tasks = [(str(root / names[i]), frames, cameras, i) for i in range(distinct)]
    if procs > 1 and distinct > 1:
        with mp.get_context("spawn").Pool(min(procs, distinct)) as pool:
            pool.map(_synth_one, tasks)
    else:
        for t in tasks:
            _synth_one(t)
    for i in range(distinct, n):
        shutil.copytree(root / names[i % distinct], root / names[i])
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- GPU sampling
def gpu_names() -> list[str]:
    if shutil.which("nvidia-smi"):
        try:
            r = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            names = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
            if r.returncode == 0 and names:
                return names
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        pass
    return []


class GpuSampler:
    """Samples every GPU's utilisation (percent) every ``period`` s in a thread."""

    def __init__(self, n_gpus: int, period: float = 0.5):
        self.n = n_gpus
        self.period = period
        self.samples: list[tuple[float, list[float]]] = []
        self.source = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = self._pick_reader()

    def _pick_reader(self):
        if self.n == 0:
            return None
        try:
            import torch

            [torch.cuda.utilization(i) for i in range(self.n)]  # NVML through torch (needs pynvml)
            self.source = "torch.cuda.utilization"
            return lambda: [float(torch.cuda.utilization(i)) for i in range(self.n)]
        except Exception:  # noqa: BLE001
            pass
        if shutil.which("nvidia-smi"):
            self.source = "nvidia-smi --query-gpu=utilization.gpu"

            def read() -> list[float]:
                r = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                   capture_output=True, text=True, timeout=10)
                return [float(x) for x in r.stdout.split()[: self.n]]

            return read
        return None

    def __enter__(self) -> "GpuSampler":
        if self._read is not None:
            self.t0 = time.perf_counter()

            def loop() -> None:
                while not self._stop.is_set():
                    t = time.perf_counter()
                    try:
                        self.samples.append((t - self.t0, self._read()))
                    except Exception:  # noqa: BLE001
                        pass
                    self._stop.wait(max(0.0, self.period - (time.perf_counter() - t)))

            self._thread = threading.Thread(target=loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def report(self) -> dict | None:
        if self._read is None:
            return None
        if not self.samples:
            return {"source": self.source, "samples": 0}
        per_gpu = []
        for g in range(self.n):
            vals = [s[1][g] for s in self.samples if len(s[1]) > g]
            busy = [i for i, v in enumerate(vals) if v > 0]
            active = vals[busy[0]: busy[-1] + 1] if busy else []
            per_gpu.append({
                "busy_fraction_wall": round(sum(vals) / 100 / len(vals), 4) if vals else None,
                "busy_fraction_active": round(sum(active) / 100 / len(active), 4) if active else 0.0,
                "nonidle_sample_fraction": round(len(busy) / len(vals), 4) if vals else None,
                "active_window_s": round(len(active) * self.period, 1),
            })
        used = [p for p in per_gpu if p["busy_fraction_active"]] or per_gpu
        return {
            "source": self.source,
            "period_s": self.period,
            "samples": len(self.samples),
            "busy_fraction_wall": round(sum(p["busy_fraction_wall"] or 0 for p in used) / len(used), 4),
            "busy_fraction_active": round(sum(p["busy_fraction_active"] for p in used) / len(used), 4),
            "gpus_used": len([p for p in per_gpu if p["busy_fraction_active"]]),
            "per_gpu": per_gpu,
        }


# ----------------------------------------------------------------------------- one variant
def run_variant(name: str, root: Path, out: Path, extra: list[str], devices: str | None, n_gpus: int,
                ray_cpus: int | None) -> dict:
    args = list(VARIANTS[name])
    if name == "devices":
        if not devices:
            raise SystemExit("variant 'devices' needs --devices (e.g. 0,1)")
        args += ["--devices", devices]
    if name == "ray" and ray_cpus:
        args += ["--ray-cpus", str(ray_cpus)]
    cmd = [sys.executable, "-m", "h4d_fast.cli", "run-many", str(root), "--out", str(out), "--force", "--quiet", *args, *extra]
    print(f"[{name}] {shlex.join(cmd)}", flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(x for x in (str(REPO), os.environ.get("PYTHONPATH", "")) if x))
    with GpuSampler(n_gpus) as sampler:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    summary_path = out / "run_many.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    seqs = summary.get("sequences", [])
    done = [s for s in seqs if s["status"] == "done"]
    res = {
        "variant": name,
        "command": shlex.join(cmd),
        "exit_code": proc.returncode,
        "wall_s": round(wall, 2),
        "sequences": len(seqs),
        "done": len(done),
        "failed": sum(s["status"] == "failed" for s in seqs),
        "sequences_per_hour": round(len(done) / wall * 3600, 1) if wall > 0 else 0.0,
        "run_many_wall_s": summary.get("wall_s"),
        "mean_compute_s": round(sum(s["seconds"] for s in done) / len(done), 3) if done else None,
        "mean_load_s": round(sum(s["load_seconds"] for s in done) / len(done), 3) if done else None,
        "gpu_utilisation": sampler.report(),
    }
    if proc.returncode not in (0, 1) or res["failed"]:
        res["stderr_tail"] = proc.stderr[-2000:]
        errs = sorted({s["error"] for s in seqs if s["status"] == "failed"})
        res["errors"] = errs[:5]
    g = res["gpu_utilisation"]
    util = "GPU utilisation absent" if g is None else (
        f"GPU busy {100 * g['busy_fraction_wall']:.1f} % of wall, {100 * g['busy_fraction_active']:.1f} % of the active window" if g.get("samples") else "no GPU samples")
    print(f"[{name}] {res['done']}/{res['sequences']} done in {wall:.1f} s: {res['sequences_per_hour']:.0f} sequences/hour, "
          f"compute {res['mean_compute_s']} s/seq, load {res['mean_load_s']} s/seq; {util}", flush=True)
    if res.get("errors"):
        print(f"[{name}] errors: {res['errors']}", flush=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, help="use the sequences under this folder (default: synthesize)")
    ap.add_argument("--n", type=int, default=20, help="synthetic captures")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--cameras", type=int, default=20)
    ap.add_argument("--distinct", type=int, default=4, help="synthesize this many, copy for the rest")
    ap.add_argument("--variants", default="serial,thread", help="comma-separated: " + ",".join(VARIANTS))
    ap.add_argument("--devices", help="for the 'devices' variant, e.g. 0,1 (default: all GPUs)")
    ap.add_argument("--ray-cpus", type=int, help="for the 'ray' variant")
    ap.add_argument("--extra", default="", help="more run-many arguments, e.g. \"--set fit.enabled=false\"")
    ap.add_argument("--work", type=Path, help="work folder (kept; default: a temp folder, removed)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    names = gpu_names()
    n_gpus = len(names)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r} (known: {', '.join(VARIANTS)})")
    devices = args.devices or (",".join(str(i) for i in range(n_gpus)) if n_gpus else None)
    work = args.work or Path(tempfile.mkdtemp(prefix="h4d_bench_run_many_"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "benchmark": "run_many",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": names[0] if names else f"cpu ({platform.processor() or platform.machine()})",
        "gpus": names,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "bench_command": shlex.join([sys.executable, *sys.argv]),
    }
    try:
        import torch

        import h4d_fast

        result["torch"] = torch.__version__
        result["h4d_fast"] = h4d_fast.__version__
        if args.root:
            root = args.root.resolve()
            result["workload"] = {"root": str(root)}
        else:
            root = work / "captures"
            if not root.exists() or not any(root.iterdir()):
                root.mkdir(parents=True, exist_ok=True)
                print(f"synthesizing {args.n} captures ({args.distinct} distinct) x {args.frames} frames x {args.cameras} cameras -> {root}", flush=True)
                secs = make_workload(root, args.n, args.frames, args.cameras, args.distinct, procs=min(8, os.cpu_count() or 1))
                print(f"  {secs:.1f} s", flush=True)
            result["workload"] = {"root": str(root), "n": args.n, "frames": args.frames, "cameras": args.cameras, "distinct": args.distinct}
        extra = shlex.split(args.extra)
        result["extra_args"] = extra
        result["variants"] = [run_variant(v, root, work / f"out_{v}", extra, devices, n_gpus, args.ray_cpus) for v in variants]
        base = next((r for r in result["variants"] if r["variant"] == "serial"), None)
        if base and base["sequences_per_hour"]:
            for r in result["variants"]:
                r["speedup_vs_serial"] = round(r["sequences_per_hour"] / base["sequences_per_hour"], 3)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
        print(f"wrote {args.json}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
