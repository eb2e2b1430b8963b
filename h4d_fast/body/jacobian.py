"""Analytic Jacobians of :class:`~h4d_fast.body.fast.FastBody`'s joints-only forward.

Used by the Gauss-Newton fit (:mod:`h4d_fast.pipeline.fit_gn`). Notation per body: ``theta_i``
the axis-angle of joint ``i`` (``i = 0`` is ``global_orient``), ``R_i`` its local rotation,
``G_i`` the world rotation of joint ``i`` and ``X_i`` its posed position (both from the forward
kinematics, without ``transl``).

* **Rotations.** With ``J_r(theta)`` the right Jacobian of SO(3) (``R(theta + d) ~ R(theta)
  exp([J_r d]x)``), a change ``d`` of ``theta_i`` turns every point carried by joint ``i`` or a
  descendant about ``X_i`` with the world angular velocity ``w_i = G_i J_r(theta_i) d``. A tree
  joint ``k`` moves when ``i`` is a strict ancestor of it: ``dX_k/dtheta_i = [w_i columns] x (X_k -
  X_i)``. A vertex joint ``v_m = sum_j W_mj (G_j (u_m - J_j) + X_j)`` (``u_m`` its shaped rest
  position) moves with every blend joint ``j`` that has ``i`` as ancestor or self:
  ``dv_m/dtheta_i = w_i x (Q_mi - a_mi X_i)``, ``Q_mi = sum_j W_mj [i <= j] q_mj``, ``a_mi = sum_j
  W_mj [i <= j]``, ``q_mj = G_j (u_m - J_j) + X_j``. Pose correctives (``posedirs``) add
  ``T_m du_m/dtheta_i`` with ``T_m = sum_j W_mj G_j``.
* **Translation.** The identity for every point.
* **Shape.** Rest joints are linear in ``beta`` (``J = J_template + S beta``); with ``dS_i = S_i -
  S_parent(i)`` (``dS_0 = S_0``) the bone directions, ``dX_k/dbeta = sum_{i <= k} G_parent(i) dS_i``
  (``G_parent(0) = I``) and ``dv_m/dbeta = sum_j W_mj (G_j (VS_m - S_j) + dX_j/dbeta)``.
* **6D rotations** (temporal term, :func:`~h4d_fast.body.fast.rot6d`): ``d(R e_c)/dtheta =
  -R [e_c]x J_r``.

Every function here has a parity test against autograd through :meth:`FastBody.joints`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..constants import NUM_SMPL_JOINTS
from .fast import FastBody, axis_angle_to_matrix


def skew(v: Tensor) -> Tensor:
    """``[..., 3]`` -> the cross-product matrix ``[..., 3, 3]`` (``skew(a) @ b = a x b``)."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*v.shape[:-1], 3, 3)


def so3_right_jacobian(aa: Tensor) -> Tensor:
    """Right Jacobian of SO(3) at axis-angle ``aa [..., 3]`` -> ``[..., 3, 3]``.

    ``J_r = I - (1 - cos t) / t^2 [aa]x + (t - sin t) / t^3 [aa]x^2`` (``t = |aa|``), with the
    series ``I - [aa]x / 2 + [aa]x^2 / 6`` near zero.
    """
    th2 = (aa * aa).sum(-1)[..., None, None]
    small = th2 < 1e-6
    th2s = torch.where(small, torch.ones_like(th2), th2)
    th = th2s.sqrt()
    a = torch.where(small, 0.5 - th2 / 24, (1 - torch.cos(th)) / th2s)
    b = torch.where(small, 1.0 / 6 - th2 / 120, (th - torch.sin(th)) / (th2s * th))
    K = skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device)
    return eye - a * K + b * (K @ K)


class _Structure:
    """Constant tree tensors of one FastBody (built once, cached on it)."""

    def __init__(self, fast: FastBody):
        n = NUM_SMPL_JOINTS
        dev, dt = fast.device, fast.dtype
        anc = torch.zeros(n, n, dtype=dt)  # anc[k, i] = 1: i is an ancestor of k or k itself
        for k in range(n):
            j = k
            while j >= 0:
                anc[k, j] = 1
                j = fast.parents[j]
        self.anc_incl = anc.to(dev)
        self.anc_strict = (anc - torch.eye(n, dtype=dt)).to(dev)
        W = fast.vj_weights  # [M, 24]
        # C[m, j, i] = W_mj [i <= j]: weight of blend joint j of vertex joint m that joint i moves
        self.vj_C = W[:, :, None] * self.anc_incl[None]  # [M, 24, 24]
        self.vj_a = self.vj_C.sum(1)  # [M, 24]
        par = torch.tensor([max(p, 0) for p in fast.parents], device=dev)
        self.parent0 = par  # parent index with the root mapped to itself
        S = fast.J_shapedirs  # [24, 3, K]
        dS = S - S.index_select(0, par)
        dS[0] = S[0]
        self.bone_shapedirs = dS


