"""Mesh geometry of the penetration and contact measures (:mod:`h4d_fast.ops.penetration`,
:mod:`h4d_fast.ops.contact`): vertex areas, closest points on triangles, topology, normals and nearest vertices."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor

_CHUNK_GPU = 1 << 26  # distances per chunk of the GPU nearest-vertex search (256 MB in float32)


# ----------------------------------------------------------------------------- geometry
def vertex_areas(verts: Tensor, faces: Tensor) -> Tensor:
    """``[B, N]`` a third of the area of the triangles around each vertex (m^2)."""
    f = faces.long()
    a, b, c = verts[:, f[:, 0]], verts[:, f[:, 1]], verts[:, f[:, 2]]
    area = 0.5 * torch.linalg.cross(b - a, c - a, dim=-1).norm(dim=-1) / 3.0  # [B, T]
    out = verts.new_zeros(verts.shape[:2])
    for k in range(3):
        out.index_add_(1, f[:, k], area)
    return out


def _sdiv(n: Tensor, d: Tensor) -> Tensor:
    return torch.where(d != 0, n / torch.where(d != 0, d, torch.ones_like(d)), torch.zeros_like(n))


def _closest_st(d1: Tensor, d2: Tensor, ab2: Tensor, ac2: Tensor, abac: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Closest point ``a + s ab + t ac`` on a triangle and its feature, from the dot products
    ``d1 = ab.ap``, ``d2 = ac.ap`` and the triangle's ``|ab|^2``, ``|ac|^2``, ``ab.ac``
    (Ericson's region cascade; the other four of his dot products follow from these).

    Returns:
        s, t and feature (int64: 0/1/2 vertex a/b/c, 3/4/5 edge ab/bc/ca, 6 face interior).
    """
    d3, d4 = d1 - ab2, d2 - abac  # ab.bp, ac.bp
    d5, d6 = d1 - abac, d2 - ac2  # ab.cp, ac.cp
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    s, t = _sdiv(vb, va + vb + vc), _sdiv(vc, va + vb + vc)
    feat = torch.full(s.shape, 6, dtype=torch.long, device=s.device)
    zero, one = torch.zeros_like(s), torch.ones_like(s)
    w = _sdiv(d4 - d3, (d4 - d3) + (d5 - d6))
    # reverse priority, so that the first matching test of Ericson's order wins
    for m, sn, tn, code in (
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), 1 - w, w, 4),  # edge bc
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), zero, _sdiv(d2, d2 - d6), 5),  # edge ca
        ((d6 >= 0) & (d5 <= d6), zero, one, 2),  # vertex c
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), _sdiv(d1, d1 - d3), zero, 3),  # edge ab
        ((d3 >= 0) & (d4 <= d3), one, zero, 1),  # vertex b
        ((d1 <= 0) & (d2 <= 0), zero, zero, 0),  # vertex a
    ):
        s, t = torch.where(m, sn, s), torch.where(m, tn, t)
        feat = torch.where(m, code, feat)
    return s, t, feat


