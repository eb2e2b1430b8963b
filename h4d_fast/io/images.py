"""Whole-image resampling for the detectors and the frame loader's thumbnails (below detect/, so
both :mod:`h4d_fast.io.frames` and :mod:`h4d_fast.detect.crops` use it without an import cycle)."""

from __future__ import annotations

import torch
import torch.nn.functional as Fn
from torch import Tensor


def resize_images(images: Tensor, max_side: int, channel_order: tuple[int, ...] | None = None, chunk: int = 16) -> tuple[Tensor, float]:
    """Whole images shrunk so their long side is at most ``max_side`` (never enlarged), for a detector.

    Antialiased bilinear (``F.interpolate(antialias=True)``: a proper low-pass when shrinking by
    several times); ``uint8`` images are resized as such on the CPU (its vectorised path), in
    float chunks of ``chunk`` images elsewhere.

    Args:
        images: ``[B, H, W, C]`` channels-last (``uint8`` or float).
    Returns:
        ``([B, C, h, w]`` float32 (in ``[0, 1]`` for ``uint8``), ``scale`` = output / input pixels``)``.
    """
    B, H, W, C = images.shape
    scale = min(1.0, float(max_side) / max(H, W))
    h, w = max(1, int(round(H * scale))), max(1, int(round(W * scale)))
    norm = 1.0 / 255.0 if images.dtype == torch.uint8 else 1.0
    x = images.permute(0, 3, 1, 2)  # a channels-last view
    order = list(channel_order) if channel_order is not None else None
    out = torch.empty(B, C, h, w, dtype=torch.float32, device=images.device)
    native = images.dtype == torch.uint8 and images.device.type == "cpu"
    for s in range(0, B, chunk):
        xs = x[s : s + chunk]
        if not native:
            xs = xs.float()
        if (h, w) != (H, W):
            xs = Fn.interpolate(xs, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        xs = xs.float()
        out[s : s + chunk] = (xs[:, order] if order is not None else xs) * norm
    return out, 0.5 * (h / H + w / W)
