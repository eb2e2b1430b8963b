"""Arm placement of the synthetic motion: hand targets on the partner, clearance from the partner's surface, shoulder cone and two-bone IK (split from :mod:`h4d_fast.synth.motion`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .geometry import point_segment_closest
from .skeleton import (
    CAPSULE_INDEX,
    L_ELBOW,
    L_SHOULDER,
    L_WRIST,
    NECK,
    R_ELBOW,
    R_SHOULDER,
    R_WRIST,
    SPINE1,
    SPINE3,
    Skeleton,
)

DEG = math.pi / 180.0


# Joint limits enforced by the generator (degrees). Hinges (knee, elbow): flexion range, one way only.
HINGE_LIMITS = {"knee": (0.0, 150.0), "elbow": (0.0, 150.0)}


# Shoulder cone (degrees, torso frame): elevation from hanging, past the sagittal plane, behind the frontal plane.
SHOULDER_LIMITS = {"elevation": 150.0, "cross": 55.0, "extension": 55.0}


def _unit(v: Tensor, eps: float = 1e-12) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)


def _arm_rest(sk: Skeleton, sgn: float) -> tuple[Tensor, Tensor, Tensor]:
    """Rest upper-arm direction ``u0``, elbow hinge axis ``a0`` and rest flexion angle of one arm."""
    sh, el, wr = (L_SHOULDER, L_ELBOW, L_WRIST) if sgn > 0 else (R_SHOULDER, R_ELBOW, R_WRIST)
    J = sk.rest_joints
    u0 = _unit(J[el] - J[sh])
    f0 = _unit(J[wr] - J[el])
    a0 = _unit(torch.linalg.cross(u0, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)))
    th0 = torch.atan2((torch.linalg.cross(u0, f0) * a0).sum(), (u0 * f0).sum())
    return u0, a0, th0


# -------------------------------------------------------------- arm targets
def _hand_targets(Jq: Tensor, Gq: Tensor, sk_q: Skeleton, caps_q: tuple[Tensor, Tensor], Gp_root: Tensor, hand_sign: float,
                  surface: bool = False) -> tuple[Tensor, Tensor]:
    """Contact targets ``[F, NT, 3]`` and elbow poles ``[F, NT, 3]`` of one hand on partner ``q``.

    ``hand_sign`` is +1 for the left hand, -1 for the right; the hand approaches the partner's side
    ``sigma = -hand_sign`` (facing each other, my left is the partner's right). With ``surface`` (a body
    model's mesh proxies are available) the targets sit just off the skeleton, to be pushed out onto the
    partner's actual surface afterwards (:func:`h4d_fast.synth.collide.push_out_spheres`).
    """
    H = sk_q.height
    r = sk_q.radii
    G9 = Gq[:, SPINE3]
    xq, yq, zq = G9[..., 0], G9[..., 1], G9[..., 2]  # partner's left, up, forward (world)
    sig = -hand_sign
    rc = float(r[CAPSULE_INDEX["torso_core"]])
    near_sh = L_SHOULDER if sig > 0 else R_SHOULDER
    far_sh = R_SHOULDER if sig > 0 else L_SHOULDER
    side_a, side_b = (caps_q[0][:, CAPSULE_INDEX["torso_left" if sig > 0 else "torso_right"]], caps_q[1][:, CAPSULE_INDEX["torso_left" if sig > 0 else "torso_right"]])
    r_side = float(r[CAPSULE_INDEX["torso_left"]])
    r_ua = float(r[CAPSULE_INDEX["upper_arm_l"]])
    r_neck = float(r[CAPSULE_INDEX["neck"]])
    lat = 0.0
    if surface:
        rc = r_side = r_neck = -0.015  # offsets of 3 cm from the axis; the push-out finds the surface
        r_ua = float(sk_q.extra.get("shoulder_top", r_ua))
        lat = 0.05  # hands on the back a little toward their own side (the forearm wraps the real torso)
    tg = torch.stack([
        Jq[:, SPINE3] + yq * 0.035 * H - zq * (rc + 0.045) - xq * sig * (0.01 - lat),  # back_high
        Jq[:, SPINE1] + yq * 0.02 * H - zq * (rc + 0.045) + xq * sig * lat,  # back_low
        Jq[:, near_sh] + yq * (r_ua + 0.035) - zq * 0.01,  # shoulder_near
        Jq[:, far_sh] + yq * (r_ua + 0.035) - zq * 0.01,  # shoulder_far
        Jq[:, NECK] - zq * (r_neck + 0.045) + yq * 0.01 * H,  # neck
        side_a + 0.4 * (side_b - side_a) + xq * sig * (r_side + 0.045),  # waist_side
    ], 1)  # [F, NT, 3]
    xs, ys, zs = Gp_root[..., 0], Gp_root[..., 1], Gp_root[..., 2]  # my left, up, forward
    out = xs * hand_sign
    po = torch.stack([
        0.8 * out + 0.35 * ys - 0.1 * zs,
        0.85 * out - 0.45 * ys,
        0.5 * out - 0.85 * ys,
        0.3 * out - 0.8 * ys,
        0.6 * out - 0.7 * ys,
        0.6 * out - 0.6 * ys - 0.3 * zs,
    ], 1)
    return tg, _unit(po)


def _cyl_blend(xa: Tensor, xb: Tensor, lam: Tensor, origin: Tensor, frame: Tensor, side: float) -> Tensor:
    """Blend points ``xa -> xb`` (``[F, 3]``, weight ``lam [F]``) along a path around the partner's torso.

    Interpolates cylindrical coordinates about the partner's vertical torso axis (``origin [F, 3]``,
    ``frame [F, 3, 3]`` columns left/up/forward): the angle along the arc that avoids the partner's
    far-back diagonal (the hand works on the partner's ``side``: +1 its left, -1 its right), radius and
    height linearly. A straight blend from the front to the back would cut through the body.
    """
    def cyl(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        loc = torch.einsum("fij,fi->fj", frame, x - origin)
        return torch.atan2(loc[:, 0], loc[:, 2]), torch.hypot(loc[:, 0], loc[:, 2]), loc[:, 1]

    pa, ra, ha = cyl(xa)
    pb, rb, hb = cyl(xb)
    # unwrap both angles onto a circle cut at the partner's far-back diagonal, where this hand never goes
    cut = -side * 0.75 * math.pi
    pa = cut - torch.remainder(cut - pa, 2 * math.pi)
    pb = cut - torch.remainder(cut - pb, 2 * math.pi)
    dp = pb - pa
    ph = pa + lam * dp
    rr = ra + lam * (rb - ra)
    hh = ha + lam * (hb - ha)
    loc = torch.stack([rr * torch.sin(ph), hh, rr * torch.cos(ph)], -1)
    return origin + torch.einsum("fij,fj->fi", frame, loc)


def _push_out(x: Tensor, a: Tensor, b: Tensor, radius: Tensor, origin: Tensor, up: Tensor, iters: int = 4) -> Tensor:
    """Move points ``x [F, 3]`` out of capsules ``(a, b) [F, K, 3]`` (radii ``[K]``) radially, away from the
    vertical axis through ``origin [F, 3]`` along ``up [F, 3]``.

    The push direction depends continuously on ``x`` (a push toward the nearest surface would flip
    sides when a path crosses a capsule axis).
    """
    rel = x - origin
    radial = rel - (rel * up).sum(-1, keepdim=True) * up
    radial = _unit(radial)
    for _ in range(iters):
        pen = torch.zeros(x.shape[0], dtype=x.dtype)
        for k in range(a.shape[1]):
            q = point_segment_closest(x, a[:, k], b[:, k])
            pen = torch.maximum(pen, radius[k] - (x - q).norm(dim=-1))
        x = x + radial * pen.clamp_min(0)[:, None]
    return x


def clamp_arm_direction(u: Tensor, torso: Tensor, sgn: float) -> Tensor:
    """Keep upper-arm directions ``u [F, 3]`` (world) inside the shoulder's reachable cone.

    In the torso frame ``torso [F, 3, 3]`` (columns: left, up, forward): elevation from hanging at most
    :data:`SHOULDER_LIMITS` ``elevation``, at most ``cross`` degrees past the sagittal plane toward the
    other side, at most ``extension`` degrees behind the frontal plane.
    """
    ul = torch.einsum("fij,fi->fj", torso, u)  # local (x left, y up, z forward)
    x, y, z = ul.unbind(-1)
    med = -sgn * x  # medial component
    s_cross = math.sin(SHOULDER_LIMITS["cross"] * DEG)
    s_ext = math.sin(SHOULDER_LIMITS["extension"] * DEG)
    c_elev = math.cos(SHOULDER_LIMITS["elevation"] * DEG)  # -y . u >= cos(elev)  <=>  y <= -cos(elev)
    for _ in range(3):
        med = torch.minimum(med, torch.full_like(med, s_cross))
        z = torch.maximum(z, torch.full_like(z, -s_ext))
        y = torch.minimum(y, torch.full_like(y, -c_elev))
        v = torch.stack([-sgn * med, y, z], -1)
        v = _unit(v)
        med, y, z = -sgn * v[..., 0], v[..., 1], v[..., 2]
    ul = torch.stack([-sgn * med, y, z], -1)
    return torch.einsum("fij,fj->fi", torso, ul)


def _two_bone_ik(
    s: Tensor, w: Tensor, pole: Tensor, L1: float, L2: float, torso: Tensor, sgn: float,
    min_flex: float = 3 * DEG, max_flex: float = HINGE_LIMITS["elbow"][1] * DEG,
) -> tuple[Tensor, Tensor, Tensor]:
    """Analytic two-bone IK with a shoulder cone.

    The elbow lies on the side of ``pole``; the upper arm is clamped into the shoulder cone
    (:func:`clamp_arm_direction`), then the forearm aims at the target with the flexion clamped to
    ``[min_flex, max_flex]``. Returns upper-arm direction ``u``, hinge axis ``a`` (both ``[F, 3]``)
    and elbow flexion ``[F]``.
    """
    dv = w - s
    dist = dv.norm(dim=-1)
    nh = _unit(dv)
    dmax = math.sqrt(L1 * L1 + L2 * L2 + 2 * L1 * L2 * math.cos(min_flex))
    dmin = math.sqrt(L1 * L1 + L2 * L2 + 2 * L1 * L2 * math.cos(max_flex))
    dist = dist.clamp(dmin, dmax)
    cos_b = ((L1 * L1 + dist * dist - L2 * L2) / (2 * L1 * dist)).clamp(-1, 1)
    sin_b = (1 - cos_b * cos_b).clamp_min(0).sqrt()
    pp = pole - (pole * nh).sum(-1, keepdim=True) * nh
    # degenerate pole (parallel to the reach): pick any perpendicular
    alt = torch.linalg.cross(nh, torch.tensor([0.0, 0.0, 1.0], dtype=nh.dtype).expand_as(nh))
    pp = torch.where(pp.norm(dim=-1, keepdim=True) < 1e-6, alt, pp)
    pp = _unit(pp)
    u = clamp_arm_direction(cos_b[..., None] * nh + sin_b[..., None] * pp, torso, sgn)
    # forearm toward the target from the (possibly clamped) elbow
    e = s + L1 * u
    f = w - e
    f = torch.where(f.norm(dim=-1, keepdim=True) < 1e-6, nh, f)
    f = _unit(f)
    cos_t = (u * f).sum(-1).clamp(-1, 1)
    flex = torch.acos(cos_t).clamp(min_flex, max_flex)
    # hinge axis: u x f, or from the pole when the arm is (nearly) straight
    a_f = torch.linalg.cross(u, f)
    a_p = torch.linalg.cross(pp, nh)
    a = torch.where(a_f.norm(dim=-1, keepdim=True) > 1e-3, a_f, a_p)
    a = _unit(a - (a * u).sum(-1, keepdim=True) * u)
    return u, a, flex
