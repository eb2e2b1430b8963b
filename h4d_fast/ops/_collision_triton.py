"""Triton (CUDA) backend of the collision loss.

Method: :mod:`h4d_fast.ops.collision` ("Kernel method"). Per direction ``p`` (owner ``p``'s grid
sampled at the other person ``q``'s vertices) four launches, none of which waits on the host:

``_raster_kernel``  grid ``(B, cdiv(C, CPP))``: ``CPP`` clusters of ``CS`` faces per program.
    Writes each cluster's AABB (normalised units) and rasterises the real faces onto the
    ``G x G`` rows: a hit toggles (``atomic_xor``) the bits of the row's grid points beyond
    the crossing in ``W = cdiv(G, 32)`` int32 words per row. Compiled without FP contraction so
    that the two triangles of an edge evaluate its edge function bitwise identically
    (watertight parity); so are mark and sample, which must find the same corners.
``_mark_kernel``    grid ``(B, cdiv(Nq, BLOCK_V))``: one vertex per lane; for each of its 8
    corners that is in range and inside, ``atomic_or`` a "needed" bit; the lane that turns a
    word non-zero appends it to the direction's work list (``atomic_add`` on a counter).
``_dist_kernel``    persistent grid (a few programs per SM): loops over the work list; for each
    needed grid point, the exact nearest-face distance by best-first search over the cluster
    AABBs: each round takes the ``K = 4`` clusters of smallest lower bound (``K x CS`` lanes, one
    face each) and the search stops when the smallest remaining bound is not below the best
    distance. (On SMPL-like meshes a grid point needs ~12 clusters, so ~3-4 rounds.)
``_sample_kernel``  grid ``(B, cdiv(Nq, BLOCK_V))``: trilinear samples (``align_corners=True``,
    zero padding) of the needed values, a partial sum per program and d(sample)/d(vertex).

``SIGNED`` (``field="signed"``): mark sets the bits of all in-range corners of a vertex with an
inside corner, dist stores minus the distance at outside points, sample keeps ``relu`` (of the
sample plus ``margin / s`` where a corner is inside). ``TAPER`` (``taper > 0``, inside field): the
same marking and signed distances; sample interpolates both the inside-only values and the signed
ones and weights the first by ``clamp((signed + r) / r, 0, 1)``, ``r = taper / s``.

Inactive (frame, direction) pairs return at the first load. Scratch: parity + needed bits
``2 x [2, B, G, G, W]`` int32 (zeroed), cluster AABBs ``[2, B, 6, CP2]``, the work lists, and the
distance cache ``[2, B, G^3]`` float32 (never initialised: only entries whose needed bit is set
are written and read).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import triton
import triton.language as tl
from torch import Tensor

from .collision import CLUSTER, KernelInputs, next_pow2

CPP = 4  # clusters per raster program
BLOCK_V = 256  # vertices per mark/sample program
EPS_ROW = 1e-3  # rows within this many cells of a face's (y, z) box are tested exactly
PROGRAMS_PER_SM = 8  # persistent distance programs (DIST_WARPS warps each)
DIST_K = 4  # clusters searched per round of the best-first distance search
DIST_WARPS = 4  # = DIST_K * CLUSTER / 32 lanes: one face per lane


# ----------------------------------------------------------------------------- device helpers
@triton.jit
def _edge(ia, ib, ay, az, by, bz, cy, cz):
    """Watertight edge function of the (y, z) projection (see _collision_torch._edge)."""
    swap = ia > ib
    py = tl.where(swap, by, ay)
    pz = tl.where(swap, bz, az)
    qy = tl.where(swap, ay, by)
    qz = tl.where(swap, az, bz)
    dy = qy - py
    dz = qz - pz
    e = dy * (cz - pz) - dz * (cy - py)
    tie = tl.where(dz != 0.0, tl.where(dz > 0.0, -1.0, 1.0), tl.where(dy > 0.0, 1.0, tl.where(dy < 0.0, -1.0, 0.0)))
    s = tl.where(e > 0.0, 1.0, tl.where(e < 0.0, -1.0, tie))
    return tl.where(swap, -e, e), tl.where(swap, -s, s)


@triton.jit
def _safe_div(n, d):
    return tl.where(d != 0.0, n / tl.where(d != 0.0, d, 1.0), 0.0)


@triton.jit
def _pt_tri_d2(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz):
    """Squared point-triangle distance, Ericson's region cascade evaluated branch-free."""
    abx = bx - ax
    aby = by - ay
    abz = bz - az
    acx = cx - ax
    acy = cy - ay
    acz = cz - az
    apx = px - ax
    apy = py - ay
    apz = pz - az
    d1 = abx * apx + aby * apy + abz * apz
    d2 = acx * apx + acy * apy + acz * apz
    bpx = px - bx
    bpy = py - by
    bpz = pz - bz
    d3 = abx * bpx + aby * bpy + abz * bpz
    d4 = acx * bpx + acy * bpy + acz * bpz
    cpx = px - cx
    cpy = py - cy
    cpz = pz - cz
    d5 = abx * cpx + aby * cpy + abz * cpz
    d6 = acx * cpx + acy * cpy + acz * cpz
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    den = va + vb + vc
    s = _safe_div(vb, den)  # closest point = a + s ab + t ac; interior first
    t = _safe_div(vc, den)
    e43 = d4 - d3
    e56 = d5 - d6
    wbc = _safe_div(e43, e43 + e56)
    m = (va <= 0.0) & (e43 >= 0.0) & (e56 >= 0.0)  # edge bc
    s = tl.where(m, 1.0 - wbc, s)
    t = tl.where(m, wbc, t)
    m = (vb <= 0.0) & (d2 >= 0.0) & (d6 <= 0.0)  # edge ac
    s = tl.where(m, 0.0, s)
    t = tl.where(m, _safe_div(d2, d2 - d6), t)
    m = (d6 >= 0.0) & (d5 <= d6)  # vertex c
    s = tl.where(m, 0.0, s)
    t = tl.where(m, 1.0, t)
    m = (vc <= 0.0) & (d1 >= 0.0) & (d3 <= 0.0)  # edge ab
    s = tl.where(m, _safe_div(d1, d1 - d3), s)
    t = tl.where(m, 0.0, t)
    m = (d3 >= 0.0) & (d4 <= d3)  # vertex b
    s = tl.where(m, 1.0, s)
    t = tl.where(m, 0.0, t)
    m = (d1 <= 0.0) & (d2 <= 0.0)  # vertex a
    s = tl.where(m, 0.0, s)
    t = tl.where(m, 0.0, t)
    qx = apx - s * abx - t * acx
    qy = apy - s * aby - t * acy
    qz = apz - s * abz - t * acz
    return qx * qx + qy * qy + qz * qz


