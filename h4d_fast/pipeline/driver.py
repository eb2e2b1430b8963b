"""The pipeline as the paper runs it: :data:`STAGES`, top to bottom, run by one loop
(:func:`run_stages`) that caches, times, logs and resumes each of them.

===============  ========================================================================  =======
stage            the paper's step                                                          cached
===============  ========================================================================  =======
``detect``       0: 2D keypoints from the images (only a sequence with images and no       its own
                 2D detections; :mod:`~h4d_fast.pipeline.detect`)
``load``         the capture: cameras, 2D detections, first-frame identity boxes           no
``filter``       1: filter the 2D detections, OKS de-duplication                           yes
``track``        2-3: triangulate, assign the detections to people, track them             yes
``refine``       4: clean-up and global refinement of the 3D keypoints                     yes
``export``       the 3D keypoints (``poses3d.npz``, ``processed_data/poses3d``)            no
``fit``          5: SMPL fit with its collision stage (``fit_stats.json``)                 yes
``export_smpl``  6: the Harmony4D export (``processed_data/sequence.npz``, ``smpl/``, ...)  no
===============  ========================================================================  =======

Stages 1-4 are declared in :mod:`~h4d_fast.pipeline.keypoint_stages` (stage 0 runs them between
its passes); the loop, the :class:`Stage` record and the :class:`RunState` the stages read and
make, in :mod:`~h4d_fast.pipeline.driver_parts`.
:func:`~h4d_fast.pipeline.run.run_sequence` (``h4d run``) runs them all on a sequence folder;
:func:`run_keypoints` runs ``filter`` to ``refine`` on a loaded capture, :func:`run_fit` ``fit`` and
``export_smpl`` after them.

The loop, per stage: a stage whose ``skip`` names a reason is left out. A cached stage's result is
written atomically to ``OUT/.h4d/<stage>.npz`` with a key (:meth:`StageCache.key`): a hash of the
stage's name, its code (:mod:`~h4d_fast.pipeline.code_keys`: editing a stage's modules changes its
key), its configuration and the key of the stage before it. A rerun loads every stage whose key still
matches and recomputes from the first that does not (``force=True`` recomputes everything). Each
stage is timed (after a device sync where it computed on the device) into a :class:`StageRecord`
(``OUT/timing.json``; bench/ reads the names), and gets a progress line.

Outputs: each export writes its consolidated file first (``poses3d.npz``,
``processed_data/sequence.npz``) and hands the per-frame files to background writer processes
(:mod:`h4d_fast.io.frame_files`); :func:`~h4d_fast.pipeline.run.run_sequence` waits for them before
writing ``timing.json`` and ``config.toml`` (the last files of a finished run), unless the caller
takes that over (``wait_files=False``, then :meth:`RunResult.finish`; ``run-many`` computes the next
capture meanwhile).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import Config
from ..data import Capture
from ..io import atomic, faults
from ..progress import Progress
from .driver_parts import (
    CACHE_DIR,
    Arrays,
    Done,
    RunResult,
    RunState,
    Stage,
    StageCache,
    StageRecord,
    check_output_dir,
    fingerprint_inputs,
    load_body,
    resolve_device,
    resolve_people,
    run_stages,
    sequential_device,
    sync_device,
)
from .keypoint_stages import FILTER, KEYPOINT_STAGES, REFINE, TRACK, run_keypoints

__all__ = [
    "CACHE_DIR", "FIT_COLLISION_OFF_FILE", "FIT_STAGES", "KEYPOINT_STAGES", "STAGES", "Done", "RunResult", "RunState", "Stage",
    "StageCache", "StageRecord", "check_output_dir", "fingerprint_inputs", "load_body", "resolve_device", "resolve_people",
    "run_fit", "run_keypoints", "run_stages", "sequential_device", "sync_device", "write_keypoint_outputs",
]

FIT_COLLISION_OFF_FILE = "fit_collision_off.npz"  # parameters of the fit without the collision term (compare_collision)


# ============================================================================ the stages
# ---- stage 0: 2D keypoints from the images
def _skip_detect(st: RunState) -> str | None:
    if isinstance(st.capture, Capture) or st.seq is None:  # already loaded (else None, or a load the CLI started early)
        return ""
    from .detect import needs_detection

    return None if needs_detection(st.seq, st.cfg) else ""


def _detect(st: RunState) -> Done:
    from .detect import detect_capture

    st.capture, res, key = detect_capture(st.seq, st.cfg, st.out / CACHE_DIR, force=st.force, log=st.log)
    st.input_key += "|detect:" + key
    keys = ("frames", "cameras", "detections", "crops_per_s", "first_contact", "pass1_s", "pass2_s")
    return Done({k: res.stats[k] for k in keys if k in res.stats and isinstance(res.stats[k], (int, float, str))},
                cached="pass1_s" not in res.stats)


# ---- the load
def _load(st: RunState) -> Done:
    from ..io.harmony4d import read_sequence
    from ..io.sequence_checks import check_two_views

    if st.capture is None:
        st.capture = read_sequence(st.seq)
    while not isinstance(st.capture, Capture):  # a SequenceLoad, or a future of one
        st.capture = st.capture.result()
    cap = st.capture
    if st.seq is not None:
        check_two_views(st.seq, list(cap.cameras.names))
    return Done(line=f"frames={cap.num_frames}, cameras={cap.num_views}, people={cap.num_people}")


# ---- the 3D keypoints
def _export_keypoints(st: RunState) -> Done:
    st.result.extra.setdefault("pending", []).append(write_keypoint_outputs(st.result, st.out, wait=False))
    faults.point("after:poses3d.npz", st.out)
    return Done()


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


# ---- stage 5: the SMPL fit, with its collision stage
def _skip_fit(st: RunState) -> str | None:
    if not st.cfg.fit.enabled:
        return ""
    return None if st.result.person_names else "nobody was found"


def _fit_key(st: RunState) -> tuple[str, Any]:
    return st.keys["refine"], {"fit": st.cfgd["fit"], "body": str(getattr(st.body, "path", st.cfg.fit.body_model))}


def _fit(st: RunState) -> tuple[Callable[[], Arrays], dict]:
    from .fit import fit_iterations, fit_sequence

    r = st.result
    with Progress("fit", fit_iterations(st.cfg.fit, len(r.person_names)), enabled=st.cfg.run.progress) as bar:
        st.fit = fit_sequence(r.poses3d.to(st.device), st.body, st.cfg.fit, st.device, progress=bar.update, present=r.presence,
                              measure_penetration=not _export_measures_penetration(st))
    return st.fit.as_arrays, st.fit.stats  # the copy off the device after the stage's time


def _export_measures_penetration(st: RunState) -> bool:
    """Whether the export will measure the fitted meshes' interpenetration (its host contact kernel,
    :func:`h4d_fast.ops.contact.export_contact`) so that the fit need not: contact labels on, the
    kernel on the host, two or more people. The export then writes ``penetration_after_cm3`` into
    the fit's stats and ``fit_stats.json`` (a run stopped between the two has it after its rerun)."""
    from ..ops.contact import contact_on_host

    return bool(st.cfg.contact.export) and len(st.result.person_names) >= 2 and contact_on_host()


