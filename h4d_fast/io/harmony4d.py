"""The Harmony4D sequence folder: read a whole :class:`~h4d_fast.data.Capture`, write one back.

Layout of one sequence ``SEQ`` (frame files count from ``00001``)::

    SEQ/exo/camXX/images/%05d.jpg                    images (optional, never read here)
    SEQ/colmap/workplace/cameras.txt, images.txt, points3D.txt, scale.npy
    SEQ/processed_data/bboxes/camXX/rgb/%05d.npy     identity boxes (optional; the lowest-numbered
                                                     file is read): dict person -> [x1, y1, x2, y2, score]
    SEQ/processed_data/poses2d/camXX/rgb/%05d.npy    2D detections (or .json; see io.detections)
    SEQ/processed_data/poses3d/%05d.npy              3D keypoints: dict person -> (17, 4) [x, y, z, valid]
    SEQ/ground_truth/poses3d.npy [F, P, 17, 4], meta.json, smpl.npz   (synthetic captures only)

A camera's detection folder is ``poses2d/camXX/rgb`` when that exists, else ``poses2d/camXX``
itself; ``poses2d/camXX.json`` (one whole-camera COCO file) is accepted too.

Units: 3D is metric through ``colmap/workplace/scale.npy``; a sequence without it is an InputError
unless ``--assume-metric`` (``run.assume_metric``; then a logged, recorded warning). Sequences the
project writes (synth, import, demo: :func:`write_sequence` / ``colmap.write_colmap``) always
carry ``scale.npy``, the identity when their cameras are metric. Fewer than 2 cameras: InputError.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..constants import DEFAULT_PERSON_NAMES, NUM_COCO
from ..errors import InputError
from .atomic import write_json, write_npy, write_npz
from .colmap import camera_token
from .npy import read_npy
from .parallel import for_each_file, read_pool, shards
from .sequence_checks import check_metric_scale, check_two_views
from .detections import (
    CameraSource,
    LoadReport,
    open_camera_source,
    parallel_map,
    read_json,
    unpack_detections,
    write_frame_json,
    write_frame_npy,
)

if TYPE_CHECKING:  # torch (and the modules built on it) load when a capture is assembled, not at import
    from torch import Tensor

    from ..data import Capture, GroundTruth

__all__ = [
    "SequenceLayout",
    "SequenceLoad",
    "read_ground_truth",
    "read_init_boxes",
    "read_meta",
    "read_poses3d",
    "check_metric_scale",
    "read_sequence",
    "start_read",
    "write_poses3d",
    "write_sequence",
]

log = logging.getLogger("h4d_fast.io")


@dataclass(frozen=True)
class SequenceLayout:
    """The paths of one sequence folder."""

    root: Path

    @property
    def colmap(self) -> Path:
        return self.root / "colmap" / "workplace"

    @property
    def processed(self) -> Path:
        return self.root / "processed_data"

    @property
    def poses2d(self) -> Path:
        return self.processed / "poses2d"

    @property
    def bboxes(self) -> Path:
        return self.processed / "bboxes"

    @property
    def poses3d(self) -> Path:
        return self.processed / "poses3d"

    @property
    def ground_truth(self) -> Path:
        return self.root / "ground_truth"

    def images(self, camera: str) -> Path:
        return self.root / "exo" / camera / "images"

    def detection_source(self, camera: str) -> Path:
        """The camera's detection folder (``camXX/rgb`` if present, else ``camXX``) or ``camXX.json``."""
        d = self.poses2d / camera
        if (d / "rgb").is_dir():
            return d / "rgb"
        if not d.exists() and (self.poses2d / f"{camera}.json").is_file():
            return self.poses2d / f"{camera}.json"
        return d

    def bbox_folder(self, camera: str) -> Path:
        d = self.bboxes / camera
        return d / "rgb" if (d / "rgb").is_dir() or not d.is_dir() else d

    def detection_cameras(self) -> list[str]:
        """Camera names that have a detection folder (or whole-camera JSON) under ``poses2d``."""
        out = set()
        for e in os.scandir(self.poses2d):
            name = e.name[:-5] if e.is_file() and e.name.lower().endswith(".json") else e.name
            if (e.is_dir() or e.name.lower().endswith(".json")) and camera_token(name) == name:
                out.add(name)
        return sorted(out)


