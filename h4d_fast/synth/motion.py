"""Scripted two-person interaction driven by SMPL-style parameters.

Phases (scaled to the sequence length, with minimum durations so that even 60 frames contain
contact): **approach** (walk toward each other with a gait cycle), **hug** (arms around the
partner's back, one over the shoulder and one under the arm, heads beside each other),
**grapple** (hands on the partner's shoulders / neck / waist, arms crossing, rotating about a
common centre, leaning, a crouch) and, for sequences of 8 s or more, **separate**.

Every channel is a set of keyframes interpolated with monotone cubic (PCHIP) splines plus a
low-amplitude sum-of-sinusoids random process, so the motion is smooth. Legs, spine and head are
driven by joint angles (with joint limits), the arms by an analytic two-bone IK toward hand targets
on the partner's body (blended with a free arm swing), which keeps hands on the partner while both
bodies move. Feet are kept on the ground (lowest ankle at ``ankle_height``) and torsos/heads are
pushed apart where they would interpenetrate.

Output: per person and frame ``global_orient [F, P, 3]``, ``body_pose [F, P, 69]``, ``transl
[F, P, 3]`` (axis-angle, SMPL conventions, z-up world) and the joints they produce through
:func:`h4d_fast.synth.skeleton.forward_kinematics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.interpolate import PchipInterpolator
from scipy.ndimage import gaussian_filter1d, maximum_filter1d
from torch import Tensor

from .arm_ik import (  # re-exported
    DEG,  # noqa: F401
    HINGE_LIMITS,  # noqa: F401
    SHOULDER_LIMITS,  # noqa: F401
    _arm_rest,  # noqa: F401
    _cyl_blend,  # noqa: F401
    _hand_targets,  # noqa: F401
    _push_out,  # noqa: F401
    _two_bone_ik,  # noqa: F401
    _unit,  # noqa: F401
    clamp_arm_direction,  # noqa: F401
)
from .geometry import segment_distance
from .rotations import axis_angle_to_matrix, matrix_to_axis_angle, rot_x, rot_y, rot_z
from .skeleton import (
    CAPSULE_INDEX,
    HEAD,
    L_ANKLE,
    L_COLLAR,
    L_ELBOW,
    L_HIP,
    L_KNEE,
    L_SHOULDER,
    L_WRIST,
    NECK,
    R_ANKLE,
    R_COLLAR,
    R_ELBOW,
    R_HIP,
    R_KNEE,
    R_SHOULDER,
    R_WRIST,
    SPINE1,
    SPINE2,
    SPINE3,
    Skeleton,
    capsule_points,
    coco17_from_skeleton,
    fk_matrices,
    forward_kinematics,
)

PHASE_NAMES: tuple[str, ...] = ("approach", "hug", "grapple", "separate")
HAND_TARGETS: tuple[str, ...] = ("back_high", "back_low", "shoulder_near", "shoulder_far", "neck", "waist_side")
_T = {n: i for i, n in enumerate(HAND_TARGETS)}
# Rest (y-up, +z forward, +x left) -> world (z-up): rest x -> +Y, rest y -> +Z, rest z -> +X.
R_REST_TO_WORLD = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)

# Hip ranges (degrees): flexion (+ forward) and abduction (+ outward).
HIP_LIMITS = {"flexion": (-25.0, 120.0), "abduction": (-25.0, 45.0)}
# Clearance of the wrist joint from the partner's surface (body-model proxies): about the wrist's half thickness.
HAND_CLEARANCE = 0.03
REACH_FRAC = 0.88  # hand targets at most this fraction of the arm length from the shoulder (body-model proxies)
_TORSO_CAPS = tuple(CAPSULE_INDEX[n] for n in ("torso_core", "torso_left", "torso_right", "neck", "head"))


@dataclass
class Motion:
    """Generated motion of ``P = 2`` people over ``F`` frames (float64, world metres, z-up)."""

    global_orient: Tensor  # [F, P, 3]
    body_pose: Tensor  # [F, P, 69]
    transl: Tensor  # [F, P, 3]
    joints: Tensor  # [F, P, 24, 3]
    rotations: Tensor  # [F, P, 24, 3, 3] global joint rotations
    coco: Tensor  # [F, P, 17, 3]
    phase: Tensor  # [F] int64 index into PHASE_NAMES
    params: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ helpers
class _Track:
    """Keyframed scalar/vector channel, PCHIP-interpolated (held constant outside the keys)."""

    def __init__(self) -> None:
        self.keys: dict[float, np.ndarray] = {}

    def key(self, t: float, v: Any) -> "_Track":
        self.keys[round(float(t), 6)] = np.asarray(v, dtype=np.float64)
        return self

    def eval(self, t: np.ndarray) -> np.ndarray:
        ts = np.array(sorted(self.keys))
        vs = np.stack([self.keys[k] for k in ts])
        if len(ts) == 1:
            return np.broadcast_to(vs[0], (len(t),) + vs.shape[1:]).copy()
        tc = np.clip(t, ts[0], ts[-1])
        if len(ts) == 2:  # cosine blend (PCHIP on 2 points would be linear)
            x = (tc - ts[0]) / (ts[1] - ts[0])
            w = (0.5 - 0.5 * np.cos(np.pi * x)).reshape((-1,) + (1,) * (vs.ndim - 1))
            return vs[0] * (1 - w) + vs[1] * w
        return PchipInterpolator(ts, vs, axis=0)(tc)


def _noise(rng: np.random.Generator, t: np.ndarray, amp: float, fmin: float = 0.12, fmax: float = 0.6, n: int = 3) -> np.ndarray:
    """Smooth zero-mean random process: a sum of ``n`` sinusoids, RMS ~ ``amp / sqrt(2)``."""
    f = rng.uniform(fmin, fmax, n)
    ph = rng.uniform(0, 2 * np.pi, n)
    w = rng.uniform(0.5, 1.0, n)
    w = w / np.sqrt((w**2).sum())
    return amp * (w[None] * np.sin(2 * np.pi * f[None] * t[:, None] + ph[None])).sum(-1)


def _basis(u: Tensor, a: Tensor) -> Tensor:
    """Orthonormal frame ``[..., 3, 3]`` with columns ``u, a', u x a'`` (``a`` orthogonalised against ``u``)."""
    u = _unit(u)
    a = _unit(a - (a * u).sum(-1, keepdim=True) * u)
    return torch.stack([u, a, torch.linalg.cross(u, a)], -1)


def _axis_angle(axis: Tensor, angle: Tensor) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` about unit ``axis [..., 3]`` by ``angle [...]``."""
    return axis_angle_to_matrix(axis * angle[..., None])


