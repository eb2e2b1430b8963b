"""A ring of calibrated cameras around the scene, and the COLMAP -> metric similarity.

The cameras are GoPro-like (3840x2160, fx = fy ~ 1800 px, OpenCV fisheye with small
coefficients by default), spread evenly in azimuth (with jitter) on a ring of radius 3.5-5.5 m at
heights 0.8-2.6 m, each looking at the interaction centre (plus jitter).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..camera import CameraSet, look_at, make_cameras
from .rotations import random_rotation

DEFAULT_FISHEYE: tuple[float, float, float, float] = (0.03, -0.01, 0.002, -0.0005)


def make_rig(
    rng: np.random.Generator,
    num_cameras: int = 20,
    centre: Sequence[float] = (0.0, 0.0),
    lens: str = "fisheye",
    image_size: tuple[int, int] = (3840, 2160),
    focal_px: float = 1800.0,
    focal_jitter: float = 0.02,
    principal_jitter_px: float = 12.0,
    fisheye_coeffs: Sequence[float] = DEFAULT_FISHEYE,
    dist_jitter: float = 0.25,
    radius_range: tuple[float, float] = (3.5, 5.5),
    height_range: tuple[float, float] = (0.8, 2.6),
    azimuth_jitter: float = 0.3,
    target_height: float = 1.0,
    target_jitter: float = 0.15,
) -> CameraSet:
    """``V`` cameras on a ring around ``centre`` (world xy), z-up world, float64.

    Args:
        rng: random source.
        num_cameras: ``V``.
        centre: interaction centre (x, y) the cameras look at.
        lens: ``fisheye`` (OpenCV fisheye ``k1..k4``) or ``pinhole`` (no distortion).
        image_size: ``(width, height)``.
        focal_px: nominal ``fx = fy``; each camera gets ``* (1 + N(0, focal_jitter))``.
        principal_jitter_px: std of the principal point around the image centre.
        fisheye_coeffs: nominal ``k1..k4``; each scaled by ``1 + N(0, dist_jitter)``.
        radius_range, height_range: camera distance from the centre and height above the ground (m).
        azimuth_jitter: azimuth jitter as a fraction of the spacing ``2 pi / V``.
        target_height, target_jitter: look-at point height and its per-axis std (m).
    """
    if lens not in ("fisheye", "pinhole"):
        raise ValueError(f"make_rig: lens must be 'fisheye' or 'pinhole', got {lens!r}")
    V = int(num_cameras)
    W, H = int(image_size[0]), int(image_size[1])
    c = np.asarray(centre, dtype=np.float64)
    az0 = rng.uniform(0, 2 * np.pi)
    az = az0 + 2 * np.pi * (np.arange(V) + azimuth_jitter * rng.uniform(-0.5, 0.5, V)) / V
    rad = rng.uniform(*radius_range, V)
    hgt = rng.uniform(*height_range, V)
    pos = np.stack([c[0] + rad * np.cos(az), c[1] + rad * np.sin(az), hgt], -1)  # [V, 3]
    tgt = np.stack([np.full(V, c[0]), np.full(V, c[1]), np.full(V, target_height)], -1) + rng.normal(0, target_jitter, (V, 3))
    R, t = look_at(torch.as_tensor(pos), torch.as_tensor(tgt))
    f = focal_px * (1 + rng.normal(0, focal_jitter, V))
    cx = W / 2 + rng.normal(0, principal_jitter_px, V)
    cy = H / 2 + rng.normal(0, principal_jitter_px, V)
    intr = np.stack([f, f, cx, cy], -1)
    if lens == "fisheye":
        k = np.asarray(fisheye_coeffs, dtype=np.float64)[None] * (1 + rng.normal(0, dist_jitter, (V, 4)))
        dist = np.concatenate([k, np.zeros((V, 4))], -1)
    else:
        dist = np.zeros((V, 8))
    names = [f"cam{i + 1:02d}" for i in range(V)]
    size = np.tile(np.array([[W, H]], dtype=np.int64), (V, 1))
    return make_cameras(names, lens, intr, R.numpy(), t.numpy(), size, dist=dist)


def random_similarity(rng: np.random.Generator, scale_range: tuple[float, float] = (0.2, 5.0), translation_std: float = 3.0) -> np.ndarray:
    """A random 4x4 similarity ``T = [s R | tr]`` (log-uniform scale) mapping a COLMAP frame to the metric world."""
    s = float(np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]))))
    Rm = random_rotation(torch.as_tensor(rng.normal(size=4))).numpy()
    T = np.eye(4)
    T[:3, :3] = s * Rm
    T[:3, 3] = rng.normal(0, translation_std, 3)
    return T


def colmap_cameras(metric: CameraSet, T: np.ndarray) -> CameraSet:
    """The cameras as COLMAP would store them in the frame that ``T`` (COLMAP -> metric) maps from.

    ``colmap_cameras(cams, T).transform_world(T)`` gives ``cams`` back (up to rounding).
    """
    return metric.transform_world(np.linalg.inv(np.asarray(T, dtype=np.float64)))
