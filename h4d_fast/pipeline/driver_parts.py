"""What the driver's stages (:mod:`h4d_fast.pipeline.driver`) share: the devices, the input
fingerprint, the stage cache, the run's records and result, the people to find, the body model.

Each cached stage's result is written atomically to ``OUT/.h4d/<stage>.npz`` with a key
(:meth:`StageCache.key`): a hash of the stage's name, its code
(:func:`~h4d_fast.pipeline.code_keys.stage_fingerprint`), its configuration and the key upstream
of it (the input files' fingerprint, :func:`fingerprint_inputs`, for the first stage).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import __version__
from ..config import Config
from ..data import Capture, Detections
from ..errors import InputError, OutputError
from ..io import atomic, faults
from .code_keys import stage_fingerprint

CACHE_DIR = ".h4d"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "CUDA was requested but no CUDA device is available", field="run.device")
    return dev


def sequential_device(cfg: Config, device: torch.device) -> torch.device:
    """Where the frame-sequential stages (track, refine) run: ``run.sequential_device`` (see
    :class:`~h4d_fast.config.RunConfig`); the CPU unless 'same' or a CUDA-only backend is named
    ('auto' is the CPU here; run-many's GPU workers turn it into 'same')."""
    if cfg.run.sequential_device == "same" or cfg.run.backend in ("triton", "cupy"):
        return device
    return torch.device("cpu")


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fingerprint_inputs(seq: Path) -> str:
    """Hash of the names, sizes and modification times of the sequence's input files.

    The files are visited in ``os.walk`` order (folders sorted, each folder's files sorted, then
    its subfolders); ``os.scandir`` and plain strings keep it fast on the ~12,000 files of a
    600-frame, 20-camera capture.
    """
    seq = Path(seq)
    lines: list[str] = []
    for sub in ("colmap/workplace", "processed_data/poses2d", "processed_data/bboxes"):
        root = seq / sub
        if root.exists():
            _walk_stats(str(root), sub, lines)
    return hashlib.sha256("".join(lines).encode()).hexdigest()[:16]


def _walk_stats(folder: str, rel: str, lines: list[str]) -> None:
    """Append ``rel/name|size|mtime_ns`` of the files under ``folder`` (``os.walk`` order, symlinked
    folders not entered) to ``lines``."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    dirs = []
    files = []
    for e in entries:
        try:
            is_dir = e.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            dirs.append(e)
        else:
            files.append(e)
    for e in sorted(files, key=lambda x: x.name):
        st = os.stat(e.path)
        lines.append(f"{rel}/{e.name}|{st.st_size}|{st.st_mtime_ns}\n")
    for e in sorted(dirs, key=lambda x: x.name):
        if not e.is_symlink():
            _walk_stats(e.path, f"{rel}/{e.name}", lines)


@dataclass
class StageRecord:
    name: str
    seconds: float
    cached: bool
    stats: dict = field(default_factory=dict)


@dataclass
class RunResult:
    """What a run produced: final 3D poses ``[F, P, J, 4]``, who is in which frame, and the
    per-stage records.

    ``present [F, P]`` bool: person ``p`` is in frame ``f`` (a person absent in a frame has no
    entry in that frame's outputs; their poses there are zeros with valid 0). ``None`` = everyone
    in every frame.
    """

    poses3d: torch.Tensor
    raw_poses3d: torch.Tensor
    frame_ids: list[int]
    person_names: list[str]
    stages: list[StageRecord]
    out: Path
    extra: dict[str, Any] = field(default_factory=dict)
    present: torch.Tensor | None = None

    def timing(self) -> dict[str, float]:
        return {s.name: s.seconds for s in self.stages}

    @property
    def presence(self) -> torch.Tensor:
        """``[F, P]`` bool (all True when ``present`` is None)."""
        if self.present is not None:
            return self.present
        return torch.ones(self.poses3d.shape[:2], dtype=torch.bool)

    def finish(self) -> float:
        """Wait for the per-frame files still being written, then write ``timing.json`` and
        ``config.toml`` (what ``run_sequence(..., wait_files=False)`` left to the caller).
        Returns the seconds waited; raises :class:`OutputError` if a file could not be written."""
        from ..io.frame_files import PendingFiles

        waited = 0.0
        pending = self.extra.pop("pending", [])
        if pending:
            t0 = time.perf_counter()
            merged = PendingFiles.merged(pending)
            merged.wait()
            waited = time.perf_counter() - t0
            self.stages.append(StageRecord("write_files", waited, False, {"files": merged.files,
                                                                           "since_handed_over_s": merged.seconds or 0.0}))
        done = self.extra.pop("finish", None)
        if done is not None:
            done()
        return waited


def resolve_people(capture: Capture, cfg: Config) -> tuple[list[str], int | None]:
    """The declared people and the cap from ``identity.people`` (``--people``).

    ``auto``: the capture's people (identity boxes name them; without boxes their names are the
    ones people found take first), no cap. ``N``: the same with at most ``N`` people. A list of
    names ``a,b,c``: those people, at most that many; with identity boxes every name needs a box
    and every box a name.

    Raises:
        InputError: ``0``, a negative number, fewer people than boxes, a name without a box, a box
        of a person not named.
    """
    from .tracks import parse_people

    raw = str(cfg.identity.people).strip()
    boxed = capture.init_boxes is not None
    if "," in raw or (raw and not raw.lstrip("-").isdigit() and raw.lower() != "auto"):
        names = [n.strip() for n in raw.split(",") if n.strip()]
        if len(set(names)) != len(names) or not names:
            raise InputError(None, f"expected distinct person names, got {raw!r}", field="identity.people")
        if boxed:
            have = list(capture.person_names)
            unknown = [n for n in have if n not in names]
            if unknown:
                raise InputError(None, f"identity boxes (processed_data/bboxes) of people not named in --people: {', '.join(unknown)}",
                                 field="identity.people")
            missing = [n for n in names if n not in have]
            if missing:
                raise InputError(None, f"more names than identity boxes: no box for {', '.join(missing)} "
                                       f"(boxes for {', '.join(have)})", field="identity.people")
            return have, len(names)
        return names, len(names)
    cap = parse_people(raw)
    names = list(capture.person_names)
    if cap is not None and boxed and len(names) > cap:
        raise InputError(None, f"{len(names)} people have identity boxes ({', '.join(names)}) but --people is {cap}",
                         field="identity.people")
    return names, cap


class StageCache:
    """Atomic on-disk cache of stage outputs keyed by a content hash."""

    def __init__(self, out: Path, enabled: bool = True):
        self.dir = out / CACHE_DIR
        self.enabled = enabled

    def key(self, name: str, upstream: str, cfg_section: Any) -> str:
        """Hash of the stage's name, its code (:func:`~h4d_fast.pipeline.code_keys.stage_fingerprint`;
        a stage without a listed fingerprint raises KeyError), the upstream key and its configuration."""
        blob = json.dumps({"stage": name, "version": __version__, "code": stage_fingerprint(name), "up": upstream, "cfg": cfg_section},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def load(self, name: str, key: str) -> dict[str, np.ndarray] | None:
        p = self.dir / f"{name}.npz"
        if not self.enabled or not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                if str(z["__key__"]) != key:
                    return None
                return {k: z[k] for k in z.files if k != "__key__"}
        except Exception:
            return None  # a damaged cache entry is recomputed

    def save(self, name: str, key: str, arrays: dict[str, np.ndarray]) -> None:
        atomic.write_npz(self.dir / f"{name}.npz", __key__=np.array(key), **arrays)


def check_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(out, f"cannot create the output folder ({e.strerror or e})") from None
    if not os.access(out, os.W_OK):
        raise OutputError(out, "the output folder is not writable")


_BODIES: dict[tuple[str, str, str], Any] = {}
_BODIES_LOCK = threading.Lock()  # the warm-up thread (pipeline.warmup) may be loading it


def load_body(cfg: Config, device: torch.device):
    """The body model named by ``cfg.fit.body_model`` (``default`` = the embedded one), loaded
    once per process and device (``run-many`` processes many sequences with one model)."""
    from ..body import load_body_model

    path = None if cfg.fit.body_model in ("", "default") else cfg.fit.body_model
    key = (str(path), cfg.fit.gender, str(device))
    with _BODIES_LOCK:
        if key not in _BODIES:
            _BODIES[key] = load_body_model(path, gender=cfg.fit.gender, device=device)
        return _BODIES[key]



def _silent(line: str) -> None:
    pass


@dataclass
class RunState:
    """What the stages of :data:`~h4d_fast.pipeline.driver.STAGES` read and make (the names in their
    ``reads`` / ``makes``), and what the loop keeps for them: the cache, the keys, the records.

    Given: ``out``, ``cfg``, ``force`` (no cache hit), ``log``, ``stop_after``, ``seq`` (the sequence
    folder, ``h4d run``), ``capture`` (a :class:`Capture`, or a load in progress with ``result()``,
    or None), ``input_key`` (the input files' fingerprint: the first cached stage's upstream key).
    """

    out: Path
    cfg: Config
    force: bool = False
    log: Callable[[str], None] | None = None
    stop_after: str | None = None
    seq: Path | None = None
    capture: Any = None
    input_key: str = ""
    records: list[StageRecord] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)  # stage -> its cache key (the next stage's upstream)
    # made by the stages
    det_f: Detections | None = None  # filter: the kept 2D detections, on the sequential device
    raw: torch.Tensor | None = None  # track: the triangulated tracks [F, P, J, 4] ...
    present: torch.Tensor | None = None  # ... who is in which frame [F, P] ...
    person_names: list[str] = field(default_factory=list)  # ... and their names
    tracked: dict[str, np.ndarray] = field(default_factory=dict)  # track: assign, n_inliers
    result: RunResult | None = None  # refine: the keypoint result (the later stages add to it)
    fit: Any = None  # fit: the FitResult

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.log = self.log or _silent
        self.device = resolve_device(self.cfg.run.device)
        self.dtype = torch.float64 if self.cfg.run.dtype == "float64" else torch.float32
        self.seq_device = sequential_device(self.cfg, self.device)
        self.cache = StageCache(self.out, enabled=not self.force)
        self.cfgd = self.cfg.to_dict()
        self._on_device: tuple[Detections, Any] | None = None
        self._people: tuple[list[str], int | None] | None = None
        self._body: Any = None

    @property
    def det(self) -> Detections:
        """The capture's 2D detections on the compute device, in the run's dtype (made once)."""
        return self._device_copies()[0]

    @property
    def cams(self):
        """The capture's cameras on the compute device (made once)."""
        return self._device_copies()[1]

    def _device_copies(self) -> tuple[Detections, Any]:
        if self._on_device is None:
            self._on_device = (self.capture.detections.to(device=self.device, dtype=self.dtype), self.capture.cameras.to(device=self.device))
        return self._on_device

    @property
    def people(self) -> tuple[list[str], int | None]:
        """The declared people and the cap (:func:`resolve_people`; made once)."""
        if self._people is None:
            self._people = resolve_people(self.capture, self.cfg)
        return self._people

    @property
    def body(self):
        """The body model (:func:`load_body`; made once)."""
        if self._body is None:
            self._body = load_body(self.cfg, self.device)
        return self._body


