"""``h4d run-many``: every sequence folder under a root, resumable, pipelined, on one or many GPUs.

Layout. A sequence folder is one with ``colmap/workplace`` and ``processed_data/poses2d``;
``ROOT/<rel>`` is written to ``OUT/<rel>`` (``ROOT`` itself a sequence: ``OUT/<ROOT name>``).

Atomic outputs. A sequence is computed into ``OUT/.h4d-partial/<rel>`` (the driver's stage caches
live there too) and, once complete, the marker ``.h4d/DONE`` (config hash + input fingerprint) is
written atomically as the last file and the folder is renamed to ``OUT/<rel>``. A reader of
``OUT/<rel>`` therefore sees nothing, the previous complete result, or the new complete result.

Resume. A later invocation skips a sequence whose ``OUT/<rel>/.h4d/DONE`` matches the current
config hash and input fingerprint (unless ``--force``). A partial folder left by an interrupted or
killed invocation is adopted as it is, so its stage caches (keyed by content, see ``driver``) are
reused. That is safe because the whole invocation holds an exclusive lock on
``OUT/.run-many.lock`` (``flock``, released by the kernel when the process dies): a partial folder
found under the lock can only belong to a dead run, whatever its pid or host. A failed sequence
keeps its partial folder only when it holds stage caches (so the retry resumes), else it is removed.
A stale finished output (config or inputs changed) seeds the partial folder with its stage caches.
``--force`` discards both and recomputes every stage. A recompute that fails leaves the previous
complete output in place (its marker no longer matches, so the next invocation tries again).

The per-sequence work is :func:`process_loaded`: ``run_sequence`` given the prefetched capture, so
every stage the driver runs (keypoints, fit, export, ...) runs here unchanged. In the pipelined
loop a capture's per-frame output files are written by background processes while the next
capture computes; a :class:`Committer` thread waits for them, then writes the marker and moves
the folder into place (at most :data:`MAX_UNCOMMITTED` captures wait so).

Execution modes (same per-sequence work, :func:`process_job`):

* default: in this process. A prefetch thread keeps the next ``--prefetch`` captures loaded
  (fingerprint, skip check, ``read_sequence``: CPU, threads; ``--loader process`` does the decode in
  a helper process instead, away from the GIL) while the main thread runs the compute stages, so
  the GPU does not idle between sequences.
* ``--devices 0,1,...`` (or ``cpu,cpu``): one spawned worker process per entry, each bound to its
  device and running the same pipelined loop; the parent hands out sequences one at a time as
  workers ask (a shared work queue), so a fast device takes more. A worker that dies has its
  running sequence reported as failed and its prefetched ones handed to the others.
* ``--ray`` / ``--ray-address ADDR``: one Ray task per sequence (1 GPU each when the cluster has
  GPUs, else 1 CPU), transient errors retried, deterministic input errors not.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fnmatch
import hashlib
import json
import os
import queue
import shutil
import socket
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .. import __version__
from ..config import Config
from ..errors import H4DError, InputError, OutputError
from ..io import atomic

PARTIAL_DIR = ".h4d-partial"
MAX_UNCOMMITTED = 2  # captures whose per-frame files are still being written while the next computes
LOCK_FILE = ".run-many.lock"
SUMMARY_FILE = "run_many.json"
MARKER = "DONE"
CACHE_DIR = ".h4d"  # the driver's cache folder inside an output folder
RUN_ID_FILE = "RUN_ID"
# folders that never contain a sequence folder (pruned from the walk: they hold thousands of files)
_PRUNE = {"exo", "processed_data", "colmap", "ground_truth", "images", "__pycache__"}


class RayUnavailable(H4DError):
    pass


class TransientError(Exception):
    """A failure worth retrying (I/O, out of memory, CUDA runtime): wraps the one-line message."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __reduce__(self):
        return (TransientError, (self.message,))


