"""Batched removal of two-person interpenetration from a scripted motion (body-model proxies).

After the script and the arm IK, the bodies (mostly the arms wrapped around the partner) still
cut into each other. :func:`resolve_interpenetration` corrects all frames at once: small extra
rotations of the spine, neck, collars, shoulders, elbows (about their hinge) and wrists, and a
horizontal root offset per person, found by L-BFGS on

* the squared penetration of each body's surface points (:class:`~h4d_fast.synth.proxy.BodyProxy`)
  into the other body's inscribed spheres, enlarged by a margin;
* the squared corrections (per joint scale), their squared second differences over frames
  (smoothness), the squared displacement of the wrists and hands (hands stay where the script put
  them, on the partner) and the squared violation of the elbow / shoulder limits.

Contact pairs come from a broad phase (per-part bounding boxes, then point-sphere distances), redone
between rounds as the pose changes. Only frames where the bodies come close are evaluated.
The variables, posing and priors are :class:`~h4d_fast.synth.correct.Corrector`'s (shared with the
exact pass); with a body model's meshes on the proxies the exact mesh pass
(:func:`h4d_fast.synth.settle.settle_meshes`) follows on the same corrections, so that the meshes
themselves, not only their proxies, do not interpenetrate; with ``ResolveParams.recontact`` the
re-contact pass (:func:`h4d_fast.synth.recontact.recontact`) then brings the hands the script puts
on the partner back onto the partner's surface (the passes above leave them centimetres off).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..body.fast import joint_transforms
from ..constants import NUM_SMPL_JOINTS
from .arm_ik import DEG, HINGE_LIMITS, clamp_arm_direction
from .correct import Corrector, blend_points
from .proxy import ARM_JOINTS, BodyProxy
from .rotations import axis_angle_to_matrix, matrix_to_axis_angle
from .settle import settle_meshes
from .skeleton import (
    L_COLLAR,
    L_ELBOW,
    L_SHOULDER,
    R_COLLAR,
    R_ELBOW,
    R_SHOULDER,
    SPINE3,
    fk_matrices,
)

_K = 6  # skinning weights kept per point / sphere in the narrow phase


@dataclass
class ResolveParams:
    """Weights and schedule of :func:`resolve_interpenetration` (scales: the size of a correction that costs 1)."""

    margin: float = 0.012  # clearance kept between a surface point and the partner's spheres (m)
    pen_scale: float = 0.002  # m
    slack: float = 0.04  # broad-phase distance beyond the margin (m)
    keep: int = 2  # spheres per (frame, point) in a round's pair set (the deepest)
    trust: float = 0.8  # joints move at most trust * slack per round (soft), so the pair set stays valid
    rounds: int = 6
    iters: int = 25  # L-BFGS iterations per round
    stride: int = 2  # penetration tested on every stride-th frame while optimising ...
    dense_rounds: int = 2  # ... except in the last rounds (every frame)
    knot_spacing: int = 4  # frames between the B-spline control points of the corrections
    # per-frame prior scales
    root: float = 0.04  # m
    spine: float = 0.12  # rad (whole spine)
    neck: float = 0.2
    collar: float = 0.12
    shoulder: float = 0.5
    elbow: float = 0.5
    wrist: float = 0.25  # rad (0.6 bent the wrists 16-25 degrees on average where 0.25 bends them 6-8: the fit cannot see them)
    # smoothness: second difference of each correction, as a fraction of its prior scale per frame^2
    accel: float = 0.03
    hand_pos: float = 0.05  # m: wrist / hand displacement scale
    limit_scale: float = 0.5 * DEG
    max_frames_gap: float = 2.6  # pelvis distance above which a frame cannot be in contact (m)
    # the capsules of :meth:`~h4d_fast.synth.correct.Corrector.capsule_term`
    arm_q: float = 0.9  # arm capsule radius: quantile of the arm surface's distance from the bone (limb_radii)
    head_q: float = 0.9  # head sphere radius: quantile of the head surface's distance from its centre
    core_overlap: float = 0.0  # overlap allowed between an arm capsule and the partner's torso / neck / head capsules (m)
    arm_overlap: float = 0.0  # overlap allowed between the two people's arm capsules (m)
    leg_capsules: bool = True  # shins and feet kept apart as capsules too
    # the re-contact pass (h4d_fast.synth.recontact): the hands the script puts on the partner brought
    # back onto the partner's surface after the passes above, without interpenetration
    recontact: bool = False
    recontact_gap: float = 0.003  # a scripted hand's nearest vertex is pulled to this gap from the partner's surface (m)
    recontact_reach: float = 0.12  # hands farther than this from the partner are left where they are (m)
    recontact_rounds: int = 3
    recontact_iters: int = 15  # L-BFGS iterations per round
    recontact_trust: float = 0.02  # joints move at most this far per round (soft, m)
    recontact_band: float = 0.02  # vertices this close to the other surface get a non-penetration constraint (m)
    recontact_weight: float = 1.0  # of the attraction relative to the non-penetration constraints
    recontact_huber: float = 0.005  # the attraction is quadratic up to this excess gap, linear beyond (m): it cannot
    # overpower the non-penetration rows and capsules (a quadratic pull on a hand 8 cm off pushed forearms through each other)
    recontact_points: int = 256  # vertices sampled per hand for the attraction
    recontact_tolerance: float = 0.0005  # the exact pass after it stops once no vertex is deeper inside than this (m)
    recontact_arm_overlap: float = 0.0  # overlap of the two people's arm capsules allowed in the pass (m; 2 cm let forearms cross)


@dataclass
class ArmInfo:
    """Per person and arm: elbow hinge axis ``a0 [3]`` (rest frame) and the rest flexion ``th0``."""

    a0: Tensor
    th0: float
    sign: float


def _topk_weights(W: Tensor, k: int = _K) -> tuple[Tensor, Tensor]:
    v, i = W.topk(k, dim=-1)
    return i, v / v.sum(-1, keepdim=True)


def _skin_sparse(x: Tensor, wj: Tensor, ww: Tensor, A: Tensor) -> Tensor:
    """LBS of rest points ``x [U, 3]`` with sparse weights ``wj, ww [U, K]`` and per-row transforms ``A [U, 24, 12]``."""
    Ak = A.gather(1, wj[..., None].expand(-1, -1, 12))  # [U, K, 12]
    T = (ww[..., None] * Ak).sum(1)  # [U, 12]
    R = T[:, :9].reshape(-1, 3, 3)
    return (R @ x[..., None])[..., 0] + T[:, 9:]


class _Pairs:
    """Candidate (frame, point of p, sphere of q) pairs for one direction p -> q."""

    def __init__(self, f: Tensor, i: Tensor, j: Tensor):
        self.f, self.i, self.j = f, i, j

    def __len__(self) -> int:
        return len(self.f)


def _cluster_bounds(X: Tensor, members: Tensor, r: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Per frame and cluster: centre ``[F, K, 3]`` (mean of the members) and bounding radius ``[F, K]``."""
    valid = members >= 0
    mi = members.clamp_min(0)
    Xm = X[:, mi]  # [F, K, m, 3]
    w = valid.to(X.dtype)
    cen = (Xm * w[None, :, :, None]).sum(2) / w.sum(1)[None, :, None]
    d = (Xm - cen[:, :, None]).norm(dim=-1)
    if r is not None:
        d = d + r[mi].to(X.dtype)[None]
    rad = torch.where(valid[None], d, torch.zeros_like(d)).amax(-1)
    return cen, rad