# ----------------------------------------------------------------------------- kernels
@triton.jit
def _raster_kernel(
    v_ptr, f_ptr, n_verts, n_faces, n_clusters, B, p,
    cen_ptr, half_ptr, act_ptr, aabb_ptr, par_ptr, off,
    G: tl.constexpr, W: tl.constexpr, CS: tl.constexpr, CPP: tl.constexpr, CP2: tl.constexpr, EPS: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)  # frames on axis 0 (no 65535 limit)
    blk = tl.program_id(1)
    pb = (p * B + b).to(tl.int64)
    act = tl.load(act_ptr + pb)
    if act != 0:
        BLOCK: tl.constexpr = CS * CPP
        fo = blk * BLOCK + tl.arange(0, BLOCK)
        okf = fo < n_clusters * CS
        i0 = tl.load(f_ptr + fo * 3 + 0, mask=okf, other=0)
        i1 = tl.load(f_ptr + fo * 3 + 1, mask=okf, other=0)
        i2 = tl.load(f_ptr + fo * 3 + 2, mask=okf, other=0)
        cx = tl.load(cen_ptr + pb * 3 + 0)
        cy = tl.load(cen_ptr + pb * 3 + 1)
        cz = tl.load(cen_ptr + pb * 3 + 2)
        s = tl.load(half_ptr + pb)
        vb = v_ptr + b.to(tl.int64) * n_verts * 3
        x0 = (tl.load(vb + i0 * 3 + 0, mask=okf, other=0.0) - cx) / s
        y0 = (tl.load(vb + i0 * 3 + 1, mask=okf, other=0.0) - cy) / s
        z0 = (tl.load(vb + i0 * 3 + 2, mask=okf, other=0.0) - cz) / s
        x1 = (tl.load(vb + i1 * 3 + 0, mask=okf, other=0.0) - cx) / s
        y1 = (tl.load(vb + i1 * 3 + 1, mask=okf, other=0.0) - cy) / s
        z1 = (tl.load(vb + i1 * 3 + 2, mask=okf, other=0.0) - cz) / s
        x2 = (tl.load(vb + i2 * 3 + 0, mask=okf, other=0.0) - cx) / s
        y2 = (tl.load(vb + i2 * 3 + 1, mask=okf, other=0.0) - cy) / s
        z2 = (tl.load(vb + i2 * 3 + 2, mask=okf, other=0.0) - cz) / s

        # cluster AABBs (padded faces repeat a real face, so every lane of a stored cluster is real)
        ymin = tl.minimum(tl.minimum(y0, y1), y2)
        ymax = tl.maximum(tl.maximum(y0, y1), y2)
        zmin = tl.minimum(tl.minimum(z0, z1), z2)
        zmax = tl.maximum(tl.maximum(z0, z1), z2)
        xmin = tl.minimum(tl.minimum(x0, x1), x2)
        xmax = tl.maximum(tl.maximum(x0, x1), x2)
        cl = blk * CPP + tl.arange(0, CPP)
        okc = cl < n_clusters
        ab = aabb_ptr + pb * 6 * CP2
        tl.store(ab + 0 * CP2 + cl, tl.min(tl.reshape(xmin, (CPP, CS)), axis=1), mask=okc)
        tl.store(ab + 1 * CP2 + cl, tl.min(tl.reshape(ymin, (CPP, CS)), axis=1), mask=okc)
        tl.store(ab + 2 * CP2 + cl, tl.min(tl.reshape(zmin, (CPP, CS)), axis=1), mask=okc)
        tl.store(ab + 3 * CP2 + cl, tl.max(tl.reshape(xmax, (CPP, CS)), axis=1), mask=okc)
        tl.store(ab + 4 * CP2 + cl, tl.max(tl.reshape(ymax, (CPP, CS)), axis=1), mask=okc)
        tl.store(ab + 5 * CP2 + cl, tl.max(tl.reshape(zmax, (CPP, CS)), axis=1), mask=okc)

        # parity rows: candidate rows of each real face, then the exact watertight test
        ok = fo < n_faces
        h = 2.0 / (G - 1)
        jlo = tl.maximum(tl.ceil((ymin + 1.0) / h - off - EPS), 0.0)
        jhi = tl.minimum(tl.floor((ymax + 1.0) / h - off + EPS), G - 1.0)
        klo = tl.maximum(tl.ceil((zmin + 1.0) / h - off - EPS), 0.0)
        khi = tl.minimum(tl.floor((zmax + 1.0) / h - off + EPS), G - 1.0)
        ok = ok & (jhi >= jlo) & (khi >= klo)
        nj = tl.max(tl.where(ok, jhi - jlo + 1.0, 0.0), axis=0).to(tl.int32)
        nk = tl.max(tl.where(ok, khi - klo + 1.0, 0.0), axis=0).to(tl.int32)
        for dj in range(0, nj):
            j = jlo + dj
            yc = -1.0 + (j + off) * h
            for dk in range(0, nk):
                k = klo + dk
                zc = -1.0 + (k + off) * h
                e0, s0 = _edge(i1, i2, y1, z1, y2, z2, yc, zc)
                e1, s1 = _edge(i2, i0, y2, z2, y0, z0, yc, zc)
                e2, s2 = _edge(i0, i1, y0, z0, y1, z1, yc, zc)
                hit = ok & (j <= jhi) & (k <= khi) & (s0 == s1) & (s1 == s2) & (s0 != 0.0)
                den = e0 + e1 + e2
                xc = tl.where(den != 0.0, (e0 * x0 + e1 * x1 + e2 * x2) / tl.where(den != 0.0, den, 1.0), x0)
                first = tl.floor((xc + 1.0) / h - off) + 1.0
                first = tl.minimum(tl.maximum(first, 0.0), G * 1.0).to(tl.int32)
                row = ((pb * G + k.to(tl.int64)) * G + j.to(tl.int64)) * W
                for w in tl.static_range(W):
                    lo_bit = first - 32 * w
                    sh = tl.minimum(tl.maximum(lo_bit, 0), 31)
                    bits = tl.where(lo_bit <= 0, -1, tl.where(lo_bit >= 32, 0, ~((1 << sh) - 1)))
                    tl.atomic_xor(par_ptr + row + w, bits, mask=hit & (bits != 0))


