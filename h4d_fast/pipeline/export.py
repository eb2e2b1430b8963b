"""Harmony4D export of a SMPL fit: meshes, 3D/2D keypoints and boxes per frame and camera.

Writes the layout of :mod:`h4d_fast.io.smpl_layout` under one folder (``OUT/processed_data``):
``smpl/``, ``poses3d/``, ``poses2d/<cam>/``, ``bbox/<cam>/`` and ``sequence.npz``. Meshes and
joints come from the fitted parameters (:func:`h4d_fast.pipeline.fit.model_outputs`); the 2D
joints and boxes from :meth:`h4d_fast.camera.CameraSet.project` (lens distortion included),
computed on the fit's device in chunks of frames. The consolidated ``sequence.npz`` is written
first (everything batched, one file); the ~25,000 per-frame files are then derived from it by the
worker processes of :mod:`h4d_fast.io.frame_files`, in the background when the caller asks
(``wait=False``: ``run-many`` starts the next capture while they are written).

With ``contact_mm`` (``h4d run`` passes ``contact.contact_mm``) and two or more people, the
vertex contact of every pair goes into ``sequence.npz`` (sparse), ``contact.npz`` and
``contact/%05d.npy`` (:mod:`h4d_fast.io.contact`).

Do not export into the *input* sequence's ``processed_data``: there ``poses2d/camXX/`` holds
the 2D detections the pipeline reads.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..body.camera_frame import SCALE_CONVENTION, body_model_identity, smpl_to_cameras, world_to_camera_matrices
from ..camera import CameraSet
from ..constants import COCO_TO_SMPL45
from ..io import faults
from ..io.frame_files import write_frame_files
from ..io.smpl_layout import NPZ_NAME, write_sequence_npz
from ..ops.boxes import mesh_boxes
from ..ops.contact import contact_on_host
from .fit import FitResult, model_outputs

if TYPE_CHECKING:
    from ..body.model import BodyModel


def project_people(cameras: CameraSet, points: Tensor) -> tuple[Tensor, Tensor]:
    """``points [F, P, M, 3]`` -> pixels ``[V, F, P, M, 2]`` and in-front mask ``[V, F, P, M]``."""
    uv, depth = cameras.project(points)  # [F, P, M, V, 2], [F, P, M, V]
    return uv.permute(3, 0, 1, 2, 4), (depth > 0).permute(3, 0, 1, 2)


def boxes_from_vertices(cameras: CameraSet, verts: Tensor, chunk: int | None = None, backend: str = "auto") -> Tensor:
    """Per camera the pixel box of each mesh's projected vertices, not clipped
    (:func:`h4d_fast.ops.boxes.mesh_boxes`; ``chunk`` frames at a time with the torch backend).

    Args:
        cameras: ``V`` cameras; verts ``[F, P, N, 3]``.
    Returns:
        ``[V, F, P, 4]`` ``x1, y1, x2, y2`` (NaN where no vertex is in front of the camera).
    """
    if chunk is not None:
        from ..ops._boxes_torch import mesh_boxes_torch

        return mesh_boxes_torch(cameras.to(device=verts.device), verts, chunk)
    return mesh_boxes(cameras, verts, backend=backend)


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
    wait: bool = True,
    contact_mm: float | None = None,
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
        workers: processes of the per-frame file writer (``1``: written here; see
            :func:`~h4d_fast.io.frame_files.write_frame_files`).
        wait: return once every per-frame file is written; ``False`` returns once ``sequence.npz``
            is, with the writes still running (``stats["pending"]``, a
            :class:`~h4d_fast.io.frame_files.PendingFiles` to ``wait()`` on).
        present: ``[F, P]`` bool, who is in which frame (default: the fit's own,
            :attr:`~h4d_fast.pipeline.fit.FitResult.present`): an absent person has no entry in that
            frame's files; ``sequence.npz`` keeps every array whole, with ``valid = present`` and
            nothing in the absent person-frames (parameters, meshes, joints 0; 2D joints and boxes NaN).
        contact_mm: with two or more people, the vertex contact of every pair at this threshold
            (``cfg.contact.contact_mm``; :func:`h4d_fast.ops.contact.export_contact`, on the fit's
            device): the sparse labels and body-part regions in ``sequence.npz``
            (:func:`h4d_fast.io.contact.sequence_contact_arrays`), ``contact.npz`` beside it and
            ``contact/%05d.npy`` per frame; a pair with an absent person has no contact there.
            None: no contact labels.
    Returns:
        stats: file counts and seconds (``compute_seconds``: meshes, projections and contact, of which
        ``contact_seconds`` the contact labels; with them, where the host kernel ran,
        ``penetration_cm3`` / ``penetration_max_frame_cm3``: the meshes' interpenetration per frame,
        mean and largest; ``npz_seconds``:
        ``sequence.npz``; ``write_seconds``: the per-frame files, when waited for).
    """
    out = Path(out)
    F, P = result.num_frames, result.num_people
    if len(frame_ids) != F or len(person_names) != P:
        raise ValueError(f"export: {len(frame_ids)} frame ids and {len(person_names)} names for a fit of {F} frames x {P} people")
    t0 = time.perf_counter()
    if present is None and result.present is not None:
        present = result.present.cpu().numpy()
    pres = np.ones((F, P), dtype=bool) if present is None else np.asarray(present, dtype=bool).reshape(F, P)
    if not pres.all() and (result.present is None or not np.array_equal(result.present.cpu().numpy(), pres)):
        result = _absent_removed(result, pres)
    verts, joints = model_outputs(body, result)  # [F, P, N, 3], [F, P, 45, 3] (zeros where absent)
    need_contact = contact_mm is not None and P >= 2
    # one host copy of the meshes, made only when sequence.npz or the host contact kernel reads it
    verts_host = verts.float().cpu() if write_vertices or (need_contact and contact_on_host()) else None
    contact_job = None
    if need_contact:  # the labels of every pair (on the host: beside what follows)
        contact_job = _ContactJob(out, verts_host if contact_on_host() else verts, body, pres, float(contact_mm), [int(f) for f in frame_ids])
    coco = joints.index_select(2, torch.tensor(COCO_TO_SMPL45, dtype=torch.long, device=joints.device))
    poses3d = torch.cat([coco, torch.ones_like(coco[..., :1])], -1)
    uv = bbox = None
    cam_smpl: dict[str, Any] = {}
    cam_names: list[str] = []
    if cameras is not None and len(cameras):
        cams = cameras.to(device=verts.device)
        cam_names = list(cams.names)
        uvj, front = project_people(cams, joints.to(cams.dtype))  # [V, F, P, 45, 2]
        here = torch.as_tensor(pres, device=uvj.device)[None, :, :, None, None]
        uv = torch.where(front[..., None] & here, uvj, torch.full_like(uvj, float("nan"))).float().cpu().numpy()
        # boxes in float32 (every vertex in every camera: the bulk of the export's compute;
        # float32 is within 1e-3 px of float64 at 4K)
        bbox = boxes_from_vertices(cams, verts.float()).float().cpu().numpy()  # [V, F, P, 4]
        bbox[:, ~pres] = np.nan
        cam_smpl = _camera_frame(cams, result, joints)
        for k in ("cam_global_orient", "cam_transl"):
            cam_smpl[k][:, ~pres] = 0.0
    fids = [int(f) for f in frame_ids]
    names = list(person_names)
    poses3d = poses3d * torch.as_tensor(pres, device=poses3d.device)[..., None, None].to(poses3d.dtype)
    go = result.global_orient.float().cpu().numpy()
    contact: dict[str, Any] = {}
    tc = 0.0
    extra: dict[str, Any] = {}
    if contact_job is not None:
        contact, tc = contact_job.result()
        if contact_job.threads:
            extra["contact_threads"] = contact_job.threads
        if "contact_penetration_cm3" in contact:  # per frame, summed over the pairs (the fit's penetration_after_cm3)
            pen = contact["contact_penetration_cm3"].astype(np.float64).sum(1)
            extra["penetration_cm3"] = float(pen.mean()) if pen.size else 0.0
            extra["penetration_max_frame_cm3"] = float(pen.max()) if pen.size else 0.0
    else:  # no labels this time: none of an earlier export's may stay
        _remove_contact(out)
    t1 = time.perf_counter()
    write_sequence_npz(
        out,
        frame_ids=np.asarray(fids, dtype=np.int64),
        person_names=np.asarray(names),
        camera_names=np.asarray(cam_names),
        global_orient=go,
        body_pose=result.body_pose.float().cpu().numpy(),
        betas=np.broadcast_to(result.betas.float().cpu().numpy()[None], (F, *result.betas.shape)),
        transl=result.transl.float().cpu().numpy(),
        vertices=verts_host.numpy() if write_vertices else None,
        joints=joints.float().cpu().numpy(),
        poses3d=poses3d.float().cpu().numpy(),
        poses2d=uv,
        bbox=bbox,
        valid=pres,
        **contact,
        **cam_smpl,
        **{f"body_model_{k}": np.asarray(v) for k, v in body_model_identity(body).items()},
    )
    t2 = time.perf_counter()
    faults.point("after:sequence.npz", out)
    kinds = ["smpl"] + (["poses3d"] if write_poses3d else []) + (["poses2d", "bbox", "smpl_cam"] if cam_names else []) + (["contact"] if contact else [])
    pending = write_frame_files(out / NPZ_NAME, out, kinds, fids, names, cam_names, workers=workers)
    stats: dict[str, Any] = {"files": pending.files + 1 + bool(contact), "cameras": len(cam_names), "compute_seconds": t1 - t0, "npz_seconds": t2 - t1,
                             "contact_seconds": tc, **extra}
    if wait:
        stats["write_seconds"] = pending.wait()
    else:
        stats["pending"] = pending
    return stats


