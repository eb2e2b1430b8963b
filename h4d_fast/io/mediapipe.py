"""MediaPipe Pose (BlazePose, 33 landmarks) arrays -> COCO-17 detections.

MediaPipe's pose landmarker returns, per person, 33 landmarks (public landmark list of the
MediaPipe Pose Landmarker / ``mp.solutions.pose.PoseLandmark``):

  0 nose, 1 left eye (inner), 2 left eye, 3 left eye (outer), 4 right eye (inner), 5 right eye,
  6 right eye (outer), 7 left ear, 8 right ear, 9 mouth (left), 10 mouth (right), 11 left shoulder,
  12 right shoulder, 13 left elbow, 14 right elbow, 15 left wrist, 16 right wrist, 17 left pinky,
  18 right pinky, 19 left index, 20 right index, 21 left thumb, 22 right thumb, 23 left hip,
  24 right hip, 25 left knee, 26 right knee, 27 left ankle, 28 right ankle, 29 left heel,
  30 right heel, 31 left foot index, 32 right foot index.

Left/right are the subject's own, as in COCO, so COCO-17 <- MediaPipe index:
``0 2 5 7 8 11 12 13 14 15 16 23 24 25 26 27 28`` (:data:`MEDIAPIPE33_TO_COCO17`).

Arrays accepted (one per camera): ``[F, S, 33, C]`` (``S`` person slots per frame) or ``[F, 33, C]``
(one person), with ``C`` = 3 ``(x, y, visibility)``, 4 ``(x, y, z, visibility)`` or 5
``(x, y, z, visibility, presence)``. ``x, y`` are pixels, or MediaPipe's normalised image
coordinates (``[0, 1]``; multiplied by the image size, which must then be given). A slot whose
values are all NaN is empty; a NaN landmark in a filled slot gets confidence 0. The confidence of
a keypoint is the visibility, clipped to ``[0, 1]``.

A ``.npz`` file holds one such array per camera, named by the camera (``cam01``, ``cam02``, ...;
any name works, the importer matches it to the calibration by its ``camNN`` token or by order).
Entries that are not 3- or 4-d numeric arrays are ignored (metadata); a 3- or 4-d array with
another landmark count is an error.
Each detection's box is the tight box of its 33 landmarks with confidence above
:data:`~h4d_fast.io.detections.KPT_BOX_CONF`, scored by the mean COCO-17 confidence.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..constants import NUM_COCO
from ..errors import InputError
from .detections import KPT_BOX_CONF, Det

__all__ = [
    "MEDIAPIPE33_NAMES",
    "MEDIAPIPE33_TO_COCO17",
    "MediaPipeCapture",
    "is_mediapipe_npz",
    "mediapipe_npz_cameras",
    "mediapipe_array_to_detections",
    "mediapipe_to_coco17",
    "read_mediapipe_npz",
]

NUM_MEDIAPIPE = 33

MEDIAPIPE33_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
)

#: COCO-17 keypoint ``i`` is MediaPipe landmark ``MEDIAPIPE33_TO_COCO17[i]``.
MEDIAPIPE33_TO_COCO17: tuple[int, ...] = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)

# channel of the visibility for each accepted channel count
_VIS_CHANNEL = {3: 2, 4: 3, 5: 3}


def _as_xyc(a: np.ndarray) -> np.ndarray:
    """``[..., 33, C]`` -> ``[..., 33, 3]`` ``(x, y, visibility)`` (float64 copy)."""
    c = a.shape[-1]
    if c not in _VIS_CHANNEL:
        raise ValueError(f"expected 3, 4 or 5 values per landmark, got {c}")
    out = np.empty(a.shape[:-1] + (3,), np.float64)
    out[..., :2] = a[..., :2]
    out[..., 2] = a[..., _VIS_CHANNEL[c]]
    return out


def mediapipe_to_coco17(landmarks: np.ndarray) -> np.ndarray:
    """``[..., 33, C]`` landmarks -> ``[..., 17, 3]`` float32 COCO-17 ``(x, y, conf)``.

    NaN landmarks become ``0, 0, 0``; visibility is clipped to ``[0, 1]``.
    """
    a = np.asarray(landmarks, dtype=np.float64)
    if a.shape[-2] != NUM_MEDIAPIPE:
        raise ValueError(f"expected {NUM_MEDIAPIPE} landmarks, got {a.shape[-2]}")
    k = _as_xyc(a)[..., list(MEDIAPIPE33_TO_COCO17), :]
    bad = ~np.isfinite(k).all(-1)
    k[bad] = 0.0
    k[..., 2] = np.clip(k[..., 2], 0.0, 1.0)
    return k.astype(np.float32)


def _check_array(path: Path, key: str, a: np.ndarray) -> np.ndarray:
    """Validate one camera's array and return it as float64 ``[F, S, 33, 3]`` ``(x, y, vis)``."""
    if not np.issubdtype(a.dtype, np.number):
        raise InputError(path, f"expected a float array, got dtype {a.dtype}", key)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[2] != NUM_MEDIAPIPE or a.shape[3] not in _VIS_CHANNEL:
        raise InputError(path, f"expected [frames, slots, {NUM_MEDIAPIPE}, 3|4|5] (or [frames, {NUM_MEDIAPIPE}, 3|4|5]), got {a.shape}", key)
    return _as_xyc(a.astype(np.float64))


