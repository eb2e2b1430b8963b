"""OpenPose JSON keypoints (one file per frame and camera) -> COCO-17 detections.

An OpenPose frame file is ``{"people": [{"pose_keypoints_2d": [x0, y0, c0, x1, y1, c1, ...]}, ...]}``
(``--write_json``; Pose2Sim writes the same layout for its other pose estimators). A keypoint that
was not found is ``0, 0, 0``; it stays at confidence 0 here. EasyMocap's ``annots`` files
(``{"annots": [{"keypoints": [[x, y, c], ...], "bbox": [x1, y1, x2, y2, c]}]}``) are read too.

Keypoint layouts, told apart by the number of keypoints per person (25 is ambiguous: see
:func:`guess_layout`), and the COCO-17 source index of each, in COCO order (nose, left eye, right
eye, left ear, right ear, left/right shoulder, left/right elbow, left/right wrist, left/right hip,
left/right knee, left/right ankle):

==========  ==========================================================  ============================
layout      definition (public)                                         COCO-17 <- source index
==========  ==========================================================  ============================
BODY_25     OpenPose ``POSE_BODY_25_BODY_PARTS`` (doc/02_output.md,     0 16 15 18 17 5 2 6 3 7 4
            src/openpose/pose/poseParameters.cpp): 0 Nose, 1 Neck,      12 9 13 10 14 11
            2-4 R shoulder/elbow/wrist, 5-7 L ..., 8 MidHip, 9-11 R
            hip/knee/ankle, 12-14 L ..., 15 REye, 16 LEye, 17 REar,
            18 LEar, 19-21 L big toe/small toe/heel, 22-24 R ...
BODY_25B    OpenPose ``POSE_BODY_25B_BODY_PARTS`` (experimental         0 .. 16 (identity)
            models): 0-16 the COCO order, 17 UpperNeck, 18 HeadTop,
            19-24 feet as BODY_25
COCO_18     OpenPose ``POSE_COCO_BODY_PARTS``: 0 Nose, 1 Neck, 2-4 R    0 15 14 17 16 5 2 6 3 7 4
            shoulder/elbow/wrist, 5-7 L ..., 8-10 R hip/knee/ankle,     11 8 12 9 13 10
            11-13 L ..., 14 REye, 15 LEye, 16 REar, 17 LEar
COCO_17     COCO keypoints (MS-COCO annotation format)                  identity
HALPE_26    Halpe full-body 26 (0-16 COCO, then head, neck, hip, feet)  0 .. 16 (identity)
COCO_133    COCO-WholeBody (0-16 COCO body, then feet, face, hands)     0 .. 16 (identity)
BODY_135    OpenPose ``POSE_BODY_135_BODY_PARTS`` (0-16 COCO order)     0 .. 16 (identity)
==========  ==========================================================  ============================

Left/right are the subject's own, as in COCO. The tables were written from the definitions above
and are checked joint by joint by name in ``tests/test_io_peers.py``.

Each detection's box is the tight box of all of its source keypoints with confidence above
:data:`~h4d_fast.io.detections.KPT_BOX_CONF` (feet and head top included), scored by the mean
COCO-17 confidence. People whose every keypoint has confidence 0 are dropped.

Frame numbers come from the last run of digits in the file name (``cam01.0000.json`` -> 0,
``video_000000000012_keypoints.json`` -> 12); files sort by that number.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..constants import NUM_COCO
from ..errors import InputError
from .detections import KPT_BOX_CONF, Det, parallel_map, read_json

__all__ = [
    "LAYOUTS",
    "LAYOUT_NAMES",
    "TO_COCO17",
    "OpenPoseCamera",
    "frame_number",
    "guess_layout",
    "is_openpose_json",
    "layouts_for_count",
    "people_to_detections",
    "read_openpose_cameras",
    "read_openpose_folder",
    "read_openpose_frame",
    "read_openpose_people",
    "to_coco17",
]

# ------------------------------------------------------------------ layouts
_COCO17 = (
    "Nose", "LEye", "REye", "LEar", "REar", "LShoulder", "RShoulder", "LElbow", "RElbow",
    "LWrist", "RWrist", "LHip", "RHip", "LKnee", "RKnee", "LAnkle", "RAnkle",
)
_FEET = ("LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel")

#: Keypoint names of each layout, in file order (OpenPose's spelling).
LAYOUT_NAMES: dict[str, tuple[str, ...]] = {
    "BODY_25": (
        "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip",
        "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
    ) + _FEET,
    "BODY_25B": _COCO17 + ("UpperNeck", "HeadTop") + _FEET,
    "COCO_18": (
        "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist",
        "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
    ),
    "COCO_17": _COCO17,
    "HALPE_26": _COCO17 + ("Head", "Neck", "Hip") + _FEET,
}

#: COCO-17 keypoint ``i`` is source keypoint ``TO_COCO17[layout][i]``.
TO_COCO17: dict[str, tuple[int, ...]] = {
    "BODY_25": (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11),
    "BODY_25B": tuple(range(NUM_COCO)),
    "COCO_18": (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10),
    "COCO_17": tuple(range(NUM_COCO)),
    "HALPE_26": tuple(range(NUM_COCO)),
    "COCO_133": tuple(range(NUM_COCO)),
    "BODY_135": tuple(range(NUM_COCO)),
}

#: Number of keypoints per person of each layout.
LAYOUTS: dict[str, int] = {
    "BODY_25": 25, "BODY_25B": 25, "COCO_18": 18, "COCO_17": 17, "HALPE_26": 26, "COCO_133": 133, "BODY_135": 135,
}

_ALIASES = {
    "BODY25": "BODY_25", "BODY_25": "BODY_25", "BODY25B": "BODY_25B", "BODY_25B": "BODY_25B",
    "COCO": "COCO_18", "COCO18": "COCO_18", "COCO_18": "COCO_18", "COCO17": "COCO_17", "COCO_17": "COCO_17",
    "HALPE26": "HALPE_26", "HALPE_26": "HALPE_26", "COCO133": "COCO_133", "COCO_133": "COCO_133",
    "WHOLEBODY": "COCO_133", "BODY135": "BODY_135", "BODY_135": "BODY_135",
}


def canonical_layout(name: str) -> str:
    """``'body25b'``, ``'BODY_25B'`` ... -> ``'BODY_25B'``; ValueError for an unknown layout."""
    key = str(name).upper().replace("-", "_").replace(" ", "")
    if key not in _ALIASES:
        raise ValueError(f"unknown keypoint layout {name!r} (known: {', '.join(LAYOUTS)})")
    return _ALIASES[key]


def layouts_for_count(k: int) -> list[str]:
    """The layouts with ``k`` keypoints per person (two for 25: BODY_25 and BODY_25B)."""
    return [n for n, c in LAYOUTS.items() if c == k]


def to_coco17(kpts: np.ndarray, layout: str) -> np.ndarray:
    """``[..., K, 3]`` keypoints of ``layout`` -> ``[..., 17, 3]`` float32 COCO-17 (a copy)."""
    layout = canonical_layout(layout)
    k = np.asarray(kpts)
    if k.shape[-2] != LAYOUTS[layout]:
        raise ValueError(f"to_coco17: {layout} has {LAYOUTS[layout]} keypoints, got {k.shape[-2]}")
    return np.ascontiguousarray(k[..., list(TO_COCO17[layout]), :], dtype=np.float32)


# ------------------------------------------------------------ frame files
_LAST_DIGITS = re.compile(r"(\d+)(?!.*\d)")


def frame_number(path: str | Path) -> int | None:
    """The last run of digits of a file's name without extension, or None."""
    name = Path(path).name
    stem = name[:-5] if name.lower().endswith(".json") else Path(name).stem
    m = _LAST_DIGITS.search(stem)
    return int(m.group(1)) if m else None


