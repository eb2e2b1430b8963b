"""Stage 0: 2D keypoints from the cameras' images or videos, prompted by the 3D track through contact.

How detection and tracking interleave:

1. **Pass 1, every frame, batched** (:func:`~h4d_fast.detect.passes.first_pass`). All cameras of
   ``batch_frames`` frames are decoded together (a background thread decodes the next batch
   meanwhile); the person detector finds boxes in each image (the first frame uses the given
   first-frame boxes where a view has them; those detections carry their person's identity), the
   top-down pose model runs on every box's crop, keypoints go back to image pixels through the
   crop's affine.
2. **Track 1.** The public driver (:func:`~h4d_fast.pipeline.driver.run_keypoints`: filter,
   identity, triangulation, refinement) turns pass 1 into each person's 3D track; before contact
   (people apart) that track is reliable.
3. **Before the first contact** (:func:`~h4d_fast.detect.prompts.plan_prompts`): views where two
   people overlap, and views where a tracked person was missed, are re-run on crops of the
   track's projected poses.
4. **From the first contact on, in track order** (:func:`~h4d_fast.detect.passes.causal_pass`):
   chunks of ``batch_frames`` frames; each person's pose extrapolated from the track so far gives
   their crop in every view (the paper's prompt: one person per crop even in contact, identity
   from the track, not from the detector); each person's prompted detections are triangulated on
   their own (RANSAC over the views: the prompt named the person, nothing to match) and extend
   the track before the next chunk is prompted. First-pass detections nobody's prompt matches
   (people without a track) stay.

Why not prompt from the first pass's track everywhere: in contact the detector merges the two
people into one box, pass 1 then holds one detection where two people stand, and its track can
lose a person; prompts made from that track would lose them too. In track order the prompt of
each chunk comes from the frames just before it, which were themselves prompted. Why not frame by
frame from the start: the frames before contact need no track to be cropped right, and batching
them all keeps the GPU busy; only the contact part pays for the sequential order (chunks of
``batch_frames`` frames, every person in every view per model call).

Caching: pass 1 (``detect_pass1``), track 1 (its own stage cache under ``detect_track/``) and the
result (``detect``) are cached under the given folder, keyed by the frame files' fingerprint, the
models and the settings; a rerun resumes after the last finished part.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..camera import CameraSet
from ..config import Config, DetectConfig
from ..constants import DEFAULT_PERSON_NAMES
from ..data import Capture, Detections
from ..detect.api import PersonDetector, PoseModel
from ..detect.passes import Counters, FlatDetections, causal_pass, first_pass, prompted_pass
from ..detect.prompts import contact_frames, plan_prompts
from ..errors import InputError
from ..io.frames import FrameLoader, FrameSource, ImageFolder, frame_sources, sequence_frame_ids
from ..progress import Progress
from .driver_parts import StageCache, resolve_device
from .keypoint_stages import run_keypoints

__all__ = ["DetectResult", "detect_capture", "first_contact", "load_models", "read_cameras"]


# ------------------------------------------------------------------ models
def load_models(cfg: DetectConfig, device: torch.device) -> tuple[PoseModel, PersonDetector]:
    """The pose model (``detect.model``) and person detector (``detect.detector``) on ``device``."""
    if cfg.model not in ("", "default"):
        p = Path(cfg.model)
        if not p.is_file():
            raise InputError(p, "pose model file not found", field="detect.model")
    try:
        from ..detect.models import load_person_detector, load_pose_model  # type: ignore[attr-defined]
    except ImportError as e:
        raise InputError(None, f"the pose models are not available in this installation ({e})", field="detect.model") from None
    pose = _load(load_pose_model, cfg.model or "default", device, "a pose model", "detect.model")
    det = _load(load_person_detector, cfg.detector or "default", device, "a person detector", "detect.detector")
    return pose, det


def _load(fn: Callable[..., Any], spec: str, device: torch.device, what: str, fld: str) -> Any:
    """``fn(spec, device=device)``; a failure that is not already one of ours names the file."""
    from ..errors import H4DError

    try:
        return fn(spec, device=device)
    except H4DError:
        raise
    except Exception as e:  # noqa: BLE001 - a user's file that is not a model: one line naming it
        where = Path(spec) if spec not in ("", "default") else None
        raise InputError(where, f"cannot load {what} from it ({type(e).__name__}: {e})", field=fld) from None


def model_key(cfg: DetectConfig, pose: PoseModel | None = None, detector: PersonDetector | None = None) -> dict[str, Any]:
    """What identifies the models in a cache key: the settings' names (with a user file's size and
    time), or the given model objects' names (tests pass their own models)."""
    def ident(spec: str, obj: Any) -> dict[str, Any]:
        if obj is not None:
            return {"object": getattr(obj, "name", type(obj).__name__)}
        d: dict[str, Any] = {"spec": spec}
        p = Path(spec)
        if spec not in ("", "default") and p.is_file():
            st = p.stat()
            d.update(path=str(p.resolve()), size=st.st_size, mtime=st.st_mtime_ns)
        return d

    return {"pose": ident(cfg.model, pose), "detector": ident(cfg.detector, detector)}


