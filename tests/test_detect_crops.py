"""Crop geometry of the image stage: affines of boxes, the batched warp against cv2.warpAffine and
grid_sample, keypoints back to the image, boxes of keypoints, the detector's resize."""

import math

import cv2
import numpy as np
import pytest
import torch

from h4d_fast.detect.crops import (
    apply_affine,
    box_affine,
    crop_images,
    crop_images_reference,
    crop_images_torch,
    keypoint_boxes,
    resize_images,
)
from h4d_fast.detect.models.blazepose import upright_rotation


def _image(seed=0, h=90, w=130):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur((rng.random((h, w, 3)) * 255).astype(np.uint8), (5, 5), 1.5)


def _cases(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(n, 2, generator=g) * torch.tensor([160.0, 120.0]) - 15  # some boxes off the image's edge
    wh = 10 + torch.rand(n, 2, generator=g) * 80
    boxes = torch.cat([c - wh / 2, c + wh / 2], 1)
    rot = (torch.rand(n, generator=g) - 0.5) * 2 * math.pi
    return boxes, rot


@pytest.mark.parametrize("out_hw", [(64, 48), (33, 57)])
def test_crops_match_cv2_warp_affine_and_grid_sample(out_hw):
    img = _image()
    boxes, rot = _cases()
    A = box_affine(boxes, out_hw, 1.25, rot)
    imgs = torch.from_numpy(img)[None]
    idx = torch.zeros(len(boxes), dtype=torch.long)
    fast = crop_images_torch(imgs, idx, A, out_hw)
    via_cv2 = crop_images(imgs, idx, A, out_hw, backend="cv2")
    ref = crop_images_reference(imgs.permute(0, 3, 1, 2).float() / 255, idx, A, out_hw)
    # the gather and grid_sample compute the same bilinear sum (float rounding only)
    assert (fast - ref).abs().max() < 1e-4
    for i in range(len(boxes)):
        cv = cv2.warpAffine(img, A[i].double().numpy(), (out_hw[1], out_hw[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        d = np.abs(cv.astype(np.float64) / 255 - fast[i].permute(1, 2, 0).double().numpy())
        # OpenCV interpolates in fixed point (1/32 px weights) and rounds to uint8: measured max 0.0020 (half a grey level)
        assert d.max() < 1.5 / 255 and d.mean() < 0.3 / 255
        assert (via_cv2[i] - torch.from_numpy(cv).permute(2, 0, 1).float() / 255).abs().max() < 1e-6


def test_crops_pick_each_crops_own_image_and_channel_order():
    a, b = _image(1, 40, 50), _image(2, 40, 50)
    imgs = torch.from_numpy(np.stack([a, b]))
    A = box_affine(torch.tensor([[-0.5, -0.5, 49.5, 39.5]] * 2), (40, 50), 1.0)  # pixel edges: the whole image
    out = crop_images_torch(imgs, torch.tensor([1, 0]), A, (40, 50), channel_order=(2, 1, 0))
    # the crop is the image itself
    assert torch.allclose(out[0], torch.from_numpy(b[..., ::-1].copy()).permute(2, 0, 1).float() / 255, atol=1e-6)
    assert torch.allclose(out[1], torch.from_numpy(a[..., ::-1].copy()).permute(2, 0, 1).float() / 255, atol=1e-6)
    assert crop_images(imgs, torch.zeros(0, dtype=torch.long), A[:0], (8, 8)).shape == (0, 3, 8, 8)


def test_box_affine_geometry_and_keypoints_round_trip():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 120.0], [0.0, 0.0, 300.0, 100.0]])
    A = box_affine(boxes, (256, 192), 1.25)
    # the crop centre is the box centre; the box (x1.25) fits inside the crop, padded on one side
    ctr = apply_affine(torch.tensor([[[95.5, 127.5, 1.0]]] * 2), A)[:, 0, :2]
    assert torch.allclose(ctr, torch.tensor([[30.0, 70.0], [150.0, 50.0]]), atol=1e-4)
    s = A[:, 0, 0]
    assert torch.allclose(s, torch.tensor([1.25 * 100 / 256, 1.25 * 300 / 192]))
    # a point's crop coordinates come back to the image through A
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(2, 17, 2, generator=g) * 200
    Ah = torch.cat([A, torch.tensor([[[0.0, 0.0, 1.0]]]).expand(2, 1, 3)], 1)
    crop_pts = torch.einsum("nij,nkj->nki", torch.linalg.inv(Ah)[:, :2], torch.cat([pts, torch.ones(2, 17, 1)], -1))
    back = apply_affine(torch.cat([crop_pts, torch.full((2, 17, 1), 0.7)], -1), A)
    assert torch.allclose(back[..., :2], pts, atol=1e-3) and (back[..., 2] == 0.7).all()


def test_rotated_crop_turns_the_image():
    # a crop rotated by +90 degrees: its up direction (0, -1) is the image's +x
    A = box_affine(torch.tensor([[40.0, 40.0, 60.0, 60.0]]), (21, 21), 1.0, torch.tensor([math.pi / 2]))
    up = A[0, :, :2] @ torch.tensor([0.0, -1.0])
    assert torch.allclose(up / up.norm(), torch.tensor([1.0, 0.0]), atol=1e-6)
    assert torch.allclose(upright_rotation(torch.tensor([[0.0, 0.0]]), torch.tensor([[5.0, 0.0]])), torch.tensor([math.pi / 2]))
    assert torch.allclose(upright_rotation(torch.tensor([[0.0, 10.0]]), torch.tensor([[0.0, 0.0]])), torch.tensor([0.0]))


def test_keypoint_boxes_pad_and_empty():
    k = torch.zeros(2, 17, 3)
    k[0, :, 0] = torch.linspace(10, 50, 17)
    k[0, :, 1] = torch.linspace(100, 300, 17)
    ok = torch.zeros(2, 17, dtype=torch.bool)
    ok[0] = True
    b = keypoint_boxes(k, ok, pad=0.1)
    assert torch.allclose(b[0], torch.tensor([6.0, 80.0, 54.0, 320.0])) and (b[1] == 0).all()


def test_resize_images_matches_cv2_area_and_scale():
    img = cv2.GaussianBlur(_image(3, 200, 120), (0, 0), 3)  # image-like content (not pixel noise)
    out, scale = resize_images(torch.from_numpy(img)[None], 50)
    assert out.shape == (1, 3, 50, 30) and abs(scale - 0.25) < 1e-9
    ref = cv2.resize(img, (30, 50), interpolation=cv2.INTER_AREA).astype(np.float64) / 255
    # antialiased bilinear (triangle filter) vs OpenCV's area average (box filter) at a factor of 4:
    # measured mean 0.0017, max 0.0078 (2 grey levels); a plain bilinear resize (no low-pass) would be far off
    d = np.abs(out[0].permute(1, 2, 0).double().numpy() - ref)
    assert d.mean() < 0.004 and d.max() < 0.02
    small, s1 = resize_images(torch.from_numpy(img)[None], 500)  # never enlarged
    assert s1 == 1.0 and small.shape == (1, 3, 200, 120)


@pytest.mark.gpu
def test_crops_on_cuda_match_the_reference():
    img = _image(5, 720, 1280)
    boxes, rot = _cases(64, seed=3)
    boxes = boxes * 8
    A = box_affine(boxes, (256, 192), 1.25, rot)
    imgs = torch.from_numpy(img)[None]
    idx = torch.zeros(len(boxes), dtype=torch.long)
    gpu = crop_images(imgs.cuda(), idx.cuda(), A.cuda(), (256, 192)).cpu()
    ref = crop_images_reference(imgs.permute(0, 3, 1, 2).float() / 255, idx, A, (256, 192))
    assert (gpu - ref).abs().max() < 1e-4
    th, s = resize_images(imgs.cuda(), 320)
    th_cpu, s_cpu = resize_images(imgs, 320)
    assert s == s_cpu and (th.cpu() - th_cpu).abs().max() < 2 / 255
