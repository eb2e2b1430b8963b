"""Stage 3: per-frame identity assignment and RANSAC view-set triangulation over a sequence.

Frame ``t`` needs the 3D poses of frame ``t-1`` (the motion model's prompt), so frames run in
order; everything inside a frame is batched over views, people and keypoints on the device,
and all detections are undistorted to normalized coordinates in one batched call up front.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from ..camera import CameraSet
from ..config import IdentityConfig, TriangulationConfig
from ..data import Detections
from ..ops import triangulate_ransac
from .identity import assign_by_boxes, assign_by_prediction, bootstrap_people, gather_assigned, predict_next


@dataclass
class TrackResult:
    """Output of stage 3.

    Attributes:
        poses: ``[F, P, J, 4]`` x, y, z (metres), valid.
        assign: ``[F, V, P]`` detection slot used for each person in each view (-1 = none).
        n_inliers: ``[F, P, J]`` inlier views per keypoint.
    """

    poses: Tensor
    assign: Tensor
    n_inliers: Tensor


def normalize_detections(det: Detections, cams: CameraSet) -> Tensor:
    """Undistorted normalized coordinates of every detected keypoint.

    ``kpts [F, V, D, J, 3] -> [F, V, D, J, 2]`` (NaN where the keypoint is undetected or cannot
    be undistorted).
    """
    F, V, D = det.shape
    J = det.kpts.shape[-2]
    uv = det.kpts[..., :2].to(cams.dtype).permute(0, 2, 3, 1, 4)  # [F, D, J, V, 2]
    xy = cams.pixels_to_normalized(uv).permute(0, 3, 1, 2, 4)  # [F, V, D, J, 2]
    miss = det.kpts[..., 2] <= 0
    return torch.where(miss[..., None], torch.full_like(xy, float("nan")), xy)


def _untracked_assignment(k_f, xy_f, boxes_f, v_f, a_pred, have_track, init_boxes, init_valid, cams, cfg: IdentityConfig):
    """Slots for people without a track: from the identity boxes when given, else by cross-view
    association of the detections the tracked people did not take. ``[V, P]``."""
    V, D = v_f.shape
    P = have_track.shape[0]
    taken = torch.zeros(V, D + 1, dtype=torch.bool, device=v_f.device)
    taken.scatter_(1, torch.where(have_track[None, :] & (a_pred >= 0), a_pred, torch.full_like(a_pred, D)), True)
    taken = taken[:, :D]
    if init_boxes is not None:
        a_new = assign_by_boxes(boxes_f, v_f & ~taken, init_boxes, init_valid, cfg.init_box_min_iou)
    else:
        lost = (~have_track).nonzero()[:, 0]
        found = bootstrap_people(k_f, xy_f, v_f, cams, int(lost.numel()), taken=taken)  # [V, n_lost]
        a_new = torch.full((V, P), -1, dtype=torch.long, device=v_f.device)
        a_new[:, lost] = found
    return torch.where(have_track[None, :], a_pred, a_new)


def triangulate_sequence(
    det: Detections,
    cams: CameraSet,
    num_people: int,
    id_cfg: IdentityConfig,
    tri_cfg: TriangulationConfig,
    init_boxes: Optional[Tensor] = None,
    init_valid: Optional[Tensor] = None,
    backend: str = "auto",
    progress: Optional[Callable[[int], None]] = None,
) -> TrackResult:
    """Run stages 2 and 3 over the whole sequence.

    Args:
        det: filtered detections (``valid`` already reflects stage 1).
        cams: the cameras, on the compute device.
        num_people: ``P``.
        init_boxes: ``[V, P, 4]`` identity boxes at the first frame; without them people are found
            by cross-view association (:func:`~h4d_fast.pipeline.identity.bootstrap_people`).
        progress: called with the number of frames finished.
    """
    if det.kpts.device.type == "cpu":
        # The per-frame tensors are tiny: intra-op threads only add synchronisation (and on a
        # busy machine OpenMP spin-waits make them many times slower), so run this loop on one.
        n_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _triangulate_sequence(det, cams, num_people, id_cfg, tri_cfg, init_boxes, init_valid, backend, progress)
        finally:
            torch.set_num_threads(n_threads)
    return _triangulate_sequence(det, cams, num_people, id_cfg, tri_cfg, init_boxes, init_valid, backend, progress)


def _triangulate_sequence(det, cams, num_people, id_cfg, tri_cfg, init_boxes, init_valid, backend, progress) -> TrackResult:
    device = det.kpts.device
    dtype = torch.float32 if det.kpts.dtype == torch.float32 else torch.float64
    cams_c = cams.to(device=device, dtype=dtype)
    F, V, D = det.shape
    J = det.kpts.shape[-2]
    P = num_people
    Pmat = cams_c.extrinsics  # [V, 3, 4]
    xy_all = normalize_detections(det.to(dtype=dtype), cams_c)  # [F, V, D, J, 2]
    kpts_all = det.kpts.to(dtype)
    W = max(1, id_cfg.window)
    poses = torch.zeros(F, P, J, 4, dtype=dtype, device=device)
    assign_all = torch.full((F, V, P), -1, dtype=torch.long, device=device)
    n_inl_all = torch.zeros(F, P, J, dtype=torch.long, device=device)
    hist = torch.zeros(W, P, J, 3, dtype=dtype, device=device)
    hist_ok = torch.zeros(W, P, J, dtype=torch.bool, device=device)
    wh = cams_c.size.to(device=device, dtype=dtype)  # [V, 2]
    if init_boxes is not None:
        init_boxes = init_boxes.to(device=device, dtype=dtype)
        init_valid = (torch.ones(V, P, dtype=torch.bool, device=device) if init_valid is None else init_valid.to(device))
    have_track = torch.zeros(P, dtype=torch.bool, device=device)
    for f in range(F):
        k_f, v_f = kpts_all[f], det.valid[f]  # [V, D, J, 3], [V, D]
        pred, pred_ok = predict_next(hist, hist_ok, id_cfg.predictor)  # [P, J, 3], [P, J]
        uv, z = cams_c.project(pred)  # [P, J, V, 2], [P, J, V]
        uv = uv.permute(2, 0, 1, 3)  # [V, P, J, 2]
        z = z.permute(2, 0, 1)  # [V, P, J]
        inside = (uv[..., 0] >= 0) & (uv[..., 1] >= 0) & (uv[..., 0] < wh[:, None, None, 0]) & (uv[..., 1] < wh[:, None, None, 1])
        ok = pred_ok[None] & (z > 0) & inside  # [V, P, J]
        a_pred = assign_by_prediction(k_f, v_f, uv, ok, id_cfg.min_match_oks, backend=backend)  # [V, P]
        if not bool(have_track.all()):
            a = _untracked_assignment(k_f, xy_all[f], det.boxes[f].to(dtype), v_f, a_pred, have_track, init_boxes, init_valid, cams_c, id_cfg)
        else:
            a = a_pred
        obs = gather_assigned(k_f, a)  # [V, P, J, 3]
        xy = gather_assigned(torch.cat([xy_all[f], torch.zeros_like(xy_all[f][..., :1])], -1), a)[..., :2]  # [V, P, J, 2]
        conf = obs[..., 2]
        if id_cfg.gate_px_frac > 0:
            # gate relative to the diagonal of the predicted pose's box in this view
            big = torch.finfo(dtype).max
            um = torch.where(ok, uv[..., 0], torch.full_like(uv[..., 0], big)).amin(-1)
            uM = torch.where(ok, uv[..., 0], torch.full_like(uv[..., 0], -big)).amax(-1)
            vm = torch.where(ok, uv[..., 1], torch.full_like(uv[..., 1], big)).amin(-1)
            vM = torch.where(ok, uv[..., 1], torch.full_like(uv[..., 1], -big)).amax(-1)
            diag = torch.sqrt((uM - um).clamp_min(0) ** 2 + (vM - vm).clamp_min(0) ** 2)  # [V, P]
            far = (obs[..., :2] - uv).norm(dim=-1) > id_cfg.gate_px_frac * diag[..., None]
            gate = ok & far & (ok.sum(-1, keepdim=True) >= 6) & have_track[None, :, None]
            conf = torch.where(gate, torch.zeros_like(conf), conf)
        thr = tri_cfg.conf_thr if f < tri_cfg.pre_contact_frames else tri_cfg.conf_thr_tracked
        X, inl, n = triangulate_ransac(
            xy.permute(1, 2, 0, 3),  # [P, J, V, 2]
            Pmat,
            conf.permute(1, 2, 0),  # [P, J, V]
            conf_thr=thr,
            err_thr=tri_cfg.err_thr,
            min_views=tri_cfg.min_views,
            refine_steps=tri_cfg.refine_steps,
            huber_delta=tri_cfg.huber_delta,
            backend=backend,
        )
        valid = torch.isfinite(X).all(-1)  # [P, J]
        poses[f, ..., :3] = torch.where(valid[..., None], X, torch.zeros_like(X))
        poses[f, ..., 3] = valid.to(dtype)
        assign_all[f] = a
        n_inl_all[f] = n
        hist = torch.cat([hist[1:], torch.where(valid[..., None], X, torch.zeros_like(X))[None]], 0)
        hist_ok = torch.cat([hist_ok[1:], valid[None]], 0)
        have_track = have_track | (valid.sum(-1) >= 6)
        if progress is not None:
            progress(f + 1)
    return TrackResult(poses, assign_all, n_inl_all)
