"""The sparse grids of :func:`h4d_fast.ops._contact_numba.query_task`: what one task builds from the
other mesh, complete only where the candidate points can read it.

The task's cells (size ``h`` over the candidates' box) are flagged in bit rows, one row of
``W = ceil(nx / 64)`` words per ``(j, k)``: the candidates' cells (*occupied*) and those cells grown
by one cell (*needed*: a triangle within the band of a candidate meets one of them). Each
candidate row (:func:`row_plan`) reads the winding of its cells' centres from the crossings on
its left (``-x``, as :func:`h4d_fast.ops._mesh_numba.cell_winding`), on its right (minus those:
the crossings of a whole row cancel for a closed mesh) or both, split in the middle of the other
mesh, whichever crosses fewer of its cells. The triangles (:func:`scan_tris`), with cell ranges
taken from the vertices' cells (:func:`vert_cells`), go through

* a first pass without branches: the triangles whose range meets a needed cell or the side of a
  candidate row that its candidates read (:func:`_keep_bits`); every other triangle is read no
  further;
* a second pass over those: the *relevant* ones (their range meets a needed cell), whose cell
  lists (:func:`slot_grid`, one CSR entry per needed cell that holds triangles) are exactly the
  full grid's lists of those cells, in triangle order; the signed crossings of the candidate
  rows' cell-centre lines on the rows' sides (:func:`cell_sides`: the centres' windings); and the
  triangles on those sides, of which :func:`col_grid` lists those of the ``(y, z)`` columns whose
  candidates cast their own ray (the points in a cell with triangles).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._collision_numba import ray_crossing

_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_ONE = np.uint64(1)


@njit(cache=True, nogil=True, inline="always")
def _mask(i0, i1, w):
    """Bits ``i0 .. i1`` (cells of the row) within word ``w``."""
    a = max(i0 - 64 * w, 0)
    b = min(i1 - 64 * w, 63)
    return (_ALL >> np.uint64(63 - (b - a))) << np.uint64(a)


@njit(cache=True, nogil=True)
def bits_any(bits, r, i0, i1):
    """Whether a cell ``i0 .. i1`` of row ``r`` is set (``i0 <= i1``)."""
    for w in range(i0 >> 6, (i1 >> 6) + 1):
        if bits[r, w] & _mask(i0, i1, w):
            return True
    return False


@njit(cache=True, nogil=True, inline="always")
def bit(bits, r, i):
    """Whether cell ``i`` of row ``r`` is set."""
    return (bits[r, i >> 6] >> np.uint64(i & 63)) & _ONE != 0


@njit(cache=True, nogil=True, inline="always")
def set_bit(bits, r, i):
    bits[r, i >> 6] |= _ONE << np.uint64(i & 63)


@njit(cache=True, nogil=True)
def dilate_bits(b, ny, nz):
    """Bit rows ``b [nz * ny, W]`` grown by one cell: set where a cell or one of its 26 neighbours is
    (a cell beyond ``nx`` in the last word may be set too: never read). One axis at a time, each
    a long loop over the flat words."""
    R, W = b.shape
    s1, s63 = np.uint64(1), np.uint64(63)
    src = b.reshape(-1)
    x = np.empty(R * W, np.uint64)
    for e in range(R * W):
        v = src[e]
        x[e] = v | (v << s1) | (v >> s1)
    if W > 1:  # the bits carried across the words of a row
        for r in range(R):
            for w in range(W):
                if w > 0:
                    x[r * W + w] |= src[r * W + w - 1] >> s63
                if w + 1 < W:
                    x[r * W + w] |= src[r * W + w + 1] << s63
    y = x.copy()
    for k in range(nz):
        base = k * ny * W
        for e in range(base + W, base + ny * W):
            y[e] |= x[e - W]
        for e in range(base, base + (ny - 1) * W):
            y[e] |= x[e + W]
    z = y.copy()
    s = ny * W
    for e in range(s, R * W):
        z[e] |= y[e - s]
    for e in range(R * W - s):
        z[e] |= y[e + s]
    return z.reshape(R, W)


@njit(cache=True, nogil=True)
def vert_cells(V, lo, h, nx, ny, nz, blo, bhi):
    """Per vertex its cell ``floor((v - lo) / h)`` along x, y, z (three ``[N]`` uint16: ``n < 2 **
    16 - 2``), clamped to ``-1 .. n`` and plus one (unsigned, so that indexing with them needs no
    wrap-around). The min / max over a triangle's vertices are then
    :func:`h4d_fast.ops._contact_query_numba._cell_range`'s unclipped ends (the cell is monotonic
    in the coordinate), up to a clamping that its tests do not see. Also, from every fourth
    vertex, the first and last x cell of those in each row (``nx`` / -1: none; :func:`row_plan`'s
    estimate of where the mesh lies), and with a box ``blo .. bhi`` (else empty arrays) the
    vertices inside it (indices, count)."""
    N = V.shape[0]
    vx = np.empty(N, np.uint16)
    vy = np.empty(N, np.uint16)
    vz = np.empty(N, np.uint16)
    cand = np.empty(N if blo.shape[0] else 0, np.int32)
    n = 0
    fx, fy, fz = float(nx), float(ny), float(nz)
    l0, l1, l2 = lo[0], lo[1], lo[2]
    for v in range(N):  # clamped as floats, without branches (NaN: -1)
        x, y, z = V[v, 0], V[v, 1], V[v, 2]
        qx = (x - l0) / h
        qy = (y - l1) / h
        qz = (z - l2) / h
        qx = qx if qx >= -1.0 else -1.0
        qy = qy if qy >= -1.0 else -1.0
        qz = qz if qz >= -1.0 else -1.0
        qx = qx if qx <= fx else fx
        qy = qy if qy <= fy else fy
        qz = qz if qz <= fz else fz
        vx[v] = np.uint16(math.floor(qx) + 1.0)
        vy[v] = np.uint16(math.floor(qy) + 1.0)
        vz[v] = np.uint16(math.floor(qz) + 1.0)
        if blo.shape[0]:
            cand[n] = v
            n += (blo[0] <= x) & (x <= bhi[0]) & (blo[1] <= y) & (y <= bhi[1]) & (blo[2] <= z) & (z <= bhi[2])
    vmin = np.full(ny * nz, nx, np.int32)
    vmax = np.full(ny * nz, -1, np.int32)
    for v in range(0, N, 4):
        cx, cy, cz = int(vx[v]) - 1, int(vy[v]) - 1, int(vz[v]) - 1
        if 0 <= cy < ny and 0 <= cz < nz:
            r = cz * ny + cy
            vmin[r] = min(vmin[r], cx)
            vmax[r] = max(vmax[r], cx)
    return vx, vy, vz, vmin, vmax, cand, n


@njit(cache=True, nogil=True)
def _keep_bits(need, xl, xr, nx, ny, nz):
    """The cells that a triangle's range must meet to be read further, as bit rows padded by one
    row on each side in y and z and by one cell in x (cell ``i`` at bit ``i + 1``; indexed by cells
    plus one, those of clamped cells ``-1 .. n`` are in range): the needed cells and, per row, the
    cells up to ``xl`` and from ``xr`` on (``-1 .. nx`` included: a triangle beyond the grid's end
    crosses the row there)."""
    W = (nx + 2 + 63) // 64
    py = ny + 2
    out = np.zeros(((nz + 2) * py, W), np.uint64)
    s1, s63 = np.uint64(1), np.uint64(63)
    for k in range(nz):
        for j in range(ny):
            r, p = k * ny + j, (k + 1) * py + j + 1
            carry = np.uint64(0)
            for w in range(need.shape[1]):
                x = need[r, w]
                out[p, w] = (x << s1) | carry
                carry = x >> s63
            if need.shape[1] < W:
                out[p, need.shape[1]] = carry
            _or_span(out, p, 0, xl[p] + 1)
            _or_span(out, p, max(xr[p], -1) + 1, nx + 1)
    return out


@njit(cache=True, nogil=True)
def _or_span(bits, r, b0, b1):
    """Set bits ``b0 .. b1`` of row ``r`` (nothing when ``b0 > b1``)."""
    for w in range(b0 >> 6, (b1 >> 6) + 1 if b1 >= b0 else 0):
        bits[r, w] |= _mask(b0, b1, w)


@njit(cache=True, nogil=True)
def _top_bit(x):
    """Index of the highest set bit of ``x`` (uint64, non-zero)."""
    t = 0
    for sh in (32, 16, 8, 4, 2, 1):
        if x >> np.uint64(t + sh) != 0:
            t += sh
    return t


@njit(cache=True, nogil=True)
def _last_le(bits, r, i):
    """The last cell ``<= i`` set in row ``r`` of the bit rows (-1: none)."""
    if i < 0:
        return -1
    w = i >> 6
    x = bits[r, w] & (_ALL >> np.uint64(63 - (i & 63)))
    while x == 0:
        w -= 1
        if w < 0:
            return -1
        x = bits[r, w]
    return 64 * w + _top_bit(x)


@njit(cache=True, nogil=True)
def _first_gt(bits, r, i, n):
    """The first cell ``> i`` set in row ``r`` of the bit rows (``n``: none)."""
    i += 1
    if i >= n:
        return n
    w = i >> 6
    x = bits[r, w] & (_ALL << np.uint64(i & 63))
    while x == 0:
        w += 1
        if w >= bits.shape[1]:
            return n
        x = bits[r, w]
    return min(64 * w + _top_bit(x & (~x + _ONE)), n)


@njit(cache=True, nogil=True)
def row_plan(occ, rowmin, rowmax, vmin, vmax, nx, ny, nz):
    """Each candidate row's ray directions and the triangle pass's thresholds.

    A candidate cell's centre is inside when the signed crossings of its row on one side of it do
    not cancel: on the left (``-x``, as :func:`h4d_fast.ops._mesh_numba.cell_winding`) or, their sum
    along the whole row being zero for a closed mesh, minus those on the right. A row's cells up to
    ``split`` take the left, the others the right: all one way, or split in the middle of the other
    mesh's vertices there (first / last x cell ``vmin``, ``vmax``), whichever leaves fewer of their
    cells between the candidates and the row's end.

    Returns ``split``, ``lmax`` (the last candidate cell up to the split, -1: none), ``rmin`` (the
    first beyond, ``nx``: none), each ``[nz * ny]``, and over rows padded by one on each side
    (``[(nz + 2) * (ny + 2)]``, so that clamped cells ``-1 .. n`` index them) ``xl`` / ``xr``: a
    triangle crosses a row where its candidates' windings count it (or their own rays, a cell
    further) only if ``a <= xl`` or ``b >= xr`` (its first / last x cell).
    """
    nr = ny * nz
    split = np.full(nr, -1, np.int32)
    lmax = np.full(nr, -1, np.int32)
    rmin = np.full(nr, nx, np.int32)
    py = ny + 2
    xl = np.full((nz + 2) * py, -2, np.int32)
    xr = np.full((nz + 2) * py, nx + 2, np.int32)
    for k in range(nz):
        for j in range(ny):
            r = k * ny + j
            if rowmax[r] < 0:
                continue
            s, lm, rm = rowmax[r], rowmax[r], nx  # all to the left
            if vmax[r] >= 0:
                best = max(min(rowmax[r], vmax[r]) - vmin[r] + 1, 0)
                cost = max(vmax[r] - max(rowmin[r], vmin[r]) + 1, 0)
                if cost < best:
                    best, s, lm, rm = cost, rowmin[r] - 1, -1, rowmin[r]
                mid = (vmin[r] + vmax[r]) // 2
                l2, r2 = _last_le(occ, r, mid), _first_gt(occ, r, mid, nx)
                cost = (max(min(l2, vmax[r]) - vmin[r] + 1, 0) if l2 >= 0 else 0) + (max(vmax[r] - max(r2, vmin[r]) + 1, 0) if r2 < nx else 0)
                if cost < best:
                    s, lm, rm = mid, l2, r2
            split[r], lmax[r], rmin[r] = s, lm, rm
            p = (k + 1) * py + j + 1
            if lm >= 0:
                xl[p] = lm + 1
            if rm < nx:
                xr[p] = rm - 1
    return split, lmax, rmin, xl, xr


@njit(cache=True, nogil=True, inline="always")
def _need_any(need, i0, i1, j0, j1, k0, k1, ny):
    """Whether a cell of the range (clipped, non-empty) is set in the bit rows ``need``; a range of
    at most two cells per axis within one word is read at its four corner rows, without branches."""
    w = i0 >> 6
    if j1 - j0 <= 1 and k1 - k0 <= 1 and (i1 >> 6) == w:
        m = (_ALL >> np.uint64(63 - (i1 - i0))) << np.uint64(i0 & 63)
        r0, r1 = k0 * ny, k1 * ny
        return ((need[r0 + j0, w] | need[r0 + j1, w] | need[r1 + j0, w] | need[r1 + j1, w]) & m) != 0
    for k in range(k0, k1 + 1):
        for j in range(j0, j1 + 1):
            if bits_any(need, k * ny + j, i0, i1):
                return True
    return False


@njit(cache=True, nogil=True)
def _first_pass(fu, vx, vy, vz, keep, ny):
    """:func:`scan_tris`'s first pass: ``(tri, n)``, the first ``n`` of ``tri`` the triangles kept."""
    T = fu.shape[0]
    tri = np.empty(T, np.int32)
    n = 0
    py = np.uint32(ny + 2)
    one, six, low = np.uint32(1), np.uint32(6), np.uint32(63)
    for f in range(T):
        i0, i1, i2 = fu[f, 0], fu[f, 1], fu[f, 2]
        a, b = min(vx[i0], vx[i1], vx[i2]), max(vx[i0], vx[i1], vx[i2])
        j0, j1 = min(vy[i0], vy[i1], vy[i2]), max(vy[i0], vy[i1], vy[i2])
        k0, k1 = min(vz[i0], vz[i1], vz[i2]), max(vz[i0], vz[i1], vz[i2])
        q0, q1 = k0 * py, k1 * py
        w = a >> six
        m = (_ALL >> np.uint64(low - min(b - a, low))) << np.uint64(a & low)
        hit = ((keep[q0 + j0, w] | keep[q0 + j1, w] | keep[q1 + j0, w] | keep[q1 + j1, w]) & m) != 0
        tri[n] = f
        n += hit | ((b >> six) != w) | (j1 - j0 > one) | (k1 - k0 > one)
    return tri, n


