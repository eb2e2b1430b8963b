"""Gauss-Newton / Levenberg-Marquardt optimizer of the SMPL fit (``fit.optimizer = "gn"``).

Same objective as the first-order optimizers of :mod:`h4d_fast.pipeline.fit` (the stages, terms
and weights of :mod:`h4d_fast.pipeline.fit_losses`), minimised with second-order steps built from
the analytic Jacobians of the joints-only forward (:mod:`h4d_fast.body.jacobian`):

* Every term except the collision term is a sum of squared residuals of the model joints ``X``
  (keypoints, limb lengths, symmetry, temporal positions), of the 6D joint rotations (temporal)
  or of the parameters (pose regularisation, hyper-extension, shape prior). The Geman-McClure
  keypoint term is handled by iteratively reweighted least squares: its gradient is exact and
  its curvature ``2 c w rho'(d^2) J^T J`` (``rho' = sigma^4 / (sigma^2 + d^2)^2``).
* Per body (frame x person) the variables of stages 1 and 3 are few (6 and 75), and bodies are
  coupled only by the temporal term (second differences couple frames up to two apart) and the
  collision term. The Gauss-Newton matrix is block-diagonal per body plus the temporal band; the
  step solves ``(H + lambda D) d = -g`` by preconditioned conjugate gradients with the exact
  per-body blocks (batched Cholesky) as the preconditioner and the band applied matrix-free
  (``fit.gn_cg_iters`` iterations, no host synchronisation); without a temporal term the blocks
  are solved directly. Stage 2 (betas) has ``K`` variables per person: a direct solve.
* The collision term (collision stage) enters with its exact gradient (the op's vertex gradient
  mapped to the pose analytically, :mod:`h4d_fast.body.sparse_skin`) and no curvature of its own:
  the step is the data term's Gauss-Newton step corrected by the collision gradient.
* Stage 3 optimises the rotations of the joints that move some keypoint (:func:`observed_joints`;
  the default model: not the ankles, wrists, feet and hands), the others keep their values.
* Levenberg-Marquardt control: ``D = diag(H) + eps``, ``lambda >= fit.gn_damping``; a step is kept where it lowers the loss
  (per body when the stage's loss is a sum over bodies, per person with the temporal term, for the
  whole sequence with the collision term) and ``lambda`` shrinks (x 1/3), else it is undone and
  ``lambda`` grows (x 4). Every trial costs one joints-only forward (and, in the collision stage,
  one mesh and collision evaluation). The loss is checked for convergence (``fit.ftol``) every
  ``fit.check_every`` steps, the only host synchronisation in the loop. The trials judge steps by
  this module's own evaluation of the loss; the stage's result is judged once more by the fit's
  divergence guard (:meth:`~h4d_fast.pipeline.fit._Fitter.end_stage`, as for the first-order
  optimizers): a stage that ends non-finite or above its starting loss is undone.

Accuracy (not the default for this reason): it converges to the objective's minimum in ~10 steps
per stage where L-BFGS stops far from it after 60 iterations, and that minimum is less accurate:
the paper's objective barely constrains the spine / neck / collar split of the shoulders' and
head's positions (pose regularisation weight 0.001 on ``mean(theta^2)``), so a converged fit
moves them to fit keypoint noise, and the temporal term on unobserved joints turns ankles and
wrists. Measured on ``h4d demo`` seeds 0, 1, 2 (fit without collision stage; L-BFGS: PVE 13.20,
13.37, 14.05 mm, MPJPE-24 6.03, 6.21, 6.24 mm): all joints free, ``gn_damping`` 1e-3: seed 0 PVE
17.85, MPJPE-24 8.56 mm; observed joints only, ``gn_damping`` 0.03 / 0.1 / 1: seed 0 13.93 / 13.44
/ 14.21 mm, 6.95 / 6.50 / 7.60 mm; 0.1 on seeds 1, 2: 13.63, 14.43 mm, 6.59, 6.97 mm.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
from torch import Tensor

from ..body.fast import rot6d
from ..body.jacobian import JointsJacobian
from ..constants import NUM_SMPL_JOINTS
from . import fit_losses as L
from .fit_objective import Objective

if TYPE_CHECKING:  # pragma: no cover
    from .fit import _Fitter

LAMBDA_MAX = 1e9
EPS_REL = 1e-9  # absolute damping floor relative to the mean curvature of the stage
class GaussNewton(Objective):
    """Gauss-Newton / LM stages over a :class:`~h4d_fast.pipeline.fit._Fitter`'s parameters."""

    def __init__(self, fitter: "_Fitter"):
        super().__init__(fitter)
        self.observed = observed_joints(self.fast, [int(i) for i in fitter.coco_idx.tolist()])
        self._vars: dict[int, _Vars] = {}
        self.lam_min = float(fitter.cfg.gn_damping)

    def _length_rows(self, A: Tensor, rows, F: int, P: int) -> list[Tensor]:
        """Jacobian rows ``[B, R, n]`` of the length terms from the joint Jacobian ``A [B, NJ, 3, n]``."""
        out = []
        B = A.shape[0]
        dA = A.index_select(1, self.limb_a) - A.index_select(1, self.limb_b)  # [B, 12, 3, n]
        for kind, u, sw, _ in rows:
            uu = u.reshape(B, -1, 3)
            lr = (uu[..., None] * dA).sum(2)  # [B, 12, n]
            if kind == "limb":
                out.append(lr * sw.reshape(B, -1)[..., None])
            else:
                d = lr.index_select(1, self.pairs[:, 0]) - lr.index_select(1, self.pairs[:, 1])
                out.append(d * sw.reshape(B, -1)[..., None])
        return out

    # -- per-body stages (1: orientation + translation, 3: + body pose)
    def vars(self, stage: int) -> "_Vars":
        v = self._vars.get(stage)
        if v is None:
            v = self._vars[stage] = _Vars([0] if stage == 1 else self.observed, self.dev)
        return v

    def body_system(self, pose: Tensor, betas: Tensor, transl: Tensor, stage: int, w: Mapping[str, float]):
        """Gradient ``g [F, P, n]``, diagonal blocks ``H [F, P, n, n]`` and what the temporal
        matvec needs, at the current point (variables: the stage's pose joints, then transl)."""
        cfg = self.f.cfg
        F, P, NJ = self.F, self.P, self.NJ
        B = F * P
        V = self.vars(stage)
        nq, n = V.nq, V.nq + 3
        temporal = bool(w["temporal"]) and self.has_temporal
        rot_t = temporal and V.rot_joints.numel() > 0
        jj = self.forward(pose, betas, transl, want_pose=True, want_rot6d=rot_t, pose_joints=V.joints)
        X = jj.joints.view(F, P, NJ, 3)
        gX, m, rows = self.joint_terms(X, stage, w)
        eye = torch.eye(3, dtype=X.dtype, device=X.device).expand(B, NJ, 3, 3)
        A = torch.cat([jj.d_pose.reshape(B, NJ, 3, nq), eye], -1)  # [B, NJ, 3, n]
        Af = A.reshape(B, NJ * 3, n)
        R = [(m.reshape(B, NJ, 1, 1).clamp_min(0).sqrt() * A).reshape(B, NJ * 3, n)] + self._length_rows(A, rows, F, P)
        Rm = torch.cat(R, 1)
        H = Rm.transpose(1, 2) @ Rm  # [B, n, n]
        g = (Af.transpose(1, 2) @ gX.reshape(B, NJ * 3, 1))[..., 0]  # [B, n]
        extra_g = torch.zeros(B, n, dtype=X.dtype, device=X.device)
        extra_h = torch.zeros(B, n, dtype=X.dtype, device=X.device)
        bp = pose[..., 3:].reshape(B, -1)
        nb = self.n_bodies
        bm = None if self.bmask is None else self.bmask.reshape(B, 1)  # absent bodies: no parameter terms
        if stage == 3 and V.body_pos.numel():
            bsel = bp.index_select(1, V.body_vals)  # [B, nb] the optimised body-pose values
            if w["reg"]:
                c = 2 * w["reg"] / (nb * bp.shape[-1])
                cb = c if bm is None else c * bm
                extra_g.index_add_(1, V.body_pos, cb * bsel)
                extra_h.index_add_(1, V.body_pos, cb * torch.ones_like(bsel))
            if cfg.w_hyperext and V.hyp_pos.numel():
                s = self._hyp_sign(X).index_select(0, V.hyp_sel)
                th = bp.index_select(1, V.hyp_vals) * s
                pos = th > 0
                r = torch.where(pos, torch.expm1(th), torch.zeros_like(th))
                dr = torch.where(pos, s * torch.exp(th), torch.zeros_like(th))
                c = 2 * cfg.w_hyperext / (nb * len(L.HYPEREXT_INDEX))
                cb = c if bm is None else c * bm
                extra_g.index_add_(1, V.hyp_pos, cb * r * dr)
                extra_h.index_add_(1, V.hyp_pos, cb * dr * dr)
        rt = None
        if rot_t:
            nr = V.rot_joints.numel()
            om = w["temporal"] / (self.n_rows * (NUM_SMPL_JOINTS - 1) * L.S_ROT[cfg.temporal] ** 2)
            r6 = rot6d(jj.rot.index_select(1, V.rot_joints)).view(F, P, nr, 6)
            g6 = 2 * om * self.band.adjoint(self.band.diff(r6))  # [F, P, nr, 6]
            Jr6 = jj.d_rot6d.index_select(1, V.rot_joints - 1)  # [B, nr, 6, 3]
            extra_g.index_add_(1, V.rot_pos, torch.einsum("bjkc,bjk->bjc", Jr6, g6.reshape(B, nr, 6)).reshape(B, -1))
            blocks = (2 * om) * self.band.diagonal().expand(F, P).reshape(B, 1, 1, 1) * (Jr6.transpose(-1, -2) @ Jr6)
            H = H.reshape(B, n * n).index_add(1, V.block_index(n), blocks.reshape(B, -1)).reshape(B, n, n)
            rt = (Jr6, 2 * om, V)
        g = g + extra_g
        H = H + torch.diag_embed(extra_h)
        temporal_pos = (Af, 2 * w["temporal"] / (self.n_rows * NJ * L.S_POS[cfg.temporal] ** 2)) if temporal else None
        return g.view(F, P, n), H.view(F, P, n, n), temporal_pos, rt, jj

    def temporal_matvec(self, v: Tensor, temporal_pos, rt) -> Tensor:
        """Off-diagonal (cross-frame) part of the Gauss-Newton matrix times ``v [F, P, n]``."""
        F, P = self.F, self.P
        B = F * P
        n = v.shape[-1]
        out = torch.zeros_like(v)
        if temporal_pos is not None:
            Af, c = temporal_pos
            y = (Af @ v.reshape(B, n, 1).to(Af.dtype)).view(F, P, -1)
            z = self.band.offdiag(y) * c
            out = out + (Af.transpose(1, 2) @ z.reshape(B, -1, 1))[..., 0].view(F, P, n).to(v.dtype)
        if rt is not None:
            Jr6, c, V = rt
            nr = V.rot_joints.numel()
            vq = v.reshape(B, n).index_select(1, V.rot_pos).reshape(B, nr, 3).to(Jr6.dtype)
            y = (Jr6 @ vq[..., None])[..., 0].view(F, P, nr, 6)
            z = (self.band.offdiag(y) * c).reshape(B, nr, 6, 1)
            back = (Jr6.transpose(-1, -2) @ z)[..., 0].reshape(B, -1).to(v.dtype)
            out = out.reshape(B, n).index_add(1, V.rot_pos, back).view(F, P, n)
        return out

    def solve(self, g: Tensor, H: Tensor, lam: Tensor, temporal_pos, rt, cg_iters: int) -> Tensor:
        """Levenberg-Marquardt step ``-(H + lam D)^-1 g`` (``lam [F, P]``, ``D = diag(H) + eps``).

        The per-body blocks are factorised in float64 (they can be ill-conditioned); with the
        temporal band, their inverses precondition conjugate gradients in the working dtype.
        """
        F, P, n = g.shape
        diag = H.diagonal(dim1=-2, dim2=-1)
        eps = EPS_REL * diag.mean().clamp_min(1e-30)
        Hd = H + torch.diag_embed(lam[..., None] * (diag + eps) + eps)
        Lc, _ = torch.linalg.cholesky_ex(Hd.double())
        if temporal_pos is None and rt is None:
            return torch.cholesky_solve(-g.double()[..., None], Lc)[..., 0].to(g.dtype)
        Minv = torch.cholesky_inverse(Lc).to(g.dtype)  # [F, P, n, n]

        def precond(r: Tensor) -> Tensor:
            return (Minv @ r[..., None])[..., 0]

        def matvec(v: Tensor) -> Tensor:
            return (Hd @ v[..., None])[..., 0] + self.temporal_matvec(v, temporal_pos, rt)

        return pcg(matvec, precond, -g, cg_iters)

    # -- stages
    def run_stage(self, stage: int, weights: Mapping[str, float], iters: int, on_iter: Callable[[int], None]) -> dict[str, Any]:
        f = self.f
        t0 = time.perf_counter()
        ev0 = f.evals
        l0, start = f.begin_stage(stage, weights)
        done = 0
        if iters > 0 and any(weights.values()):
            with torch.no_grad():
                if stage == 2:
                    done = self._run_betas(stage, weights, iters, on_iter)
                else:
                    done = self._run_body(stage, weights, iters, on_iter)
        return f.end_stage(stage, weights, start, l0, done, ev0, t0)

    def _converged(self, prev: float, cur: float) -> bool:
        return (not math.isfinite(cur)) or abs(prev - cur) / max(abs(prev), abs(cur), 1.0) <= self.f.cfg.ftol

    def _run_body(self, stage: int, w: Mapping[str, float], iters: int, on_iter: Callable[[int], None]) -> int:
        f, cfg = self.f, self.f.cfg
        F, P = self.F, self.P
        p = f.p
        coll = bool(w.get("collision")) and f.collision_active()
        temporal = bool(w["temporal"]) and self.has_temporal
        level = "global" if coll else ("person" if temporal else "body")
        V = self.vars(stage)
        nq = V.nq
        betas = p["betas"]
        pose = self.pose()
        transl = p["transl"]

        def unit_loss(pose_: Tensor, transl_: Tensor) -> tuple[Tensor, JointsJacobian]:
            jj = self.forward(pose_, betas, transl_)
            body, person = self.losses(jj.joints.view(F, P, self.NJ, 3), jj.rot.view(F, P, NUM_SMPL_JOINTS, 3, 3), pose_, betas, stage, w)
            f.evals += 1
            if level == "body":
                return body, jj
            u = body.sum(0) + person
            return (u if level == "person" else u.sum()), jj

        E, jj0 = unit_loss(pose, transl)
        if coll:
            ec, cgp, cgt = self.collision(pose, betas, transl, jj0)
            E = E + w["collision"] * ec
        lam = torch.full((F, P), self.lam_min, dtype=self.dt, device=self.dev)
        prev = float(E.sum())
        chunk = max(1, int(cfg.check_every))
        done = 0
        while done < iters:
            n_run = min(chunk, iters - done)
            for _ in range(n_run):
                g, H, tpos, rt, _ = self.body_system(pose, betas, transl, stage, w)
                if coll:
                    g = g + w["collision"] * torch.cat([cgp.index_select(-1, V.qidx), cgt], -1)
                d = self.solve(g, H, lam, tpos, rt, int(cfg.gn_cg_iters))
                pose_t = pose.index_add(-1, V.qidx, d[..., :nq])
                transl_t = transl + d[..., nq:]
                Et, jjt = unit_loss(pose_t, transl_t)
                if coll:
                    ect, cgpt, cgtt = self.collision(pose_t, betas, transl_t, jjt)
                    Et = Et + w["collision"] * ect
                acc = Et < E  # NaN -> rejected
                accb = self._broadcast(acc, level)  # [F, P]
                pose = torch.where(accb[..., None], pose_t, pose)
                transl = torch.where(accb[..., None], transl_t, transl)
                E = torch.where(acc, Et, E)
                lam = torch.where(accb, (lam / 3).clamp_min(self.lam_min), (lam * 4).clamp_max(LAMBDA_MAX))
                if coll:
                    cgp = torch.where(acc, cgpt, cgp)
                    cgt = torch.where(acc, cgtt, cgt)
            done += n_run
            on_iter(n_run)
            cur = float(E.sum())
            if self._converged(prev, cur):
                break
            prev = cur
        p["global_orient"].copy_(pose[..., :3])
        p["body_pose"].copy_(pose[..., 3:])
        p["transl"].copy_(transl)
        return done

    def _broadcast(self, acc: Tensor, level: str) -> Tensor:
        if level == "body":
            return acc
        if level == "person":
            return acc[None].expand(self.F, self.P)
        return acc.expand(self.F, self.P)

    # -- stage 2: betas (K per person, direct solve)
    def _run_betas(self, stage: int, w: Mapping[str, float], iters: int, on_iter: Callable[[int], None]) -> int:
        f, cfg = self.f, self.f.cfg
        F, P, NJ = self.F, self.P, self.NJ
        B = F * P
        p = f.p
        pose, transl = self.pose(), p["transl"]
        betas = p["betas"].clone()
        K = betas.shape[1]

        def loss(be: Tensor) -> Tensor:
            jj = self.forward(pose, be, transl)
            body, person = self.losses(jj.joints.view(F, P, NJ, 3), jj.rot.view(F, P, NUM_SMPL_JOINTS, 3, 3), pose, be, stage, w)
            f.evals += 1
            return body.sum(0) + person  # [P]

        E = loss(betas)
        lam = torch.full((P,), self.lam_min, dtype=self.dt, device=self.dev)
        prev = float(E.sum())
        chunk = max(1, int(cfg.check_every))
        done = 0
        while done < iters:
            n_run = min(chunk, iters - done)
            for _ in range(n_run):
                jj = self.forward(pose, betas, transl, want_betas=True)
                X = jj.joints.view(F, P, NJ, 3)
                gX, m, rows = self.joint_terms(X, stage, w)
                A = jj.d_betas  # [B, NJ, 3, K]
                Rr = [(m.reshape(B, NJ, 1, 1).clamp_min(0).sqrt() * A).reshape(B, NJ * 3, K)] + self._length_rows(A, rows, F, P)
                Rm = torch.cat(Rr, 1)
                H = (Rm.transpose(1, 2) @ Rm).view(F, P, K, K).sum(0)
                g = (A.reshape(B, NJ * 3, K).transpose(1, 2) @ gX.reshape(B, NJ * 3, 1))[..., 0].view(F, P, K).sum(0)
                if w["temporal"] and self.has_temporal:
                    # temporal positions: the diagonal curvature above is a lower bound; the exact
                    # term couples frames through D: (D A)^T M (D A)
                    om = w["temporal"] / (self.n_rows * NJ * L.S_POS[cfg.temporal] ** 2)
                    DA = self.band.diff(A.reshape(F, P, NJ * 3, K))
                    H = H - (2 * om * self.band.diagonal()[..., None, None] * (A.reshape(F, P, NJ * 3, K).transpose(-1, -2)
                                                                             @ A.reshape(F, P, NJ * 3, K))).sum(0)
                    H = H + 2 * om * (DA.transpose(-1, -2) @ DA).sum(0)
                if w["shape"]:
                    c = 2 * w["shape"] / betas.numel()
                    g = g + c * betas
                    H = H + c * torch.eye(K, dtype=H.dtype, device=H.device)
                Hd = H.double()
                diag = Hd.diagonal(dim1=-2, dim2=-1)
                eps = EPS_REL * diag.mean().clamp_min(1e-30)
                Hd = Hd + torch.diag_embed(lam.double()[:, None] * (diag + eps) + eps)
                d = torch.linalg.solve(Hd, -g.double()[..., None])[..., 0].to(betas.dtype)
                bt = betas + d
                Et = loss(bt)
                acc = Et < E
                betas = torch.where(acc[:, None], bt, betas)
                E = torch.where(acc, Et, E)
                lam = torch.where(acc, (lam / 3).clamp_min(self.lam_min), (lam * 4).clamp_max(LAMBDA_MAX))
            done += n_run
            on_iter(n_run)
            cur = float(E.sum())
            if self._converged(prev, cur):
                break
            prev = cur
        p["betas"].copy_(betas)
        return done