def read_openpose_people(path: Path, obj: Any = None) -> tuple[list[np.ndarray], dict[str, Any]]:
    """One frame file -> per person a float64 ``[K, 3]`` array (as written: not cleaned, not mapped).

    Also returns what else the file says (``{"width", "height"}`` of EasyMocap annots).

    Raises:
        InputError: bad JSON, no ``people``/``annots`` list, a keypoint list whose length is not a
            multiple of 3, non-numeric values, or people with different keypoint counts.
    """
    path = Path(path)
    if obj is None:
        obj = read_json(path)
    if not isinstance(obj, dict) or not ("people" in obj or "annots" in obj):
        raise InputError(path, "expected an OpenPose object {\"people\": [...]} (or EasyMocap {\"annots\": [...]})")
    meta: dict[str, Any] = {}
    key = "people" if "people" in obj else "annots"
    people = obj[key]
    if not isinstance(people, list):
        raise InputError(path, f"expected a list, got {type(people).__name__}", key)
    if key == "annots":
        meta["annots"] = True
        for k in ("width", "height"):
            if isinstance(obj.get(k), (int, float)):
                meta[k] = int(obj[k])
    out: list[np.ndarray] = []
    for i, p in enumerate(people):
        fld = f"{key}[{i}]"
        if not isinstance(p, dict):
            raise InputError(path, f"expected an object, got {type(p).__name__}", fld)
        kkey = "pose_keypoints_2d" if key == "people" else "keypoints"
        if kkey not in p:
            raise InputError(path, f"no '{kkey}' (keys: {', '.join(map(str, p)) or 'none'})", fld)
        raw = p[kkey]
        try:
            a = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(path, "keypoints are not all numbers", f"{fld}.{kkey}") from None
        if a.ndim == 2 and a.shape[1] == 3:
            a = a.reshape(-1)
        if a.ndim != 1 or a.size % 3 != 0:
            raise InputError(path, f"expected a flat list of x, y, c triples, got shape {a.shape}", f"{fld}.{kkey}")
        k = a.reshape(-1, 3)
        if k.shape[0] not in LAYOUTS.values():
            known = ", ".join(f"{n} ({c})" for n, c in LAYOUTS.items())
            raise InputError(path, f"wrong keypoint count {k.shape[0]} (known layouts: {known})", f"{fld}.{kkey}")
        if out and k.shape[0] != out[0].shape[0]:
            raise InputError(path, f"people have different keypoint counts ({out[0].shape[0]} and {k.shape[0]})", f"{fld}.{kkey}")
        out.append(k)
    return out, meta


