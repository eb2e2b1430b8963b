"""Anipose 3D pose CSV (``pose-3d/<video>.csv``): writer and reader.

Columns, as ``anipose triangulate`` writes them (comma-separated, one header row, one row per
frame): for each joint ``<j>`` in turn ``<j>_x, <j>_y, <j>_z`` (position), ``<j>_error`` (mean
reprojection error in pixels), ``<j>_ncams`` (cameras used), ``<j>_score`` (2D score); then the
alignment ``M_00 .. M_22`` (3x3, row-major) and ``center_0 .. center_2``; then ``fnum`` (frame
index, from 0). A point that was not triangulated has empty cells (pandas' NaN) for
``x, y, z, error, ncams, score``.

Anipose stores positions aligned to an optional body-based frame: ``p_csv = M @ p_calib - center``.
This writer writes ``M = I``, ``center = 0`` (positions in the calibration world); the reader
returns ``p_calib = inv(M) @ (p_csv + center)`` by default (``to_calibration=False`` keeps the
file's values). Units are the calibration's (Anipose: the board's square-size unit, often mm): the
writer takes metres and writes ``units`` (``m`` default, or ``mm``); the reader is told the file's
unit (``units``) and returns metres.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from torch import Tensor

from ..constants import COCO17_NAMES
from ..errors import InputError
from .atomic import write_text

__all__ = ["AniposeCsv", "read_anipose_csv", "write_anipose_csv"]

_UNITS = {"m": 1.0, "mm": 1e-3, "cm": 1e-2}
_FIELDS = ("x", "y", "z", "error", "ncams", "score")


@dataclass
class AniposeCsv:
    """An Anipose 3D CSV's content (positions in metres when the right ``units`` was given).

    Attributes:
        joints: joint names in column order.
        xyz: ``[F, J, 3]`` positions (NaN when missing).
        error, ncams, score: ``[F, J]`` (NaN when missing).
        fnum: ``[F]`` frame indices.
        M, center: the alignment stored in the file (``[3, 3]``, ``[3]``; identity/zero when absent).
    """

    joints: list[str]
    xyz: np.ndarray
    error: np.ndarray
    ncams: np.ndarray
    score: np.ndarray
    fnum: np.ndarray
    M: np.ndarray
    center: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return np.isfinite(self.xyz).all(-1)


def _np(x: np.ndarray | Tensor | None, shape: tuple[int, ...], name: str) -> np.ndarray | None:
    if x is None:
        return None
    a = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"write_anipose_csv: {name} must have shape {shape}, got {a.shape}")
    return a


def _cell(v: float) -> str:
    return "" if not math.isfinite(v) else repr(float(v))


def write_anipose_csv(
    path: Path,
    points: np.ndarray | Tensor,
    joint_names: Sequence[str] = COCO17_NAMES,
    error: np.ndarray | Tensor | None = None,
    ncams: np.ndarray | Tensor | None = None,
    score: np.ndarray | Tensor | None = None,
    fnum: Sequence[int] | None = None,
    units: str = "m",
) -> None:
    """Write one person's 3D keypoints as an Anipose 3D CSV (atomic).

    Args:
        points: ``[F, J, 3]`` metres, or ``[F, J, 4]`` with a valid flag (invalid -> empty cells).
        joint_names: ``J`` names (default COCO-17).
        error, ncams, score: optional ``[F, J]`` columns (default: empty, ``ncams`` empty too).
        fnum: frame indices (default ``0..F-1``, as Anipose).
        units: ``m`` (default) or ``mm``/``cm`` for the positions written.
    """
    p = points.detach().cpu().double().numpy() if isinstance(points, Tensor) else np.asarray(points, dtype=np.float64)
    if p.ndim != 3 or p.shape[-1] not in (3, 4):
        raise ValueError(f"write_anipose_csv: expected points [F, J, 3] or [F, J, 4], got {p.shape}")
    if units not in _UNITS:
        raise ValueError(f"write_anipose_csv: units must be one of {', '.join(_UNITS)}, got {units!r}")
    F, J = p.shape[:2]
    names = [str(n) for n in joint_names]
    if len(names) != J:
        raise ValueError(f"write_anipose_csv: {J} joints but {len(names)} names")
    xyz = p[..., :3] / _UNITS[units]
    ok = np.isfinite(xyz).all(-1)
    if p.shape[-1] == 4:
        ok &= p[..., 3] > 0
    xyz = np.where(ok[..., None], xyz, np.nan)
    cols = {}
    for nm, a in (("error", error), ("ncams", ncams), ("score", score)):
        v = _np(a, (F, J), nm)
        cols[nm] = np.where(ok, v, np.nan) if v is not None else np.full((F, J), np.nan)
    fn = np.arange(F) if fnum is None else np.asarray(fnum, dtype=np.int64)
    if fn.shape != (F,):
        raise ValueError(f"write_anipose_csv: fnum must have {F} entries")
    header = [f"{n}_{f}" for n in names for f in _FIELDS]
    header += [f"M_{i}{j}" for i in range(3) for j in range(3)] + [f"center_{i}" for i in range(3)] + ["fnum"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    eye = [repr(float(x)) for x in np.eye(3).reshape(-1)]
    for f in range(F):
        row: list[str] = []
        for j in range(J):
            row += [_cell(xyz[f, j, 0]), _cell(xyz[f, j, 1]), _cell(xyz[f, j, 2])]
            nc = cols["ncams"][f, j]
            row += [_cell(cols["error"][f, j]), "" if not math.isfinite(nc) else repr(float(nc)), _cell(cols["score"][f, j])]
        row += eye + ["0.0", "0.0", "0.0", str(int(fn[f]))]
        w.writerow(row)
    write_text(path, buf.getvalue())


def read_anipose_csv(path: Path, units: str = "m", to_calibration: bool = True) -> AniposeCsv:
    """Read an Anipose 3D CSV (see the module docstring).

    Args:
        units: the file's length unit (``m``, ``mm``, ``cm``); positions come back in metres.
        to_calibration: undo the stored alignment ``M``/``center``.
    Raises:
        InputError: no ``<joint>_x/_y/_z`` columns, a non-numeric cell, or a short row (the line is named).
    """
    path = Path(path)
    if units not in _UNITS:
        raise ValueError(f"read_anipose_csv: units must be one of {', '.join(_UNITS)}, got {units!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read ({e})") from None
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise InputError(path, "empty file")
    head = [h.strip() for h in rows[0]]
    # an unnamed index column (pandas' default to_csv) is skipped
    col = {h: i for i, h in enumerate(head) if h}
    joints = [h[:-2] for h in head if h.endswith("_x") and f"{h[:-2]}_y" in col and f"{h[:-2]}_z" in col]
    if not joints:
        raise InputError(path, "no '<joint>_x, <joint>_y, <joint>_z' columns", "line 1")
    F, J = len(rows) - 1, len(joints)
    data = np.full((F, len(head)), np.nan)
    for i, r in enumerate(rows[1:]):
        if len(r) < len(head):
            raise InputError(path, f"expected {len(head)} cells, got {len(r)}", f"line {i + 2}")
        for c, h in enumerate(head):
            s = r[c].strip()
            if not h or not s:
                continue
            try:
                data[i, c] = float(s)
            except ValueError:
                raise InputError(path, f"not a number: {s!r}", f"line {i + 2} column {h}") from None

    def get(name: str, default: float = math.nan) -> np.ndarray:
        return data[:, col[name]] if name in col else np.full(F, default)

    xyz = np.stack([np.stack([get(f"{j}_{a}") for a in "xyz"], -1) for j in joints], 1) if F else np.zeros((0, J, 3))
    extra = {f: (np.stack([get(f"{j}_{f}") for j in joints], 1) if F else np.zeros((0, J))) for f in ("error", "ncams", "score")}
    M = np.eye(3)
    center = np.zeros(3)
    if F and all(f"M_{i}{j}" in col for i in range(3) for j in range(3)):
        M = np.array([[get(f"M_{i}{j}")[0] for j in range(3)] for i in range(3)])
    if F and all(f"center_{i}" in col for i in range(3)):
        center = np.array([get(f"center_{i}")[0] for i in range(3)])
    if not np.isfinite(M).all():
        M = np.eye(3)
    if not np.isfinite(center).all():
        center = np.zeros(3)
    if to_calibration:
        xyz = (xyz + center) @ np.linalg.inv(M).T  # p = inv(M) @ (q + c), row vectors
    s = _UNITS[units]
    fnum = get("fnum").astype(np.float64)
    fnum = np.where(np.isfinite(fnum), fnum, np.arange(F)).astype(np.int64)
    return AniposeCsv(joints, xyz * s, extra["error"], extra["ncams"], extra["score"], fnum, M, center * s)
