"""Stage 5: SMPL fitting of the 3D keypoints, all frames and people in one batch.

Input: COCO-17 keypoints ``[F, P, 17, 4]`` (x, y, z, valid; metres, world z-up). Output: per
frame and person ``global_orient [3]``, ``body_pose [69]``, ``transl [3]`` and one ``betas [K]``
per person for the whole sequence (:class:`FitResult`).

Initialisation (:mod:`h4d_fast.pipeline.fit_init`): per frame and person a rigid (Kabsch) alignment
of the model's joints to the keypoints, neighbours' values where there are too few keypoints,
and the limbs' swing rotations along the keypoints' limbs; or given per-frame parameters.

Optimisation (temporal SMPLify, paper Table 1), ``epochs`` times:

1. ``global_orient, transl``: keypoints on shoulders and hips only (weight 1);
2. ``betas``: limb length 1, symmetry 0.2, shape prior 0.005;
3. ``global_orient, transl, body_pose``: keypoints 10, pose regularisation 0.001, limb length 1,
   temporal 1;

then, with two or more people, the *collision stage*: stage 3's parameters and weights plus the
collision term (weight 1) for ``iters_collision`` iterations (the reference runs it the same way,
as a separate SMPLifyCollision pass after the temporal fit).

The loss terms and their units are defined in :mod:`h4d_fast.pipeline.fit_losses`. Each stage
runs L-BFGS with a strong-Wolfe line search (:mod:`h4d_fast.pipeline.lbfgs`), Adam, or
Gauss-Newton (:mod:`h4d_fast.pipeline.fit_gn`) over all frames and people at once, stopping early
when the relative loss change over ``check_every`` iterations falls below ``ftol``. The loss and
its gradient are evaluated without autograd (:mod:`h4d_fast.pipeline.fit_objective`: analytic
derivatives of :class:`~h4d_fast.body.fast.FastBody`'s joints-only forward; on CUDA replayed from
a CUDA graph). Only the collision term needs meshes (sparse skinning), and only on the frames
whose bodies' boxes come within ``collision_margin`` of each other (chosen when the collision
stage starts; every close pair of people counts).

Divergence guard (every optimizer, :meth:`_Fitter.end_stage`): a stage that ends with a non-finite
loss or parameter, or with a loss above its starting loss, is undone -- its parameters go back to
where the stage started -- and its record says why (``guard``: ``"non-finite"`` or ``"rising"``).

With ``compare_collision`` the collision stage is also run from the same starting point with the
collision weight set to 0, and ``stats['penetration_reduction'] = 1 - pen(with) /
pen(without)`` is reported (penetration: :func:`h4d_fast.ops.penetration.penetration_volume`, cm^3).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from ..body.fast import FastBody, rot6d
from ..body.model import BodyModel
from ..config import FitConfig
from ..constants import COCO_TO_SMPL45, NUM_COCO, NUM_SMPL_JOINTS
from ..ops.contact import person_pairs
from . import fit_losses as L
from .fit_init import (  # noqa: F401 (re-exported)
    KABSCH_WEIGHTS,
    MIN_INIT_KEYPOINTS,
    _init_array,
    init_from_keypoints,
    init_limb_pose,
    kabsch,
    swing_axis_angle,
)
from .fit_result import (  # re-exported
    _PARAM_KEYS,  # noqa: F401
    NUM_BODY_POSE,  # noqa: F401
    FitResult,  # noqa: F401
    cpu_threads,  # noqa: F401
    model_outputs,  # noqa: F401
)
from .lbfgs import LBFGS

STAGE1_KEYPOINTS: tuple[int, ...] = (5, 6, 11, 12)  # shoulders and hips (COCO)
STAGE_PARAMS: dict[int, tuple[str, ...]] = {1: ("global_orient", "transl"), 2: ("betas",), 3: ("global_orient", "transl", "body_pose")}


# ----------------------------------------------------------------------------- the fitter
class _Fitter:
    """Holds targets, parameters and the loss of one sequence."""

    def __init__(self, kp: Tensor, weight: Tensor, fast: FastBody, cfg: FitConfig, params: dict[str, Tensor],
                 present: Tensor | None = None):
        self.kp, self.w, self.fast, self.cfg = kp, weight, fast, cfg
        self.F, self.P = kp.shape[:2]
        self.present = present  # [F, P] bool or None (everyone everywhere)
        self.p = params
        self.coco_idx = torch.tensor(COCO_TO_SMPL45, dtype=torch.long, device=kp.device)
        valid = weight > 0
        self.limb_tgt, self.limb_ok = L.target_limb_lengths(kp, valid)
        m1 = torch.zeros(NUM_COCO, dtype=kp.dtype, device=kp.device)
        m1[list(STAGE1_KEYPOINTS)] = 1
        self.w_stage1 = weight * m1
        self.faces = fast.faces.to(kp.device)
        self.contact: Tensor | None = None  # [Fc] frame indices for the collision term
        self.evals = 0
        self._gn = None  # the Gauss-Newton solver (optimizer "gn"), built on first use
        self._obj = None  # the autograd-free objective (fit.gradients = "analytic"), built on first use
        self._graphs: dict = {}  # CUDA graphs of the objective, per stage and weights

    def _forward_joints(self, need_rot6d: bool) -> tuple[Tensor, Tensor | None]:
        F, P = self.F, self.P
        N = F * P
        go, bp, be, tr = self.p["global_orient"], self.p["body_pose"], self.p["betas"], self.p["transl"]
        rot = self.fast.rotations(go.reshape(N, 3), bp.reshape(N, NUM_BODY_POSE))  # [N, 24, 3, 3]
        J = self.fast.joints(None, None, be[None].expand(F, P, -1).reshape(N, -1), tr.reshape(N, 3), rot=rot)
        r6 = rot6d(rot[:, 1:]).view(F, P, NUM_SMPL_JOINTS - 1, 6) if need_rot6d else None
        return J.view(F, P, -1, 3), r6

    def contact_vertices(self) -> Tensor:
        """``[Fc, P, N, 3]`` meshes of the contact frames (differentiable when grad mode is on;
        without it, and without pose correctives, by sparse skinning)."""
        idx = self.contact
        P = self.P
        go, bp, be, tr = (self.p[k] for k in ("global_orient", "body_pose", "betas", "transl"))
        n = idx.numel() * P
        if not torch.is_grad_enabled() and self.fast.posedirs is None:
            from ..body.sparse_skin import sparse_skin

            fast, sk = self.fast, sparse_skin(self.fast)
            rot = fast.rotations(go.index_select(0, idx).reshape(n, 3), bp.index_select(0, idx).reshape(n, NUM_BODY_POSE))
            J = fast.rest_joints(be)  # [P, 24, 3]
            person = torch.arange(P, device=idx.device).repeat(idx.numel())
            Jb = J.index_select(0, person)
            GR, Gt = fast.kinematics(rot, Jb)
            v = sk.vertices(GR, Gt, Jb, sk.rest(be), person, tr.index_select(0, idx).reshape(n, 3))
            return v.view(idx.numel(), P, -1, 3)
        v, _ = self.fast.vertices(
            go.index_select(0, idx).reshape(n, 3),
            bp.index_select(0, idx).reshape(n, NUM_BODY_POSE),
            be[None].expand(idx.numel(), P, -1).reshape(n, -1),
            tr.index_select(0, idx).reshape(n, 3),
        )
        return v.view(idx.numel(), P, -1, 3)

    def terms(self, stage: int, weights: Mapping[str, float]) -> dict[str, Tensor]:
        cfg = self.cfg
        out: dict[str, Tensor] = {}
        J, r6 = self._forward_joints(need_rot6d=bool(weights["temporal"]))
        coco = J.index_select(2, self.coco_idx)
        if weights["joint"]:
            out["joint"] = L.keypoint_loss(coco, self.kp, self.w_stage1 if stage == 1 else self.w, cfg.kp_sigma)
        if weights["reg"]:
            out["reg"] = L.pose_reg_loss(self.p["body_pose"])
        if stage == 3 and cfg.w_hyperext:
            out["hyperext"] = L.hyperextension_loss(self.p["body_pose"])
        if weights["limb"]:
            out["limb"] = L.limb_length_loss(coco, self.limb_tgt, self.limb_ok)
        if weights["symm"]:
            out["symm"] = L.symmetry_loss(coco)
        if weights["temporal"]:
            out["temporal"] = L.temporal_loss(r6, J, cfg.temporal)
        if weights["shape"]:
            out["shape"] = L.shape_prior_loss(self.p["betas"])
        if weights["collision"] and self.P >= 2 and self.contact is not None and self.contact.numel():
            out["collision"] = self.collision()
        return out

    def collision(self) -> Tensor:
        """The collision term on the contact frames.

        The op's grids are built from detached vertices and its value is linear in the samples, so
        its gradient with respect to the parameters is ``sum_v g_v . dv/dtheta`` with ``g_v`` the
        (sparse: only vertices near or inside the other body) gradient with respect to the vertices.
        The meshes are therefore evaluated without autograd, ``g`` comes from the op, and only the
        vertices with ``g_v != 0`` are skinned again with autograd (a surrogate ``sum g_v . v``
        carries the gradient; its value is removed). Same value and gradient as differentiating
        through the full meshes (tested), at a fraction of the cost of the full meshes' backward.
        Models with pose correctives (``posedirs``) take the plain path.
        """
        cfg = self.cfg
        kw = dict(grid_size=int(cfg.collision_grid), backend=cfg.collision_backend)
        if not torch.is_grad_enabled() or self.fast.posedirs is not None or not cfg.collision_sparse_grad:
            return L.collision_term(self.contact_vertices(), self.faces, self.F, **kw)
        with torch.no_grad():
            V = self.contact_vertices()  # [Fc, P, N, 3]
        Vd = V.requires_grad_(True)
        lc = L.collision_term(Vd, self.faces, self.F, **kw)
        (g,) = torch.autograd.grad(lc, Vd)
        rows = (g != 0).any(-1).nonzero()  # [R, 3] (contact frame, person, vertex)
        if rows.shape[0] == 0:
            return lc.detach() + 0.0 * self.p["transl"].sum()
        sur = (g[rows[:, 0], rows[:, 1], rows[:, 2]] * self.skin_rows(rows)).sum()
        return lc.detach() + sur - sur.detach()

    def skin_rows(self, rows: Tensor) -> Tensor:
        """Differentiable posed vertices ``[R, 3]`` of ``rows [R, 3]`` = (contact frame, person, vertex)."""
        fast, idx, P = self.fast, self.contact, self.P
        go, bp, be, tr = (self.p[k] for k in _PARAM_KEYS)
        n = idx.numel() * P
        rot = fast.rotations(go.index_select(0, idx).reshape(n, 3), bp.index_select(0, idx).reshape(n, NUM_BODY_POSE))
        J = fast.rest_joints(be)[None].expand(idx.numel(), P, -1, -1).reshape(n, NUM_SMPL_JOINTS, 3)
        GR, Gt = fast.kinematics(rot, J)
        batch = rows[:, 0] * P + rows[:, 1]  # contact frame-person
        betas = be[None].expand(idx.numel(), P, -1).reshape(n, -1)
        return fast.skin_vertices(batch, rows[:, 2], GR, Gt, J, betas) + tr.index_select(0, idx).reshape(n, 3).index_select(0, batch)

    def total(self, stage: int, weights: Mapping[str, float]) -> tuple[Tensor, dict[str, Tensor]]:
        t = self.terms(stage, weights)
        w = dict(weights)
        w["hyperext"] = self.cfg.w_hyperext
        loss = sum((w[k] * v for k, v in t.items()), self.kp.new_zeros(()))
        return loss, t

    def run_stage(self, stage: int, weights: Mapping[str, float], iters: int, on_iter: Callable[[int], None]) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.optimizer == "gn":
            if self._gn is None:
                from .fit_gn import GaussNewton

                self._gn = GaussNewton(self)
            return self._gn.run_stage(stage, weights, iters, on_iter)
        names = STAGE_PARAMS[stage]
        params = [self.p[n] for n in names]
        analytic = cfg.gradients == "analytic"
        for n, x in self.p.items():
            x.requires_grad_(n in names and not analytic)
        t0 = time.perf_counter()
        ev0 = self.evals
        evaluate = self._evaluator(stage, weights, names) if analytic else None

        def value_and_grad() -> tuple[Tensor, list[Tensor]]:
            if evaluate is not None:  # without autograd (fit_objective), maybe a CUDA-graph replay
                loss, grads = evaluate()
                out = [grads[n] for n in names]
            else:
                with torch.enable_grad():
                    for x in params:
                        x.grad = None
                    loss, _ = self.total(stage, weights)
                    if loss.requires_grad:
                        loss.backward()
                out = [x.grad if x.grad is not None else torch.zeros_like(x) for x in params]
            self.evals += 1
            return loss.detach(), out

        l0, start = self.begin_stage(stage, weights)
        done = 0
        prev = l0
        if iters > 0 and any(weights.values()):
            chunk = max(1, int(cfg.check_every))
            if cfg.optimizer == "lbfgs":
                sizes = [x.numel() for x in params]

                def put(xv: Tensor) -> None:
                    with torch.no_grad():
                        for x, part in zip(params, xv.split(sizes)):
                            x.copy_(part.view_as(x))

                def flat_eval(xv: Tensor) -> tuple[Tensor, Tensor]:
                    put(xv)
                    loss, grads = value_and_grad()
                    return loss, torch.cat([g.reshape(-1) for g in grads])

                xflat = torch.cat([x.detach().reshape(-1) for x in params])
                opt = LBFGS(xflat, flat_eval, lr=cfg.lr, history_size=int(cfg.history_size), tolerance_grad=1e-10, tolerance_change=1e-14)
            else:
                adam = torch.optim.Adam(params, lr=cfg.adam_lr)
            while done < iters:
                n = min(chunk, iters - done)
                if cfg.optimizer == "lbfgs":
                    k = opt.step(n, 5 * n)
                    put(xflat)
                    done += k
                    stalled = k == 0  # LBFGS made no step (converged on its own tolerances)
                    cur = float(opt.loss)
                else:
                    for _ in range(n):
                        adam.zero_grad(set_to_none=True)
                        loss, grads = value_and_grad()
                        for x, gr in zip(params, grads):
                            x.grad = gr
                        adam.step()
                    done += n
                    stalled = False
                    cur = float(loss)
                on_iter(n)
                if not math.isfinite(cur):
                    break
                if stalled or abs(prev - cur) / max(abs(prev), abs(cur), 1.0) <= cfg.ftol:
                    break
                prev = cur
        for x in self.p.values():
            x.requires_grad_(False)
        return self.end_stage(stage, weights, start, l0, done, ev0, t0)

    def begin_stage(self, stage: int, weights: Mapping[str, float]) -> tuple[float, dict[str, Tensor]]:
        """The stage's starting loss and a copy of the parameters it optimises (for :meth:`end_stage`)."""
        with torch.no_grad():
            return float(self.total(stage, weights)[0]), {n: self.p[n].detach().clone() for n in STAGE_PARAMS[stage]}

    def end_stage(self, stage: int, weights: Mapping[str, float], start: Mapping[str, Tensor], l0: float, done: int, ev0: int,
                  t0: float) -> dict[str, Any]:
        """The divergence guard of every optimizer, then the stage's record.

        ``start`` holds the stage's parameters as it began, ``l0`` their loss. A stage that ends with a
        non-finite loss or parameter (``guard = "non-finite"``), or with a loss above ``l0``
        (``"rising"``), is undone: its parameters go back to ``start``, the best finite point it
        knows (an optimizer keeps its best iterate within the stage: L-BFGS's line search and the
        Gauss-Newton trials accept only decreases)."""
        with torch.no_grad():
            l1, t = self.total(stage, weights)
            guard = None
            if not bool(torch.isfinite(l1)) or not all(bool(torch.isfinite(self.p[n]).all()) for n in start):
                guard = "non-finite"
            elif math.isfinite(l0) and float(l1) > l0:
                guard = "rising"
            if guard is not None:
                for n, x in start.items():
                    self.p[n].copy_(x)
                l1, t = self.total(stage, weights)
        return {
            "stage": stage,
            "loss_start": l0,
            "loss_end": float(l1),
            "terms": {k: float(v) for k, v in t.items()},
            "iterations": done,
            "evaluations": self.evals - ev0,
            "seconds": time.perf_counter() - t0,
            "guard": guard,
        }

    def objective(self):
        """The autograd-free objective (:class:`~h4d_fast.pipeline.fit_objective.Objective`), built once."""
        if self._obj is None:
            from .fit_objective import Objective

            self._obj = Objective(self)
        return self._obj

    def _evaluator(self, stage: int, weights: Mapping[str, float], names: tuple[str, ...]) -> Callable[[], tuple[Tensor, dict[str, Tensor]]]:
        """``() -> (loss, {name: grad})`` at the current parameters; on CUDA (``fit.cuda_graphs``)
        replayed from a CUDA graph captured once per stage and weights (not with the collision term,
        whose op runs eagerly)."""
        obj = self.objective()
        w = dict(weights)

        def fn() -> tuple[Tensor, dict[str, Tensor]]:
            return obj.value_and_grad(stage, w, names)

        coll = bool(w.get("collision")) and self.P >= 2 and self.contact is not None and self.contact.numel() > 0
        if self.kp.device.type != "cuda" or not self.cfg.cuda_graphs or coll:
            return fn
        key = (stage, tuple(sorted(w.items())), names)
        g = self._graphs.get(key)
        if g is None:
            from .fit_objective import graph_or_eager

            g = self._graphs[key] = graph_or_eager(fn)
        return g


    # -- collision helpers
    def select_contact(self, margin: float, chunk: int = 256) -> Tensor:
        """Frames where some pair's vertex boxes come within ``margin`` (metres) of each other."""
        F, P = self.F, self.P
        if P < 2:
            return torch.zeros(0, dtype=torch.long, device=self.kp.device)
        lo, hi = [], []
        with torch.no_grad():
            for f0 in range(0, F, chunk):
                idx = torch.arange(f0, min(F, f0 + chunk), device=self.kp.device)
                self.contact = idx
                v = self.contact_vertices()  # [c, P, N, 3]
                lo.append(v.amin(2))
                hi.append(v.amax(2))
        lo_, hi_ = torch.cat(lo), torch.cat(hi)  # [F, P, 3]
        near = torch.zeros(F, dtype=torch.bool, device=self.kp.device)
        for a, b in person_pairs(P):
            close = ((lo_[:, a] <= hi_[:, b] + margin) & (lo_[:, b] <= hi_[:, a] + margin)).all(-1)
            if self.present is not None:  # only people present in the frame can be in contact
                close &= self.present[:, a] & self.present[:, b]
            near |= close
        self.contact = near.nonzero()[:, 0]
        return self.contact

    def penetration(self) -> Tensor:
        """Per-frame penetration volume ``[F]`` (cm^3; 0 on frames outside the contact set)."""
        from ..ops.penetration import penetration_volume

        out = self.kp.new_zeros(self.F)
        if self.P < 2 or self.contact is None or not self.contact.numel():
            return out
        with torch.no_grad():
            v = self.contact_vertices()
            pen = v.new_zeros(v.shape[0])
            for a, b in person_pairs(self.P):
                pen = pen + penetration_volume(v[:, a], v[:, b], self.faces)
        out[self.contact] = pen
        return out

    def kp_error_mm(self) -> float:
        with torch.no_grad():
            J, _ = self._forward_joints(False)
            d = (J.index_select(2, self.coco_idx) - self.kp).norm(dim=-1)
            m = (self.w > 0).to(d.dtype)
            return float((d * m).sum() / m.sum().clamp_min(1)) * 1000.0