@njit(cache=True, nogil=True)
def _first_pass_1(fu, vx, vy, vz, keep, ny):
    """:func:`_first_pass` for bit rows of one word (``keep [rows]``), reading 3 x 3 rows: the
    range's first, second and last along y and z (all its rows when it has at most three)."""
    T = fu.shape[0]
    tri = np.empty(T, np.int32)
    n = 0
    py = np.uint32(ny + 2)
    one, two, low = np.uint32(1), np.uint32(2), np.uint32(63)
    for f in range(T):
        i0, i1, i2 = fu[f, 0], fu[f, 1], fu[f, 2]
        a, b = min(vx[i0], vx[i1], vx[i2]), max(vx[i0], vx[i1], vx[i2])
        j0, j1 = min(vy[i0], vy[i1], vy[i2]), max(vy[i0], vy[i1], vy[i2])
        k0, k1 = min(vz[i0], vz[i1], vz[i2]), max(vz[i0], vz[i1], vz[i2])
        jm, km = min(j0 + one, j1), min(k0 + one, k1)
        q0, qm, q1 = k0 * py, km * py, k1 * py
        m = (_ALL >> np.uint64(low - min(b - a, low))) << np.uint64(a & low)
        x = keep[q0 + j0] | keep[q0 + jm] | keep[q0 + j1] | keep[qm + j0] | keep[qm + jm] | keep[qm + j1]
        x |= keep[q1 + j0] | keep[q1 + jm] | keep[q1 + j1]
        tri[n] = f
        n += ((x & m) != 0) | (j1 - j0 > two) | (k1 - k0 > two)
    return tri, n


