"""The body model used by the fitting stages: a thin wrapper over ``smplx.SMPL``.

Real SMPL files and the embedded default model go through the same ``smplx`` code (the default
is an ordinary SMPL-layout pickle), so every stage sees one interface:

    model = load_body_model()                    # embedded default (built on first use)
    model = load_body_model("models/smpl", gender="male")   # a user's own SMPL files
    verts, joints45 = model.forward(global_orient, body_pose, betas, transl)
    kp = model.coco17(joints45)                  # (B, 17, 3) COCO order

``joints45`` is smplx's SMPL output: 24 kinematic-tree joints, then 21 vertex joints (nose,
reye, leye, rear, lear, LBigToe, LSmallToe, LHeel, RBigToe, RSmallToe, RHeel, then the five
left and five right fingertips).
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping

import numpy as np
import torch

from ..constants import COCO_TO_SMPL45, NUM_SMPL_JOINTS
from ..errors import InputError
from .smpl_file import SMPL_KEYS, read_smpl_file, resolve_model_file

log = logging.getLogger(__name__)

NUM_SMPL45 = 45
SMPL_NUM_VERTICES = 6890
VERTEX_ID_NAMES: tuple[str, ...] = (
    "nose", "reye", "leye", "rear", "lear",
    "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
    "lthumb", "lindex", "lmiddle", "lring", "lpinky",
    "rthumb", "rindex", "rmiddle", "rring", "rpinky",
)  # fmt: skip
"""The vertex ids smplx needs for its 45-joint SMPL output (joints 24..44, in this order)."""


def smpl45_to_coco17(joints45: torch.Tensor) -> torch.Tensor:
    """COCO-17 keypoints from smplx's 45 SMPL joints (:data:`h4d_fast.constants.COCO_TO_SMPL45`).

    Args:
        joints45: (B, 45, 3) (any leading dims ``(..., 45, D)``).
    Returns:
        (B, 17, 3) in COCO order.
    """
    if joints45.shape[-2] < NUM_SMPL45:
        raise ValueError(f"expected (..., 45, D) SMPL joints, got {tuple(joints45.shape)}")
    idx = torch.as_tensor(COCO_TO_SMPL45, dtype=torch.long, device=joints45.device)
    return joints45.index_select(-2, idx)


@dataclass(frozen=True)
class JointMapping:
    """How one body model's joints give COCO-17 keypoints.

    Body keypoints are SMPL tree joints (shoulders 16/17, elbows 18/19, wrists 20/21, hips 1/2,
    knees 4/5, ankles 7/8); nose, eyes and ears are the vertex joints at SMPL-45 slots 24..28,
    i.e. the mesh vertices ``vertex_ids['nose'|'reye'|'leye'|'rear'|'lear']``.
    """

    vertex_ids: Mapping[str, int]
    coco_from_smpl45: tuple[int, ...] = COCO_TO_SMPL45

    def coco17(self, joints45: torch.Tensor) -> torch.Tensor:
        """(B, 45, 3) smplx SMPL joints -> (B, 17, 3) COCO keypoints."""
        idx = torch.as_tensor(self.coco_from_smpl45, dtype=torch.long, device=joints45.device)
        return joints45.index_select(-2, idx)

    def coco17_from_vertices(self, vertices: torch.Tensor, joints24: torch.Tensor) -> torch.Tensor:
        """COCO keypoints from vertices (B, N, 3) and tree joints (B, 24, 3) -> (B, 17, 3)."""
        face = torch.as_tensor(
            [self.vertex_ids[k] for k in ("nose", "reye", "leye", "rear", "lear")],
            dtype=torch.long,
            device=vertices.device,
        )
        j = torch.cat([joints24[..., :NUM_SMPL_JOINTS, :], vertices.index_select(-2, face)], dim=-2)
        # Slots 24..28 of the 45 joints are these five vertices, so the same indices apply.
        idx = torch.as_tensor(self.coco_from_smpl45, dtype=torch.long, device=j.device)
        return j.index_select(-2, idx)


@dataclass
class BodyModel:
    """A SMPL-layout body model evaluated by ``smplx.SMPL``.

    Attributes:
        smpl: the underlying ``smplx.SMPL`` module (created without its own parameters).
        path: the model file it was read from.
        gender: ``"neutral"``, ``"male"`` or ``"female"`` (the default model is neutral only).
        joint_map: COCO-17 mapping of this model's joints.
        info: provenance dict stored in the file (``h4d_info``; empty for user SMPL files).
    """

    smpl: Any
    path: Path
    gender: str
    joint_map: JointMapping
    info: dict[str, Any] = field(default_factory=dict)

    # ---- static facts -------------------------------------------------------------------
    @property
    def faces(self) -> torch.Tensor:
        """(F, 3) int64 triangle vertex indices."""
        return self.smpl.faces_tensor

    @property
    def num_vertices(self) -> int:
        return int(self.smpl.v_template.shape[0])

    @property
    def num_betas(self) -> int:
        return int(self.smpl.num_betas)

    @property
    def parents(self) -> torch.Tensor:
        """(24,) int64 parent of each SMPL joint (-1 for the pelvis)."""
        return self.smpl.parents

    @property
    def vertex_ids(self) -> Mapping[str, int]:
        return self.joint_map.vertex_ids

    @property
    def device(self) -> torch.device:
        return self.smpl.v_template.device

    @property
    def dtype(self) -> torch.dtype:
        return self.smpl.v_template.dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "BodyModel":
        """Move the model's buffers (in place); returns ``self``."""
        self.smpl.to(device=device, dtype=dtype)
        return self

    # ---- evaluation ---------------------------------------------------------------------
    def _betas(self, betas: torch.Tensor, batch: int) -> torch.Tensor:
        if betas.ndim != 2:
            raise ValueError(f"betas must be (B, K), got {tuple(betas.shape)}")
        k = self.num_betas
        if betas.shape[1] > k:
            betas = betas[:, :k]
        elif betas.shape[1] < k:
            betas = torch.cat([betas, betas.new_zeros(betas.shape[0], k - betas.shape[1])], dim=1)
        if betas.shape[0] == 1 and batch > 1:
            betas = betas.expand(batch, -1)
        return betas

    def forward(
        self,
        global_orient: torch.Tensor,
        body_pose: torch.Tensor,
        betas: torch.Tensor,
        transl: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posed mesh and joints (differentiable).

        Args:
            global_orient: (B, 3) root axis-angle.
            body_pose: (B, 69) axis-angles of joints 1..23.
            betas: (B, K) shape coefficients (first ``num_betas`` used, missing ones are 0;
                B may be 1 to share one shape).
            transl: (B, 3) translation, or None for zero.
        Returns:
            vertices (B, N, 3) and joints45 (B, 45, 3) (24 tree joints + 21 vertex joints).
        """
        b = global_orient.shape[0]
        if global_orient.shape != (b, 3) or body_pose.shape != (b, 3 * (NUM_SMPL_JOINTS - 1)):
            raise ValueError(
                f"expected global_orient (B, 3) and body_pose (B, 69), got "
                f"{tuple(global_orient.shape)} and {tuple(body_pose.shape)}"
            )
        if transl is None:
            transl = global_orient.new_zeros(b, 3)
        out = self.smpl(
            global_orient=global_orient,
            body_pose=body_pose,
            betas=self._betas(betas, b),
            transl=transl,
            return_verts=True,
        )
        return out.vertices, out.joints

    __call__ = forward

    def coco17(self, joints45: torch.Tensor) -> torch.Tensor:
        """(B, 45, 3) joints from :meth:`forward` -> (B, 17, 3) COCO keypoints."""
        return self.joint_map.coco17(joints45)

    def shaped_vertices(self, betas: torch.Tensor) -> torch.Tensor:
        """Rest-pose (zero pose) vertices for shapes ``betas`` (B, K) -> (B, N, 3)."""
        from smplx.lbs import blend_shapes

        betas = self._betas(betas, betas.shape[0])
        return self.smpl.v_template[None] + blend_shapes(betas, self.smpl.shapedirs)

    def rest_joints(self, betas: torch.Tensor) -> torch.Tensor:
        """Rest-pose SMPL tree joints for shapes ``betas`` (B, K) -> (B, 24, 3)."""
        from smplx.lbs import vertices2joints

        return vertices2joints(self.smpl.J_regressor, self.shaped_vertices(betas))


def _vertex_ids_for(data: Mapping[str, Any], path: Path, override: Mapping[str, int] | None) -> dict[str, int]:
    n = int(np.asarray(data["v_template"]).shape[0])
    if override is not None:
        vid = dict(override)
    elif isinstance(data.get("vertex_ids"), dict):
        vid = {str(k): int(v) for k, v in data["vertex_ids"].items()}
    elif n == SMPL_NUM_VERTICES:
        from smplx.vertex_ids import vertex_ids as smplx_vertex_ids

        vid = dict(smplx_vertex_ids["smplh"])
    else:
        raise InputError(
            path,
            f"the mesh has {n} vertices (not SMPL's {SMPL_NUM_VERTICES}): store a 'vertex_ids' dict "
            f"({', '.join(VERTEX_ID_NAMES[:5])}, feet and fingertips) in the file or pass vertex_ids",
            field="vertex_ids",
        )
    missing = [k for k in VERTEX_ID_NAMES if k not in vid]
    if missing:
        raise InputError(path, f"missing names {missing}", field="vertex_ids")
    bad = [k for k in VERTEX_ID_NAMES if not 0 <= int(vid[k]) < n]
    if bad:
        raise InputError(path, f"indices out of range [0, {n}) for {bad}", field="vertex_ids")
    return {k: int(vid[k]) for k in VERTEX_ID_NAMES}


def build_smplx_model(
    data: Mapping[str, Any],
    vertex_ids: Mapping[str, int],
    gender: str = "neutral",
    dtype: torch.dtype = torch.float32,
    model_path: str | Path = "",
) -> Any:
    """``smplx.SMPL`` from a SMPL-layout dict (passed as its ``data_struct``), no own parameters."""
    import smplx

    struct = SimpleNamespace(**{k: data[k] for k in data})
    with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a note about 10 betas
        return smplx.SMPL(
            model_path=str(model_path),
            data_struct=struct,
            create_betas=False,
            create_global_orient=False,
            create_body_pose=False,
            create_transl=False,
            gender=gender,
            dtype=dtype,
            vertex_ids=dict(vertex_ids),
        )


def load_body_model(
    path: str | Path | None = None,
    gender: str = "neutral",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    vertex_ids: Mapping[str, int] | None = None,
) -> BodyModel:
    """Load a body model.

    Args:
        path: a SMPL model file (.pkl, or .npz in the same layout), or a folder holding
            ``SMPL_NEUTRAL/MALE/FEMALE`` files (picked by ``gender``); None for the embedded
            default model (built and cached on first use, see
            :func:`h4d_fast.body.default_body_model_path`; it has one neutral model, so
            ``gender`` only selects among user files).
        gender: ``"neutral"``, ``"male"`` or ``"female"``.
        device, dtype: where and in which precision the model evaluates.
        vertex_ids: smplx vertex ids (:data:`VERTEX_ID_NAMES`) for meshes that are not SMPL's
            6,890-vertex topology and do not store a ``vertex_ids`` dict themselves.
    Returns:
        the :class:`BodyModel`.
    Raises:
        InputError: missing file, missing key or wrong shape (names the file and the key).
    """
    if gender.lower() not in ("neutral", "male", "female"):
        raise InputError(path, f"gender must be neutral, male or female, got {gender!r}", field="gender")
    if path is None:
        from .default_model import default_body_model_path

        file = default_body_model_path()
        if gender.lower() != "neutral":
            log.info("the default body model is gender-neutral; using it for gender=%s", gender)
    else:
        file = resolve_model_file(path, gender)
    data = read_smpl_file(file)
    vid = _vertex_ids_for(data, file, vertex_ids)
    smpl = build_smplx_model({k: data[k] for k in SMPL_KEYS}, vid, gender=gender.lower(), dtype=dtype, model_path=file)
    smpl.to(device=device)
    info = data.get("h4d_info") if isinstance(data.get("h4d_info"), dict) else {}
    return BodyModel(smpl=smpl, path=file, gender=gender.lower(), joint_map=JointMapping(vertex_ids=vid), info=info)


__all__ = [
    "BodyModel",
    "JointMapping",
    "VERTEX_ID_NAMES",
    "build_smplx_model",
    "load_body_model",
    "smpl45_to_coco17",
]
