"""Strict JSON for the reports a program reads: NaN and infinities become ``null`` (``json.dumps``
would print ``NaN`` / ``Infinity``, which strict parsers such as ``jq`` or JavaScript reject)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["finite_or_none", "strict_dumps"]


def finite_or_none(o: Any) -> Any:
    """``o`` with every non-finite float (also inside dicts, lists, tuples and numpy values) as None."""
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: finite_or_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite_or_none(v) for v in o]
    if isinstance(o, np.ndarray):
        return finite_or_none(o.tolist())
    if isinstance(o, (np.integer, np.bool_)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return o


def strict_dumps(obj: Any, indent: int | None = 2) -> str:
    """``json.dumps`` of :func:`finite_or_none` (obj) with ``allow_nan=False``."""
    return json.dumps(finite_or_none(obj), indent=indent, allow_nan=False)
