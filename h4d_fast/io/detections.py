"""2D detection files: per-frame ``.npy`` / ``.json`` and whole-camera COCO JSON.

A detection is ``(kpts, box)``: ``kpts`` ``[17, 3]`` float32 COCO-17 keypoints ``x, y, conf`` in
pixels and ``box`` ``[5]`` float32 ``x1, y1, x2, y2, score``.

Accepted inputs, per frame (``<folder>/00001.npy`` or ``<folder>/00001.json``; any integer stem):

* ``.npy`` holding the mmpose top-down output the reference writes: a pickled list of dicts
  ``{'bbox': (5,) [x1, y1, x2, y2, score], 'keypoints': (K, 3)}`` with ``K = 17`` or ``K = 133``
  (COCO-WholeBody; its first 17 points are COCO body and are kept). A 4-value bbox gets score 1.
  A pickled dict ``name -> such dict`` is read too (values in key order). An optional
  ``'identity'`` (int, ``-1`` = unknown) names the person a detection is known to belong to: the
  index into the sequence's person names of the track whose projected 3D pose prompted the crop
  (``h4d detect`` writes it; :attr:`~h4d_fast.data.Detections.identity` carries it).
* ``.npy`` holding a plain float array ``[D, K, 3]`` (no boxes): the box becomes the tight box of
  the keypoints with ``conf > 0.2`` and the score the mean confidence.
* ``.json``: a list of COCO results ``{"keypoints": [3K floats], "bbox": [x, y, w, h], "score": s}``
  or ``{"people": [...]}`` of the same (``bbox``, ``score`` and ``identity`` optional, filled as above).

Whole camera (one file; ``folder`` is the file itself, or a folder whose only content is one
``.json``): COCO results ``[{"image_id", "keypoints", "bbox", "score"}, ...]`` (frame id =
``image_id``) or a COCO dataset ``{"images": [{"id", "file_name"}], "annotations": [...]}`` (frame id =
the number in ``file_name``, or the image's 1-based position when the names carry no unique
numbers). Annotation keypoints with only visibility flags ``0/1/2`` become confidences ``0/1``.

Data gaps: a keypoint with a NaN/inf coordinate or confidence becomes ``[0, 0, 0]``; a non-finite
box is replaced by the keypoint box. Their number is returned so the caller can warn. Everything
else that is wrong (negative confidence, wrong shape, truncated or corrupt file) raises
:class:`~h4d_fast.errors.InputError` naming the file and the field.

Pickled ``.npy`` files are read with the package's restricted unpickler
(:mod:`h4d_fast.io.safe_pickle`): a file that would run code is refused with an InputError.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, TypeVar

import numpy as np

from ..constants import NUM_COCO
from ..errors import InputError
from .atomic import write_json, write_npy
from .npy import read_npy

if TYPE_CHECKING:  # torch is imported by the functions that build tensors (the parsers run without it)
    import torch
    from torch import Tensor

    from ..data import Detections

__all__ = [
    "Det",
    "CameraSource",
    "LoadReport",
    "KPT_BOX_CONF",
    "keypoint_box",
    "load_camera_detections",
    "open_camera_source",
    "pack_detections",
    "parallel_map",
    "parse_detections",
    "read_coco_camera",
    "read_frame_detections",
    "read_json",
    "read_npy",
    "unpack_detections",
    "write_frame_json",
    "write_frame_npy",
]

#: ``(kpts [17, 3] float32, box [5] float32)``, or ``(kpts, box, identity)`` for a detection whose
#: file names its person (``identity`` an int >= 0; the readers return 3-tuples only then).
Det = tuple

#: keypoints above this confidence span the box of a detection that comes without one (the
#: reference's ``RGB_THRES``).
KPT_BOX_CONF = 0.2
WHOLEBODY_K = 133
FRAME_EXTS = (".npy", ".json")

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class LoadReport:
    """What a load found that is not an error: data gaps and missing frame files."""

    nan_keypoints: int = 0
    missing: list[tuple[str, int]] = field(default_factory=list)  # (folder or camera, frame id)
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


# --------------------------------------------------------------- low level
def read_json(path: Path) -> Any:
    """Load a JSON file; unreadable or malformed input is an InputError with the line and column."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(path, f"malformed JSON ({e.msg})", f"line {e.lineno} column {e.colno}") from None


