"""Small batched rotation helpers (torch): axis-angle <-> matrix, elementary rotations.

All functions broadcast over leading dimensions and keep the input dtype/device.
"""

from __future__ import annotations

import torch
from torch import Tensor


def skew(v: Tensor) -> Tensor:
    """``v [..., 3]`` -> ``[..., 3, 3]`` cross-product matrix ``[v]_x``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*v.shape[:-1], 3, 3)


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """Rodrigues: ``aa [..., 3]`` (axis * angle, radians) -> ``[..., 3, 3]``; exact near zero, and
    finite gradients there (the square root only sees the guarded angle)."""
    th2 = (aa * aa).sum(-1, keepdim=True)[..., None]  # [..., 1, 1]
    small = th2 < 1e-12
    ths = torch.where(small, torch.ones_like(th2), th2).sqrt()
    a = torch.where(small, 1 - th2 / 6, torch.sin(ths) / ths)
    b = torch.where(small, 0.5 - th2 / 24, (1 - torch.cos(ths)) / (ths * ths))
    K = skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(K)
    return eye + a * K + b * (K @ K)


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """``R [..., 3, 3]`` -> unit quaternion ``[..., 4]`` as ``(w, x, y, z)`` with ``w >= 0``.

    Uses the largest of the four diagonal-based pivots per element (numerically stable for any angle).
    """
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
    q = torch.where(q[..., :1] < 0, -q, q)
    w, v = q[..., 0], q[..., 1:]
    n = v.norm(dim=-1)
    ang = 2 * torch.atan2(n, w)
    small = n < 1e-10
    scale = torch.where(small, 2 / w.clamp_min(1e-30), ang / torch.where(small, torch.ones_like(n), n))
    return v * scale[..., None]


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """``[..., 3, 3]`` -> ``[..., 3]``."""
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


def rot_x(a: Tensor) -> Tensor:
    """Rotation about +x by ``a [...]`` radians -> ``[..., 3, 3]``."""
    c, s, o, i = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([i, o, o, o, c, -s, o, s, c], -1).reshape(*a.shape, 3, 3)


def rot_y(a: Tensor) -> Tensor:
    """Rotation about +y by ``a [...]`` radians -> ``[..., 3, 3]``."""
    c, s, o, i = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([c, o, s, o, i, o, -s, o, c], -1).reshape(*a.shape, 3, 3)


def rot_z(a: Tensor) -> Tensor:
    """Rotation about +z by ``a [...]`` radians -> ``[..., 3, 3]``."""
    c, s, o, i = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([c, -s, o, s, c, o, o, o, i], -1).reshape(*a.shape, 3, 3)


def random_rotation(u: Tensor) -> Tensor:
    """Uniform random rotation from ``u [..., 4]`` standard-normal samples (normalised quaternion)."""
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
