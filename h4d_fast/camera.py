"""Calibrated cameras: pinhole, OpenCV radial-tangential and OpenCV fisheye, batched in torch.

A :class:`CameraSet` holds ``V`` cameras as tensors. World coordinates are metric; each
camera maps a world point ``X`` to camera coordinates ``R @ X + t`` (OpenCV convention:
x right, y down, z forward), then to pixels through its lens model.

Lens models (``model`` per camera):

* ``pinhole`` -- no distortion.
* ``opencv`` -- OpenCV's rational radial-tangential model; ``dist = [k1, k2, p1, p2, k3, k4, k5, k6]``
  (COLMAP ``OPENCV`` / ``FULL_OPENCV``; Brown-Conrady is the ``k4 = k5 = k6 = 0`` case).
* ``fisheye`` -- OpenCV's equidistant fisheye (COLMAP ``OPENCV_FISHEYE``);
  ``dist = [k1, k2, k3, k4, 0, 0, 0, 0]``: ``theta = atan(r)``,
  ``theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)``, ``x' = theta_d / r * x``.

Normalized coordinates are the undistorted image plane ``(x/z, y/z)``; triangulation works there
with the 3x4 extrinsic ``[R | t]`` as the projection matrix (no ``K``), as the reference does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

MODELS: tuple[str, ...] = ("pinhole", "opencv", "fisheye")
MODEL_ID = {m: i for i, m in enumerate(MODELS)}
from .constants import NUM_DIST  # noqa: E402  (re-exported: its home is constants, which is torch-free)


@dataclass
class CameraSet:
    """``V`` calibrated cameras.

    Attributes:
        names: camera names, length ``V`` (e.g. ``cam01``).
        model: lens model per camera, each one of :data:`MODELS`.
        intrinsics: ``[V, 4]`` = ``fx, fy, cx, cy`` in pixels.
        dist: ``[V, 8]`` distortion coefficients (layout per model, see module docstring).
        R: ``[V, 3, 3]`` world-to-camera rotation.
        t: ``[V, 3]`` world-to-camera translation (metres).
        size: ``[V, 2]`` image ``width, height`` in pixels (int64).
    """

    names: list[str]
    model: list[str]
    intrinsics: Tensor
    dist: Tensor
    R: Tensor
    t: Tensor
    size: Tensor

    def __post_init__(self) -> None:
        V = len(self.names)
        if len(self.model) != V:
            raise ValueError(f"CameraSet: {len(self.model)} models for {V} cameras")
        for m in self.model:
            if m not in MODEL_ID:
                raise ValueError(f"CameraSet: unknown lens model {m!r} (known: {', '.join(MODELS)})")
        for name, shape in (("intrinsics", (V, 4)), ("dist", (V, NUM_DIST)), ("R", (V, 3, 3)), ("t", (V, 3)), ("size", (V, 2))):
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"CameraSet.{name}: expected shape {shape}, got {got}")

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.names)

    @property
    def device(self) -> torch.device:
        return self.R.device

    @property
    def dtype(self) -> torch.dtype:
        return self.R.dtype

    @property
    def model_id(self) -> Tensor:
        """``[V]`` int64 lens-model index into :data:`MODELS`."""
        return torch.tensor([MODEL_ID[m] for m in self.model], device=self.device)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "CameraSet":
        def cv(x: Tensor) -> Tensor:
            return x.to(device=device, dtype=dtype if x.is_floating_point() and dtype is not None else x.dtype)

        return CameraSet(list(self.names), list(self.model), cv(self.intrinsics), cv(self.dist), cv(self.R), cv(self.t), self.size.to(device))

    def subset(self, index: Sequence[int] | Tensor) -> "CameraSet":
        idx = torch.as_tensor(index, dtype=torch.long, device=self.device)
        il = idx.tolist()
        return CameraSet([self.names[i] for i in il], [self.model[i] for i in il], self.intrinsics[idx], self.dist[idx], self.R[idx], self.t[idx], self.size[idx])

    @property
    def extrinsics(self) -> Tensor:
        """``[V, 3, 4]`` world-to-camera ``[R | t]``: the projection matrices of normalized coordinates."""
        return torch.cat([self.R, self.t[:, :, None]], dim=-1)

    @property
    def centers(self) -> Tensor:
        """``[V, 3]`` camera centres in world coordinates."""
        return -(self.R.transpose(-1, -2) @ self.t[..., None])[..., 0]

    @property
    def K(self) -> Tensor:
        """``[V, 3, 3]`` intrinsic matrices (no skew)."""
        fx, fy, cx, cy = self.intrinsics.unbind(-1)
        z, o = torch.zeros_like(fx), torch.ones_like(fx)
        return torch.stack([fx, z, cx, z, fy, cy, z, z, o], -1).reshape(-1, 3, 3)

    def transform_world(self, T: Tensor | np.ndarray) -> "CameraSet":
        """Re-express the cameras in a new world frame ``X_new = T @ X_old``.

        ``T`` is a 4x4 similarity ``[s R0 | tr]`` (e.g. Harmony4D's ``scale.npy``, which maps
        COLMAP coordinates to metric ones). The returned cameras take metric world points and
        give metric camera coordinates: ``R' = R R0^T``, ``t' = s t - R' tr``. Apply it once.
        """
        T = torch.as_tensor(np.asarray(T), dtype=self.dtype, device=self.device)
        if T.shape != (4, 4):
            raise ValueError(f"similarity transform must be 4x4, got {tuple(T.shape)}")
        A = T[:3, :3]
        s = torch.linalg.det(A).abs() ** (1.0 / 3.0)
        R0 = A / s
        tr = T[:3, 3]
        R_new = self.R @ R0.T
        t_new = s * self.t - (R_new @ tr)
        return CameraSet(list(self.names), list(self.model), self.intrinsics.clone(), self.dist.clone(), R_new, t_new, self.size.clone())

    # ------------------------------------------------------------- projection
    def world_to_camera(self, X: Tensor) -> Tensor:
        """``X [..., 3]`` world points -> ``[..., V, 3]`` camera coordinates in every camera."""
        return torch.einsum("vij,...j->...vi", self.R.to(X.dtype), X) + self.t.to(X.dtype)

    def project(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Project world points into every camera.

        Args:
            X: ``[..., 3]`` world points.
        Returns:
            uv: ``[..., V, 2]`` pixel coordinates.
            depth: ``[..., V]`` camera-space z; a point with ``depth <= 0`` is behind the camera
            and its ``uv`` is meaningless.
        """
        Xc = self.world_to_camera(X)  # [..., V, 3]
        z = Xc[..., 2]
        zs = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
        xn = Xc[..., :2] / zs[..., None]
        return self.normalized_to_pixels(xn), z

    def normalized_to_pixels(self, xn: Tensor) -> Tensor:
        """``xn [..., V, 2]`` undistorted normalized coordinates -> ``[..., V, 2]`` pixels."""
        xd = distort(xn, self.dist.to(xn.dtype), self.model_id)
        f = self.intrinsics[:, :2].to(xn.dtype)
        c = self.intrinsics[:, 2:].to(xn.dtype)
        return xd * f + c

    def pixels_to_normalized(self, uv: Tensor, iters: int = 20) -> Tensor:
        """``uv [..., V, 2]`` pixels -> ``[..., V, 2]`` undistorted normalized coordinates (rays ``[x, y, 1]``).

        Points outside a fisheye lens's valid range (field angle >= 90 degrees) come back NaN.
        """
        f = self.intrinsics[:, :2].to(uv.dtype)
        c = self.intrinsics[:, 2:].to(uv.dtype)
        xd = (uv - c) / f
        return undistort(xd, self.dist.to(uv.dtype), self.model_id, iters=iters)