class RelayedError(H4DError):
    """A deterministic error from another process, as its one-line message (picklable, unlike
    :class:`InputError` whose constructor takes the path and the problem)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __reduce__(self):
        return (RelayedError, (self.message,))


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Job:
    index: int
    rel: str  # relative path (posix) = name in the summary
    seq: Path  # absolute input folder
    out: Path  # absolute final output folder
    partial: Path  # absolute folder the work happens in


@dataclass
class JobResult:
    index: int
    sequence: str
    status: str  # done | skipped | failed
    seconds: float = 0.0
    error: str = ""
    load_seconds: float = 0.0
    device: str = ""
    note: str = ""  # why it was (re)computed or skipped
    stages: dict = field(default_factory=dict)
    finished_unix: float = 0.0  # when the parent learned of it (time.time(); throughput over a window)

    def line(self) -> str:
        if self.status == "failed":
            return f"{self.sequence}: failed ({self.seconds:.1f} s): {self.error}"
        if self.status == "skipped":
            return f"{self.sequence}: skipped ({self.note or 'finished earlier'})"
        extra = f", load {self.load_seconds:.1f} s" if self.load_seconds else ""
        dev = f" on {self.device}" if self.device else ""
        return f"{self.sequence}: done ({self.seconds:.1f} s{extra}{dev})"


@dataclass
class Context:
    """What every worker needs (picklable: goes to worker processes and Ray tasks)."""

    cfg: Config
    cfg_hash: str
    force: bool
    run_id: str
    loader: str = "thread"  # thread | process (only the pipelined loop uses it)


@dataclass
class Prepared:
    job: Job
    fingerprint: str = ""
    capture: Any = None
    skip_note: str | None = None
    error: BaseException | None = None
    load_seconds: float = 0.0


# ----------------------------------------------------------------------------- discovery
def is_sequence(folder: Path) -> bool:
    return (folder / "colmap" / "workplace").is_dir() and (folder / "processed_data" / "poses2d").is_dir()


def discover(root: Path, out: Path, match: Sequence[str] = ()) -> tuple[list[Job], list[str]]:
    """All sequence folders under ``root`` (sorted by relative path) and the folders that look
    like half a sequence (only one of ``colmap/workplace`` / ``processed_data/poses2d``)."""
    root, out = Path(root).resolve(), Path(out).resolve()
    if not root.is_dir():
        raise InputError(root, "not a folder")
    for p in (out, *out.parents):
        if is_sequence(p):
            raise InputError(out, f"the output folder is inside the sequence folder {p} (choose an --out outside the sequences)")
    found: list[str] = []
    incomplete: list[str] = []
    if is_sequence(root):
        found.append(".")
    else:
        for dirpath, dirnames, _ in os.walk(root):
            d = Path(dirpath)
            if d == out:
                dirnames[:] = []
                continue
            keep = []
            for name in sorted(dirnames):
                sub = d / name
                if name.startswith(".") or name in _PRUNE or sub == out:
                    continue
                has_c, has_p = (sub / "colmap" / "workplace").is_dir(), (sub / "processed_data" / "poses2d").is_dir()
                if has_c and has_p:
                    found.append(sub.relative_to(root).as_posix())
                elif has_c or has_p:
                    incomplete.append(f"{sub.relative_to(root).as_posix()} (no {'processed_data/poses2d' if has_c else 'colmap/workplace'})")
                else:
                    keep.append(name)
            dirnames[:] = keep
    if match:
        found = [r for r in found if any(fnmatch.fnmatch(r, m) for m in match)]
    jobs = []
    for i, rel in enumerate(sorted(found)):
        seq = root if rel == "." else root / rel
        name = root.name if rel == "." else rel
        dst = out / name
        _check_disjoint(seq, dst)
        jobs.append(Job(i, name, seq, dst, out / PARTIAL_DIR / name))
    return jobs, sorted(incomplete)


def _check_disjoint(seq: Path, dst: Path) -> None:
    if seq == dst or seq in dst.parents or dst in seq.parents:
        raise InputError(dst, f"output folder overlaps the input sequence {seq} (choose an --out outside the sequences)")


# ----------------------------------------------------------------------------- markers and hashes
def config_hash(cfg: Config) -> str:
    """Hash of everything that changes results: the configuration (less run.progress / run.device,
    which a multi-device run sets per worker) and the package version (as the stage caches)."""
    d = cfg.to_dict()
    d["run"] = {k: v for k, v in d["run"].items() if k not in ("progress", "device")}
    blob = json.dumps({"version": __version__, "cfg": d}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_marker(folder: Path) -> dict | None:
    p = folder / CACHE_DIR / MARKER
    try:
        m = json.loads(p.read_text())
        return m if isinstance(m, dict) else None
    except (OSError, ValueError):
        return None


def skip_reason(job: Job, cfg_hash: str, fingerprint: str) -> tuple[bool, str]:
    """``(finished, why)``: whether ``OUT/<rel>`` is a finished output of these inputs and config."""
    if not job.out.exists():
        return False, "new"
    m = read_marker(job.out)
    if m is None:
        return False, "no DONE marker in the existing output"
    if m.get("config_hash") != cfg_hash:
        return False, "configuration changed"
    if m.get("input_fingerprint") != fingerprint:
        return False, "inputs changed"
    return True, "finished earlier"


# ----------------------------------------------------------------------------- output folders
class OutputLock:
    """Exclusive ``flock`` on ``OUT/.run-many.lock`` for the whole invocation."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> "OutputLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(self.path.parent, f"cannot write here ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            try:
                owner = self.path.read_text().strip()
            except OSError:
                owner = "?"
            raise OutputError(self.path.parent, f"another `h4d run-many` is writing here ({owner or 'unknown process'})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # releases the lock
            self.fd = None


def _has_stage_caches(folder: Path) -> bool:
    d = folder / CACHE_DIR
    return d.is_dir() and any(p.suffix == ".npz" for p in d.iterdir())


def _rmtree(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        with contextlib.suppress(OSError):
            p.unlink()


def _remove_empty_dirs(top: Path) -> None:
    """Remove ``top`` and the folders under it that are (then) empty (at the end of a run: no
    pruning while workers may be creating partial folders)."""
    if not top.is_dir():
        return
    for dirpath, _, _ in os.walk(top, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def setup_partial(job: Job, ctx: Context) -> Path:
    """The folder to compute ``job`` in: adopt a dead run's partial folder (its stage caches
    resume), or seed a new one with the caches of a stale finished output; ``--force`` starts
    empty (a retry inside the same invocation keeps what that invocation computed)."""
    part = job.partial
    id_file = part / CACHE_DIR / RUN_ID_FILE
    if part.exists():
        same_run = id_file.exists() and id_file.read_text().strip() == ctx.run_id
        if ctx.force and not same_run:
            _rmtree(part)
    if not part.exists() and not ctx.force and job.out.is_dir():
        src = job.out / CACHE_DIR
        if src.is_dir():
            (part / CACHE_DIR).mkdir(parents=True, exist_ok=True)
            for f in src.iterdir():
                if f.is_file() and f.name not in (MARKER, RUN_ID_FILE):
                    try:
                        os.link(f, part / CACHE_DIR / f.name)  # the driver replaces, never edits: safe
                    except OSError:
                        shutil.copy2(f, part / CACHE_DIR / f.name)
    (part / CACHE_DIR).mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (part / CACHE_DIR / MARKER).unlink()  # a run killed inside commit() left a finished copy
    atomic.write_text(id_file, ctx.run_id + "\n")
    return part


def commit(job: Job, marker: dict) -> None:
    """Write the DONE marker last, then move the partial folder into place."""
    part = job.partial
    with contextlib.suppress(FileNotFoundError):
        (part / CACHE_DIR / RUN_ID_FILE).unlink()
    atomic.write_json(part / CACHE_DIR / MARKER, marker)
    old = None
    if job.out.exists() or job.out.is_symlink():
        old = part.with_name(f"{part.name}.old-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        os.rename(job.out, old)
    job.out.parent.mkdir(parents=True, exist_ok=True)
    os.rename(part, job.out)
    if old is not None:
        _rmtree(old)


def discard_failed(job: Job) -> None:
    """After a failure: keep the partial folder only if it holds stage caches to resume from."""
    part = job.partial
    if part.exists() and not _has_stage_caches(part):
        _rmtree(part)


# ----------------------------------------------------------------------------- per-sequence work
def process_loaded(capture: Any, seq: Path, out: Path, cfg: Config, force: bool = False,
                   log: Callable[[str], None] | None = None, wait_files: bool = True) -> Any:
    """All pipeline stages on an already loaded capture, written into ``out`` (= ``run_sequence``
    without its load). The one place to point at the driver's entry point. ``wait_files=False``:
    the per-frame files may still be being written on return (call ``finish()`` on the result)."""
    from .driver import run_sequence

    return run_sequence(seq, out, cfg, force=force, log=log, capture=capture, wait_files=wait_files)


def _load(seq: Path) -> Any:
    from ..io.harmony4d import read_sequence

    return read_sequence(seq)


def prepare(job: Job, ctx: Context, load: Callable[[Path], Any] | None = None) -> Prepared:
    """Fingerprint, skip check and load (the part that runs ahead of the compute)."""
    from .driver import fingerprint_inputs

    t0 = time.perf_counter()
    pre = Prepared(job)
    try:
        pre.fingerprint = fingerprint_inputs(job.seq)
        if not ctx.force:
            done, why = skip_reason(job, ctx.cfg_hash, pre.fingerprint)
            if done:
                pre.skip_note = why
                return pre
        pre.capture = (load or _load)(job.seq)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - reported per sequence
        pre.error = e
    pre.load_seconds = time.perf_counter() - t0
    return pre


def one_line(e: BaseException) -> str:
    if isinstance(e, (TransientError, RelayedError)):
        return e.message
    if isinstance(e, H4DError):
        msg = str(e)
    else:
        msg = f"{type(e).__name__}: {e}"
    msg = " ".join(msg.split())  # one line
    return msg if len(msg) <= 400 else msg[:397] + "..."


def is_transient(e: BaseException) -> bool:
    """Worth a retry: I/O, memory, CUDA/runtime failures. Not: bad input (``H4DError``) or bugs."""
    if isinstance(e, H4DError):
        return False
    return isinstance(e, (OSError, MemoryError, RuntimeError, TimeoutError, ConnectionError, TransientError))


def compute(pre: Prepared, ctx: Context, device: str = "", raise_transient: bool = False,
            committer: "Committer | None" = None) -> JobResult | None:
    """Run the stages on a prepared sequence, commit it; failures become a ``failed`` result
    (``raise_transient``: transient ones are raised as :class:`TransientError` for a retry).

    With a ``committer`` the per-frame files are left to the background writers: the commit (and
    the result, through the committer's ``on_result``) comes once they are written, and this
    returns None as soon as the capture's compute is done.
    """
    job = pre.job
    if pre.skip_note is not None:
        return JobResult(job.index, job.rel, "skipped", note=pre.skip_note, device=device)
    t0 = time.perf_counter()

    def failed(e: BaseException) -> JobResult:
        pre.capture = None
        discard_failed(job)
        if raise_transient and is_transient(e):
            raise TransientError(one_line(e)) from None
        return JobResult(job.index, job.rel, "failed", time.perf_counter() - t0 + pre.load_seconds,
                         error=one_line(e), load_seconds=pre.load_seconds, device=device)

    try:
        if pre.error is not None:
            raise pre.error
        note = "forced" if ctx.force else skip_reason(job, ctx.cfg_hash, pre.fingerprint)[1]
        part = setup_partial(job, ctx)
        cfg = copy.deepcopy(ctx.cfg)
        cfg.run.progress = False
        res = process_loaded(pre.capture, job.seq, part, cfg, wait_files=committer is None)
        pre.capture = None
        secs = time.perf_counter() - t0
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001
        return failed(e)

    def settle() -> JobResult:
        try:
            if committer is not None:
                res.finish()  # the per-frame files, then timing.json / config.toml
            stages = {s.name: round(s.seconds, 4) for s in getattr(res, "stages", [])}
            commit(job, {
                "config_hash": ctx.cfg_hash,
                "input_fingerprint": pre.fingerprint,
                "h4d_version": __version__,
                "sequence": str(job.seq),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "seconds": round(secs, 3),
                "load_seconds": round(pre.load_seconds, 3),
                "device": device,
                "stages": stages,
            })
            return JobResult(job.index, job.rel, "done", secs, load_seconds=pre.load_seconds, device=device, note=note, stages=stages)
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # noqa: BLE001
            return failed(e)

    if committer is None:
        return settle()
    committer.submit(settle)
    return None


class Committer:
    """Commits captures whose per-frame files are still being written, in a thread, in order,
    and reports each result (``on_result``). ``submit`` blocks while :data:`MAX_UNCOMMITTED`
    captures are waiting, so a slow disk slows the compute down instead of piling up captures."""

    def __init__(self, on_result: Callable[[JobResult], None]):
        self.on_result = on_result
        self.q: queue.Queue = queue.Queue(maxsize=MAX_UNCOMMITTED)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="h4d-commit", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            settle = self.q.get()
            if settle is None:
                return
            try:
                self.on_result(settle())
            except BaseException as e:  # noqa: BLE001 - re-raised by close()
                self.error = self.error or e

    def submit(self, settle: Callable[[], JobResult]) -> None:
        self.q.put(settle)

    def close(self) -> None:
        """Wait until every submitted capture is committed and reported."""
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def process_job(job: Job, ctx: Context, device: str = "", raise_transient: bool = False) -> JobResult:
    """Load + compute one sequence (no overlap): what a Ray task runs."""
    return compute(prepare(job, ctx), ctx, device=device, raise_transient=raise_transient)


# ----------------------------------------------------------------------------- the pipelined loop
class _Loader:
    """Loads captures in this thread (``thread``) or in a helper process (``process``)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.pool = None
        if kind == "process":
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"))

    def __call__(self, seq: Path) -> Any:
        if self.pool is None:
            return _load(seq)
        ok, value = self.pool.submit(_load_relayed, seq).result()
        if not ok:
            raise value
        return value

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


def _load_relayed(seq: Path) -> tuple[bool, Any]:
    """In the loader process: ``(True, capture)`` or ``(False, picklable error)``."""
    try:
        return True, _load(seq)
    except Exception as e:  # noqa: BLE001
        return False, (TransientError(one_line(e)) if is_transient(e) else RelayedError(one_line(e)))


_END = object()


def run_pipelined(jobs: Iterable[Job], ctx: Context, prefetch: int = 1, device: str = "",
                  on_start: Callable[[Job], None] | None = None,
                  on_result: Callable[[JobResult], None] | None = None) -> list[JobResult]:
    """Compute in this thread while a prefetch thread loads up to ``prefetch`` sequences ahead.

    ``jobs`` is consumed by the prefetch thread only (it may block, e.g. on a work queue); at
    most ``prefetch + 1`` captures are in memory (the one computing and those loaded ahead).
    """
    on_start = on_start or (lambda j: None)
    on_result = on_result or (lambda r: None)
    results: list[JobResult] = []
    lock = threading.Lock()

    def report(r: JobResult) -> None:
        with lock:
            results.append(r)
        on_result(r)

    committer = Committer(report)
    try:
        _pipelined(iter(jobs), ctx, prefetch, device, on_start, report, committer)
    finally:
        committer.close()
    return results


def _pipelined(it: Iterator[Job], ctx: Context, prefetch: int, device: str, on_start: Callable[[Job], None],
               report: Callable[[JobResult], None], committer: "Committer") -> None:
    if prefetch <= 0:
        for job in it:
            on_start(job)
            r = compute(prepare(job, ctx), ctx, device=device, committer=committer)
            if r is not None:
                report(r)
        return

    loader = _Loader(ctx.loader)
    slots = threading.Semaphore(prefetch + 1)
    q: queue.Queue = queue.Queue()
    stop = threading.Event()

    def producer() -> None:
        try:
            while True:
                slots.acquire()
                if stop.is_set():
                    return
                job = next(it, None)
                if job is None:
                    return
                q.put(prepare(job, ctx, load=loader))
        except BaseException as e:  # noqa: BLE001 - handed to the compute thread
            q.put(e)
        finally:
            q.put(_END)

    t = threading.Thread(target=producer, name="h4d-prefetch", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            on_start(item.job)
            r = compute(item, ctx, device=device, committer=committer)
            del item
            slots.release()
            if r is not None:
                report(r)
    finally:
        stop.set()
        slots.release()
        loader.close()


# ----------------------------------------------------------------------------- multi-device
def parse_devices(spec: str) -> list[str]:
    """``"0,1"`` / ``"cuda:0,cuda:1"`` / ``"cpu,cpu"`` -> ``["cuda:0", "cuda:1"]`` / ``["cpu", "cpu"]``;
    ``ENTRY*N`` repeats an entry (``"0*5"``: five workers sharing GPU 0, which kept an H100 87.5 %
    busy on 600-frame captures where one worker leaves it idle during its CPU work)."""
    out = []
    for raw in spec.split(","):
        s = raw.strip().lower()
        if not s:
            continue
        if "*" in s:
            entry, _, times = s.partition("*")
            if not times.strip().isdigit() or int(times) < 1:
                raise InputError(None, f"device {raw!r}: the count after '*' must be a positive integer", field="--devices")
            out.extend(parse_devices(entry) * int(times))
            continue
        if s == "cpu":
            out.append("cpu")
        elif s.isdigit():
            out.append(f"cuda:{int(s)}")
        elif s.startswith("cuda:") and s[5:].isdigit():
            out.append(f"cuda:{int(s[5:])}")
        elif s == "cuda":
            out.append("cuda:0")
        else:
            raise InputError(None, f"device {raw!r} is not cpu, N or cuda:N", field="--devices")
    if not out:
        raise InputError(None, "no device given", field="--devices")
    cuda = [int(d[5:]) for d in out if d.startswith("cuda:")]
    if cuda:
        import torch

        n = torch.cuda.device_count()
        bad = [i for i in cuda if i >= n]
        if bad:
            raise InputError(None, f"cuda:{bad[0]} requested but {n} CUDA device(s) are visible", field="--devices")
    return out


def gpu_worker_settings(cfg: Config) -> Config:
    """What a GPU worker changes in its configuration (``cfg``, in place): the frame-sequential
    stages on the GPU too when ``run.sequential_device`` is ``auto`` (workers interleave their
    small kernels there; see :class:`~h4d_fast.config.RunConfig`). The warm-path benchmark uses
    the same settings."""
    if cfg.run.sequential_device == "auto":
        cfg.run.sequential_device = "same"
    return cfg


def _bind_device(device: str, cfg: Config, n_cpu_workers: int, n_workers: int = 1) -> str:
    """In a fresh worker process: make ``device`` the only one it uses; returns the torch device.

    CPU threads are shared: a CPU worker gets ``cores / n_cpu_workers`` torch threads, a GPU
    worker ``cores / n_workers`` (its frame-sequential stages run on the CPU, see
    ``run.sequential_device``; several workers on one host would otherwise oversubscribe it)."""
    if device == "cpu":
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(n_cpu_workers, 1)))
        cfg.run.device = "cpu"
        return "cpu"
    idx = int(device.split(":")[1])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    import torch

    if n_workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_workers))
    gpu_worker_settings(cfg)

    if not torch.cuda.is_initialized():
        phys = visible.split(",")[idx].strip() if visible else str(idx)
        os.environ["CUDA_VISIBLE_DEVICES"] = phys  # also binds CuPy / Triton to this GPU
        cfg.run.device = "cuda:0"
        torch.cuda.set_device(0)
    else:  # pragma: no cover
        cfg.run.device = device
        torch.cuda.set_device(idx)
    return cfg.run.device


def _device_worker(wid: int, device: str, ctx: Context, prefetch: int, n_cpu_workers: int,
                   req_q: Any, job_q: Any, n_workers: int = 1) -> None:
    """Worker process: bind the device, then pipelined loop over jobs handed out by the parent."""
    from ..io.parallel import start_pools

    # the host's cores are shared by the workers' load/write pools too
    os.environ.setdefault("H4D_IO_WORKERS", str(max(1, (os.cpu_count() or 1) // max(1, n_workers))))
    start_pools()  # spawned while this worker imports torch and binds its device
    try:
        _bind_device(device, ctx.cfg, n_cpu_workers, n_workers)
    except BaseException as e:  # noqa: BLE001
        req_q.put(("fatal", wid, f"{device}: {one_line(e)}"))
        return

    def jobs() -> Iterator[Job]:
        while True:
            req_q.put(("ready", wid))
            job = job_q.get()
            if job is None:
                return
            yield job

    try:
        run_pipelined(jobs(), ctx, prefetch=prefetch, device=device,
                      on_start=lambda j: req_q.put(("start", wid, j.index)),
                      on_result=lambda r: req_q.put(("result", wid, r)))
    except KeyboardInterrupt:
        return
    except BaseException as e:  # noqa: BLE001
        req_q.put(("fatal", wid, f"{device}: {one_line(e)}"))
        return
    req_q.put(("exit", wid))


def run_devices(jobs: list[Job], ctx: Context, devices: list[str], prefetch: int,
                report: Callable[[JobResult], None]) -> None:
    import multiprocessing as mp

    mpc = mp.get_context("spawn")
    devices = devices[: max(1, len(jobs))]  # no more workers than sequences
    req_q = mpc.Queue()
    n_cpu = sum(d == "cpu" for d in devices)
    job_qs = [mpc.Queue() for _ in devices]
    procs = [mpc.Process(target=_device_worker, name=f"h4d-worker-{i}-{d}",
                         args=(i, d, ctx, prefetch, n_cpu, req_q, job_qs[i], len(devices)))  # not daemon: --loader process
             for i, d in enumerate(devices)]
    for p in procs:
        p.start()
    by_index = {j.index: j for j in jobs}
    pending: deque[Job] = deque(jobs)
    waiting: deque[int] = deque()
    assigned: dict[int, set[int]] = {i: set() for i in range(len(devices))}
    running: dict[int, int | None] = {i: None for i in range(len(devices))}
    dead: set[int] = set()
    fatal: dict[int, str] = {}
    finished: set[int] = set()

    def finish(r: JobResult) -> None:
        if r.index in finished:
            return
        finished.add(r.index)
        report(r)

    def handle(msg: tuple) -> None:
        kind, wid = msg[0], msg[1]
        if kind == "ready":
            waiting.append(wid)
        elif kind == "start":
            running[wid] = msg[2]
        elif kind == "result":  # may come after the worker started its next capture (commits are deferred)
            r: JobResult = msg[2]
            assigned[wid].discard(r.index)
            if running[wid] == r.index:
                running[wid] = None
            finish(r)
        elif kind == "fatal":
            fatal[wid] = msg[2]

    def reap() -> None:
        for wid, p in enumerate(procs):
            if wid in dead or p.is_alive():
                continue
            while True:  # messages it sent before exiting
                try:
                    handle(req_q.get_nowait())
                except queue.Empty:
                    break
            dead.add(wid)
            why = fatal.get(wid) or f"worker process for {devices[wid]} exited with code {p.exitcode}"
            for idx in sorted(assigned[wid]):
                if idx == running[wid]:
                    finish(JobResult(idx, by_index[idx].rel, "failed", error=why, device=devices[wid]))
                    discard_failed(by_index[idx])
                elif idx not in finished:
                    pending.appendleft(by_index[idx])
            assigned[wid].clear()

    try:
        while len(finished) < len(jobs):
            try:
                handle(req_q.get(timeout=0.5))
            except queue.Empty:
                pass
            reap()
            while pending and waiting:
                wid = waiting.popleft()
                if wid in dead:
                    continue
                job = pending.popleft()
                if job.index in finished:
                    continue
                assigned[wid].add(job.index)
                job_qs[wid].put(job)
            if len(dead) == len(procs):
                why = "; ".join(sorted(set(fatal.values()))) or "all worker processes exited"
                for job in list(pending):
                    finish(JobResult(job.index, job.rel, "failed", error=f"not run: {why}"))
                pending.clear()
                for j in jobs:
                    if j.index not in finished:
                        finish(JobResult(j.index, j.rel, "failed", error=f"not run: {why}"))
    finally:
        for q_ in job_qs:
            with contextlib.suppress(Exception):
                q_.put(None)
        deadline = time.monotonic() + 30
        for p in procs:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)


# ----------------------------------------------------------------------------- Ray
def _ray_task(job: Job, ctx: Context) -> JobResult:
    import ray

    gpus = ray.get_gpu_ids()
    if gpus:
        ctx.cfg.run.device = "cuda"
        device = f"gpu {','.join(str(g) for g in gpus)}"
    else:
        ctx.cfg.run.device = "cpu"
        device = "cpu"
    node = ray.util.get_node_ip_address()
    return process_job(job, ctx, device=f"{node} {device}", raise_transient=True)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--ray needs Ray, which is not installed: pip install 'h4d_fast[cluster]'") from None
    return ray


def run_ray(jobs: list[Job], ctx: Context, report: Callable[[JobResult], None], address: str | None = None,
            num_cpus: int | None = None, gpus_per_task: float = 1.0, retries: int = 2,
            log: Callable[[str], None] = lambda s: None) -> None:
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
        if address:
            ray.init(address=address, **kw)
        else:
            pkg_parent = str(Path(__file__).resolve().parents[2])
            pp = os.pathsep.join(x for x in (pkg_parent, os.environ.get("PYTHONPATH", "")) if x)
            ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": pp}}, **kw)
        started = True
    try:
        res = ray.cluster_resources()
        n_gpu = float(res.get("GPU", 0))
        opts: dict[str, Any] = {"num_gpus": gpus_per_task, "num_cpus": 1} if n_gpu > 0 else {"num_cpus": 1}
        log(f"ray: {int(res.get('CPU', 0))} CPUs, {int(n_gpu)} GPUs; each task asks for "
            + (f"{gpus_per_task:g} GPU" if n_gpu > 0 else "1 CPU") + f", {retries} retries for transient errors")
        task = ray.remote(_ray_task).options(max_retries=retries, retry_exceptions=[TransientError], **opts)
        ctx_ref = ray.put(ctx)
        refs = {task.remote(job, ctx_ref): job for job in jobs}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            for ref in done:
                job = refs.pop(ref)
                try:
                    r = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - RayTaskError, worker crash, ...
                    cause = getattr(e, "cause", None)
                    msg = one_line(cause) if isinstance(cause, BaseException) else " ".join(str(e).split()[:60])
                    if isinstance(cause, TransientError) and retries:
                        msg += f" (after {retries} retries)"
                    r = JobResult(job.index, job.rel, "failed", error=msg)
                    with contextlib.suppress(Exception):
                        discard_failed(job)
                report(r)
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            for ref in list(refs):
                ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------------- reporting
class OverallProgress:
    """One progress bar on stderr (a terminal only) with status lines printed above it."""

    def __init__(self, total: int, stream=None, enabled: bool = True, lines: bool = True):
        self.total = max(total, 1)
        self.stream = stream or sys.stderr
        self.bar = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.lines = lines
        self.t0 = time.perf_counter()
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self._shown = False
        self._lock = threading.Lock()

    def _text(self) -> str:
        n = sum(self.counts.values())
        frac = n / self.total
        width = 30
        b = "#" * int(frac * width) + "-" * (width - int(frac * width))
        el = time.perf_counter() - self.t0
        eta = f", eta {el / n * (self.total - n):.0f} s" if 0 < n < self.total else ""
        c = self.counts
        return f"  run-many [{b}] {n}/{self.total}  done {c['done']}, skipped {c['skipped']}, failed {c['failed']}  {el:.0f} s{eta}"

    def message(self, text: str) -> None:
        with self._lock:
            if self.bar and self._shown:
                self.stream.write("\r\033[K")
            if self.lines:
                self.stream.write(text + "\n")
            self._draw()

    def update(self, r: JobResult) -> None:
        self.counts[r.status] = self.counts.get(r.status, 0) + 1
        n = sum(self.counts.values())
        self.message(f"[{n:>{len(str(self.total))}}/{self.total}] {r.line()}")

    def start(self) -> None:
        with self._lock:
            self._draw()

    def _draw(self) -> None:
        if self.bar:
            self.stream.write("\r\033[K" + self._text())
            self._shown = True
        self.stream.flush()

    def close(self) -> None:
        if self.bar and self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def format_table(results: list[JobResult]) -> str:
    w = max([8] + [len(r.sequence) for r in results])
    lines = [f"{'sequence':<{w}}  {'status':<7}  {'seconds':>8}  error"]
    for r in results:
        lines.append(f"{r.sequence:<{w}}  {r.status:<7}  {r.seconds:8.1f}  {r.error}".rstrip())
    return "\n".join(lines)


@dataclass
class Summary:
    results: list[JobResult]
    wall_s: float
    mode: str
    out: Path
    incomplete: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        c = {"done": 0, "skipped": 0, "failed": 0}
        for r in self.results:
            c[r.status] = c.get(r.status, 0) + 1
        return c

    @property
    def exit_code(self) -> int:
        return 1 if self.counts["failed"] else 0

    def footer(self) -> str:
        c = self.counts
        rate = c["done"] / self.wall_s * 3600 if self.wall_s > 0 and c["done"] else 0.0
        return (f"{len(self.results)} sequences: {c['done']} done, {c['skipped']} skipped, {c['failed']} failed "
                f"in {self.wall_s:.1f} s ({self.mode}; {rate:.0f} sequences/hour)")


# ----------------------------------------------------------------------------- entry point
def run_many(root: Path, out: Path, cfg: Config, force: bool = False, *, devices: str | None = None,
             ray: bool = False, ray_address: str | None = None, ray_cpus: int | None = None,
             ray_gpus_per_task: float = 1.0, retries: int = 2, prefetch: int = 1, loader: str = "thread",
             match: Sequence[str] = (), log: Callable[[str], None] | None = None,
             progress: bool = True, status_lines: bool = True) -> Summary:
    """Run every sequence under ``root`` into ``out``; see the module docstring.

    Returns the :class:`Summary` (also written to ``OUT/run_many.json``).
    """
    log = log or (lambda s: None)
    t0 = time.perf_counter()
    root, out = Path(root).resolve(), Path(out).resolve()
    if ray or ray_address:
        _import_ray()  # fail fast, before touching OUT
    dev_list = parse_devices(devices) if devices else None
    jobs, incomplete = discover(root, out, match)
    if not jobs:
        raise InputError(root, "no sequence folders found (a sequence folder has colmap/workplace and processed_data/poses2d)")
    mode = ("ray" + (f" {ray_address}" if ray_address else " local")) if (ray or ray_address) else (
        f"devices {','.join(dev_list)}" if dev_list else f"local, prefetch {prefetch} ({loader})")
    ctx = Context(copy.deepcopy(cfg), config_hash(cfg), force, uuid.uuid4().hex, loader)
    ctx.cfg.run.progress = False
    results: dict[int, JobResult] = {}
    with OutputLock(out):
        _clean_stale(out)
        for s in incomplete:
            log(f"note: not a complete sequence folder, ignored: {s}")
        log(f"h4d run-many: {len(jobs)} sequences under {root} -> {out} ({mode})")
        bar = OverallProgress(len(jobs), enabled=progress, lines=status_lines)
        bar.start()

        def report(r: JobResult) -> None:
            r.finished_unix = time.time()
            results[r.index] = r
            bar.update(r)

        interrupted = False
        try:
            if (ray or ray_address or dev_list) and not force:
                # skip finished ones here, so that no worker (or Ray instance) starts for them
                jobs_todo = []
                for pre in _prepare_all(jobs, ctx):
                    if pre.skip_note is not None:
                        report(compute(pre, ctx))
                    else:
                        jobs_todo.append(pre.job)
            else:
                jobs_todo = jobs
            if not jobs_todo:
                pass
            elif ray or ray_address:
                run_ray(jobs_todo, ctx, report, address=ray_address, num_cpus=ray_cpus, gpus_per_task=ray_gpus_per_task,
                        retries=retries, log=bar.message if status_lines else (lambda s: None))
            elif dev_list:
                run_devices(jobs_todo, ctx, dev_list, prefetch, report)
            else:
                from .driver import resolve_device

                run_pipelined(jobs, ctx, prefetch=prefetch, device=str(resolve_device(cfg.run.device)), on_result=report)
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            bar.close()
            ordered = [results.get(j.index) or JobResult(j.index, j.rel, "failed", error="interrupted" if interrupted else "not run")
                       for j in jobs]
            summary = Summary(ordered, time.perf_counter() - t0, mode, out, incomplete)
            _write_summary(summary, root, ctx, interrupted)
            _remove_empty_dirs(out / PARTIAL_DIR)
    return summary


def _prepare_all(jobs: list[Job], ctx: Context) -> list[Prepared]:
    """Fingerprint + skip check of every job (threads; nothing is loaded)."""
    from concurrent.futures import ThreadPoolExecutor

    def check(job: Job) -> Prepared:
        return prepare(job, ctx, load=lambda seq: None)

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(jobs)))) as ex:
        return list(ex.map(check, jobs))


def _clean_stale(out: Path) -> None:
    """Under the lock: remove what a run killed inside :func:`commit` left (``*.old-*``)."""
    pr = out / PARTIAL_DIR
    if not pr.is_dir():
        return
    for dirpath, dirnames, _ in os.walk(pr):
        for d in list(dirnames):
            if ".old-" in d:
                _rmtree(Path(dirpath) / d)
                dirnames.remove(d)
            elif d == CACHE_DIR:
                dirnames.remove(d)


def _write_summary(s: Summary, root: Path, ctx: Context, interrupted: bool) -> None:
    obj = {
        "root": str(root),
        "out": str(s.out),
        "mode": s.mode,
        "config_hash": ctx.cfg_hash,
        "h4d_version": __version__,
        "force": ctx.force,
        "interrupted": interrupted,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "wall_s": round(s.wall_s, 3),
        "counts": s.counts,
        "sequences_per_hour": round(s.counts["done"] / s.wall_s * 3600, 2) if s.wall_s > 0 else 0.0,
        "incomplete_folders": s.incomplete,
        "sequences": [dataclasses.asdict(r) for r in s.results],
    }
    with contextlib.suppress(H4DError):
        atomic.write_json(s.out / SUMMARY_FILE, obj)


def cli(args: Any, cfg: Config, log: Callable[[str], None]) -> int:
    """``h4d run-many`` (argparse namespace from :mod:`h4d_fast.cli`)."""
    quiet = bool(getattr(args, "quiet", False))
    summary = run_many(
        args.root, args.out, cfg, force=args.force, devices=args.devices, ray=args.ray,
        ray_address=args.ray_address, ray_cpus=args.ray_cpus, ray_gpus_per_task=args.ray_gpus_per_task,
        retries=args.retries, prefetch=args.prefetch, loader=args.loader, match=args.match or (),
        log=(lambda s: None) if quiet else log, progress=not quiet, status_lines=not quiet,
    )
    print(format_table(summary.results))
    print(summary.footer())
    print(f"summary: {summary.out / SUMMARY_FILE}")
    return summary.exit_code
