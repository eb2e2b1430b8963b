"""Interaction measures of a two-person (or more) fit: penetration, contact, inter-person distances, acceleration.

Every measure is computed from the fitted meshes / joints, vectorised over frames; the ones marked
(GT) need ground truth, the others are quality measures of the fit alone. Keys as in ``h4d eval --json``:

``max_penetration_mm`` ``{"mean", "max"}``
    Per frame, the Harmony4D benchmark's maximum penetration depth
    (``benchmark/script/collision.py``): for each pair of people and direction, the vertices of
    one body inside the other, each at the distance to the nearest *vertex* of the other body;
    the frame's value is the largest over both directions and all pairs (0 without
    penetration). Per sequence: the mean and the max over frames.
``mean_penetration_mm``
    Per frame the same depths averaged over the inside vertices of each direction (the
    benchmark's ``mode="mean"``), the larger direction / pair; averaged over frames (frames
    without penetration count 0).
``frames_penetrating``
    Share of frames whose maximum penetration exceeds ``contact.penetration_mm`` (10 mm).
``inter_mm`` (GT)
    Error of the inter-person joint distances: over frames, pairs of people ``(a, b)`` and joint
    pairs ``(i of a, j of b)``, ``mean | |a_i - b_j| - |a_i* - b_j*| |`` (``*`` = ground truth),
    on the 24 SMPL joints when both sides have meshes, else on the COCO-17 3D keypoints valid in both.
``contact_f1``, ``contact_precision``, ``contact_recall`` (GT)
    Vertex contact (:mod:`h4d_fast.ops.contact`, ``contact.contact_mm``) against the ground
    truth's, over every (frame, pair, side, vertex) decision. ``contact_region_f1`` (and its
    precision / recall): the same over (frame, pair, side, body part) with the segmentation of
    :mod:`h4d_fast.body.parts` (a part touches when any of its vertices does).
``accel_mm_s2`` ``{"error" (GT), "jitter", "gt_jitter" (GT)}``
    Second differences of the joints over consecutive frames times ``fps^2`` (mm/s^2): ``error``
    = mean norm of predicted minus ground-truth acceleration, ``jitter`` = mean norm of the
    predicted acceleration (of the ground truth's for ``gt_jitter``).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch
from torch import Tensor

from ..ops.contact import DEFAULT_CONTACT_MM, PairContact, depth_arrays, pair_contact, person_pairs
from .metrics import contact_scores

DEFAULT_PENETRATION_MM = 10.0


def penetration_from_depths(dmax: Tensor, dmean: Tensor, penetration_mm: float = DEFAULT_PENETRATION_MM) -> dict[str, Any]:
    """``max_penetration_mm``, ``mean_penetration_mm``, ``frames_penetrating`` (module docstring)
    from :func:`depth_arrays`' ``[F, Q, 2]`` maxima and means (metres)."""
    F = dmax.shape[0]
    if F == 0 or dmax.numel() == 0:
        return {"max_penetration_mm": {"mean": 0.0, "max": 0.0}, "mean_penetration_mm": 0.0, "frames_penetrating": 0.0}
    fmax = dmax.double().flatten(1).amax(1) * 1000.0  # [F] mm
    fmean = dmean.double().flatten(1).amax(1) * 1000.0
    return {
        "max_penetration_mm": {"mean": float(fmax.mean()), "max": float(fmax.max())},
        "mean_penetration_mm": float(fmean.mean()),
        "frames_penetrating": float((fmax > penetration_mm).double().mean()),
    }


def penetration_measures(contacts: Sequence[PairContact], penetration_mm: float = DEFAULT_PENETRATION_MM) -> dict[str, Any]:
    """``max_penetration_mm``, ``mean_penetration_mm``, ``frames_penetrating`` (module docstring)
    from the :class:`PairContact` of every pair (same frames)."""
    if not contacts:
        return {}
    return penetration_from_depths(*depth_arrays(contacts), penetration_mm)


