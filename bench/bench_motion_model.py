"""Which motion model guides identity better: the previous pose (the reference) or constant velocity?

For each frame rate (the synthetic 30 fps capture subsampled), run stages 1-3 with each
predictor and report identity swaps, MPJPE of the triangulation, recovered keypoints and the
predictor's own error (its prediction from the tracked 3D poses vs the ground truth of the next
frame). Usage: python bench/bench_motion_model.py [--frames 300] [--cameras 20] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from h4d_fast.config import Config  # noqa: E402
from h4d_fast.data import Detections  # noqa: E402
from h4d_fast.eval.metrics import keypoint_report  # noqa: E402
from h4d_fast.pipeline.filter import filter_detections  # noqa: E402
from h4d_fast.pipeline.identity import predict_next  # noqa: E402
from h4d_fast.pipeline.triangulate import triangulate_sequence  # noqa: E402
from h4d_fast.synth import make_capture  # noqa: E402


def prediction_error_mm(track: torch.Tensor, gt: torch.Tensor, mode: str, window: int) -> float:
    """Mean |predict(track[t-W:t]) - gt[t]| over frames and valid keypoints (mm)."""
    errs = []
    for t in range(window, track.shape[0]):
        h = track[t - window:t]
        pred, ok = predict_next(h[..., :3], h[..., 3] > 0, mode)
        d = (pred - gt[t, ..., :3]).norm(dim=-1)[ok]
        errs.append(d)
    return float(torch.cat(errs).mean() * 1000) if errs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--cameras", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 3, 4], help="frame subsampling factors")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cap, gt, _ = make_capture(num_frames=args.frames, num_cameras=args.cameras, seed=args.seed)
    cfg = Config()
    rows = []
    for step in args.steps:
        idx = torch.arange(0, cap.num_frames, step)
        det = cap.detections
        sub = Detections(det.kpts[idx], det.boxes[idx], det.valid[idx])
        filt, _ = filter_detections(sub, cap.cameras.size, cfg.filter)
        g = gt.poses3d[idx].float()
        for mode in ("previous", "constant-velocity"):
            c = dataclasses.replace(cfg.identity, predictor=mode)
            t0 = time.perf_counter()
            res = triangulate_sequence(filt, cap.cameras, cap.num_people, c, cfg.triangulation, cap.init_boxes, cap.init_valid)
            dt = time.perf_counter() - t0
            rep = keypoint_report(res.poses, g)
            rows.append({
                "fps": 30.0 / step, "predictor": mode, "identity_swaps": rep["identity_swaps"],
                "mpjpe_mm": round(rep["mpjpe_mm"], 3), "recovered": round(rep["recovered"], 5),
                "prediction_error_mm": round(prediction_error_mm(res.poses.double(), gt.poses3d[idx], mode, cfg.identity.window), 2),
                "seconds": round(dt, 2),
            })
            print(json.dumps(rows[-1]), flush=True)
    print("\n| fps | predictor | prediction error (mm) | identity swaps | MPJPE (mm) | recovered |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fps']:.1f} | {r['predictor']} | {r['prediction_error_mm']:.1f} | {r['identity_swaps']} | {r['mpjpe_mm']:.2f} | {100 * r['recovered']:.2f}% |")
    if args.json:
        args.json.write_text(json.dumps({"frames": args.frames, "cameras": args.cameras, "seed": args.seed, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
