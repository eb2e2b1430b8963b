"""Multi-camera calibration files of other tools -> metric :class:`~h4d_fast.camera.CameraSet`.

:func:`read_calibration` (or :func:`read_calibration_info`, which also says what it read and
warns) recognises the format by file name, extension and content:

==================  =====================================================================================
format              what is read
==================  =====================================================================================
``toml``            Pose2Sim / Anipose (aniposelib) TOML: one table per camera (``[cam_01]``, ``[cam_0]``
                    ...; any table with a ``matrix``) holding ``name``, ``size = [w, h]``, ``matrix`` (3x3),
                    ``distortions`` (4: ``k1 k2 p1 p2``; 5: ``+ k3``; 8: ``+ k4 k5 k6``; with
                    ``fisheye = true``: ``k1..k4``), ``rotation`` (Rodrigues vector, world -> camera),
                    ``translation`` (world -> camera). ``[metadata]`` is ignored. Pose2Sim writes metres;
                    Anipose writes the unit of its board's square size (often millimetres): see *units*.
``qca``             Qualisys QTM ``.qca.txt`` (XML): ``<camera serial=...>`` with ``<fov_video>``
                    (image size ``right - left + 1`` x ``bottom - top + 1``), ``<intrinsic>`` in sensor
                    units (focal lengths and principal point divided by 64; principal point then taken
                    relative to the video window's ``left``/``top``; a ``video_resolution="720p"``
                    attribute scales the 1080p calibration by 720/1080), distortion
                    ``radialDistortion1..3 = k1 k2 k3`` and ``tangentalDistortion1..2 = p1 p2`` (Brown,
                    OpenCV's model), and ``<transform>``: the camera's pose in the world, rotation
                    ``M = [[r11 r12 r13], [r21 r22 r23], [r31 r32 r33]]`` and camera centre ``C = (x, y, z)`` in
                    millimetres. World -> camera: ``R = diag(1, -1, -1) @ M``, ``t = -R @ C / 1000``.
                    Pose2Sim's own conversion also divides the distortion coefficients by 64; pass
                    ``qca_distortion_scale=1/64`` to reproduce its TOML exactly (default 1: as written).
``easymocap``       EasyMocap ``intri.yml`` (``names`` list; ``K_<cam>``; ``dist_<cam>`` or ``D_<cam>``
                    (1x5); optional ``H_<cam>``, ``W_<cam>``) + ``extri.yml`` (``Rot_<cam>`` 3x3, else
                    ``R_<cam>`` as a Rodrigues vector (3x1) or a 3x3 matrix; ``T_<cam>`` 3x1), metres.
``opencv``          OpenCV FileStorage ``.yml``/``.yaml``/``.xml``, in one of these layouts:
                    (a) per-camera suffixed keys as EasyMocap (``K_<cam>``, ``dist_<cam>``, ``R_<cam>``/
                    ``Rot_<cam>``/``rvec_<cam>``, ``T_<cam>``/``tvec_<cam>``) in one file, no ``names``
                    needed; (b) one map per camera (``cam01: {K: ..., dist: ..., R: ..., T: ...}``);
                    (c) one camera per file (a folder of such files reads as one camera per file, named by
                    the file stem); (d) OpenCV's stereo calibration ``M1 D1 M2 D2 R T`` (camera 1 is the
                    world frame). Accepted key names: intrinsics ``K``, ``camera_matrix``,
                    ``cameraMatrix``, ``intrinsic``, ``intrinsics``, ``mtx``; distortion ``dist``, ``D``,
                    ``distortion_coefficients``, ``dist_coeffs``, ``distCoeffs``, ``distortion``;
                    rotation ``R``/``Rot``/``rotation`` (3x3, or 3 values = Rodrigues), ``rvec``;
                    translation ``T``, ``t``, ``tvec``, ``translation``; image size ``image_width`` +
                    ``image_height``, ``width`` + ``height``, ``W`` + ``H``, or ``image_size``/
                    ``imageSize`` = ``[w, h]``; lens ``distortion_model``/``camera_model`` = ``fisheye``
                    (or ``equidistant``), or ``fisheye: 1``.
``colmap``          COLMAP text model (``cameras.txt`` + ``images.txt``): :func:`~h4d_fast.io.colmap.read_colmap`.
==================  =====================================================================================

Rotations and translations are world -> camera (OpenCV convention) everywhere except the Qualisys
file. The returned cameras are float64 and metric: *units* (``'auto'``, ``'m'``, ``'mm'``, ``'cm'``
or metres per unit) scales translations; ``'auto'`` takes millimetres when the median camera
distance from the world origin exceeds 50 units (and warns), metres otherwise.

Distortion passes through as given (radial-tangential ``k1 k2 p1 p2 k3 k4 k5 k6`` up to the
rational model; OpenCV's 12/14-coefficient thin-prism/tilt terms must be zero); non-square pixels
(``fx != fy``) and portrait image sizes pass through untouched. A skew term is dropped with a
warning. A missing image size is estimated as twice the principal point (with a warning).

Camera names are those of the file, in file order (EasyMocap: the ``names`` list).
"""

from __future__ import annotations

import json
import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

from ..camera import NUM_DIST, CameraSet, make_cameras
from ..errors import InputError
from .atomic import write_text

