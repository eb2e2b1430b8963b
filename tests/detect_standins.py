"""Stand-ins for the image stage's models, and synthetic images they can read.

:func:`render_people` draws each person's projected COCO-17 skeleton into every camera's image:
grey limbs and a disk per joint in that joint's own saturated colour (person ``p``'s palette is
darker by ``0.45 p``), the nearer person last so it occludes the farther one, on a black background.

* :class:`ColourPoseModel` (a :class:`~h4d_fast.detect.api.PoseModel`) finds each joint's colour in
  a crop (sub-pixel centre) and, like a real top-down model, reports one coherent person: the one
  whose joints lie nearest the crop's centre. On a box holding two people it reports one of them
  (the other is lost there); on a crop centred on one person (the track's prompt), mostly that one.
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


# person p's joint j: hue j / 17, full saturation, value 1 - 0.45 p (RGB in [0, 1])
def palette(person: int) -> Tensor:
    return torch.tensor([colorsys.hsv_to_rgb(j / NUM_COCO, 1.0, 1.0 - 0.45 * person) for j in range(NUM_COCO)], dtype=torch.float32)


LIMB_GREY = 0.45


def render_people(cams: CameraSet, poses: Tensor, out_seq: Path, radius: float = 3.0, limb_px: int = 3, ext: str = ".png") -> None:
    """Write ``out_seq/exo/camXX/images/%05d<ext>`` for ``poses [F, P, 17, 4]`` (frame ids 1..F)."""
    import cv2

    F, P = poses.shape[:2]
    uv, z = cams.project(poses[..., :3].double())  # [F, P, J, V, 2], [F, P, J, V]
    W, H = (int(x) for x in cams.size[0].tolist())
    cols = [(palette(p).numpy()[:, ::-1] * 255).round().astype(int).tolist() for p in range(P)]  # BGR for cv2
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
                        cv2.circle(img, tuple(q[j]), int(round(radius * (1 << sh))), cols[p][j], -1, cv2.LINE_AA, sh)
            cv2.imwrite(str(folder / f"{f + 1:05d}{ext}"), img)


class ColourPoseModel:
    """A top-down pose model that sees one coherent person per crop (see the module docstring):
    it finds every person's joints by their colours and reports the person whose found joints'
    centroid lies nearest the crop's centre."""

    def __init__(self, input_size: tuple[int, int] = (96, 96), box_scale: float = 1.25, sigma: float = 0.12,
                 people: int = 2, device: str = "cpu"):
        self.name = "colour-standin"
        self.input_size = input_size
        self.box_scale = box_scale
        self.sigma = sigma
        self.colours = torch.cat([palette(p) for p in range(people)])  # [people * 17, 3]
        self.people = people
        self.device = torch.device(device)
        self.calls = 0

    def to(self, device):
        self.device = torch.device(device)
        return self

    def __call__(self, crops: Tensor) -> Tensor:
        self.calls += 1
        N, _, h, w = crops.shape
        if N == 0:
            return torch.zeros(0, NUM_COCO, 3, device=crops.device)
        col = self.colours.to(crops)
        # |c - c_k|^2 = |c|^2 - 2 c.c_k + |c_k|^2, [N, K, h, w]
        d2 = (crops**2).sum(1, keepdim=True) - 2 * torch.einsum("nchw,kc->nkhw", crops, col) + (col**2).sum(1)[None, :, None, None]
        match = torch.exp(-d2.clamp_min(0) / (2 * self.sigma**2))
        ys = torch.arange(h, dtype=crops.dtype, device=crops.device).view(1, 1, h, 1)
        xs = torch.arange(w, dtype=crops.dtype, device=crops.device).view(1, 1, 1, w)
        idx = match.flatten(2).argmax(-1)  # [N, K]
        py, px = (idx // w).to(crops.dtype), (idx % w).to(crops.dtype)
        conf = match.flatten(2).gather(-1, idx[..., None])[..., 0].clamp(0, 1)  # [N, K]
        # sub-pixel: match-weighted centroid within 3 px of the peak
        near = ((xs - px[..., None, None]) ** 2 + (ys - py[..., None, None]) ** 2) <= 9
        wgt = match * near
        s = wgt.sum((-1, -2)).clamp_min(1e-9)
        x = (wgt * xs).sum((-1, -2)) / s
        y = (wgt * ys).sum((-1, -2)) / s
        # the person centred in the crop: the centroid of their found joints nearest the crop's centre
        cx, cy = (w - 1) / 2, (h - 1) / 2
        found = (conf > 0.5).to(crops.dtype).view(N, self.people, NUM_COCO)
        nf = found.sum(-1)
        mx = (x.view(N, self.people, NUM_COCO) * found).sum(-1) / nf.clamp_min(1)
        my = (y.view(N, self.people, NUM_COCO) * found).sum(-1) / nf.clamp_min(1)
        dist = torch.hypot(mx - cx, my - cy)
        p = torch.where(nf >= 3, dist, torch.full_like(dist, float("inf"))).argmin(-1)  # [N]
        sel = p[:, None] * NUM_COCO + torch.arange(NUM_COCO, device=crops.device)[None]
        return torch.stack([x.gather(1, sel), y.gather(1, sel), conf.gather(1, sel)], -1)


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