def _structure(fast: FastBody) -> _Structure:
    st = getattr(fast, "_jac_structure", None)
    if st is None or st.anc_incl.device != fast.device or st.anc_incl.dtype != fast.dtype:
        st = _Structure(fast)
        fast._jac_structure = st
    return st


@dataclass
class JointsJacobian:
    """Joints and their derivatives for ``B`` bodies (``M`` vertex joints, ``K`` betas).

    Attributes:
        joints: ``[B, 24 + M, 3]`` (with ``transl``), as :meth:`FastBody.joints`.
        rot: ``[B, 24, 3, 3]`` local rotations.
        d_pose: ``[B, 24 + M, 3, S, 3]``: d joint[x] / d pose[joint i, component c] for the ``S``
            requested joints (pose = the 72 axis-angle values, ``global_orient`` first); None
            unless requested.
        d_betas: ``[B, 24 + M, 3, K]`` or None. (d / d transl is the identity.)
        d_rot6d: ``[B, 23, 6, 3]``: d rot6d(R_j) / d theta_j of the body joints ``j = 1..23``
            (each 6D rotation depends on its own joint only); None unless requested.
    """

    joints: Tensor
    rot: Tensor
    d_pose: Tensor | None
    d_betas: Tensor | None
    d_rot6d: Tensor | None
    GR: Tensor | None = None  # [B, 24, 3, 3] world rotations
    Gt: Tensor | None = None  # [B, 24, 3] posed tree joints without transl
    J: Tensor | None = None  # [B, 24, 3] rest joints
    q: Tensor | None = None  # [B, M, 24, 3] vertex joints carried rigidly by each joint (M > 0)
    pose: Tensor | None = None  # [B, 24, 3] the axis-angles


