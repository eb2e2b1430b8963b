"""People who enter and leave: ``N`` people in pairs walk in, interact, walk out and come back.

Script (everything from the capture's seed):

* people ``2k, 2k+1`` form pair ``k``; each pair has its own spot on the floor (pair centres on a
  circle, each pair's axis tangential to it) and a lone last person (odd ``N``) walks straight
  across the scene;
* an **episode** of a pair: both walk in (from a "door" behind their starting point, facing their
  partner), play an interaction of :func:`h4d_fast.synth.motion.generate_motion` (approach, hug,
  grapple, and a separation when it lasts 8 s or more) rotated and moved onto the spot, turn away
  from each other and walk out; then they are **absent** for a while (not in any image) and come
  back for another episode with a new interaction, until the capture ends. Pair 0 starts at the
  first frame, the others later (so first-frame identity boxes cover only some people);
* walking is the interaction's gait model (:func:`~h4d_fast.synth.motion.pose_from_root`) along a
  straight path, feet on the ground; the poses are cross-faded over a few frames where a walk meets
  an interaction.

Returns the same as :func:`h4d_fast.synth.make_capture`, with the ground truth's keypoints invalid
where a person is absent and ``meta["present"] [F, N]``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data import Capture, GroundTruth
from .motion import _core_fk, _noise, generate_motion, pose_from_root
from .rotations import axis_angle_to_matrix, matrix_to_axis_angle, rot_z
from .skeleton import HEAD, L_ANKLE, R_ANKLE, Skeleton, capsule_points, coco17_from_skeleton, forward_kinematics

ABSENT_Z = -1000.0  # where an absent person's body is kept (below the floor, in no camera)
BLEND_FRAMES = 12


def crowd_names(n: int) -> list[str]:
    return [f"aria{i + 1:02d}" for i in range(n)]


def _walk(rng: np.random.Generator, sk: Skeleton, xy: np.ndarray, yaw: np.ndarray, fps: float, ankle_height: float) -> tuple[Tensor, Tensor]:
    """One person walking along ``xy [n, 2]`` facing ``yaw [n]``: local rotations ``[n, 24, 3, 3]`` and transl ``[n, 3]``."""
    n = xy.shape[0]
    t = np.arange(n) / fps
    ch: dict[str, Any] = {}
    for name, (lo, hi), amp in (("lean", (0, 3), 1.0), ("side", (-1, 1), 0.8), ("spine_pitch", (0, 3), 1.0), ("spine_side", (-1, 1), 1.0),
                                ("head_pitch", (-5, 5), 3.0), ("head_yaw", (-8, 8), 5.0), ("head_side", (-3, 3), 2.0),
                                ("shrug", (0, 3), 1.0), ("stance", (2, 5), 0.5)):
        ch[name] = (rng.uniform(lo, hi) + _noise(rng, t, amp))[:, None]
    ch["crouch"] = np.zeros((n, 1))
    for name, (lo, hi) in (("arm_abd", (6, 12)), ("arm_flex0", (0, 8)), ("arm_elbow0", (12, 25)), ("arm_swing", (14, 24)),
                           ("hip_swing", (18, 25)), ("knee_swing", (45, 60)), ("gait_phase0", (0, 2 * np.pi))):
        ch[name] = rng.uniform(lo, hi, 1)
    R, _ = pose_from_root(ch, xy[:, None], yaw[:, None], [sk], fps)  # [n, 1, 24, 3, 3]
    rest = sk.rest_joints[None]  # [1, 24, 3]
    xy_t = torch.as_tensor(xy[:, None], dtype=torch.float64)
    off = torch.zeros_like(xy_t)
    z = torch.zeros(n, 1, dtype=torch.float64)
    for _ in range(2):  # feet on the ground
        J, _, _ = _core_fk(R, xy_t, z, off, rest)
        z = z + (ankle_height - J[..., [L_ANKLE, R_ANKLE], 2].amin(-1))
    _, _, transl = _core_fk(R, xy_t, z, off, rest)
    return R[:, 0], transl[:, 0]


def _slerp(Ra: Tensor, Rb: Tensor, w: Tensor) -> Tensor:
    """Rotation matrices from ``Ra`` to ``Rb`` (``[..., 3, 3]``) at fractions ``w [...]``."""
    d = matrix_to_axis_angle(Ra.transpose(-1, -2) @ Rb)
    return Ra @ axis_angle_to_matrix(d * w[..., None])


def _facing(R_root: Tensor) -> Tensor:
    """Yaw (radians) of the body's forward direction from root rotations ``[..., 3, 3]``."""
    fwd = R_root[..., :, 2]  # rest forward (+z) in world
    return torch.atan2(fwd[..., 1], fwd[..., 0])


