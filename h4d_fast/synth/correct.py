"""The pose corrections of the synthetic generator's collision passes (:mod:`h4d_fast.synth.collide`,
:mod:`h4d_fast.synth.settle`): variables, posing and priors, shared by every pass.

Over a window of frames, small extra rotations of the spine, neck, collars, shoulders, elbows
(about their hinge) and wrists, and a horizontal root offset per person, each a cubic B-spline over
the frames (control points every ``knot_spacing`` frames, normalised by a per-joint prior scale).
A pass supplies its penetration terms; :meth:`Corrector.optimise` adds the priors (the squared
corrections and their second differences, the wrists and hands kept where the script put them,
the elbow / shoulder limits, a trust region on the joints) and runs L-BFGS on the control points.
:meth:`Corrector.capsule_term` keeps the arm segments of the two people apart as capsules: the
distance between two bone segments has one gradient direction even when the limbs cross through
each other, where point-in-volume terms on either side of the crossing cancel.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from ..body.fast import joint_transforms
from ..constants import NUM_SMPL_JOINTS
from .arm_ik import DEG, SHOULDER_LIMITS
from .geometry import point_segment_closest, segment_distance
from .rotations import axis_angle_to_matrix, matrix_to_axis_angle
from .skeleton import (
    CAPSULE_INDEX,
    HEAD,
    L_COLLAR,
    L_ELBOW,
    L_HAND,
    L_SHOULDER,
    L_WRIST,
    NECK,
    R_COLLAR,
    R_ELBOW,
    R_HAND,
    R_SHOULDER,
    R_WRIST,
    SPINE1,
    SPINE2,
    SPINE3,
    capsule_points,
    fk_matrices,
)

# arm segments kept apart as capsules: upper arms, forearms, hands (wrist -> hand joint), left and right
LIMB_A: tuple[int, ...] = (L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST)
LIMB_B: tuple[int, ...] = (L_ELBOW, R_ELBOW, L_WRIST, R_WRIST, L_HAND, R_HAND)
TOE_REACH = 1.5  # the foot capsule runs from the ankle to this many times the ankle -> foot joint (ball) length
FINGER_REACH = 1.8  # the hand capsule runs from the wrist to this many times the wrist -> knuckle (hand joint) length


def bspline_basis(n: int, h: int) -> Tensor:
    """``[n, Nc]`` uniform cubic B-spline basis sampled at frames ``0..n-1`` (knots every ``h`` frames)."""
    h = max(1, int(h))
    nc = (n - 1) // h + 4
    u = torch.arange(n, dtype=torch.float64) / h
    i = u.floor().long().clamp(max=nc - 4)
    t = u - i
    w = torch.stack([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3], -1) / 6.0
    B = torch.zeros(n, nc, dtype=torch.float64)
    for k in range(4):
        B[torch.arange(n), i + k] = w[:, k]
    return B


def blend_points(W: Tensor, A: Tensor, x: Tensor) -> Tensor:
    """Linear blend skinning by blend matrices: rest points ``x [M, 3]`` with weights ``W [M, 24]``
    posed by ``A [B, 24, 12]`` (:func:`~h4d_fast.body.fast.joint_transforms`) -> ``[B, M, 3]``."""
    T = torch.einsum("mj,bjk->bmk", W, A)
    return (T[..., :9].unflatten(-1, (3, 3)) @ x[None, :, :, None])[..., 0] + T[..., 9:]


def limb_radii(px, q: float = 0.9) -> Tensor:
    """``[L]`` capsule radius of each arm segment of :data:`LIMB_A` -> :data:`LIMB_B`: the ``q``-quantile of
    the distance of the proxy's surface points on that segment (dominant joint its first; the hand
    joint's too for the hands) from the rest bone."""
    out = []
    J = px.rest_joints
    for a, b in zip(LIMB_A, LIMB_B):
        m = (px.point_part == a) | ((px.point_part == b) & (b in (L_HAND, R_HAND)))
        x = px.points[m]
        c = point_segment_closest(x, J[a].expand_as(x), J[b].expand_as(x))
        out.append(float((x - c).norm(dim=-1).quantile(q)))
    return torch.tensor(out, dtype=torch.float64)


