"""Fast SMPL-layout evaluation for fitting: a joints-only forward and a full-mesh forward.

The fitting losses that use only joints (keypoints, limb lengths, temporal smoothness) never
need the 13,380 (or 6,890) skinned vertices. :class:`FastBody` precomputes what makes the joints
cheap and evaluates them without touching the mesh:

* rest joints are linear in the shape: ``J(beta) = J_regressor @ v_template + (J_regressor @
  shapedirs) beta`` -> ``J_template [24, 3]`` + ``J_shapedirs [24, 3, K]`` (SMPL regresses its
  joints from the *shaped, unposed* vertices, so pose correctives never move the tree joints);
* forward kinematics level by level of the kinematic tree (9 batched steps for SMPL instead of
  24 per-joint ones);
* the vertex joints (nose, eyes, ears, ... = smplx's extra joints 24..44) are skinned alone:
  ``v_i = sum_j W_ij (G_j (v_shaped_i + posedirs_i(pose) - J_j)) + transl`` with only their rows of
  ``v_template``, ``shapedirs``, ``posedirs`` and ``lbs_weights``.

The result equals ``smplx``'s ``joints45`` (tested to 1e-5 m with zero and non-zero posedirs).

``FastBody.vertices`` is the full linear-blend-skinning forward (same equations over all
vertices), skipping the ``[B, 207] x [207, 3N]`` pose-corrective product when the model's
posedirs are all zero (the embedded default model).

Rotation conventions are smplx's: axis-angle per joint, Rodrigues, parents from the model.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..constants import NUM_SMPL_JOINTS
from ..rotations import axis_angle_to_matrix, matrix_to_axis_angle  # noqa: F401 (re-exported; their home)
from .model import VERTEX_ID_NAMES, BodyModel

FACE_VERTEX_JOINTS: tuple[str, ...] = VERTEX_ID_NAMES[:5]
"""nose, reye, leye, rear, lear: SMPL-45 slots 24..28, the only vertex joints COCO-17 uses."""


def joint_transforms(GR: Tensor, Gt: Tensor, J: Tensor) -> Tensor:
    """LBS blend matrices ``[B, 24, 12]``: per joint, the affine map rest -> posed as its rotation
    ``G_R`` (9, row-major) and translation ``G_t - G_R J`` (3); ``GR [B, 24, 3, 3]``, ``Gt, J [B, 24, 3]``."""
    B = GR.shape[0]
    return torch.cat([GR.reshape(B, NUM_SMPL_JOINTS, 9), Gt - (GR @ J[..., None])[..., 0]], -1)


def skin(v_rest: Tensor, weights: Tensor, GR: Tensor, Gt: Tensor, J: Tensor) -> Tensor:
    """Linear blend skinning: rest points ``v_rest [B, M, 3]`` (or ``[M, 3]``, shared), weights
    ``[M, 24]`` -> ``[B, M, 3]`` = ``sum_j W_mj (G_R_j (v - J_j) + G_t_j)``."""
    T = weights @ joint_transforms(GR, Gt, J)  # [B, M, 12]
    v_rest = v_rest.expand(T.shape[0], -1, -1) if v_rest.dim() == 2 else v_rest
    return torch.einsum("bmij,bmj->bmi", T[..., :9].unflatten(-1, (3, 3)), v_rest) + T[..., 9:]


def rot6d(R: Tensor) -> Tensor:
    """``[..., 3, 3]`` -> ``[..., 6]``: the first two columns (Zhou et al. 2019), as mmhuman3d."""
    return R[..., :, :2].reshape(*R.shape[:-2], 6)


def _tree_levels(parents: Sequence[int]) -> list[tuple[list[int], list[int]]]:
    """Joints grouped by depth (root excluded): ``[(joints, their parents), ...]``."""
    depth = [0] * len(parents)
    for j, p in enumerate(parents):
        depth[j] = 0 if p < 0 else depth[p] + 1
    levels = []
    for d in range(1, max(depth) + 1):
        js = [j for j in range(len(parents)) if depth[j] == d]
        levels.append((js, [parents[j] for j in js]))
    return levels


class FastBody:
    """Precomputed evaluation of one :class:`BodyModel` (module docstring).

    Args:
        body: the model (its buffers are read once; device and dtype are taken from it).
        vertex_joints: names of the vertex joints to evaluate in :meth:`joints`, in output order
            after the 24 tree joints (default: the five face points, i.e. ``joints45[:, :29]``).

    Shapes: ``B`` = batch, ``K`` = ``num_betas``, ``M`` = ``len(vertex_joints)``, ``N`` vertices.
    """

    def __init__(self, body: BodyModel, vertex_joints: Sequence[str] = FACE_VERTEX_JOINTS):
        s = body.smpl
        self.body = body
        self.num_betas = int(body.num_betas)
        self.parents: list[int] = [int(p) for p in body.parents.tolist()]
        self.parents[0] = -1
        self.levels = _tree_levels(self.parents)
        self.vertex_joint_names = tuple(vertex_joints)
        with torch.no_grad():
            K = self.num_betas
            vt = s.v_template  # [N, 3]
            sd = s.shapedirs[:, :, :K]  # [N, 3, K]
            Jr = s.J_regressor.to_dense() if s.J_regressor.is_sparse else s.J_regressor  # [24, N]
            self.v_template = vt
            self.shapedirs = sd
            self.lbs_weights = s.lbs_weights  # [N, 24]
            pd = s.posedirs  # [207, 3N]
            self.has_posedirs = bool(pd.abs().max() > 0)
            self.posedirs = pd if self.has_posedirs else None
            self.J_template = Jr @ vt  # [24, 3]
            self.J_shapedirs = torch.einsum("jn,nck->jck", Jr, sd)  # [24, 3, K]
            all_ids = [int(body.vertex_ids[n]) for n in VERTEX_ID_NAMES]
            self.extra_ids = torch.tensor(all_ids, dtype=torch.long, device=vt.device)  # 21 -> joints45
            ids = torch.tensor([int(body.vertex_ids[n]) for n in self.vertex_joint_names], dtype=torch.long, device=vt.device)
            self.vj_ids = ids
            dev = vt.device
            self.parent_index = torch.tensor(self.parents[1:], dtype=torch.long, device=dev)  # [23]
            self.level_index = [torch.tensor(js, dtype=torch.long, device=dev) for js, _ in self.levels]
            self.vj_template = vt[ids]  # [M, 3]
            self.vj_shapedirs = sd[ids]  # [M, 3, K]
            self.vj_weights = s.lbs_weights[ids]  # [M, 24]
            if self.has_posedirs:
                P = pd.shape[0]
                self.vj_posedirs = pd.view(P, -1, 3)[:, ids, :].reshape(P, -1)  # [207, 3M]
            else:
                self.vj_posedirs = None
        self.faces = body.faces
        self._sparse_weights: tuple[Tensor, Tensor] | None = None  # (joint ids, weights) [N, k], on first use

    # ------------------------------------------------------------------ pieces
    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "FastBody":
        """Move the precomputed tensors (in place; the wrapped BodyModel is not moved)."""
        def mv(v: Tensor) -> Tensor:
            return v.to(device=device, dtype=dtype if (v.is_floating_point() and dtype is not None) else v.dtype)

        for k, v in list(vars(self).items()):
            if isinstance(v, Tensor):
                setattr(self, k, mv(v))
            elif isinstance(v, list) and v and all(isinstance(x, Tensor) for x in v):
                setattr(self, k, [mv(x) for x in v])
        self._sparse_weights = None  # rebuilt on the new device on first use
        return self

    @property
    def device(self) -> torch.device:
        return self.v_template.device

    @property
    def dtype(self) -> torch.dtype:
        return self.v_template.dtype

    def _betas(self, betas: Tensor, batch: int) -> Tensor:
        K = self.num_betas
        if betas.shape[-1] > K:
            betas = betas[..., :K]
        elif betas.shape[-1] < K:
            betas = torch.cat([betas, betas.new_zeros(*betas.shape[:-1], K - betas.shape[-1])], -1)
        if betas.shape[0] == 1 and batch > 1:
            betas = betas.expand(batch, -1)
        return betas

    def rest_joints(self, betas: Tensor) -> Tensor:
        """``betas [B, K]`` -> rest-pose tree joints ``[B, 24, 3]`` (linear in ``betas``)."""
        betas = self._betas(betas, betas.shape[0])
        return self.J_template + torch.einsum("jck,bk->bjc", self.J_shapedirs, betas)

    def rotations(self, global_orient: Tensor, body_pose: Tensor) -> Tensor:
        """``[B, 3]``, ``[B, 69]`` -> local joint rotations ``[B, 24, 3, 3]``."""
        pose = torch.cat([global_orient, body_pose], -1).view(-1, NUM_SMPL_JOINTS, 3)
        return axis_angle_to_matrix(pose)

    def kinematics(self, rot: Tensor, J: Tensor) -> tuple[Tensor, Tensor]:
        """Forward kinematics: local rotations ``[B, 24, 3, 3]`` and rest joints ``[B, 24, 3]``
        -> world rotations ``G_R [B, 24, 3, 3]`` and posed joints ``G_t [B, 24, 3]`` (no transl)."""
        GR: list[Tensor | None] = [None] * NUM_SMPL_JOINTS
        Gt: list[Tensor | None] = [None] * NUM_SMPL_JOINTS
        GR[0], Gt[0] = rot[:, 0], J[:, 0]
        rel = J[:, 1:] - J.index_select(1, self.parent_index)  # [B, 23, 3] bone vectors
        for (js, ps), idx in zip(self.levels, self.level_index):
            PR = torch.stack([GR[p] for p in ps], 1)  # [B, L, 3, 3]
            Pt = torch.stack([Gt[p] for p in ps], 1)  # [B, L, 3]
            R_new = PR @ rot.index_select(1, idx)
            t_new = Pt + (PR @ rel.index_select(1, idx - 1)[..., None])[..., 0]
            for i, j in enumerate(js):
                GR[j], Gt[j] = R_new[:, i], t_new[:, i]
        return torch.stack(GR, 1), torch.stack(Gt, 1)

    def skin_vertices(self, batch: Tensor, vertex: Tensor, GR: Tensor, Gt: Tensor, J: Tensor, betas: Tensor) -> Tensor:
        """Posed positions ``[R, 3]`` (no transl) of single vertices: row ``r`` is vertex ``vertex[r]``
        of batch item ``batch[r]`` (kinematics ``GR, Gt, J`` of ``[B, 24, ...]``, ``betas [B, K]``).

        Only each vertex's non-zero skinning weights are read, so the cost grows with ``R``, not with
        ``B * N``. No pose correctives (callers with ``posedirs`` use :meth:`vertices`).
        """
        if self._sparse_weights is None:
            k = max(1, int((self.lbs_weights != 0).sum(1).max()))
            val, jid = self.lbs_weights.topk(k, dim=1)  # [N, k]
            self._sparse_weights = (jid, val)
        jid, val = self._sparse_weights
        A = joint_transforms(GR, Gt, J).reshape(-1, 12)  # [B * 24, 12]
        j = jid.index_select(0, vertex)  # [R, k]
        Ar = A.index_select(0, (batch[:, None] * NUM_SMPL_JOINTS + j).reshape(-1)).view(vertex.numel(), -1, 12)
        T = (val.index_select(0, vertex)[..., None] * Ar).sum(1)  # [R, 12]
        v = self.v_template.index_select(0, vertex) + torch.einsum(
            "rck,rk->rc", self.shapedirs.index_select(0, vertex), betas.index_select(0, batch))
        return torch.einsum("rij,rj->ri", T[:, :9].unflatten(-1, (3, 3)), v) + T[:, 9:]

    # ------------------------------------------------------------------ forwards
    def joints(
        self,
        global_orient: Tensor,
        body_pose: Tensor,
        betas: Tensor,
        transl: Tensor | None = None,
        rot: Tensor | None = None,
    ) -> Tensor:
        """Joints only: ``[B, 24 + M, 3]`` (24 tree joints, then the selected vertex joints).

        Args:
            global_orient: ``[B, 3]``; body_pose ``[B, 69]``; betas ``[B, K]`` (or ``[1, K]``);
            transl: ``[B, 3]`` or None.
            rot: the local rotations ``[B, 24, 3, 3]`` of ``global_orient, body_pose`` when the
                caller already has them (then those two arguments are not read).
        """
        B = rot.shape[0] if rot is not None else global_orient.shape[0]
        betas = self._betas(betas, B)
        if rot is None:
            rot = self.rotations(global_orient, body_pose)  # [B, 24, 3, 3]
        J = self.rest_joints(betas)  # [B, 24, 3]
        GR, Gt = self.kinematics(rot, J)
        out = Gt
        if self.vj_ids.numel():
            v = self.vj_template + torch.einsum("mck,bk->bmc", self.vj_shapedirs, betas)  # [B, M, 3]
            if self.vj_posedirs is not None:
                feat = (rot[:, 1:] - torch.eye(3, dtype=rot.dtype, device=rot.device)).reshape(B, -1)  # [B, 207]
                v = v + (feat @ self.vj_posedirs).view(B, -1, 3)
            out = torch.cat([Gt, skin(v, self.vj_weights, GR, Gt, J)], 1)
        if transl is not None:
            out = out + transl[:, None, :]
        return out

    def vertices(
        self,
        global_orient: Tensor,
        body_pose: Tensor,
        betas: Tensor,
        transl: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Full mesh: ``vertices [B, N, 3]`` and smplx's ``joints45 [B, 45, 3]``."""
        B = global_orient.shape[0]
        betas = self._betas(betas, B)
        rot = self.rotations(global_orient, body_pose)
        J = self.rest_joints(betas)
        GR, Gt = self.kinematics(rot, J)
        v = self.v_template + torch.einsum("nck,bk->bnc", self.shapedirs, betas)  # [B, N, 3]
        if self.posedirs is not None:
            feat = (rot[:, 1:] - torch.eye(3, dtype=rot.dtype, device=rot.device)).reshape(B, -1)
            v = v + (feat @ self.posedirs).view(B, -1, 3)
        verts = skin(v, self.lbs_weights, GR, Gt, J)
        joints = torch.cat([Gt, verts.index_select(1, self.extra_ids)], 1)
        if transl is not None:
            verts = verts + transl[:, None, :]
            joints = joints + transl[:, None, :]
        return verts, joints


