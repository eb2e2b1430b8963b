"""Torch reference of the two-person interpenetration (collision) loss.

This is the oracle the kernels are tested against; it runs on any torch device, batched over
frames (no Python loop over frames; loops only over memory chunks).

The reference pipeline (Harmony4D, collision stage, after Jiang et al. CVPR'20) does, per frame
and per person ``p``:

1. Box: ``c_p`` = centre of the bounding box of ``p``'s (detached) vertices,
   ``s_p = pad * 0.5 * max side`` (``pad = 1.2``). Normalised coordinates ``u = (x - c_p) / s_p``.
2. Grid ``phi_p`` of ``G^3`` values (``G = 32``) over ``[-1, 1]^3``: at each grid point the
   unsigned distance (normalised units) to the nearest triangle of ``p`` if the point is inside
   ``p``'s mesh (odd ray-crossing parity), else 0. Built under ``no_grad``.
3. The *other* person's vertices are normalised into ``p``'s box and sampled trilinearly
   (``grid_sample``, ``align_corners=True``, zero padding). Gradients reach only those vertices.

Field (``field``), not in the reference:
    ``"inside"`` (the reference): the grid holds the depth at inside points and 0 outside. A
    sample between an inside and an outside grid point reads a positive value although it may
    lie outside the mesh (up to a cell away: 3.5 cm at ``G = 64`` for an adult): the
    interpolation *bleeds* the penetration out of the body, and touching bodies are pushed apart.
    ``"signed"``: the grid holds the signed distance (depth inside, minus the distance outside)
    and a sample counts ``relu(sample)``: near the surface the interpolated signed distance
    crosses zero where the surface is (exactly for a plane), so a vertex outside or touching the
    other body costs nothing and a vertex inside costs about its depth. ``margin`` ``m`` (world
    units, converted by the owner's box size) makes it ``relu(sample + m)`` for the samples with
    at least one inside grid corner (the points whose distance is computed; 0 for the others):
    a clearance of about ``m`` between the surfaces.
    ``"exact"``: the same samples (at least one inside grid corner) count ``relu(sd(v) + m)``
    with ``sd`` the exact signed distance of the vertex itself to the owner's surface (here:
    brute-force closest triangle, inside by the generalized winding number), in box units.

Layout: ``phi[b, k, j, i]`` is the value at ``(x_i, y_j, z_k)`` (``grid_sample``'s ``D, H, W``
order: ``i`` indexes x, the last dimension).

Grid-point positions (``cell_centers``):
    ``"aligned"`` (default): ``x_i = -1 + i * h``, ``h = 2 / (G - 1)``, exactly the positions
    ``grid_sample(align_corners=True)`` interpolates between.
    ``"reference"``: ``x_i = -1 + (i + 1/2) * h``, the reference CUDA kernel's centres, half a
    cell off the sampling positions (so the reference reads the field shifted by half a cell).

Inside test (``inside``):
    ``"parity"`` (default, what the kernels implement): parity of the crossings of the ray from
    the grid point towards ``-x`` (rays along grid rows). It is made watertight by symbolic
    perturbation: the 2D edge functions of the ``(y, z)`` projection are evaluated on each
    edge's endpoints in a canonical order (lower vertex index first) and an exact zero is
    broken as if the ray were moved by ``(dy, dz) = (e, e^2)``, ``e -> 0+``. Every edge or
    vertex hit is then counted exactly once, so for a closed mesh (every edge shared by an
    even number of triangles, self-intersections allowed) the parity is the exact mod-2
    intersection number, independent of the ray, i.e. the same as the reference's diagonal
    ray wherever that ray does not graze an edge (where the reference double counts).
    ``"reference"``: the reference kernel's test (ray from the grid point towards
    ``(-1, -1, -1)``, Moller-Trumbore with its 1e-6 determinant cut, inclusive bounds).
    ``"winding"``: generalized winding number ``> 1/2`` (solid angles, Van Oosterom-Strackee).
    Robust for meshes with holes, but it is not parity: on self-intersecting meshes doubly
    covered regions count as inside.

Frames in which either person has a non-finite vertex (or a degenerate, zero-size box) are
*invalid*: their loss is 0 and their gradients are 0 (no NaN is propagated).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

PAD = 1.2
_CHUNK_ELEMS = {"cpu": 1 << 16, "cuda": 1 << 24}  # elements per [.., F] temporary of the brute-force loops


def _chunk(device: torch.device, per_item: int) -> int:
    """Items per chunk so that ``items * per_item`` stays near the device's chunk size."""
    return max(1, _CHUNK_ELEMS.get(device.type, 1 << 16) // max(1, per_item))


def grid_coords(grid_size: int, cell_centers: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[G]`` grid-point coordinates along one axis (normalised units), see module docstring."""
    off = 0.5 if cell_centers == "reference" else 0.0
    h = 2.0 / (grid_size - 1)
    return -1.0 + (torch.arange(grid_size, dtype=dtype, device=device) + off) * h


def box_from_bounds(lo: Tensor, hi: Tensor, pad: float = PAD) -> tuple[Tensor, Tensor, Tensor]:
    """center ``[B, 3]``, half_size ``[B]`` and valid ``[B]`` from the vertex bounds ``[B, 3]``.

    ``half = pad * 0.5 * max side``. Invalid frames (a non-finite bound or a zero-size box) get
    center 0 and half 1.
    """
    center = 0.5 * (lo + hi)
    half = pad * 0.5 * (hi - lo).amax(-1)  # [B]
    valid = torch.isfinite(lo).all(-1) & torch.isfinite(hi).all(-1) & (half > 0) & torch.isfinite(half)
    center = torch.where(valid[:, None], center, torch.zeros_like(center))
    half = torch.where(valid, half, torch.ones_like(half))
    return center, half, valid


def box_normalization(verts: Tensor, pad: float = PAD) -> tuple[Tensor, Tensor, Tensor]:
    """Per-frame box of the (detached) vertices ``[B, N, 3]`` (see :func:`box_from_bounds`).

    NaN/inf vertices propagate into the bounds (``amin``/``amax`` propagate NaN), which flags
    the frame invalid.
    """
    v = verts.detach()
    return box_from_bounds(v.amin(1), v.amax(1), pad)


# ---------------------------------------------------------------------------------------------
# geometry helpers (broadcasting, any float dtype)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1)


def point_triangle_dist2(p: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Squared distance from points to triangles (closest point by Voronoi region, Ericson 5.1.5).

    Args:
        p, a, b, c: ``[..., 3]`` (broadcast). Degenerate triangles never give NaN (a
            degenerate triangle can only be over-estimated, which a closed mesh's neighbours
            cover).
    Returns:
        ``[...]`` squared distances.
    """
    P, A, Bv, C = p.unbind(-1), a.unbind(-1), b.unbind(-1), c.unbind(-1)  # xyz components

    def sub(u, v):
        return tuple(ui - vi for ui, vi in zip(u, v))

    def dot(u, v):
        return u[0] * v[0] + u[1] * v[1] + u[2] * v[2]

    def sdiv(n: Tensor, d: Tensor) -> Tensor:
        return torch.where(d != 0, n / torch.where(d != 0, d, torch.ones_like(d)), torch.zeros_like(n))

    ab, ac, ap, bp, cp = sub(Bv, A), sub(C, A), sub(P, A), sub(P, Bv), sub(P, C)
    d1, d2, d3, d4, d5, d6 = dot(ab, ap), dot(ac, ap), dot(ab, bp), dot(ac, bp), dot(ab, cp), dot(ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    den = va + vb + vc
    # closest point q = a + s * ab + t * ac; regions in reverse priority so that the first test
    # of Ericson's cascade wins
    s, t = sdiv(vb, den), sdiv(vc, den)  # interior
    w = sdiv(d4 - d3, (d4 - d3) + (d5 - d6))  # edge bc: q = b + w (c - b) = a + (1 - w) ab + w ac
    m = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
    s, t = torch.where(m, 1 - w, s), torch.where(m, w, t)
    m = (vb <= 0) & (d2 >= 0) & (d6 <= 0)  # edge ac
    s, t = torch.where(m, 0, s), torch.where(m, sdiv(d2, d2 - d6), t)
    m = (d6 >= 0) & (d5 <= d6)  # vertex c
    s, t = torch.where(m, 0, s), torch.where(m, 1, t)
    m = (vc <= 0) & (d1 >= 0) & (d3 <= 0)  # edge ab
    s, t = torch.where(m, sdiv(d1, d1 - d3), s), torch.where(m, 0, t)
    m = (d3 >= 0) & (d4 <= d3)  # vertex b
    s, t = torch.where(m, 1, s), torch.where(m, 0, t)
    m = (d1 <= 0) & (d2 <= 0)  # vertex a
    s, t = torch.where(m, 0, s), torch.where(m, 0, t)
    out = 0
    for k in range(3):
        out = out + (ap[k] - s * ab[k] - t * ac[k]) ** 2
    return out


def _edge(ia: Tensor, ib: Tensor, pa: Tensor, pb: Tensor, cy: Tensor, cz: Tensor) -> tuple[Tensor, Tensor]:
    """Edge function of the (y, z) projection, watertight by canonical order + perturbation.

    ``e = cross(q - p, c - p)`` evaluated with ``p`` the endpoint of lower vertex index, then
    negated back, so a shared edge gives bitwise opposite values in its two triangles. An exact
    zero takes the sign of the perturbed ray ``c + (e, e^2)``.

    Args:
        ia, ib: ``[F]`` vertex indices of the edge (a -> b).
        pa, pb: ``[..., F, 2]`` (y, z) of its endpoints.
        cy, cz: ray coordinates broadcastable to ``[..., F]``.
    Returns:
        e, sign (``+-1``, 0 only for a zero-length edge), both ``[..., F]``.
    """
    swap = ia > ib
    p = torch.where(swap[:, None], pb, pa)
    q = torch.where(swap[:, None], pa, pb)
    dy, dz = q[..., 0] - p[..., 0], q[..., 1] - p[..., 1]
    e = dy * (cz - p[..., 1]) - dz * (cy - p[..., 0])
    tie = torch.where(dz != 0, -torch.sign(dz), torch.sign(dy))
    s = torch.where(e != 0, torch.sign(e), tie)
    return torch.where(swap, -e, e), torch.where(swap, -s, s)


def ray_crossings_x(
    tri: Tensor, faces: Tensor, ys: Tensor, zs: Tensor, grid_size: int, off: float
) -> tuple[Tensor, Tensor]:
    """Crossings of the rows ``(y, z)`` with the triangles and the first grid index behind each.

    Args:
        tri: ``[B, F, 3, 3]`` normalised triangles; faces ``[F, 3]`` their vertex indices.
        ys, zs: ``[R]`` row coordinates.
    Returns:
        hit ``[B, R, F]`` bool and i0 ``[B, R, F]`` long: the row's grid points ``i >= i0`` lie
        beyond the crossing in ``+x`` (their ``-x`` ray crosses this triangle).
    """
    h = 2.0 / (grid_size - 1)
    P = tri[:, None, :, :, 1:]  # [B, 1, F, 3, 2] (y, z)
    cy, cz = ys[None, :, None], zs[None, :, None]
    i0, i1, i2 = faces[:, 0], faces[:, 1], faces[:, 2]
    e0, s0 = _edge(i1, i2, P[..., 1, :], P[..., 2, :], cy, cz)  # opposite vertex 0
    e1, s1 = _edge(i2, i0, P[..., 2, :], P[..., 0, :], cy, cz)
    e2, s2 = _edge(i0, i1, P[..., 0, :], P[..., 1, :], cy, cz)
    hit = (s0 == s1) & (s1 == s2) & (s0 != 0)
    den = e0 + e1 + e2
    x = tri[:, None, :, :, 0]  # [B, 1, F, 3]
    xc = torch.where(den != 0, (e0 * x[..., 0] + e1 * x[..., 1] + e2 * x[..., 2]) / torch.where(den != 0, den, torch.ones_like(den)), x[..., 0])
    first = torch.floor((xc + 1.0) / h - off) + 1.0
    first = torch.clamp(torch.nan_to_num(first, nan=float(grid_size)), 0, grid_size).long()
    return hit, first


def inside_parity(tri: Tensor, faces: Tensor, grid_size: int, off: float) -> Tensor:
    """``[B, G, G, G]`` bool inside mask by watertight ``-x`` ray parity (module docstring)."""
    B, F = tri.shape[:2]
    G = grid_size
    coords = grid_coords(G, "reference" if off else "aligned", tri.dtype, tri.device)
    zz, yy = torch.meshgrid(coords, coords, indexing="ij")  # row r = k * G + j
    ys, zs = yy.reshape(-1), zz.reshape(-1)
    toggles = torch.zeros(B, G * G, G + 1, dtype=torch.int32, device=tri.device)
    step = _chunk(tri.device, B * F)
    for r0 in range(0, G * G, step):
        hit, first = ray_crossings_x(tri, faces, ys[r0 : r0 + step], zs[r0 : r0 + step], G, off)
        toggles[:, r0 : r0 + step].scatter_add_(2, first, hit.to(torch.int32))
    parity = torch.cumsum(toggles[..., :G], dim=-1) % 2
    return parity.view(B, G, G, G).bool()


def _grid_points(G: int, cell_centers: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[G^3, 3]`` grid points, flat index ``k * G^2 + j * G + i``."""
    c = grid_coords(G, cell_centers, dtype, device)
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    return torch.stack([x, y, z], -1).reshape(-1, 3)


def inside_reference_rays(tri: Tensor, grid_size: int, cell_centers: str) -> Tensor:
    """The reference kernel's inside test: ray towards ``(-1,-1,-1)``, Moller-Trumbore."""
    B, F = tri.shape[:2]
    pts = _grid_points(grid_size, cell_centers, tri.dtype, tri.device)
    out = torch.zeros(B, pts.shape[0], dtype=torch.bool, device=tri.device)
    v0, v1, v2 = tri[:, None, :, 0], tri[:, None, :, 1], tri[:, None, :, 2]  # [B, 1, F, 3]
    e1, e2 = v1 - v0, v2 - v0
    step = _chunk(tri.device, B * F)
    for p0 in range(0, pts.shape[0], step):
        o = pts[None, p0 : p0 + step, None, :]  # [1, P, 1, 3]
        d = -1.0 - o  # direction towards the corner (-1, -1, -1)
        pvec = torch.cross(d.expand(B, -1, F, 3), e2.expand(B, o.shape[1], F, 3), dim=-1)
        det = _dot(e1, pvec)
        ok = (det <= -1e-6) | (det >= 1e-6)
        inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
        tvec = o - v0
        u = _dot(tvec, pvec) * inv
        qvec = torch.cross(tvec, e1.expand_as(tvec), dim=-1)
        v = _dot(d, qvec) * inv
        t = _dot(e2, qvec) * inv
        hit = ok & (u >= 0) & (u <= 1) & (v >= 0) & (u + v <= 1) & (t >= 0)
        out[:, p0 : p0 + step] = hit.sum(-1) % 2 == 1
    G = grid_size
    return out.view(B, G, G, G)


def winding_inside(pts: Tensor, tri: Tensor) -> Tensor:
    """``[B, P]`` generalized winding number > 1/2 (sum of signed solid angles / 4 pi, Van
    Oosterom-Strackee) of points ``pts [B or 1, P, 3]`` w.r.t. triangles ``tri [B, F, 3, 3]``."""
    B, F = tri.shape[:2]
    out = torch.zeros(B, pts.shape[1], dtype=torch.bool, device=tri.device)
    step = _chunk(tri.device, B * F)
    for p0 in range(0, pts.shape[1], step):
        o = pts[:, p0 : p0 + step, None, :]
        a, b, c = (tri[:, None, :, k] - o for k in range(3))  # [B, P, F, 3]
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        num = _dot(a, torch.cross(b, c, dim=-1))
        den = la * lb * lc + _dot(a, b) * lc + _dot(b, c) * la + _dot(c, a) * lb
        wn = torch.atan2(num, den).sum(-1) / (2 * math.pi)
        out[:, p0 : p0 + step] = wn.abs() > 0.5
    return out


def inside_winding(tri: Tensor, grid_size: int, cell_centers: str) -> Tensor:
    """Generalized winding number > 1/2 at the grid points, ``[B, G, G, G]``."""
    pts = _grid_points(grid_size, cell_centers, tri.dtype, tri.device)
    G = grid_size
    return winding_inside(pts[None], tri).view(tri.shape[0], G, G, G)


def nearest_triangle_distance(pts: Tensor, frame: Tensor, tri: Tensor) -> Tensor:
    """``[M]`` unsigned distance from ``pts [M, 3]`` to the mesh ``tri[frame]`` (brute force)."""
    M, F = pts.shape[0], tri.shape[1]
    out = pts.new_empty(M)
    step = _chunk(pts.device, F)
    for m0 in range(0, M, step):
        t = tri[frame[m0 : m0 + step]]  # [m, F, 3, 3]
        p = pts[m0 : m0 + step, None, :]
        d2 = point_triangle_dist2(p, t[..., 0, :], t[..., 1, :], t[..., 2, :])
        out[m0 : m0 + step] = d2.amin(-1).sqrt()
    return out


# ---------------------------------------------------------------------------------------------
# public reference functions


def sdf_grid_torch(
    verts: Tensor,
    faces: Tensor,
    grid_size: int = 32,
    pad: float = PAD,
    cell_centers: str = "aligned",
    inside: str = "parity",
    field: str = "inside",
) -> tuple[Tensor, Tensor, Tensor]:
    """Distance grid of each frame's mesh (brute force, no_grad): inside-only unsigned
    (``field="inside"``, the reference's) or signed (``"signed"``, module docstring).

    Args:
        verts: ``[B, N, 3]`` vertices (detached internally).
        faces: ``[F, 3]`` int triangle indices (a closed mesh for ``inside="parity"``).
        grid_size: ``G``.
        pad: box enlargement (``s = pad * 0.5 * max side``).
        cell_centers: ``"aligned"`` or ``"reference"`` (module docstring).
        inside: ``"parity"``, ``"reference"`` or ``"winding"`` (module docstring).
        field: ``"inside"`` or ``"signed"`` (module docstring).
    Returns:
        phi ``[B, G, G, G]`` (``[b, z, y, x]``, normalised units; 0 outside (``"inside"``) or
        minus the distance there (``"signed"``); 0 in invalid frames), center ``[B, 3]``,
        half_size ``[B]``.
    """
    G = int(grid_size)
    off = 0.5 if cell_centers == "reference" else 0.0
    with torch.no_grad():
        center, half, valid = box_normalization(verts, pad)
        v = torch.where(valid[:, None, None], verts.detach(), torch.zeros((), dtype=verts.dtype, device=verts.device))
        vn = (v - center[:, None, :]) / half[:, None, None]
        faces = faces.long()
        tri = vn[:, faces]  # [B, F, 3, 3]
        if inside == "parity":
            ins = inside_parity(tri, faces, G, off)
        elif inside == "reference":
            ins = inside_reference_rays(tri, G, cell_centers)
        elif inside == "winding":
            ins = inside_winding(tri, G, cell_centers)
        else:
            raise ValueError(f"sdf_grid: inside must be 'parity', 'reference' or 'winding', got {inside!r}")
        ins &= valid[:, None, None, None]
        phi = torch.zeros(verts.shape[0], G * G * G, dtype=verts.dtype, device=verts.device)
        # the points whose distance is needed: inside ones, or (signed) every point of a valid frame
        need = ins if field == "inside" else valid[:, None, None, None].expand_as(ins)
        idx = need.reshape(verts.shape[0], -1).nonzero()  # [M, 2] (frame, flat voxel)
        if idx.numel():
            pts = _grid_points(G, cell_centers, verts.dtype, verts.device)[idx[:, 1]]
            d = nearest_triangle_distance(pts, idx[:, 0], tri)
            if field == "signed":
                d = torch.where(ins.reshape(verts.shape[0], -1)[idx[:, 0], idx[:, 1]], d, -d)
            phi[idx[:, 0], idx[:, 1]] = d
    return phi.view(-1, G, G, G), center, half


def sample_phi(phi: Tensor, center: Tensor, half: Tensor, pts: Tensor) -> Tensor:
    """Trilinear samples of ``phi`` at world points (``grid_sample``, align_corners, zeros).

    This is the differentiable part of the loss (gradients flow to ``pts`` only).

    Args:
        phi: ``[B, G, G, G]``; center ``[B, 3]``; half ``[B]``; pts ``[B, N, 3]``.
    Returns:
        ``[B, N]``.
    """
    B, N = pts.shape[:2]
    u = (pts - center[:, None, :].to(pts.dtype)) / half[:, None, None].to(pts.dtype)
    out = F.grid_sample(
        phi[:, None].to(pts.dtype), u.view(B, N, 1, 1, 3), mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return out.view(B, N)


def any_corner_inside(phi: Tensor, center: Tensor, half: Tensor, pts: Tensor) -> Tensor:
    """``[B, N]``: some of the 8 grid corners of each point's cell (in range) has ``phi > 0``
    (the kernels' test: corners ``floor(f)`` and ``floor(f) + 1`` of the grid position ``f``).

    Args:
        phi: ``[B, G, G, G]``; center ``[B, 3]``; half ``[B]``; pts ``[B, N, 3]``.
    """
    B, G = phi.shape[0], phi.shape[-1]
    with torch.no_grad():
        u = (pts.detach() - center[:, None, :].to(pts.dtype)) / half[:, None, None].to(pts.dtype)
        f0 = torch.floor((u + 1.0) * (0.5 * (G - 1)))
        f0 = torch.nan_to_num(f0, nan=-2.0).clamp(-2, G + 1).long()  # [B, N, 3] (x, y, z)
        ins = (phi > 0).reshape(B, -1)
        out = torch.zeros(pts.shape[:2], dtype=torch.bool, device=pts.device)
        for c in range(8):
            ix, iy, iz = f0[..., 0] + (c & 1), f0[..., 1] + ((c >> 1) & 1), f0[..., 2] + (c >> 2)
            ok = (ix >= 0) & (ix < G) & (iy >= 0) & (iy < G) & (iz >= 0) & (iz < G)
            flat = ((iz * G + iy) * G + ix).clamp(0, G**3 - 1)
            out |= ok & ins.gather(1, flat)
    return out


def exact_terms(pts: Tensor, verts: Tensor, faces: Tensor, half: Tensor, mask: Tensor, margin: float) -> Tensor:
    """``relu(sd(p) + margin) / half`` of the points ``pts [B, N, 3]`` where ``mask [B, N]``, else 0;
    ``sd`` the exact signed distance to the mesh ``verts [B, M, 3]`` (brute force; > 0 inside by the
    winding number). Differentiable w.r.t. ``pts``."""
    out = pts.new_zeros(pts.shape[:2])
    f = faces.long()
    for b in mask.any(1).nonzero()[:, 0].tolist():
        idx = mask[b].nonzero()[:, 0]
        p = pts[b, idx]
        tri = verts[b].detach()[f]  # [T, 3, 3]
        d2 = torch.cat([point_triangle_dist2(p[i : i + 256, None], tri[None, :, 0], tri[None, :, 1], tri[None, :, 2]).amin(-1)
                        for i in range(0, p.shape[0], 256)])  # fmt: skip
        d = d2.sqrt()
        inside = winding_inside(p.detach()[None], tri[None])[0]
        sd = torch.where(inside, d, -d)
        out = out.index_put((torch.full_like(idx, b), idx), ((sd + margin) / half[b]).clamp_min(0))
    return out


def collision_terms_torch(
    verts_a: Tensor,
    verts_b: Tensor,
    faces_a: Tensor,
    faces_b: Tensor,
    grid_size: int = 32,
    pad: float = PAD,
    cell_centers: str = "aligned",
    inside: str = "parity",
    field: str = "inside",
    margin: float = 0.0,
    taper: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """The two directed terms of each frame, unnormalised.

    Returns:
        ``phi_a`` sampled at ``verts_b`` ``[B, Nb]``, ``phi_b`` sampled at ``verts_a``
        ``[B, Na]`` (``relu`` of the samples (plus ``margin``) for ``field="signed"``; both 0 in invalid frames,
        differentiable w.r.t. the sampled vertices) and valid ``[B]``.
    """
    # the exact field reads the grid for its mask only; the taper needs the signed grid (its positive part is the inside grid)
    grid_field = "signed" if taper else "inside" if field == "exact" else field
    phi_a, ca, sa = sdf_grid_torch(verts_a, faces_a, grid_size, pad, cell_centers, inside, grid_field)
    phi_b, cb, sb = sdf_grid_torch(verts_b, faces_b, grid_size, pad, cell_centers, inside, grid_field)
    valid = box_normalization(verts_a, pad)[2] & box_normalization(verts_b, pad)[2]
    zero = torch.zeros((), dtype=verts_a.dtype, device=verts_a.device)
    va = torch.where(valid[:, None, None], verts_a, zero)  # invalid frames: 0 value, 0 grad
    vb = torch.where(valid[:, None, None], verts_b, zero)
    phi_a = phi_a * valid[:, None, None, None]
    phi_b = phi_b * valid[:, None, None, None]
    if field == "exact":
        ta = exact_terms(vb, torch.where(valid[:, None, None], verts_a, zero), faces_a, sa, any_corner_inside(phi_a, ca, sa, vb) & valid[:, None], margin)
        tb = exact_terms(va, torch.where(valid[:, None, None], verts_b, zero), faces_b, sb, any_corner_inside(phi_b, cb, sb, va) & valid[:, None], margin)
        return ta, tb, valid
    ta, tb = sample_phi(phi_a, ca, sa, vb), sample_phi(phi_b, cb, sb, va)
    if taper:  # the inside grid's samples weighted by clamp((signed sample + r) / r, 0, 1)
        sd_a, sd_b = ta, tb
        ta, tb = sample_phi(phi_a.clamp_min(0), ca, sa, vb), sample_phi(phi_b.clamp_min(0), cb, sb, va)
        ta = ta * ((sd_a + taper / sa[:, None]) / (taper / sa[:, None])).clamp(0, 1)
        tb = tb * ((sd_b + taper / sb[:, None]) / (taper / sb[:, None])).clamp(0, 1)
    if field == "signed":
        if margin:
            ta = torch.where(any_corner_inside(phi_a, ca, sa, vb), ta + margin / sa[:, None], torch.zeros_like(ta))
            tb = torch.where(any_corner_inside(phi_b, cb, sb, va), tb + margin / sb[:, None], torch.zeros_like(tb))
        ta, tb = ta.clamp_min(0), tb.clamp_min(0)
    return ta, tb, valid


def collision_loss_torch(
    verts_a: Tensor,
    verts_b: Tensor,
    faces_a: Tensor,
    faces_b: Tensor,
    grid_size: int = 32,
    pad: float = PAD,
    cell_centers: str = "aligned",
    normalize: str = "mean",
    inside: str = "parity",
    field: str = "inside",
    margin: float = 0.0,
    taper: float = 0.0,
) -> Tensor:
    """Per-frame collision loss ``[B]`` (definition: :func:`h4d_fast.ops.collision.collision_loss`)."""
    ta, tb, _ = collision_terms_torch(verts_a, verts_b, faces_a, faces_b, grid_size, pad, cell_centers, inside, field, margin, taper)
    if normalize == "mean":
        return ta.mean(1) + tb.mean(1)
    return ta.sum(1) + tb.sum(1)