def people_to_detections(path: Path, people: Sequence[np.ndarray], layout: str) -> tuple[list[Det], int]:
    """Map raw people ``[K, 3]`` of ``layout`` to COCO-17 detections; ``(dets, gaps)``.

    Non-finite values become ``0, 0, 0`` (counted as gaps); negative confidences are an error.
    """
    layout = canonical_layout(layout)
    dets: list[Det] = []
    gaps = 0
    idx = list(TO_COCO17[layout])
    for i, k in enumerate(people):
        if k.shape[0] != LAYOUTS[layout]:
            raise InputError(path, f"{layout} has {LAYOUTS[layout]} keypoints, this person has {k.shape[0]}", f"person {i}")
        bad = ~np.isfinite(k).all(-1)
        if bad.any():
            gaps += int(bad.sum())
            k = k.copy()
            k[bad] = 0.0
        if (k[:, 2] < 0).any():
            j = int(np.argmax(k[:, 2] < 0))
            raise InputError(path, f"negative confidence {k[j, 2]:g} at keypoint {j}", f"person {i}")
        if not (k[:, 2] > 0).any():
            continue
        coco = k[idx].astype(np.float32)
        ok = k[:, 2] > KPT_BOX_CONF
        box = np.zeros(5, np.float32)
        if ok.any():
            box[:2] = k[ok, :2].min(0)
            box[2:4] = k[ok, :2].max(0)
        box[4] = coco[:, 2].mean()
        dets.append((coco, box))
    return dets, gaps