@njit(cache=True, nogil=True)
def scan_tris(V, faces, fu, lo, h, nx, ny, nz, occ, need, rowmin, rowmax, vx, vy, vz, vmin, vmax):
    """The triangles' pass (module docstring); ``fu``: ``faces`` as uint16 or uint32; ``vx, vy,
    vz, vmin, vmax``: :func:`vert_cells`; ``need``: bit rows; ``rowmin``, ``rowmax [nz * ny]`` int32:
    the first and last candidate cell of each row (``nx`` / -1: none).

    The first pass (:func:`_first_pass_1`, :func:`_first_pass`) keeps, without branches, the
    triangles whose range meets a needed cell or a cell on the side that :func:`row_plan` gives a
    candidate row (:func:`_keep_bits`), read at the range's corner rows (with bit rows of one word:
    its first, second and last rows along y and z); a range of more rows than those, or across two
    words of a bit row, is kept whatever it meets.

    Returns ``tri [n]`` (those triangles, in order), ``rng [n, 6]`` (the cell ranges ``a, b, j0,
    j1, k0, k1`` of those in ``rel`` or ``act``: ``j, k`` clipped to the grid, the x ends within
    ``-1 .. nx``), ``rel`` (positions in ``tri`` of the triangles meeting a needed cell), ``act``
    (of those that meet a candidate row on the row's side), ``tog [nz * ny, nx + 2]`` int16 (the
    signed crossings of the candidate rows' centre lines at their cell: one left of cell ``i``'s
    centre counts at ``i`` or before, so that ``i``'s winding is the sum up to ``i`` or minus the
    sum beyond; only those on the sides that the rows' candidates read; column ``nx + 1``: 1 where
    the row has any) and :func:`row_plan`'s ``split``, ``lmax``, ``rmin``.
    """
    split, lmax, rmin, xl, xr = row_plan(occ, rowmin, rowmax, vmin, vmax, nx, ny, nz)
    keep = _keep_bits(need, xl, xr, nx, ny, nz)
    if keep.shape[1] == 1:
        tri, n = _first_pass_1(fu, vx, vy, vz, np.ascontiguousarray(keep[:, 0]), ny)
    else:
        tri, n = _first_pass(fu, vx, vy, vz, keep, ny)
    rng = np.empty((n, 6), np.int32)
    rel = np.empty(n, np.int32)
    act = np.empty(n, np.int32)
    nact = 0
    tog = np.empty((nz * ny, nx + 2), np.int16)  # 0 on the candidates' rows: no other is read
    for r in range(nz * ny):
        if rowmax[r] >= 0:
            tog[r] = 0
    nym, nzm = ny - 1, nz - 1
    pyi = ny + 2
    nrel = 0
    for q in range(n):
        f = tri[q]
        i0, i1, i2 = fu[f, 0], fu[f, 1], fu[f, 2]
        a, b = int(min(vx[i0], vx[i1], vx[i2])) - 1, int(max(vx[i0], vx[i1], vx[i2])) - 1
        j0, j1 = int(min(vy[i0], vy[i1], vy[i2])) - 1, int(max(vy[i0], vy[i1], vy[i2])) - 1
        k0, k1 = int(min(vz[i0], vz[i1], vz[i2])) - 1, int(max(vz[i0], vz[i1], vz[i2])) - 1
        if j1 < 0 or j0 > nym or k1 < 0 or k0 > nzm:
            continue
        j0, j1, k0, k1 = max(j0, 0), min(j1, nym), max(k0, 0), min(k1, nzm)
        rng[q, 0], rng[q, 1], rng[q, 2], rng[q, 3], rng[q, 4], rng[q, 5] = a, b, j0, j1, k0, k1
        if b >= 0 and a <= nx - 1 and _need_any(need, max(a, 0), min(b, nx - 1), j0, j1, k0, k1, ny):
            rel[nrel] = q
            nrel += 1
        side = False  # on the side of a candidate row that its candidates read (xl, xr: candidate rows only)
        for k in range(k0, k1 + 1):
            for j in range(j0, j1 + 1):
                p = (k + 1) * pyi + j + 1
                side |= (xl[p] >= a) | (xr[p] <= b)
        if not side:
            continue
        act[nact] = q
        nact += 1
        # cell_winding's rasterisation over the rows whose centre the projection covers
        e0, e1, e2 = faces[f, 0], faces[f, 1], faces[f, 2]
        y0, z0 = V[e0, 1], V[e0, 2]
        y1, z1 = V[e1, 1], V[e1, 2]
        y2, z2 = V[e2, 1], V[e2, 2]
        jlo = max(int(math.ceil((min(y0, y1, y2) - lo[1]) / h - 0.5)), 0)
        jhi = min(int(math.floor((max(y0, y1, y2) - lo[1]) / h - 0.5)), nym)
        klo = max(int(math.ceil((min(z0, z1, z2) - lo[2]) / h - 0.5)), 0)
        khi = min(int(math.floor((max(z0, z1, z2) - lo[2]) / h - 0.5)), nzm)
        for k in range(klo, khi + 1):
            zc = lo[2] + (k + 0.5) * h
            for j in range(jlo, jhi + 1):
                r = k * ny + j
                # a crossing counts at cell a or beyond and before b + 1: none where the candidates read
                if not (a <= lmax[r] or b >= rmin[r]):
                    continue
                yc = lo[1] + (j + 0.5) * h
                s0, xc = ray_crossing(e0, e1, e2, y0, z0, y1, z1, y2, z2, V[e0, 0], V[e1, 0], V[e2, 0], yc, zc)
                if s0 != 0:
                    t_ = math.floor((xc - lo[0]) / h - 0.5) + 1.0
                    tog[r, int(min(max(t_, 0.0), float(nx)))] += np.int16(s0)
                    tog[r, nx + 1] = 1  # the row has crossings
    return tri[:n], rng, rel[:nrel], act[:nact], tog, split, lmax, rmin


