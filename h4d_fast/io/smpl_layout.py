"""The Harmony4D SMPL export layout: per-frame files plus one batched ``sequence.npz``.

Layout under one folder ``D`` (the sequence's ``processed_data``)::

    D/smpl/%05d.npy           dict person -> {global_orient (3,), transl (3,), body_pose (69,),
                              betas (K,), vertices (N, 3), joints (45, 3)}   float32, and the body
                              model's identity: body_model_sha256, body_model_gender,
                              body_model_num_betas (:func:`body_model_fields`)
    D/poses3d/%05d.npy        dict person -> (17, 4) COCO [x, y, z, valid] of the fitted model
    D/poses2d/<cam>/%05d.npy  dict person -> (45, 2) projected SMPL-45 joints (pixels; NaN for
                              joints behind the camera)
    D/bbox/<cam>/%05d.npy     dict person -> [x1, y1, x2, y2] int64, min/max of the projected
                              vertices rounded outward, not clipped to the image (a person with
                              no vertex in front of the camera is left out of that file)
    D/smpl_cam/<cam>/%05d.npy dict person -> {global_orient, transl (that camera's frame), body_pose,
                              betas, world_to_camera (4, 4), body_model_sha256, body_model_gender,
                              body_model_num_betas}   (h4d_fast.body.camera_frame)
    D/contact/%05d.npy        dict "a-b" -> {people, contact bool (2, N), regions}   (h4d_fast.io.contact)
    D/contact.npz             the sequence's contact labels, sparse (h4d_fast.io.contact)
    D/sequence.npz            everything batched, float32 (keys: :data:`NPZ_KEYS`)

Harmony4D's released ``smpl/%05d.npy`` files have the same per-person dicts (plus
``epoch_loss``); some copies lack ``vertices``/``joints``. :func:`read_smpl_sequence` reads both
forms (:func:`h4d_fast.body.fast.with_meshes` recomputes missing meshes with a body model).

Every file is written atomically (:mod:`h4d_fast.io.atomic`); many small files go through a
thread pool.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError
from .atomic import write_npy, write_npz
from .detections import parallel_map
from .npy import read_npy
from .parallel import for_each_file

SMPL_PARAM_KEYS: tuple[str, ...] = ("global_orient", "transl", "body_pose", "betas")
NPZ_NAME = "sequence.npz"
NPZ_KEYS: tuple[str, ...] = (
    "frame_ids",  # [F] int64
    "person_names",  # [P] str
    "camera_names",  # [V] str (may be empty)
    "global_orient",  # [F, P, 3]
    "body_pose",  # [F, P, 69]
    "betas",  # [F, P, K]
    "transl",  # [F, P, 3]
    "vertices",  # [F, P, N, 3] (optional)
    "joints",  # [F, P, 45, 3]
    "poses3d",  # [F, P, 17, 4]
    "poses2d",  # [V, F, P, 45, 2] (optional)
    "bbox",  # [V, F, P, 4] float (NaN where the person is behind the camera) (optional)
    "valid",  # [F, P] bool: who is in which frame
    "cam_global_orient",  # [V, F, P, 3] global_orient in each camera's frame (with cameras; h4d_fast.body.camera_frame)
    "cam_transl",  # [V, F, P, 3] transl in each camera's frame, metres (with cameras)
    "world_to_camera",  # [V, 4, 4] metric world -> camera (with cameras)
    "scale_convention",  # [1] str: no scale in world_to_camera (scale.npy already applied to the world)
    "body_model_sha256",  # [1] str: the body model file's hash (also _gender, _num_betas, _num_vertices, _file)
    "contact_index",  # [K, 4] int32 (frame, pair, side, vertex) touching (with contact; h4d_fast.io.contact.sequence_contact_arrays)
)


def _frame_files(folder: Path) -> dict[int, Path]:
    out: dict[int, Path] = {}
    if not folder.is_dir():
        return out
    for e in os.scandir(folder):
        stem, x = os.path.splitext(e.name)
        if x.lower() == ".npy" and stem.isdigit():
            out[int(stem)] = Path(e.path)
    return out


# ----------------------------------------------------------------------------- writing
def remove_stale_frames(folder: Path, keep: set[int]) -> int:
    """Delete ``%05d.npy`` files of ``folder`` whose frame is not in ``keep`` (a rewritten
    sequence must not show frames of an earlier, longer write). Returns the number removed."""
    n = 0
    for fid, path in _frame_files(Path(folder)).items():
        if fid not in keep:
            path.unlink()
            n += 1
    return n


def write_person_frames(
    folder: Path,
    frame_ids: Sequence[int],
    person_names: Sequence[str],
    per_frame: Any,
    workers: int | None = None,
) -> None:
    """Write ``folder/%05d.npy`` = ``per_frame(f)`` (a dict person -> value) for each frame index.

    Args:
        per_frame: a callable ``f -> dict`` or an array ``[F, P, ...]`` (then every person is
            written, as float32 copies).
    """
    folder = Path(folder)
    if callable(per_frame):
        make = per_frame
    else:
        arr = np.asarray(per_frame)

        def make(f: int) -> dict:
            return {name: np.ascontiguousarray(arr[f, p]) for p, name in enumerate(person_names)}

    folder.mkdir(parents=True, exist_ok=True)
    for_each_file(lambda f: write_npy(folder / f"{int(frame_ids[f]):05d}.npy", make(f)), range(len(frame_ids)), workers)


BODY_MODEL_FIELDS: tuple[str, ...] = ("sha256", "gender", "num_betas")
"""The body model's identity in every per-person dict of ``smpl/`` and ``smpl_cam/`` (as
``body_model_<field>``): what reproduces the vertices from the parameters."""


def body_model_fields(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """``{"body_model_sha256": str, "body_model_gender": str, "body_model_num_betas": int}`` from a
    ``sequence.npz``'s ``body_model_*`` arrays (:func:`h4d_fast.body.camera_frame.body_model_identity`);
    the fields it lacks are left out."""
    out: dict[str, Any] = {}
    for k in BODY_MODEL_FIELDS:
        a = arrays.get(f"body_model_{k}")
        if a is not None:
            x = np.asarray(a).reshape(-1)[0]
            out[f"body_model_{k}"] = int(x) if k == "num_betas" else str(x)
    return out


def smpl_frame_dict(arrays: Mapping[str, np.ndarray], f: int, person_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The ``smpl/%05d.npy`` dict of frame index ``f`` from batched ``[F, P, ...]`` arrays
    (``betas`` may be ``[P, K]``), with the body model's identity (:func:`body_model_fields`)."""
    ident = body_model_fields(arrays)
    out: dict[str, dict[str, Any]] = {}
    for p, name in enumerate(person_names):
        d: dict[str, Any] = {}
        for k in ("global_orient", "transl", "body_pose", "betas", "vertices", "joints"):
            if k not in arrays or arrays[k] is None:
                continue
            a = arrays[k]
            v = a[p] if (k == "betas" and a.ndim == 2) else a[f, p]
            d[k] = np.ascontiguousarray(v, dtype=np.float32)
        d.update(ident)
        out[name] = d
    return out