def joints_with_jacobian(
    fast: FastBody,
    pose: Tensor,
    betas: Tensor,
    transl: Tensor | None = None,
    want_pose: bool = True,
    want_betas: bool = False,
    want_rot6d: bool = False,
    pose_joints: Sequence[int] | None = None,
) -> JointsJacobian:
    """Joints-only forward plus its analytic Jacobians (module docstring).

    Args:
        fast: the body.
        pose: ``[B, 72]`` (or ``[B, 24, 3]``) axis-angle, ``global_orient`` first.
        betas: ``[B, K]``; transl ``[B, 3]`` or None.
        pose_joints: the joints whose pose columns ``d_pose`` holds, in this order (default all 24;
            then ``d_pose [B, 24 + M, 3, S, 3]``).
    """
    B = pose.shape[0]
    aa = pose.reshape(B, NUM_SMPL_JOINTS, 3)
    betas = fast._betas(betas, B)
    st = _structure(fast)
    rot = axis_angle_to_matrix(aa)  # [B, 24, 3, 3]
    J = fast.rest_joints(betas)  # [B, 24, 3]
    GR, Gt = fast.kinematics(rot, J)
    M = fast.vj_ids.numel()
    vj = q = None
    if M:
        u = fast.vj_template + torch.einsum("mck,bk->bmc", fast.vj_shapedirs, betas)  # [B, M, 3]
        if fast.vj_posedirs is not None:
            feat = (rot[:, 1:] - torch.eye(3, dtype=rot.dtype, device=rot.device)).reshape(B, -1)
            u = u + (feat @ fast.vj_posedirs).view(B, M, 3)
        # q[b, m, j] = G_j (u_m - J_j) + X_j: vertex joint m carried rigidly by joint j
        q = torch.einsum("bjxy,bmjy->bmjx", GR, u[:, :, None, :] - J[:, None, :, :]) + Gt[:, None]
        vj = torch.einsum("mj,bmjx->bmx", fast.vj_weights, q)
        X = torch.cat([Gt, vj], 1)
    else:
        X = Gt
    d_pose = d_betas = d_r6 = None
    if want_pose or want_rot6d:
        Jr = so3_right_jacobian(aa)  # [B, 24, 3, 3]
    if want_pose:
        sel = list(range(NUM_SMPL_JOINTS)) if pose_joints is None else [int(i) for i in pose_joints]
        full = sel == list(range(NUM_SMPL_JOINTS))
        si = None if full else _index(tuple(sel), pose.device)

        def pick(x: Tensor, dim: int) -> Tensor:
            return x if si is None else x.index_select(dim, si)

        Om = pick(GR, 1) @ pick(Jr, 1)  # [B, S, 3(x), 3(c)]: world angular velocity per pose component
        Gs = pick(Gt, 1)  # [B, S, 3]
        E = pick(st.anc_strict, 1)[None, :, :, None] * (Gt[:, :, None, :] - Gs[:, None, :, :])  # [B, 24(k), S(i), 3]
        if M:
            Q = torch.einsum("mji,bmjx->bmix", pick(st.vj_C, 2), q)  # [B, M, S, 3]
            E = torch.cat([E, Q - pick(st.vj_a, 1)[None, :, :, None] * Gs[:, None]], 1)  # [B, 24 + M, S, 3]
        # d X_k / d theta_ic = Om_i[:, c] x E_ki, component by component -> [B, 24 + M, 3(x), S, 3(c)]
        Ox, Oy, Oz = (Om[:, None, :, a, :] for a in range(3))  # [B, 1, S, 3(c)]
        Ex, Ey, Ez = (E[..., a : a + 1] for a in range(3))  # [B, 24 + M, S, 1]
        d_pose = torch.stack([Oy * Ez - Oz * Ey, Oz * Ex - Ox * Ez, Ox * Ey - Oy * Ex], 2)
        if M and fast.vj_posedirs is not None:
            # pose correctives of the vertex joints: T_m du_m/dtheta_i, dR_i/dtheta_ic = R_i [J_r e_c]x
            dR = rot[:, 1:, None] @ skew(Jr[:, 1:].transpose(-1, -2))  # [B, 23, 3(c), 3, 3]
            PD = fast.vj_posedirs.view(NUM_SMPL_JOINTS - 1, 9, M, 3)
            du = torch.einsum("bicq,iqmy->bmyic", dR.reshape(B, NUM_SMPL_JOINTS - 1, 3, 9), PD)  # [B, M, 3, 23, 3]
            T = torch.einsum("mj,bjxy->bmxy", fast.vj_weights, GR)
            extra = torch.einsum("bmxy,bmyic->bmxic", T, du)
            extra = torch.cat([torch.zeros_like(extra[:, :, :, :1]), extra], 3)  # the root has no correctives
            vjd = d_pose[:, NUM_SMPL_JOINTS:] + pick(extra, 3)
            d_pose = torch.cat([d_pose[:, :NUM_SMPL_JOINTS], vjd], 1)
    if want_betas:
        GRp = GR.index_select(1, st.parent0)  # [B, 24, 3, 3] parent's world rotation
        GRp = torch.cat([torch.eye(3, dtype=GR.dtype, device=GR.device).expand(B, 1, 3, 3), GRp[:, 1:]], 1)
        rotated = torch.einsum("bixy,iyk->bixk", GRp, st.bone_shapedirs)  # [B, 24, 3, K]
        d_betas = torch.einsum("ki,bixK->bkxK", st.anc_incl, rotated)  # [B, 24, 3, K]
        if M:
            rel = fast.vj_shapedirs[:, None] - fast.J_shapedirs[None]  # [M, 24, 3, K]
            dv = torch.einsum("mj,bjxy,mjyK->bmxK", fast.vj_weights, GR, rel) + torch.einsum("mj,bjxK->bmxK", fast.vj_weights, d_betas)
            d_betas = torch.cat([d_betas, dv], 1)
    if want_rot6d:
        R = rot[:, 1:]  # [B, 23, 3, 3]
        cols = []
        for c in (0, 1):
            e = torch.zeros(3, dtype=R.dtype, device=R.device)
            e[c] = 1.0
            cols.append(-(R @ skew(e)) @ Jr[:, 1:])  # [B, 23, 3(row), 3]
        d_r6 = torch.stack(cols, 3).reshape(B, NUM_SMPL_JOINTS - 1, 6, 3)  # rows (r, c) -> 2 r + c as rot6d
    if transl is not None:
        X = X + transl[:, None, :]
    return JointsJacobian(X, rot, d_pose, d_betas, d_r6, GR, Gt, J, q, aa)