# ----------------------------------------------------------- the sequence
def read_cameras(seq: Path) -> tuple[CameraSet, list[str], Tensor | None, Tensor | None]:
    """A sequence's cameras (COLMAP), declared person names (may be empty: estimate them) and
    first-frame boxes, without reading any 2D detections."""
    from ..io.colmap import read_colmap
    from ..io.harmony4d import SEQUENCE_INFO, SequenceLayout, read_init_boxes

    L = SequenceLayout(Path(seq))
    for f in ("cameras.txt", "images.txt"):
        if not (L.colmap / f).is_file():
            raise InputError(L.colmap / f, "COLMAP file missing")
    cams = read_colmap(L.colmap, "auto")
    has_boxes = L.bboxes.is_dir() and any(p.suffix == ".npy" for p in L.bboxes.rglob("*.npy"))
    if has_boxes:
        names, ib, iv = read_init_boxes(seq, cams.names)
        return cams, names, ib, iv
    info = Path(seq) / SEQUENCE_INFO
    names = list(DEFAULT_PERSON_NAMES)
    if info.is_file():
        from ..io.detections import read_json

        obj = read_json(info)
        got = obj.get("person_names") if isinstance(obj, dict) else None
        if not isinstance(got, list) or not all(isinstance(n, str) and n for n in got):
            raise InputError(info, "expected a list of names", field="person_names")
        names = list(got)
    return cams, names, None, None


