"""Unpickling input files without ever running code.

Input files are data. The Harmony4D layout stores per-frame dicts as pickled ``.npy`` object
arrays and SMPL ships pickled ``.pkl`` files, so the formats must stay readable, but a pickle may
name any importable callable (``os.system``, ``builtins.eval``, ...) and the standard unpickler
calls it. :func:`loads` / :func:`load` resolve a global only from a short allow-list of what the
formats need and refuse everything else before anything is called:

* always: numpy arrays, dtypes and scalars (the reconstructors ``np.save`` writes), dict, list,
  tuple, str, bytes, numbers, bool, None, set / frozenset, complex, ``collections.OrderedDict``;
* with ``smpl=True``, also what the official SMPL pickles hold: chumpy arrays and scipy sparse
  matrices. Their classes are never imported: stand-ins record the pickled state and
  :func:`plain` turns them into plain numpy arrays (sparse matrices into dense ones).

This is the one unpickler of the package: every reader of a pickled input goes through it.
"""

from __future__ import annotations

import collections
import io
import pickle
from typing import IO, Any

import numpy as np

__all__ = ["UnsafePickleError", "load", "loads", "plain"]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names something outside the allow-list (it would have run code)."""


def _numpy_attr(*names: str) -> Any:
    """``numpy._core.multiarray._reconstruct`` (numpy 2) or ``numpy.core...`` (numpy 1)."""
    for modname in ("numpy._core", "numpy.core"):
        try:
            obj: Any = __import__(modname, fromlist=["_"])
        except ImportError:
            continue
        try:
            for n in names:
                obj = getattr(obj, n)
            return obj
        except AttributeError:
            continue
    raise ImportError(".".join(names))  # pragma: no cover - every numpy has them


def _codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (latin-1 only: no codec lookup)."""
    if not isinstance(obj, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise UnsafePickleError(f"_codecs.encode is accepted only for latin-1 text, not {encoding!r}")
    return obj.encode("latin-1", errors)


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` restricted to the stand-in classes (chumpy / sparse pickles)."""
    if cls not in _STAND_INS or base is not object:
        raise UnsafePickleError(f"copyreg._reconstructor of {getattr(cls, '__name__', cls)!r} is not accepted")
    return object.__new__(cls)


class _ChumpyStandIn:
    """Stands in for a chumpy object (``chumpy.ch.Ch``, ``chumpy.reordering.Select``, ...)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _SparseStandIn:
    """Stands in for a scipy sparse matrix / array while unpickling; :func:`plain` densifies it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None
        self.fmt = ""

    def __setstate__(self, state: Any) -> None:
        self.state = state


_SPARSE_CLASSES: dict[str, type] = {}


def _sparse_class(name: str) -> type:
    """One stand-in subclass per scipy sparse format (``csc_matrix`` -> format ``csc``)."""
    if name not in _SPARSE_CLASSES:
        fmt = name.split("_")[0]
        _SPARSE_CLASSES[name] = type(f"_Sparse_{name}", (_SparseStandIn,), {"fmt": fmt})
    return _SPARSE_CLASSES[name]


_SPARSE_NAMES = tuple(f"{f}_{k}" for f in ("csc", "csr", "coo") for k in ("matrix", "array"))
_STAND_INS = (_ChumpyStandIn, *(_sparse_class(n) for n in _SPARSE_NAMES))

_ALWAYS: dict[tuple[str, str], Any] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALWAYS[(_mod, "_reconstruct")] = _numpy_attr("multiarray", "_reconstruct")
    _ALWAYS[(_mod, "scalar")] = _numpy_attr("multiarray", "scalar")
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALWAYS[(_mod, "_frombuffer")] = _numpy_attr("numeric", "_frombuffer")
_ALWAYS.update({
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs_encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
})
for _mod in ("builtins", "__builtin__"):
    for _name, _obj in (("set", set), ("frozenset", frozenset), ("complex", complex), ("object", object)):
        _ALWAYS[(_mod, _name)] = _obj
for _name, _obj in vars(np.dtypes).items() if hasattr(np, "dtypes") else ():
    if isinstance(_obj, type) and issubclass(_obj, np.dtype):
        _ALWAYS[("numpy.dtypes", _name)] = _obj  # numpy 2 pickles dtypes by their class

_SMPL: dict[tuple[str, str], Any] = {}
for _mod in ("copy_reg", "copyreg"):
    _SMPL[(_mod, "_reconstructor")] = _reconstructor


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], smpl: bool, encoding: str) -> None:
        super().__init__(file, encoding=encoding)
        self.smpl = smpl

    def find_class(self, module: str, name: str) -> Any:
        found = _ALWAYS.get((module, name))
        if found is None and self.smpl:
            found = _SMPL.get((module, name))
            if found is None and (module == "chumpy" or module.startswith("chumpy.")):
                found = _ChumpyStandIn
            elif found is None and module.startswith("scipy.sparse") and name in _SPARSE_NAMES:
                found = _sparse_class(name)
        if found is None:
            raise UnsafePickleError(
                f"refused to load {module}.{name}: input files are data, and only numpy arrays, dicts, "
                "lists, strings and numbers are accepted"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("persistent ids are not accepted")


def load(file: IO[bytes], *, smpl: bool = False, encoding: str = "latin1") -> Any:
    """Unpickle from a binary file object with the allow-list (see the module docstring).

    Args:
        file: an open binary file.
        smpl: also accept chumpy arrays and scipy sparse matrices (as stand-ins; see :func:`plain`).
        encoding: how Python 2 ``str`` objects are decoded (``latin1`` reads numpy's py2 pickles).
    Raises:
        UnsafePickleError: the pickle names a global outside the allow-list (nothing was called).
        pickle.UnpicklingError, EOFError, ValueError, ...: a malformed pickle.
    """
    return _RestrictedUnpickler(file, smpl, encoding).load()


def loads(data: bytes | bytearray | memoryview, *, smpl: bool = False, encoding: str = "latin1") -> Any:
    """:func:`load` from bytes."""
    return load(io.BytesIO(data), smpl=smpl, encoding=encoding)


def plain(value: Any) -> Any:
    """Turn the stand-ins that ``smpl=True`` produced into numpy arrays, recursively.

    A chumpy ``Ch`` becomes its value ``x``; a chumpy ``Select`` the selected entries of its
    source; a sparse matrix a dense array. Dicts, lists and tuples are rebuilt with plain values.
    """
    if isinstance(value, _ChumpyStandIn):
        return _chumpy_value(value.state)
    if isinstance(value, _SparseStandIn):
        return _sparse_dense(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def _chumpy_value(state: Any) -> np.ndarray | None:
    if not isinstance(state, dict):
        return None
    if "x" in state:
        return np.asarray(plain(state["x"]))
    if "a" in state and "idxs" in state:  # chumpy.reordering.Select
        src = np.asarray(plain(state["a"]))
        out = src.reshape(-1)[np.asarray(state["idxs"], dtype=np.int64).reshape(-1)]
        shape = state.get("preferred_shape")
        return out.reshape(tuple(int(s) for s in shape)) if shape is not None else out
    return None


def _sparse_dense(m: _SparseStandIn) -> np.ndarray:
    """Dense array from a pickled scipy sparse matrix's state (csc / csr / coo), built with numpy."""
    st = m.state if isinstance(m.state, dict) else {}
    shape = st.get("_shape", st.get("shape"))
    if shape is None or len(shape) != 2:
        raise ValueError(f"a pickled {m.fmt} sparse matrix without a 2-d shape")
    rows, cols = int(shape[0]), int(shape[1])
    data = np.asarray(st.get("data"))
    out = np.zeros((rows, cols), dtype=data.dtype if data.dtype != object else np.float64)
    if m.fmt in ("csc", "csr"):
        indices = np.asarray(st["indices"], dtype=np.int64)
        indptr = np.asarray(st["indptr"], dtype=np.int64)
        major = cols if m.fmt == "csc" else rows
        if indptr.shape != (major + 1,) or indices.shape != data.shape or indptr[-1] != data.size:
            raise ValueError(f"inconsistent {m.fmt} sparse matrix")
        counts = np.diff(indptr)
        if (counts < 0).any():
            raise ValueError(f"inconsistent {m.fmt} sparse matrix")
        major_idx = np.repeat(np.arange(major), counts)
        r, c = (indices, major_idx) if m.fmt == "csc" else (major_idx, indices)
    else:  # coo
        if "coords" in st:
            r, c = (np.asarray(x, dtype=np.int64) for x in st["coords"])
        else:
            r, c = np.asarray(st["row"], dtype=np.int64), np.asarray(st["col"], dtype=np.int64)
    if r.size and (r.min() < 0 or r.max() >= rows or c.min() < 0 or c.max() >= cols):
        raise ValueError(f"{m.fmt} sparse matrix index out of range")
    np.add.at(out, (r, c), data)
    return out