def _layout(n_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair centres ``[K, 2]`` and axis angles ``[K]``: on a circle, axes tangential."""
    if n_pairs == 1:
        return np.zeros((1, 2)), np.zeros(1)
    r = 1.3 if n_pairs == 2 else 1.0 + 0.45 * n_pairs
    ang = 2 * np.pi * np.arange(n_pairs) / n_pairs
    return np.stack([r * np.cos(ang), r * np.sin(ang)], -1), ang + np.pi / 2


def crowd_motion(F: int, skels: list[Skeleton], rng: np.random.Generator, fps: float = 30.0, ankle_height: float = 0.08,
                 torso_gap: float = 0.0, resolve: Any = None) -> dict[str, Any]:
    """The enter-leave script (module docstring) for ``N = len(skels)`` people over ``F`` frames.

    Returns ``global_orient [F, N, 3]``, ``body_pose [F, N, 69]``, ``transl [F, N, 3]``,
    ``present [F, N]`` bool, ``episodes`` (per pair: start, walk-in, interaction and walk-out frames).
    """
    N = len(skels)
    rest = torch.stack([s.rest_joints for s in skels])  # [N, 24, 3]
    R_all = torch.eye(3, dtype=torch.float64).expand(F, N, 24, 3, 3).clone()
    transl = torch.zeros(F, N, 3, dtype=torch.float64)
    transl[..., 2] = ABSENT_Z
    transl -= rest[None, :, 0]
    present = torch.zeros(F, N, dtype=torch.bool)
    K = N // 2
    centres, axes = _layout(max(K, 1))
    episodes: list[dict[str, Any]] = []
    T = F / fps

    def put(p: int, f0: int, R: Tensor, tr: Tensor) -> None:
        n = min(R.shape[0], F - f0)
        if n <= 0:
            return
        R_all[f0:f0 + n, p] = R[:n]
        transl[f0:f0 + n, p] = tr[:n]
        present[f0:f0 + n, p] = True

    for k in range(K):
        a, b = 2 * k, 2 * k + 1
        f = 0 if k == 0 else int(rng.uniform(0.5, 2.0) * fps)
        while f < F - int(0.5 * fps):
            n_in = int(rng.uniform(1.0, 1.5) * fps)
            n_out = int(rng.uniform(1.5, 2.0) * fps)
            clip_s = float(rng.uniform(6.0, 9.0)) if T >= 20 else float(np.clip(0.35 * T, 2.0, 9.0))
            L = max(int(clip_s * fps), 60)
            mo = generate_motion(L, [skels[a], skels[b]], rng, fps=fps, ankle_height=ankle_height, separate=clip_s >= 8.0,
                                 torso_gap=torso_gap, resolve=resolve)
            # rotate the interaction so its axis is the spot's, and move its centre onto the spot
            alpha0 = float(mo.params["scene_yaw"])
            phi = float(axes[k] - alpha0 + (np.pi if rng.random() < 0.5 else 0.0))
            Rz = rot_z(torch.tensor(phi, dtype=torch.float64))
            c0 = torch.as_tensor(mo.params["centre"], dtype=torch.float64)
            shift = torch.as_tensor(centres[k], dtype=torch.float64) - (Rz[:2, :2] @ c0)
            Rc = axis_angle_to_matrix(torch.cat([mo.global_orient[..., None, :], mo.body_pose.reshape(L, 2, 23, 3)], -2))  # [L, 2, 24, 3, 3]
            Rc[:, :, 0] = Rz @ Rc[:, :, 0]
            rc = rest[[a, b]]  # [2, 24, 3]
            root = (Rz @ (mo.transl + rc[None, :, 0])[..., None])[..., 0]
            root[..., :2] += shift
            tc = root - rc[None, :, 0]  # [L, 2, 3]
            start = root[0, :, :2]  # [2, 2]
            end = root[-1, :, :2]
            ep = {"pair": k, "start": f, "walk_in": n_in, "interaction": L, "walk_out": n_out}
            for i, p in enumerate((a, b)):
                q = 1 - i
                # walk in from behind the starting point, facing the partner
                dir_in = (start[q] - start[i]) / (start[q] - start[i]).norm().clamp_min(1e-6)
                length = float(rng.uniform(1.1, 1.6))
                s = torch.linspace(0.0, 1.0, n_in + 1, dtype=torch.float64)[:-1, None]
                xy = (start[i] - length * dir_in)[None] + s * length * dir_in[None]
                yaw = np.full(n_in, math.atan2(float(dir_in[1]), float(dir_in[0])))
                Rw, tw = _walk(rng, skels[p], xy.numpy(), yaw, fps, ankle_height)
                # interaction, cross-faded from the walk over its first frames
                Rp, tp = Rc[:, i].clone(), tc[:, i].clone()
                nb = min(BLEND_FRAMES, L)
                w = torch.linspace(0.0, 1.0, nb + 2, dtype=torch.float64)[1:-1]
                Rp[:nb] = _slerp(Rw[-1:].expand(nb, -1, -1, -1), Rp[:nb], w[:, None].expand(nb, 24))
                tp[:nb, 2] = tw[-1, 2] + w * (tp[:nb, 2] - tw[-1, 2])
                # walk out, turning away from the partner
                dir_out = (end[i] - end[q]) / (end[i] - end[q]).norm().clamp_min(1e-6)
                y0 = float(_facing(Rp[-1, 0]))
                y1 = math.atan2(float(dir_out[1]), float(dir_out[0]))
                y1 = y0 + (y1 - y0 + math.pi) % (2 * math.pi) - math.pi
                n_turn = min(int(0.9 * fps), n_out)
                yaw_o = np.concatenate([np.linspace(y0, y1, n_turn), np.full(n_out - n_turn, y1)])
                speed = np.concatenate([np.linspace(0.2, 1.0, n_turn), np.ones(n_out - n_turn)]) * rng.uniform(1.0, 1.3) / fps
                xy_o = end[i].numpy()[None] + np.cumsum(speed)[:, None] * dir_out.numpy()[None]
                Ro, to = _walk(rng, skels[p], xy_o, yaw_o, fps, ankle_height)
                nb = min(BLEND_FRAMES, n_out)
                w = torch.linspace(0.0, 1.0, nb + 2, dtype=torch.float64)[1:-1]
                Ro[:nb] = _slerp(Rp[-1:].expand(nb, -1, -1, -1), Ro[:nb], w[:, None].expand(nb, 24))
                to[:nb, 2] = tp[-1, 2] + w * (to[:nb, 2] - tp[-1, 2])
                put(p, f, torch.cat([Rw, Rp, Ro]), torch.cat([tw, tp, to]))
            episodes.append(ep)
            f += n_in + L + n_out + int(rng.uniform(1.0, 2.5) * fps)  # absent, then back
    if N % 2:
        p = N - 1
        f = int(rng.uniform(0.3, 1.5) * fps)
        while f < F - int(0.5 * fps):
            th = rng.uniform(0, 2 * np.pi)
            span = float(rng.uniform(4.0, 5.5))
            u = np.array([math.cos(th), math.sin(th)])
            nrm = np.array([-u[1], u[0]])
            off = float(rng.uniform(-0.8, 0.8))
            n = int(span / rng.uniform(1.0, 1.3) * fps)
            s = np.linspace(-0.5, 0.5, n)[:, None]
            xy = off * nrm[None] + s * span * u[None]
            Rw, tw = _walk(rng, skels[p], xy, np.full(n, th), fps, ankle_height)
            put(p, f, Rw, tw)
            episodes.append({"person": p, "start": f, "walk": n})
            f += n + int(rng.uniform(1.0, 2.5) * fps)
    aa = matrix_to_axis_angle(R_all)
    return {"global_orient": aa[:, :, 0].contiguous(), "body_pose": aa[:, :, 1:].reshape(F, N, 69).contiguous(),
            "transl": transl, "present": present, "episodes": episodes}


def make_crowd_capture(cfg) -> tuple[Capture, GroundTruth, dict[str, Any]]:
    """The enter-leave capture of :class:`~h4d_fast.synth.SynthConfig` ``cfg`` (``num_people`` people)."""
    from . import _body_coco, _body_skeletons, _face_normals, _resolve_body
    from .detector import simulate_detections
    from .rig import make_rig, random_similarity
    from .skeleton import random_skeletons

    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    N, F = int(cfg.num_people), int(cfg.num_frames)
    ss = np.random.SeedSequence(int(cfg.seed))
    rng_body, rng_motion, rng_rig, rng_det, rng_T = (np.random.default_rng(s) for s in ss.spawn(5))
    body = _resolve_body(cfg.body) if cfg.skeletons is None and cfg.skeleton_fn is None else None
    betas = None
    if cfg.skeletons is not None:
        skels = list(cfg.skeletons)
    elif cfg.skeleton_fn is not None:
        skels = [cfg.skeleton_fn(i, rng_body) for i in range(N)]
    elif body is not None:
        skels, betas = _body_skeletons(body, rng_body, cfg.beta_std, cfg.height_range, cfg.min_height_gap, n=N)
    else:
        skels = random_skeletons(rng_body, cfg.height_range, cfg.build_range, N)
    if len(skels) != N:
        raise ValueError(f"make_capture: {len(skels)} skeletons for {N} people")
    from . import _resolve_params

    mo = crowd_motion(F, skels, rng_motion, cfg.fps, cfg.ankle_height, cfg.torso_gap, _resolve_params(cfg))
    rest = torch.stack([s.rest_joints for s in skels])
    joints, rot = forward_kinematics(rest, mo["global_orient"], mo["body_pose"], mo["transl"], return_rotations=True)
    face = torch.stack([s.face_offsets for s in skels])
    if body is not None:
        from .motion import Motion

        m = Motion(mo["global_orient"], mo["body_pose"], mo["transl"], joints, rot, torch.zeros(F, N, 17, 3, dtype=torch.float64),
                   torch.zeros(F, dtype=torch.long))
        coco = _body_coco(body, m, betas)
    else:
        coco = coco17_from_skeleton(joints, rot, face)
    timing["motion"] = time.perf_counter() - t0
    present = mo["present"]
    # cameras around everyone's floor area
    t1 = time.perf_counter()
    here = present[..., None].expand(-1, -1, 2)
    xy = joints[:, :, 0, :2][here].reshape(-1, 2)
    centre = xy.mean(0).numpy() if xy.numel() else np.zeros(2)
    reach = float((xy - torch.as_tensor(centre)).norm(dim=-1).max()) if xy.numel() else 2.0
    r0 = max(cfg.camera_radius[0], reach + 1.5)
    radius = (r0, r0 + (cfg.camera_radius[1] - cfg.camera_radius[0]))
    cams = make_rig(rng_rig, cfg.num_cameras, centre, cfg.lens, cfg.image_size, cfg.focal_px, cfg.focal_jitter, cfg.principal_jitter_px,
                    cfg.fisheye_coeffs, cfg.dist_jitter, radius, cfg.camera_height, cfg.azimuth_jitter, target_jitter=cfg.target_jitter)
    T = random_similarity(rng_T, cfg.scale_range)
    head_rot = rot[:, :, HEAD]
    hc = torch.stack([s.head_centre for s in skels])
    caps_a, caps_b = capsule_points(joints, head_rot, hc[None])
    radii = torch.stack([s.radii for s in skels])
    pd = torch.full((F,), float("inf"), dtype=torch.float64)
    if N == 2:
        both = present.all(-1)
        pd = torch.where(both, (joints[:, 0, 0] - joints[:, 1, 0]).norm(dim=-1), pd)
    timing["rig"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    dets, init_boxes, init_valid, det_meta = simulate_detections(
        cams, coco, caps_a, caps_b, radii, _face_normals(head_rot, skels), pd, rng_det, cfg.detector_params(), present=present)
    timing["detector"] = time.perf_counter() - t2
    names = list(cfg.person_names) if len(cfg.person_names) == N else crowd_names(N)
    capture = Capture(cameras=cams, detections=dets, frame_ids=list(range(1, F + 1)), person_names=names,
                      init_boxes=init_boxes, init_valid=init_valid, name=cfg.name)
    poses3d = torch.cat([coco, present[..., None, None].expand(F, N, 17, 1).to(coco.dtype)], -1)
    poses3d[..., :3] = torch.where(present[..., None, None], poses3d[..., :3], torch.zeros_like(poses3d[..., :3]))
    gt = GroundTruth(poses3d=poses3d, smpl={
        "global_orient": mo["global_orient"], "body_pose": mo["body_pose"], "transl": mo["transl"],
        "rest_joints": rest, "face_offsets": face, "joints": joints, "present": present,
        **({"betas": betas} if betas is not None else {})})
    timing["total"] = time.perf_counter() - t0
    meta: dict[str, Any] = {
        "seed": int(cfg.seed), "present": present, "episodes": mo["episodes"], "scale_transform": T,
        "counts": det_meta["counts"], "occluded_frac": det_meta["occluded_frac"], "outlier_frac": det_meta["outlier_frac"],
        "labels": det_meta["labels"], "skeletons": skels, "timing": timing, "config": cfg, "enter_leave": True,
        "heights": [float(s.height) for s in skels],
        "camera_radius": radius,  # the ring's distance range from the centre (grows with the area the people use)
        "body_model": None if body is None else ("default" if isinstance(cfg.body, str) and cfg.body == "default" else str(getattr(body, "path", cfg.body))),
    }
    return capture, gt, meta


__all__ = ["crowd_motion", "crowd_names", "make_crowd_capture"]
