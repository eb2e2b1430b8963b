"""Accuracy of 3D keypoints against ground truth.

All inputs are ``[F, P, J, 4]`` (x, y, z, valid) in metres; results are in millimetres.
A keypoint counts in MPJPE when it is valid in both prediction and ground truth; the fraction
of ground-truth keypoints the prediction recovers is reported beside it, so no method wins by
dropping hard keypoints.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor

from ..align import procrustes_align  # noqa: F401 (re-exported; its home)
from ..constants import COCO17_NAMES


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
