"""Multi-person 3D skeleton benchmark measures: per-frame matching of output people to
ground-truth people, recall, ghosts, identity switches, PCP and MPJPE.

Inputs are ``[F, P, J, 4]`` (x, y, z, valid) in metres with presence masks ``[F, P]`` (a person
absent in a frame is not counted there; without a mask a person is present where any keypoint is
valid). Output and ground-truth people need not be the same number nor in the same order.

* **matching** -- per frame, the one-to-one matching of ground-truth to output people that
  minimises the total mean keypoint distance (over keypoints valid in both), among pairs closer
  than ``max_distance`` (exact: :func:`~h4d_fast.ops.assign.linear_assignment`);
* ``recall`` -- matched ground-truth person-frames / ground-truth person-frames;
* ``ghost_person_frames`` -- output person-frames matched to nobody (``ghost_fraction`` of all
  output person-frames);
* ``identity_swaps`` -- identity switches: for each ground-truth person, the number of times the
  output person it is matched to differs from the one it was last matched to;
* ``pcp`` -- percentage of correct parts: a limb of a ground-truth person-frame is correct when the
  mean of its two end-point errors is at most half its (ground-truth) length; a missed person's
  limbs are wrong. Per limb, per person and overall;
* ``mpjpe_mm`` -- mean keypoint error over matched pairs.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from ..ops.assign import linear_assignment

# PCP limbs over COCO-17 (negative indices are virtual joints: -1 = mid-shoulders, -2 = mid-hips)
PCP_LIMBS: dict[str, tuple[int, int]] = {
    "head": (0, -1),
    "torso": (-1, -2),
    "left_upper_arm": (5, 7),
    "right_upper_arm": (6, 8),
    "left_lower_arm": (7, 9),
    "right_lower_arm": (8, 10),
    "left_upper_leg": (11, 13),
    "right_upper_leg": (12, 14),
    "left_lower_leg": (13, 15),
    "right_lower_leg": (14, 16),
}
MATCH_DISTANCE_M = 0.5


def presence_of(poses: Tensor, present: Optional[Tensor] = None) -> Tensor:
    """``[F, P]`` bool: the given mask, else any valid keypoint."""
    if present is not None:
        return present.to(device=poses.device, dtype=torch.bool)
    return (poses[..., 3] > 0.5).any(-1)


def match_people(pred: Tensor, gt: Tensor, pred_present: Tensor, gt_present: Tensor,
                 max_distance: float = MATCH_DISTANCE_M) -> tuple[Tensor, Tensor]:
    """Per-frame matching of ground-truth people to output people.

    Returns:
        ``match [F, Pg]`` (output index or -1) and ``dist [F, Pg, Pp]`` mean keypoint distances
        (metres; inf where no keypoint is valid in both or someone is absent).
    """
    both = (pred[:, None, :, :, 3] > 0.5) & (gt[:, :, None, :, 3] > 0.5)  # [F, Pg, Pp, J]
    d = (pred[:, None, :, :, :3] - gt[:, :, None, :, :3]).norm(dim=-1)
    n = both.sum(-1)
    dist = torch.where(both, d, torch.zeros_like(d)).sum(-1) / n.clamp_min(1)
    ok = (n > 0) & gt_present[:, :, None] & pred_present[:, None, :]
    dist = torch.where(ok, dist, torch.full_like(dist, float("inf")))
    if pred.shape[1] == 0 or gt.shape[1] == 0:
        return torch.full(gt.shape[:2], -1, dtype=torch.long, device=gt.device), dist
    score = torch.where(dist < max_distance, max_distance - dist, torch.zeros_like(dist))
    return linear_assignment(score, 0.0), dist


def align_people(pred: Tensor, gt: Tensor, pred_present: Optional[Tensor] = None, gt_present: Optional[Tensor] = None,
                 max_distance: float = MATCH_DISTANCE_M) -> Tensor:
    """The output re-indexed to the ground-truth people by the per-frame matching: ``[F, Pg, J, 4]``
    (zeros, invalid, where a ground-truth person has no match), ready for
    :func:`h4d_fast.eval.metrics.keypoint_report` against ``gt``."""
    pred, gt = pred.double(), gt.double().to(pred.device)
    F, Pg, J, _ = gt.shape
    gp = presence_of(gt, gt_present)
    match, _ = match_people(pred, gt, presence_of(pred, pred_present), gp, max_distance)
    hit = (match >= 0) & gp
    if pred.shape[1] == 0:
        return torch.zeros_like(gt)
    aligned = torch.gather(pred, 1, match.clamp_min(0)[..., None, None].expand(F, Pg, J, 4))
    return torch.where(hit[..., None, None], aligned, torch.zeros_like(aligned))


def _with_virtual(X: Tensor) -> Tensor:
    """``[..., J, 4]`` -> ``[..., J + 2, 4]`` with mid-shoulders and mid-hips appended (valid when both are)."""
    def mid(a: int, b: int) -> Tensor:
        v = (X[..., a, 3] > 0.5) & (X[..., b, 3] > 0.5)
        return torch.cat([0.5 * (X[..., a, :3] + X[..., b, :3]), v[..., None].to(X.dtype)], -1)

    return torch.cat([X, mid(5, 6)[..., None, :], mid(11, 12)[..., None, :]], -2)


def skeleton_report(pred: Tensor, gt: Tensor, pred_present: Optional[Tensor] = None, gt_present: Optional[Tensor] = None,
                    gt_names: Optional[Sequence[str]] = None, max_distance: float = MATCH_DISTANCE_M) -> dict[str, Any]:
    """The measures of the module docstring.

    Args:
        pred: ``[F, Pp, J, 4]``; gt ``[F, Pg, J, 4]``; presence ``[F, Pp]`` / ``[F, Pg]`` (optional).
    Returns:
        a JSON-ready dict (``recall``, ``ghost_person_frames``, ``ghost_fraction``,
        ``identity_swaps``, ``pcp`` {``mean``, ``per_limb``, ``per_person``}, ``mpjpe_mm``, counts)
        and, under ``"_aligned"``, the output re-indexed to the ground truth ``[F, Pg, J, 4]``
        (invalid where unmatched; not JSON).
    """
    pred, gt = pred.double(), gt.double().to(pred.device)
    F, Pg, J, _ = gt.shape
    if pred.shape[0] != F:
        raise ValueError(f"prediction has {pred.shape[0]} frames, ground truth {F}")
    pp = presence_of(pred, pred_present)
    gp = presence_of(gt, gt_present)
    match, _ = match_people(pred, gt, pp, gp, max_distance)  # [F, Pg]
    names = list(gt_names) if gt_names is not None else [f"person{g}" for g in range(Pg)]
    hit = (match >= 0) & gp
    aligned = align_people(pred, gt, pp, gp, max_distance)
    # ghosts: present output people matched to no ground-truth person
    matched_out = torch.zeros(pp.shape, dtype=torch.bool, device=pp.device)
    fi, gi = hit.nonzero(as_tuple=True)
    matched_out[fi, match[fi, gi]] = True
    ghosts = pp & ~matched_out
    # identity switches
    switches = 0
    per_person_switches = {}
    for g in range(Pg):
        seq = match[:, g][hit[:, g]].tolist()
        s = sum(1 for a, b in zip(seq, seq[1:]) if a != b)
        per_person_switches[names[g]] = s
        switches += s
    # MPJPE over matched pairs
    both = (aligned[..., 3] > 0.5) & (gt[..., 3] > 0.5) & hit[..., None]
    err = (aligned[..., :3] - gt[..., :3]).norm(dim=-1) * 1000.0
    mpjpe = float(err[both].mean()) if bool(both.any()) else float("nan")
    # PCP
    A, G = _with_virtual(aligned), _with_virtual(gt)
    jidx = {i: (J + 1 if i == -2 else J if i == -1 else i) for i in range(-2, J)}
    per_limb, corr_all, cnt_all = {}, torch.zeros(F, Pg, dtype=torch.float64), torch.zeros(F, Pg, dtype=torch.float64)
    for name, (a, b) in PCP_LIMBS.items():
        ia, ib = jidx[a], jidx[b]
        gv = (G[..., ia, 3] > 0.5) & (G[..., ib, 3] > 0.5) & gp  # [F, Pg] limbs that count
        pv = (A[..., ia, 3] > 0.5) & (A[..., ib, 3] > 0.5) & hit
        L = (G[..., ia, :3] - G[..., ib, :3]).norm(dim=-1)
        e = 0.5 * ((A[..., ia, :3] - G[..., ia, :3]).norm(dim=-1) + (A[..., ib, :3] - G[..., ib, :3]).norm(dim=-1))
        ok = gv & pv & (e <= 0.5 * L)
        per_limb[name] = float(ok.sum()) / max(int(gv.sum()), 1)
        corr_all += ok.double().cpu()
        cnt_all += gv.double().cpu()
    pcp = {
        "mean": float(corr_all.sum() / cnt_all.sum().clamp_min(1)),
        "per_limb": per_limb,
        "per_person": {names[g]: float(corr_all[:, g].sum() / cnt_all[:, g].sum().clamp_min(1)) for g in range(Pg)},
    }
    n_gt, n_out = int(gp.sum()), int(pp.sum())
    return {
        "recall": int(hit.sum()) / max(n_gt, 1),
        "ghost_person_frames": int(ghosts.sum()),
        "ghost_fraction": int(ghosts.sum()) / max(n_out, 1),
        "identity_swaps": switches,
        "identity_swaps_per_person": per_person_switches,
        "pcp": pcp,
        "mpjpe_mm": mpjpe,
        "gt_person_frames": n_gt,
        "output_person_frames": n_out,
        "output_people": int(pred.shape[1]),
        "match_distance_m": max_distance,
        "_aligned": aligned,
    }
