"""The image stage's passes over the frames: detector boxes, the track's prompts, keypoints back.

* :func:`first_pass` -- every frame batched: person detector (the first frame: the given boxes),
  top-down pose model on every box's crop.
* :func:`prompted_pass` -- the pose model on crops prompted by each person's tracked 3D pose
  projected into the view (:class:`~h4d_fast.detect.prompts.PromptPlan`), for chosen frames.
* :func:`causal_pass` -- from the first contact on, frames in track order, a chunk at a time:
  every tracked person's pose extrapolated from the track so far gives their crops in the chunk's
  frames; each person's prompted detections (their identity is the prompt's) are triangulated
  before the next chunk's prompts are made (the paper's prompt through contact).

Results are rows (:class:`FlatDetections`) packed into :class:`~h4d_fast.data.Detections` at the end.
Keypoints come back to the calibration's pixels: image pixels, scaled when the image is a uniformly
resized version of the calibrated one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..camera import CameraSet
from ..config import Config, DetectConfig
from ..constants import NUM_COCO
from ..data import Detections
from ..io.frames import FrameBatch, FrameLoader
from .api import PersonDetector, PoseModel
from .crops import apply_affine, box_affine, crop_images
from .prompts import PromptPlan, project_people, prompt_regions

__all__ = ["Counters", "FlatDetections", "causal_pass", "extrapolate", "first_pass", "prompted_pass", "run_pose"]


# ------------------------------------------------------------ flat results
@dataclass
class FlatDetections:
    """Detections as rows: frame position ``f [N]``, view ``v [N]``, ``kpts [N, 17, 3]``,
    ``boxes [N, 5]``, ``identity [N]`` (-1 unknown); CPU tensors."""

    f: Tensor
    v: Tensor
    kpts: Tensor
    boxes: Tensor
    identity: Tensor

    @staticmethod
    def cat(parts: Sequence["FlatDetections"]) -> "FlatDetections":
        if not parts:
            return FlatDetections(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                                  torch.zeros(0, NUM_COCO, 3), torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
        return FlatDetections(*(torch.cat([getattr(p, k) for p in parts]) for k in ("f", "v", "kpts", "boxes", "identity")))

    def select(self, keep: Tensor) -> "FlatDetections":
        return FlatDetections(self.f[keep], self.v[keep], self.kpts[keep], self.boxes[keep], self.identity[keep])

    def pack(self, F: int, V: int) -> tuple[Detections, Tensor]:
        """Padded :class:`Detections` ``[F, V, D]`` (identity only when some row has one) and each
        row's slot ``[N]``."""
        N = self.f.shape[0]
        cell = self.f * V + self.v
        order = torch.argsort(cell, stable=True)
        counts = torch.bincount(cell, minlength=F * V)
        D = max(1, int(counts.max()) if N else 1)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.empty(N, dtype=torch.long)
        slot[order] = torch.arange(N) - starts[cell[order]]
        det = Detections.empty(F, V, D)
        det.kpts[self.f, self.v, slot] = self.kpts.float()
        det.boxes[self.f, self.v, slot] = self.boxes.float()
        det.valid[self.f, self.v, slot] = True
        if bool((self.identity >= 0).any()):
            det.identity = torch.full((F, V, D), -1, dtype=torch.long)
            det.identity[self.f, self.v, slot] = self.identity
        return det, slot

    def as_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {prefix + k: getattr(self, k).numpy() for k in ("f", "v", "kpts", "boxes", "identity")}

    @staticmethod
    def from_arrays(a: dict[str, np.ndarray], prefix: str = "") -> "FlatDetections":
        return FlatDetections(*(torch.from_numpy(np.asarray(a[prefix + k])) for k in ("f", "v", "kpts", "boxes", "identity")))