def keypoint_box(kpts: np.ndarray, thr: float = KPT_BOX_CONF) -> np.ndarray:
    """``[..., J, 3]`` keypoints -> ``[..., 5]`` float32 tight box of the points with ``conf > thr``
    and score = mean confidence (zeros box when no point qualifies)."""
    k = np.asarray(kpts, dtype=np.float32)
    ok = k[..., 2:3] > thr  # [..., J, 1]
    xy = k[..., :2]
    box = np.empty(k.shape[:-2] + (5,), np.float32)
    box[..., 0:2] = np.where(ok, xy, np.inf).min(-2)
    box[..., 2:4] = np.where(ok, xy, -np.inf).max(-2)
    box[..., 4] = k[..., 2].mean(-1)
    box[..., :4][~ok[..., 0].any(-1)] = 0.0
    return box


def _kpts_array(path: Path, fld: str, value: Any) -> np.ndarray:
    """One detection's keypoints as float64 ``[17, 3]`` (flat or whole-body input accepted; not cleaned)."""
    try:
        k = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InputError(path, f"expected numbers, got {type(value).__name__}", fld) from None
    if k.ndim == 1 and k.size in (3 * NUM_COCO, 3 * WHOLEBODY_K):
        k = k.reshape(-1, 3)
    if k.shape != (NUM_COCO, 3):
        if k.shape != (WHOLEBODY_K, 3):
            raise InputError(path, f"expected shape ({NUM_COCO}, 3) (or ({WHOLEBODY_K}, 3) whole-body), got {k.shape}", fld)
        k = k[:NUM_COCO]
    return k


def _clean_kpts(path: Path, k: np.ndarray, field_of: Callable[[int], str]) -> tuple[np.ndarray, int]:
    """``[D, 17, 3]`` float64 -> float32 with non-finite keypoints zeroed; negative confidence is an error."""
    bad = ~_f32_finite(k).all(-1)
    gaps = int(bad.sum())
    if gaps:
        k = k.copy()
        k[bad] = 0.0
    neg = k[..., 2] < 0
    if neg.any():
        d, j = (int(x) for x in np.argwhere(neg)[0])
        raise InputError(path, f"negative confidence {k[d, j, 2]:g} at keypoint {j}", field_of(d))
    return k.astype(np.float32), gaps


_F32_MAX = float(np.finfo(np.float32).max)


def _f32_finite(a: np.ndarray) -> np.ndarray:
    """Finite and still finite as float32 (the stored dtype): 1e300 is a gap, as NaN is."""
    return np.isfinite(a) & (np.abs(np.nan_to_num(a)) <= _F32_MAX)


