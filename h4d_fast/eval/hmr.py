"""``h4d eval hmr``: a monocular method's per-camera predictions against the annotations, with the
Harmony4D benchmark protocol (reference-pipeline.md section 6).

**Ground truth** (:func:`read_sequence_smpl`): the sequence's SMPL annotations, first found of
``SEQ/processed_data/smpl_collision/%05d.npy`` (preferred by the benchmark when present),
``SEQ/processed_data/sequence.npz`` / ``SEQ/processed_data/smpl/%05d.npy`` (the export layout,
:mod:`h4d_fast.io.smpl_layout`, or Harmony4D's released files) and
``SEQ/ground_truth/smpl.npz`` (synthetic captures), or the path given as ``--gt-smpl``. Its
24 joints and vertices (stored ones, else recomputed with the body model) are moved into every
exo camera's metric frame with the sequence's calibration (``SEQ/colmap/workplace`` + scale).

**Predictions** (:func:`read_predictions`), camera-frame metres, one of:

* ``PRED/<cam>/%05d.npy`` (frame ids as the sequence's): a list of people, or a dict
  ``name -> person``, each person a dict with either SMPL parameters
  ``global_orient`` (3 axis-angle, or a 3x3 / 1x3x3 rotation matrix), ``body_pose`` (69, or
  23x3x3), ``betas`` (K) and ``transl`` (3; aliases ``cam_t``, ``pred_cam_t_full``; HMR2.0's
  nested ``pred_smpl_params`` / ``smpl_params`` dicts are read too), or ``joints`` (J >= 24, 3,
  the first 24 in SMPL order) and optionally ``vertices`` (N, 3). Optional ``keypoints_2d``
  ((44, 2|3) in HMR2.0's order, or (24, 2|3) in SMPL order, full-image pixels) is used for the
  matching; without it the 24 joints are projected through the camera's calibration.
* ``PRED.npz`` (or ``PRED/predictions.npz``): one row per predicted person, ``camera [M]`` (names),
  ``frame [M]`` (frame ids) and the same fields batched (``global_orient [M, 3]`` or
  ``[M, 3, 3]`` / ``[M, 1, 3, 3]``, ``body_pose [M, 69]`` or ``[M, 23, 3, 3]``, ``betas [M, K]``,
  ``transl [M, 3]``, or ``joints [M, J, 3]`` (+ ``vertices [M, N, 3]``), ``keypoints_2d``).

With a root of sequences (``--gt ROOT``, every folder under it with ``colmap/workplace``),
``--pred`` is a root with the same relative paths (``PRED/<rel>/<cam>/...`` or ``PRED/<rel>.npz``).

**Protocol**, per sequence and exo camera, per frame:

* GT people in view (pelvis in front of the camera and the projected joint box meeting the image;
  ``include_all_gt`` counts every person) are matched to the predictions greedily
  (``match_2d_greedy``): pairs in increasing order of the mean 2D distance between the 24 joints
  (over the ground-truth joints in front of the camera); a pair is accepted when neither side is
  taken and the IoU of the two keypoint boxes is >= 0.6; a prediction whose best remaining pair
  fails the IoU test is excluded (a false positive), as in the reference.
* Unmatched GT people are misses, unmatched predictions false positives;
  ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``, ``F1 = 2PR / (P + R)``.
* On matched pairs (camera frame, mm): **MPJPE** over the 24 SMPL joints after subtracting the
  pelvis (joint 0) of each; **PA-MPJPE** after a similarity Procrustes (scale + rotation +
  translation); **PVE** mean vertex distance after subtracting each mesh's pelvis joint
  (``pve_align="pelvis"``, default), or vertex 0 (``"vertex0"``: the reference's quirk), or
  nothing (``"none"``); **PA-PVE**; **PCK@150** on the 12 major joints
  ``[1, 2, 4, 5, 7, 8, 16..21]`` of the pelvis-aligned joints (error < 150 mm); **AUC** = mean
  PCK over thresholds 0, 1, ..., 199 mm (a perfect prediction scores 0.995: PCK(0) = 0);
  ``NMJE = MPJPE / F1``, ``NMVE = PVE / F1``; ``mpjpe_abs_mm`` (no alignment) beside them.

Sums are pooled over matched person-frames: per camera, per sequence, per activity (the
sequence's parent folder name, e.g. ``01_hugging`` of ``01_hugging/001``) and overall.
Everything is batched in torch on ``device`` (GPU when available).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..camera import CameraSet, distort
from ..constants import NUM_SMPL_JOINTS
from ..errors import InputError
from .joints import NUM_HMR2, OPENPOSE_TO_SMPL24
from .mesh import mpjpe24, pve
from .metrics import procrustes_align

MAJOR_JOINTS: tuple[int, ...] = (1, 2, 4, 5, 7, 8, 16, 17, 18, 19, 20, 21)
PCK_THRESHOLD_MM = 150.0
AUC_THRESHOLDS_MM = tuple(float(t) for t in range(200))
IOU_THRESHOLD = 0.6
PVE_ALIGNS = ("pelvis", "vertex0", "none")

_BODY_CACHE: dict[tuple[str, str, str], Any] = {}


# ============================================================================ body model
def load_fast_body(spec: str | None = None, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """A :class:`~h4d_fast.body.fast.FastBody` of the body model ``spec`` (None / ``default``: the
    embedded one), cached per process. ``dtype`` defaults to float64 on CPU, float32 on GPU."""
    from ..body import load_body_model
    from ..body.fast import FastBody

    device = torch.device(device)
    dtype = dtype or (torch.float64 if device.type == "cpu" else torch.float32)
    key = (str(spec or "default"), str(device), str(dtype))
    if key not in _BODY_CACHE:
        body = load_body_model(None if spec in (None, "", "default") else spec, device=device, dtype=dtype)
        from ..body.model import VERTEX_ID_NAMES

        _BODY_CACHE[key] = FastBody(body, vertex_joints=VERTEX_ID_NAMES)
    return _BODY_CACHE[key]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ============================================================================ SMPL in a camera frame
def smpl_to_camera(global_orient: Tensor, transl: Tensor, R: Tensor, t: Tensor, rest_pelvis: Tensor) -> tuple[Tensor, Tensor]:
    """Express world SMPL parameters in a camera frame ``X_c = R X + t``.

    SMPL rotates the body about its rest pelvis ``j0`` (a function of the shape):
    ``X = R_g (x - j0) + j0 + transl``. So ``R_g' = R R_g`` and ``transl' = R (j0 + transl) + t - j0``.

    Args:
        global_orient: ``[..., 3]`` axis-angle; transl ``[..., 3]``; R ``[..., 3, 3]``; t ``[..., 3]``;
        rest_pelvis: ``[..., 3]`` (``FastBody.rest_joints(betas)[:, 0]``).
    Returns:
        ``(global_orient [..., 3], transl [..., 3])`` in the camera frame.
    """
    from ..body.fast import axis_angle_to_matrix, matrix_to_axis_angle

    Rg = axis_angle_to_matrix(global_orient)
    go = matrix_to_axis_angle(R @ Rg)
    tr = (R @ (rest_pelvis + transl)[..., None])[..., 0] + t - rest_pelvis
    return go, tr


def _rotmat_to_aa(x: np.ndarray, n_joints: int, key: str, path: Path | None) -> np.ndarray:
    """``[M, n*3]`` axis-angle or ``[M, n, 3, 3]`` / ``[M, 3, 3]`` rotation matrices -> ``[M, n*3]``."""
    from ..body.fast import matrix_to_axis_angle

    M = x.shape[0]
    if x.size == M * n_joints * 3:
        return x.reshape(M, n_joints * 3).astype(np.float64)
    if x.size == M * n_joints * 9:
        R = torch.as_tensor(x.reshape(M, n_joints, 3, 3), dtype=torch.float64)
        return matrix_to_axis_angle(R).reshape(M, n_joints * 3).numpy()
    raise InputError(path, f"expected {n_joints * 3} axis-angle values or {n_joints} rotation matrices per person, got shape {x.shape}", key)


# ============================================================================ ground truth
@dataclass
class SequenceSMPL:
    """SMPL annotations of a sequence in the world frame (numpy, ``F`` frames, ``P`` people)."""

    frame_ids: list[int]
    person_names: list[str]
    valid: np.ndarray  # [F, P] bool
    global_orient: np.ndarray  # [F, P, 3]
    body_pose: np.ndarray  # [F, P, 69]
    betas: np.ndarray  # [F, P, K]
    transl: np.ndarray  # [F, P, 3]
    joints: np.ndarray | None = None  # [F, P, J, 3] stored joints (SMPL-45 order)
    vertices: np.ndarray | None = None  # [F, P, N, 3] stored vertices
    source: str = ""
    body_model: str | None = None  # the model named by the sequence's meta.json


def read_sequence_smpl(seq: Path, smpl: Path | None = None) -> SequenceSMPL:
    """The SMPL annotations of a sequence folder (module docstring for the search order)."""
    from ..io.harmony4d import read_meta
    from ..io.smpl_layout import read_smpl_sequence

    seq = Path(seq)
    meta = None
    try:
        meta = read_meta(seq)
    except InputError:
        meta = None
    body_model = (meta or {}).get("body_model")
    # the benchmark's ground truth prefers the collision-stage fit when a sequence has one
    cands: list[Path] = [Path(smpl)] if smpl is not None else [
        seq / "processed_data" / "smpl_collision", seq / "processed_data", seq / "ground_truth" / "smpl.npz"]
    for c in cands:
        if c.is_file() and c.suffix == ".npz" and c.name != "sequence.npz":
            return _read_gt_npz(c, meta, body_model)
        if c.is_file() and c.name == "sequence.npz":
            c = c.parent
        if c.is_dir() and ((c / "sequence.npz").is_file() or (c / "smpl").is_dir() or any(p.suffix == ".npy" and p.stem.isdigit() for p in c.iterdir())):
            d = read_smpl_sequence(c)
            F, P = d["global_orient"].shape[:2]
            names = list(d["person_names"]) or [f"person{p}" for p in range(P)]
            return SequenceSMPL(
                frame_ids=[int(f) for f in d["frame_ids"]], person_names=names, valid=np.asarray(d["valid"], bool),
                global_orient=np.asarray(d["global_orient"], np.float64), body_pose=np.asarray(d["body_pose"], np.float64),
                betas=np.asarray(d["betas"], np.float64), transl=np.asarray(d["transl"], np.float64),
                joints=None if d.get("joints") is None else np.asarray(d["joints"]),
                vertices=None if d.get("vertices") is None else np.asarray(d["vertices"]),
                source=str(c), body_model=body_model,
            )
    where = cands[0] if smpl is not None else seq
    raise InputError(where, "no SMPL annotations (processed_data/sequence.npz, processed_data/smpl/ or ground_truth/smpl.npz)")


def _read_gt_npz(path: Path, meta: Mapping[str, Any] | None, body_model: str | None) -> SequenceSMPL:
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: np.asarray(z[k]) for k in z.files}
    except Exception as e:  # noqa: BLE001
        raise InputError(path, f"not a readable .npz file ({type(e).__name__}: {e})") from None
    for k in ("global_orient", "body_pose", "transl", "betas"):
        if k not in d:
            raise InputError(path, f"missing array {k!r}")
    F, P = d["global_orient"].shape[:2]
    betas = d["betas"]
    if betas.ndim == 2:
        betas = np.broadcast_to(betas[None], (F, *betas.shape))
    fids = [int(f) for f in (meta or {}).get("frame_ids", range(1, F + 1))]
    names = [str(n) for n in (meta or {}).get("person_names", [f"person{p}" for p in range(P)])]
    if len(fids) != F or len(names) != P:
        fids, names = list(range(1, F + 1)), [f"person{p}" for p in range(P)]
    return SequenceSMPL(fids, names, np.ones((F, P), bool), d["global_orient"].astype(np.float64), d["body_pose"].astype(np.float64),
                        np.ascontiguousarray(betas, np.float64), d["transl"].astype(np.float64), source=str(path), body_model=body_model)


# ============================================================================ predictions
@dataclass
class Predictions:
    """``M`` predicted people, camera frame. Either SMPL parameters or joints per row."""

    camera: np.ndarray  # [M] int, index into the sequence's cameras
    frame: np.ndarray  # [M] int frame ids
    has_params: np.ndarray  # [M] bool
    global_orient: np.ndarray  # [M, 3]
    body_pose: np.ndarray  # [M, 69]
    betas: np.ndarray  # [M, K]
    transl: np.ndarray  # [M, 3]
    joints: np.ndarray  # [M, 24, 3] (rows without params)
    vertices: np.ndarray | None  # [M, N, 3] (rows without params that gave vertices; zeros else)
    has_vertices: np.ndarray  # [M] bool (rows without params)
    kp2d: np.ndarray  # [M, 24, 3] x, y, conf in SMPL joint order (conf 0: not given)
    has_kp2d: np.ndarray  # [M] bool
    unknown_cameras: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.camera.shape[0])


_TRANSL_KEYS = ("transl", "cam_t", "pred_cam_t_full", "pred_cam_t")
_NESTED = ("pred_smpl_params", "smpl_params", "smpl")


def _person_entry(d: Mapping[str, Any], path: Path, where: str) -> dict[str, np.ndarray]:
    """Normalise one predicted person dict (module docstring)."""
    flat: dict[str, Any] = {}
    for k in _NESTED:
        if isinstance(d.get(k), Mapping):
            flat.update(d[k])
    flat.update({k: v for k, v in d.items() if not isinstance(v, Mapping)})
    out: dict[str, np.ndarray] = {}

    def arr(k: str) -> np.ndarray:
        try:
            return np.asarray(flat[k], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(path, "expected a numeric array", f"{where}.{k}") from None

    if "global_orient" in flat and "body_pose" in flat:
        out["global_orient"] = _rotmat_to_aa(arr("global_orient").reshape(1, -1), 1, f"{where}.global_orient", path)[0]
        out["body_pose"] = _rotmat_to_aa(arr("body_pose").reshape(1, -1), 23, f"{where}.body_pose", path)[0]
        out["betas"] = arr("betas").reshape(-1) if "betas" in flat else np.zeros(10)
        tk = next((k for k in _TRANSL_KEYS if k in flat), None)
        if tk is None:
            raise InputError(path, "SMPL parameters without a camera-frame translation (transl / cam_t / pred_cam_t_full)", where)
        out["transl"] = arr(tk).reshape(-1)[:3]
    elif "joints" in flat:
        j = arr("joints")
        j = j.reshape(-1, j.shape[-1])
        if j.shape[0] < NUM_SMPL_JOINTS or j.shape[1] < 3:
            raise InputError(path, f"expected (J >= 24, 3) joints, got {j.shape}", f"{where}.joints")
        out["joints"] = j[:NUM_SMPL_JOINTS, :3]
        if "vertices" in flat and flat["vertices"] is not None:
            out["vertices"] = arr("vertices").reshape(-1, 3)
    else:
        raise InputError(path, f"a prediction needs SMPL parameters (global_orient, body_pose, betas, transl) or joints (keys: {', '.join(map(str, flat))})", where)
    for k in ("keypoints_2d", "pred_keypoints_2d_full", "kp2d"):
        if k in flat and flat[k] is not None:
            out["kp2d"] = _kp2d_smpl(arr(k), path, f"{where}.{k}")
            break
    return out


def _kp2d_smpl(k: np.ndarray, path: Path | None, where: str) -> np.ndarray:
    """``(44|>=25, 2|3)`` HMR2.0 order or ``(24, 2|3)`` SMPL order -> ``(24, 3)`` SMPL order."""
    k = k.reshape(-1, k.shape[-1])
    if k.shape[1] not in (2, 3):
        raise InputError(path, f"expected (K, 2) or (K, 3) 2D keypoints, got {k.shape}", where)
    if k.shape[1] == 2:
        k = np.concatenate([k, np.ones((k.shape[0], 1))], 1)
    if k.shape[0] == NUM_SMPL_JOINTS:
        return k
    if k.shape[0] >= 25:
        return k[list(OPENPOSE_TO_SMPL24)]
    raise InputError(path, f"expected 24 (SMPL order) or {NUM_HMR2} (HMR2.0 order) 2D keypoints, got {k.shape[0]}", where)


def _people_of(obj: Any, path: Path) -> list[dict[str, np.ndarray]]:
    if obj is None:
        return []
    if isinstance(obj, Mapping):
        if any(k in obj for k in ("global_orient", "joints", "pred_smpl_params", "smpl_params")):
            # one person, or batched arrays of several
            n = _batch_size(obj)
            if n is None:
                return [_person_entry(obj, path, "person")]
            return [_person_entry(_index(obj, i), path, f"[{i}]") for i in range(n)]
        return [_person_entry(v, path, repr(str(k))) for k, v in obj.items() if isinstance(v, Mapping)]
    if isinstance(obj, (list, tuple)):
        return [_person_entry(v, path, f"[{i}]") for i, v in enumerate(obj) if isinstance(v, Mapping)]
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        return _people_of(obj.tolist(), path)
    raise InputError(path, f"expected a list of people or a dict, got {type(obj).__name__}")


def _batch_size(d: Mapping[str, Any]) -> int | None:
    """Rows of a dict of batched arrays (``global_orient [n, 3|1,3,3|3,3]`` / ``joints [n, J, 3]``), None for one person."""
    src = dict(d)
    for k in _NESTED:
        if isinstance(d.get(k), Mapping):
            src.update(d[k])
    if "global_orient" in src:
        a = np.asarray(src["global_orient"])
        if a.ndim == 2 and a.shape[1] == 3 and "body_pose" in src and np.asarray(src["body_pose"]).ndim == 2 and np.asarray(src["body_pose"]).shape[1] == 69:
            return a.shape[0]
        if a.ndim == 4 or (a.ndim == 3 and a.shape[-2:] == (3, 3) and np.asarray(src["body_pose"]).ndim == 4):
            return a.shape[0]
        return None
    j = np.asarray(src["joints"])
    return j.shape[0] if j.ndim == 3 else None


def _index(d: Mapping[str, Any], i: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out[k] = _index(v, i)
        else:
            a = np.asarray(v)
            out[k] = a[i] if a.ndim >= 1 else a
    return out


def _pred_location(pred: Path, rel: Path | None) -> Path:
    """The predictions of one sequence under a root (``PRED/<rel>`` folder or ``PRED/<rel>.npz``)."""
    if rel is None or str(rel) in ("", "."):
        return pred
    d = pred / rel
    if d.exists():
        return d
    f = pred / (str(rel) + ".npz")
    if f.exists():
        return f
    return d


def read_predictions(pred: Path, camera_names: Sequence[str], frame_ids: Sequence[int] | None = None) -> Predictions:
    """Read predictions in either layout (module docstring).

    Args:
        pred: ``PRED`` folder of camera folders, or an ``.npz`` file (or a folder holding
            ``predictions.npz``).
        camera_names: the sequence's exo cameras (a prediction's camera index is its position).
        frame_ids: keep only these frames (default: all).
    """
    from ..io.detections import parallel_map
    from ..io.npy import read_npy

    pred = Path(pred)
    cam_index = {c: i for i, c in enumerate(camera_names)}
    keep = None if frame_ids is None else {int(f) for f in frame_ids}
    rows: list[tuple[int, int, dict[str, np.ndarray]]] = []
    unknown: list[str] = []
    npz = pred if pred.is_file() else (pred / "predictions.npz")
    if npz.is_file():
        try:
            with np.load(npz, allow_pickle=False) as z:
                d = {k: np.asarray(z[k]) for k in z.files}
        except Exception as e:  # noqa: BLE001
            raise InputError(npz, f"not a readable .npz file ({type(e).__name__}: {e})") from None
        for k in ("camera", "frame"):
            if k not in d:
                raise InputError(npz, f"missing array {k!r} (one row per predicted person: camera names and frame ids)")
        M = d["camera"].shape[0]
        for i in range(M):
            cam = str(d["camera"][i])
            if cam not in cam_index:
                unknown.append(cam)
                continue
            fid = int(d["frame"][i])
            if keep is not None and fid not in keep:
                continue
            ent = _person_entry({k: v[i] for k, v in d.items() if k not in ("camera", "frame")}, npz, f"row {i}")
            rows.append((cam_index[cam], fid, ent))
    elif pred.is_dir():
        tasks: list[tuple[int, int, Path]] = []
        for e in sorted(os.scandir(pred), key=lambda e: e.name):
            if not e.is_dir():
                continue
            if e.name not in cam_index:
                unknown.append(e.name)
                continue
            folder = Path(e.path)
            for f in os.scandir(folder):
                stem, x = os.path.splitext(f.name)
                if x.lower() == ".npy" and stem.isdigit() and (keep is None or int(stem) in keep):
                    tasks.append((cam_index[e.name], int(stem), Path(f.path)))
        if not tasks and not unknown:
            raise InputError(pred, "no predictions (PRED/<cam>/%05d.npy files or PRED.npz)")
        tasks.sort()
        objs = parallel_map(lambda t: _people_of(read_npy(t[2]), t[2]), tasks)
        for (v, fid, _), people in zip(tasks, objs):
            rows.extend((v, fid, p) for p in people)
    else:
        raise InputError(pred, "predictions not found (a folder of camera folders or an .npz file)")
    return _pack(rows, sorted(set(unknown)))


def _pack(rows: list[tuple[int, int, dict[str, np.ndarray]]], unknown: list[str]) -> Predictions:
    M = len(rows)
    K = max([r[2]["betas"].size for r in rows if "betas" in r[2]] + [10])
    Nv = {r[2]["vertices"].shape[0] for r in rows if "vertices" in r[2]}
    out = Predictions(
        camera=np.asarray([r[0] for r in rows], np.int64).reshape(M),
        frame=np.asarray([r[1] for r in rows], np.int64).reshape(M),
        has_params=np.zeros(M, bool),
        global_orient=np.zeros((M, 3)), body_pose=np.zeros((M, 69)), betas=np.zeros((M, K)), transl=np.zeros((M, 3)),
        joints=np.zeros((M, NUM_SMPL_JOINTS, 3)),
        vertices=np.zeros((M, Nv.pop(), 3)) if len(Nv) == 1 else None,
        has_vertices=np.zeros(M, bool),
        kp2d=np.zeros((M, NUM_SMPL_JOINTS, 3)), has_kp2d=np.zeros(M, bool),
        unknown_cameras=unknown,
    )
    for i, (_, _, e) in enumerate(rows):
        if "global_orient" in e:
            out.has_params[i] = True
            out.global_orient[i], out.body_pose[i], out.transl[i] = e["global_orient"], e["body_pose"], e["transl"]
            out.betas[i, : e["betas"].size] = e["betas"][:K]
        else:
            out.joints[i] = e["joints"]
            if "vertices" in e and out.vertices is not None:
                out.vertices[i] = e["vertices"]
                out.has_vertices[i] = True
        if "kp2d" in e:
            out.kp2d[i] = e["kp2d"]
            out.has_kp2d[i] = True
    return out


# ============================================================================ matching
def keypoint_boxes(kp: Tensor, ok: Tensor) -> Tensor:
    """``kp [..., J, 2]``, ``ok [..., J]`` -> ``[..., 4]`` min/max box of the usable points (zeros when none)."""
    inf = torch.tensor(float("inf"), dtype=kp.dtype, device=kp.device)
    lo = torch.where(ok[..., None], kp, inf).amin(-2)
    hi = torch.where(ok[..., None], kp, -inf).amax(-2)
    box = torch.cat([lo, hi], -1)
    return torch.where(ok.any(-1)[..., None], box, torch.zeros_like(box))


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of ``[..., 4]`` boxes (x1, y1, x2, y2), broadcast."""
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp_min(0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp_min(0)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0]).clamp_min(0) * (x[..., 3] - x[..., 1]).clamp_min(0)  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def match_2d_greedy(cost: np.ndarray, iou: np.ndarray, gt_ok: np.ndarray, iou_thr: float = IOU_THRESHOLD) -> tuple[list[tuple[int, int]], int]:
    """Greedy matching of one image (the benchmark's ``match_2d_greedy``).

    Args:
        cost: ``[D, P]`` 2D distance of prediction ``d`` to GT person ``p``; iou ``[D, P]``;
        gt_ok: ``[P]`` GT people to match (others are ignored).
    Returns:
        ``(pairs [(d, p), ...], excluded)``: accepted pairs, and the number of predictions
        excluded because their best remaining pair failed the IoU test.
    """
    D, P = cost.shape
    pred_done = np.zeros(D, bool)
    gt_done = ~np.asarray(gt_ok, bool).copy()
    excluded = 0
    c = np.where(gt_done[None, :], np.inf, np.where(np.isfinite(cost), cost, np.inf))
    pairs: list[tuple[int, int]] = []
    order = np.argsort(c, axis=None, kind="stable")
    for flat in order:
        d, p = divmod(int(flat), P)
        if not np.isfinite(c[d, p]):
            break
        if gt_done.all() or pred_done.all():
            break
        if pred_done[d] or gt_done[p]:
            continue
        if iou[d, p] >= iou_thr:
            pairs.append((d, p))
            pred_done[d] = gt_done[p] = True
        else:
            pred_done[d] = True
            excluded += 1
    return pairs, excluded