def joints_vjp(fast: FastBody, jj: JointsJacobian, grad: Tensor, grad_rot6d: Tensor | None = None) -> Tensor:
    """Reverse mode of the joints-only forward: ``dL/dpose [B, 24, 3]`` given ``grad = dL/djoints
    [B, 24 + M, 3]`` (and optionally ``grad_rot6d = dL/drot6d [B, 23, 6]`` of the body joints'
    local rotations), from the forward's state ``jj`` (any ``want_*``).

    Same derivatives as ``d_pose`` (module docstring) contracted with ``grad`` without forming the
    Jacobian: per joint ``i`` the torque ``tau_i = sum_k [i < k] (X_k - X_i) x grad_k`` (+ the
    vertex joints' ``(Q_mi - a_mi X_i) x grad_m``), then ``dL/dtheta_i = (G_i J_r)^T tau_i``.
    (``dL/dtransl`` is ``grad.sum(1)``.)
    """
    st = _structure(fast)
    B = grad.shape[0]
    nj = NUM_SMPL_JOINTS
    Gt, GR = jj.Gt, jj.GR
    gt = grad[:, :nj]
    Fs = torch.einsum("ki,bkx->bix", st.anc_strict, gt)  # [B, 24] force of the strict subtree
    Ms = torch.einsum("ki,bkx->bix", st.anc_strict, torch.linalg.cross(Gt, gt, dim=-1))
    M = grad.shape[1] - nj
    if M:
        gm = grad[:, nj:]  # [B, M, 3]
        Ms = Ms + torch.einsum("mji,bmjx->bix", st.vj_C, torch.linalg.cross(jj.q, gm[:, :, None, :].expand_as(jj.q), dim=-1))
        Fs = Fs + torch.einsum("mi,bmx->bix", st.vj_a, gm)
    tau = Ms - torch.linalg.cross(Gt, Fs, dim=-1)
    Jr = so3_right_jacobian(jj.pose)
    out = ((GR @ Jr).transpose(-1, -2) @ tau[..., None])[..., 0]  # [B, 24, 3]
    if M and fast.vj_posedirs is not None:
        # pose correctives of the vertex joints: d v_m / d theta_ic += T_m du_m/dtheta_ic
        dR = jj.rot[:, 1:, None] @ skew(Jr[:, 1:].transpose(-1, -2))  # [B, 23, 3(c), 3, 3]
        PD = fast.vj_posedirs.view(nj - 1, 9, M, 3)
        T = torch.einsum("mj,bjxy->bmxy", fast.vj_weights, GR)
        gu = torch.einsum("bmxy,bmx->bmy", T, grad[:, nj:])  # T^T grad [B, M, 3]
        out = out + torch.cat([torch.zeros_like(out[:, :1]),
                               torch.einsum("bicq,iqmy,bmy->bic", dR.reshape(B, nj - 1, 3, 9), PD, gu)], 1)
    if grad_rot6d is not None:
        R = jj.rot[:, 1:]
        Jb = Jr[:, 1:]
        g6 = grad_rot6d.reshape(B, nj - 1, 3, 2)  # rows r, columns c of R
        # d(R e_c) = -R [e_c]x J_r d  =>  dL/dtheta = -J_r^T [e_c]x^T R^T g_c = J_r^T (e_c x (R^T g_c))
        acc = torch.zeros_like(out[:, 1:])
        for c in (0, 1):
            h = (R.transpose(-1, -2) @ g6[..., c, None])[..., 0]  # [B, 23, 3]
            # e_0 x h = (0, -h_z, h_y), e_1 x h = (h_z, 0, -h_x) (no unit-vector tensor: nothing
            # is copied from the host inside a CUDA-graph capture)
            z = torch.zeros_like(h[..., 0])
            if c == 0:
                acc = acc + torch.stack([z, -h[..., 2], h[..., 1]], -1)
            else:
                acc = acc + torch.stack([h[..., 2], z, -h[..., 0]], -1)
        out = out + torch.cat([torch.zeros_like(out[:, :1]), (Jb.transpose(-1, -2) @ acc[..., None])[..., 0]], 1)
    return out


_INDEX: dict[tuple[tuple[int, ...], str], Tensor] = {}


def _index(sel: tuple[int, ...], device: torch.device) -> Tensor:
    """``sel`` as a long tensor on ``device``, made once (a host-to-device copy inside a CUDA graph
    capture would break the capture)."""
    key = (sel, str(device))
    if key not in _INDEX:
        _INDEX[key] = torch.tensor(sel, dtype=torch.long, device=device)
    return _INDEX[key]


__all__ = ["JointsJacobian", "joints_vjp", "joints_with_jacobian", "skew", "so3_right_jacobian"]