__all__ = [
    "FORMAT_NAMES",
    "CalibrationInfo",
    "detect_calibration",
    "find_calibrations",
    "read_calibration",
    "read_calibration_info",
    "read_easymocap",
    "read_opencv_calibration",
    "read_qca",
    "read_toml_calibration",
    "rodrigues",
    "rotation_to_rodrigues",
    "write_toml_calibration",
]

#: Human names of the formats.
FORMAT_NAMES: dict[str, str] = {
    "pose2sim_toml": "Pose2Sim TOML",
    "anipose_toml": "Anipose TOML",
    "qca": "Qualisys .qca.txt",
    "easymocap": "EasyMocap intri.yml/extri.yml",
    "opencv": "OpenCV FileStorage",
    "colmap": "COLMAP text model",
}

#: camera distance (in file units) above which ``units='auto'`` assumes millimetres
AUTO_MM_THRESHOLD = 50.0


@dataclass
class CalibrationInfo:
    """What :func:`read_calibration_info` read.

    Attributes:
        cameras: the metric cameras (float64).
        format: a key of :data:`FORMAT_NAMES`.
        path: the file (or folder) read.
        files: every file read.
        units: the source unit of the translations (``'m'``, ``'mm'``, ...).
        warnings: what was assumed or dropped.
    """

    cameras: CameraSet
    format: str
    path: Path
    files: list[Path] = field(default_factory=list)
    units: str = "m"
    warnings: list[str] = field(default_factory=list)

    @property
    def format_name(self) -> str:
        return FORMAT_NAMES.get(self.format, self.format)


@dataclass
class _Cam:
    """One camera as parsed, before unit scaling."""

    name: str
    K: np.ndarray
    dist: np.ndarray  # [8]
    model: str
    R: np.ndarray
    t: np.ndarray
    size: tuple[int, int] | None


# ------------------------------------------------------------------ helpers
def rodrigues(rvec: Sequence[float]) -> np.ndarray:
    """Rodrigues (axis * angle) vector -> ``[3, 3]`` rotation matrix (float64)."""
    r = np.asarray(rvec, dtype=np.float64).reshape(3)
    th = float(np.linalg.norm(r))
    if th < 1e-15:
        return np.eye(3)
    k = r / th
    Kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(th) * Kx + (1.0 - math.cos(th)) * (Kx @ Kx)


def rotation_to_rodrigues(R: np.ndarray) -> np.ndarray:
    """``[3, 3]`` rotation -> Rodrigues vector (angle in ``[0, pi]``)."""
    R = np.asarray(R, dtype=np.float64)
    c = max(-1.0, min(1.0, (np.trace(R) - 1.0) / 2.0))
    th = math.acos(c)
    if th < 1e-12:
        return np.zeros(3)
    if math.pi - th < 1e-6:
        # near pi: axis from the symmetric part
        B = (R + np.eye(3)) / 2.0
        i = int(np.argmax(np.diag(B)))
        k = B[:, i] / math.sqrt(max(B[i, i], 1e-300))
        k = k / np.linalg.norm(k)
        return k * th
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2.0 * math.sin(th))
    return w * th


def _array(path: Path, fld: str, value: Any, shapes: Sequence[tuple[int, ...]] | None = None) -> np.ndarray:
    """A finite float64 array from a parsed value; InputError naming ``fld`` otherwise."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"expected numbers, got {value!r}"[:200], fld) from None
    if shapes is not None:
        for s in shapes:
            if a.size == math.prod(s):
                a = a.reshape(s)
                break
        else:
            want = " or ".join("x".join(map(str, s)) for s in shapes)
            raise InputError(path, f"expected {want} values, got shape {a.shape}", fld)
    if not np.isfinite(a).all():
        raise InputError(path, "values are not all finite", fld)
    return a


def _dist8(path: Path, fld: str, coeffs: Any, fisheye: bool) -> np.ndarray:
    """Distortion coefficients as given -> CameraSet's 8-slot layout."""
    d = _array(path, fld, coeffs if coeffs is not None else []).reshape(-1)
    out = np.zeros(NUM_DIST)
    if fisheye:
        if d.size not in (0, 4) and not (d.size > 4 and not np.any(d[4:] != 0)):
            raise InputError(path, f"a fisheye lens takes 4 coefficients k1..k4, got {d.size}: {d.tolist()}", fld)
        out[: min(4, d.size)] = d[:4]
        return out
    if d.size in (0, 4, 5, 8):
        out[: d.size] = d
        return out
    if d.size in (12, 14):
        if np.any(d[8:] != 0):
            raise InputError(path, f"thin-prism / tilted-sensor terms (coefficients 9..{d.size}) are not supported; they must be 0", fld)
        out[:] = d[:8]
        return out
    raise InputError(path, f"expected 4, 5, 8, 12 or 14 distortion coefficients (k1 k2 p1 p2 [k3 [k4 k5 k6]]), got {d.size}", fld)


def _check_rotation(path: Path, fld: str, R: np.ndarray) -> np.ndarray:
    err = float(np.abs(R @ R.T - np.eye(3)).max())
    if err > 1e-4 or np.linalg.det(R) < 0:
        raise InputError(path, f"not a rotation matrix (|R R^T - I| = {err:.2g}, det = {np.linalg.det(R):.3g})", fld)
    return R


