"""Numba (CPU) kernel of :func:`h4d_fast.ops.contact.surface_query`: points of one mesh against
another closed mesh, many frames in one parallel call.

Per (frame) task, with ``h`` = the cell size (at least the band):

1. **Candidates**: the points inside the other mesh's box grown by the band; every other point
   is outside and out of reach (nothing more is done for it). The cells (size ``h``) cover the
   candidates' box grown by the band and a margin.
2. **Triangles near the candidates** (:mod:`h4d_fast.ops._contact_grid_numba`): the triangles
   whose bounding box meets a cell within one cell of a candidate's cell, listed in those cells.
   A surface point within ``band <= h`` of a candidate lies in one of the 27 cells around its
   cell, so scanning their triangles gives the exact distance whenever it is within the band; a
   point with nothing that close gets ``inf``. A candidate with no triangle in those 27 cells and
   outside the mesh needs nothing more.
3. **Inside** (exact, no search): the winding number of the point, signed crossings of a ray
   along ``x`` decided with the watertight edge functions of the collision kernels
   (:func:`h4d_fast.ops._collision_numba.ray_crossing`); non-zero = inside, so a region where a
   posed mesh overlaps itself counts as inside (as in :mod:`h4d_fast.eval._mesh_numba`). A point
   in a cell without triangles takes its cell centre's, from the crossings of the cell rows (the
   rows of the candidates only, on the side of each row's candidates that crosses less of the
   mesh); a point in a cell with triangles casts its own ray.
4. **Inside points**: the exact distance to the surface (the triangle grid searched in growing
   shells of cells until no unseen cell can hold a nearer triangle) and the distance to the nearest
   *vertex* (the same search over a vertex grid): the benchmark's penetration depth.

The export's summary (:func:`contact_frames`, :func:`contact_pair_frames`) reads only whether a
point is inside or within the band, the inside points' vertex distances and (with the points'
own triangles) their exact depth times their vertex area: it stops the band search at the first
triangle within the band, takes an inside point's depth from the 27 cells around it when the
nearest triangle is that close, and with both directions of a pair in one task (the export's
call) puts one grid over the two meshes' common box (grown by the band), where each mesh's cells
are computed once, as its triangles' and as its points' (the answers do not depend on the grid).
:func:`query_frames` keeps the original grid and search order, so its closest triangles too are
the original kernel's.

Everything is float64; tasks run in a ``prange`` (frames cost very different amounts: small dynamic
chunks).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from ._contact_grid_numba import bit, cell_sides, col_grid, dilate_bits, scan_tris, set_bit, slot_grid, tri_boxes, vert_cells
from ._contact_query_numba import _band_hit, _brute_nearest, _nearest, _shell_min, _tri_cells, _tri_grid, _vert_grid, _winding
from ._mesh_numba import closest_st, vertex_areas

_MARGIN = 0.05  # metres beyond the candidates' box that the grids cover (see query_task)
_MAX_CELLS = 1 << 23  # cap of the 3D grid's cell count per task (cells grow when a box is huge)
_MAX_SIDE = 65000  # and of its cells along an axis (cell indices are uint16)
_NONE3 = np.zeros(0)
_NO_FACES = np.zeros((0, 3), np.int64)
_FEW_INSIDE = 8  # up to this many inside points, the export's depths from every vertex (no vertex grid)


@njit(cache=True, nogil=True)
def _bounds(V, band):
    """:func:`h4d_fast.ops._mesh_numba.vertex_bounds` grown by ``band`` (NaN ignored; ``ok`` False
    when a bound is not finite), with scalar accumulators."""
    lx, ly, lz, hx, hy, hz = np.inf, np.inf, np.inf, -np.inf, -np.inf, -np.inf
    for v in range(V.shape[0]):
        x, y, z = V[v, 0], V[v, 1], V[v, 2]
        lx = x if x < lx else lx
        ly = y if y < ly else ly
        lz = z if z < lz else lz
        hx = x if x > hx else hx
        hy = y if y > hy else hy
        hz = z if z > hz else hz
    lo, hi = np.array([lx, ly, lz]), np.array([hx, hy, hz])
    ok = True
    for a in range(3):
        ok &= math.isfinite(lo[a]) and math.isfinite(hi[a])
        lo[a] -= band
        hi[a] += band
    return lo, hi, ok


@njit(cache=True, nogil=True)
def _candidates(P, lo, hi):
    """The points inside the box ``lo .. hi`` (indices, count) and their box (``[6]``: lo, hi)."""
    M = P.shape[0]
    cand = np.empty(M, np.int32)
    n = 0
    lx, ly, lz, hx, hy, hz = np.inf, np.inf, np.inf, -np.inf, -np.inf, -np.inf
    l0, l1, l2, h0, h1, h2 = lo[0], lo[1], lo[2], hi[0], hi[1], hi[2]
    for m in range(M):  # without branches
        x, y, z = P[m, 0], P[m, 1], P[m, 2]
        inb = (l0 <= x) & (x <= h0) & (l1 <= y) & (y <= h1) & (l2 <= z) & (z <= h2)
        cand[n] = m
        n += inb
        lx = x if inb & (x < lx) else lx
        ly = y if inb & (y < ly) else ly
        lz = z if inb & (z < lz) else lz
        hx = x if inb & (x > hx) else hx
        hy = y if inb & (y > hy) else hy
        hz = z if inb & (z > hz) else hz
    return cand, n, np.array([lx, ly, lz, hx, hy, hz])


@njit(cache=True, nogil=True)
def _grid(box, lo, hi, band, h):
    """The cells over ``box`` (``[6]``) grown by the band and the margin, within ``lo .. hi``:
    ``(clo, h, nx, ny, nz)`` (the cell grows when the box is huge)."""
    clo = np.empty(3)
    n = np.empty(3, np.int64)
    chi = np.empty(3)
    for a in range(3):
        clo[a] = max(box[a] - band - _MARGIN, lo[a])
        chi[a] = min(box[3 + a] + band + _MARGIN, hi[a])
    vol = (chi[0] - clo[0]) * (chi[1] - clo[1]) * (chi[2] - clo[2])
    side = max(chi[0] - clo[0], chi[1] - clo[1], chi[2] - clo[2])
    h = max(h, band, (vol / _MAX_CELLS) ** (1.0 / 3.0), side / _MAX_SIDE)
    for a in range(3):
        n[a] = max(1, int(math.ceil((chi[a] - clo[a]) / h)))
    return clo, h, n[0], n[1], n[2]


@njit(cache=True, nogil=True)
def query_task(P, V, faces, fu, band, h, dist, inside, vdist, tri, st, contact, pfaces):
    """One frame: fill ``dist``, ``inside`` (uint8), ``vdist`` ``[M]`` (module docstring; ``fu``:
    ``faces`` as uint16 or uint32, for the triangle pass's indexing). ``dist`` must come in as ``inf``,
    ``inside`` and ``vdist`` as 0. With ``tri [M]`` (-1) and ``st [M, 2]`` (else ``[0]``,
    ``[0, 2]``): the closest triangle of the points with a finite distance and the closest point's
    coordinates in it (``a + s (b - a) + t (c - a)``).

    With ``contact`` ``[M]`` (else ``[0]``), the export's summary instead (``dist``, ``inside``,
    ``vdist`` may then be empty): ``contact`` set where a point is inside or within the band, and
    returned the inside points' largest and summed nearest-vertex distance (summed in point order)
    and their number, and with ``pfaces`` (the points' own mesh, else ``[0, 3]``) the inside
    points' exact depth times their vertex area, summed (``0.0, 0.0, 0, 0.0`` in the other mode)."""
    lo, hi, ok = _bounds(V, band)
    if not ok:
        return 0.0, 0.0, 0, 0.0
    cand, n_cand, box = _candidates(P, lo, hi)
    if n_cand == 0:
        return 0.0, 0.0, 0, 0.0
    clo, h, nx, ny, nz = _grid(box, lo, hi, band, h)
    pci = np.empty(n_cand, np.int32)
    prow = np.empty(n_cand, np.int32)
    c0, c1, c2 = clo[0], clo[1], clo[2]
    fx, fy, fz = float(nx - 1), float(ny - 1), float(nz - 1)
    for t in range(n_cand):  # min(int(q), n - 1) for q >= 0, without branches
        m = cand[t]
        qx = (P[m, 0] - c0) / h
        qy = (P[m, 1] - c1) / h
        qz = (P[m, 2] - c2) / h
        pci[t] = int(qx if qx < fx else fx)
        prow[t] = int(qz if qz < fz else fz) * ny + int(qy if qy < fy else fy)
    vx, vy, vz, vmin, vmax, _, _ = vert_cells(V, clo, h, nx, ny, nz, _NONE3, _NONE3)
    return _direction(P, V, faces, fu, band, clo, h, nx, ny, nz, cand[:n_cand], pci, prow, vx, vy, vz, vmin, vmax,
                      dist, inside, vdist, tri, st, contact, pfaces)


@njit(cache=True, nogil=True)
def pair_task(A, B, fa, fua, fb, fub, band, h, ca, cb, volume):
    """Both directions of one frame (:func:`query_task`'s export summary of ``A``'s points against
    the mesh ``B, fb`` into ``ca``, and of ``B``'s against ``A, fa`` into ``cb``) on one grid over
    both directions' candidates: each mesh's cells serve as its triangles' and as its candidates'.
    Returns the summaries ``(dmax, dsum, nin, vol)`` of ``A`` then ``B`` (``vol`` with ``volume``:
    the points' own meshes are ``A, fa`` and ``B, fb``)."""
    none_i = np.zeros(0, np.int32)
    none_st = np.zeros((0, 2))
    none_f = np.zeros(0)
    none_u = np.zeros(0, np.uint8)
    la, ha, oka = _bounds(A, band)
    lb, hb, okb = _bounds(B, band)
    if not (oka and okb):
        return 0.0, 0.0, 0, 0.0, 0.0, 0.0, 0, 0.0
    # A's points in B's box are those in both boxes (A's are in its own), and B's in A's: the grid
    # covers that box, and each mesh's cells are computed once for its triangles and its points
    ilo, ihi = np.maximum(la, lb), np.minimum(ha, hb)
    if not (ilo[0] <= ihi[0] and ilo[1] <= ihi[1] and ilo[2] <= ihi[2]):
        return 0.0, 0.0, 0, 0.0, 0.0, 0.0, 0, 0.0
    clo, h, nx, ny, nz = _grid(np.concatenate((ilo, ihi)), ilo, ihi, band, h)
    ax, ay, az, amin, amax, cand_a, na = vert_cells(A, clo, h, nx, ny, nz, ilo, ihi)
    bx, by, bz, bmin, bmax, cand_b, nb = vert_cells(B, clo, h, nx, ny, nz, ilo, ihi)
    ra = (0.0, 0.0, 0, 0.0)
    rb = (0.0, 0.0, 0, 0.0)
    if na:  # a candidate's cell: its vertex cell (plus one) within 0 .. n - 1
        pci, prow = _cand_cells(cand_a[:na], ax, ay, az, nx, ny, nz)
        ra = _direction(A, B, fb, fub, band, clo, h, nx, ny, nz, cand_a[:na], pci, prow, bx, by, bz, bmin, bmax,
                        none_f, none_u, none_f, none_i, none_st, ca, fa if volume else _NO_FACES)
    if nb:
        pci, prow = _cand_cells(cand_b[:nb], bx, by, bz, nx, ny, nz)
        rb = _direction(B, A, fa, fua, band, clo, h, nx, ny, nz, cand_b[:nb], pci, prow, ax, ay, az, amin, amax,
                        none_f, none_u, none_f, none_i, none_st, cb, fb if volume else _NO_FACES)
    return ra[0], ra[1], ra[2], ra[3], rb[0], rb[1], rb[2], rb[3]


@njit(cache=True, nogil=True)
def _cand_cells(cand, vx, vy, vz, nx, ny, nz):
    """The candidates' x cells and rows from their vertex cells (``floor(q)`` plus one, ``q >= 0``
    inside the grid): ``min(int(q), n - 1)``, as :func:`query_task` computes them."""
    pci = np.empty(cand.shape[0], np.int32)
    prow = np.empty(cand.shape[0], np.int32)
    for t in range(cand.shape[0]):
        m = cand[t]
        pci[t] = min(int(vx[m]) - 1, nx - 1)
        prow[t] = min(int(vz[m]) - 1, nz - 1) * ny + min(int(vy[m]) - 1, ny - 1)
    return pci, prow


@njit(cache=True, nogil=True)
def _direction(P, V, faces, fu, band, clo, h, nx, ny, nz, cand, pci, prow, vx, vy, vz, vmin, vmax, dist, inside, vdist, tri, st, contact,
               pfaces):
    """:func:`query_task` after its grid: the candidates ``cand`` (their x cells ``pci`` and rows
    ``prow``) against the mesh ``V, faces`` (its vertices' cells ``vx, vy, vz`` and rows' extents,
    :func:`h4d_fast.ops._contact_grid_numba.vert_cells`)."""
    M = P.shape[0]
    exact = contact.shape[0] != M
    nr = ny * nz
    W = (nx + 63) // 64
    # the candidates' cells (bit rows) and rows; the grids below are complete only around them
    n_cand = cand.shape[0]
    occ = np.zeros((nr, W), np.uint64)
    rowmin = np.full(nr, nx, np.int32)  # each row's first and last candidate cell
    rowmax = np.full(nr, -1, np.int32)
    for t in range(n_cand):
        ci, r = pci[t], prow[t]
        set_bit(occ, r, ci)
        rowmin[r] = min(rowmin[r], ci)
        rowmax[r] = max(rowmax[r], ci)
    need = dilate_bits(occ, ny, nz)  # a triangle within the band of a candidate meets one of these cells
    tri_, rng, rel, act, tog, split, lmax, rmin = scan_tris(V, faces, fu, clo, h, nx, ny, nz, occ, need, rowmin, rowmax,
                                                            vx, vy, vz, vmin, vmax)
    wind = cell_sides(tog, lmax, rmin, rowmin, rowmax, W)  # the candidate cells' centres inside
    has_rel = rel.shape[0] > 0
    slot = np.zeros(1, np.int32)
    sb = np.zeros((1, 1), np.uint64)
    tstart = np.zeros(1, np.int32)
    titems = np.zeros(1, np.int32)
    tpos = np.zeros(1, np.int32)
    boxes = np.zeros((1, 6))
    near = occ  # no triangle near any candidate: never read
    if has_rel:
        slot, sb, tstart, titems, tpos, tocc = slot_grid(tri_, rng, rel, nx, ny, nz, need)
        near = dilate_bits(tocc, ny, nz)
        boxes = tri_boxes(V, faces, tri_, rel)
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
    in_t = np.empty(0 if exact else n_cand, np.int64)
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
            ci, r = pci[t], prow[t]
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
                    vdist[m] = d if math.isfinite(d) else _brute_nearest(px, py, pz, V, faces, False)[0]
                else:  # its depth below, once all are known
                    contact[m] = True
                    in_m[n_in] = m
                    in_t[n_in] = t
                    n_in += 1
            elif not exact and has_rel and bit(near, r, ci):
                if _band_hit(px, py, pz, V, faces, tstart, titems, tpos, boxes, slot, sb, clo, h, nx, ny, nz, ci, cj, ck, b2, band):
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
    # the inside points' nearest vertex: every vertex for a few points, else the vertex grid (the
    # same minimum either way), and with the points' mesh their exact depth: from the lists of the
    # 27 cells around (every triangle there) when the nearest lies within a cell and nearer than
    # the grid's edge, else from every triangle's cells; summed in point order
    want_vol = pfaces.shape[0] > 0
    in_s = np.empty(n_in if want_vol else 0)
    for t in range(n_in):
        m = in_m[t]
        px, py, pz = P[m, 0], P[m, 1], P[m, 2]
        if want_vol:
            best = np.inf
            if has_rel:
                ci, r = pci[in_t[t]], prow[in_t[t]]
                best, _ = _shell_min(px, py, pz, V, faces, tstart, titems, slot, sb, clo, h, nx, ny, nz, ci, r % ny, r // ny, 0, best, -1, True)
                best, _ = _shell_min(px, py, pz, V, faces, tstart, titems, slot, sb, clo, h, nx, ny, nz, ci, r % ny, r // ny, 1, best, -1, True)
            edge = min(px - clo[0], clo[0] + nx * h - px, py - clo[1], clo[1] + ny * h - py, pz - clo[2], clo[2] + nz * h - pz)
            if best <= h * h and best <= max(edge, 0.0) ** 2:
                in_s[t] = math.sqrt(best)
            else:
                if not have_f:
                    fstart, fitems = _tri_grid(_tri_cells(V, faces, clo, h, nx, ny, nz), nx, ny, nz)
                    have_f = True
                d, _ = _nearest(px, py, pz, V, faces, fstart, fitems, clo, h, nx, ny, nz, True)
                in_s[t] = d if math.isfinite(d) else _brute_nearest(px, py, pz, V, faces, True)[0]
        if n_in <= _FEW_INSIDE:
            in_d[t] = _brute_nearest(px, py, pz, V, faces, False)[0]
            continue
        if not have_v:
            vstart, vitems = _vert_grid(V, clo, h, nx, ny, nz)
            have_v = True
        d, _ = _nearest(px, py, pz, V, faces, vstart, vitems, clo, h, nx, ny, nz, False)
        in_d[t] = d if math.isfinite(d) else _brute_nearest(px, py, pz, V, faces, False)[0]
    dmax, dsum, vol = 0.0, 0.0, 0.0
    area = vertex_areas(P, pfaces) if want_vol and n_in > 0 else np.zeros(0)
    for t in np.argsort(in_m[:n_in]):
        dsum += in_d[t]
        dmax = max(dmax, in_d[t])
        if want_vol:
            vol += in_s[t] * area[in_m[t]]
    return dmax, dsum, n_in, vol


@njit(parallel=True, cache=True)
def _query_frames(P, V, faces, fu, band, h, dist, inside, vdist, tri, st):
    closest = tri.shape[0] == P.shape[0]
    none_c = np.zeros(0, np.bool_)
    for f in prange(P.shape[0]):
        if closest:
            query_task(P[f], V[f], faces, fu, band, h, dist[f], inside[f], vdist[f], tri[f], st[f], none_c, _NO_FACES)
        else:
            query_task(P[f], V[f], faces, fu, band, h, dist[f], inside[f], vdist[f], tri[0], st[0], none_c, _NO_FACES)


@njit(parallel=True, cache=True, nogil=True)  # the export runs it in a thread beside device work
def _contact_frames(P, V, faces, fu, pfaces, band, h, contact, dmax, dsum, nin, vol):
    none_i = np.zeros(0, np.int32)
    none_st = np.zeros((0, 2))
    none_f = np.zeros(0)
    none_u = np.zeros(0, np.uint8)
    for f in prange(P.shape[0]):
        dmax[f], dsum[f], nin[f], vol[f] = query_task(P[f], V[f], faces, fu, band, h, none_f, none_u, none_f, none_i, none_st,
                                                      contact[f], pfaces)


def _unsigned(faces: np.ndarray, n: int) -> np.ndarray:
    """``faces`` as the triangle pass indexes them: uint16 for up to 65,536 vertices (half the
    memory), else uint32."""
    return faces.astype(np.uint16 if n <= 1 << 16 else np.uint32)


def contact_frames(points: np.ndarray, verts: np.ndarray, faces: np.ndarray, band: float, cell: float = 0.0,
                   point_faces: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """The export's summary of :func:`query_frames` without its per-point arrays: ``contact [F, M]``
    bool (inside, or within ``band`` of the surface) and per frame the inside points' largest and
    summed nearest-vertex distance and their number (``[F]`` each). Float32 or float64 input (the
    geometry is computed in float64 either way for the cell grid; float32 coordinates are read as they are).

    With ``point_faces`` (the points are the vertices of a mesh with these triangles) also
    ``volume [F]`` (m^3): the inside points' exact distance to the surface times their vertex area,
    summed (:func:`h4d_fast.ops.penetration.penetration_volume`'s measure, one side, with the exact
    depth; it costs the exact search for the inside points only); else zeros."""
    P = np.ascontiguousarray(points)
    V = np.ascontiguousarray(verts, dtype=P.dtype)
    if P.dtype not in (np.float32, np.float64):
        P, V = P.astype(np.float64), V.astype(np.float64)
    F, M = P.shape[:2]
    contact = np.zeros((F, M), np.bool_)
    dmax, dsum, nin, vol = np.zeros(F), np.zeros(F), np.zeros(F, np.int64), np.zeros(F)
    pf = _NO_FACES if point_faces is None else np.ascontiguousarray(point_faces, dtype=np.int64)
    if F and M:
        with numba.parallel_chunksize(1):
            fc = np.ascontiguousarray(faces, dtype=np.int64)
            _contact_frames(P, V, fc, _unsigned(fc, V.shape[1]), pf, float(band), max(float(cell) or 0.02, float(band), 0.005),
                            contact, dmax, dsum, nin, vol)
    return contact, dmax, dsum, nin, vol


@njit(parallel=True, cache=True, nogil=True)
def _contact_pair_frames(A, B, fa, fua, fb, fub, band, h, volume, ca, cb, sa, sb):
    for f in prange(A.shape[0]):
        sa[f, 0], sa[f, 1], sa[f, 2], sa[f, 3], sb[f, 0], sb[f, 1], sb[f, 2], sb[f, 3] = pair_task(
            A[f], B[f], fa, fua, fb, fub, band, h, ca[f], cb[f], volume)


def contact_pair_frames(verts_a: np.ndarray, verts_b: np.ndarray, faces_a: np.ndarray, faces_b: np.ndarray, band: float,
                        cell: float = 0.0, volume: bool = False) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """:func:`contact_frames` of both directions of a pair of meshes ``verts_a [F, Na, 3]``,
    ``verts_b [F, Nb, 3]`` (faces ``faces_a``, ``faces_b``) in one call, each frame's two directions
    in one task (:func:`pair_task`): ``(a's vertices against b, b's against a)``, each ``(contact,
    dmax, dsum, nin, volume)`` as :func:`contact_frames` returns them (the same values; ``volume``
    with ``volume``, each side's points being its mesh's vertices, else zeros)."""
    A = np.ascontiguousarray(verts_a)
    B = np.ascontiguousarray(verts_b, dtype=A.dtype)
    if A.dtype not in (np.float32, np.float64):
        A, B = A.astype(np.float64), B.astype(np.float64)
    F, Na, Nb = A.shape[0], A.shape[1], B.shape[1]
    ca, cb = np.zeros((F, Na), np.bool_), np.zeros((F, Nb), np.bool_)
    sa, sb = np.zeros((F, 4)), np.zeros((F, 4))
    if F and Na and Nb:
        fa = np.ascontiguousarray(faces_a, dtype=np.int64)
        fb = np.ascontiguousarray(faces_b, dtype=np.int64)
        with numba.parallel_chunksize(1):
            _contact_pair_frames(A, B, fa, _unsigned(fa, Na), fb, _unsigned(fb, Nb), float(band),
                                 max(float(cell) or 0.02, float(band), 0.005), bool(volume), ca, cb, sa, sb)
    return tuple((c, s[:, 0], s[:, 1], s[:, 2].astype(np.int64), s[:, 3]) for c, s in ((ca, sa), (cb, sb)))


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
            _query_frames(P, V, fc, _unsigned(fc, V.shape[1]), float(band), max(float(cell) or 0.02, float(band), 0.005), dist, inside, vdist, tri, st)
    if closest:
        return dist, inside.astype(bool), vdist, tri, st
    return dist, inside.astype(bool), vdist


__all__ = ["contact_frames", "contact_pair_frames", "pair_task", "query_frames", "query_task"]