# ============================================================================ evaluation
@dataclass
class _Acc:
    """Sums over matched person-frames (and counts) of one group."""

    n: int = 0
    gt: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    mpjpe: float = 0.0
    pa_mpjpe: float = 0.0
    mpjpe_abs: float = 0.0
    pve_n: int = 0
    pve: float = 0.0
    pa_pve: float = 0.0
    pck_hits: float = 0.0
    auc_hits: float = 0.0
    pck_n: int = 0

    def add(self, o: "_Acc") -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(o, k))

    def summary(self) -> dict[str, Any]:
        nan = float("nan")
        prec = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        rec = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
        mp = self.mpjpe / self.n if self.n else nan
        pv = self.pve / self.pve_n if self.pve_n else nan
        return {
            "gt_instances": self.gt, "matched": self.tp, "misses": self.fn, "false_positives": self.fp,
            "precision": prec, "recall": rec, "f1": f1,
            "mpjpe_mm": mp, "pa_mpjpe_mm": self.pa_mpjpe / self.n if self.n else nan,
            "pve_mm": pv, "pa_pve_mm": self.pa_pve / self.pve_n if self.pve_n else nan,
            "pck150": self.pck_hits / self.pck_n if self.pck_n else nan,
            "auc": self.auc_hits / (self.pck_n * len(AUC_THRESHOLDS_MM)) if self.pck_n else nan,
            "nmje_mm": mp / f1 if f1 > 0 else nan, "nmve_mm": pv / f1 if f1 > 0 else nan,
            "mpjpe_abs_mm": self.mpjpe_abs / self.n if self.n else nan,
        }