def _frame_files(folder: Path, ext: str = ".npy") -> dict[int, Path]:
    out: dict[int, Path] = {}
    if not folder.is_dir():
        return out
    for e in os.scandir(folder):
        stem, x = os.path.splitext(e.name)
        if x.lower() == ext and stem.isdigit():
            out[int(stem)] = Path(e.path)
    return out


# ------------------------------------------------------------------ reading
#: below this many detection files a load parses them in the calling process
MIN_FILES_FOR_POOL = 2000


def read_sequence(
    seq: Path,
    cameras: Sequence[str] | None = None,
    frames: slice | None = None,
    report: LoadReport | None = None,
    workers: int | None = None,
    assume_metric: bool | None = None,
) -> Capture:
    """Read a sequence folder into a :class:`Capture` (metric float64 cameras, float32 detections).

    Args:
        seq: the sequence folder.
        cameras: cameras to load, in this order (default: all, sorted; then the cameras in COLMAP
            and the detection folders must be the same set).
        frames: positions in the sorted list of frame ids to keep (``slice(0, 10)`` = the first ten
            frames, normally ``00001..00010``). Frame ids are the union over cameras.
        report: collects data gaps (NaN keypoints zeroed) and frame files missing for some cameras
            (those view-frames get no detections). Both are also logged as warnings.
        workers: ``1`` parses every file in this process; by default a capture of at least
            :data:`MIN_FILES_FOR_POOL` files is parsed by the worker processes of
            :func:`~h4d_fast.io.parallel.read_pool` (parsing holds the GIL, so threads do not help).
        assume_metric: what to do without ``colmap/workplace/scale.npy`` (see
            :func:`check_metric_scale`): ``False`` raises, ``True`` warns (in ``report`` and the
            log) and reads the COLMAP model as metric; ``None`` (default) leaves the check to the
            caller: ``h4d run`` and ``run-many`` check in the driver, which holds the config.
    Returns:
        The capture; ``person_names`` and ``init_boxes`` come from the bbox files when present
        (else ``aria01, aria02`` and no boxes). As with :meth:`Capture.select_frames`, the boxes
        are those of the sequence's first annotated frame whatever ``frames`` selects.
    Raises:
        InputError: one line naming the file or folder that is missing or malformed.
    """
    return start_read(seq, cameras, frames, report, workers, assume_metric).result()


def start_read(
    seq: Path,
    cameras: Sequence[str] | None = None,
    frames: slice | None = None,
    report: LoadReport | None = None,
    workers: int | None = None,
    assume_metric: bool | None = None,
) -> "SequenceLoad":
    """Begin reading a sequence: check the folder, list the frame files and hand them to the read
    pool; :meth:`SequenceLoad.result` assembles the :class:`Capture` (see :func:`read_sequence`,
    which is ``start_read(...).result()``). Imports no torch: ``h4d run`` starts its load this way
    while torch is still being imported."""
    return SequenceLoad(Path(seq), cameras, frames, report, workers, assume_metric)


