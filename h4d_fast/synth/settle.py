"""Exact mesh pass of the synthetic generator: the meshes themselves, not their proxies, kept apart.

The proxy pass (:func:`h4d_fast.synth.collide.resolve_interpenetration`) keeps surface *points*
out of inscribed *spheres*; where the spheres do not fill the mesh (the head and the feet: the
union of spheres lies up to 3 cm inside their surface) or between sampled points, the meshes can
still cut into each other. This pass poses the whole meshes (linear blend skinning of the model's
shaped rest mesh, as the body model poses it: no pose correctives), finds with the exact grid
kernel (:mod:`h4d_fast.ops._contact_numba`) every vertex of one person inside the other or
within ``band`` of its surface, with its closest point there, and adds for each such vertex ``x``
the linearised constraint

    n . (x - y) >= clearance,     y = the closest surface point (skinned with its triangle's vertices),
                                  n = the direction out of the other body at y (fixed for the round)

as a squared penalty to the shared corrections (:class:`~h4d_fast.synth.correct.Corrector`,
trust region ``trust`` per round so that the linearisation and the row set stay valid). A few
rounds, each re-queried; the last query is the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from .correct import blend_points


@dataclass
class SettleParams:
    """Schedule of :func:`settle_meshes` (lengths in metres)."""

    rounds: int = 8
    iters: int = 15  # L-BFGS iterations per round
    band: float = 0.008  # vertices this close to the other surface (or inside it) get a constraint
    clearance: float = 0.0015  # gap the constraints keep between the surfaces
    trust: float = 0.006  # joints move at most this far per round (soft)
    topk: int = 4  # skinning weights kept per vertex in the constraints
    chunk: int = 48  # frames skinned at a time for the query
    tolerance: float = 0.0  # rounds stop once no vertex is deeper than this inside the other body (m)
    reach: int = 16  # after the first round, frames this close to one with a vertex inside are queried (and
    # constrained) again, with the spline control points whose support lies among them (4 knots)


class _Mesh:
    """One person's shaped rest mesh and its (dense and top-k) skinning weights, float32."""

    def __init__(self, px, k: int) -> None:
        self.v = px.mesh_vertices.to(torch.float32)
        self.W = px.mesh_weights.to(torch.float32)
        w, j = self.W.topk(k, dim=-1)
        self.wk, self.jk = w / w.sum(-1, keepdim=True), j
        self.faces = px.faces.long()

    def posed(self, A: Tensor, chunk: int) -> Tensor:
        """Every vertex ``[n, N, 3]`` (float64) for blend matrices ``A [n, 24, 12]`` (no grad)."""
        return torch.cat([blend_points(self.W, A[i : i + chunk], self.v).double() for i in range(0, A.shape[0], chunk)])

    def rows(self, A: Tensor, f: Tensor, v: Tensor) -> Tensor:
        """Vertices ``v`` of frames ``f`` (rows of ``A``) ``[R, 3]``, differentiable in ``A``."""
        T = (self.wk[v][..., None] * A[f[:, None], self.jk[v]]).sum(1)  # [R, 12]
        return (T[:, :9].unflatten(-1, (3, 3)) @ self.v[v][:, :, None])[..., 0] + T[:, 9:]


@dataclass
class _Rows:
    """The constraints of one direction (``p``'s vertices against ``q``'s surface)."""

    f: Tensor  # [R] row of the round's frames
    i: Tensor  # [R] vertex of p
    tri: Tensor  # [R, 3] vertices of q's closest triangle
    bary: Tensor  # [R, 3] the closest point's weights on them
    n: Tensor  # [R, 3] out of q at the closest point


def _query(meshes: Sequence[_Mesh], A: Sequence[Tensor], band: float, chunk: int, proxies: Sequence,
           V: Sequence[Tensor] | None = None) -> tuple[list[_Rows], Tensor, Tensor]:
    """Constraint rows of both directions for the posed frames of ``A``, and per frame the deepest
    penetration (metres, over both directions) and the number of inside vertices (``V``: the posed
    meshes when the caller has them)."""
    from ..ops._contact_numba import query_frames

    V = [m.posed(a, chunk) for m, a in zip(meshes, A)] if V is None else V
    spheres = [blend_points(px.sphere_weights.to(a.dtype), a, px.sphere_centres.to(a.dtype)).double() for px, a in zip(proxies, A)]
    radii = [px.sphere_radii.double() for px in proxies]
    n = V[0].shape[0]
    depth = torch.zeros(n, dtype=torch.float64)
    count = torch.zeros(n, dtype=torch.long)
    out = []
    for p in range(2):
        q = 1 - p
        fq = meshes[q].faces
        d, ins, _, tri, st = query_frames(V[p].numpy(), V[q].numpy(), fq.numpy(), band, closest=True)
        d, ins, tri, st = torch.from_numpy(d), torch.from_numpy(ins), torch.from_numpy(tri).long(), torch.from_numpy(st)
        depth = torch.maximum(depth, torch.where(ins, d, torch.zeros_like(d)).amax(-1))
        count += ins.sum(-1)
        f, i = (tri >= 0).nonzero(as_tuple=True)
        t = fq[tri[f, i]]  # [R, 3]
        s_, t_ = st[f, i, 0], st[f, i, 1]
        bary = torch.stack([1 - s_ - t_, s_, t_], -1)
        y = (bary[..., None] * V[q][f[:, None], t]).sum(1)
        diff = V[p][f, i] - y
        dn = diff.norm(dim=-1, keepdim=True)
        e1 = V[q][f, t[:, 1]] - V[q][f, t[:, 0]]
        e2 = V[q][f, t[:, 2]] - V[q][f, t[:, 0]]
        fn = torch.linalg.cross(e1, e2, dim=-1)
        fn = fn / fn.norm(dim=-1, keepdim=True).clamp_min(1e-20)
        nrm = torch.where(dn > 1e-7, diff / dn.clamp_min(1e-20), fn)
        inn = ins[f, i]
        if bool(inn.any()):
            # inside: out of q along the direction away from q's nearest inscribed sphere (volumetric and
            # consistent across thin parts, where the closest surface points on either side disagree)
            x = V[p][f[inn], i[inn]]
            c = spheres[q][f[inn]]  # [Ri, S, 3]
            j = ((x[:, None] - c).norm(dim=-1) - radii[q][None]).argmin(-1)
            u = x - c[torch.arange(len(j)), j]
            nrm[inn] = torch.where(u.norm(dim=-1, keepdim=True) > 1e-9, u / u.norm(dim=-1, keepdim=True).clamp_min(1e-20), -nrm[inn])
        out.append(_Rows(f, i, t, bary.float(), nrm.float()))
    return out, depth, count


