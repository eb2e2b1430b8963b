"""Scaling sweep: how each system's time grows with frames, cameras and people.

One axis at a time around the paper's point (600 frames, 20 cameras, 2 people):

* ``full`` (default on CUDA, ``--full`` elsewhere): frames 60, 150, 600, 1500, 6000; cameras 4,
  8, 12, 16, 20, 24, 32; people 1, 2, 3, 4;
* ``reduced`` (default on CPU): frames 60, 600, 1500; cameras 4, 12, 20, 32; people 1, 2, 4;
* ``quick``: frames 20, 60, 120; cameras 4, 8, 20; people 1, 2, 4 (around 60 frames).

Workloads: triangulation (all axes), OKS dedup (all axes), collision (frames; people as
``P (P - 1) / 2`` person pairs per frame), SMPL fit (frames; CUDA or ``--full``). Inputs come
from :mod:`bench.workloads` (a 32-camera capture, subsets and time-tiling, see there).

Measured at every point: the h4d_fast backends and the plain torch reference (on the run's
device), each capped at a few seconds (slow CPU systems timed on a subset and scaled). The slow
peers are *scaled* where their cost per item does not depend on the axis: aniposelib and numpy
triangulation per point (measured at the sweep's camera counts only, since their cost per point
grows with the number of views), the COCO-API dedup per view-frame (measured on the people axis
only, where the detections per view-frame change), the collision references per frame. A scaled
row says ``scaled_from``. Points are skipped (and listed) when the run's budget runs short.
"""

from __future__ import annotations

from typing import Any

from bench import collision as C
from bench import dedup as Dd
from bench import fitting as Fi
from bench import triangulation as T
from bench import workloads as W
from bench.common import Context

SWEEPS = {
    "full": {"frames": [60, 150, 600, 1500, 6000], "cameras": [4, 8, 12, 16, 20, 24, 32], "people": [1, 2, 3, 4]},
    "reduced": {"frames": [60, 600, 1500], "cameras": [4, 12, 20, 32], "people": [1, 2, 4]},
    "quick": {"frames": [20, 60, 120], "cameras": [4, 8, 20], "people": [1, 2, 4]},
}
FIT_FRAMES = {"full": [60, 150, 1500], "reduced": [], "quick": []}
ANIPOSE_SWEEP = {"points": 3, "cap_s": 1.0, "total_s": 3.0}  # per camera count


def kind(ctx: Context) -> str:
    """``--sweep`` when given, else quick (``--quick``), full (CUDA or ``--full``) or reduced."""
    if ctx.sweep_kind:
        return ctx.sweep_kind
    if ctx.quick:
        return "quick"
    return "full" if (ctx.full or ctx.cuda) else "reduced"


def center(ctx: Context) -> dict[str, int]:
    """The sweep's centre: the main workloads' size."""
    return {"frames": W.paper_size(ctx)["frames"], "cameras": 20, "people": 2}


def configs(ctx: Context, axes: tuple[str, ...] = ("frames", "cameras", "people")) -> list[tuple[str, dict[str, int]]]:
    sw, c = SWEEPS[kind(ctx)], center(ctx)
    out = []
    for ax in axes:
        for v in sw[ax]:
            out.append((ax, {**c, ax: v}))
    return out


def _row(workload: str, axis: str, cfg: dict[str, int], items: int, item_name: str, system: str, r: dict[str, Any]) -> dict[str, Any]:
    row = {"workload": workload, "axis": axis, **cfg, "items": items, "item": item_name, "system": system,
           "available": bool(r.get("available"))}
    if row["available"]:
        row.update(median_ms=r["median_ms"], extrapolated=bool(r.get("extrapolated")), device=r.get("device"))
        for k in ("scaled_from", "measured_items", "lower_bound", "peak_mem_mb"):
            if r.get(k) is not None:
                row[k] = r[k]
    else:
        row["reason"] = r.get("reason")
    return row


def _scaled(per_item_ms: float, items: int, what: str, **extra: Any) -> dict[str, Any]:
    return {"available": True, "median_ms": per_item_ms * items, "extrapolated": True, "scaled_from": what, **extra}


