"""``h4d run-many``, part 2: running the jobs -- per capture, the pipelined loop, several devices,
Ray (see :mod:`.many`)."""

from __future__ import annotations

import contextlib
import copy
import os
import queue
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .. import __version__
from ..config import Config
from ..errors import InputError
from .many_jobs import (
    MAX_UNCOMMITTED,
    Context,
    Job,
    JobResult,
    Prepared,
    RayUnavailable,
    RelayedError,
    TransientError,
    commit,
    discard_failed,
    discard_obsolete_partial,
    is_transient,
    one_line,
    setup_partial,
    skip_reason,
)


# ----------------------------------------------------------------------------- per-sequence work
def process_loaded(capture: Any, seq: Path, out: Path, cfg: Config, force: bool = False,
                   log: Callable[[str], None] | None = None, wait_files: bool = True) -> Any:
    """All pipeline stages on an already loaded capture, written into ``out`` (= ``run_sequence``
    without its load). The one place to point at the driver's entry point. ``wait_files=False``:
    the per-frame files may still be being written on return (call ``finish()`` on the result)."""
    from .run import run_sequence

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
                discard_obsolete_partial(job)
                return pre
        pre.capture = (load or _load)(job.seq)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - reported per sequence
        pre.error = e
    pre.load_seconds = time.perf_counter() - t0
    return pre


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
