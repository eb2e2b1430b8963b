"""Headline figures and goals of a benchmark run, and their Markdown tables (used by :mod:`bench.report`)."""

from __future__ import annotations

from typing import Any

from bench.report_format import _get, _table
from bench.report_issue13 import issue13_goals, issue13_headline

MPJPE_TOL_MM = 0.1  # "equal MPJPE": within this (float32 kernels vs float64 peers)


def headline(R: dict[str, Any]) -> dict[str, Any]:
    """The top-level figures and where each comes from."""
    W = R.get("workloads", {})
    cuda = R["environment"]["device"] == "cuda"
    H: dict[str, Any] = {}

    def pick(wl: str, key: str, scale: float = 1.0) -> None:
        w = W.get(wl, {})
        best = w.get("best")
        if best and _get(w, "systems", best, "available"):
            r = w["systems"][best]
            H[key] = {"value": r["median_ms"] * scale, "system": best, "device": r.get("device"), "cpu": r.get("device") == "cpu",
                      "from": f"workloads.{wl}.systems.{best}.median_ms", "p20_ms": r.get("p20_ms"), "p80_ms": r.get("p80_ms"),
                      "workload": w.get("workload")}
        else:
            if wl not in (R.get("mode") or {}).get("workloads", [wl]):
                why = "not run (--only)"
            elif w.get("absent") or w.get("reason"):
                why = str(w.get("absent") or w.get("reason"))
            else:
                kern = ("h4d_triton", "h4d_cupy") if cuda else ("h4d_numba",)
                why = f"no {'GPU kernel' if cuda else 'numba'} result for {wl}: " + "; ".join(
                    f"{k}: {_get(w, 'systems', k, 'reason')}" for k in kern if _get(w, "systems", k) is not None)
            H[key] = {"value": None, "reason": why}

    pick("triangulation", "triangulate_ransac_ms")
    pick("dedup", "dedup_oks_ms")
    pick("collision", "collision_fwd_bwd_ms")
    tri = W.get("triangulation", {})
    best = H["triangulate_ransac_ms"].get("value")
    for peer, key in (("aniposelib", "triangulation_speedup_vs_aniposelib"), ("torch_naive", "triangulation_speedup_vs_torch_naive")):
        r = _get(tri, "systems", peer)
        if best and r and r.get("available"):
            H[key] = {"value": r["median_ms"] / best, "peer_ms": r["median_ms"], "peer_device": r.get("device"), "kernel_ms": best,
                      "kernel": tri.get("best"), "from": f"workloads.triangulation.systems.{peer}.median_ms / triangulate_ransac_ms",
                      "lower_bound": bool(r.get("lower_bound")), "peer_extrapolated": bool(r.get("extrapolated"))}
        elif not best:
            H[key] = {"value": None, "reason": H["triangulate_ransac_ms"].get("reason", "no h4d_fast kernel result")}
        else:
            H[key] = {"value": None, "reason": (r or {}).get("reason", "not measured")}
    e = W.get("end_to_end", {})
    if e.get("available"):
        H["end_to_end_s"] = {"value": e["wall_s"], "from": "workloads.end_to_end.wall_s (median warm wall clock of `h4d run`)",
                             "timing_json_total_s": e.get("total_s"), "cold_wall_s": e.get("cold_wall_s"), "includes_fit": e.get("includes_fit"),
                             "keypoints_s": e.get("keypoints_s"), "command": e.get("command")}
    else:
        ran = "end_to_end" in (R.get("mode") or {}).get("workloads", ["end_to_end"])
        H["end_to_end_s"] = {"value": None, "reason": e.get("reason") or e.get("absent") or ("not measured" if ran else "not run (--only)")}
    for wl, key, val, src in (("detect", "detect_crops_per_s", "crops_per_s",
                               "workloads.detect.models.default.model_crops_per_s (crop warp + embedded pose model, frames on the device)"),
                              ("images_to_meshes", "images_to_meshes_s", "wall_s",
                               "workloads.images_to_meshes.wall_s (`h4d run` wall clock, JPEG frames to exported meshes)")):
        w = W.get(wl, {})
        ran = wl in (R.get("mode") or {}).get("workloads", [wl])
        if w.get("available") and w.get(val) is not None:
            H[key] = {"value": w[val], "from": src}
            if wl == "detect":
                m = w["models"]["default"]
                H[key].update(images_per_s_decode_included=m["pass"]["images_per_s"], crops_per_s_decode_included=m["pass"]["crops_per_s"],
                              decoder=m.get("decoder"), detector_images_per_s=m.get("detector_images_per_s"))
            else:
                H[key].update(warm=w.get("warm"), cold_wall_s=w.get("cold_wall_s"), stages=w.get("stages"), command=w.get("command"))
        else:
            H[key] = {"value": None, "reason": w.get("reason") or w.get("absent") or ("not measured" if ran else "not run (--only)")}
    issue13_headline(R, H)
    return H


