"""The warm Python API path, timed in one process (what a ``run-many`` worker does per capture).

    python -m bench.warm_run SEQ WORK [--device cuda] [--repeats 3] [--json OUT] [--set k=v ...]

One process imports the package, runs the pipeline once on ``SEQ`` untimed (imports, CUDA
context, kernel compilation or cache loading, the body model), then ``--repeats`` times, each
into a new folder ``WORK/run<i>``::

    t0; res = run_sequence(SEQ, out, cfg, force=True, wait_files=False); t1; res.finish(); t2

with the configuration a GPU worker of ``run-many`` uses (:func:`h4d_fast.pipeline.many.gpu_worker_settings`).
``force=True``: no stage result is reloaded from the cache, every stage runs. Reported per run:
``until_return_s = t1 - t0`` (2D detections read and parsed, every stage, the consolidated outputs
``poses3d.npz`` and ``processed_data/sequence.npz`` on disk; the per-frame files handed to the
background writers, as ``run-many`` leaves them while it computes the next capture),
``until_files_s = t2 - t0`` (every per-frame file on disk too), and the stage seconds of
``timing.json``. The output of the last run is kept for ``h4d eval``; the others are removed
between runs (untimed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: stage_s keys and the timing.json records summed into each
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "load": ("load",),
    "filter": ("filter",),
    "track": ("track",),
    "refine": ("refine",),
    "fit": ("fit",),
    "export": ("export", "export_smpl"),
}


def stage_seconds(stages: list[dict[str, Any]]) -> dict[str, float]:
    """``timing.json`` stage records -> the ``stage_s`` dict (export = keypoint + SMPL export, until
    the consolidated files are written and the per-frame files handed over)."""
    by: dict[str, float] = {}
    for s in stages:
        by[s["name"]] = by.get(s["name"], 0.0) + float(s["seconds"])
    return {k: sum(by.get(n, 0.0) for n in names) for k, names in STAGE_KEYS.items() if any(n in by for n in names)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("seq", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from dataclasses import asdict

    from h4d_fast.config import load_config
    from h4d_fast.pipeline.driver import resolve_device
    from h4d_fast.pipeline.many import gpu_worker_settings
    from h4d_fast.pipeline.run import run_sequence, since_process_start

    cfg = load_config(None, [f"run.device={args.device}", "run.progress=false", *args.overrides])
    device = resolve_device(cfg.run.device)
    if device.type == "cuda":
        gpu_worker_settings(cfg)
    t_imported = time.perf_counter()
    res: dict[str, Any] = {"sequence": str(args.seq), "device": str(device), "sequential_device": cfg.run.sequential_device,
                           "imports_s": t_imported - t_start, "process_start_to_main_s": since_process_start()}
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    first = run_sequence(args.seq, args.work / "warmup", cfg, force=True)
    res["first_run_s"] = time.perf_counter() - t0
    res["first_run_stages"] = [asdict(s) for s in first.stages]
    shutil.rmtree(args.work / "warmup", ignore_errors=True)
    runs = []
    for i in range(max(1, args.repeats)):
        out = args.work / f"run{i}"
        t0 = time.perf_counter()
        r = run_sequence(args.seq, out, cfg, force=True, wait_files=False)
        t1 = time.perf_counter()
        r.finish()
        t2 = time.perf_counter()
        stages = [asdict(s) for s in r.stages]
        runs.append({"until_return_s": t1 - t0, "until_files_s": t2 - t0, "stages": stages, "stage_s": stage_seconds(stages),
                     "out": str(out)})
        print(f"warm run {i}: {t1 - t0:.3f} s to return, {t2 - t0:.3f} s with every file", file=sys.stderr, flush=True)
        if i + 1 < args.repeats:
            shutil.rmtree(out, ignore_errors=True)
    res["runs"] = runs
    res["until_return_s"] = statistics.median(r["until_return_s"] for r in runs)
    res["until_files_s"] = statistics.median(r["until_files_s"] for r in runs)
    res["stage_s"] = {k: statistics.median(r["stage_s"].get(k, 0.0) for r in runs) for k in STAGE_KEYS if any(k in r["stage_s"] for r in runs)}
    res["kept_output"] = runs[-1]["out"]
    text = json.dumps(res, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    else:
        print(text)
    return res


if __name__ == "__main__":
    main()
