"""Reading and checking body model files in the SMPL layout (.pkl / .npz, or a folder of them).

The layout is the one ``smplx.SMPL`` reads: ``v_template`` (N, 3), ``shapedirs`` (N, 3, K),
``posedirs`` (N, 3, 207), ``J_regressor`` (24, N) dense or scipy-sparse, ``weights`` (N, 24),
``kintree_table`` (2, 24) and ``f`` (F, 3). Pickles written with chumpy arrays (the original
SMPL release) load without chumpy: those objects are turned back into numpy arrays. Files are
read with the package's restricted unpickler (:mod:`h4d_fast.io.safe_pickle`): nothing in them runs.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import NUM_SMPL_JOINTS
from ..errors import InputError
from ..io import safe_pickle
from ..io.npy import read_npz

SMPL_KEYS: tuple[str, ...] = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
"""Keys every SMPL model file must have."""

NUM_POSE_BASIS = 207  # 23 joints x 9 rotation-matrix entries
GENDERS: tuple[str, ...] = ("neutral", "male", "female")


def read_smpl_file(path: str | Path) -> dict[str, Any]:
    """Read a SMPL-layout model file (.pkl or .npz) into a dict and check it.

    Args:
        path: the file.
    Returns:
        dict with at least :data:`SMPL_KEYS` (numpy arrays; ``J_regressor`` may stay scipy-sparse).
    Raises:
        InputError: missing/unreadable file, missing key or wrong shape (names file and key).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "body model file not found")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        data: Any = read_npz(path, smpl=True)
        for k, v in list(data.items()):
            if v.dtype == object and v.ndim == 0:
                data[k] = v.item()  # pickled scalars / sparse matrices / dicts
    else:
        try:
            with open(path, "rb") as f, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = safe_pickle.load(f, smpl=True)
        except safe_pickle.UnsafePickleError as e:
            raise InputError(path, f"unsafe pickle ({e})") from None
        except Exception as e:  # noqa: BLE001  (any unpickling failure is bad input)
            raise InputError(path, f"cannot read body model file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise InputError(path, f"expected a dict of arrays, found {type(data).__name__}")
    try:
        data = {str(k): safe_pickle.plain(v) for k, v in data.items()}
    except Exception as e:  # noqa: BLE001  (a malformed chumpy / sparse record)
        raise InputError(path, f"cannot read body model file ({type(e).__name__}: {e})") from None
    validate_smpl_dict(data, path)
    return data


def _array(data: dict[str, Any], key: str, path: Path | None) -> np.ndarray:
    if key not in data:
        raise InputError(path, "missing key", field=key)
    value = data[key]
    sparse = sys.modules.get("scipy.sparse")  # a scipy sparse matrix exists only if scipy is loaded
    if sparse is not None and sparse.issparse(value):
        value = value.toarray()
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001
        raise InputError(path, f"not an array ({type(value).__name__})", field=key) from None
    if arr.dtype == object:
        raise InputError(path, f"not a numeric array ({type(value).__name__})", field=key)
    return arr


def validate_smpl_dict(data: dict[str, Any], path: str | Path | None = None) -> None:
    """Check keys, shapes and value ranges of a SMPL-layout dict.

    Raises:
        InputError: naming ``path`` and the offending key.
    """
    p = None if path is None else Path(path)
    v = _array(data, "v_template", p)
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 3:
        raise InputError(p, f"expected shape (N, 3), got {v.shape}", field="v_template")
    if not np.issubdtype(v.dtype, np.number) or not np.all(np.isfinite(v)):
        raise InputError(p, "values must be finite numbers", field="v_template")
    n = v.shape[0]
    sd = _array(data, "shapedirs", p)
    if sd.ndim != 3 or sd.shape[:2] != (n, 3) or sd.shape[2] < 1:
        raise InputError(p, f"expected shape ({n}, 3, K>=1), got {sd.shape}", field="shapedirs")
    pd = _array(data, "posedirs", p)
    if pd.ndim != 3 or pd.shape != (n, 3, NUM_POSE_BASIS):
        raise InputError(p, f"expected shape ({n}, 3, {NUM_POSE_BASIS}), got {pd.shape}", field="posedirs")
    jr = _array(data, "J_regressor", p)
    if jr.shape != (NUM_SMPL_JOINTS, n):
        raise InputError(p, f"expected shape ({NUM_SMPL_JOINTS}, {n}), got {jr.shape}", field="J_regressor")
    w = _array(data, "weights", p)
    if w.shape != (n, NUM_SMPL_JOINTS):
        raise InputError(p, f"expected shape ({n}, {NUM_SMPL_JOINTS}), got {w.shape}", field="weights")
    kt = _array(data, "kintree_table", p)
    if kt.shape != (2, NUM_SMPL_JOINTS):
        raise InputError(p, f"expected shape (2, {NUM_SMPL_JOINTS}), got {kt.shape}", field="kintree_table")
    parents = kt[0].astype(np.int64)
    parents[0] = -1
    if np.any(parents[1:] < 0) or np.any(parents[1:] >= np.arange(1, NUM_SMPL_JOINTS)):
        raise InputError(p, "parents must precede their children", field="kintree_table")
    f = _array(data, "f", p)
    if f.ndim != 2 or f.shape[1] != 3 or f.shape[0] < 1 or not np.issubdtype(f.dtype, np.integer):
        raise InputError(p, f"expected integer shape (F, 3), got {f.dtype} {f.shape}", field="f")
    if f.min() < 0 or f.max() >= n:
        raise InputError(p, f"vertex index out of range [0, {n})", field="f")
    vid = data.get("vertex_ids")
    if vid is not None:
        if not isinstance(vid, dict):
            raise InputError(p, "expected a dict name -> vertex index", field="vertex_ids")
        for k, i in vid.items():
            if not (0 <= int(i) < n):
                raise InputError(p, f"{k}={i} out of range [0, {n})", field="vertex_ids")


def resolve_model_file(path: str | Path, gender: str = "neutral") -> Path:
    """The model file for ``path``: the file itself, or, for a folder, its SMPL file of ``gender``.

    A folder may hold ``SMPL_NEUTRAL/MALE/FEMALE.pkl|.npz`` (the smplx layout, also under a
    ``smpl/`` subfolder) or the original release names (``basicmodel_neutral_lbs_10_207_0_*.pkl``,
    ``basicModel_m_...``, ``basicModel_f_...``).

    Raises:
        InputError: unknown gender, missing path, or no model of that gender in the folder.
    """
    path = Path(path)
    g = gender.lower()
    if g not in GENDERS:
        raise InputError(path, f"gender must be one of {', '.join(GENDERS)}, got {gender!r}", field="gender")
    if path.is_file():
        return path
    if not path.exists():
        raise InputError(path, "body model path not found")
    for folder in (path, path / "smpl"):
        for ext in (".pkl", ".npz"):
            cand = folder / f"SMPL_{g.upper()}{ext}"
            if cand.is_file():
                return cand
    short = {"neutral": ("neutral",), "male": ("m", "male"), "female": ("f", "female")}[g]
    for cand in sorted(path.iterdir()):
        name = cand.name.lower()
        if cand.suffix.lower() in (".pkl", ".npz") and name.startswith("basicmodel_"):
            tag = name[len("basicmodel_") :].split("_", 1)[0]
            if tag in short:
                return cand
    raise InputError(path, f"no SMPL_{g.upper()}.pkl/.npz (or basicmodel_*) file in this folder", field=g)
