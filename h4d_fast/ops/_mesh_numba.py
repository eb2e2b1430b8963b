"""Numba (CPU) helpers of :func:`h4d_fast.ops.penetration.inside_depth` (``method="fast"``).

Two kernels, per frame and direction (points of one mesh against the other mesh):

* :func:`candidates`: an exact cull. The other mesh's box is cut into cubic cells; a cell met by
  the bounding box of any of its triangles is a *surface* cell, every other cell lies entirely
  inside or entirely outside the closed mesh, which the winding number of its centre tells (signed crossings
  of rays along ``-x``, rasterised over the triangles with the watertight edge functions of the
  collision kernels; non-zero = inside, so regions where a posed mesh overlaps itself count as
  inside, as for the pseudo-normal test). Points in outside, non-surface cells are outside and need nothing more; the rest
  (near the surface or inside) are the candidates. In a hug most vertices of one body lie in the
  other's box but far from its surface: ~80% of them stop here.
* :func:`closest_features`: for each candidate, the closest point among the triangles around its
  ``k`` nearest vertices (the same search as the torch code), its feature (vertex, edge, face) and
  the inside flag from that feature's angle-weighted pseudo-normal.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._collision_numba import ray_crossing


@njit(cache=True, nogil=True)
def cell_winding(verts, faces, lo, cell, nx, ny, nz):
    """``[nz, ny, nx]`` uint8: 1 where the winding number of the cell centre (cells of size ``cell``
    from ``lo``) is non-zero, i.e. the centre is inside the closed mesh ``verts, faces``.

    Signed crossings of rays along ``-x``: each triangle is rasterised over the rows ``(j, k)``
    whose centre its ``(y, z)`` projection covers (watertight edge functions of the collision
    kernels) and adds its sign at the first cell beyond the crossing; a prefix sum along each
    row gives the winding number. Non-zero = inside, so regions where a posed mesh overlaps
    itself count as inside.
    """
    tog = np.zeros((nz, ny, nx + 1), np.int16)
    for f in range(faces.shape[0]):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        y0, z0 = verts[i0, 1], verts[i0, 2]
        y1, z1 = verts[i1, 1], verts[i1, 2]
        y2, z2 = verts[i2, 1], verts[i2, 2]
        jlo = max(int(math.ceil((min(y0, y1, y2) - lo[1]) / cell - 0.5)), 0)
        jhi = min(int(math.floor((max(y0, y1, y2) - lo[1]) / cell - 0.5)), ny - 1)
        klo = max(int(math.ceil((min(z0, z1, z2) - lo[2]) / cell - 0.5)), 0)
        khi = min(int(math.floor((max(z0, z1, z2) - lo[2]) / cell - 0.5)), nz - 1)
        for k in range(klo, khi + 1):
            zc = lo[2] + (k + 0.5) * cell
            for j in range(jlo, jhi + 1):
                yc = lo[1] + (j + 0.5) * cell
                s0, xc = ray_crossing(i0, i1, i2, y0, z0, y1, z1, y2, z2, verts[i0, 0], verts[i1, 0], verts[i2, 0], yc, zc)
                if s0 != 0:
                    t = math.floor((xc - lo[0]) / cell - 0.5) + 1.0
                    i = int(min(max(t, 0.0), float(nx)))
                    tog[k, j, i] += np.int16(s0)  # signed crossing: the winding number along the row
    inside = np.zeros((nz, ny, nx), np.uint8)
    for k in range(nz):
        for j in range(ny):
            acc = 0
            for i in range(nx):
                acc += tog[k, j, i]
                inside[k, j, i] = 1 if acc != 0 else 0
    return inside


@njit(cache=True, nogil=True)
def vertex_bounds(verts):
    """``(lo [3], hi [3])``: the vertices' box (inf / -inf when there are none)."""
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for v in range(verts.shape[0]):
        for a in range(3):
            x = verts[v, a]
            if x < lo[a]:
                lo[a] = x
            if x > hi[a]:
                hi[a] = x
    return lo, hi