def frames_fingerprint(sources: Sequence[FrameSource], frame_ids: Sequence[int]) -> str:
    """Hash of the frame files (names, sizes, modification times) and the frames used."""
    h = hashlib.sha256(json.dumps(list(frame_ids)).encode())
    for s in sources:
        paths = [s.files[f] for f in frame_ids] if isinstance(s, ImageFolder) else [s.path]
        for p in paths:
            st = os.stat(p)
            h.update(f"{s.camera}|{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        if not isinstance(s, ImageFolder):
            h.update(json.dumps([s.frames[f] for f in frame_ids]).encode())
    return h.hexdigest()[:16]


def _estimate_people(cams: CameraSet, flat: FlatDetections, F: int) -> tuple[int, str]:
    from ..io.importer import estimate_people

    V = len(cams)
    per_camera: list[list[list[tuple[np.ndarray, np.ndarray]]]] = [[[] for _ in range(F)] for _ in range(V)]
    k, b = flat.kpts.numpy(), flat.boxes.numpy()
    for i, (f, v) in enumerate(zip(flat.f.tolist(), flat.v.tolist())):
        per_camera[v][f].append((k[i], b[i]))
    return estimate_people(cams, per_camera)


@dataclass
class DetectResult:
    """Stage 0's output: the detections of every frame and view, and what was found."""

    detections: Detections
    frame_ids: list[int]
    person_names: list[str]
    stats: dict[str, Any] = field(default_factory=dict)


def first_contact(poses: Tensor, cfg: DetectConfig) -> int | None:
    """First frame position of the track-order part: the first contact minus ``prompt_dilate``."""
    if poses.shape[1] < 2:
        return None
    c = contact_frames(poses, cfg.prompt_contact_m, 0)
    if not bool(c.any()):
        return None
    return max(0, int(c.nonzero()[0, 0]) - cfg.prompt_dilate)


def detect_capture(
    seq: Path,
    cfg: Config,
    work: Path,
    pose: PoseModel | None = None,
    detector: PersonDetector | None = None,
    device: torch.device | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[Capture, DetectResult, str]:
    """Stage 0 on a sequence folder: the capture with its detections, the result and its cache key.

    Args:
        seq: the sequence folder (cameras in ``colmap/workplace``, frames per :mod:`~h4d_fast.io.frames`).
        cfg: the whole configuration (``detect`` and, for the tracks between passes, the keypoint stages).
        work: cache folder (``work/detect*.npz``, ``work/detect_track/``).
        pose, detector: models (default: :func:`load_models` from ``cfg.detect``).
        device: compute device (default ``cfg.run.device``).
    """
    log = log or (lambda s: None)
    dcfg = cfg.detect
    device = device or resolve_device(cfg.run.device)
    seq, work = Path(seq), Path(work)
    cams, names, init_boxes, init_valid = read_cameras(seq)
    sources = frame_sources(seq, cams.names)
    frame_ids = sequence_frame_ids(sources)
    F, V = len(frame_ids), len(cams)
    given = (pose, detector)
    loaded: list[tuple[PoseModel, PersonDetector]] = []

    def models() -> tuple[PoseModel, PersonDetector]:
        """The models, loaded at first need (not when every part comes from the cache)."""
        if not loaded:
            p, d = given
            if p is None or d is None:
                p0, d0 = load_models(dcfg, device)
                p, d = p or p0, d or d0
            loaded.append((p, d))
        return loaded[0]

    cache = StageCache(work, enabled=not force)
    cfgd = cfg.to_dict()
    d1 = {k: v for k, v in cfgd["detect"].items()
          if not k.startswith("prompt") and k not in ("run", "batch_frames", "crop_batch", "decode_threads", "decoder", "min_visible_joints")}
    base = {"frames": frames_fingerprint(sources, frame_ids), "models": model_key(dcfg, *given),
            "init": None if init_boxes is None else hashlib.sha256(init_boxes.numpy().tobytes()).hexdigest()[:16], "names": names}
    key1 = cache.key("detect_pass1", json.dumps(base, sort_keys=True), d1)
    counters = Counters()
    stats: dict[str, Any] = {"frames": F, "cameras": V, "model": dcfg.model, "detector": dcfg.detector}
    loader_kw = dict(batch_frames=dcfg.batch_frames, device=device, threads=dcfg.decode_threads, decoder=dcfg.decoder)
    t0 = time.perf_counter()
    hit = cache.load("detect_pass1", key1)
    if hit is not None:
        flat1 = FlatDetections.from_arrays(hit)
        log(f"  {'detect':<10} cached")
    else:
        with FrameLoader(sources, frame_ids, thumb_side=dcfg.detector_size, **loader_kw) as loader, \
                Progress("detect", F, enabled=cfg.run.progress) as bar:
            stats["decoder"] = loader.decoder
            flat1 = first_pass(loader, *models(), dcfg, cams.size, init_boxes, init_valid, counters, bar.update)
        cache.save("detect_pass1", key1, flat1.as_arrays())
        stats["pass1_s"] = time.perf_counter() - t0
        log(f"  {'detect':<10} {stats['pass1_s']:7.2f} s  {F} frames x {V} cameras, {counters.n['crops']} crops")
    stats["pass1_detections"] = int(flat1.f.shape[0])
    if not names:
        n, how = _estimate_people(cams, flat1, F)
        names = [f"aria{i + 1:02d}" for i in range(max(1, n))]
        stats["people_estimate"] = how
        log(f"  {'people':<10} {len(names)} ({how})")
    det1, slot1 = flat1.pack(F, V)
    flat, key = flat1, key1
    if dcfg.prompt and F > 1:
        cap1 = Capture(cams, det1, list(frame_ids), names, init_boxes, init_valid, name=seq.name)
        tcfg = replace(cfg, run=replace(cfg.run, progress=False))
        res = run_keypoints(cap1, work / "detect_track", tcfg, input_key=key1, force=force)
        key = cache.key("detect", key1 + "|" + res.extra["keys"]["refine"], cfgd["detect"])
        hit2 = cache.load("detect", key)
        if hit2 is not None:
            flat = FlatDetections.from_arrays(hit2)
            stats.update(json.loads(str(hit2["stats_json"])))
            log(f"  {'prompt':<10} cached")
        else:
            t1 = time.perf_counter()
            track = res.poses3d.float().clone()
            c0 = first_contact(track, dcfg)
            plan = plan_prompts(track, cams, det1, dcfg, until=c0, pose=models()[0])
            pre = plan.frames
            keep = ~plan.drop[flat1.f, flat1.v, slot1]
            flat_pre = FlatDetections.cat([])
            if pre:
                with FrameLoader(sources, frame_ids, positions=pre, **loader_kw) as loader, \
                        Progress("prompt", len(pre), enabled=cfg.run.progress) as bar:
                    flat_pre = prompted_pass(loader, models()[0], plan, dcfg, cams.size, counters, bar.update)
            flat = FlatDetections.cat([flat1.select(keep), flat_pre])
            st2: dict[str, Any] = {"prompted_before_contact": plan.reasons, "prompted_frames_before_contact": len(pre),
                                   "first_contact": c0, "replaced_before_contact": int((~keep).sum())}
            if c0 is not None:
                track[c0:] = 0
                with FrameLoader(sources, frame_ids, positions=list(range(c0, F)), **loader_kw) as loader, \
                        Progress("contact", F - c0, enabled=cfg.run.progress) as bar:
                    flat, track = causal_pass(loader, models()[0], flat, track, cams, len(names), cfg, counters, bar.update,
                                              fallback=res.poses3d.float())
                st2["track_order_frames"] = F - c0
            stats.update(st2)
            stats["pass2_s"] = time.perf_counter() - t1
            cache.save("detect", key, {**flat.as_arrays(), "stats_json": np.array(json.dumps(st2))})
            log(f"  {'prompt':<10} {stats['pass2_s']:7.2f} s  before contact: {len(pre)} frames {plan.reasons}; "
                + (f"track order from frame position {c0}" if c0 is not None else "no contact"))
    det, _ = flat.pack(F, V)
    stats["detections"] = int(flat.f.shape[0])
    stats["seconds"] = {k: round(v, 4) for k, v in counters.t.items()}
    stats["counts"] = dict(counters.n)
    if counters.t["pose"] > 0:
        stats["crops_per_s"] = counters.n["crops"] / max(1e-9, counters.t["crop"] + counters.t["pose"])
    capture = Capture(cams, det, list(frame_ids), names, init_boxes, init_valid, name=seq.name)
    return capture, DetectResult(det, list(frame_ids), names, stats), key


# ------------------------------------------------------------ entry points
def needs_detection(seq: Path, cfg: Config) -> bool:
    """Whether ``h4d run`` runs stage 0 on ``seq`` (``detect.run``: auto = the sequence has images or
    imported videos and no 2D detections)."""
    from ..io.colmap import read_colmap
    from ..io.frames import has_frame_sources
    from ..io.harmony4d import SequenceLayout

    mode = cfg.detect.run
    if mode == "never":
        return False
    if mode == "always":
        return True
    L = SequenceLayout(Path(seq))
    if L.poses2d.is_dir() and L.detection_cameras():
        return False
    if not (L.colmap / "cameras.txt").is_file() or not (L.colmap / "images.txt").is_file():
        return False  # read_sequence names the missing file
    return has_frame_sources(seq, read_colmap(L.colmap, "auto").names)


DETECT_INFO = "detect.json"
"""``SEQ/detect.json``: written by ``h4d detect`` beside the detections it made (model, settings, figures)."""


def write_detections(seq: Path, capture: Capture, result: DetectResult, cfg: Config, overwrite: bool = False) -> Path:
    """Write the detections as ``SEQ/processed_data/poses2d/camXX/rgb/%05d.npy`` (all files into a
    temporary folder first, which then replaces ``poses2d`` whole: a failure leaves the old one),
    ``SEQ/detect.json`` and, when the people were estimated, their names in ``SEQ/sequence.json``.

    Detections that did not come from ``h4d detect`` are replaced only with ``overwrite``.
    """
    import shutil

    from ..errors import OutputError
    from ..io.atomic import write_json
    from ..io.detections import read_json, unpack_detections, write_frame_npy
    from ..io.harmony4d import SEQUENCE_INFO, SequenceLayout
    from ..io.parallel import for_each_file

    seq = Path(seq)
    L = SequenceLayout(seq)
    if L.poses2d.is_dir() and any(L.poses2d.iterdir()) and not (seq / DETECT_INFO).is_file() and not overwrite:
        raise OutputError(L.poses2d, "holds 2D detections that h4d detect did not make; pass --overwrite to replace them")
    tmp = L.processed / f".poses2d.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    per_camera = unpack_detections(result.detections)
    names = capture.cameras.names
    tasks = [(v, f) for v in range(len(names)) for f in range(len(result.frame_ids))]
    try:
        for_each_file(lambda t: write_frame_npy(tmp / names[t[0]] / "rgb" / f"{result.frame_ids[t[1]]:05d}.npy", per_camera[t[0]][t[1]]), tasks)
        old = L.processed / f".poses2d.old-{os.getpid()}"
        if L.poses2d.exists():
            os.replace(L.poses2d, old)
        os.replace(tmp, L.poses2d)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    info = seq / SEQUENCE_INFO
    meta = read_json(info) if info.is_file() else {"name": seq.name, "cameras": list(names), "frames": len(result.frame_ids)}
    if isinstance(meta, dict) and meta.get("person_names") != list(result.person_names):
        if capture.init_boxes is None:  # names came from the estimate (or the defaults)
            meta["person_names"] = list(result.person_names)
            write_json(info, meta)
    write_json(seq / DETECT_INFO, {"model": cfg.detect.model, "detector": cfg.detect.detector,
                                  "settings": cfg.to_dict()["detect"], "person_names": list(result.person_names),
                                  "stats": result.stats})
    return L.poses2d
