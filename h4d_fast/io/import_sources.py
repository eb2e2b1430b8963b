"""Finding what a capture folder holds for the importer: keypoint sources, camera numbers, and the people count estimated from 2D keypoints (split from :mod:`h4d_fast.io.importer`)."""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..camera import CameraSet
from ..errors import InputError
from .detections import Det
from .mediapipe import is_mediapipe_npz, mediapipe_npz_cameras
from .openpose import is_openpose_json

_LOOSE_CAM = re.compile(r"(?i)cam(?:era)?[_\- ]?(\d+)")


def camera_number(label: str) -> int | None:
    """The camera number in a name: ``cam_01`` / ``cam01_json`` / ``int_cam01_img`` / ``camera3`` -> 1/1/1/3;
    a bare number (``01``, EasyMocap) -> itself; else None."""
    label = str(label)
    m = list(_LOOSE_CAM.finditer(label))
    if m:
        return int(m[-1].group(1))
    base = label.split(".")[0]
    return int(base) if base.isdigit() else None


# ------------------------------------------------------ keypoint discovery
@dataclass
class KeypointSource:
    """A set of per-camera keypoints found under the capture.

    Attributes:
        kind: ``openpose``, ``mediapipe`` or ``coco``.
        path: the folder holding the camera folders/files, or the ``.npz``.
        labels: camera labels (folder names, file stems, npz keys).
        items: per camera: a folder (openpose), a file (coco), or a key (mediapipe).
        names: per camera the file names to read in a shared folder (openpose, flat layout), else None.
    """

    kind: str
    path: Path
    labels: list[str]
    items: list[Any]
    names: list[list[str] | None] = field(default_factory=list)

    def describe(self) -> str:
        return f"{self.kind} {self.path} ({len(self.labels)} cameras)"


def _json_kind(path: Path) -> str | None:
    if is_openpose_json(path):
        return "openpose"
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError:
        return None
    if b'"image_id"' in head or b'"annotations"' in head:
        return "coco"
    return None


def find_keypoint_sources(root: Path, skip: Sequence[Path] = (), max_depth: int = 6) -> list[KeypointSource]:
    """Keypoint sets under ``root`` (a folder, or an ``.npz`` file), best first (see the module docstring)."""
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() == ".npz":
            cap_keys = _npz_keys(root)
            return [KeypointSource("mediapipe", root, cap_keys, cap_keys, [None] * len(cap_keys))]
        raise InputError(root, "keypoints must be a folder (per-camera folders or files) or a MediaPipe .npz")
    skip_r = [Path(s).resolve() for s in skip]
    op_dirs: dict[Path, list[tuple[str, Path, list[str] | None]]] = {}
    coco_dirs: dict[Path, list[tuple[str, Path]]] = {}
    npzs: list[Path] = []
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(x for x in dirnames if not x.startswith(".") and (d / x).resolve() not in skip_r)
        if len(d.parts) - base_depth >= max_depth:
            dirnames[:] = []
        jsons = sorted(f for f in filenames if f.lower().endswith(".json") and not f.startswith("."))
        for f in sorted(filenames):
            if f.lower().endswith(".npz") and is_mediapipe_npz(d / f):
                npzs.append(d / f)
        if not jsons:
            continue
        kinds = {k: None for k in (_json_kind(d / jsons[0]), _json_kind(d / jsons[-1])) if k}
        if "openpose" in kinds:
            groups: dict[int, list[str]] = {}
            for f in jsons:
                n = _file_camera_number(f)
                if n is not None:
                    groups.setdefault(n, []).append(f)
            if len(groups) >= 2 and sum(len(v) for v in groups.values()) == len(jsons):
                for n, files in sorted(groups.items()):
                    op_dirs.setdefault(d, []).append((f"cam{n:02d}", d, files))
            else:
                op_dirs.setdefault(d.parent, []).append((d.name, d, None))
        elif "coco" in kinds:
            for f in jsons:
                if _json_kind(d / f) == "coco":
                    coco_dirs.setdefault(d, []).append((f[:-5], d / f))
    out: list[tuple[tuple[int, int, int, str], KeypointSource]] = []
    for parent, cams in op_dirs.items():
        cams = sorted(cams, key=lambda c: c[0])
        src = KeypointSource("openpose", parent, [c[0] for c in cams], [c[1] for c in cams], [c[2] for c in cams])
        out.append(((-len(cams), 0, len(parent.parts), str(parent)), src))
    for p in npzs:
        keys = _npz_keys(p)
        out.append(((-len(keys), 1, len(p.parts), str(p)), KeypointSource("mediapipe", p, keys, keys, [None] * len(keys))))
    for parent, cams in coco_dirs.items():
        cams = sorted(cams)
        out.append(((-len(cams), 2, len(parent.parts), str(parent)), KeypointSource("coco", parent, [c[0] for c in cams], [c[1] for c in cams], [None] * len(cams))))
    out.sort(key=lambda x: x[0])
    return [s for _, s in out]


_LAST_RUN = re.compile(r"\d+(?!.*\d)")


def _file_camera_number(file_name: str) -> int | None:
    """Camera number of a per-frame file name once its frame number (last digit run) is removed."""
    stem = file_name[:-5] if file_name.lower().endswith(".json") else file_name
    return camera_number(_LAST_RUN.sub("", stem, count=1)) if _LOOSE_CAM.search(stem) else None


def _npz_keys(path: Path) -> list[str]:
    keys = mediapipe_npz_cameras(path)
    if not keys:
        raise InputError(path, "not a MediaPipe .npz (no array [frames, slots, 33, 3|4|5])")
    return keys


