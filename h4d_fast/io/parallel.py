"""Many small files, read and written fast: forked writers and a pool of worker processes.

A Harmony4D export is ~25,000 small ``.npy`` files for 600 frames x 20 cameras. Each write is a
serialisation (holds the GIL) plus three metadata syscalls (create the temporary, write, rename).
Threads make it slower, not faster: measured on a 16-core GPU host, 24,000 atomic writes took
4.2 s on one thread, 11-15 s on 8-32 threads (GIL hand-offs), and 0.5 s on 16 forked processes.
So bulk writes run in forked worker processes on Linux (the payload is inherited through
``fork``, nothing is pickled but chunk bounds), and in the calling thread elsewhere or for small
jobs.

The children only serialise numpy data and write files: no torch, no CUDA, no OpenMP, so forking
a process that holds a CUDA context or thread pools is safe for them.

Forking costs more the bigger the parent is (its page tables are copied): a process holding torch,
a CUDA context and a fitted sequence pays that per child, per call. :class:`IOPool` avoids it:
worker processes started once per process from a small ``forkserver`` (a fresh interpreter that
imports numpy and the torch-free readers and writers of :mod:`h4d_fast.io`), then reused for every
capture. Two pools, so that a capture's background writes never queue in front of the next
capture's load: :func:`read_pool` (parsing detection files, latency-critical) and
:func:`write_pool` (per-frame output files, in the background). Their workers exit when the
process that started them does, however it ends (then the forkserver exits too). ``H4D_IO_WORKERS`` sets the number of workers per pool (``0``: no pool, everything
in the calling process).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import types
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
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


# ----------------------------------------------------------------------------- worker pools
#: modules the forkserver imports once, so that each worker starts with them loaded (all torch-free)
POOL_PRELOAD = ("numpy", "h4d_fast.io.detection_batch", "h4d_fast.io.frame_files")


def pool_workers() -> int:
    """Workers per pool: ``H4D_IO_WORKERS`` when set (``0`` disables the pools), else
    :func:`default_processes`."""
    env = os.environ.get("H4D_IO_WORKERS", "").strip()
    if env:
        try:
            return max(0, int(env))
        except ValueError:
            pass
    return default_processes()


_OWNER = 0  # in a pool worker: the pid of the process that owns the pool


def pool_owner() -> int:
    """In a pool worker: the pid of the process that owns its pool; elsewhere 0."""
    return _OWNER


def _worker_init(owner: int, nice: int = 0) -> None:
    """In each pool worker: exit when the process that owns the pool does (killed included), leave
    Ctrl-C to the owner (it shuts the pool down), and lower its own priority by ``nice``.

    multiprocessing alone would leave the workers running after a SIGKILL or SIGTERM of the owner:
    each holds both ends of its task queue's pipe (so it never reads EOF) and the forkserver stays
    up while a worker lives. So a thread waits for the owner's exit (a pidfd on Linux, else a 1 s
    poll) and ends the worker."""
    global _OWNER
    _OWNER = owner
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if nice:
        try:
            os.nice(nice)
        except OSError:  # pragma: no cover - a platform without priorities
            pass
    threading.Thread(target=_exit_with, args=(owner,), name="h4d-owner-watch", daemon=True).start()


def _exit_with(owner: int) -> None:
    try:
        fd = os.pidfd_open(owner)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        import select

        select.select([fd], [], [])  # readable once the owner has exited
        os._exit(0)
    import time

    while True:
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass
        time.sleep(1.0)


def _noop(x: int) -> int:
    return x


def _start_forkserver(ctx: Any) -> None:
    """Start the forkserver (if not running) so that it imports :data:`POOL_PRELOAD` from the same
    place as this process: it is a fresh interpreter that gets the environment, not ``sys.path``,
    so the folder holding this ``h4d_fast`` goes first on its ``PYTHONPATH``."""
    from multiprocessing import forkserver

    srv = forkserver._forkserver
    if getattr(srv, "_forkserver_pid", None) is not None:
        return
    try:
        ctx.set_forkserver_preload(list(POOL_PRELOAD))
    except Exception:  # pragma: no cover - preload is an optimisation
        pass
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = here + (os.pathsep + old if old else "")
    try:
        srv.ensure_running()
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@contextlib.contextmanager
def _no_main_module():
    """While workers start: a ``__main__`` without a file or module name, so that multiprocessing
    does not re-import the caller's main script in them (they only need this package's I/O
    functions). The real one is restored right after."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