def _number(path: Path, fld: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(path, f"expected a number, got {value!r}", fld) from None


def _box_value(path: Path, fld: str, value: Any, score: Any) -> tuple[np.ndarray | None, float | None]:
    """A box as given (float64, 4 or 5 values; None when absent) and an explicit score (or None)."""
    s = None if score is None else _number(path, fld + " 'score'", score)
    if value is None:
        return None, s
    try:
        b = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InputError(path, f"expected numbers, got {type(value).__name__}", fld + " 'bbox'") from None
    if b.shape != (5,) and b.shape != (4,):
        raise InputError(path, f"expected 4 or 5 values, got shape {b.shape}", fld + " 'bbox'")
    return b, s


def _parse_items(path: Path, items: Sequence[Any], xywh: bool, field_of: Callable[[int], str]) -> tuple[list[Det], int]:
    """Detections from a list of dicts (``keypoints``, optional ``bbox``/``score``) or bare keypoint arrays.

    Box rules: a 4-value box gets score 1; an explicit ``score`` overrides the box's; a missing or
    non-finite box becomes the keypoint box (a non-finite one counts as a gap).
    """
    D = len(items)
    if not D:
        return [], 0
    ks = []
    B = np.zeros((D, 5))
    need = np.zeros(D, dtype=bool)
    scores = np.full(D, np.nan)
    ident = np.full(D, -1, dtype=np.int64)
    for i, d in enumerate(items):
        if isinstance(d, dict):
            if "keypoints" not in d:
                raise InputError(path, f"no 'keypoints' (keys: {', '.join(map(str, d))})", field_of(i))
            ks.append(_kpts_array(path, field_of(i) + " 'keypoints'", d["keypoints"]))
            b, s = _box_value(path, field_of(i), d.get("bbox"), d.get("score"))
            if d.get("identity") is not None:
                ident[i] = _identity_value(path, field_of(i) + " 'identity'", d["identity"])
        else:
            ks.append(_kpts_array(path, field_of(i) + " 'keypoints'", d))
            b, s = None, None
        if b is None:
            need[i] = True
        elif b.shape[0] == 5:
            B[i] = b
        else:
            B[i, :4] = b
            B[i, 4] = 1.0
        if s is not None:
            scores[i] = s
    K, gaps = _clean_kpts(path, np.stack(ks), lambda d: field_of(d) + " 'keypoints'")
    has_s = ~np.isnan(scores)
    B[has_s, 4] = scores[has_s]
    if xywh:
        B[:, 2:4] += B[:, 0:2]
    bad = ~_f32_finite(B).all(-1) & ~need
    if bad.any():
        gaps += int(bad.sum())
        need |= bad
    if need.any():
        B[need] = keypoint_box(K[need])
        fix = need & has_s
        B[fix, 4] = scores[fix]
    B32 = B.astype(np.float32)
    return [(K[i], B32[i], int(ident[i])) if ident[i] >= 0 else (K[i], B32[i]) for i in range(D)], gaps


def _identity_value(path: Path, fld: str, value: Any) -> int:
    """An identity hint: an integer >= -1 (a person index; -1 = unknown)."""
    ok = not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer, float, np.floating))
    if ok and isinstance(value, (float, np.floating)):
        ok = bool(np.isfinite(value)) and float(value).is_integer()
    if not ok or not -1 <= int(value) < 2**31:
        raise InputError(path, f"expected a person index (integer >= -1), got {value!r}", fld)
    return int(value)


def _detection_field(i: int) -> str:
    return f"detection {i}"


def parse_detections(obj: Any, path: Path, xywh: bool = False) -> tuple[list[Det], int]:
    """Turn one frame's loaded content into detections.

    Args:
        obj: what :func:`read_npy` or ``json.load`` returned.
        path: the file (for error messages).
        xywh: boxes are COCO ``[x, y, w, h]`` (JSON) rather than ``[x1, y1, x2, y2]`` (npy).
    Returns:
        ``(detections, number of non-finite keypoints/boxes zeroed)``.
    """
    if isinstance(obj, np.ndarray):
        if obj.size == 0:
            return [], 0
        if not np.issubdtype(obj.dtype, np.number):
            raise InputError(path, f"expected a float array [D, {NUM_COCO}, 3], got dtype {obj.dtype}", "keypoints")
        if obj.ndim != 3 or obj.shape[1:] not in ((NUM_COCO, 3), (WHOLEBODY_K, 3)):
            raise InputError(path, f"expected shape (D, {NUM_COCO}, 3) (or (D, {WHOLEBODY_K}, 3)), got {obj.shape}", "keypoints")
        K, gaps = _clean_kpts(path, obj[:, :NUM_COCO].astype(np.float64), lambda d: f"detection {d} 'keypoints'")
        boxes = keypoint_box(K)
        return [(K[d], boxes[d]) for d in range(K.shape[0])], gaps
    if isinstance(obj, dict):
        obj = obj["people"] if "people" in obj else [obj[key] for key in sorted(obj, key=str)]
    if not isinstance(obj, (list, tuple)):
        raise InputError(path, f"expected a list of detections, got {type(obj).__name__}")
    return _parse_items(path, obj, xywh, _detection_field)


def read_frame_detections(path: Path) -> tuple[list[Det], int]:
    """Read one per-frame file (``.npy`` or ``.json``); returns ``(detections, gaps zeroed)``."""
    path = path if isinstance(path, Path) else Path(path)
    if path.suffix.lower() == ".json":
        return parse_detections(read_json(path), path, xywh=True)
    return parse_detections(read_npy(path), path, xywh=False)


# ---------------------------------------------------------- whole camera
_DIGITS = re.compile(r"(\d+)(?!.*\d)")


def _frame_number(file_name: str) -> int | None:
    stem = Path(str(file_name)).stem
    m = _DIGITS.search(stem)
    return int(m.group(1)) if m else None