class Counters:
    """Seconds and counts per part of the stage (for the stage's stats and the benchmark)."""

    def __init__(self) -> None:
        self.t = {"decode_wait": 0.0, "detector": 0.0, "crop": 0.0, "pose": 0.0}
        self.n = {"images": 0, "crops": 0, "detector_images": 0}

    def add(self, key: str, dt: float) -> None:
        self.t[key] += dt


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_pose(pose: PoseModel, images: Tensor, image_index: Tensor, boxes: Tensor, crop_batch: int = 256,
             counters: Counters | None = None, rotation: Tensor | None = None) -> Tensor:
    """The pose model on the crops of ``boxes`` ``[N, 4+]`` (turned by ``rotation [N]``, radians)
    cut from ``images`` ``[B, H, W, 3]`` (``uint8`` RGB, channels last) -> ``[N, 17, 3]``
    keypoints in image pixels + confidence."""
    N = int(boxes.shape[0])
    out = torch.zeros(N, NUM_COCO, 3, dtype=torch.float32, device=images.device)
    if N == 0:
        return out
    hw = (int(pose.input_size[0]), int(pose.input_size[1]))
    rot = None if rotation is None else rotation.float().to(images.device)
    A = box_affine(boxes[:, :4].float().to(images.device), hw, float(pose.box_scale), rot)
    for s in range(0, N, max(1, crop_batch)):
        e = min(N, s + crop_batch)
        t0 = time.perf_counter()
        crops = crop_images(images, image_index[s:e].to(images.device), A[s:e], hw).to(pose.device)
        t1 = time.perf_counter()
        with torch.inference_mode():
            k = pose(crops)
        k = k.float()
        if counters is not None:
            _sync(torch.device(pose.device))
            counters.add("crop", t1 - t0)
            counters.add("pose", time.perf_counter() - t1)
            counters.n["crops"] += e - s
        out[s:e] = apply_affine(k.to(images.device), A[s:e])
    return out


def _size_factors(batch: FrameBatch, cal_size: Tensor) -> Tensor:
    """``[B, V, 2]`` factors from image pixels to calibration pixels: 1 unless the image is a
    uniformly scaled version of the calibrated one (a few pixels of difference are padding)."""
    s = cal_size[None].to(torch.float64) / batch.sizes.to(torch.float64).clamp_min(1)
    uniform = ((s[..., 0] - s[..., 1]).abs() < 0.01 * s[..., 0]) & ((s[..., 0] - 1).abs() > 0.02)
    return torch.where(uniform[..., None], s, torch.ones_like(s)).float()


def _to_calibration(rows: Tensor, boxes: Tensor, fac: Tensor) -> tuple[Tensor, Tensor]:
    k = rows.clone()
    k[..., :2] *= fac[:, None, :]
    b = boxes.clone()
    b[:, :4] *= fac.repeat(1, 2)
    return k, b


def _detector_boxes(detector: PersonDetector, batch: FrameBatch, cfg: DetectConfig, counters: Counters) -> list[Tensor]:
    """Per image of the batch (``b * V + v``) the kept detector boxes ``[K, 6]`` in image pixels:
    ``x1, y1, x2, y2, score, rotation`` (the crop's upright rotation from the detector's alignment
    keypoints where it gives them: a detector with ``detections`` / ``body_boxes`` / ``rotations``,
    as BlazePose's; else 0)."""
    th = batch.thumbs.flatten(0, 1)
    sx, sy = batch.thumb_scale
    aligned = cfg.rotate and all(callable(getattr(detector, m, None)) for m in ("detections", "body_boxes", "rotations"))
    out: list[Tensor] = []
    t0 = time.perf_counter()
    for s in range(0, th.shape[0], 64):
        with torch.inference_mode():
            if aligned:
                dets = detector.detections(th[s : s + 64].to(detector.device))
                res = [torch.cat([detector.body_boxes(d), detector.rotations(d)[:, None]], 1) for d in dets]
            else:
                res = [torch.cat([r, torch.zeros(r.shape[0], 1, dtype=r.dtype, device=r.device)], 1) for r in detector(th[s : s + 64].to(detector.device))]
        for r in res:
            r = r.float()
            r = r[r[:, 4] > cfg.det_score_thr][: cfg.max_people]
            bx = r.clone()
            bx[:, [0, 2]] = (r[:, [0, 2]] + 0.5) / sx - 0.5
            bx[:, [1, 3]] = (r[:, [1, 3]] + 0.5) / sy - 0.5
            out.append(bx.to(batch.images.device))
    _sync(torch.device(detector.device))
    counters.add("detector", time.perf_counter() - t0)
    counters.n["detector_images"] += th.shape[0]
    return out