@njit(cache=True, nogil=True)
def cell_sides(tog, lmax, rmin, rowmin, rowmax, W):
    """Bit rows ``[nz * ny, W]``: set where a candidate cell's centre is inside (its winding, from
    :func:`scan_tris`'s crossings, non-zero): the sum up to the cell for the cells up to ``lmax``,
    minus the sum beyond it from ``rmin`` on (the other cells, and a row without crossings: 0)."""
    nr, nx2 = tog.shape
    nx = nx2 - 2
    out = np.zeros((nr, W), np.uint64)
    for r in range(nr):
        if rowmax[r] < 0 or tog[r, nx + 1] == 0:
            continue
        acc = 0
        for i in range(lmax[r] + 1):
            acc += tog[r, i]
            if acc != 0 and i >= rowmin[r]:
                set_bit(out, r, i)
        acc = 0
        for i in range(nx - 1, rmin[r] - 1, -1):
            acc -= tog[r, i + 1]
            if acc != 0 and i <= rowmax[r]:
                set_bit(out, r, i)
    return out


@njit(cache=True, nogil=True)
def slot_grid(tri, rng, rel, nx, ny, nz, need):
    """Cell lists of the relevant triangles (``tri[rel]``) in the needed cells: ``slot [nx * ny *
    nz]`` int32 and its bit rows ``sb`` (a cell's triangles are ``items[start[s - 1]:start[s]]``, ``s
    = slot[c]`` where its bit is set, else none: :func:`slot_of`), ``start``, ``items`` (triangle
    indices in increasing order, as :func:`h4d_fast.ops._contact_numba._tri_grid`), ``pos``
    (beside ``items``: the triangle's position in ``rel``) and the bit rows of the cells that the
    relevant triangles' ranges cover."""
    nr = ny * nz
    slot = np.empty(nx * ny * nz, np.int32)  # read where ``sb`` is set only
    sb = np.zeros((nr, need.shape[1]), np.uint64)
    tocc = np.zeros((nr, need.shape[1]), np.uint64)
    total = 0
    for q in rel:
        total += (min(rng[q, 1], nx - 1) - max(rng[q, 0], 0) + 1) * (rng[q, 3] - rng[q, 2] + 1) * (rng[q, 5] - rng[q, 4] + 1)
    start = np.zeros(total + 1, np.int32)
    ns = 0
    ps = np.empty(total, np.int32)  # (list, position in rel) of each triangle in a needed cell
    pe = np.empty(total, np.int32)
    npair = 0
    for e in range(rel.shape[0]):
        q = rel[e]
        a, b = max(rng[q, 0], 0), min(rng[q, 1], nx - 1)
        for k in range(rng[q, 4], rng[q, 5] + 1):
            for j in range(rng[q, 2], rng[q, 3] + 1):
                r = k * ny + j
                for w in range(a >> 6, (b >> 6) + 1):
                    tocc[r, w] |= _mask(a, b, w)
                for i in range(a, b + 1):
                    if bit(need, r, i):
                        c = r * nx + i
                        if not bit(sb, r, i):
                            set_bit(sb, r, i)
                            ns += 1
                            slot[c] = ns
                        start[slot[c]] += 1
                        ps[npair] = slot[c]
                        pe[npair] = e
                        npair += 1
    for s in range(ns):
        start[s + 1] += start[s]
    fill = start[:ns].copy()
    items = np.empty(start[ns], np.int32)
    pos = np.empty(start[ns], np.int32)
    for t in range(npair):  # in the order of rel: each list in increasing triangle order
        s = ps[t] - 1
        items[fill[s]] = tri[rel[pe[t]]]
        pos[fill[s]] = pe[t]
        fill[s] += 1
    return slot, sb, start[: ns + 1], items, pos, tocc