class Corrector:
    """The correction variables of a window ``[lo, hi)`` of the script and what poses them.

    Args:
        R, transl: scripted local rotations ``[F, P, 24, 3, 3]`` and translations ``[F, P, 3]`` (float64).
        rest: rest joints ``[P, 24, 3]``; arms: ``arms[p][h]`` elbow hinge info (:class:`~h4d_fast.synth.collide.ArmInfo`).
        hand_weight: ``[F, P, 2]`` how firmly each hand keeps its scripted position (None: 1).
        prm: :class:`~h4d_fast.synth.collide.ResolveParams`; proxies: one per person (arm capsule radii).
        capsules: the skeletons' capsule radii ``[P, C]`` and head-sphere centres ``[P, 3]``
            (:data:`h4d_fast.synth.skeleton.CAPSULES`): the arms are then also kept out of the
            partner's head, neck and torso capsules, and the shins and feet out of the partner's;
            None: arms against arms only.
    """

    def __init__(self, R: Tensor, transl: Tensor, rest: Tensor, arms: Sequence, hand_weight: Optional[Tensor], prm, lo: int, hi: int,
                 proxies: Sequence, capsules: Optional[tuple[Tensor, Tensor]] = None) -> None:
        dt = self.dt = torch.float32
        self.prm, self.lo, self.hi = prm, lo, hi
        self.Fw = Fw = hi - lo
        self.P = P = R.shape[1]
        self.R64, self.T64 = R, transl
        self.Rw = R[lo:hi].to(dt)
        self.Tw = transl[lo:hi].to(dt)
        self.rest = rest.to(dt)
        self.arms = arms
        self.flex0 = torch.zeros(Fw, P, 2, dtype=dt)
        for p in range(P):
            for h, j in enumerate((L_ELBOW, R_ELBOW)):
                ai = arms[p][h]
                self.flex0[:, p, h] = ((matrix_to_axis_angle(R[lo:hi, p, j]) * ai.a0.to(torch.float64)).sum(-1) + ai.th0).to(dt)
        self.Bm = bspline_basis(Fw, prm.knot_spacing).to(dt)
        Nc = self.Bm.shape[1]
        self.ctrl = {
            "root": torch.zeros(Nc, P, 2, dtype=dt), "spine": torch.zeros(Nc, P, 3, dtype=dt), "neck": torch.zeros(Nc, P, 3, dtype=dt),
            "collar": torch.zeros(Nc, P, 2, 3, dtype=dt), "shoulder": torch.zeros(Nc, P, 2, 3, dtype=dt),
            "elbow": torch.zeros(Nc, P, 2, dtype=dt), "wrist": torch.zeros(Nc, P, 2, 3, dtype=dt),
        }
        for v in self.ctrl.values():
            v.requires_grad_(True)
        self.scale = {"root": prm.root, "spine": prm.spine, "neck": prm.neck, "collar": prm.collar, "shoulder": prm.shoulder,
                      "elbow": prm.elbow, "wrist": prm.wrist}
        self.a0 = torch.stack([torch.stack([arms[p][h].a0.to(dt) for h in range(2)]) for p in range(P)])  # [P, 2, 3]
        self.z: dict[str, Tensor] = {}
        self.expand()
        with torch.no_grad():
            _, _, Jref, _ = self.pose()
            self.hands_ref = Jref[:, :, [L_WRIST, R_WRIST, L_HAND, R_HAND]].clone()  # [Fw, P, 4, 3]
        hw = torch.ones(Fw, P, 2, dtype=dt) if hand_weight is None else hand_weight[lo:hi].to(dt)
        self.hw4 = torch.cat([hw, hw], -1)
        self.caps = None
        arm_r = torch.stack([limb_radii(px, prm.arm_q) for px in proxies]).to(dt)  # [P, L]
        if capsules is None:
            self.caps_r = arm_r
        else:
            radii, hc = capsules[0].to(dt).clone(), capsules[1].to(dt)
            arm = [CAPSULE_INDEX[n] for n in ("upper_arm_l", "upper_arm_r", "forearm_l", "forearm_r", "hand_l", "hand_r")]
            radii[:, arm] = torch.maximum(radii[:, arm], arm_r)  # LIMB_A -> LIMB_B order
            # the head sphere reaches over most of the face (the skeleton's radius is the median distance)
            for p, px in enumerate(proxies):
                x = px.points[px.point_part == HEAD]
                if len(x):
                    d = (x - (px.rest_joints[HEAD] + capsules[1][p].to(x.dtype))).norm(dim=-1)
                    radii[p, CAPSULE_INDEX["head"]] = max(float(radii[p, CAPSULE_INDEX["head"]]), float(d.quantile(prm.head_q)))
            core = [CAPSULE_INDEX[n] for n in ("torso_core", "torso_left", "torso_right", "neck", "head")]
            mask = torch.zeros(radii.shape[1], radii.shape[1], dtype=torch.bool)
            mask[torch.tensor(arm)[:, None], torch.tensor(arm + core)[None]] = True
            mask[torch.tensor(core)[:, None], torch.tensor(arm)[None]] = True
            if prm.leg_capsules:
                legs = [CAPSULE_INDEX[n] for n in ("shin_l", "shin_r", "foot_l", "foot_r")]
                mask[torch.tensor(legs)[:, None], torch.tensor(legs)[None]] = True  # feet and shins apart (the root offsets move them)
            # overlap allowed per capsule pair: the exact mesh pass (settle) takes the last millimetres
            slack = torch.zeros(radii.shape[1], radii.shape[1], dtype=dt)
            ta, tc = torch.tensor(arm), torch.tensor(core)
            slack[ta[:, None], tc[None]] = prm.core_overlap
            slack[tc[:, None], ta[None]] = prm.core_overlap
            slack[ta[:, None], ta[None]] = prm.arm_overlap
            self.caps = (radii, hc, mask, slack)
            self.arm_core = (ta, tc)
            self.hand_caps = (CAPSULE_INDEX["hand_l"], CAPSULE_INDEX["hand_r"])
            self.foot_caps = (CAPSULE_INDEX["foot_l"], CAPSULE_INDEX["foot_r"])
        self.s_cross = math.sin(SHOULDER_LIMITS["cross"] * DEG)
        self.s_ext = math.sin(SHOULDER_LIMITS["extension"] * DEG)
        self.c_elev = math.cos(SHOULDER_LIMITS["elevation"] * DEG)

    def contact_capsules(self, arm_overlap: float) -> Optional[tuple]:
        """The capsule set of the re-contact pass (:mod:`h4d_fast.synth.recontact`): the arms no longer
        kept off the partner's head, neck and torso (the exact mesh constraints do that), the two
        people's arm capsules allowed to overlap by ``arm_overlap`` (enough for the surfaces to touch,
        too little for one forearm to pass through the other); legs as before. None without the
        skeletons' capsules (arms against arms only: unchanged)."""
        if self.caps is None:
            return None
        radii, hc, mask, slack = self.caps
        ta, tc = self.arm_core
        mask, slack = mask.clone(), slack.clone()
        mask[ta[:, None], tc[None]] = False
        mask[tc[:, None], ta[None]] = False
        slack[ta[:, None], ta[None]] = slack[ta[:, None], ta[None]].clamp_min(arm_overlap)
        return radii, hc, mask, slack

    def expand(self) -> None:
        Nc = self.Bm.shape[1]
        for k, c in self.ctrl.items():
            self.z[k] = (self.Bm @ c.reshape(Nc, -1)).reshape(self.Fw, *c.shape[1:])

    def pose(self, frames: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Corrected local rotations, transl, posed joints and global rotations of the window (or some of its frames)."""
        sel = (lambda x: x) if frames is None else (lambda x: x[frames])
        base = sel(self.Rw)
        d = {k: sel(v) * self.scale[k] for k, v in self.z.items()}
        extra: dict[int, Tensor] = {}
        Rs = axis_angle_to_matrix(d["spine"] / 3.0)
        for j in (SPINE1, SPINE2, SPINE3):
            extra[j] = Rs
        Rn = axis_angle_to_matrix(d["neck"] / 2.0)
        for j in (NECK, HEAD):
            extra[j] = Rn
        Rc = axis_angle_to_matrix(d["collar"])
        Rsh = axis_angle_to_matrix(d["shoulder"])
        Rel = axis_angle_to_matrix(self.a0[None] * d["elbow"][..., None])
        Rwr = axis_angle_to_matrix(d["wrist"])
        for h, (col, sh, el, wr) in enumerate(((L_COLLAR, L_SHOULDER, L_ELBOW, L_WRIST), (R_COLLAR, R_SHOULDER, R_ELBOW, R_WRIST))):
            extra[col] = Rc[:, :, h]
            extra[sh] = Rsh[:, :, h]
            extra[el] = Rel[:, :, h]
            extra[wr] = Rwr[:, :, h]
        Rl = torch.stack([base[:, :, j] @ extra[j] if j in extra else base[:, :, j] for j in range(NUM_SMPL_JOINTS)], 2)
        Tr = sel(self.Tw) + torch.cat([d["root"], torch.zeros_like(d["root"][..., :1])], -1)
        Jp, GR = fk_matrices(self.rest, Rl, Tr)
        return Rl, Tr, Jp, GR

    def transforms(self, Jp: Tensor, GR: Tensor) -> list[Tensor]:
        """Per person the LBS blend matrices ``[n, 24, 12]`` of posed joints / global rotations."""
        return [joint_transforms(GR[:, p], Jp[:, p], self.rest[p]) for p in range(self.P)]

    def capsule_term(self, Ja: Tensor, Ga: Tensor) -> Tensor:
        """Squared overlap of the arm capsules of each person with the other's arm (and, with the
        skeletons' capsules, head, neck and torso) capsules (module docstring), in units of ``pen_scale``."""
        if self.caps is None:
            la, lb = list(LIMB_A), list(LIMB_B)
            d, _, _ = segment_distance(Ja[:, 0][:, la][:, :, None], Ja[:, 0][:, lb][:, :, None], Ja[:, 1][:, la][:, None], Ja[:, 1][:, lb][:, None])
            need = self.caps_r[0][:, None] + self.caps_r[1][None]
            return ((need - d).clamp_min(0) ** 2).sum() / self.prm.pen_scale**2
        radii, hc, mask, slack = self.caps
        a, b = capsule_points(Ja, Ga[:, :, HEAD], hc[None])  # [n, P, C, 3]
        # the hand capsules reach over the fingers: the hand joint sits at the knuckles
        hand, foot = list(self.hand_caps), list(self.foot_caps)
        b = b.clone()
        b[:, :, hand] = a[:, :, hand] + (b[:, :, hand] - a[:, :, hand]) * FINGER_REACH
        b[:, :, foot] = a[:, :, foot] + (b[:, :, foot] - a[:, :, foot]) * TOE_REACH
        d, _, _ = segment_distance(a[:, 0, :, None], b[:, 0, :, None], a[:, 1, None], b[:, 1, None])  # [n, C, C]
        over = (radii[0][:, None] + radii[1][None] - slack - d).clamp_min(0) * mask
        return (over**2).sum() / self.prm.pen_scale**2

    def limits(self, Jp: Tensor, GR: Tensor, frames: Tensor) -> Tensor:
        prm = self.prm
        e = self.flex0[frames] + self.z["elbow"][frames] * prm.elbow  # [n, P, 2]
        lim = (e - 150 * DEG).clamp_min(0) ** 2 + (-e).clamp_min(0) ** 2
        tot = (lim / prm.limit_scale**2).sum()
        for h, (sh, el) in enumerate(((L_SHOULDER, L_ELBOW), (R_SHOULDER, R_ELBOW))):
            u = Jp[:, :, el] - Jp[:, :, sh]
            u = u / u.norm(dim=-1, keepdim=True)
            ul = torch.einsum("fpij,fpi->fpj", GR[:, :, SPINE3], u)
            sg = 1.0 if h == 0 else -1.0
            v = ((-sg * ul[..., 0] - self.s_cross).clamp_min(0) ** 2 + (-ul[..., 2] - self.s_ext).clamp_min(0) ** 2
                 + (ul[..., 1] + self.c_elev).clamp_min(0) ** 2)
            tot = tot + (v / prm.limit_scale**2).sum()
        return tot

    def smooth_prior(self) -> Tensor:
        tot = self.z["root"].new_zeros(())
        for v in self.z.values():
            tot = tot + (v**2).sum()
            if self.Fw >= 3:
                acc = v[2:] - 2 * v[1:-1] + v[:-2]
                tot = tot + ((acc / self.prm.accel) ** 2).sum()
        return tot

    def optimise(self, act: Tensor, penetration: Callable[[Tensor, Tensor], Tensor], iters: int, trust: float, only: bool = False) -> None:
        """L-BFGS on the control points: ``penetration(Ja, Ga)`` (posed joints / global rotations of
        the frames ``act``) plus the capsule term and the priors; no joint of ``act`` moves farther
        than ``trust`` (soft) from where it starts, so that the pass's pair set stays valid. With
        ``only``, the control points that also move frames outside ``act`` stay fixed (frames
        outside ``act`` then do not change)."""
        prm = self.prm
        with torch.no_grad():
            _, _, J_start, _ = self.pose(act)
        free = None
        if only:
            inside = torch.zeros(self.Fw, dtype=torch.bool)
            inside[act] = True
            free = ~((self.Bm > 0) & ~inside[:, None]).any(0)  # [Nc] control points whose support lies in act
        opt = torch.optim.LBFGS(list(self.ctrl.values()), lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-7, tolerance_change=1e-9)

        def closure() -> Tensor:
            opt.zero_grad()
            self.expand()
            _, _, Ja, Ga = self.pose(act)
            hands = Ja[:, :, [L_WRIST, R_WRIST, L_HAND, R_HAND]]
            e_hand = (self.hw4[act][..., None] * (hands - self.hands_ref[act]) ** 2).sum() / prm.hand_pos**2
            e_tr = (((Ja - J_start).norm(dim=-1) - trust).clamp_min(0) ** 2).sum() / prm.pen_scale**2
            loss = penetration(Ja, Ga) + self.capsule_term(Ja, Ga) + e_hand + self.smooth_prior() + self.limits(Ja, Ga, act) + e_tr
            loss.backward()
            if free is not None:
                for c in self.ctrl.values():
                    c.grad.mul_(free.view(-1, *([1] * (c.dim() - 1))).to(c.dtype))
            return loss

        opt.step(closure)
        with torch.no_grad():
            self.expand()

    def result(self) -> tuple[Tensor, Tensor]:
        """The corrected script: local rotations ``[F, P, 24, 3, 3]`` and ``transl`` (float64; the
        corrections composed onto the exact script)."""
        with torch.no_grad():
            self.expand()
            Rl, Tr, _, _ = self.pose()
        lo, hi = self.lo, self.hi
        dR = (self.Rw.transpose(-1, -2) @ Rl).to(torch.float64)  # local correction of each joint
        Rout = self.R64.clone()
        Rout[lo:hi] = self.R64[lo:hi] @ dR
        Tout = self.T64.clone()
        Tout[lo:hi] = self.T64[lo:hi] + (Tr - self.Tw).to(torch.float64)
        return Rout, Tout


__all__ = ["Corrector", "LIMB_A", "LIMB_B", "blend_points", "bspline_basis", "limb_radii"]
