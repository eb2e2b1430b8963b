"""Vertex-level contact between people, and the per-vertex surface query it rests on: the contact
labels the export writes and the evaluation scores (:func:`h4d_fast.eval.metrics.contact_scores`).

Definition (issue 15): in a frame, a vertex of person ``a`` *touches* person ``b`` when it lies
within ``contact_mm`` of ``b``'s surface or inside ``b``'s body. Per frame and pair of people the
result is ``contact [2, V]``: row 0 = ``a``'s vertices touching ``b``, row 1 = ``b``'s touching
``a``. The default ``contact_mm`` (10 mm) is ``ExportConfig.contact_mm`` in the config.

The surface query (:func:`surface_query`) runs on the points that can matter:

1. frames whose two boxes are farther apart than the band (``contact_mm``) are skipped;
2. points outside the other mesh's box grown by the band are outside and out of reach;
3. CPU (numba): the grid kernel of :mod:`h4d_fast.ops._contact_numba`, every frame in one
   parallel call: exact distance to the surface within the band (triangles listed per grid cell),
   exact inside test (winding number of a ray, the collision kernels' watertight edge functions),
   exact depth of the inside points. Without numba: :mod:`h4d_fast.ops.penetration`'s torch search
   (closest triangle among those around the ``k`` nearest vertices, inside by the angle-weighted
   pseudo-normal of its closest feature) on the box candidates, frame by frame.
   GPU (frames batched): that torch search, on the points selected by a distance bound from a
   coarse vertex subset (one vertex per 3 cm voxel; ``c`` = how far every vertex is from its
   subset vertex, ``r`` = the longest triangle edge / sqrt(3)): the search runs on
   the points within ``band + r + c`` of a subset vertex, and on the farther ones whose nearest
   subset vertex's normal faces away from them; the rest count as outside. So on the GPU a point
   deeper than ~``band + r + c`` (about 8 cm for the default body) inside the other body is found
   only when that normal test says so (it does inside locally convex parts, i.e. limbs and torso).

The export (:func:`export_contact`) runs the grid kernel whenever numba is installed, for meshes on
any device (:func:`contact_on_host`): its labels are exact, and on the host's cores it is the faster
of the two.

Outputs per queried point: ``dist`` (distance to the closest surface point, metres; ``inf`` where
it is farther than the band and outside), ``inside`` and ``vertex_dist`` (distance to
the nearest *vertex* of the other mesh where inside, 0 elsewhere: the penetration depth as the
Harmony4D benchmark measures it, ``benchmark/script/collision.py``). Nothing is differentiable.

    res = pair_contact(verts_a, verts_b, faces)             # verts [F, N, 3], metres
    res.contact                                             # [F, 2, N] bool
    labels, pairs = vertex_contact(verts [F, P, N, 3], faces)   # [F, Q, 2, N], Q = P(P-1)/2
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from . import penetration as _pen
from .mesh_geometry import _topology

DEFAULT_CONTACT_MM = 10.0
_GPU_POINTS = 1 << 28  # point x vertex distances per batch of the GPU query (1 GiB of float32)


@dataclass
class SurfaceQuery:
    """Points of one mesh against the other mesh (see the module docstring), each ``[F, M]``."""

    dist: Tensor
    inside: Tensor
    vertex_dist: Tensor


@dataclass
class PairContact:
    """Both directions of one pair of people over ``F`` frames.

    Attributes:
        contact: ``[F, 2, N]`` bool (row 0 = a's vertices touching b, row 1 = b's touching a;
            needs equal vertex counts, else see ``contact_a`` / ``contact_b``).
        a_in_b, b_in_a: the :class:`SurfaceQuery` of each direction.
        contact_m: the threshold used (metres).
    """

    a_in_b: SurfaceQuery
    b_in_a: SurfaceQuery
    contact_m: float

    @property
    def contact_a(self) -> Tensor:
        q = self.a_in_b
        return q.inside | (q.dist <= self.contact_m)

    @property
    def contact_b(self) -> Tensor:
        q = self.b_in_a
        return q.inside | (q.dist <= self.contact_m)

    @property
    def contact(self) -> Tensor:
        a, b = self.contact_a, self.contact_b
        if a.shape != b.shape:
            raise ValueError(f"people have {a.shape[-1]} and {b.shape[-1]} vertices: use contact_a / contact_b")
        return torch.stack([a, b], 1)

    def max_vertex_depth(self) -> Tensor:
        """``[F]`` the benchmark's per-frame maximum penetration: the largest nearest-vertex
        distance of a vertex inside the other body, over both directions (metres, 0 if none)."""
        return torch.maximum(self.a_in_b.vertex_dist.amax(-1), self.b_in_a.vertex_dist.amax(-1))


def _boxes(v: Tensor) -> tuple[Tensor, Tensor]:
    return v.amin(-2), v.amax(-2)


def _max_tri_radius(verts: Tensor, faces: Tensor) -> Tensor:
    """``[F]`` the longest triangle edge / sqrt(3): every point of a triangle is within this of one
    of its vertices (circumradius of an acute triangle, half the longest edge otherwise)."""
    f = faces.long()
    p = verts[:, f]  # [F, T, 3, 3]
    e = torch.stack([(p[:, :, 1] - p[:, :, 0]).norm(dim=-1), (p[:, :, 2] - p[:, :, 1]).norm(dim=-1),
                     (p[:, :, 0] - p[:, :, 2]).norm(dim=-1)], -1)
    return e.amax((-1, -2)) / math.sqrt(3.0)


def surface_query(points: Tensor, verts: Tensor, faces: Tensor, band: float, k: int = 8) -> SurfaceQuery:
    """Distance to and inside flag w.r.t. a closed mesh, for the points that can be within ``band``
    of it or inside it (module docstring).

    Args:
        points: ``[F, M, 3]``; verts ``[F, N, 3]`` (closed, outward-oriented); faces ``[T, 3]``.
        band: metres; points farther than this from the surface and outside may get ``dist = inf``.
        k: nearest vertices whose triangles are searched.
    Returns:
        :class:`SurfaceQuery` of ``[F, M]`` tensors on ``points``' device.
    """
    if points.dim() != 3 or verts.dim() != 3 or points.shape[0] != verts.shape[0]:
        raise ValueError(f"surface_query: expected points [F, M, 3] and verts [F, N, 3], got {tuple(points.shape)}, {tuple(verts.shape)}")
    F, M = points.shape[:2]
    dev = points.device
    if dev.type == "cpu" and contact_on_host() and F and M:
        with torch.no_grad():
            return _query_numba(_f64(points), _f64(verts), faces, band, points.dtype)
    dist = torch.full((F, M), float("inf"), dtype=points.dtype, device=dev)
    inside = torch.zeros((F, M), dtype=torch.bool, device=dev)
    vdist = torch.zeros((F, M), dtype=points.dtype, device=dev)
    out = SurfaceQuery(dist, inside, vdist)
    if F == 0 or M == 0:
        return out
    with torch.no_grad():
        points, verts = points.detach(), verts.detach()
        lo, hi = _boxes(verts)
        cand = ((points >= lo[:, None] - band) & (points <= hi[:, None] + band)).all(-1)  # [F, M]
        topo = _topology(faces, verts.shape[1])
        if dev.type != "cpu":
            _query_gpu(points, verts, topo, _gpu_needed(points, verts, faces, cand, band), k, out)
        else:
            _query_torch(points, verts, topo, cand, k, out)
    return out


def _f64(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float64)


def _query_numba(points: np.ndarray, verts: np.ndarray, faces: Tensor, band: float, dtype: torch.dtype) -> SurfaceQuery:
    """Every frame in one parallel call of the grid kernel (:mod:`h4d_fast.ops._contact_numba`),
    on float64 arrays; the result in ``dtype``."""
    from ._contact_numba import query_frames

    d, ins, vd = query_frames(points, verts, faces.detach().long().cpu().numpy(), band)
    return SurfaceQuery(torch.from_numpy(d).to(dtype), torch.from_numpy(ins), torch.from_numpy(vd).to(dtype))


def _query_torch(points: Tensor, verts: Tensor, topo, cand: Tensor, k: int, out: SurfaceQuery) -> None:
    """Without numba: the mesh module's torch search, frame by frame, on the box candidates."""
    for fi in cand.any(-1).nonzero()[:, 0].tolist():
        idx = cand[fi].nonzero()[:, 0]
        p = points[fi, idx]
        d, ins = _pen._depth_fast(p, verts[fi], topo, k)
        out.dist[fi, idx] = d
        out.inside[fi, idx] = ins
        if bool(ins.any()):
            vd = torch.cdist(p[ins], verts[fi]).amin(-1)
            out.vertex_dist[fi, idx[ins]] = vd


