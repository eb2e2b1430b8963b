"""COLMAP text models (``cameras.txt`` / ``images.txt``) <-> metric :class:`~h4d_fast.camera.CameraSet`.

Harmony4D calibrates its static exo cameras with COLMAP and stores, beside the text model, a 4x4
similarity ``scale.npy`` = ``T`` that maps COLMAP coordinates to metric ones
(``X_metric = T @ X_colmap``). :func:`read_colmap` applies ``T`` exactly once, through
:meth:`CameraSet.transform_world`, and returns cameras that take metric world points to metric
camera coordinates. :func:`write_colmap` is its inverse.

Lens models (COLMAP ``params`` order -> CameraSet):

==================  ==============================================  ===========================
COLMAP model        params                                          CameraSet ``model``, ``dist``
==================  ==============================================  ===========================
SIMPLE_PINHOLE      f, cx, cy                                       pinhole
PINHOLE             fx, fy, cx, cy                                  pinhole
SIMPLE_RADIAL       f, cx, cy, k                                    opencv ``[k,0,0,0,0,0,0,0]``
RADIAL              f, cx, cy, k1, k2                               opencv ``[k1,k2,0,...]``
OPENCV              fx, fy, cx, cy, k1, k2, p1, p2                  opencv ``[k1,k2,p1,p2,0,0,0,0]``
FULL_OPENCV         fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, k5, k6  opencv ``[k1..k6 as OpenCV]``
OPENCV_FISHEYE      fx, fy, cx, cy, k1, k2, k3, k4                  fisheye ``[k1,k2,k3,k4,0,0,0,0]``
==================  ==============================================  ===========================

The principal point is taken as written (no half-pixel shift), as the reference does when it
projects through pycolmap's parameters.

Exo cameras are found through the image names: the ``camNN`` token of ``cam01/00001.jpg``,
``cam01_00001.jpg`` or ``exo/cam01/images/00001.jpg`` names the camera. Aria cameras (image size
1408x1408) and images without such a token are skipped. A static camera registered in several
images takes the pose of its first image by name.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np

from ..constants import NUM_DIST
from ..errors import InputError
from ..rotations import qvec_to_rotmat, rotmat_to_qvec  # noqa: F401 (re-exported; their home)
from .atomic import write_npy, write_text
from .npy import read_npy

if TYPE_CHECKING:  # torch loads when cameras are built (parsing runs without it)
    from ..camera import CameraSet

__all__ = [
    "ColmapCamera",
    "ColmapImage",
    "camera_token",
    "parse_cameras_txt",
    "parse_images_txt",
    "qvec_to_rotmat",
    "read_colmap",
    "read_scale",
    "rotmat_to_qvec",
    "write_colmap",
]

#: Image size of Aria glasses' RGB camera in cameras.txt; such cameras are not exo cameras.
ARIA_SIZE = (1408, 1408)

# COLMAP model name -> (number of params, CameraSet model)
_COLMAP_MODELS: dict[str, tuple[int, str]] = {
    "SIMPLE_PINHOLE": (3, "pinhole"),
    "PINHOLE": (4, "pinhole"),
    "SIMPLE_RADIAL": (4, "opencv"),
    "RADIAL": (5, "opencv"),
    "OPENCV": (8, "opencv"),
    "FULL_OPENCV": (12, "opencv"),
    "OPENCV_FISHEYE": (8, "fisheye"),
}

_CAM_TOKEN = re.compile(r"(?<![A-Za-z0-9])(cam\d+)(?![0-9])")


@dataclass(frozen=True)
class ColmapCamera:
    """One line of ``cameras.txt``."""

    camera_id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]
    line: int  # 1-based line number, for error messages


@dataclass(frozen=True)
class ColmapImage:
    """The pose line of one image in ``images.txt`` (``q``/``t`` map world to camera)."""

    image_id: int
    qvec: tuple[float, float, float, float]  # qw, qx, qy, qz
    tvec: tuple[float, float, float]
    camera_id: int
    name: str
    line: int


def camera_token(name: str) -> str | None:
    """The ``camNN`` token of an image name (``exo/cam03/images/00001.jpg`` -> ``cam03``), or None."""
    m = _CAM_TOKEN.search(name.replace("\\", "/"))
    return m.group(1) if m else None


# ------------------------------------------------------------------ parsing
def _data_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of every line of a text file (comments kept: callers decide)."""
    if not path.is_file():
        hint = ""
        binary = path.with_suffix(".bin")
        if binary.is_file():
            hint = f" (found {binary.name}: binary models are not read; convert with `colmap model_converter --output_type TXT`)"
        raise InputError(path, f"COLMAP file missing{hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read ({e})") from None
    return [(i + 1, ln.rstrip("\r\n")) for i, ln in enumerate(text.split("\n"))]


