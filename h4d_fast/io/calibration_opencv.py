"""Readers of OpenCV FileStorage calibrations: QCA XML, EasyMocap intri/extri and single OpenCV files (split from :mod:`h4d_fast.io.calibration`)."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..camera import NUM_DIST
from ..errors import InputError
from .calibration_common import (
    MAX_IMAGE_SIDE,
    CalibrationInfo,
    _array,
    _Cam,
    _camera_set,
    _check_rotation,
    _dist8,
    _intrinsics,
    _model,
    _rotation,
)


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