def settle_meshes(cor, proxies: Sequence, prm: SettleParams | None = None, proxy_term=None) -> dict:
    """Run the exact pass on the corrector's window (module docstring); ``proxy_term(frames) ->
    (frames with pairs, penalty(Ja, Ga))`` keeps the proxy pass's term on the frames a round
    corrects (a correction that frees one place must not push a part into the other body
    elsewhere). The first query covers the whole window, the next ones the frames with vertices
    inside the other body and their neighbours (the corrections are splines over a few frames),
    and the last one the whole window again (the report). Returns ``mesh_depth_before`` /
    ``mesh_depth_after`` (deepest penetration per frame of the window, metres, before the first
    and after the last round), ``inside_after`` (vertices inside per frame) and ``rows`` per round."""
    prm = prm or SettleParams()
    meshes = [_Mesh(px, prm.topk) for px in proxies]
    allf = torch.arange(cor.Fw)
    report: dict = {"rows": []}
    pen2 = cor.prm.pen_scale**2
    depth = torch.zeros(cor.Fw, dtype=torch.float64)
    count = torch.zeros(cor.Fw, dtype=torch.long)
    frames = allf
    rnd = 0
    while True:
        with torch.no_grad():
            _, _, Jp, GR = cor.pose(frames)
            A = cor.transforms(Jp, GR)
        rows, d, c = _query(meshes, A, prm.band, prm.chunk, proxies)
        depth[frames], count[frames] = d, c
        if rnd == 0:
            report["mesh_depth_before"] = depth.clone()
        bad_f = (c > 0) & (d > prm.tolerance) if prm.tolerance > 0 else c > 0
        if not bool(bad_f.any()) or rnd == prm.rounds:
            if len(frames) == cor.Fw:
                break
            frames, rnd = allf, prm.rounds  # verify the whole window once more (no further round)
            continue
        report["rows"].append(sum(len(r.f) for r in rows))
        f_rows = frames[torch.cat([r.f for r in rows])]
        # the proxy term on every queried frame: they hold the rows' frames and their neighbours, which
        # the same spline control points move
        pact, pfn = proxy_term(frames) if proxy_term is not None else (f_rows[:0], None)
        # every queried frame is active (its joints within the trust region), not only those with rows: the
        # spline control points move their neighbours too (a hand 15 mm off a forearm, with no row, was
        # carried 12 mm into it), and with ``only`` the control points free to move are those whose support
        # lies among the active frames (a few frames of rows alone hold none: the rounds then changed
        # nothing, and a hand left 10 mm inside a head stayed there)
        act, inv = torch.unique(torch.cat([f_rows, pact, frames]), return_inverse=True)
        fl = list(inv[: len(f_rows)].split([len(r.f) for r in rows]))
        pidx = inv[len(f_rows):]

        def penalty(Ja: Tensor, Ga: Tensor, rows=rows, fl=fl, pfn=pfn, pidx=pidx) -> Tensor:
            A = cor.transforms(Ja, Ga)
            tot = Ja.new_zeros(()) if pfn is None else pfn(Ja[pidx], Ga[pidx])
            for p in range(2):
                r, q = rows[p], 1 - p
                if not len(r.f):
                    continue
                x = meshes[p].rows(A[p], fl[p], r.i)
                y = sum(r.bary[:, k : k + 1] * meshes[q].rows(A[q], fl[p], r.tri[:, k]) for k in range(3))
                g = ((x - y) * r.n).sum(-1)
                tot = tot + ((prm.clearance - g).clamp_min(0) ** 2).sum() / pen2
            return tot

        cor.optimise(act, penalty, prm.iters, prm.trust, only=len(frames) < cor.Fw)
        rnd += 1
        # next: the frames with vertices inside and their neighbours
        bad = frames[bad_f]
        near = (bad[:, None] + torch.arange(-prm.reach, prm.reach + 1)[None]).reshape(-1).clamp(0, cor.Fw - 1)
        frames = torch.unique(near)
    report["mesh_depth_after"] = depth
    report["inside_after"] = count
    return report


__all__ = ["SettleParams", "settle_meshes"]