def inter_person_error(pred: Tensor, gt: Tensor, valid: Tensor | None = None) -> float:
    """``inter_mm``: error of the inter-person joint distances (module docstring).

    Args:
        pred, gt: ``[F, P, J, 3]`` metres; valid ``[F, P, J]`` bool (default all).
    Returns:
        mm (NaN when no pair of valid joints exists).
    """
    if pred.shape != gt.shape:
        raise ValueError(f"inter_person_error: prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ")
    P = pred.shape[1]
    if valid is None:
        valid = torch.ones(pred.shape[:3], dtype=torch.bool, device=pred.device)
    tot = pred.new_zeros((), dtype=torch.float64)
    cnt = 0
    for a, b in person_pairs(P):
        dp = torch.cdist(pred[:, a].double(), pred[:, b].double())  # [F, J, J]
        dg = torch.cdist(gt[:, a].double(), gt[:, b].double())
        m = valid[:, a, :, None] & valid[:, b, None, :]
        tot = tot + ((dp - dg).abs() * m).sum()
        cnt += int(m.sum())
    return float(tot / cnt * 1000.0) if cnt else float("nan")


def _consecutive(frame_ids: Sequence[int] | None, F: int, device: torch.device) -> Tensor:
    """``[F - 2]`` bool: frames ``t - 1, t, t + 1`` are consecutive frame numbers."""
    if F < 3:
        return torch.zeros(0, dtype=torch.bool, device=device)
    if frame_ids is None:
        return torch.ones(F - 2, dtype=torch.bool, device=device)
    f = torch.as_tensor(list(frame_ids), device=device)
    return (f[1:-1] - f[:-2] == 1) & (f[2:] - f[1:-1] == 1)


def acceleration(x: Tensor, fps: float) -> Tensor:
    """Second differences ``[F - 2, ...]`` of ``x [F, ...]`` times ``fps^2`` (frame t = 1..F-2)."""
    return (x[2:] - 2 * x[1:-1] + x[:-2]) * (fps * fps)


def accel_measures(pred: Tensor, fps: float, gt: Tensor | None = None, valid: Tensor | None = None,
                   frame_ids: Sequence[int] | None = None) -> dict[str, float | None]:
    """``accel_mm_s2``: ``{"error", "jitter", "gt_jitter"}`` (module docstring).

    Args:
        pred: ``[F, P, J, 3]`` metres; gt the same or None; valid ``[F, P, J]`` bool.
        fps: frames per second; frame_ids: frame numbers (gaps break the differences).
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    F = pred.shape[0]
    ok = _consecutive(frame_ids, F, pred.device)  # [F - 2]
    if valid is None:
        valid = torch.ones(pred.shape[:3], dtype=torch.bool, device=pred.device)
    m = (valid[2:] & valid[1:-1] & valid[:-2]) & ok.view(-1, *([1] * (valid.dim() - 1)))  # [F - 2, P, J]
    n = int(m.sum())
    out: dict[str, float | None] = {"error": None, "jitter": None, "gt_jitter": None}
    if n == 0:
        return out
    ap = acceleration(pred.double(), fps)
    out["jitter"] = float((ap.norm(dim=-1) * m).sum() / n * 1000.0)
    if gt is not None:
        ag = acceleration(gt.double(), fps)
        out["error"] = float(((ap - ag).norm(dim=-1) * m).sum() / n * 1000.0)
        out["gt_jitter"] = float((ag.norm(dim=-1) * m).sum() / n * 1000.0)
    return out


def pair_contacts(verts: Tensor, faces: Tensor, contact_mm: float = DEFAULT_CONTACT_MM) -> list[PairContact]:
    """:func:`~h4d_fast.ops.contact.pair_contact` for every pair of ``verts [F, P, N, 3]``."""
    return [pair_contact(verts[:, a], verts[:, b], faces, contact_mm=contact_mm) for a, b in person_pairs(verts.shape[1])]


def stack_contact(contacts: Sequence[PairContact]) -> Tensor:
    """``[F, Q, 2, N]`` bool labels of :func:`pair_contacts`' result."""
    return torch.stack([pc.contact for pc in contacts], 1)


