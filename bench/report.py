"""Headline figures, goals, the Markdown table and the PNG plot of a benchmark run.

The figures and goals are in :mod:`bench.report_goals`, the side-by-side table in
:mod:`bench.report_tables`, the per-workload sections in :mod:`bench.report_sections` and the
table cells in :mod:`bench.report_format`; this module assembles the report and keeps their public
names importable from here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report_goals import MPJPE_TOL_MM, goals, goals_markdown, headline, headline_markdown
from bench.report_sections import workload_sections
from bench.report_tables import PEERS, TITLES, acceptance_lines, summary_markdown, summary_rows

__all__ = ["GLOSSARY", "MPJPE_TOL_MM", "PAPER_NOTE", "PEERS", "TITLES", "acceptance_lines", "goals", "headline", "markdown",
           "paper_note", "plot", "summary_markdown", "summary_rows"]

PAPER_NOTE = (
    "**Comparability with the paper's 2 h 40 min.** The Harmony4D paper reports 2 h 40 min on an RTX 2080 for its whole "
    "pipeline on a capture of 600 frames x 20 cameras, starting from the images: decoding, its 2D detection and pose "
    "networks and SAM segmentation, then the 3D stages and the body fit. {images} {end_to_end} The paper does not break "
    "its time down by stage, so the per-stage figures here are compared only with the peers measured side by side in this run."
)


def paper_note(R: dict[str, Any]) -> str:
    """The comparability note: which figure of this run is like-for-like with the paper's time, and why the others are not."""
    W, H, env = R.get("workloads", {}), R["headline"], R["environment"]
    v = (H.get("images_to_meshes_s") or {}).get("value")
    if v is not None:
        w = W.get("images_to_meshes", {})
        wk, sq = w.get("workload") or {}, w.get("sequence") or {}
        differs = ["the networks (h4d_fast's own detector and pose model, no SAM segmentation)",
                   f"the GPU ({env.get('device_name')} vs RTX 2080)"]
        if sq.get("source_frames") and sq.get("source_cameras"):
            n = sq.get("people")
            who = f"{n} {'person' if n == 1 else 'people'} in " if n else ""
            differs.append(f"the footage ({who}{sq['source_frames']} frames x {sq['source_cameras']} cameras of demo video, repeated "
                           "to these counts)")
        images = (f"The like-for-like figure is `images_to_meshes_s`, {v:.1f} s: `h4d run` on {wk.get('frames')} frames x "
                  f"{wk.get('cameras')} cameras of JPEG images with no detections, through its image stage (stage 0, what "
                  "`h4d detect` does: decoding, person detector, pose model), tracking, triangulation, refinement and the SMPL "
                  "fit to exported meshes: images in, meshes out, the paper's frame and camera counts. What still differs: "
                  + ", ".join(differs[:-1]) + " and " + differs[-1] + ".")
    else:
        images = ("This run has no images-to-meshes figure (the `images_to_meshes` workload: `h4d run` from JPEG frames to "
                  "exported meshes, the like-for-like comparison with the paper's time), so no speed-up over the paper is "
                  "claimed from it.")
    e = W.get("end_to_end") or {}
    nofit = " (this run's `h4d run` had no SMPL fit stage)" if e.get("available") and not e.get("includes_fit") else ""
    end_to_end = ("The end-to-end figure (`end_to_end_s`) starts later, from 2D detections already computed (keypoints and "
                  "boxes from a simulated detector on a synthetic two-person capture): detection filtering and OKS dedup, "
                  f"identity tracking, RANSAC triangulation, 3D refinement, the SMPL fit and export{nofit}. It leaves out the "
                  "image work, so it measures less than the paper's time and is not compared with it.")
    return PAPER_NOTE.format(images=images, end_to_end=end_to_end)


GLOSSARY = [
    ("time", "median over the timed calls after an untimed warm-up call (CUDA: CUDA events, L2 flushed and inputs rotated "
             "before each call; CPU: perf_counter). `*` = extrapolated or scaled: measured on a subset of the work (points, "
             "view-frames, frames, vertices) and scaled linearly, see the notes and the JSON (`measured_items`, `scaled_from`)."),
    ("p20-p80", "20th and 80th percentile of the timed calls (same scaling)."),
    ("x fastest", "time / time of the fastest system in the table."),
    ("peak GPU mem", "torch.cuda.max_memory_allocated during one call minus what was allocated before it (the inputs): "
                     "the memory the call itself needs (MiB). Empty on CPU."),
    ("MPJPE", "mean distance (mm) of the system's valid 3D points to the ground truth; `on sample` = on the points of "
              "aniposelib's sample that aniposelib finished; `valid` = fraction of points the system returns."),
    ("agreement", "fraction of detection slots with the same keep/drop decision as h4d_fast's torch reference."),
    ("loss / |diff|", "mean per-frame collision loss; max abs per-frame difference from the grid-SDF reference on its frames."),
    ("fit MPJPE / PVE", "24 SMPL joints / all vertices against the ground-truth meshes (mm, no alignment); kp err = fitted "
                        "COCO joints vs the noisy input keypoints."),
]