def read_coco_camera(path: Path) -> tuple[dict[int, list[Det]], int]:
    """Read a whole camera's COCO JSON (results list or dataset dict); ``({frame id: dets}, gaps)``.

    Frames of a dataset's ``images`` list without annotations map to empty lists; a results list
    only names frames that have detections.
    """
    frames, gaps, _ = _read_coco(Path(path))
    return frames, gaps


def _read_coco(path: Path) -> tuple[dict[int, list[Det]], int, bool]:
    """:func:`read_coco_camera` plus whether the file lists its images (else frames are sparse)."""
    obj = read_json(path)
    frames: dict[int, list[Det]] = {}
    visibility_flags = False
    if isinstance(obj, dict) and "annotations" in obj:
        anns = obj["annotations"]
        if not isinstance(anns, list):
            raise InputError(path, f"expected a list, got {type(anns).__name__}", "annotations")
        images = obj.get("images")
        id_to_frame: dict[Any, int] | None = None
        if images is not None:
            if not isinstance(images, list):
                raise InputError(path, f"expected a list, got {type(images).__name__}", "images")
            ids = []
            nums = []
            for n, im in enumerate(images):
                if not isinstance(im, dict) or "id" not in im:
                    raise InputError(path, "expected an object with 'id' and 'file_name'", f"images[{n}]")
                ids.append(im["id"])
                nums.append(_frame_number(im.get("file_name", "")))
            if all(x is not None for x in nums) and len(set(nums)) == len(nums):
                id_to_frame = dict(zip(ids, nums))  # type: ignore[arg-type]
            else:
                id_to_frame = {iid: n + 1 for n, iid in enumerate(ids)}
            for fr in id_to_frame.values():
                frames[fr] = []
        # COCO ground truth carries visibility flags 0/1/2 and no score
        third = [a.get("keypoints", [])[2::3] for a in anns if isinstance(a, dict) and isinstance(a.get("keypoints"), list)]
        flat = [v for t in third for v in t]
        visibility_flags = bool(flat) and all(v in (0, 1, 2) for v in flat) and any(v == 2 for v in flat) and not any(
            isinstance(a, dict) and "score" in a for a in anns
        )
        results = anns
        where = "annotations"
    elif isinstance(obj, list):
        results = obj
        id_to_frame = None
        where = "results"
        images = None
    else:
        raise InputError(path, "expected a COCO results list or a dict with 'annotations'")

    frame_of: list[int] = []
    items: list[dict[str, Any]] = []
    for n, r in enumerate(results):
        fld = f"{where}[{n}]"
        if not isinstance(r, dict) or "image_id" not in r:
            raise InputError(path, "expected an object with 'image_id' and 'keypoints'", fld)
        iid = r["image_id"]
        if id_to_frame is not None:
            if iid not in id_to_frame:
                raise InputError(path, f"image_id {iid!r} is not in 'images'", fld)
            fr = id_to_frame[iid]
        else:
            try:
                fr = int(iid)
            except (TypeError, ValueError):
                raise InputError(path, f"image_id must be an integer frame number, got {iid!r}", fld) from None
        if "keypoints" not in r:
            raise InputError(path, "no 'keypoints'", fld)
        if visibility_flags:
            kp = list(r["keypoints"])
            kp[2::3] = [1.0 if v > 0 else 0.0 for v in kp[2::3]]
            r = dict(r, keypoints=kp)
        frame_of.append(fr)
        items.append(r)
    dets, gaps = _parse_items(path, items, True, lambda i: f"{where}[{i}]")
    for fr, det in zip(frame_of, dets):
        frames.setdefault(fr, []).append(det)
    return frames, gaps, images is not None