def first_pass(loader: FrameLoader, pose: PoseModel, detector: PersonDetector, cfg: DetectConfig, cal_size: Tensor,
               init_boxes: Tensor | None, init_valid: Tensor | None, counters: Counters,
               progress: Callable[[int], None] | None = None) -> FlatDetections:
    """Detector boxes (or the first frame's given boxes) -> pose model, for the loader's frames."""
    parts: list[FlatDetections] = []
    done = 0
    t_wait = time.perf_counter()
    for batch in loader:
        counters.add("decode_wait", time.perf_counter() - t_wait)
        B, V = batch.sizes.shape[:2]
        counters.n["images"] += B * V
        per_image = _detector_boxes(detector, batch, cfg, counters)
        boxes, img, ident = [], [], []
        for i, bx in enumerate(per_image):
            b, v = divmod(i, V)
            if batch.positions[b] == 0 and init_boxes is not None and bool(init_valid[v].any()):
                # the first frame: the given boxes name their people
                fac = _size_factors(batch, cal_size)[b, v]
                keep = init_valid[v].nonzero()[:, 0]
                ib = init_boxes[v, keep].float() / fac.repeat(2).to(init_boxes.device)
                bx = torch.cat([ib, torch.ones(len(keep), 1), torch.zeros(len(keep), 1)], 1).to(batch.images.device)
                ident.append(keep.to(torch.long))
            else:
                ident.append(torch.full((bx.shape[0],), -1, dtype=torch.long))
            boxes.append(bx)
            img.append(torch.full((bx.shape[0],), i, dtype=torch.long))
        boxes_t = torch.cat(boxes) if boxes else torch.zeros(0, 6)
        img_t = torch.cat(img)
        flat_images = batch.images.flatten(0, 1)
        k = run_pose(pose, flat_images, img_t, boxes_t[:, :4], cfg.crop_batch, counters, boxes_t[:, 5]).cpu()
        bf, vf = img_t // V, img_t % V
        fac = _size_factors(batch, cal_size)[bf, vf]
        k, bcal = _to_calibration(k, boxes_t[:, :5].cpu().float(), fac)
        pos = torch.as_tensor(batch.positions, dtype=torch.long)[bf]
        parts.append(FlatDetections(pos, vf, k, bcal, torch.cat(ident)))
        done += B
        if progress is not None:
            progress(done)
        t_wait = time.perf_counter()
    return FlatDetections.cat(parts)


def prompted_pass(loader: FrameLoader, pose: PoseModel, plan: PromptPlan, cfg: DetectConfig, cal_size: Tensor,
                  counters: Counters, progress: Callable[[int], None] | None = None) -> FlatDetections:
    """The pose model on each prompted person's projected box, for the loader's frames."""
    parts: list[FlatDetections] = []
    done = 0
    t_wait = time.perf_counter()
    for batch in loader:
        counters.add("decode_wait", time.perf_counter() - t_wait)
        B, V = batch.sizes.shape[:2]
        counters.n["images"] += B * V
        pos = torch.as_tensor(batch.positions, dtype=torch.long)
        sel = plan.prompt[pos].nonzero()  # [n, 3] = (b, v, p)
        b, v, p = sel.unbind(1)
        fac = _size_factors(batch, cal_size)[b, v]
        boxes = plan.boxes[pos[b], v, p].float() / fac.repeat(1, 2)  # to image pixels
        k = run_pose(pose, batch.images.flatten(0, 1), b * V + v, boxes, cfg.crop_batch, counters,
                     plan.rotation[pos[b], v, p]).cpu()
        score = k[..., 2].mean(-1, keepdim=True)
        k, bcal = _to_calibration(k, torch.cat([boxes, score], 1), fac)
        parts.append(FlatDetections(pos[b], v, k, bcal, p.clone()))
        done += B
        if progress is not None:
            progress(done)
        t_wait = time.perf_counter()
    return FlatDetections.cat(parts)