def _absent_removed(result: FitResult, present: np.ndarray) -> FitResult:
    """``result`` with no body where ``present [F, P]`` is false (zero parameters, ``present`` set)."""
    import dataclasses

    pres = torch.as_tensor(present, device=result.global_orient.device)
    gone = ~pres[..., None]
    return dataclasses.replace(result, present=pres, **{k: getattr(result, k).masked_fill(gone, 0.0)
                                                        for k in ("global_orient", "body_pose", "transl")})


def _camera_frame(cams: CameraSet, result: FitResult, joints: Tensor) -> dict[str, np.ndarray]:
    """``cam_global_orient`` / ``cam_transl`` ``[V, F, P, 3]`` (:func:`h4d_fast.body.camera_frame.smpl_to_cameras`),
    ``world_to_camera [V, 4, 4]`` and ``scale_convention`` for ``sequence.npz``."""
    pelvis = joints[:, :, 0].double() - result.transl.to(joints.device).double()  # the rest pelvis joint: rotation is about it
    go_c, tr_c = smpl_to_cameras(result.global_orient.to(joints.device).double(), result.transl.to(joints.device).double(), pelvis,
                                 cams.R.double(), cams.t.double())
    return {"cam_global_orient": go_c.float().cpu().numpy(), "cam_transl": tr_c.float().cpu().numpy(),
            "world_to_camera": world_to_camera_matrices(cams.R.double(), cams.t.double()).cpu().numpy(),
            "scale_convention": np.asarray([SCALE_CONVENTION])}