# --------------------------------------------------------- camera folders
@dataclass
class CameraSource:
    """Where one camera's detections come from: per-frame files or one whole-camera JSON.

    Attributes:
        path: the folder (per-frame files) or the JSON file.
        files: frame id -> file path (a string: a sequence has thousands), for per-frame folders.
        coco: frame id -> detections, for a whole-camera file (already parsed).
        coco_gaps: data gaps found while parsing ``coco``.
        sparse: frames absent from the source are legitimately empty (COCO results lists only list
            frames with detections), so they are not reported missing.
    """

    path: Path
    files: dict[int, str] = field(default_factory=dict)
    coco: dict[int, list[Det]] | None = None
    coco_gaps: int = 0
    sparse: bool = False

    @property
    def frame_ids(self) -> list[int]:
        return sorted(self.coco if self.coco is not None else self.files)

    def has(self, frame_id: int) -> bool:
        return frame_id in (self.coco if self.coco is not None else self.files)

    def load(self, frame_id: int) -> tuple[list[Det], int]:
        """Detections of one frame (``[]`` when absent) and the gaps zeroed in its file."""
        if self.coco is not None:
            return self.coco.get(frame_id, []), 0
        p = self.files.get(frame_id)
        return ([], 0) if p is None else read_frame_detections(p)


def _scan_frames(folder: Path) -> dict[int, str]:
    found: dict[int, str] = {}
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        raise InputError(folder, f"cannot list folder ({e.strerror or e})") from None
    for e in entries:
        stem, ext = os.path.splitext(e.name)
        ext = ext.lower()
        if ext in FRAME_EXTS and stem.isdigit():
            fid = int(stem)
            # .npy wins over .json for the same frame
            if fid not in found or ext == ".npy":
                found[fid] = e.path
    return found


def open_camera_source(path: Path) -> CameraSource:
    """Inspect a camera's detection folder (or whole-camera JSON file) without loading frames.

    Raises:
        InputError: the path does not exist, or the folder has no frame files and no single JSON.
    """
    path = Path(path)
    if path.is_file():
        coco, gaps, listed = _read_coco(path)
        return CameraSource(path, coco=coco, coco_gaps=gaps, sparse=not listed)
    if not path.is_dir():
        raise InputError(path, "detection folder not found")
    files = _scan_frames(path)
    if files:
        return CameraSource(path, files=files)
    jsons = sorted(p for p in path.iterdir() if p.suffix.lower() == ".json" and p.is_file())
    if len(jsons) == 1:
        return open_camera_source(jsons[0])
    raise InputError(path, "no detection frame files (00001.npy or 00001.json ...) and no single whole-camera COCO .json")


