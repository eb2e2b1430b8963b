"""TRC marker files (OpenSim / Pose2Sim 3D keypoints): writer and reader.

Layout (tab-separated; what Pose2Sim writes and OpenSim reads)::

    PathFileType  4  (X/Y/Z)  <file name>
    DataRate  CameraRate  NumFrames  NumMarkers  Units  OrigDataRate  OrigDataStartFrame  OrigNumFrames
    60        60          100        17          m      60            1                   100
    Frame#  Time  nose  <tab>  <tab>  left_eye ...        (each marker name, then two empty cells)
            X1  Y1  Z1  X2  Y2  Z2 ...
    1       0.016666666666666666  x  y  z  x  y  z ...   (one row per frame)

A missing marker is written as empty cells (OpenSim reads them as NaN); the reader accepts empty
cells and ``NaN``. An optional blank line between the header and the data (OpenSim's own files)
is accepted. ``Units`` is ``m`` or ``mm`` (written values are scaled accordingly; the reader returns
metres and keeps the file's unit in :attr:`TrcData.units`).

Axes: a TRC file's axes need not be the calibration world's. ``axes`` names, for the file's
``X, Y, Z`` columns in turn, the world axis written there, optionally negated: ``"xyz"`` (default)
writes the world as is; ``"yzx"`` = :data:`POSE2SIM_AXES` writes ``X = world y, Y = world z,
Z = world x``, the convention of Pose2Sim's TRC files (Y up for OpenSim when the calibration's
world has z up); ``"x-zy"`` writes ``X = x, Y = -z, Z = y``. The reader applies the inverse, so
``read_trc(p, axes=a)`` returns world coordinates of a file written with ``axes=a``.

Marker names default to the COCO-17 names of :data:`~h4d_fast.constants.COCO17_NAMES`;
:func:`trc_to_coco17` picks COCO-17 keypoints out of a file with other names (Pose2Sim's
``Nose``, ``LShoulder``, ... included).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from torch import Tensor

from ..constants import COCO17_NAMES, NUM_COCO
from ..errors import InputError
from .atomic import write_text

__all__ = ["POSE2SIM_AXES", "TrcData", "axes_matrix", "coco17_aliases", "read_trc", "trc_to_coco17", "write_trc"]

#: TRC axes of Pose2Sim's files: ``X, Y, Z`` = world ``y, z, x``.
POSE2SIM_AXES = "yzx"

_UNITS = {"m": 1.0, "mm": 1e-3, "cm": 1e-2}


def axes_matrix(axes: str) -> np.ndarray:
    """``[3, 3]`` signed permutation ``A`` with ``file_xyz = A @ world_xyz`` for an axes spec like ``"yzx"``/``"x-zy"``."""
    spec = str(axes).lower().replace(" ", "")
    toks = re.findall(r"[+-]?[xyz]", spec)
    if "".join(toks) != spec or len(toks) != 3 or sorted(t[-1] for t in toks) != ["x", "y", "z"]:
        raise ValueError(f"axes must name each of x, y, z once, optionally signed (e.g. 'xyz', 'yzx', 'x-zy'), got {axes!r}")
    A = np.zeros((3, 3))
    for row, tok in enumerate(toks):
        A[row, "xyz".index(tok[-1])] = -1.0 if tok.startswith("-") else 1.0
    return A


@dataclass
class TrcData:
    """A TRC file's content.

    Attributes:
        markers: marker names, in column order.
        xyz: ``[F, M, 3]`` float64 positions in metres, world axes (the ``axes`` given to
            :func:`read_trc` undone); NaN where missing.
        frames: ``[F]`` frame numbers (the ``Frame#`` column).
        times: ``[F]`` times in seconds.
        rate: ``DataRate`` (frames per second).
        units: the file's unit (``m``, ``mm``, ``cm``).
        header: the header's ``key -> value`` (strings).
    """

    markers: list[str]
    xyz: np.ndarray
    frames: np.ndarray
    times: np.ndarray
    rate: float
    units: str
    header: dict[str, str]

    @property
    def valid(self) -> np.ndarray:
        """``[F, M]`` bool: the marker has a position."""
        return np.isfinite(self.xyz).all(-1)


def _fmt(x: float) -> str:
    return "" if not math.isfinite(x) else repr(float(x))


def write_trc(
    path: Path,
    points: np.ndarray | Tensor,
    rate: float,
    marker_names: Sequence[str] = COCO17_NAMES,
    units: str = "m",
    axes: str = "xyz",
    frame_numbers: Sequence[int] | None = None,
    times: Sequence[float] | None = None,
) -> None:
    """Write one person's 3D keypoints as a TRC file (atomic).

    Args:
        path: output file.
        points: ``[F, M, 3]`` world positions in metres, or ``[F, M, 4]`` with a valid flag
            (``[F, P, 17, 4]`` poses of this package: pass ``poses[:, p]``); NaN or invalid ->
            empty cells.
        rate: frames per second (``DataRate``, ``CameraRate``, ``OrigDataRate``).
        marker_names: ``M`` names (default COCO-17).
        units: ``m`` or ``mm`` (``cm`` too) for the values written.
        axes: world axis written in each TRC column (see the module docstring; Pose2Sim: ``"yzx"``).
        frame_numbers: ``Frame#`` values (default ``1..F``).
        times: ``Time`` values (default ``frame / rate``, as Pose2Sim writes).
    """
    p = points.detach().cpu().double().numpy() if isinstance(points, Tensor) else np.asarray(points, dtype=np.float64)
    if p.ndim != 3 or p.shape[-1] not in (3, 4):
        raise ValueError(f"write_trc: expected points [F, M, 3] or [F, M, 4], got {p.shape}")
    F, M = p.shape[:2]
    names = [str(n) for n in marker_names]
    if len(names) != M:
        raise ValueError(f"write_trc: {M} markers but {len(names)} names")
    if any(("\t" in n or "\n" in n or not n) for n in names):
        raise ValueError("write_trc: marker names must be non-empty and free of tabs/newlines")
    if units not in _UNITS:
        raise ValueError(f"write_trc: units must be one of {', '.join(_UNITS)}, got {units!r}")
    if not rate > 0:
        raise ValueError(f"write_trc: rate must be positive, got {rate}")
    xyz = p[..., :3].copy()
    if p.shape[-1] == 4:
        xyz[p[..., 3] <= 0] = np.nan
    xyz = xyz @ axes_matrix(axes).T / _UNITS[units]
    fn = np.arange(1, F + 1) if frame_numbers is None else np.asarray(frame_numbers, dtype=np.int64)
    tm = fn / float(rate) if times is None else np.asarray(times, dtype=np.float64)
    if fn.shape != (F,) or tm.shape != (F,):
        raise ValueError(f"write_trc: frame_numbers/times must have {F} entries")
    r = f"{rate:g}"
    lines = [
        f"PathFileType\t4\t(X/Y/Z)\t{Path(path).name}",
        "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames",
        f"{r}\t{r}\t{F}\t{M}\t{units}\t{r}\t{int(fn[0]) if F else 1}\t{F}",
        "Frame#\tTime\t" + "\t".join(f"{n}\t\t" for n in names).rstrip("\t"),
        "\t\t" + "\t".join(f"X{i}\tY{i}\tZ{i}" for i in range(1, M + 1)),
    ]
    for f in range(F):
        cells = [str(int(fn[f])), repr(float(tm[f]))] + [_fmt(v) for v in xyz[f].reshape(-1)]
        lines.append("\t".join(cells))
    write_text(path, "\n".join(lines) + "\n")


def read_trc(path: Path, axes: str = "xyz") -> TrcData:
    """Read a TRC file; positions come back in metres and world axes (``axes`` undone).

    Raises:
        InputError: missing header lines, unknown units, a row with the wrong number of cells or
            a non-numeric cell (the line is named).
    """
    path = Path(path)
    A = axes_matrix(axes)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read ({e})") from None
    lines = text.split("\n")
    if len(lines) < 5 or not lines[0].startswith("PathFileType"):
        raise InputError(path, "not a TRC file (first line must start with 'PathFileType')", "line 1")
    keys = lines[1].rstrip("\r").split("\t")
    vals = lines[2].rstrip("\r").split("\t")
    header = {k.strip(): v.strip() for k, v in zip(keys, vals) if k.strip()}
    for k in ("DataRate", "NumMarkers", "Units"):
        if k not in header:
            raise InputError(path, f"header has no '{k}'", "line 2")
    units = header["Units"].lower()
    if units not in _UNITS:
        raise InputError(path, f"unknown Units {header['Units']!r} (m, mm or cm)", "line 3")
    try:
        rate = float(header["DataRate"])
        n_markers = int(float(header["NumMarkers"]))
    except ValueError:
        raise InputError(path, "DataRate/NumMarkers are not numbers", "line 3") from None
    names_row = lines[3].rstrip("\r").split("\t")
    if len(names_row) < 2 or names_row[0].strip() != "Frame#":
        raise InputError(path, "expected 'Frame#  Time  <marker names>'", "line 4")
    markers = [n.strip() for n in names_row[2:] if n.strip()]
    if len(markers) != n_markers:
        raise InputError(path, f"NumMarkers is {n_markers} but the header names {len(markers)} markers", "line 4")
    ncol = 2 + 3 * n_markers
    rows, fnums, tms = [], [], []
    for i in range(5, len(lines)):
        line = lines[i].rstrip("\r")
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) < ncol:
            cells += [""] * (ncol - len(cells))
        if len(cells) > ncol and any(c.strip() for c in cells[ncol:]):
            raise InputError(path, f"expected {ncol} cells (Frame#, Time, 3 per marker), got {len(cells)}", f"line {i + 1}")
        try:
            fnums.append(int(float(cells[0])))
            tms.append(float(cells[1]))
            rows.append([float(c) if c.strip() else math.nan for c in cells[2:ncol]])
        except ValueError:
            bad = next(c for c in cells[:ncol] if c.strip() and not _is_float(c))
            raise InputError(path, f"not a number: {bad!r}", f"line {i + 1}") from None
    xyz = np.asarray(rows, dtype=np.float64).reshape(len(rows), n_markers, 3) * _UNITS[units]
    xyz = xyz @ A  # file = A @ world  ->  world = A.T @ file (row vectors: file @ A)
    return TrcData(markers, xyz, np.asarray(fnums, dtype=np.int64), np.asarray(tms), rate, units, header)


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def coco17_aliases() -> list[tuple[str, ...]]:
    """Accepted marker names of each COCO-17 keypoint (COCO's own, then OpenPose/Pose2Sim spellings)."""
    out = []
    for n in COCO17_NAMES:
        side, _, part = n.partition("_")
        if part:
            short = side[0].upper() + part.capitalize()  # left_eye -> LEye
            out.append((n, short, side.capitalize() + part.capitalize(), side + part.capitalize()))
        else:
            out.append((n, n.capitalize()))
    return out


def trc_to_coco17(trc: TrcData) -> np.ndarray:
    """``[F, 17, 4]`` COCO-17 ``x, y, z, valid`` from a TRC file's markers (absent markers: invalid).

    Names are matched case-insensitively against :func:`coco17_aliases` (``left_shoulder``,
    ``LShoulder``, ``LeftShoulder``, ...).
    """
    lookup = {m.lower(): i for i, m in enumerate(trc.markers)}
    F = trc.xyz.shape[0]
    out = np.zeros((F, NUM_COCO, 4), np.float64)
    for j, names in enumerate(coco17_aliases()):
        idx = next((lookup[a.lower()] for a in names if a.lower() in lookup), None)
        if idx is None:
            continue
        p = trc.xyz[:, idx]
        ok = np.isfinite(p).all(-1)
        out[ok, j, :3] = p[ok]
        out[ok, j, 3] = 1.0
    return out
