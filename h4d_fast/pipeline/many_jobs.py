"""``h4d run-many``, part 1: jobs, discovery, markers and the output folders (see :mod:`.many`)."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .. import __version__
from ..config import Config
from ..errors import H4DError, InputError, OutputError
from ..io import atomic, faults
from .code_keys import code_fingerprint

PARTIAL_DIR = ".h4d-partial"
MAX_UNCOMMITTED = 2  # captures whose per-frame files are still being written while the next computes
LOCK_FILE = ".run-many.lock"
RUN_LOCK_FILE = ".h4d-run.lock"  # `h4d run`'s lock in its output folder
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
    which a multi-device run sets per worker), the package version and the stages' code
    (:func:`~h4d_fast.pipeline.code_keys.code_fingerprint`, as the stage caches)."""
    d = cfg.to_dict()
    d["run"] = {k: v for k, v in d["run"].items() if k not in ("progress", "device")}
    blob = json.dumps({"version": __version__, "code": code_fingerprint(), "cfg": d}, sort_keys=True, default=str)
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
        return False, "configuration or h4d_fast code changed"
    if m.get("input_fingerprint") != fingerprint:
        return False, "inputs changed"
    return True, "finished earlier"


# ----------------------------------------------------------------------------- output folders
class OutputLock:
    """Exclusive ``flock`` on ``OUT/.run-many.lock`` (``h4d run``: ``OUT/.h4d-run.lock``) for the
    whole invocation; the kernel releases it when the process dies, however it dies. A second
    invocation on the same folder refuses with an :class:`OutputError` naming the holder."""

    def __init__(self, out: Path, name: str = LOCK_FILE, what: str = "h4d run-many"):
        self.path = Path(out) / name
        self.what = what
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
            raise OutputError(self.path.parent, f"another `{self.what}` is writing here ({owner or 'unknown process'}); "
                                                 "wait for it to end, or choose another output folder") from None
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
        faults.point("commit:moved-old", job.out)  # a test hook (off unless H4D_FAULT is set)
    job.out.parent.mkdir(parents=True, exist_ok=True)
    os.rename(part, job.out)
    if old is not None:
        _rmtree(old)


def discard_obsolete_partial(job: Job) -> None:
    """A sequence skipped because its finished output is current: a partial folder of it can only
    be a dead run's (``--force`` killed before that sequence committed; the invocation's lock
    rules out a live one), and nothing in it is needed any more: remove it, so that the output
    folder holds what an uninterrupted run leaves."""
    if job.partial.exists() or job.partial.is_symlink():
        _rmtree(job.partial)


def discard_failed(job: Job) -> None:
    """After a failure: keep the partial folder only if it holds stage caches to resume from."""
    part = job.partial
    if part.exists() and not _has_stage_caches(part):
        _rmtree(part)


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
