"""Numba (CPU) kernels of :class:`h4d_fast.body.sparse_skin.SparseSkin` (same sums as its torch
code, parallel over bodies, each vertex's non-zero weights in compressed rows)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def skin(A, u, person, ptr, joint, weight, transl, out):
    """``out[b, n] = sum_e w_e (R_{j_e} u[person[b], n] + t_{j_e}) + transl[b]``.

    ``A [B, 24, 12]``: per joint the rotation (row-major) and the translation ``X_j - R_j J_j``;
    ``u [P, N, 3]``; CSR ``ptr [N + 1]``, ``joint, weight [E]``; ``transl [B, 3]``; ``out [B, N, 3]``.
    """
    B, N = out.shape[0], out.shape[1]
    for b in prange(B):
        p = person[b]
        for n in range(N):
            x, y, z = u[p, n, 0], u[p, n, 1], u[p, n, 2]
            ox = transl[b, 0]
            oy = transl[b, 1]
            oz = transl[b, 2]
            for e in range(ptr[n], ptr[n + 1]):
                a = A[b, joint[e]]
                w = weight[e]
                ox += w * (a[0] * x + a[1] * y + a[2] * z + a[9])
                oy += w * (a[3] * x + a[4] * y + a[5] * z + a[10])
                oz += w * (a[6] * x + a[7] * y + a[8] * z + a[11])
            out[b, n, 0] = ox
            out[b, n, 1] = oy
            out[b, n, 2] = oz


@njit(parallel=True, cache=True)
def forces(A, u, person, ptr, joint, weight, grad, Fj, Mj):
    """Per body and joint: ``F_j = sum_e w_e g_n`` and ``M_j = sum_e w_e q_e x g_n`` over the
    entries of vertices with a non-zero gradient (``q_e`` without ``transl``). Shapes as
    :func:`skin`, ``grad [B, N, 3]``, ``Fj, Mj [B, 24, 3]`` (zeroed by the caller)."""
    B, N = grad.shape[0], grad.shape[1]
    for b in prange(B):
        p = person[b]
        for n in range(N):
            gx, gy, gz = grad[b, n, 0], grad[b, n, 1], grad[b, n, 2]
            if gx == 0.0 and gy == 0.0 and gz == 0.0:
                continue
            x, y, z = u[p, n, 0], u[p, n, 1], u[p, n, 2]
            for e in range(ptr[n], ptr[n + 1]):
                j = joint[e]
                a = A[b, j]
                w = weight[e]
                qx = a[0] * x + a[1] * y + a[2] * z + a[9]
                qy = a[3] * x + a[4] * y + a[5] * z + a[10]
                qz = a[6] * x + a[7] * y + a[8] * z + a[11]
                Fj[b, j, 0] += w * gx
                Fj[b, j, 1] += w * gy
                Fj[b, j, 2] += w * gz
                Mj[b, j, 0] += w * (qy * gz - qz * gy)
                Mj[b, j, 1] += w * (qz * gx - qx * gz)
                Mj[b, j, 2] += w * (qx * gy - qy * gx)


def csr(vertex: np.ndarray, joint: np.ndarray, weight: np.ndarray, n_vertices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COO entries -> (ptr [N + 1], joint [E], weight [E]) sorted by vertex."""
    order = np.argsort(vertex, kind="stable")
    ptr = np.zeros(n_vertices + 1, np.int64)
    np.add.at(ptr, vertex + 1, 1)
    return np.cumsum(ptr), joint[order].astype(np.int64), weight[order]
