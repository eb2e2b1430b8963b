"""Warm path: the Python API of a warm process on the bench capture, stage by stage, and accuracy.

    python -m bench.end_to_end_warm [--quick] [--device cpu|cuda] [--json OUT]

Runs :mod:`bench.warm_run` in a fresh subprocess on the paper-size capture (600 frames, 20
cameras, 2 people; the sequence :mod:`bench.end_to_end` runs too): one untimed run, then timed
runs of ``run_sequence`` as a ``run-many`` GPU worker calls it (see that module). Reported:

* ``end_to_end_warm_s``: median seconds until ``run_sequence`` returns: detections read, every
  stage, the consolidated outputs on disk, the per-frame files handed to the background writers
  (a ``run-many`` worker computes its next capture while they are written);
* ``end_to_end_warm_files_s``: the same until every per-frame file is on disk too;
* ``stage_s``: median seconds per stage (load, filter, track, refine, fit, export; export = the
  keypoint and SMPL exports until they return);
* ``accuracy``: ``h4d eval`` of the last run's output (3D keypoint MPJPE, PVE, identity swaps) and
  the fit's penetration after the collision stage, each beside the baseline of :mod:`bench.baseline`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, Context, repo_env, workload_main  # noqa: E402

#: issue 13's budgets (seconds) on one H100/H200 for 600 frames x 20 cameras x 2 people
STAGE_BUDGETS_S = {"load": 0.3, "filter": 0.05, "track": 0.4, "refine": 0.2, "fit": 1.5, "export": 0.5}
QUICK_OVERRIDES = ("fit.epochs=1", "fit.iters_stage1=5", "fit.iters_stage2=3", "fit.iters_stage3=10", "fit.collision=false")


def accuracy_of(out: Path, seq: Path) -> dict[str, Any]:
    """``h4d eval`` figures of a run's output plus the fit's penetration after the collision stage."""
    from h4d_fast.cli import evaluate_output

    rep = evaluate_output(out, seq)
    acc = {k: rep[k] for k in ("mpjpe_mm", "pa_mpjpe_mm", "recovered", "identity_swaps", "pve_mm", "mpjpe_smpl_mm") if k in rep}
    fs = out / "fit_stats.json"
    if fs.is_file():
        st = json.loads(fs.read_text())
        for k in ("penetration_before_cm3", "penetration_after_cm3"):
            if isinstance(st.get(k), (int, float)):
                acc[k] = st[k]
    return acc


def run(ctx: Context) -> dict[str, Any]:
    from bench.baseline import compare
    from bench.workloads import paper_sequence, paper_size

    s = paper_size(ctx)
    res: dict[str, Any] = {"workload": {"frames": s["frames"], "cameras": s["cameras"], "people": s["people"], "lens": "pinhole",
                                        "seed": ctx.seed}}
    seq, res["sequence"], _ = paper_sequence(ctx)
    work = Path(tempfile.mkdtemp(prefix="h4d_bench_warm_", dir=ctx.tmp))
    try:
        repeats = 3 if ctx.cuda else 1
        cmd = [sys.executable, "-m", "bench.warm_run", str(seq), str(work / "runs"), "--device", ctx.device.type,
               "--repeats", str(repeats), "--json", str(work / "warm.json")]
        if ctx.quick:
            for o in QUICK_OVERRIDES:
                cmd += ["--set", o]
            res["overrides"] = list(QUICK_OVERRIDES)
        res["command"] = " ".join(["python"] + cmd[1:])
        cap = ctx.cap(150 if ctx.cuda else (200 if ctx.quick else 900), reserve=10)
        try:
            p = subprocess.run(cmd, env=repo_env(), cwd=REPO, capture_output=True, text=True, timeout=max(30.0, cap))
        except subprocess.TimeoutExpired:
            return {**res, "available": False, "reason": f"the warm runs did not finish within {cap:.0f} s (time cap)"}
        if p.returncode != 0:
            return {**res, "available": False, "reason": f"bench.warm_run failed ({p.returncode}): {p.stderr[-2000:]}"}
        w = json.loads((work / "warm.json").read_text())
        res.update(available=True, end_to_end_warm_s=w["until_return_s"], end_to_end_warm_files_s=w["until_files_s"],
                   stage_s=w["stage_s"], stage_budgets_s=STAGE_BUDGETS_S, first_run_s=w["first_run_s"], imports_s=w["imports_s"],
                   sequential_device=w["sequential_device"], runs=[{k: v for k, v in r.items() if k != "out"} for r in w["runs"]])
        ctx.cache["warm_capture_s"] = w["until_files_s"]  # sizes the run-many workload
        ctx.log(f"  warm path: {w['until_return_s']:.2f} s to return, {w['until_files_s']:.2f} s with every file; "
                + ", ".join(f"{k} {v:.3f}" for k, v in w["stage_s"].items()))
        try:
            acc = accuracy_of(Path(w["kept_output"]), seq)
            res["accuracy"] = acc
            res["accuracy_vs_baseline"] = compare(acc)
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            res["accuracy"] = {"error": f"{type(e).__name__}: {e}"}
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return workload_main("end_to_end_warm", run, __doc__, argv, tmp=True)


if __name__ == "__main__":
    main()
