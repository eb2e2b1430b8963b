"""Many per-frame detection files parsed at once, without torch (the load's hot loop).

:func:`read_frames` gives exactly what :func:`~h4d_fast.io.detections.read_frame_detections`
gives file by file (the same detections, the same data-gap count, the same first error), batched:
the per-file work is reading the bytes and unpickling (through :mod:`h4d_fast.io.safe_pickle`);
the cleaning (non-finite keypoints zeroed, negative confidences refused, missing or non-finite
boxes replaced by the keypoint box) runs once over all detections of all files as numpy array
operations. Files in the reference's mmpose form (a list of ``{'bbox': (5,), 'keypoints': (17,
3)}`` float arrays) take that batched path; any other form (JSON, plain arrays, whole-body
keypoints, 4-value boxes, extra keys) is parsed by the per-file parser. When anything is wrong,
the files are parsed again one by one up to the failing one, so the error raised is the one the
per-file loop raises first.

:func:`read_frames_task` is the same for a worker process of :func:`~h4d_fast.io.parallel.read_pool`
(errors come back as data: this package's exceptions do not all pickle).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..constants import NUM_COCO
from ..errors import InputError
from .detections import _f32_finite, keypoint_box, parse_detections, read_frame_detections
from .npy import npy_value

__all__ = ["FrameBatch", "read_frames", "read_frames_task"]


@dataclass
class FrameBatch:
    """Detections of ``n`` frame files, concatenated in file order.

    Attributes:
        counts: ``[n]`` int64 detections per file (0 for a missing file, ``None`` path).
        kpts: ``[N, 17, 3]`` float32, ``N = counts.sum()``.
        boxes: ``[N, 5]`` float32.
        gaps: non-finite keypoints / boxes zeroed or replaced (the per-file parser's count).
        identity: ``[N]`` int64, the person a detection's file names (``'identity'``, written by
            ``h4d detect`` for prompted crops), ``-1`` where unknown; None when no file names any.
    """

    counts: np.ndarray
    kpts: np.ndarray
    boxes: np.ndarray
    gaps: int
    identity: np.ndarray | None = None


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb", buffering=0) as f:
            return f.readall()
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror or e})") from None


def _mmpose_items(obj: Any) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """``(keypoints, boxes)`` when ``obj`` is a list of exactly ``{'bbox': float (5,), 'keypoints':
    float (17, 3)}`` dicts, else None (the per-file parser handles it)."""
    if type(obj) is not list:
        return None
    ks: list[np.ndarray] = []
    bs: list[np.ndarray] = []
    for d in obj:
        if type(d) is not dict or len(d) != 2:
            return None
        k = d.get("keypoints")
        b = d.get("bbox")
        if type(k) is not np.ndarray or type(b) is not np.ndarray:
            return None
        if k.shape != (NUM_COCO, 3) or b.shape != (5,) or k.dtype.kind != "f" or b.dtype.kind != "f":
            return None
        ks.append(k)
        bs.append(b)
    return ks, bs


class _Redo(Exception):
    """Something is wrong in the batch: parse one by one to raise the right error."""


def _sequential(paths: Sequence[str | None], stop: int) -> None:
    """Parse ``paths[:stop + 1]`` with the per-file parser; raises its first error."""
    for p in paths[: stop + 1]:
        if p is not None:
            read_frame_detections(Path(p))


def read_frames(paths: Sequence[str | None]) -> FrameBatch:
    """Parse per-frame detection files (``.npy`` / ``.json``); ``None`` = no file (no detections).

    Raises:
        InputError: the first error :func:`~h4d_fast.io.detections.read_frame_detections` raises
            when called on the files in order.
    """
    n = len(paths)
    counts = np.zeros(n, dtype=np.int64)
    fast_k: list[np.ndarray] = []
    fast_b: list[np.ndarray] = []
    # per file: None (no detections), ("fast", start) into fast_k, or ("file", kpts, boxes)
    where: list[Any] = [None] * n
    gaps = 0
    i = -1
    try:
        for i, p in enumerate(paths):
            if p is None:
                continue
            if p[-5:].lower() == ".json":
                dets, g = read_frame_detections(Path(p))
            else:
                obj = npy_value(_read_bytes(p), p)
                items = _mmpose_items(obj)
                if items is not None:
                    if items[0]:
                        where[i] = ("fast", len(fast_k))
                        counts[i] = len(items[0])
                        fast_k.extend(items[0])
                        fast_b.extend(items[1])
                    continue
                dets, g = parse_detections(obj, Path(p), xywh=False)
            gaps += g
            counts[i] = len(dets)
            if dets:
                ids = np.array([int(d[2]) if len(d) > 2 else -1 for d in dets], dtype=np.int64)
                where[i] = ("file", np.stack([d[0] for d in dets]), np.stack([d[1] for d in dets]), ids)
        K32, B32, g = _clean(fast_k, fast_b)
        gaps += g
    except (InputError, _Redo):
        _sequential(paths, i if i >= 0 else n - 1)
        raise  # pragma: no cover - the per-file parser raised above
    N = int(counts.sum())
    if all(w is None or w[0] == "fast" for w in where):
        return FrameBatch(counts, K32, B32, gaps)  # the common case: fast_k is in file order
    kpts = np.zeros((N, NUM_COCO, 3), np.float32)
    boxes = np.zeros((N, 5), np.float32)
    identity = np.full(N, -1, np.int64)
    o = 0
    for i, w in enumerate(where):
        c = int(counts[i])
        if w is None or c == 0:
            continue
        if w[0] == "fast":
            kpts[o : o + c] = K32[w[1] : w[1] + c]
            boxes[o : o + c] = B32[w[1] : w[1] + c]
        else:
            kpts[o : o + c] = w[1]
            boxes[o : o + c] = w[2]
            identity[o : o + c] = w[3]
        o += c
    return FrameBatch(counts, kpts, boxes, gaps, identity if bool((identity >= 0).any()) else None)


def _clean(ks: list[np.ndarray], bs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """The per-file parser's cleaning, over all mmpose detections at once (see
    ``detections._parse_items``): non-finite keypoints -> 0 (gaps), a negative confidence is an
    error (raised as :class:`_Redo`), a non-finite box -> the keypoint box (gaps)."""
    if not ks:
        return np.zeros((0, NUM_COCO, 3), np.float32), np.zeros((0, 5), np.float32), 0
    K = np.stack(ks).astype(np.float64, copy=False)
    bad = ~_f32_finite(K).all(-1)
    gaps = int(bad.sum())
    if gaps:
        K[bad] = 0.0
    if (K[..., 2] < 0).any():
        raise _Redo
    K32 = K.astype(np.float32)
    B = np.stack(bs).astype(np.float64, copy=False)
    badb = ~_f32_finite(B).all(-1)
    nb = int(badb.sum())
    if nb:
        B[badb] = keypoint_box(K32[badb])
    return K32, B.astype(np.float32), gaps + nb


def read_frames_task(paths: Sequence[str | None]) -> tuple:
    """:func:`read_frames` in a worker process: ``("ok", counts, kpts, boxes, gaps, identity)`` or
    ``("error", path, problem, field)``."""
    try:
        b = read_frames(paths)
    except InputError as e:
        return ("error", None if e.path is None else str(e.path), e.problem, e.field)
    return ("ok", b.counts, b.kpts, b.boxes, b.gaps, b.identity)
