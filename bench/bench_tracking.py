"""The tracking stages alone: filter, track (identity + triangulation) and refine, timed and scored.

    python bench/bench_tracking.py --device cuda --json $OUT/tracking.json          # issue 13's stage budgets
    python bench/bench_tracking.py --device cpu --frames 300                          # the CPU path
    python bench/bench_tracking.py --mode people --people 2,4,8 --device cuda         # issue 14: people who come and go

``--mode stages`` (default): the synthetic capture of ``h4d demo`` (``--frames`` x ``--cameras``, two
people in close contact, ``--body default`` drives it with the body model like the demo, ``none``
with the procedural skeleton), then per variant the median over ``--repeats`` runs (after one
untimed warm-up; CUDA synchronised around each stage) of

* ``filter``: :func:`h4d_fast.pipeline.filter.filter_detections` on the device,
* ``track``: :func:`h4d_fast.pipeline.triangulate.triangulate_sequence` on the device,
* ``refine``: :func:`h4d_fast.pipeline.refine.refine_sequence` on the device,

for the variants ``batched`` (the default configuration: on CUDA batches of ``identity.batch_frames``
frames, on the CPU the compiled loop) and ``frame_loop`` (``identity.batch_frames = 1``, the torch
frame-by-frame reference: about what every version before the batched tracker ran). Accuracy of
each: MPJPE of the raw and refined keypoints against the ground truth, identity switches, recall.
With ``--profile`` the CUDA kernels launched by one track run are counted (torch.profiler).
Budgets (issue 13, 600 x 20 x 2 on one GPU): filter 0.05 s, track 0.4 s, refine 0.2 s.

``--mode people``: for each N in ``--people``, a capture of N people who enter, interact in pairs,
leave and come back (``--frames`` x ``--cameras``), tracked with no count given; reports recall,
ghost person-frames, identity switches, MPJPE, PCP, people found, and the track stage's seconds per
frame (median of ``--repeats``) to show how it grows with N.

The generator puts the camera ring around the floor area the people use, so a larger crowd gets a
larger ring (seed 0, 300 frames: 5.5 m from the people to the cameras for 2 people, 7.9 m for 8)
and, with the same lenses and the same pixel noise, proportionally larger 3D errors. ``--rig common``
gives every N the ring of the largest N (same seed: the same cameras), so that the MPJPE of
different N compares crowds, not camera distances; ``own`` (default) keeps each capture's ring.
Each row records ``camera_distance_m`` (mean distance of the present people's hips to the cameras)
and ``raw_with_true_assignment``: the raw keypoints triangulated with the generator's labels as the
assignment (a perfect tracker), beside the tracker's ``raw``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._micro import versions  # noqa: E402
from h4d_fast.config import Config  # noqa: E402
from h4d_fast.eval.skeleton import skeleton_report  # noqa: E402
from h4d_fast.pipeline.filter import filter_detections  # noqa: E402
from h4d_fast.pipeline.refine import refine_sequence  # noqa: E402
from h4d_fast.pipeline.triangulate import triangulate_sequence  # noqa: E402
from h4d_fast.synth import make_capture  # noqa: E402

BUDGETS_S = {"filter": 0.05, "track": 0.4, "refine": 0.2}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn, dev: torch.device, repeats: int):
    out = fn()  # warm-up (compilation, caches)
    ts = []
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        out = fn()
        _sync(dev)
        ts.append(time.perf_counter() - t0)
    return out, statistics.median(ts), ts


def _config(args) -> Config:
    from h4d_fast.config import apply_overrides

    return apply_overrides(Config(), args.overrides)


def _score(poses, present, gt) -> dict:
    rep = skeleton_report(poses.cpu(), gt.poses3d, None if present is None else present.cpu())
    rep.pop("_aligned")
    return {k: rep[k] for k in ("mpjpe_mm", "recall", "ghost_person_frames", "ghost_fraction", "identity_swaps")} | {
        "pcp": rep["pcp"]["mean"], "people": rep["output_people"]}


def run_stages(cap, gt, dev: torch.device, repeats: int, cfg: Config, profile: bool) -> dict:
    det = cap.detections.to(device=dev)
    cams = cap.cameras.to(device=dev)
    filt, t_filter, ts_f = _timed(lambda: filter_detections(det, cams.size, cfg.filter)[0], dev, repeats)

    def track():
        return triangulate_sequence(filt, cams, cap.num_people, cfg.identity, cfg.triangulation, cap.init_boxes, cap.init_valid,
                                    person_names=cap.person_names)

    res, t_track, ts_t = _timed(track, dev, repeats)
    ref, t_refine, ts_r = _timed(lambda: refine_sequence(res.poses, cfg.refine, res.present)[0], dev, repeats)
    out = {
        "stage_s": {"filter": t_filter, "track": t_track, "refine": t_refine},
        "runs_s": {"filter": ts_f, "track": ts_t, "refine": ts_r},
        "track_stats": {k: v for k, v in res.stats.items() if isinstance(v, (int, float))},
        "accuracy_raw": _score(res.poses, res.present, gt),
        "accuracy_refined": _score(ref, res.present, gt),
    }
    if profile and dev.type == "cuda":
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        with prof(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as p:
            track()
            _sync(dev)
        kernels = [e for e in p.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        out["track_cuda_kernels"] = len(kernels)
        out["track_cuda_kernels_per_frame"] = len(kernels) / cap.num_frames
    return out


def mode_stages(args) -> dict:
    dev = torch.device(args.device)
    t0 = time.perf_counter()
    cap, gt, _ = make_capture(num_frames=args.frames, num_cameras=args.cameras, seed=args.seed,
                              body=None if args.body == "none" else args.body)
    res = {"mode": "stages", "device": str(dev), "overrides": list(args.overrides), "frames": args.frames, "cameras": args.cameras, "people": cap.num_people,
           "synth_s": time.perf_counter() - t0, "budgets_s": BUDGETS_S, "variants": {}, "versions": versions()}
    if dev.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(dev)
    for name in ("batched", "frame_loop"):
        cfg = _config(args)
        if name == "frame_loop":
            cfg.identity.batch_frames = 1
        res["variants"][name] = run_stages(cap, gt, dev, args.repeats if name == "batched" else max(1, args.repeats // 2),
                                           cfg, args.profile)
        print(name, json.dumps({k: res["variants"][name][k] for k in ("stage_s", "accuracy_refined")}), flush=True)
    b = res["variants"]["batched"]["stage_s"]
    res["stage_s"] = b
    res["within_budget"] = {k: b[k] <= BUDGETS_S[k] for k in BUDGETS_S}
    return res


def _camera_distance(cap, gt, present) -> float:
    """Mean distance (m) from the present people's hip centres to the cameras."""
    R, t = cap.cameras.R.double(), cap.cameras.t.double()
    centres = -(R.transpose(-1, -2) @ t[..., None])[..., 0]  # [V, 3]
    hip = gt.poses3d[..., 11:13, :3].double().mean(-2)  # [F, P, 3]
    d = (hip[:, :, None] - centres).norm(dim=-1).mean(-1)
    return float(d[torch.as_tensor(present).bool()].mean())


