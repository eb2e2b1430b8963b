"""Stage 1: per-view filtering of 2D detections and OKS duplicate removal.

For every view-frame, batched over the whole sequence:
1. a keypoint with a non-finite coordinate or confidence becomes undetected (conf 0);
2. a detection with fewer than ``min_kpts`` keypoints over ``kpt_conf_thr`` is dropped (the
   reference drops ``<= 5`` of 17);
3. a detection whose keypoint box covers less than ``min_box_area_frac`` of the image is dropped
   (the reference's ``BBOX_AREA_THRES``);
4. OKS duplicates (``OKS > oks_thr``) are removed with the configured policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import FilterConfig
from ..data import Detections
from ..ops import dedup_oks
from ..ops.oks import keypoint_box_area
from ._threads import single_thread


@dataclass
class FilterStats:
    detections_in: int
    too_few_keypoints: int
    too_small: int
    duplicates_removed: int
    nonfinite_keypoints: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def sanitize_keypoints(kpts: Tensor) -> tuple[Tensor, int]:
    """Zero every keypoint whose x, y or conf is not finite (a data gap, not an error).

    ``kpts [..., J, 3] -> ([..., J, 3], count)``.
    """
    bad = ~torch.isfinite(kpts).all(-1)
    n = int(bad.sum())
    if n:
        kpts = torch.where(bad[..., None], torch.zeros_like(kpts), kpts)
    return kpts, n


def filter_detections(det: Detections, image_size: Tensor, cfg: FilterConfig, backend: str = "auto") -> tuple[Detections, FilterStats]:
    """Apply stage 1 to a whole sequence.

    Args:
        det: detections ``kpts [F, V, D, J, 3]``, ``valid [F, V, D]``.
        image_size: ``[V, 2]`` width, height per view.
        cfg: thresholds and policy.
    Returns:
        The detections with an updated ``valid`` mask (and non-finite keypoints zeroed; boxes and
        the prompted detections' ``identity`` unchanged), and counts.
    """
    with single_thread(det.kpts.device):
        return _filter(det, image_size, cfg, backend)


def _filter(det: Detections, image_size: Tensor, cfg: FilterConfig, backend: str) -> tuple[Detections, FilterStats]:
    kpts, n_nan = sanitize_keypoints(det.kpts)
    valid = det.valid.clone()
    n_in = int(valid.sum())
    conf = kpts[..., 2]
    n_ok = (conf > cfg.kpt_conf_thr).sum(-1)  # [F, V, D]
    few = valid & (n_ok < cfg.min_kpts)
    valid &= ~few
    area = keypoint_box_area(kpts, cfg.kpt_conf_thr)  # [F, V, D]
    img_area = (image_size[:, 0] * image_size[:, 1]).to(area)  # [V]
    small = valid & (area < cfg.min_box_area_frac * img_area[None, :, None])
    valid &= ~small
    keep = dedup_oks(kpts, valid, thr=cfg.oks_thr, policy=cfg.dedup_policy, kpt_thr=cfg.kpt_conf_thr, backend=backend)
    n_dup = int((valid & ~keep).sum())
    out = Detections(kpts, det.boxes, keep, det.identity)
    return out, FilterStats(n_in, int(few.sum()), int(small.sum()), n_dup, n_nan)
