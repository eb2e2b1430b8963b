"""The sparse grids of :func:`h4d_fast.ops._contact_numba.query_task`: what one task builds from the
other mesh, complete only where the candidate points can read it.

The task's cells (size ``h`` over the candidates' box) are flagged in bit rows, one row of
``W = ceil(nx / 64)`` words per ``(j, k)``: the candidates' cells (*occupied*) and those cells grown
by one cell (*needed*: a triangle within the band of a candidate meets one of them). One pass
over the triangles (:func:`scan_tris`), with cell ranges taken from the vertices' cells, keeps

* the *active* triangles: those whose ``(y, z)`` range meets a needed row (no other triangle is in
  a needed cell or crosses a candidate's row or column);
* of them the *relevant* ones (their cell range meets a needed cell), whose cell lists
  (:func:`slot_grid`, one CSR entry per needed cell that holds triangles) are exactly the
  full grid's lists of those cells, in triangle order;
* the signed crossings of the candidates' rows with a ray through the cell centres
  (:func:`h4d_fast.ops._mesh_numba.cell_winding`'s test, on those rows only).

:func:`col_grid` lists the active triangles of the ``(y, z)`` columns whose candidates cast their
own ray (the points in a cell with triangles).
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
    (a cell beyond ``nx`` in the last word may be set too: never read)."""
    R, W = b.shape
    s1, s63 = np.uint64(1), np.uint64(63)
    x = np.empty_like(b)
    for r in range(R):
        for w in range(W):
            v = b[r, w]
            o = v | (v << s1) | (v >> s1)
            if w > 0:
                o |= b[r, w - 1] >> s63
            if w + 1 < W:
                o |= b[r, w + 1] << s63
            x[r, w] = o
    y = x.copy()
    for k in range(nz):
        for j in range(ny):
            r = k * ny + j
            for w in range(W):
                if j > 0:
                    y[r, w] |= x[r - 1, w]
                if j + 1 < ny:
                    y[r, w] |= x[r + 1, w]
    z = y.copy()
    for r in range(R):
        for w in range(W):
            if r >= ny:
                z[r, w] |= y[r - ny, w]
            if r + ny < R:
                z[r, w] |= y[r + ny, w]
    return z


@njit(cache=True, nogil=True)
def _vert_cells(V, lo, h, nx, ny, nz):
    """``[N, 8]`` int32 per vertex: its cell ``floor(q)`` per axis (``q = (v - lo) / h``), then for
    y and z ``ceil(q - 0.5)`` and ``floor(q - 0.5)`` (the cell centres at or beyond / at or before
    it), each clamped to ``-1 .. n``. The min / max over a triangle's vertices are then
    :func:`h4d_fast.ops._contact_numba._cell_range`'s and
    :func:`h4d_fast.ops._mesh_numba.cell_winding`'s unclipped ends (each is monotonic in the
    coordinate), up to a clamping that their tests do not see."""
    N = V.shape[0]
    out = np.empty((N, 8), np.int32)
    for v in range(N):
        for a in range(3):
            n = nx if a == 0 else (ny if a == 1 else nz)
            q = (V[v, a] - lo[a]) / h
            out[v, a] = n if q >= n else (int(math.floor(q)) if q >= 0 else -1)
            if a > 0:
                u = q - 0.5
                out[v, 2 * a + 1] = n if u >= n else (int(math.ceil(u)) if u >= -1 else -1)
                out[v, 2 * a + 2] = n if u >= n else (int(math.floor(u)) if u >= -1 else -1)
    return out


@njit(cache=True, nogil=True)
def _rows_any(vals, thr, j0, j1, k0, k1, ny):
    """Whether ``vals`` (flat ``[nz, ny]``) is at least ``thr`` on a row of the range."""
    for k in range(k0, k1 + 1):
        for j in range(j0, j1 + 1):
            if vals[k * ny + j] >= thr:
                return True
    return False


