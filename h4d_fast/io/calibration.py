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
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

from ..camera import CameraSet
from ..errors import InputError
from .atomic import write_text
from .calibration_common import (  # re-exported
    AUTO_MM_THRESHOLD,  # noqa: F401
    FORMAT_NAMES,  # noqa: F401
    CalibrationInfo,  # noqa: F401
    _array,  # noqa: F401
    _Cam,  # noqa: F401
    _camera_set,  # noqa: F401
    _check_rotation,  # noqa: F401
    _dist8,  # noqa: F401
    _intrinsics,  # noqa: F401
    _model,  # noqa: F401
    _rotation,  # noqa: F401
    rodrigues,  # noqa: F401
    rotation_to_rodrigues,  # noqa: F401
)
from .calibration_opencv import (  # re-exported
    _FS,  # noqa: F401
    _FS_EXTS,  # noqa: F401
    _K_KEYS,  # noqa: F401
    _first,  # noqa: F401
    _suffix_cameras,  # noqa: F401
    read_easymocap,  # noqa: F401
    read_opencv_calibration,  # noqa: F401
    read_qca,  # noqa: F401
)

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
