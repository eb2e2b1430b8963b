"""A simulated top-down 2D pose detector (COCO-17) with the failure modes of real ones.

Per frame, view and person (vectorised in torch; geometry chunked over frames):

* projection of the ground-truth keypoints; behind-camera / out-of-image keypoints get confidence 0
  (position clipped to the image, or 0 when behind the camera);
* geometric occlusion by body capsules of the other person and of the own body (capsules a keypoint
  sits in excluded; the ray stops ``occlusion_stop`` short of the keypoint); face points are also
  hidden when they face away from the camera;
* confidences ~U(0.75, 0.98) when visible; occluded ones mostly low, some confidently wrong; pixel noise;
* gross outliers (random point in the box, another joint of either person, left/right flip), limb
  swaps between the two people near contact, duplicate detections, missed detections (a person with
  fewer than 3 keypoints in the image is always missed), false positives; boxes from the confident
  keypoints; slot order shuffled per view-frame (valid slots first, then empty padding).

Every random number is drawn up front from one ``numpy`` generator, so the result does not depend
on the chunk size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..camera import CameraSet
from ..constants import COCO_FLIP, NUM_COCO
from ..data import Detections
from ..ops import oks as ops_oks
from ..ops.boxes import box_iou as _iou
from .geometry import segment_params
from .skeleton import ATTACHED_MASK

# Limb groups for contact swaps (COCO indices): left arm, right arm, left leg, right leg.
SWAP_GROUPS: tuple[tuple[int, ...], ...] = ((7, 9), (8, 10), (13, 15), (14, 16))
FACE_VISIBLE_COS = -0.1  # a face point is hidden by its own head when cos(normal, to-camera) is below this

KIND_EMPTY, KIND_PRIMARY, KIND_DUPLICATE, KIND_FALSE_POSITIVE = -1, 0, 1, 2


@dataclass
class DetectorParams:
    """Knobs of the simulated detector (see :class:`h4d_fast.synth.SynthConfig` for the meaning)."""

    noise_px: float = 2.0
    occluded_noise_mult: float = 4.0
    visible_conf: tuple[float, float] = (0.75, 0.98)
    occluded_conf: tuple[float, float] = (0.05, 0.45)
    occluded_wrong_frac: float = 0.15
    occluded_wrong_conf: tuple[float, float] = (0.5, 0.8)
    outlier_frac: float = 0.10
    outlier_conf: tuple[float, float] = (0.55, 0.95)
    swap_prob: float = 0.15
    swap_distance: float = 0.9
    duplicate_prob: float = 0.05
    duplicate_noise_px: float = 1.5
    miss_prob: float = 0.03
    miss_prob_hard: float = 0.5
    hard_occluded_frac: float = 0.7
    hard_min_in_image: int = 6
    false_positive_prob: float = 0.02
    false_positive_conf: tuple[float, float] = (0.3, 0.8)
    box_pad: float = 0.1
    box_conf_thr: float = 0.2
    occlusion_stop: float = 0.04
    chunk_frames: int = 32


def _box_from(uv: Tensor, mask: Tensor, pad: float, W: Tensor, H: Tensor) -> tuple[Tensor, Tensor]:
    """Tight boxes over ``uv [..., 17, 2]`` where ``mask [..., 17]``, scaled by ``1 + pad`` about the centre and clipped.

    ``W, H`` broadcast against the leading dims. Returns ``boxes [..., 4]`` and ``has [...]`` (any masked point).
    """
    big = torch.finfo(uv.dtype).max
    has = mask.any(-1)
    lo = torch.where(mask[..., None], uv, torch.full_like(uv, big)).amin(-2)
    hi = torch.where(mask[..., None], uv, torch.full_like(uv, -big)).amax(-2)
    ctr = (lo + hi) / 2
    half = (hi - lo) / 2 * (1 + pad)
    lo = ctr - half
    hi = ctr + half
    x1 = lo[..., 0].clamp(min=0)
    y1 = lo[..., 1].clamp(min=0)
    x2 = torch.minimum(hi[..., 0], W - 1)
    y2 = torch.minimum(hi[..., 1], H - 1)
    box = torch.stack([x1, y1, x2, y2], -1)
    return torch.where(has[..., None], box, torch.zeros_like(box)), has


def oks(k1: Tensor, k2: Tensor, area: Tensor, conf_thr: float = 0.0) -> Tensor:
    """COCO OKS between keypoint sets ``[..., 17, 3]`` (broadcast) with object ``area [...]`` (px^2), over points of ``k2`` with conf > thr.

    Elementwise form of :func:`h4d_fast.ops.oks` (the one definition): ``k1`` takes ``k2``'s
    confidences, so only ``k2``'s count; areas below 1 px^2 count as 1.
    """
    k1, k2 = torch.broadcast_tensors(k1, k2)
    a = torch.cat([k1[..., :2], k2[..., 2:3]], -1)
    out = ops_oks(a[..., None, :, :], k2[..., None, :, :], area.to(k1.dtype).clamp_min(1.0)[..., None, None], kpt_thr=conf_thr, backend="torch")
    return out[..., 0, 0]


def project_and_occlude(
    cameras: CameraSet,
    kpts3d: Tensor,
    caps_a: Tensor,
    caps_b: Tensor,
    radii: Tensor,
    face_normals: Tensor,
    stop: float = 0.04,
    chunk: int = 32,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Project keypoints into every camera and test occlusion.

    Args:
        cameras: ``V`` cameras.
        kpts3d: ``[F, P, 17, 3]`` world keypoints.
        caps_a, caps_b: ``[F, P, C, 3]`` capsule end points; ``radii [P, C]``.
        face_normals: ``[F, P, 5, 3]`` outward unit normals of the five face points.
        stop: the ray from the camera stops this far short of the keypoint (metres).
        chunk: frames per chunk (bounds memory).
    Returns:
        uv ``[F, V, P, 17, 2]`` (float64), depth ``[F, V, P, 17]``, in_image ``[F, V, P, 17]`` bool,
        occluded ``[F, V, P, 17]`` bool (only meaningful where in_image).
    """
    F, P = kpts3d.shape[:2]
    V = len(cameras)
    uv, depth = cameras.project(kpts3d.to(cameras.dtype))  # [F, P, 17, V, 2], [F, P, 17, V]
    uv = uv.permute(0, 3, 1, 2, 4).contiguous()
    depth = depth.permute(0, 3, 1, 2).contiguous()
    W = cameras.size[:, 0].to(uv.dtype)[None, :, None, None]
    H = cameras.size[:, 1].to(uv.dtype)[None, :, None, None]
    in_img = (depth > 0.05) & (uv[..., 0] >= 0) & (uv[..., 0] <= W - 1) & (uv[..., 1] >= 0) & (uv[..., 1] <= H - 1)

    C = caps_a.shape[2]
    cen = cameras.centers.to(torch.float32)  # [V, 3]
    rad2 = (radii.to(torch.float32) ** 2).reshape(P * C)  # [PC]
    # own attached capsules never occlude: mask [P(kp person), 17, P*C]
    own = torch.zeros(P, NUM_COCO, P, C, dtype=torch.bool)
    for p in range(P):
        own[p, :, p] = ATTACHED_MASK
    own = own.reshape(P, NUM_COCO, P * C)
    occ = torch.zeros(F, V, P, NUM_COCO, dtype=torch.bool)
    for f0 in range(0, F, chunk):
        f1 = min(F, f0 + chunk)
        X = kpts3d[f0:f1].to(torch.float32)  # [f, P, 17, 3]
        A = caps_a[f0:f1].to(torch.float32).reshape(f1 - f0, P * C, 3)  # [f, PC, 3]
        B = caps_b[f0:f1].to(torch.float32).reshape(f1 - f0, P * C, 3)
        d1 = X[:, None] - cen[None, :, None, None]  # [f, V, P, 17, 3] camera -> keypoint
        L = d1.norm(dim=-1, keepdim=True)
        d1 = d1 * ((L - stop).clamp_min(0) / L.clamp_min(1e-9))
        d2 = B - A  # [f, PC, 3]
        # dot products with r = cam - A
        a = (d1 * d1).sum(-1)[..., None]  # [f, V, P, 17, 1]
        b = torch.einsum("fvpkd,fcd->fvpkc", d1, d2)  # [f, V, P, 17, PC]
        d1c = (d1 * cen[None, :, None, None]).sum(-1)[..., None]  # [f, V, P, 17, 1]
        c = d1c - torch.einsum("fvpkd,fcd->fvpkc", d1, A)
        e = (d2 * d2).sum(-1)[:, None, None, None, :]  # [f, 1, 1, 1, PC]
        rA = cen[None, :, None, :] - A[:, None]  # [f, V, PC, 3]
        fdot = (d2[:, None] * rA).sum(-1)[:, :, None, None, :]  # [f, V, 1, 1, PC]
        rr = (rA * rA).sum(-1)[:, :, None, None, :]
        s, t = segment_params(a, b, c, e, fdot)
        dist2 = rr + a * s * s + e * t * t + 2 * s * c - 2 * t * fdot - 2 * s * t * b
        hit = (dist2 < rad2) & ~own[None, None]
        occ[f0:f1] = hit.any(-1)
    # face points facing away from the camera are hidden by the own head
    to_cam = cameras.centers.to(kpts3d.dtype)[None, :, None, None] - kpts3d[:, None, :, :5]  # [F, V, P, 5, 3]
    cosang = (to_cam * face_normals[:, None]).sum(-1) / to_cam.norm(dim=-1).clamp_min(1e-9)
    occ[..., :5] |= cosang < FACE_VISIBLE_COS
    return uv, depth, in_img, occ


