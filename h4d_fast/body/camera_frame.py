"""SMPL parameters re-expressed in a camera's frame, and the body model's identity.

A SMPL mesh rotates about its rest pelvis joint ``j0(betas)``: ``v = R_go (v_rest - j0) + j0 + transl``
(``v_rest`` = the shaped, posed-by-``body_pose`` mesh in the body's own frame). With the camera's
world-to-camera map ``x_c = R x + t`` (metric world, metric camera frame), the same mesh in the
camera's frame is a SMPL mesh of the same ``body_pose`` and ``betas`` with

    global_orient_c = log(R R_go)
    transl_c        = R (j0 + transl) + t - j0

so ``body(global_orient_c, body_pose, betas, transl_c) == R body(global_orient, ...) + t`` exactly
(up to float rounding): any SMPL implementation gives the camera-frame mesh from these parameters,
no extra transform. ``j0`` depends on the betas (the regressor on the shaped template), which is
why the transform needs the body model.

Scale convention: the cameras are metric (Harmony4D's ``scale.npy`` already applied to the COLMAP
world, :meth:`h4d_fast.camera.CameraSet.transform_world`): the 4x4 ``world_to_camera = [[R, t],
[0, 1]]`` has no scale in it, and translations are in metres in both frames.

    go_c, tr_c = smpl_to_cameras(go [F, P, 3], tr [F, P, 3], pelvis [P, 3], R [V, 3, 3], t [V, 3])  # [V, F, P, 3]
    body_model_identity(body)  # {"sha256", "gender", "num_betas", "num_vertices"}
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .fast import axis_angle_to_matrix, matrix_to_axis_angle

SCALE_CONVENTION = "metric: world_to_camera maps metric world points (metres) to metric camera points; no scale in the 4x4 (scale.npy applied to the world)"


def world_to_camera_matrices(R: Tensor, t: Tensor) -> Tensor:
    """``[V, 4, 4]`` ``[[R, t], [0, 0, 0, 1]]`` from ``R [V, 3, 3]``, ``t [V, 3]``."""
    V = R.shape[0]
    out = torch.zeros((V, 4, 4), dtype=R.dtype, device=R.device)
    out[:, :3, :3] = R
    out[:, :3, 3] = t
    out[:, 3, 3] = 1
    return out


def smpl_to_cameras(global_orient: Tensor, transl: Tensor, pelvis: Tensor, R: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """World SMPL root parameters -> every camera's frame (module docstring).

    Args:
        global_orient, transl: ``[F, P, 3]``; pelvis ``[P, 3]`` or ``[F, P, 3]``: the rest pelvis
            joint of each person's betas (``FastBody(body).rest_joints(betas)[:, 0]``).
        R, t: ``[V, 3, 3]``, ``[V, 3]`` world-to-camera (metric).
    Returns:
        ``global_orient_c [V, F, P, 3]``, ``transl_c [V, F, P, 3]`` (dtype of ``global_orient``).
    """
    dt = torch.float64
    go, tr = global_orient.to(dt), transl.to(dt)
    j0 = pelvis.to(device=go.device, dtype=dt)
    j0 = j0.expand_as(tr) if j0.dim() == 3 else j0[None].expand_as(tr)
    Rw, tw = R.to(device=go.device, dtype=dt), t.to(device=go.device, dtype=dt)
    Rc = torch.einsum("vij,fpjk->vfpik", Rw, axis_angle_to_matrix(go))
    go_c = matrix_to_axis_angle(Rc)
    tr_c = torch.einsum("vij,fpj->vfpi", Rw, j0 + tr) + tw[:, None, None] - j0[None]
    return go_c.to(global_orient.dtype), tr_c.to(global_orient.dtype)


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file (cached by path, size and mtime)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def body_model_identity(body: Any) -> dict[str, Any]:
    """What reproduces the shipped vertices from the parameters: the model file's sha256, the
    gender, the number of betas and of vertices (``sha256`` empty when the file is not readable)."""
    path = getattr(body, "path", None)
    try:
        sha = file_sha256(path) if path is not None else ""
    except OSError:
        sha = ""
    return {"sha256": sha, "gender": str(getattr(body, "gender", "")), "num_betas": int(body.num_betas),
            "num_vertices": int(body.num_vertices), "file": "" if path is None else Path(path).name}


__all__ = ["SCALE_CONVENTION", "body_model_identity", "file_sha256", "smpl_to_cameras", "world_to_camera_matrices"]
