"""``h4d run-many``: every sequence folder under a root, resumable, pipelined, on one or many GPUs.

Three modules: this one (the entry point, reporting, the summary), :mod:`.many_jobs` (jobs,
discovery, markers, output folders) and :mod:`.many_exec` (per-capture work, the pipelined loop,
several devices, Ray); the public names of the other two are re-exported here.

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
  GPUs, else 1 CPU), transient errors retried, deterministic input errors not. A worker that dies
  (killed, out of memory) has its task run again by Ray (``--retries``) in another worker, which
  resumes from the stage caches the dead one left in the partial folder.

Killed at any moment (``kill -9`` included), a rerun gives the same outputs byte for byte as an
uninterrupted run (``tests/test_kill_resume.py``): the partial folder is adopted, the temporary
files of writes cut short are removed (:func:`~h4d_fast.io.atomic.remove_stale_temp`), an old
output moved aside by a cut-short commit is removed (``*.old-*``).
"""


from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import __version__
from ..config import Config
from ..errors import H4DError, InputError
from ..io import atomic
from .many_exec import (  # noqa: F401  (re-exported: the public names of run-many live here)
    Committer,
    _import_ray,
    compute,
    gpu_worker_settings,
    parse_devices,
    prepare,
    process_job,
    process_loaded,
    run_devices,
    run_pipelined,
    run_ray,
)
from .many_jobs import (  # noqa: F401
    CACHE_DIR,
    LOCK_FILE,
    MARKER,
    MAX_UNCOMMITTED,
    PARTIAL_DIR,
    RUN_ID_FILE,
    SUMMARY_FILE,
    Context,
    Job,
    JobResult,
    OutputLock,
    Prepared,
    RayUnavailable,
    RelayedError,
    TransientError,
    _remove_empty_dirs,
    _rmtree,
    commit,
    config_hash,
    discard_failed,
    discover,
    is_sequence,
    is_transient,
    one_line,
    read_marker,
    setup_partial,
    skip_reason,
)


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
