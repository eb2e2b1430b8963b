"""Issue 13's part of the benchmark report: the warm path and its stages, run-many throughput,
accuracy against the baseline -- headline figures, goals and Markdown sections (used by
:mod:`bench.report`)."""

from __future__ import annotations

from typing import Any

from bench.report_format import _f, _table


def _why(R: dict[str, Any], wl: str) -> str:
    w = (R.get("workloads") or {}).get(wl, {})
    if wl not in (R.get("mode") or {}).get("workloads", [wl]):
        return "not run (--only)"
    return str(w.get("reason") or w.get("absent") or "not measured")


def issue13_headline(R: dict[str, Any], H: dict[str, Any]) -> None:
    """Issue 13's top-level figures: the warm API path and its stages, run-many throughput, accuracy."""
    W = R.get("workloads", {})
    w = W.get("end_to_end_warm", {})
    if w.get("available"):
        H["end_to_end_warm_s"] = {"value": w["end_to_end_warm_s"], "from": "workloads.end_to_end_warm.end_to_end_warm_s (median; warm "
                                  "process, run_sequence until it returns: consolidated outputs written, per-frame files handed to the writers)"}
        H["end_to_end_warm_files_s"] = {"value": w["end_to_end_warm_files_s"], "from": "workloads.end_to_end_warm (until every per-frame file is written)"}
        H["stage_s"] = {"value": w["stage_s"], "from": "workloads.end_to_end_warm.stage_s (median of the timed warm runs)",
                        "budgets_s": w.get("stage_budgets_s")}
        acc = w.get("accuracy") or {}
        if "error" not in acc and acc:
            keep = ("mpjpe_mm", "pve_mm", "identity_swaps", "penetration_after_cm3")
            H["accuracy"] = {"value": {k: acc.get(k) for k in keep}, "from": "workloads.end_to_end_warm.accuracy (h4d eval of the last "
                             "warm run; penetration from its fit_stats.json)", "vs_baseline": w.get("accuracy_vs_baseline")}
        else:
            H["accuracy"] = {"value": None, "reason": acc.get("error", "no accuracy figures")}
    else:
        for k in ("end_to_end_warm_s", "end_to_end_warm_files_s", "stage_s", "accuracy"):
            H[k] = {"value": None, "reason": _why(R, "end_to_end_warm")}
    m = W.get("run_many", {})
    if m.get("available"):
        H["run_many_per_hour"] = {"value": m["run_many_per_hour"], "from": "workloads.run_many.run_many_per_hour (steady rate between the "
                                  "first and the last finished capture)", "per_hour_wall": m.get("per_hour_wall"), "workers": m["workload"]["workers"],
                                  "captures": m.get("done")}
        H["run_many_gpu_busy"] = {"value": m.get("run_many_gpu_busy"), "from": "workloads.run_many.run_many_gpu_busy (NVML, same window)",
                                  "gpu_busy_wall": m.get("gpu_busy_wall")}
    else:
        for k in ("run_many_per_hour", "run_many_gpu_busy"):
            H[k] = {"value": None, "reason": _why(R, "run_many")}


def issue13_goals(R: dict[str, Any], H: dict[str, Any], add: Any, valid: bool) -> None:
    """Issue 13's goals (measured on one H100/H200 at the paper's size)."""
    h = H["end_to_end_warm_s"]
    add("end_to_end_warm", "warm API path <= 3.0 s: 600 frames x 20 cameras x 2 people, detections to exported meshes "
        "(consolidated outputs on disk; per-frame files in the background)", 3.0, "s", h.get("value"), True,
        note_or(H["end_to_end_warm_files_s"].get("value"), "every per-frame file on disk after {:.2f} s"), h.get("reason"), valid)
    e = H["end_to_end_s"]
    st = (R.get("workloads", {}).get("end_to_end") or {}).get("startup_s")
    add("end_to_end_fresh", "`h4d run` of a fresh process <= 8.0 s (wall clock, imports included)", 8.0, "s", e.get("value"), True,
        note_or(st, "of which {:.2f} s before the run began (interpreter, imports)"), e.get("reason"), valid)
    stage = H["stage_s"].get("value") or {}
    budgets = H["stage_s"].get("budgets_s") or {}
    for k, b in budgets.items():
        add(f"stage_{k}", f"stage {k} <= {b:g} s", b, "s", stage.get(k), True, None, H["stage_s"].get("reason") or "stage not timed", valid)
    add("run_many_per_hour", "run-many >= 2,000 captures per hour on one GPU", 2000.0, "/h", H["run_many_per_hour"].get("value"), False,
        None, H["run_many_per_hour"].get("reason"), valid, ge_unit=True)
    add("run_many_gpu_busy", "run-many keeps the GPU busy >= 85% of the time", 0.85, "", H["run_many_gpu_busy"].get("value"), False,
        None, H["run_many_gpu_busy"].get("reason"), valid, ge_unit=True)
    acc = H["accuracy"]
    vs = acc.get("vs_baseline") or {}
    for k in ("mpjpe_mm", "pve_mm", "identity_swaps", "penetration_after_cm3"):
        c = vs.get(k) or {}
        lim = c.get("limit")
        add(f"accuracy_{k}", f"{k} no worse than the baseline by more than 5% (baseline {c.get('baseline')})",
            lim if lim is not None else float("nan"), "", c.get("value"), True, None, acc.get("reason") or "not measured", valid)


