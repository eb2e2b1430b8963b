"""The per-workload sections of the benchmark report: one Markdown section per workload (systems
table, notes, absent systems), the image workloads' JSON, the scaling sweep (used by :mod:`bench.report`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report_format import _f, _note_lines, _notes, _stats, _sys_rows, _t, _table
from bench.report_issue13 import issue13_markdown
from bench.report_tables import TITLES


def workload_sections(R: dict[str, Any]) -> list[str]:
    """Every workload's section, in the report's order, then the scaling sweep."""
    W = R.get("workloads", {})
    L: list[str] = []
    _triangulation(L, W)
    _dedup(L, W)
    _collision(L, W)
    _fitting(L, W)
    _end_to_end(L, W)
    L.extend(issue13_markdown(W))
    _other(L, R, W)
    _sweep(L, R)
    return L


def _triangulation(L: list[str], W: dict[str, Any]) -> None:
    """Triangulation: every system, the aniposelib timing and the numpy subset."""
    tri = W.get("triangulation")
    if tri and "systems" in tri:
        w = tri["workload"]
        L.append(f"## Triangulation: {w['frames']} frames x {w['people']} people x {w['joints']} joints = {w['points']:,} points x "
                 f"{w['cameras']} views ({w['pairs']} pairs)")
        L.append("")
        L.append(f"Synthetic capture, pinhole lens (the aniposelib comparison needs a lens model both share); conf_thr "
                 f"{w['params']['conf_thr']}, err_thr {w['params']['err_thr']} normalized = {w['inlier_threshold_px']:.1f} px inlier "
                 f"threshold, min_views {w['params']['min_views']}, {w['params']['refine_steps']} Huber refinement steps; "
                 f"{100 * w['observations_over_conf_thr']:.1f}% of the observations are candidates.")
        L.append("")
        rows, absent = _sys_rows(tri["systems"], [
            lambda r: _f(r.get("mpjpe_mm")), lambda r: _f(r.get("valid_frac"), pct=True), lambda r: _f(r.get("mpjpe_mm_on_anipose_sample")),
            lambda r: _f(r.get("inlier_agreement_vs_torch"), pct=True)])
        L.append(_table(["system", "device", "time", "p20-p80", "x fastest", "peak GPU mem", "MPJPE", "valid", "MPJPE on sample",
                         "inliers = torch"], rows))
        notes = [n for n in _notes(tri["systems"]) if not n.startswith("`aniposelib`")]
        a = tri["systems"].get("aniposelib", {})
        if a.get("available") and a.get("extrapolation"):
            notes.append(f"`aniposelib` time is **extrapolated**: {a['extrapolation']}")
        if a.get("available"):
            notes.append(f"`aniposelib` {a.get('version')}: `triangulate_possible` (the routine `triangulate_ransac` calls) with "
                         f"threshold {a['threshold_px']:.1f} px, timed point by point on {a['measured_items']} random points "
                         f"({a['capped_points']} stopped at the {a.get('cap_s')} s cap), mean {a['per_point_ms']['mean']:.1f} ms/point "
                         f"(median {a['per_point_ms']['median']:.1f}, max {a['per_point_ms']['max']:.0f}) x {a['total_items']:,} points"
                         + ("; a lower bound" if a.get("lower_bound") else "")
                         + (f"; stand-in modules for its unused imports: {', '.join(a['stubbed_imports'])}" if a.get("stubbed_imports") else ""))
        if tri.get("numpy_subset_points"):
            notes.append(f"`MPJPE` of `numpy_naive` is on its {tri['numpy_subset_points']:,} timed points; the others on all points "
                         f"(on the same subset: " + ", ".join(f"{n} {_f(r.get('mpjpe_mm_on_numpy_subset'))}" for n, r in tri["systems"].items()
                                                            if r.get("mpjpe_mm_on_numpy_subset") is not None) + " mm)")
        _note_lines(L, notes, absent)



def _dedup(L: list[str], W: dict[str, Any]) -> None:
    """OKS dedup: every system, the COCO API's dict building."""
    dd = W.get("dedup")
    if dd and "systems" in dd:
        w = dd["workload"]
        L.append(f"## OKS dedup: {w['frames']} frames x {w['cameras']} views = {w['view_frames']:,} view-frames, {w['slots']} slots, "
                 f"{w['detections']:,} detections")
        L.append("")
        L.append(f"OKS > {w['oks_thr']} duplicates, keypoints over {w['kpt_thr']}, policy {w['policy']}; one call for the whole sequence "
                 "(h4d_fast) vs a per-view-frame `computeOks` loop (COCO API).")
        L.append("")
        rows, absent = _sys_rows(dd["systems"], [lambda r: r.get("kept", ""), lambda r: _f(r.get("agreement"), pct=True)])
        L.append(_table(["system", "device", "time", "p20-p80", "x fastest", "peak GPU mem", "kept", "agreement"], rows))
        c = dd["systems"].get("cocoapi", {})
        notes = _notes(dd["systems"])
        if c.get("available"):
            notes.append(f"`cocoapi` = {c['package']} {c.get('version')}; building its annotation dicts ({c['built_view_frames']:,} view-frames) "
                         f"took {c['build_dicts_ms_for_built_subset']:.0f} ms, not counted"
                         + (f"; not used: {c['not_used']}" if c.get("not_used") else ""))
        _note_lines(L, notes, absent)



