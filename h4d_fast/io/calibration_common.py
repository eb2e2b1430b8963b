"""Camera-set types and the shared parsing helpers of the calibration readers (split from :mod:`h4d_fast.io.calibration`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..camera import NUM_DIST, CameraSet, make_cameras
from ..errors import InputError
from ..rotations import rodrigues, rotation_to_rodrigues  # noqa: F401 (re-exported; their home)

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