def _rotation(path: Path, fld: str, value: Any) -> np.ndarray:
    """A rotation given as 3 values (Rodrigues) or 9 (matrix, row-major)."""
    a = _array(path, fld, value).reshape(-1)
    if a.size == 3:
        return rodrigues(a)
    if a.size == 9:
        return _check_rotation(path, fld, a.reshape(3, 3))
    raise InputError(path, f"expected a Rodrigues vector (3 values) or a 3x3 matrix, got {a.size} values", fld)


def _intrinsics(path: Path, fld: str, value: Any, warnings: list[str], name: str) -> np.ndarray:
    K = _array(path, fld, value, [(3, 3)])
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(path, f"focal lengths must be positive, got fx={K[0, 0]:g}, fy={K[1, 1]:g}", fld)
    if abs(K[0, 1]) > 1e-9 * abs(K[0, 0]):
        warnings.append(f"{path}: camera {name}: skew {K[0, 1]:g} dropped (not modelled)")
    if not np.allclose(K[2], [0, 0, 1]) or abs(K[1, 0]) > 1e-12:
        raise InputError(path, f"not an intrinsic matrix [[fx s cx] [0 fy cy] [0 0 1]]: {K.tolist()}", fld)
    return K


MAX_IMAGE_SIDE = 1 << 20  # pixels: a larger image size is a broken file


def _size_or_guess(path: Path, cam: _Cam, warnings: list[str]) -> tuple[int, int]:
    if cam.size is not None:
        w, h = cam.size
        if not (0 < w <= MAX_IMAGE_SIDE and 0 < h <= MAX_IMAGE_SIDE):
            raise InputError(path, f"image size {w}x{h} out of range (1..{MAX_IMAGE_SIDE} pixels a side)", f"camera {cam.name}")
        return cam.size
    guess = 2 * cam.K[:2, 2]
    if not (np.isfinite(guess).all() and (guess >= 1).all() and (guess <= MAX_IMAGE_SIDE).all()):
        raise InputError(path, f"no image size, and none can be guessed from the principal point {cam.K[:2, 2].tolist()}",
                         f"camera {cam.name}")
    w, h = int(round(guess[0])), int(round(guess[1]))
    warnings.append(f"{path}: camera {cam.name}: no image size in the file; assumed {w}x{h} (twice the principal point)")
    return w, h


_UNIT_SCALE = {"m": 1.0, "metre": 1.0, "meter": 1.0, "mm": 1e-3, "cm": 1e-2, "dm": 0.1}


def _unit_scale(path: Path, cams: list[_Cam], units: str | float, warnings: list[str]) -> tuple[float, str]:
    if isinstance(units, (int, float)) and not isinstance(units, bool):
        return float(units), f"{units:g} m"
    u = str(units).lower()
    if u in _UNIT_SCALE:
        return _UNIT_SCALE[u], u
    if u != "auto":
        raise ValueError(f"units must be 'auto', 'm', 'mm', 'cm' or metres per unit, got {units!r}")
    dist = [float(np.linalg.norm(c.R.T @ c.t)) for c in cams]
    med = float(np.median(dist)) if dist else 0.0
    if med > AUTO_MM_THRESHOLD:
        warnings.append(
            f"{path}: camera distances from the origin are {med:.0f} units (median): translations read as millimetres "
            f"(pass units='m' to keep them)"
        )
        return 1e-3, "mm"
    return 1.0, "m"


def _camera_set(path: Path, cams: list[_Cam], units: str | float, warnings: list[str]) -> tuple[CameraSet, str]:
    if not cams:
        raise InputError(path, "no camera in the calibration file")
    names = [c.name for c in cams]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(path, f"camera name(s) used twice: {', '.join(dup)}")
    scale, unit = _unit_scale(path, cams, units, warnings)
    sizes = [_size_or_guess(path, c, warnings) for c in cams]
    intr = np.array([[c.K[0, 0], c.K[1, 1], c.K[0, 2], c.K[1, 2]] for c in cams])
    cs = make_cameras(
        names,
        [c.model for c in cams],
        intr,
        np.stack([c.R for c in cams]),
        np.stack([c.t * scale for c in cams]),
        np.array(sizes, dtype=np.int64),
        dist=np.stack([c.dist for c in cams]),
    )
    return cs, unit


def _model(dist: np.ndarray, fisheye: bool) -> str:
    if fisheye:
        return "fisheye"
    return "opencv" if np.any(dist != 0) else "pinhole"


# --------------------------------------------------------------------- TOML
def _is_camera_table(v: Any) -> bool:
    return isinstance(v, dict) and any(k in v for k in ("matrix", "rotation", "translation", "distortions"))


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read ({e})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(path, f"malformed TOML ({e})") from None