def _collision(L: list[str], W: dict[str, Any]) -> None:
    """Collision loss: every system, the references' frames."""
    co = W.get("collision")
    if co and "systems" in co:
        w = co["workload"]
        L.append(f"## Collision loss, forward + backward: {w['frame_pairs']} frame pairs, {w['verts_per_person']:,} vertices / "
                 f"{w['faces_per_person']:,} faces per person, grid {w['grid_size']}^3")
        L.append("")
        rows, absent = _sys_rows(co["systems"], [lambda r: f"{r['loss_mean']:.3e}" if r.get("loss_mean") is not None else "",
                                                 lambda r: f"{r['max_abs_diff_vs_grid']:.1e}" if r.get("max_abs_diff_vs_grid") is not None else
                                                 (f"rel {r['rel_diff_vs_grid']:.2f}" if r.get("rel_diff_vs_grid") is not None else "")])
        L.append(_table(["system", "device", "time", "p20-p80", "x fastest", "peak GPU mem", "loss mean", "|diff| vs grid"], rows))
        for n in _notes(co["systems"]):
            L.append(f"- {n}")
        L.append(f"- references timed on {w['ref_frames']} frame(s) and scaled per frame; `bruteforce_torch` computes the exact "
                 "(grid-free) penetration over all vertex-face pairs, a different discretisation than the 32^3 grid (`rel` = relative "
                 "difference of the per-frame loss).")
        for n in absent:
            L.append(f"- absent: {n}")
        L.append("")



def _fitting(L: list[str], W: dict[str, Any]) -> None:
    """SMPL fit: every system on the same keypoints and config."""
    fi = W.get("fitting")
    if fi:
        if "systems" in fi and "workload" in fi:
            w = fi["workload"]
            c = w["config"]
            L.append(f"## SMPL fit: {w['frames']} frames x {w['people']} people, {w['vertices']:,}-vertex body model")
            L.append("")
            L.append(f"Same keypoints (body-model ground truth + {100 * w['keypoint_noise_m']:.0f} cm noise, {100 * w['invalid_keypoints']:.0f}% "
                     f"invalid), same config: {c['epochs']} epochs x stages 1/2/3 with {c['iters_stage1']}/{c['iters_stage2']}/"
                     f"{c['iters_stage3']} {c['optimizer']} iterations, collision stage {'on' if c['collision'] else 'off'}.")
            L.append("")
            rows, absent = _sys_rows(fi["systems"], [lambda r: r.get("iterations", ""), lambda r: r.get("evaluations", ""),
                                                     lambda r: _f(r.get("ms_per_evaluation"), 1), lambda r: _f(r.get("mpjpe_mm"), 1),
                                                     lambda r: _f(r.get("pve_mm"), 1), lambda r: _f(r.get("kp_error_mm"), 1)])
            L.append(_table(["system", "device", "time", "p20-p80", "x fastest", "peak GPU mem", "iterations", "evaluations", "ms/eval",
                             "MPJPE", "PVE", "kp err"], rows))
            for n in absent:
                L.append(f"- absent: {n}")
        else:
            L.append("## SMPL fit")
            L.append("")
            L.append(f"absent: {fi.get('absent')}")
        L.append("")



