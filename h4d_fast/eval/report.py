"""``h4d eval``: a run's output against the sequence's ground truth, and its text form.

Output people are matched to ground-truth people frame by frame (:mod:`h4d_fast.eval.skeleton`);
the keypoint errors (:func:`h4d_fast.eval.metrics.keypoint_report`) are computed on the matched
pairs beside recall, ghosts, identity switches and PCP; with a fit, the meshes against the
ground-truth body parameters of the matched people (:func:`mesh_report`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import H4DError


def evaluate_output(out: Path, gt_seq: Path, interaction: dict[str, Any] | None = None) -> dict[str, Any]:
    """``h4d eval``: the run's 3D keypoints against the sequence's ground truth. Output people are
    matched to ground-truth people frame by frame (:mod:`h4d_fast.eval.skeleton`); the MPJPE family
    is computed on the matched pairs, beside recall, ghosts, identity switches and PCP."""
    import numpy as np
    import torch

    from ..errors import InputError
    from ..io.harmony4d import read_ground_truth, read_meta
    from .metrics import keypoint_report
    from .skeleton import skeleton_report

    f = out / "poses3d.npz"
    if not f.exists():
        raise InputError(f, "no pipeline output here (run `h4d run SEQ --out OUT` first)")
    try:
        with np.load(f, allow_pickle=False) as z:
            pred = torch.from_numpy(z["poses3d"])
            raw = torch.from_numpy(z["raw_poses3d"]) if "raw_poses3d" in z.files else None
            present = torch.from_numpy(z["present"]).bool() if "present" in z.files else None
            frame_ids = z["frame_ids"].tolist()
            names = [str(s) for s in z["person_names"]]
    except (KeyError, ValueError, OSError) as e:
        raise InputError(f, f"unreadable pipeline output ({e})") from None
    gt = read_ground_truth(gt_seq)
    if gt is None:
        raise InputError(gt_seq / "ground_truth", "no ground truth in this sequence")
    gtp = torch.as_tensor(gt.poses3d)
    meta = read_meta(gt_seq) or {}
    check_same_sequence(out, gt_seq, frame_ids, names, meta, gtp.shape[0])
    gt_names = [str(n) for n in meta.get("person_names", [])]
    if len(gt_names) != gtp.shape[1]:
        gt_names = [f"person{g + 1}" for g in range(gtp.shape[1])]

    def scored(poses: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor]:
        sk = skeleton_report(poses, gtp, present, None, gt_names)
        aligned = sk.pop("_aligned")
        rep = keypoint_report(aligned, gtp, gt_names)
        rep.update(sk)  # identity_swaps: switches of the per-frame matching
        return rep, aligned

    report, _ = scored(pred)
    report["person_names"] = names
    report["match"] = skeleton_match_summary(pred, gtp, present, names, gt_names)
    if raw is not None:
        r, _ = scored(raw)
        report["before_refinement"] = {k: r[k] for k in ("mpjpe_mm", "pa_mpjpe_mm", "recovered", "identity_swaps", "recall")}
    if (out / "processed_data" / "sequence.npz").exists() and gt.smpl is not None and "betas" in gt.smpl:
        report.update(mesh_report(out, gt_seq, gt, frame_ids, pred, gtp, present))
    from .interaction import interaction_report

    try:
        report.update(interaction_report(out, gt_seq, **(interaction or {})))
    except H4DError as e:  # e.g. the run's body model file is not here: the other figures stand
        report["interaction"] = {"skipped": str(e)}
    timing = out / "timing.json"
    if timing.exists():
        try:
            report["timing"] = json.loads(timing.read_text())
        except ValueError:
            pass
    return report


def _span(ids: list[int]) -> str:
    shown = ", ".join(f"{i:05d}" for i in ids[:5])
    return f"{len(ids)} frame(s): {shown}{', ...' if len(ids) > 5 else ''}"


def check_same_sequence(out: Path, gt_seq: Path, frame_ids: list[int], names: list[str],
                        meta: dict[str, Any], gt_frames: int) -> None:
    """Refuse an output that is not a whole run of the ground truth's sequence: frame ids other
    than the ground truth's (another sequence, or a partial output: the frames missing are named),
    declared people the ground truth does not know, or a run recorded (``timing.json``) on a
    sequence whose name or cameras differ."""
    import re

    from ..errors import InputError
    from ..io.harmony4d import read_meta

    f = out / "poses3d.npz"
    gt_ids = [int(i) for i in meta.get("frame_ids", [])] or list(range(1, gt_frames + 1))
    if len(gt_ids) != gt_frames:
        gt_ids = list(range(1, gt_frames + 1))
    extra = sorted(set(frame_ids) - set(gt_ids))
    if extra:
        raise InputError(f, f"{_span(extra)} not in the ground truth of {gt_seq} (output of another sequence?)", "frame_ids")
    missing = sorted(set(gt_ids) - set(frame_ids))
    if missing:
        raise InputError(f, f"partial output: {_span(missing)} of the ground truth of {gt_seq} missing", "frame_ids")
    if list(frame_ids) != gt_ids:
        raise InputError(f, "frame ids out of the ground truth's order", "frame_ids")
    gt_names = [str(n) for n in meta.get("person_names", [])]
    auto = re.compile(r"person\d+$")  # the names the tracker gives the people it finds
    unknown = [n for n in names if not auto.match(n) and gt_names and n not in gt_names]
    if unknown:
        raise InputError(f, f"people {', '.join(unknown)} are not in the ground truth of {gt_seq} "
                            f"({', '.join(gt_names)}): output of another sequence?", "person_names")
    try:
        ran_on = Path(json.loads((out / "timing.json").read_text())["sequence"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    if not ran_on.is_dir() or ran_on.resolve() == Path(gt_seq).resolve():
        return
    other = read_meta(ran_on) or {}
    for key in ("name", "cameras"):
        if key in other and key in meta and other[key] != meta[key]:
            raise InputError(out / "timing.json", f"the run read {ran_on}, whose {key} ({other[key]}) differs from "
                                                  f"the ground truth's ({meta[key]}) in {gt_seq}", key)


def skeleton_match_summary(pred, gtp, present, names: list[str], gt_names: list[str]) -> dict[str, Any]:
    """Which output person each ground-truth person was matched to, and in how many frames."""
    from .skeleton import match_people, presence_of

    m, _ = match_people(pred.double(), gtp.double(), presence_of(pred, present), presence_of(gtp))
    out: dict[str, Any] = {}
    for g, gname in enumerate(gt_names):
        ids, counts = m[:, g][m[:, g] >= 0].unique(return_counts=True)
        out[gname] = {names[int(i)]: int(c) for i, c in zip(ids, counts)}
    return out


def mesh_report(out: Path, gt_seq: Path, gt, frame_ids: list[int], pred=None, gtp=None, present=None) -> dict[str, Any]:
    """Fitted meshes against the ground-truth body parameters (same body model): PVE and MPJPE on
    the 24 SMPL joints in the world frame (no alignment; pelvis-aligned and Procrustes beside),
    plus the collision stage's penetration figures from the fit. With the keypoints ``pred`` /
    ``gtp`` given, each ground-truth person is compared with the output person matched to them
    in that frame (person-frames without a match are left out)."""
    import numpy as np
    import torch

    from ..body import load_body_model
    from ..body.fast import FastBody
    from ..io.harmony4d import read_meta
    from ..io.smpl_layout import read_smpl_sequence
    from .metrics import mpjpe24, pve

    fit = read_smpl_sequence(out / "processed_data")
    meta = read_meta(gt_seq) or {}
    gt_body = meta.get("body_model") or "default"
    rep: dict[str, Any] = {}
    try:
        body = load_body_model(None if gt_body in ("default", "", None) else gt_body)
    except H4DError as e:
        return {"mesh": {"skipped": f"ground-truth body model unavailable: {e}"}}
    fast = FastBody(body)
    idx = torch.as_tensor([i - 1 for i in frame_ids])
    g = {k: torch.as_tensor(np.asarray(gt.smpl[k]), dtype=torch.float32) for k in ("global_orient", "body_pose", "transl", "betas")}
    F, P = len(frame_ids), g["betas"].shape[0]
    if "vertices" in fit and fit["vertices"].shape[-2] != fast.v_template.shape[0]:
        return {"mesh": {"skipped": "the fit used a body model with another mesh than the ground truth"}}
    Pf = fit["global_orient"].shape[1]
    if pred is not None and gtp is not None:
        from .skeleton import match_people, presence_of

        gp = presence_of(gtp)
        m, _ = match_people(pred.double(), gtp.double(), presence_of(pred, present), gp)
        hit = ((m >= 0) & gp).numpy()  # [F, P] person-frames compared
        pidx = m.clamp_min(0).numpy()  # [F, P] the output person of each ground-truth person
    elif Pf == P:
        hit, pidx = np.ones((F, P), dtype=bool), np.broadcast_to(np.arange(P), (F, P))
    else:
        return {"mesh": {"skipped": f"{Pf} fitted people for {P} ground-truth people and no keypoints to match them"}}
    from ..pipeline.driver import FIT_COLLISION_OFF_FILE

    off_file = out / FIT_COLLISION_OFF_FILE
    off = None
    if off_file.exists():  # the compared fit without the collision term
        with np.load(off_file) as z:
            off = {k: np.asarray(z[k]) for k in ("global_orient", "body_pose", "betas", "transl")}
        if off["global_orient"].shape[:2] != (F, Pf):
            off = None

    def take(a: np.ndarray, s: int, e: int) -> torch.Tensor:
        """Rows ``s:e`` of a fitted ``[F, Pf, ...]`` array re-indexed to the ground truth and masked: ``[n, ...]``."""
        x = np.asarray(a[s:e])[np.arange(e - s)[:, None], pidx[s:e]]  # [c, P, ...]
        return torch.as_tensor(x[hit[s:e]]).float()

    errs = {"pve": [], "mpjpe": [], "pve_root": [], "mpjpe_root": [], "mpjpe_pa": [], "pve_off": [], "mpjpe_off": []}
    with torch.no_grad():
        for s in range(0, F, 64):
            e = min(F, s + 64)
            h = torch.as_tensor(hit[s:e])
            if not bool(h.any()):
                continue
            gi = idx[s:e]
            gv, gj = fast.vertices(g["global_orient"][gi][h], g["body_pose"][gi][h],
                                   g["betas"][None].expand(e - s, P, -1)[h], g["transl"][gi][h])
            n = int(h.sum())
            if off is not None:
                ob = np.broadcast_to(off["betas"][None], (F, *off["betas"].shape)) if off["betas"].ndim == 2 else off["betas"]
                ov, oj = fast.vertices(take(off["global_orient"], s, e).reshape(n, 3), take(off["body_pose"], s, e).reshape(n, 69),
                                       take(ob, s, e).reshape(n, -1), take(off["transl"], s, e).reshape(n, 3))
                errs["pve_off"].append(pve(ov, gv))
                errs["mpjpe_off"].append(mpjpe24(oj, gj))
            if "vertices" in fit:
                pv = take(fit["vertices"], s, e).reshape(n, -1, 3)
                pj = take(fit["joints"], s, e).reshape(n, -1, 3)
            else:
                pv, pj = fast.vertices(*(take(fit[k], s, e).reshape(n, -1) for k in ("global_orient", "body_pose", "betas", "transl")))
            errs["pve"].append(pve(pv, gv))
            errs["pve_root"].append(pve(pv, gv, "root", pj[:, 0], gj[:, 0]))
            errs["mpjpe"].append(mpjpe24(pj, gj))
            errs["mpjpe_root"].append(mpjpe24(pj, gj, "root"))
            errs["mpjpe_pa"].append(mpjpe24(pj, gj, "procrustes"))
    m = {k: float(torch.cat(v).mean()) for k, v in errs.items() if v}
    if "pve" not in m:
        return {"mesh": {"skipped": "no fitted person matched a ground-truth person"}}
    rep["pve_mm"] = m["pve"]
    rep["mpjpe_smpl_mm"] = m["mpjpe"]
    rep["mesh"] = {"pve_pelvis_aligned_mm": m["pve_root"], "mpjpe_smpl_pelvis_aligned_mm": m["mpjpe_root"],
                   "pa_mpjpe_smpl_mm": m["mpjpe_pa"], "body_model": gt_body}
    if "pve_off" in m:  # the same fit without the collision term (fit.compare_collision)
        rep["mesh"]["pve_without_collision_mm"] = m["pve_off"]
        rep["mesh"]["mpjpe_smpl_without_collision_mm"] = m["mpjpe_off"]
    stats_file = out / "fit_stats.json"
    if stats_file.exists():
        st = json.loads(stats_file.read_text())
        rep["penetration_reduction"] = st.get("penetration_reduction")
        for k in ("penetration_before_cm3", "penetration_without_collision_cm3", "penetration_after_cm3",
                  "kp_error_mm", "kp_error_without_collision_mm"):
            if k in st:
                rep["mesh"][k] = st[k]
    return rep


def format_report(rep: dict[str, Any]) -> str:
    lines = [
        f"3D keypoints vs ground truth: {rep['frames']} frames, {rep['people']} people",
        f"  MPJPE            {rep['mpjpe_mm']:8.2f} mm   (PA-MPJPE {rep['pa_mpjpe_mm']:.2f} mm, median {rep['median_error_mm']:.2f}, p95 {rep['p95_error_mm']:.2f})",
        f"  recovered        {100 * rep['recovered']:8.2f} %  of ground-truth keypoints",
        f"  identity swaps   {rep['identity_swaps']:8d}     switches of the output person matched to a ground-truth person",
    ]
    if "recall" in rep:
        lines.append(f"  people           {100 * rep['recall']:8.2f} %  of ground-truth person-frames found; "
                     f"{rep['ghost_person_frames']} ghost person-frames ({100 * rep['ghost_fraction']:.2f} %); "
                     f"PCP {100 * rep['pcp']['mean']:.2f} %; {rep['output_people']} people in the output")
    if "before_refinement" in rep:
        b = rep["before_refinement"]
        lines.append(f"  (triangulation only: MPJPE {b['mpjpe_mm']:.2f} mm, recovered {100 * b['recovered']:.2f} %)")
    if "pve_mm" in rep:
        m = rep["mesh"]
        lines.append(f"  SMPL meshes      PVE {rep['pve_mm']:.2f} mm, MPJPE (24 SMPL joints) {rep['mpjpe_smpl_mm']:.2f} mm  "
                     f"(pelvis-aligned {m['mpjpe_smpl_pelvis_aligned_mm']:.2f}, PA {m['pa_mpjpe_smpl_mm']:.2f})")
        if rep.get("penetration_reduction") is not None:
            lines.append(f"  interpenetration {m.get('penetration_without_collision_cm3', float('nan')):.1f} -> {m.get('penetration_after_cm3', float('nan')):.1f} cm^3 per frame "
                         f"with the collision stage ({100 * rep['penetration_reduction']:.1f}% removed)")
            if "pve_without_collision_mm" in m:
                lines.append(f"  without it       PVE {m['pve_without_collision_mm']:.2f} mm, MPJPE (24 SMPL joints) {m['mpjpe_smpl_without_collision_mm']:.2f} mm")
        elif "penetration_after_cm3" in m:
            lines.append(f"  interpenetration {m['penetration_after_cm3']:.1f} cm^3 per frame after the collision stage")
    elif "mesh" in rep:
        lines.append(f"  SMPL meshes      {rep['mesh'].get('skipped', '')}")
    if "max_penetration_mm" in rep:
        from .interaction import format_measures

        lines.append(format_measures(rep))
    for name, pp in rep["per_person"].items():
        lines.append(f"  {name:<16} MPJPE {pp['mpjpe_mm']:7.2f} mm, PA {pp['pa_mpjpe_mm']:6.2f} mm, recovered {100 * pp['recovered']:6.2f} %")
    if "timing" in rep:
        t = rep["timing"]
        stages = ", ".join(f"{s['name']} {s['seconds']:.2f}s" + (" (cached)" if s.get("cached") else "") for s in t["stages"])
        lines.append(f"  time             {t['total_s']:.2f} s on {t['device']}: {stages}")
    return "\n".join(lines)