def read_toml_calibration(path: Path, units: str | float = "auto") -> CalibrationInfo:
    """Read a Pose2Sim / Anipose TOML calibration (see the module docstring)."""
    path = Path(path)
    data = _load_toml(path)
    warnings: list[str] = []
    cams: list[_Cam] = []
    has_fisheye_key = []
    for key, v in data.items():
        if key == "metadata" or not _is_camera_table(v):
            continue
        for req in ("matrix", "rotation", "translation"):
            if req not in v:
                raise InputError(path, f"camera table has no '{req}'", f"[{key}].{req}")
        name = str(v.get("name", key))
        fisheye = v.get("fisheye", False)
        if not isinstance(fisheye, bool):
            raise InputError(path, f"expected true or false, got {fisheye!r}", f"[{key}].fisheye")
        has_fisheye_key.append("fisheye" in v)
        K = _intrinsics(path, f"[{key}].matrix", v["matrix"], warnings, name)
        dkey = "distortions" if "distortions" in v else "distortion"
        dist = _dist8(path, f"[{key}].{dkey}", v.get(dkey), fisheye)
        R = _rotation(path, f"[{key}].rotation", v["rotation"])
        t = _array(path, f"[{key}].translation", v["translation"], [(3,)])
        size = None
        if "size" in v:
            s = _array(path, f"[{key}].size", v["size"], [(2,)])
            if (s <= 0).any():
                raise InputError(path, f"image size must be positive, got {s.tolist()}", f"[{key}].size")
            size = (int(round(s[0])), int(round(s[1])))
        cams.append(_Cam(name, K, dist, _model(dist, fisheye), R, t, size))
    if not cams:
        raise InputError(path, "no camera table (a table with 'matrix', 'rotation', 'translation') in this TOML file")
    fmt = "pose2sim_toml" if all(has_fisheye_key) else "anipose_toml"
    cs, unit = _camera_set(path, cams, units, warnings)
    return CalibrationInfo(cs, fmt, path, [path], unit, warnings)


def write_toml_calibration(path: Path, cameras: CameraSet, names: Sequence[str] | None = None) -> None:
    """Write cameras as a Pose2Sim-style TOML (metres; Anipose reads it too) (atomic).

    Distortion is written with as few coefficients as it needs (4, 5 or 8; fisheye: 4).
    """
    cams = cameras
    names = list(names) if names is not None else list(cams.names)
    K = cams.K.detach().cpu().double().numpy()
    D = cams.dist.detach().cpu().double().numpy()
    R = cams.R.detach().cpu().double().numpy()
    T = cams.t.detach().cpu().double().numpy()
    S = cams.size.detach().cpu().numpy()

    def fl(x: float) -> str:
        return repr(float(x))

    def vec(v: Sequence[float]) -> str:
        return "[ " + ", ".join(fl(x) for x in v) + "]"

    lines: list[str] = []
    for v, name in enumerate(names):
        fisheye = cams.model[v] == "fisheye"
        d = D[v]
        n = 4 if fisheye or not np.any(d[4:] != 0) else (5 if not np.any(d[5:] != 0) else 8)
        key = re.sub(r"[^A-Za-z0-9_-]", "_", name) or f"cam_{v + 1:02d}"
        lines += [
            f"[{key}]",
            f"name = {json.dumps(str(name))}",
            f"size = {vec(S[v].astype(float))}",
            "matrix = [ " + ", ".join(vec(row) for row in K[v]) + "]",
            f"distortions = {vec(d[:n])}",
            f"rotation = {vec(rotation_to_rodrigues(R[v]))}",
            f"translation = {vec(T[v])}",
            f"fisheye = {'true' if fisheye else 'false'}",
            "",
        ]
    lines += ["[metadata]", "adjusted = false", "error = 0.0", ""]
    write_text(path, "\n".join(lines))


# ---------------------------------------------------------------------- QCA
def _attr(path: Path, el: ET.Element, key: str, fld: str) -> float:
    if key not in el.attrib:
        raise InputError(path, f"<{el.tag}> has no '{key}' attribute", fld)
    try:
        v = float(el.attrib[key])
    except ValueError:
        raise InputError(path, f"expected a number, got {el.attrib[key]!r}", f"{fld} {el.tag}.{key}") from None
    if not math.isfinite(v):
        raise InputError(path, f"not finite ({el.attrib[key]})", f"{fld} {el.tag}.{key}")
    return v