@njit(cache=True, nogil=True)
def candidates(points, verts, faces, cell):
    """``[M]`` uint8: 1 where a point may be inside the mesh ``verts, faces`` (see module docstring)."""
    M = points.shape[0]
    out = np.zeros(M, np.uint8)
    lo, hi = vertex_bounds(verts)
    n = np.empty(3, np.int64)
    for a in range(3):
        n[a] = max(1, int(math.ceil((hi[a] - lo[a]) / cell)))
    nx, ny, nz = n[0], n[1], n[2]
    surf = np.zeros((nz, ny, nx), np.uint8)
    for f in range(faces.shape[0]):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        # surface cells: the triangle's bounding box
        c0 = np.empty(3, np.int64)
        c1 = np.empty(3, np.int64)
        for a in range(3):
            mn = min(verts[i0, a], verts[i1, a], verts[i2, a])
            mx = max(verts[i0, a], verts[i1, a], verts[i2, a])
            c0[a] = min(max(int(math.floor((mn - lo[a]) / cell)), 0), n[a] - 1)
            c1[a] = min(max(int(math.floor((mx - lo[a]) / cell)), 0), n[a] - 1)
        for k in range(c0[2], c1[2] + 1):
            for j in range(c0[1], c1[1] + 1):
                for i in range(c0[0], c1[0] + 1):
                    surf[k, j, i] = 1
    inside = cell_winding(verts, faces, lo, cell, nx, ny, nz)
    for m in range(M):
        ok = True
        for a in range(3):
            if not (points[m, a] >= lo[a] and points[m, a] <= hi[a]):
                ok = False
        if not ok:
            continue
        i = min(int((points[m, 0] - lo[0]) / cell), nx - 1)
        j = min(int((points[m, 1] - lo[1]) / cell), ny - 1)
        k = min(int((points[m, 2] - lo[2]) / cell), nz - 1)
        if surf[k, j, i] or inside[k, j, i]:
            out[m] = 1
    return out


@njit(cache=True, nogil=True, inline="always")
def closest_st(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz):
    """Closest point of triangle ``abc`` to ``p`` as ``a + s (b - a) + t (c - a)``: ``(s, t, feature)``
    with feature 0, 1, 2 = vertex a, b, c; 3, 4, 5 = edge ab, bc, ca; 6 = the face (Ericson's
    Voronoi-region cascade, in the order of the torch code ``_closest_st``: first match wins)."""
    abx, aby, abz = bx - ax, by - ay, bz - az
    acx, acy, acz = cx - ax, cy - ay, cz - az
    apx, apy, apz = px - ax, py - ay, pz - az
    d1 = abx * apx + aby * apy + abz * apz
    d2 = acx * apx + acy * apy + acz * apz
    ab2 = abx * abx + aby * aby + abz * abz
    ac2 = acx * acx + acy * acy + acz * acz
    abac = abx * acx + aby * acy + abz * acz
    d3, d4 = d1 - ab2, d2 - abac
    d5, d6 = d1 - abac, d2 - ac2
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    if d1 <= 0 and d2 <= 0:
        return 0.0, 0.0, 0
    if d3 >= 0 and d4 <= d3:
        return 1.0, 0.0, 1
    if vc <= 0 and d1 >= 0 and d3 <= 0:
        den = d1 - d3
        return (d1 / den if den != 0 else 0.0), 0.0, 3
    if d6 >= 0 and d5 <= d6:
        return 0.0, 1.0, 2
    if vb <= 0 and d2 >= 0 and d6 <= 0:
        den = d2 - d6
        return 0.0, (d2 / den if den != 0 else 0.0), 5
    if va <= 0 and (d4 - d3) >= 0 and (d5 - d6) >= 0:
        den = (d4 - d3) + (d5 - d6)
        w = (d4 - d3) / den if den != 0 else 0.0
        return 1.0 - w, w, 4
    den = va + vb + vc
    return (vb / den if den != 0 else 0.0), (vc / den if den != 0 else 0.0), 6


@njit(cache=True, nogil=True)
def closest_features(points, verts, faces, v2f, nn, fn, vn, en):
    """Per point: distance to the closest point among the candidate triangles and the inside flag.

    Args:
        points ``[M, 3]``; verts ``[N, 3]``; faces ``[T, 3]``; v2f ``[N, vmax]`` incident faces (-1 pad);
        nn ``[M, k]`` nearest vertices; fn ``[T, 3]`` face normals, vn ``[N, 3]`` vertex and
        en ``[T, 3, 3]`` edge (ab, bc, ca) pseudo-normals.
    Returns:
        dist ``[M]``, inside ``[M]`` uint8.
    """
    M = points.shape[0]
    dist = np.empty(M)
    ins = np.zeros(M, np.uint8)
    for m in range(M):
        px, py, pz = points[m, 0], points[m, 1], points[m, 2]
        best = np.inf
        bf = -1
        bs = 0.0
        bt = 0.0
        bfeat = 6
        for kk in range(nn.shape[1]):
            v = nn[m, kk]
            for c in range(v2f.shape[1]):
                f = v2f[v, c]
                if f < 0:
                    break
                a, b, cc = faces[f, 0], faces[f, 1], faces[f, 2]
                s, t, feat = closest_st(px, py, pz, verts[a, 0], verts[a, 1], verts[a, 2], verts[b, 0], verts[b, 1], verts[b, 2],
                                        verts[cc, 0], verts[cc, 1], verts[cc, 2])
                apx, apy, apz = px - verts[a, 0], py - verts[a, 1], pz - verts[a, 2]
                abx, aby, abz = verts[b, 0] - verts[a, 0], verts[b, 1] - verts[a, 1], verts[b, 2] - verts[a, 2]
                acx, acy, acz = verts[cc, 0] - verts[a, 0], verts[cc, 1] - verts[a, 1], verts[cc, 2] - verts[a, 2]
                qx = apx - s * abx - t * acx
                qy = apy - s * aby - t * acy
                qz = apz - s * abz - t * acz
                d2q = qx * qx + qy * qy + qz * qz
                if d2q < best:
                    best, bf, bs, bt, bfeat = d2q, f, s, t, feat
        if bf < 0:
            dist[m] = np.inf
            continue
        a, b, cc = faces[bf, 0], faces[bf, 1], faces[bf, 2]
        qx = verts[a, 0] + bs * (verts[b, 0] - verts[a, 0]) + bt * (verts[cc, 0] - verts[a, 0])
        qy = verts[a, 1] + bs * (verts[b, 1] - verts[a, 1]) + bt * (verts[cc, 1] - verts[a, 1])
        qz = verts[a, 2] + bs * (verts[b, 2] - verts[a, 2]) + bt * (verts[cc, 2] - verts[a, 2])
        if bfeat <= 2:
            vi = faces[bf, bfeat]
            nx_, ny_, nz_ = vn[vi, 0], vn[vi, 1], vn[vi, 2]
        elif bfeat <= 5:
            e = bfeat - 3
            nx_, ny_, nz_ = en[bf, e, 0], en[bf, e, 1], en[bf, e, 2]
        else:
            nx_, ny_, nz_ = fn[bf, 0], fn[bf, 1], fn[bf, 2]
        dx, dy, dz = px - qx, py - qy, pz - qz
        dist[m] = math.sqrt(dx * dx + dy * dy + dz * dz)
        if dx * nx_ + dy * ny_ + dz * nz_ < 0:
            ins[m] = 1
    return dist, ins


