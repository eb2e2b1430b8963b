"""Person crops as batched affine warps, and keypoints mapped back through them.

Conventions (:mod:`h4d_fast.detect.api`): pixel centres sit at integer coordinates; a crop of
size ``(h, w)`` is cut by a ``[2, 3]`` affine ``A`` mapping crop pixel ``(x, y)`` to image pixel
``A @ [x, y, 1]``; outside the image the crop is black (zero), as ``cv2.warpAffine`` with
``WARP_INVERSE_MAP`` and ``BORDER_CONSTANT`` and ``grid_sample(padding_mode="zeros",
align_corners=False)`` do.

Two implementations of the same bilinear warp:

* :func:`crop_images` -- the one the stage uses: it gathers the four neighbours of every crop
  pixel straight from the decoded ``uint8`` images (channels last, as decoders write them), so
  nothing image-sized is ever converted to float; memory is proportional to the crops only.
* :func:`crop_images_reference` -- ``torch.nn.functional.grid_sample`` on float images, the
  readable oracle of the tests (which also compare both with ``cv2.warpAffine``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as Fn
from torch import Tensor

from ..io.images import resize_images

__all__ = [
    "apply_affine",
    "box_affine",
    "crop_images",
    "crop_images_reference",
    "crop_images_torch",
    "keypoint_boxes",
    "keypoint_regions",
    "resize_affine",
    "resize_images",
]


def box_affine(boxes: Tensor, input_size: tuple[int, int], box_scale: float = 1.0, rotation: Tensor | None = None) -> Tensor:
    """Crop affines of person boxes.

    The box (``[N, 4+]`` ``x1, y1, x2, y2`` in image pixels) keeps its centre, is enlarged by
    ``box_scale`` and padded to the crop's aspect ratio, and fills the crop ``input_size = (h, w)``;
    ``rotation`` ``[N]`` (radians, optional) turns the crop about the box centre.

    Returns:
        ``[N, 2, 3]`` affines crop pixel -> image pixel (float32 unless the boxes are float64).
    """
    h, w = int(input_size[0]), int(input_size[1])
    b = boxes[..., :4].to(torch.float64 if boxes.dtype == torch.float64 else torch.float32)
    c = 0.5 * (b[:, :2] + b[:, 2:4])  # [N, 2]
    bw = (b[:, 2] - b[:, 0]).clamp_min(1.0) * box_scale
    bh = (b[:, 3] - b[:, 1]).clamp_min(1.0) * box_scale
    # pad the shorter side to the crop's aspect ratio: image pixels per crop pixel
    s = torch.maximum(bw / w, bh / h)  # [N]
    if rotation is None:
        cos, sin = torch.ones_like(s), torch.zeros_like(s)
    else:
        r = rotation.to(s)
        cos, sin = r.cos(), r.sin()
    A = torch.empty(b.shape[0], 2, 3, dtype=b.dtype, device=b.device)
    A[:, 0, 0], A[:, 0, 1] = s * cos, -s * sin
    A[:, 1, 0], A[:, 1, 1] = s * sin, s * cos
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    A[:, 0, 2] = c[:, 0] - (A[:, 0, 0] * cx + A[:, 0, 1] * cy)
    A[:, 1, 2] = c[:, 1] - (A[:, 1, 0] * cx + A[:, 1, 1] * cy)
    return A


def resize_affine(scale: float, n: int = 1, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """``[n, 2, 3]`` affines of a resize by ``scale`` (output pixel ``x`` -> image ``(x + 0.5) / scale - 0.5``,
    the pixel-area convention of ``cv2.resize`` and ``F.interpolate(align_corners=False)``)."""
    k = 1.0 / float(scale)
    A = torch.tensor([[k, 0.0, 0.5 * k - 0.5], [0.0, k, 0.5 * k - 0.5]], dtype=dtype, device=device)
    return A.expand(n, 2, 3).clone()


def apply_affine(xy: Tensor, A: Tensor) -> Tensor:
    """``xy [N, J, 2+]`` crop pixels -> image pixels through ``A [N, 2, 3]`` (extra columns, e.g. a
    confidence, are passed through)."""
    out = xy.clone()
    At = A.to(xy.dtype)
    out[..., :2] = torch.einsum("nij,nkj->nki", At[:, :, :2], xy[..., :2]) + At[:, None, :, 2]
    return out


def _sample_grid(A: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
    """Image coordinates ``(X, Y)`` ``[N, h, w]`` of every crop pixel."""
    dt = torch.float64 if A.dtype == torch.float64 else torch.float32
    ys = torch.arange(h, dtype=dt, device=A.device).view(1, h, 1)
    xs = torch.arange(w, dtype=dt, device=A.device).view(1, 1, w)
    A = A.to(dt)
    X = A[:, 0, 0, None, None] * xs + A[:, 0, 1, None, None] * ys + A[:, 0, 2, None, None]
    Y = A[:, 1, 0, None, None] * xs + A[:, 1, 1, None, None] * ys + A[:, 1, 2, None, None]
    return X, Y


def crop_images(images: Tensor, image_index: Tensor, A: Tensor, out_hw: tuple[int, int],
                channel_order: tuple[int, ...] | None = None, backend: str = "auto") -> Tensor:
    """Bilinear crops of channels-last images, batched.

    ``backend``: ``torch`` (:func:`crop_images_torch`, any device: the GPU path), ``cv2``
    (``cv2.warpAffine`` per crop on a thread pool: about 40x faster than the gather on a CPU) or
    ``auto`` (cv2 for CPU ``uint8`` images when OpenCV imports, else torch). Arguments and result
    as :func:`crop_images_torch`.
    """
    if backend == "auto":
        backend = "cv2" if images.device.type == "cpu" and images.dtype == torch.uint8 and _cv2() is not None else "torch"
    if backend == "cv2":
        return _crop_images_cv2(images, image_index, A, out_hw, channel_order)
    if backend != "torch":
        raise ValueError(f"crop_images: backend must be auto, torch or cv2, got {backend!r}")
    return crop_images_torch(images, image_index, A, out_hw, channel_order)


def _cv2():
    try:
        import cv2

        return cv2
    except ImportError:  # pragma: no cover - opencv is a dependency
        return None


_POOL = None


def _pool():
    global _POOL
    if _POOL is None:
        import os
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=max(1, min(16, os.cpu_count() or 1)), thread_name_prefix="h4d-crop")
    return _POOL


def _crop_images_cv2(images: Tensor, image_index: Tensor, A: Tensor, out_hw: tuple[int, int],
                     channel_order: tuple[int, ...] | None) -> Tensor:
    cv2 = _cv2()
    import numpy as np

    h, w = int(out_hw[0]), int(out_hw[1])
    N, C = int(A.shape[0]), int(images.shape[-1])
    imgs = images.numpy()
    An = A.detach().cpu().double().numpy()
    idx = image_index.detach().cpu().long().numpy()
    out = np.empty((N, h, w, C), np.uint8)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP

    def one(i: int) -> None:
        res = cv2.warpAffine(imgs[idx[i]], An[i], (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out[i] = res.reshape(h, w, C)

    if N <= 4:
        for i in range(N):
            one(i)
    else:
        list(_pool().map(one, range(N)))
    t = torch.from_numpy(out)
    if channel_order is not None:
        t = t[..., list(channel_order)]
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def crop_images_torch(images: Tensor, image_index: Tensor, A: Tensor, out_hw: tuple[int, int],
                      channel_order: tuple[int, ...] | None = None, chunk: int = 128) -> Tensor:
    """Bilinear crops gathered from channels-last images (torch, any device).

    Args:
        images: ``[B, H, W, C]`` ``uint8`` (values 0..255) or float images, on the crops' device.
        image_index: ``[N]`` which image each crop is cut from.
        A: ``[N, 2, 3]`` crop pixel -> image pixel affines.
        out_hw: ``(h, w)`` of the crops.
        channel_order: e.g. ``(2, 1, 0)`` to turn BGR images into RGB crops.
        chunk: crops processed at once (bounds the index tensors' memory).
    Returns:
        ``[N, C, h, w]`` float32 crops, in ``[0, 1]`` for ``uint8`` images (else the images' values).
    """
    B, H, W, C = images.shape
    h, w = int(out_hw[0]), int(out_hw[1])
    N = int(A.shape[0])
    out = torch.empty(N, C, h, w, dtype=torch.float32, device=images.device)
    if N == 0:
        return out
    flat = images.reshape(B * H * W, C)
    norm = 1.0 / 255.0 if images.dtype == torch.uint8 else 1.0
    idx_img = image_index.to(device=images.device, dtype=torch.long)
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        X, Y = _sample_grid(A[s:e].to(images.device), h, w)
        x0f, y0f = X.floor(), Y.floor()
        fx, fy = (X - x0f).float(), (Y - y0f).float()
        x0, y0 = x0f.long(), y0f.long()
        base = (idx_img[s:e] * (H * W)).view(-1, 1, 1)
        acc = torch.zeros(e - s, h, w, C, dtype=torch.float32, device=images.device)
        for dy, wy in ((0, 1.0 - fy), (1, fy)):
            yy = y0 + dy
            oky = (yy >= 0) & (yy < H)
            row = base + yy.clamp(0, H - 1) * W
            for dx, wx in ((0, 1.0 - fx), (1, fx)):
                xx = x0 + dx
                ok = oky & (xx >= 0) & (xx < W)
                v = flat[row + xx.clamp(0, W - 1)].float()  # [n, h, w, C]
                acc += v * (wy * wx * ok)[..., None]
        if channel_order is not None:
            acc = acc[..., list(channel_order)]
        out[s:e] = acc.permute(0, 3, 1, 2) * norm
    return out


def crop_images_reference(images: Tensor, image_index: Tensor, A: Tensor, out_hw: tuple[int, int]) -> Tensor:
    """The same crops through ``grid_sample`` (the oracle). ``images``: ``[B, C, H, W]`` float."""
    B, C, H, W = images.shape
    h, w = int(out_hw[0]), int(out_hw[1])
    X, Y = _sample_grid(A.to(images.device), h, w)
    # align_corners=False: pixel centre i sits at normalized (2 i + 1) / size - 1
    grid = torch.stack([(2 * X + 1) / W - 1, (2 * Y + 1) / H - 1], -1).to(images.dtype)
    src = images[image_index.to(device=images.device, dtype=torch.long)]
    return Fn.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def keypoint_boxes(kpts: Tensor, ok: Tensor, pad: float = 0.0) -> Tensor:
    """Boxes of the keypoints where ``ok``, each side pushed out by ``pad`` times the box's size.

    Args:
        kpts: ``[..., J, 2+]`` pixel coordinates.
        ok: ``[..., J]`` bool.
    Returns:
        ``[..., 4]`` ``x1, y1, x2, y2`` (zeros where no keypoint is ok).
    """
    big = torch.finfo(kpts.dtype).max
    xy = kpts[..., :2]
    m = ok[..., None]
    lo = torch.where(m, xy, torch.full_like(xy, big)).amin(-2)
    hi = torch.where(m, xy, torch.full_like(xy, -big)).amax(-2)
    size = (hi - lo).clamp_min(0)
    box = torch.cat([lo - pad * size, hi + pad * size], -1)
    return torch.where(ok.any(-1, keepdim=True), box, torch.zeros_like(box))


def keypoint_regions(kpts: Tensor, ok: Tensor, pad: float = 0.0, rotation: Tensor | None = None) -> Tensor:
    """:func:`keypoint_boxes` measured along a rotated crop's axes.

    With ``rotation`` ``[...]`` (radians, the crop's as in :func:`box_affine`), the keypoints'
    extent is taken along the crop's x axis ``(cos t, sin t)`` and y axis ``(-sin t, cos t)``; the
    result is the axis-aligned box with that centre and that width and height, so that
    ``box_affine(box, ..., rotation)`` crops exactly the keypoints' rotated extent.

    Returns:
        ``[..., 4]`` (zeros where no keypoint is ok).
    """
    if rotation is None:
        return keypoint_boxes(kpts, ok, pad)
    c, s = rotation.cos()[..., None], rotation.sin()[..., None]
    x, y = kpts[..., 0], kpts[..., 1]
    u = x * c + y * s  # along the crop's x axis
    v = -x * s + y * c  # along its y axis
    b = keypoint_boxes(torch.stack([u, v], -1), ok, pad)  # in the rotated frame
    cu, cv = 0.5 * (b[..., 0] + b[..., 2]), 0.5 * (b[..., 1] + b[..., 3])
    hw, hh = 0.5 * (b[..., 2] - b[..., 0]), 0.5 * (b[..., 3] - b[..., 1])
    cx = cu * c[..., 0] - cv * s[..., 0]
    cy = cu * s[..., 0] + cv * c[..., 0]
    box = torch.stack([cx - hw, cy - hh, cx + hw, cy + hh], -1)
    return torch.where(ok.any(-1, keepdim=True), box, torch.zeros_like(box))


def upright(kpts: Tensor, ok: Tensor) -> Tensor:
    """``[...]`` crop rotation that puts the mid-shoulder straight above the mid-hip (COCO-17
    ``kpts [..., 17, 2+]``), 0 where a hip or shoulder is not ``ok``: people bending, lying or seen
    by a tilted camera come out upright, as pose models are trained."""
    from .models.blazepose import upright_rotation

    hip = 0.5 * (kpts[..., 11, :2] + kpts[..., 12, :2])
    sho = 0.5 * (kpts[..., 5, :2] + kpts[..., 6, :2])
    have = ok[..., 5] & ok[..., 6] & ok[..., 11] & ok[..., 12]
    r = upright_rotation(hip, sho)
    return torch.where(have, r, torch.zeros_like(r))


def rotation_of(A: Tensor) -> Tensor:
    """``[N]`` rotation angle (radians) of crop affines (for tests and logs)."""
    return torch.atan2(A[:, 1, 0], A[:, 0, 0])


def crop_scale(A: Tensor) -> Tensor:
    """``[N]`` image pixels per crop pixel."""
    return torch.sqrt(A[:, 0, 0] ** 2 + A[:, 1, 0] ** 2)