def _num(path: Path, lineno: int, what: str, tok: str, kind: type) -> float | int:
    try:
        v = kind(tok)
    except ValueError:
        raise InputError(path, f"{what}: expected {'an integer' if kind is int else 'a number'}, got {tok!r}", f"line {lineno}") from None
    if kind is float and not math.isfinite(v):
        raise InputError(path, f"{what}: not finite ({tok})", f"line {lineno}")
    return v


def parse_cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    """Parse ``cameras.txt``: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]`` per line (``#`` comments).

    Unknown models are kept here (their params unchecked) and rejected only if an exo image uses
    them, so an Aria or other unused camera never stops the read.
    """
    path = Path(path)
    cams: dict[int, ColmapCamera] = {}
    for lineno, raw in _data_lines(path):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        if len(tok) < 4:
            raise InputError(path, f"expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...', got {line!r}", f"line {lineno}")
        cid = int(_num(path, lineno, "CAMERA_ID", tok[0], int))
        model = tok[1].upper()
        w = int(_num(path, lineno, "WIDTH", tok[2], int))
        h = int(_num(path, lineno, "HEIGHT", tok[3], int))
        params = tuple(float(_num(path, lineno, f"PARAMS[{i}]", t, float)) for i, t in enumerate(tok[4:]))
        if model in _COLMAP_MODELS and len(params) != _COLMAP_MODELS[model][0]:
            raise InputError(path, f"model {model} takes {_COLMAP_MODELS[model][0]} params, got {len(params)}", f"line {lineno}")
        if w <= 0 or h <= 0:
            raise InputError(path, f"image size must be positive, got {w}x{h}", f"line {lineno}")
        if cid in cams:
            raise InputError(path, f"CAMERA_ID {cid} defined twice (first on line {cams[cid].line})", f"line {lineno}")
        cams[cid] = ColmapCamera(cid, model, w, h, params, lineno)
    return cams


def parse_images_txt(path: Path) -> list[ColmapImage]:
    """Parse ``images.txt``: per image a pose line ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME``
    followed by one 2D-points line (``X Y POINT3D_ID`` triples; may be empty)."""
    path = Path(path)
    lines = _data_lines(path)
    images: list[ColmapImage] = []
    i = 0
    n = len(lines)
    while i < n:
        lineno, raw = lines[i]
        line = raw.strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        tok = line.split(maxsplit=9)
        if len(tok) < 10:
            raise InputError(path, f"expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME', got {line!r}", f"line {lineno}")
        iid = int(_num(path, lineno, "IMAGE_ID", tok[0], int))
        q = tuple(float(_num(path, lineno, f, t, float)) for f, t in zip(("QW", "QX", "QY", "QZ"), tok[1:5]))
        t = tuple(float(_num(path, lineno, f, t, float)) for f, t in zip(("TX", "TY", "TZ"), tok[5:8]))
        cid = int(_num(path, lineno, "CAMERA_ID", tok[8], int))
        if math.sqrt(sum(v * v for v in q)) < 1e-12:
            raise InputError(path, "quaternion QW QX QY QZ is zero", f"line {lineno}")
        images.append(ColmapImage(iid, q, t, cid, tok[9].strip(), lineno))  # type: ignore[arg-type]
        # the 2D-points line that belongs to this image
        if i < n:
            plineno, praw = lines[i]
            ptok = praw.split()
            if len(ptok) % 3 != 0:
                raise InputError(
                    path,
                    f"expected the 2D-points line of image {iid} (X Y POINT3D_ID triples, may be empty), got {len(ptok)} values",
                    f"line {plineno}",
                )
            i += 1
    return images