def _project_rows(cams: CameraSet, Xc: Tensor, vidx: Tensor) -> Tensor:
    """Camera-frame points ``Xc [M, J, 3]`` of rows seen by cameras ``vidx [M]`` -> pixels ``[M, J, 2]``."""
    z = Xc[..., 2]
    zs = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    xn = (Xc[..., :2] / zs[..., None]).transpose(0, 1)  # [J, M, 2]: rows on the camera axis
    xd = distort(xn, cams.dist[vidx].to(Xc.dtype), cams.model_id[vidx])
    f = cams.intrinsics[vidx, :2].to(Xc.dtype)
    c = cams.intrinsics[vidx, 2:].to(Xc.dtype)
    return (xd * f + c).transpose(0, 1)


def _per_sample_errors(pj: Tensor, gj: Tensor, pv: Tensor | None, gv: Tensor | None, pve_align: str) -> dict[str, Tensor]:
    """Errors (mm) of matched pairs: joints ``[K, 24, 3]``, vertices ``[K, N, 3]`` or None."""
    out = {
        "mpjpe": mpjpe24(pj, gj, "root"),
        "pa_mpjpe": mpjpe24(pj, gj, "procrustes"),
        "mpjpe_abs": mpjpe24(pj, gj, "none"),
    }
    pr, gr = pj - pj[:, :1], gj - gj[:, :1]
    out["major"] = (pr[:, list(MAJOR_JOINTS)] - gr[:, list(MAJOR_JOINTS)]).norm(dim=-1) * 1000.0  # [K, 12]
    if pv is not None and gv is not None:
        # only rows with a predicted mesh (NaN rows: joints-only predictions)
        have = torch.isfinite(pv).all(-1).all(-1)
        nan = torch.full((pv.shape[0],), float("nan"), dtype=pv.dtype, device=pv.device)
        out["pve"], out["pa_pve"] = nan.clone(), nan.clone()
        if bool(have.any()):
            a, b, ja, jb = pv[have], gv[have], pj[have], gj[have]
            if pve_align == "pelvis":
                e = pve(a, b, "root", ja[:, 0], jb[:, 0])
            elif pve_align == "vertex0":
                e = pve(a, b, "root", a[:, 0], b[:, 0])
            else:
                e = pve(a, b, "none")
            mask = torch.ones(a.shape[:-1], dtype=torch.bool, device=a.device)
            out["pve"][have] = e
            out["pa_pve"][have] = (procrustes_align(a, b, mask) - b).norm(dim=-1).mean(-1) * 1000.0
    return out