@njit(cache=True, nogil=True)
def normals(verts, faces, edge_adj):
    """Unit face normals ``[T, 3]``, angle-weighted vertex pseudo-normals ``[N, 3]`` and edge
    pseudo-normals ``[T, 3, 3]`` (edges ab, bc, ca; sum of the two faces' normals), as
    :func:`h4d_fast.ops.mesh_geometry._normals`."""
    T = faces.shape[0]
    fn = np.zeros((T, 3))
    vn = np.zeros((verts.shape[0], 3))
    for f in range(T):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        e1x, e1y, e1z = verts[b, 0] - verts[a, 0], verts[b, 1] - verts[a, 1], verts[b, 2] - verts[a, 2]
        e2x, e2y, e2z = verts[c, 0] - verts[a, 0], verts[c, 1] - verts[a, 1], verts[c, 2] - verts[a, 2]
        nx = e1y * e2z - e1z * e2y
        ny = e1z * e2x - e1x * e2z
        nz = e1x * e2y - e1y * e2x
        ln = max(math.sqrt(nx * nx + ny * ny + nz * nz), 1e-20)
        fn[f, 0], fn[f, 1], fn[f, 2] = nx / ln, ny / ln, nz / ln
        for k in range(3):
            p = faces[f, k]
            q = faces[f, (k + 1) % 3]
            r = faces[f, (k + 2) % 3]
            ux, uy, uz = verts[q, 0] - verts[p, 0], verts[q, 1] - verts[p, 1], verts[q, 2] - verts[p, 2]
            wx, wy, wz = verts[r, 0] - verts[p, 0], verts[r, 1] - verts[p, 1], verts[r, 2] - verts[p, 2]
            den = max(math.sqrt(ux * ux + uy * uy + uz * uz) * math.sqrt(wx * wx + wy * wy + wz * wz), 1e-20)
            cs = min(max((ux * wx + uy * wy + uz * wz) / den, -1.0), 1.0)
            ang = math.acos(cs)
            vn[p, 0] += fn[f, 0] * ang
            vn[p, 1] += fn[f, 1] * ang
            vn[p, 2] += fn[f, 2] * ang
    en = np.empty((T, 3, 3))
    for f in range(T):
        for e in range(3):
            g = edge_adj[f, e]
            for a in range(3):
                en[f, e, a] = fn[f, a] + fn[g, a]
    return fn, vn, en


@njit(cache=True, nogil=True)
def vertex_areas(X, faces):
    """``[M]`` a third of the area of the triangles around each vertex of the mesh ``X [M, 3]``
    (:func:`h4d_fast.ops.mesh_geometry.vertex_areas`)."""
    out = np.zeros(X.shape[0])
    for t in range(faces.shape[0]):
        a, b, c = faces[t, 0], faces[t, 1], faces[t, 2]
        ux, uy, uz = X[b, 0] - X[a, 0], X[b, 1] - X[a, 1], X[b, 2] - X[a, 2]
        vx, vy, vz = X[c, 0] - X[a, 0], X[c, 1] - X[a, 1], X[c, 2] - X[a, 2]
        cx, cy, cz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx
        ar = 0.5 * math.sqrt(cx * cx + cy * cy + cz * cz) / 3.0
        out[a] += ar
        out[b] += ar
        out[c] += ar
    return out