@triton.jit
def _grid_coords(q_ptr, n_q, b, pb, vo, ok, cen_ptr, half_ptr, G: tl.constexpr):
    """Vertices ``vo`` (mask ``ok``) of frame ``b`` in the grid units of box ``pb``: ``(fx, fy, fz, in_range,
    s, hg)`` with ``s`` the box half size and ``hg = (G - 1) / 2`` (grid units per normalised unit)."""
    qb = q_ptr + b.to(tl.int64) * n_q * 3
    cx = tl.load(cen_ptr + pb * 3 + 0)
    cy = tl.load(cen_ptr + pb * 3 + 1)
    cz = tl.load(cen_ptr + pb * 3 + 2)
    s = tl.load(half_ptr + pb)
    hg = 0.5 * (G - 1)
    fx = ((tl.load(qb + vo * 3 + 0, mask=ok, other=0.0) - cx) / s + 1.0) * hg
    fy = ((tl.load(qb + vo * 3 + 1, mask=ok, other=0.0) - cy) / s + 1.0) * hg
    fz = ((tl.load(qb + vo * 3 + 2, mask=ok, other=0.0) - cz) / s + 1.0) * hg
    inr = ok & (fx > -1.0) & (fx < G) & (fy > -1.0) & (fy < G) & (fz > -1.0) & (fz < G)
    return fx, fy, fz, inr, s, hg