def _acc_from(err: dict[str, Tensor], sel: Tensor) -> _Acc:
    a = _Acc()
    n = int(sel.sum())
    if n == 0:
        return a
    a.n = n
    a.mpjpe = float(err["mpjpe"][sel].sum())
    a.pa_mpjpe = float(err["pa_mpjpe"][sel].sum())
    a.mpjpe_abs = float(err["mpjpe_abs"][sel].sum())
    maj = err["major"][sel]
    a.pck_n = int(maj.numel())
    a.pck_hits = float((maj < PCK_THRESHOLD_MM).sum())
    th = torch.tensor(AUC_THRESHOLDS_MM, dtype=maj.dtype, device=maj.device)
    a.auc_hits = float((maj.reshape(-1, 1) < th).sum())
    if "pve" in err:
        ok = sel & torch.isfinite(err["pve"])
        a.pve_n = int(ok.sum())
        a.pve = float(err["pve"][ok].sum())
        a.pa_pve = float(err["pa_pve"][ok].sum())
    return a


def evaluate_sequence(
    seq: Path,
    pred: Path,
    smpl: Path | None = None,
    body_model: str | None = None,
    device: str = "auto",
    pve_align: str = "pelvis",
    iou_threshold: float = IOU_THRESHOLD,
    include_all_gt: bool = False,
    chunk_frames: int = 32,
    name: str | None = None,
    activity: str | None = None,
) -> dict[str, Any]:
    """Evaluate one sequence's predictions (module docstring). Returns a JSON-ready dict with the
    overall figures, ``per_camera`` and the pooled sums (``_acc``, for aggregation)."""
    from ..io.colmap import read_colmap
    from ..io.harmony4d import SequenceLayout

    if pve_align not in PVE_ALIGNS:
        raise ValueError(f"pve_align must be one of {PVE_ALIGNS}, got {pve_align!r}")
    seq = Path(seq)
    dev = resolve_device(device)
    gt = read_sequence_smpl(seq, smpl)
    cams_all = read_colmap(SequenceLayout(seq).colmap, "auto")
    fast = load_fast_body(body_model or gt.body_model, dev)
    dt = fast.dtype
    cams = cams_all.to(device=dev, dtype=dt)
    V, F, P = len(cams), len(gt.frame_ids), len(gt.person_names)
    preds = read_predictions(pred, cams.names, gt.frame_ids)
    fidx = {f: i for i, f in enumerate(gt.frame_ids)}
    row_f = np.asarray([fidx[int(f)] for f in preds.frame], np.int64)
    order = np.argsort(row_f, kind="stable")
    row_f_sorted = row_f[order]
    size = cams.size.to(dev).to(dt)
    N = int(fast.v_template.shape[0])
    gt_verts_stored = gt.vertices is not None and gt.vertices.shape[-2] == N
    pve_note = None
    if preds.vertices is not None and preds.vertices.shape[1] != N and preds.has_vertices.any():
        pve_note = f"predicted vertices have {preds.vertices.shape[1]} points, the ground-truth mesh {N}: PVE over the predictions with SMPL parameters only"
    if gt.vertices is not None and not gt_verts_stored:
        pve_note = f"stored ground-truth meshes have {gt.vertices.shape[-2]} vertices, the body model {N}: recomputed from the parameters"
    per_cam = [_Acc() for _ in range(V)]

    def T(x: np.ndarray) -> Tensor:
        return torch.as_tensor(x, dtype=dt, device=dev)

    with torch.no_grad():
        for f0 in range(0, F, chunk_frames):
            f1 = min(F, f0 + chunk_frames)
            c = f1 - f0
            # ---- ground truth of the chunk, world frame
            gvalid = torch.as_tensor(gt.valid[f0:f1], device=dev)
            n = c * P
            if gt_verts_stored and gt.joints is not None:
                gw_v = T(gt.vertices[f0:f1]).reshape(n, N, 3)
                gw_j = T(gt.joints[f0:f1, :, :NUM_SMPL_JOINTS]).reshape(n, NUM_SMPL_JOINTS, 3)
            else:
                gw_v, gj45 = fast.vertices(T(gt.global_orient[f0:f1]).reshape(n, 3), T(gt.body_pose[f0:f1]).reshape(n, 69),
                                           T(gt.betas[f0:f1]).reshape(n, -1), T(gt.transl[f0:f1]).reshape(n, 3))
                gw_j = gj45[:, :NUM_SMPL_JOINTS]
            gw_j = gw_j.reshape(c, P, NUM_SMPL_JOINTS, 3)
            gw_v = gw_v.reshape(c, P, N, 3)
            g2d, gdepth = cams.project(gw_j)  # [c, P, 24, V, 2], [c, P, 24, V]
            g2d = g2d.permute(0, 3, 1, 2, 4)  # [c, V, P, 24, 2]
            gfront = (gdepth > 0).permute(0, 3, 1, 2)  # [c, V, P, 24]
            gbox = keypoint_boxes(g2d, gfront)  # [c, V, P, 4]
            in_img = (gbox[..., 2] > 0) & (gbox[..., 3] > 0) & (gbox[..., 0] < size[:, 0][None, :, None]) & (gbox[..., 1] < size[:, 1][None, :, None])
            g_ok = gvalid[:, None, :] & (torch.ones_like(in_img) if include_all_gt else (in_img & gfront[..., 0]))  # [c, V, P]
            # ---- predictions of the chunk
            lo, hi = np.searchsorted(row_f_sorted, [f0, f1])
            rows = order[lo:hi]
            M = len(rows)
            pj = T(np.zeros((M, NUM_SMPL_JOINTS, 3)))
            pv = torch.full((M, N, 3), float("nan"), dtype=dt, device=dev) if M else None
            hp = torch.as_tensor(preds.has_params[rows], device=dev)
            if M and bool(hp.any()):
                idx = rows[preds.has_params[rows]]
                v_, j_ = fast.vertices(T(preds.global_orient[idx]), T(preds.body_pose[idx]), T(preds.betas[idx]), T(preds.transl[idx]))
                pj[hp] = j_[:, :NUM_SMPL_JOINTS]
                pv[hp] = v_
            if M and bool((~hp).any()):
                idx = rows[~preds.has_params[rows]]
                pj[~hp] = T(preds.joints[idx])
                if preds.vertices is not None and preds.vertices.shape[1] == N:
                    hv = torch.as_tensor(preds.has_vertices[idx], device=dev)
                    sub = pv[~hp]
                    sub[hv] = T(preds.vertices[idx][preds.has_vertices[idx]])
                    pv[~hp] = sub
            vidx = torch.as_tensor(preds.camera[rows], device=dev)
            lf = torch.as_tensor(row_f[rows] - f0, device=dev)
            if M:
                p2d = _project_rows(cams, pj, vidx)
                pfront = pj[..., 2] > 0
                hk = torch.as_tensor(preds.has_kp2d[rows], device=dev)
                kp = T(preds.kp2d[rows])
                p2d = torch.where(hk[:, None, None], kp[..., :2], p2d)
                pok = torch.where(hk[:, None], kp[..., 2] > 0, pfront)
                pbox = keypoint_boxes(p2d, pok)  # [M, 4]
                gk = g2d[lf, vidx]  # [M, P, 24, 2]
                gf = gfront[lf, vidx]  # [M, P, 24]
                use = gf & pok[:, None, :]
                dist = (p2d[:, None] - gk).norm(dim=-1)
                cost = torch.where(use.any(-1), (dist * use).sum(-1) / use.sum(-1).clamp_min(1), torch.full_like(dist[..., 0], float("inf")))
                iou = box_iou(pbox[:, None], gbox[lf, vidx])  # [M, P]
                cost_np, iou_np = cost.cpu().numpy(), iou.cpu().numpy()
            g_ok_np = g_ok.cpu().numpy()
            # ---- greedy matching per (frame, camera)
            keys = (row_f[rows] - f0) * V + preds.camera[rows] if M else np.zeros(0, np.int64)
            grp_order = np.argsort(keys, kind="stable")
            bounds = np.searchsorted(keys[grp_order], np.arange(c * V + 1))
            match_rows: list[int] = []
            match_f: list[int] = []
            match_p: list[int] = []
            fp = np.zeros(V, np.int64)
            tp = np.zeros(V, np.int64)
            ngt = g_ok_np.sum((0, 2))
            for key in range(c * V):
                a, b = bounds[key], bounds[key + 1]
                if a == b:
                    continue
                fl, v = divmod(key, V)
                sel = grp_order[a:b]
                pairs, _ = match_2d_greedy(cost_np[sel], iou_np[sel], g_ok_np[fl, v], iou_threshold)
                for d, p in pairs:
                    match_rows.append(int(sel[d]))
                    match_f.append(fl)
                    match_p.append(p)
                tp[v] += len(pairs)
                fp[v] += (b - a) - len(pairs)
            for v in range(V):
                per_cam[v].add(_Acc(gt=int(ngt[v]), tp=int(tp[v]), fp=int(fp[v]), fn=int(ngt[v] - tp[v])))
            if not match_rows:
                continue
            mr = torch.as_tensor(match_rows, device=dev)
            mf = torch.as_tensor(match_f, device=dev)
            mp = torch.as_tensor(match_p, device=dev)
            mv = vidx[mr]
            R, t = cams.R[mv], cams.t[mv]  # [K, 3, 3], [K, 3]
            gj_c = torch.einsum("kij,knj->kni", R, gw_j[mf, mp]) + t[:, None]
            gv_c = torch.einsum("kij,knj->kni", R, gw_v[mf, mp]) + t[:, None]
            err = _per_sample_errors(pj[mr], gj_c, pv[mr] if pv is not None else None, gv_c, pve_align)
            for v in torch.unique(mv).tolist():
                per_cam[v].add(_acc_from(err, mv == v))
    total = _Acc()
    for a in per_cam:
        total.add(a)
    rep: dict[str, Any] = {
        "sequence": name or seq.name,
        "activity": activity or seq.resolve().parent.name,
        "cameras": V,
        "frames": F,
        "people": P,
        "predictions": len(preds),
        **total.summary(),
        "per_camera": {cams.names[v]: per_cam[v].summary() for v in range(V)},
        "gt_source": gt.source,
        "_acc": total,
    }
    if preds.unknown_cameras:
        rep["unknown_cameras"] = preds.unknown_cameras
    if pve_note:
        rep["note"] = pve_note
    return rep


