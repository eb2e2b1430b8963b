"""The track's prompt: each person's 3D pose projected into every view gives their crop there.

* :func:`project_people` / :func:`~h4d_fast.detect.crops.keypoint_boxes`: a person's prompt box in a
  view is the box of their projected joints, padded by ``prompt_box_pad`` on each side;
* :func:`contact_frames`: frames where two people's closest joints are nearer than
  ``prompt_contact_m`` -- from the first one on, the stage prompts every tracked person in track
  order (:func:`~h4d_fast.detect.passes.causal_pass`);
* :func:`plan_prompts`: before that, where the first pass needs help --
  **overlapping views** (two people's projected boxes overlap by more than ``prompt_overlap`` of
  the smaller box: one stands behind the other in that view; every visible person is prompted)
  and **missed people** (a person visible in a view whom no first-pass detection matches, OKS with
  the projected pose below ``prompt_match_oks``).

A prompted detection carries the person's index as identity. A first-pass detection in a
prompted view that matches a prompted person is replaced by the prompted one; the others (people
no track covers yet, bystanders) stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ..camera import CameraSet
from ..config import DetectConfig
from ..data import Detections
from .crops import keypoint_boxes, keypoint_regions, upright

__all__ = ["PromptPlan", "contact_frames", "overlap_views", "plan_prompts", "project_people"]


@dataclass
class PromptPlan:
    """Where the prompted pass runs.

    Attributes:
        prompt: ``[F, V, P]`` bool -- crop person ``p`` in view ``v`` of frame ``f``.
        boxes: ``[F, V, P, 4]`` the prompt boxes (calibration pixels), measured along the crop's
            axes turned by ``rotation`` (see :func:`~h4d_fast.detect.crops.keypoint_regions`).
        rotation: ``[F, V, P]`` the crops' rotation (radians).
        drop: ``[F, V, D]`` bool -- first-pass detections the prompted ones replace.
        reasons: counts of prompted person-views by reason (``overlap``, ``missed``).
    """

    prompt: Tensor
    boxes: Tensor
    rotation: Tensor
    drop: Tensor
    reasons: dict[str, int]

    @property
    def frames(self) -> list[int]:
        """Frame positions with at least one prompt."""
        return self.prompt.flatten(1).any(1).nonzero()[:, 0].tolist()


def project_people(poses: Tensor, cams: CameraSet) -> tuple[Tensor, Tensor]:
    """Project 3D poses into every view.

    Args:
        poses: ``[F, P, J, 4]`` world keypoints + valid.
        cams: ``V`` cameras (their ``size`` bounds the image).
    Returns:
        ``kpts [F, V, P, J, 3]`` pixels with confidence 1 where the joint is valid, in front of the
        camera and inside the image (else 0), and that mask ``[F, V, P, J]``.
    """
    c = cams.to(device=poses.device, dtype=torch.float64)
    X = poses[..., :3].double()
    uv, z = c.project(X)  # [F, P, J, V, 2], [F, P, J, V]
    uv = uv.permute(0, 3, 1, 2, 4)  # [F, V, P, J, 2]
    z = z.permute(0, 3, 1, 2)
    wh = c.size.to(uv)[None, :, None, None, :]  # [1, V, 1, 1, 2]
    ok = (poses[..., 3] > 0)[:, None] & (z > 0) & (uv >= 0).all(-1) & (uv < wh).all(-1) & torch.isfinite(uv).all(-1)
    kpts = torch.cat([torch.where(ok[..., None], uv, torch.zeros_like(uv)), ok[..., None].to(uv.dtype)], -1)
    return kpts.float(), ok


def model_regions(pose: Any) -> Callable[[Tensor], tuple[Tensor, Tensor]] | None:
    """The pose model's own crop convention for keypoints, when it has one: BlazePose's region
    (:func:`~h4d_fast.detect.models.region_from_keypoints`: the square about the mid-hip, turned
    upright), which it was trained on; ``pose.region_from_keypoints`` of any other model; else None."""
    fn = getattr(pose, "region_from_keypoints", None)
    if callable(fn):
        return fn
    try:
        from .models import BlazePoseLandmarks, region_from_keypoints
    except ImportError:  # pragma: no cover - the models ship with the package
        return None
    return region_from_keypoints if isinstance(pose, BlazePoseLandmarks) else None


def prompt_regions(kpts: Tensor, ok: Tensor, cfg: DetectConfig, pose: Any = None) -> tuple[Tensor, Tensor]:
    """Prompt boxes ``[..., 4]`` and crop rotations ``[...]`` of projected poses ``kpts [..., J, 3]``.

    The pose model's own convention where it has one (:func:`model_regions`), else the box of the
    joints padded by ``detect.prompt_box_pad`` along the crop's axes; upright with ``detect.rotate``.
    """
    shape = kpts.shape[:-2]
    fn = model_regions(pose)
    if fn is not None and ok.numel():
        k = torch.cat([kpts[..., :2], ok[..., None].to(kpts.dtype)], -1).reshape(-1, kpts.shape[-2], 3)
        boxes, rot = fn(k.float())
        boxes, rot = boxes.reshape(*shape, 4).to(kpts.dtype), rot.reshape(shape).to(kpts.dtype)
        have = ok[..., 5] & ok[..., 6] & ok[..., 11] & ok[..., 12]  # its region needs hips and shoulders
        gen_rot = upright(kpts, ok)
        gen = keypoint_regions(kpts, ok, cfg.prompt_box_pad, gen_rot)
        boxes = torch.where(have[..., None], boxes, gen)
        rot = torch.where(have, rot, gen_rot)
    else:
        rot = upright(kpts, ok)
        boxes = keypoint_regions(kpts, ok, cfg.prompt_box_pad, rot if cfg.rotate else torch.zeros_like(rot))
    if not cfg.rotate:
        rot = torch.zeros_like(rot)
    return boxes, rot


def contact_frames(poses: Tensor, distance_m: float, dilate: int = 0) -> Tensor:
    """``[F]`` bool: frames where two people's closest valid joints are nearer than ``distance_m``,
    dilated by ``dilate`` frames either side."""
    F, P = poses.shape[:2]
    close = torch.zeros(F, dtype=torch.bool, device=poses.device)
    X = poses[..., :3].double()
    ok = poses[..., 3] > 0
    for a in range(P):
        for b in range(a + 1, P):
            d = torch.cdist(X[:, a], X[:, b])  # [F, J, J]
            d = torch.where(ok[:, a, :, None] & ok[:, b, None, :], d, torch.full_like(d, float("inf")))
            close |= d.flatten(1).amin(1) < distance_m
    if dilate > 0 and bool(close.any()):
        k = 2 * int(dilate) + 1
        close = torch.nn.functional.max_pool1d(close[None, None].float(), k, 1, int(dilate))[0, 0] > 0
    return close


def overlap_views(boxes: Tensor, visible: Tensor, frac: float) -> Tensor:
    """``[F, V]`` bool: two visible people's boxes (``[F, V, P, 4]``) overlap by more than ``frac``
    of the smaller box's area."""
    x1 = torch.maximum(boxes[..., :, None, 0], boxes[..., None, :, 0])
    y1 = torch.maximum(boxes[..., :, None, 1], boxes[..., None, :, 1])
    x2 = torch.minimum(boxes[..., :, None, 2], boxes[..., None, :, 2])
    y2 = torch.minimum(boxes[..., :, None, 3], boxes[..., None, :, 3])
    inter = (x2 - x1).clamp_min(0) * (y2 - y1).clamp_min(0)  # [F, V, P, P]
    area = (boxes[..., 2] - boxes[..., 0]).clamp_min(0) * (boxes[..., 3] - boxes[..., 1]).clamp_min(0)
    small = torch.minimum(area[..., :, None], area[..., None, :]).clamp_min(1e-9)
    P = boxes.shape[-2]
    pair = visible[..., :, None] & visible[..., None, :] & ~torch.eye(P, dtype=torch.bool, device=boxes.device)
    return ((inter / small > frac) & pair).flatten(-2).any(-1)


