"""Point-level searches of :func:`h4d_fast.ops._contact_numba.query_task`: the cell lists of the
original grid kernel (every triangle or vertex of a cell, CSR by cell), the own ray of a point
near the surface, the band test and the growing-shell nearest search.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._collision_numba import _pt_tri_d2, ray_crossing
from ._contact_grid_numba import slot_of

_NO_BITS = np.zeros((0, 1), np.uint64)


@njit(cache=True, nogil=True)
def _cell_range(mn, mx, lo, h, n):
    """Cells ``a..b`` of the interval ``[mn, mx]`` in a row of ``n`` cells; ``a > b`` when it misses them."""
    a = int(math.floor((mn - lo) / h))
    b = int(math.floor((mx - lo) / h))
    if b < 0 or a > n - 1:
        return 1, 0
    return max(a, 0), min(b, n - 1)


@njit(cache=True, nogil=True)
def _tri_cells(V, faces, lo, h, nx, ny, nz):
    """``[T, 6]`` int32 cell ranges ``(i0, i1, j0, j1, k0, k1)`` of the triangles' boxes (``i0 > i1``
    etc. where a box misses the grid)."""
    T = faces.shape[0]
    out = np.empty((T, 6), np.int32)
    for f in range(T):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        out[f, 0], out[f, 1] = _cell_range(min(V[i0, 0], V[i1, 0], V[i2, 0]), max(V[i0, 0], V[i1, 0], V[i2, 0]), lo[0], h, nx)
        out[f, 2], out[f, 3] = _cell_range(min(V[i0, 1], V[i1, 1], V[i2, 1]), max(V[i0, 1], V[i1, 1], V[i2, 1]), lo[1], h, ny)
        out[f, 4], out[f, 5] = _cell_range(min(V[i0, 2], V[i1, 2], V[i2, 2]), max(V[i0, 2], V[i1, 2], V[i2, 2]), lo[2], h, nz)
    return out


@njit(cache=True, nogil=True)
def _tri_grid(rng, nx, ny, nz):
    """Cell lists of the triangles (ranges of :func:`_tri_cells`): ``start [nx*ny*nz + 1]``, ``items [K]`` (CSR by cell)."""
    return _csr_cells(rng, nx, ny, nz, True)


@njit(cache=True, nogil=True)
def _csr_cells(rng, nx, ny, nz, with_x):
    """Triangles listed in the cells their ranges ``rng [T, 6]`` meet, as CSR ``(start, items)``;
    without ``with_x`` the cells are the ``(y, z)`` columns (``nx`` must then be 1)."""
    T = rng.shape[0]
    nc = nx * ny * nz
    count = np.zeros(nc + 1, np.int32)
    for f in range(T):
        i0, i1 = (rng[f, 0], rng[f, 1]) if with_x else (0, 0)
        for k in range(rng[f, 4], rng[f, 5] + 1):
            for j in range(rng[f, 2], rng[f, 3] + 1):
                for i in range(i0, i1 + 1):
                    count[(k * ny + j) * nx + i + 1] += 1
    for c in range(nc):
        count[c + 1] += count[c]
    fill = count[:-1].copy()
    items = np.empty(count[nc], np.int32)
    for f in range(T):
        i0, i1 = (rng[f, 0], rng[f, 1]) if with_x else (0, 0)
        for k in range(rng[f, 4], rng[f, 5] + 1):
            for j in range(rng[f, 2], rng[f, 3] + 1):
                for i in range(i0, i1 + 1):
                    c = (k * ny + j) * nx + i
                    items[fill[c]] = f
                    fill[c] += 1
    return count, items


@njit(cache=True, nogil=True)
def _vert_grid(V, lo, h, nx, ny, nz):
    """Cell lists of the vertices (CSR by cell)."""
    N = V.shape[0]
    nc = nx * ny * nz
    count = np.zeros(nc + 1, np.int32)
    cell = np.empty(N, np.int64)
    for v in range(N):
        i = int(math.floor((V[v, 0] - lo[0]) / h))
        j = int(math.floor((V[v, 1] - lo[1]) / h))
        k = int(math.floor((V[v, 2] - lo[2]) / h))
        if i < 0 or i >= nx or j < 0 or j >= ny or k < 0 or k >= nz:
            cell[v] = -1  # outside the grid: found by the caller's fallback
            continue
        cell[v] = (k * ny + j) * nx + i
        count[cell[v] + 1] += 1
    for c in range(nc):
        count[c + 1] += count[c]
    fill = count[:-1].copy()
    items = np.empty(count[nc], np.int32)
    for v in range(N):
        if cell[v] >= 0:
            items[fill[cell[v]]] = v
            fill[cell[v]] += 1
    return count, items


@njit(cache=True, nogil=True)
def _crossing(f, py, pz, V, faces):
    """:func:`ray_crossing` of triangle ``f`` with the line along x through ``(py, pz)``, after a
    test of its projection's (closed) box, outside which the line cannot cross it."""
    i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
    y0, z0 = V[i0, 1], V[i0, 2]
    y1, z1 = V[i1, 1], V[i1, 2]
    y2, z2 = V[i2, 1], V[i2, 2]
    if py < min(y0, y1, y2) or py > max(y0, y1, y2) or pz < min(z0, z1, z2) or pz > max(z0, z1, z2):
        return 0.0, 0.0
    return ray_crossing(i0, i1, i2, y0, z0, y1, z1, y2, z2, V[i0, 0], V[i1, 0], V[i2, 0], py, pz)


