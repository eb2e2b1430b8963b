"""Numba (CPU, parallel over frame x direction) backend of the collision loss.

Same method as the GPU kernels (:mod:`h4d_fast.ops.collision`, "Kernel method"), arranged for a
CPU: one task per (frame, direction) in a ``prange``; inside a task

1. the owner's vertices are normalised into its box;
2. parity: every triangle is rasterised onto the ``G x G`` rows (watertight edge functions,
   as the reference's ``"parity"`` mode) and toggles a crossing counter; a prefix xor along
   each row gives the inside mask (``O(F + G^3)``);
3. the AABB of each face cluster;
4. the other person's vertices are sampled; a corner's distance is computed on first use
   (best-first search over the clusters, exact minimum over all faces) and cached in a
   per-task ``G^3`` array, so each grid point is evaluated at most once.

Computed in float64 whatever the input dtype. Tasks whose direction is inactive (invalid
frame or boxes that do not meet) do nothing.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from .collision import CLUSTER, KernelInputs

_EPS_ROW = 1e-3  # rows within this many cells of a triangle's (y, z) box are tested exactly


@njit(cache=True, inline="always")
def _edge(ia, ib, ay, az, by, bz, cy, cz):
    """Watertight edge function (see _collision_torch._edge): canonical order + perturbation."""
    if ia > ib:
        py, pz, qy, qz = by, bz, ay, az
    else:
        py, pz, qy, qz = ay, az, by, bz
    dy = qy - py
    dz = qz - pz
    e = dy * (cz - pz) - dz * (cy - py)
    if e > 0:
        s = 1.0
    elif e < 0:
        s = -1.0
    elif dz != 0:
        s = -1.0 if dz > 0 else 1.0
    elif dy > 0:
        s = 1.0
    elif dy < 0:
        s = -1.0
    else:
        s = 0.0
    if ia > ib:
        return -e, -s
    return e, s


@njit(cache=True, inline="always")
def _dot(ux, uy, uz, vx, vy, vz):
    return ux * vx + uy * vy + uz * vz


@njit(cache=True, inline="always")
def _edge_d2(ox, oy, oz, t_num, t_den, ex, ey, ez):
    """``|o - t e|^2`` with ``t = t_num / t_den`` (0 when ``t_den`` is 0): squared distance to a point of an edge."""
    t = t_num / t_den if t_den != 0 else 0.0
    qx, qy, qz = ox - t * ex, oy - t * ey, oz - t * ez
    return qx * qx + qy * qy + qz * qz


@njit(cache=True, inline="always")
def _pt_tri_d2(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz):
    """Squared point-triangle distance (Ericson's Voronoi-region cascade)."""
    abx, aby, abz = bx - ax, by - ay, bz - az
    acx, acy, acz = cx - ax, cy - ay, cz - az
    apx, apy, apz = px - ax, py - ay, pz - az
    d1 = _dot(abx, aby, abz, apx, apy, apz)
    d2 = _dot(acx, acy, acz, apx, apy, apz)
    if d1 <= 0 and d2 <= 0:  # vertex a
        return _dot(apx, apy, apz, apx, apy, apz)
    bpx, bpy, bpz = px - bx, py - by, pz - bz
    d3 = _dot(abx, aby, abz, bpx, bpy, bpz)
    d4 = _dot(acx, acy, acz, bpx, bpy, bpz)
    if d3 >= 0 and d4 <= d3:  # vertex b
        return _dot(bpx, bpy, bpz, bpx, bpy, bpz)
    vc = d1 * d4 - d3 * d2
    if vc <= 0 and d1 >= 0 and d3 <= 0:  # edge ab
        return _edge_d2(apx, apy, apz, d1, d1 - d3, abx, aby, abz)
    cpx, cpy, cpz = px - cx, py - cy, pz - cz
    d5 = _dot(abx, aby, abz, cpx, cpy, cpz)
    d6 = _dot(acx, acy, acz, cpx, cpy, cpz)
    if d6 >= 0 and d5 <= d6:  # vertex c
        return _dot(cpx, cpy, cpz, cpx, cpy, cpz)
    vb = d5 * d2 - d1 * d6
    if vb <= 0 and d2 >= 0 and d6 <= 0:  # edge ac
        return _edge_d2(apx, apy, apz, d2, d2 - d6, acx, acy, acz)
    va = d3 * d6 - d5 * d4
    if va <= 0 and (d4 - d3) >= 0 and (d5 - d6) >= 0:  # edge bc
        return _edge_d2(bpx, bpy, bpz, d4 - d3, (d4 - d3) + (d5 - d6), cx - bx, cy - by, cz - bz)
    den = va + vb + vc
    if den != 0:
        v = vb / den
        w = vc / den
    else:
        v = 0.0
        w = 0.0
    qx = apx - v * abx - w * acx
    qy = apy - v * aby - w * acy
    qz = apz - v * abz - w * acz
    return qx * qx + qy * qy + qz * qz


@njit(cache=True, inline="always")
def _cluster_d2(qx, qy, qz, Pn, faces, c, cs, best):
    """Smallest squared distance to the faces of cluster ``c`` that is below ``best`` (else ``best``)."""
    for f in range(c * cs, c * cs + cs):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        d2 = _pt_tri_d2(
            qx, qy, qz, Pn[i0, 0], Pn[i0, 1], Pn[i0, 2], Pn[i1, 0], Pn[i1, 1], Pn[i1, 2], Pn[i2, 0], Pn[i2, 1], Pn[i2, 2]
        )
        if d2 < best:
            best = d2
    return best


@njit(cache=True)
def _nearest(qx, qy, qz, Pn, faces, aabb, n_clusters, lb, cs):
    """Exact distance to the nearest face: the cluster with the lowest AABB bound first (a tight
    first bound), then every cluster whose bound is below the best distance so far. Each cluster's
    bound is computed once and tested once, so a query costs ``O(clusters + 32 x visited)``."""
    cmin = -1
    m = np.inf
    for c in range(n_clusters):
        dx = max(aabb[c, 0] - qx, qx - aabb[c, 3], 0.0)
        dy = max(aabb[c, 1] - qy, qy - aabb[c, 4], 0.0)
        dz = max(aabb[c, 2] - qz, qz - aabb[c, 5], 0.0)
        d = dx * dx + dy * dy + dz * dz
        lb[c] = d
        if d < m:
            m = d
            cmin = c
    if cmin < 0:
        return math.sqrt(m)
    best = _cluster_d2(qx, qy, qz, Pn, faces, cmin, cs, np.inf)
    for c in range(n_clusters):
        if c != cmin and lb[c] < best:
            best = _cluster_d2(qx, qy, qz, Pn, faces, c, cs, best)
    return math.sqrt(best)


@njit(cache=True)
def _direction(P, faces, n_faces, n_clusters, cs, Q, cx, cy, cz, s, G, off, need_grad, gout):
    """Sum over Q's vertices of the owner's phi (and d/dQ into gout). One frame, one direction."""
    h = 2.0 / (G - 1)
    N = P.shape[0]
    Pn = np.empty((N, 3))
    Gr = np.empty((N, 2))  # (y, z) in row units: row j is at Gr = j (monotone map: min/max commute with it)
    lo = np.full(3, np.inf)  # the owner's vertex box (normalised): every inside grid point lies in it
    hi = np.full(3, -np.inf)
    for v in range(N):
        for a in range(3):
            x = (P[v, a] - (cx, cy, cz)[a]) / s
            Pn[v, a] = x
            lo[a] = min(lo[a], x)
            hi[a] = max(hi[a], x)
        Gr[v, 0] = (Pn[v, 1] + 1.0) / h - off
        Gr[v, 1] = (Pn[v, 2] + 1.0) / h - off

    # parity: toggles[k, j, i] at the first grid point beyond each crossing of row (j, k)
    tog = np.zeros((G, G, G + 1), np.uint8)
    for f in range(n_faces):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        x0, y0, z0 = Pn[i0, 0], Pn[i0, 1], Pn[i0, 2]
        x1, y1, z1 = Pn[i1, 0], Pn[i1, 1], Pn[i1, 2]
        x2, y2, z2 = Pn[i2, 0], Pn[i2, 1], Pn[i2, 2]
        jlo = max(int(math.ceil(min(Gr[i0, 0], Gr[i1, 0], Gr[i2, 0]) - _EPS_ROW)), 0)
        jhi = min(int(math.floor(max(Gr[i0, 0], Gr[i1, 0], Gr[i2, 0]) + _EPS_ROW)), G - 1)
        if jhi < jlo:
            continue
        klo = max(int(math.ceil(min(Gr[i0, 1], Gr[i1, 1], Gr[i2, 1]) - _EPS_ROW)), 0)
        khi = min(int(math.floor(max(Gr[i0, 1], Gr[i1, 1], Gr[i2, 1]) + _EPS_ROW)), G - 1)
        for k in range(klo, khi + 1):
            zc = -1.0 + (k + off) * h
            for j in range(jlo, jhi + 1):
                yc = -1.0 + (j + off) * h
                e0, s0 = _edge(i1, i2, y1, z1, y2, z2, yc, zc)
                e1, s1 = _edge(i2, i0, y2, z2, y0, z0, yc, zc)
                e2, s2 = _edge(i0, i1, y0, z0, y1, z1, yc, zc)
                if s0 != 0 and s0 == s1 and s1 == s2:
                    den = e0 + e1 + e2
                    xc = (e0 * x0 + e1 * x1 + e2 * x2) / den if den != 0 else x0
                    t = math.floor((xc + 1.0) / h - off) + 1.0
                    i = int(min(max(t, 0.0), float(G)))
                    tog[k, j, i] ^= 1
    # inside = prefix xor of the toggles along each row, computed for the rows the samples read
    # (row_done), together with the distance cache of those rows
    inside = np.empty((G, G, G), np.uint8)
    row_done = np.zeros((G, G), np.uint8)

    # cluster AABBs: built at the first distance query (many tasks have none)
    aabb = np.empty((n_clusters, 6))
    have_aabb = False
    lb = np.empty(n_clusters)

    # samples
    cache = np.empty(G * G * G)
    half_g = 0.5 * (G - 1)
    gscale = half_g / s
    total = 0.0
    for v in range(Q.shape[0]):
        qx, qy, qz = (Q[v, 0] - cx) / s, (Q[v, 1] - cy) / s, (Q[v, 2] - cz) / s
        # corners are at most one cell away: beyond the owner's box grown by a cell all are outside
        if qx < lo[0] - h or qx > hi[0] + h or qy < lo[1] - h or qy > hi[1] + h or qz < lo[2] - h or qz > hi[2] + h:
            continue  # (gout stays zero)
        fx = (qx + 1.0) * half_g
        fy = (qy + 1.0) * half_g
        fz = (qz + 1.0) * half_g
        if not (fx > -1.0 and fx < G and fy > -1.0 and fy < G and fz > -1.0 and fz < G):
            continue
        x0f, y0f, z0f = math.floor(fx), math.floor(fy), math.floor(fz)
        tx, ty, tz = fx - x0f, fy - y0f, fz - z0f
        ix0, iy0, iz0 = int(x0f), int(y0f), int(z0f)
        val = 0.0
        gx = 0.0
        gy = 0.0
        gz = 0.0
        for c in range(8):
            dx, dy, dz = c & 1, (c >> 1) & 1, c >> 2
            ix, iy, iz = ix0 + dx, iy0 + dy, iz0 + dz
            if ix < 0 or ix >= G or iy < 0 or iy >= G or iz < 0 or iz >= G:
                continue
            if row_done[iz, iy] == 0:
                acc = 0
                base = (iz * G + iy) * G
                for i in range(G):
                    acc ^= tog[iz, iy, i]
                    inside[iz, iy, i] = acc
                    cache[base + i] = -1.0
                row_done[iz, iy] = 1
            if inside[iz, iy, ix] == 0:
                continue
            flat = (iz * G + iy) * G + ix
            ph = cache[flat]
            if ph < 0:
                if not have_aabb:
                    for c in range(n_clusters):
                        for a in range(3):
                            aabb[c, a] = np.inf
                            aabb[c, 3 + a] = -np.inf
                        for f in range(c * cs, c * cs + cs):
                            for m in range(3):
                                vi = faces[f, m]
                                for a in range(3):
                                    aabb[c, a] = min(aabb[c, a], Pn[vi, a])
                                    aabb[c, 3 + a] = max(aabb[c, 3 + a], Pn[vi, a])
                    have_aabb = True
                ph = _nearest(
                    -1.0 + (ix + off) * h, -1.0 + (iy + off) * h, -1.0 + (iz + off) * h, Pn, faces, aabb, n_clusters, lb, cs
                )
                cache[flat] = ph
            wx = tx if dx else 1.0 - tx
            wy = ty if dy else 1.0 - ty
            wz = tz if dz else 1.0 - tz
            val += wx * wy * wz * ph
            gx += (1.0 if dx else -1.0) * wy * wz * ph
            gy += (1.0 if dy else -1.0) * wx * wz * ph
            gz += (1.0 if dz else -1.0) * wx * wy * ph
        total += val
        if need_grad:
            gout[v, 0] = gx * gscale
            gout[v, 1] = gy * gscale
            gout[v, 2] = gz * gscale
    return total


@njit(parallel=True, cache=True)
def _forward(va, vb, fa, fb, nfa, nfb, nca, ncb, cs, center, half, active, G, off, need_grad, sums, ga, gb):
    B = va.shape[0]
    for task in prange(2 * B):
        p = task % 2
        b = task // 2
        if active[p, b] == 0:
            continue
        c = center[p, b]
        if p == 0:
            sums[0, b] = _direction(va[b], fa, nfa, nca, cs, vb[b], c[0], c[1], c[2], half[0, b], G, off, need_grad, gb[b if need_grad else 0])
        else:
            sums[1, b] = _direction(vb[b], fb, nfb, ncb, cs, va[b], c[0], c[1], c[2], half[1, b], G, off, need_grad, ga[b if need_grad else 0])


def run_numba(ki: KernelInputs, need_grad: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Kernel-backend contract of :func:`h4d_fast.ops.collision.kernel_collision_loss`."""
    va, vb = (v.numpy() for v in ki.verts)
    fa, fb = ki.faces
    B = va.shape[0]
    sums = np.zeros((2, B))
    # gradients in the vertices' dtype (the kernel computes in float64 whatever it reads)
    ga = np.zeros((B, va.shape[1], 3) if need_grad else (1, 1, 3), va.dtype)
    gb = np.zeros((B, vb.shape[1], 3) if need_grad else (1, 1, 3), vb.dtype)
    # small dynamic chunks: frames cost very different amounts (contact or not), and a thread that
    # shares its core with another process must not hold back the others with a fixed share
    with numba.parallel_chunksize(2):
        _forward(
            va, vb, fa.faces.numpy(), fb.faces.numpy(), fa.n_faces, fb.n_faces, fa.n_clusters, fb.n_clusters, CLUSTER,
            ki.center.numpy(), ki.half.numpy(), ki.active.numpy(), ki.grid_size, ki.off, need_grad, sums, ga, gb,
        )  # fmt: skip
    if not need_grad:
        return torch.from_numpy(sums), None, None
    return torch.from_numpy(sums), torch.from_numpy(gb), torch.from_numpy(ga)