@triton.jit
def _mark_kernel(
    q_ptr, n_q, B, p, cen_ptr, half_ptr, act_ptr, par_ptr, need_ptr, cnt_ptr, list_ptr, list_cap,
    G: tl.constexpr, W: tl.constexpr, BLOCK_V: tl.constexpr, SIGNED: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)  # frames on axis 0 (no 65535 limit)
    blk = tl.program_id(1)
    pb = (p * B + b).to(tl.int64)
    act = tl.load(act_ptr + pb)
    if act != 0:
        vo = blk * BLOCK_V + tl.arange(0, BLOCK_V)
        fx, fy, fz, ok, s, hg = _grid_coords(q_ptr, n_q, b, pb, vo, vo < n_q, cen_ptr, half_ptr, G)
        ix0 = tl.where(ok, tl.floor(fx), 0.0).to(tl.int32)
        iy0 = tl.where(ok, tl.floor(fy), 0.0).to(tl.int32)
        iz0 = tl.where(ok, tl.floor(fz), 0.0).to(tl.int32)
        dir_off = (pb - b) * G * G * W  # p * B * G * G * W (int64)
        anyin = vo < 0  # all false
        if SIGNED:  # a vertex with an inside corner needs all its corners
            for c in tl.static_range(8):
                ix = ix0 + (c & 1)
                iy = iy0 + ((c >> 1) & 1)
                iz = iz0 + (c >> 2)
                okc = ok & (ix >= 0) & (ix < G) & (iy >= 0) & (iy < G) & (iz >= 0) & (iz < G)
                ix = tl.where(okc, ix, 0)
                wl = ((b.to(tl.int64) * G + iz) * G + iy) * W + ix // 32
                pw = tl.load(par_ptr + dir_off + wl, mask=okc, other=0)
                anyin = anyin | (okc & ((pw & (1 << (ix % 32))) != 0))
        for c in tl.static_range(8):
            ix = ix0 + (c & 1)
            iy = iy0 + ((c >> 1) & 1)
            iz = iz0 + (c >> 2)
            okc = ok & (ix >= 0) & (ix < G) & (iy >= 0) & (iy < G) & (iz >= 0) & (iz < G)
            ix = tl.where(okc, ix, 0)
            wl = ((b.to(tl.int64) * G + iz) * G + iy) * W + ix // 32  # word index within direction p
            bit = 1 << (ix % 32)
            pw = tl.load(par_ptr + dir_off + wl, mask=okc, other=0)
            ins = okc & (((pw & bit) != 0) | anyin)
            old = tl.atomic_or(need_ptr + dir_off + wl, bit, mask=ins)
            first = ins & (old == 0)
            slot = tl.atomic_add(cnt_ptr + p + tl.zeros_like(vo), 1, mask=first)
            tl.store(list_ptr + p * list_cap + slot, wl.to(tl.int32), mask=first)