# ============================================================================ many sequences
def find_sequences(root: Path) -> list[Path]:
    """Sequence folders under ``root`` (``root`` itself when it is one): folders with ``colmap/workplace``."""
    root = Path(root)
    if (root / "colmap" / "workplace").is_dir():
        return [root]
    out = []
    for dirpath, dirnames, _ in os.walk(root):
        d = Path(dirpath)
        if (d / "colmap" / "workplace").is_dir():
            out.append(d)
            dirnames[:] = []
        else:
            dirnames.sort()
    return sorted(out)


def evaluate(gt: Path, pred: Path, **kw: Any) -> dict[str, Any]:
    """Evaluate one sequence (``gt`` = a sequence folder) or every sequence under a root.

    Returns ``{"protocol", "sequences": [...], "activities": {name: {...}}, "overall": {...}}``.
    """
    gt, pred = Path(gt), Path(pred)
    seqs = find_sequences(gt)
    if not seqs:
        raise InputError(gt, "no sequence folders (with colmap/workplace) here")
    single = len(seqs) == 1 and seqs[0] == gt
    rows = []
    for s in seqs:
        rel = None if single else s.relative_to(gt)
        loc = _pred_location(pred, rel)
        act = (rel.parent.name if rel is not None and rel.parent.name else None)
        rows.append(evaluate_sequence(s, loc, name=str(rel) if rel is not None else s.name, activity=act, **kw))
    acts: dict[str, _Acc] = {}
    total = _Acc()
    for r in rows:
        acts.setdefault(r["activity"], _Acc()).add(r["_acc"])
        total.add(r["_acc"])
    for r in rows:
        r.pop("_acc")
    return {
        "protocol": {
            "iou_threshold": kw.get("iou_threshold", IOU_THRESHOLD), "pve_align": kw.get("pve_align", "pelvis"),
            "pck_threshold_mm": PCK_THRESHOLD_MM, "auc_thresholds_mm": [0, 199], "major_joints": list(MAJOR_JOINTS),
            "mpjpe": "24 SMPL joints, pelvis subtracted, camera frame",
        },
        "sequences": rows,
        "activities": {k: {"sequences": sum(r["activity"] == k for r in rows), **a.summary()} for k, a in sorted(acts.items())},
        "overall": {"sequences": len(rows), **total.summary()},
    }