def _margin_le(v: float, target: float, unit: str) -> str:
    return f"{v / target:.2f}x the target ({v - target:+.3g} {unit})"


def _margin_ge(v: float, target: float, unit: str = "x") -> str:
    if unit == "x":
        return f"{v:.3g}x, {target / v:.2f}x short of {target:g}x"
    return f"{v:.3g}{(' ' + unit) if unit else ''}, {target / v:.2f}x short of {target:g}" if v else f"0, short of {target:g}"


def goals(R: dict[str, Any], H: dict[str, Any]) -> list[dict[str, Any]]:
    env = R["environment"]
    quick = R["mode"]["quick"]
    cuda = env["device"] == "cuda"
    h100 = cuda and "H100" in (env.get("device_name") or "")
    W = R.get("workloads", {})
    scope_notes = []
    if not cuda:
        scope_notes.append("CPU run: the kernel figures are numba on the CPU, not GPU claims")
    elif not h100:
        scope_notes.append(f"measured on {env.get('device_name')}, not an H100")
    frames = (R["mode"] or {}).get("frames")
    paper = not quick and (frames is None or frames == 600)
    if quick:
        scope_notes.append("--quick: reduced workloads, not the paper's sizes")
    elif not paper:
        scope_notes.append(f"--frames {frames}: not the paper's 600 frames")
    scope = "; ".join(scope_notes) or "GPU, paper-size workloads"
    G: list[dict[str, Any]] = []

    def add(gid: str, text: str, target: float, unit: str, value: float | None, le: bool, extra_ok: bool = True,
            extra_note: str | None = None, reason: str | None = None, valid_scope: bool = True, ge_unit: bool = False) -> None:
        g: dict[str, Any] = {"id": gid, "goal": text, "target": target, "unit": unit, "measured": value, "scope": scope,
                             "direction": "<=" if le else ">="}
        if value is None:
            g.update(met=None, status="not measured", detail=reason or "no result")
        else:
            ok = (value <= target if le else value >= target) and extra_ok
            g["met"] = ok
            g["status"] = ("met" if ok else "not met") if valid_scope else ("met (not a valid claim here)" if ok else "not met (not a valid claim here)")
            if not ok:
                if (value <= target) if le else (value >= target):
                    g["detail"] = extra_note or "speed target reached but the accuracy condition fails"
                else:
                    g["detail"] = _margin_le(value, target, unit) if le else _margin_ge(value, target, unit)
                    if extra_note:
                        g["detail"] += "; " + extra_note
            elif extra_note:
                g["detail"] = extra_note
        G.append(g)

    valid = cuda and paper
    # end to end
    e = W.get("end_to_end", {})
    v = H["end_to_end_s"]["value"]
    note = None
    ok_extra = True
    if e.get("available") and not e.get("includes_fit"):
        ok_extra = False
        note = f"`h4d run` has no SMPL fit stage in this checkout: {v:.1f} s stops at the 3D keypoints (meshes not fitted/exported)"
    add("end_to_end", "end to end <= 30 s on one H100: 600 frames x 20 cameras x 2 people, 2D detections to fitted exported meshes",
        30.0, "s", v, True, ok_extra, note, H["end_to_end_s"].get("reason"), valid and h100)
    if e.get("timed_out_after_s") is not None:  # did not finish: not met, by at least this much
        t = e["timed_out_after_s"]
        G[-1].update(met=False, status="not met" if valid and h100 else "not met (not a valid claim here)",
                     detail=f"`h4d run` did not finish within {t:.0f} s: >= {t / 30:.1f}x the target")
    # triangulation vs aniposelib
    tri = W.get("triangulation", {})
    S = tri.get("systems", {})
    best = tri.get("best")
    sp = H["triangulation_speedup_vs_aniposelib"]
    acc_ok, note = True, None
    if sp.get("value") is not None and best:
        a, b = S["aniposelib"], S[best]
        ours, theirs = b.get("mpjpe_mm_on_anipose_sample"), a.get("mpjpe_mm")
        if ours is not None and theirs is not None:
            acc_ok = ours <= theirs + MPJPE_TOL_MM and (b.get("valid_frac_on_anipose_sample") or 0) >= (a.get("valid_frac") or 0) - 1e-9
            note = (f"MPJPE on aniposelib's {a.get('accuracy_on_points')} finished sample points: {best} {ours:.2f} mm vs aniposelib "
                    f"{theirs:.2f} mm")
        else:  # no evidence for "equal or better MPJPE"
            acc_ok = False
            note = (f"accuracy not compared: aniposelib finished {a.get('accuracy_on_points', 0)} of its {a.get('measured_items')} "
                    f"sampled points within the {a.get('cap_s')} s cap (raise --anipose-cap-s)")
        if sp.get("lower_bound"):
            note = (note + "; " if note else "") + "aniposelib time is a lower bound (capped points)"
    add("triangulation_vs_aniposelib", "triangulation >= 1000x faster than aniposelib at equal or better MPJPE", 1000.0, "x",
        sp.get("value"), False, acc_ok, note, sp.get("reason"), valid)
    # triangulation vs plain torch
    sp = H["triangulation_speedup_vs_torch_naive"]
    acc_ok, note = True, None
    if sp.get("value") is not None and best:
        a, b = S["torch_naive"], S[best]
        if a.get("mpjpe_mm") is not None and b.get("mpjpe_mm") is not None:
            acc_ok = b["mpjpe_mm"] <= a["mpjpe_mm"] + MPJPE_TOL_MM and b.get("valid_frac", 0) >= a.get("valid_frac", 0) - 1e-9
            note = f"MPJPE {best} {b['mpjpe_mm']:.2f} mm vs torch {a['mpjpe_mm']:.2f} mm (all points)"
    add("triangulation_vs_torch_naive", "triangulation >= 30x faster than the plain batched torch version at equal or better MPJPE",
        30.0, "x", sp.get("value"), False, acc_ok, note, sp.get("reason"), valid)
    h = H["images_to_meshes_s"]
    w = W.get("images_to_meshes", {})
    full = (w.get("workload") or {}).get("frames") == 600 and (w.get("workload") or {}).get("cameras") == 20
    every = w.get("frames_with_3d")
    add("images_to_meshes", "images to meshes <= 60 s: 600 frames x 20 cameras of real-size JPEG frames to exported meshes, embedded pose model",
        60.0, "s", h.get("value"), True, every == 1.0 if isinstance(every, float) else True,
        (f"frames with 3D: {every:.1%}" if isinstance(every, float) else None), h.get("reason"), cuda and full)
    h = H["detect_crops_per_s"]
    add("detect_crops_per_s", "embedded pose model >= 2,000 person crops per second on the GPU", 2000.0, "crops/s", h.get("value"), False,
        True, (f"decode included: {h['images_per_s_decode_included']:.0f} images/s ({h.get('decoder')})" if h.get("value") else None),
        h.get("reason"), cuda)
    for gid, key, text, target in (
        ("triangulation_ms", "triangulate_ransac_ms", "triangulation (RANSAC, 20,400 points x 20 views) <= 0.5 ms", 0.5),
        ("dedup_ms", "dedup_oks_ms", "OKS dedup (12,000 view-frames) <= 0.5 ms", 0.5),
        ("collision_ms", "collision_fwd_bwd_ms", "collision loss fwd+bwd (600 frame pairs, SMPL-sized meshes) <= 5 ms", 5.0),
    ):
        h = H[key]
        note = f"{h.get('system')} on {h.get('device')}" if h.get("value") is not None else None
        add(gid, text, target, "ms", h.get("value"), True, True, note, h.get("reason"), valid)
    issue13_goals(R, H, lambda gid, text, target, unit, value, le, note, reason, valid_scope, ge_unit=False:
                  add(gid, text, target, unit, value, le, True, note, reason, valid_scope and (cuda and paper)), valid)
    return G


