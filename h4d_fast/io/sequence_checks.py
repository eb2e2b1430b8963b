"""Checks that a sequence folder can give metric 3D: a COLMAP-to-metric scale and two views."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from .detections import LoadReport

log = logging.getLogger("h4d_fast.io")

__all__ = ["SCALE_FILE", "check_metric_scale", "check_two_views"]

#: the COLMAP-to-metric similarity, relative to the sequence folder
SCALE_FILE = Path("colmap") / "workplace" / "scale.npy"


def check_metric_scale(seq: Path, assume_metric: bool, report: LoadReport | None = None) -> str | None:
    """Refuse a sequence whose COLMAP model has no ``scale.npy`` (its 3D would be in COLMAP units,
    silently), unless ``assume_metric``: then the COLMAP model is taken as metric and the returned
    warning is logged and added to ``report``. Returns None when ``scale.npy`` is there."""
    path = Path(seq) / SCALE_FILE
    if path.is_file():
        return None
    if not assume_metric:
        raise InputError(path, "COLMAP-to-metric scale missing: the 3D output would be in COLMAP units; "
                               "add it, or pass --assume-metric (run.assume_metric) if the COLMAP model is in metres")
    msg = f"{path} missing: COLMAP model assumed metric (--assume-metric)"
    log.warning(msg)
    if report is not None:
        report.warn(msg)
    return msg


def check_two_views(path: Path, names: Sequence[str]) -> None:
    """Triangulation needs two views: a capture of fewer cameras is refused (not exported as made-up bodies)."""
    if len(names) < 2:
        raise InputError(path, f"{len(names)} camera(s) ({', '.join(names) or 'none'}): triangulation needs at least 2 views", "cameras")