# ------------------------------------------------------------ people count
def _normalized_all(cams: CameraSet, v: int, kpts: np.ndarray) -> np.ndarray:
    """``[N, 17, 3]`` pixel keypoints of view ``v`` -> ``[N, 17, 2]`` undistorted normalized coordinates."""
    if not len(kpts):
        return np.zeros((0,) + kpts.shape[1:-1] + (2,))
    t = torch.as_tensor(kpts[..., :2].reshape(-1, 1, 2), dtype=torch.float64)
    with torch.no_grad():
        n = cams.subset([v]).pixels_to_normalized(t)[:, 0]
    return n.numpy().reshape(kpts.shape[:-1] + (2,))


def _pair_error(P: np.ndarray, f: np.ndarray, a: int, b: int, ka: np.ndarray, kb: np.ndarray, na: np.ndarray, nb: np.ndarray, thr: float = 0.3) -> float:
    """Median two-view reprojection error (px, at the focal length's scale) of the keypoints two
    detections share; inf when fewer than 4 are shared.

    ``P``: ``[V, 3, 4]`` extrinsics; ``f``: ``[V]`` mean focal lengths; ``k*``: ``[17, 3]`` pixel
    keypoints; ``n*``: their undistorted normalized coordinates.
    """
    ok = (ka[:, 2] > thr) & (kb[:, 2] > thr) & np.isfinite(na).all(-1) & np.isfinite(nb).all(-1)
    if ok.sum() < 4:
        return math.inf
    xa, xb = na[ok], nb[ok]
    Pa, Pb = P[a], P[b]
    A = np.stack([xa[:, :1] * Pa[2] - Pa[0], xa[:, 1:] * Pa[2] - Pa[1], xb[:, :1] * Pb[2] - Pb[0], xb[:, 1:] * Pb[2] - Pb[1]], 1)
    X = np.linalg.svd(A)[2][:, -1]  # [n, 4]
    err = 0.0
    for Pv, xv, fv in ((Pa, xa, f[a]), (Pb, xb, f[b])):
        c = X @ Pv.T  # [n, 3] (homogeneous scale cancels in the division)
        if (c[:, 2] * X[:, 3] <= 0).any():
            return math.inf
        err = err + fv * np.linalg.norm(c[:, :2] / c[:, 2:] - xv, axis=-1)
    return float(np.median(0.5 * err))


def _box_diag(det: Det) -> float:
    b = det[1]
    return float(math.hypot(b[2] - b[0], b[3] - b[1]))


def estimate_people(cams: CameraSet, per_camera: list[list[list[Det]]], max_frames: int = 30) -> tuple[int, str]:
    """Number of people seen in at least two views, and how it was found.

    On up to ``max_frames`` evenly spaced frames, detections of different views are linked when
    their two-view triangulation reprojects within ``5 px + 5%`` of the box diagonal (closest
    links first, one detection per view per person); the most common count of groups spanning
    two or more views is returned.
    """
    V = len(per_camera)
    F = len(per_camera[0]) if V else 0
    busy = [f for f in range(F) if sum(1 for v in range(V) if per_camera[v][f]) >= 2]
    if not busy:
        most = max((len(per_camera[v][f]) for v in range(V) for f in range(F)), default=0)
        return most, "no frame has detections in two cameras: count = most detections in one view-frame"
    pick = sorted({busy[int(round(i))] for i in np.linspace(0, len(busy) - 1, min(max_frames, len(busy)))})
    P = cams.extrinsics.detach().cpu().double().numpy()
    foc = cams.intrinsics[:, :2].mean(-1).detach().cpu().double().numpy()
    # undistort every sampled detection once per view
    norm: list[list[np.ndarray]] = []
    for v in range(V):
        ks = [det[0] for f in pick for det in per_camera[v][f]]
        n = _normalized_all(cams, v, np.stack(ks).astype(np.float64)) if ks else np.zeros((0, 17, 2))
        out, i = [], 0
        for f in pick:
            out.append(n[i : i + len(per_camera[v][f])])
            i += len(per_camera[v][f])
        norm.append(out)
    counts: list[int] = []
    views_hist: Counter[int] = Counter()
    for fi, f in enumerate(pick):
        nodes = [(v, d) for v in range(V) for d in range(len(per_camera[v][f]))]
        links = []
        for i, (va, da) in enumerate(nodes):
            for vb, db in nodes[i + 1 :]:
                if vb == va:
                    continue
                A, B = per_camera[va][f][da], per_camera[vb][f][db]
                e = _pair_error(P, foc, va, vb, A[0], B[0], norm[va][fi][da], norm[vb][fi][db])
                if e < 5.0 + 0.05 * 0.5 * (_box_diag(A) + _box_diag(B)):
                    links.append((e, (va, da), (vb, db)))
        links.sort(key=lambda x: x[0])
        group: dict[tuple[int, int], int] = {n: i for i, n in enumerate(nodes)}
        members: dict[int, set[tuple[int, int]]] = {i: {n} for i, n in enumerate(nodes)}
        for _, x, y in links:
            gx, gy = group[x], group[y]
            if gx == gy:
                continue
            if {v for v, _ in members[gx]} & {v for v, _ in members[gy]}:
                continue
            for n in members[gy]:
                group[n] = gx
            members[gx] |= members.pop(gy)
        spans = [len({v for v, _ in m}) for m in members.values()]
        counts.append(sum(1 for n in spans if n >= 2))
        views_hist.update(n for n in spans if n >= 2)
    hist = Counter(counts)
    best = max(hist, key=lambda c: (hist[c], c))
    dist = ", ".join(f"{c}: {n}" for c, n in sorted(hist.items()))
    seen = ", ".join(f"{n} cameras: {views_hist[n]}" for n in sorted(views_hist, reverse=True))
    return best, f"estimated on {len(pick)} frames: people seen in >= 2 cameras -> number of frames {{{dist}}}; people by cameras seeing them {{{seen}}}"