def goals_markdown(G: list[dict[str, Any]]) -> list[str]:
    """The goals section: one row per goal, then the scope line."""
    L: list[str] = []
    L.append("## Goals")
    L.append("")
    rows = []
    for g in G:
        m = g["measured"]
        mv = "" if m is None else (f"{m:,.3g} {g['unit']}" if g["unit"] != "x" else f"{m:,.4g}x")
        rows.append([g["goal"], f"{g.get('direction') or ('<=' if g['unit'] != 'x' else '>=')} {g['target']:g} {g['unit']}", mv,
                     f"**{g['status']}**", g.get("detail", "")])
    L.append(_table(["goal", "target", "measured", "status", "detail"], rows))
    L.append("")
    L.append(f"Scope: {G[0]['scope'] if G else ''}.")
    L.append("")
    return L


def headline_markdown(H: dict[str, Any]) -> list[str]:
    """The headline figures section: key, value and where it comes from."""
    L: list[str] = []
    L.append("## Headline figures")
    L.append("")
    rows = []
    for k, h in H.items():
        v = h.get("value")
        if v is None:
            rows.append([f"`{k}`", "", h.get("reason", "")])
            continue
        if isinstance(v, dict):
            vs = ", ".join(f"{kk} {vv:.4g}" if isinstance(vv, float) else f"{kk} {vv}" for kk, vv in v.items())
        else:
            vs = f"{v:,.4g}" + (" (lower bound)" if h.get("lower_bound") else "") + (" (CPU)" if h.get("cpu") else "")
        rows.append([f"`{k}`", vs, h.get("from", "")])
    L.append(_table(["key", "value", "from"], rows))
    L.append("")
    return L