@njit(cache=True, nogil=True)
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
def scan_tris(V, faces, lo, h, nx, ny, nz, need, rowmax, needmax):
    """The triangles' pass (module docstring). ``need`` bit rows; ``rowmax``, ``needmax [nz * ny]``
    int32: the last candidate cell and the last needed cell of each row (-1: none).

    A first pass keeps, without branches, the triangles whose ``(y, z)`` range meets a row whose
    last needed cell is at or beyond the range's first x cell ``a``. No other triangle meets a
    needed cell, and none crosses a candidate's row or column left of the candidate: its box starts
    a whole cell beyond the row's last candidate cell (needed cells extend a cell past it).

    Returns ``tri [n]`` (those triangles, in order), ``rng [n, 6]`` (the cell ranges ``a, b, j0,
    j1, k0, k1`` of those in ``rel`` or ``act``: ``j, k`` clipped to the grid, the x ends within
    ``-1 .. nx``), ``rel`` (positions in ``tri`` of the relevant triangles), ``act`` (of those whose
    range meets a candidate's row) and ``tog [nz * ny, nx + 1]`` int16, the signed crossings of the
    candidates' rows (one left of cell ``i``'s centre counts at ``i`` or before; those right of a
    row's last candidate cell are left out: nothing reads them).
    """
    vc = _vert_cells(V, lo, h, nx, ny, nz)
    T = faces.shape[0]
    tri = np.empty(T, np.int32)
    n = 0
    nym, nzm = ny - 1, nz - 1
    for f in range(T):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        a = min(vc[i0, 0], vc[i1, 0], vc[i2, 0])
        j0, j1 = min(vc[i0, 1], vc[i1, 1], vc[i2, 1]), max(vc[i0, 1], vc[i1, 1], vc[i2, 1])
        k0, k1 = min(vc[i0, 2], vc[i1, 2], vc[i2, 2]), max(vc[i0, 2], vc[i1, 2], vc[i2, 2])
        c0, c1 = min(max(j0, 0), nym), min(max(j1, 0), nym)
        q0, q1 = min(max(k0, 0), nzm) * ny, min(max(k1, 0), nzm) * ny
        m = max(needmax[q0 + c0], needmax[q0 + c1], needmax[q1 + c0], needmax[q1 + c1])
        inb = (j1 >= 0) & (j0 <= nym) & (k1 >= 0) & (k0 <= nzm)
        tri[n] = f
        n += inb & ((m >= a) | (j1 - j0 > 1) | (k1 - k0 > 1))  # more rows than the corners: kept
    rng = np.empty((n, 6), np.int32)
    rel = np.empty(n, np.int32)
    act = np.empty(n, np.int32)
    tog = np.zeros((nz * ny, nx + 1), np.int16)
    nrel = 0
    nact = 0
    for q in range(n):
        f = tri[q]
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        a, b = min(vc[i0, 0], vc[i1, 0], vc[i2, 0]), max(vc[i0, 0], vc[i1, 0], vc[i2, 0])
        j0, j1 = max(min(vc[i0, 1], vc[i1, 1], vc[i2, 1]), 0), min(max(vc[i0, 1], vc[i1, 1], vc[i2, 1]), nym)
        k0, k1 = max(min(vc[i0, 2], vc[i1, 2], vc[i2, 2]), 0), min(max(vc[i0, 2], vc[i1, 2], vc[i2, 2]), nzm)
        if (j1 - j0 > 1) | (k1 - k0 > 1):
            if not _rows_any(needmax, a, j0, j1, k0, k1, ny):
                continue
            cand = _rows_any(rowmax, 0, j0, j1, k0, k1, ny)
        else:
            r0, r1 = k0 * ny, k1 * ny
            cand = max(rowmax[r0 + j0], rowmax[r0 + j1], rowmax[r1 + j0], rowmax[r1 + j1]) >= 0
        rng[q, 0], rng[q, 1], rng[q, 2], rng[q, 3], rng[q, 4], rng[q, 5] = a, b, j0, j1, k0, k1
        if b >= 0 and a <= nx - 1 and _need_any(need, max(a, 0), min(b, nx - 1), j0, j1, k0, k1, ny):
            rel[nrel] = q
            nrel += 1
        if not cand:
            continue
        act[nact] = q
        nact += 1
        # cell_winding's rasterisation over the rows whose centre the projection covers
        jlo, jhi = max(min(vc[i0, 3], vc[i1, 3], vc[i2, 3]), 0), min(max(vc[i0, 4], vc[i1, 4], vc[i2, 4]), nym)
        klo, khi = max(min(vc[i0, 5], vc[i1, 5], vc[i2, 5]), 0), min(max(vc[i0, 6], vc[i1, 6], vc[i2, 6]), nzm)
        if jlo > jhi or klo > khi:
            continue
        y0, z0 = V[i0, 1], V[i0, 2]
        y1, z1 = V[i1, 1], V[i1, 2]
        y2, z2 = V[i2, 1], V[i2, 2]
        for k in range(klo, khi + 1):
            zc = lo[2] + (k + 0.5) * h
            for j in range(jlo, jhi + 1):
                if rowmax[k * ny + j] < a:  # a crossing counts from cell a on: beyond the row's candidates
                    continue
                yc = lo[1] + (j + 0.5) * h
                s0, xc = ray_crossing(i0, i1, i2, y0, z0, y1, z1, y2, z2, V[i0, 0], V[i1, 0], V[i2, 0], yc, zc)
                if s0 != 0:
                    t_ = math.floor((xc - lo[0]) / h - 0.5) + 1.0
                    tog[k * ny + j, int(min(max(t_, 0.0), float(nx)))] += np.int16(s0)
    return tri[:n], rng, rel[:nrel], act[:nact], tog


