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

import math
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
    """``D^T D`` of the temporal difference operator over ``F`` frames (banded, symmetric).

    ``D`` is the second difference (``"acceleration"``: rows ``x_t - 2 x_{t+1} + x_{t+2}``) or the
    first difference (``"velocity"``). ``coeff[k][s] = (D^T D)[s, s + k]``.
    """

    def __init__(self, F: int, mode: str, dtype: torch.dtype, device: torch.device):
        if mode == "acceleration":
            st = (1.0, -2.0, 1.0)
        elif mode == "velocity":
            st = (-1.0, 1.0)
        else:
            raise ValueError(f"temporal mode must be 'acceleration' or 'velocity', got {mode!r}")
        self.stencil = st
        self.F = F
        self.T = max(0, F - len(st) + 1)  # rows of D
        self.coeff: list[Tensor] = []
        for k in range(len(st)):
            c = torch.zeros(max(F - k, 0), dtype=dtype, device=device)
            for a in range(len(st) - k):
                if self.T:
                    c[a : a + self.T] += st[a] * st[a + k]
            self.coeff.append(c)

    def diff(self, x: Tensor) -> Tensor:
        """``D x`` along dim 0: ``[F, ...]`` -> ``[T, ...]``."""
        return L._diff(x, "acceleration" if len(self.stencil) == 3 else "velocity")

    def adjoint(self, d: Tensor) -> Tensor:
        """``D^T d``: ``[T, ...]`` -> ``[F, ...]``."""
        out = d.new_zeros(self.F, *d.shape[1:])
        for a, s in enumerate(self.stencil):
            out[a : a + self.T] += s * d
        return out

    def _c(self, k: int, like: Tensor) -> Tensor:
        return self.coeff[k].view(-1, *([1] * (like.dim() - 1))).to(like.dtype)

    def diagonal(self) -> Tensor:
        """``[F]`` diagonal of ``D^T D``."""
        return self.coeff[0]

    def offdiag(self, y: Tensor) -> Tensor:
        """``(D^T D - diag) y`` along dim 0 (``y [F, ...]``)."""
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
        self.band = TemporalBand(self.F, fitter.cfg.temporal, dt, dev)
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
        if w["reg"]:
            body = body + w["reg"] * (bp * bp).sum(-1) / (F * P * bp.shape[-1])
        if stage == 3 and cfg.w_hyperext:
            a = (bp.index_select(-1, L._index(L.HYPEREXT_INDEX, bp.device)) * self._hyp_sign(bp)).clamp_min(0)
            body = body + cfg.w_hyperext * (torch.expm1(a) ** 2).sum(-1) / (F * P * len(L.HYPEREXT_INDEX))
        if w["limb"] or w["symm"]:
            Ln = L.limb_lengths(coco)  # [F, P, 12]
            if w["limb"]:
                r = (Ln - f.limb_tgt) / L.S_LEN
                den = (f.limb_ok.sum() * F).clamp_min(1e-12)
                body = body + w["limb"] * (f.limb_ok * r * r).sum(-1) / den
            if w["symm"]:
                d = (Ln.index_select(-1, self.pairs[:, 0]) - Ln.index_select(-1, self.pairs[:, 1])) / L.S_SYM
                body = body + w["symm"] * (d * d).sum(-1) / (F * P * self.pairs.shape[0])
        if w["temporal"] and self.band.T:
            T = self.band.T
            dr = self.band.diff(rot6d(rot[:, :, 1:]))  # [T, P, 23, 6]
            dx = self.band.diff(X)
            S_R, S_P = L.S_ROT[cfg.temporal], L.S_POS[cfg.temporal]
            person = person + w["temporal"] * ((dr * dr).sum((0, 2, 3)) / (T * P * (NUM_SMPL_JOINTS - 1) * S_R ** 2)
                                               + (dx * dx).sum((0, 2, 3)) / (T * P * X.shape[2] * S_P ** 2))
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
            if w["limb"]:
                den = (f.limb_ok.sum() * F).clamp_min(1e-12)
                om = w["limb"] * f.limb_ok / den  # [P, 12]
                r = (ln - f.limb_tgt) / L.S_LEN
                gv = (2 * om * r / L.S_LEN)[..., None] * u  # dE/dX_a
                gX.index_add_(2, torch.cat([a, b]), torch.cat([gv, -gv], 2))
                if curvature:
                    rows.append(("limb", u, (2 * om).sqrt().expand(F, P, -1) / L.S_LEN, None))
            if w["symm"]:
                p1, p2 = self.pairs[:, 0], self.pairs[:, 1]
                om = w["symm"] / (F * P * p1.numel())
                r = (ln.index_select(-1, p1) - ln.index_select(-1, p2)) / L.S_SYM  # [F, P, 4]
                g1 = (2 * om * r / L.S_SYM)[..., None] * u.index_select(2, p1)
                g2 = (2 * om * r / L.S_SYM)[..., None] * u.index_select(2, p2)
                gX.index_add_(2, torch.cat([a[p1], b[p1], a[p2], b[p2]]), torch.cat([g1, -g1, -g2, g2], 2))
                if curvature:
                    rows.append(("symm", u, X.new_full((F, P, p1.numel()), math.sqrt(2 * om) / L.S_SYM), None))
        if w["temporal"] and self.band.T:
            om = w["temporal"] / (self.band.T * P * NJ * L.S_POS[cfg.temporal] ** 2)
            gX = gX + 2 * om * self.band.adjoint(self.band.diff(X))
            if curvature:
                m = m + (2 * om) * self.band.diagonal().view(F, 1, 1)
        return gX, m, rows

    # -- collision term at a point (contact frames only)
    def collision(self, pose: Tensor, betas: Tensor, transl: Tensor, jj: JointsJacobian | None) -> tuple[Tensor, Tensor, Tensor]:
        """Value and gradient (``[F, P, 72]`` pose, ``[F, P, 3]`` transl) of the collision term."""
        f, cfg = self.f, self.f.cfg
        F, P = self.F, self.P
        idx = f.contact
        kw = dict(grid_size=int(cfg.collision_grid), backend=cfg.collision_backend)
        gp = pose.new_zeros(F, P, NUM_POSE)
        gt = pose.new_zeros(F, P, 3)
        Fc = idx.numel()
        if not self.sparse:  # pose correctives: autograd through the full meshes
            with torch.enable_grad():
                po = pose.index_select(0, idx).detach().requires_grad_(True)
                tr = transl.index_select(0, idx).detach().requires_grad_(True)
                v, _ = self.fast.vertices(po[..., :3].reshape(-1, 3), po[..., 3:].reshape(-1, NUM_POSE - 3),
                                          betas[None].expand(Fc, P, -1).reshape(Fc * P, -1), tr.reshape(-1, 3))
                lc = L.collision_term(v.view(Fc, P, -1, 3), f.faces, F, **kw)
                dpo, dtr = torch.autograd.grad(lc, (po, tr))
            return lc.detach(), gp.index_copy(0, idx, dpo), gt.index_copy(0, idx, dtr)
        B = F * P
        bidx = (idx[:, None] * P + self.person_of[None]).reshape(-1)
        be = betas[None].expand(F, P, -1).reshape(B, -1)
        if jj is None:
            jj = self.forward(pose, betas, transl)
        J = self.fast.rest_joints(be.index_select(0, bidx))
        GR, Gt = self.fast.kinematics(jj.rot.index_select(0, bidx), J)
        u = self.skin.rest(betas)
        person = self.person_of.repeat(Fc)
        tr = transl.reshape(B, 3).index_select(0, bidx)
        V = self.skin.vertices(GR, Gt, J, u, person, tr).view(Fc, P, -1, 3)
        lc, gv = L.collision_term_grad(V, f.faces, F, **kw)
        dpo, dtr = self.skin.pose_gradient(gv.reshape(Fc * P, -1, 3), pose.reshape(B, NUM_POSE).index_select(0, bidx), GR, Gt, J, u, person)
        return lc.detach(), gp.index_copy(0, idx, dpo.reshape(Fc, P, NUM_POSE)), gt.index_copy(0, idx, dtr.reshape(Fc, P, 3))


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
            if "body_pose" in names and w["temporal"] and self.band.T:
                om = w["temporal"] / (self.band.T * P * (NUM_SMPL_JOINTS - 1) * L.S_ROT[cfg.temporal] ** 2)
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
        if w.get("collision") and P >= 2 and f.contact is not None and f.contact.numel():
            ec, cgp, cgt = self.collision(pose, betas, transl, jj)
            E = E + w["collision"] * ec
            if "global_orient" in grads:
                grads["global_orient"] = grads["global_orient"] + w["collision"] * cgp[..., :3]
                grads["body_pose"] = grads["body_pose"] + w["collision"] * cgp[..., 3:]
            if "transl" in grads:
                grads["transl"] = grads["transl"] + w["collision"] * cgt
        return E, {k: grads[k].contiguous() for k in names}

    def body_pose_grad(self, bp: Tensor, stage: int, w: Mapping[str, float]) -> Tensor:
        """Gradient of the parameter-space terms (pose regularisation, hyper-extension) ``[F, P, 69]``."""
        cfg = self.f.cfg
        F, P = self.F, self.P
        g = torch.zeros_like(bp)
        if w["reg"]:
            g = g + 2 * w["reg"] / (F * P * bp.shape[-1]) * bp
        if stage == 3 and cfg.w_hyperext:
            idx = L._index(L.HYPEREXT_INDEX, bp.device)
            s = self._hyp_sign(bp)
            th = bp.index_select(-1, idx) * s
            pos = th > 0
            r = torch.where(pos, torch.expm1(th), torch.zeros_like(th))
            dr = torch.where(pos, s * torch.exp(th), torch.zeros_like(th))
            g = g.index_add(-1, idx, 2 * cfg.w_hyperext / (F * P * idx.numel()) * r * dr)
        return g


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
