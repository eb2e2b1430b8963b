"""Collision proxies of a body-model mesh: inscribed spheres (the volume) and surface points.

The synthetic generator keeps its two bodies from interpenetrating with these proxies
(:mod:`h4d_fast.synth.collide`): the surface points of one body must stay outside the spheres of
the other, both ways. Both are skinned with the model's own linear-blend-skinning weights, so a
surface point is exactly a mesh vertex in every pose and the spheres follow the limbs.

Construction, per body model (cached) then per shape:

* **template** (``betas = 0``, once per model): candidate touch vertices by farthest-point
  sampling (denser on the hands), a shrinking-ball sphere at each (the largest sphere inside the
  mesh touching the surface at that vertex: its centre lies on the medial axis), then a greedy
  set cover keeps the few spheres whose union reaches (almost) every surface vertex; a second,
  denser farthest-point sample gives the surface points.
* **shape** (each person's ``betas``): the shrinking ball is re-run at the kept touch vertices of
  the shaped rest mesh (cheap), the points are the shaped vertices; skinning weights are the
  vertices' (spheres: the mean over the surface the sphere touches).

Everything is deterministic (no random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from ..body.fast import skin
from ..ops.mesh_geometry import vertex_areas

# joints whose vertices get a denser sampling (hands, fingers: thin and often in contact)
_HAND_JOINTS = (20, 21, 22, 23)
_DENSITY = {j: 2.2 for j in _HAND_JOINTS}
# head and feet: denser too. Their surfaces are detailed (face, ears, toes), so the spheres touching
# them are small; with the old coarse sampling (0.7-0.8) their union stayed up to 3-4 cm inside the
# head and feet surfaces (median 12 mm), and a hand could sit in a face while clear of its spheres.
# Now: median 3 mm, at most 15 mm (default model).
_DENSITY.update({15: 2.5, 7: 1.5, 8: 1.5, 10: 1.5, 11: 1.5})
# surface points: arms and hands dense (they wrap around the partner), trunk and legs coarser
_POINT_DENSITY = {j: 1.0 for j in range(24)}
_POINT_DENSITY.update({j: 0.7 for j in (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11)})
_POINT_DENSITY.update({j: 2.0 for j in _HAND_JOINTS})
_POINT_DENSITY.update({15: 0.6})
ARM_JOINTS = (16, 17, 18, 19, 20, 21, 22, 23)  # shoulder .. hand (left and right)


@dataclass
class BodyProxy:
    """One person's proxies (rest pose, metres, float64).

    Attributes:
        rest_joints: ``[24, 3]``.
        sphere_centres: ``[S, 3]``; sphere_radii ``[S]``; sphere_weights ``[S, 24]`` (skinning).
        points: ``[M, 3]`` surface points (mesh vertices); point_weights ``[M, 24]``.
        sphere_part / point_part: ``[S]`` / ``[M]`` dominant joint (for the broad phase).
        point_ids: ``[M]`` vertex indices of the points; touch_ids ``[S]`` of the spheres.
        point_clusters / sphere_clusters: ``[K, m]`` small spatial groups within one part (padded with -1).
        mesh_vertices / mesh_weights / faces: the whole shaped rest mesh ``[N, 3]``, its skinning
            weights ``[N, 24]`` and triangles ``[T, 3]`` (the exact pass, :mod:`h4d_fast.synth.settle`).
    """

    rest_joints: Tensor
    sphere_centres: Tensor
    sphere_radii: Tensor
    sphere_weights: Tensor
    points: Tensor
    point_weights: Tensor
    sphere_part: Tensor
    point_part: Tensor
    point_ids: Tensor
    touch_ids: Tensor
    point_clusters: Tensor  # [Kp, mp] member indices (-1 = padding): small groups of one part, for the broad phase
    sphere_clusters: Tensor  # [Ks, ms]
    mesh_vertices: Tensor | None = None
    mesh_weights: Tensor | None = None
    faces: Tensor | None = None

    def pose_spheres(self, GR: Tensor, Jp: Tensor) -> Tensor:
        """Centres ``[B, S, 3]`` for global joint rotations ``GR [B, 24, 3, 3]`` and posed joints ``Jp [B, 24, 3]``."""
        return lbs_points(self.sphere_centres, self.sphere_weights, self.rest_joints, GR, Jp)

    def pose_points(self, GR: Tensor, Jp: Tensor) -> Tensor:
        """Surface points ``[B, M, 3]`` (exact mesh vertices of the pose)."""
        return lbs_points(self.points, self.point_weights, self.rest_joints, GR, Jp)


def lbs_points(x: Tensor, W: Tensor, J: Tensor, GR: Tensor, Jp: Tensor) -> Tensor:
    """Linear blend skinning of rest points ``x [N, 3]`` (weights ``W [N, 24]``, rest joints ``J [24, 3]``)
    by global rotations ``GR [B, 24, 3, 3]`` and posed joint positions ``Jp [B, 24, 3]`` -> ``[B, N, 3]``."""
    dt = GR.dtype
    return skin(x.to(dt), W.to(dt), GR, Jp, J.to(dt))


# ------------------------------------------------------------------ geometry helpers
def vertex_normals(v: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``[N, 3]`` (outward for an outward-oriented mesh)."""
    p = v[faces]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, faces[:, k], n)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-20)