def read_qca(path: Path, distortion_scale: float = 1.0) -> CalibrationInfo:
    """Read a Qualisys ``.qca.txt`` calibration (see the module docstring).

    Args:
        distortion_scale: factor on the distortion coefficients (``1/64`` reproduces Pose2Sim's
            conversion; 1 keeps them as written).
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise InputError(path, f"malformed XML ({e})") from None
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror or e})") from None
    elems = root.findall("cameras/camera") or root.findall(".//camera")
    if not elems:
        raise InputError(path, "no <camera> elements (expected <calibration><cameras><camera ...>)")
    warnings: list[str] = []
    cams: list[_Cam] = []
    D = np.diag([1.0, -1.0, -1.0])
    for i, el in enumerate(elems):
        name = el.attrib.get("serial") or f"cam{i + 1:02d}"
        fld = f"camera {name}"
        if el.attrib.get("active", "1") == "0":
            warnings.append(f"{path}: camera {name} is marked inactive; read anyway")
        if el.attrib.get("viewrotation", "0") not in ("0", ""):
            warnings.append(f"{path}: camera {name} has viewrotation={el.attrib['viewrotation']}; the images are taken as calibrated (not rotated)")
        res = el.attrib.get("video_resolution")
        s = 1.0
        if res not in (None, "", "N/A", "none"):
            m = re.match(r"^\s*(\d+)\s*p?\s*$", str(res))
            if not m:
                raise InputError(path, f"unreadable video_resolution {res!r}", fld)
            s = int(m.group(1)) / 1080.0
        fov = el.find("fov_video")
        tr = el.find("transform")
        intr = el.find("intrinsic")
        for tag, e in (("fov_video", fov), ("transform", tr), ("intrinsic", intr)):
            if e is None:
                raise InputError(path, f"no <{tag}>", fld)
        left, top = _attr(path, fov, "left", fld), _attr(path, fov, "top", fld)
        right, bottom = _attr(path, fov, "right", fld), _attr(path, fov, "bottom", fld)
        w, h = (right - left + 1) * s, (bottom - top + 1) * s
        if not (0 < w <= MAX_IMAGE_SIDE and 0 < h <= MAX_IMAGE_SIDE):
            raise InputError(path, f"video window {left:g},{top:g} - {right:g},{bottom:g} (x {s:g}) out of range", fld)
        w, h = int(round(w)), int(round(h))
        if w <= 0 or h <= 0:
            raise InputError(path, f"empty video window {left:g},{top:g} - {right:g},{bottom:g}", fld)
        fx = _attr(path, intr, "focalLengthU", fld) / 64.0 * s
        fy = _attr(path, intr, "focalLengthV", fld) / 64.0 * s
        cx = (_attr(path, intr, "centerPointU", fld) / 64.0 - left) * s
        cy = (_attr(path, intr, "centerPointV", fld) / 64.0 - top) * s
        if fx <= 0 or fy <= 0:
            raise InputError(path, f"focal lengths must be positive, got {fx:g}, {fy:g}", fld)
        if "skew" in intr.attrib and _attr(path, intr, "skew", fld) != 0:
            warnings.append(f"{path}: camera {name}: skew dropped (not modelled)")
        k1 = _attr(path, intr, "radialDistortion1", fld)
        k2 = _attr(path, intr, "radialDistortion2", fld)
        k3 = _attr(path, intr, "radialDistortion3", fld) if "radialDistortion3" in intr.attrib else 0.0
        p1 = _attr(path, intr, "tangentalDistortion1", fld)
        p2 = _attr(path, intr, "tangentalDistortion2", fld)
        dist = np.zeros(NUM_DIST)
        dist[:5] = np.array([k1, k2, p1, p2, k3]) * distortion_scale
        M = np.array([[_attr(path, tr, f"r{a}{b}", fld) for b in (1, 2, 3)] for a in (1, 2, 3)])
        _check_rotation(path, f"{fld} transform", M)
        C = np.array([_attr(path, tr, a, fld) for a in "xyz"])
        R = D @ M
        t = -R @ (C / 1000.0)
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        cams.append(_Cam(str(name), K, dist, _model(dist, False), R, t, (w, h)))
    cs, unit = _camera_set(path, cams, "m", warnings)
    return CalibrationInfo(cs, "qca", path, [path], "mm", warnings)


# -------------------------------------------------------------- FileStorage
class _FS:
    """A read-only cv2.FileStorage with InputErrors naming the file."""

    def __init__(self, path: Path):
        import cv2

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(self.path, "file not found")
        try:
            fs = cv2.FileStorage(str(self.path), cv2.FILE_STORAGE_READ)
        except Exception as e:  # noqa: BLE001 - cv2.error / SystemError wrapping it
            msg = str(e.__cause__ or e).strip().splitlines()[-1] if str(e.__cause__ or e).strip() else type(e).__name__
            raise InputError(self.path, f"not a readable OpenCV FileStorage file ({msg[:200]})") from None
        if not fs.isOpened():
            raise InputError(self.path, "not a readable OpenCV FileStorage file")
        self.fs = fs
        root = fs.root()
        self.keys: list[str] = list(root.keys()) if root.isMap() else []

    def has(self, key: str) -> bool:
        return key in self.keys

    def node(self, key: str):  # noqa: ANN201
        return self.fs.getNode(key)

    def array(self, key: str, node: Any = None, fld: str | None = None) -> np.ndarray:
        """A numeric node (matrix, sequence of numbers, or scalar) as float64."""
        n = self.node(key) if node is None else node
        fld = fld or key
        try:
            if n.isMap():
                m = n.mat()
                if m is None:
                    raise ValueError("empty matrix")
                a = np.asarray(m, dtype=np.float64)
            elif n.isSeq():
                a = np.asarray(_flatten_seq(n), dtype=np.float64)
            elif n.isReal() or n.isInt():
                a = np.asarray([n.real()], dtype=np.float64)
            elif n.isString():
                raise ValueError(f"a string {n.string()!r}")
            else:
                raise ValueError("empty")
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - cv2 errors on malformed matrices
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise InputError(self.path, f"expected numbers ({msg[:160]})", fld) from None
        if not np.isfinite(a).all():
            raise InputError(self.path, "values are not all finite", fld)
        return a

    def string(self, key: str, node: Any = None) -> str | None:
        n = self.node(key) if node is None else node
        return n.string() if n.isString() else None

    def names(self, key: str = "names") -> list[str] | None:
        if not self.has(key):
            return None
        n = self.node(key)
        if not n.isSeq():
            raise InputError(self.path, "expected a list of camera names", key)
        out = []
        for i in range(n.size()):
            e = n.at(i)
            if e.isString():
                out.append(e.string())
            elif e.isInt() or e.isReal():
                v = e.real()
                out.append(str(int(v)) if float(v).is_integer() else str(v))
            else:
                raise InputError(self.path, f"entry {i} is not a name", key)
        return out


def _flatten_seq(n: Any) -> list[float]:
    """Numbers of a (nested) FileStorage sequence, in order."""
    out: list[float] = []
    for i in range(n.size()):
        e = n.at(i)
        if e.isSeq():
            out.extend(_flatten_seq(e))
        elif e.isReal() or e.isInt():
            out.append(e.real())
        else:
            raise ValueError(f"non-numeric element {e.string()!r}")
    return out


_K_KEYS = ("K", "camera_matrix", "cameraMatrix", "intrinsic", "intrinsics", "intrinsic_matrix", "mtx")
_D_KEYS = ("dist", "D", "distortion_coefficients", "dist_coeffs", "distCoeffs", "distortion", "dist_coeff")
_R_KEYS = ("Rot", "R", "rotation_matrix", "rotation", "rvec")
_T_KEYS = ("T", "t", "tvec", "translation")
_SIZE_PAIRS = (("image_width", "image_height"), ("width", "height"), ("W", "H"), ("w", "h"))
_SIZE_KEYS = ("image_size", "imageSize", "size")
_MODEL_KEYS = ("distortion_model", "camera_model", "model")


def _first(keys: Sequence[str], have: Any) -> str | None:
    for k in keys:
        if have(k):
            return k
    return None


def _cam_from_getter(
    fs: _FS,
    name: str,
    get: Any,
    has: Any,
    fld: Any,
    warnings: list[str],
    extri: tuple[_FS, Any, Any, Any] | None = None,
) -> _Cam:
    """Build a camera from a key getter (``get(k) -> node``, ``has(k)``, ``fld(k) -> field name``)."""
    kk = _first(_K_KEYS, has)
    if kk is None:
        raise InputError(fs.path, f"camera {name}: no intrinsic matrix (one of {', '.join(_K_KEYS)})", fld("K"))
    K = _intrinsics(fs.path, fld(kk), fs.array(kk, get(kk), fld(kk)), warnings, name)
    fisheye = False
    mk = _first(_MODEL_KEYS, has)
    if mk is not None:
        s = fs.string(mk, get(mk))
        fisheye = s is not None and s.strip().lower() in ("fisheye", "equidistant", "opencv_fisheye", "kannala_brandt")
    if has("fisheye"):
        n = get("fisheye")
        fisheye = fisheye or ((n.isInt() or n.isReal()) and n.real() != 0) or (n.isString() and n.string().lower() in ("true", "1", "yes"))
    dk = _first(_D_KEYS, has)
    dist = _dist8(fs.path, fld(dk or "dist"), fs.array(dk, get(dk), fld(dk)) if dk else [], fisheye)
    efs, eget, ehas, efld = extri if extri is not None else (fs, get, has, fld)
    rk = _first(_R_KEYS, ehas)
    if rk is None:
        raise InputError(efs.path, f"camera {name}: no rotation (one of {', '.join(_R_KEYS)})", efld("R"))
    R = _rotation(efs.path, efld(rk), efs.array(rk, eget(rk), efld(rk)))
    tk = _first(_T_KEYS, ehas)
    if tk is None:
        raise InputError(efs.path, f"camera {name}: no translation (one of {', '.join(_T_KEYS)})", efld("T"))
    t = _array(efs.path, efld(tk), efs.array(tk, eget(tk), efld(tk)), [(3,)])
    size = None
    for src_fs, sget, shas, sfld in ((fs, get, has, fld), (efs, eget, ehas, efld)):
        for wk, hk in _SIZE_PAIRS:
            if shas(wk) and shas(hk):
                w = src_fs.array(wk, sget(wk), sfld(wk)).reshape(-1)
                h = src_fs.array(hk, sget(hk), sfld(hk)).reshape(-1)
                if w.size == 1 and h.size == 1:
                    size = (int(round(w[0])), int(round(h[0])))
                    break
        if size is None:
            sk = _first(_SIZE_KEYS, shas)
            if sk is not None:
                s = src_fs.array(sk, sget(sk), sfld(sk)).reshape(-1)
                if s.size == 2:
                    size = (int(round(s[0])), int(round(s[1])))
        if size is not None:
            break
    if size is not None and (size[0] <= 0 or size[1] <= 0):
        raise InputError(fs.path, f"camera {name}: image size must be positive, got {size}")
    return _Cam(name, K, dist, _model(dist, fisheye), R, t, size)


def _suffix_getter(fs: _FS, cam: str) -> tuple[Any, Any, Any]:
    return (lambda k: fs.node(f"{k}_{cam}")), (lambda k: fs.has(f"{k}_{cam}")), (lambda k: f"{k}_{cam}")


_SUFFIX_K = re.compile(r"^(?:" + "|".join(map(re.escape, _K_KEYS)) + r")_(.+)$")


def _suffix_cameras(fs: _FS) -> list[str]:
    out = []
    for k in fs.keys:
        m = _SUFFIX_K.match(k)
        if m and m.group(1) not in out:
            out.append(m.group(1))
    return out


def read_easymocap(intri: Path, extri: Path | None = None, units: str | float = "auto") -> CalibrationInfo:
    """Read EasyMocap's ``intri.yml`` + ``extri.yml`` (``extri`` defaults to the sibling file)."""
    intri = Path(intri)
    extri = Path(extri) if extri is not None else intri.with_name("extri.yml")
    if not extri.is_file():
        raise InputError(extri, "EasyMocap extrinsics file missing (extri.yml beside intri.yml)")
    fi, fe = _FS(intri), _FS(extri)
    names = fi.names() or fe.names() or _suffix_cameras(fi)
    if not names:
        raise InputError(intri, "no camera names (a 'names' list, or K_<cam> entries)", "names")
    warnings: list[str] = []
    cams = []
    for n in names:
        gi, hi, fli = _suffix_getter(fi, n)
        ge, he, fle = _suffix_getter(fe, n)
        if not hi("K"):
            raise InputError(intri, f"camera {n} is listed in 'names' but has no K_{n}", f"K_{n}")
        cams.append(_cam_from_getter(fi, n, gi, hi, fli, warnings, extri=(fe, ge, he, fle)))
    cs, unit = _camera_set(intri, cams, units, warnings)
    return CalibrationInfo(cs, "easymocap", intri, [intri, extri], unit, warnings)