def run(ctx: Context, main: dict[str, Any], reserve_s: float = 20.0,
        workloads: tuple[str, ...] = ("triangulation", "dedup", "collision", "fitting")) -> dict[str, Any]:
    """The sweep of ``workloads``; ``main`` holds the paper-size results (for the scaled rows)."""
    k = kind(ctx)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    cache: dict[tuple, dict[str, Any]] = {}

    def budget_ok(what: str, need: float = 0.0) -> bool:
        if ctx.budget.left() - reserve_s < need:
            skipped.append(what)
            return False
        return True

    # ---------------------------------------------------------------- triangulation
    tri_main = main.get("triangulation", {}).get("systems", {})
    tri_pts = main.get("triangulation", {}).get("workload", {}).get("points")
    for axis, cfg in configs(ctx) if "triangulation" in workloads else []:
        key = ("tri", cfg["frames"], cfg["cameras"], cfg["people"])
        what = f"triangulation {axis}={cfg[axis]}"
        if key not in cache:
            if not budget_ok(what, 5):
                continue
            ti = W.sweep_triangulation(ctx, cfg["frames"], cfg["cameras"], cfg["people"])
            measured = ["torch_naive", "h4d_numba", "h4d_triton", "h4d_cupy"]
            if axis == "cameras":
                measured.append("numpy_naive")
            ctx.log(f"sweep {what} ({ti.points} points x {cfg['cameras']} views)")
            res = T.run(ctx, ti, systems=tuple(measured), sweep=True)
            S = dict(res["systems"])
            for peer in ("numpy_naive", "aniposelib"):
                if peer not in S:
                    m = tri_main.get(peer, {})
                    if axis == "cameras":  # the cost per point grows with the views: no scaling across camera counts
                        S[peer] = {"available": False, "reason": "not measured at this camera count (--quick, time budget or no "
                                                                 "paper-size result)"}
                    elif m.get("available") and tri_pts:
                        S[peer] = _scaled(m["median_ms"] / tri_pts, ti.points, "paper-size time per point", device="cpu",
                                          lower_bound=m.get("lower_bound"))
                    else:
                        S[peer] = {"available": False, "reason": m.get("reason", "not measured")}
            cache[key] = {"systems": S, "items": ti.points}
        c = cache[key]
        for name, r in c["systems"].items():
            rows.append(_row("triangulation", axis, cfg, c["items"], "points", name, r))

    # ---------------------------------------------------------------- OKS dedup
    dd_main = main.get("dedup", {}).get("systems", {})
    dd_vf = main.get("dedup", {}).get("workload", {}).get("view_frames")
    for axis, cfg in configs(ctx) if "dedup" in workloads else []:
        key = ("dedup", cfg["frames"], cfg["cameras"], cfg["people"])
        what = f"dedup {axis}={cfg[axis]}"
        if key not in cache:
            if not budget_ok(what, 3):
                continue
            d = W.sweep_dedup(ctx, cfg["frames"], cfg["cameras"], cfg["people"])
            measured = ["torch_naive", "h4d_numba", "h4d_triton", "h4d_cupy"] + (["cocoapi"] if axis == "people" else [])
            ctx.log(f"sweep {what} ({d.view_frames} view-frames x {d.kpts.shape[2]} slots)")
            res = Dd.run(ctx, d, systems=tuple(measured), sweep=True, coco_build_max=600)
            S = dict(res["systems"])
            if "cocoapi" not in S:
                m = dd_main.get("cocoapi", {})
                S["cocoapi"] = (_scaled(m["median_ms"] / dd_vf, d.view_frames, "paper-size time per view-frame", device="cpu")
                                if m.get("available") and dd_vf else {"available": False, "reason": m.get("reason", "not measured")})
            cache[key] = {"systems": S, "items": d.view_frames}
        c = cache[key]
        for name, r in c["systems"].items():
            rows.append(_row("dedup", axis, cfg, c["items"], "view-frames", name, r))

    # ---------------------------------------------------------------- collision
    co_main = main.get("collision", {}).get("systems", {})
    per_frame = {n: co_main[n]["ms_per_frame"] for n in ("grid_sdf_torch", "bruteforce_torch") if co_main.get(n, {}).get("available")}
    co_center = main.get("collision", {}).get("workload", {}).get("frames") or ctx.frames_or(20 if ctx.quick else 600)
    for axis, cfg in configs(ctx, ("frames", "people")) if "collision" in workloads else []:
        frames = cfg["frames"] if axis == "frames" else co_center
        if ctx.quick and axis == "frames":
            frames = max(5, cfg["frames"] // 3)  # the quick collision workload is 20 frames
        pairs = cfg["people"] * (cfg["people"] - 1) // 2
        key = ("coll", frames, pairs)
        what = f"collision {axis}={cfg[axis]}"
        cfg_c = {**cfg, "frames": frames}
        if pairs == 0:
            rows.append({"workload": "collision", "axis": axis, **cfg_c, "items": 0, "item": "frame-pairs", "system": "all",
                         "available": False, "reason": "one person: nothing to collide"})
            continue
        if key not in cache:
            if not budget_ok(what, 5):
                continue
            ctx.log(f"sweep {what} ({frames} frames x {pairs} person pairs)")
            res = C.run(ctx, frames=frames, pairs=pairs, systems=("grid_sdf_torch", "bruteforce_torch", "h4d_numba", "h4d_triton", "h4d_cupy"),
                        sweep=True, per_frame=per_frame)
            cache[key] = {"systems": dict(res["systems"]), "items": frames * pairs}
        c = cache[key]
        for name, r in c["systems"].items():
            rows.append(_row("collision", axis, cfg_c, c["items"], "frame-pairs", name, r))

    # ---------------------------------------------------------------- SMPL fit
    fit_main = main.get("fitting", {})
    fit_frames = FIT_FRAMES["full"] if (ctx.cuda or ctx.full) and not ctx.quick else FIT_FRAMES[k]
    if ctx.full and not ctx.cuda and not ctx.quick:
        fit_frames = [30, 120]
    if "fitting" not in workloads:
        fit_frames = []
    f_main = fit_main.get("workload", {}).get("frames")
    slowest = max((r.get("median_ms", 0) for r in fit_main.get("systems", {}).values() if r.get("available")), default=0.0)
    for fr in fit_frames:
        what = f"fit frames={fr}"
        # estimate: the paper-size fit scaled by frames (twice: both systems run at least once + warm-up)
        est = 2.5 * slowest / 1e3 * fr / f_main if f_main else 30.0
        if not budget_ok(what, est):
            continue
        ctx.log(f"sweep {what}")
        res = Fi.run(ctx, frames=fr, sweep=True)
        for name, r in res["systems"].items():
            rows.append(_row("fitting", "frames", {"frames": fr, "cameras": 0, "people": 2}, fr * 2, "person-frames", name, r))
    if f_main and "fitting" in workloads:
        for name, r in fit_main.get("systems", {}).items():
            rows.append(_row("fitting", "frames", {"frames": f_main, "cameras": 0, "people": 2}, f_main * 2, "person-frames", name, r))

    # ---------------------------------------------------------------- aniposelib vs cameras (last: the slowest peer)
    # its cost per point grows with the views, so it is measured per camera count (a few points,
    # short caps, all counts in one child process: one start-up and numba compilation)
    cam_rows = {r["cameras"]: r for r in rows if r["workload"] == "triangulation" and r["axis"] == "cameras" and r["system"] == "aniposelib"
                and not r["available"]}
    need = len(cam_rows) * (ANIPOSE_SWEEP["total_s"] + ANIPOSE_SWEEP["cap_s"]) + 30
    if cam_rows and not ctx.quick and tri_main.get("aniposelib", {}).get("available") and budget_ok("aniposelib vs cameras", need):
        cams = sorted(cam_rows)
        jobs = []
        for V in cams:
            ti = W.sweep_triangulation(ctx, center(ctx)["frames"], V, center(ctx)["people"])
            jobs.append((ti, T.anipose_sample(ctx, ti.points, ANIPOSE_SWEEP["points"])))
        ctx.log(f"sweep aniposelib at {len(jobs)} camera counts")
        try:
            f_px = float(jobs[0][0].cams.intrinsics[:, :2].double().mean())
            outs = T.run_aniposelib_jobs(jobs, ANIPOSE_SWEEP["cap_s"], ANIPOSE_SWEEP["total_s"], 2 * T.PARAMS["err_thr"] * f_px)
        except Exception as e:
            outs = [{"error": f"{type(e).__name__}: {e}"}] * len(jobs)
        for V, (ti, _), o in zip(cams, jobs, outs):
            res = T.run(ctx, ti, systems=("aniposelib",), sweep=True, anipose_pre=o)
            row = cam_rows[V]
            row.clear()
            row.update(_row("triangulation", "cameras", {**center(ctx), "cameras": V}, ti.points, "points", "aniposelib",
                            res["systems"]["aniposelib"]))
    return {"kind": k, "definition": {**SWEEPS[k], "fit_frames": fit_frames, "center": center(ctx)}, "rows": rows, "skipped": skipped}