def _looks_normalized(a: np.ndarray) -> bool:
    xy = np.asarray(a)[..., :2]
    fin = xy[np.isfinite(xy)]
    return bool(fin.size) and float(fin.min()) >= -0.5 and float(fin.max()) <= 1.5


def mediapipe_array_to_detections(
    landmarks: np.ndarray,
    path: Path | None = None,
    key: str = "landmarks",
    image_size: Sequence[float] | None = None,
    normalized: bool | None = None,
) -> tuple[list[list[Det]], int]:
    """One camera's landmarks ``[F, S, 33, C]`` -> ``[frame][detection]`` COCO-17 detections.

    Args:
        landmarks: see the module docstring.
        path, key: where the array came from (for error messages).
        image_size: ``(width, height)`` to scale normalised coordinates.
        normalized: the coordinates are normalised (``None``: guessed: every finite ``x, y`` in
            ``[-0.5, 1.5]``).
    Returns:
        ``(detections per frame, number of NaN landmarks in filled slots)``.
    """
    a = _check_array(Path(path) if path is not None else Path(key), key, np.asarray(landmarks))
    F, S = a.shape[:2]
    filled = ~np.isnan(a).all(axis=(-1, -2))  # [F, S]
    if normalized is None:
        normalized = _looks_normalized(a)
    if normalized:
        if image_size is None:
            raise InputError(path, "landmarks look normalised to [0, 1] but no image size is known to scale them", key)
        a = a.copy()
        a[..., 0] *= float(image_size[0])
        a[..., 1] *= float(image_size[1])
    bad = ~np.isfinite(a).all(-1) & filled[..., None]
    gaps = int(bad.sum())
    a = np.where(np.isfinite(a), a, 0.0)
    a[..., 2] = np.clip(a[..., 2], 0.0, 1.0)
    coco = a[:, :, list(MEDIAPIPE33_TO_COCO17)].astype(np.float32)  # [F, S, 17, 3]
    ok = a[..., 2] > KPT_BOX_CONF  # [F, S, 33]
    lo = np.where(ok[..., None], a[..., :2], np.inf).min(-2)
    hi = np.where(ok[..., None], a[..., :2], -np.inf).max(-2)
    anyok = ok.any(-1)
    boxes = np.zeros((F, S, 5), np.float32)
    boxes[..., 0:2] = np.where(anyok[..., None], lo, 0.0)
    boxes[..., 2:4] = np.where(anyok[..., None], hi, 0.0)
    boxes[..., 4] = coco[..., 2].mean(-1)
    keep = filled & (a[..., 2] > 0).any(-1)
    out: list[list[Det]] = [[(coco[f, s], boxes[f, s]) for s in range(S) if keep[f, s]] for f in range(F)]
    return out, gaps