# ----------------------------------------------------------------- lens models
def _radtan(xn: Tensor, d: Tensor) -> Tensor:
    x, y = xn[..., 0], xn[..., 1]
    k1, k2, p1, p2, k3, k4, k5, k6 = d.unbind(-1)
    r2 = x * x + y * y
    num = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    den = 1 + r2 * (k4 + r2 * (k5 + r2 * k6))
    rad = num / den
    xd = x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], -1)


def _radtan_jacobian(xn: Tensor, d: Tensor) -> Tensor:
    """``[..., 2, 2]`` Jacobian of :func:`_radtan` with respect to ``xn``."""
    x, y = xn[..., 0], xn[..., 1]
    k1, k2, p1, p2, k3, k4, k5, k6 = d.unbind(-1)
    r2 = x * x + y * y
    num = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    den = 1 + r2 * (k4 + r2 * (k5 + r2 * k6))
    dnum = k1 + r2 * (2 * k2 + 3 * k3 * r2)
    dden = k4 + r2 * (2 * k5 + 3 * k6 * r2)
    rad = num / den
    drad = (dnum * den - num * dden) / (den * den)  # d rad / d r2
    j00 = rad + 2 * x * x * drad + 2 * p1 * y + 6 * p2 * x
    j01 = 2 * x * y * drad + 2 * p1 * x + 2 * p2 * y
    j10 = 2 * x * y * drad + 2 * p1 * x + 2 * p2 * y
    j11 = rad + 2 * y * y * drad + 6 * p1 * y + 2 * p2 * x
    return torch.stack([torch.stack([j00, j01], -1), torch.stack([j10, j11], -1)], -2)


def _fisheye(xn: Tensor, d: Tensor) -> Tensor:
    k1, k2, k3, k4 = d[..., 0], d[..., 1], d[..., 2], d[..., 3]
    r = xn.norm(dim=-1)
    th = torch.atan(r)
    th2 = th * th
    thd = th * (1 + th2 * (k1 + th2 * (k2 + th2 * (k3 + th2 * k4))))
    # scale = thd / r, with the r -> 0 limit of 1
    scale = torch.where(r > 1e-9, thd / r.clamp_min(1e-9), torch.ones_like(r))
    return xn * scale[..., None]