def parallel_map(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> list[R]:
    """``[fn(x) for x in items]`` on a thread pool, in chunks; order kept.

    Threads overlap the file reads (which release the GIL), but parsing holds the GIL: on a
    16-core host, reading 12,000 detection files took 1.2-1.7 s on one thread and 3.2-4.4 s on
    8-64 threads, so the default is ``workers=1`` (no pool); more threads help only on slow
    (network) file systems. The first exception raised by ``fn`` propagates unchanged.
    """
    items = list(items)
    n = workers if workers is not None else 1
    if n <= 1 or len(items) < 64:
        return [fn(x) for x in items]
    size = max(16, -(-len(items) // (4 * n)))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    with ThreadPoolExecutor(max_workers=n) as ex:
        parts = list(ex.map(lambda c: [fn(x) for x in c], chunks))
    return [r for part in parts for r in part]


def load_camera_detections(
    folder: Path,
    frame_ids: Sequence[int] | None = None,
    report: LoadReport | None = None,
) -> list[list[Det]]:
    """Load one camera's detections, frame by frame.

    Args:
        folder: per-frame folder, or a whole-camera COCO JSON file.
        frame_ids: frames to load (default: every frame the source has, sorted). A frame without a
            file gets no detections and is recorded in ``report.missing``.
        report: collects data gaps and missing frames (pass one to see them).
    Returns:
        ``[frame][detection] -> (kpts [17, 3], box [5])``.
    """
    src = open_camera_source(Path(folder))
    fids = src.frame_ids if frame_ids is None else list(frame_ids)
    results = parallel_map(src.load, fids)
    if report is not None:
        report.nan_keypoints += src.coco_gaps + sum(g for _, g in results)
        if not src.sparse:
            for fid in fids:
                if not src.has(fid):
                    report.missing.append((str(src.path), fid))
    return [dets for dets, _ in results]


# -------------------------------------------------------------- packing
def pack_detections(per_camera: Sequence[Sequence[Sequence[Det]]], dtype: "torch.dtype | None" = None) -> Detections:
    """``[camera][frame][detection] -> (kpts, box)`` lists -> padded :class:`Detections` ``[F, V, D]``.

    ``D`` is the largest detection count of any view-frame (at least 1); ``dtype`` defaults to float32.
    """
    import torch

    from ..data import Detections

    dtype = dtype or torch.float32
    V = len(per_camera)
    F = len(per_camera[0]) if V else 0
    for v, cam in enumerate(per_camera):
        if len(cam) != F:
            raise ValueError(f"pack_detections: camera {v} has {len(cam)} frames, camera 0 has {F}")
    D = max([1] + [len(dets) for cam in per_camera for dets in cam])
    kpts = np.zeros((F, V, D, NUM_COCO, 3), dtype=np.float32)
    boxes = np.zeros((F, V, D, 5), dtype=np.float32)
    valid = np.zeros((F, V, D), dtype=bool)
    ident = np.full((F, V, D), -1, dtype=np.int64)
    for v, cam in enumerate(per_camera):
        for f, dets in enumerate(cam):
            for d, det in enumerate(dets):
                kpts[f, v, d] = det[0]
                boxes[f, v, d] = det[1]
                valid[f, v, d] = True
                if len(det) > 2:
                    ident[f, v, d] = det[2]
    identity = torch.from_numpy(ident) if bool((ident >= 0).any()) else None
    return Detections(torch.from_numpy(kpts).to(dtype), torch.from_numpy(boxes).to(dtype), torch.from_numpy(valid), identity)


def unpack_detections(det: Detections) -> list[list[list[Det]]]:
    """Inverse of :func:`pack_detections`: ``[camera][frame][detection] -> (kpts, box)``, or
    ``(kpts, box, identity)`` where the detection's identity is known (valid slots only)."""
    import torch

    k = det.kpts.detach().cpu().to(torch.float32).numpy()
    b = det.boxes.detach().cpu().to(torch.float32).numpy()
    ok = det.valid.detach().cpu().numpy()
    F, V, _ = det.shape
    if det.identity is None:
        return [[[(k[f, v, d], b[f, v, d]) for d in np.flatnonzero(ok[f, v])] for f in range(F)] for v in range(V)]
    ids = det.identity.detach().cpu().numpy()
    return [[[(k[f, v, d], b[f, v, d], int(ids[f, v, d])) if ids[f, v, d] >= 0 else (k[f, v, d], b[f, v, d])
              for d in np.flatnonzero(ok[f, v])] for f in range(F)] for v in range(V)]


# ---------------------------------------------------------------- writing
def _np32(x: np.ndarray | Tensor) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def write_frame_npy(path: Path, dets: Sequence[tuple]) -> None:
    """Write one frame as the reference's mmpose list of dicts ``{'bbox': (5,), 'keypoints': (17, 3)}``
    (atomic); a detection ``(kpts, box, identity)`` with ``identity >= 0`` also gets ``'identity'`` (int)."""
    out = []
    for det in dets:
        d = {"bbox": _np32(det[1]).reshape(5), "keypoints": _np32(det[0]).reshape(NUM_COCO, 3)}
        if len(det) > 2 and det[2] is not None and int(det[2]) >= 0:
            d["identity"] = int(det[2])
        out.append(d)
    write_npy(path, out)


def write_frame_json(path: Path, dets: Sequence[tuple[np.ndarray | Tensor, np.ndarray | Tensor]]) -> None:
    """Write one frame as a COCO results list ``[{"keypoints": [51], "bbox": [x, y, w, h], "score"}]`` (atomic).

    Values are written at full float32 precision, so reading gives back the same float32 numbers.
    """
    out = []
    for det in dets:
        k32 = _np32(det[0]).reshape(NUM_COCO, 3)
        b32 = _np32(det[1]).reshape(5)
        # w, h in float64: the difference of two float32 numbers is exact there, so x + w gives x2 back
        b64 = b32.astype(np.float64)
        xywh = [b64[0], b64[1], b64[2] - b64[0], b64[3] - b64[1]]
        out.append(
            {
                "keypoints": k32.reshape(-1).astype(np.float64).tolist(),
                "bbox": [float(x) for x in xywh],
                "score": float(b32[4]),
            }
        )
        if len(det) > 2 and det[2] is not None and int(det[2]) >= 0:
            out[-1]["identity"] = int(det[2])
    write_json(path, out, indent=None)