def _opencv_one_file(fs: _FS, warnings: list[str]) -> list[_Cam]:
    # (a) suffixed keys, optionally with a names list
    names = fs.names() if fs.has("names") else None
    suffix = _suffix_cameras(fs)
    if names or suffix:
        out = []
        for n in names or suffix:
            g, h, f = _suffix_getter(fs, n)
            out.append(_cam_from_getter(fs, n, g, h, f, warnings))
        return out
    # (d) OpenCV stereo calibration
    if fs.has("M1") and fs.has("M2") and fs.has("R") and fs.has("T"):
        out = []
        R2 = _rotation(fs.path, "R", fs.array("R"))
        T2 = _array(fs.path, "T", fs.array("T"), [(3,)])
        for i, (R, t) in enumerate(((np.eye(3), np.zeros(3)), (R2, T2)), start=1):
            K = _intrinsics(fs.path, f"M{i}", fs.array(f"M{i}"), warnings, f"cam{i}")
            dist = _dist8(fs.path, f"D{i}", fs.array(f"D{i}") if fs.has(f"D{i}") else [], False)
            out.append(_Cam(f"cam{i}", K, dist, _model(dist, False), R, t, None))
        return out
    # (b) one map per camera
    maps = [k for k in fs.keys if fs.node(k).isMap() and not _is_matrix_node(fs.node(k))]
    cams_maps = [k for k in maps if any(not fs.node(k).getNode(x).empty() for x in _K_KEYS)]
    if cams_maps:
        out = []
        for k in cams_maps:
            node = fs.node(k)
            sub = list(node.keys())
            out.append(
                _cam_from_getter(
                    fs, k, lambda x, node=node: node.getNode(x), lambda x, sub=sub: x in sub, lambda x, k=k: f"{k}.{x}", warnings
                )
            )
        return out
    # (c) a single camera
    if _first(_K_KEYS, fs.has) is None:
        raise InputError(fs.path, f"no camera found: no intrinsic matrix ({', '.join(_K_KEYS)}), no <key>_<camera> entries, no M1/M2 stereo pair")
    return [_cam_from_getter(fs, fs.path.name.split(".")[0], fs.node, fs.has, lambda x: x, warnings)]