def read_scale(path: Path) -> np.ndarray:
    """Load a 4x4 similarity (``scale.npy``) as float64, checking that it is one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "scale transform file missing")
    obj = read_npy(path)
    try:
        T = np.asarray(obj, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(path, f"expected a 4x4 float array, got {type(obj).__name__} ({e})", "scale") from None
    return check_similarity(T, path)


def check_similarity(T: np.ndarray, path: Path | None = None) -> np.ndarray:
    """Check that ``T`` is a finite 4x4 similarity ``[s R0 | t; 0 0 0 1]``; return it as float64."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise InputError(path, f"expected a 4x4 similarity transform, got shape {T.shape}", "scale")
    if not np.isfinite(T).all():
        raise InputError(path, "transform has non-finite entries", "scale")
    if not np.allclose(T[3], [0, 0, 0, 1], atol=1e-9):
        raise InputError(path, f"last row must be [0 0 0 1], got {T[3].tolist()}", "scale")
    A = T[:3, :3]
    d = np.linalg.det(A)
    if abs(d) < 1e-30:
        raise InputError(path, "transform is singular (zero scale)", "scale")
    if d < 0:
        raise InputError(path, "3x3 block has a negative determinant (a reflection, not a similarity)", "scale")
    s = abs(d) ** (1.0 / 3.0)
    R0 = A / s
    if not np.allclose(R0 @ R0.T, np.eye(3), atol=1e-6):
        raise InputError(path, "3x3 block is not a scaled rotation (not a similarity)", "scale")
    return T


# ------------------------------------------------------------------ reading
@dataclass
class ColmapRig:
    """The exo cameras of a COLMAP model as numpy arrays (what :func:`parse_colmap` read):
    ``V`` names, lens models, ``intrinsics [V, 4]``, ``dist [V, 8]``, ``R [V, 3, 3]``, ``t [V, 3]``
    (COLMAP frame), ``size [V, 2]`` and the COLMAP-to-metric similarity ``T`` (None: none)."""

    names: list[str]
    models: list[str]
    intrinsics: np.ndarray
    dist: np.ndarray
    R: np.ndarray
    t: np.ndarray
    size: np.ndarray
    T: np.ndarray | None

    def cameras(self) -> CameraSet:
        """The metric float64 :class:`CameraSet`."""
        import torch

        from ..camera import make_cameras

        cameras = make_cameras(self.names, self.models, self.intrinsics, self.R, self.t, self.size, dist=self.dist,
                               dtype=torch.float64)
        return cameras.transform_world(self.T) if self.T is not None else cameras


def read_colmap(
    workplace: Path,
    scale: Path | np.ndarray | None | Literal["auto"] = "auto",
    camera_names: Sequence[str] | None = None,
) -> CameraSet:
    """Read the exo cameras of a COLMAP text model as metric float64 cameras
    (:func:`parse_colmap`, then the :class:`CameraSet`).

    Args: see :func:`parse_colmap`.
    Returns:
        A :class:`CameraSet` (float64) in the metric world frame.
    Raises:
        InputError: a file is missing or malformed, or a requested camera is absent.
    """
    return parse_colmap(workplace, scale, camera_names).cameras()


