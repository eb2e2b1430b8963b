"""Pose2Sim's per-person post-processing of triangulated keypoints, in numpy (no pandas).

* :func:`interpolate_gaps`: per column, values that are NaN or exactly 0 are missing; with more
  than 4 present values, missing ones are interpolated (``scipy.interpolate.interp1d`` of
  ``kind``, NaN outside the first / last present value), then runs of more than ``max_gap``
  consecutive missing values are set back to NaN. A column that cannot be interpolated stays as is.
* :func:`chunk_bounds`: ``[start, end)`` of the runs of at least ``min_size`` consecutive non-NaN
  values of a per-frame series: ``all`` (first start to last end), ``largest``, ``first``, ``last``;
  ``(0, 0)`` when there is none.
* :func:`fill_gaps`: ``last_value`` (forward fill, then backward fill, then NaN / inf -> 0),
  ``zeros`` (NaN / inf -> 0), anything else leaves NaN.
"""

from __future__ import annotations

import numpy as np


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of the runs of True in a 1-D bool array."""
    m = np.concatenate([[False], mask.astype(bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.nonzero(d == 1)[0].tolist(), np.nonzero(d == -1)[0].tolist()))


def interpolate_gaps(q: np.ndarray, index: np.ndarray, max_gap: float | None, kind: str = "linear") -> np.ndarray:
    """``q [F, M]`` with gaps interpolated column by column (module docstring); ``index [F]`` the frame numbers."""
    from scipy.interpolate import interp1d

    N = np.inf if max_gap is None else float(max_gap)
    out = q.copy()
    for j in range(q.shape[1]):
        col = q[:, j]
        good = ~(np.isnan(col) | (col == 0))
        if good.sum() <= 4:
            continue
        try:
            f = interp1d(index[good], col[good], kind=kind, bounds_error=False)
            c = np.where(good, col, f(index))
        except Exception:  # noqa: BLE001 - Pose2Sim leaves the data uninterpolated then
            continue
        for a, b in _runs(~good):
            if b - a > N:
                c[a:b] = np.nan
        out[:, j] = c
    return out


def chunk_bounds(series: np.ndarray, min_size: int = 10, method: str = "all") -> tuple[int, int]:
    """Runs of valid frames to keep (module docstring)."""
    runs = [(a, b) for a, b in _runs(~np.isnan(series)) if b - a >= min_size]
    if not runs:
        return 0, 0
    if method == "largest":
        return max(runs, key=lambda r: r[1] - r[0])  # the first of the largest
    if method == "first":
        return runs[0]
    if method == "last":
        return runs[-1]
    return runs[0][0], runs[-1][1]


def fill_gaps(q: np.ndarray, method: str = "last_value") -> np.ndarray:
    """Fill what is still missing (module docstring)."""
    out = q.copy()
    if method == "last_value":
        for j in range(out.shape[1]):
            col = out[:, j]
            ok = ~np.isnan(col)
            if ok.any():
                idx = np.where(ok, np.arange(len(col)), -1)
                idx = np.maximum.accumulate(idx)  # forward fill
                first = int(np.argmax(ok))
                idx[idx < 0] = first  # backward fill before the first value
                out[:, j] = col[idx]
        out[~np.isfinite(out)] = 0.0
    elif method == "zeros":
        out[~np.isfinite(out)] = 0.0
    return out


__all__ = ["chunk_bounds", "fill_gaps", "interpolate_gaps"]