class SequenceLoad:
    """A sequence being read (:func:`start_read`); ``result()`` waits for it and returns the capture.

    The checks run in :func:`read_sequence`'s order (so a folder with several faults names the
    same first one); the per-frame detection files are parsed by the read pool meanwhile.
    """

    def __init__(self, seq: Path, cameras: Sequence[str] | None, frames: slice | None,
                 report: LoadReport | None, workers: int | None, assume_metric: bool | None = None):
        from .colmap import parse_colmap

        self.seq = seq
        self.report = report if report is not None else LoadReport()
        self._capture: Capture | None = None
        self._futures: list[tuple[tuple[int, int], Any]] = []
        if not seq.is_dir():
            raise InputError(seq, "sequence folder not found")
        L = self.layout = SequenceLayout(seq)
        for f in ("cameras.txt", "images.txt"):
            if not (L.colmap / f).is_file():
                raise InputError(L.colmap / f, "COLMAP file missing")
        self.metric_warning = None if assume_metric is None else check_metric_scale(seq, assume_metric, self.report)
        rig = parse_colmap(L.colmap, "auto")
        if not L.poses2d.is_dir():
            raise InputError(L.poses2d, "detection folder missing")
        det_cams = L.detection_cameras()
        if cameras is None:
            if set(rig.names) != set(det_cams):
                only_c = sorted(set(rig.names) - set(det_cams))
                only_d = sorted(set(det_cams) - set(rig.names))
                raise InputError(
                    seq,
                    f"camera count differing from detection folders: colmap has {len(rig.names)} [{', '.join(rig.names)}], "
                    f"poses2d has {len(det_cams)} [{', '.join(det_cams)}]"
                    f" (only in colmap: {', '.join(only_c) or '-'}; only in poses2d: {', '.join(only_d) or '-'})",
                )
            names = list(rig.names)
        else:
            names = list(cameras)
            for c in names:
                if c not in rig.names:
                    raise InputError(L.colmap / "images.txt", f"camera {c} not in the COLMAP model (has {', '.join(rig.names)})")
                if c not in det_cams:
                    raise InputError(L.poses2d, f"no detection folder for camera {c} (has {', '.join(det_cams) or 'none'})")
        check_two_views(L.colmap / "images.txt", names)
        self.rig, self.names = rig, names
        self.sources: list[CameraSource] = [open_camera_source(L.detection_source(c)) for c in names]
        frame_ids = sorted(set().union(*(s.frame_ids for s in self.sources)))
        if frames is not None:
            frame_ids = frame_ids[frames]
        if not frame_ids:
            raise InputError(L.poses2d, "no frames selected" if frames is not None else "no detection frames")
        self.frame_ids = frame_ids
        # per-frame files in task order (task = camera * F + frame); a whole-camera COCO file is parsed already
        self.paths = [None if s.coco is not None else s.files.get(f)
                      for s in self.sources for f in frame_ids]
        n_files = sum(p is not None for p in self.paths)
        pool = read_pool()
        if pool.usable() and ((workers is None and n_files >= MIN_FILES_FOR_POOL) or (workers or 0) > 1):
            from .detection_batch import read_frames_task

            for lo, hi in shards(len(self.paths), 2 * max(1, pool.workers), min_size=200):
                self._futures.append(((lo, hi), pool.submit(read_frames_task, self.paths[lo:hi])))

    def result(self) -> Capture:
        if self._capture is None:
            self._capture = self._assemble()
        return self._capture

    def _parsed(self) -> list[tuple[int, Any]]:
        """``[(first task, FrameBatch)]`` covering every task; the first error in task order is raised."""
        from .detection_batch import FrameBatch, read_frames

        if not self._futures:
            return [(0, read_frames(self.paths))]
        out = []
        try:
            for (lo, _), fut in self._futures:
                r = fut.result()
                if r[0] == "error":
                    raise InputError(r[1], r[2], r[3])
                out.append((lo, FrameBatch(*r[1:])))
        finally:
            for _, fut in self._futures:
                fut.cancel()
            self._futures = []
        return out

    def _assemble(self) -> Capture:
        import torch

        from ..data import Capture, Detections

        seq, L, names, frame_ids, sources, rep = self.seq, self.layout, self.names, self.frame_ids, self.sources, self.report
        all_cams = self.rig.cameras()
        cams = all_cams.subset([all_cams.names.index(c) for c in names])
        F, V = len(frame_ids), len(names)
        parsed = self._parsed()
        gaps = sum(s.coco_gaps for s in sources) + sum(b.gaps for _, b in parsed)
        coco = {v: [s.coco.get(fid, []) for fid in frame_ids] for v, s in enumerate(sources) if s.coco is not None}
        D = max([1] + [int(b.counts.max()) for _, b in parsed if b.counts.size]
                + [len(d) for dets in coco.values() for d in dets])
        kpts = np.zeros((F, V, D, NUM_COCO, 3), dtype=np.float32)
        boxes = np.zeros((F, V, D, 5), dtype=np.float32)
        valid = np.zeros((F, V, D), dtype=bool)
        ident = np.full((F, V, D), -1, dtype=np.int64)  # the person a detection's file names (h4d detect)
        for lo, b in parsed:
            if not b.kpts.shape[0]:
                continue
            task = lo + np.repeat(np.arange(b.counts.size), b.counts)  # the task (v * F + f) of each detection
            slot = np.arange(b.kpts.shape[0]) - np.repeat(np.cumsum(b.counts) - b.counts, b.counts)
            f_i, v_i = task % F, task // F
            kpts[f_i, v_i, slot] = b.kpts
            boxes[f_i, v_i, slot] = b.boxes
            valid[f_i, v_i, slot] = True
            if b.identity is not None:
                ident[f_i, v_i, slot] = b.identity
        for v, frames_dets in coco.items():
            for f, dets in enumerate(frames_dets):
                for d, det in enumerate(dets):
                    kpts[f, v, d], boxes[f, v, d], valid[f, v, d] = det[0], det[1], True
                    if len(det) > 2:
                        ident[f, v, d] = det[2]
        for v, src in enumerate(sources):
            if src.sparse:
                continue
            missing = [fid for fid in frame_ids if not src.has(fid)]
            rep.missing.extend((names[v], fid) for fid in missing)
            if missing:
                shown = ", ".join(f"{m:05d}" for m in missing[:5]) + (", ..." if len(missing) > 5 else "")
                msg = f"{src.path}: {len(missing)} of {len(frame_ids)} frame files missing ({shown}); those frames have no detections in {names[v]}"
                rep.warn(msg)
                log.warning(msg)
        rep.nan_keypoints += gaps
        if gaps:
            msg = f"{L.poses2d}: {gaps} non-finite keypoint/box values treated as missing (confidence 0)"
            rep.warn(msg)
            log.warning(msg)

        identity = torch.from_numpy(ident) if bool((ident >= 0).any()) else None
        detections = Detections(torch.from_numpy(kpts), torch.from_numpy(boxes), torch.from_numpy(valid), identity)
        person_names, init_boxes, init_valid = read_init_boxes(seq, names)
        return Capture(
            cameras=cams,
            detections=detections,
            frame_ids=list(frame_ids),
            person_names=person_names,
            init_boxes=init_boxes,
            init_valid=init_valid,
            name=seq.name,
        )


