"""Per-frame Harmony4D files derived from a consolidated ``.npz``, written in the background.

An export writes its consolidated file first (``sequence.npz``, ``poses3d.npz``: every array of
the sequence, batched), then hands the per-frame files of :mod:`h4d_fast.io.smpl_layout`'s layout
to :func:`write_frame_files`: worker processes of :func:`~h4d_fast.io.parallel.write_pool` map the
consolidated file's arrays (``np.savez`` stores them uncompressed, so each member is a plain
``.npy`` at an offset of the file: nothing is copied or pickled between processes) and write their
share of the ``%05d.npy`` files, each atomically. The caller gets a :class:`PendingFiles` at once
and carries on (``run-many`` computes the next capture meanwhile); :meth:`PendingFiles.wait`
returns when every file is on disk and raises the first failure as an
:class:`~h4d_fast.errors.OutputError` naming the file.

Kinds of per-frame files (the dicts are those of ``smpl_layout``'s docstring):

* ``smpl``    -- ``OUT/smpl/%05d.npy``: person -> {global_orient, transl, body_pose, betas[, vertices], joints,
  body_model_sha256, body_model_gender, body_model_num_betas} (the identity from the npz's ``body_model_*``)
* ``poses3d`` -- ``OUT/poses3d/%05d.npy``: person -> (17, 4) (from the npz array ``poses3d``)
* ``poses2d`` -- ``OUT/poses2d/<cam>/%05d.npy``: person -> (45, 2)
* ``bbox``    -- ``OUT/bbox/<cam>/%05d.npy``: person -> int64 [x1, y1, x2, y2] (people behind the camera left out)
* ``smpl_cam`` -- ``OUT/smpl_cam/<cam>/%05d.npy``: person -> {global_orient, transl (that camera's
  frame, metres), body_pose, betas, world_to_camera (4, 4), body_model_sha256, body_model_gender,
  body_model_num_betas} (from the npz arrays ``cam_global_orient``, ``cam_transl``, ``world_to_camera``,
  ``body_model_*``; :mod:`h4d_fast.body.camera_frame`)
* ``contact`` -- ``OUT/contact/%05d.npy``: ``"a-b"`` -> {people [a, b], contact bool [2, N], regions
  [[a's parts], [b's parts]]} per pair of people (:func:`h4d_fast.io.contact.contact_frame_from_arrays`;
  from the npz arrays ``contact_index`` ...)

A person absent from a frame (``valid [F, P]`` of ``sequence.npz``, ``present [F, P]`` of
``poses3d.npz``) has no entry in that frame's files.

Before writing, each folder loses the ``%05d.npy`` files of frames not in the new set (a
rewritten sequence must not show frames of an earlier, longer write).
"""

from __future__ import annotations

import mmap
import os
import struct
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import OutputError
from . import faults
from .atomic import npy_bytes, write_bytes_in
from .parallel import MIN_ITEMS_FOR_PROCESSES, shards, write_pool

__all__ = ["FrameJob", "PendingFiles", "bbox_frame_dict", "npz_members", "write_frame_files"]

KINDS = ("smpl", "poses3d", "poses2d", "bbox", "smpl_cam", "contact")
_PER_CAMERA = ("poses2d", "bbox", "smpl_cam")
_PER_SEQUENCE = ("smpl", "poses3d", "contact")  # one folder; the others have one per camera


@dataclass(frozen=True)
class FrameJob:
    """What a worker needs to write a range of one kind of per-frame files (picklable, small)."""

    npz: str  # the consolidated file
    out: str  # the layout folder (e.g. OUT/processed_data)
    frame_ids: tuple[int, ...]
    names: tuple[str, ...]
    cameras: tuple[str, ...] = ()


def npz_members(path: str | Path) -> dict[str, np.ndarray]:
    """Read-only arrays of an uncompressed ``.npz`` (``np.savez`` / :func:`~h4d_fast.io.atomic.write_npz`),
    mapped from the file instead of read; a compressed member is read the usual way, a pickled
    (object) member is left out (never unpickled)."""
    path = str(path)
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size else None
        for info in zf.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            arr = _mapped_member(mm, info) if mm is not None and info.compress_type == zipfile.ZIP_STORED else None
            if arr is None:
                with zf.open(info) as m:
                    try:
                        arr = np.lib.format.read_array(m, allow_pickle=False)
                    except ValueError:  # an object array
                        continue
            out[key] = arr
    return out