def plan_prompts(poses: Tensor, cams: CameraSet, first: Detections, cfg: DetectConfig, until: int | None = None,
                 pose: Any = None) -> PromptPlan:
    """Where to run the prompted pass before contact (module docstring).

    Args:
        poses: ``[F, P, J, 4]`` the first pass's tracked (refined) 3D poses.
        cams: the cameras.
        first: the first pass's detections ``[F, V, D]`` (calibration pixels).
        cfg: the ``detect`` settings.
        until: only frames before this position (default: all).
        pose: the pose model (its crop convention, :func:`prompt_regions`).
    """
    from ..ops import oks

    kpts, ok = project_people(poses, cams)  # [F, V, P, J, 3], [F, V, P, J]
    visible = ok.sum(-1) >= cfg.min_visible_joints  # [F, V, P]
    boxes = keypoint_boxes(kpts, ok, cfg.prompt_box_pad)  # [F, V, P, 4], for overlaps
    crop_boxes, rot = prompt_regions(kpts, ok, cfg, pose)
    F, V, P = visible.shape
    overlap = overlap_views(boxes, visible, cfg.prompt_overlap) if P > 1 else torch.zeros(F, V, dtype=torch.bool)
    dk = first.kpts.float().to(kpts.device)
    s = oks(kpts, dk, backend="torch")  # [F, V, P, D]
    s = torch.where(first.valid.to(kpts.device)[:, :, None, :], s, torch.zeros_like(s))
    matched = s >= cfg.prompt_match_oks
    missed = visible & ~matched.any(-1)
    by_overlap = visible & overlap[..., None]
    prompt = by_overlap | missed
    if until is not None:
        prompt[until:] = False
    drop = (matched & prompt[..., None]).any(2) & first.valid.to(kpts.device)  # [F, V, D]
    reasons = {"overlap": int((by_overlap & prompt).sum()), "missed": int((missed & ~by_overlap & prompt).sum())}
    return PromptPlan(prompt, crop_boxes, rot, drop, reasons)