def _broad_phase(X: Tensor, pcl: Tensor, C: Tensor, r: Tensor, scl: Tensor, reach: float, keep: int = 6, chunk: int = 20000) -> _Pairs:
    """Pairs with ``|x_i - c_j| < r_j + reach``; per (frame, point) at most the ``keep`` deepest spheres.

    Args:
        X: posed points ``[F, M, 3]`` of one person; pcl ``[Kp, mp]`` their clusters (-1 padded).
        C: posed sphere centres ``[F, S, 3]`` of the other; r ``[S]``; scl ``[Ks, ms]`` their clusters.
    """
    M = X.shape[1]
    r = r.to(X.dtype)
    cp, rp = _cluster_bounds(X, pcl)
    cs, rs = _cluster_bounds(C, scl, r)
    near = torch.cdist(cp, cs) < rp[:, :, None] + rs[:, None, :] + reach  # [F, Kp, Ks]
    tri = torch.nonzero(near)  # [T, 3] (frame, point cluster, sphere cluster)
    fs, is_, js, ss = [], [], [], []
    for s0 in range(0, len(tri), chunk):
        t = tri[s0 : s0 + chunk]
        pm = pcl[t[:, 1]]  # [T, mp]
        sm = scl[t[:, 2]]  # [T, ms]
        xa = X[t[:, 0, None], pm.clamp_min(0)]  # [T, mp, 3]
        cb = C[t[:, 0, None], sm.clamp_min(0)]  # [T, ms, 3]
        score = (r[sm.clamp_min(0)] + reach)[:, None, :] - torch.cdist(xa, cb)  # [T, mp, ms]
        ok = (score > 0) & (pm >= 0)[:, :, None] & (sm >= 0)[:, None, :]
        hit = torch.nonzero(ok)
        if len(hit):
            fs.append(t[hit[:, 0], 0])
            is_.append(pm[hit[:, 0], hit[:, 1]])
            js.append(sm[hit[:, 0], hit[:, 2]])
            ss.append(score[hit[:, 0], hit[:, 1], hit[:, 2]])
    if not fs:
        e = torch.zeros(0, dtype=torch.long)
        return _Pairs(e, e, e)
    f, i, j, sc = torch.cat(fs), torch.cat(is_), torch.cat(js), torch.cat(ss)
    if keep > 0:
        # the deepest few spheres per (frame, point)
        key = f * M + i
        o = torch.argsort(sc, descending=True, stable=True)
        o = o[torch.argsort(key[o], stable=True)]
        ks = key[o]
        start = torch.ones_like(ks, dtype=torch.bool)
        start[1:] = ks[1:] != ks[:-1]
        gid = torch.cumsum(start.long(), 0) - 1
        first = torch.nonzero(start)[:, 0]
        rank = torch.arange(len(ks)) - first[gid]
        o = o[rank < keep]
        f, i, j = f[o], i[o], j[o]
    return _Pairs(f, i, j)