# ---------------------------------------------------------- layout guess
def _head_spread(k: np.ndarray, layout: str) -> float | None:
    """Spread of the five COCO head points under ``layout`` relative to the person's size."""
    ok = k[:, 2] > KPT_BOX_CONF
    if ok.sum() < 8:
        return None
    xy = k[ok, :2]
    size = float(np.linalg.norm(xy.max(0) - xy.min(0)))
    if size <= 0:
        return None
    head = k[list(TO_COCO17[layout][:5])]
    head = head[head[:, 2] > KPT_BOX_CONF, :2]
    if len(head) < 3:
        return None
    d = np.linalg.norm(head[:, None] - head[None], axis=-1).max()
    return float(d) / size


def guess_layout(people: Iterable[np.ndarray], count: int, limit: int = 400) -> tuple[str, str]:
    """Name the layout of people with ``count`` keypoints; ``(layout, why)``.

    Only 25 is ambiguous. BODY_25 has the neck at 1 and the mid-hip at 8; BODY_25B has the COCO
    order in its first 17. Read each way, the five COCO head points (nose, eyes, ears) of the
    right layout lie close together, while the wrong one puts "eyes" and "ears" on the neck,
    shoulder and arm (BODY_25 read as 25B) or on the ankles and head top (25B read as BODY_25).
    The layout with the smaller median head spread (relative to the person's size) wins.
    """
    cands = layouts_for_count(count)
    if not cands:
        raise ValueError(f"no keypoint layout has {count} keypoints")
    if len(cands) == 1:
        return cands[0], f"{count} keypoints per person"
    spreads: dict[str, list[float]] = {c: [] for c in cands}
    n = 0
    for k in people:
        if n >= limit:
            break
        vals = {c: _head_spread(k, c) for c in cands}
        if any(v is None for v in vals.values()):
            continue
        n += 1
        for c, v in vals.items():
            spreads[c].append(v)  # type: ignore[arg-type]
    if n == 0:
        return "BODY_25", f"{count} keypoints per person; no person clear enough to tell BODY_25 from BODY_25B: assumed BODY_25 (OpenPose's default)"
    med = {c: float(np.median(v)) for c, v in spreads.items()}
    best = min(med, key=med.__getitem__)
    detail = ", ".join(f"{c} {m:.2f}" for c, m in med.items())
    return best, f"{count} keypoints per person; head-point spread over {n} people: {detail}"


# ------------------------------------------------------------ frame reading
def read_openpose_frame(path: Path, layout: str | None = None) -> list[Det]:
    """One OpenPose frame file -> COCO-17 detections (``layout`` guessed from this frame alone when None)."""
    path = Path(path)
    people, _ = read_openpose_people(path)
    if not people:
        return []
    if layout is None:
        layout, _ = guess_layout(people, people[0].shape[0])
    dets, _ = people_to_detections(path, people, layout)
    return dets