def interaction_measures(
    verts: Tensor,
    faces: Tensor,
    joints: Tensor | None = None,
    fps: float = 30.0,
    frame_ids: Sequence[int] | None = None,
    gt_verts: Tensor | None = None,
    gt_joints: Tensor | None = None,
    gt_contact: Tensor | None = None,
    keypoints: Tensor | None = None,
    gt_keypoints: Tensor | None = None,
    contact_mm: float = DEFAULT_CONTACT_MM,
    penetration_mm: float = DEFAULT_PENETRATION_MM,
    parts: Any = None,
    contact: Tensor | None = None,
    depths: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Any]:
    """All interaction measures of one sequence (module docstring).

    Args:
        verts: ``[F, P, N, 3]`` fitted meshes (metres); faces ``[T, 3]``.
        joints: ``[F, P, J >= 24, 3]`` fitted joints (SMPL tree first), for ``inter_mm`` / ``accel``.
        fps, frame_ids: time base of the acceleration.
        gt_verts, gt_joints: the ground truth's (same body model); gt_contact ``[F, Q, 2, N]``
            bool precomputed ground-truth labels (else computed from ``gt_verts``).
        keypoints, gt_keypoints: ``[F, P, 17, 4]`` (x, y, z, valid) 3D keypoints, used for
            ``inter_mm`` / ``accel`` when there are no joints on both sides.
        contact_mm, penetration_mm: thresholds (config section ``contact``).
        parts: a :class:`~h4d_fast.body.parts.BodyParts` segmentation: adds the body-part-level
            ``contact_region_f1`` (a part touches when any of its vertices does).
        contact, depths: the fit's own labels ``[F, Q, 2, N]`` and :func:`depth_arrays` at
            ``contact_mm``, computed before (the export's ``contact.npz``): given both, the meshes
            are not queried again.
    Returns:
        the JSON-ready dict, plus ``interaction_seconds`` (wall time of this call).
    """
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    P = verts.shape[1]
    if P >= 2 and contact is not None and depths is not None:
        pred_c = contact
        out.update(penetration_from_depths(*depths, penetration_mm))
    elif P >= 2:
        contacts = pair_contacts(verts, faces, contact_mm)
        pred_c = stack_contact(contacts)
        out.update(penetration_measures(contacts, penetration_mm))
    if P >= 2 and (gt_contact is not None or gt_verts is not None):
        if gt_contact is None:
            gt_pcs = pair_contacts(gt_verts, faces, contact_mm)
            gt_contact = stack_contact(gt_pcs)
            gt_pen = penetration_measures(gt_pcs, penetration_mm)
            out["ground_truth"] = {k: gt_pen[k] for k in ("max_penetration_mm", "mean_penetration_mm", "frames_penetrating")}
        s = contact_scores(pred_c, gt_contact.to(pred_c.device))
        out["contact_f1"], out["contact_precision"], out["contact_recall"] = s["f1"], s["precision"], s["recall"]
        out["contact_counts"] = {k: s[k] for k in ("tp", "fp", "fn")}
        if parts is not None:
            r = contact_scores(parts.regions(pred_c), parts.regions(gt_contact.to(pred_c.device)))
            out["contact_region_f1"], out["contact_region_precision"], out["contact_region_recall"] = r["f1"], r["precision"], r["recall"]
    # joints of the distance and acceleration measures: SMPL joints when the ground truth has them
    # too (or there is no ground truth), else the 3D keypoints
    jp = jg = vp = None
    source = None
    if joints is not None and (gt_joints is not None or gt_keypoints is None):
        jp = joints[..., :24, :]
        vp = torch.ones(jp.shape[:3], dtype=torch.bool, device=jp.device)
        jg = None if gt_joints is None else gt_joints[..., :24, :].to(jp.device, jp.dtype)
        source = "smpl24"
    elif keypoints is not None:
        jp, vp = keypoints[..., :3], keypoints[..., 3] > 0.5
        source = "coco17"
        if gt_keypoints is not None:
            jg = gt_keypoints[..., :3].to(jp.device, jp.dtype)
            vp = vp & (gt_keypoints[..., 3] > 0.5).to(vp.device)
    if jp is not None:
        if jg is not None and P >= 2:
            out["inter_mm"] = inter_person_error(jp, jg, vp)
        out["accel_mm_s2"] = accel_measures(jp, fps, jg, vp, frame_ids)
        out["interaction_joints"] = source
    out["contact_mm"] = float(contact_mm)
    out["interaction_seconds"] = time.perf_counter() - t0
    return out



