"""Pose models and person detectors of the image stage (interfaces: :mod:`h4d_fast.detect.api`).

* the embedded default, BlazePose (Apache-2.0): :class:`BlazePoseLandmarks` (pose model on
  256x256 crops) and :class:`BlazePoseDetector` (people in whole images), run in torch from a
  conversion of the mediapipe wheel's TFLite files cached on first use
  (:mod:`.blazepose_cache`);
* any top-down ONNX pose model (RTMPose / DWPose / ViTPose / HRNet, COCO-17 or
  COCO-WholeBody-133, heatmap or SimCC head): :class:`OnnxPoseModel`.

Use :func:`load_pose_model` / :func:`load_person_detector`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...errors import InputError
from .blazepose import BOX_SCALE, BlazePoseLandmarks, region_from_keypoints, upright_rotation
from .blazepose_cache import (
    CACHE_SUBDIR,
    PoseModelUnavailable,
    default_pose_models_dir,
    make_default_pose_models,
)
from .blazepose_detector import BlazePoseDetector

DEFAULT_NAMES = ("default", "blazepose", "blazepose-full")


def _model_dir(spec: str | Path) -> Path | None:
    """A folder holding a converted BlazePose cache (``SOURCE.json`` + graphs), else None."""
    p = Path(spec)
    return p if p.is_dir() and (p / "SOURCE.json").is_file() else None


def load_pose_model(model: str | Path | None = "default", device: torch.device | str = "cpu", **overrides: Any):
    """A :class:`~h4d_fast.detect.api.PoseModel`.

    Args:
        model: ``"default"`` (or None): BlazePose full, from the cache (built on first use); a
            folder with a converted BlazePose cache; or a ``.onnx`` top-down pose model.
        device: where it runs.
        **overrides: passed to the model (BlazePose: ``dtype``, ``box_scale``, ``refine``,
            ``channels_last``; ONNX: ``input_size``, ``mean``, ``std``, ``bgr``, ``codec``,
            ``box_scale``, ``max_batch``).
    Raises:
        InputError: the file is missing or not a pose model (names it).
        PoseModelUnavailable: the default is not cached and cannot be built here.
    """
    if model is None or str(model) in DEFAULT_NAMES:
        return BlazePoseLandmarks(device=device, **overrides)
    folder = _model_dir(model)
    if folder is not None:
        return BlazePoseLandmarks(device=device, model_dir=folder, **overrides)
    path = Path(model)
    if path.is_dir():
        raise InputError(path, "a folder that is not a converted BlazePose cache (no SOURCE.json)")
    if not path.exists():
        raise InputError(path, "no such pose model file")
    from .onnx_pose import OnnxPoseModel

    return OnnxPoseModel(path, device=device, **overrides)


def load_person_detector(model: str | Path | None = "default", device: torch.device | str = "cpu", **overrides: Any):
    """A :class:`~h4d_fast.detect.api.PersonDetector`: the BlazePose detector (``"default"`` or a
    folder with a converted BlazePose cache). ``overrides``: ``min_score``, ``iou_threshold``,
    ``max_people``, ``candidates``, ``dtype``."""
    if model is None or str(model) in DEFAULT_NAMES:
        return BlazePoseDetector(device=device, **overrides)
    folder = _model_dir(model)
    if folder is not None:
        return BlazePoseDetector(device=device, model_dir=folder, **overrides)
    raise InputError(model, "person detectors: only the embedded default (BlazePose) is supported; "
                     "give 'default' or a folder with a converted BlazePose cache")


__all__ = [
    "BOX_SCALE", "CACHE_SUBDIR", "BlazePoseDetector", "BlazePoseLandmarks", "PoseModelUnavailable",
    "default_pose_models_dir", "load_person_detector", "load_pose_model", "make_default_pose_models",
    "region_from_keypoints", "upright_rotation",
]
