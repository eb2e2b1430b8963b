"""Run-many throughput inside ``python -m bench``: captures per hour on one GPU and how busy it is.

    python -m bench.run_many [--device cuda] [--workers 4] [--captures N] [--cap-s 150] [--json OUT]

Workload: ``N`` captures of the paper size (600 frames x 20 cameras x 2 people): the bench
capture of :mod:`bench.end_to_end`, linked ``N`` times under one root (symbolic links to one
sequence folder: the inputs are read from the page cache, as captures a detector has just
written; the compute and every output are per capture). Command::

    h4d run-many ROOT --out OUT --force --quiet --devices 0*W

(``W`` worker processes sharing GPU 0, each loading its next capture while computing one, its
per-frame outputs written by background processes), stopped with Ctrl-C (SIGINT: the summary is
still written) if it runs past the time cap. GPU utilisation is sampled every 0.5 s through NVML
(:class:`bench.bench_run_many.GpuSampler`). Reported:

* ``run_many_per_hour``: the steady rate, ``(n - 1) / (t_n - t_1)`` x 3600 over the completion
  times ``t_1 .. t_n`` of the ``n`` finished captures (the workers' start-up, ~10 s of imports and
  CUDA contexts paid once per hour-long run, is outside this window); ``per_hour_wall`` counts it in;
* ``run_many_gpu_busy``: the mean NVML utilisation over the samples of the same window;
  ``gpu_busy_wall`` over the whole command.

``N`` defaults to what fits the time cap at the speed the warm-path workload measured.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, Context, repo_env, workload_main  # noqa: E402

DEFAULT_WORKERS = 4


def steady_rate(finished: list[float]) -> float | None:
    """Captures per hour from completion times (seconds): ``(n - 1) / (t_n - t_1)`` x 3600."""
    t = sorted(finished)
    if len(t) < 2 or t[-1] <= t[0]:
        return None
    return (len(t) - 1) / (t[-1] - t[0]) * 3600.0


def busy_between(samples: list[tuple[float, list[float]]], t0: float, t1: float, gpu: int = 0) -> float | None:
    """Mean utilisation (0..1) of GPU ``gpu`` over the samples taken in ``[t0, t1]``."""
    vals = [v[gpu] for t, v in samples if t0 <= t <= t1 and len(v) > gpu]
    return sum(vals) / 100.0 / len(vals) if vals else None


def run(ctx: Context, workers: int | None = None, captures: int | None = None, cap_s: float | None = None) -> dict[str, Any]:
    from bench.bench_run_many import GpuSampler, gpu_names
    from bench.workloads import paper_sequence, paper_size

    s = paper_size(ctx)
    workers = workers or ctx.cache.get("run_many_workers")
    captures = captures or ctx.cache.get("run_many_captures")
    W = workers or (DEFAULT_WORKERS if ctx.cuda else 1)
    res: dict[str, Any] = {"workload": {"frames": s["frames"], "cameras": s["cameras"], "people": s["people"], "workers": W}}
    if not ctx.cuda and not ctx.quick and captures is None:
        return {**res, "available": False, "reason": "a GPU workload (run on the CUDA machine, or pass --captures on the CPU)"}
    seq, _, _ = paper_sequence(ctx)
    cap = ctx.cap(cap_s or (150 if ctx.cuda else 400), reserve=10)
    warm = ctx.cache.get("warm_capture_s") or 30.0  # seconds per capture of one warm worker (the warm-path workload)
    N = captures or int(min(64, max(2 * W, 0.6 * max(cap - 20, 10) * W / warm)))
    work = Path(tempfile.mkdtemp(prefix="h4d_bench_many_", dir=ctx.tmp))
    root, out = work / "captures", work / "out"
    root.mkdir()
    for i in range(N):
        os.symlink(seq, root / f"seq{i:03d}", target_is_directory=True)
    devices = f"{0 if ctx.cuda else 'cpu'}*{W}"
    cmd = [sys.executable, "-m", "h4d_fast.cli", "run-many", str(root), "--out", str(out), "--force", "--quiet", "--devices", devices]
    if ctx.quick:  # a smoke test: the warm path's shortened fit
        from bench.end_to_end_warm import QUICK_OVERRIDES

        for o in QUICK_OVERRIDES:
            cmd += ["--set", o]
    res.update(captures=N, time_cap_s=cap, command="h4d " + " ".join(cmd[3:]))
    names = gpu_names() if ctx.cuda else []
    try:
        with GpuSampler(len(names)) as sampler:
            t_unix0 = time.time()
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, env=repo_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                stdout, stderr = p.communicate(timeout=cap)
                stopped = False
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGINT)  # the summary is written on the way out
                try:
                    stdout, stderr = p.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    stdout, stderr = p.communicate()
                stopped = True
            wall = time.perf_counter() - t0
        summary_path = out / "run_many.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        seqs = summary.get("sequences", [])
        done = [q for q in seqs if q["status"] == "done"]
        fin = [q["finished_unix"] - t_unix0 for q in done if q.get("finished_unix")]
        samples = [(t_rel + (getattr(sampler, "t0", t0) - t0), vals) for t_rel, vals in sampler.samples]
        rate = steady_rate(fin)
        res.update(
            available=bool(done) and rate is not None,
            stopped_at_cap=stopped,
            exit_code=p.returncode,
            wall_s=wall,
            done=len(done),
            failed=sum(q["status"] == "failed" for q in seqs),
            run_many_per_hour=rate,
            per_hour_wall=len(done) / wall * 3600 if wall > 0 else None,
            window_s=(max(fin) - min(fin)) if len(fin) > 1 else None,
            first_done_s=min(fin) if fin else None,
            mean_compute_s=sum(q["seconds"] for q in done) / len(done) if done else None,
            gpu=names[0] if names else None,
            gpu_sampler=sampler.source,
        )
        if len(fin) > 1 and samples:
            res["run_many_gpu_busy"] = busy_between(samples, min(fin), max(fin))
            res["gpu_busy_wall"] = busy_between(samples, 0.0, wall)
        if not res["available"]:
            res["reason"] = (f"{len(done)} of {N} captures finished within the {cap:.0f} s cap (two are needed for a rate)"
                             + (f"; errors: {sorted({q['error'] for q in seqs if q['status'] == 'failed'})[:3]}" if res["failed"] else "")
                             + (f"; stderr: {stderr[-1500:]}" if p.returncode not in (0, 1, 130) else ""))
        if res.get("run_many_per_hour"):
            busy = res.get("run_many_gpu_busy")
            ctx.log(f"  run-many: {len(done)}/{N} captures, {res['run_many_per_hour']:.0f}/hour steady ({res['per_hour_wall']:.0f}/hour wall)"
                    + (f", GPU busy {100 * busy:.1f}%" if busy is not None else ""))
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return workload_main("run_many", run, __doc__, argv, tmp=True,
                         options=(("--workers", {"type": int}), ("--captures", {"type": int}), ("--cap-s", {"type": float})))


if __name__ == "__main__":
    main()
