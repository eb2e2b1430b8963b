"""Benchmark of RANSAC view-set triangulation (and weighted DLT) per backend, at the paper's size.

    python bench/bench_triangulate.py --device cuda --json bench/results/triangulate_cuda.json
    python bench/bench_triangulate.py --device cpu --frames 20

Standalone. Workload: ``--cameras`` ring cameras (radius 4.5 m, 0.8-2.6 m high, looking at the
centre, f = 1800 px, 3840x2160), ``frames x people x joints`` random points in a 2 m box around
(0, 0, 1) -- 600 x 2 x 17 = 20,400 points x 20 views (190 view pairs) by default -- projected to
normalized coordinates with 2 px Gaussian noise; 10% of the observations are outliers (uniform in
the image), confidences are U(0.5, 1) for inliers and U(0.2, 1) for outliers (conf_thr 0.5).

Times ``triangulate_ransac`` (and ``triangulate_dlt`` with the confidences as weights) for every
backend that can run on the device -- CUDA: ``triton.testing.do_bench`` median (or CUDA events),
CPU: perf_counter median, after warm-up -- and reports MPJPE (mm) of each backend's valid points
against the true points, the fraction of valid points and the agreement of the inlier masks with
the torch reference. The torch reference (the straightforward batched version) is the baseline.
Backends that cannot run are listed as absent with the reason.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._micro import parse_args, time_ms, versions  # noqa: E402
from h4d_fast.camera import look_at  # noqa: E402
from h4d_fast.ops import _backend, triangulate_dlt, triangulate_ransac  # noqa: E402

BACKENDS = ("torch", "numba", "triton", "cupy")
FOCAL, WIDTH, HEIGHT = 1800.0, 3840, 2160


def ring_rig(V: int, seed: int = 0) -> torch.Tensor:
    """``[V, 3, 4]`` float64 extrinsics ``[R | t]`` of ``V`` cameras on a ring looking at (0, 0, 1)."""
    g = torch.Generator().manual_seed(seed)
    az = torch.arange(V, dtype=torch.float64) * (2 * math.pi / V) + 0.2 * torch.rand(V, generator=g, dtype=torch.float64)
    h = 0.8 + 1.8 * torch.rand(V, generator=g, dtype=torch.float64)
    C = torch.stack([4.5 * az.cos(), 4.5 * az.sin(), h], -1)  # [V, 3]
    target = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) + 0.1 * torch.randn(V, 3, generator=g, dtype=torch.float64)
    R, t = look_at(C, target)
    return torch.cat([R, t[..., None]], -1)


def workload(frames: int, people: int, joints: int, V: int, noise_px: float, outlier_frac: float, seed: int = 0):
    """``(xy [F, P, J, V, 2], conf [F, P, J, V], P [V, 3, 4], X_true [F, P, J, 3])``, float64."""
    g = torch.Generator().manual_seed(seed + 1)
    Pm = ring_rig(V, seed)
    X = (torch.rand(frames, people, joints, 3, generator=g, dtype=torch.float64) - 0.5) * 2.0
    X = X + torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # 2 m box around (0, 0, 1)
    Xc = torch.einsum("vij,fpkj->fpkvi", Pm[:, :, :3], X) + Pm[:, :, 3]  # [F, P, J, V, 3]
    xy = Xc[..., :2] / Xc[..., 2:]
    xy = xy + (noise_px / FOCAL) * torch.randn(xy.shape, generator=g, dtype=torch.float64)
    out = torch.rand(xy.shape[:-1], generator=g) < outlier_frac
    half = torch.tensor([WIDTH / 2 / FOCAL, HEIGHT / 2 / FOCAL], dtype=torch.float64)
    rnd = (torch.rand(xy.shape, generator=g, dtype=torch.float64) * 2 - 1) * half
    xy = torch.where(out[..., None], rnd, xy)
    conf = torch.where(out, 0.2 + 0.8 * torch.rand(out.shape, generator=g, dtype=torch.float64),
                       0.5 + 0.5 * torch.rand(out.shape, generator=g, dtype=torch.float64))
    return xy, conf, Pm, X


def main(argv: list[str] | None = None) -> dict:
    def own(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--joints", type=int, default=17)
        ap.add_argument("--noise-px", type=float, default=2.0)
        ap.add_argument("--outliers", type=float, default=0.1, help="fraction of outlier observations")

    args, device, dtype, repeats = parse_args(__doc__, BACKENDS, 3, argv, own)

    xy, conf, Pm, X_true = workload(args.frames, args.people, args.joints, args.cameras, args.noise_px, args.outliers, args.seed)
    xy, conf, Pm = xy.to(device, dtype), conf.to(device, dtype), Pm.to(device, dtype)
    N = xy[..., 0, 0].numel()
    kw = dict(conf_thr=0.5, err_thr=0.01, min_views=2, refine_steps=3, huber_delta=0.005)
    print(f"triangulate: {N} points x {args.cameras} views ({args.cameras * (args.cameras - 1) // 2} pairs), "
          f"{args.dtype}, {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""))

    results: dict = {"triangulate_ransac": {}, "triangulate_dlt": {}}
    ref_inl = None
    for b in [s.strip() for s in args.backends.split(",") if s.strip()]:
        for op in ("triangulate_ransac", "triangulate_dlt"):
            reason = _backend.why_unavailable(op, b, device)
            if reason is not None:
                results[op][b] = {"available": False, "reason": reason}
                continue
            if op == "triangulate_ransac":
                fn = lambda b=b: triangulate_ransac(xy, Pm, conf, backend=b, **kw)  # noqa: E731
            else:
                fn = lambda b=b: triangulate_dlt(xy, Pm, conf, backend=b)  # noqa: E731
            try:
                with torch.no_grad():
                    out = fn()  # also the first warm-up (compiles)
                    if args.device == "cuda":
                        torch.cuda.synchronize()
                    t = time_ms(fn, args.device, max(args.warmup - 1, 0), repeats)
            except Exception as e:  # a backend that fails to load or run is reported, not fatal
                results[op][b] = {"available": False, "reason": f"{type(e).__name__}: {e}"}
                continue
            X = out[0] if op == "triangulate_ransac" else out
            X = X.double().cpu()
            ok = torch.isfinite(X).all(-1)
            r = {"available": True, **t, "mpjpe_mm": float((X[ok] - X_true[ok]).norm(dim=-1).mean() * 1000) if ok.any() else None,
                 "valid_frac": float(ok.double().mean())}
            if op == "triangulate_ransac":
                inl = out[1].cpu()
                if b == "torch":
                    ref_inl = inl
                if ref_inl is not None:
                    r["inlier_agreement"] = float((inl == ref_inl).double().mean())
            results[op][b] = r
            extra = f"  inliers = ref {100 * r['inlier_agreement']:.3f}%" if "inlier_agreement" in r else ""
            print(f"  {op:19s} {b:7s} {r['median_ms']:10.3f} ms (p20 {r['p20_ms']:.3f}, p80 {r['p80_ms']:.3f})  "
                  f"MPJPE {r['mpjpe_mm'] if r['mpjpe_mm'] is not None else float('nan'):7.2f} mm  valid {100 * r['valid_frac']:.1f}%{extra}")
    for op, res in results.items():
        for b, r in res.items():
            if not r.get("available"):
                print(f"  {op:19s} {b:7s}     absent: {r['reason']}")
    base = results["triangulate_ransac"].get("torch", {})
    if base.get("available"):
        for b, r in results["triangulate_ransac"].items():
            if r.get("available") and b != "torch":
                r["speedup_vs_torch"] = base["median_ms"] / r["median_ms"]
                print(f"  speed-up of {b} over the torch reference: {r['speedup_vs_torch']:.1f}x")

    out = {
        "bench": "triangulate",
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "cpu": platform.processor() or platform.machine(),
        "versions": versions(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "workload": {"frames": args.frames, "people": args.people, "joints": args.joints, "points": N, "views": args.cameras,
                     "pairs": args.cameras * (args.cameras - 1) // 2, "dtype": args.dtype, "noise_px": args.noise_px,
                     "outlier_frac": args.outliers, **kw},
        "results": results,
    }
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