def parse_colmap(
    workplace: Path,
    scale: Path | np.ndarray | None | Literal["auto"] = "auto",
    camera_names: Sequence[str] | None = None,
) -> ColmapRig:
    """Read the exo cameras of a COLMAP text model (without torch; :meth:`ColmapRig.cameras`
    builds the metric float64 cameras).

    Args:
        workplace: folder holding ``cameras.txt`` and ``images.txt`` (``SEQ/colmap/workplace``).
        scale: the COLMAP-to-metric similarity ``T`` (``X_metric = T @ X_colmap``): ``'auto'`` uses
            ``workplace/scale.npy`` when it exists (identity otherwise); a path (str or Path) loads that file; an
            array is used as is; ``None`` applies nothing (cameras stay in COLMAP units).
        camera_names: keep only these cameras, in this order (all must be present). Default: every
            exo camera, sorted by name.
    Returns:
        The :class:`ColmapRig`.
    Raises:
        InputError: a file is missing or malformed, or a requested camera is absent.
    """
    workplace = Path(workplace)
    cam_path = workplace / "cameras.txt"
    img_path = workplace / "images.txt"
    cams = parse_cameras_txt(cam_path)
    images = parse_images_txt(img_path)

    # first image (by name) of each exo camera
    chosen: dict[str, ColmapImage] = {}
    for im in sorted(images, key=lambda im: im.name):
        token = camera_token(im.name)
        if token is None:
            continue
        cam = cams.get(im.camera_id)
        if cam is None:
            raise InputError(img_path, f"image {im.name!r} uses CAMERA_ID {im.camera_id}, which {cam_path.name} does not define", f"line {im.line}")
        if (cam.width, cam.height) == ARIA_SIZE:
            continue
        chosen.setdefault(token, im)

    if camera_names is None:
        names = sorted(chosen)
        if not names:
            raise InputError(img_path, "no exo camera images (names with a camNN token, e.g. cam01/00001.jpg)")
    else:
        names = list(camera_names)
        missing = [c for c in names if c not in chosen]
        if missing:
            raise InputError(img_path, f"no image for camera(s) {', '.join(missing)}; exo cameras present: {', '.join(sorted(chosen)) or 'none'}")

    models: list[str] = []
    intr = np.zeros((len(names), 4))
    dist = np.zeros((len(names), NUM_DIST))
    R = np.zeros((len(names), 3, 3))
    t = np.zeros((len(names), 3))
    size = np.zeros((len(names), 2), dtype=np.int64)
    for v, name in enumerate(names):
        im = chosen[name]
        cam = cams[im.camera_id]
        if cam.model not in _COLMAP_MODELS:
            raise InputError(
                cam_path,
                f"camera {cam.camera_id} (used by {name}) has unsupported model {cam.model}; supported: {', '.join(_COLMAP_MODELS)}",
                f"line {cam.line}",
            )
        models.append(_COLMAP_MODELS[cam.model][1])
        intr[v], dist[v] = _params_to_intrinsics(cam.model, cam.params)
        R[v] = qvec_to_rotmat(im.qvec)
        t[v] = im.tvec
        size[v] = (cam.width, cam.height)

    T: np.ndarray | None
    if isinstance(scale, str) and scale == "auto":
        sp = workplace / "scale.npy"
        T = read_scale(sp) if sp.is_file() else None
    elif isinstance(scale, (str, Path)):
        T = read_scale(Path(scale))
    elif scale is None:
        T = None
    else:
        T = check_similarity(np.asarray(scale, dtype=np.float64))
    return ColmapRig(names, models, intr, dist, R, t, size, T)