def is_openpose_json(path: Path) -> bool:
    """Whether a JSON file looks like an OpenPose (or EasyMocap annots) frame file (cheap sniff)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return b'"people"' in head or b'"pose_keypoints_2d"' in head or b'"annots"' in head


@dataclass
class OpenPoseCamera:
    """One camera's OpenPose frame files.

    Attributes:
        folder: the folder read.
        files: source frame number -> file.
        people: source frame number -> raw people ``[K, 3]`` (as written).
        count: keypoints per person (0 when no file has a person).
        sizes: ``(width, height)`` stated by the files (EasyMocap annots), if any.
        warnings: e.g. file names without a frame number.
        annots: the files are EasyMocap ``annots``.
    """

    folder: Path
    files: dict[int, Path] = field(default_factory=dict)
    people: dict[int, list[np.ndarray]] = field(default_factory=dict)
    count: int = 0
    sizes: set[tuple[int, int]] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    annots: bool = False  # EasyMocap annots files rather than OpenPose's

    def detections(self, layout: str) -> tuple[dict[int, list[Det]], int]:
        """Source frame number -> COCO-17 detections; and the number of non-finite values zeroed."""
        out: dict[int, list[Det]] = {}
        gaps = 0
        for fid in sorted(self.files):
            dets, g = people_to_detections(self.files[fid], self.people.get(fid, []), layout)
            out[fid] = dets
            gaps += g
        return out, gaps


def _frame_files(folder: Path, names: Sequence[str] | None = None) -> tuple[dict[int, Path], list[str]]:
    if names is None:
        try:
            names = sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(".json"))
        except OSError as e:
            raise InputError(folder, f"cannot list folder ({e.strerror or e})") from None
    else:
        names = sorted(names)
    if not names:
        raise InputError(folder, "no .json frame files")
    nums = [frame_number(n) for n in names]
    warnings: list[str] = []
    if any(n is None for n in nums) or len(set(nums)) != len(nums):
        warnings.append(f"{folder}: file names do not carry unique frame numbers; frames numbered by sorted name")
        nums = list(range(len(names)))
    files = {int(n): folder / name for n, name in zip(nums, names)}  # type: ignore[arg-type]
    return dict(sorted(files.items())), warnings


def read_openpose_folder(folder: Path, workers: int | None = None, names: Sequence[str] | None = None) -> OpenPoseCamera:
    """Read every ``*.json`` frame file of one camera's folder (raw people, not yet mapped).

    ``names``: read only these files of the folder (one camera's files of a folder shared by several).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "keypoint folder not found")
    files, warnings = _frame_files(folder, names)
    results = parallel_map(lambda p: read_openpose_people(p), list(files.values()), workers)
    cam = OpenPoseCamera(folder, files, warnings=warnings)
    for fid, (people, meta) in zip(files, results):
        cam.people[fid] = people
        if people:
            if cam.count and people[0].shape[0] != cam.count:
                raise InputError(files[fid], f"{people[0].shape[0]} keypoints per person, earlier files of this folder have {cam.count}")
            cam.count = people[0].shape[0]
        cam.annots |= bool(meta.get("annots"))
        if "width" in meta and "height" in meta:
            cam.sizes.add((meta["width"], meta["height"]))
    return cam


def read_openpose_cameras(
    folders: Sequence[Path],
    layout: str | None = None,
    workers: int | None = None,
    names: Sequence[Sequence[str] | None] | None = None,
) -> tuple[list[OpenPoseCamera], str, str]:
    """Read several cameras' folders and settle one layout for all; ``(cameras, layout, why)``.

    ``names[i]``: the file names of camera ``i`` in ``folders[i]`` (None: every ``.json`` there).

    Raises:
        InputError: cameras with different keypoint counts, no person in any file, or a ``layout``
            whose keypoint count differs from the files'.
    """
    sel = list(names) if names is not None else [None] * len(folders)
    cams = [read_openpose_folder(Path(f), workers, n) for f, n in zip(folders, sel)]
    counts = {c.count for c in cams if c.count}
    if len(counts) > 1:
        desc = ", ".join(f"{c.folder.name}: {c.count}" for c in cams if c.count)
        raise InputError(Path(folders[0]).parent, f"camera folders have different keypoint counts per person ({desc})")
    if not counts:
        raise InputError(Path(folders[0]).parent if folders else None, "no person in any OpenPose frame file")
    count = counts.pop()
    if layout is not None:
        layout = canonical_layout(layout)
        if LAYOUTS[layout] != count:
            raise InputError(cams[0].folder, f"layout {layout} has {LAYOUTS[layout]} keypoints but the files have {count}")
        return cams, layout, "given"
    everyone = (k for c in cams for fid in sorted(c.people) for k in c.people[fid])
    layout, why = guess_layout(everyone, count)
    return cams, layout, why
