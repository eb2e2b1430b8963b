"""Stages 1-4 of :data:`~h4d_fast.pipeline.driver.STAGES`, the keypoint stages: filtering and OKS
de-duplication, triangulation with assignment and tracking, refinement; and :func:`run_keypoints`,
which runs them on a loaded capture (``h4d run`` through the driver, stage 0 between its passes,
``h4d eval cameras``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import Config
from ..data import Capture, Detections
from ..progress import Progress
from .driver_parts import Arrays, RunResult, RunState, Stage, check_output_dir, run_stages
from .filter import filter_detections
from .refine import refine_sequence
from .triangulate import triangulate_sequence


# ---- stage 1: filtering + OKS dedup
def _filter_key(st: RunState) -> tuple[str, Any]:
    F, V, D = st.capture.detections.shape
    return st.input_key + f"|{F}x{V}x{D}", st.cfgd["filter"]


def _filter(st: RunState) -> tuple[Arrays, dict]:
    filtered, stats = filter_detections(st.det, st.cams.size, st.cfg.filter, backend=st.cfg.run.backend)
    arrays = {"valid": filtered.valid.cpu().numpy(), "kpts": filtered.kpts.cpu().numpy().astype(np.float32)}
    _use_filter(st, arrays, {})
    return arrays, stats.as_dict()


def _use_filter(st: RunState, a: Arrays, stats: dict) -> None:
    ident, dev = st.capture.detections.identity, st.seq_device
    st.det_f = Detections(torch.from_numpy(a["kpts"]).to(device=dev, dtype=st.dtype), st.det.boxes.to(dev),
                          torch.from_numpy(a["valid"]).to(dev), None if ident is None else ident.to(dev))


# ---- stages 2+3: triangulation, identity (assignment) and tracking
def _track_key(st: RunState) -> tuple[str, Any]:
    ident = st.capture.detections.identity
    names, _ = st.people
    return st.keys["filter"], {"identity": st.cfgd["identity"], "triangulation": st.cfgd["triangulation"], "P": st.capture.num_people,
                               "names": names, "prompts": "" if ident is None else hashlib.sha256(ident.cpu().numpy().tobytes()).hexdigest()[:16]}


def _track(st: RunState) -> tuple[Arrays, dict]:
    cap, cfg = st.capture, st.cfg
    names, max_people = st.people
    with Progress("track", cap.num_frames, enabled=cfg.run.progress) as bar:
        res = triangulate_sequence(
            st.det_f, st.cams.to(device=st.seq_device), cap.num_people, cfg.identity, cfg.triangulation,
            init_boxes=cap.init_boxes, init_valid=cap.init_valid, backend=cfg.run.backend, progress=bar.update,
            person_names=names, max_people=max_people,
        )
    valid = res.poses[..., 3] > 0
    stats = {"valid_fraction": float(valid.float().mean()) if valid.numel() else 0.0,
             "mean_inliers": float(res.n_inliers[valid].float().mean()) if bool(valid.any()) else 0.0,
             **{k: v for k, v in res.stats.items() if isinstance(v, (int, float))}}
    arrays = {"poses": res.poses.cpu().numpy(), "assign": res.assign.cpu().numpy(), "n_inliers": res.n_inliers.cpu().numpy(),
              "present": res.present.cpu().numpy(), "person_names": np.asarray(res.person_names, dtype=str)}
    _use_track(st, arrays, stats)
    return arrays, stats


def _use_track(st: RunState, a: Arrays, stats: dict) -> None:
    st.raw = torch.from_numpy(a["poses"])
    st.present = torch.from_numpy(a["present"]).bool() if "present" in a else torch.ones(st.raw.shape[:2], dtype=torch.bool)
    st.person_names = [str(s) for s in a["person_names"]] if "person_names" in a else list(st.capture.person_names)
    st.tracked = {"assign": a["assign"], "n_inliers": a["n_inliers"]}


# ---- stage 4: clean-up + global refinement
def _refine_key(st: RunState) -> tuple[str, Any]:
    return st.keys["track"], st.cfgd["refine"]


def _refine(st: RunState) -> tuple[Arrays, dict]:
    refined, stats = refine_sequence(st.raw.to(device=st.seq_device, dtype=st.dtype), st.cfg.refine, st.present.to(st.seq_device))
    arrays = {"poses": refined.cpu().numpy()}
    _use_refine(st, arrays, {})
    return arrays, stats.as_dict()


def _use_refine(st: RunState, a: Arrays, stats: dict) -> None:
    st.result = RunResult(torch.from_numpy(a["poses"]), st.raw, list(st.capture.frame_ids), st.person_names, st.records, st.out,
                          extra={**st.tracked, "keys": st.keys}, present=st.present)


FILTER = Stage("filter", "1. filtering, OKS de-duplication", ("capture", "input_key"), ("det_f",),
               key=_filter_key, compute=_filter, restore=_use_filter)
TRACK = Stage("track", "2-3. triangulation, assignment, tracking", ("capture", "det_f"), ("raw", "present", "person_names", "tracked"),
              key=_track_key, compute=_track, restore=_use_track)
REFINE = Stage("refine", "4. clean-up, global refinement", ("capture", "raw", "present", "person_names", "tracked"), ("result",),
               key=_refine_key, compute=_refine, restore=_use_refine)
KEYPOINT_STAGES = (FILTER, TRACK, REFINE)


def run_keypoints(
    capture: Capture,
    out: Path,
    cfg: Config,
    input_key: str = "",
    force: bool = False,
    log: Callable[[str], None] | None = None,
    stop_after: str | None = None,
) -> RunResult:
    """Stages 1-4 (:data:`KEYPOINT_STAGES`) on an in-memory capture, cached under ``out``.

    Args:
        capture: the loaded capture.
        out: output folder (created; must be writable).
        input_key: fingerprint of the inputs (part of every stage's cache key).
        stop_after: stop (raising ``KeyboardInterrupt``) after this stage -- used to test resume.
    """
    out = Path(out)
    check_output_dir(out)
    st = RunState(out, cfg, force=force, log=log, stop_after=stop_after, capture=capture, input_key=input_key)
    return run_stages(KEYPOINT_STAGES, st).result