def _mapped_member(mm: mmap.mmap, info: zipfile.ZipInfo) -> np.ndarray | None:
    """The array of a stored member as a view of the mapped file (None: not a plain .npy)."""
    off = info.header_offset
    if mm[off : off + 4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack("<HH", mm[off + 26 : off + 30])
    start = off + 30 + name_len + extra_len
    if mm[start : start + 6] != b"\x93NUMPY":
        return None
    major = mm[start + 6]
    hsize = 4 if major >= 2 else 2
    hlen = int.from_bytes(mm[start + 8 : start + 8 + hsize], "little")
    header = mm[start + 8 + hsize : start + 8 + hsize + hlen].decode("utf8" if major == 3 else "latin1")
    import ast

    d = ast.literal_eval(header)
    dtype = np.lib.format.descr_to_dtype(d["descr"])
    if dtype.hasobject:
        return None
    shape = tuple(int(x) for x in d["shape"])
    count = int(np.prod(shape)) if shape else 1
    data = start + 8 + hsize + hlen
    arr = np.frombuffer(mm, dtype=dtype, count=count, offset=data)
    return arr.reshape(shape, order="F" if d["fortran_order"] else "C")


def bbox_frame_dict(box: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``box [P, 4]`` float (NaN where no vertex is in front of the camera) -> ``{person: int64
    [x1, y1, x2, y2]}`` rounded outward; a person behind the camera is left out."""
    lo = np.floor(box[..., :2])
    hi = np.ceil(box[..., 2:])
    ok = np.isfinite(box).all(-1)
    ib = np.concatenate([np.where(np.isfinite(lo), lo, 0), np.where(np.isfinite(hi), hi, 0)], -1).astype(np.int64)
    return {n: ib[p].copy() for p, n in enumerate(names) if ok[p]}


def _frame_object(kind: str, arrays: dict[str, np.ndarray], job: FrameJob, v: int, f: int) -> tuple[str, Any]:
    from .smpl_layout import smpl_frame_dict

    name = f"{job.frame_ids[f]:05d}.npy"
    names = job.names
    # who is in the frame: sequence.npz stores it as ``valid``, poses3d.npz as ``present`` ([F, P])
    pres = arrays.get("valid", arrays.get("present"))
    here = None if pres is None or bool(pres[f].all()) else {n for p, n in enumerate(names) if pres[f, p]}

    def only_present(d: dict) -> dict:
        return d if here is None else {n: x for n, x in d.items() if n in here}

    if kind == "smpl":
        return os.path.join(job.out, "smpl", name), only_present(smpl_frame_dict(arrays, f, names))
    if kind == "contact":
        from .contact import contact_frame_from_arrays

        return os.path.join(job.out, "contact", name), contact_frame_from_arrays(arrays, f, names, None if pres is None else pres[f])
    if kind == "poses3d":
        p3 = arrays["poses3d"]
        return os.path.join(job.out, "poses3d", name), only_present({n: np.ascontiguousarray(p3[f, p]) for p, n in enumerate(names)})
    cam = job.cameras[v]
    if kind == "smpl_cam":
        return os.path.join(job.out, "smpl_cam", cam, name), only_present(_smpl_cam_dict(arrays, v, f, names))
    if kind == "poses2d":
        uv = arrays["poses2d"]
        return os.path.join(job.out, "poses2d", cam, name), only_present({n: np.ascontiguousarray(uv[v, f, p]) for p, n in enumerate(names)})
    return os.path.join(job.out, "bbox", cam, name), only_present(bbox_frame_dict(arrays["bbox"][v, f], names))


def _smpl_cam_dict(arrays: dict[str, np.ndarray], v: int, f: int, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per person the SMPL parameters in camera ``v``'s frame, its world-to-camera 4x4 and the body model's identity."""
    from .smpl_layout import body_model_fields

    ident = body_model_fields(arrays)
    w2c = np.ascontiguousarray(arrays["world_to_camera"][v], dtype=np.float32)
    be = arrays["betas"]
    out = {}
    for p, n in enumerate(names):
        out[n] = {"global_orient": np.ascontiguousarray(arrays["cam_global_orient"][v, f, p], dtype=np.float32),
                  "transl": np.ascontiguousarray(arrays["cam_transl"][v, f, p], dtype=np.float32),
                  "body_pose": np.ascontiguousarray(arrays["body_pose"][f, p], dtype=np.float32),
                  "betas": np.ascontiguousarray(be[p] if be.ndim == 2 else be[f, p], dtype=np.float32),
                  "world_to_camera": w2c, **ident}
    return out


def _folder(job: FrameJob, kind: str, v: int) -> str:
    return os.path.join(job.out, kind) if kind in _PER_SEQUENCE else os.path.join(job.out, kind, job.cameras[v])


def _clean_folder(folder: str, keep: set[int]) -> None:
    from .smpl_layout import remove_stale_frames

    remove_stale_frames(Path(folder), keep)


def write_range(job: FrameJob, tasks: Sequence[tuple[str, int, int, int]]) -> tuple[int, str | None, str | None]:
    """Write ``(kind, camera, first frame, end frame)`` ranges of ``job``; ``kind == "clean"``
    removes stale frames of the folder ``(kind, camera)`` names instead. Returns ``(files written,
    failing path, error)`` (errors as text: this package's exceptions do not all pickle)."""
    arrays: dict[str, np.ndarray] | None = None
    n = 0
    path = None
    try:
        for kind, v, lo, hi in tasks:
            if kind.startswith("clean:"):
                path = _folder(job, kind[6:], v)
                _clean_folder(path, set(job.frame_ids))
                continue
            if arrays is None:
                path = job.npz
                arrays = npz_members(job.npz)
            made: set[str] = set()
            for f in range(lo, hi):
                path, obj = _frame_object(kind, arrays, job, v, f)
                folder, name = os.path.split(path)
                if folder not in made:  # one folder check per range, then the short write path
                    os.makedirs(folder, exist_ok=True)
                    made.add(folder)
                write_bytes_in(folder, name, npy_bytes(obj))
                n += 1
                faults.point(f"write:{n}", job.out)
    except Exception as e:  # noqa: BLE001 - reported to the owner, raised there
        where = getattr(e, "path", None)
        return n, str(where if where is not None else path), f"{type(e).__name__}: {e}"
    return n, None, None


class PendingFiles:
    """Per-frame files being written (see :func:`write_frame_files`)."""

    def __init__(self, futures: list[Any], files: int, t0: float):
        self.futures = futures
        self.files = files
        self.t0 = t0
        self.seconds: float | None = None if futures else 0.0
        self._error: tuple[str | None, str] | None = None

    def done(self) -> bool:
        return all(f.done() for f in self.futures)

    def wait(self) -> float:
        """Block until every file is written; returns the seconds since the writes were handed
        over. Raises :class:`OutputError` naming the first file that failed."""
        for fut in self.futures:
            _, path, err = fut.result()
            if err is not None and self._error is None:
                self._error = (path, err)
        self.futures = []
        if self.seconds is None:
            self.seconds = time.perf_counter() - self.t0
        if self._error is not None:
            raise OutputError(self._error[0] or "<per-frame files>", self._error[1])
        return self.seconds

    @staticmethod
    def merged(parts: Sequence["PendingFiles"]) -> "PendingFiles":
        futs = [f for p in parts for f in p.futures]
        out = PendingFiles(futs, sum(p.files for p in parts), min((p.t0 for p in parts), default=time.perf_counter()))
        out._error = next((p._error for p in parts if p._error is not None), None)
        return out


class _Done:
    """A completed future (the in-process path)."""

    def __init__(self, value: Any):
        self.value = value

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        return self.value


def _min_pool_files() -> int:
    """Fewest files that go to the write pool: ``MIN_ITEMS_FOR_PROCESSES``, or ``H4D_WRITE_POOL_MIN_FILES``
    (the tests send small captures through the pool with it)."""
    try:
        return int(os.environ.get("H4D_WRITE_POOL_MIN_FILES", ""))
    except ValueError:
        return MIN_ITEMS_FOR_PROCESSES


def write_frame_files(
    npz: str | Path,
    out: str | Path,
    kinds: Sequence[str],
    frame_ids: Sequence[int],
    names: Sequence[str],
    cameras: Sequence[str] = (),
    workers: int | None = None,
) -> PendingFiles:
    """Write the per-frame files of ``kinds`` under ``out`` from the arrays of ``npz``.

    Args:
        npz: the consolidated file (already complete on disk).
        out: the layout folder; its ``smpl/``, ``poses3d/``, ``poses2d/<cam>/`` and ``bbox/<cam>/``
            are created here (and ``smpl_cam/<cam>/``, ``contact/``).
        kinds: a subset of :data:`KINDS` (the camera kinds ``poses2d``, ``bbox`` need ``cameras``;
            ``contact`` needs the npz's contact arrays).
        workers: ``1`` writes everything here before returning; by default jobs of at least
            ``MIN_ITEMS_FOR_PROCESSES`` files go to the write pool (in the background).
    Returns:
        :class:`PendingFiles` (already done when written here).
    """
    t0 = time.perf_counter()
    job = FrameJob(str(npz), str(out), tuple(int(f) for f in frame_ids), tuple(str(n) for n in names), tuple(str(c) for c in cameras))
    F = len(job.frame_ids)
    per_cam = [k for k in kinds if k in _PER_CAMERA]
    units: list[tuple[str, int]] = [(k, 0) for k in kinds if k in _PER_SEQUENCE]
    units += [(k, v) for v in range(len(job.cameras)) for k in per_cam]
    for k, v in units:
        os.makedirs(_folder(job, k, v), exist_ok=True)
    n_files = F * len(units)
    pool = write_pool()
    use_pool = pool.usable() and (workers is None and n_files >= _min_pool_files() or (workers or 0) > 1)
    cleans = [(f"clean:{k}", v, 0, 0) for k, v in units]
    if not use_pool:
        res = write_range(job, cleans + [(k, v, 0, F) for k, v in units])
        return PendingFiles([_Done(res)], n_files, t0)
    # about four tasks per worker, each a run of frames of one (kind, camera)
    parts = max(1, 4 * pool.workers)
    tasks: list[list[tuple[str, int, int, int]]] = []
    per_unit = max(1, -(-parts // max(1, len(units))))
    for k, v in units:
        for lo, hi in shards(F, per_unit, min_size=16):
            tasks.append([(k, v, lo, hi)])
    if len(tasks) > parts:  # many small units (many cameras): group neighbours
        step = -(-len(tasks) // parts)
        tasks = [[t for g in tasks[i : i + step] for t in g] for i in range(0, len(tasks), step)]
    tasks[0] = cleans + tasks[0]  # cleaning touches other frames than the writes: any order is safe
    futures = [pool.submit(write_range, job, t) for t in tasks]
    return PendingFiles(futures, n_files, t0)