def _use_fit(st: RunState, a: Arrays, stats: dict) -> None:
    from .fit import FitResult

    st.fit = FitResult.from_arrays(a, stats, device=st.device)


def _fit_summary(stats: dict) -> dict:
    keys = ("kp_error_mm", "iterations", "penetration_before_cm3", "penetration_after_cm3", "penetration_reduction", "seconds")
    return {k: stats[k] for k in keys if k in stats and isinstance(stats[k], (int, float))}


def _fit_outputs(st: RunState) -> None:
    atomic.write_json(st.out / "fit_stats.json", st.fit.stats)
    faults.point("after:fit_stats", st.out)
    off_file = st.out / FIT_COLLISION_OFF_FILE
    if st.fit.collision_off is not None:  # the compared fit without the collision term (h4d eval reports its accuracy)
        atomic.write_npz(off_file, **{k: v.detach().float().cpu().numpy() for k, v in st.fit.collision_off.items()})
    elif off_file.exists():
        off_file.unlink()
    st.result.extra["fit"] = st.fit


# ---- stage 6: the Harmony4D export
def _skip_export_smpl(st: RunState) -> str | None:
    return None if st.fit is not None else ""


def _export_smpl(st: RunState) -> Done:
    from .export import export_harmony4d

    r, cfg = st.result, st.cfg
    stats = export_harmony4d(st.out / "processed_data", st.fit, st.body, r.frame_ids, r.person_names, cameras=st.capture.cameras,
                             write_poses3d=False, present=r.presence.cpu().numpy(), wait=False,
                             contact_mm=cfg.contact.contact_mm if cfg.contact.export else None)
    r.extra.setdefault("pending", []).append(stats.pop("pending"))
    if "penetration_cm3" in stats and "penetration_after_cm3" not in st.fit.stats:  # the fit left the measure to the export
        st.fit.stats.update(penetration_after_cm3=stats["penetration_cm3"], penetration_max_frame_cm3=stats["penetration_max_frame_cm3"],
                            penetration_measured_by="export")
        atomic.write_json(st.out / "fit_stats.json", st.fit.stats)
    return Done({k: v for k, v in stats.items() if isinstance(v, (int, float, str))},
                line=f"sequence.npz; {stats['files'] - 1} files of smpl/, poses2d/, bbox/ being written")


DETECT = Stage("detect", "0. 2D keypoints from the images", ("seq",), ("capture", "input_key"), run=_detect, skip=_skip_detect)
LOAD = Stage("load", "the capture", ("seq", "capture"), ("capture",), run=_load, sync=False)
EXPORT = Stage("export", "the 3D keypoints", ("result",), (), run=_export_keypoints, sync=False)
FIT = Stage("fit", "5. SMPL fit and its collision stage", ("result",), ("fit",), key=_fit_key, compute=_fit, restore=_use_fit,
            skip=_skip_fit, summary=_fit_summary, then=_fit_outputs)
EXPORT_SMPL = Stage("export_smpl", "6. Harmony4D export", ("capture", "result", "fit"), (), run=_export_smpl, skip=_skip_export_smpl,
                    label="export")

#: the pipeline, in the paper's order (stages 1-4: :mod:`~h4d_fast.pipeline.keypoint_stages`)
STAGES: tuple[Stage, ...] = (DETECT, LOAD, FILTER, TRACK, REFINE, EXPORT, FIT, EXPORT_SMPL)
FIT_STAGES: tuple[Stage, ...] = (FIT, EXPORT_SMPL)


# ============================================================================ entry points
def run_fit(result: RunResult, capture: Capture, out: Path, cfg: Config, force: bool = False,
            log: Callable[[str], None] | None = None, stop_after: str | None = None):
    """Stage 5 (SMPL fit, cached like the others) and stage 6 (Harmony4D export) after the keypoints
    (:data:`FIT_STAGES`; their records go to ``result.stages``).

    Returns the :class:`~h4d_fast.pipeline.fit.FitResult` (also stored in ``result.extra['fit']``).
    """
    st = RunState(Path(out), cfg, force=force, log=log, stop_after=stop_after, capture=capture,
                  records=result.stages, keys=result.extra["keys"], result=result)
    return run_stages(FIT_STAGES, st).fit