def _is_matrix_node(n: Any) -> bool:
    keys = set(n.keys()) if n.isMap() else set()
    return {"rows", "cols", "data"} <= keys


_FS_EXTS = (".yml", ".yaml", ".xml")


def read_opencv_calibration(path: Path, units: str | float = "auto") -> CalibrationInfo:
    """Read OpenCV FileStorage calibration file(s): a file, or a folder of one-camera files."""
    path = Path(path)
    warnings: list[str] = []
    files: list[Path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _FS_EXTS)
        if not files:
            raise InputError(path, "no .yml/.yaml/.xml calibration files in this folder")
        cams = []
        for f in files:
            cams.extend(_opencv_one_file(_FS(f), warnings))
    else:
        files = [path]
        fs = _FS(path)
        sfx = _suffix_cameras(fs)
        if sfx and not any(fs.has(f"{k}_{sfx[0]}") for k in _R_KEYS) and path.with_name("extri.yml").is_file():
            # EasyMocap intrinsics under another file name: the extrinsics are beside it
            return read_easymocap(path, path.with_name("extri.yml"), units)
        cams = _opencv_one_file(fs, warnings)
    cs, unit = _camera_set(path, cams, units, warnings)
    return CalibrationInfo(cs, "opencv", path, files, unit, warnings)


