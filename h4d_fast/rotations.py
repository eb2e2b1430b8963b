"""The rotation helpers of h4d_fast, in one place.

Torch (batched over leading dimensions, input dtype and device kept): axis-angle <-> matrix
(Rodrigues, smooth at zero angle), matrix -> quaternion -> axis-angle, elementary rotations,
random rotations. NumPy (single ``[3, 3]`` float64): Rodrigues vectors and COLMAP's
``(qw, qx, qy, qz)`` quaternions. torch is imported inside the torch functions: the input readers
(io/, run in torch-free worker processes) use the NumPy ones.

:mod:`h4d_fast.body.fast`, :mod:`h4d_fast.synth.rotations`, :mod:`h4d_fast.io.calibration` and
:mod:`h4d_fast.io.colmap` re-export these names.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "axis_angle_rotation",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "qvec_to_rotmat",
    "quaternion_to_axis_angle",
    "random_rotation",
    "rodrigues",
    "rot_x",
    "rot_y",
    "rot_z",
    "rotation_to_rodrigues",
    "rotmat_to_qvec",
    "skew",
]


# ------------------------------------------------------------------------------------- torch
def skew(v: Tensor) -> Tensor:
    """``v [..., 3]`` -> ``[..., 3, 3]`` cross-product matrix ``[v]_x``."""
    import torch

    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*v.shape[:-1], 3, 3)


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """Rodrigues: ``aa [..., 3]`` -> ``[..., 3, 3]``, smooth (finite gradients) at zero angle."""
    import torch

    th2 = (aa * aa).sum(-1)[..., None, None]  # [..., 1, 1]
    small = th2 < 1e-8
    th2s = torch.where(small, torch.ones_like(th2), th2)
    th = th2s.sqrt()
    a = torch.where(small, 1 - th2 / 6, torch.sin(th) / th)
    b = torch.where(small, 0.5 - th2 / 24, (1 - torch.cos(th)) / th2s)
    K = skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device)
    return eye + a * K + b * (K @ K)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """``R [..., 3, 3]`` rotation matrices -> axis-angle ``[..., 3]`` (angle in ``[0, pi]``).

    Goes through the quaternion (largest-pivot extraction), stable for every angle.
    """
    import torch

    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    piv = torch.stack([1 + tr, 1 + 2 * m[..., 0, 0] - tr, 1 + 2 * m[..., 1, 1] - tr, 1 + 2 * m[..., 2, 2] - tr], -1)
    k = piv.argmax(-1, keepdim=True)
    s = piv.gather(-1, k).clamp_min(1e-30).sqrt()[..., 0] * 2  # 4 |q_k|
    d = (m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1])
    o = (m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1])
    cands = torch.stack(
        [
            torch.stack([s / 4, d[0] / s, d[1] / s, d[2] / s], -1),
            torch.stack([d[0] / s, s / 4, o[0] / s, o[1] / s], -1),
            torch.stack([d[1] / s, o[0] / s, s / 4, o[2] / s], -1),
            torch.stack([d[2] / s, o[1] / s, o[2] / s, s / 4], -1),
        ],
        -2,
    )  # [..., 4, 4]
    q = cands.gather(-2, k[..., None].expand(*k.shape[:-1], 1, 4))[..., 0, :]
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)
    q = q / q.norm(dim=-1, keepdim=True)
    w, v = q[..., 0], q[..., 1:]
    sn = v.norm(dim=-1)
    ang = 2 * torch.atan2(sn, w)
    scale = torch.where(sn > 1e-8, ang / sn.clamp_min(1e-8), 2.0 / w.clamp_min(1e-8))
    return v * scale[..., None]


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """``R [..., 3, 3]`` -> unit quaternion ``[..., 4]`` as ``(w, x, y, z)`` with ``w >= 0``.

    Uses the largest of the four diagonal-based pivots per element (numerically stable for any angle).
    """
    import torch

    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    piv = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
    )  # [..., 4] = 4 * (w^2, x^2, y^2, z^2)
    k = piv.argmax(-1, keepdim=True)
    s = piv.gather(-1, k).clamp_min(1e-30).sqrt()[..., 0] * 2  # 4 * |pivot component|
    # candidate quaternions, each scaled so its pivot component equals s / 4
    qw = torch.stack([s / 4, (m21 - m12) / s, (m02 - m20) / s, (m10 - m01) / s], -1)
    qx = torch.stack([(m21 - m12) / s, s / 4, (m01 + m10) / s, (m02 + m20) / s], -1)
    qy = torch.stack([(m02 - m20) / s, (m01 + m10) / s, s / 4, (m12 + m21) / s], -1)
    qz = torch.stack([(m10 - m01) / s, (m02 + m20) / s, (m12 + m21) / s, s / 4], -1)
    cands = torch.stack([qw, qx, qy, qz], -2)  # [..., 4 pivots, 4]
    q = cands.gather(-2, k[..., None].expand(*k.shape[:-1], 1, 4))[..., 0, :]
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_to_axis_angle(q: Tensor) -> Tensor:
    """``(w, x, y, z) [..., 4]`` -> axis-angle ``[..., 3]`` with angle in ``[0, pi]``."""
    import torch

    q = torch.where(q[..., :1] < 0, -q, q)
    w, v = q[..., 0], q[..., 1:]
    n = v.norm(dim=-1)
    ang = 2 * torch.atan2(n, w)
    small = n < 1e-10
    scale = torch.where(small, 2 / w.clamp_min(1e-30), ang / torch.where(small, torch.ones_like(n), n))
    return v * scale[..., None]


def rot_x(a: Tensor) -> Tensor:
    """Rotation about +x by ``a [...]`` radians -> ``[..., 3, 3]``."""
    import torch

    c, s, o, i = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([i, o, o, o, c, -s, o, s, c], -1).reshape(*a.shape, 3, 3)


def rot_y(a: Tensor) -> Tensor:
    """Rotation about +y by ``a [...]`` radians -> ``[..., 3, 3]``."""
    import torch

    c, s, o, i = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([c, o, s, o, i, o, -s, o, c], -1).reshape(*a.shape, 3, 3)


def rot_z(a: Tensor) -> Tensor:
    """Rotation about +z by ``a [...]`` radians -> ``[..., 3, 3]``."""
    import torch

    c, s, o, i = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([c, -s, o, s, c, o, o, o, i], -1).reshape(*a.shape, 3, 3)


def random_rotation(u: Tensor) -> Tensor:
    """Uniform random rotation from ``u [..., 4]`` standard-normal samples (normalised quaternion)."""
    import torch

    q = u / u.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(*q.shape[:-1], 3, 3)


# ------------------------------------------------------------------------------------- numpy
def rodrigues(rvec: Sequence[float]) -> np.ndarray:
    """Rodrigues (axis * angle) vector -> ``[3, 3]`` rotation matrix (float64)."""
    r = np.asarray(rvec, dtype=np.float64).reshape(3)
    th = float(np.linalg.norm(r))
    if th < 1e-15:
        return np.eye(3)
    k = r / th
    Kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(th) * Kx + (1.0 - math.cos(th)) * (Kx @ Kx)


def axis_angle_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` (radians) about ``axis`` (any length; normalised here) -> ``[3, 3]``
    (the form the default-model converter uses; bit-stable so that its build stays reproducible)."""
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def rotation_to_rodrigues(R: np.ndarray) -> np.ndarray:
    """``[3, 3]`` rotation -> Rodrigues vector (angle in ``[0, pi]``)."""
    R = np.asarray(R, dtype=np.float64)
    c = max(-1.0, min(1.0, (np.trace(R) - 1.0) / 2.0))
    th = math.acos(c)
    if th < 1e-12:
        return np.zeros(3)
    if math.pi - th < 1e-6:
        # near pi: axis from the symmetric part
        B = (R + np.eye(3)) / 2.0
        i = int(np.argmax(np.diag(B)))
        k = B[:, i] / math.sqrt(max(B[i, i], 1e-300))
        k = k / np.linalg.norm(k)
        return k * th
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2.0 * math.sin(th))
    return w * th