@triton.jit
def _dist_kernel(
    v_ptr, f_ptr, n_verts, n_clusters, B, p, cen_ptr, half_ptr, aabb_ptr, need_ptr, cnt_ptr, list_ptr, list_cap,
    phi_ptr, off, par_ptr,
    G: tl.constexpr, W: tl.constexpr, CS: tl.constexpr, CP2: tl.constexpr, K: tl.constexpr, SIGNED: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    n = tl.load(cnt_ptr + p)
    h = 2.0 / (G - 1)
    cl = tl.arange(0, CP2)
    okc = cl < n_clusters
    kk = tl.arange(0, K)
    fl = tl.arange(0, CS)
    for t in range(pid, n, nprog):
        wl = tl.load(list_ptr + p * list_cap + t).to(tl.int64)
        word = tl.load(need_ptr + p * B * G * G * W + wl)
        pword = tl.load(par_ptr + p * B * G * G * W + wl).to(tl.int64) & 0xFFFFFFFF  # inside bits (signed field)
        w = wl % W
        r = wl // W
        iy = r % G
        r = r // G
        iz = r % G
        b = r // G
        pb = p * B + b
        cx = tl.load(cen_ptr + pb * 3 + 0)
        cy = tl.load(cen_ptr + pb * 3 + 1)
        cz = tl.load(cen_ptr + pb * 3 + 2)
        s = tl.load(half_ptr + pb)
        ab = aabb_ptr + pb * 6 * CP2
        lox = tl.load(ab + 0 * CP2 + cl, mask=okc, other=0.0)
        loy = tl.load(ab + 1 * CP2 + cl, mask=okc, other=0.0)
        loz = tl.load(ab + 2 * CP2 + cl, mask=okc, other=0.0)
        hix = tl.load(ab + 3 * CP2 + cl, mask=okc, other=0.0)
        hiy = tl.load(ab + 4 * CP2 + cl, mask=okc, other=0.0)
        hiz = tl.load(ab + 5 * CP2 + cl, mask=okc, other=0.0)
        qy = -1.0 + (iy.to(tl.float32) + off) * h
        qz = -1.0 + (iz.to(tl.float32) + off) * h
        ey = tl.maximum(tl.maximum(loy - qy, qy - hiy), 0.0)
        ez = tl.maximum(tl.maximum(loz - qz, qz - hiz), 0.0)
        lb_yz = ey * ey + ez * ez
        vb = v_ptr + b * n_verts * 3
        rest = word.to(tl.int64) & 0xFFFFFFFF
        while rest != 0:  # over the set bits (needed grid points of this row word), lowest first
            low = rest & (-rest)
            rest = rest ^ low
            ix = w * 32 + (tl.log2(low.to(tl.float32)) + 0.5).to(tl.int64)
            qx = -1.0 + (ix.to(tl.float32) + off) * h
            ex = tl.maximum(tl.maximum(lox - qx, qx - hix), 0.0)
            lb = tl.where(okc, ex * ex + lb_yz, float("inf"))  # squared AABB lower bounds
            cur = tl.min(lb, axis=0)
            best = cur * 0.0 + float("inf")
            while cur < best:
                # the K clusters of smallest bound, one face per lane ([K, CS] tile)
                sel = tl.zeros([K], dtype=tl.int32)
                sel_lb = tl.full([K], float("inf"), tl.float32)
                for k in tl.static_range(K):
                    c = tl.argmin(lb, axis=0)
                    sel = tl.where(kk == k, c, sel)
                    sel_lb = tl.where(kk == k, tl.min(lb, axis=0), sel_lb)
                    lb = tl.where(cl == c, float("inf"), lb)
                live = (sel_lb < best)[:, None] & (fl[None, :] >= 0)
                fo = sel[:, None] * CS + fl[None, :]
                i0 = tl.load(f_ptr + fo * 3 + 0, mask=live, other=0)
                i1 = tl.load(f_ptr + fo * 3 + 1, mask=live, other=0)
                i2 = tl.load(f_ptr + fo * 3 + 2, mask=live, other=0)
                d2 = _pt_tri_d2(
                    qx, qy, qz,
                    (tl.load(vb + i0 * 3 + 0, mask=live, other=0.0) - cx) / s,
                    (tl.load(vb + i0 * 3 + 1, mask=live, other=0.0) - cy) / s,
                    (tl.load(vb + i0 * 3 + 2, mask=live, other=0.0) - cz) / s,
                    (tl.load(vb + i1 * 3 + 0, mask=live, other=0.0) - cx) / s,
                    (tl.load(vb + i1 * 3 + 1, mask=live, other=0.0) - cy) / s,
                    (tl.load(vb + i1 * 3 + 2, mask=live, other=0.0) - cz) / s,
                    (tl.load(vb + i2 * 3 + 0, mask=live, other=0.0) - cx) / s,
                    (tl.load(vb + i2 * 3 + 1, mask=live, other=0.0) - cy) / s,
                    (tl.load(vb + i2 * 3 + 2, mask=live, other=0.0) - cz) / s,
                )  # fmt: skip
                d2 = tl.where(live, d2, float("inf"))
                best = tl.minimum(best, tl.min(tl.min(d2, axis=1), axis=0))
                cur = tl.min(lb, axis=0)
            dist = tl.sqrt(best)
            if SIGNED:
                dist = tl.where((pword & low) != 0, dist, -dist)
            tl.store(phi_ptr + ((pb * G + iz) * G + iy) * G + ix, dist)


@triton.jit
def _sample_kernel(
    q_ptr, n_q, B, p, cen_ptr, half_ptr, act_ptr, need_ptr, phi_ptr, part_ptr, grad_ptr, par_ptr, margin, taper,
    G: tl.constexpr, W: tl.constexpr, BLOCK_V: tl.constexpr, NEED_GRAD: tl.constexpr, SIGNED: tl.constexpr,
    TAPER: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)  # frames on axis 0 (no 65535 limit)
    blk = tl.program_id(1)
    nblk = tl.num_programs(1)
    pb = (p * B + b).to(tl.int64)
    act = tl.load(act_ptr + pb)
    vo = blk * BLOCK_V + tl.arange(0, BLOCK_V)
    ok = vo < n_q
    gb = grad_ptr + (b.to(tl.int64) * n_q + vo) * 3
    if act != 0:
        fx, fy, fz, inr, s, hg = _grid_coords(q_ptr, n_q, b, pb, vo, ok, cen_ptr, half_ptr, G)
        x0 = tl.where(inr, tl.floor(fx), 0.0)
        y0 = tl.where(inr, tl.floor(fy), 0.0)
        z0 = tl.where(inr, tl.floor(fz), 0.0)
        tx = tl.where(inr, fx - x0, 0.0)
        ty = tl.where(inr, fy - y0, 0.0)
        tz = tl.where(inr, fz - z0, 0.0)
        ix0 = x0.to(tl.int32)
        iy0 = y0.to(tl.int32)
        iz0 = z0.to(tl.int32)
        val = tl.zeros([BLOCK_V], dtype=tl.float32)
        anyin = vo < 0  # signed field: some corner inside (all false)
        gx = tl.zeros([BLOCK_V], dtype=tl.float32)
        gy = tl.zeros([BLOCK_V], dtype=tl.float32)
        gz = tl.zeros([BLOCK_V], dtype=tl.float32)
        vs = tl.zeros([BLOCK_V], dtype=tl.float32)  # TAPER: the signed interpolation
        gsx = tl.zeros([BLOCK_V], dtype=tl.float32)
        gsy = tl.zeros([BLOCK_V], dtype=tl.float32)
        gsz = tl.zeros([BLOCK_V], dtype=tl.float32)
        for c in tl.static_range(8):
            ix = ix0 + (c & 1)
            iy = iy0 + ((c >> 1) & 1)
            iz = iz0 + (c >> 2)
            okc = inr & (ix >= 0) & (ix < G) & (iy >= 0) & (iy < G) & (iz >= 0) & (iz < G)
            ix = tl.where(okc, ix, 0)
            iy = tl.where(okc, iy, 0)
            iz = tl.where(okc, iz, 0)
            wl = ((pb * G + iz) * G + iy) * W + ix // 32
            mw = tl.load(need_ptr + wl, mask=okc, other=0)
            m = okc & ((mw & (1 << (ix % 32))) != 0)
            if SIGNED or TAPER:
                pw = tl.load(par_ptr + wl, mask=okc, other=0)
                anyin = anyin | (okc & ((pw & (1 << (ix % 32))) != 0))
            ph = tl.load(phi_ptr + ((pb * G + iz) * G + iy) * G + ix, mask=m, other=0.0)
            if c & 1:
                wx = tx
                sx = 1.0
            else:
                wx = 1.0 - tx
                sx = -1.0
            if (c >> 1) & 1:
                wy = ty
                sy = 1.0
            else:
                wy = 1.0 - ty
                sy = -1.0
            if c >> 2:
                wz = tz
                sz = 1.0
            else:
                wz = 1.0 - tz
                sz = -1.0
            if TAPER:
                vs += wx * wy * wz * ph
                gsx += sx * wy * wz * ph
                gsy += sy * wx * wz * ph
                gsz += sz * wx * wy * ph
                ph = tl.where(ph > 0.0, ph, 0.0)  # the inside-only value (0 at outside corners)
            val += wx * wy * wz * ph
            gx += sx * wy * wz * ph
            gy += sy * wx * wz * ph
            gz += sz * wx * wy * ph
        if TAPER:  # weight min(1, (signed + r) / r), 0 from r outside on
            r = taper / s
            wt = tl.minimum(tl.maximum((vs + r) / r, 0.0), 1.0)
            ramp = (wt > 0.0) & (wt < 1.0)
            gx = wt * gx + tl.where(ramp, val / r * gsx, 0.0)
            gy = wt * gy + tl.where(ramp, val / r * gsy, 0.0)
            gz = wt * gz + tl.where(ramp, val / r * gsz, 0.0)
            val = wt * val
        if SIGNED:  # relu of the sample (plus the margin where a corner is inside)
            val = tl.where(anyin, val + margin / s, val)
            pos = val > 0.0
            val = tl.where(pos, val, 0.0)
            gx = tl.where(pos, gx, 0.0)
            gy = tl.where(pos, gy, 0.0)
            gz = tl.where(pos, gz, 0.0)
        tl.store(part_ptr + b * nblk + blk, tl.sum(val, axis=0))
        if NEED_GRAD:
            gs = hg / s
            tl.store(gb + 0, gx * gs, mask=ok)
            tl.store(gb + 1, gy * gs, mask=ok)
            tl.store(gb + 2, gz * gs, mask=ok)
    else:
        tl.store(part_ptr + b * nblk + blk, 0.0)
        if NEED_GRAD:
            zero = tl.zeros([BLOCK_V], dtype=tl.float32)
            tl.store(gb + 0, zero, mask=ok)
            tl.store(gb + 1, zero, mask=ok)
            tl.store(gb + 2, zero, mask=ok)


# ----------------------------------------------------------------------------- host
@lru_cache(maxsize=None)
def _n_programs(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.get_device_properties(torch.device(device)).multi_processor_count * PROGRAMS_PER_SM
    return 4  # TRITON_INTERPRET=1 on CPU tensors


def run_triton(ki: KernelInputs, need_grad: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Kernel-backend contract of :func:`h4d_fast.ops.collision.kernel_collision_loss`."""
    verts = ki.verts
    B = verts[0].shape[0]
    dev = verts[0].device
    G = ki.grid_size
    W = -(-G // 32)
    CP2 = max(16, next_pow2(max(f.n_clusters for f in ki.faces)))
    words = B * G * G * W
    ints = torch.zeros(4 * words + 2, dtype=torch.int32, device=dev)  # one memset
    par, need, cnt = ints[: 2 * words], ints[2 * words : 4 * words], ints[4 * words :]
    aabb = torch.empty(2, B, 6, CP2, dtype=torch.float32, device=dev)
    wlist = torch.empty(2, words, dtype=torch.int32, device=dev)
    phi = torch.empty(2, B, G * G * G, dtype=torch.float32, device=dev)
    nprog = _n_programs(str(dev))

    for p in (0, 1):
        fc = ki.faces[p]
        _raster_kernel[(B, triton.cdiv(fc.n_clusters, CPP))](
            verts[p], fc.faces, verts[p].shape[1], fc.n_faces, fc.n_clusters, B, p,
            ki.center, ki.half, ki.active, aabb, par, ki.off,
            G=G, W=W, CS=CLUSTER, CPP=CPP, CP2=CP2, EPS=EPS_ROW, num_warps=4, enable_fp_fusion=False,
        )  # fmt: skip
    for p in (0, 1):
        q = verts[1 - p]
        _mark_kernel[(B, triton.cdiv(q.shape[1], BLOCK_V))](
            q, q.shape[1], B, p, ki.center, ki.half, ki.active, par, need, cnt, wlist, words,
            G=G, W=W, BLOCK_V=BLOCK_V, SIGNED=ki.signed or ki.taper > 0, num_warps=4, enable_fp_fusion=False,
        )  # fmt: skip
    for p in (0, 1):
        fc = ki.faces[p]
        _dist_kernel[(nprog,)](
            verts[p], fc.faces, verts[p].shape[1], fc.n_clusters, B, p, ki.center, ki.half, aabb, need, cnt, wlist,
            words, phi, ki.off, par,
            G=G, W=W, CS=CLUSTER, CP2=CP2, K=DIST_K, SIGNED=ki.signed or ki.taper > 0, num_warps=DIST_WARPS, enable_fp_fusion=True,
        )  # fmt: skip
    sums, grads = [], []
    for p in (0, 1):
        q = verts[1 - p]
        nblk = triton.cdiv(q.shape[1], BLOCK_V)
        part = torch.empty(B, nblk, dtype=torch.float32, device=dev)
        grad = torch.empty(B, q.shape[1], 3, dtype=torch.float32, device=dev) if need_grad else part
        _sample_kernel[(B, nblk)](
            q, q.shape[1], B, p, ki.center, ki.half, ki.active, need, phi, part, grad, par, float(ki.margin), float(ki.taper),
            G=G, W=W, BLOCK_V=BLOCK_V, NEED_GRAD=need_grad, SIGNED=ki.signed, TAPER=ki.taper > 0, num_warps=4, enable_fp_fusion=False,
        )  # fmt: skip
        sums.append(part.sum(1))
        grads.append(grad if need_grad else None)
    return torch.stack(sums), grads[0], grads[1]