def _smooth_time(x: Tensor, sigma: float) -> Tensor:
    """Gaussian smoothing of ``x [F, ...]`` along frames (``sigma`` in frames)."""
    if x.shape[0] < 2 or sigma <= 0:
        return x
    return _t(gaussian_filter1d(x.numpy(), sigma=sigma, axis=0, mode="nearest"))


def _t(x: np.ndarray) -> Tensor:
    return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64)


# ----------------------------------------------------------------- the script
def _script(rng: np.random.Generator, F: int, fps: float, heights: list[float], separate: bool) -> dict[str, Any]:
    """Randomised keyframes of every channel; returns evaluated channels ``[F, ...]`` and the parameters."""
    t = np.arange(F) / fps
    T = max((F - 1) / fps, 1e-3)
    sep = bool(separate and T >= 8.0)
    T_sep = float(rng.uniform(0.12, 0.18) * T) if sep else 0.0
    T_app = float(np.clip(rng.uniform(0.2, 0.3) * T, min(0.6, 0.3 * T), 3.0))
    rest = T - T_app - T_sep
    T_hug = float(rng.uniform(0.35, 0.45) * rest)
    t_a, t_h, t_g = T_app, T_app + T_hug, T - T_sep
    hug_side = float(rng.choice([-1.0, 1.0]))  # heads go to each person's own left (+1) or right (-1)
    spin = float(rng.choice([-1.0, 1.0]))

    d_hug = float(rng.uniform(0.32, 0.42))
    d0 = float(min(rng.uniform(2.5, 3.0), d_hug + 2.0 * 1.0 * T_app))
    alpha0 = float(rng.uniform(-np.pi, np.pi))
    centre0 = rng.normal(0, 0.12, 2)

    d, alpha, delta, centre = _Track(), _Track(), _Track(), _Track()
    d.key(0, d0).key(t_a, d_hug).key(t_a + 0.5 * T_hug, d_hug + rng.uniform(-0.01, 0.03)).key(t_h, d_hug + rng.uniform(0.0, 0.03))
    a_cur = alpha0
    alpha.key(0, a_cur)
    a_cur += rng.uniform(-10, 10) * DEG
    alpha.key(t_a, a_cur)
    a_cur += rng.uniform(-20, 20) * DEG
    alpha.key(t_h, a_cur)
    dl_h = rng.uniform(0.05, 0.075)
    delta.key(0, 0.0).key(max(t_a - 0.3 * T_app, 0.0), 0.3 * dl_h).key(t_a, dl_h).key(t_h, dl_h)
    c_cur = centre0.copy()
    centre.key(0, c_cur)
    centre.key(t_h, c_cur + rng.normal(0, 0.04, 2))

    P = 2
    chan = {name: [_Track() for _ in range(P)] for name in (
        "lean", "side", "crouch", "spine_pitch", "spine_side", "head_pitch", "head_yaw", "head_side", "shrug", "stance", "yaw_off")}
    hand_w = [[_Track(), _Track()] for _ in range(P)]  # [person][hand L/R] IK weight
    hand_type = [[_Track(), _Track()] for _ in range(P)]  # one-hot over HAND_TARGETS

    def onehot(name: str) -> np.ndarray:
        v = np.zeros(len(HAND_TARGETS))
        v[_T[name]] = 1.0
        return v

    arm_rise = max(t_a - min(0.7, 0.45 * T_app), 0.0)
    for p in range(P):
        c = chan
        c["lean"][p].key(0, rng.uniform(0, 3)).key(t_a, rng.uniform(6, 11)).key(t_h, rng.uniform(6, 11))
        c["side"][p].key(0, 0).key(t_a, hug_side * rng.uniform(2, 5)).key(t_h, hug_side * rng.uniform(2, 5))
        c["crouch"][p].key(0, 0).key(t_h, 0)
        c["spine_pitch"][p].key(0, rng.uniform(0, 3)).key(t_a, rng.uniform(4, 9)).key(t_h, rng.uniform(4, 9))
        c["spine_side"][p].key(0, 0).key(t_a, hug_side * rng.uniform(3, 7)).key(t_h, hug_side * rng.uniform(3, 7))
        c["head_pitch"][p].key(0, rng.uniform(-5, 5)).key(t_a, rng.uniform(0, 10)).key(t_h, rng.uniform(0, 10))
        c["head_yaw"][p].key(0, rng.uniform(-8, 8)).key(t_a, hug_side * rng.uniform(25, 40)).key(t_h, hug_side * rng.uniform(25, 40))
        c["head_side"][p].key(0, 0).key(t_a, hug_side * rng.uniform(8, 15)).key(t_h, hug_side * rng.uniform(8, 15))
        c["shrug"][p].key(0, rng.uniform(0, 3)).key(t_a, rng.uniform(3, 8)).key(t_h, rng.uniform(3, 8))
        c["stance"][p].key(0, rng.uniform(2, 5)).key(t_a, rng.uniform(3, 8)).key(t_h, rng.uniform(3, 8))
        c["yaw_off"][p].key(0, rng.uniform(-4, 4)).key(t_a, rng.uniform(-6, 6)).key(t_h, rng.uniform(-6, 6))
        over = 0 if hug_side > 0 else 1  # the arm on the head side goes over the partner's shoulder
        for h in range(2):
            hand_w[p][h].key(0, 0.0).key(arm_rise, 0.0).key(t_a + 0.05, 1.0).key(t_h, 1.0)
            ty = onehot("back_high" if h == over else "back_low")
            hand_type[p][h].key(0, ty).key(t_h, ty)

    # grapple keys
    T_g = t_g - t_h
    n_keys = int(max(2, round(T_g / rng.uniform(1.2, 1.8))))
    kt = t_h + T_g * (np.arange(1, n_keys + 1) - rng.uniform(0.0, 0.25, n_keys) * (np.arange(1, n_keys + 1) < n_keys)) / n_keys
    kt[0] = max(kt[0], t_h + min(0.35, 0.5 * T_g))
    crouch_key = int(rng.integers(0, n_keys))
    cross_key = int(rng.integers(0, n_keys))
    shoulders_key = int((cross_key + 1) % n_keys) if n_keys > 1 else 0
    grapple_plan = []
    for k in range(n_keys):
        tk = float(kt[k])
        crouch_p = [rng.uniform(0.35, 0.7) if (k == crouch_key and (p == 0 or rng.random() < 0.7)) else rng.uniform(0.0, 0.12) for p in range(P)]
        dk = rng.uniform(0.45, 0.6) + 0.3 * max(crouch_p)
        d.key(tk, dk)
        a_cur += spin * rng.uniform(35, 90) * DEG
        alpha.key(tk, a_cur)
        delta.key(tk, rng.uniform(0.04, 0.07))
        c_cur = c_cur + rng.normal(0, 0.05, 2)
        centre.key(tk, c_cur)
        plan: dict[str, Any] = {"t": tk, "d": float(dk)}
        for p in range(P):
            cr = crouch_p[p]
            chan["crouch"][p].key(tk, cr)
            chan["lean"][p].key(tk, rng.uniform(6, 16) + 6 * cr)
            chan["side"][p].key(tk, rng.uniform(-4, 4))
            chan["spine_pitch"][p].key(tk, rng.uniform(4, 14))
            chan["spine_side"][p].key(tk, hug_side * rng.uniform(0, 5))
            chan["head_pitch"][p].key(tk, rng.uniform(8, 22))
            chan["head_yaw"][p].key(tk, hug_side * rng.uniform(10, 30))
            chan["head_side"][p].key(tk, hug_side * rng.uniform(0, 10))
            chan["shrug"][p].key(tk, rng.uniform(2, 8))
            chan["stance"][p].key(tk, rng.uniform(5, 12) + 6 * cr)
            chan["yaw_off"][p].key(tk, rng.uniform(-18, 18))
            if k == cross_key and p == int(kt[k] * 1000) % 2:
                # arms cross: one hand to the partner's far shoulder, the other to the near one / neck
                hx = int(rng.integers(0, 2))
                types = ["", ""]
                types[hx] = "shoulder_far"
                types[1 - hx] = str(rng.choice(["shoulder_near", "neck", "waist_side"]))
            elif k == shoulders_key:
                types = ["shoulder_near", "shoulder_near"]
            else:
                types = [str(rng.choice(["shoulder_near", "neck", "waist_side", "back_low", "shoulder_far"], p=[0.4, 0.2, 0.15, 0.15, 0.1]))
                         for _ in range(2)]
                if types[0] == types[1] and types[0] in ("neck", "shoulder_far", "back_low"):
                    types[1] = "shoulder_near"
            for h in range(2):
                hand_type[p][h].key(tk, onehot(types[h]))
                hand_w[p][h].key(tk, 0.0 if rng.random() < 0.08 else 1.0)
            plan[f"p{p}_hands"] = types
            plan[f"p{p}_crouch"] = float(cr)
        grapple_plan.append(plan)

    if sep:
        t_rel = t_g + min(1.0, 0.45 * T_sep)
        d.key(T, rng.uniform(1.3, 1.8))
        delta.key(T, 0.0)
        alpha.key(T, a_cur + rng.uniform(-20, 20) * DEG)
        centre.key(T, c_cur + rng.normal(0, 0.1, 2))
        for p in range(P):
            for h in range(2):
                hand_w[p][h].key(t_rel, 0.0).key(T, 0.0)
            for name, (lo, hi) in {"lean": (0, 3), "side": (-1, 1), "crouch": (0, 0), "spine_pitch": (0, 3), "spine_side": (-1, 1),
                                   "head_pitch": (-5, 5), "head_yaw": (-10, 10), "head_side": (-3, 3), "shrug": (0, 3),
                                   "stance": (2, 6), "yaw_off": (-10, 10)}.items():
                chan[name][p].key(min(t_g + 0.5 * T_sep, T), rng.uniform(lo, hi)).key(T, rng.uniform(lo, hi))

    # evaluate
    out: dict[str, Any] = {"t": t}
    out["d"] = d.eval(t)
    out["alpha"] = alpha.eval(t) + _noise(rng, t, 2.0 * DEG)
    out["delta"] = delta.eval(t)
    out["centre"] = centre.eval(t)
    noise_amp = {"lean": 1.5, "side": 1.2, "crouch": 0.0, "spine_pitch": 1.5, "spine_side": 1.5, "head_pitch": 3.0, "head_yaw": 5.0,
                 "head_side": 2.0, "shrug": 1.0, "stance": 0.8, "yaw_off": 2.0}
    for name, tracks in chan.items():
        vals = []
        for p in range(P):
            v = tracks[p].eval(t)
            if noise_amp[name] > 0:
                v = v + _noise(rng, t, noise_amp[name])
            vals.append(v)
        out[name] = np.stack(vals, 1)  # [F, P]
    out["crouch"] = np.clip(out["crouch"], 0.0, 0.8)
    out["hand_w"] = np.clip(np.stack([np.stack([hand_w[p][h].eval(t) for h in range(2)], 1) for p in range(P)], 1), 0.0, 1.0)  # [F, P, 2]
    ht = np.stack([np.stack([hand_type[p][h].eval(t) for h in range(2)], 1) for p in range(P)], 1)  # [F, P, 2, NT]
    ht = np.clip(ht, 0.0, None)
    out["hand_type"] = ht / np.maximum(ht.sum(-1, keepdims=True), 1e-9)
    out["hand_jitter"] = np.stack([np.stack([np.stack([_noise(rng, t, 0.02) for _ in range(3)], -1) for _ in range(2)], 1) for _ in range(P)], 1)
    # free-arm style per person
    out["arm_abd"] = rng.uniform(6, 12, P)
    out["arm_flex0"] = rng.uniform(0, 8, P)
    out["arm_elbow0"] = rng.uniform(12, 25, P)
    out["arm_swing"] = rng.uniform(14, 24, P)
    out["hip_swing"] = rng.uniform(18, 25, P)
    out["knee_swing"] = rng.uniform(45, 60, P)
    out["gait_phase0"] = rng.uniform(0, 2 * np.pi, P)
    phase = np.zeros(F, dtype=np.int64)
    phase[t >= t_a] = 1
    phase[t >= t_h] = 2
    if sep:
        phase[t >= t_g + min(1.0, 0.45 * T_sep)] = 3
    out["phase"] = phase
    out["params"] = {
        "duration_s": T, "t_approach_end": t_a, "t_hug_end": t_h, "t_grapple_end": t_g, "separate": sep,
        "start_distance": d0, "hug_distance": d_hug, "hug_side": hug_side, "spin": spin, "scene_yaw": alpha0,
        "centre": centre0.tolist(), "heights": list(heights), "grapple_keys": grapple_plan,
    }
    return out