_COLS = (("MPJPE", "mpjpe_mm", "{:8.1f}"), ("PA-MPJPE", "pa_mpjpe_mm", "{:8.1f}"), ("PVE", "pve_mm", "{:8.1f}"),
         ("PA-PVE", "pa_pve_mm", "{:8.1f}"), ("PCK150", "pck150", "{:7.3f}"), ("AUC", "auc", "{:7.3f}"),
         ("F1", "f1", "{:6.3f}"), ("miss", "misses", "{:6d}"), ("FP", "false_positives", "{:6d}"), ("matched", "matched", "{:8d}"))


def format_table(rep: dict[str, Any]) -> str:
    """The per-sequence and per-activity tables (Markdown)."""

    def row(label: str, d: Mapping[str, Any]) -> str:
        cells = []
        for _, k, fmt in _COLS:
            v = d.get(k)
            cells.append("-" if v is None or (isinstance(v, float) and v != v) else fmt.format(v).strip())
        return f"| {label} | " + " | ".join(cells) + " |"

    head = "| {} | " + " | ".join(c[0] for c in _COLS) + " |"
    sep = "|---" * (len(_COLS) + 1) + "|"
    lines = [head.format("sequence"), sep]
    lines += [row(f"{r['sequence']} ({r['activity']})", r) for r in rep["sequences"]]
    lines += ["", head.format("activity"), sep]
    lines += [row(k, a) for k, a in rep["activities"].items()]
    lines.append(row("**all**", rep["overall"]))
    p = rep["protocol"]
    lines.append("")
    lines.append(f"mm; MPJPE over 24 SMPL joints (pelvis-aligned, camera frame); PVE aligned by {p['pve_align']}; "
                 f"2D greedy matching, box IoU >= {p['iou_threshold']}")
    notes = [f"{r['sequence']}: {r['note']}" for r in rep["sequences"] if "note" in r]
    notes += [f"{r['sequence']}: predictions for unknown cameras ignored: {', '.join(r['unknown_cameras'])}" for r in rep["sequences"] if "unknown_cameras" in r]
    lines += notes
    return "\n".join(lines)


def to_json(rep: dict[str, Any]) -> str:
    from ..io.strict_json import strict_dumps

    return strict_dumps(rep)


__all__ = [
    "AUC_THRESHOLDS_MM",
    "MAJOR_JOINTS",
    "Predictions",
    "SequenceSMPL",
    "box_iou",
    "evaluate",
    "evaluate_sequence",
    "find_sequences",
    "format_table",
    "keypoint_boxes",
    "load_fast_body",
    "match_2d_greedy",
    "read_predictions",
    "read_sequence_smpl",
    "smpl_to_camera",
    "to_json",
]
