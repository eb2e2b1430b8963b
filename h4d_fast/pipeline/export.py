"""Harmony4D export of a SMPL fit: meshes, 3D/2D keypoints and boxes per frame and camera.

Writes the layout of :mod:`h4d_fast.io.smpl_layout` under one folder (``OUT/processed_data``):
``smpl/``, ``poses3d/``, ``poses2d/<cam>/``, ``bbox/<cam>/`` and ``sequence.npz``. Meshes and
joints come from the fitted parameters (:func:`h4d_fast.pipeline.fit.model_outputs`); the 2D
joints and boxes from :meth:`h4d_fast.camera.CameraSet.project` (lens distortion included),
computed on the fit's device in chunks of frames, then written by a thread pool.

Do not export into the *input* sequence's ``processed_data``: there ``poses2d/camXX/`` holds
the 2D detections the pipeline reads.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..body.model import BodyModel
from ..camera import CameraSet
from ..constants import COCO_TO_SMPL45
from ..io.parallel import for_each_file
from ..io.atomic import write_npy
from ..io.smpl_layout import remove_stale_frames, smpl_frame_dict, write_sequence_npz
from .fit import FitResult, model_outputs

_PROJ_BUDGET = 1 << 24  # projected points per chunk


def project_people(cameras: CameraSet, points: Tensor) -> tuple[Tensor, Tensor]:
    """``points [F, P, M, 3]`` -> pixels ``[V, F, P, M, 2]`` and in-front mask ``[V, F, P, M]``."""
    uv, depth = cameras.project(points)  # [F, P, M, V, 2], [F, P, M, V]
    return uv.permute(3, 0, 1, 2, 4), (depth > 0).permute(3, 0, 1, 2)


def boxes_from_vertices(cameras: CameraSet, verts: Tensor, chunk: int | None = None) -> Tensor:
    """Per camera the pixel box of each mesh's projected vertices, not clipped.

    Args:
        cameras: ``V`` cameras; verts ``[F, P, N, 3]``.
    Returns:
        ``[V, F, P, 4]`` ``x1, y1, x2, y2`` (NaN where no vertex is in front of the camera).
    """
    V = len(cameras)
    F, P, N = verts.shape[:3]
    step = chunk or max(1, _PROJ_BUDGET // max(1, P * N * V))
    out = []
    for f0 in range(0, F, step):
        uv, front = project_people(cameras, verts[f0 : f0 + step])  # [V, c, P, N, 2]
        inf = torch.tensor(float("inf"), dtype=uv.dtype, device=uv.device)
        lo = torch.where(front[..., None], uv, inf).amin(3)
        hi = torch.where(front[..., None], uv, -inf).amax(3)
        box = torch.cat([lo, hi], -1)  # [V, c, P, 4]
        out.append(torch.where(front.any(3)[..., None], box, torch.full_like(box, float("nan"))))
    return torch.cat(out, 1) if out else verts.new_zeros(V, 0, P, 4)


def export_harmony4d(
    out: Path,
    result: FitResult,
    body: BodyModel,
    frame_ids: Sequence[int],
    person_names: Sequence[str],
    cameras: CameraSet | None = None,
    write_vertices: bool = True,
    write_poses3d: bool = True,
    workers: int | None = None,
    present: np.ndarray | None = None,
) -> dict[str, Any]:
    """Write the fit in the Harmony4D layout under ``out`` (e.g. ``OUT/processed_data``).

    Args:
        out: the folder (created).
        result: the fit (any device; projections run there).
        body: the body model it was fitted with.
        frame_ids: ``F`` frame numbers (file names ``%05d.npy``).
        person_names: ``P`` names (the dict keys, e.g. ``aria01``).
        cameras: when given, ``poses2d/<cam>`` and ``bbox/<cam>`` are written per camera.
        write_vertices: store vertices in ``smpl/`` and ``sequence.npz`` (the bulk of the bytes).
        write_poses3d: write ``poses3d/`` (COCO joints of the fitted model); False keeps a
            ``poses3d/`` written by the keypoint stages (the model's are still in the npz).
        workers: processes of the file writer (:func:`~h4d_fast.io.parallel.for_each_file`).
        present: ``[F, P]`` bool, who is in which frame: an absent person has no entry in that
            frame's files (``sequence.npz`` keeps every array whole, with ``valid = present``).
    Returns:
        stats: file counts and seconds (compute, write).
    """
    out = Path(out)
    F, P = result.num_frames, result.num_people
    if len(frame_ids) != F or len(person_names) != P:
        raise ValueError(f"export: {len(frame_ids)} frame ids and {len(person_names)} names for a fit of {F} frames x {P} people")
    t0 = time.perf_counter()
    verts, joints = model_outputs(body, result)  # [F, P, N, 3], [F, P, 45, 3]
    coco = joints.index_select(2, torch.tensor(COCO_TO_SMPL45, dtype=torch.long, device=joints.device))
    poses3d = torch.cat([coco, torch.ones_like(coco[..., :1])], -1)
    uv = bbox = None
    cam_names: list[str] = []
    if cameras is not None and len(cameras):
        cams = cameras.to(device=verts.device)
        cam_names = list(cams.names)
        uvj, front = project_people(cams, joints.to(cams.dtype))  # [V, F, P, 45, 2]
        uv = torch.where(front[..., None], uvj, torch.full_like(uvj, float("nan"))).float().cpu().numpy()
        # boxes in float32 (every vertex in every camera: the bulk of the export's compute;
        # float32 is within 1e-3 px of float64 at 4K)
        bbox = boxes_from_vertices(cams, verts.float()).float().cpu().numpy()  # [V, F, P, 4]
    arrays = {
        "global_orient": result.global_orient.float().cpu().numpy(),
        "body_pose": result.body_pose.float().cpu().numpy(),
        "betas": result.betas.float().cpu().numpy(),  # [P, K]
        "transl": result.transl.float().cpu().numpy(),
        "joints": joints.float().cpu().numpy(),
        "vertices": verts.float().cpu().numpy() if write_vertices else None,
    }
    p3 = poses3d.float().cpu().numpy()
    t1 = time.perf_counter()

    fids = [int(f) for f in frame_ids]
    names = list(person_names)
    pres = np.ones((F, P), dtype=bool) if present is None else np.asarray(present, dtype=bool).reshape(F, P)
    bbox_of = _bbox_frame(bbox, names) if bbox is not None else None

    def here(f: int, d: dict) -> dict:  # only the people present in frame f
        return {n: x for p, (n, x) in enumerate(d.items()) if pres[f, p]} if not pres[f].all() else d

    def make(task: tuple[str, int, int]) -> tuple[Path, dict]:
        kind, v, f = task
        name = f"{fids[f]:05d}.npy"
        if kind == "smpl":
            return out / "smpl" / name, here(f, smpl_frame_dict(arrays, f, names))
        if kind == "poses3d":
            return out / "poses3d" / name, here(f, {n: np.ascontiguousarray(p3[f, p]) for p, n in enumerate(names)})
        if kind == "poses2d":
            return out / "poses2d" / cam_names[v] / name, here(f, {n: np.ascontiguousarray(uv[v, f, p]) for p, n in enumerate(names)})
        b = bbox_of(v, f)
        return out / "bbox" / cam_names[v] / name, {n: x for n, x in b.items() if pres[f, names.index(n)]}

    tasks = [("smpl", 0, f) for f in range(F)] + ([("poses3d", 0, f) for f in range(F)] if write_poses3d else [])
    tasks += [(k, v, f) for v in range(len(cam_names)) for k in ("poses2d", "bbox") for f in range(F)]
    folders = [out / "smpl"] + ([out / "poses3d"] if write_poses3d else []) + [out / k / c for c in cam_names for k in ("poses2d", "bbox")]
    for d in folders:
        d.mkdir(parents=True, exist_ok=True)
        remove_stale_frames(d, set(fids))

    def write(task: tuple[str, int, int]) -> None:
        path, obj = make(task)
        write_npy(path, obj)

    for_each_file(write, tasks, workers)
    write_sequence_npz(
        out,
        frame_ids=np.asarray(fids, dtype=np.int64),
        person_names=np.asarray(names),
        camera_names=np.asarray(cam_names),
        global_orient=arrays["global_orient"],
        body_pose=arrays["body_pose"],
        betas=np.broadcast_to(arrays["betas"][None], (F, *arrays["betas"].shape)),
        transl=arrays["transl"],
        vertices=arrays["vertices"],
        joints=arrays["joints"],
        poses3d=p3,
        poses2d=uv,
        bbox=bbox,
        valid=pres,
    )
    t2 = time.perf_counter()
    return {"files": len(tasks) + 1, "cameras": len(cam_names), "compute_seconds": t1 - t0, "write_seconds": t2 - t1}


def _bbox_frame(box: np.ndarray, names: Sequence[str]):
    """``box [V, F, P, 4]`` -> ``(v, f) -> {person: int64 [x1, y1, x2, y2]}`` rounded outward;
    a person behind the camera (NaN) is left out."""
    lo = np.floor(box[..., :2])
    hi = np.ceil(box[..., 2:])
    ok = np.isfinite(box).all(-1)
    ib = np.concatenate([np.where(np.isfinite(lo), lo, 0), np.where(np.isfinite(hi), hi, 0)], -1).astype(np.int64)

    def make(v: int, f: int) -> dict:
        return {n: ib[v, f, p].copy() for p, n in enumerate(names) if ok[v, f, p]}

    return make


__all__ = ["boxes_from_vertices", "export_harmony4d", "project_people"]