def _resolve_device(device: str | None) -> torch.device:
    from ..pipeline.driver import resolve_device  # its home

    return resolve_device("auto" if device in (None, "") else device)


def interaction_report(
    out: Any,
    gt_seq: Any = None,
    contact_mm: float | None = None,
    penetration_mm: float | None = None,
    fps: float | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """The interaction measures of a run folder (``h4d eval``), against ``gt_seq``'s ground truth
    when given, else the quality measures alone. Empty dict when the run has no SMPL fit.

    Thresholds default to the run's ``OUT/config.toml`` (section ``contact``), fps to the ground
    truth's ``meta.json`` (``fps`` or ``args.fps``), else 30. Ground-truth contact labels come from
    ``SEQ/ground_truth/contact.npz`` when it covers the run's frames at the same threshold, else
    from the ground-truth meshes (which also adds ``ground_truth`` penetration figures). The run's
    own labels and penetration depths come from its ``processed_data/contact.npz`` (the export
    computed them) when it matches the fit and the threshold (``run_contact: "file"``), else from
    its meshes (``"meshes"``).
    """
    from pathlib import Path

    import numpy as np

    from ..body import load_body_model
    from ..body.fast import recompute_meshes, with_meshes
    from ..body.parts import body_parts
    from ..config import Config, load_config
    from ..io.contact import CONTACT_FILE, read_contact
    from ..io.harmony4d import read_ground_truth, read_meta
    from ..io.smpl_layout import read_smpl_sequence

    out = Path(out)
    processed = out / "processed_data"
    if not ((processed / "sequence.npz").is_file() or (processed / "smpl").is_dir()):
        return {}
    cfg_file = out / "config.toml"
    cfg = load_config(cfg_file) if cfg_file.is_file() else Config()
    cmm = float(cfg.contact.contact_mm if contact_mm is None else contact_mm)
    pmm = float(cfg.contact.penetration_mm if penetration_mm is None else penetration_mm)
    dev = _resolve_device(device)
    body_spec = cfg.fit.body_model
    body = load_body_model(None if body_spec in ("default", "", None) else body_spec, gender=cfg.fit.gender)
    fit = with_meshes(read_smpl_sequence(processed), body)
    frame_ids = [int(f) for f in np.asarray(fit["frame_ids"]).reshape(-1)]
    faces = body.faces.to(dev)
    verts = torch.as_tensor(np.asarray(fit["vertices"]), device=dev)
    joints = torch.as_tensor(np.asarray(fit["joints"]), device=dev)
    kp = gkp = gv = gj = gcon = None
    p3 = out / "poses3d.npz"
    if p3.is_file():
        with np.load(p3, allow_pickle=False) as z:
            if "poses3d" in z.files and z["poses3d"].shape[0] == len(frame_ids):
                kp = torch.as_tensor(z["poses3d"], device=dev)
    meta: dict[str, Any] = {}
    if gt_seq is not None:
        gt = read_ground_truth(Path(gt_seq))
        meta = read_meta(Path(gt_seq)) or {}
        if gt is not None:
            idx = [f - 1 for f in frame_ids]
            if max(idx) < gt.poses3d.shape[0]:
                gkp = gt.poses3d[idx].to(dev)
                if kp is not None and gkp.shape != kp.shape:
                    gkp = None
            sm = gt.smpl
            if sm is not None and all(k in sm for k in ("global_orient", "body_pose", "betas", "transl")) and max(idx) < sm["transl"].shape[0]:
                gt_body_spec = meta.get("body_model") or "default"
                gbody = body if gt_body_spec == body_spec else load_body_model(None if gt_body_spec in ("default", "", None) else gt_body_spec)
                if gbody.num_vertices == body.num_vertices:
                    params = {k: np.asarray(sm[k])[idx] if k != "betas" else np.asarray(sm[k]) for k in ("global_orient", "body_pose", "betas", "transl")}
                    v_np, j_np = recompute_meshes(gbody, params, device=str(dev))
                    gv, gj = torch.as_tensor(v_np, device=dev), torch.as_tensor(j_np, device=dev)
            cf = Path(gt_seq) / "ground_truth" / CONTACT_FILE
            if cf.is_file() and gv is not None:
                lab = read_contact(cf)
                pos = {f: i for i, f in enumerate(lab.frame_ids)}
                if abs(lab.contact_mm - cmm) < 1e-9 and all(f in pos for f in frame_ids) and lab.contact.shape[-1] == verts.shape[2]:
                    gcon = lab.contact[[pos[f] for f in frame_ids]].to(dev)
    if fps is None:
        fps = float(meta.get("fps") or (meta.get("args") or {}).get("fps") or 30.0)
    own, depths = _run_contact(processed / CONTACT_FILE, frame_ids, cmm, verts.shape[1], verts.shape[2], dev)
    rep = interaction_measures(verts, faces, joints, fps=fps, frame_ids=frame_ids, gt_verts=gv, gt_joints=gj, gt_contact=gcon,
                               keypoints=kp, gt_keypoints=gkp, contact_mm=cmm, penetration_mm=pmm, parts=body_parts(body),
                               contact=own, depths=depths)
    rep["fps"] = fps
    rep["run_contact"] = "file" if own is not None else "meshes"
    rep["ground_truth_contact"] = "file" if gcon is not None else ("meshes" if gv is not None else None)
    return rep

def _run_contact(path: Any, frame_ids: Sequence[int], contact_mm: float, num_people: int, num_vertices: int,
                 device: torch.device) -> tuple[Tensor | None, tuple[Tensor, Tensor] | None]:
    """The run's own contact labels and penetration depths from its ``contact.npz`` (the export
    computed them), when they cover the fit's frames, pairs and vertices at ``contact_mm``; else
    ``(None, None)`` (the meshes are queried again)."""
    from ..io.contact import read_contact

    if not path.is_file():
        return None, None
    lab = read_contact(path)
    ok = (abs(lab.contact_mm - contact_mm) < 1e-9 and list(lab.frame_ids) == list(frame_ids) and lab.pairs == person_pairs(num_people)
          and lab.contact.shape[-1] == num_vertices and lab.depth_max is not None and lab.depth_mean is not None)
    if not ok:
        return None, None
    return lab.contact.to(device), (lab.depth_max.to(device), lab.depth_mean.to(device))


def format_measures(rep: dict[str, Any]) -> str:
    """The interaction measures of a report (:mod:`h4d_fast.eval.interaction`) as text lines."""
    if "max_penetration_mm" not in rep:
        return "  interaction      (no SMPL fit of two or more people)"
    mp = rep["max_penetration_mm"]
    lines = [f"  penetration      max depth {mp['mean']:.1f} mm per frame (worst {mp['max']:.1f}), mean depth {rep['mean_penetration_mm']:.1f} mm, "
             f"{100 * rep['frames_penetrating']:.1f}% of frames deeper than the threshold"]
    if "contact_f1" in rep:
        lines.append(f"  contact          F1 {rep['contact_f1']:.3f} (precision {rep['contact_precision']:.3f}, recall {rep['contact_recall']:.3f}) "
                     f"at {rep['contact_mm']:g} mm" + (f"; body parts F1 {rep['contact_region_f1']:.3f}" if "contact_region_f1" in rep else ""))
    acc = rep.get("accel_mm_s2") or {}
    parts = []
    if "inter_mm" in rep:
        parts.append(f"inter-person distances {rep['inter_mm']:.2f} mm")
    if acc.get("error") is not None:
        parts.append(f"acceleration error {acc['error']:.0f} mm/s^2")
    if acc.get("jitter") is not None:
        parts.append(f"jitter {acc['jitter']:.0f} mm/s^2")
    if parts:
        lines.append("  interaction      " + ", ".join(parts) + f" ({rep.get('interaction_joints')}, {rep['interaction_seconds']:.1f} s)")
    return "\n".join(lines)


__all__ = [
    "accel_measures",
    "format_measures",
    "acceleration",
    "inter_person_error",
    "interaction_measures",
    "interaction_report",
    "depth_arrays",
    "pair_contacts",
    "penetration_from_depths",
    "penetration_measures",
    "stack_contact",
]