def note_or(v: Any, fmt: str) -> str | None:
    return fmt.format(v) if isinstance(v, (int, float)) else None


def issue13_markdown(W: dict[str, Any]) -> list[str]:
    """Sections of the warm-path and run-many workloads."""
    L: list[str] = []
    w = W.get("end_to_end_warm")
    if w:
        L.append("## Warm path: the Python API in a warm process (as a `run-many` worker)")
        L.append("")
        if not w.get("available"):
            L.append(f"absent: {w.get('reason') or w.get('absent')}")
        else:
            L.append(f"`{w['command']}`: {len(w.get('runs', []))} timed run(s) after one untimed, frame-sequential stages on "
                     f"{w.get('sequential_device')}. **{w['end_to_end_warm_s']:.2f} s** until `run_sequence` returns (consolidated "
                     f"outputs on disk, per-frame files handed to the background writers), {w['end_to_end_warm_files_s']:.2f} s until "
                     f"every per-frame file is on disk; first run in the process {w['first_run_s']:.2f} s.")
            L.append("")
            b = w.get("stage_budgets_s") or {}
            L.append(_table(["stage", "seconds (median)", "budget", "met"],
                            [[k, f"{v:.3f}", f"{b[k]:g}" if k in b else "", ("yes" if v <= b[k] else "**no**") if k in b else ""]
                             for k, v in w["stage_s"].items()]))
            acc, vs = w.get("accuracy") or {}, w.get("accuracy_vs_baseline") or {}
            if acc and "error" not in acc:
                L.append("")
                rows = [[k, _f(c.get("value"), 3) if isinstance(c.get("value"), float) else c.get("value"), c.get("baseline"),
                         _f(c.get("limit"), 3), {True: "yes", False: "**no**", None: ""}[c.get("ok")]]
                        for k, c in vs.items() if isinstance(c, dict)]
                L.append(_table(["accuracy", "measured", "baseline", "limit (+5%)", "ok"], rows))
                L.append("")
                L.append(f"Baseline: {vs.get('baseline_source')}.")
        L.append("")
    m = W.get("run_many")
    if m:
        L.append("## Run-many throughput on one GPU")
        L.append("")
        if not m.get("available"):
            L.append(f"absent: {m.get('reason') or m.get('absent')}")
        else:
            busy = m.get("run_many_gpu_busy")
            L.append(f"`{m['command']}` ({m['workload']['workers']} workers, {m['captures']} captures of {m['workload']['frames']} frames x "
                     f"{m['workload']['cameras']} cameras, {m['done']} finished{', stopped at the time cap' if m.get('stopped_at_cap') else ''}): "
                     f"**{m['run_many_per_hour']:.0f} captures/hour** between the first and the last finished capture "
                     f"({m['per_hour_wall']:.0f}/hour over the whole {m['wall_s']:.0f} s command, start-up included); GPU busy "
                     + (f"**{100 * busy:.1f}%** of that window" if busy is not None else "not sampled")
                     + (f", {100 * m['gpu_busy_wall']:.1f}% of the command" if m.get("gpu_busy_wall") is not None else "") + ".")
        L.append("")
    return L
