"""The embedded default person detector: BlazePose's pose detector (SSD on a 224x224 letterbox).

Per image: the image is letterboxed into 224x224 (aspect kept, centred, black borders), the
network scores 2254 anchors; each anchor decodes into a box (the face, as the model was trained)
and 4 alignment keypoints (0: mid-hip, 1: a point whose distance to the mid-hip is the radius of
a circle around the whole body, 2 / 3: the same for the upper body). Overlapping candidates are
merged by MediaPipe's weighted non-maximum suppression (IoU of the face boxes > 0.3: score-weighted
mean of boxes and keypoints), batched in torch over images and candidates, with a fixed number
of rounds (``max_people``), so nothing syncs with the host before the final split per image.

The person box returned is MediaPipe's body region: the square centred on keypoint 0 with half
side ``|kp1 - kp0|`` (pixels). Enlarged by :data:`~h4d_fast.detect.models.blazepose.BOX_SCALE` and
rotated by :func:`~h4d_fast.detect.models.blazepose.upright_rotation` ``(kp0, kp1)`` it is exactly
MediaPipe's landmark crop.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ...ops.boxes import box_iou  # noqa: F401 (re-exported; its home)
from .blazepose_cache import DETECTOR, load_default_graph
from .graph import TorchGraph

INPUT = 224
NUM_KEYPOINTS = 4


def ssd_anchors(input_size: int = INPUT, strides: tuple[int, ...] = (8, 16, 32, 32, 32), per_layer: int = 2) -> Tensor:
    """``[A, 2]`` anchor centres (normalised ``x, y``) of MediaPipe's SSD anchor generator with
    fixed anchor size (all anchors 1 x 1): layers of equal stride share one grid; each layer
    contributes ``per_layer`` anchors (one aspect ratio + the interpolated scale) per cell, in
    row-major cell order. The pose detector's configuration gives A = 2254."""
    centres = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        n = math.ceil(input_size / strides[i])
        ys, xs = torch.meshgrid((torch.arange(n) + 0.5) / n, (torch.arange(n) + 0.5) / n, indexing="ij")
        cell = torch.stack([xs, ys], -1).reshape(-1, 1, 2).expand(-1, per_layer * (j - i), 2)
        centres.append(cell.reshape(-1, 2))
        i = j
    return torch.cat(centres).to(torch.float32)


