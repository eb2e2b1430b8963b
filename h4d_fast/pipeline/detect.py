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
   from the track, not from the detector), then the chunk is tracked before the next one is
   prompted. First-pass detections nobody's prompt matches (people without a track) stay.

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
    pose = load_pose_model(cfg.model or "default", device=device)
    det = load_person_detector(cfg.detector or "default", device=device)
    return pose, det


def model_key(cfg: DetectConfig, pose: PoseModel, detector: PersonDetector | None) -> dict[str, Any]:
    """What identifies the models in a cache key (file size and time for a user's file)."""
    def ident(spec: str, obj: Any) -> dict[str, Any]:
        d: dict[str, Any] = {"spec": spec, "name": getattr(obj, "name", type(obj).__name__)}
        p = Path(spec)
        if spec not in ("", "default") and p.is_file():
            st = p.stat()
            d.update(path=str(p.resolve()), size=st.st_size, mtime=st.st_mtime_ns)
        return d

    return {"pose": ident(cfg.model, pose), "detector": ident(cfg.detector, detector) if detector is not None else None,
            "input_size": list(pose.input_size), "box_scale": float(pose.box_scale)}


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
        work: cache folder (``work/detect*.npz``, ``work/detect_track/``, ``work/causal_window/``).
        pose, detector: models (default: :func:`load_models` from ``cfg.detect``).
        device: compute device (default ``cfg.run.device``).
    """
    from .driver import StageCache, resolve_device, run_keypoints

    log = log or (lambda s: None)
    dcfg = cfg.detect
    device = device or resolve_device(cfg.run.device)
    seq, work = Path(seq), Path(work)
    cams, names, init_boxes, init_valid = read_cameras(seq)
    sources = frame_sources(seq, cams.names)
    frame_ids = sequence_frame_ids(sources)
    F, V = len(frame_ids), len(cams)
    if pose is None or detector is None:
        p0, d0 = load_models(dcfg, device)
        pose, detector = pose or p0, detector or d0
    cache = StageCache(work, enabled=not force)
    cfgd = cfg.to_dict()
    d1 = {k: v for k, v in cfgd["detect"].items()
          if not k.startswith("prompt") and k not in ("run", "batch_frames", "crop_batch", "decode_threads", "decoder", "min_visible_joints")}
    base = {"frames": frames_fingerprint(sources, frame_ids), "models": model_key(dcfg, pose, detector),
            "init": None if init_boxes is None else hashlib.sha256(init_boxes.numpy().tobytes()).hexdigest()[:16], "names": names}
    key1 = cache.key("detect_pass1", json.dumps(base, sort_keys=True), d1)
    counters = Counters()
    stats: dict[str, Any] = {"frames": F, "cameras": V, "model": pose.name, "detector": detector.name}
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
            flat1 = first_pass(loader, pose, detector, dcfg, cams.size, init_boxes, init_valid, counters, bar.update)
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
            plan = plan_prompts(track, cams, det1, dcfg, until=c0)
            pre = plan.frames
            keep = ~plan.drop[flat1.f, flat1.v, slot1]
            flat_pre = FlatDetections.cat([])
            if pre:
                with FrameLoader(sources, frame_ids, positions=pre, **loader_kw) as loader, \
                        Progress("prompt", len(pre), enabled=cfg.run.progress) as bar:
                    flat_pre = prompted_pass(loader, pose, plan, dcfg, cams.size, counters, bar.update)
            flat = FlatDetections.cat([flat1.select(keep), flat_pre])
            st2: dict[str, Any] = {"prompted_before_contact": plan.reasons, "prompted_frames_before_contact": len(pre),
                                   "first_contact": c0, "replaced_before_contact": int((~keep).sum())}
            if c0 is not None:
                track[c0:] = 0
                cap_f = Capture(cams, flat.pack(F, V)[0], list(frame_ids), names, init_boxes, init_valid, name=seq.name)
                with FrameLoader(sources, frame_ids, positions=list(range(c0, F)), **loader_kw) as loader, \
                        Progress("contact", F - c0, enabled=cfg.run.progress) as bar:
                    flat, track = causal_pass(loader, pose, flat, track, cams, cap_f, cfg, work, counters, bar.update)
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