def _oracle_raw(cap, gt, meta, filt, cfg: Config) -> dict:
    """The triangulation with the generator's own labels as the assignment (each person's primary
    detection in each view, where the filter kept it): what the raw keypoints would be with a
    perfect tracker. Scored like the tracker's raw keypoints."""
    from h4d_fast.pipeline.triangulate import _Tracker

    lab = meta["labels"]
    sp, prim = lab["slot_person"].to(filt.valid.device), (lab["slot_kind"].to(filt.valid.device) == 0) & filt.valid
    F, V, _ = sp.shape
    P = cap.num_people
    a = torch.full((F, V, P), -1, dtype=torch.long, device=sp.device)
    for p in range(P):
        hit = prim & (sp == p)
        a[..., p] = torch.where(hit.any(-1), hit.float().argmax(-1), torch.full_like(a[..., p], -1))
    tr = _Tracker(filt, cap.cameras.to(device=filt.valid.device), 0, cfg.identity, cfg.triangulation, None, None, "auto", None)
    Xs, oks = [], []
    for f0 in range(0, F, 64):
        fr = torch.arange(f0, min(F, f0 + 64), device=sp.device)
        keep = torch.ones(fr.numel(), V, P, filt.kpts.shape[-2], dtype=torch.bool, device=sp.device)
        X, ok, _ = tr._triangulate(fr, a[fr], keep, cfg.triangulation.conf_thr_tracked)
        Xs.append(X)
        oks.append(ok)
    present = torch.as_tensor(meta["present"]).bool().to(sp.device)
    poses = torch.cat([torch.cat(Xs), torch.cat(oks)[..., None].to(Xs[0].dtype)], -1) * present[..., None, None]
    return _score(poses, present, gt)