def extrapolate(track: Tensor, n: int, max_gap: int = 15, horizon: int = 10) -> Tensor:
    """Each joint's pose in the ``n`` frames after ``track [T, P, J, 4]``: constant velocity from
    its last two valid frames (when at most 3 frames apart; else held), extrapolated at most
    ``horizon`` frames; invalid where the joint was last seen more than ``max_gap`` frames before.

    Returns:
        ``[n, P, J, 4]``.
    """
    T, P, J = track.shape[:3]
    out = torch.zeros(n, P, J, 4, dtype=track.dtype, device=track.device)
    if T == 0:
        return out
    valid = track[..., 3] > 0
    idx = torch.arange(T, device=track.device).view(T, 1, 1)
    last = torch.where(valid, idx, torch.full_like(idx, -1)).amax(0)  # [P, J]
    prev = torch.where(valid & (idx < last[None]), idx, torch.full_like(idx, -1)).amax(0)
    lc, pc = last.clamp_min(0), prev.clamp_min(0)
    g = lambda t: track[..., :3].gather(0, t[None, :, :, None].expand(1, P, J, 3))[0]  # noqa: E731
    X1, X0 = g(lc), g(pc)
    use_v = (prev >= 0) & (last - prev <= 3)
    vel = torch.where(use_v[..., None], (X1 - X0) / (last - prev).clamp_min(1)[..., None].to(X1.dtype), torch.zeros_like(X1))
    for k in range(n):
        dt = (T + k - last).to(X1.dtype)  # [P, J]
        out[k, ..., :3] = X1 + vel * dt.clamp(max=horizon)[..., None]
        out[k, ..., 3] = ((last >= 0) & (T + k - last <= max_gap)).to(out.dtype)
    return out


def _rows_in(flat: FlatDetections, lo: int, hi: int) -> Tensor:
    return (flat.f >= lo) & (flat.f < hi)


def triangulate_identified(rows: FlatDetections, n_frames: int, cams: CameraSet, num_people: int, cfg: Config) -> Tensor:
    """3D poses ``[n_frames, P, J, 4]`` of detections that know their person (``rows.identity``,
    frames ``rows.f`` counted from 0): per person, frame and joint, RANSAC over the views
    (:func:`~h4d_fast.ops.triangulate_ransac` with ``triangulation.conf_thr_tracked`` /
    ``err_thr`` / ``min_views``); no matching is needed, the prompt named the person."""
    from ..ops import triangulate_ransac

    V, P, J = len(cams), num_people, NUM_COCO
    tc = cfg.triangulation
    out = torch.zeros(n_frames, P, J, 4, dtype=torch.float64)
    m = rows.identity >= 0
    if not bool(m.any()):
        return out
    f, v, p, k = rows.f[m], rows.v[m], rows.identity[m], rows.kpts[m].double()
    obs = torch.zeros(n_frames, P, V, J, 3, dtype=torch.float64)
    obs[f, p, v] = k  # one prompted crop per person and view (a later row of the same cell wins)
    c = cams.to(dtype=torch.float64)
    uv = obs[..., :2].permute(0, 1, 3, 2, 4)  # [n, P, J, V, 2]
    xy = c.pixels_to_normalized(uv)
    conf = obs[..., 2].permute(0, 1, 3, 2)  # [n, P, J, V]
    xy = torch.where((conf > 0)[..., None] & torch.isfinite(xy), xy, torch.full_like(xy, float("nan")))
    X, _, n = triangulate_ransac(xy, c.extrinsics, torch.nan_to_num(conf), conf_thr=tc.conf_thr_tracked, err_thr=tc.err_thr,
                                 min_views=tc.min_views, refine_steps=tc.refine_steps, huber_delta=tc.huber_delta)
    ok = (n >= tc.min_views) & torch.isfinite(X).all(-1)
    out[..., :3] = torch.where(ok[..., None], X, torch.zeros_like(X))
    out[..., 3] = ok.double()
    return out