# ------------------------------------------------------------ local rotations
def _local_rotations(ch: dict[str, Any], skels: list[Skeleton], fps: float) -> tuple[Tensor, Tensor, np.ndarray]:
    """Joint-angle channels -> local rotations ``[F, P, 24, 3, 3]`` (arms free), root xy ``[F, P, 2]``, gait info."""
    d, al, dl, c = ch["d"], ch["alpha"], ch["delta"], ch["centre"]
    u = np.stack([np.cos(al), np.sin(al)], -1)
    n = np.stack([-np.sin(al), np.cos(al)], -1)
    hs = ch["params"]["hug_side"]
    xy = np.stack([c - 0.5 * d[:, None] * u + hs * dl[:, None] * n, c + 0.5 * d[:, None] * u - hs * dl[:, None] * n], 1)  # [F, P, 2]
    yaw = np.stack([al, al + np.pi], 1) + ch["yaw_off"] * DEG  # [F, P]
    R, gait = pose_from_root(ch, xy, yaw, skels, fps)
    return R, _t(xy), gait


def pose_from_root(ch: dict[str, Any], xy: np.ndarray, yaw: np.ndarray, skels: list[Skeleton], fps: float) -> tuple[Tensor, np.ndarray]:
    """Joint-angle channels and a root path -> local rotations ``[F, P, 24, 3, 3]`` (arms free) and gait info.

    Args:
        ch: per-person channels ``[F, P]`` (``lean, side, crouch, spine_pitch, spine_side, head_pitch,
            head_yaw, head_side, shrug, stance`` in degrees / crouch in [0, 1]) and per-person styles
            ``[P]`` (``hip_swing, knee_swing, arm_flex0, arm_swing, arm_abd, arm_elbow0, gait_phase0``).
        xy: ``[F, P, 2]`` root positions (metres); yaw ``[F, P]`` facing directions (radians; the gait
            follows the root velocity along and across them).
    """
    F, P = xy.shape[:2]
    # gait from the root velocity (forward and lateral components)
    vel = np.gradient(xy, axis=0) * fps if F > 1 else np.zeros_like(xy)
    fwd = np.stack([np.cos(yaw), np.sin(yaw)], -1)
    left = np.stack([-np.sin(yaw), np.cos(yaw)], -1)
    vf = (vel * fwd).sum(-1)
    vl = (vel * left).sum(-1)
    speed = np.hypot(vf, vl)
    cadence = np.clip(0.55 + 0.35 * speed, 0.5, 1.05)  # strides per second
    phi = ch["gait_phase0"][None] + 2 * np.pi * np.cumsum(cadence, 0) / fps  # [F, P]
    gf = np.tanh(vf / 0.7)  # signed forward gait amplitude
    gl = np.tanh(np.abs(vl) / 0.5)
    g = np.clip(np.hypot(gf, gl), 0, 1)

    Ft = lambda x: _t(x)  # noqa: E731
    R = torch.eye(3, dtype=torch.float64).expand(F, P, 24, 3, 3).clone()
    lean = Ft(ch["lean"] * DEG + ch["crouch"] * 15 * DEG)
    R[:, :, 0] = rot_z(Ft(yaw + g * 4 * DEG * np.sin(phi))) @ R_REST_TO_WORLD @ rot_x(lean) @ rot_z(Ft(-ch["side"] * DEG))
    # legs: thigh world angle (knee forward +), shin world angle (ankle forward +)
    cr = ch["crouch"]
    for side, (hip, knee, ankle, sgn, ph) in enumerate(((L_HIP, L_KNEE, L_ANKLE, 1.0, phi), (R_HIP, R_KNEE, R_ANKLE, -1.0, phi + np.pi))):
        th_thigh = cr * 55 * DEG + gf * ch["hip_swing"][None] * DEG * np.sin(ph)
        th_shin = -cr * 25 * DEG
        knee_gait = g * (4 * DEG + ch["knee_swing"][None] * DEG * np.maximum(0, np.cos(ph + np.pi / 4)) ** 2)
        hip_flex = np.clip(th_thigh + lean.numpy(), HIP_LIMITS["flexion"][0] * DEG, HIP_LIMITS["flexion"][1] * DEG)
        knee_flex = np.clip(th_thigh - th_shin + knee_gait, HINGE_LIMITS["knee"][0] * DEG, HINGE_LIMITS["knee"][1] * DEG)
        abd = ch["stance"] * DEG + gl * 10 * DEG * np.maximum(0, np.sin(ph))
        R[:, :, hip] = rot_x(Ft(-hip_flex)) @ rot_z(Ft(sgn * np.clip(abd, HIP_LIMITS["abduction"][0] * DEG, HIP_LIMITS["abduction"][1] * DEG)))
        R[:, :, knee] = rot_x(Ft(knee_flex))
        shin_pitch = lean.numpy() - hip_flex + knee_flex  # shin's accumulated x-rotation
        R[:, :, ankle] = rot_x(Ft(np.clip(-shin_pitch, -40 * DEG, 40 * DEG)))
    # spine and head
    twist = -g * 6 * DEG * np.sin(phi)
    for j in (SPINE1, SPINE2, SPINE3):
        R[:, :, j] = rot_x(Ft(ch["spine_pitch"] * DEG / 3)) @ rot_y(Ft(twist / 3)) @ rot_z(Ft(-ch["spine_side"] * DEG / 3))
    for j in (NECK, HEAD):
        R[:, :, j] = rot_x(Ft(ch["head_pitch"] * DEG / 2)) @ rot_y(Ft(ch["head_yaw"] * DEG / 2)) @ rot_z(Ft(-ch["head_side"] * DEG / 2))
    R[:, :, L_COLLAR] = rot_z(Ft(ch["shrug"] * DEG))
    R[:, :, R_COLLAR] = rot_z(Ft(-ch["shrug"] * DEG))
    # free arms: hanging, swinging opposite to the same-side leg
    for sh, el, sgn, ph in ((L_SHOULDER, L_ELBOW, 1.0, phi), (R_SHOULDER, R_ELBOW, -1.0, phi + np.pi)):
        flex = ch["arm_flex0"][None] - gf * ch["arm_swing"][None] * np.sin(ph)
        abd = ch["arm_abd"][None] + np.zeros_like(flex)
        M = rot_x(Ft(-flex * DEG)) @ rot_z(Ft(-sgn * (90 - abd) * DEG))  # [F, P, 3, 3] nominal T-pose -> hanging
        elbow = Ft(ch["arm_elbow0"][None] + 10 * g + 8 * np.maximum(0, -gf * np.sin(ph)))  # degrees
        for p, sk in enumerate(skels):
            u0, a0, th0 = _arm_rest(sk, sgn)
            nom_u = torch.tensor([sgn, 0.0, 0.0], dtype=torch.float64)
            nom_a = torch.tensor([0.0, -sgn, 0.0], dtype=torch.float64)
            Mp = M[:, p]
            # shoulder: rest (u0, a0) -> nominal direction rotated by M (same frame as parent)
            B = _basis(Mp @ nom_u, Mp @ nom_a)
            R[:, p, sh] = B @ _basis(u0, a0).T
            R[:, p, el] = _axis_angle(a0.expand(F, 3), elbow[:, p] * DEG - th0)
    return R, np.stack([g, phi], -1)