# ----------------------------------------------------------------- dispatch
def _sniff(path: Path, n: int = 512) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def detect_calibration(path: Path) -> tuple[str, Path]:
    """``(format, path to read)`` of a calibration file or folder (see :func:`read_calibration_info`)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "calibration file not found")
    if path.is_dir():
        if (path / "cameras.txt").is_file() and (path / "images.txt").is_file():
            return "colmap", path
        if (path / "intri.yml").is_file():
            return "easymocap", path / "intri.yml"
        found = find_calibrations(path, recursive=False)
        if found and found[0][0] == "opencv" and sum(1 for f, _ in found if f == "opencv") > 1:
            return "opencv", path  # a folder of one-camera files
        if found:
            return found[0]
        if any(p.suffix.lower() in _FS_EXTS for p in path.iterdir()):
            return "opencv", path
        raise InputError(path, "no calibration file in this folder (.toml, .qca.txt, intri.yml/extri.yml, OpenCV .yml/.xml, COLMAP cameras.txt + images.txt)")
    name = path.name.lower()
    if name.endswith(".qca.txt") or name.endswith(".qca"):
        return "qca", path
    if name in ("cameras.txt", "images.txt"):
        return "colmap", path.parent
    if name.endswith(".toml"):
        return "toml", path
    if name in ("intri.yml", "intri.yaml"):
        return "easymocap", path
    if name in ("extri.yml", "extri.yaml"):
        return "easymocap", path.with_name("intri" + path.suffix)
    if name.endswith(".txt") or name.endswith(".xml"):
        head = _sniff(path).lstrip()
        if head.startswith(b"<") and b"<calibration" in _sniff(path, 4096):
            return "qca", path
    if path.suffix.lower() in _FS_EXTS + (".json",):
        return "opencv", path
    raise InputError(path, "unknown calibration format (expected .toml, .qca.txt, .yml/.yaml/.xml, intri.yml + extri.yml, or a COLMAP folder)")


def read_calibration_info(
    path: Path,
    units: str | float = "auto",
    qca_distortion_scale: float = 1.0,
) -> CalibrationInfo:
    """Read any supported calibration (see the module docstring) into metric float64 cameras.

    Args:
        path: a calibration file, or a folder holding one (a COLMAP model folder, an EasyMocap
            folder with ``intri.yml``/``extri.yml``, a folder of OpenCV files).
        units: unit of the translations of TOML/OpenCV/EasyMocap files (see module docstring);
            Qualisys files are millimetres and COLMAP models use their ``scale.npy``.
        qca_distortion_scale: see :func:`read_qca`.
    Raises:
        InputError: the file is missing, malformed, or lacks a required key (named in the error).
    """
    fmt, p = detect_calibration(Path(path))
    if fmt == "toml":
        return read_toml_calibration(p, units)
    if fmt == "qca":
        return read_qca(p, qca_distortion_scale)
    if fmt == "easymocap":
        return read_easymocap(p, None, units)
    if fmt == "opencv":
        return read_opencv_calibration(p, units)
    if fmt == "colmap":
        from .colmap import read_colmap

        cams = read_colmap(p, "auto")
        files = [p / "cameras.txt", p / "images.txt"] + ([p / "scale.npy"] if (p / "scale.npy").is_file() else [])
        return CalibrationInfo(cams, "colmap", p, files, "m", [])
    raise AssertionError(fmt)  # pragma: no cover


def read_calibration(path: Path, units: str | float = "auto", qca_distortion_scale: float = 1.0) -> CameraSet:
    """:func:`read_calibration_info` without the report: just the cameras."""
    return read_calibration_info(path, units, qca_distortion_scale).cameras


# ---------------------------------------------------------------- discovery
_RANK = {"toml": 0, "qca": 1, "easymocap": 2, "opencv": 3, "colmap": 4}


def _toml_has_cameras(path: Path) -> bool:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return any(k != "metadata" and _is_camera_table(v) and "matrix" in v for k, v in data.items())


def _fs_has_cameras(path: Path) -> bool:
    try:
        fs = _FS(path)
    except InputError:
        return False
    if _suffix_cameras(fs) or _first(_K_KEYS, fs.has) or (fs.has("M1") and fs.has("M2")):
        return True
    return any(fs.node(k).isMap() and any(not fs.node(k).getNode(x).empty() for x in _K_KEYS) for k in fs.keys)


def find_calibrations(root: Path, recursive: bool = True, skip: Sequence[Path] = ()) -> list[tuple[str, Path]]:
    """Calibration files under ``root``, best first: ``[(format, path to read)]``.

    Preference: TOML, then Qualisys, EasyMocap, OpenCV, COLMAP; within a format, files in a folder
    whose name starts with ``calib`` and shallower paths first. TOML files without camera tables
    (e.g. Pose2Sim's ``Config.toml``) and ``.yml`` files without cameras are not listed.
    """
    root = Path(root)
    skip_r = [Path(s).resolve() for s in skip]
    found: list[tuple[tuple[int, int, int, str], str, Path]] = []

    def add(fmt: str, p: Path) -> None:
        rel = p.relative_to(root) if p != root else Path(".")
        in_calib = any(part.lower().startswith("calib") for part in rel.parts[:-1]) or p.name.lower().startswith("calib")
        found.append(((_RANK[fmt], 0 if in_calib else 1, len(rel.parts), str(rel)), fmt, p))

    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(x for x in dirnames if not x.startswith(".") and (d / x).resolve() not in skip_r)
        if not recursive and d != root:
            continue
        names = set(filenames)
        if "cameras.txt" in names and "images.txt" in names:
            add("colmap", d)
        if "intri.yml" in names and "extri.yml" in names:
            add("easymocap", d / "intri.yml")
        for fn in sorted(filenames):
            low = fn.lower()
            p = d / fn
            if low.endswith(".qca.txt"):
                add("qca", p)
            elif low.endswith(".toml") and _toml_has_cameras(p):
                add("toml", p)
            elif Path(low).suffix in _FS_EXTS and low not in ("intri.yml", "extri.yml") and os.path.getsize(p) < 4_000_000 and _fs_has_cameras(p):
                add("opencv", p)
        if not recursive:
            break
    found.sort(key=lambda x: x[0])
    return [(fmt, p) for _, fmt, p in found]