@njit(cache=True, nogil=True)
def _winding_all(px, py, pz, V, faces):
    """Signed crossings of the ray from ``p`` along ``-x`` with every triangle."""
    w = 0
    for f in range(faces.shape[0]):
        s0, xc = _crossing(f, py, pz, V, faces)
        if s0 != 0 and xc < px:
            w += int(s0)
    return w


@njit(cache=True, nogil=True)
def _winding(px, py, pz, V, faces, rstart, ritems, rfirst, rlast, split, ci, lo, h, ny, nz):
    """Signed crossings of the ray from ``p`` (in x cell ``ci``) along ``-x`` with the mesh (0 =
    outside), from the triangles listed in its column (:func:`col_grid`). Beyond its row's
    ``split`` it counts minus the crossings beyond ``p`` instead (the same for a closed mesh, the
    crossings of a whole line cancelling), unless one lies at ``p``: then every triangle's along
    ``-x``. Triangles more than a cell beyond ``p`` on the other side are skipped (none counts)."""
    j = int(math.floor((py - lo[1]) / h))
    k = int(math.floor((pz - lo[2]) / h))
    if j < 0 or j >= ny or k < 0 or k >= nz:
        return 0
    c = k * ny + j
    rgt = ci > split[c]
    w = 0
    for t in range(rstart[c], rstart[c + 1]):
        if (rlast[t] < ci - 1) if rgt else (rfirst[t] > ci + 1):
            continue
        s0, xc = _crossing(ritems[t], py, pz, V, faces)
        if s0 == 0:
            continue
        if not rgt:
            if xc < px:
                w += int(s0)
        elif xc > px:
            w -= int(s0)
        elif xc == px:
            return _winding_all(px, py, pz, V, faces)
    return w


@njit(cache=True, nogil=True)
def _shell_min(px, py, pz, V, faces, start, items, slot, sb, lo, h, nx, ny, nz, ci, cj, ck, r, best, bi, tris):
    """Smallest squared distance (below ``best``) to the triangles (``tris``) or vertices listed in the
    cells at Chebyshev distance ``r`` from cell ``(ci, cj, ck)``, and that element (``bi`` if none).
    Cell ``c``'s list: ``start[c]:start[c + 1]``, or with a non-empty ``slot`` (the sparse lists of
    :func:`h4d_fast.ops._contact_grid_numba.slot_grid`, bits ``sb``) ``start[s - 1]:start[s]``, ``s =
    slot_of(...) > 0``."""
    for k in range(ck - r, ck + r + 1):
        if k < 0 or k >= nz:
            continue
        for j in range(cj - r, cj + r + 1):
            if j < 0 or j >= ny:
                continue
            edge_jk = abs(k - ck) == r or abs(j - cj) == r
            step = 1 if edge_jk else 2 * r
            # squared distance from p to the cell rows' (y, z) extent: cells no nearer than best are skipped
            y0 = lo[1] + j * h
            z0 = lo[2] + k * h
            dy_ = max(y0 - py, py - (y0 + h), 0.0)
            dz_ = max(z0 - pz, pz - (z0 + h), 0.0)
            dyz = dy_ * dy_ + dz_ * dz_
            i = ci - r
            while i <= ci + r:
                x0 = lo[0] + i * h
                dx_ = max(x0 - px, px - (x0 + h), 0.0)
                if i >= 0 and i < nx and dyz + dx_ * dx_ < best:
                    c = (k * ny + j) * nx + i
                    if slot.shape[0]:
                        s_ = slot_of(slot, sb, k * ny + j, i, nx)
                        t0, t1 = (start[s_ - 1], start[s_]) if s_ else (0, 0)
                    else:
                        t0, t1 = start[c], start[c + 1]
                    for t in range(t0, t1):
                        e = items[t]
                        if tris:
                            a, b, cc = faces[e, 0], faces[e, 1], faces[e, 2]
                            d2 = _pt_tri_d2(px, py, pz, V[a, 0], V[a, 1], V[a, 2], V[b, 0], V[b, 1], V[b, 2], V[cc, 0], V[cc, 1], V[cc, 2])
                        else:
                            dx, dy, dz = px - V[e, 0], py - V[e, 1], pz - V[e, 2]
                            d2 = dx * dx + dy * dy + dz * dz
                        if d2 < best:
                            best = d2
                            bi = e
                if r == 0:
                    break
                i += step
    return best, bi