# ---------------------------------------------------------------- generation
def _core_fk(R: Tensor, xy: Tensor, z: Tensor, off: Tensor, rest: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    root = torch.cat([xy + off, z[..., None]], -1)  # [F, P, 3]
    transl = root - rest[:, 0]
    J, G = fk_matrices(rest, R, transl)
    return J, G, transl


def generate_motion(
    num_frames: int,
    skeletons: list[Skeleton],
    rng: np.random.Generator,
    fps: float = 30.0,
    ankle_height: float = 0.08,
    separate: bool = True,
    torso_gap: float = 0.0,
    resolve: Any = None,
) -> Motion:
    """Script, pose and clean up the two-person interaction.

    Args:
        num_frames: ``F``.
        skeletons: two :class:`Skeleton`.
        rng: source of every random choice.
        fps: frame rate.
        ankle_height: the lowest ankle of each person sits this high above the ground (metres).
        separate: end with a separation phase when the sequence lasts 8 s or more.
        torso_gap: extra clearance kept between the two torsos/heads beyond touching (metres).
        resolve: :class:`~h4d_fast.synth.collide.ResolveParams` of the correction passes (None: defaults).
    """
    if len(skeletons) != 2:
        raise ValueError("generate_motion: the interaction script needs exactly two skeletons")
    F = int(num_frames)
    if F < 2:
        raise ValueError("generate_motion: need at least 2 frames")
    P = 2
    ch = _script(rng, F, fps, [s.height for s in skeletons], separate)
    R, xy, gait = _local_rotations(ch, skeletons, fps)
    rest = torch.stack([s.rest_joints for s in skeletons])  # [P, 24, 3]
    radii = torch.stack([s.radii for s in skeletons])  # [P, C]
    head_c = torch.stack([s.head_centre for s in skeletons])  # [P, 3]

    # --- ground contact and torso separation (arms do not matter here)
    off = torch.zeros(F, P, 2, dtype=torch.float64)
    z = torch.zeros(F, P, dtype=torch.float64)
    ia = torch.tensor(_TORSO_CAPS)
    proxies = [s.extra.get("proxy") for s in skeletons]
    use_proxy = all(px is not None for px in proxies)
    for it in range(6):
        J, G, _ = _core_fk(R, xy, z, off, rest)
        z = z + (ankle_height - J[..., [L_ANKLE, R_ANKLE], 2].amin(-1))
        J, G, _ = _core_fk(R, xy, z, off, rest)
        if use_proxy:
            # the meshes (without the arms, posed later) against each other
            from .collide import body_penetration

            close = torch.nonzero((J[:, 0, 0] - J[:, 1, 0]).norm(dim=-1) < 1.5)[:, 0]
            pen_f = body_penetration(J, G, proxies, margin=0.01 + torso_gap, frames=close)
        else:
            a, b = capsule_points(J, G[..., HEAD, :, :], head_c[None])  # [F, P, C, 3]
            a0, b0 = a[:, 0, ia][:, :, None], b[:, 0, ia][:, :, None]  # [F, K, 1, 3]
            a1, b1 = a[:, 1, ia][:, None], b[:, 1, ia][:, None]  # [F, 1, K, 3]
            dist, c0, c1 = segment_distance(a0, b0, a1, b1)  # [F, K, K]
            need = radii[0, ia][:, None] + radii[1, ia][None, :] + torso_gap
            pen_f = (need - dist).clamp_min(0).amax(dim=(1, 2))  # [F]
        if float(pen_f.max()) < 2e-3:
            break
        # push the two roots apart along their horizontal axis by the worst penetration
        axis = _unit(xy[:, 0] + off[:, 0] - xy[:, 1] - off[:, 1])  # [F, 2] from person 1 to person 0
        mag = pen_f.numpy()
        mag = gaussian_filter1d(maximum_filter1d(mag, size=9, mode="nearest"), sigma=2.0, mode="nearest")
        push = axis * _t(mag * 1.15)[:, None]
        off[:, 0] += 0.5 * push
        off[:, 1] -= 0.5 * push
    J, G, transl = _core_fk(R, xy, z, off, rest)

    # --- arms: IK toward hand targets on the partner (blended with the free swing)
    a_all, b_all = capsule_points(J, G[..., HEAD, :, :], head_c[None])  # [F, P, C, 3]
    if use_proxy:
        from .collide import non_arm, posed_spheres, push_out_spheres

        # the partner's surface without its arms (they are posed below): inscribed spheres [F, S, 3]
        surf = [posed_spheres(px, G[:, i], J[:, i], non_arm(px.sphere_part)) for i, px in enumerate(proxies)]

        def push(x: Tensor, q: int, clear: float, O: Tensor, up: Tensor) -> Tensor:
            return push_out_spheres(x, surf[q][0], surf[q][1], clear, O, up)
    else:
        def push(x: Tensor, q: int, clear: float, O: Tensor, up: Tensor) -> Tensor:
            return _push_out(x, a_all[:, q, ia], b_all[:, q, ia], radii[q, ia] + clear, O, up)
    for p in range(P):
        q = 1 - p
        sk = skeletons[p]
        for h, (sh, el, wr, col, sgn) in enumerate(((L_SHOULDER, L_ELBOW, L_WRIST, L_COLLAR, 1.0), (R_SHOULDER, R_ELBOW, R_WRIST, R_COLLAR, -1.0))):
            tg, po = _hand_targets(J[:, q], G[:, q], skeletons[q], (a_all[:, q], b_all[:, q]), G[:, p, 0], sgn, surface=use_proxy)
            wt = _t(ch["hand_type"][:, p, h])  # [F, NT]; at most two types active per frame
            top = wt.topk(2, dim=-1)
            i1, i2 = top.indices[:, 0], top.indices[:, 1]
            lam = (top.values[:, 1] / top.values.sum(-1).clamp_min(1e-9)).clamp(0, 1)
            ar = torch.arange(F)
            O, Gq = J[:, q, SPINE3], G[:, q, SPINE3]
            sig = -sgn  # the partner's side this hand works on
            target = _cyl_blend(tg[ar, i1], tg[ar, i2], lam, O, Gq, sig) + _t(ch["hand_jitter"][:, p, h])
            pole_c = _unit((wt[..., None] * po).sum(1))
            target = push(target, q, 0.04 if not use_proxy else HAND_CLEARANCE + 0.01, O, Gq[..., 1])
            s, e, w_free = J[:, p, sh], J[:, p, el], J[:, p, wr]
            nh = _unit(w_free - s)
            pf = (e - s) - ((e - s) * nh).sum(-1, keepdim=True) * nh
            pole_f = _unit(torch.where(pf.norm(dim=-1, keepdim=True) < 1e-5, -G[:, p, 0, :, 2], pf))
            wgt = _t(ch["hand_w"][:, p, h])
            wgt = wgt * wgt * (3 - 2 * wgt)  # smoothstep
            target = _cyl_blend(w_free, target, wgt, O, Gq, sig)
            pole = _unit(pole_f + wgt[:, None] * (pole_c - pole_f))
            # temporal smoothing of the hand path and of the elbow's side (no flicks of the swivel)
            target = _smooth_time(target, 2.5)
            target = push(target, q, 0.03 if not use_proxy else HAND_CLEARANCE, O, Gq[..., 1])
            Jr = sk.rest_joints
            L1 = float((Jr[el] - Jr[sh]).norm())
            L2 = float((Jr[wr] - Jr[el]).norm())
            if use_proxy:
                # real bodies are thick: keep the target within reach (it slides over the partner's surface
                # toward the shoulder), so that a stretched arm does not run through the partner
                for _ in range(3):
                    dv = target - s
                    dn = dv.norm(dim=-1, keepdim=True)
                    target = s + dv * (REACH_FRAC * (L1 + L2) / dn).clamp(max=1.0)
                    target = push(target, q, HAND_CLEARANCE, O, Gq[..., 1])
            nh_t = _unit(target - s)
            pole = pole - (pole * nh_t).sum(-1, keepdim=True) * nh_t
            pole = _unit(_smooth_time(pole, 3.0))
            u, aa, flex = _two_bone_ik(s, target, pole, L1, L2, G[:, p, SPINE3], sgn)
            u0, a0, th0 = _arm_rest(sk, sgn)
            G_sh = _basis(u, aa) @ _basis(u0, a0).T  # [F, 3, 3] world rotation of the shoulder joint
            R[:, p, sh] = G[:, p, col].transpose(-1, -2) @ G_sh
            R[:, p, el] = _axis_angle(a0.expand(F, 3), flex - th0)

    # --- body-model proxies: remove the remaining interpenetration (arms around the partner, ...)
    collision: dict[str, Any] = {}
    if use_proxy:
        from .collide import ArmInfo, resolve_interpenetration

        arms = []
        for sk in skeletons:
            row = []
            for sg in (1.0, -1.0):
                _, a0, th0 = _arm_rest(sk, sg)
                row.append(ArmInfo(a0=a0, th0=float(th0), sign=sg))
            arms.append(row)
        R, transl, collision = resolve_interpenetration(R, transl, rest, proxies, arms, _t(ch["hand_w"]), resolve,
                                                           capsules=(radii, head_c))

    # --- axis-angle parameters, final FK (the ground truth is exactly FK(params))
    aa = matrix_to_axis_angle(R)  # [F, P, 24, 3]
    global_orient = aa[:, :, 0].contiguous()
    body_pose = aa[:, :, 1:].reshape(F, P, 69).contiguous()
    joints, rot = forward_kinematics(rest, global_orient, body_pose, transl, return_rotations=True)
    face = torch.stack([s.face_offsets for s in skeletons])  # [P, 5, 3]
    coco = coco17_from_skeleton(joints, rot, face)
    params = dict(ch["params"])
    params["gait_amplitude_mean"] = float(gait[..., 0].mean())
    params["hand_weight"] = _t(ch["hand_w"])  # [F, P, 2] how firmly each hand is scripted onto the partner (0 .. 1)
    if collision:
        params["collision"] = collision
    return Motion(global_orient, body_pose, transl, joints, rot, coco, torch.as_tensor(ch["phase"]), params)