def closest_point_triangle(p: Tensor, a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Closest point on triangles and its feature (Ericson, Real-Time Collision Detection 5.1.5).

    Args:
        p, a, b, c: ``[..., 3]`` (broadcast).
    Returns:
        q ``[..., 3]`` the closest points and feature ``[...]`` int64: 0/1/2 vertex a/b/c,
        3/4/5 edge ab/bc/ca, 6 face interior.
    """
    ab, ac, ap = b - a, c - a, p - a
    s, t, feat = _closest_st((ab * ap).sum(-1), (ac * ap).sum(-1), (ab * ab).sum(-1), (ac * ac).sum(-1), (ab * ac).sum(-1))
    return a + s[..., None] * ab + t[..., None] * ac, feat


class _Topology:
    """Per faces tensor: vertex -> incident faces (padded with -1) and the face across each edge."""

    def __init__(self, faces: Tensor, num_vertices: int):
        f = faces.detach().long().cpu().numpy()
        T = f.shape[0]
        cnt = np.bincount(f.reshape(-1), minlength=num_vertices)
        vmax = int(cnt.max()) if cnt.size else 0
        v2f = -np.ones((num_vertices, max(vmax, 1)), dtype=np.int64)
        order = np.argsort(f.reshape(-1), kind="stable")
        vid = f.reshape(-1)[order]
        fid = order // 3
        starts = np.concatenate([[0], np.cumsum(cnt)])[:-1]
        rank = np.arange(vid.size) - starts[vid]
        v2f[vid, rank] = fid
        # edges (a,b), (b,c), (c,a) of each face; the other face holding the same undirected edge
        e = np.stack([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 1).reshape(-1, 2)  # [3T, 2]
        key = np.sort(e, 1)
        kk = key[:, 0] * (num_vertices + 1) + key[:, 1]
        order = np.argsort(kk, kind="stable")
        ks = kk[order]
        adj = np.arange(3 * T) // 3  # default: itself (boundary / non-manifold)
        same_next = np.nonzero(ks[1:] == ks[:-1])[0]
        a_i, b_i = order[same_next], order[same_next + 1]
        adj[a_i] = b_i // 3
        adj[b_i] = a_i // 3
        dev = faces.device
        self.v2f = torch.from_numpy(v2f).to(dev)
        self.edge_adj = torch.from_numpy(adj.reshape(T, 3)).to(dev)
        self.faces = faces.long()


_TOPO_CACHE: OrderedDict = OrderedDict()


def _topology(faces: Tensor, num_vertices: int) -> _Topology:
    key = (faces.data_ptr(), tuple(faces.shape), str(faces.device), faces._version, num_vertices)
    hit = _TOPO_CACHE.get(key)
    if hit is not None and hit[0] is faces:
        return hit[1]
    topo = _Topology(faces, num_vertices)
    _TOPO_CACHE[key] = (faces, topo)
    while len(_TOPO_CACHE) > 8:
        _TOPO_CACHE.popitem(last=False)
    return topo


def _normals(verts: Tensor, topo: _Topology) -> tuple[Tensor, Tensor, Tensor]:
    """Unit face normals ``[T, 3]``, angle-weighted vertex pseudo-normals ``[N, 3]`` and edge
    pseudo-normals ``[T, 3, 3]`` (edges ab, bc, ca) of one mesh ``verts [N, 3]``."""
    f = topo.faces
    p = verts[f]  # [T, 3, 3]
    n = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], dim=-1)
    fn = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-20)
    vn = verts.new_zeros(verts.shape)
    for k in range(3):
        e1 = p[:, (k + 1) % 3] - p[:, k]
        e2 = p[:, (k + 2) % 3] - p[:, k]
        cosang = (e1 * e2).sum(-1) / (e1.norm(dim=-1) * e2.norm(dim=-1)).clamp_min(1e-20)
        ang = torch.arccos(cosang.clamp(-1, 1))
        vn.index_add_(0, f[:, k], fn * ang[:, None])
    en = fn[:, None, :] + fn[topo.edge_adj]  # [T, 3, 3]
    return fn, vn, en


def _knn(points: Tensor, verts: Tensor, k: int) -> Tensor:
    """``[M, k]`` indices of the ``k`` nearest vertices of ``verts [N, 3]`` to ``points [M, 3]``."""
    k = min(k, verts.shape[0])
    if points.device.type == "cpu":
        from scipy.spatial import cKDTree

        _, idx = cKDTree(verts.detach().double().numpy()).query(points.detach().double().numpy(), k=k)
        idx = np.asarray(idx).reshape(points.shape[0], k)
        return torch.from_numpy(idx).to(points.device)
    out = []
    step = max(1, _CHUNK_GPU // max(1, verts.shape[0]))
    for i in range(0, points.shape[0], step):
        d = torch.cdist(points[i : i + step], verts)
        out.append(d.topk(k, dim=-1, largest=False).indices)
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long, device=points.device)
