"""Numba (CPU) kernel of :func:`h4d_fast.ops.contact.surface_query`: points of one mesh against
another closed mesh, many frames in one parallel call.

Per (frame) task, with ``h`` = the cell size (at least the band):

1. **Candidates**: the points inside the other mesh's box grown by the band; every other point
   is outside and out of reach (nothing more is done for it).
2. **Triangle grid**: the mesh's triangles listed in the cubic cells (size ``h``, over its box
   grown by the band) that their bounding boxes meet (two counting passes, no allocation per
   triangle). A surface point within ``band <= h`` of a query point lies in one of the 27 cells
   around the query's cell, so scanning their triangles gives the exact distance whenever it is
   within the band; a point with nothing that close gets ``inf``.
3. **Inside** (exact, no search): the signed crossings of a ray along ``-x`` with the triangles,
   found through a 2D grid over ``(y, z)`` and decided with the watertight edge functions of the
   collision kernels (:func:`h4d_fast.ops._collision_numba.ray_crossing`); non-zero winding = inside, so
   a region where a posed mesh overlaps itself counts as inside (as in :mod:`h4d_fast.eval._mesh_numba`).
4. **Inside points**: the exact distance to the surface (the triangle grid searched in growing
   shells of cells until no unseen cell can hold a nearer triangle) and the distance to the nearest
   *vertex* (the same search over a vertex grid): the benchmark's penetration depth.

Everything is float64; tasks run in a ``prange`` (frames cost very different amounts: small dynamic
chunks).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from ._collision_numba import _pt_tri_d2, ray_crossing
from ._contact_grid_numba import bit, cell_sides, col_grid, dilate_bits, scan_tris, set_bit, slot_grid, slot_of, tri_boxes
from ._mesh_numba import closest_st

_MARGIN = 0.05  # metres beyond the candidates' box that the grids cover (see query_task)
_MAX_CELLS = 1 << 23  # cap of the 3D grid's cell count per task (cells grow when a box is huge)
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
def _band_hit(px, py, pz, V, faces, start, items, pos, boxes, cbox, slot, sb, lo, h, nx, ny, nz, ci, cj, ck, b2, band):
    """Whether a triangle listed in the 27 cells around ``(ci, cj, ck)`` (the sparse lists of
    :func:`_shell_min`) lies within ``band`` of ``p``: the export's test, the same as
    ``sqrt(best) <= band`` after :func:`_shell_min`'s two shells (a triangle whose squared distance
    ``d2`` is ``<= b2`` with ``sqrt(d2) <= band`` is found, the minimum's being one). A triangle's box
    (``boxes``, by position in ``rel``) or the box of a cell's triangles (``cbox``, by list) farther
    than the band, by a margin far above rounding, skips the exact distances."""
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
                bx = max(cbox[s - 1, 0] - px, px - cbox[s - 1, 1], 0.0)
                by = max(cbox[s - 1, 2] - py, py - cbox[s - 1, 3], 0.0)
                bz = max(cbox[s - 1, 4] - pz, pz - cbox[s - 1, 5], 0.0)
                if bx * bx + by * by + bz * bz > far:
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


@njit(cache=True, nogil=True)
def _bounds(V):
    """:func:`h4d_fast.ops._mesh_numba.vertex_bounds` (NaN ignored), with scalar accumulators."""
    lx, ly, lz, hx, hy, hz = np.inf, np.inf, np.inf, -np.inf, -np.inf, -np.inf
    for v in range(V.shape[0]):
        x, y, z = V[v, 0], V[v, 1], V[v, 2]
        lx = x if x < lx else lx
        ly = y if y < ly else ly
        lz = z if z < lz else lz
        hx = x if x > hx else hx
        hy = y if y > hy else hy
        hz = z if z > hz else hz
    return np.array([lx, ly, lz]), np.array([hx, hy, hz])


@njit(cache=True, nogil=True)
def query_task(P, V, faces, fu, band, h, dist, inside, vdist, tri, st, contact):
    """One frame: fill ``dist``, ``inside`` (uint8), ``vdist`` ``[M]`` (module docstring; ``fu``:
    ``faces`` as uint32, for the triangle pass's indexing). ``dist``
    must come in as ``inf``, ``inside`` and ``vdist`` as 0. With ``tri [M]`` (-1) and ``st [M, 2]``
    (else ``[0]``, ``[0, 2]``): the closest triangle of the points with a finite distance and the
    closest point's coordinates in it (``a + s (b - a) + t (c - a)``).

    With ``contact`` ``[M]`` (else ``[0]``), the export's summary instead (``dist``, ``inside``,
    ``vdist`` may then be empty): ``contact`` set where a point is inside or within the band, and
    returned the inside points' largest and summed nearest-vertex distance (summed in point order)
    and their number (``0.0, 0.0, 0`` in the other mode)."""
    M = P.shape[0]
    exact = contact.shape[0] != M
    lo, hi = _bounds(V)
    for a in range(3):
        if not (math.isfinite(lo[a]) and math.isfinite(hi[a])):
            return 0.0, 0.0, 0
        lo[a] -= band
        hi[a] += band
    # the grids cover the candidates' box grown by the band and a margin (a point deeper than that
    # inside the mesh falls back to a search of every triangle), within the mesh's box
    cand = np.empty(M, np.int32)
    n_cand = 0
    lx, ly, lz, hx, hy, hz = np.inf, np.inf, np.inf, -np.inf, -np.inf, -np.inf
    l0, l1, l2, h0, h1, h2 = lo[0], lo[1], lo[2], hi[0], hi[1], hi[2]
    for m in range(M):  # without branches
        x, y, z = P[m, 0], P[m, 1], P[m, 2]
        inb = (l0 <= x) & (x <= h0) & (l1 <= y) & (y <= h1) & (l2 <= z) & (z <= h2)
        cand[n_cand] = m
        n_cand += inb
        lx = x if inb & (x < lx) else lx
        ly = y if inb & (y < ly) else ly
        lz = z if inb & (z < lz) else lz
        hx = x if inb & (x > hx) else hx
        hy = y if inb & (y > hy) else hy
        hz = z if inb & (z > hz) else hz
    if n_cand == 0:
        return 0.0, 0.0, 0
    clo = np.array([max(lx - band - _MARGIN, lo[0]), max(ly - band - _MARGIN, lo[1]), max(lz - band - _MARGIN, lo[2])])
    chi = np.array([min(hx + band + _MARGIN, hi[0]), min(hy + band + _MARGIN, hi[1]), min(hz + band + _MARGIN, hi[2])])
    vol = (chi[0] - clo[0]) * (chi[1] - clo[1]) * (chi[2] - clo[2])
    h = max(h, band, (vol / _MAX_CELLS) ** (1.0 / 3.0))
    nx = max(1, int(math.ceil((chi[0] - clo[0]) / h)))
    ny = max(1, int(math.ceil((chi[1] - clo[1]) / h)))
    nz = max(1, int(math.ceil((chi[2] - clo[2]) / h)))
    nr = ny * nz
    W = (nx + 63) // 64
    # the candidates' cells (bit rows) and rows; the grids below are complete only around them
    pcell = np.empty(n_cand, np.int64)
    pci = np.empty(n_cand, np.int32)
    prow = np.empty(n_cand, np.int32)
    occ = np.zeros((nr, W), np.uint64)
    rowmin = np.full(nr, nx, np.int32)  # each row's first and last candidate cell
    rowmax = np.full(nr, -1, np.int32)
    c0, c1, c2 = clo[0], clo[1], clo[2]
    fx, fy, fz = float(nx - 1), float(ny - 1), float(nz - 1)
    for t in range(n_cand):  # min(int(q), n - 1) for q >= 0, without branches
        m = cand[t]
        qx = (P[m, 0] - c0) / h
        qy = (P[m, 1] - c1) / h
        qz = (P[m, 2] - c2) / h
        pci[t] = int(qx if qx < fx else fx)
        prow[t] = int(qz if qz < fz else fz) * ny + int(qy if qy < fy else fy)
    for t in range(n_cand):
        ci, r = pci[t], prow[t]
        pcell[t] = r * nx + ci
        set_bit(occ, r, ci)
        rowmin[r] = min(rowmin[r], ci)
        rowmax[r] = max(rowmax[r], ci)
    need = dilate_bits(occ, ny, nz)  # a triangle within the band of a candidate meets one of these cells
    tri_, rng, rel, act, tog, split, lmax, rmin = scan_tris(V, faces, fu, clo, h, nx, ny, nz, occ, need, rowmin, rowmax)
    wind = cell_sides(tog, lmax, rmin, rowmin, rowmax, W)  # the candidate cells' centres inside
    has_rel = rel.shape[0] > 0
    slot = np.zeros(1, np.int32)
    sb = np.zeros((1, 1), np.uint64)
    tstart = np.zeros(1, np.int32)
    titems = np.zeros(1, np.int32)
    tpos = np.zeros(1, np.int32)
    boxes = np.zeros((1, 6))
    cbox = np.zeros((1, 6))
    near = occ  # no triangle near any candidate: never read
    if has_rel:
        slot, sb, tstart, titems, tpos, tocc = slot_grid(tri_, rng, rel, nx, ny, nz, need)
        near = dilate_bits(tocc, ny, nz)
        boxes = tri_boxes(V, faces, tri_, rel)
        cbox = np.empty((tstart.shape[0] - 1, 6))  # the box of each list's triangles
        for c in range(tstart.shape[0] - 1):
            for a in range(3):
                cbox[c, 2 * a], cbox[c, 2 * a + 1] = np.inf, -np.inf
            for t in range(tstart[c], tstart[c + 1]):
                for a in range(3):
                    cbox[c, 2 * a] = min(cbox[c, 2 * a], boxes[tpos[t], 2 * a])
                    cbox[c, 2 * a + 1] = max(cbox[c, 2 * a + 1], boxes[tpos[t], 2 * a + 1])
    look = wind | near if has_rel else wind  # the cells whose candidates need more than a skip
    rstart = np.zeros(1, np.int32)
    ritems = np.zeros(1, np.int32)
    rfirst = np.zeros(1, np.int32)
    rlast = np.zeros(1, np.int32)
    fstart = np.zeros(1, np.int32)
    fitems = np.zeros(1, np.int32)
    have_f = False
    vstart = np.zeros(1, np.int32)
    vitems = np.zeros(1, np.int32)
    have_v = False
    b2 = band * band
    later = np.empty(n_cand if has_rel else 0, np.int64)  # the candidates in a cell with triangles
    n_later = 0
    in_m = np.empty(0 if exact else n_cand, np.int64)  # the export's inside points and their depth
    in_d = np.empty(0 if exact else n_cand)
    n_in = 0
    for phase in range(2):
        if phase == 1:
            if n_later == 0:
                break
            # their (y, z) columns: each casts its own ray (_winding) through the triangles listed there
            colmax = np.full(nr, -1, np.int32)  # the last ray along -x / first along +x of each column
            colmin = np.full(nr, nx, np.int32)
            for u in range(n_later):
                j = int(math.floor((P[cand[later[u]], 1] - clo[1]) / h))
                k = int(math.floor((P[cand[later[u]], 2] - clo[2]) / h))
                if 0 <= j < ny and 0 <= k < nz:
                    c, i = k * ny + j, pci[later[u]]
                    if i > split[c]:
                        colmin[c] = min(colmin[c], i)
                    else:
                        colmax[c] = max(colmax[c], i)
            rstart, ritems, rfirst, rlast = col_grid(tri_, rng, act, nx, ny, nz, colmax, colmin)
        for u in range(n_cand if phase == 0 else n_later):
            t = u if phase == 0 else later[u]
            m = cand[t]
            c, ci, r = pcell[t], pci[t], prow[t]
            if phase == 0:
                if not bit(look, r, ci):
                    continue  # outside, and no triangle in its cell or the cells around
                ins = bit(wind, r, ci)  # with no triangle in the cell, the centre's side is the point's
                if has_rel and bit(sb, r, ci):
                    later[n_later] = t
                    n_later += 1
                    continue
            px, py, pz = P[m, 0], P[m, 1], P[m, 2]
            if phase == 1:
                ins = _winding(px, py, pz, V, faces, rstart, ritems, rfirst, rlast, split, ci, clo, h, ny, nz) != 0
            cj, ck = r % ny, r // ny
            bi = -1
            if ins:
                if exact:
                    inside[m] = 1
                    if not have_f:  # the exact search needs every triangle's cells
                        fstart, fitems = _tri_grid(_tri_cells(V, faces, clo, h, nx, ny, nz), nx, ny, nz)
                        have_f = True
                    d, bi = _nearest(px, py, pz, V, faces, fstart, fitems, clo, h, nx, ny, nz, True)
                    if not math.isfinite(d):
                        d, bi = _brute_nearest(px, py, pz, V, faces, True)
                    dist[m] = d
                if not have_v:
                    vstart, vitems = _vert_grid(V, clo, h, nx, ny, nz)
                    have_v = True
                d, _ = _nearest(px, py, pz, V, faces, vstart, vitems, clo, h, nx, ny, nz, False)
                d = d if math.isfinite(d) else _brute_nearest(px, py, pz, V, faces, False)[0]
                if exact:
                    vdist[m] = d
                else:
                    contact[m] = True
                    in_m[n_in] = m
                    in_d[n_in] = d
                    n_in += 1
            elif not exact and has_rel and bit(near, r, ci):
                if _band_hit(px, py, pz, V, faces, tstart, titems, tpos, boxes, cbox, slot, sb, clo, h, nx, ny, nz, ci, cj, ck, b2, band):
                    contact[m] = True
            elif has_rel and bit(near, r, ci):
                # only triangles within the band matter: start the search there (farther cells are skipped)
                best, bi = _shell_min(px, py, pz, V, faces, tstart, titems, slot, sb, clo, h, nx, ny, nz, ci, cj, ck, 0, b2 * (1 + 1e-12), -1, True)
                best, bi = _shell_min(px, py, pz, V, faces, tstart, titems, slot, sb, clo, h, nx, ny, nz, ci, cj, ck, 1, best, bi, True)
                if best <= b2:
                    dist[m] = math.sqrt(best)
                else:
                    bi = -1
            if bi >= 0 and tri.shape[0] == M:
                a, b, cc = faces[bi, 0], faces[bi, 1], faces[bi, 2]
                s_, t_, _ = closest_st(px, py, pz, V[a, 0], V[a, 1], V[a, 2], V[b, 0], V[b, 1], V[b, 2], V[cc, 0], V[cc, 1], V[cc, 2])
                tri[m] = bi
                st[m, 0] = s_
                st[m, 1] = t_
    dmax, dsum = 0.0, 0.0
    for t in np.argsort(in_m[:n_in]):
        dsum += in_d[t]
        dmax = max(dmax, in_d[t])
    return dmax, dsum, n_in


@njit(parallel=True, cache=True)
def _query_frames(P, V, faces, fu, band, h, dist, inside, vdist, tri, st):
    closest = tri.shape[0] == P.shape[0]
    none_c = np.zeros(0, np.bool_)
    for f in prange(P.shape[0]):
        if closest:
            query_task(P[f], V[f], faces, fu, band, h, dist[f], inside[f], vdist[f], tri[f], st[f], none_c)
        else:
            query_task(P[f], V[f], faces, fu, band, h, dist[f], inside[f], vdist[f], tri[0], st[0], none_c)


@njit(parallel=True, cache=True, nogil=True)  # the export runs it in a thread beside device work
def _contact_frames(P, V, faces, fu, band, h, contact, dmax, dsum, nin):
    none_i = np.zeros(0, np.int32)
    none_st = np.zeros((0, 2))
    none_f = np.zeros(0)
    none_u = np.zeros(0, np.uint8)
    for f in prange(P.shape[0]):
        dmax[f], dsum[f], nin[f] = query_task(P[f], V[f], faces, fu, band, h, none_f, none_u, none_f, none_i, none_st, contact[f])


def contact_frames(points: np.ndarray, verts: np.ndarray, faces: np.ndarray, band: float, cell: float = 0.0) -> tuple[np.ndarray, ...]:
    """The export's summary of :func:`query_frames` without its per-point arrays: ``contact [F, M]``
    bool (inside, or within ``band`` of the surface) and per frame the inside points' largest and
    summed nearest-vertex distance and their number (``[F]`` each). Float32 or float64 input (the
    geometry is computed in float64 either way for the cell grid; float32 coordinates are read as they are)."""
    P = np.ascontiguousarray(points)
    V = np.ascontiguousarray(verts, dtype=P.dtype)
    if P.dtype not in (np.float32, np.float64):
        P, V = P.astype(np.float64), V.astype(np.float64)
    F, M = P.shape[:2]
    contact = np.zeros((F, M), np.bool_)
    dmax, dsum, nin = np.zeros(F), np.zeros(F), np.zeros(F, np.int64)
    if F and M:
        with numba.parallel_chunksize(1):
            fc = np.ascontiguousarray(faces, dtype=np.int64)
            _contact_frames(P, V, fc, fc.astype(np.uint32), float(band), max(float(cell) or 0.02, float(band), 0.005),
                            contact, dmax, dsum, nin)
    return contact, dmax, dsum, nin


def query_frames(points: np.ndarray, verts: np.ndarray, faces: np.ndarray, band: float, cell: float = 0.0,
                 closest: bool = False) -> tuple[np.ndarray, ...]:
    """``points [F, M, 3]`` against the closed meshes ``verts [F, N, 3]`` (``faces [T, 3]``), float64.

    Returns ``dist [F, M]`` (exact distance to the surface where within ``band`` or inside, else
    ``inf``), ``inside [F, M]`` bool and ``vdist [F, M]`` (distance to the nearest vertex where
    inside, else 0); with ``closest`` also ``tri [F, M]`` int32 (the closest triangle where the
    distance is finite, else -1) and ``st [F, M, 2]`` (the closest point ``a + s (b - a) + t (c - a)``
    of that triangle). ``cell``: the grid cell (default 2 cm; at least ``band`` and 5 mm).
    """
    P = np.ascontiguousarray(points, dtype=np.float64)
    V = np.ascontiguousarray(verts, dtype=np.float64)
    fc = np.ascontiguousarray(faces, dtype=np.int64)
    F, M = P.shape[:2]
    dist = np.full((F, M), np.inf)
    inside = np.zeros((F, M), np.uint8)
    vdist = np.zeros((F, M))
    tri = np.full((F, M) if closest else (1, 0), -1, np.int32)
    st = np.zeros((F, M, 2) if closest else (1, 0, 2))
    if F and M:
        with numba.parallel_chunksize(1):
            _query_frames(P, V, fc, fc.astype(np.uint32), float(band), max(float(cell) or 0.02, float(band), 0.005), dist, inside, vdist, tri, st)
    if closest:
        return dist, inside.astype(bool), vdist, tri, st
    return dist, inside.astype(bool), vdist


__all__ = ["contact_frames", "query_frames", "query_task"]