@njit(cache=True, nogil=True)
def slot_grid(tri, rng, rel, nx, ny, nz, need):
    """Cell lists of the relevant triangles (``tri[rel]``) in the needed cells: ``slot [nx * ny * nz]``
    int32 (0 = no triangle, else ``s``: the cell's triangles are ``items[start[s - 1]:start[s]]``),
    ``start``, ``items`` (triangle indices in increasing order, as
    :func:`h4d_fast.ops._contact_numba._tri_grid`), ``pos`` (beside ``items``: the triangle's
    position in ``rel``) and the bit rows of the cells that the relevant triangles' ranges cover."""
    nr = ny * nz
    slot = np.zeros(nx * ny * nz, np.int32)
    tocc = np.zeros((nr, need.shape[1]), np.uint64)
    total = 0
    for q in rel:
        total += (min(rng[q, 1], nx - 1) - max(rng[q, 0], 0) + 1) * (rng[q, 3] - rng[q, 2] + 1) * (rng[q, 5] - rng[q, 4] + 1)
    start = np.zeros(total + 1, np.int32)
    ns = 0
    for q in rel:
        for k in range(rng[q, 4], rng[q, 5] + 1):
            for j in range(rng[q, 2], rng[q, 3] + 1):
                r = k * ny + j
                for i in range(max(rng[q, 0], 0), min(rng[q, 1], nx - 1) + 1):
                    set_bit(tocc, r, i)
                    if bit(need, r, i):
                        c = r * nx + i
                        if slot[c] == 0:
                            ns += 1
                            slot[c] = ns
                        start[slot[c]] += 1
    for s in range(ns):
        start[s + 1] += start[s]
    fill = start[:ns].copy()
    items = np.empty(start[ns], np.int32)
    pos = np.empty(start[ns], np.int32)
    for e in range(rel.shape[0]):
        q = rel[e]
        for k in range(rng[q, 4], rng[q, 5] + 1):
            for j in range(rng[q, 2], rng[q, 3] + 1):
                r = k * ny + j
                for i in range(max(rng[q, 0], 0), min(rng[q, 1], nx - 1) + 1):
                    if bit(need, r, i):
                        s = slot[r * nx + i] - 1
                        items[fill[s]] = tri[q]
                        pos[fill[s]] = e
                        fill[s] += 1
    return slot, start[: ns + 1], items, pos, tocc


@njit(cache=True, nogil=True)
def col_grid(tri, rng, act, ny, nz, colmax):
    """The triangles ``tri[act]`` of the ``(y, z)`` columns with a ray to cast, ``colmax [nz * ny]``
    the last x cell of a ray's start there (-1: none): CSR by column, as the ray grid that
    :func:`h4d_fast.ops._contact_numba._winding` reads, with each entry's first x cell. A triangle
    whose box starts more than a cell beyond ``colmax`` is left out (no crossing of it can count)."""
    nr = ny * nz
    sel = np.empty(act.shape[0], np.int32)
    n = 0
    for q in act:  # the four corner columns, or any when the range has more
        j0, j1, k0, k1 = rng[q, 2], rng[q, 3], rng[q, 4], rng[q, 5]
        big = (j1 - j0 > 1) | (k1 - k0 > 1)
        sel[n] = q
        m = max(colmax[k0 * ny + j0], colmax[k0 * ny + j1], colmax[k1 * ny + j0], colmax[k1 * ny + j1])
        n += big | (rng[q, 0] <= m + 1)
    start = np.zeros(nr + 1, np.int32)
    for p in range(2):
        if p == 1:
            for r in range(nr):
                start[r + 1] += start[r]
            fill = start[:-1].copy()
            items = np.empty(start[nr], np.int32)
            first = np.empty(start[nr], np.int32)
        for q in sel[:n]:
            a = rng[q, 0]
            for k in range(rng[q, 4], rng[q, 5] + 1):
                for j in range(rng[q, 2], rng[q, 3] + 1):
                    r = k * ny + j
                    if colmax[r] >= 0 and a <= colmax[r] + 1:
                        if p == 0:
                            start[r + 1] += 1
                        else:
                            items[fill[r]] = tri[q]
                            first[fill[r]] = a
                            fill[r] += 1
    return start, items, first


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