# ============================================================================ the stages and their loop
Arrays = dict[str, np.ndarray]


@dataclass
class Done:
    """What a stage that is not cached reports: its record's figures, whether it reused earlier
    work (stage 0 has its own caches), the rest of its progress line (None: no line)."""

    stats: dict = field(default_factory=dict)
    cached: bool = False
    line: str | None = None


def _runs(st: RunState) -> str | None:
    return None


def _same(stats: dict) -> dict:
    return stats


@dataclass(frozen=True)
class Stage:
    """One stage of :data:`STAGES`.

    ``name`` names its record (``timing.json``), its cache file ``OUT/.h4d/<name>.npz``, its code
    fingerprint (:data:`~h4d_fast.pipeline.code_keys.STAGES`), its fault point ``after:<name>`` and
    ``stop_after``; ``paper`` is the paper's step; ``reads`` / ``makes`` the :class:`RunState` fields
    it reads and sets.

    A cached stage has ``key`` (``state -> (upstream key, configuration)``, hashed with the code
    by :meth:`StageCache.key`), ``compute`` (sets the state; returns what is cached, the arrays or a
    function that makes them after the stage's time is taken, and its figures) and ``restore`` (sets
    the state from a cache hit). Any other stage has ``run`` (sets the state; returns :class:`Done`).
    ``skip``: None, or why the stage is left out ("" says nothing); ``summary``: the figures its
    record and line keep; ``sync``: time it after a device sync; ``then``: what it writes from its
    result, computed or cached (not timed).
    """

    name: str
    paper: str
    reads: tuple[str, ...]
    makes: tuple[str, ...]
    run: Callable[[RunState], Done] | None = None
    key: Callable[[RunState], tuple[str, Any]] | None = None
    compute: Callable[[RunState], tuple[Arrays | Callable[[], Arrays], dict]] | None = None
    restore: Callable[[RunState, Arrays, dict], None] | None = None
    skip: Callable[[RunState], str | None] = _runs
    summary: Callable[[dict], dict] = _same
    sync: bool = True
    then: Callable[[RunState], None] | None = None
    label: str = ""  # the progress line's name (default: name)

    @property
    def cached(self) -> bool:
        return self.key is not None