def _remove_contact(out: Path) -> None:
    from ..io.contact import CONTACT_FILE
    from ..io.smpl_layout import remove_stale_frames

    (out / CONTACT_FILE).unlink(missing_ok=True)
    if (out / "contact").is_dir():
        remove_stale_frames(out / "contact", set())


def _contact(out: Path, verts: Tensor, body: BodyModel, present: np.ndarray, contact_mm: float, frame_ids: list[int]) -> dict[str, np.ndarray]:
    """The contact arrays of ``sequence.npz``; writes ``out/contact.npz`` (:mod:`h4d_fast.io.contact`)."""
    from ..body.parts import body_parts
    from ..io.contact import CONTACT_FILE, sequence_contact_arrays, write_contact
    from ..ops.contact import export_contact

    parts = body_parts(body)
    exp = export_contact(verts, body.faces.to(verts.device), parts, contact_mm, present=present)
    write_contact(out / CONTACT_FILE, torch.from_numpy(exp["contact"]), [tuple(p) for p in exp["contact_pairs"].tolist()], frame_ids,
                  contact_mm, parts.names, parts.vertex_part, exp["depth_max"], exp["depth_mean"])
    return sequence_contact_arrays(exp)


class _ContactJob:
    """:func:`_contact`, started at once: where the contact kernel runs on the host
    (:func:`~h4d_fast.ops.contact.contact_on_host`: numba, the GIL released) it runs in a thread on
    the host copy of the meshes while the export computes the projections and boxes; elsewhere
    (``verts`` on their device) it runs in :meth:`result`."""

    def __init__(self, out: Path, verts: Tensor, body: BodyModel, present: np.ndarray, contact_mm: float, frame_ids: list[int]):
        self._args = (out, verts, body, present, contact_mm, frame_ids)
        self._box: dict[str, Any] = {}
        self._thread = None
        self.threads: str | None = None  # host kernel: "<numba threads> <threading layer>"
        if contact_on_host():
            import threading

            self._thread = threading.Thread(target=self._run, name="h4d-export-contact", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        t = time.perf_counter()
        try:
            self._box["value"] = _contact(*self._args)
        except BaseException as e:  # re-raised in the caller's thread by result()
            self._box["error"] = e
        self._box["seconds"] = time.perf_counter() - t
        if self._thread is not None:  # what the host kernel had (the stats say it: contention shows there)
            try:
                import numba

                self.threads = f"{numba.get_num_threads()} {numba.threading_layer()}"
            except Exception:  # noqa: BLE001 - a diagnostic only
                pass

    def result(self) -> tuple[dict[str, np.ndarray], float]:
        """``(the contact arrays of sequence.npz, seconds the labels took)``; raises what the job raised."""
        if self._thread is None:
            self._run()
        else:
            self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._box["value"], self._box["seconds"]


__all__ = ["boxes_from_vertices", "export_harmony4d", "project_people"]
