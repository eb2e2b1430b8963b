"""Stage 2: which detection in each view belongs to which person.

At the first frame each person's box in each view is given (the annotator's boxes in
Harmony4D, the ground-truth boxes in the synthetic capture): detections are matched to them
by IoU. Afterwards a motion model predicts each person's pose from their own 3D track, the
prediction is projected into every view, and detections are matched to the projections by
OKS with an optimal (Hungarian-equivalent) assignment, so the two people stay apart through
contact. All functions are batched over any leading dimensions (frames, views) and run on any
device; the assignment is exact for any number of people (:mod:`h4d_fast.ops.assign`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops import oks, triangulate_dlt
from ..ops.assign import linear_assignment
from ..ops.boxes import pairwise_box_iou as box_iou  # noqa: F401 (public name of this module; its home is h4d_fast.ops.boxes)


def best_assignment(score: Tensor, min_score: float, backend: str = "auto") -> Tensor:
    """Maximum-total-score one-to-one assignment of people to detection slots.

    The exact linear assignment of :func:`h4d_fast.ops.assign.linear_assignment` (the Hungarian
    method: any number of people and slots, batched over the leading dimensions). Pairs scoring
    ``<= min_score`` are never assigned.

    Args:
        score: ``[..., P, D]`` match scores (e.g. OKS or IoU).
    Returns:
        ``[..., P]`` int64 slot per person, -1 for none.
    """
    return linear_assignment(score, min_score, backend=backend)


def assign_by_boxes(boxes: Tensor, valid: Tensor, person_boxes: Tensor, person_valid: Tensor, min_iou: float) -> Tensor:
    """First-frame identity from given person boxes.

    Args:
        boxes: ``[V, D, 4+]`` detection boxes; valid ``[V, D]``.
        person_boxes: ``[V, P, 4]``; person_valid ``[V, P]``.
    Returns:
        ``[V, P]`` slot per person (-1 = none).
    """
    iou = box_iou(person_boxes[..., :4], boxes[..., :4])  # [V, P, D]
    iou = torch.where(valid[:, None, :] & person_valid[:, :, None], iou, torch.zeros_like(iou))
    return best_assignment(iou, min_iou)


def assign_by_prediction(
    kpts: Tensor, valid: Tensor, pred_uv: Tensor, pred_ok: Tensor, min_oks: float, backend: str = "auto",
    hint: Tensor | None = None, slot_person: Tensor | None = None, hint_bonus: float = 0.1,
) -> Tensor:
    """Identity from each person's predicted pose projected into every view.

    Args:
        kpts: ``[..., V, D, J, 3]`` detections; valid ``[..., V, D]``.
        pred_uv: ``[..., V, P, J, 2]`` projected predictions; pred_ok ``[..., V, P, J]`` usable keypoints.
        hint: ``[..., V, D]`` long, the person a detection is known to belong to (a crop prompted by
            that person's 3D track; -1 = unknown). Where such a detection fits the track carrying
            that person (OKS above ``min_oks``), ``hint_bonus`` is added to their OKS: the prompt
            decides between people whose predictions the detection fits about equally (in
            contact), while a prompted crop whose model latched onto the other person (its pose
            fits the other's prediction clearly better) still goes to that other person. Forcing
            the prompt's person instead was measured worse: in hugs a top-down model returns the
            wrong person for a fair share of prompted crops (41 -> 161 mm raw MPJPE on the
            stand-in contact capture of tests/test_detect_stage.py).
        slot_person: ``[P]`` long, the declared person each track carries (-1 = anonymous).
        hint_bonus: what a matching prompt adds to the OKS (``identity.prompt_bonus``).
    Returns:
        ``[..., V, P]`` slot per person (-1 = none).
    """
    pred = torch.cat([pred_uv, pred_ok[..., None].to(pred_uv.dtype)], -1)  # [..., V, P, J, 3]
    # OKS with the pair's mean keypoint-box area, so a larger (nearer) person's prediction is
    # not more tolerant of distance than a smaller one's when both compete for a detection.
    score = oks(pred, kpts.to(pred.dtype), kpt_thr=0.2, backend=backend)  # [..., V, P, D]
    score = torch.where(valid[..., None, :], score, torch.zeros_like(score))
    if hint is None or slot_person is None or slot_person.numel() == 0:
        return best_assignment(score, min_oks)
    match = (valid[..., None, :] & (hint[..., None, :] >= 0) & (hint[..., None, :] == slot_person[:, None])
             & pred_ok.any(-1)[..., None] & (score > min_oks))  # [..., V, P, D]
    return best_assignment(score + hint_bonus * match.to(score.dtype), min_oks)


def gather_assigned(kpts: Tensor, assign: Tensor) -> Tensor:
    """``kpts [..., V, D, J, C]``, ``assign [..., V, P]`` -> ``[..., V, P, J, C]`` (zeros where unassigned)."""
    J, C = kpts.shape[-2:]
    idx = assign.clamp_min(0)  # [..., V, P]
    if kpts.shape[-3] == 0:
        return kpts.new_zeros(*assign.shape, J, C)
    out = torch.gather(kpts, -3, idx[..., None, None].expand(*idx.shape, J, C))
    return torch.where((assign >= 0)[..., None, None], out, torch.zeros_like(out))


def predict_next(history: Tensor, valid: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """Predict each person's next pose from the recent track.

    ``previous`` is the reference's motion model: a Kalman filter with identity transition
    whose prediction equals the last pose. ``constant-velocity`` fits a line per keypoint over
    the window (least squares over the valid samples) and extrapolates one frame.

    Args:
        history: ``[..., W, P, J, 3]`` the last ``W`` frames (oldest first); leading dims batch
            independent predictions (e.g. several frames at once).
        valid: ``[..., W, P, J]`` bool.
    Returns:
        ``(pred [..., P, J, 3], ok [..., P, J])``.
    """
    W = history.shape[-4]
    t = torch.arange(W, dtype=history.dtype, device=history.device).view(W, 1, 1)  # broadcasts over [W, P, J]
    # last valid sample per keypoint
    last_idx = torch.where(valid, t, torch.full_like(t, -1.0)).amax(-3)  # [..., P, J]
    ok = last_idx >= 0
    li = last_idx.clamp_min(0).long()
    last = torch.gather(history, -4, li.unsqueeze(-3)[..., None].expand(*li.shape[:-2], 1, *li.shape[-2:], 3)).squeeze(-4)
    if mode == "previous":
        return last, ok
    if mode != "constant-velocity":
        raise ValueError(f"unknown motion model {mode!r}")
    w = valid.to(history.dtype)  # [..., W, P, J]
    n = w.sum(-3)
    tm = (w * t).sum(-3) / n.clamp_min(1)
    xm = (w[..., None] * history).sum(-4) / n.clamp_min(1)[..., None]
    dt = (t - tm.unsqueeze(-3)) * w
    var = (dt * (t - tm.unsqueeze(-3))).sum(-3)
    cov = (dt[..., None] * (history - xm.unsqueeze(-4))).sum(-4)
    slope = cov / var.clamp_min(1e-9)[..., None]
    pred = xm + slope * (W - tm)[..., None]
    use_lin = (n >= 3) & (var > 0)
    # never extrapolate from a stale track: only when the last sample is the latest frame
    use_lin = use_lin & (last_idx == W - 1)
    return torch.where(use_lin[..., None], pred, last), ok


def epipolar_scores(xy: Tensor, conf: Tensor, valid: Tensor, P: Tensor, dist_thr: float = 0.015, conf_thr: float = 0.3,
                    min_common: int = 6) -> Tensor:
    """How well each pair of detections in two different views agrees with epipolar geometry.

    Args:
        xy: ``[V, D, J, 2]`` normalized coordinates; conf ``[V, D, J]``; valid ``[V, D]``.
        P: ``[V, 3, 4]`` extrinsics.
    Returns:
        ``[V, D, V, D]`` fraction of the keypoints confident in both detections whose symmetric
        epipolar distance is under ``dist_thr`` (0 for the same view, invalid slots, or fewer than
        ``min_common`` common keypoints).
    """
    V, D, J, _ = xy.shape
    R, t = P[:, :, :3], P[:, :, 3]
    # relative pose b <- a: R_ab = R_b R_a^T, t_ab = t_b - R_ab t_a; essential E_ab = [t_ab]x R_ab
    R_ab = R[None, :] @ R[:, None].transpose(-1, -2)  # [Va, Vb, 3, 3]
    t_ab = t[None, :] - (R_ab @ t[:, None, :, None])[..., 0]  # [Va, Vb, 3]
    tx = torch.zeros(V, V, 3, 3, dtype=xy.dtype, device=xy.device)
    tx[..., 0, 1], tx[..., 0, 2] = -t_ab[..., 2], t_ab[..., 1]
    tx[..., 1, 0], tx[..., 1, 2] = t_ab[..., 2], -t_ab[..., 0]
    tx[..., 2, 0], tx[..., 2, 1] = -t_ab[..., 1], t_ab[..., 0]
    E = tx @ R_ab  # [Va, Vb, 3, 3]
    ok = (conf > conf_thr) & torch.isfinite(xy).all(-1) & valid[..., None]  # [V, D, J]
    xh = torch.cat([torch.nan_to_num(xy), torch.ones_like(xy[..., :1])], -1)  # [V, D, J, 3]
    la = torch.einsum("abij,adkj->adbki", E, xh)  # line in b of a's points: [Va, Da, Vb, J, 3]
    lb = torch.einsum("abji,bekj->abeki", E, xh)  # line in a of b's points (E^T x_b): [Va, Vb, Db, J, 3]
    num = torch.einsum("adbki,beki->adbek", la, xh)  # x_b^T E x_a: [Va, Da, Vb, Db, J]
    na = la[..., :2].norm(dim=-1)[:, :, :, None, :]  # [Va, Da, Vb, 1, J]
    nb = lb[..., :2].norm(dim=-1)[:, None, :, :, :]  # [Va, 1, Vb, Db, J]
    d = 0.5 * num.abs() * (1.0 / na.clamp_min(1e-12) + 1.0 / nb.clamp_min(1e-12))
    both = ok[:, :, None, None, :] & ok[None, None, :, :, :]  # [Va, Da, Vb, Db, J]
    n = both.sum(-1)
    good = (both & (d < dist_thr)).sum(-1)
    score = good.to(xy.dtype) / n.clamp_min(1).to(xy.dtype)
    same_view = torch.eye(V, dtype=torch.bool, device=xy.device)[:, None, :, None]
    return torch.where((n >= min_common) & ~same_view, score, torch.zeros_like(score))


def bootstrap_people(kpts: Tensor, xy: Tensor, valid: Tensor, cams, num_people: int, min_score: float = 0.6,
                     min_oks: float = 0.3, taken: Tensor | None = None) -> Tensor:
    """Find people without any prior identity: cross-view association by epipolar consistency.

    Greedy, one person at a time: the best-agreeing pair of detections in two views seeds a
    person, whose keypoints are triangulated from that pair, projected into every other view and
    matched there by OKS. Used at the first frame when no identity boxes are given (peer
    captures), and to re-acquire a person who has no track. Person order is discovery order.

    Args:
        kpts: ``[V, D, J, 3]`` pixel detections; xy ``[V, D, J, 2]`` normalized; valid ``[V, D]``.
        cams: :class:`~h4d_fast.camera.CameraSet` on the same device.
        taken: ``[V, D]`` slots already used by tracked people (excluded).
    Returns:
        ``[V, num_people]`` slot per person (-1 where not found).
    """
    V, D, J, _ = kpts.shape
    out = torch.full((V, num_people), -1, dtype=torch.long, device=kpts.device)
    if V < 2 or D == 0:
        return out
    free = valid.clone() if taken is None else valid & ~taken
    Pm = cams.extrinsics.to(xy.dtype)
    conf = kpts[..., 2].to(xy.dtype)
    S = epipolar_scores(xy, conf, free, Pm)  # [V, D, V, D]
    for p in range(num_people):
        S = S * free[:, :, None, None] * free[None, None, :, :]
        best = int(S.flatten().argmax())
        if float(S.flatten()[best]) < min_score:
            break
        a, i, b, j = (int(x) for x in torch.unravel_index(torch.tensor(best), S.shape))
        pair_xy = torch.stack([xy[a, i], xy[b, j]], 1)  # [J, 2, 2]
        w = torch.stack([conf[a, i], conf[b, j]], 1) * (torch.stack([conf[a, i], conf[b, j]], 1) > 0.3)
        X = triangulate_dlt(torch.nan_to_num(pair_xy), Pm[[a, b]], w, backend="torch")  # [J, 3]
        okX = torch.isfinite(X).all(-1)
        uv, z = cams.project(torch.nan_to_num(X).to(cams.dtype))  # [J, V, 2], [J, V]
        pred = torch.cat([uv.permute(1, 0, 2), (okX[None, :] & (z.T > 0)).to(uv.dtype)[..., None]], -1)  # [V, J, 3]
        o = oks(pred[:, None].to(kpts.dtype), kpts, kpt_thr=0.2)[:, 0]  # [V, D]
        o = torch.where(free, o, torch.zeros_like(o))
        slot = o.argmax(-1)
        hit = o.gather(1, slot[:, None])[:, 0] > min_oks
        col = torch.where(hit, slot, torch.full_like(slot, -1))
        col[a], col[b] = i, j
        out[:, p] = col
        used = torch.zeros_like(free)
        used[torch.arange(V, device=kpts.device)[col >= 0], col[col >= 0]] = True
        free = free & ~used
    return out