def mode_people(args) -> dict:
    dev = torch.device(args.device)
    counts = [int(x) for x in args.people.split(",")]
    rig: dict = {}
    rows = []
    # with a common rig the largest crowd goes first: its ring is the one every other count uses
    for n in sorted(counts, reverse=args.rig == "common"):
        t0 = time.perf_counter()
        cap, gt, meta = make_capture(num_frames=args.frames, num_cameras=args.cameras, seed=args.seed, num_people=n, enter_leave=True,
                                     body=None if args.body == "none" else args.body, **rig)
        synth_s = time.perf_counter() - t0
        if args.rig == "common" and not rig:
            rig = {"camera_radius": tuple(float(r) for r in meta["camera_radius"])}
        cfg = _config(args)
        det = cap.detections.to(device=dev)
        cams = cap.cameras.to(device=dev)
        filt, _ = filter_detections(det, cams.size, cfg.filter)
        row = {"people": n, "gt_person_frames": int(meta["present"].sum()), "synth_s": synth_s,
               "camera_radius": [float(r) for r in meta["camera_radius"]], "camera_distance_m": _camera_distance(cap, gt, meta["present"]),
               "raw_with_true_assignment": _oracle_raw(cap, gt, meta, filt, cfg)}
        for boxes in (False, True):
            def track():
                return triangulate_sequence(filt, cams, cap.num_people, cfg.identity, cfg.triangulation,
                                            cap.init_boxes if boxes else None, cap.init_valid if boxes else None,
                                            person_names=cap.person_names)

            res, t_track, _ = _timed(track, dev, args.repeats)
            ref, _ = refine_sequence(res.poses, cfg.refine, res.present)
            key = "with_first_frame_boxes" if boxes else "no_boxes"
            row[key] = {"track_s": t_track, "track_ms_per_frame": 1e3 * t_track / args.frames,
                        "raw": _score(res.poses, res.present, gt), "refined": _score(ref, res.present, gt),
                        "names": res.person_names, "track_stats": {k: v for k, v in res.stats.items() if isinstance(v, (int, float))}}
        rows.append(row)
        print(json.dumps({"people": n, "camera_distance_m": row["camera_distance_m"], "no_boxes": row["no_boxes"]["refined"],
                          "track_ms_per_frame": row["no_boxes"]["track_ms_per_frame"]}), flush=True)
    rows.sort(key=lambda r: r["people"])
    base = rows[0]["no_boxes"]["refined"]["mpjpe_mm"]
    for r in rows:  # the goal's measure: MPJPE against the smallest crowd's
        r["mpjpe_ratio_to_fewest"] = r["no_boxes"]["refined"]["mpjpe_mm"] / base
    return {"mode": "people", "device": str(dev), "frames": args.frames, "cameras": args.cameras, "seed": args.seed, "rig": args.rig,
            "rows": rows, "versions": versions()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("stages", "people"), default="stages")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--cameras", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--body", default="default", help="default (the demo's body model) or none (procedural skeleton, faster synthesis)")
    ap.add_argument("--people", default="2,4,8", help="--mode people: the people counts")
    ap.add_argument("--rig", choices=("own", "common"), default="own",
                    help="--mode people: each capture's own camera ring, or every count on the ring of the largest (compares crowds, not distances)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="count the CUDA kernels of one track run")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="configuration override for every variant (e.g. identity.batch_frames=64)")
    ap.add_argument("--json", type=Path, help="write the result here")
    args = ap.parse_args(argv)
    res = mode_stages(args) if args.mode == "stages" else mode_people(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, default=float))
    return res


if __name__ == "__main__":
    main()
