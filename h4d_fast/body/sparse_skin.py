"""Sparse linear blend skinning and its analytic pose gradient (the fit's collision stage).

A body model's skinning weights are sparse (the embedded default model: 1.6 non-zero weights per
vertex on average, SMPL: at most 4), so the posed mesh is a sum over the ``E`` non-zero entries
``e = (vertex n_e, joint j_e, weight w_e)`` instead of over all ``N x 24`` pairs::

    v_n = sum_{e: n_e = n} w_e q_e,   q_e = G_{j_e} (u_{n_e} - J_{j_e}) + X_{j_e}

(``u`` the shaped rest vertices, ``J`` the rest joints, ``G, X`` the world rotations and posed
joints of the forward kinematics). The shaped rest mesh depends on the betas only, so it is
computed once per person, not per frame.

The gradient of a function of the vertices, given ``g_n = dL/dv_n``, with respect to the pose
(axis-angle ``theta_i``, see :mod:`h4d_fast.body.jacobian`) follows from ``dq_e = w_i x (q_e -
X_i)`` for every joint ``i`` that is ``j_e`` or one of its ancestors (``w_i = G_i J_r(theta_i)
d theta_i``)::

    dL/dtheta_i = (G_i J_r)^T sum_{j: i <= j} (M_j - X_i x F_j),
    F_j = sum_{e: j_e = j} w_e g_{n_e},   M_j = sum_{e: j_e = j} w_e q_e x g_{n_e}

and ``dL/dtransl = sum_n g_n``. Models with pose correctives (``posedirs``) are not handled here
(their callers differentiate the full mesh with autograd).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..constants import NUM_SMPL_JOINTS
from .fast import FastBody
from .jacobian import _structure, so3_right_jacobian


class SparseSkin:
    """The non-zero skinning entries of one :class:`FastBody`, grouped by joint (on its device and dtype).

    Each joint's entries are evaluated together (a ``[B, E_j, 3] x [B, 3, 3]`` product), so the
    work and the memory are those of the ``E`` entries, never ``B x E x 3 x 3`` gathers.
    """

    def __init__(self, fast: FastBody, use_numba: bool = True):
        self.fast = fast
        self.use_numba = use_numba
        W = fast.lbs_weights  # [N, 24]
        self.num_vertices = int(W.shape[0])
        self.groups: list[tuple[int, Tensor, Tensor]] = []  # (joint, vertex ids [E_j], weights [E_j])
        for j in range(W.shape[1]):
            n = (W[:, j] != 0).nonzero()[:, 0]
            if n.numel():
                self.groups.append((j, n, W[n, j]))
        self.device, self.dtype = W.device, W.dtype
        self._csr = None  # numba CSR arrays (CPU), on first use

    def _numba(self):
        """The CPU kernels and CSR arrays, or None (not on the CPU, or numba unavailable)."""
        if self.device.type != "cpu" or not self.use_numba:
            return None
        if self._csr is None:
            try:
                from . import _skin_numba as nb
            except Exception:  # noqa: BLE001 - numba missing or broken: the torch code
                self._csr = False
                return None
            v = torch.cat([n for _, n, _ in self.groups]).numpy()
            j = torch.cat([torch.full_like(n, jj) for jj, n, _ in self.groups]).numpy()
            w = torch.cat([wt for _, _, wt in self.groups]).numpy()
            self._csr = (nb, *nb.csr(v, j, w, self.num_vertices))
        return self._csr or None

    @staticmethod
    def _affine(GR: Tensor, Gt: Tensor, J: Tensor) -> Tensor:
        """``[B, 24, 12]``: per joint the rotation and ``X_j - R_j J_j``."""
        t = Gt - (GR @ J[..., None])[..., 0]
        return torch.cat([GR.reshape(*GR.shape[:2], 9), t], -1).contiguous()

    def rest(self, betas: Tensor) -> Tensor:
        """Shaped rest meshes ``[P, N, 3]`` of ``betas [P, K]`` (no pose correctives)."""
        fast = self.fast
        betas = fast._betas(betas, betas.shape[0])
        return fast.v_template + torch.einsum("nck,pk->pnc", fast.shapedirs, betas)

    @staticmethod
    def _q(GR: Tensor, Gt: Tensor, J: Tensor, ub: Tensor, j: int, n: Tensor) -> Tensor:
        """``q`` ``[B, E_j, 3]``: vertices ``n`` of the rest meshes ``ub [B, N, 3]`` carried rigidly by joint ``j``."""
        rel = ub.index_select(1, n) - J[:, j, None, :]
        return rel @ GR[:, j].transpose(-1, -2) + Gt[:, j, None, :]

    def vertices(self, GR: Tensor, Gt: Tensor, J: Tensor, u: Tensor, person: Tensor, transl: Tensor | None = None) -> Tensor:
        """Posed meshes ``[B, N, 3]``.

        Args:
            GR, Gt, J: kinematics of ``B`` bodies (:meth:`FastBody.kinematics`, rest joints).
            u: ``[P, N, 3]`` shaped rest meshes (:meth:`rest`); person ``[B]`` long: each body's row of ``u``.
            transl: ``[B, 3]`` or None.
        """
        B = GR.shape[0]
        nb = self._numba()
        if nb is not None:
            kern, ptr, joint, weight = nb
            out = u.new_empty(B, self.num_vertices, 3)
            tr = transl if transl is not None else u.new_zeros(B, 3)
            kern.skin(self._affine(GR, Gt, J).numpy(), u.contiguous().numpy(), person.numpy(), ptr, joint,
                      weight, tr.contiguous().numpy(), out.numpy())
            return out
        ub = u.index_select(0, person)
        out = u.new_zeros(B, self.num_vertices, 3)
        for j, n, w in self.groups:
            out.index_add_(1, n, self._q(GR, Gt, J, ub, j, n) * w[:, None])
        if transl is not None:
            out = out + transl[:, None, :]
        return out

    def pose_gradient(self, grad: Tensor, pose: Tensor, GR: Tensor, Gt: Tensor, J: Tensor, u: Tensor, person: Tensor) -> tuple[Tensor, Tensor]:
        """Gradient of ``L`` with respect to pose and translation, given ``grad = dL/dv [B, N, 3]``
        (module docstring).

        Args:
            pose: ``[B, 72]`` axis-angle (for the right Jacobians); the rest as :meth:`vertices`.
        Returns:
            ``d_pose [B, 24, 3]`` and ``d_transl [B, 3]``.
        """
        B = GR.shape[0]
        nj = NUM_SMPL_JOINTS
        nb = self._numba()
        if nb is not None:
            kern, ptr, joint, weight = nb
            Fjt = grad.new_zeros(B, nj, 3)
            Mjt = grad.new_zeros(B, nj, 3)
            kern.forces(self._affine(GR, Gt, J).to(grad.dtype).numpy(), u.to(grad.dtype).contiguous().numpy(), person.numpy(),
                        ptr, joint, weight.astype(grad.numpy().dtype), grad.contiguous().numpy(), Fjt.numpy(), Mjt.numpy())
        else:
            ub = u.index_select(0, person)
            Fj = [grad.new_zeros(B, 3)] * nj
            Mj = [grad.new_zeros(B, 3)] * nj
            for j, n, w in self.groups:
                ge = grad.index_select(1, n) * w[:, None]  # [B, E_j, 3]
                Fj[j] = ge.sum(1)
                Mj[j] = torch.linalg.cross(self._q(GR, Gt, J, ub, j, n), ge, dim=-1).sum(1)
            Fjt, Mjt = torch.stack(Fj, 1), torch.stack(Mj, 1)
        anc = _structure(self.fast).anc_incl.to(grad.dtype)  # [24(j), 24(i)]
        Fs = torch.einsum("ji,bjx->bix", anc, Fjt)  # subtree sums
        Ms = torch.einsum("ji,bjx->bix", anc, Mjt)
        tau = Ms - torch.linalg.cross(Gt, Fs, dim=-1)  # [B, 24, 3] torque about each joint
        Om = GR @ so3_right_jacobian(pose.reshape(B, nj, 3))  # [B, 24, 3, 3]
        d_pose = (Om.transpose(-1, -2) @ tau[..., None])[..., 0]
        return d_pose, grad.sum(1)


def sparse_skin(fast: FastBody) -> SparseSkin:
    """The :class:`SparseSkin` of ``fast`` (cached on it)."""
    sk = getattr(fast, "_sparse_skin", None)
    if sk is None or sk.device != fast.device or sk.dtype != fast.dtype:
        sk = SparseSkin(fast)
        fast._sparse_skin = sk
    return sk


__all__ = ["SparseSkin", "sparse_skin"]