def causal_pass(loader: FrameLoader, pose: PoseModel, flat1: FlatDetections, track: Tensor, cams: CameraSet,
                num_people: int, cfg: Config, counters: Counters, progress: Callable[[int], None] | None = None,
                fallback: Tensor | None = None) -> tuple[FlatDetections, Tensor]:
    """Frames from the first contact on, in order, a chunk (the loader's batch) at a time.

    For each chunk: every person's pose extrapolated from ``track`` (:func:`extrapolate`) is
    projected into every view; each visible person's crop is run (identity = the person);
    first-pass detections of the chunk that match a prompted person (OKS above
    ``detect.prompt_match_oks``) are replaced; each person's prompted detections are triangulated
    (:func:`triangulate_identified`) and extend ``track`` before the next chunk is prompted.

    Args:
        loader: consecutive frame positions from the first causal frame to the end.
        flat1: the rows so far (all frames; first pass and any earlier prompts).
        track: ``[F, P, J, 4]`` 3D poses; valid before the loader's first frame (updated in place).
        fallback: ``[F, P, J, 4]`` poses prompting a joint the track has no recent history of (the
            first pass's track: at the first contact, or for a person the track order has lost).
    Returns:
        ``(rows of every frame: kept earlier rows + prompted rows, the track-order track)``.
    """
    from ..ops import oks

    dcfg = cfg.detect
    F, V = track.shape[0], len(cams)
    det1, slot1 = flat1.pack(F, V)
    keep1 = torch.ones(flat1.f.shape[0], dtype=torch.bool)
    prompted: list[FlatDetections] = []
    cal_size = cams.size
    done = 0
    t_wait = time.perf_counter()
    for batch in loader:
        counters.add("decode_wait", time.perf_counter() - t_wait)
        B = len(batch.positions)
        counters.n["images"] += B * V
        pos = torch.as_tensor(batch.positions, dtype=torch.long)
        s, e = int(pos[0]), int(pos[-1]) + 1
        pred = extrapolate(track[:s], e - s, dcfg.prompt_max_gap)  # [B, P, J, 4]
        if fallback is not None:
            pred = torch.where(pred[..., 3:] > 0, pred, fallback[s:e].to(pred))
        kp, ok = project_people(pred, cams)  # [B, V, P, J, 3]
        visible = ok.sum(-1) >= dcfg.min_visible_joints
        boxes, rot = prompt_regions(kp, ok, dcfg, pose)  # [B, V, P, 4], [B, V, P]
        b, v, p = visible.nonzero().unbind(1)
        fac = _size_factors(batch, cal_size)[b, v]
        img_boxes = boxes[b, v, p].float() / fac.repeat(1, 2)
        k = run_pose(pose, batch.images.flatten(0, 1), b * V + v, img_boxes, dcfg.crop_batch, counters, rot[b, v, p]).cpu()
        k, bcal = _to_calibration(k, torch.cat([img_boxes, k[..., 2].mean(-1, keepdim=True)], 1), fac)
        rows = FlatDetections(pos[b], v, k, bcal, p.clone())
        prompted.append(rows)
        # earlier detections of these frames that a prompted person replaces
        so = oks(kp, det1.kpts[pos].float(), backend="torch")  # [B, V, P, D]
        drop = ((so >= dcfg.prompt_match_oks) & visible[..., None]).any(2) & det1.valid[pos]
        old = _rows_in(flat1, s, e)
        keep1[old] = ~drop[flat1.f[old] - s, flat1.v[old], slot1[old]]
        # the prompted people's 3D poses in these frames
        rel = FlatDetections(rows.f - s, rows.v, rows.kpts, rows.boxes, rows.identity)
        track[s:e] = triangulate_identified(rel, e - s, cams, track.shape[1], cfg).to(track)
        done += B
        if progress is not None:
            progress(done)
        t_wait = time.perf_counter()
    return FlatDetections.cat([flat1.select(keep1)] + prompted), track
