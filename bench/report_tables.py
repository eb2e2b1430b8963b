"""The side-by-side table of a benchmark run (h4d_fast's best backend beside each peer) and the
acceptance figures (used by :mod:`bench.report` and the runner)."""

from __future__ import annotations

from typing import Any

from bench.common import fmt_ms
from bench.report_format import _f, _t, _table

PEERS = {  # workload -> the systems h4d_fast's best backend is compared with, in order
    "triangulation": ("torch_naive", "numpy_naive", "aniposelib"),
    "dedup": ("torch_naive", "cocoapi"),
    "collision": ("grid_sdf_torch", "bruteforce_torch"),
    "fitting": ("smplx_autograd",),
}
TITLES = {"triangulation": "triangulation (RANSAC)", "dedup": "OKS dedup", "collision": "collision loss fwd+bwd",
          "detect": "image stage (pose model crops)", "images_to_meshes": "images to meshes (`h4d run`)",
          "fitting": "SMPL fit", "end_to_end": "end to end (`h4d run`)"}


def _size(wl: str, w: dict[str, Any]) -> str:
    if wl == "triangulation":
        return f"{w.get('points', 0):,} points x {w.get('cameras')} views"
    if wl == "dedup":
        return f"{w.get('view_frames', 0):,} view-frames"
    if wl == "collision":
        return f"{w.get('frame_pairs', 0):,} frame pairs, {w.get('verts_per_person', 0):,} verts"
    if wl == "fitting":
        return f"{w.get('frames')} frames x {w.get('people')} people"
    return f"{w.get('frames')} frames x {w.get('cameras')} cameras x {w.get('people')} people"


def _accuracy(wl: str, ours: dict[str, Any], peer: dict[str, Any], peer_name: str) -> str:
    """Accuracy of h4d_fast's best backend / the peer, on the same items."""
    if wl == "triangulation":
        if peer_name == "aniposelib":
            a, b = ours.get("mpjpe_mm_on_anipose_sample"), peer.get("mpjpe_mm")
            where = f" (MPJPE, aniposelib's {peer.get('accuracy_on_points')} finished points)"
        elif peer.get("mpjpe_mm_on_numpy_subset") is not None and peer_name == "numpy_naive":
            a, b = ours.get("mpjpe_mm_on_numpy_subset"), peer.get("mpjpe_mm")
            where = " (MPJPE, numpy's timed points)"
        else:
            a, b = ours.get("mpjpe_mm"), peer.get("mpjpe_mm")
            where = " (MPJPE, all points)"
        return f"{_f(a)} / {_f(b)} mm{where}" if a is not None and b is not None else ""
    if wl == "dedup":
        a, b = ours.get("agreement"), peer.get("agreement")
        if a is None or b is None:
            return ""
        where = f", on its {peer['accuracy_on_view_frames']:,} timed view-frames" if peer.get("accuracy_on_view_frames") else ""
        return f"keep decisions = torch reference: {100 * a:.2f}% / {100 * b:.2f}%{where}"
    if wl == "collision":
        a, b = ours.get("loss_mean"), peer.get("loss_mean")
        return f"loss {a:.3e} / {b:.3e}" if a is not None and b is not None else ""
    if wl == "fitting":
        return f"MPJPE {_f(ours.get('mpjpe_mm'), 1)} / {_f(peer.get('mpjpe_mm'), 1)} mm, PVE {_f(ours.get('pve_mm'), 1)} / {_f(peer.get('pve_mm'), 1)} mm"
    return ""


