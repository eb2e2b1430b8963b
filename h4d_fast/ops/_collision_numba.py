"""Numba (CPU, parallel over frame x direction) backend of the collision loss.

Same method as the GPU kernels (:mod:`h4d_fast.ops.collision`, "Kernel method"), arranged for a
CPU: one task per (frame, direction) in a ``prange``; inside a task

1. the owner's vertices are normalised into its box;
2. the sampled person's vertices that can read an inside grid point (within a cell of the
   owner's vertex box) are listed, with the grid rows their trilinear corners lie on; a task
   with none stops here (bodies whose boxes meet but that are apart cost one pass over each);
3. parity on those rows only: every triangle whose ``(y, z)`` bounds meet a listed row is
   rasterised onto it (watertight edge functions, as the reference's ``"parity"`` mode) and
   toggles one bit of the row's 64-bit words; a shift-xor prefix per word (the parity of the
   earlier words carried) gives the inside bits;
4. the listed samples are read; an inside corner's distance is computed on first use and
   cached (a ``have`` bit per grid point): exact minimum over all faces by a two-level bound
   search (clusters of 32 faces, super-clusters of 32 clusters, AABBs of both built at the
   task's first query), so each grid point is evaluated at most once. With the signed field a
   sample with an inside corner reads all its corners (minus the distance at outside ones)
   and adds ``relu`` of its value. With the exact field such a sample instead adds ``relu`` of
   its own exact signed distance: the same nearest-face search run at the vertex, the side from
   the closest feature's angle-weighted pseudo-normal (face, edge: the two faces' normals,
   vertex: its faces' normals weighted by their angles there), the gradient along the
   direction to the closest point.

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
def ray_crossing(i0, i1, i2, y0, z0, y1, z1, y2, z2, x0, x1, x2, yc, zc):
    """Where the line along ``x`` through ``(yc, zc)`` crosses triangle ``(i0, i1, i2)`` (its
    vertices' ``y, z`` and ``x``), by the watertight edge functions: ``(sign, x)`` with ``sign``
    +1 / -1 by the triangle's orientation, 0 (and ``x`` = 0) when the line misses it."""
    e0, s0 = _edge(i1, i2, y1, z1, y2, z2, yc, zc)
    e1, s1 = _edge(i2, i0, y2, z2, y0, z0, yc, zc)
    e2, s2 = _edge(i0, i1, y0, z0, y1, z1, yc, zc)
    if s0 != 0 and s0 == s1 and s1 == s2:
        den = e0 + e1 + e2
        return s0, ((e0 * x0 + e1 * x1 + e2 * x2) / den if den != 0 else x0)
    return 0.0, 0.0


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
def _cluster_d2(qx, qy, qz, Pn, faces, c, cs, best, arg):
    """Smallest squared distance to the faces of cluster ``c`` if below ``best`` and its face slot
    (else ``best``, ``arg``)."""
    for f in range(c * cs, c * cs + cs):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        d2 = _pt_tri_d2(
            qx, qy, qz, Pn[i0, 0], Pn[i0, 1], Pn[i0, 2], Pn[i1, 0], Pn[i1, 1], Pn[i1, 2], Pn[i2, 0], Pn[i2, 1], Pn[i2, 2]
        )
        if d2 < best:
            best = d2
            arg = f
    return best, arg


SUPER = 32  # clusters per super-cluster of the two-level nearest-face search


@njit(cache=True, inline="always")
def _box_d2(box, qx, qy, qz):
    """Squared distance from a point to an AABB ``(lo x, lo y, lo z, hi x, hi y, hi z)`` (0 inside)."""
    dx = max(box[0] - qx, qx - box[3], 0.0)
    dy = max(box[1] - qy, qy - box[4], 0.0)
    dz = max(box[2] - qz, qz - box[5], 0.0)
    return dx * dx + dy * dy + dz * dz


@njit(cache=True)
def _nearest(qx, qy, qz, Pn, faces, aabb, saabb, n_clusters, cs):
    """Exact distance to the nearest face and that face's slot, by a two-level bound search.

    Clusters (``cs`` faces, Morton order) are grouped by ``SUPER`` consecutive ones into
    super-clusters with their own AABBs. The super-cluster with the lowest bound is searched first
    (its nearest cluster first), which gives a tight best distance; then every super-cluster and,
    inside it, every cluster whose bound is below the best so far. A face nearer than the result
    would lie in a cluster and a super-cluster whose bounds are below it, so the minimum is exact.
    A query costs ``O(clusters / SUPER + SUPER x visited super-clusters + cs x visited clusters)``.
    """
    n_super = saabb.shape[0]
    smin = 0
    m = np.inf
    for t in range(n_super):
        d = _box_d2(saabb[t], qx, qy, qz)
        if d < m:
            m = d
            smin = t
    best = np.inf
    # the nearest super-cluster: its nearest cluster first, then the others below the best
    c0, c1 = smin * SUPER, min(smin * SUPER + SUPER, n_clusters)
    cmin = c0
    m = np.inf
    for c in range(c0, c1):
        d = _box_d2(aabb[c], qx, qy, qz)
        if d < m:
            m = d
            cmin = c
    best, arg = _cluster_d2(qx, qy, qz, Pn, faces, cmin, cs, best, 0)
    for c in range(c0, c1):
        if c != cmin and _box_d2(aabb[c], qx, qy, qz) < best:
            best, arg = _cluster_d2(qx, qy, qz, Pn, faces, c, cs, best, arg)
    for t in range(n_super):
        if t == smin or _box_d2(saabb[t], qx, qy, qz) >= best:
            continue
        for c in range(t * SUPER, min(t * SUPER + SUPER, n_clusters)):
            if _box_d2(aabb[c], qx, qy, qz) < best:
                best, arg = _cluster_d2(qx, qy, qz, Pn, faces, c, cs, best, arg)
    return math.sqrt(best), arg


@njit(cache=True, inline="always")
def _closest_feature(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz):
    """Closest point of a triangle and its feature (0/1/2 vertex a/b/c, 3/4/5 edge ab/bc/ca, 6
    interior), Ericson's cascade as :func:`_pt_tri_d2`."""
    abx, aby, abz = bx - ax, by - ay, bz - az
    acx, acy, acz = cx - ax, cy - ay, cz - az
    apx, apy, apz = px - ax, py - ay, pz - az
    d1 = _dot(abx, aby, abz, apx, apy, apz)
    d2 = _dot(acx, acy, acz, apx, apy, apz)
    if d1 <= 0 and d2 <= 0:
        return ax, ay, az, 0
    bpx, bpy, bpz = px - bx, py - by, pz - bz
    d3 = _dot(abx, aby, abz, bpx, bpy, bpz)
    d4 = _dot(acx, acy, acz, bpx, bpy, bpz)
    if d3 >= 0 and d4 <= d3:
        return bx, by, bz, 1
    vc = d1 * d4 - d3 * d2
    if vc <= 0 and d1 >= 0 and d3 <= 0:
        t = d1 / (d1 - d3) if d1 != d3 else 0.0
        return ax + t * abx, ay + t * aby, az + t * abz, 3
    cpx, cpy, cpz = px - cx, py - cy, pz - cz
    d5 = _dot(abx, aby, abz, cpx, cpy, cpz)
    d6 = _dot(acx, acy, acz, cpx, cpy, cpz)
    if d6 >= 0 and d5 <= d6:
        return cx, cy, cz, 2
    vb = d5 * d2 - d1 * d6
    if vb <= 0 and d2 >= 0 and d6 <= 0:
        t = d2 / (d2 - d6) if d2 != d6 else 0.0
        return ax + t * acx, ay + t * acy, az + t * acz, 5
    va = d3 * d6 - d5 * d4
    if va <= 0 and (d4 - d3) >= 0 and (d5 - d6) >= 0:
        den = (d4 - d3) + (d5 - d6)
        t = (d4 - d3) / den if den != 0 else 0.0
        return bx + t * (cx - bx), by + t * (cy - by), bz + t * (cz - bz), 4
    den = va + vb + vc
    v = vb / den if den != 0 else 0.0
    w = vc / den if den != 0 else 0.0
    return ax + v * abx + w * acx, ay + v * aby + w * acy, az + v * abz + w * acz, 6


@njit(cache=True, inline="always")
def _unit_normal(Pn, forig, f):
    """Unit normal of original face ``f`` (0 for a degenerate face)."""
    i0, i1, i2 = forig[f, 0], forig[f, 1], forig[f, 2]
    ex, ey, ez = Pn[i1, 0] - Pn[i0, 0], Pn[i1, 1] - Pn[i0, 1], Pn[i1, 2] - Pn[i0, 2]
    gx, gy, gz = Pn[i2, 0] - Pn[i0, 0], Pn[i2, 1] - Pn[i0, 1], Pn[i2, 2] - Pn[i0, 2]
    nx, ny, nz = ey * gz - ez * gy, ez * gx - ex * gz, ex * gy - ey * gx
    n = math.sqrt(nx * nx + ny * ny + nz * nz)
    if n == 0:
        return 0.0, 0.0, 0.0
    return nx / n, ny / n, nz / n


@njit(cache=True)
def _pseudo_normal(Pn, forig, adj, v2f, f, feat):
    """Angle-weighted pseudo-normal (Baerentzen & Aanaes) of feature ``feat`` of original face ``f``."""
    if feat == 6:
        return _unit_normal(Pn, forig, f)
    if feat >= 3:  # edge ab / bc / ca: the two faces' normals
        ax, ay, az = _unit_normal(Pn, forig, f)
        bx, by, bz = _unit_normal(Pn, forig, adj[f, feat - 3])
        return ax + bx, ay + by, az + bz
    vid = forig[f, feat]
    nx = ny = nz = 0.0
    for j in range(v2f.shape[1]):
        g = v2f[vid, j]
        if g < 0:
            break
        k = 0 if forig[g, 0] == vid else (1 if forig[g, 1] == vid else 2)
        o1, o2 = forig[g, (k + 1) % 3], forig[g, (k + 2) % 3]
        e1x, e1y, e1z = Pn[o1, 0] - Pn[vid, 0], Pn[o1, 1] - Pn[vid, 1], Pn[o1, 2] - Pn[vid, 2]
        e2x, e2y, e2z = Pn[o2, 0] - Pn[vid, 0], Pn[o2, 1] - Pn[vid, 1], Pn[o2, 2] - Pn[vid, 2]
        l1 = math.sqrt(e1x * e1x + e1y * e1y + e1z * e1z)
        l2 = math.sqrt(e2x * e2x + e2y * e2y + e2z * e2z)
        if l1 == 0 or l2 == 0:
            continue
        ang = math.acos(min(1.0, max(-1.0, (e1x * e2x + e1y * e2y + e1z * e2z) / (l1 * l2))))
        ux, uy, uz = _unit_normal(Pn, forig, g)
        nx += ang * ux
        ny += ang * uy
        nz += ang * uz
    return nx, ny, nz


@njit(cache=True)
def _cluster_boxes(Pn, faces, n_clusters, cs, aabb, saabb):
    """AABBs of the face clusters and of their super-clusters (normalised coordinates)."""
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
    for t in range(saabb.shape[0]):
        for a in range(3):
            saabb[t, a] = np.inf
            saabb[t, 3 + a] = -np.inf
        for c in range(t * SUPER, min(t * SUPER + SUPER, n_clusters)):
            for a in range(3):
                saabb[t, a] = min(saabb[t, a], aabb[c, a])
                saabb[t, 3 + a] = max(saabb[t, 3 + a], aabb[c, 3 + a])


@njit(cache=True)
def _direction(P, faces, n_faces, n_clusters, cs, Q, cx, cy, cz, s, G, off, signed, margin, need_grad, gout,
               exact, order, forig, adj, v2f, taper):
    """Sum over Q's vertices of the owner's phi (and d/dQ into gout). One frame, one direction.

    Order of the work: the owner's vertices normalised; the samples that can read an inside
    grid point mark the grid rows they read (none: nothing else is done); parity on the marked
    rows only; then the samples, a grid point's distance computed at its first use.
    """
    h = 2.0 / (G - 1)
    N = P.shape[0]
    Pn = np.empty((N, 3))
    lo = np.full(3, np.inf)  # the owner's vertex box (normalised): every inside grid point lies in it
    hi = np.full(3, -np.inf)
    for v in range(N):
        x, y, z = (P[v, 0] - cx) / s, (P[v, 1] - cy) / s, (P[v, 2] - cz) / s
        Pn[v, 0], Pn[v, 1], Pn[v, 2] = x, y, z
        lo[0], lo[1], lo[2] = min(lo[0], x), min(lo[1], y), min(lo[2], z)
        hi[0], hi[1], hi[2] = max(hi[0], x), max(hi[1], y), max(hi[2], z)
    half_g = 0.5 * (G - 1)

    # rows (j, k) that some sample reads: its corners are at most one cell away, so beyond the
    # owner's box grown by a cell every corner is outside and the sample reads nothing
    need = np.zeros((G, G), np.uint8)
    jmin, jmax, kmin, kmax = G, -1, G, -1
    x_lo, y_lo, z_lo, x_hi, y_hi, z_hi = lo[0] - h, lo[1] - h, lo[2] - h, hi[0] + h, hi[1] + h, hi[2] + h
    sidx = np.empty(Q.shape[0], np.int32)  # the samples that pass (the sample loop reads only these)
    n_s = 0
    for v in range(Q.shape[0]):
        qx, qy, qz = (Q[v, 0] - cx) / s, (Q[v, 1] - cy) / s, (Q[v, 2] - cz) / s
        if qx < x_lo or qx > x_hi or qy < y_lo or qy > y_hi or qz < z_lo or qz > z_hi:
            continue
        fx, fy, fz = (qx + 1.0) * half_g, (qy + 1.0) * half_g, (qz + 1.0) * half_g
        if not (fx > -1.0 and fx < G and fy > -1.0 and fy < G and fz > -1.0 and fz < G):
            continue
        sidx[n_s] = v
        n_s += 1
        iy0, iz0 = int(math.floor(fy)), int(math.floor(fz))
        for iz in range(max(iz0, 0), min(iz0 + 2, G)):
            for iy in range(max(iy0, 0), min(iy0 + 2, G)):
                need[iz, iy] = 1
                jmin, jmax = min(jmin, iy), max(jmax, iy)
                kmin, kmax = min(kmin, iz), max(kmax, iz)
    if jmax < 0:
        return 0.0

    # parity on the needed rows, as bits: row (k, j) is W 64-bit words; a crossing toggles the bit
    # of the first grid point beyond it (a crossing beyond the last grid point changes nothing)
    W = (G + 63) // 64
    bits = np.zeros((G, G, W), np.uint64)
    one = np.uint64(1)
    for f in range(n_faces):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        y0, z0 = Pn[i0, 1], Pn[i0, 2]
        y1, z1 = Pn[i1, 1], Pn[i1, 2]
        y2, z2 = Pn[i2, 1], Pn[i2, 2]
        # (y, z) in row units: row j is at (y + 1) / h - off (monotone: min/max commute with it)
        jlo = max(int(math.ceil((min(y0, y1, y2) + 1.0) / h - off - _EPS_ROW)), jmin)
        jhi = min(int(math.floor((max(y0, y1, y2) + 1.0) / h - off + _EPS_ROW)), jmax)
        if jhi < jlo:
            continue
        klo = max(int(math.ceil((min(z0, z1, z2) + 1.0) / h - off - _EPS_ROW)), kmin)
        khi = min(int(math.floor((max(z0, z1, z2) + 1.0) / h - off + _EPS_ROW)), kmax)
        for k in range(klo, khi + 1):
            zc = -1.0 + (k + off) * h
            for j in range(jlo, jhi + 1):
                if need[k, j] == 0:
                    continue
                yc = -1.0 + (j + off) * h
                sg, xc = ray_crossing(i0, i1, i2, y0, z0, y1, z1, y2, z2, Pn[i0, 0], Pn[i1, 0], Pn[i2, 0], yc, zc)
                if sg != 0:
                    t = math.floor((xc + 1.0) / h - off) + 1.0
                    i = int(min(max(t, 0.0), float(G)))
                    if i < G:
                        bits[k, j, i >> 6] ^= one << np.uint64(i & 63)
    # inside = inclusive prefix xor of the toggles along each needed row (shift-xor within a word,
    # the parity of the earlier words carried over)
    for k in range(kmin, kmax + 1):
        for j in range(jmin, jmax + 1):
            if need[k, j] == 0:
                continue
            carry = False
            for w in range(W):
                x = bits[k, j, w]
                x ^= x << np.uint64(1)
                x ^= x << np.uint64(2)
                x ^= x << np.uint64(4)
                x ^= x << np.uint64(8)
                x ^= x << np.uint64(16)
                x ^= x << np.uint64(32)
                top = (x >> np.uint64(63)) != 0
                if carry:
                    x = ~x
                bits[k, j, w] = x
                carry = carry != top

    # cluster AABBs: built at the first distance query (many tasks have none)
    aabb = np.empty((n_clusters, 6))
    saabb = np.empty(((n_clusters + SUPER - 1) // SUPER, 6))
    have_aabb = False

    # samples; a grid point's distance is computed at its first use (``have`` bits, same layout)
    cache = np.empty(G * G * G)
    have = np.zeros((G, G, W), np.uint64)
    gscale = half_g / s
    total = 0.0
    for si in range(n_s):  # (the other samples' gout stays zero)
        v = sidx[si]
        qx, qy, qz = (Q[v, 0] - cx) / s, (Q[v, 1] - cy) / s, (Q[v, 2] - cz) / s
        fx = (qx + 1.0) * half_g
        fy = (qy + 1.0) * half_g
        fz = (qz + 1.0) * half_g
        x0f, y0f, z0f = math.floor(fx), math.floor(fy), math.floor(fz)
        tx, ty, tz = fx - x0f, fy - y0f, fz - z0f
        ix0, iy0, iz0 = int(x0f), int(y0f), int(z0f)
        if signed or taper > 0:  # a sample whose corners are all outside reads a value <= 0 (relu / taper: 0)
            anyin = False
            for c in range(8):
                ix, iy, iz = ix0 + (c & 1), iy0 + ((c >> 1) & 1), iz0 + (c >> 2)
                if 0 <= ix < G and 0 <= iy < G and 0 <= iz < G and (bits[iz, iy, ix >> 6] >> np.uint64(ix & 63)) & one != 0:
                    anyin = True
                    break
            if not anyin:
                continue
        if exact:  # the vertex's own signed distance (no grid value read)
            if not have_aabb:
                _cluster_boxes(Pn, faces, n_clusters, cs, aabb, saabb)
                have_aabb = True
            d, slot = _nearest(qx, qy, qz, Pn, faces, aabb, saabb, n_clusters, cs)
            f = order[slot]
            i0, i1, i2 = forig[f, 0], forig[f, 1], forig[f, 2]
            px, py, pz, feat = _closest_feature(qx, qy, qz, Pn[i0, 0], Pn[i0, 1], Pn[i0, 2], Pn[i1, 0], Pn[i1, 1], Pn[i1, 2],
                                                Pn[i2, 0], Pn[i2, 1], Pn[i2, 2])  # fmt: skip
            nx, ny, nz = _pseudo_normal(Pn, forig, adj, v2f, f, feat)
            dx, dy, dz = qx - px, qy - py, qz - pz
            inside = dx * nx + dy * ny + dz * nz < 0
            val = (d if inside else -d) + margin / s
            if val <= 0.0:
                continue
            total += val
            if need_grad:  # d(sd)/dv: towards the inside, along the closest-point direction (else -n)
                if d > 0:
                    sg = (1.0 if inside else -1.0) / (d * s)
                    gout[v, 0], gout[v, 1], gout[v, 2] = dx * sg, dy * sg, dz * sg
                else:
                    nn = math.sqrt(nx * nx + ny * ny + nz * nz) * s
                    if nn > 0:
                        gout[v, 0], gout[v, 1], gout[v, 2] = -nx / nn, -ny / nn, -nz / nn
            continue
        val = 0.0
        gx = 0.0
        gy = 0.0
        gz = 0.0
        vs = 0.0  # taper: the signed interpolation beside the inside grid's
        sx = 0.0
        sy = 0.0
        sz = 0.0
        for c in range(8):
            dx, dy, dz = c & 1, (c >> 1) & 1, c >> 2
            ix, iy, iz = ix0 + dx, iy0 + dy, iz0 + dz
            if ix < 0 or ix >= G or iy < 0 or iy >= G or iz < 0 or iz >= G:
                continue
            w, b = ix >> 6, np.uint64(ix & 63)
            ins = (bits[iz, iy, w] >> b) & one != 0
            if not ins and not signed and taper <= 0:
                continue  # outside: phi = 0
            flat = (iz * G + iy) * G + ix
            if (have[iz, iy, w] >> b) & one == 0:
                if not have_aabb:
                    _cluster_boxes(Pn, faces, n_clusters, cs, aabb, saabb)
                    have_aabb = True
                cache[flat] = _nearest(-1.0 + (ix + off) * h, -1.0 + (iy + off) * h, -1.0 + (iz + off) * h, Pn, faces, aabb, saabb, n_clusters, cs)[0]
                have[iz, iy, w] |= one << b
            ph = cache[flat] if ins else -cache[flat]
            wx = tx if dx else 1.0 - tx
            wy = ty if dy else 1.0 - ty
            wz = tz if dz else 1.0 - tz
            if taper > 0:
                vs += wx * wy * wz * ph
                sx += (1.0 if dx else -1.0) * wy * wz * ph
                sy += (1.0 if dy else -1.0) * wx * wz * ph
                sz += (1.0 if dz else -1.0) * wx * wy * ph
                if not ins:
                    continue  # the inside grid's value there is 0
            val += wx * wy * wz * ph
            gx += (1.0 if dx else -1.0) * wy * wz * ph
            gy += (1.0 if dy else -1.0) * wx * wz * ph
            gz += (1.0 if dz else -1.0) * wx * wy * ph
        if signed:
            val += margin / s
            if val <= 0.0:
                continue  # relu: no value, no gradient
        elif taper > 0:  # weight min(1, (signed + r) / r): 1 inside, 0 from r outside on
            r = taper / s
            wt = (vs + r) / r
            if wt <= 0.0 or val == 0.0:
                continue
            if wt < 1.0:
                gx, gy, gz = wt * gx + val / r * sx, wt * gy + val / r * sy, wt * gz + val / r * sz
                val *= wt
        total += val
        if need_grad:
            gout[v, 0] = gx * gscale
            gout[v, 1] = gy * gscale
            gout[v, 2] = gz * gscale
    return total


@njit(parallel=True, cache=True)
def _forward(va, vb, fa, fb, nfa, nfb, nca, ncb, cs, center, half, active, G, off, signed, margin, need_grad, sums, ga, gb,
             exact, oa, ob, foa, fob, adja, adjb, v2fa, v2fb, taper):
    B = va.shape[0]
    for task in prange(2 * B):
        p = task % 2
        b = task // 2
        if active[p, b] == 0:
            continue
        c = center[p, b]
        if p == 0:
            sums[0, b] = _direction(va[b], fa, nfa, nca, cs, vb[b], c[0], c[1], c[2], half[0, b], G, off, signed, margin, need_grad, gb[b if need_grad else 0],
                                    exact, oa, foa, adja, v2fa, taper)
        else:
            sums[1, b] = _direction(vb[b], fb, nfb, ncb, cs, va[b], c[0], c[1], c[2], half[1, b], G, off, signed, margin, need_grad, ga[b if need_grad else 0],
                                    exact, ob, fob, adjb, v2fb, taper)


_NO_TOPOLOGY = (np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros((1, 3), np.int64), np.zeros((1, 3), np.int64),
                np.zeros((1, 3), np.int64), np.zeros((1, 3), np.int64), np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int64))


def _exact_topology(ki: KernelInputs) -> tuple[np.ndarray, ...]:
    """The exact field's arrays per person: slot -> original face, the original faces, the face
    across each edge and vertex -> faces (:func:`h4d_fast.ops.mesh_geometry._topology`, cached)."""
    from .mesh_geometry import _topology

    out: list[np.ndarray] = []
    tops = [_topology(fc.original, v.shape[1]) for fc, v in zip(ki.faces, ki.verts)]
    out += [fc.order.numpy() for fc in ki.faces]
    out += [t.faces.numpy() for t in tops]
    out += [t.edge_adj.numpy() for t in tops]
    out += [t.v2f.numpy() for t in tops]
    return tuple(out)


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
    topo = _exact_topology(ki) if ki.exact else _NO_TOPOLOGY
    with numba.parallel_chunksize(2):
        _forward(
            va, vb, fa.faces.numpy(), fb.faces.numpy(), fa.n_faces, fb.n_faces, fa.n_clusters, fb.n_clusters, CLUSTER,
            ki.center.numpy(), ki.half.numpy(), ki.active.numpy(), ki.grid_size, ki.off, ki.signed, float(ki.margin), need_grad, sums, ga, gb,
            ki.exact, *topo, float(ki.taper),
        )  # fmt: skip
    if not need_grad:
        return torch.from_numpy(sums), None, None
    return torch.from_numpy(sums), torch.from_numpy(gb), torch.from_numpy(ga)