# ============================================================================ the loop
def run_stages(stages: tuple[Stage, ...], st: RunState) -> RunState:
    """Run ``stages`` in order on ``st``: skip, cache lookup or compute, timing, record, progress
    line, the fault point, ``stop_after`` (raising ``KeyboardInterrupt``; used to test resume)."""
    for stage in stages:
        why = stage.skip(st)
        if why is not None:
            if why:
                st.log(f"  {stage.name:<10} skipped: {why}")
            continue
        if stage.cached:
            _run_cached(stage, st)
        else:
            t0 = time.perf_counter()
            done = stage.run(st)
            if stage.sync:
                sync_device(st.device)
            dt = time.perf_counter() - t0
            st.records.append(StageRecord(stage.name, dt, done.cached, done.stats))
            if done.line is not None:
                st.log(f"  {stage.label or stage.name:<10} {dt:7.2f} s  {done.line}")
        if stage.then is not None:
            stage.then(st)
        if st.stop_after == stage.name:
            raise KeyboardInterrupt(f"stopped after stage {stage.name}")
    return st


def _run_cached(stage: Stage, st: RunState) -> None:
    upstream, section = stage.key(st)
    key = st.keys[stage.name] = st.cache.key(stage.name, upstream, section)
    t0 = time.perf_counter()
    hit = st.cache.load(stage.name, key)
    if hit is not None:
        stats = json.loads(str(hit.pop("__stats__"))) if "__stats__" in hit else {}
        stage.restore(st, hit, stats)
        st.records.append(StageRecord(stage.name, time.perf_counter() - t0, True, stage.summary(stats)))
        st.log(f"  {stage.name:<10} cached")
        return
    arrays, stats = stage.compute(st)
    sync_device(st.device)
    dt = time.perf_counter() - t0
    arrays = arrays() if callable(arrays) else arrays
    st.cache.save(stage.name, key, {**arrays, "__stats__": np.array(json.dumps(stats, default=float))})
    summary = stage.summary(stats)
    st.records.append(StageRecord(stage.name, dt, False, summary))
    faults.point(f"after:{stage.name}", st.out)
    st.log(f"  {stage.name:<10} {dt:7.2f} s  {_short(summary)}")


def _short(stats: dict) -> str:
    parts = []
    for k, v in stats.items():
        if isinstance(v, float):
            parts.append(f"{k}={v:.4g}")
        elif isinstance(v, (int, str)):
            parts.append(f"{k}={v}")
    return ", ".join(parts[:6])
