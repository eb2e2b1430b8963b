"""The pipeline's stages after the load, in order, each cached on disk so a run resumes: the
keypoint stages (:func:`run_keypoints`), their outputs, the SMPL fit and its export (:func:`run_fit`).
:func:`h4d_fast.pipeline.run.run_sequence` (``h4d run``) runs them on a sequence folder, after
stage 0 (:mod:`h4d_fast.pipeline.detect`, which runs the keypoint stages between its passes).

Each stage's result is written atomically to ``OUT/.h4d/<stage>.npz`` with a key: a hash of
the input files' fingerprint, the stage's configuration and the keys of the stages before it.
A rerun loads every stage whose key still matches and recomputes from the first that does not
(``force=True`` recomputes everything). Timing per stage goes to ``OUT/timing.json`` (with the
seconds from process start to the run's start: interpreter and imports).

Outputs: each export writes its consolidated file first (``poses3d.npz``,
``processed_data/sequence.npz``) and hands the per-frame files to background writer processes
(:mod:`h4d_fast.io.frame_files`); :func:`~h4d_fast.pipeline.run.run_sequence` waits for them before writing
``timing.json`` and ``config.toml`` (the last files of a finished run), unless the caller takes
that over (``wait_files=False``, then :meth:`RunResult.finish`; ``run-many`` computes the next
capture meanwhile).
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
from ..progress import Progress
from .code_keys import stage_fingerprint
from .filter import filter_detections
from .refine import refine_sequence
from .triangulate import triangulate_sequence

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


def run_keypoints(
    capture: Capture,
    out: Path,
    cfg: Config,
    input_key: str = "",
    force: bool = False,
    log: Callable[[str], None] | None = None,
    stop_after: str | None = None,
) -> RunResult:
    """Stages 1-4 on an in-memory capture, cached under ``out``.

    Args:
        capture: the loaded capture.
        out: output folder (created; must be writable).
        input_key: fingerprint of the inputs (part of every stage's cache key).
        stop_after: stop (raising ``KeyboardInterrupt``) after this stage -- used to test resume.
    """
    out = Path(out)
    check_output_dir(out)
    log = log or (lambda s: None)
    device = resolve_device(cfg.run.device)
    dtype = torch.float64 if cfg.run.dtype == "float64" else torch.float32
    cache = StageCache(out, enabled=not force)
    backend = cfg.run.backend
    records: list[StageRecord] = []
    F, V, D = capture.detections.shape
    P = capture.num_people
    cfgd = cfg.to_dict()

    def stage(name: str, upstream: str, section: Any, compute: Callable[[], tuple[dict[str, np.ndarray], dict]]) -> tuple[str, dict[str, np.ndarray]]:
        key = cache.key(name, upstream, section)
        t0 = time.perf_counter()
        hit = cache.load(name, key)
        if hit is not None:
            stats = json.loads(str(hit.pop("__stats__"))) if "__stats__" in hit else {}
            records.append(StageRecord(name, time.perf_counter() - t0, True, stats))
            log(f"  {name:<10} cached")
            return key, hit
        arrays, stats = compute()
        sync_device(device)
        dt = time.perf_counter() - t0
        cache.save(name, key, {**arrays, "__stats__": np.array(json.dumps(stats))})
        records.append(StageRecord(name, dt, False, stats))
        faults.point(f"after:{name}", out)
        log(f"  {name:<10} {dt:7.2f} s  {_short(stats)}")
        if stop_after == name:
            raise KeyboardInterrupt(f"stopped after stage {name}")
        return key, arrays

    det = capture.detections.to(device=device, dtype=dtype)
    cams = capture.cameras.to(device=device)
    seq_device = sequential_device(cfg, device)

    # ---- stage 1: filtering + OKS dedup
    def do_filter():
        filtered, st = filter_detections(det, cams.size, cfg.filter, backend=backend)
        return {"valid": filtered.valid.cpu().numpy(), "kpts": filtered.kpts.cpu().numpy().astype(np.float32)}, st.as_dict()

    k1, a1 = stage("filter", input_key + f"|{F}x{V}x{D}", cfgd["filter"], do_filter)
    ident = capture.detections.identity
    det_f = Detections(torch.from_numpy(a1["kpts"]).to(device=seq_device, dtype=dtype), det.boxes.to(seq_device),
                       torch.from_numpy(a1["valid"]).to(seq_device), None if ident is None else ident.to(seq_device))

    # ---- stages 2+3: identity + triangulation
    def do_track():
        with Progress("track", F, enabled=cfg.run.progress) as bar:
            res = triangulate_sequence(
                det_f, cams.to(device=seq_device), P, cfg.identity, cfg.triangulation,
                init_boxes=capture.init_boxes, init_valid=capture.init_valid, backend=backend, progress=bar.update,
                person_names=names, max_people=cap,
            )
        valid = res.poses[..., 3] > 0
        stats = {"valid_fraction": float(valid.float().mean()) if valid.numel() else 0.0,
                 "mean_inliers": float(res.n_inliers[valid].float().mean()) if bool(valid.any()) else 0.0,
                 **{k: v for k, v in res.stats.items() if isinstance(v, (int, float))}}
        return {"poses": res.poses.cpu().numpy(), "assign": res.assign.cpu().numpy(), "n_inliers": res.n_inliers.cpu().numpy(),
                "present": res.present.cpu().numpy(), "person_names": np.asarray(res.person_names, dtype=str)}, stats

    names, cap = resolve_people(capture, cfg)
    ident_key = "" if ident is None else hashlib.sha256(ident.cpu().numpy().tobytes()).hexdigest()[:16]
    k2, a2 = stage("track", k1, {"identity": cfgd["identity"], "triangulation": cfgd["triangulation"], "P": P, "names": names,
                                 "prompts": ident_key}, do_track)
    raw = torch.from_numpy(a2["poses"])
    present = torch.from_numpy(a2["present"]).bool() if "present" in a2 else torch.ones(raw.shape[:2], dtype=torch.bool)
    person_names = [str(s) for s in a2["person_names"]] if "person_names" in a2 else list(capture.person_names)

    # ---- stage 4: clean-up + global refinement
    def do_refine():
        refined, st = refine_sequence(raw.to(device=seq_device, dtype=dtype), cfg.refine, present.to(seq_device))
        return {"poses": refined.cpu().numpy()}, st.as_dict()

    k3, a3 = stage("refine", k2, cfgd["refine"], do_refine)
    poses = torch.from_numpy(a3["poses"])
    return RunResult(poses, raw, list(capture.frame_ids), person_names, records, out,
                     extra={"assign": a2["assign"], "n_inliers": a2["n_inliers"], "keys": {"filter": k1, "track": k2, "refine": k3}},
                     present=present)


def _short(stats: dict) -> str:
    parts = []
    for k, v in stats.items():
        if isinstance(v, float):
            parts.append(f"{k}={v:.4g}")
        elif isinstance(v, (int, str)):
            parts.append(f"{k}={v}")
    return ", ".join(parts[:6])


def write_keypoint_outputs(result: RunResult, out: Path, wait: bool = True):
    """``OUT/poses3d.npz`` (the whole sequence) plus ``OUT/processed_data/poses3d/%05d.npy`` (dict
    person -> (17, 4) of the people present in the frame), the latter derived from the former by the background writers.

    Returns the :class:`~h4d_fast.io.frame_files.PendingFiles` (already waited for when ``wait``).
    """
    from ..io.frame_files import write_frame_files

    poses = result.poses3d.float().numpy()
    present = result.presence.cpu().numpy()
    atomic.write_npz(
        out / "poses3d.npz",
        poses3d=poses,
        raw_poses3d=result.raw_poses3d.float().numpy(),
        frame_ids=np.asarray(result.frame_ids),
        person_names=np.asarray(result.person_names, dtype=str),
        present=present,
    )
    pending = write_frame_files(out / "poses3d.npz", out / "processed_data", ["poses3d"], result.frame_ids, result.person_names)
    if wait:
        pending.wait()
    return pending


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


def run_fit(result: RunResult, capture: Capture, out: Path, cfg: Config, force: bool = False,
            log: Callable[[str], None] | None = None, stop_after: str | None = None):
    """Stage 5 (SMPL fit, cached like the others) and stage 6 (Harmony4D export) after the keypoints.

    Returns the :class:`~h4d_fast.pipeline.fit.FitResult` (also stored in ``result.extra['fit']``).
    """
    from .export import export_harmony4d
    from .fit import FitResult, fit_iterations, fit_sequence

    log = log or (lambda s: None)
    device = resolve_device(cfg.run.device)
    body = load_body(cfg, device)
    cache = StageCache(out, enabled=not force)
    section = {"fit": cfg.to_dict()["fit"], "body": str(getattr(body, "path", cfg.fit.body_model))}
    key = cache.key("fit", result.extra["keys"]["refine"], section)
    t0 = time.perf_counter()
    hit = cache.load("fit", key)
    if hit is not None:
        stats = json.loads(str(hit.pop("__stats__")))
        fit = FitResult.from_arrays(hit, stats, device=device)
        result.stages.append(StageRecord("fit", time.perf_counter() - t0, True, stats))
        log(f"  {'fit':<10} cached")
    else:
        P = len(result.person_names)
        with Progress("fit", fit_iterations(cfg.fit, P), enabled=cfg.run.progress) as bar:
            fit = fit_sequence(result.poses3d.to(device), body, cfg.fit, device, progress=bar.update, present=result.presence)
        sync_device(device)
        dt = time.perf_counter() - t0
        cache.save("fit", key, {**fit.as_arrays(), "__stats__": np.array(json.dumps(fit.stats, default=float))})
        result.stages.append(StageRecord("fit", dt, False, _fit_summary(fit.stats)))
        faults.point("after:fit", out)
        log(f"  {'fit':<10} {dt:7.2f} s  {_short(_fit_summary(fit.stats))}")
    atomic.write_json(out / "fit_stats.json", fit.stats)
    faults.point("after:fit_stats", out)
    off_file = out / FIT_COLLISION_OFF_FILE
    if fit.collision_off is not None:  # the compared fit without the collision term (h4d eval reports its accuracy)
        atomic.write_npz(off_file, **{k: v.detach().float().cpu().numpy() for k, v in fit.collision_off.items()})
    elif off_file.exists():
        off_file.unlink()
    if stop_after == "fit":
        raise KeyboardInterrupt("stopped after stage fit")
    t1 = time.perf_counter()
    st = export_harmony4d(out / "processed_data", fit, body, result.frame_ids, result.person_names,
                          cameras=capture.cameras, write_poses3d=False, present=result.presence.cpu().numpy(), wait=False,
                          contact_mm=cfg.contact.contact_mm if cfg.contact.export else None)
    sync_device(device)
    result.extra.setdefault("pending", []).append(st.pop("pending"))
    result.stages.append(StageRecord("export_smpl", time.perf_counter() - t1, False, {k: v for k, v in st.items() if isinstance(v, (int, float, str))}))
    log(f"  {'export':<10} {time.perf_counter() - t1:7.2f} s  sequence.npz; {st['files'] - 1} files of smpl/, poses2d/, bbox/ being written")
    result.extra["fit"] = fit
    return fit


FIT_COLLISION_OFF_FILE = "fit_collision_off.npz"  # parameters of the fit without the collision term (compare_collision)


def _fit_summary(stats: dict) -> dict:
    keys = ("kp_error_mm", "iterations", "penetration_before_cm3", "penetration_after_cm3", "penetration_reduction", "seconds")
    return {k: stats[k] for k in keys if k in stats and isinstance(stats[k], (int, float))}