@njit(cache=True, nogil=True, inline="always")
def slot_of(slot, sb, r, i, nx):
    """:func:`slot_grid`'s list of cell ``i`` of row ``r`` (0: none)."""
    return slot[r * nx + i] if bit(sb, r, i) else 0


@njit(cache=True, nogil=True)
def col_grid(tri, rng, act, nx, ny, nz, colmax, colmin):
    """The triangles ``tri[act]`` of the ``(y, z)`` columns with rays to cast: CSR by column, as
    the ray grid that :func:`h4d_fast.ops._contact_numba._winding` reads, with each entry's first
    and last x cell. ``colmax [nz * ny]``: the last start of a ray along ``-x`` there (-1: none),
    ``colmin``: the first of one along ``+x`` (``nx``: none); a triangle is kept when it starts at
    most a cell beyond the former or ends at most a cell before the latter (no other crossing can
    count). A first pass skips the triangles whose range meets none of those columns."""
    nr = ny * nz
    near = np.zeros(nr, np.uint8)  # 1 at (j, k) when a column with rays lies in j .. j + 2, k .. k + 2
    for k in range(nz):
        for j in range(ny):
            if colmax[k * ny + j] >= 0 or colmin[k * ny + j] < nx:
                for kk in range(max(k - 2, 0), k + 1):
                    near[kk * ny + max(j - 2, 0):kk * ny + j + 1] = 1
    sel = np.empty(act.shape[0], np.int32)
    n = 0
    for q in act:  # a range of at most three rows along y and z starts within two of its columns
        j0, j1, k0, k1 = rng[q, 2], rng[q, 3], rng[q, 4], rng[q, 5]
        sel[n] = q
        n += (near[k0 * ny + j0] != 0) | (j1 - j0 > 2) | (k1 - k0 > 2)
    start = np.zeros(nr + 1, np.int32)
    for p in range(2):
        if p == 1:
            for r in range(nr):
                start[r + 1] += start[r]
            fill = start[:-1].copy()
            items = np.empty(start[nr], np.int32)
            first = np.empty(start[nr], np.int32)
            last = np.empty(start[nr], np.int32)
        for q in sel[:n]:
            a, b = rng[q, 0], rng[q, 1]
            for k in range(rng[q, 4], rng[q, 5] + 1):
                for j in range(rng[q, 2], rng[q, 3] + 1):
                    r = k * ny + j
                    if not ((a <= colmax[r] + 1 and colmax[r] >= 0) or b >= colmin[r] - 1):
                        continue
                    if p == 0:
                        start[r + 1] += 1
                    else:
                        items[fill[r]] = tri[q]
                        first[fill[r]] = a
                        last[fill[r]] = b
                        fill[r] += 1
    return start, items, first, last


@njit(cache=True, nogil=True)
def tri_boxes(V, faces, tri, rel):
    """``[len(rel), 6]`` float64: the boxes ``(x0, x1, y0, y1, z0, z1)`` of the triangles ``tri[rel]``."""
    out = np.empty((rel.shape[0], 6))
    for e in range(rel.shape[0]):
        f = tri[rel[e]]
        for a in range(3):
            x0, x1, x2 = V[faces[f, 0], a], V[faces[f, 1], a], V[faces[f, 2], a]
            out[e, 2 * a] = min(x0, x1, x2)
            out[e, 2 * a + 1] = max(x0, x1, x2)
    return out