def summary_rows(R: dict[str, Any]) -> list[list[str]]:
    """One row per (workload, compared system): h4d_fast's best backend beside each peer, with
    the speed-up and the accuracy of both. A workload or peer that did not run says why."""
    W = R.get("workloads", {})
    rows: list[list[str]] = []
    for wl in R["mode"].get("workloads", list(W)):
        w = W.get(wl)
        if w is None:
            continue
        title = TITLES.get(wl, wl)
        if wl == "adapters":  # one row per adapter against its original
            from bench.adapters import summary_rows as adapter_rows

            rows += adapter_rows(w)
            continue
        if wl == "end_to_end":
            if w.get("available"):
                acc = w.get("accuracy") or {}
                a = f"3D keypoint MPJPE {acc['mpjpe_mm']:.2f} mm" if isinstance(acc.get("mpjpe_mm"), float) else ""
                if isinstance(acc.get("pve_mm"), float):
                    a += f", PVE {acc['pve_mm']:.1f} mm"
                fit = "" if w.get("includes_fit") else " (no SMPL fit stage)"
                rows.append([title, _size(wl, w.get("workload", {})), "h4d run" + fit, f"{w['wall_s']:.2f} s",
                             "Harmony4D paper (RTX 2080, 2D networks included)", "2 h 40 min", "not comparable (see below)", a])
            else:
                rows.append([title, _size(wl, w.get("workload", {})), "h4d run", "not available: " + str(w.get("reason") or w.get("absent")),
                             "", "", "", ""])
            continue
        if wl in ("detect", "images_to_meshes"):
            rows.append(_image_row(wl, title, w))
            continue
        S = w.get("systems")
        if not S or "workload" not in w:
            rows.append([title, "", "", "not available: " + str(w.get("absent") or w.get("reason") or "no result"), "", "", "", ""])
            continue
        best = w.get("best") or (("h4d_fit" if S.get("h4d_fit", {}).get("available") else None) if wl == "fitting" else None)
        ours = S.get(best, {}) if best else {}
        size = _size(wl, w["workload"])
        if not ours.get("available"):
            why = "; ".join(f"{k}: {v.get('reason')}" for k, v in S.items() if k.startswith("h4d") and not v.get("available"))
            rows.append([title, size, "h4d_fast", "not available: " + (why or "no backend ran"), "", "", "", ""])
            continue
        for peer in PEERS.get(wl, ()):
            r = S.get(peer)
            if r is None:
                continue
            if not r.get("available"):
                rows.append([title, size, f"`{best}`", _t(ours), f"`{peer}`", "not available: " + str(r.get("reason")), "", ""])
                continue
            sp = r["median_ms"] / ours["median_ms"]
            rows.append([title, size, f"`{best}`", _t(ours), f"`{peer}` ({r.get('device', '')})", _t(r),
                         ("> " if r.get("lower_bound") else "") + f"{sp:,.1f}x", _accuracy(wl, ours, r, peer)])
    return rows


def _image_row(wl: str, title: str, w: dict[str, Any]) -> list[str]:
    """The summary row of an image workload (detect, images_to_meshes)."""
    wk = w.get("workload") or {}
    size = f"{wk.get('frames')} frames x {wk.get('cameras')} cameras (real JPEG frames)"
    if not w.get("available"):
        return [title, size, "", "not available: " + str(w.get("reason") or w.get("absent")), "", "", "", ""]
    if wl == "detect":
        m = w["models"]["default"]
        return [title, size, f"`{m.get('name')}` crop + model", f"{m['model_crops_per_s']:,.0f} crops/s",
                "the same, decode + detector included", f"{m['pass']['images_per_s']:,.0f} images/s ({m.get('decoder')})", "", ""]
    every = w.get("frames_with_3d")
    return [title, size, "h4d run (images to meshes)", f"{w['wall_s']:.1f} s" + ("" if w.get("warm") else " (cold)"),
            "Harmony4D paper (RTX 2080)", "2 h 40 min", f"{9600 / w['wall_s']:,.0f}x",
            f"frames with 3D {every:.1%}" if isinstance(every, float) else ""]


def summary_markdown(R: dict[str, Any]) -> str:
    """The side-by-side table (Markdown)."""
    return _table(["workload", "size", "h4d_fast", "time", "compared with", "time", "h4d_fast speed-up", "accuracy: h4d_fast / compared"],
                  summary_rows(R))


def acceptance_lines(R: dict[str, Any]) -> list[str]:
    """The issue's acceptance figures, each with the raw figures it is computed from."""
    H = R["headline"]
    W = R.get("workloads", {})
    tri = W.get("triangulation", {})
    F = (tri.get("workload") or {}).get("frames")
    out = []
    e = H["end_to_end_s"]
    if e.get("value") is None:
        out.append(f"end_to_end_s: not measured ({e.get('reason')})")
    else:
        out.append(f"end_to_end_s = {e['value']:.2f} s (target <= 30 s; warm wall clock of `h4d run`, timing.json total "
                   f"{e.get('timing_json_total_s') or 0:.2f} s, cold {e.get('cold_wall_s') or 0:.2f} s, keypoints only "
                   f"{e.get('keypoints_s') or 0:.2f} s)")
    for key, target in (("triangulation_speedup_vs_aniposelib", 1000), ("triangulation_speedup_vs_torch_naive", 30)):
        h = H[key]
        if h.get("value") is None:
            out.append(f"{key}: not measured ({h.get('reason')})")
            continue
        peer = key.rsplit("_vs_", 1)[1]
        extra = ""
        if F:
            extra = f"; per frame {fmt_ms(h['peer_ms'] / F)} vs {fmt_ms(h['kernel_ms'] / F)}"
        how = " extrapolated" if h.get("peer_extrapolated") else ""
        lb = ", lower bound" if h.get("lower_bound") else ""
        out.append(f"{key} = {fmt_ms(h['peer_ms'])} ({peer}, {h.get('peer_device')}{how}{lb}) / {fmt_ms(h['kernel_ms'])} "
                   f"({h.get('kernel')}) = {h['value']:,.1f}x (target >= {target}x{extra})")
    return out