def write_sequence_npz(folder: Path, **arrays: Any) -> Path:
    """``folder/sequence.npz`` with the given batched arrays (floats as float32)."""
    out = {}
    for k, v in arrays.items():
        if v is None:
            continue
        a = np.asarray(v)
        if a.dtype.kind == "f":
            a = a.astype(np.float32, copy=False)
        elif a.dtype.kind in "OU":
            a = np.asarray([str(x) for x in a.reshape(-1)])
        out[k] = a
    path = Path(folder) / NPZ_NAME
    write_npz(path, **out)
    return path


# ----------------------------------------------------------------------------- reading
def _vec(x: Any, path: Path, name: str, key: str) -> np.ndarray:
    try:
        return np.asarray(x, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(path, f"expected a numeric array, got {type(x).__name__}", f"{name}.{key}") from None


def _person_params(d: Mapping[str, Any], path: Path, name: str) -> dict[str, np.ndarray]:
    """Normalise one released per-person dict to flat ``global_orient (3), body_pose (69),
    betas (K), transl (3)`` (+ ``vertices``, ``joints`` when present)."""
    out: dict[str, np.ndarray] = {}
    pose = _vec(d["pose"], path, name, "pose") if "pose" in d else None
    if "global_orient" in d:
        out["global_orient"] = _vec(d["global_orient"], path, name, "global_orient")
    elif pose is not None and pose.size == 72:
        out["global_orient"] = pose[:3]
    if "body_pose" in d:
        out["body_pose"] = _vec(d["body_pose"], path, name, "body_pose")
    elif pose is not None and pose.size == 72:
        out["body_pose"] = pose[3:]
    for k in ("betas", "transl"):
        if k in d:
            out[k] = _vec(d[k], path, name, k)
    for k, n in (("global_orient", 3), ("body_pose", 69), ("transl", 3)):
        if k not in out:
            if k == "transl":
                out[k] = np.zeros(3)
                continue
            raise InputError(path, f"missing {k!r} (keys: {', '.join(map(str, d.keys()))})", repr(name))
        if out[k].size != n:
            raise InputError(path, f"expected {n} values, got {out[k].size}", f"{name}.{k}")
    if "betas" not in out:
        raise InputError(path, f"missing 'betas' (keys: {', '.join(map(str, d.keys()))})", repr(name))
    for k in ("vertices", "joints"):
        if k in d and d[k] is not None:
            try:
                a = np.asarray(d[k], dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(path, "expected a numeric array", f"{name}.{k}") from None
            out[k] = a.reshape(-1, 3)
    return out


def read_smpl_frames(folder: Path, person_names: Sequence[str] | None = None, workers: int | None = None) -> dict[str, Any]:
    """Read per-frame ``%05d.npy`` SMPL dicts (ours or Harmony4D's released ones).

    Returns:
        ``frame_ids [F]``, ``person_names``, ``valid [F, P]`` (the person is in the frame's
        file), ``global_orient [F, P, 3]``, ``body_pose [F, P, 69]``, ``betas [F, P, K]``,
        ``transl [F, P, 3]`` (float32; zeros where invalid), and ``vertices [F, P, N, 3]`` /
        ``joints [F, P, J, 3]`` only when every valid entry has them with one shape.
    """
    folder = Path(folder)
    files = _frame_files(folder)
    if not files:
        raise InputError(folder, "no SMPL frame files (00001.npy ...)")
    fids = sorted(files)
    objs = parallel_map(lambda f: read_npy(files[f]), fids, workers)
    for fid, o in zip(fids, objs):
        if not isinstance(o, dict):
            raise InputError(files[fid], f"expected a dict person name -> SMPL dict, got {type(o).__name__}")
    names = list(person_names) if person_names is not None else sorted({str(k) for o in objs for k in o})
    F, P = len(fids), len(names)
    parsed: list[list[dict[str, np.ndarray] | None]] = []
    for fid, o in zip(fids, objs):
        by = {str(k): v for k, v in o.items()}
        row = []
        for n in names:
            if n in by:
                if not isinstance(by[n], dict):
                    raise InputError(files[fid], f"expected a dict of SMPL arrays, got {type(by[n]).__name__}", repr(n))
                row.append(_person_params(by[n], files[fid], n))
            else:
                row.append(None)
        parsed.append(row)
    K = max((e["betas"].size for row in parsed for e in row if e is not None), default=10)
    out: dict[str, Any] = {
        "frame_ids": np.asarray(fids, dtype=np.int64),
        "person_names": names,
        "valid": np.zeros((F, P), dtype=bool),
        "global_orient": np.zeros((F, P, 3), np.float32),
        "body_pose": np.zeros((F, P, 69), np.float32),
        "betas": np.zeros((F, P, K), np.float32),
        "transl": np.zeros((F, P, 3), np.float32),
    }
    for f, row in enumerate(parsed):
        for p, e in enumerate(row):
            if e is None:
                continue
            out["valid"][f, p] = True
            for k in ("global_orient", "body_pose", "transl"):
                out[k][f, p] = e[k]
            out["betas"][f, p, : e["betas"].size] = e["betas"][:K]
    for k in ("vertices", "joints"):
        shapes = {e[k].shape if k in e else None for row in parsed for e in row if e is not None}
        if len(shapes) == 1 and None not in shapes:
            (shape,) = shapes
            a = np.zeros((F, P, *shape), np.float32)
            for f, row in enumerate(parsed):
                for p, e in enumerate(row):
                    if e is not None:
                        a[f, p] = e[k]
            out[k] = a
    return out


def _read_npz(path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - any unreadable archive
        raise InputError(path, f"not a readable .npz file ({type(e).__name__}: {e})") from None
    for k in ("global_orient", "body_pose", "betas", "transl"):
        if k not in d:
            raise InputError(path, f"missing array {k!r}")
    out: dict[str, Any] = dict(d)
    out["person_names"] = [str(x) for x in d.get("person_names", np.asarray([]))]
    out["camera_names"] = [str(x) for x in d.get("camera_names", np.asarray([]))]
    F, P = d["global_orient"].shape[:2]
    if out["betas"].ndim == 2:
        out["betas"] = np.broadcast_to(out["betas"][None], (F, *out["betas"].shape)).copy()
    out.setdefault("valid", np.ones((F, P), dtype=bool))
    return out


def read_smpl_sequence(folder: Path, person_names: Sequence[str] | None = None, prefer: str = "npz") -> dict[str, Any]:
    """Batched SMPL results of a sequence.

    Args:
        folder: a ``processed_data`` folder (with ``sequence.npz`` and/or ``smpl/``) or an
            ``smpl`` folder of per-frame files itself.
        person_names: people to read from per-frame files, in this order (default: all, sorted).
        prefer: ``"npz"`` (use ``sequence.npz`` when present) or ``"files"``.
    Returns:
        dict with ``frame_ids``, ``person_names``, ``valid [F, P]``, ``global_orient``,
        ``body_pose``, ``betas [F, P, K]``, ``transl`` and, when stored, ``vertices``, ``joints``
        (:func:`h4d_fast.body.fast.with_meshes` computes them where they are not) (plus ``poses3d``/``poses2d``/``bbox``/``camera_names`` from
        the npz).
    """
    folder = Path(folder)
    npz = folder / NPZ_NAME
    smpl_dir = folder / "smpl"
    if prefer not in ("npz", "files"):
        raise ValueError(f"prefer must be 'npz' or 'files', got {prefer!r}")
    if npz.is_file() and (prefer == "npz" or not (smpl_dir.is_dir() or _frame_files(folder))):
        out = _read_npz(npz)
    elif smpl_dir.is_dir():
        out = read_smpl_frames(smpl_dir, person_names)
    elif _frame_files(folder):
        out = read_smpl_frames(folder, person_names)
    else:
        raise InputError(folder, f"no {NPZ_NAME} and no SMPL frame files (smpl/00001.npy ...)")
    return out


__all__ = [
    "BODY_MODEL_FIELDS",
    "NPZ_KEYS",
    "NPZ_NAME",
    "body_model_fields",
    "SMPL_PARAM_KEYS",
    "read_smpl_frames",
    "read_smpl_sequence",
    "remove_stale_frames",
    "smpl_frame_dict",
    "write_person_frames",
    "write_sequence_npz",
]
