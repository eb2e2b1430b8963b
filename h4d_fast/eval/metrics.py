"""Accuracy against ground truth: 3D keypoints, SMPL joints and meshes, vertex contact.

Keypoints: inputs ``[F, P, J, 4]`` (x, y, z, valid) in metres, results in millimetres. A keypoint
counts in MPJPE when it is valid in both prediction and ground truth; the fraction of ground-truth
keypoints the prediction recovers is reported beside it, so no method wins by dropping hard
keypoints. Meshes (:func:`pve`, :func:`mpjpe24`, :func:`mesh_errors`): any leading dims, metres in,
millimetres out. Contact (:func:`contact_scores`): precision, recall and F1 of vertex contact labels
(:func:`h4d_fast.ops.contact.vertex_contact`). The two-person penetration measure is
:mod:`h4d_fast.ops.penetration`.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor

from ..align import procrustes_align  # noqa: F401 (re-exported; its home)
from ..constants import COCO17_NAMES, NUM_SMPL_JOINTS


def _masked_mean(x: Tensor, m: Tensor, dims: tuple[int, ...] | None = None) -> Tensor:
    m = m.to(x.dtype)
    if dims is None:
        return (x * m).sum() / m.sum().clamp_min(1)
    return (x * m).sum(dims) / m.sum(dims).clamp_min(1)


def identity_mapping(pred: Tensor, gt: Tensor) -> Tensor:
    """Per frame, the permutation of predicted people that best matches the ground-truth people.

    Returns ``[F, P]``: ``perm[f, p]`` = the predicted person matched to ground-truth person ``p``
    (minimum mean distance over keypoints valid in both; ties keep the identity).
    """
    F, P = gt.shape[:2]
    both = (pred[:, :, None, :, 3] > 0.5) & (gt[:, None, :, :, 3] > 0.5)  # [F, Pp, Pg, J]
    d = (pred[:, :, None, :, :3] - gt[:, None, :, :, :3]).norm(dim=-1)  # [F, Pp, Pg, J]
    cost = _masked_mean(d, both, (-1,))  # [F, Pp, Pg]
    cost = torch.where(both.any(-1), cost, torch.full_like(cost, 1e3))
    perms = list(itertools.permutations(range(P)))
    pt = torch.tensor(perms, dtype=torch.long, device=pred.device)  # [Q, P]
    g = torch.arange(P, device=pred.device)
    tot = cost[:, pt, g[None, :]].sum(-1)  # [F, Q]
    best = tot.argmin(-1)  # identity first in the list, so ties keep it
    return pt[best]


def keypoint_report(pred: Tensor, gt: Tensor, person_names: list[str] | None = None) -> dict[str, Any]:
    """MPJPE (mm) per joint, per person and overall, with and without Procrustes alignment,
    recovered fraction, and identity swaps.

    Args:
        pred, gt: ``[F, P, J, 4]``.
    Returns:
        a JSON-ready dict; top-level ``mpjpe_mm``, ``pa_mpjpe_mm``, ``recovered``, ``identity_swaps``.
    """
    pred = pred.double()
    gt = gt.double()
    F, P, J, _ = gt.shape
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")
    names = person_names or [f"person{p}" for p in range(P)]
    pv = pred[..., 3] > 0.5
    gv = gt[..., 3] > 0.5
    both = pv & gv
    err = (pred[..., :3] - gt[..., :3]).norm(dim=-1) * 1000.0  # [F, P, J] mm
    aligned = procrustes_align(pred[..., :3], gt[..., :3], both)
    pa_err = (aligned - gt[..., :3]).norm(dim=-1) * 1000.0
    perm = identity_mapping(pred, gt)
    swapped = (perm != torch.arange(P, device=perm.device)).any(-1)  # [F]
    switches = int((swapped[1:] != swapped[:-1]).sum()) if F > 1 else 0
    rep: dict[str, Any] = {
        "frames": F,
        "people": P,
        "mpjpe_mm": float(_masked_mean(err, both)),
        "pa_mpjpe_mm": float(_masked_mean(pa_err, both)),
        "median_error_mm": float(err[both].median()) if bool(both.any()) else float("nan"),
        "p95_error_mm": float(torch.quantile(err[both], 0.95)) if bool(both.any()) else float("nan"),
        "recovered": int(both.sum()) / max(1, int(gv.sum())),
        "identity_swaps": int(swapped.sum()),
        "identity_switch_events": switches,
        "per_person": {
            names[p]: {
                "mpjpe_mm": float(_masked_mean(err[:, p], both[:, p])),
                "pa_mpjpe_mm": float(_masked_mean(pa_err[:, p], both[:, p])),
                "recovered": int(both[:, p].sum()) / max(1, int(gv[:, p].sum())),
            }
            for p in range(P)
        },
        "per_joint_mpjpe_mm": {COCO17_NAMES[j] if J == 17 else str(j): float(_masked_mean(err[..., j], both[..., j])) for j in range(J)},
    }
    return rep


# ----------------------------------------------------------------------------- meshes
def _align(pred: Tensor, gt: Tensor, align: str, root_pred: Tensor | None, root_gt: Tensor | None) -> tuple[Tensor, Tensor]:
    if align == "none":
        return pred, gt
    if align == "root":
        if root_pred is None or root_gt is None:
            raise ValueError("align='root' needs root_pred and root_gt")
        return pred - root_pred[..., None, :], gt - root_gt[..., None, :]
    if align == "procrustes":
        mask = torch.ones(pred.shape[:-1], dtype=torch.bool, device=pred.device)
        return procrustes_align(pred, gt, mask), gt
    raise ValueError(f"align must be 'none', 'root' or 'procrustes', got {align!r}")


def mpjpe24(pred_joints: Tensor, gt_joints: Tensor, align: str = "none") -> Tensor:
    """Mean per-joint position error over the 24 SMPL tree joints, in mm.

    Args:
        pred_joints, gt_joints: ``[..., J >= 24, 3]`` (e.g. smplx ``joints45``), metres.
        align: ``"none"``, ``"root"`` (pelvis = joint 0 subtracted, as the Harmony4D benchmark)
            or ``"procrustes"`` (similarity alignment per sample).
    Returns:
        ``[...]`` mm.
    """
    p, g = pred_joints[..., :NUM_SMPL_JOINTS, :], gt_joints[..., :NUM_SMPL_JOINTS, :]
    p, g = _align(p, g, align, p[..., 0, :], g[..., 0, :])
    return (p - g).norm(dim=-1).mean(-1) * 1000.0


def pve(
    pred_verts: Tensor,
    gt_verts: Tensor,
    align: str = "none",
    pred_root: Tensor | None = None,
    gt_root: Tensor | None = None,
) -> Tensor:
    """Per-vertex error (mean vertex distance), in mm.

    Args:
        pred_verts, gt_verts: ``[..., N, 3]`` metres (same topology).
        align: ``"none"``, ``"root"`` (subtract ``pred_root`` / ``gt_root [..., 3]``, e.g. the
            pelvis joints; the Harmony4D benchmark uses vertex 0) or ``"procrustes"``.
    Returns:
        ``[...]`` mm.
    """
    p, g = _align(pred_verts, gt_verts, align, pred_root, gt_root)
    return (p - g).norm(dim=-1).mean(-1) * 1000.0


def mesh_errors(pred_verts: Tensor, gt_verts: Tensor, pred_joints: Tensor, gt_joints: Tensor) -> dict[str, float]:
    """Summary over all leading dims: ``mpjpe``, ``pa_mpjpe``, ``root_mpjpe``, ``pve``,
    ``root_pve`` (pelvis-aligned), ``pa_pve``; mm."""
    pr, gr = pred_joints[..., 0, :], gt_joints[..., 0, :]
    return {
        "mpjpe": float(mpjpe24(pred_joints, gt_joints).mean()),
        "root_mpjpe": float(mpjpe24(pred_joints, gt_joints, "root").mean()),
        "pa_mpjpe": float(mpjpe24(pred_joints, gt_joints, "procrustes").mean()),
        "pve": float(pve(pred_verts, gt_verts).mean()),
        "root_pve": float(pve(pred_verts, gt_verts, "root", pr, gr).mean()),
        "pa_pve": float(pve(pred_verts, gt_verts, "procrustes").mean()),
    }


# ----------------------------------------------------------------------------- contact
def contact_scores(pred: Tensor, gt: Tensor) -> dict[str, float]:
    """Precision, recall and F1 of predicted vertex contact against ground truth.

    Args:
        pred, gt: bool tensors of one shape (e.g. ``[F, Q, 2, N]``); every element is one decision.
    Returns:
        ``{"precision", "recall", "f1", "tp", "fp", "fn", "gt_positives"}``; precision (recall) is
        1.0 when nothing is predicted (in the ground truth), F1 likewise when both are empty.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"contact_scores: prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ")
    p, g = pred.bool(), gt.bool()
    tp = int((p & g).sum())
    fp = int((p & ~g).sum())
    fn = int((~p & g).sum())
    prec = tp / (tp + fp) if tp + fp else 1.0
    rec = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"precision": prec, "recall": rec, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "gt_positives": tp + fn}
