"""Numba (CPU, parallel) backend of :func:`h4d_fast.ops.boxes.mesh_boxes`.

One ``prange`` iteration per (camera, frame, person): a loop over the mesh's vertices that does
:meth:`CameraSet.project`'s arithmetic as scalars (``R X + t``; ``z`` below 1e-12 clamped; the
radial-tangential or fisheye lens of :func:`h4d_fast.camera.distort`; ``f x + c``) in the input's
dtype and keeps the running min/max of the vertices in front of the camera (``z > 0``), so no
``[F, P, N, V, 2]`` intermediate is made. A NaN pixel makes its box NaN, as ``amin`` does in the
reference.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor

from ..camera import CameraSet
from .boxes import is_fisheye


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _boxes_kernel(verts, R, t, intr, dist, fisheye, k, out):
    """verts ``[F, P, N, 3]``; R ``[V, 3, 3]``; t ``[V, 3]``; intr ``[V, 4]``; dist ``[V, 8]``;
    fisheye ``[V]`` bool; k = constants ``[1, 2, 1e-12, 1e-9, inf, 0]`` in the dtype -> out ``[V, F, P, 4]``.
    One ``prange`` iteration per mesh (frame, person), looping over the cameras, so the mesh stays in cache."""
    F, P = verts.shape[0], verts.shape[1]
    V = R.shape[0]
    for idx in numba.prange(F * P):
        f = idx // P
        p = idx % P
        for v in range(V):
            _box_one(verts[f, p], R[v], t[v], intr[v], dist[v], fisheye[v], k, out[v, f, p])


@numba.njit(cache=True, error_model="numpy", inline="always")
def _box_one(pts, R, t, intr, dist, fish, k, box):
    """The box of ``pts [N, 3]`` in one camera into ``box [4]``."""
    one, two, eps_z, eps_r, inf, zero = k[0], k[1], k[2], k[3], k[4], k[5]
    r00, r01, r02 = R[0, 0], R[0, 1], R[0, 2]
    r10, r11, r12 = R[1, 0], R[1, 1], R[1, 2]
    r20, r21, r22 = R[2, 0], R[2, 1], R[2, 2]
    t0, t1, t2 = t[0], t[1], t[2]
    fx, fy, cx, cy = intr[0], intr[1], intr[2], intr[3]
    # radial-tangential: k1 k2 p1 p2 k3 k4 k5 k6; fisheye: k1 k2 k3 k4 in the first four slots
    d0, d1, d2, d3, d4, d5, d6, d7 = dist[0], dist[1], dist[2], dist[3], dist[4], dist[5], dist[6], dist[7]
    x1 = inf
    y1 = inf
    x2 = -inf
    y2 = -inf
    seen = False
    bad = False
    for n in range(pts.shape[0]):
        X = pts[n, 0]
        Y = pts[n, 1]
        Z = pts[n, 2]
        z = r20 * X + r21 * Y + r22 * Z + t2
        if not (z > zero):
            continue
        xc = r00 * X + r01 * Y + r02 * Z + t0
        yc = r10 * X + r11 * Y + r12 * Z + t1
        zs = z if z >= eps_z else eps_z
        x = xc / zs
        y = yc / zs
        if fish:
            r = math.sqrt(x * x + y * y)
            th = math.atan(r)
            th2 = th * th
            thd = th * (one + th2 * (d0 + th2 * (d1 + th2 * (d2 + th2 * d3))))
            s = thd / r if r > eps_r else one
            xd = x * s
            yd = y * s
        else:
            r2 = x * x + y * y
            num = one + r2 * (d0 + r2 * (d1 + r2 * d4))
            den = one + r2 * (d5 + r2 * (d6 + r2 * d7))
            rad = num / den
            xd = x * rad + two * d2 * x * y + d3 * (r2 + two * x * x)
            yd = y * rad + d2 * (r2 + two * y * y) + two * d3 * x * y
        u = xd * fx + cx
        w = yd * fy + cy
        seen = True
        if u != u or w != w:
            bad = True
            continue
        x1 = min(x1, u)
        x2 = max(x2, u)
        y1 = min(y1, w)
        y2 = max(y2, w)
    if not seen or bad:
        nan = inf - inf
        box[0] = nan
        box[1] = nan
        box[2] = nan
        box[3] = nan
    else:
        box[0] = x1
        box[1] = y1
        box[2] = x2
        box[3] = y2


def mesh_boxes_numba(cameras: CameraSet, verts: Tensor) -> Tensor:
    """``verts [F, P, N, 3]`` (CPU) -> ``[V, F, P, 4]`` in ``verts``' dtype (see :func:`~h4d_fast.ops.boxes.mesh_boxes`)."""
    dtype = verts.dtype if verts.dtype in (torch.float32, torch.float64) else torch.float32
    nd = np.float32 if dtype == torch.float32 else np.float64

    def arr(x: Tensor) -> np.ndarray:
        return np.ascontiguousarray(x.detach().to(device="cpu", dtype=dtype).numpy())

    V = len(cameras)
    F, P = verts.shape[:2]
    out = np.empty((V, F, P, 4), dtype=nd)
    if out.size:
        k = np.array([1.0, 2.0, 1e-12, 1e-9, np.inf, 0.0], dtype=nd)
        fish = np.ascontiguousarray(is_fisheye(cameras).cpu().numpy())
        _boxes_kernel(arr(verts), arr(cameras.R), arr(cameras.t), arr(cameras.intrinsics), arr(cameras.dist), fish, k, out)
    return torch.from_numpy(out).to(verts.dtype)