class _Batch:
    """Precomputed gathers of one round: unique (frame, point) and (frame, sphere) rows and the pairs."""

    def __init__(self, pr: _Pairs, fmap: Tensor, xp: dict, xq: dict, margin: float, dt: torch.dtype):
        fl = fmap[pr.f]
        M = xp["x"].shape[0]
        S = xq["c"].shape[0]
        up, self.inv_p = torch.unique(fl * M + pr.i, return_inverse=True)
        fp, ip = up // M, up % M
        self.x = xp["x"][ip].to(dt)
        self.xa = (fp[:, None] * NUM_SMPL_JOINTS + xp["pj"][ip])  # [U, K] rows of the flat transforms
        self.xw = xp["pw"][ip].to(dt)
        us, self.inv_s = torch.unique(fl * S + pr.j, return_inverse=True)
        fs, js = us // S, us % S
        self.c = xq["c"][js].to(dt)
        self.ca = (fs[:, None] * NUM_SMPL_JOINTS + xq["sj"][js])
        self.cw = xq["sw"][js].to(dt)
        self.need = (xq["r"][pr.j] + margin).to(dt)

    @staticmethod
    def skin(x: Tensor, rows: Tensor, w: Tensor, A: Tensor) -> Tensor:
        Ak = A.reshape(-1, 12)[rows]  # [U, K, 12]
        T = (w[..., None] * Ak).sum(1)
        return (T[:, :9].reshape(-1, 3, 3) @ x[..., None])[..., 0] + T[:, 9:]

    def penetration(self, Ap: Tensor, Aq: Tensor) -> Tensor:
        """``[N]`` penetration depth (+ margin) of every pair (0 when apart)."""
        x = self.skin(self.x, self.xa, self.xw, Ap)
        c = self.skin(self.c, self.ca, self.cw, Aq)
        d = (x[self.inv_p] - c[self.inv_s]).norm(dim=-1)
        return (self.need - d).clamp_min(0)


