"""``h4d eval hmr``: a monocular method's per-camera predictions against the annotations, with the
Harmony4D benchmark protocol (reference-pipeline.md section 6).

**Ground truth** (:func:`read_sequence_smpl`): the sequence's SMPL annotations, first found of
``SEQ/processed_data/smpl_collision/%05d.npy`` (preferred by the benchmark when present),
``SEQ/processed_data/sequence.npz`` / ``SEQ/processed_data/smpl/%05d.npy`` (the export layout,
:mod:`h4d_fast.io.smpl_layout`, or Harmony4D's released files) and
``SEQ/ground_truth/smpl.npz`` (synthetic captures), or the path given as ``--gt-smpl``. Its
24 joints and vertices (stored ones, else recomputed with the body model) are moved into every
exo camera's metric frame with the sequence's calibration (``SEQ/colmap/workplace`` + scale).

**Predictions** (:func:`read_predictions`), camera-frame metres, one of:

* ``PRED/<cam>/%05d.npy`` (frame ids as the sequence's): a list of people, or a dict
  ``name -> person``, each person a dict with either SMPL parameters
  ``global_orient`` (3 axis-angle, or a 3x3 / 1x3x3 rotation matrix), ``body_pose`` (69, or
  23x3x3), ``betas`` (K) and ``transl`` (3; aliases ``cam_t``, ``pred_cam_t_full``; HMR2.0's
  nested ``pred_smpl_params`` / ``smpl_params`` dicts are read too), or ``joints`` (J >= 24, 3,
  the first 24 in SMPL order) and optionally ``vertices`` (N, 3). Optional ``keypoints_2d``
  ((44, 2|3) in HMR2.0's order, or (24, 2|3) in SMPL order, full-image pixels) is used for the
  matching; without it the 24 joints are projected through the camera's calibration.
* ``PRED.npz`` (or ``PRED/predictions.npz``): one row per predicted person, ``camera [M]`` (names),
  ``frame [M]`` (frame ids) and the same fields batched (``global_orient [M, 3]`` or
  ``[M, 3, 3]`` / ``[M, 1, 3, 3]``, ``body_pose [M, 69]`` or ``[M, 23, 3, 3]``, ``betas [M, K]``,
  ``transl [M, 3]``, or ``joints [M, J, 3]`` (+ ``vertices [M, N, 3]``), ``keypoints_2d``).

With a root of sequences (``--gt ROOT``, every folder under it with ``colmap/workplace``),
``--pred`` is a root with the same relative paths (``PRED/<rel>/<cam>/...`` or ``PRED/<rel>.npz``).

**Protocol**, per sequence and exo camera, per frame:

* GT people in view (pelvis in front of the camera and the projected joint box meeting the image;
  ``include_all_gt`` counts every person) are matched to the predictions greedily
  (``match_2d_greedy``): pairs in increasing order of the mean 2D distance between the 24 joints
  (over the ground-truth joints in front of the camera); a pair is accepted when neither side is
  taken and the IoU of the two keypoint boxes is >= 0.6; a prediction whose best remaining pair
  fails the IoU test is excluded (a false positive), as in the reference.
* Unmatched GT people are misses, unmatched predictions false positives;
  ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``, ``F1 = 2PR / (P + R)``.
* On matched pairs (camera frame, mm): **MPJPE** over the 24 SMPL joints after subtracting the
  pelvis (joint 0) of each; **PA-MPJPE** after a similarity Procrustes (scale + rotation +
  translation); **PVE** mean vertex distance after subtracting each mesh's pelvis joint
  (``pve_align="pelvis"``, default), or vertex 0 (``"vertex0"``: the reference's quirk), or
  nothing (``"none"``); **PA-PVE**; **PCK@150** on the 12 major joints
  ``[1, 2, 4, 5, 7, 8, 16..21]`` of the pelvis-aligned joints (error < 150 mm); **AUC** = mean
  PCK over thresholds 0, 1, ..., 199 mm (a perfect prediction scores 0.995: PCK(0) = 0);
  ``NMJE = MPJPE / F1``, ``NMVE = PVE / F1``; ``mpjpe_abs_mm`` (no alignment) beside them.

Sums are pooled over matched person-frames: per camera, per sequence, per activity (the
sequence's parent folder name, e.g. ``01_hugging`` of ``01_hugging/001``) and overall.
Everything is batched in torch on ``device`` (GPU when available).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from ..camera import CameraSet, distort
from ..constants import NUM_SMPL_JOINTS
from ..errors import InputError
from ..ops.boxes import box_iou  # noqa: F401 (re-exported; its home)
from .hmr_io import (  # re-exported
    Predictions,  # noqa: F401
    SequenceSMPL,  # noqa: F401
    _pred_location,  # noqa: F401
    read_predictions,  # noqa: F401
    read_sequence_smpl,  # noqa: F401
)
from .metrics import mpjpe24, procrustes_align, pve

MAJOR_JOINTS: tuple[int, ...] = (1, 2, 4, 5, 7, 8, 16, 17, 18, 19, 20, 21)
PCK_THRESHOLD_MM = 150.0
AUC_THRESHOLDS_MM = tuple(float(t) for t in range(200))
IOU_THRESHOLD = 0.6
PVE_ALIGNS = ("pelvis", "vertex0", "none")

_BODY_CACHE: dict[tuple[str, str, str], Any] = {}


# ============================================================================ body model
def load_fast_body(spec: str | None = None, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """A :class:`~h4d_fast.body.fast.FastBody` of the body model ``spec`` (None / ``default``: the
    embedded one), cached per process. ``dtype`` defaults to float64 on CPU, float32 on GPU."""
    from ..body import load_body_model
    from ..body.fast import FastBody

    device = torch.device(device)
    dtype = dtype or (torch.float64 if device.type == "cpu" else torch.float32)
    key = (str(spec or "default"), str(device), str(dtype))
    if key not in _BODY_CACHE:
        body = load_body_model(None if spec in (None, "", "default") else spec, device=device, dtype=dtype)
        from ..body.model import VERTEX_ID_NAMES

        _BODY_CACHE[key] = FastBody(body, vertex_joints=VERTEX_ID_NAMES)
    return _BODY_CACHE[key]


def resolve_device(name: str = "auto") -> torch.device:
    """:func:`h4d_fast.pipeline.driver.resolve_device` (its home): ``auto`` is CUDA when present;
    CUDA asked for but absent is an InputError."""
    from ..pipeline.driver import resolve_device as _resolve

    return _resolve(name)


# ============================================================================ SMPL in a camera frame
def smpl_to_camera(global_orient: Tensor, transl: Tensor, R: Tensor, t: Tensor, rest_pelvis: Tensor) -> tuple[Tensor, Tensor]:
    """Express world SMPL parameters in a camera frame ``X_c = R X + t``.

    SMPL rotates the body about its rest pelvis ``j0`` (a function of the shape):
    ``X = R_g (x - j0) + j0 + transl``. So ``R_g' = R R_g`` and ``transl' = R (j0 + transl) + t - j0``.

    Args:
        global_orient: ``[..., 3]`` axis-angle; transl ``[..., 3]``; R ``[..., 3, 3]``; t ``[..., 3]``;
        rest_pelvis: ``[..., 3]`` (``FastBody.rest_joints(betas)[:, 0]``).
    Returns:
        ``(global_orient [..., 3], transl [..., 3])`` in the camera frame.
    """
    from ..body.fast import axis_angle_to_matrix, matrix_to_axis_angle

    Rg = axis_angle_to_matrix(global_orient)
    go = matrix_to_axis_angle(R @ Rg)
    tr = (R @ (rest_pelvis + transl)[..., None])[..., 0] + t - rest_pelvis
    return go, tr


# ============================================================================ matching
def keypoint_boxes(kp: Tensor, ok: Tensor) -> Tensor:
    """``kp [..., J, 2]``, ``ok [..., J]`` -> ``[..., 4]`` min/max box of the usable points (zeros when none)."""
    inf = torch.tensor(float("inf"), dtype=kp.dtype, device=kp.device)
    lo = torch.where(ok[..., None], kp, inf).amin(-2)
    hi = torch.where(ok[..., None], kp, -inf).amax(-2)
    box = torch.cat([lo, hi], -1)
    return torch.where(ok.any(-1)[..., None], box, torch.zeros_like(box))


def match_2d_greedy(cost: np.ndarray, iou: np.ndarray, gt_ok: np.ndarray, iou_thr: float = IOU_THRESHOLD) -> tuple[list[tuple[int, int]], int]:
    """Greedy matching of one image (the benchmark's ``match_2d_greedy``).

    Args:
        cost: ``[D, P]`` 2D distance of prediction ``d`` to GT person ``p``; iou ``[D, P]``;
        gt_ok: ``[P]`` GT people to match (others are ignored).
    Returns:
        ``(pairs [(d, p), ...], excluded)``: accepted pairs, and the number of predictions
        excluded because their best remaining pair failed the IoU test.
    """
    D, P = cost.shape
    pred_done = np.zeros(D, bool)
    gt_done = ~np.asarray(gt_ok, bool).copy()
    excluded = 0
    c = np.where(gt_done[None, :], np.inf, np.where(np.isfinite(cost), cost, np.inf))
    pairs: list[tuple[int, int]] = []
    order = np.argsort(c, axis=None, kind="stable")
    for flat in order:
        d, p = divmod(int(flat), P)
        if not np.isfinite(c[d, p]):
            break
        if gt_done.all() or pred_done.all():
            break
        if pred_done[d] or gt_done[p]:
            continue
        if iou[d, p] >= iou_thr:
            pairs.append((d, p))
            pred_done[d] = gt_done[p] = True
        else:
            pred_done[d] = True
            excluded += 1
    return pairs, excluded


# ============================================================================ evaluation
@dataclass
class _Acc:
    """Sums over matched person-frames (and counts) of one group."""

    n: int = 0
    gt: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    mpjpe: float = 0.0
    pa_mpjpe: float = 0.0
    mpjpe_abs: float = 0.0
    pve_n: int = 0
    pve: float = 0.0
    pa_pve: float = 0.0
    pck_hits: float = 0.0
    auc_hits: float = 0.0
    pck_n: int = 0

    def add(self, o: "_Acc") -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(o, k))

    def summary(self) -> dict[str, Any]:
        nan = float("nan")
        prec = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        rec = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
        mp = self.mpjpe / self.n if self.n else nan
        pv = self.pve / self.pve_n if self.pve_n else nan
        return {
            "gt_instances": self.gt, "matched": self.tp, "misses": self.fn, "false_positives": self.fp,
            "precision": prec, "recall": rec, "f1": f1,
            "mpjpe_mm": mp, "pa_mpjpe_mm": self.pa_mpjpe / self.n if self.n else nan,
            "pve_mm": pv, "pa_pve_mm": self.pa_pve / self.pve_n if self.pve_n else nan,
            "pck150": self.pck_hits / self.pck_n if self.pck_n else nan,
            "auc": self.auc_hits / (self.pck_n * len(AUC_THRESHOLDS_MM)) if self.pck_n else nan,
            "nmje_mm": mp / f1 if f1 > 0 else nan, "nmve_mm": pv / f1 if f1 > 0 else nan,
            "mpjpe_abs_mm": self.mpjpe_abs / self.n if self.n else nan,
        }


def _project_rows(cams: CameraSet, Xc: Tensor, vidx: Tensor) -> Tensor:
    """Camera-frame points ``Xc [M, J, 3]`` of rows seen by cameras ``vidx [M]`` -> pixels ``[M, J, 2]``."""
    z = Xc[..., 2]
    zs = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    xn = (Xc[..., :2] / zs[..., None]).transpose(0, 1)  # [J, M, 2]: rows on the camera axis
    xd = distort(xn, cams.dist[vidx].to(Xc.dtype), cams.model_id[vidx])
    f = cams.intrinsics[vidx, :2].to(Xc.dtype)
    c = cams.intrinsics[vidx, 2:].to(Xc.dtype)
    return (xd * f + c).transpose(0, 1)


def _per_sample_errors(pj: Tensor, gj: Tensor, pv: Tensor | None, gv: Tensor | None, pve_align: str) -> dict[str, Tensor]:
    """Errors (mm) of matched pairs: joints ``[K, 24, 3]``, vertices ``[K, N, 3]`` or None."""
    out = {
        "mpjpe": mpjpe24(pj, gj, "root"),
        "pa_mpjpe": mpjpe24(pj, gj, "procrustes"),
        "mpjpe_abs": mpjpe24(pj, gj, "none"),
    }
    pr, gr = pj - pj[:, :1], gj - gj[:, :1]
    out["major"] = (pr[:, list(MAJOR_JOINTS)] - gr[:, list(MAJOR_JOINTS)]).norm(dim=-1) * 1000.0  # [K, 12]
    if pv is not None and gv is not None:
        # only rows with a predicted mesh (NaN rows: joints-only predictions)
        have = torch.isfinite(pv).all(-1).all(-1)
        nan = torch.full((pv.shape[0],), float("nan"), dtype=pv.dtype, device=pv.device)
        out["pve"], out["pa_pve"] = nan.clone(), nan.clone()
        if bool(have.any()):
            a, b, ja, jb = pv[have], gv[have], pj[have], gj[have]
            if pve_align == "pelvis":
                e = pve(a, b, "root", ja[:, 0], jb[:, 0])
            elif pve_align == "vertex0":
                e = pve(a, b, "root", a[:, 0], b[:, 0])
            else:
                e = pve(a, b, "none")
            mask = torch.ones(a.shape[:-1], dtype=torch.bool, device=a.device)
            out["pve"][have] = e
            out["pa_pve"][have] = (procrustes_align(a, b, mask) - b).norm(dim=-1).mean(-1) * 1000.0
    return out


def _acc_from(err: dict[str, Tensor], sel: Tensor) -> _Acc:
    a = _Acc()
    n = int(sel.sum())
    if n == 0:
        return a
    a.n = n
    a.mpjpe = float(err["mpjpe"][sel].sum())
    a.pa_mpjpe = float(err["pa_mpjpe"][sel].sum())
    a.mpjpe_abs = float(err["mpjpe_abs"][sel].sum())
    maj = err["major"][sel]
    a.pck_n = int(maj.numel())
    a.pck_hits = float((maj < PCK_THRESHOLD_MM).sum())
    th = torch.tensor(AUC_THRESHOLDS_MM, dtype=maj.dtype, device=maj.device)
    a.auc_hits = float((maj.reshape(-1, 1) < th).sum())
    if "pve" in err:
        ok = sel & torch.isfinite(err["pve"])
        a.pve_n = int(ok.sum())
        a.pve = float(err["pve"][ok].sum())
        a.pa_pve = float(err["pa_pve"][ok].sum())
    return a


def evaluate_sequence(
    seq: Path,
    pred: Path,
    smpl: Path | None = None,
    body_model: str | None = None,
    device: str = "auto",
    pve_align: str = "pelvis",
    iou_threshold: float = IOU_THRESHOLD,
    include_all_gt: bool = False,
    chunk_frames: int = 32,
    name: str | None = None,
    activity: str | None = None,
) -> dict[str, Any]:
    """Evaluate one sequence's predictions (module docstring). Returns a JSON-ready dict with the
    overall figures, ``per_camera`` and the pooled sums (``_acc``, for aggregation)."""
    from ..io.colmap import read_colmap
    from ..io.harmony4d import SequenceLayout

    if pve_align not in PVE_ALIGNS:
        raise ValueError(f"pve_align must be one of {PVE_ALIGNS}, got {pve_align!r}")
    seq = Path(seq)
    dev = resolve_device(device)
    gt = read_sequence_smpl(seq, smpl)
    cams_all = read_colmap(SequenceLayout(seq).colmap, "auto")
    fast = load_fast_body(body_model or gt.body_model, dev)
    dt = fast.dtype
    cams = cams_all.to(device=dev, dtype=dt)
    V, F, P = len(cams), len(gt.frame_ids), len(gt.person_names)
    preds = read_predictions(pred, cams.names, gt.frame_ids)
    fidx = {f: i for i, f in enumerate(gt.frame_ids)}
    row_f = np.asarray([fidx[int(f)] for f in preds.frame], np.int64)
    order = np.argsort(row_f, kind="stable")
    row_f_sorted = row_f[order]
    size = cams.size.to(dev).to(dt)
    N = int(fast.v_template.shape[0])
    gt_verts_stored = gt.vertices is not None and gt.vertices.shape[-2] == N
    pve_note = None
    if preds.vertices is not None and preds.vertices.shape[1] != N and preds.has_vertices.any():
        pve_note = f"predicted vertices have {preds.vertices.shape[1]} points, the ground-truth mesh {N}: PVE over the predictions with SMPL parameters only"
    if gt.vertices is not None and not gt_verts_stored:
        pve_note = f"stored ground-truth meshes have {gt.vertices.shape[-2]} vertices, the body model {N}: recomputed from the parameters"
    per_cam = [_Acc() for _ in range(V)]

    def T(x: np.ndarray) -> Tensor:
        return torch.as_tensor(x, dtype=dt, device=dev)

    with torch.no_grad():
        for f0 in range(0, F, chunk_frames):
            f1 = min(F, f0 + chunk_frames)
            c = f1 - f0
            # ---- ground truth of the chunk, world frame
            gvalid = torch.as_tensor(gt.valid[f0:f1], device=dev)
            n = c * P
            if gt_verts_stored and gt.joints is not None:
                gw_v = T(gt.vertices[f0:f1]).reshape(n, N, 3)
                gw_j = T(gt.joints[f0:f1, :, :NUM_SMPL_JOINTS]).reshape(n, NUM_SMPL_JOINTS, 3)
            else:
                gw_v, gj45 = fast.vertices(T(gt.global_orient[f0:f1]).reshape(n, 3), T(gt.body_pose[f0:f1]).reshape(n, 69),
                                           T(gt.betas[f0:f1]).reshape(n, -1), T(gt.transl[f0:f1]).reshape(n, 3))
                gw_j = gj45[:, :NUM_SMPL_JOINTS]
            gw_j = gw_j.reshape(c, P, NUM_SMPL_JOINTS, 3)
            gw_v = gw_v.reshape(c, P, N, 3)
            g2d, gdepth = cams.project(gw_j)  # [c, P, 24, V, 2], [c, P, 24, V]
            g2d = g2d.permute(0, 3, 1, 2, 4)  # [c, V, P, 24, 2]
            gfront = (gdepth > 0).permute(0, 3, 1, 2)  # [c, V, P, 24]
            gbox = keypoint_boxes(g2d, gfront)  # [c, V, P, 4]
            in_img = (gbox[..., 2] > 0) & (gbox[..., 3] > 0) & (gbox[..., 0] < size[:, 0][None, :, None]) & (gbox[..., 1] < size[:, 1][None, :, None])
            g_ok = gvalid[:, None, :] & (torch.ones_like(in_img) if include_all_gt else (in_img & gfront[..., 0]))  # [c, V, P]
            # ---- predictions of the chunk
            lo, hi = np.searchsorted(row_f_sorted, [f0, f1])
            rows = order[lo:hi]
            M = len(rows)
            pj = T(np.zeros((M, NUM_SMPL_JOINTS, 3)))
            pv = torch.full((M, N, 3), float("nan"), dtype=dt, device=dev) if M else None
            hp = torch.as_tensor(preds.has_params[rows], device=dev)
            if M and bool(hp.any()):
                idx = rows[preds.has_params[rows]]
                v_, j_ = fast.vertices(T(preds.global_orient[idx]), T(preds.body_pose[idx]), T(preds.betas[idx]), T(preds.transl[idx]))
                pj[hp] = j_[:, :NUM_SMPL_JOINTS]
                pv[hp] = v_
            if M and bool((~hp).any()):
                idx = rows[~preds.has_params[rows]]
                pj[~hp] = T(preds.joints[idx])
                if preds.vertices is not None and preds.vertices.shape[1] == N:
                    hv = torch.as_tensor(preds.has_vertices[idx], device=dev)
                    sub = pv[~hp]
                    sub[hv] = T(preds.vertices[idx][preds.has_vertices[idx]])
                    pv[~hp] = sub
            vidx = torch.as_tensor(preds.camera[rows], device=dev)
            lf = torch.as_tensor(row_f[rows] - f0, device=dev)
            if M:
                p2d = _project_rows(cams, pj, vidx)
                pfront = pj[..., 2] > 0
                hk = torch.as_tensor(preds.has_kp2d[rows], device=dev)
                kp = T(preds.kp2d[rows])
                p2d = torch.where(hk[:, None, None], kp[..., :2], p2d)
                pok = torch.where(hk[:, None], kp[..., 2] > 0, pfront)
                pbox = keypoint_boxes(p2d, pok)  # [M, 4]
                gk = g2d[lf, vidx]  # [M, P, 24, 2]
                gf = gfront[lf, vidx]  # [M, P, 24]
                use = gf & pok[:, None, :]
                dist = (p2d[:, None] - gk).norm(dim=-1)
                cost = torch.where(use.any(-1), (dist * use).sum(-1) / use.sum(-1).clamp_min(1), torch.full_like(dist[..., 0], float("inf")))
                iou = box_iou(pbox[:, None], gbox[lf, vidx])  # [M, P]
                cost_np, iou_np = cost.cpu().numpy(), iou.cpu().numpy()
            g_ok_np = g_ok.cpu().numpy()
            # ---- greedy matching per (frame, camera)
            keys = (row_f[rows] - f0) * V + preds.camera[rows] if M else np.zeros(0, np.int64)
            grp_order = np.argsort(keys, kind="stable")
            bounds = np.searchsorted(keys[grp_order], np.arange(c * V + 1))
            match_rows: list[int] = []
            match_f: list[int] = []
            match_p: list[int] = []
            fp = np.zeros(V, np.int64)
            tp = np.zeros(V, np.int64)
            ngt = g_ok_np.sum((0, 2))
            for key in range(c * V):
                a, b = bounds[key], bounds[key + 1]
                if a == b:
                    continue
                fl, v = divmod(key, V)
                sel = grp_order[a:b]
                pairs, _ = match_2d_greedy(cost_np[sel], iou_np[sel], g_ok_np[fl, v], iou_threshold)
                for d, p in pairs:
                    match_rows.append(int(sel[d]))
                    match_f.append(fl)
                    match_p.append(p)
                tp[v] += len(pairs)
                fp[v] += (b - a) - len(pairs)
            for v in range(V):
                per_cam[v].add(_Acc(gt=int(ngt[v]), tp=int(tp[v]), fp=int(fp[v]), fn=int(ngt[v] - tp[v])))
            if not match_rows:
                continue
            mr = torch.as_tensor(match_rows, device=dev)
            mf = torch.as_tensor(match_f, device=dev)
            mp = torch.as_tensor(match_p, device=dev)
            mv = vidx[mr]
            R, t = cams.R[mv], cams.t[mv]  # [K, 3, 3], [K, 3]
            gj_c = torch.einsum("kij,knj->kni", R, gw_j[mf, mp]) + t[:, None]
            gv_c = torch.einsum("kij,knj->kni", R, gw_v[mf, mp]) + t[:, None]
            err = _per_sample_errors(pj[mr], gj_c, pv[mr] if pv is not None else None, gv_c, pve_align)
            for v in torch.unique(mv).tolist():
                per_cam[v].add(_acc_from(err, mv == v))
    total = _Acc()
    for a in per_cam:
        total.add(a)
    rep: dict[str, Any] = {
        "sequence": name or seq.name,
        "activity": activity or seq.resolve().parent.name,
        "cameras": V,
        "frames": F,
        "people": P,
        "predictions": len(preds),
        **total.summary(),
        "per_camera": {cams.names[v]: per_cam[v].summary() for v in range(V)},
        "gt_source": gt.source,
        "_acc": total,
    }
    if preds.unknown_cameras:
        rep["unknown_cameras"] = preds.unknown_cameras
    if pve_note:
        rep["note"] = pve_note
    return rep


# ============================================================================ many sequences
def find_sequences(root: Path) -> list[Path]:
    """Sequence folders under ``root`` (``root`` itself when it is one): folders with ``colmap/workplace``."""
    from ..io.harmony4d import SequenceLayout  # the one notion of a sequence folder

    root = Path(root)
    if SequenceLayout(root).colmap.is_dir():
        return [root]
    out = []
    for dirpath, dirnames, _ in os.walk(root):
        d = Path(dirpath)
        if SequenceLayout(d).colmap.is_dir():
            out.append(d)
            dirnames[:] = []
        else:
            dirnames.sort()
    return sorted(out)


def evaluate(gt: Path, pred: Path, **kw: Any) -> dict[str, Any]:
    """Evaluate one sequence (``gt`` = a sequence folder) or every sequence under a root.

    Returns ``{"protocol", "sequences": [...], "activities": {name: {...}}, "overall": {...}}``.
    """
    gt, pred = Path(gt), Path(pred)
    seqs = find_sequences(gt)
    if not seqs:
        raise InputError(gt, "no sequence folders (with colmap/workplace) here")
    single = len(seqs) == 1 and seqs[0] == gt
    rows = []
    for s in seqs:
        rel = None if single else s.relative_to(gt)
        loc = _pred_location(pred, rel)
        act = (rel.parent.name if rel is not None and rel.parent.name else None)
        rows.append(evaluate_sequence(s, loc, name=str(rel) if rel is not None else s.name, activity=act, **kw))
    acts: dict[str, _Acc] = {}
    total = _Acc()
    for r in rows:
        acts.setdefault(r["activity"], _Acc()).add(r["_acc"])
        total.add(r["_acc"])
    for r in rows:
        r.pop("_acc")
    return {
        "protocol": {
            "iou_threshold": kw.get("iou_threshold", IOU_THRESHOLD), "pve_align": kw.get("pve_align", "pelvis"),
            "pck_threshold_mm": PCK_THRESHOLD_MM, "auc_thresholds_mm": [0, 199], "major_joints": list(MAJOR_JOINTS),
            "mpjpe": "24 SMPL joints, pelvis subtracted, camera frame",
        },
        "sequences": rows,
        "activities": {k: {"sequences": sum(r["activity"] == k for r in rows), **a.summary()} for k, a in sorted(acts.items())},
        "overall": {"sequences": len(rows), **total.summary()},
    }


_COLS = (("MPJPE", "mpjpe_mm", "{:8.1f}"), ("PA-MPJPE", "pa_mpjpe_mm", "{:8.1f}"), ("PVE", "pve_mm", "{:8.1f}"),
         ("PA-PVE", "pa_pve_mm", "{:8.1f}"), ("PCK150", "pck150", "{:7.3f}"), ("AUC", "auc", "{:7.3f}"),
         ("F1", "f1", "{:6.3f}"), ("miss", "misses", "{:6d}"), ("FP", "false_positives", "{:6d}"), ("matched", "matched", "{:8d}"))


def format_table(rep: dict[str, Any]) -> str:
    """The per-sequence and per-activity tables (Markdown)."""

    def row(label: str, d: Mapping[str, Any]) -> str:
        cells = []
        for _, k, fmt in _COLS:
            v = d.get(k)
            cells.append("-" if v is None or (isinstance(v, float) and v != v) else fmt.format(v).strip())
        return f"| {label} | " + " | ".join(cells) + " |"

    head = "| {} | " + " | ".join(c[0] for c in _COLS) + " |"
    sep = "|---" * (len(_COLS) + 1) + "|"
    lines = [head.format("sequence"), sep]
    lines += [row(f"{r['sequence']} ({r['activity']})", r) for r in rep["sequences"]]
    lines += ["", head.format("activity"), sep]
    lines += [row(k, a) for k, a in rep["activities"].items()]
    lines.append(row("**all**", rep["overall"]))
    p = rep["protocol"]
    lines.append("")
    lines.append(f"mm; MPJPE over 24 SMPL joints (pelvis-aligned, camera frame); PVE aligned by {p['pve_align']}; "
                 f"2D greedy matching, box IoU >= {p['iou_threshold']}")
    notes = [f"{r['sequence']}: {r['note']}" for r in rep["sequences"] if "note" in r]
    notes += [f"{r['sequence']}: predictions for unknown cameras ignored: {', '.join(r['unknown_cameras'])}" for r in rep["sequences"] if "unknown_cameras" in r]
    lines += notes
    return "\n".join(lines)


def to_json(rep: dict[str, Any]) -> str:
    from ..io.strict_json import strict_dumps

    return strict_dumps(rep)


__all__ = [
    "AUC_THRESHOLDS_MM",
    "MAJOR_JOINTS",
    "Predictions",
    "SequenceSMPL",
    "box_iou",
    "evaluate",
    "evaluate_sequence",
    "find_sequences",
    "format_table",
    "keypoint_boxes",
    "load_fast_body",
    "match_2d_greedy",
    "read_predictions",
    "read_sequence_smpl",
    "smpl_to_camera",
    "to_json",
]