@njit(cache=True, nogil=True)
def _band_hit(px, py, pz, V, faces, start, items, pos, boxes, slot, sb, lo, h, nx, ny, nz, ci, cj, ck, b2, band):
    """Whether a triangle listed in the 27 cells around ``(ci, cj, ck)`` (the sparse lists of
    :func:`_shell_min`) lies within ``band`` of ``p``: the export's test, the same as
    ``sqrt(best) <= band`` after :func:`_shell_min`'s two shells (a triangle whose squared distance
    ``d2`` is ``<= b2`` with ``sqrt(d2) <= band`` is found, the minimum's being one). A triangle's box
    (``boxes``, by position in ``rel``) farther than the band, by a margin far above rounding,
    skips the exact distance."""
    lim = b2 * (1 + 1e-12)
    far = b2 * (1 + 1e-6)
    # a neighbour along an axis only when p is within the band of that face (a margin for rounding)
    xa, ya, za = px - (lo[0] + ci * h), py - (lo[1] + cj * h), pz - (lo[2] + ck * h)
    i0, i1 = (ci - 1 if xa * xa < far else ci), (ci + 1 if (h - xa) * (h - xa) < far else ci)
    j0, j1 = (cj - 1 if ya * ya < far else cj), (cj + 1 if (h - ya) * (h - ya) < far else cj)
    k0, k1 = (ck - 1 if za * za < far else ck), (ck + 1 if (h - za) * (h - za) < far else ck)
    for k in range(max(k0, 0), min(k1, nz - 1) + 1):
        z0 = lo[2] + k * h
        dz_ = max(z0 - pz, pz - (z0 + h), 0.0)
        for j in range(max(j0, 0), min(j1, ny - 1) + 1):
            y0 = lo[1] + j * h
            dy_ = max(y0 - py, py - (y0 + h), 0.0)
            dyz = dy_ * dy_ + dz_ * dz_
            for i in range(max(i0, 0), min(i1, nx - 1) + 1):
                x0 = lo[0] + i * h
                dx_ = max(x0 - px, px - (x0 + h), 0.0)
                s = slot_of(slot, sb, k * ny + j, i, nx)
                if s == 0 or not dyz + dx_ * dx_ < lim:
                    continue
                for t in range(start[s - 1], start[s]):
                    e = pos[t]
                    bx = max(boxes[e, 0] - px, px - boxes[e, 1], 0.0)
                    by = max(boxes[e, 2] - py, py - boxes[e, 3], 0.0)
                    bz = max(boxes[e, 4] - pz, pz - boxes[e, 5], 0.0)
                    if bx * bx + by * by + bz * bz > far:
                        continue
                    f = items[t]
                    a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
                    d2 = _pt_tri_d2(px, py, pz, V[a, 0], V[a, 1], V[a, 2], V[b, 0], V[b, 1], V[b, 2], V[c, 0], V[c, 1], V[c, 2])
                    if d2 < lim and d2 <= b2 and math.sqrt(d2) <= band:
                        return True
    return False


@njit(cache=True, nogil=True)
def _nearest(px, py, pz, V, faces, start, items, lo, h, nx, ny, nz, tris):
    """Distance to the nearest triangle (``tris``) or vertex listed in the grid, searched in growing
    shells of cells around ``p`` (inside the grid). Returns ``inf`` when the nearest one may lie
    outside the grid (elements outside it are not listed: the caller falls back to all of them)."""
    ci = min(max(int(math.floor((px - lo[0]) / h)), 0), nx - 1)
    cj = min(max(int(math.floor((py - lo[1]) / h)), 0), ny - 1)
    ck = min(max(int(math.floor((pz - lo[2]) / h)), 0), nz - 1)
    # anything outside the grid is at least this far from p
    edge = min(px - lo[0], lo[0] + nx * h - px, py - lo[1], lo[1] + ny * h - py, pz - lo[2], lo[2] + nz * h - pz)
    edge2 = max(edge, 0.0) ** 2
    rmax = max(nx, ny, nz)
    best = np.inf
    bi = -1
    for r in range(rmax + 1):
        best, bi = _shell_min(px, py, pz, V, faces, start, items, start[:0], _NO_BITS, lo, h, nx, ny, nz, ci, cj, ck, r, best, bi, tris)
        # every cell at shell r + 1 or beyond is at least r * h away from p (p lies in its own cell)
        if best <= (r * h) * (r * h):
            break
    if best > edge2:
        return np.inf, -1
    return math.sqrt(best), bi


@njit(cache=True, nogil=True)
def _brute_nearest(px, py, pz, V, faces, tris):
    best = np.inf
    bi = -1
    if tris:
        for f in range(faces.shape[0]):
            a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
            d2 = _pt_tri_d2(px, py, pz, V[a, 0], V[a, 1], V[a, 2], V[b, 0], V[b, 1], V[b, 2], V[c, 0], V[c, 1], V[c, 2])
            if d2 < best:
                best = d2
                bi = f
    else:
        for v in range(V.shape[0]):
            dx, dy, dz = px - V[v, 0], py - V[v, 1], pz - V[v, 2]
            d2 = dx * dx + dy * dy + dz * dz
            if d2 < best:
                best = d2
                bi = v
    return math.sqrt(best), bi
