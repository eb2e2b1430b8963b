"""Initial parameters of the SMPL fit (:mod:`h4d_fast.pipeline.fit`): rigid alignment of the
model's joints to the keypoints per frame and person (weighted Kabsch), frames without enough
keypoints filled from their neighbours, and the limbs' swing rotations along the keypoints' limbs.
See :mod:`h4d_fast.pipeline.fit`'s docstring for the method."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from ..align import kabsch  # noqa: F401 (re-exported; its home)
from ..body.fast import FastBody, axis_angle_to_matrix, matrix_to_axis_angle
from ..constants import COCO_TO_SMPL45, NUM_COCO, NUM_SMPL_JOINTS

NUM_BODY_POSE = 3 * (NUM_SMPL_JOINTS - 1)
# Kabsch weights of the COCO keypoints for the zero-pose model: torso and head are reliable, the
# limbs of the T-posed model are not where the person's limbs are.
KABSCH_WEIGHTS: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 0.1, 0.1, 0.05, 0.05, 1.0, 1.0, 0.3, 0.3, 0.2, 0.2)
MIN_INIT_KEYPOINTS = 4


def _fill_frames(aa: Tensor, transl: Tensor, ok: Tensor, present: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Frames with ``ok[f, p]`` False: rotation of the nearest ok frame, translation linearly
    interpolated (held at the ends). ``aa, transl [F, P, 3]``, ``ok [F, P]``. A person with no ok
    frame keeps what it has. With ``present [F, P]`` a present frame takes only ok frames of its
    own run of presence (nothing is carried across an absence); absent frames (no term of the fit
    reads them) are filled as without it, so that they stay finite."""
    F = aa.shape[0]
    t = torch.arange(F, device=aa.device)[:, None].expand_as(ok)
    prev = torch.where(ok, t, torch.full_like(t, -1)).cummax(0).values
    nxt = torch.where(ok, t, torch.full_like(t, F)).flip(0).cummin(0).values.flip(0)
    has_p, has_n = prev >= 0, nxt < F
    if present is not None:
        from .refine import present_runs

        start, end = present_runs(present)
        has_p &= (prev >= start) | ~present
        has_n &= (nxt <= end) | ~present
    pi, ni = prev.clamp(0, F - 1), nxt.clamp(0, F - 1)

    def take(x: Tensor, idx: Tensor) -> Tensor:
        return torch.gather(x, 0, idx[..., None].expand_as(x))

    tp, tn = take(transl, pi), take(transl, ni)
    alpha = ((t - pi).to(aa.dtype) / (ni - pi).clamp_min(1).to(aa.dtype))[..., None]
    tr = torch.where((has_p & has_n)[..., None], tp + alpha * (tn - tp), torch.where(has_p[..., None], tp, tn))
    use_next = has_n & (~has_p | ((ni - t) < (t - pi)))
    rot = torch.where(use_next[..., None], take(aa, ni), take(aa, pi))
    anyok = has_p | has_n
    keep = ok | ~anyok
    return torch.where(keep[..., None], aa, rot), torch.where(keep[..., None], transl, tr)