class IOPool:
    """A lazily started pool of worker processes for the torch-free I/O functions of this package.

    ``submit(fn, *args)`` returns a :class:`~concurrent.futures.Future`; ``fn`` must be a module-level
    function of a torch-free module (it is pickled by name). The pool is created on first use (or by
    :meth:`start`, which returns at once and spawns the workers from a thread) and re-created after
    a fork or after a worker died. :meth:`usable` is False where no pool can run (not Linux, inside
    a daemonic process, ``H4D_IO_WORKERS=0``); callers then do the work themselves.
    """

    def __init__(self, name: str, nice: int = 0):
        self.name = name
        self.nice = int(nice)  # added to each worker's niceness (see write_pool)
        self._ex: ProcessPoolExecutor | None = None
        self._pid = 0
        self._n = 0
        self._lock = threading.Lock()

    @property
    def workers(self) -> int:
        return self._n if self._ex is not None and self._pid == os.getpid() else pool_workers()

    def usable(self) -> bool:
        return (pool_workers() > 0 and sys.platform.startswith("linux") and not mp.current_process().daemon
                and "forkserver" in mp.get_all_start_methods())

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._ex is None or self._pid != os.getpid():
                ctx = mp.get_context("forkserver")
                _start_forkserver(ctx)
                self._n = max(1, pool_workers())
                ex = ProcessPoolExecutor(max_workers=self._n, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(), self.nice))
                # every worker now, with no main module to re-import: the caller's script (the Python
                # API used from a script without a __main__ guard) must not run again in the workers
                with _no_main_module():
                    launch = getattr(ex, "_launch_processes", None)
                    if launch is not None:
                        launch()
                    else:  # pragma: no cover - other Python versions: start them with no-op tasks
                        for f in [ex.submit(_noop, i) for i in range(self._n)]:
                            f.result()
                self._ex, self._pid = ex, os.getpid()
            return self._ex

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        try:
            return self._executor().submit(fn, *args)
        except BrokenProcessPool:  # a worker died (killed): start a fresh pool once
            self.shutdown(wait=False)
            return self._executor().submit(fn, *args)

    def start(self) -> None:
        """Spawn the workers in the background (a daemon thread): the first real task then finds
        them running. Does nothing where the pool is not usable."""
        if not self.usable() or (self._ex is not None and self._pid == os.getpid()):
            return

        def warm() -> None:
            try:
                ex = self._executor()
                for f in [ex.submit(_noop, i) for i in range(self._n)]:
                    f.result()
            except Exception:  # noqa: BLE001 - a failed warm-up surfaces on first real use
                pass

        threading.Thread(target=warm, name=f"h4d-{self.name}-pool-start", daemon=True).start()

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            ex, self._ex = self._ex, None
        if ex is not None:
            ex.shutdown(wait=wait, cancel_futures=not wait)


_POOLS: dict[str, IOPool] = {}


def read_pool() -> IOPool:
    """The pool that parses input files (a capture's load)."""
    return _POOLS.setdefault("read", IOPool("read"))


#: niceness added to the background writers: they yield the cores to the process that computes (a
#: GPU fit's launch-bound loop, the export's contact kernel; the next capture in run-many) and take
#: whatever is left, all of it once the computing process waits for them
WRITER_NICE = 10


def write_pool() -> IOPool:
    """The pool that writes per-frame output files in the background (at a lower priority,
    :data:`WRITER_NICE`)."""
    return _POOLS.setdefault("write", IOPool("write", nice=WRITER_NICE))


def start_pools() -> None:
    """Start both pools in the background (an ``h4d run`` process does it first thing, so that
    the workers start while torch is being imported)."""
    read_pool().start()
    write_pool().start()


def shutdown_pools(wait: bool = True) -> None:
    for p in _POOLS.values():
        p.shutdown(wait=wait)


def shards(n: int, parts: int, min_size: int = 1) -> list[tuple[int, int]]:
    """``[lo, hi)`` bounds splitting ``range(n)`` into at most ``parts`` contiguous near-equal
    pieces of at least ``min_size`` items (the last may be shorter)."""
    if n <= 0:
        return []
    k = max(1, min(parts, n // max(1, min_size)))
    size = -(-n // k)
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)]