def _voxel_subset(v: Tensor, cell: float) -> Tensor:
    """Indices of one vertex per ``cell``-sized voxel of ``v [N, 3]`` (the first of each)."""
    key = torch.floor((v - v.amin(0)) / cell).long()
    dims = key.amax(0) + 1
    flat = (key[:, 0] * dims[1] + key[:, 1]) * dims[2] + key[:, 2]
    uniq, inv = torch.unique(flat, return_inverse=True)
    first = torch.full((uniq.numel(),), v.shape[0], dtype=torch.long, device=v.device)
    first.scatter_reduce_(0, inv, torch.arange(v.shape[0], device=v.device), reduce="amin")
    return first


def _vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """``[G, N, 3]`` area-weighted vertex normals (unnormalised) of ``verts [G, N, 3]``."""
    f = faces.long()
    p = verts[:, f]  # [G, T, 3, 3]
    n = torch.linalg.cross(p[:, :, 1] - p[:, :, 0], p[:, :, 2] - p[:, :, 0], dim=-1)
    out = torch.zeros_like(verts)
    for c in range(3):
        out.index_add_(1, f[:, c], n)
    return out


_SUBSET_CELL = 0.03  # metres: voxel of the GPU path's coarse vertex subset


def _gpu_needed(points: Tensor, verts: Tensor, faces: Tensor, cand: Tensor, band: float) -> Tensor:
    """``[F, M]`` the box candidates the GPU path queries exactly: those that may lie within
    ``band`` of the surface (a lower bound of the distance to the nearest vertex from a coarse
    subset of vertices), and the farther ones whose nearest subset vertex's normal faces away
    from them (candidates for deep penetration)."""
    F, M = cand.shape
    sub = _voxel_subset(verts[0], _SUBSET_CELL)  # [S]
    nS = sub.numel()
    assign = torch.cdist(verts[0], verts[0, sub]).argmin(-1)  # each vertex's subset vertex in frame 0
    need = torch.zeros_like(cand)
    g = max(1, _GPU_POINTS // max(1, M * nS))
    for i in range(0, F, g):
        vv = verts[i : i + g]
        vs = vv[:, sub]  # [G, S, 3]
        cover = (vv - vs[:, assign]).norm(dim=-1).amax(-1)  # [G] every vertex lies within this of a subset vertex
        reach = band + _max_tri_radius(vv, faces) + cover  # [G]
        d, j = torch.cdist(points[i : i + g], vs).min(-1)  # [G, M]
        near = d <= reach[:, None]
        nrm = _vertex_normals(vv, faces)[:, sub]  # [G, S, 3]
        idx = j[..., None].expand(-1, -1, 3)
        facing = ((points[i : i + g] - vs.gather(1, idx)) * nrm.gather(1, idx)).sum(-1) < 0
        need[i : i + g] = cand[i : i + g] & (near | facing)
    return need


def _query_gpu(points: Tensor, verts: Tensor, topo, cand: Tensor, k: int, out: SurfaceQuery) -> None:
    """Frames batched: the needed points of each frame (see :func:`_gpu_needed`) packed to the
    front (as the mesh module's GPU path), the mesh module's batched closest-feature search, then
    the nearest-vertex distance of the inside points."""
    F, M = cand.shape
    N = verts.shape[1]
    counts = cand.sum(-1)
    frames = (counts > 0).nonzero()[:, 0]
    if frames.numel() == 0:
        return
    mc = int(counts.max())
    order = torch.argsort((~cand[frames]).to(torch.int8), dim=-1, stable=True)[:, :mc]  # [Fc, mc]
    used = torch.arange(mc, device=points.device)[None] < counts[frames][:, None]
    order = torch.where(used, order, order[:, :1])
    g = max(1, _GPU_POINTS // max(1, mc * N))
    for i in range(0, frames.numel(), g):
        fi, oi, ui = frames[i : i + g], order[i : i + g], used[i : i + g]
        pts = points[fi].gather(1, oi[..., None].expand(-1, -1, 3))
        vv = verts[fi]
        d, ins = _pen._depth_fast_frames(pts, vv, topo, k)
        ins = ins & ui
        vd = torch.where(ins, torch.cdist(pts, vv).amin(-1), torch.zeros_like(d)) if bool(ins.any()) else torch.zeros_like(d)
        cols = torch.where(ui, oi, torch.full_like(oi, M))  # column M takes the padding
        for dst, val in ((out.dist, torch.where(ui, d, torch.full_like(d, float("inf")))), (out.inside, ins), (out.vertex_dist, vd)):
            rows = torch.zeros((fi.numel(), M + 1), dtype=dst.dtype, device=dst.device)
            if dst.dtype != torch.bool:
                rows.fill_(float("inf") if dst is out.dist else 0.0)
            rows.scatter_(1, cols, val.to(dst.dtype))
            dst[fi] = rows[:, :M]


def pair_contact(
    verts_a: Tensor,
    verts_b: Tensor,
    faces_a: Tensor,
    faces_b: Tensor | None = None,
    contact_mm: float = DEFAULT_CONTACT_MM,
    k: int = 8,
) -> PairContact:
    """Contact and penetration of two people over frames.

    Args:
        verts_a: ``[F, Na, 3]``; verts_b ``[F, Nb, 3]`` (metres, closed meshes).
        faces_a: ``[Ta, 3]``; faces_b ``[Tb, 3]`` (default ``faces_a``).
        contact_mm: a vertex touches within this distance of the other surface (or inside it).
    Returns:
        :class:`PairContact`.
    """
    if contact_mm < 0 or not math.isfinite(contact_mm):
        raise ValueError(f"contact_mm must be a finite distance >= 0, got {contact_mm}")
    if faces_b is None:
        faces_b = faces_a
    band = contact_mm / 1000.0
    va, vb = verts_a.detach(), verts_b.detach()
    # frames whose boxes are farther apart than the band cannot touch: skip them whole
    la, ha = _boxes(va)
    lb, hb = _boxes(vb)
    near = ((la <= hb + band) & (lb <= ha + band)).all(-1)  # [F]
    F = va.shape[0]
    every = bool(near.all()) or F == 0
    idx = near.nonzero()[:, 0]
    if va.device.type == "cpu" and contact_on_host() and F:
        # the grid kernel on float64 copies made once for both directions
        a64, b64 = (_f64(v) if every else _f64(v[idx]) for v in (va, vb))
        qa, qb = _query_numba(a64, b64, faces_b, band, va.dtype), _query_numba(b64, a64, faces_a, band, vb.dtype)
    elif every:
        qa, qb = surface_query(va, vb, faces_b, band, k), surface_query(vb, va, faces_a, band, k)
    else:
        qa, qb = surface_query(va[idx], vb[idx], faces_b, band, k), surface_query(vb[idx], va[idx], faces_a, band, k)
    if every:
        return PairContact(qa, qb, band)

    def full(q: SurfaceQuery, n: int) -> SurfaceQuery:
        o = SurfaceQuery(torch.full((F, n), float("inf"), dtype=va.dtype, device=va.device),
                         torch.zeros((F, n), dtype=torch.bool, device=va.device), torch.zeros((F, n), dtype=va.dtype, device=va.device))
        o.dist[idx], o.inside[idx], o.vertex_dist[idx] = q.dist, q.inside, q.vertex_dist
        return o

    return PairContact(full(qa, va.shape[1]), full(qb, vb.shape[1]), band)


def depth_arrays(contacts: Sequence[PairContact]) -> tuple[Tensor, Tensor]:
    """Per frame, pair and side, the benchmark's maximum and mean penetration depth (metres, 0
    without penetration; :mod:`h4d_fast.eval.interaction`): ``[F, Q, 2]`` each, from the
    :class:`PairContact` of every pair (side 0 = the first person's vertices inside the second)."""
    mx, mn = [], []
    for pc in contacts:
        for q in (pc.a_in_b, pc.b_in_a):
            vd = q.vertex_dist.double()
            n = q.inside.sum(-1)
            m = vd.amax(-1) if vd.shape[-1] else vd.new_zeros(vd.shape[0])
            mx.append(m)
            mn.append(torch.where(n > 0, vd.sum(-1) / n.clamp_min(1), torch.zeros_like(m)))
    if not mx:
        return torch.zeros(0, 0, 2, dtype=torch.float64), torch.zeros(0, 0, 2, dtype=torch.float64)
    return torch.stack(mx, -1).unflatten(-1, (-1, 2)), torch.stack(mn, -1).unflatten(-1, (-1, 2))


def person_pairs(num_people: int) -> list[tuple[int, int]]:
    """The pairs ``(a, b), a < b`` in the order of :func:`vertex_contact`'s pair axis."""
    return list(itertools.combinations(range(num_people), 2))


def vertex_contact(verts: Tensor, faces: Tensor, contact_mm: float = DEFAULT_CONTACT_MM, k: int = 8) -> tuple[Tensor, list[tuple[int, int]]]:
    """Contact labels of every pair of people, per frame.

    Args:
        verts: ``[F, P, N, 3]`` metres (one body model for everyone); faces ``[T, 3]``.
        contact_mm: threshold (config ``export.contact_mm``).
    Returns:
        ``([F, Q, 2, N] bool, pairs)`` with ``Q = P (P - 1) / 2`` pairs ``(a, b)`` in
        :func:`person_pairs` order; ``[f, q, 0]`` = a's vertices touching b, ``[f, q, 1]`` = b's touching a.
    """
    if verts.dim() != 4:
        raise ValueError(f"vertex_contact: expected verts [F, P, N, 3], got {tuple(verts.shape)}")
    F, P, N = verts.shape[:3]
    pairs = person_pairs(P)
    out = torch.zeros((F, len(pairs), 2, N), dtype=torch.bool, device=verts.device)
    for q, (a, b) in enumerate(pairs):
        out[:, q] = pair_contact(verts[:, a], verts[:, b], faces, contact_mm=contact_mm, k=k).contact
    return out, pairs


def export_contact(verts: Tensor, faces: Tensor, parts: Any = None, contact_mm: float = DEFAULT_CONTACT_MM,
                   present: Any = None) -> dict[str, Any]:
    """What the export writes about contact, from the meshes of a sequence.

    Args:
        verts: ``[F, P, N, 3]`` metres (any device; the GPU path runs on CUDA tensors).
        faces: ``[T, 3]``; parts: a :class:`~h4d_fast.body.parts.BodyParts` (``body_parts(body)``)
            for the region names, or None.
        contact_mm: ``cfg.contact.contact_mm``.
        present: ``[F, P]`` bool, who is in which frame: a pair with an absent person has no
            contact in that frame (default: everyone everywhere).
    Returns:
        numpy arrays for ``sequence.npz``: ``contact`` bool ``[F, Q, 2, N]``, ``contact_pairs``
        int ``[Q, 2]`` (person indices; side 0 = the first person's vertices), ``contact_mm``,
        ``depth_max`` / ``depth_mean`` float32 ``[F, Q, 2]`` (:func:`depth_arrays`, metres; 0 for
        pairs with an absent person); where the host kernel runs, ``penetration_cm3`` float32
        ``[F, Q]``: each pair's interpenetration volume (both sides' inside vertices, exact depth
        times vertex area: :func:`h4d_fast.ops.penetration.penetration_volume`'s measure);
        with ``parts``: ``contact_regions`` bool ``[F, Q, 2, R]``, ``part_names`` str ``[R]``,
        ``vertex_part`` int16 ``[N]``.
    """
    v = torch.as_tensor(verts)
    if v.dim() != 4:
        raise ValueError(f"export_contact: expected verts [F, P, N, 3], got {tuple(v.shape)}")
    f = torch.as_tensor(faces).to(v.device)
    pairs = person_pairs(v.shape[1])
    pen = None
    if contact_on_host() and pairs:
        labels, dmax, dmean, pen = _export_numba(v.detach().cpu(), f.cpu(), pairs, contact_mm / 1000.0)
    else:
        pcs = [pair_contact(v[:, a], v[:, b], f, contact_mm=contact_mm) for a, b in pairs]
        labels = torch.stack([pc.contact for pc in pcs], 1) if pcs else torch.zeros((v.shape[0], 0, 2, v.shape[2]), dtype=torch.bool)
        dmax, dmean = depth_arrays(pcs)
    if present is not None and pairs:
        pres = torch.as_tensor(np.asarray(present, dtype=bool)).reshape(v.shape[0], v.shape[1]).to(labels.device)
        both = torch.stack([pres[:, a] & pres[:, b] for a, b in pairs], 1)  # [F, Q]
        labels &= both[:, :, None, None]
        dmax, dmean = (x * both[..., None].to(x.device, x.dtype) for x in (dmax, dmean))
        if pen is not None:
            pen = pen * both.to(pen.dtype)
    out: dict[str, Any] = {"contact": labels.cpu().numpy(), "contact_pairs": np.asarray(pairs, dtype=np.int64).reshape(-1, 2),
                           "contact_mm": np.asarray(float(contact_mm)), "depth_max": dmax.float().cpu().numpy().reshape(v.shape[0], len(pairs), 2),
                           "depth_mean": dmean.float().cpu().numpy().reshape(v.shape[0], len(pairs), 2)}
    if pen is not None:
        out["penetration_cm3"] = pen.float().numpy().reshape(v.shape[0], len(pairs))
    if parts is not None:
        out["contact_regions"] = parts.regions(labels.cpu()).numpy()
        out["part_names"] = np.asarray(parts.names)
        out["vertex_part"] = parts.vertex_part.cpu().numpy().astype(np.int16)
    return out


def contact_on_host() -> bool:
    """Whether :func:`export_contact` runs the exact grid kernel on the host (numba present), for
    tensors on any device. It does on a GPU machine too: the per-frame grids cost about 0.5 ms of one
    core per frame and direction (2 people, 13,380 vertices, the 600-frame bench capture), so the
    host's cores do a 600-frame capture in a fraction of a second, where the GPU path (a bounded
    search, see the module docstring) took 5 s on an H100 (bench/results/2026-12-07-h100-final/)."""
    return _pen._numba_depth() is not None


def _export_numba(v: Tensor, faces: Tensor, pairs: list[tuple[int, int]], band: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`export_contact`'s labels and depths through the grid kernel's per-frame summary
    (:func:`h4d_fast.ops._contact_numba.contact_pair_frames`: both directions of a pair, each frame
    in one task): no per-point distance arrays, the vertices read in their own precision (float32
    or float64). Every frame goes to the kernel: a frame whose people are farther apart than the
    band costs it one pass over the vertices (no grid is built). The fourth tensor: each pair's
    interpenetration ``[F, Q]`` in cm^3."""
    from ._contact_numba import contact_pair_frames

    F, P, N = v.shape[:3]
    arr = v.detach().numpy()
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    fcs = faces.detach().long().cpu().numpy()
    labels = np.zeros((F, len(pairs), 2, N), dtype=bool)
    dmax = np.zeros((F, len(pairs), 2))
    dmean = np.zeros((F, len(pairs), 2))
    vol = np.zeros((F, len(pairs)))
    person = [np.ascontiguousarray(arr[:, p]) for p in range(P)]
    for q, (a, b) in enumerate(pairs):
        for side, (c, mx, sm, n, vl) in enumerate(contact_pair_frames(person[a], person[b], fcs, fcs, band, volume=True)):
            labels[:, q, side] = c
            dmax[:, q, side] = mx
            dmean[:, q, side] = np.where(n > 0, sm / np.maximum(n, 1), 0.0)
            vol[:, q] += vl
    return torch.from_numpy(labels), torch.from_numpy(dmax), torch.from_numpy(dmean), torch.from_numpy(vol * 1e6)


__all__ = [
    "DEFAULT_CONTACT_MM",
    "contact_on_host",
    "export_contact",
    "PairContact",
    "SurfaceQuery",
    "depth_arrays",
    "pair_contact",
    "person_pairs",
    "surface_query",
    "vertex_contact",
]