def recompute_meshes(body: Any, params: Mapping[str, np.ndarray], device: str = "cpu", chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """``vertices [F, P, N, 3]`` and ``joints45 [F, P, 45, 3]`` (float32) of batched parameters."""
    fast = FastBody(body).to(device=device)
    go = torch.as_tensor(np.asarray(params["global_orient"]), dtype=fast.dtype, device=device)
    F, P = go.shape[:2]
    N = F * P
    go = go.reshape(N, 3)
    bp = torch.as_tensor(np.asarray(params["body_pose"]), dtype=fast.dtype, device=device).reshape(N, -1)
    be = torch.as_tensor(np.asarray(params["betas"]), dtype=fast.dtype, device=device)
    be = (be[None].expand(F, P, -1) if be.dim() == 2 else be).reshape(N, -1)
    tr = torch.as_tensor(np.asarray(params["transl"]), dtype=fast.dtype, device=device).reshape(N, 3)
    vs, js = [], []
    with torch.no_grad():
        for i in range(0, N, chunk):
            v, j = fast.vertices(go[i : i + chunk], bp[i : i + chunk], be[i : i + chunk], tr[i : i + chunk])
            vs.append(v.float().cpu().numpy())
            js.append(j.float().cpu().numpy())
    nv = fast.v_template.shape[0]
    V = np.concatenate(vs) if vs else np.zeros((0, nv, 3), np.float32)
    J = np.concatenate(js) if js else np.zeros((0, 45, 3), np.float32)
    return V.reshape(F, P, nv, 3), J.reshape(F, P, -1, 3)


def with_meshes(smpl: dict[str, Any], body: Any, device: str = "cpu") -> dict[str, Any]:
    """``smpl`` (:func:`h4d_fast.io.smpl_layout.read_smpl_sequence`'s batched results) with
    ``vertices`` and ``joints`` recomputed from its parameters (frame betas as stored) where the
    files lacked them, posed with ``body``."""
    if "vertices" not in smpl or "joints" not in smpl:
        smpl["vertices"], smpl["joints"] = recompute_meshes(body, smpl, device=device)
    return smpl


__all__ = ["FACE_VERTEX_JOINTS", "FastBody", "axis_angle_to_matrix", "joint_transforms", "matrix_to_axis_angle", "recompute_meshes", "rot6d",
           "skin", "with_meshes"]
