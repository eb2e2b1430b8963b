"""Re-contact pass of the synthetic generator: the hands the script puts on the partner brought back
onto the partner's surface, without interpenetration (``ResolveParams.recontact``).

The passes before it (:func:`h4d_fast.synth.collide.resolve_interpenetration`: the proxy pass with
its capsules and margin, then the exact mesh pass :func:`h4d_fast.synth.settle.settle_meshes`) keep
the meshes apart, but farther apart than touching: the arm capsules (radius at a high quantile of
the arm's thickness) stay off the partner's torso capsules, whose median radius reaches beyond a
flat back, and the proxy points keep a 12 mm margin from the partner's spheres; a hand the script
lays on the partner's back, shoulder or neck ends up 4-15 cm off it (seed 0: 7 cm during the hug).

This pass runs on the same corrections (:class:`~h4d_fast.synth.correct.Corrector`) in a few
rounds, each re-queried, over the frames where a hand is scripted onto the partner:

* **attraction**: per frame and scripted hand (the script's IK weight ``w`` toward the partner,
  smoothstep as the arm IK blends it), the sampled hand vertex nearest to the partner's surface
  (exact distance: the grid kernel of :mod:`h4d_fast.ops._contact_numba`, within
  ``recontact_reach``) gets the one-sided penalty ``w rho(n . (x - y) - gap)``, ``y`` its closest
  surface point (skinned with its triangle), ``n`` the direction from ``y`` to ``x`` at the start of
  the round, ``rho`` a Huber function of the excess (quadratic up to ``recontact_huber``, then
  linear: a far hand pulls no harder than one 5 mm off, so the pull never overpowers the terms
  below). A hand already inside the partner gets none (the constraints push it out).
* **non-penetration**: every vertex within ``recontact_band`` of the other body (or inside it)
  gets the exact pass's linearised constraint ``n . (x - y) >= clearance`` (:func:`h4d_fast.synth.settle._query`).
* **capsules** (:meth:`~h4d_fast.synth.correct.Corrector.contact_capsules`): the arms are no
  longer kept off the partner's head, neck and torso capsules (what kept the hands off), but the
  two people's arm capsules still may not overlap (with 2 cm of overlap allowed, forearms crossed
  through each other where both hands reach around the partner).
* the trust region (``recontact_trust`` per joint and round) keeps the rows valid, and the
  corrections are the splines with their smoothness prior, so the hands move onto the partner over
  neighbouring frames as the script's weights rise; frames before the first scripted hand do not
  change (their spline control points stay fixed).

The exact mesh pass then runs once more (same capsules, rounds until no vertex is deeper than
``recontact_tolerance`` inside), and its last query over the whole window is the report. The
pass is deterministic (no random numbers; single-threaded torch and numba as the generator runs).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .proxy import farthest_points
from .settle import SettleParams, _Mesh, _query, settle_meshes
from .skeleton import L_HAND, L_WRIST, R_HAND, R_WRIST

_HAND_PARTS = ((L_WRIST, L_HAND), (R_WRIST, R_HAND))


def hand_samples(px, n: int) -> list[Tensor]:
    """Per hand (left, right) ``n`` vertex indices of the rest mesh whose dominant joint is the wrist or
    the hand joint, by farthest-point sampling (deterministic; in sampling order)."""
    dom = px.mesh_weights.argmax(1)
    v = px.mesh_vertices.numpy()
    out = []
    for parts in _HAND_PARTS:
        idx = torch.nonzero(torch.isin(dom, torch.tensor(parts)))[:, 0].numpy()
        sel = farthest_points(v[idx], np.ones(len(idx)), min(n, len(idx)))
        out.append(torch.as_tensor(idx[sel]))  # farthest-point order: every prefix covers the hand
    return out


def _nearest(pts: Tensor, Vq: Tensor, faces: Tensor, band: float) -> tuple[Tensor, ...]:
    """Per frame of ``pts [m, M, 3]`` against the meshes ``Vq [m, N, 3]``: the nearest point's index
    ``[m]``, its distance (0 where a point is inside, inf where none is within ``band``), whether one
    is inside, its closest triangle ``[m]`` and barycentric weights ``[m, 3]``."""
    from ..ops._contact_numba import query_frames

    d, ins, _, tri, st = query_frames(pts.numpy(), Vq.numpy(), faces.numpy(), band, closest=True)
    d, ins, tri, st = torch.from_numpy(d), torch.from_numpy(ins), torch.from_numpy(tri).long(), torch.from_numpy(st)
    dd = torch.where(ins, torch.zeros_like(d), d)
    j = dd.argmin(1)
    ar = torch.arange(len(j))
    s_, t_ = st[ar, j, 0], st[ar, j, 1]
    return j, dd[ar, j], ins.any(1), tri[ar, j], torch.stack([1 - s_ - t_, s_, t_], -1)


def _attraction_rows(meshes: Sequence[_Mesh], V: Sequence[Tensor], hands: Sequence[Sequence[Tensor]], w: Tensor, reach: float,
                     near: float = 0.03, coarse: int = 32):
    """Per person ``p``: the rows ``(f, vertex, tri [R, 3], bary [R, 3], n [R, 3], weight [R])`` of its
    scripted hands' nearest vertices to the other's surface (frames ``f`` of ``V``), and the gap of
    each (frame, hand) ``[n, P, 2]`` (inf: out of reach; 0: inside). Two tiers: every sampled hand
    vertex within ``near`` (a fine grid), then, for the hands with none that close, the first
    ``coarse`` samples (a farthest-point subset) within ``reach``."""
    n = V[0].shape[0]
    gaps = torch.full((n, 2, 2), float("inf"), dtype=torch.float64)
    out = []
    for p in range(2):
        q = 1 - p
        fq = meshes[q].faces
        fs, vs, ts, bs, ws = [], [], [], [], []
        for h in range(2):
            live = torch.nonzero(w[:, p, h] > 0)[:, 0]
            if not len(live):
                continue
            idx = hands[p][h]
            Vq = V[q] if len(live) == n else V[q][live]
            j, g, anyin, tri, bary = _nearest(V[p][live[:, None], idx], Vq, fq, near)
            vi = idx[j]
            miss = torch.nonzero(torch.isinf(g))[:, 0]
            if len(miss):
                sub = idx[:coarse]
                j2, g2, in2, tri2, bary2 = _nearest(V[p][live[miss][:, None], sub], V[q][live[miss]], fq, reach)
                g[miss], anyin[miss], tri[miss], bary[miss], vi[miss] = g2, in2, tri2, bary2, sub[j2]
            gaps[live, p, h] = g
            ok = ~anyin & torch.isfinite(g)  # inside: the non-penetration rows push it out
            if bool(ok.any()):
                fs.append(live[ok])
                vs.append(vi[ok])
                ts.append(fq[tri[ok]])
                bs.append(bary[ok])
                ws.append(w[live[ok], p, h])
        if not fs:
            out.append(None)
            continue
        f, vi, t, bary = torch.cat(fs), torch.cat(vs), torch.cat(ts), torch.cat(bs)
        x = V[p][f, vi]
        y = (bary[..., None] * V[q][f[:, None], t]).sum(1)
        nrm = (x - y) / (x - y).norm(dim=-1, keepdim=True).clamp_min(1e-9)
        out.append((f, vi, t, bary.float(), nrm.float(), torch.cat(ws).float()))
    return out, gaps


def recontact(cor, proxies: Sequence, hand_weight: Tensor, sprm: SettleParams | None = None) -> dict:
    """Run the re-contact pass (module docstring) on the corrector's window.

    Args:
        cor: the :class:`~h4d_fast.synth.correct.Corrector` after the proxy and exact passes (its
            ``prm`` holds the ``recontact_*`` settings of :class:`~h4d_fast.synth.collide.ResolveParams`).
        proxies: one :class:`~h4d_fast.synth.proxy.BodyProxy` per person (with their meshes).
        hand_weight: ``[F, P, 2]`` the script's IK weight of each hand toward the partner (whole capture).
        sprm: the exact pass's settings (its clearance, top-k weights, chunk).
    Returns:
        ``gap_before`` / ``gap_after`` ``[Fw, P, 2]`` (metres; the scripted hands' nearest gap, inf
        where out of reach or not scripted), per round ``rows`` (constraints) and ``far`` (firmly
        scripted hands, ``w >= 0.5``, farther than twice the gap), and the final exact pass's report
        (``mesh_depth_after``, ``inside_after``).
    """
    prm = cor.prm
    sprm = sprm or SettleParams(tolerance=prm.recontact_tolerance)
    meshes = [_Mesh(px, sprm.topk) for px in proxies]
    hands = [hand_samples(px, prm.recontact_points) for px in proxies]
    w = hand_weight[cor.lo : cor.hi].to(torch.float64).clamp(0, 1)
    w = w * w * (3 - 2 * w)  # smoothstep, as the arm IK blends
    frames = torch.nonzero(w.amax((1, 2)) > 0.02)[:, 0]
    report: dict = {"rows": [], "far": []}
    if not len(frames):
        return report
    wf = w[frames]
    pen2 = prm.pen_scale**2
    hub = prm.recontact_huber
    caps = cor.caps
    if caps is not None:
        cor.caps = cor.contact_capsules(prm.recontact_arm_overlap)
    try:
        for rnd in range(prm.recontact_rounds):
            with torch.no_grad():
                _, _, Jp, GR = cor.pose(frames)
                A = cor.transforms(Jp, GR)
                V = [m.posed(a, sprm.chunk) for m, a in zip(meshes, A)]
            att, gaps = _attraction_rows(meshes, V, hands, wf, prm.recontact_reach)
            if rnd == 0:
                report["gap_before"] = _full(gaps, frames, cor.Fw)
            # done when every firmly scripted hand within reach is within twice the gap (contact at 10 mm is far wider)
            far = torch.isfinite(gaps) & (gaps > 2 * prm.recontact_gap) & (wf >= 0.5)
            report["far"].append(int(far.sum()))
            if not bool(far.any()):
                break
            rows, _, _ = _query(meshes, A, prm.recontact_band, sprm.chunk, proxies, V)
            report["rows"].append(sum(len(r.f) for r in rows) + sum(len(a[0]) for a in att if a is not None))

            def penalty(Ja: Tensor, Ga: Tensor, rows=rows, att=att) -> Tensor:
                A = cor.transforms(Ja, Ga)
                tot = Ja.new_zeros(())
                for p in range(2):
                    r, q = rows[p], 1 - p
                    if len(r.f):
                        x = meshes[p].rows(A[p], r.f, r.i)
                        y = sum(r.bary[:, k : k + 1] * meshes[q].rows(A[q], r.f, r.tri[:, k]) for k in range(3))
                        g = ((x - y) * r.n).sum(-1)
                        tot = tot + ((sprm.clearance - g).clamp_min(0) ** 2).sum() / pen2
                    if att[p] is not None:
                        f, i, tri, bary, nrm, wt = att[p]
                        x = meshes[p].rows(A[p], f, i)
                        y = sum(bary[:, k : k + 1] * meshes[q].rows(A[q], f, tri[:, k]) for k in range(3))
                        g = ((x - y) * nrm).sum(-1)
                        e = (g - prm.recontact_gap).clamp_min(0)
                        e = torch.where(e < hub, e**2, hub * (2 * e - hub))  # Huber: a far hand pulls no harder than one 'hub' off
                        tot = tot + prm.recontact_weight * (wt * e).sum() / pen2
                return tot

            cor.optimise(frames, penalty, prm.recontact_iters, prm.recontact_trust, only=len(frames) < cor.Fw)
        st = settle_meshes(cor, proxies, sprm)
        with torch.no_grad():
            _, _, Jp, GR = cor.pose(frames)
            A = cor.transforms(Jp, GR)
            V = [m.posed(a, sprm.chunk) for m, a in zip(meshes, A)]
        _, gaps = _attraction_rows(meshes, V, hands, wf, prm.recontact_reach)
        report["gap_after"] = _full(gaps, frames, cor.Fw)
        report.update({k: st[k] for k in ("mesh_depth_after", "inside_after")})
        report["settle_rows"] = st["rows"]
    finally:
        cor.caps = caps
    return report


def _full(g: Tensor, frames: Tensor, Fw: int) -> Tensor:
    out = torch.full((Fw,) + tuple(g.shape[1:]), float("inf"), dtype=g.dtype)
    out[frames] = g
    return out


__all__ = ["hand_samples", "recontact"]