def weighted_nms(boxes: Tensor, extra: Tensor, scores: Tensor, min_score: float, iou_threshold: float,
                 rounds: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MediaPipe's weighted non-maximum suppression, batched.

    Args:
        boxes: ``[B, K, 4]`` candidate boxes; ``extra``: ``[B, K, E]`` values averaged like the
            boxes (keypoints); ``scores``: ``[B, K]``.
        rounds: the most detections kept per image.
    Returns:
        ``boxes [B, R, 4]``, ``extra [B, R, E]``, ``scores [B, R]``, ``valid [B, R]``, best first:
        each round takes the best remaining candidate, merges every remaining one whose IoU with
        it exceeds ``iou_threshold`` (itself included) into a score-weighted mean, and removes them.
    """
    alive = scores >= min_score
    out_b, out_e, out_s, out_v = [], [], [], []
    for _ in range(rounds):
        s = torch.where(alive, scores, torch.full_like(scores, -1.0))
        best_s, best = s.max(1)
        valid = best_s >= min_score
        top = torch.gather(boxes, 1, best[:, None, None].expand(-1, 1, 4))
        cluster = alive & (box_iou(top, boxes) > iou_threshold)
        cluster = cluster | (alive & (torch.arange(scores.shape[1], device=scores.device)[None] == best[:, None]))
        w = scores * cluster
        wsum = w.sum(1, keepdim=True).clamp_min(1e-12)
        out_b.append((w[..., None] * boxes).sum(1) / wsum)
        out_e.append((w[..., None] * extra).sum(1) / wsum)
        out_s.append(best_s)
        out_v.append(valid)
        alive = alive & ~cluster
    return torch.stack(out_b, 1), torch.stack(out_e, 1), torch.stack(out_s, 1), torch.stack(out_v, 1)


class BlazePoseDetector:
    """BlazePose's person detector as a :class:`~h4d_fast.detect.api.PersonDetector`.

    Args:
        graph: a converted detector graph; default: the cached one (built on first use).
        min_score: detections below this (sigmoid) score are dropped (MediaPipe's default 0.5).
        iou_threshold: weighted-NMS merge threshold on the face boxes (MediaPipe: 0.3).
        max_people: most people per image (the NMS rounds).
        candidates: best-scored anchors entering the NMS per image.
    """

    name = "blazepose-detector"

    def __init__(self, graph: TorchGraph | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, min_score: float = 0.5, iou_threshold: float = 0.3,
                 max_people: int = 10, candidates: int = 100, model_dir: str | Path | None = None):
        self.graph = (graph if graph is not None else load_default_graph(DETECTOR, model_dir)).eval()
        self.dtype = dtype
        self.min_score = float(min_score)
        self.iou_threshold = float(iou_threshold)
        self.max_people = int(max_people)
        self.candidates = int(candidates)
        self.anchors = ssd_anchors()
        self.device = torch.device("cpu")
        self.to(device)

    def to(self, device: torch.device | str) -> "BlazePoseDetector":
        device = torch.device(device)
        if device.type == "cpu" and self.dtype != torch.float32:
            raise ValueError("BlazePoseDetector: reduced precision runs on CUDA only")
        self.graph.to(device=device, dtype=self.dtype)
        self.anchors = self.anchors.to(device)
        self.device = device
        return self

    def letterbox(self, images: Tensor) -> tuple[Tensor, tuple[float, float, float, float]]:
        """``[B, 3, H, W]`` in ``[0, 1]`` -> the network input ``[B, 3, 224, 224]`` in ``[-1, 1]``
        and ``(scale_x, scale_y, pad_x, pad_y)``: image pixel = (letterbox pixel - pad) * scale."""
        B, _, H, W = images.shape
        long = max(H, W)
        nh, nw = max(1, round(H * INPUT / long)), max(1, round(W * INPUT / long))
        x = images.to(self.device, torch.float32)
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        px, py = (INPUT - nw) // 2, (INPUT - nh) // 2
        x = F.pad(x, (px, INPUT - nw - px, py, INPUT - nh - py))  # black borders
        return x * 2.0 - 1.0, (W / nw, H / nh, float(px), float(py))

    def detections(self, images: Tensor) -> list[Tensor]:
        """Per image a ``[K, 13]`` tensor: face box ``x1, y1, x2, y2``, score, then the 4
        alignment keypoints ``x, y`` (image pixels), best first."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
        B = images.shape[0]
        if B == 0:
            return []
        x, tf = self.letterbox(images)
        x = x.to(self.dtype)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            raw_boxes, raw_scores = self.graph(x)
        raw_boxes = raw_boxes.float()
        scores = torch.sigmoid(raw_scores.float()[..., 0].clamp(-100.0, 100.0))  # [B, A]
        k = min(self.candidates, scores.shape[1])
        scores, idx = scores.topk(k, dim=1)
        raw = torch.gather(raw_boxes, 1, idx[..., None].expand(-1, -1, raw_boxes.shape[-1]))
        anchors = self.anchors[idx]  # [B, k, 2]
        # decode in letterbox pixels (anchors are normalised; raw offsets are in input pixels)
        centre = anchors * INPUT + raw[..., 0:2]
        half = raw[..., 2:4] / 2
        boxes = torch.cat([centre - half, centre + half], -1)
        kps = (anchors[:, :, None, :] * INPUT + raw[..., 4:4 + 2 * NUM_KEYPOINTS].reshape(B, k, NUM_KEYPOINTS, 2))
        nb, nk, ns, valid = weighted_nms(boxes, kps.reshape(B, k, -1), scores, self.min_score,
                                         self.iou_threshold, self.max_people)
        sx, sy, px, py = tf

        def unbox(p: Tensor) -> Tensor:  # letterbox pixels (edges at integers) -> image pixels (centres at integers)
            return torch.stack([(p[..., 0] - px) * sx - 0.5, (p[..., 1] - py) * sy - 0.5], -1)

        nb = unbox(nb.reshape(B, -1, 2, 2)).reshape(B, -1, 4)
        nk = unbox(nk.reshape(B, -1, NUM_KEYPOINTS, 2))
        out = torch.cat([nb, ns[..., None], nk.reshape(B, -1, 2 * NUM_KEYPOINTS)], -1)
        counts = valid.sum(1).tolist()  # the one host sync: how many people per image
        return [out[b, :n] for b, n in enumerate(counts)]

    @staticmethod
    def body_boxes(dets: Tensor) -> Tensor:
        """``[K, 13]`` detections -> ``[K, 5]`` body boxes: the square centred on keypoint 0 with
        half side ``|kp1 - kp0|``, and the score."""
        c = dets[:, 5:7]
        r = (dets[:, 7:9] - c).norm(dim=-1, keepdim=True)
        return torch.cat([c - r, c + r, dets[:, 4:5]], -1)

    @staticmethod
    def rotations(dets: Tensor) -> Tensor:
        """``[K, 13]`` detections -> ``[K]`` crop rotations (radians) that stand each person
        upright (:func:`~h4d_fast.detect.models.blazepose.upright_rotation` of keypoints 0 -> 1),
        to pass with :meth:`body_boxes` to the crop, as MediaPipe does."""
        from .blazepose import upright_rotation

        return upright_rotation(dets[:, 5:7], dets[:, 7:9])

    def __call__(self, images: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` RGB in ``[0, 1]`` -> per image ``[K, 5]`` body boxes + score, best first."""
        return [self.body_boxes(d) for d in self.detections(images)]


__all__ = ["BlazePoseDetector", "box_iou", "ssd_anchors", "weighted_nms"]
