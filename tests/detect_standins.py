"""Stand-ins for the image stage's models, and synthetic images they can read.

:func:`render_people` draws each person's projected COCO-17 skeleton into every camera's image:
grey limbs and a disk per joint in that joint's own saturated colour (the same colours for every
person), the nearer person last so it occludes the farther one, on a black background.

* :class:`ColourPoseModel` (a :class:`~h4d_fast.detect.api.PoseModel`) finds each joint's colour in
  a crop and reports its sub-pixel centre, preferring the instance nearest the crop's centre. Two
  people in one crop therefore confuse it the way they confuse a real top-down model: it may take
  the other person's joint. A crop centred on one person (the track's prompt) mostly does not.
* :class:`BlobDetector` (a :class:`~h4d_fast.detect.api.PersonDetector`) returns the box of each
  connected blob of drawn pixels: people in contact merge into one box, as they do for a detector.

Everything is small and fast on a CPU (tests only).
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from h4d_fast.camera import CameraSet
from h4d_fast.constants import COCO_LIMBS, NUM_COCO

# 17 saturated colours, evenly spaced hues (RGB in [0, 1])
JOINT_COLOURS = torch.tensor([colorsys.hsv_to_rgb(j / NUM_COCO, 1.0, 1.0) for j in range(NUM_COCO)], dtype=torch.float32)
LIMB_GREY = 0.45


def render_people(cams: CameraSet, poses: Tensor, out_seq: Path, radius: float = 3.0, limb_px: int = 3, ext: str = ".png") -> None:
    """Write ``out_seq/exo/camXX/images/%05d<ext>`` for ``poses [F, P, 17, 4]`` (frame ids 1..F)."""
    import cv2

    F, P = poses.shape[:2]
    uv, z = cams.project(poses[..., :3].double())  # [F, P, J, V, 2], [F, P, J, V]
    W, H = (int(x) for x in cams.size[0].tolist())
    cols = (JOINT_COLOURS.numpy()[:, ::-1] * 255).astype(int).tolist()  # BGR for cv2
    grey = int(LIMB_GREY * 255)
    for v, name in enumerate(cams.names):
        folder = out_seq / "exo" / name / "images"
        folder.mkdir(parents=True, exist_ok=True)
        for f in range(F):
            img = np.zeros((H, W, 3), np.uint8)
            depth = z[f, :, :, v].mean(-1)  # [P]
            for p in torch.argsort(depth, descending=True).tolist():  # far first
                pts = uv[f, p, :, v].numpy()
                ok = (z[f, p, :, v] > 0).numpy() & (poses[f, p, :, 3] > 0).numpy()
                sh = 4  # fixed-point sub-pixel drawing
                q = np.round(pts * (1 << sh)).astype(np.int64)
                for a, b in COCO_LIMBS[:12]:
                    if ok[a] and ok[b]:
                        cv2.line(img, tuple(q[a]), tuple(q[b]), (grey, grey, grey), limb_px, cv2.LINE_AA, sh)
                for j in range(NUM_COCO):
                    if ok[j]:
                        cv2.circle(img, tuple(q[j]), int(round(radius * (1 << sh))), cols[j], -1, cv2.LINE_AA, sh)
            cv2.imwrite(str(folder / f"{f + 1:05d}{ext}"), img)


class ColourPoseModel:
    """Finds each joint's colour in the crop (see the module docstring)."""

    def __init__(self, input_size: tuple[int, int] = (96, 96), box_scale: float = 1.25, sigma: float = 0.2,
                 centre_sigma: float = 0.35, device: str = "cpu"):
        self.name = "colour-standin"
        self.input_size = input_size
        self.box_scale = box_scale
        self.sigma = sigma
        self.centre_sigma = centre_sigma
        self.device = torch.device(device)
        self.calls = 0

    def to(self, device):
        self.device = torch.device(device)
        return self

    def __call__(self, crops: Tensor) -> Tensor:
        self.calls += 1
        N, _, h, w = crops.shape
        if N == 0:
            return torch.zeros(0, NUM_COCO, 3)
        col = JOINT_COLOURS.to(crops)
        # |c - c_j|^2 = |c|^2 - 2 c.c_j + |c_j|^2, [N, 17, h, w]
        d2 = (crops**2).sum(1, keepdim=True) - 2 * torch.einsum("nchw,jc->njhw", crops, col) + (col**2).sum(1)[None, :, None, None]
        match = torch.exp(-d2 / (2 * self.sigma**2))
        ys = torch.arange(h, dtype=crops.dtype).view(1, 1, h, 1)
        xs = torch.arange(w, dtype=crops.dtype).view(1, 1, 1, w)
        cy, cx = (h - 1) / 2, (w - 1) / 2
        prior = torch.exp(-(((xs - cx) / (self.centre_sigma * w)) ** 2 + ((ys - cy) / (self.centre_sigma * h)) ** 2) / 2)
        score = match * prior
        idx = score.flatten(2).argmax(-1)  # [N, 17]
        py, px = (idx // w).to(crops.dtype), (idx % w).to(crops.dtype)
        # sub-pixel: match-weighted centroid within 3 px of the peak
        near = ((xs - px[..., None, None]) ** 2 + (ys - py[..., None, None]) ** 2) <= 9
        wgt = match * near
        s = wgt.sum((-1, -2)).clamp_min(1e-9)
        x = (wgt * xs).sum((-1, -2)) / s
        y = (wgt * ys).sum((-1, -2)) / s
        conf = match.flatten(2).gather(-1, idx[..., None])[..., 0].clamp(0, 1)
        return torch.stack([x, y, conf], -1)


class BlobDetector:
    """Boxes of connected blobs of drawn pixels (see the module docstring)."""

    def __init__(self, min_pixels: int = 30, pad: float = 0.05, device: str = "cpu"):
        self.name = "blob-standin"
        self.min_pixels = min_pixels
        self.pad = pad
        self.device = torch.device(device)
        self.calls = 0

    def to(self, device):
        self.device = torch.device(device)
        return self

    def __call__(self, images: Tensor) -> list[Tensor]:
        import cv2

        self.calls += 1
        out = []
        masks = (images.amax(1) > 0.2).to(torch.uint8).cpu().numpy()
        kernel = np.ones((3, 3), np.uint8)
        for mask in masks:
            n, _, st, _ = cv2.connectedComponentsWithStats(cv2.dilate(mask, kernel), connectivity=8)
            boxes = []
            for k in range(1, n):
                x0, y0, w, h, area = (int(t) for t in st[k])
                if area < self.min_pixels:
                    continue
                pw, ph = self.pad * w, self.pad * h
                boxes.append([x0 - pw, y0 - ph, x0 + w - 1 + pw, y0 + h - 1 + ph, 0.9])
            t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 5)
            area = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
            out.append(t[torch.argsort(area, descending=True)])
        return out