class _Vars:
    """Index maps of a per-body stage's variables: the pose values of ``joints`` (3 each, in order),
    then the translation."""

    def __init__(self, joints: list[int], device: torch.device):
        self.joints = list(joints)
        self.nq = 3 * len(self.joints)
        lt = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
        q = [3 * j + c for j in self.joints for c in range(3)]
        self.qidx = lt(q)  # [nq] into the 72 pose values
        body = [(i, v - 3) for i, v in enumerate(q) if v >= 3]
        self.body_pos = lt([i for i, _ in body])  # variable positions of body-pose values
        self.body_vals = lt([v for _, v in body])  # their indices into body_pose (69)
        hyp = [(k, body[[v for _, v in body].index(h)][0], h) for k, h in enumerate(L.HYPEREXT_INDEX) if h in [v for _, v in body]]
        self.hyp_sel = lt([k for k, _, _ in hyp])
        self.hyp_pos = lt([p for _, p, _ in hyp])
        self.hyp_vals = lt([h for _, _, h in hyp])
        rj = [(i, j) for i, j in enumerate(self.joints) if j >= 1]
        self.rot_joints = lt([j for _, j in rj])  # optimised body joints (rot6d temporal)
        self.rot_pos = lt([3 * i + c for i, _ in rj for c in range(3)])
        self._blk: dict[int, Tensor] = {}

    def block_index(self, n: int) -> Tensor:
        """Flat indices into ``[n, n]`` of the 3x3 diagonal blocks of the optimised body joints."""
        hit = self._blk.get(n)
        if hit is None:
            pos = self.rot_pos.view(-1, 3)
            hit = self._blk[n] = (pos[:, :, None] * n + pos[:, None, :]).reshape(-1)
        return hit


