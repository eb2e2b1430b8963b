"""Benchmark of OKS duplicate removal and pairwise OKS per backend, at the paper's size.

    python bench/bench_oks.py --device cuda --json bench/results/oks_cuda.json
    python bench/bench_oks.py --device cpu --frames 60

Standalone. Workload: ``frames x cameras`` view-frames (600 x 20 = 12,000 by default) of
``--slots`` detection slots (6) with COCO-17 keypoints: ``--people`` (2) real detections per
view-frame (a pose of ~60 px spread at a random image position), each duplicated with probability
0.4 (a near copy: ~1.5 px jitter, lower confidence), the remaining slots filled with random false
positives or left empty (valid mask). Confidences U(0, 1) per keypoint.

Times, for every backend that can run on the device (CUDA: ``triton.testing.do_bench`` median or
CUDA events; CPU: perf_counter median, after warm-up):
  * ``dedup_oks`` with ``drop-both`` and ``keep-best`` over the whole sequence (one call), and
  * ``oks`` between every view-frame's detections and the tracked people (``[F, C, D] x [F, C, P]``),
and reports the agreement with the torch reference (fraction of identical keep decisions, max
absolute OKS difference). The torch reference (batched) is the baseline; absent backends are
listed with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._micro import parse_args, time_ms, versions  # noqa: E402
from h4d_fast.ops import _backend, dedup_oks, oks  # noqa: E402

BACKENDS = ("torch", "numba", "triton", "cupy")


def workload(frames: int, cameras: int, people: int, slots: int, seed: int = 0):
    """``(kpts [F, C, D, 17, 3], valid [F, C, D], people [F, C, P, 17, 3])`` float64."""
    g = torch.Generator().manual_seed(seed)
    F, C, D, J = frames, cameras, slots, 17
    shape = (F, C)

    def poses(n: int) -> torch.Tensor:
        centre = torch.rand(*shape, n, 1, 2, generator=g, dtype=torch.float64) * torch.tensor([3400.0, 1800.0], dtype=torch.float64) + 200
        k = torch.zeros(*shape, n, J, 3, dtype=torch.float64)
        k[..., :2] = centre + 60 * torch.randn(*shape, n, J, 2, generator=g, dtype=torch.float64)
        k[..., 2] = torch.rand(*shape, n, J, generator=g, dtype=torch.float64)
        return k

    real = poses(people)  # [F, C, P, J, 3]
    kpts = poses(D)  # false positives everywhere first
    valid = torch.rand(*shape, D, generator=g) < 0.5
    kpts[..., :people, :, :] = real
    valid[..., :people] = True
    dup = torch.rand(*shape, people, generator=g) < 0.4
    n_dup = min(people, D - people)
    copies = real[..., :n_dup, :, :].clone()
    copies[..., :2] += 1.5 * torch.randn(copies[..., :2].shape, generator=g, dtype=torch.float64)
    copies[..., 2] *= 0.9
    slot = slice(people, people + n_dup)
    kpts[..., slot, :, :] = torch.where(dup[..., :n_dup, None, None], copies, kpts[..., slot, :, :])
    valid[..., slot] = valid[..., slot] | dup[..., :n_dup]
    return kpts, valid, real


def main(argv: list[str] | None = None) -> dict:
    def own(ap: argparse.ArgumentParser) -> None:
        ap.add_argument("--slots", type=int, default=6, help="detection slots per view-frame (<= 32 for the GPU kernels)")
        ap.add_argument("--thr", type=float, default=0.7)

    args, device, dtype, repeats = parse_args(__doc__, BACKENDS, 5, argv, own)

    kpts, valid, people = workload(args.frames, args.cameras, args.people, args.slots, args.seed)
    kpts, valid, people = kpts.to(device, dtype), valid.to(device), people.to(device, dtype)
    print(f"oks: {args.frames} frames x {args.cameras} views = {args.frames * args.cameras} view-frames, {args.slots} slots, "
          f"{int(valid.sum())} detections, {args.dtype}, {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""))

    cases = {
        "dedup_oks/drop-both": ("dedup_oks", lambda b: dedup_oks(kpts, valid, thr=args.thr, policy="drop-both", backend=b)),
        "dedup_oks/keep-best": ("dedup_oks", lambda b: dedup_oks(kpts, valid, thr=args.thr, policy="keep-best", backend=b)),
        "oks/detections-x-people": ("oks", lambda b: oks(kpts, people, backend=b)),
    }
    results: dict = {name: {} for name in cases}
    refs: dict = {}
    for b in [s.strip() for s in args.backends.split(",") if s.strip()]:
        for name, (op, run) in cases.items():
            reason = _backend.why_unavailable(op, b, device)
            if reason is not None:
                results[name][b] = {"available": False, "reason": reason}
                continue
            fn = lambda run=run, b=b: run(b)  # noqa: E731
            try:
                out = fn()
                if args.device == "cuda":
                    torch.cuda.synchronize()
                t = time_ms(fn, args.device, max(args.warmup - 1, 0), repeats)
            except Exception as e:  # a backend that fails to load or run is reported, not fatal
                results[name][b] = {"available": False, "reason": f"{type(e).__name__}: {e}"}
                continue
            out = out.cpu()
            r = {"available": True, **t}
            if b == "torch":
                refs[name] = out
            if name in refs:
                if out.dtype == torch.bool:
                    r["agreement"] = float((out == refs[name]).double().mean())
                    r["kept"] = int(out.sum())
                else:
                    r["max_abs_diff"] = float((out.double() - refs[name].double()).abs().max()) if out.numel() else 0.0
            results[name][b] = r
            extra = (f"  agree {100 * r['agreement']:.3f}% (kept {r['kept']})" if "agreement" in r
                     else f"  max|diff| {r['max_abs_diff']:.2e}" if "max_abs_diff" in r else "")
            print(f"  {name:24s} {b:7s} {r['median_ms']:10.3f} ms (p20 {r['p20_ms']:.3f}, p80 {r['p80_ms']:.3f}){extra}")
    for name, res in results.items():
        for b, r in res.items():
            if not r.get("available"):
                print(f"  {name:24s} {b:7s}     absent: {r['reason']}")
    for name, res in results.items():
        base = res.get("torch", {})
        if base.get("available"):
            for b, r in res.items():
                if r.get("available") and b != "torch":
                    r["speedup_vs_torch"] = base["median_ms"] / r["median_ms"]

    out = {
        "bench": "oks",
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "cpu": platform.processor() or platform.machine(),
        "versions": versions(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "workload": {"frames": args.frames, "cameras": args.cameras, "view_frames": args.frames * args.cameras, "slots": args.slots,
                     "people": args.people, "detections": int(valid.sum()), "dtype": args.dtype, "thr": args.thr},
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