def farthest_points(v: np.ndarray, scale: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """``n`` indices of ``v [N, 3]`` by farthest-point sampling; distances are multiplied by ``scale [N]``
    (larger = denser there). Deterministic."""
    N = len(v)
    n = min(n, N)
    sel = np.empty(n, dtype=np.int64)
    sel[0] = start
    d = np.full(N, np.inf)
    for i in range(1, n):
        d = np.minimum(d, np.sqrt(((v - v[sel[i - 1]]) ** 2).sum(1)) * scale)
        sel[i] = int(d.argmax())
    return sel


def shrinking_balls(v: np.ndarray, n: np.ndarray, idx: np.ndarray, tree: cKDTree, r0: float = 0.3, iters: int = 40,
                    exclude: float = 0.004) -> tuple[np.ndarray, np.ndarray]:
    """Largest inscribed spheres touching the surface at vertices ``idx`` (Ma et al. 2012).

    Args:
        v, n: vertices ``[N, 3]`` and outward unit normals.
        idx: touch vertices ``[S]``.
        tree: kd-tree of ``v``.
        r0: initial (maximum) radius; exclude: vertices this close to the touch vertex are ignored
            (tessellation noise).
    Returns:
        centres ``[S, 3]``, radii ``[S]``.
    """
    p = v[idx]
    nn = n[idx]
    r = np.full(len(idx), r0)
    ar = np.arange(len(idx))
    for _ in range(iters):
        c = p - r[:, None] * nn
        d, q = tree.query(c, k=8)
        qv = v[q]  # [S, 8, 3]
        ok = np.sqrt(((qv - p[:, None]) ** 2).sum(-1)) > exclude
        d = np.where(ok, d, np.inf)
        j = d.argmin(1)
        dq = d[ar, j]
        viol = dq < r * (1 - 1e-4)
        if not viol.any():
            break
        pq = p - qv[ar, j]
        rn = (pq * pq).sum(-1) / np.maximum(2 * (pq * nn).sum(-1), 1e-9)
        r = np.where(viol, np.clip(rn, 1e-4, r), r)
    return p - r[:, None] * nn, r


# ------------------------------------------------------------------ construction
_TEMPLATE_CACHE: dict[Any, dict[str, np.ndarray]] = {}


def _model_arrays(fb) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """v_template ``[N, 3]``, shapedirs ``[N, 3, K]``, faces ``[T, 3]``, lbs weights ``[N, 24]`` (numpy float64)."""
    return (fb.v_template.detach().double().cpu().numpy(), fb.shapedirs.detach().double().cpu().numpy(),
            fb.faces.detach().long().cpu().numpy(), fb.lbs_weights.detach().double().cpu().numpy())


def _template(fb, num_candidates: int = 1500, num_points: int = 1000, cover_tol: float = 0.006, max_spheres: int = 600,
              cover_frac: float = 0.998) -> dict[str, np.ndarray]:
    key = (id(fb.body), num_candidates, num_points, cover_tol, max_spheres, cover_frac)
    hit = _TEMPLATE_CACHE.get(key)
    if hit is not None:
        return hit
    v, _, faces, W = _model_arrays(fb)
    dom = W.argmax(1)
    scale = np.ones(len(v))
    for j, s in _DENSITY.items():
        scale[dom == j] = s
    nrm = vertex_normals(v, faces)
    tree = cKDTree(v)
    cand = farthest_points(v, scale, num_candidates)
    c, r = shrinking_balls(v, nrm, cand, tree)
    ok = r > 0.003
    cand, c, r = cand[ok], c[ok], r[ok]
    # greedy set cover of the surface, weighted by vertex area: a sphere covers the vertices within
    # cover_tol of its surface
    area = vertex_areas(torch.from_numpy(v)[None], torch.from_numpy(faces))[0].numpy()
    cov = np.concatenate([(np.sqrt(((v[None] - c[i : i + 100, None]) ** 2).sum(-1)) - r[i : i + 100, None]) < cover_tol
                          for i in range(0, len(c), 100)])  # [C, N], 100 candidates at a time
    gain = cov.astype(np.float64) @ area
    covered = np.zeros(len(v), bool)
    chosen: list[int] = []
    total = float(area.sum())
    while len(chosen) < max_spheres:
        i = int(gain.argmax())
        if gain[i] <= 0:
            break
        chosen.append(i)
        new = cov[i] & ~covered
        covered |= new
        gain -= cov[:, new].astype(np.float64) @ area[new]
        if float(area[~covered].sum()) < (1.0 - cover_frac) * total:
            break
    touch = cand[np.array(sorted(chosen))]
    pscale = np.array([_POINT_DENSITY[int(j)] for j in dom])
    points = farthest_points(v, pscale, num_points)
    out = {"touch": touch, "points": points}
    _TEMPLATE_CACHE[key] = out
    return out


def build_proxies(fb, betas: Tensor) -> list[BodyProxy]:
    """Proxies of each person ``betas [P, K]`` of the body model wrapped by ``fb`` (a :class:`FastBody`)."""
    tpl = _template(fb)
    vt, sd, faces, W = _model_arrays(fb)
    K = sd.shape[-1]
    b = betas.detach().double().cpu().numpy()[:, :K]
    J = fb.rest_joints(betas.to(fb.dtype)).detach().double().cpu()
    out = []
    for p in range(b.shape[0]):
        v = vt + np.einsum("nck,k->nc", sd[..., : b.shape[1]], b[p])
        nrm = vertex_normals(v, faces)
        tree = cKDTree(v)
        c, r = shrinking_balls(v, nrm, tpl["touch"], tree)
        # sphere weights: mean weights of the surface it touches (within 1 cm of its surface)
        near = tree.query_ball_point(c, r + 0.01)
        sw = np.stack([W[np.asarray(ix + [int(t)])].mean(0) for ix, t in zip(near, tpl["touch"])])
        sw = sw / sw.sum(1, keepdims=True)
        pts = tpl["points"]
        t64 = lambda x: torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64)  # noqa: E731
        spart, ppart = sw.argmax(1), W[pts].argmax(1)
        out.append(BodyProxy(
            rest_joints=J[p], sphere_centres=t64(c), sphere_radii=t64(r), sphere_weights=t64(sw),
            points=t64(v[pts]), point_weights=t64(W[pts]), sphere_part=torch.as_tensor(spart),
            point_part=torch.as_tensor(ppart), point_ids=torch.as_tensor(pts), touch_ids=torch.as_tensor(tpl["touch"]),
            point_clusters=_clusters(v[pts], ppart, 16), sphere_clusters=_clusters(c, spart, 8),
            mesh_vertices=t64(v), mesh_weights=t64(W), faces=torch.as_tensor(faces),
        ))
    return out