def simulate_detections(
    cameras: CameraSet,
    kpts3d: Tensor,
    caps_a: Tensor,
    caps_b: Tensor,
    radii: Tensor,
    face_normals: Tensor,
    pelvis_distance: Tensor,
    rng: np.random.Generator,
    prm: DetectorParams,
    present: Tensor | None = None,
) -> tuple[Detections, Tensor, Tensor, dict[str, Any]]:
    """Simulate the detector over a whole capture.

    Args:
        cameras: ``V`` cameras; kpts3d ``[F, P, 17, 3]``; capsules ``[F, P, C, 3]`` x2, radii ``[P, C]``;
        face_normals ``[F, P, 5, 3]``; pelvis_distance ``[F]`` (metres, for contact swaps);
        present ``[F, P]`` bool (default all): an absent person is in no image (never detected).
    Returns:
        detections (float32, ``D`` slots), init_boxes ``[V, P, 4]``, init_valid ``[V, P]``, and a dict with
        per-entry labels and counts.
    """
    F, P = kpts3d.shape[:2]
    V = len(cameras)
    K = NUM_COCO
    uv, depth, in_img, occ = project_and_occlude(cameras, kpts3d, caps_a, caps_b, radii, face_normals, prm.occlusion_stop, prm.chunk_frames)
    if present is not None:
        in_img = in_img & present.to(torch.bool)[:, None, :, None]
    occ = occ & in_img
    Wv = cameras.size[:, 0].to(torch.float64)  # [V]
    Hv = cameras.size[:, 1].to(torch.float64)
    W5 = Wv[None, :, None, None]  # broadcast against [F, V, P, 17]
    H5 = Hv[None, :, None, None]
    W3 = Wv[None, :, None]  # broadcast against [F, V, P]
    H3 = Hv[None, :, None]
    gt_uv = uv.clone()
    R = lambda *shape: torch.as_tensor(rng.random(shape))  # noqa: E731  uniform [0, 1) float64
    N = lambda *shape: torch.as_tensor(rng.standard_normal(shape))  # noqa: E731
    U = lambda lo_hi, *shape: lo_hi[0] + (lo_hi[1] - lo_hi[0]) * R(*shape)  # noqa: E731
    shp = (F, V, P, K)

    # ---- draw every random number up front (fixed order => independent of chunking)
    r_noise = N(*shp, 2)
    r_conf_vis = U(prm.visible_conf, *shp)
    r_conf_occ = U(prm.occluded_conf, *shp)
    r_wrong = R(*shp) < prm.occluded_wrong_frac
    r_conf_wrong = U(prm.occluded_wrong_conf, *shp)
    r_out = R(*shp) < prm.outlier_frac
    r_out_type = torch.as_tensor(rng.integers(0, 3, shp))
    r_out_pt = R(*shp, 2)
    r_out_person = torch.as_tensor(rng.integers(0, P, shp))
    r_out_joint = torch.as_tensor(rng.integers(1, K, shp))
    r_out_conf = U(prm.outlier_conf, *shp)
    r_out_noise = N(*shp, 2)
    r_swap = R(F, V, len(SWAP_GROUPS)) < prm.swap_prob
    r_miss = R(F, V, P)
    r_dup = R(F, V, P) < prm.duplicate_prob
    r_dup_noise = N(F, V, P, K, 2)
    r_dup_conf = U((0.85, 1.0), F, V, P, K)
    r_fp = R(F, V) < prm.false_positive_prob
    r_fp_src = R(F, V)
    r_fp_scale = U((0.45, 1.0), F, V)
    r_fp_pos = R(F, V, 8, 2)
    r_fp_flip = R(F, V) < 0.5
    r_fp_conf = U(prm.false_positive_conf, F, V, K)
    r_fp_noise = N(F, V, K, 2)
    r_order = R(F, V, 2 * P + 1)

    # ---- per-keypoint measurements
    sigma = torch.where(occ, prm.noise_px * prm.occluded_noise_mult, prm.noise_px)[..., None]
    xy = uv + sigma * r_noise
    conf = torch.where(occ, torch.where(r_wrong, r_conf_wrong, r_conf_occ), r_conf_vis)
    conf = torch.where(in_img, conf, torch.zeros_like(conf))

    # GT boxes per (f, v, p) from the in-image projections (outlier placement, FP placement, init boxes)
    gt_box, gt_has = _box_from(uv, in_img, 0.1, W3, H3)  # [F, V, P, 4]

    # ---- gross outliers
    is_out = r_out & in_img
    tb = gt_box[..., None, :]  # [F, V, P, 1, 4]
    p_box = torch.stack([tb[..., 0] + r_out_pt[..., 0] * (tb[..., 2] - tb[..., 0]), tb[..., 1] + r_out_pt[..., 1] * (tb[..., 3] - tb[..., 1])], -1)
    # another joint of either person: joint index (k + j) mod 17 with j in 1..16 (never the same joint of the same person)
    kidx = torch.arange(K)[None, None, None, :]
    oj = (kidx + r_out_joint) % K
    oj = torch.where(r_out_person == torch.arange(P)[None, None, :, None], oj, (kidx + r_out_joint - 1) % K)  # other person: any joint
    fi = torch.arange(F)[:, None, None, None].expand(shp)
    vi = torch.arange(V)[None, :, None, None].expand(shp)
    p_joint = uv[fi, vi, r_out_person, oj]  # [F, V, P, 17, 2]
    ok_joint = in_img[fi, vi, r_out_person, oj]
    flip = torch.tensor(COCO_FLIP)
    p_flip = uv[:, :, :, flip]
    ok_flip = in_img[:, :, :, flip] & (flip != torch.arange(K))[None, None, None]
    otype = torch.where((r_out_type == 1) & ~ok_joint, 0, r_out_type)
    otype = torch.where((otype == 2) & ~ok_flip, 0, otype)
    p_out = torch.where((otype == 0)[..., None], p_box, torch.where((otype == 1)[..., None], p_joint, p_flip)) + prm.noise_px * r_out_noise
    xy = torch.where(is_out[..., None], p_out, xy)
    conf = torch.where(is_out, r_out_conf, conf)

    # out-of-image / behind-camera positions: clipped / zero
    xy = torch.stack([torch.minimum(xy[..., 0].clamp_min(0), W5 - 1), torch.minimum(xy[..., 1].clamp_min(0), H5 - 1)], -1)
    xy = torch.where((depth > 0.05)[..., None], xy, torch.zeros_like(xy))

    # ---- missed detections
    n_in = in_img.sum(-1)  # [F, V, P]
    occ_frac = occ.sum(-1) / n_in.clamp_min(1)
    hard = (occ_frac > prm.hard_occluded_frac) | (n_in < prm.hard_min_in_image)
    missed = (r_miss < torch.where(hard, prm.miss_prob_hard, prm.miss_prob)) | (n_in < 3)

    # ---- limb swaps near contact (both people detected in the view)
    swap_ok = (pelvis_distance < prm.swap_distance)[:, None] & ~missed.any(-1)  # [F, V]
    is_swap = torch.zeros(shp, dtype=torch.bool)
    kp = torch.cat([xy, conf[..., None]], -1)  # [F, V, P, 17, 3] float64
    n_swaps = 0
    if P == 2:
        for g, idx in enumerate(SWAP_GROUPS):
            sw = r_swap[:, :, g] & swap_ok  # [F, V]
            n_swaps += int(sw.sum())
            for k in idx:
                a0 = kp[:, :, 0, k].clone()
                a1 = kp[:, :, 1, k].clone()
                kp[:, :, 0, k] = torch.where(sw[..., None], a1, a0)
                kp[:, :, 1, k] = torch.where(sw[..., None], a0, a1)
                is_swap[:, :, 0, k] |= sw
                is_swap[:, :, 1, k] |= sw

    # ---- duplicates
    dup = r_dup & ~missed
    kd = kp.clone()
    kd[..., :2] = kd[..., :2] + prm.duplicate_noise_px * r_dup_noise * (kp[..., 2:] > 0)
    kd[..., 2] = kp[..., 2] * r_dup_conf

    # ---- false positives: a real projected pose (all 17 in image) moved elsewhere, scaled, maybe mirrored
    full = in_img.all(-1)  # [F, V, P]
    src = torch.nonzero(full.reshape(-1)).squeeze(-1)
    fp = r_fp.clone()
    if src.numel() == 0:
        fp[:] = False
    kfp = torch.zeros(F, V, K, 3, dtype=torch.float64)
    if bool(fp.any()):
        pick = src[(r_fp_src * src.numel()).long().clamp_max(src.numel() - 1)]  # [F, V]
        flat = uv.reshape(F * V * P, K, 2)
        pose = flat[pick]  # [F, V, 17, 2]
        pose = torch.where(r_fp_flip[..., None, None], torch.stack([-pose[..., 0], pose[..., 1]], -1)[..., flip, :], pose)
        lo = pose.amin(-2, keepdim=True)
        hi = pose.amax(-2, keepdim=True)
        pose = (pose - (lo + hi) / 2) * r_fp_scale[..., None, None]
        half = (hi - lo)[..., 0, :] / 2 * r_fp_scale[..., None]  # [F, V, 2]
        Wf = Wv[None, :].expand(F, V)
        Hf = Hv[None, :].expand(F, V)
        span = torch.stack([(Wf - 1 - 2 * half[..., 0]).clamp_min(0), (Hf - 1 - 2 * half[..., 1]).clamp_min(0)], -1)  # [F, V, 2]
        cands = half[:, :, None] + r_fp_pos * span[:, :, None]  # [F, V, 8, 2] candidate centres
        cbox = torch.cat([cands - half[:, :, None], cands + half[:, :, None]], -1)  # [F, V, 8, 4]
        ov = _iou(cbox[:, :, :, None], gt_box[:, :, None]).amax(-1)  # [F, V, 8]
        best = ov.argmin(-1)
        ctr = cands.gather(2, best[..., None, None].expand(F, V, 1, 2))[:, :, 0]  # [F, V, 2]
        kfp[..., :2] = pose + ctr[:, :, None] + 3.0 * r_fp_noise
        kfp[..., 2] = r_fp_conf
    # ---- candidates -> boxes -> shuffled slots
    cand = torch.cat([kp, kd, kfp[:, :, None]], 2)  # [F, V, 2P+1, 17, 3]
    exists = torch.cat([~missed, dup, fp[..., None]], 2)  # [F, V, 2P+1]
    kind = torch.tensor([KIND_PRIMARY] * P + [KIND_DUPLICATE] * P + [KIND_FALSE_POSITIVE])
    person = torch.tensor(list(range(P)) + list(range(P)) + [-1])
    confm = cand[..., 2] > prm.box_conf_thr
    confm = torch.where(confm.any(-1, keepdim=True), confm, cand[..., 2] > 0)
    box, has = _box_from(cand[..., :2], confm, prm.box_pad, W3, H3)
    exists = exists & has
    score = cand[..., 2].mean(-1)
    boxes = torch.cat([box, score[..., None]], -1)  # [F, V, 2P+1, 5]
    key = r_order + 2.0 * (~exists)
    order = key.argsort(-1)
    D = max(int(exists.sum(-1).max()), 1)
    order = order[..., :D]
    g_k = order[..., None, None].expand(F, V, D, K, 3)
    kpts = cand.gather(2, g_k)
    bx = boxes.gather(2, order[..., None].expand(F, V, D, 5))
    valid = exists.gather(2, order)
    kpts = torch.where(valid[..., None, None], kpts, torch.zeros_like(kpts))
    bx = torch.where(valid[..., None], bx, torch.zeros_like(bx))
    slot_kind = torch.where(valid, kind[order], torch.full_like(order, KIND_EMPTY))
    slot_person = torch.where(valid, person[order], torch.full_like(order, -1))
    dets = Detections(kpts.to(torch.float32), bx.to(torch.float32), valid)

    # ---- identity boxes at frame 0 (annotator boxes from the GT projection)
    n_vis0 = (in_img[0] & ~occ[0]).sum(-1)  # [V, P]
    init_valid = (n_in[0] >= 6) & (n_vis0 >= 4)
    init_boxes = torch.where(init_valid[..., None], gt_box[0], torch.zeros_like(gt_box[0])).to(torch.float32)

    delivered = ~missed[..., None] & in_img  # [F, V, P, 17]
    area = ((gt_box[..., 2] - gt_box[..., 0]) * (gt_box[..., 3] - gt_box[..., 1]))  # [F, V, P]
    dup_oks = oks(kd, kp, area)  # [F, V, P]
    # per-entry labels: [F, V, P, 17] unless noted; entry (f, v, p) = what was generated for person p's
    # primary detection in view v (find its slot through slot_person / slot_kind)
    labels = {
        "gt_uv": gt_uv,  # [F, V, P, 17, 2] float64
        "in_image": in_img,
        "is_occluded": occ,  # among in-image keypoints
        "is_outlier": is_out & ~missed[..., None],
        "is_swapped": is_swap,
        "delivered": delivered,
        "missed": missed,  # [F, V, P]
        "duplicated": dup,  # [F, V, P]
        "duplicate_oks": torch.where(dup, dup_oks, torch.zeros_like(dup_oks)),
        "false_positive": fp,  # [F, V]
        "slot_kind": slot_kind,  # [F, V, D]
        "slot_person": slot_person,  # [F, V, D]
    }
    n_in_tot = int(in_img.sum())
    stats = {
        "occluded_frac": float(occ.sum()) / max(n_in_tot, 1),
        "outlier_frac": float((is_out & delivered).sum()) / max(int(delivered.sum()), 1),
        "counts": {
            "detections": int(valid.sum()),
            "outliers": int((is_out & delivered).sum()),
            "duplicates": int(dup.sum()),
            "swaps": int(n_swaps),
            "swapped_keypoints": int(is_swap.sum()),
            "misses": int(missed.sum()),
            "false_positives": int(fp.sum()),
            "slots": D,
        },
    }
    return dets, init_boxes, init_valid, {"labels": labels, **stats}
