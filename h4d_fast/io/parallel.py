"""Many small files, written fast.

A Harmony4D export is ~25,000 small ``.npy`` files for 600 frames x 20 cameras. Each write is a
serialisation (holds the GIL) plus three metadata syscalls (create the temporary, write, rename).
Threads make it slower, not faster: measured on a 16-core GPU host, 24,000 atomic writes took
4.2 s on one thread, 11-15 s on 8-32 threads (GIL hand-offs), and 0.5 s on 16 forked processes.
So bulk writes run in forked worker processes on Linux (the payload is inherited through
``fork``, nothing is pickled but chunk bounds), and in the calling thread elsewhere or for small
jobs.

The children only serialise numpy data and write files: no torch, no CUDA, no OpenMP, so forking
a process that holds a CUDA context or thread pools is safe for them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

from ..errors import OutputError

T = TypeVar("T")

#: below this many items the work runs in the calling process (a pool costs ~10-50 ms to start)
MIN_ITEMS_FOR_PROCESSES = 1000

_JOB: tuple[Callable[[Any], None], Sequence[Any]] | None = None  # inherited by the forked children


def _run_chunk(bounds: tuple[int, int]) -> tuple[int, str | None, str | None]:
    """In a child: apply the inherited ``fn`` to ``items[lo:hi]``; report the first failure as text
    (exceptions of this package do not all pickle)."""
    assert _JOB is not None
    fn, items = _JOB
    lo, hi = bounds
    for i in range(lo, hi):
        try:
            fn(items[i])
        except Exception as e:  # noqa: BLE001 - sent back to the parent, raised there
            path = getattr(e, "path", None)
            return i, str(path) if path is not None else None, f"{type(e).__name__}: {e}"
    return hi, None, None


def default_processes() -> int:
    """Worker processes for :func:`for_each_file`: the CPUs this process may use, at most 16."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(16, n))


def for_each_file(fn: Callable[[T], None], items: Sequence[T], processes: int | None = None) -> None:
    """Call ``fn(item)`` for every item for its side effect (writing one file), in forked processes.

    Args:
        fn: writes one file; any callable (closures included: nothing is pickled).
        items: the work list; ``fn`` must not depend on the order.
        processes: worker processes (default :func:`default_processes`); ``1`` runs everything here.
    Raises:
        The first exception of ``fn`` as itself when run here; from a child as
        :class:`~h4d_fast.errors.OutputError` naming the file (or the item) and the original error.
    """
    global _JOB
    items = list(items)
    n = default_processes() if processes is None else max(1, int(processes))
    n = min(n, max(1, len(items) // 256))
    # a daemonic process (a multiprocessing.Pool worker) may not have children: write in-process
    if n <= 1 or len(items) < MIN_ITEMS_FOR_PROCESSES or not sys.platform.startswith("linux") or mp.current_process().daemon:
        for x in items:
            fn(x)
        return
    size = -(-len(items) // (4 * n))
    chunks = [(lo, min(len(items), lo + size)) for lo in range(0, len(items), size)]
    _JOB = (fn, items)
    try:
        with warnings.catch_warnings():
            # Python >= 3.12 warns about fork() in a multi-threaded process; the children run no
            # threads' code (see the module docstring)
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*fork.*")
            with ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("fork")) as ex:
                results = list(ex.map(_run_chunk, chunks))
    finally:
        _JOB = None
    for i, path, err in results:
        if err is not None:
            raise OutputError(path or f"<item {i}>", err)