def _clusters(x: np.ndarray, part: np.ndarray, size: int) -> Tensor:
    """Group ``x [n, 3]`` into spatial clusters of about ``size`` members within each part: ``[K, m]`` member
    indices, padded with -1 (farthest-point seeds, nearest-seed assignment; deterministic)."""
    groups: list[np.ndarray] = []
    for j in np.unique(part):
        idx = np.nonzero(part == j)[0]
        k = max(1, int(np.ceil(len(idx) / size)))
        seeds = idx[farthest_points(x[idx], np.ones(len(idx)), k)]
        lab = np.argmin(((x[idx][:, None] - x[seeds][None]) ** 2).sum(-1), 1)
        groups.extend(idx[lab == i] for i in range(k) if np.any(lab == i))
    m = max(len(g) for g in groups)
    out = -np.ones((len(groups), m), dtype=np.int64)
    for i, g in enumerate(groups):
        out[i, : len(g)] = g
    return torch.as_tensor(out)


# joints whose vertices belong to each capsule of :data:`h4d_fast.synth.skeleton.CAPSULES`
_CAPSULE_JOINTS: dict[str, tuple[int, ...]] = {
    "torso_core": (0, 3, 6, 9), "torso_left": (13, 16), "torso_right": (14, 17), "neck": (12,), "head": (15,),
    "upper_arm_l": (16,), "upper_arm_r": (17,), "forearm_l": (18,), "forearm_r": (19,), "hand_l": (20, 22), "hand_r": (21, 23),
    "thigh_l": (1,), "thigh_r": (2,), "shin_l": (4,), "shin_r": (5,), "foot_l": (7, 10), "foot_r": (8, 11),
}


def mesh_capsule_radii(v: Tensor, W: Tensor, J: Tensor, head_centre: Tensor, q: float = 0.5) -> Tensor:
    """``[C]`` capsule radii fitted to a rest mesh ``v [N, 3]`` (skinning weights ``W [N, 24]``, rest joints
    ``J [24, 3]``, head-sphere centre ``head_centre [3]`` relative to the head joint): per capsule, the
    ``q``-quantile of the distance of the vertices skinned mainly to its joints from its axis."""
    from .geometry import point_segment_closest
    from .skeleton import CAPSULES

    dom = W.argmax(1)
    pts = torch.cat([J, (J[15] + head_centre)[None]])
    out = []
    for name, a, b in CAPSULES:
        m = torch.isin(dom, torch.tensor(_CAPSULE_JOINTS[name]))
        x = v[m]
        c = point_segment_closest(x, pts[a].expand_as(x), pts[b].expand_as(x))
        out.append(float((x - c).norm(dim=-1).quantile(q)))
    return torch.tensor(out, dtype=torch.float64)


def shoulder_top(v: Tensor, J: Tensor, lateral: float = 0.04) -> float:
    """Height of the top of the shoulder above the shoulder joints (rest mesh ``v``, y up), mean of both sides."""
    h = []
    for j in (16, 17):
        d = v - J[j]
        m = d[:, [0, 2]].norm(dim=-1) < lateral
        h.append(float(d[m, 1].max()) if bool(m.any()) else 0.05)
    return sum(h) / len(h)