def _parse_box(path: Path, person: str, value: Any) -> tuple[np.ndarray, bool]:
    try:
        b = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(path, f"expected [x1, y1, x2, y2, score], got {type(value).__name__}", repr(person)) from None
    if b.shape not in ((4,), (5,)):
        raise InputError(path, f"expected [x1, y1, x2, y2] or [x1, y1, x2, y2, score], got {b.size} values", repr(person))
    ok = bool(np.isfinite(b).all() and b[2] > b[0] and b[3] > b[1] and (b.size == 4 or b[4] > 0))
    return (b[:4] if ok else np.zeros(4)), ok


SEQUENCE_INFO = "sequence.json"


def _declared_people(seq: Path) -> list[str]:
    """Person names from ``SEQ/sequence.json`` (written by :func:`write_sequence` and the
    importer), else the Harmony4D default ``aria01, aria02``."""
    p = seq / SEQUENCE_INFO
    if p.exists():
        try:
            names = json.loads(p.read_text()).get("person_names")
        except ValueError as e:
            raise InputError(p, f"not valid JSON ({e})") from None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise InputError(p, "expected a non-empty list of names", field="person_names")
        return list(names)
    return list(DEFAULT_PERSON_NAMES)


def read_init_boxes(seq: Path, cameras: Sequence[str]) -> tuple[list[str], Tensor | None, Tensor | None]:
    """Identity boxes from ``processed_data/bboxes``: per camera the lowest-numbered file (the
    annotator's first-frame boxes; the reference writes the same boxes for frames 1..10).

    Returns:
        ``(person_names, init_boxes [V, P, 4] float32 | None, init_valid [V, P] bool | None)``.
        Person names are the sorted union of the files' keys (``aria01, aria02`` when no file
        exists; then the boxes are None). A camera without a file has no valid box.
    """
    import torch

    L = SequenceLayout(Path(seq))
    per_cam: list[dict[str, tuple[np.ndarray, bool]]] = []
    any_file = False
    for c in cameras:
        files = _frame_files(L.bbox_folder(c))
        boxes: dict[str, tuple[np.ndarray, bool]] = {}
        if files:
            p = files[min(files)]
            any_file = True
            obj = read_npy(p)
            if not isinstance(obj, dict):
                raise InputError(p, f"expected a dict person name -> [x1, y1, x2, y2, score], got {type(obj).__name__}")
            for k, val in obj.items():
                boxes[str(k)] = _parse_box(p, str(k), val)
        per_cam.append(boxes)
    if not any_file:
        return _declared_people(Path(seq)), None, None
    people = sorted(set().union(*(b.keys() for b in per_cam)))
    if not people:
        return _declared_people(Path(seq)), None, None
    V, P = len(cameras), len(people)
    init = torch.zeros(V, P, 4, dtype=torch.float32)
    valid = torch.zeros(V, P, dtype=torch.bool)
    for v, boxes in enumerate(per_cam):
        for p_i, name in enumerate(people):
            if name in boxes:
                b, ok = boxes[name]
                init[v, p_i] = torch.from_numpy(b.astype(np.float32))
                valid[v, p_i] = ok
    return people, init, valid