def _end_to_end(L: list[str], W: dict[str, Any]) -> None:
    """End to end: the `h4d run` command, warm and cold times, the stages."""
    e = W.get("end_to_end")
    if e:
        w = e.get("workload", {})
        L.append(f"## End to end: `h4d run`, {w.get('frames')} frames x {w.get('cameras')} cameras x {w.get('people')} people")
        L.append("")
        if not e.get("available"):
            L.append(f"absent: {e.get('reason')}")
        else:
            L.append(f"`{e['command']}` (the run's synthetic capture, 20 of its ring cameras, written as a sequence folder)")
            L.append("")
            L.append(f"Warm: **{e['wall_s']:.2f} s** wall clock ({e['total_s']:.2f} s in timing.json, median of {e['warm_runs']} warm run(s)); "
                     f"cold (first process): {e['cold_wall_s']:.2f} s wall, {e['cold_total_s']:.2f} s in timing.json. "
                     f"SMPL fit stage: {'yes' if e['includes_fit'] else '**no**'}. "
                     + (f"Keypoint stages alone (load, filter + dedup, track + triangulate, refine, keypoint export = "
                        f"`run_keypoints` + I/O): {e['keypoints_s']:.2f} s." if e.get("keypoints_s") is not None else ""))
            if e.get("overrides"):
                L.append("")
                L.append(f"Shortened fit (`--quick`): {', '.join(e['overrides'])}.")
            L.append("")
            rows = [[s["name"], f"{s['seconds']:.3f} s", f"{100 * s['seconds'] / max(e['total_s'], 1e-9):.1f}%", _stats(s.get("stats"))]
                    for s in e["stages"]]
            L.append(_table(["stage", "seconds", "share", "stage figures (timing.json)"], rows))
            acc = e.get("accuracy", {})
            if acc and "error" not in acc:
                L.append("")
                L.append("Accuracy (`h4d eval`): " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in acc.items()))
        L.append("")



def _other(L: list[str], R: dict[str, Any], W: dict[str, Any]) -> None:
    """The image workloads' JSON; any other workload without systems says why it is absent."""
    for wl in R["mode"].get("workloads", []):
        w = W.get(wl)
        if isinstance(w, dict) and wl in ("detect", "images_to_meshes") and w.get("available"):
            L.append(f"## {TITLES.get(wl, wl)}")
            L.append("")
            L.append("```json")
            L.append(json.dumps({k: v for k, v in w.items() if k not in ("runs",)}, indent=1, default=str)[:6000])
            L.append("```")
            L.append("")
            continue
        if isinstance(w, dict) and "systems" not in w and wl not in ("end_to_end", "end_to_end_warm", "run_many") and "adapters" not in w:
            L.append(f"## {TITLES.get(wl, wl)}")
            L.append("")
            L.append(f"not available: {w.get('absent') or w.get('reason')}")
            L.append("")


def _sweep(L: list[str], R: dict[str, Any]) -> None:
    """The scaling sweep: one table per workload and axis, the plot."""
    sw = R.get("sweep")
    if sw and sw.get("error"):
        L.append("## Scaling sweep")
        L.append("")
        L.append(f"failed: {sw['error']}")
        L.append("")
    elif R["mode"].get("sweep") is False:
        L.append("## Scaling sweep")
        L.append("")
        L.append("not run (`--no-sweep`)")
        L.append("")
    if sw and sw.get("rows"):
        L.append(f"## Scaling sweep ({sw['kind']})")
        L.append("")
        L.append("Time per system, one axis at a time around " + ", ".join(f"{k} {v}" for k, v in sw["definition"]["center"].items())
                 + ". `*` = extrapolated or scaled (see the JSON rows: `scaled_from`, `measured_items`).")
        L.append("")
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in sw["rows"]:
            groups.setdefault((r["workload"], r["axis"]), []).append(r)
        for (wl, ax), rs in groups.items():
            systems = [s for s in dict.fromkeys(r["system"] for r in rs) if s != "all"]
            vals = sorted({r[ax] if ax != "frames" or wl != "fitting" else r["frames"] for r in rs})
            L.append(f"**{wl} vs {ax}**")
            L.append("")
            rows = []
            for v in vals:
                sel = [r for r in rs if r[ax] == v]
                items = sel[0]["items"] if sel else ""
                cells = []
                for s in systems:
                    m = [r for r in sel if r["system"] == s]
                    cells.append(_t(m[0]) if m else "")
                rows.append([v, f"{items:,} {sel[0]['item']}" if sel else ""] + cells)
            L.append(_table([ax, "size"] + [f"`{s}`" for s in systems], rows))
            L.append("")
        if sw.get("skipped"):
            L.append("Skipped (time budget): " + ", ".join(sw["skipped"]))
            L.append("")
        if R.get("plot"):
            L.append(f"![time vs size]({Path(R['plot']).name})")
            L.append("")