def fit_iterations(cfg: FitConfig, num_people: int = 2) -> int:
    """Upper bound of the optimizer iterations :func:`fit_sequence` runs (the progress total)."""
    its = stage_iterations(cfg)
    total = int(cfg.epochs) * (its[1] + its[2] + its[3])
    if num_people >= 2 and cfg.collision and cfg.w3_collision != 0:
        total += its["collision"] * (2 if cfg.compare_collision else 1)
    return total


def stage_iterations(cfg: FitConfig) -> dict:
    """Iterations of stages 1, 2, 3 and ``"collision"`` for the configured optimizer."""
    if cfg.optimizer == "gn":
        return {1: int(cfg.gn_iters_stage1), 2: int(cfg.gn_iters_stage2), 3: int(cfg.gn_iters_stage3), "collision": int(cfg.gn_iters_collision)}
    return {1: int(cfg.iters_stage1), 2: int(cfg.iters_stage2), 3: int(cfg.iters_stage3), "collision": int(cfg.iters_collision)}


def fit_sequence(
    poses3d: Tensor,
    body: BodyModel,
    cfg: FitConfig,
    device: str | torch.device = "cpu",
    init: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    present: Tensor | None = None,
) -> FitResult:
    """Fit SMPL to a sequence of 3D keypoints (module docstring).

    Args:
        poses3d: ``[F, P, 17, 4]`` COCO keypoints (x, y, z in metres; the last channel is the
            validity or a confidence in [0, 1]).
        body: the body model (read, not moved; its device and dtype do not matter).
        cfg: :class:`~h4d_fast.config.FitConfig`.
        device: where to fit.
        init: optional per-frame initial parameters, any of ``global_orient [F, P, 3]``,
            ``body_pose [F, P, 69]``, ``transl [F, P, 3]``, ``betas [P, K] | [F, P, K]``
            (arrays or tensors). ``global_orient`` and ``transl`` are used only together;
            otherwise both come from the Kabsch initialisation.
        progress: called with the cumulative number of optimizer iterations (the total is
            :func:`fit_iterations`).
        present: ``[F, P]`` bool, who is in which frame (default: everyone everywhere). Absent
            person-frames carry no keypoint weight; the collision stage only considers frames
            where a pair of present people comes close.
    Returns:
        :class:`FitResult` on ``device``.
    """
    if poses3d.dim() != 4 or poses3d.shape[2:] != (NUM_COCO, 4):
        raise ValueError(f"fit_sequence: expected poses3d [F, P, {NUM_COCO}, 4], got {tuple(poses3d.shape)}")
    if cfg.optimizer not in ("gn", "lbfgs", "adam"):
        raise ValueError(f"fit.optimizer must be 'gn', 'lbfgs' or 'adam', got {cfg.optimizer!r}")
    device = torch.device(device)
    if poses3d.shape[0] == 0 or poses3d.shape[1] == 0:
        raise ValueError(f"fit_sequence: no frames or no people (poses3d {tuple(poses3d.shape)})")
    with cpu_threads(int(cfg.cpu_threads) if device.type == "cpu" else 0):
        return _fit_sequence(poses3d, body, cfg, device, init, progress, present)