def read_poses3d(folder: Path, person_names: Sequence[str] | None = None) -> tuple[np.ndarray, list[int]]:
    """Read ``%05d.npy`` files of dicts ``person -> (17, 4)`` (``(17, 3)`` gets valid = 1).

    Args:
        folder: e.g. ``SEQ/processed_data/poses3d``.
        person_names: people to read, in this order (default: sorted union of the files' keys).
            A person absent from a frame gets zeros (invalid).
    Returns:
        ``(poses [F, P, 17, 4] float32, frame ids)``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "poses3d folder not found")
    files = _frame_files(folder)
    if not files:
        raise InputError(folder, "no poses3d frame files (00001.npy ...)")
    fids = sorted(files)
    objs = parallel_map(lambda f: read_npy(files[f]), fids)
    for fid, obj in zip(fids, objs):
        if not isinstance(obj, dict):
            raise InputError(files[fid], f"expected a dict person name -> (17, 4) array, got {type(obj).__name__}")
    names = list(person_names) if person_names is not None else sorted({str(k) for o in objs for k in o})
    out = np.zeros((len(fids), len(names), NUM_COCO, 4), dtype=np.float32)
    for f, (fid, obj) in enumerate(zip(fids, objs)):
        by_name = {str(k): v for k, v in obj.items()}
        for p, name in enumerate(names):
            if name not in by_name:
                continue
            try:
                a = np.asarray(by_name[name], dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(files[fid], "expected a (17, 4) float array", repr(name)) from None
            if a.shape == (NUM_COCO, 3):
                a = np.concatenate([a, np.ones((NUM_COCO, 1))], 1)
            if a.shape != (NUM_COCO, 4):
                raise InputError(files[fid], f"expected shape ({NUM_COCO}, 4), got {a.shape}", repr(name))
            bad = ~np.isfinite(a).all(-1)
            a[bad] = 0.0
            out[f, p] = a
    return out, fids


def read_ground_truth(seq: Path) -> GroundTruth | None:
    """``SEQ/ground_truth/{poses3d.npy, smpl.npz}`` as a :class:`GroundTruth`, or None when absent."""
    import torch

    from ..data import GroundTruth

    gt_dir = SequenceLayout(Path(seq)).ground_truth
    p = gt_dir / "poses3d.npy"
    if not p.is_file():
        return None
    arr = read_npy(p)
    if not isinstance(arr, np.ndarray) or arr.ndim != 4 or arr.shape[2:] != (NUM_COCO, 4) or not np.issubdtype(arr.dtype, np.number):
        shape = getattr(arr, "shape", type(arr).__name__)
        raise InputError(p, f"expected a float array [F, P, {NUM_COCO}, 4], got {shape}")
    smpl = None
    sp = gt_dir / "smpl.npz"
    if sp.is_file():
        try:
            with np.load(sp, allow_pickle=False) as z:
                smpl = {k: torch.from_numpy(np.array(z[k])) for k in z.files}
        except Exception as e:  # noqa: BLE001 - corrupt archive
            raise InputError(sp, f"not a readable .npz file ({type(e).__name__}: {e})") from None
    return GroundTruth(poses3d=torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), smpl=smpl)


def read_meta(seq: Path) -> dict[str, Any] | None:
    """``SEQ/ground_truth/meta.json`` (name, frame_ids, person_names, cameras, generator extras), or None."""
    p = SequenceLayout(Path(seq)).ground_truth / "meta.json"
    if not p.is_file():
        return None
    obj = read_json(p)
    if not isinstance(obj, dict):
        raise InputError(p, f"expected a JSON object, got {type(obj).__name__}")
    return obj


# ------------------------------------------------------------------ writing
def _remove_stale(folder: Path, keep: set[int]) -> None:
    """Delete frame files (integer stem, .npy/.json) not in ``keep``: a rewritten sequence must not
    show frames of an earlier write."""
    if not folder.is_dir():
        return
    for e in os.scandir(folder):
        stem, x = os.path.splitext(e.name)
        if x.lower() in (".npy", ".json") and stem.isdigit() and (int(stem) not in keep or x.lower() == ".json"):
            os.unlink(e.path)


def write_poses3d(
    folder: Path,
    poses: Tensor | np.ndarray,
    frame_ids: Sequence[int],
    person_names: Sequence[str],
    workers: int | None = None,
    present: np.ndarray | None = None,
) -> None:
    """Write ``poses [F, P, 17, 4]`` as ``folder/%05d.npy`` dicts ``person -> (17, 4)`` float32 (atomic per file);
    with ``present [F, P]`` a frame's dict holds only the people present in it."""
    a = poses.detach().cpu().numpy() if hasattr(poses, "detach") else np.asarray(poses)
    a = np.asarray(a, dtype=np.float32)
    F = len(frame_ids)
    if a.shape != (F, len(person_names), NUM_COCO, 4):
        raise ValueError(f"write_poses3d: expected poses of shape {(F, len(person_names), NUM_COCO, 4)}, got {a.shape}")
    folder = Path(folder)

    pres = np.ones(a.shape[:2], dtype=bool) if present is None else np.asarray(present, dtype=bool)

    def one(f: int) -> None:
        write_npy(folder / f"{int(frame_ids[f]):05d}.npy", {name: a[f, p].copy() for p, name in enumerate(person_names) if pres[f, p]})

    for_each_file(one, range(F), workers)