def resolve_interpenetration(
    R: Tensor,
    transl: Tensor,
    rest: Tensor,
    proxies: Sequence[BodyProxy],
    arms: Sequence[Sequence[ArmInfo]],
    hand_weight: Optional[Tensor] = None,
    params: Optional[ResolveParams] = None,
    capsules: Optional[tuple[Tensor, Tensor]] = None,
) -> tuple[Tensor, Tensor, dict]:
    """Correct local rotations ``R [F, P, 24, 3, 3]`` and ``transl [F, P, 3]`` so that the two bodies do not interpenetrate.

    Args:
        R, transl: scripted pose (z-up world); rest: rest joints ``[P, 24, 3]``.
        proxies: one :class:`BodyProxy` per person (rest joints equal to ``rest``).
        arms: ``arms[p][h]`` hinge info of person ``p``'s left (h = 0) / right (h = 1) elbow.
        hand_weight: ``[F, P, 2]`` how firmly each hand keeps its scripted position (default 1).
        params: :class:`ResolveParams`.
        capsules: the skeletons' capsule radii ``[P, C]`` and head-sphere centres ``[P, 3]`` (arms kept
            out of the partner's head, neck and torso capsules; :class:`~h4d_fast.synth.correct.Corrector`).
    Returns:
        corrected ``R``, ``transl`` (float64) and a report dict (proxy penetration before/after, sizes).
    """
    prm = params or ResolveParams()
    F, P = R.shape[:2]
    dt = torch.float32
    R64 = R.to(torch.float64)
    T64 = transl.to(torch.float64)
    report: dict = {"frames": 0}
    # frames where the bodies can touch: pelvis distance below the sum of the bodies' reaches
    J0, _ = fk_matrices(rest.to(torch.float64), R64, T64)
    ext = (J0 - J0[:, :, :1]).norm(dim=-1).amax(-1) + 0.15  # [F, P] joints + hand / head / foot surface
    near = (J0[:, 0, 0] - J0[:, 1, 0]).norm(dim=-1) < ext.sum(-1)
    fidx = torch.nonzero(near)[:, 0]
    if len(fidx) == 0:
        return R64, T64, report
    pad = 8  # smoothness needs neighbours
    lo, hi = max(0, int(fidx.min()) - pad), min(F, int(fidx.max()) + 1 + pad)
    Fw = hi - lo
    report["frames"] = Fw
    cor = Corrector(R64, T64, rest.to(torch.float64), arms, hand_weight, prm, lo, hi, proxies, capsules)
    prox = []
    for p in range(P):
        px = proxies[p]
        pj, pw = _topk_weights(px.point_weights)
        sj, sw = _topk_weights(px.sphere_weights)
        prox.append(dict(x=px.points.to(dt), pj=pj, pw=pw.to(dt), c=px.sphere_centres.to(dt), sj=sj, sw=sw.to(dt), r=px.sphere_radii.to(dt),
                         pcl=px.point_clusters, scl=px.sphere_clusters, Wp=px.point_weights.to(dt), Ws=px.sphere_weights.to(dt)))

    def posed_all(Jp: Tensor, GR: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Dense LBS of every point and sphere (no grad), per person: ``[n, M, 3]``, ``[n, S, 3]``."""
        return [(blend_points(prox[p]["Wp"], A, prox[p]["x"]), blend_points(prox[p]["Ws"], A, prox[p]["c"]))
                for p, A in enumerate(cor.transforms(Jp, GR))]  # A: [n, 24, 12]

    def find_pairs(frames: Tensor, reach: float) -> list[_Pairs]:
        with torch.no_grad():
            _, _, Jp, GR = cor.pose(frames)
            posed = posed_all(Jp, GR)
            out = []
            for p in range(P):
                q = 1 - p
                pr = _broad_phase(posed[p][0], prox[p]["pcl"], posed[q][1], prox[q]["r"], prox[q]["scl"], reach, keep=prm.keep)
                out.append(_Pairs(frames[pr.f], pr.i, pr.j))
            return out

    def batches(pairs: list[_Pairs], act: Tensor) -> list[_Batch]:
        fmap = torch.full((Fw,), -1, dtype=torch.long)
        fmap[act] = torch.arange(len(act))
        return [_Batch(pairs[p], fmap, prox[p], prox[1 - p], prm.margin, dt) for p in range(P)]

    def pen_terms(bt: list[_Batch], Jp: Tensor, GR: Tensor) -> list[Tensor]:
        A = cor.transforms(Jp, GR)
        return [bt[p].penetration(A[p], A[1 - p]) for p in range(P)]

    allf = torch.arange(Fw)
    # penetration is evaluated on every ``stride``-th frame (the corrections are splines over ~4 frames)
    subf = torch.arange(0, Fw, max(1, prm.stride))
    pen_scale2 = prm.pen_scale**2

    def measure(frames: Tensor) -> tuple[float, float, Tensor]:
        """Proxy penetration (plus margin): sum of squares, max, per-frame max ``[F]``."""
        with torch.no_grad():
            pairs = find_pairs(frames, prm.margin)
            fm = torch.zeros(F, dtype=torch.float64)
            act = torch.unique(torch.cat([pr.f for pr in pairs]))
            if len(act) == 0:
                return 0.0, 0.0, fm
            bt = batches(pairs, act)
            _, _, Ja, Ga = cor.pose(act)
            pe = pen_terms(bt, Ja, Ga)
            for p in range(P):
                if len(pairs[p]):
                    fm.scatter_reduce_(0, pairs[p].f + lo, pe[p].to(torch.float64), "amax")
            return float(sum((x**2).sum() for x in pe)), float(fm.max()), fm

    if prm.rounds <= 0:
        b = measure(subf)
        report["proxy_pen_before"] = b[:2]
    for rnd in range(prm.rounds):
        pairs = find_pairs(allf if rnd >= prm.rounds - prm.dense_rounds else subf, prm.margin + prm.slack)
        act = torch.unique(torch.cat([pr.f for pr in pairs]))
        if rnd == 0:
            report["pairs_first_round"] = int(sum(len(pr) for pr in pairs))
        if len(act) == 0:
            break
        bt = batches(pairs, act)
        cor.optimise(act, lambda Ja, Ga, bt=bt: sum((x**2).sum() for x in pen_terms(bt, Ja, Ga)) / pen_scale2, prm.iters, prm.slack * prm.trust)

    a = measure(allf)
    report["proxy_pen_after"] = a[:2]
    report["frame_max_after"] = a[2]
    if all(px.mesh_vertices is not None for px in proxies):
        def proxy_term(frames: Tensor):
            """The proxy penetration of ``frames`` as ``(frames with pairs, penalty(Ja, Ga) on them)``."""
            pairs = find_pairs(frames, prm.margin + prm.slack)
            act = torch.unique(torch.cat([pr.f for pr in pairs]))
            bt = batches(pairs, act)
            return act, lambda Ja, Ga: sum((x**2).sum() for x in pen_terms(bt, Ja, Ga)) / pen_scale2

        st = settle_meshes(cor, proxies, proxy_term=proxy_term)
        report["mesh_rows"] = st["rows"]
        for k in ("mesh_depth_before", "mesh_depth_after"):
            full = torch.zeros(F, dtype=torch.float64)
            full[lo:hi] = st[k]
            report[k] = full
        if prm.recontact:
            from .recontact import recontact

            t_rc = time.perf_counter()
            hw = hand_weight if hand_weight is not None else torch.ones(F, P, 2, dtype=torch.float64)
            rc = recontact(cor, proxies, hw)
            report["recontact_s"] = time.perf_counter() - t_rc
            report["recontact_rows"] = rc["rows"]
            report["recontact_far"] = rc["far"]
            for k in ("gap_before", "gap_after", "mesh_depth_after"):
                if k in rc:
                    full = torch.full((F,) + tuple(rc[k].shape[1:]), float("inf") if k.startswith("gap") else 0.0, dtype=torch.float64)
                    full[lo:hi] = rc[k]
                    report[("recontact_" if k.startswith("gap") else "") + k] = full
    Rout, Tout = cor.result()
    Rout = _enforce_limits(Rout, Tout, rest.to(torch.float64), arms)
    return Rout, Tout, report


def _enforce_limits(Rl: Tensor, Tr: Tensor, rest: Tensor, arms: Sequence[Sequence[ArmInfo]]) -> Tensor:
    """Hard elbow range ``[0, 150]`` degrees about the hinge and the shoulder cone (:func:`clamp_arm_direction`)."""
    Rl = Rl.clone()
    P = Rl.shape[1]
    for p in range(P):
        for h, el in enumerate((L_ELBOW, R_ELBOW)):
            ai = arms[p][h]
            a0 = ai.a0.to(Rl.dtype)
            flex = (matrix_to_axis_angle(Rl[:, p, el]) * a0).sum(-1) + ai.th0
            flex = flex.clamp(0.0, HINGE_LIMITS["elbow"][1] * DEG)
            Rl[:, p, el] = axis_angle_to_matrix(a0 * (flex - ai.th0)[:, None])
    J, G = fk_matrices(rest, Rl, Tr)
    for p in range(P):
        for h, (col, sh, el) in enumerate(((L_COLLAR, L_SHOULDER, L_ELBOW), (R_COLLAR, R_SHOULDER, R_ELBOW))):
            u = J[:, p, el] - J[:, p, sh]
            u = u / u.norm(dim=-1, keepdim=True)
            uc = clamp_arm_direction(u, G[:, p, SPINE3], arms[p][h].sign)
            # minimal rotation u -> uc (world), applied to the shoulder's global rotation
            ax = torch.linalg.cross(u, uc)
            s_ = ax.norm(dim=-1, keepdim=True)
            c_ = (u * uc).sum(-1, keepdim=True).clamp(-1, 1)
            ang = torch.atan2(s_, c_)
            aa = torch.where(s_ > 1e-12, ax / s_.clamp_min(1e-12) * ang, torch.zeros_like(ax))
            Gsh = axis_angle_to_matrix(aa) @ G[:, p, sh]
            Rl[:, p, sh] = G[:, p, col].transpose(-1, -2) @ Gsh
    return Rl


# ------------------------------------------------------------------ helpers for the script
def _posed_subset(px: BodyProxy, GR: Tensor, Jp: Tensor, spheres: bool, keep: Tensor) -> Tensor:
    """Posed points (or sphere centres) ``[B, n, 3]`` (float32) of the entries selected by ``keep``."""
    x = (px.sphere_centres if spheres else px.points)[keep].to(torch.float32)
    W = (px.sphere_weights if spheres else px.point_weights)[keep].to(torch.float32)
    GR = GR.to(torch.float32)
    A = joint_transforms(GR, Jp.to(torch.float32), px.rest_joints.to(torch.float32))
    return blend_points(W, A, x)


def non_arm(part: Tensor) -> Tensor:
    """Mask of the entries whose dominant joint is not an arm joint (shoulder .. hand)."""
    return ~torch.isin(part, torch.tensor(ARM_JOINTS))


def posed_spheres(px: BodyProxy, GR: Tensor, Jp: Tensor, keep: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Sphere centres ``[B, n, 3]`` (float64) and radii ``[n]`` of one person, optionally a subset."""
    keep = torch.ones(len(px.sphere_radii), dtype=torch.bool) if keep is None else keep
    return _posed_subset(px, GR, Jp, True, keep).to(torch.float64), px.sphere_radii[keep]


def body_penetration(J: Tensor, G: Tensor, proxies: Sequence[BodyProxy], margin: float = 0.0, arms: bool = False,
                     frames: Optional[Tensor] = None) -> Tensor:
    """Per frame, the deepest penetration (m, plus ``margin``) of a surface point of one person into the
    other's spheres, both ways; arm parts are left out unless ``arms``.

    Args:
        J, G: posed joints ``[F, 2, 24, 3]`` and global rotations ``[F, 2, 24, 3, 3]``.
        frames: optional subset of frames to test (others report 0).
    """
    F = J.shape[0]
    out = torch.zeros(F, dtype=torch.float64)
    fr = torch.arange(F) if frames is None else frames
    if len(fr) == 0:
        return out
    with torch.no_grad():
        for p in range(2):
            q = 1 - p
            pxp, pxq = proxies[p], proxies[q]
            pcl, scl = pxp.point_clusters, pxq.sphere_clusters
            if not arms:
                pcl = pcl[non_arm(pxp.point_part[pcl[:, 0]])]
                scl = scl[non_arm(pxq.sphere_part[scl[:, 0]])]
            allp = torch.ones(len(pxp.point_part), dtype=torch.bool)
            alls = torch.ones(len(pxq.sphere_part), dtype=torch.bool)
            X = _posed_subset(pxp, G[fr, p], J[fr, p], False, allp)
            C = _posed_subset(pxq, G[fr, q], J[fr, q], True, alls)
            r = pxq.sphere_radii.to(torch.float32)
            pr = _broad_phase(X, pcl, C, r, scl, margin, keep=0)
            if len(pr):
                d = (X[pr.f, pr.i] - C[pr.f, pr.j]).norm(dim=-1)
                pen = (r[pr.j] + margin - d).to(torch.float64)
                m = torch.zeros(len(fr), dtype=torch.float64).scatter_reduce_(0, pr.f, pen, "amax")
                out[fr] = torch.maximum(out[fr], m)
    return out


def push_out_spheres(x: Tensor, C: Tensor, r: Tensor, clear: float, origin: Tensor, up: Tensor, iters: int = 6) -> Tensor:
    """Move points ``x [F, 3]`` out of the spheres ``C [F, S, 3]`` (radii ``r [S]``, plus ``clear``), radially
    away from the vertical axis through ``origin [F, 3]`` along ``up [F, 3]`` (continuous in ``x``)."""
    rel = x - origin
    radial = rel - (rel * up).sum(-1, keepdim=True) * up
    radial = radial / radial.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    for _ in range(iters):
        pen = (r[None] + clear - (x[:, None] - C).norm(dim=-1)).amax(-1).clamp_min(0)  # [F]
        if float(pen.max()) < 1e-4:
            break
        x = x + radial * pen[:, None]
    return x
