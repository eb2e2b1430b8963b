"""Atomic file writes: write beside the target, fsync, rename. A reader never sees half a file.

The temporary file (``mkstemp``: mode 0600) gets the mode a plain ``open`` would give before the
rename, ``0o666 & ~umask``: outputs follow the umask like any other program's.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import OutputError
from . import faults

_umask: int | None = None
_umask_lock = threading.Lock()


def file_mode() -> int:
    """``0o666 & ~umask``: the mode of a new file. The umask is read once: from ``/proc/self/status``
    where Linux has it (no change to the process), else by setting and restoring it under a lock."""
    global _umask
    if _umask is None:
        with _umask_lock:
            if _umask is None:
                _umask = _read_umask()
    return 0o666 & ~_umask


def _read_umask() -> int:
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, file_mode())
        finally:
            os.close(fd)
    except OSError as e:
        raise OutputError(path.parent, f"cannot write here ({e.strerror or e})") from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        faults.point(f"renaming:{path.name}", path)  # a test hook (off unless H4D_FAULT is set)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # what atomic_path's mkstemp names look like


def remove_stale_temp(folder: str | Path, recursive: bool = True) -> int:
    """Remove the temporary files of :func:`atomic_path` that a killed writer left in ``folder``
    (and its subfolders when ``recursive``). Call it only while no other process writes there
    (e.g. under the output folder's lock). Returns how many were removed."""
    n = 0
    for dirpath, dirnames, files in os.walk(folder):
        for name in files:
            if _TEMP.match(name):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
        if not recursive:
            dirnames[:] = []
    return n


def write_bytes(path: str | Path, data: bytes, fsync: bool = False) -> None:
    """Write ``data`` so that readers see the old file or the whole new one, never a part.

    ``fsync=True`` also forces the bytes to disk before the rename (durability across a power
    loss); the rename alone already gives atomicity for other processes.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_bytes_in(folder: str, name: str, data: bytes) -> None:
    """:func:`write_bytes` for the many small files one writer puts into a folder it has created.

    The same guarantee (a temporary file beside the target, renamed onto it) at about a third of
    the system calls: no folder check, and the temporary file is created by one ``open`` with mode
    ``0o666`` (the kernel applies the umask: no ``fchmod``). Its name carries this process's id
    instead of ``mkstemp``'s random part; two writers of one file would need two runs on one output
    folder, which the run lock prevents. Stale temporary files match :data:`_TEMP` like
    ``mkstemp``'s.
    """
    path = os.path.join(folder, name)
    tmp = os.path.join(folder, f".{name}.p{os.getpid() % 10_000_000:07d}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        raise OutputError(folder, f"cannot write here ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        faults.point(f"renaming:{name}", path)  # a test hook (off unless H4D_FAULT is set)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def npy_bytes(obj: Any) -> bytes:
    """The ``.npy`` bytes of an array, or (pickled) of a dict/list of arrays as the Harmony4D files hold."""
    buf = io.BytesIO()
    if isinstance(obj, np.ndarray):
        np.save(buf, obj, allow_pickle=False)
    else:
        np.save(buf, np.asarray(obj, dtype=object) if not isinstance(obj, dict) else obj, allow_pickle=True)
    return buf.getvalue()


def write_npy(path: str | Path, obj: Any) -> None:
    """Save an array, or (pickled) a dict/list of arrays as the Harmony4D files do."""
    write_bytes(path, npy_bytes(obj))


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """An uncompressed ``.npz`` (what ``np.savez`` writes, readable by ``np.load``), streamed into
    the temporary file: each array's bytes go to the file straight from its buffer (a sequence's
    meshes are ~200 MB: no in-memory copy of the archive)."""
    import zipfile

    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, value in arrays.items():
                a = np.asanyarray(value)
                with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                    if a.dtype.hasobject or type(a) is not np.ndarray:
                        np.lib.format.write_array(f, a, allow_pickle=a.dtype.hasobject)
                        continue
                    if not (a.flags.c_contiguous or a.flags.f_contiguous):
                        a = np.ascontiguousarray(a)
                    header = np.lib.format.header_data_from_array_1_0(a)  # fortran_order when F- but not C-contiguous
                    if len(repr(header)) > 65000:  # very many fields: the 1.0 header's size field is 16-bit
                        np.lib.format.write_array_header_2_0(f, header)
                    else:
                        np.lib.format.write_array_header_1_0(f, header)
                    if a.size:  # the raw buffer in memory order (= the file's order for either layout)
                        f.write(memoryview(a.T if header["fortran_order"] else a).cast("B"))


def write_pickle(path: str | Path, obj: Any) -> None:
    write_bytes(path, pickle.dumps(obj, protocol=4))