def write_sequence(
    seq: Path,
    capture: Capture,
    gt: GroundTruth | None = None,
    scale_transform: np.ndarray | None = None,
    meta: dict[str, Any] | None = None,
    fmt: str = "npy",
    workers: int | None = None,
) -> None:
    """Write a capture (and optionally its ground truth) as a sequence folder that
    :func:`read_sequence` reads back.

    Written: ``colmap/workplace`` (cameras in the COLMAP frame ``inv(scale_transform)``, and
    ``scale.npy = scale_transform``, identity when None), ``processed_data/poses2d/camXX/rgb``
    (one file per frame and camera, ``fmt`` = ``npy`` or ``json``; stale frame files there are
    removed), ``processed_data/bboxes/camXX/rgb/<first frame>.npy`` when the capture has init boxes
    (score 1), and ``ground_truth/{poses3d.npy, smpl.npz, meta.json}`` when ``gt`` or ``meta`` is
    given. Pipeline outputs (``processed_data/poses3d``) are not written here; see
    :func:`write_poses3d`. Every file is written atomically.
    """
    import torch

    from .colmap import write_colmap

    if fmt not in ("npy", "json"):
        raise ValueError(f"write_sequence: fmt must be 'npy' or 'json', got {fmt!r}")
    seq = Path(seq)
    L = SequenceLayout(seq)
    cams = capture.cameras
    frame_ids = [int(f) for f in capture.frame_ids]
    write_colmap(L.colmap, cams, scale_transform, frame_id=frame_ids[0] if frame_ids else 1)

    per_camera = unpack_detections(capture.detections)
    writer = write_frame_npy if fmt == "npy" else write_frame_json
    folders = [L.poses2d / c / "rgb" for c in cams.names]
    for d in folders:
        _remove_stale(d, set(frame_ids) if fmt == "npy" else set())
    tasks = [(v, f) for v in range(len(cams)) for f in range(len(frame_ids))]
    for_each_file(lambda t: writer(folders[t[0]] / f"{frame_ids[t[1]]:05d}.{fmt}", per_camera[t[0]][t[1]]), tasks, workers)

    if capture.init_boxes is not None and frame_ids:
        ib = capture.init_boxes.detach().cpu().to(torch.float64).numpy()
        iv = capture.init_valid.detach().cpu().numpy() if capture.init_valid is not None else np.ones(ib.shape[:2], bool)
        for v, c in enumerate(cams.names):
            boxes = {name: np.append(ib[v, p], 1.0) for p, name in enumerate(capture.person_names) if iv[v, p]}
            write_npy(L.bboxes / c / "rgb" / f"{frame_ids[0]:05d}.npy", boxes)

    write_json(seq / SEQUENCE_INFO, {"name": capture.name, "person_names": list(capture.person_names),
                                      "cameras": list(cams.names), "frames": len(frame_ids)})
    if gt is not None or meta is not None:
        info: dict[str, Any] = {
            "name": capture.name,
            "frame_ids": frame_ids,
            "person_names": list(capture.person_names),
            "cameras": list(cams.names),
        }
        info.update(meta or {})
        if gt is not None:
            P = gt.poses3d.detach().cpu().numpy().astype(np.float32)
            write_npy(L.ground_truth / "poses3d.npy", np.ascontiguousarray(P))
            if gt.smpl:
                arrays = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)) for k, v in gt.smpl.items()}
                write_npz(L.ground_truth / "smpl.npz", **arrays)
        write_json(L.ground_truth / "meta.json", info)
