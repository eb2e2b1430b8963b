"""The embedded default pose model: BlazePose's full landmark model on 256x256 person crops.

Crop convention (the model's training convention, as MediaPipe feeds it): a square region of
the image, centred on the person, side ``box_scale`` (1.25) times the person box's long side,
rotated so that the body is upright (hips below shoulders). The crop's pixel ``i`` covers
``[i, i + 1)`` of the region scaled to 256 pixels, i.e. its centre is at ``i + 0.5`` in the
model's own output units; outputs are returned in the api's crop-pixel convention (pixel centres
at integers), so ``x_api = x_model - 0.5``.

Rotation: the model is trained on upright people (MediaPipe rotates every crop so that the
hips -> shoulders direction, or the detector's hip -> head alignment vector, points up). For
people standing or walking it can be 0; for people lying, bending or seen by a tilted camera give
each crop :func:`upright_rotation` of the person's hips and shoulders (e.g. of the predicted 3D
pose projected into the view, or of :meth:`BlazePoseDetector.detections` keypoints 0 and 1).

Landmarks: 33 MediaPipe landmarks (see :mod:`h4d_fast.io.mediapipe`) + the model's 6 auxiliary
points; COCO-17 is taken with :data:`~h4d_fast.io.mediapipe.MEDIAPIPE33_TO_COCO17`. Positions are
refined from the model's heatmaps exactly as MediaPipe does (7x7 window, sigmoid-weighted mean,
only where the window's peak is >= 0.5). Confidence = sigmoid(visibility) x the model's
pose-presence score, in ``[0, 1]`` (an empty crop gives ~0 everywhere).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ...io.mediapipe import MEDIAPIPE33_TO_COCO17
from .blazepose_cache import LANDMARKS, load_default_graph
from .graph import TorchGraph

NUM_LANDMARKS = 39
"""Rows of the landmark tensor: 33 landmarks + 6 auxiliary points (33/34: the next ROI's centre / scale point)."""
HEATMAP_KERNEL = 7
MIN_CONFIDENCE_TO_REFINE = 0.5
KEYPOINT_OUTPUTS = (0, 1, 3)
"""Graph outputs the keypoints need (landmarks, pose flag, heatmap): the segmentation and world
landmark heads are not run."""
BOX_SCALE = 1.25
"""MediaPipe enlarges the detector's (and the tracked pose's) square region by 1.25 before cropping."""


def upright_rotation(bottom: Tensor, top: Tensor) -> Tensor:
    """Crop rotation (radians) that puts ``top`` straight above ``bottom`` in the crop.

    Args:
        bottom: ``[..., 2]`` image points (e.g. mid-hip), pixels, y down.
        top: ``[..., 2]`` image points (e.g. mid-shoulder, or the detector's scale point).
    Returns:
        ``[...]`` angle ``t`` for a crop whose affine is
        ``A = [[s cos t, -s sin t, cx], [s sin t, s cos t, cy]]`` (crop -> image): the crop's
        up direction ``(0, -1)`` maps to the image direction ``top - bottom``. 0 for an upright
        person; same value as MediaPipe's ROI rotation.
    """
    d = top - bottom
    return torch.atan2(d[..., 0], -d[..., 1])


def region_from_keypoints(keypoints: Tensor, min_conf: float = 0.1) -> tuple[Tensor, Tensor]:
    """Person box and crop rotation in BlazePose's convention from COCO-17 keypoints (e.g. a tracked
    3D pose projected into the view): the square centred on the mid-hip whose half side is the
    largest distance from the mid-hip to a keypoint, and :func:`upright_rotation` (mid-hip,
    mid-shoulder). Enlarged by :data:`BOX_SCALE` it is the region MediaPipe crops when it
    tracks a pose.

    Args:
        keypoints: ``[N, 17, 3]`` ``x, y`` (image pixels) and confidence; both hips and both
            shoulders must be confident for a meaningful result.
        min_conf: keypoints at or below this confidence are ignored for the size.
    Returns:
        ``boxes [N, 4]`` ``x1, y1, x2, y2`` and ``rotation [N]`` (radians).
    """
    xy, conf = keypoints[..., :2], keypoints[..., 2]
    hip = (xy[:, 11] + xy[:, 12]) / 2
    shoulder = (xy[:, 5] + xy[:, 6]) / 2
    dist = torch.where(conf > min_conf, (xy - hip[:, None]).norm(dim=-1), torch.zeros_like(conf))
    half = dist.amax(1, keepdim=True)
    return torch.cat([hip - half, hip + half], -1), upright_rotation(hip, shoulder)


def refine_from_heatmap(xy: Tensor, heatmap: Tensor, kernel: int = HEATMAP_KERNEL,
                        min_confidence: float = MIN_CONFIDENCE_TO_REFINE) -> Tensor:
    """MediaPipe's landmark refinement from heatmaps, vectorised.

    Args:
        xy: ``[N, L, 2]`` landmark positions normalised to the model input (``[0, 1]``).
        heatmap: ``[N, L, h, w]`` heatmap logits (one channel per landmark).
    Returns:
        ``[N, L, 2]``: each landmark whose truncated heatmap cell is inside the map, and whose
        ``kernel x kernel`` window (clipped at the border) has a sigmoid peak ``>= min_confidence``,
        moved to the sigmoid-weighted mean cell index of the window divided by the map size;
        others unchanged.
    """
    N, L, h, w = heatmap.shape
    col = torch.trunc(xy[..., 0] * w)
    row = torch.trunc(xy[..., 1] * h)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    off = torch.arange(kernel, device=xy.device, dtype=xy.dtype) - (kernel - 1) // 2
    cols = col[..., None] + off  # [N, L, k]
    rows = row[..., None] + off
    valid = ((cols >= 0) & (cols < w))[..., None, :] & ((rows >= 0) & (rows < h))[..., :, None]  # [N, L, k, k]
    ci = cols.clamp(0, w - 1).long()
    ri = rows.clamp(0, h - 1).long()
    flat = (ri[..., :, None] * w + ci[..., None, :]).reshape(N, L, kernel * kernel)
    conf = torch.sigmoid(torch.gather(heatmap.reshape(N, L, h * w).to(xy.dtype), 2, flat)).reshape(N, L, kernel, kernel)
    conf = conf * valid
    total = conf.sum((-1, -2))
    peak = conf.amax((-1, -2))
    mean_col = (conf * cols[..., None, :]).sum((-1, -2)) / total.clamp_min(1e-12)
    mean_row = (conf * rows[..., :, None]).sum((-1, -2)) / total.clamp_min(1e-12)
    refine = inside & (peak >= min_confidence) & (total > 0)
    out_x = torch.where(refine, mean_col / w, xy[..., 0])
    out_y = torch.where(refine, mean_row / h, xy[..., 1])
    return torch.stack([out_x, out_y], -1)


class BlazePoseLandmarks:
    """BlazePose full landmark model as a :class:`~h4d_fast.detect.api.PoseModel`.

    Args:
        graph: a converted landmark graph; default: the cached one (built on first use).
        device: where it runs.
        dtype: ``torch.float32`` (default), or ``torch.float16`` / ``torch.bfloat16`` on CUDA
            (activations and weights in that type; decoding in float32).
        box_scale: person box -> crop enlargement (default 1.25, MediaPipe's).
        refine: apply the heatmap refinement (default True, as MediaPipe).
        channels_last: NHWC memory format for the convolutions (default: on CUDA).
    """

    name = "blazepose-full"
    input_size = (256, 256)

    def __init__(self, graph: TorchGraph | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, box_scale: float = BOX_SCALE, refine: bool = True,
                 channels_last: bool | None = None, model_dir: str | Path | None = None):
        self.graph = (graph if graph is not None else load_default_graph(LANDMARKS, model_dir)).eval()
        self.box_scale = float(box_scale)
        self.refine = bool(refine)
        self.dtype = dtype
        self._channels_last = channels_last
        self.device = torch.device("cpu")
        self._coco = torch.tensor(MEDIAPIPE33_TO_COCO17, dtype=torch.long)
        self.to(device)

    def to(self, device: torch.device | str) -> "BlazePoseLandmarks":
        device = torch.device(device)
        if device.type == "cpu" and self.dtype != torch.float32:
            raise ValueError("BlazePoseLandmarks: reduced precision runs on CUDA only (use dtype=torch.float32 on the CPU)")
        self.graph.to(device=device, dtype=self.dtype)
        self._coco = self._coco.to(device)
        self.device = device
        return self

    @property
    def channels_last(self) -> bool:
        return self.device.type == "cuda" if self._channels_last is None else self._channels_last

    def raw(self, crops: Tensor, outputs: tuple[int, ...] | None = None) -> list[Tensor]:
        """The graph's outputs for ``[N, 3, 256, 256]`` crops in ``[0, 1]`` (float32): 0 landmarks
        ``[N, 195]``, 1 pose flag ``[N, 1]``, 2 segmentation ``[N, 1, 256, 256]``, 3 heatmap
        ``[N, 39, 64, 64]``, 4 world landmarks ``[N, 117]``; ``outputs`` selects (default all)."""
        if crops.dim() != 4 or crops.shape[1] != 3 or tuple(crops.shape[2:]) != self.input_size:
            raise ValueError(f"expected crops [N, 3, 256, 256], got {tuple(crops.shape)}")
        x = crops.to(self.device, self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            outs = self.graph(x, outputs=outputs)
        return [o.float() for o in outs]

    def keypoints_native(self, crops: Tensor) -> Tensor:
        """``[N, 33, 5]``: ``x, y`` (crop pixels, centres at integers), ``z`` (same scale as x,
        relative to the hips), visibility and presence probabilities."""
        return self._decode(self.raw(crops, KEYPOINT_OUTPUTS))[0]

    def _decode(self, outs: list[Tensor]) -> tuple[Tensor, Tensor]:
        lm, flag, heat = outs
        N = lm.shape[0]
        lm = lm.reshape(N, NUM_LANDMARKS, 5)
        H, W = self.input_size
        # per-axis Python scales: no small host -> device copies in the hot path
        xy = torch.stack([lm[..., 0] / W, lm[..., 1] / H], -1)
        if self.refine:
            xy = refine_from_heatmap(xy, heat)
        xy = torch.stack([xy[..., 0] * W, xy[..., 1] * H], -1) - 0.5
        native = torch.cat([xy, lm[..., 2:3], torch.sigmoid(lm[..., 3:5])], -1)[:, :33]
        return native, flag.reshape(N)

    def __call__(self, crops: Tensor) -> Tensor:
        """``[N, 3, 256, 256]`` RGB crops in ``[0, 1]`` -> ``[N, 17, 3]`` COCO-17 ``x, y`` (crop
        pixels) and confidence = visibility x pose presence. No host synchronisation."""
        if crops.shape[0] == 0:
            return torch.zeros(0, 17, 3, device=self.device)
        native, flag = self._decode(self.raw(crops, KEYPOINT_OUTPUTS))
        coco = native.index_select(1, self._coco)
        conf = (coco[..., 3] * flag[:, None]).clamp(0.0, 1.0)
        return torch.cat([coco[..., :2], conf[..., None]], -1)


__all__ = ["BOX_SCALE", "BlazePoseLandmarks", "refine_from_heatmap", "region_from_keypoints", "upright_rotation"]