def observed_joints(fast, keypoint_joints: list[int]) -> list[int]:
    """The pose joints whose rotation moves at least one keypoint joint (``keypoint_joints``:
    indices into the joints-only forward's 24 + M joints), in tree order."""
    from ..body.jacobian import _structure

    st = _structure(fast)
    seen = torch.zeros(NUM_SMPL_JOINTS, dtype=torch.bool)
    for k in keypoint_joints:
        if k < NUM_SMPL_JOINTS:
            seen |= st.anc_strict[k].cpu() > 0
        else:
            seen |= st.vj_a[k - NUM_SMPL_JOINTS].cpu() > 0
    seen[0] = True
    return [i for i in range(NUM_SMPL_JOINTS) if bool(seen[i])]


def pcg(matvec: Callable[[Tensor], Tensor], precond: Callable[[Tensor], Tensor], b: Tensor, iters: int) -> Tensor:
    """Preconditioned conjugate gradients for ``[F, P, n]`` systems, one independent system per
    person (dim 1), a fixed number of iterations (no host synchronisation)."""
    x = torch.zeros_like(b)
    r = b.clone()
    z = precond(r)
    p = z.clone()
    rz = (r * z).sum((0, 2))
    tiny = torch.finfo(b.dtype).tiny
    for _ in range(max(0, int(iters))):
        Ap = matvec(p)
        pAp = (p * Ap).sum((0, 2))
        alpha = torch.where(pAp > 0, rz / pAp.clamp_min(tiny), torch.zeros_like(pAp))
        x = x + alpha[None, :, None] * p
        r = r - alpha[None, :, None] * Ap
        z = precond(r)
        rz_new = (r * z).sum((0, 2))
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(tiny), torch.zeros_like(rz))
        p = z + beta[None, :, None] * p
        rz = rz_new
    return x


__all__ = ["GaussNewton", "observed_joints", "pcg"]
