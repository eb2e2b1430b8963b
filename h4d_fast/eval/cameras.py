"""``h4d eval cameras``: accuracy and run time of the keypoint stages against the number of cameras
(the paper's Table 2).

The reference re-ran its contact tracker with the first ``N`` cameras (``cam01..camN``,
``N in {18, 16, ..., 4}``) and compared with the 20-camera result; the comparison script was not
released (reference-pipeline.md section 6). Here: the keypoint stages (filter, identity +
triangulation, refinement; no SMPL fit) run on :meth:`~h4d_fast.data.Capture.select_views` of the
first ``N`` cameras for each ``N``; each result's MPJPE (mm, world frame, no alignment, COCO-17
keypoints valid in both, :func:`h4d_fast.eval.metrics.keypoint_report`) is taken against the
all-camera result and, when the sequence has ``ground_truth/``, against the ground truth. The
time is the wall time of the stages (after an untimed warm-up run on a few frames, so JIT
compilation and kernel caches are not charged to the first row).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..errors import InputError

DEFAULT_COUNTS: tuple[int, ...] = tuple(range(4, 21, 2))


def parse_counts(text: str | None, num_cameras: int) -> list[int]:
    """``"4,6,8"`` (or ``"4-20:2"`` / ``"4..20"``) -> sorted unique counts in ``[1, num_cameras]``;
    default ``4, 6, ..., 20`` capped at ``num_cameras``."""
    if not text:
        counts = list(DEFAULT_COUNTS)
    else:
        counts = []
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            step = 1
            if ":" in part:
                part, s = part.split(":", 1)
                step = int(s)
            if "-" in part or ".." in part:
                a, b = part.replace("..", "-").split("-", 1)
                counts.extend(range(int(a), int(b) + 1, step))
            else:
                counts.append(int(part))
    bad = [c for c in counts if c < 2]
    if bad:
        raise InputError(None, f"camera counts must be >= 2 (triangulation needs two views), got {bad}", field="--cameras")
    out = sorted({c for c in counts if c <= num_cameras})
    if not out:
        raise InputError(None, f"no camera count <= the sequence's {num_cameras} cameras in {counts}", field="--cameras")
    return out


def camera_sweep(
    seq: Path,
    counts: Sequence[int] | str | None = None,
    cfg: Any = None,
    work: Path | None = None,
    log: Callable[[str], None] | None = None,
    warmup_frames: int = 4,
) -> dict[str, Any]:
    """Run the keypoint stages with the first ``N`` cameras for each ``N`` (module docstring).

    Args:
        seq: the sequence folder.
        counts: camera counts (list, or the ``--cameras`` text); default 4..20 step 2, capped.
        cfg: a :class:`~h4d_fast.config.Config` (default configuration when None; the fit is
            never run).
        work: folder for the stage outputs (a temporary folder, removed, when None).
    Returns:
        ``{"rows": [{"cameras", "mpjpe_mm", "seconds", "pa_mpjpe_mm", "recovered",
        ["mpjpe_gt_mm", "pa_mpjpe_gt_mm", "recovered_gt"]}], "sequence", "frames",
        "total_cameras", "reference_seconds", "device"}``.
    """
    from ..config import load_config
    from ..io.harmony4d import read_ground_truth, read_sequence
    from ..pipeline.driver import resolve_device, run_keypoints
    from .metrics import keypoint_report
    from .skeleton import align_people

    seq = Path(seq)
    log = log or (lambda s: None)
    if cfg is None:
        cfg = load_config(None, ["run.progress=false"])
    capture = read_sequence(seq, assume_metric=cfg.run.assume_metric)
    V = capture.num_views
    ns = parse_counts(counts, V) if counts is None or isinstance(counts, str) else parse_counts(",".join(map(str, counts)), V)
    gt = read_ground_truth(seq)
    gtp = None
    if gt is not None:
        gtp = gt.poses3d
        if gtp.shape[0] != capture.num_frames:
            gtp = gtp[torch.as_tensor([f - 1 for f in capture.frame_ids])]
    tmp = None
    if work is None:
        tmp = Path(tempfile.mkdtemp(prefix="h4d_cams_"))
        work = tmp
    work = Path(work)
    try:
        # warm-up: compile kernels / fill caches on a few frames (untimed)
        run_keypoints(capture.select_frames(0, min(warmup_frames, capture.num_frames)), work / "warmup", cfg, force=True)
        dev = resolve_device(cfg.run.device)

        def timed(cap, out: Path):
            _sync(dev)
            t0 = time.perf_counter()
            res = run_keypoints(cap, out, cfg, force=True)
            _sync(dev)
            return res, time.perf_counter() - t0

        ref, ref_s = timed(capture, work / f"cams{V:02d}")
        log(f"  all {V} cameras: {ref_s:.2f} s")
        rows = []
        for n in ns:
            if n == V:
                res, sec = ref, ref_s
            else:
                res, sec = timed(capture.select_views(list(range(n))), work / f"cams{n:02d}")
            # people matched frame by frame (a run with fewer cameras may find them in another order or miss one)
            rep = keypoint_report(align_people(res.poses3d, ref.poses3d, res.present, ref.present), ref.poses3d)
            row: dict[str, Any] = {"cameras": n, "mpjpe_mm": rep["mpjpe_mm"], "seconds": sec,
                                   "pa_mpjpe_mm": rep["pa_mpjpe_mm"], "recovered": rep["recovered"]}
            if gtp is not None:
                g = torch.as_tensor(gtp)
                rg = keypoint_report(align_people(res.poses3d, g, res.present), g)
                row.update({"mpjpe_gt_mm": rg["mpjpe_mm"], "pa_mpjpe_gt_mm": rg["pa_mpjpe_mm"], "recovered_gt": rg["recovered"]})
            rows.append(row)
            log(f"  {n:2d} cameras: MPJPE {row['mpjpe_mm']:.2f} mm vs all" + (f", {row['mpjpe_gt_mm']:.2f} mm vs ground truth" if "mpjpe_gt_mm" in row else "") + f", {sec:.2f} s")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"rows": rows, "sequence": str(seq), "frames": capture.num_frames, "total_cameras": V,
            "reference_seconds": ref_s, "device": str(dev)}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def markdown_table(res: dict[str, Any]) -> str:
    """The sweep as a Markdown table (Table 2 style)."""
    has_gt = any("mpjpe_gt_mm" in r for r in res["rows"])
    head = "| cameras | MPJPE vs all (mm) |" + (" MPJPE vs GT (mm) |" if has_gt else "") + " time (s) |"
    lines = [head, "|---:|---:|" + ("---:|" if has_gt else "") + "---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['cameras']} | {r['mpjpe_mm']:.2f} |" + (f" {r['mpjpe_gt_mm']:.2f} |" if has_gt else "") + f" {r['seconds']:.2f} |")
    lines.append("")
    lines.append(f"{res['frames']} frames, {res['total_cameras']} cameras in all; keypoint stages only, on {res.get('device', '?')}; "
                 "MPJPE over COCO-17 keypoints valid in both, world frame, no alignment.")
    return "\n".join(lines)


def plot(res: dict[str, Any], path: Path) -> Path:
    """A PNG of MPJPE (vs all cameras, vs ground truth) and time against the camera count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["rows"]
    n = [r["cameras"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(n, [r["mpjpe_mm"] for r in rows], "o-", label=f"vs all {res['total_cameras']} cameras")
    if any("mpjpe_gt_mm" in r for r in rows):
        ax.plot(n, [r.get("mpjpe_gt_mm", float("nan")) for r in rows], "s-", label="vs ground truth")
    ax.set_xlabel("cameras (first N)")
    ax.set_ylabel("MPJPE (mm)")
    ax.set_xticks(n)
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(n, [r["seconds"] for r in rows], "^--", color="grey", label="time")
    ax2.set_ylabel("time (s)")
    ax2.set_ylim(bottom=0)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper right")
    ax.set_title(f"Keypoint accuracy vs cameras ({res['frames']} frames)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(res: dict[str, Any], out: Path) -> dict[str, Path]:
    """``OUT/cameras.md``, ``OUT/cameras.png`` and ``OUT/cameras.json``."""
    import json

    from ..io.atomic import write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "cameras.md"
    write_text(md, markdown_table(res) + "\n")
    js = out / "cameras.json"
    write_text(js, json.dumps(res, indent=2) + "\n")
    png = plot(res, out / "cameras.png")
    return {"markdown": md, "json": js, "plot": png}


__all__ = ["DEFAULT_COUNTS", "camera_sweep", "markdown_table", "parse_counts", "plot", "write_outputs"]
