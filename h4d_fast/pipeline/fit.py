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

**Presence** (``present [F, P]``, people who enter and leave): each run of frames where a person is
present (a *segment* of their track) is fitted on its own. An absent person-frame carries no term
(no keypoints, pose prior, limb or symmetry term; the per-body terms are means over the present
person-frames), the temporal term keeps only the differences whose frames all lie in one segment
(:func:`h4d_fast.pipeline.fit_losses.temporal_rows`: no smoothing across an absence or past a
track's ends), the initialisation fills a frame only from its own segment, and the result has no
body there (zero parameters, :attr:`FitResult.present`; the export writes nothing). The shape
(betas) stays one per person: the same person in every segment.

The loss terms and their units are defined in :mod:`h4d_fast.pipeline.fit_losses`. Each stage
runs L-BFGS with a strong-Wolfe line search (:mod:`h4d_fast.pipeline.lbfgs`), Adam, or
Gauss-Newton (:mod:`h4d_fast.pipeline.fit_gn`) over all frames and people at once, stopping early
when the relative loss change over ``check_every`` iterations falls below ``ftol``. The loss and
its gradient are evaluated without autograd (:mod:`h4d_fast.pipeline.fit_objective`: analytic
derivatives of :class:`~h4d_fast.body.fast.FastBody`'s joints-only forward; on CUDA replayed from
a CUDA graph). Only the collision term needs meshes (sparse skinning), and only on the frames
whose bodies' boxes come within ``collision_margin`` of each other, pair by pair: every pair of
people present in the same frame whose boxes come that close there (chosen when the collision
stage starts), all pairs in one batched call of the op.

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
from ..errors import InputError
from ..ops.contact import person_pairs
from . import fit_losses as L
from .fit_collision import run_collision_stage
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
        self.F, self.P = kp.shape[:2]
        # [F, P] bool or None (everyone everywhere): an absent person-frame has no term at all, and
        # the temporal term only links frames of one run of presence (fit_losses.temporal_rows)
        self.present = None if present is None else present.to(device=kp.device, dtype=torch.bool)
        if self.present is not None:
            weight = weight * self.present[..., None].to(weight.dtype)
        self.kp, self.w, self.fast, self.cfg = kp, weight, fast, cfg
        self.p = params
        self.coco_idx = torch.tensor(COCO_TO_SMPL45, dtype=torch.long, device=kp.device)
        valid = weight > 0
        self.limb_tgt, self.limb_ok = L.target_limb_lengths(kp, valid)
        m1 = torch.zeros(NUM_COCO, dtype=kp.dtype, device=kp.device)
        m1[list(STAGE1_KEYPOINTS)] = 1
        self.w_stage1 = weight * m1
        self.faces = fast.faces.to(kp.device)
        self._contact: Tensor | None = None
        self._pairs: tuple[Tensor, Tensor] | None = None
        self.pair_weight: Tensor | None = None  # [Q] weights of the collision pairs (None: all 1)
        self.collision_field: str | None = None  # the collision op's field (None: cfg.collision_field)
        self.evals = 0
        self._gn = None  # the Gauss-Newton solver (optimizer "gn"), built on first use
        self._obj = None  # the autograd-free objective (fit.gradients = "analytic"), built on first use
        self._graphs: dict = {}  # CUDA graphs of the objective, per stage and weights

    # -- the collision term's bodies: pairs of people present in the same frame and close
    @property
    def contact(self) -> Tensor | None:
        """``[Fc]`` frames of the collision term (setting it takes every pair of present people there)."""
        return self._contact

    @contact.setter
    def contact(self, idx: Tensor | None) -> None:
        self._contact = idx
        self._pairs = None
        self.pair_weight = None

    def weight_frames(self, frames: Tensor, weight: float) -> None:
        """Multiply the collision term of the current pairs in ``frames`` by ``weight``
        (:attr:`pair_weight`, ``[Q]``; the other pairs keep weight 1; reset by setting :attr:`contact`)."""
        ids, pairs = self.collision_pairs()
        frame = ids.index_select(0, pairs[:, 0]) // self.P
        hit = torch.isin(frame, frames)
        w = torch.ones(pairs.shape[0], dtype=self.kp.dtype, device=self.kp.device)
        self.pair_weight = torch.where(hit, w * float(weight), w)

    def collision_kw(self) -> dict[str, Any]:
        """The collision op's arguments of the collision term (:func:`~h4d_fast.pipeline.fit_losses.pair_collision_term`)."""
        cfg = self.cfg
        field = self.collision_field or cfg.collision_field
        if field == "exact" and self.kp.device.type != "cpu":
            key = "fit.collision_refine_field" if self.collision_field else "fit.collision_field"
            raise InputError(None, f"'exact' has CPU kernels only (numba); on {self.kp.device.type} use inside or signed", field=key)
        return dict(grid_size=int(cfg.collision_grid), backend=cfg.collision_backend, field=field,
                    margin=float(cfg.collision_clearance_mm) * 1e-3 if field != "inside" else 0.0,
                    taper=float(cfg.collision_taper_mm) * 1e-3 if field == "inside" else 0.0, pair_weight=self.pair_weight)

    def collision_pairs(self) -> tuple[Tensor, Tensor]:
        """The collision term's bodies ``ids [U]`` (``frame * P + person``, sorted, distinct) and
        its pairs ``[Q, 2]`` (indices into ``ids``): those chosen by :meth:`select_contact`, or
        every pair of people present in a frame of :attr:`contact`."""
        if self._pairs is None:
            dev = self.kp.device
            idx = self._contact if self._contact is not None else torch.zeros(0, dtype=torch.long, device=dev)
            fp = L.all_pairs(idx.numel(), self.P, dev)  # rows of [Fc, P]
            fa = idx.index_select(0, fp[:, 0] // self.P) if fp.numel() else fp[:, 0]
            flat = torch.stack([fa * self.P + fp[:, 0] % self.P, fa * self.P + fp[:, 1] % self.P], 1)
            if self.present is not None:
                pres = self.present.reshape(-1)
                flat = flat[pres[flat[:, 0]] & pres[flat[:, 1]]]
            self._set_pairs(flat)
        return self._pairs

    def _set_pairs(self, flat: Tensor) -> None:
        """Pairs of bodies given by their flat ids ``[Q, 2]``."""
        ids, inv = torch.unique(flat.reshape(-1), sorted=True, return_inverse=True)
        self._pairs = (ids, inv.view(-1, 2))

    def collision_active(self) -> bool:
        return self.P >= 2 and self._contact is not None and self.collision_pairs()[1].shape[0] > 0

    def _forward_joints(self, need_rot6d: bool) -> tuple[Tensor, Tensor | None]:
        F, P = self.F, self.P
        N = F * P
        go, bp, be, tr = self.p["global_orient"], self.p["body_pose"], self.p["betas"], self.p["transl"]
        rot = self.fast.rotations(go.reshape(N, 3), bp.reshape(N, NUM_BODY_POSE))  # [N, 24, 3, 3]
        J = self.fast.joints(None, None, be[None].expand(F, P, -1).reshape(N, -1), tr.reshape(N, 3), rot=rot)
        r6 = rot6d(rot[:, 1:]).view(F, P, NUM_SMPL_JOINTS - 1, 6) if need_rot6d else None
        return J.view(F, P, -1, 3), r6

    def body_vertices(self, ids: Tensor) -> Tensor:
        """``[U, N, 3]`` meshes of the bodies ``ids [U]`` (``frame * P + person``); differentiable when
        grad mode is on; without it, and without pose correctives, by sparse skinning."""
        P = self.P
        go, bp, be, tr = (self.p[k] for k in _PARAM_KEYS)
        person = ids % P
        go_, bp_ = go.reshape(-1, 3).index_select(0, ids), bp.reshape(-1, NUM_BODY_POSE).index_select(0, ids)
        tr_ = tr.reshape(-1, 3).index_select(0, ids)
        if not torch.is_grad_enabled() and self.fast.posedirs is None:
            from ..body.sparse_skin import sparse_skin

            fast, sk = self.fast, sparse_skin(self.fast)
            Jb = fast.rest_joints(be).index_select(0, person)  # [U, 24, 3]
            GR, Gt = fast.kinematics(fast.rotations(go_, bp_), Jb)
            return sk.vertices(GR, Gt, Jb, sk.rest(be), person, tr_)
        v, _ = self.fast.vertices(go_, bp_, be.index_select(0, person), tr_)
        return v

    def terms(self, stage: int, weights: Mapping[str, float]) -> dict[str, Tensor]:
        cfg = self.cfg
        out: dict[str, Tensor] = {}
        J, r6 = self._forward_joints(need_rot6d=bool(weights["temporal"]))
        coco = J.index_select(2, self.coco_idx)
        if weights["joint"]:
            out["joint"] = L.keypoint_loss(coco, self.kp, self.w_stage1 if stage == 1 else self.w, cfg.kp_sigma)
        pres = self.present
        if weights["reg"]:
            out["reg"] = L.pose_reg_loss(self.p["body_pose"], pres)
        if stage == 3 and cfg.w_hyperext:
            out["hyperext"] = L.hyperextension_loss(self.p["body_pose"], pres)
        if weights["limb"]:
            out["limb"] = L.limb_length_loss(coco, self.limb_tgt, self.limb_ok, pres)
        if weights["symm"]:
            out["symm"] = L.symmetry_loss(coco, bodies=pres)
        if weights["temporal"]:
            out["temporal"] = L.temporal_loss(r6, J, cfg.temporal, pres)
        if weights["shape"]:
            out["shape"] = L.shape_prior_loss(self.p["betas"])
        if weights["collision"] and self.collision_active():
            out["collision"] = self.collision()
        return out

    def collision(self) -> Tensor:
        """The collision term on the contact pairs.

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
        kw = self.collision_kw()
        ids, pairs = self.collision_pairs()
        if cfg.collision_inside_only:
            return self._collision_inside_only(ids, pairs, kw)
        if not torch.is_grad_enabled() or self.fast.posedirs is not None or not cfg.collision_sparse_grad:
            return L.pair_collision_term(self.body_vertices(ids), pairs, self.faces, self.F, **kw)
        with torch.no_grad():
            V = self.body_vertices(ids)  # [U, N, 3]
        Vd = V.requires_grad_(True)
        lc = L.pair_collision_term(Vd, pairs, self.faces, self.F, **kw)
        (g,) = torch.autograd.grad(lc, Vd)
        rows = (g != 0).any(-1).nonzero()  # [R, 2] (body, vertex)
        if rows.shape[0] == 0:
            return lc.detach() + 0.0 * self.p["transl"].sum()
        sur = (g[rows[:, 0], rows[:, 1]] * self.skin_rows(ids, rows)).sum()
        return lc.detach() + sur - sur.detach()

    def _collision_inside_only(self, ids: Tensor, pairs: Tensor, kw: dict) -> Tensor:
        """``collision_inside_only`` (:func:`~h4d_fast.pipeline.fit_losses.pair_collision_term_grad_inside`)."""
        with torch.no_grad():
            value, g = L.pair_collision_term_grad_inside(self.body_vertices(ids), pairs, self.faces, self.F, **kw)
        if not torch.is_grad_enabled():
            return value
        rows = (g != 0).any(-1).nonzero()
        if rows.shape[0] == 0:
            return value + 0.0 * self.p["transl"].sum()
        sur = (g[rows[:, 0], rows[:, 1]] * self.skin_rows(ids, rows)).sum()
        return value + sur - sur.detach()

    def skin_rows(self, ids: Tensor, rows: Tensor) -> Tensor:
        """Differentiable posed vertices ``[R, 3]`` of ``rows [R, 2]`` = (index into ``ids``, vertex)."""
        fast, P = self.fast, self.P
        go, bp, be, tr = (self.p[k] for k in _PARAM_KEYS)
        person = ids % P
        rot = fast.rotations(go.reshape(-1, 3).index_select(0, ids), bp.reshape(-1, NUM_BODY_POSE).index_select(0, ids))
        J = fast.rest_joints(be).index_select(0, person)
        GR, Gt = fast.kinematics(rot, J)
        return fast.skin_vertices(rows[:, 0], rows[:, 1], GR, Gt, J, be.index_select(0, person)) \
            + tr.reshape(-1, 3).index_select(0, ids).index_select(0, rows[:, 0])

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
                compact = None if cfg.lbfgs_direction == "auto" else cfg.lbfgs_direction == "compact"
                opt = LBFGS(xflat, flat_eval, lr=cfg.lr, history_size=int(cfg.history_size), tolerance_grad=1e-10, tolerance_change=1e-14,
                            compact=compact)
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

        coll = bool(w.get("collision")) and self.collision_active()
        if self.kp.device.type != "cuda" or not self.cfg.cuda_graphs or coll:
            return fn
        key = (stage, tuple(sorted(w.items())), names)
        g = self._graphs.get(key)
        if g is None:
            from .fit_objective import graph_or_eager

            g = self._graphs[key] = graph_or_eager(fn)
        return g


    # -- collision helpers
    def select_contact(self, margin: float, chunk: int = 512) -> Tensor:
        """The collision term's pairs: every pair of people present in a frame whose vertex boxes
        come within ``margin`` (metres) of each other there. Returns the frames with a pair."""
        F, P = self.F, self.P
        dev = self.kp.device
        if P < 2:
            self.contact = torch.zeros(0, dtype=torch.long, device=dev)
            return self.contact
        ids = torch.arange(F * P, device=dev) if self.present is None else self.present.reshape(-1).nonzero()[:, 0]
        lo = torch.full((F * P, 3), float("inf"), dtype=self.kp.dtype, device=dev)
        hi = torch.full((F * P, 3), float("-inf"), dtype=self.kp.dtype, device=dev)
        with torch.no_grad():
            for i in range(0, ids.numel(), chunk):
                sel = ids[i : i + chunk]
                v = self.body_vertices(sel)  # [c, N, 3]
                lo[sel], hi[sel] = v.amin(1), v.amax(1)
        lo, hi = lo.view(F, P, 3), hi.view(F, P, 3)
        found = []
        t = torch.arange(F, device=dev)
        for a, b in person_pairs(P):  # absent people have empty boxes (inf, -inf): never close
            close = ((lo[:, a] <= hi[:, b] + margin) & (lo[:, b] <= hi[:, a] + margin)).all(-1)
            f = t[close]
            found.append(torch.stack([f * P + a, f * P + b], 1))
        flat = torch.cat(found)
        self.contact = torch.unique(flat[:, 0] // P, sorted=True)
        self._set_pairs(flat)
        return self.contact

    def deep_frames(self, depth: float) -> Tensor:
        """Frames of the current contact pairs where a vertex still lies more than ``depth`` (metres)
        inside the other body, sorted ``[Fd]``.

        Candidates: the vertices the collision op's gradient touches (those whose trilinear sample
        reads an inside grid point of the partner; one op evaluation); their exact depth in the
        partner's mesh (:func:`h4d_fast.ops.penetration.inside_depth`: closest triangle and
        pseudo-normal). Only the candidates are tested (tens to a few hundred vertices per body in a
        contact), so this costs about one evaluation of the collision term, not the full
        penetration measure."""
        from ..ops.penetration import inside_depth

        dev = self.kp.device
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        if not self.collision_active():
            return empty
        cfg = self.cfg
        ids, pairs = self.collision_pairs()
        with torch.no_grad():
            V = self.body_vertices(ids)  # [U, N, 3]
            _, g = L.pair_collision_term_grad(V, pairs, self.faces, self.F, grid_size=int(cfg.collision_grid), backend=cfg.collision_backend)
            cand = (g != 0).any(-1)  # [U, N]
            src = torch.cat([pairs[:, 0], pairs[:, 1]])  # both directions: src's vertices inside dst
            dst = torch.cat([pairs[:, 1], pairs[:, 0]])
            c = cand.index_select(0, src)  # [R, N]
            keep = c.any(-1)
            if not bool(keep.any()):
                return empty
            src, dst, c = src[keep], dst[keep], c[keep]
            counts = c.sum(-1)
            mc = int(counts.max())
            order = torch.argsort((~c).to(torch.int8), dim=-1, stable=True)[:, :mc]  # candidates first
            used = torch.arange(mc, device=dev)[None] < counts[:, None]
            order = torch.where(used, order, order[:, :1])  # padding repeats a candidate (max unchanged)
            N = V.shape[1]
            pts = V.reshape(-1, 3).index_select(0, (src[:, None] * N + order).reshape(-1)).view(-1, mc, 3)
            d = inside_depth(pts, V.index_select(0, dst), self.faces)  # [R, mc] metres
            deep = d.amax(-1) > depth
            return torch.unique(ids.index_select(0, src[deep]) // self.P, sorted=True)

    def penetration(self) -> Tensor:
        """Per-frame penetration volume ``[F]`` (cm^3, summed over the contact pairs; 0 on frames
        without one)."""
        from ..ops.penetration import penetration_volume

        out = self.kp.new_zeros(self.F)
        if not self.collision_active():
            return out
        ids, pairs = self.collision_pairs()
        with torch.no_grad():
            v = self.body_vertices(ids)
            pen = penetration_volume(v.index_select(0, pairs[:, 0]), v.index_select(0, pairs[:, 1]), self.faces)
        return out.index_add_(0, ids.index_select(0, pairs[:, 0]) // self.P, pen.to(out.dtype))

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
        refine = its["collision_refine"] if float(cfg.collision_refine_depth_mm) > 0 else 0
        total += (its["collision"] + refine) * (2 if cfg.compare_collision else 1)
    return total


def stage_iterations(cfg: FitConfig) -> dict:
    """Iterations of stages 1, 2, 3 and ``"collision"`` for the configured optimizer."""
    if cfg.optimizer == "gn":
        return {1: int(cfg.gn_iters_stage1), 2: int(cfg.gn_iters_stage2), 3: int(cfg.gn_iters_stage3), "collision": int(cfg.gn_iters_collision),
                "collision_refine": int(cfg.gn_iters_collision_refine)}
    return {1: int(cfg.iters_stage1), 2: int(cfg.iters_stage2), 3: int(cfg.iters_stage3), "collision": int(cfg.iters_collision),
            "collision_refine": int(cfg.iters_collision_refine)}


def fit_sequence(
    poses3d: Tensor,
    body: BodyModel,
    cfg: FitConfig,
    device: str | torch.device = "cpu",
    init: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    present: Tensor | None = None,
    measure_penetration: bool = True,
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
            person-frames carry no term and get no body (module docstring); the temporal term
            works per segment of presence; the collision stage only pairs people present in the
            same frame who come close.
        measure_penetration: measure the interpenetration after the collision stage
            (``stats["penetration_after_cm3"]``). ``h4d run`` passes False where its export measures
            it on the host from the final meshes anyway (:func:`h4d_fast.ops.contact.export_contact`,
            the same pass as the contact labels): on a GPU the measure was 0.6 s of a 2.1 s fit.
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
        return _fit_sequence(poses3d, body, cfg, device, init, progress, present, measure_penetration)


def _fit_sequence(poses3d: Tensor, body: BodyModel, cfg: FitConfig, device: torch.device, init: Mapping[str, Any] | None,
                  progress: Callable[[int], None] | None, present: Tensor | None = None, measure_penetration: bool = True) -> FitResult:
    t_start = time.perf_counter()
    dt = torch.float32 if body.dtype != torch.float64 else torch.float64
    fast = FastBody(body).to(device=device, dtype=dt)
    F, P = poses3d.shape[:2]
    x = poses3d.to(device=device, dtype=dt)
    w = x[..., 3].clamp(0, 1)
    w = torch.where(torch.isfinite(x[..., :3]).all(-1), w, torch.zeros_like(w))
    if present is not None:
        present = present.to(device=device, dtype=torch.bool)
        if present.shape != (F, P):
            raise ValueError(f"fit_sequence: present must be [F, P] = [{F}, {P}], got {tuple(present.shape)}")
        w = w * present[..., None].to(w.dtype)
        if bool(present.all()):
            present = None  # everyone everywhere: the plain objective
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
        go, tr, init_ok = init_from_keypoints(kp, w, fast, betas, body_pose, present)
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
        collision_off = run_collision_stage(fitter, cfg, its["collision"], on_iter, stats, measure=measure_penetration,
                                            refine_iters=its["collision_refine"])
    stats["kp_error_mm"] = fitter.kp_error_mm()
    stats["iterations"] = int(sum(r["iterations"] for r in stats["stages"]))
    stats["evaluations"] = int(sum(r["evaluations"] for r in stats["stages"]))
    stats["final_loss"] = stats["stages"][-1]["loss_end"] if stats["stages"] else None
    stats["seconds"] = time.perf_counter() - t_start
    if present is not None:  # no body where the person is absent
        stats["absent_person_frames"] = int((~present).sum())
        for params_ in (fitter.p, collision_off) if collision_off is not None else (fitter.p,):
            for k in ("global_orient", "body_pose", "transl"):
                params_[k] = params_[k].detach().masked_fill(~present[..., None], 0.0)
    p = fitter.p
    return FitResult(p["global_orient"].detach(), p["body_pose"].detach(), p["betas"].detach(), p["transl"].detach(), stats,
                     collision_off=collision_off, present=present)


__all__ = ["FitResult", "KABSCH_WEIGHTS", "fit_iterations", "fit_sequence", "init_from_keypoints", "kabsch", "model_outputs"]