def init_from_keypoints(
    kp: Tensor,
    weight: Tensor,
    fast: FastBody,
    betas: Tensor,
    body_pose: Tensor | None = None,
    present: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Rigid initialisation of orientation and translation (module docstring).

    Args:
        kp: ``[F, P, 17, 3]`` keypoints; weight ``[F, P, 17]`` (0 = invalid).
        fast: the body model's :class:`FastBody`.
        betas: ``[P, K]``.
        body_pose: ``[F, P, 69]`` or None (zero pose; the keypoints are then weighted by
            :data:`KABSCH_WEIGHTS`).
        present: ``[F, P]`` bool or None: frames are filled only from their own run of presence.
    Returns:
        global_orient ``[F, P, 3]``, transl ``[F, P, 3]`` and ok ``[F, P]`` (Kabsch was possible;
        the other frames are filled from their neighbours).
    """
    F, P = kp.shape[:2]
    dt, dev = kp.dtype, kp.device
    N = F * P
    b = betas.to(dt)[None].expand(F, P, -1).reshape(N, -1)
    zeros3 = kp.new_zeros(N, 3)
    if body_pose is None:
        bp = kp.new_zeros(N, NUM_BODY_POSE)
        kw = torch.tensor(KABSCH_WEIGHTS, dtype=dt, device=dev)
    else:
        bp = body_pose.to(dt).reshape(N, NUM_BODY_POSE)
        kw = torch.ones(NUM_COCO, dtype=dt, device=dev)
    with torch.no_grad():
        J = fast.joints(zeros3, bp, b, None)  # [N, 29, 3] canonical (identity orient, no transl)
        coco = J.index_select(1, torch.tensor(COCO_TO_SMPL45, dtype=torch.long, device=dev)).view(F, P, NUM_COCO, 3)
        J0 = J[:, 0].view(F, P, 3)
        w = weight.to(dt) * kw
        R, t = kabsch(coco, kp, w)
        ok = (w > 0).sum(-1) >= MIN_INIT_KEYPOINTS
        aa = matrix_to_axis_angle(R)
        transl = t + (R @ J0[..., None])[..., 0] - J0
        aa, transl = _fill_frames(aa, transl, ok, present)
        # a person never seen: upright (model y-up -> world z-up) at the origin
        never = ~ok.any(0)  # [P]
        if bool(never.any()):
            up = torch.tensor([math.pi / 2, 0.0, 0.0], dtype=dt, device=dev)
            aa = torch.where(never[None, :, None], up, aa)
            transl = torch.where(never[None, :, None], torch.zeros_like(transl), transl)
    return aa, transl, ok


def swing_axis_angle(a: Tensor, b: Tensor) -> Tensor:
    """Axis-angle ``[..., 3]`` of the smallest rotation taking direction ``a`` to ``b`` (``[..., 3]``).

    Zero where either vector is (near) zero; a half turn about an axis perpendicular to ``a``
    when they are opposite.
    """
    an = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    bn = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    c = torch.linalg.cross(an, bn, dim=-1)
    s = c.norm(dim=-1, keepdim=True)
    ang = torch.atan2(s, (an * bn).sum(-1, keepdim=True))
    axis = c / s.clamp_min(1e-12)
    # opposite vectors: any axis perpendicular to a
    alt = torch.linalg.cross(an, torch.tensor([1.0, 0.0, 0.0], dtype=a.dtype, device=a.device).expand_as(an), dim=-1)
    alt2 = torch.linalg.cross(an, torch.tensor([0.0, 1.0, 0.0], dtype=a.dtype, device=a.device).expand_as(an), dim=-1)
    alt = torch.where(alt.norm(dim=-1, keepdim=True) > 1e-3, alt, alt2)
    alt = alt / alt.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    axis = torch.where(s > 1e-6, axis, alt)
    ok = (a.norm(dim=-1, keepdim=True) > 1e-9) & (b.norm(dim=-1, keepdim=True) > 1e-9) & (ang > 1e-7)
    return torch.where(ok, axis * ang, torch.zeros_like(a))


# Limb chains for the swing initialisation: (SMPL joint rotated, its child joint, COCO keypoint of
# the joint, COCO keypoint of the child).
LIMB_CHAINS: tuple[tuple[int, int, int, int], ...] = (
    (16, 18, 5, 7), (17, 19, 6, 8),  # shoulders -> elbows
    (18, 20, 7, 9), (19, 21, 8, 10),  # elbows -> wrists
    (1, 4, 11, 13), (2, 5, 12, 14),  # hips -> knees
    (4, 7, 13, 15), (5, 8, 14, 16),  # knees -> ankles
)


def init_limb_pose(kp: Tensor, weight: Tensor, global_orient: Tensor, fast: FastBody, betas: Tensor) -> Tensor:
    """Body pose that points the arms and legs along the keypoints' limbs (swing only).

    With the torso joints at zero rotation, each chain joint (shoulder, elbow, hip, knee) gets the
    smallest rotation taking its rest bone direction to the observed one, expressed in its
    parent's frame; limbs with an invalid endpoint stay at zero. Twist is left at zero.

    Args:
        kp: ``[F, P, 17, 3]``; weight ``[F, P, 17]``; global_orient ``[F, P, 3]``; betas ``[P, K]``.
    Returns:
        body_pose ``[F, P, 69]``.
    """
    F, P = kp.shape[:2]
    with torch.no_grad():
        Jr = fast.rest_joints(betas.to(kp.dtype))  # [P, 24, 3]
        Rg = axis_angle_to_matrix(global_orient)  # [F, P, 3, 3]
        local = [torch.zeros(F, P, 3, dtype=kp.dtype, device=kp.device) for _ in range(NUM_SMPL_JOINTS)]
        glob: dict[int, Tensor] = {}
        for j, c, kj, kc in LIMB_CHAINS:
            parent = fast.parents[j]
            Rp = glob.get(parent, Rg)  # parents outside the chains have zero local rotation
            rest = (Jr[:, c] - Jr[:, j])[None].expand(F, P, 3)
            tgt = kp[:, :, kc] - kp[:, :, kj]
            ok = (weight[:, :, kc] > 0) & (weight[:, :, kj] > 0)
            tgt_local = (Rp.transpose(-1, -2) @ tgt[..., None])[..., 0]
            aa = swing_axis_angle(rest, tgt_local)
            aa = torch.where(ok[..., None], aa, torch.zeros_like(aa))
            local[j] = aa
            glob[j] = Rp @ axis_angle_to_matrix(aa)
        return torch.stack(local[1:], 2).reshape(F, P, NUM_BODY_POSE)


def _init_array(init: Mapping[str, Any] | None, key: str, shape: tuple[int, ...], dt: torch.dtype, dev: torch.device) -> Tensor | None:
    if init is None or key not in init or init[key] is None:
        return None
    x = torch.as_tensor(np.asarray(init[key]) if not isinstance(init[key], Tensor) else init[key]).to(device=dev, dtype=dt)
    if key == "betas":
        if x.dim() == 3:  # per frame [F, P, K]: the per-person median
            x = x.median(0).values
        if x.dim() != 2 or x.shape[0] != shape[0]:
            raise ValueError(f"init['betas']: expected [P, K] or [F, P, K] with P = {shape[0]}, got {tuple(x.shape)}")
        return x
    x = x.reshape(shape[0], shape[1], -1)
    if tuple(x.shape) != shape:
        raise ValueError(f"init[{key!r}]: expected {shape}, got {tuple(x.shape)}")
    return x


__all__ = ["KABSCH_WEIGHTS", "LIMB_CHAINS", "MIN_INIT_KEYPOINTS", "init_from_keypoints", "init_limb_pose", "kabsch", "swing_axis_angle"]