def _fit_sequence(poses3d: Tensor, body: BodyModel, cfg: FitConfig, device: torch.device, init: Mapping[str, Any] | None,
                  progress: Callable[[int], None] | None, present: Tensor | None = None) -> FitResult:
    t_start = time.perf_counter()
    dt = torch.float32 if body.dtype != torch.float64 else torch.float64
    fast = FastBody(body).to(device=device, dtype=dt)
    F, P = poses3d.shape[:2]
    x = poses3d.to(device=device, dtype=dt)
    w = x[..., 3].clamp(0, 1)
    w = torch.where(torch.isfinite(x[..., :3]).all(-1), w, torch.zeros_like(w))
    if present is not None:
        present = present.to(device=device, dtype=torch.bool)
        w = w * present[..., None].to(w.dtype)
    kp = torch.where(w[..., None] > 0, x[..., :3], torch.zeros_like(x[..., :3]))
    K = fast.num_betas

    betas = _init_array(init, "betas", (P, K), dt, device)
    betas = betas[:, :K] if betas is not None else torch.zeros(P, K, dtype=dt, device=device)
    if betas.shape[1] < K:
        betas = torch.cat([betas, betas.new_zeros(P, K - betas.shape[1])], 1)
    body_pose = _init_array(init, "body_pose", (F, P, NUM_BODY_POSE), dt, device)
    go = _init_array(init, "global_orient", (F, P, 3), dt, device)
    tr = _init_array(init, "transl", (F, P, 3), dt, device)
    init_ok = None
    if go is None or tr is None:
        go, tr, init_ok = init_from_keypoints(kp, w, fast, betas, body_pose)
    if body_pose is None:
        body_pose = init_limb_pose(kp, w, go, fast, betas) if cfg.init_limbs else torch.zeros(F, P, NUM_BODY_POSE, dtype=dt, device=device)
    params = {"global_orient": go.clone(), "body_pose": body_pose.clone(), "betas": betas.clone(), "transl": tr.clone()}
    fitter = _Fitter(kp, w, fast, cfg, params, present)

    done = [0]

    def on_iter(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0])

    stats: dict[str, Any] = {
        "frames": F,
        "people": P,
        "init_frames_kabsch": int(init_ok.sum()) if init_ok is not None else None,
        "init_kp_error_mm": fitter.kp_error_mm(),
        "stages": [],
    }
    collision_off: dict[str, Tensor] | None = None
    its = stage_iterations(cfg)
    coll_on = P >= 2 and cfg.collision and cfg.w3_collision != 0 and its["collision"] > 0
    for e in range(int(cfg.epochs)):
        for s, iters in ((1, its[1]), (2, its[2]), (3, its[3])):
            wts = cfg.stage_weights(s)
            wts["collision"] = 0.0  # only the collision stage uses it
            rec = fitter.run_stage(s, wts, int(iters), on_iter)
            rec["epoch"] = e
            stats["stages"].append(rec)
    if coll_on:
        t_c = time.perf_counter()
        contact = fitter.select_contact(float(cfg.collision_margin))
        stats["contact_frames"] = int(contact.numel())
        meas = [0.0]  # seconds spent measuring penetration (stats)

        def penetration() -> Tensor:
            t_m = time.perf_counter()
            pen = fitter.penetration()
            meas[0] += time.perf_counter() - t_m
            return pen

        if cfg.compare_collision:  # the measure costs ~1-4 s at 600 frames; h4d run reports the after value only
            stats["penetration_before_cm3"] = float(penetration().mean())
        wts = cfg.stage_weights(3)
        if cfg.compare_collision and contact.numel():
            snap = {k: v.detach().clone() for k, v in fitter.p.items()}
            rec = fitter.run_stage(3, {**wts, "collision": 0.0}, its["collision"], on_iter)
            rec["epoch"] = "collision-off"
            stats["collision_off_stage"] = rec
            stats["penetration_without_collision_cm3"] = float(penetration().mean())
            stats["kp_error_without_collision_mm"] = fitter.kp_error_mm()
            collision_off = {k: v.detach().clone() for k, v in fitter.p.items()}
            for k, v in snap.items():
                fitter.p[k].copy_(v)
        if contact.numel():
            rec = fitter.run_stage(3, wts, its["collision"], on_iter)
            rec["epoch"] = "collision"
            stats["stages"].append(rec)
        pen1 = penetration()
        stats["penetration_measure_seconds"] = meas[0]
        stats["penetration_after_cm3"] = float(pen1.mean())
        stats["penetration_max_frame_cm3"] = float(pen1.max()) if pen1.numel() else 0.0
        if cfg.compare_collision:
            base = stats.setdefault("penetration_without_collision_cm3", stats["penetration_before_cm3"])
            stats["penetration_reduction"] = (1.0 - stats["penetration_after_cm3"] / base) if base > 0 else 0.0
        stats["collision_seconds"] = time.perf_counter() - t_c
    stats["kp_error_mm"] = fitter.kp_error_mm()
    stats["iterations"] = int(sum(r["iterations"] for r in stats["stages"]))
    stats["evaluations"] = int(sum(r["evaluations"] for r in stats["stages"]))
    stats["final_loss"] = stats["stages"][-1]["loss_end"] if stats["stages"] else None
    stats["seconds"] = time.perf_counter() - t_start
    p = fitter.p
    return FitResult(p["global_orient"].detach(), p["body_pose"].detach(), p["betas"].detach(), p["transl"].detach(), stats,
                     collision_off=collision_off)


__all__ = ["FitResult", "KABSCH_WEIGHTS", "fit_iterations", "fit_sequence", "init_from_keypoints", "kabsch", "model_outputs"]