def _fisheye_inverse(xd: Tensor, d: Tensor, iters: int) -> Tensor:
    k1, k2, k3, k4 = d[..., 0], d[..., 1], d[..., 2], d[..., 3]
    rd = xd.norm(dim=-1)
    th = rd.clone()
    for _ in range(iters):
        th2 = th * th
        f = th * (1 + th2 * (k1 + th2 * (k2 + th2 * (k3 + th2 * k4)))) - rd
        df = 1 + th2 * (3 * k1 + th2 * (5 * k2 + th2 * (7 * k3 + 9 * k4 * th2)))
        th = th - f / torch.where(df.abs() < 1e-9, torch.full_like(df, 1e-9), df)
    bad = (th >= torch.pi / 2) | (th < 0) | ~torch.isfinite(th)
    r = torch.tan(th.clamp(0, torch.pi / 2 - 1e-6))
    scale = torch.where(rd > 1e-12, r / rd.clamp_min(1e-12), torch.ones_like(rd))
    out = xd * scale[..., None]
    return torch.where(bad[..., None], torch.full_like(out, float("nan")), out)


def distort(xn: Tensor, dist: Tensor, model_id: Tensor) -> Tensor:
    """Apply each camera's lens distortion.

    Args:
        xn: ``[..., V, 2]`` undistorted normalized coordinates.
        dist: ``[V, 8]`` coefficients.
        model_id: ``[V]`` lens model index.
    Returns:
        ``[..., V, 2]`` distorted normalized coordinates.
    """
    is_fish = model_id == MODEL_ID["fisheye"]
    out = xn
    if bool((~is_fish).any()):
        out = _radtan(xn, dist)
    if bool(is_fish.any()):
        out = torch.where(is_fish[:, None], _fisheye(xn, dist), out)
    return out


def undistort(xd: Tensor, dist: Tensor, model_id: Tensor, iters: int = 20) -> Tensor:
    """Invert :func:`distort` (Newton's method); ``[..., V, 2] -> [..., V, 2]``."""
    is_fish = model_id == MODEL_ID["fisheye"]
    needs_radtan = (~is_fish) & (dist.abs().sum(-1) > 0)
    out = xd
    if bool(needs_radtan.any()):
        x = xd.clone()
        for _ in range(iters):
            r = _radtan(x, dist) - xd
            J = _radtan_jacobian(x, dist)
            det = J[..., 0, 0] * J[..., 1, 1] - J[..., 0, 1] * J[..., 1, 0]
            det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
            dx = (J[..., 1, 1] * r[..., 0] - J[..., 0, 1] * r[..., 1]) / det
            dy = (-J[..., 1, 0] * r[..., 0] + J[..., 0, 0] * r[..., 1]) / det
            x = x - torch.stack([dx, dy], -1)
        out = torch.where(needs_radtan[:, None], x, out)
    if bool(is_fish.any()):
        out = torch.where(is_fish[:, None], _fisheye_inverse(xd, dist, iters), out)
    return out


# ------------------------------------------------------------------ helpers
def look_at(center: Tensor, target: Tensor, up: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """World-to-camera ``(R [..., 3, 3], t [..., 3])`` for cameras at ``center`` looking at ``target``.

    OpenCV axes: z toward the target, y pointing down in the image (``up`` is world up, +z by default).
    """
    if up is None:
        up = torch.tensor([0.0, 0.0, 1.0], dtype=center.dtype, device=center.device)
    z = target - center
    z = z / z.norm(dim=-1, keepdim=True)
    x = torch.linalg.cross(z, up.expand_as(z))
    x = x / x.norm(dim=-1, keepdim=True)
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z], dim=-2)
    t = -(R @ center[..., None])[..., 0]
    return R, t


def make_cameras(
    names: Sequence[str],
    model: Sequence[str] | str,
    intrinsics: Tensor | np.ndarray,
    R: Tensor | np.ndarray,
    t: Tensor | np.ndarray,
    size: Tensor | np.ndarray,
    dist: Tensor | np.ndarray | None = None,
    dtype: torch.dtype = torch.float64,
) -> CameraSet:
    """Build a :class:`CameraSet` from array-likes (missing distortion = zeros)."""
    V = len(names)
    models = [model] * V if isinstance(model, str) else list(model)
    d = torch.zeros(V, NUM_DIST, dtype=dtype)
    if dist is not None:
        rows = list(dist) if not isinstance(dist, (Tensor, np.ndarray)) else list(np.asarray(dist).reshape(V, -1))
        if len(rows) != V:
            raise ValueError(f"make_cameras: {len(rows)} distortion rows for {V} cameras")
        for i, row in enumerate(rows):
            r = torch.as_tensor(np.asarray(row, dtype=np.float64).reshape(-1)[:NUM_DIST], dtype=dtype)
            d[i, : r.numel()] = r
    return CameraSet(
        names=list(names),
        model=models,
        intrinsics=torch.as_tensor(np.asarray(intrinsics), dtype=dtype).reshape(V, 4),
        dist=d,
        R=torch.as_tensor(np.asarray(R), dtype=dtype).reshape(V, 3, 3),
        t=torch.as_tensor(np.asarray(t), dtype=dtype).reshape(V, 3),
        size=torch.as_tensor(np.asarray(size), dtype=torch.int64).reshape(V, 2),
    )