def _params_to_intrinsics(model: str, p: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    d = np.zeros(NUM_DIST)
    if model == "SIMPLE_PINHOLE":
        f, cx, cy = p
        return np.array([f, f, cx, cy]), d
    if model == "PINHOLE":
        return np.array(p[:4]), d
    if model == "SIMPLE_RADIAL":
        f, cx, cy, k = p
        d[0] = k
        return np.array([f, f, cx, cy]), d
    if model == "RADIAL":
        f, cx, cy, k1, k2 = p
        d[:2] = (k1, k2)
        return np.array([f, f, cx, cy]), d
    # OPENCV, FULL_OPENCV, OPENCV_FISHEYE: fx fy cx cy then coefficients in CameraSet slot order
    extra = p[4:]
    d[: len(extra)] = extra
    return np.array(p[:4]), d


# ------------------------------------------------------------------ writing
def _fmt(x: float) -> str:
    return repr(float(x))


def write_colmap(workplace: Path, cameras: CameraSet, T: np.ndarray | None = None, frame_id: int = 1) -> None:
    """Write ``cameras`` (metric) as a COLMAP text model plus ``scale.npy`` such that
    ``read_colmap(workplace)`` returns the same cameras.

    The model is expressed in the COLMAP frame ``X_colmap = inv(T) @ X_metric``: with
    ``T = [s R0 | tr]`` a metric camera ``(R', t')`` becomes ``R = R' R0``, ``t = (t' + R' tr) / s``.

    Args:
        workplace: output folder (created); gets ``cameras.txt``, ``images.txt``, ``points3D.txt``
            (empty) and ``scale.npy`` (``T``, identity when None).
        cameras: metric cameras; names must carry a ``camNN`` token.
        T: the COLMAP-to-metric similarity to store.
        frame_id: frame number used in the image names (``camNN/00001.jpg``).
    Raises:
        ValueError: a camera name has no ``camNN`` token, or its distortion cannot be written in
            its model (a pinhole with distortion, a fisheye with coefficients past k4).
    """
    import torch

    workplace = Path(workplace)
    T = np.eye(4) if T is None else check_similarity(np.asarray(T, dtype=np.float64))
    cams = cameras.to(dtype=torch.float64)
    A = T[:3, :3]
    s = abs(np.linalg.det(A)) ** (1.0 / 3.0)
    R0 = A / s
    tr = T[:3, 3]

    cam_lines = [
        "# Camera list with one line of data per camera:",
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
        f"# Number of cameras: {len(cams)}",
    ]
    img_lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {len(cams)}, mean observations per image: 0",
    ]
    intr = cams.intrinsics.cpu().numpy()
    dist = cams.dist.cpu().numpy()
    Rm = cams.R.cpu().numpy()
    tm = cams.t.cpu().numpy()
    size = cams.size.cpu().numpy()
    for v, name in enumerate(cams.names):
        if camera_token(name) != name:
            raise ValueError(f"write_colmap: camera name {name!r} is not a camNN token; read_colmap could not find it")
        model, params = _intrinsics_to_params(name, cams.model[v], intr[v], dist[v])
        cam_lines.append(" ".join([str(v + 1), model, str(int(size[v, 0])), str(int(size[v, 1]))] + [_fmt(x) for x in params]))
        Rc = Rm[v] @ R0
        tc = (tm[v] + Rm[v] @ tr) / s
        q = rotmat_to_qvec(Rc)
        img_lines.append(" ".join([str(v + 1)] + [_fmt(x) for x in q] + [_fmt(x) for x in tc] + [str(v + 1), f"{name}/{frame_id:05d}.jpg"]))
        img_lines.append("")
    points = ["# 3D point list with one line of data per point:", "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)", "# Number of points: 0, mean track length: 0"]
    write_text(workplace / "cameras.txt", "\n".join(cam_lines) + "\n")
    write_text(workplace / "images.txt", "\n".join(img_lines) + "\n")
    write_text(workplace / "points3D.txt", "\n".join(points) + "\n")
    write_npy(workplace / "scale.npy", np.ascontiguousarray(T, dtype=np.float64))


def _intrinsics_to_params(name: str, model: str, intr: np.ndarray, d: np.ndarray) -> tuple[str, list[float]]:
    fx, fy, cx, cy = (float(x) for x in intr)
    if model == "pinhole":
        if np.any(d != 0):
            raise ValueError(f"write_colmap: pinhole camera {name} has non-zero distortion; use model 'opencv'")
        return "PINHOLE", [fx, fy, cx, cy]
    if model == "fisheye":
        if np.any(d[4:] != 0):
            raise ValueError(f"write_colmap: fisheye camera {name} has coefficients past k4 (dist[4:] = {d[4:].tolist()})")
        return "OPENCV_FISHEYE", [fx, fy, cx, cy, *d[:4].tolist()]
    if np.any(d[4:] != 0):
        return "FULL_OPENCV", [fx, fy, cx, cy, *d.tolist()]
    return "OPENCV", [fx, fy, cx, cy, *d[:4].tolist()]