# ----------------------------------------------------------------------------- markdown
def markdown(R: dict[str, Any]) -> str:
    env, mode, H = R["environment"], R["mode"], R["headline"]
    L: list[str] = []
    L.append(f"# h4d_fast benchmark: {env['device_name']} ({env['device']}), {env['timestamp'][:10]}")
    L.append("")
    L.append(f"Command: `{env['command']}`  ")
    L.append(f"Commit: `{(env.get('git') or {}).get('commit')}`{' (working tree modified)' if (env.get('git') or {}).get('dirty') else ''}  ")
    L.append(f"Mode: {'quick' if mode['quick'] else 'default'}{', full sweep' if mode['full'] else ''}; budget {mode['budget_s']:.0f} s, "
             f"used {R.get('elapsed_s', 0):.0f} s  ")
    vers = ", ".join(f"{k} {v}" for k, v in sorted(env.get("versions", {}).items()))
    L.append(f"Python {env['python']}, torch {env['torch']} (CUDA {env.get('cuda')}), {vers}  ")
    L.append(f"CPU: {env['cpu']} ({env['cpu_count']} logical cores, {env['torch_threads']} torch threads)"
             + (f"; GPU: {env['device_name']} ({env.get('gpu_memory_gib')} GiB)" if env["device"] == "cuda" else "; no GPU (GPU columns absent)"))
    if env["device"] != "cuda":
        L.append("")
        L.append("> **CPU run.** Kernel figures below are numba on this CPU; they are not GPU results.")
    L.append("")
    L.append("## Side by side")
    L.append("")
    L.append("h4d_fast's fastest backend on this machine beside every system it is compared with, same inputs and thresholds "
             "(`*` = extrapolated or scaled, `>=` = lower bound; details and every backend in the sections below).")
    L.append("")
    L.append(summary_markdown(R))
    L.append("")
    L.append("Acceptance figures (issue 5):")
    L.append("")
    for line in acceptance_lines(R):
        L.append(f"- {line}")
    L.append("")
    L.extend(goals_markdown(R["goals"]))
    L.extend(headline_markdown(H))
    L.append(paper_note(R))
    L.append("")
    L.extend(workload_sections(R))
    L.append("## Columns")
    L.append("")
    for k, v in GLOSSARY:
        L.append(f"- **{k}**: {v}")
    L.append("")
    return "\n".join(L)


# ----------------------------------------------------------------------------- plot
def plot(R: dict[str, Any], path: Path) -> str | None:
    """Time against workload size per system, one panel per workload and axis. Returns the
    reason when no plot could be made."""
    sw = R.get("sweep") or {}
    rows = [r for r in sw.get("rows", []) if r.get("available") and r.get("median_ms")]
    if not rows:
        return "no sweep rows"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:
        return f"matplotlib unavailable ({type(e).__name__}: {e})"
    panels = list(dict.fromkeys((r["workload"], r["axis"]) for r in rows))
    ncol = 3
    nrow = (len(panels) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.9 * nrow), squeeze=False)
    systems = list(dict.fromkeys(r["system"] for r in rows))
    cmap = plt.get_cmap("tab10")
    color = {s: cmap(i % 10) for i, s in enumerate(systems)}
    for ax_i, (wl, axis) in enumerate(panels):
        ax = axes[ax_i // ncol][ax_i % ncol]
        sel = [r for r in rows if r["workload"] == wl and r["axis"] == axis]
        for s in dict.fromkeys(r["system"] for r in sel):
            pts = sorted((r[axis], r["median_ms"], bool(r.get("extrapolated", False))) for r in sel if r["system"] == s)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ext = all(p[2] for p in pts)
            ax.plot(xs, ys, "--" if ext else "-", color=color[s], label=s + (" (scaled)" if ext else ""))
            for x, y, e in pts:  # hollow marker = extrapolated / scaled point
                ax.plot([x], [y], "o", color=color[s], mfc="none" if e else color[s])
        ax.set_xscale("log")
        ax.set_yscale("log")
        c = (sw.get("definition") or {}).get("center", {})
        fixed = ", ".join(f"{k} {v}" for k, v in c.items() if k != axis and not (wl in ("fitting", "collision") and k == "cameras"))
        ax.set_xlabel(f"{axis} ({fixed})" if fixed else axis)
        ax.set_ylabel("time (ms)")
        ax.set_title(f"{wl} vs {axis}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for j in range(len(panels), nrow * ncol):
        axes[j // ncol][j % ncol].axis("off")
    env = R["environment"]
    fig.suptitle(f"h4d_fast vs peers: {env['device_name']} ({env['device']}), {env['timestamp'][:10]}; hollow/dashed = extrapolated")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