@dataclass
class MediaPipeCapture:
    """The cameras of a MediaPipe ``.npz``.

    Attributes:
        path: the file.
        cameras: array names, in file order.
        frames: per camera ``[frame][detection]`` COCO-17 detections.
        slots: person slots per frame of each camera's array.
        gaps: NaN landmarks in filled slots (confidence set to 0).
        normalized: whether the coordinates were normalised (and scaled here).
        skipped: entries that are not landmark arrays.
    """

    path: Path
    cameras: list[str] = field(default_factory=list)
    frames: list[list[list[Det]]] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    gaps: int = 0
    normalized: bool = False
    skipped: list[str] = field(default_factory=list)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(path, f"not a readable .npz file ({type(e).__name__}: {e})") from None


def _is_landmark_array(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.number) and a.ndim in (3, 4) and a.shape[-2] == NUM_MEDIAPIPE and a.shape[-1] in _VIS_CHANNEL


def _npz_headers(path: Path) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    """``(name, shape, dtype)`` of every array of an ``.npz`` (headers only; [] when unreadable)."""
    out = []
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                out.append((name[:-4], tuple(shape), dtype))
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return []
    return out


def mediapipe_npz_cameras(path: Path) -> list[str]:
    """The camera arrays of an ``.npz`` (numeric 3- or 4-d entries, as :func:`read_mediapipe_npz` reads them),
    or [] when none holds 33 landmarks (not a MediaPipe file). Reads only the headers."""
    heads = [(n, s) for n, s, d in _npz_headers(Path(path)) if len(s) in (3, 4) and d.kind in "fiu"]
    if not any(s[-2] == NUM_MEDIAPIPE and s[-1] in _VIS_CHANNEL for _, s in heads):
        return []
    return [n for n, _ in heads]


def is_mediapipe_npz(path: Path) -> bool:
    """Whether an ``.npz`` holds at least one MediaPipe landmark array (reads only the headers)."""
    return bool(mediapipe_npz_cameras(path))


def read_mediapipe_npz(
    path: Path,
    image_sizes: Mapping[str, Sequence[float]] | Sequence[Sequence[float]] | None = None,
    normalized: bool | None = None,
) -> MediaPipeCapture:
    """Read a ``.npz`` of per-camera MediaPipe landmark arrays.

    Args:
        path: the file.
        image_sizes: ``(width, height)`` per camera (by array name, or a list in file order);
            needed only for normalised coordinates.
        normalized: see :func:`mediapipe_array_to_detections` (``None``: guessed per camera).
    Raises:
        InputError: unreadable file, no landmark array, or a malformed one (wrong landmark count).
    """
    path = Path(path)
    arrays = _load_npz(path)
    cap = MediaPipeCapture(path)
    names = [k for k, a in arrays.items() if a.ndim in (3, 4) and np.issubdtype(a.dtype, np.number)]
    cap.skipped = [k for k in arrays if k not in names]
    if not names:
        raise InputError(path, f"no landmark array [frames, slots, {NUM_MEDIAPIPE}, 3] (entries: {', '.join(arrays) or 'none'})")
    for i, k in enumerate(names):
        size = None
        if isinstance(image_sizes, Mapping):
            size = image_sizes.get(k)
        elif image_sizes is not None and i < len(image_sizes):
            size = image_sizes[i]
        a = arrays[k]
        dets, gaps = mediapipe_array_to_detections(a, path, k, size, normalized)
        cap.normalized |= _looks_normalized(a) if normalized is None else bool(normalized)
        cap.cameras.append(k)
        cap.frames.append(dets)
        cap.slots.append(1 if a.ndim == 3 else int(a.shape[1]))
        cap.gaps += gaps
    return cap


assert len(MEDIAPIPE33_NAMES) == NUM_MEDIAPIPE and len(MEDIAPIPE33_TO_COCO17) == NUM_COCO
