"""The fit's stage objective evaluated without autograd: value, analytic gradient, and the pieces
of its Gauss-Newton matrix.

:class:`Objective` computes the loss of :meth:`h4d_fast.pipeline.fit._Fitter.total` (the terms
of :mod:`h4d_fast.pipeline.fit_losses`, split into per-body and per-person parts) and its
gradient with respect to the stage's parameters in a few dozen batched operations: the
joints-only forward keeps its kinematic state, ``dE/dX`` of the joint-based terms (keypoints,
limbs, symmetry, temporal positions) is written out term by term, and
:func:`h4d_fast.body.jacobian.joints_vjp` maps it (plus the 6D-rotation part of the temporal term)
to the pose; the betas go through the Jacobian ``d joints / d betas`` (``K`` columns). The
collision term's gradient is the op's vertex gradient mapped to the pose analytically
(:mod:`h4d_fast.body.sparse_skin`; autograd through the full meshes for models with pose
correctives). Used by the first-order optimizers (the closure of LBFGS / Adam, optionally
captured in a CUDA graph) and by the Gauss-Newton solver (:mod:`h4d_fast.pipeline.fit_gn`). The
value and the gradient equal autograd through the loss definitions (tests).
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
from torch import Tensor

from ..body.fast import rot6d
from ..body.jacobian import JointsJacobian, joints_vjp, joints_with_jacobian
from ..body.sparse_skin import sparse_skin
from ..constants import NUM_SMPL_JOINTS
from . import fit_losses as L

if TYPE_CHECKING:  # pragma: no cover
    from .fit import _Fitter

NUM_POSE = 3 * NUM_SMPL_JOINTS



# ----------------------------------------------------------------------------- temporal band
class TemporalBand:
    """``D^T M D`` of the temporal difference operator over ``F`` frames (banded, symmetric).

    ``D`` is the second difference (``"acceleration"``: rows ``x_t - 2 x_{t+1} + x_{t+2}``) or the
    first difference (``"velocity"``). ``M`` keeps the rows that lie in one run of a person's
    presence (``present [F, P]``, :func:`~h4d_fast.pipeline.fit_losses.temporal_rows`; default: all
    rows), so every segment of a track is smoothed on its own and nothing links frames across an
    absence. ``coeff[k][s, p] = (D^T M_p D)[s, s + k]`` (``p`` broadcast when no presence is given).
    ``rows``: the number of rows kept over all people (the temporal term's mean is over them).
    """

    def __init__(self, F: int, mode: str, dtype: torch.dtype, device: torch.device, present: Tensor | None = None):
        if mode == "acceleration":
            st = (1.0, -2.0, 1.0)
        elif mode == "velocity":
            st = (-1.0, 1.0)
        else:
            raise ValueError(f"temporal mode must be 'acceleration' or 'velocity', got {mode!r}")
        self.stencil = st
        self.mode = mode
        self.F = F
        self.T = max(0, F - len(st) + 1)  # rows of D
        if present is None:
            self.mask = None
            m = torch.ones(self.T, 1, dtype=dtype, device=device)
            self.rows = float(self.T)  # per person; multiplied by P by the callers' row count
            self.per_person = False
        else:
            self.mask = L.temporal_rows(present.to(device=device, dtype=torch.bool), mode).to(dtype)  # [T, P]
            m = self.mask
            self.rows = float(m.sum())
            self.per_person = True
        self.coeff: list[Tensor] = []
        for k in range(len(st)):
            c = torch.zeros(max(F - k, 0), m.shape[1], dtype=dtype, device=device)
            for a in range(len(st) - k):
                if self.T:
                    c[a : a + self.T] += st[a] * st[a + k] * m
            self.coeff.append(c)

    def count(self, P: int) -> float:
        """Rows of the temporal term over ``P`` people."""
        return self.rows if self.per_person else self.rows * P

    def _m(self, like: Tensor) -> Tensor | None:
        if self.mask is None:
            return None
        return self.mask.view(*self.mask.shape, *([1] * (like.dim() - 2))).to(like.dtype)

    def diff(self, x: Tensor) -> Tensor:
        """``M D x`` along dim 0: ``[F, P, ...]`` -> ``[T, P, ...]`` (rows off a segment are 0)."""
        d = L._diff(x, self.mode)
        m = self._m(d)
        return d if m is None else d * m

    def adjoint(self, d: Tensor) -> Tensor:
        """``D^T M d``: ``[T, P, ...]`` -> ``[F, P, ...]``."""
        m = self._m(d)
        if m is not None:
            d = d * m
        out = d.new_zeros(self.F, *d.shape[1:])
        for a, s in enumerate(self.stencil):
            out[a : a + self.T] += s * d
        return out

    def _c(self, k: int, like: Tensor) -> Tensor:
        c = self.coeff[k]
        return c.view(*c.shape, *([1] * (like.dim() - 2))).to(like.dtype)

    def diagonal(self) -> Tensor:
        """``[F, P]`` (``[F, 1]`` without presence) diagonal of ``D^T M D``."""
        return self.coeff[0]

    def offdiag(self, y: Tensor) -> Tensor:
        """``(D^T M D - diag) y`` along dim 0 (``y [F, P, ...]``)."""
        out = torch.zeros_like(y)
        F = self.F
        for k in range(1, len(self.coeff)):
            if F <= k or not self.T:
                continue
            c = self._c(k, y)
            out[: F - k] += c * y[k:]
            out[k:] += c * y[: F - k]
        return out


# ----------------------------------------------------------------------------- the solver

class Objective:
    """A stage's loss and gradient over a :class:`~h4d_fast.pipeline.fit._Fitter`'s parameters."""

    def __init__(self, fitter: "_Fitter"):
        self.f = fitter
        fast = fitter.fast
        self.fast = fast
        self.F, self.P = fitter.F, fitter.P
        dev, dt = fitter.kp.device, fitter.kp.dtype
        self.dev, self.dt = dev, dt
        self.NJ = NUM_SMPL_JOINTS + int(fast.vj_ids.numel())
        self.coco = fitter.coco_idx
        lim = torch.tensor(L.FIT_LIMBS, dtype=torch.long, device=dev)
        self.limb_a, self.limb_b = self.coco[lim[:, 0]], self.coco[lim[:, 1]]  # model joint ids
        self.pairs = torch.tensor(L.FIT_LIMB_PAIRS, dtype=torch.long, device=dev)
        pres = fitter.present
        self.band = TemporalBand(self.F, fitter.cfg.temporal, dt, dev, pres)
        self.n_rows = self.band.count(self.P)  # rows of the temporal term
        self.has_temporal = self.n_rows > 0
        # present person-frames: the per-body terms are means over them, absent ones weigh 0
        self.bmask = None if pres is None else pres.to(dt)  # [F, P]
        self.n_bodies = float(self.F * self.P) if pres is None else max(float(pres.sum()), 1.0)
        self.limb_den = float((fitter.limb_ok.sum() * self.F) if pres is None else (fitter.limb_ok * pres.to(dt).sum(0)[:, None]).sum())
        self.sw = fitter.w.sum().clamp_min(1e-12)
        self.sw1 = fitter.w_stage1.sum().clamp_min(1e-12)
        self.sparse = fast.posedirs is None
        self.skin = sparse_skin(fast) if self.sparse else None
        self.person_of = torch.arange(self.P, device=dev)
        self._sign: Tensor | None = None

    # -- parameters
    def pose(self) -> Tensor:
        p = self.f.p
        return torch.cat([p["global_orient"], p["body_pose"]], -1)  # [F, P, 72]


    def forward(self, pose: Tensor, betas: Tensor, transl: Tensor, want_pose: bool = False, want_betas: bool = False,
                want_rot6d: bool = False, pose_joints: list[int] | None = None) -> JointsJacobian:
        F, P = self.F, self.P
        B = F * P
        be = betas[None].expand(F, P, -1).reshape(B, -1)
        return joints_with_jacobian(self.fast, pose.reshape(B, NUM_POSE), be, transl.reshape(B, 3), want_pose=want_pose,
                                    want_betas=want_betas, want_rot6d=want_rot6d, pose_joints=pose_joints)

    # -- the loss, split into per-body and per-person parts
    def losses(self, X: Tensor, rot: Tensor, pose: Tensor, betas: Tensor, stage: int, w: Mapping[str, float]) -> tuple[Tensor, Tensor]:
        """``(body [F, P], person [P])`` parts of the stage's loss without the collision term
        (their total equals :meth:`_Fitter.total` without collision; tested)."""
        f, cfg = self.f, self.f.cfg
        F, P = self.F, self.P
        body = X.new_zeros(F, P)
        person = X.new_zeros(P)
        coco = X.index_select(2, self.coco)
        if w["joint"]:
            wk = f.w_stage1 if stage == 1 else f.w
            d2 = ((coco - f.kp) ** 2).sum(-1)
            rho = L.gmof(d2, cfg.kp_sigma) if cfg.kp_sigma and cfg.kp_sigma > 0 else d2
            body = body + w["joint"] * (wk * rho).sum(-1) / ((self.sw1 if stage == 1 else self.sw) * L.S_KP ** 2)
        bp = pose[..., 3:]
        nb = self.n_bodies
        per_body = X.new_zeros(F, P)  # the terms of each present body (absent bodies: masked below)
        if w["reg"]:
            per_body = per_body + w["reg"] * (bp * bp).sum(-1) / (nb * bp.shape[-1])
        if stage == 3 and cfg.w_hyperext:
            a = (bp.index_select(-1, L._index(L.HYPEREXT_INDEX, bp.device)) * self._hyp_sign(bp)).clamp_min(0)
            per_body = per_body + cfg.w_hyperext * (torch.expm1(a) ** 2).sum(-1) / (nb * len(L.HYPEREXT_INDEX))
        if w["limb"] or w["symm"]:
            Ln = L.limb_lengths(coco)  # [F, P, 12]
            if w["limb"]:
                r = (Ln - f.limb_tgt) / L.S_LEN
                per_body = per_body + w["limb"] * (f.limb_ok * r * r).sum(-1) / max(self.limb_den, 1e-12)
            if w["symm"]:
                d = (Ln.index_select(-1, self.pairs[:, 0]) - Ln.index_select(-1, self.pairs[:, 1])) / L.S_SYM
                per_body = per_body + w["symm"] * (d * d).sum(-1) / (nb * self.pairs.shape[0])
        body = body + (per_body if self.bmask is None else per_body * self.bmask)
        if w["temporal"] and self.has_temporal:
            n = self.n_rows
            dr = self.band.diff(rot6d(rot[:, :, 1:]))  # [T, P, 23, 6]
            dx = self.band.diff(X)
            S_R, S_P = L.S_ROT[cfg.temporal], L.S_POS[cfg.temporal]
            person = person + w["temporal"] * ((dr * dr).sum((0, 2, 3)) / (n * (NUM_SMPL_JOINTS - 1) * S_R ** 2)
                                               + (dx * dx).sum((0, 2, 3)) / (n * X.shape[2] * S_P ** 2))
        if w["shape"]:
            person = person + w["shape"] * (betas * betas).sum(-1) / betas.numel()
        return body, person


    def _hyp_sign(self, like: Tensor) -> Tensor:
        if self._sign is None:  # made once: no host-to-device copy inside a captured graph
            self._sign = torch.tensor(L.HYPEREXT_SIGN, dtype=like.dtype, device=like.device)
        return self._sign

    # -- gradient and Gauss-Newton rows in joint space
    def joint_terms(self, X: Tensor, stage: int, w: Mapping[str, float], curvature: bool = True) -> tuple[Tensor, Tensor | None, list[tuple[str, Tensor, Tensor, None]]]:
        """The joint-based terms at the joints ``X [F, P, NJ, 3]``: ``dE/dX [F, P, NJ, 3]``, and
        (``curvature``) their Gauss-Newton curvature: the isotropic weight per joint ``[F, P, NJ]``
        (keypoints, temporal positions' diagonal) and the length rows ``(kind, unit vectors of the
        limbs [F, P, 12, 3], square-root weights [F, P, R], None)`` of the limb / symmetry terms."""
        f, cfg = self.f, self.f.cfg
        F, P, NJ = self.F, self.P, self.NJ
        gX = torch.zeros_like(X)
        m = X.new_zeros(F, P, NJ) if curvature else None
        rows: list[tuple[str, Tensor, Tensor, None]] = []
        coco = X.index_select(2, self.coco)
        if w["joint"]:
            wk = f.w_stage1 if stage == 1 else f.w
            r = coco - f.kp
            d2 = (r * r).sum(-1)
            if cfg.kp_sigma and cfg.kp_sigma > 0:
                s2 = cfg.kp_sigma ** 2
                rp = (s2 / (s2 + d2)) ** 2
            else:
                rp = torch.ones_like(d2)
            c = 2 * w["joint"] / ((self.sw1 if stage == 1 else self.sw) * L.S_KP ** 2) * wk * rp  # [F, P, 17]
            gX.index_add_(2, self.coco, c[..., None] * r)
            if curvature:
                m.index_add_(2, self.coco, c)
        if w["limb"] or w["symm"]:
            a, b = self.limb_a, self.limb_b
            vec = X.index_select(2, a) - X.index_select(2, b)  # [F, P, 12, 3]
            ln = vec.norm(dim=-1)
            u = vec / ln.clamp_min(1e-9)[..., None]
            bm = X.new_ones(F, P) if self.bmask is None else self.bmask  # absent bodies: no length terms
            if w["limb"]:
                om = w["limb"] * f.limb_ok / max(self.limb_den, 1e-12) * bm[..., None]  # [F, P, 12]
                r = (ln - f.limb_tgt) / L.S_LEN
                gv = (2 * om * r / L.S_LEN)[..., None] * u  # dE/dX_a
                gX.index_add_(2, torch.cat([a, b]), torch.cat([gv, -gv], 2))
                if curvature:
                    rows.append(("limb", u, (2 * om).sqrt() / L.S_LEN, None))
            if w["symm"]:
                p1, p2 = self.pairs[:, 0], self.pairs[:, 1]
                om = w["symm"] / (self.n_bodies * p1.numel()) * bm[..., None]  # [F, P, 1]
                r = (ln.index_select(-1, p1) - ln.index_select(-1, p2)) / L.S_SYM  # [F, P, 4]
                g1 = (2 * om * r / L.S_SYM)[..., None] * u.index_select(2, p1)
                g2 = (2 * om * r / L.S_SYM)[..., None] * u.index_select(2, p2)
                gX.index_add_(2, torch.cat([a[p1], b[p1], a[p2], b[p2]]), torch.cat([g1, -g1, -g2, g2], 2))
                if curvature:
                    rows.append(("symm", u, ((2 * om).sqrt() / L.S_SYM).expand(F, P, p1.numel()), None))
        if w["temporal"] and self.has_temporal:
            om = w["temporal"] / (self.n_rows * NJ * L.S_POS[cfg.temporal] ** 2)
            gX = gX + 2 * om * self.band.adjoint(self.band.diff(X))
            if curvature:
                m = m + (2 * om) * self.band.diagonal()[..., None]
        return gX, m, rows

    # -- collision term at a point (contact pairs only)
    def collision(self, pose: Tensor, betas: Tensor, transl: Tensor, jj: JointsJacobian | None) -> tuple[Tensor, Tensor, Tensor]:
        """Value and gradient (``[F, P, 72]`` pose, ``[F, P, 3]`` transl) of the collision term over
        the fitter's contact pairs (:meth:`~h4d_fast.pipeline.fit._Fitter.collision_pairs`)."""
        f, cfg = self.f, self.f.cfg
        F, P = self.F, self.P
        B = F * P
        ids, pairs = f.collision_pairs()
        person = ids % P
        kw = f.collision_kw()
        gp = pose.new_zeros(B, NUM_POSE)
        gt = pose.new_zeros(B, 3)
        pose_u = pose.reshape(B, NUM_POSE).index_select(0, ids)
        tr = transl.reshape(B, 3).index_select(0, ids)
        if not self.sparse:  # pose correctives: autograd through the full meshes
            with torch.enable_grad():
                po = pose_u.detach().requires_grad_(True)
                tr = tr.detach().requires_grad_(True)
                v, _ = self.fast.vertices(po[:, :3], po[:, 3:], betas.index_select(0, person), tr)
                lc = L.pair_collision_term(v, pairs, f.faces, F, **kw)
                dpo, dtr = torch.autograd.grad(lc, (po, tr))
        else:
            if jj is None:
                jj = self.forward(pose, betas, transl)
            J = self.fast.rest_joints(betas).index_select(0, person)
            GR, Gt = self.fast.kinematics(jj.rot.index_select(0, ids), J)
            u = self.skin.rest(betas)
            V = self.skin.vertices(GR, Gt, J, u, person, tr)  # [U, N, 3]
            term = L.pair_collision_term_grad_inside if cfg.collision_inside_only else L.pair_collision_term_grad
            lc, gv = term(V, pairs, f.faces, F, **kw)
            dpo, dtr = self.skin.pose_gradient(gv, pose_u, GR, Gt, J, u, person)
        gp = gp.index_copy(0, ids, dpo.reshape(-1, NUM_POSE).to(gp.dtype)).view(F, P, NUM_POSE)
        gt = gt.index_copy(0, ids, dtr.reshape(-1, 3).to(gt.dtype)).view(F, P, 3)
        return lc.detach(), gp, gt

    def value_and_grad(self, stage: int, w: Mapping[str, float], names: tuple[str, ...]) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss (0-dim) and its gradient with respect to ``names`` (parameter names of the
        fitter) at the fitter's current parameters; same value as ``_Fitter.total``."""
        f, cfg = self.f, self.f.cfg
        F, P, NJ = self.F, self.P, self.NJ
        B = F * P
        p = f.p
        pose, betas, transl = self.pose(), p["betas"], p["transl"]
        want_betas = "betas" in names
        jj = self.forward(pose, betas, transl, want_betas=want_betas)
        X = jj.joints.view(F, P, NJ, 3)
        rot = jj.rot.view(F, P, NUM_SMPL_JOINTS, 3, 3)
        body, person = self.losses(X, rot, pose, betas, stage, w)
        E = body.sum() + person.sum()
        gX, _, _ = self.joint_terms(X, stage, w, curvature=False)
        grads: dict[str, Tensor] = {}
        if "global_orient" in names or "body_pose" in names:
            g6 = None
            if "body_pose" in names and w["temporal"] and self.has_temporal:
                om = w["temporal"] / (self.n_rows * (NUM_SMPL_JOINTS - 1) * L.S_ROT[cfg.temporal] ** 2)
                g6 = (2 * om * self.band.adjoint(self.band.diff(rot6d(rot[:, :, 1:])))).reshape(B, NUM_SMPL_JOINTS - 1, 6)
            gp = joints_vjp(self.fast, jj, gX.reshape(B, NJ, 3), g6).reshape(F, P, NUM_POSE)
            if "body_pose" in names:
                gp = gp + torch.cat([torch.zeros_like(gp[..., :3]), self.body_pose_grad(pose[..., 3:], stage, w)], -1)
            grads["global_orient"], grads["body_pose"] = gp[..., :3], gp[..., 3:]
        if "transl" in names:
            grads["transl"] = gX.sum(2)
        if want_betas:
            gb = torch.einsum("bjxk,bjx->bk", jj.d_betas, gX.reshape(B, NJ, 3)).view(F, P, -1).sum(0)
            if w["shape"]:
                gb = gb + 2 * w["shape"] / betas.numel() * betas
            grads["betas"] = gb
        if w.get("collision") and f.collision_active():
            ec, cgp, cgt = self.collision(pose, betas, transl, jj)
            E = E + w["collision"] * ec
            if "global_orient" in grads:
                grads["global_orient"] = grads["global_orient"] + w["collision"] * cgp[..., :3]
                grads["body_pose"] = grads["body_pose"] + w["collision"] * cgp[..., 3:]
            if "transl" in grads:
                grads["transl"] = grads["transl"] + w["collision"] * cgt
        return E, {k: grads[k].contiguous() for k in names}

    def body_pose_grad(self, bp: Tensor, stage: int, w: Mapping[str, float]) -> Tensor:
        """Gradient of the parameter-space terms (pose regularisation, hyper-extension) ``[F, P, 69]``
        (0 on absent bodies)."""
        cfg = self.f.cfg
        g = torch.zeros_like(bp)
        if w["reg"]:
            g = g + 2 * w["reg"] / (self.n_bodies * bp.shape[-1]) * bp
        if stage == 3 and cfg.w_hyperext:
            idx = L._index(L.HYPEREXT_INDEX, bp.device)
            s = self._hyp_sign(bp)
            th = bp.index_select(-1, idx) * s
            pos = th > 0
            r = torch.where(pos, torch.expm1(th), torch.zeros_like(th))
            dr = torch.where(pos, s * torch.exp(th), torch.zeros_like(th))
            g = g.index_add(-1, idx, 2 * cfg.w_hyperext / (self.n_bodies * idx.numel()) * r * dr)
        return g if self.bmask is None else g * self.bmask[..., None]


def graph_or_eager(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` captured in a CUDA graph (its outputs are overwritten at every replay), or ``fn`` itself
    when capture fails (the failure is recorded in ``GRAPH_FAILURES``)."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: lazy initialisation, allocator
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn()
    except Exception as e:  # noqa: BLE001 - any capture problem: run eagerly
        where = [f for f in traceback.extract_tb(e.__traceback__) if "h4d_fast" in f.filename]
        at = f" (at {Path(where[-1].filename).name}:{where[-1].lineno})" if where else ""
        GRAPH_FAILURES.append(f"{type(e).__name__}: {e}{at}")
        torch.cuda.synchronize()
        return fn

    def replay() -> Any:
        graph.replay()
        return out

    return replay


GRAPH_FAILURES: list[str] = []


__all__ = ["GRAPH_FAILURES", "NUM_POSE", "Objective", "TemporalBand", "graph_or_eager"]