def qvec_to_rotmat(q: Sequence[float]) -> np.ndarray:
    """Unit quaternion ``(qw, qx, qy, qz)`` (normalised here) -> ``[3, 3]`` rotation matrix."""
    w, x, y, z = (float(v) for v in q)
    n = math.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ],
        dtype=np.float64,
    )


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """``[3, 3]`` rotation -> unit quaternion ``(qw, qx, qy, qz)`` with ``qw >= 0``.

    Uses the symmetric-matrix eigenvector method, which is stable for every rotation and returns
    the nearest rotation's quaternion when ``R`` is slightly non-orthonormal.
    """
    R = np.asarray(R, dtype=np.float64)
    (m00, m01, m02), (m10, m11, m12), (m20, m21, m22) = R
    K = np.array(
        [
            [m00 - m11 - m22, 0.0, 0.0, 0.0],
            [m01 + m10, m11 - m00 - m22, 0.0, 0.0],
            [m02 + m20, m12 + m21, m22 - m00 - m11, 0.0],
            [m21 - m12, m02 - m20, m10 - m01, m00 + m11 + m22],
        ]
    ) / 3.0
    vals, vecs = np.linalg.eigh(K)  # lower triangle is used
    x, y, z, w = vecs[:, int(np.argmax(vals))]
    q = np.array([w, x, y, z])
    if q[0] < 0:
        q = -q
    return q / np.linalg.norm(q)
