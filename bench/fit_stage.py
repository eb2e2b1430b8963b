"""The SMPL fit stage alone on a synthetic capture: time, launches and accuracy.

    python -m bench.fit_stage [--capture bench|demo] [--frames N] [--seed S] [--device cpu|cuda]
                              [--repeats R] [--profile] [--set fit.KEY=VALUE ...] [--work DIR] [--json OUT]

Input: the capture's 3D keypoints after the keypoint stages (filter, track, refine), computed
once and cached in ``--work`` (default: a folder under the system's temp dir named after the
capture). ``--capture bench`` is the benchmark's capture (:mod:`bench.workloads`: 20 of a ring of
32 pinhole cameras, 600 frames by default); ``--capture demo`` is ``h4d demo``'s (20 fisheye
cameras, 300 frames by default). The fit runs with the configuration's defaults plus ``--set``
overrides (e.g. ``--set fit.optimizer=lbfgs`` for the first-order fit,
``--set fit.compare_collision=true`` as the demo runs it).

Reported (JSON): the wall clock of each fit (synchronised; median of ``--repeats`` after an untimed
warm-up fit of the same size), the fit's own per-stage statistics, and the accuracy against the
generator's ground truth: PVE and MPJPE over the 24 SMPL joints (mm, world frame, no alignment),
the penetration after the collision stage (cm^3 per frame) and, with ``compare_collision``, the
same for the fit without the collision term. ``--profile`` adds one fit under ``torch.profiler``:
kernel launches and stream/device synchronisations on CUDA, aten operator calls on the CPU, total
and per loss evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import context_for_script, environment, sync  # noqa: E402
from bench.workloads import SEQUENCE_CACHE_ENV, paper_sequence  # noqa: E402

_LAUNCH = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx", "cudaGraphLaunch")
_SYNC = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaStreamWaitEvent")


def prepare(kind: str, frames: int | None, seed: int, device: torch.device, work: Path | None) -> tuple[Path, dict[str, Any]]:
    """Sequence folder with ground truth and the keypoint stages' 3D keypoints (cached in ``work``)."""
    frames = int(frames or (600 if kind == "bench" else 300))
    work = Path(work) if work else Path(tempfile.gettempdir()) / f"h4d_fit_stage_{kind}_{frames}_s{seed}"
    seq, kp_file = work / "sequence", work / "keypoints.npz"
    if kind == "bench" and os.environ.get(SEQUENCE_CACHE_ENV):  # the bench sequence kept between runs
        ctx = context_for_script(str(device))
        ctx.frames, ctx.seed, ctx.verbose = frames, seed, False
        seq = paper_sequence(ctx)[0]
    elif not (seq / "ground_truth" / "poses3d.npy").exists():
        if kind == "bench":
            from bench.workloads import write_paper_sequence

            ctx = context_for_script(str(device))
            ctx.frames, ctx.seed, ctx.verbose = frames, seed, False
            write_paper_sequence(ctx, seq)
        else:
            from h4d_fast.io.harmony4d import write_sequence
            from h4d_fast.synth import make_capture

            cap, gt, meta = make_capture(num_frames=frames, num_cameras=20, seed=seed)
            write_sequence(seq, cap, gt=gt, scale_transform=meta.get("scale_transform"), meta={"frames": frames, "cameras": 20, "seed": seed})
    if not kp_file.exists():
        from h4d_fast.config import Config
        from h4d_fast.io.harmony4d import read_sequence
        from h4d_fast.pipeline.driver import run_keypoints

        cfg = Config()
        cfg.run.progress = False
        res = run_keypoints(read_sequence(seq), work / "run", cfg)
        np.savez(kp_file, poses3d=res.poses3d.numpy())
    with np.load(kp_file) as z:
        poses = torch.from_numpy(z["poses3d"])
    return seq, {"poses3d": poses, "frames": frames, "work": str(work)}


def accuracy(body, fit, seq: Path) -> dict[str, float]:
    from h4d_fast.eval.metrics import mpjpe24, pve
    from h4d_fast.io.harmony4d import read_ground_truth
    from h4d_fast.pipeline.fit import FitResult, model_outputs

    gt = read_ground_truth(seq)
    F, P = fit.global_orient.shape[:2]
    g = {k: torch.as_tensor(np.asarray(gt.smpl[k]), dtype=torch.float32)[:F] if k != "betas" else torch.as_tensor(np.asarray(gt.smpl[k]), dtype=torch.float32)
         for k in ("global_orient", "body_pose", "transl", "betas")}
    if g["betas"].dim() == 3:
        g["betas"] = g["betas"][0]
    gres = FitResult(g["global_orient"].reshape(F, P, 3), g["body_pose"].reshape(F, P, 69), g["betas"], g["transl"].reshape(F, P, 3))
    gv, gj = model_outputs(body, gres)
    out: dict[str, float] = {}

    def errs(res, tag: str) -> None:
        cpu = FitResult(*(getattr(res, k).detach().cpu().float() for k in ("global_orient", "body_pose", "betas", "transl")))
        v, j = model_outputs(body, cpu)
        out[f"pve_mm{tag}"] = float(pve(v.flatten(0, 1), gv.flatten(0, 1)).mean())
        out[f"mpjpe24_mm{tag}"] = float(mpjpe24(j.flatten(0, 1), gj.flatten(0, 1)).mean())

    errs(fit, "")
    if fit.collision_off is not None:
        errs(FitResult(**fit.collision_off), "_without_collision")
    for k in ("penetration_after_cm3", "penetration_without_collision_cm3", "penetration_before_cm3", "kp_error_mm", "contact_frames"):
        if k in fit.stats:
            out[k] = fit.stats[k]
    return out


def profile_counts(fn, device: torch.device) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        res = fn()
        sync(device)
    launches = syncs = kernels = reads = 0
    top: dict[str, int] = {}
    for e in prof.events():
        name = e.name
        if name in _LAUNCH or name.startswith("cudaLaunch") or name.startswith("cuLaunch"):
            launches += 1
        elif name in _SYNC or (name.startswith("cudaMemcpy") and "Async" not in name):
            syncs += 1
        if name == "aten::_local_scalar_dense":  # a device value read on the host (.item(), float(), bool())
            reads += 1
        # CPU proxy of kernel launches: aten operators that compute (no view / allocation / wrapper)
        if name.startswith("aten::") and name not in _NOT_KERNELS and not any(c.name.startswith("aten::") for c in e.cpu_children):
            kernels += 1
            top[name] = top.get(name, 0) + 1
    ev = max(1, int(res.stats.get("evaluations") or 1))
    out = {"evaluations": ev, "iterations": res.stats.get("iterations"), "host_reads": reads,
           "compute_ops": kernels, "compute_ops_per_evaluation": kernels / ev,
           "top_compute_ops": dict(sorted(top.items(), key=lambda kv: -kv[1])[:12])}
    if device.type == "cuda":
        out.update({"kernel_launches": launches, "launches_per_evaluation": launches / ev, "synchronisations": syncs})
        out.update(device_time(prof))
    return out


def device_time(prof) -> dict[str, Any]:
    """The GPU's busy time under the profiler (sum of the kernels' own device time) and the operators
    that spent most of it: against the fit's wall clock it says whether the GPU or the host decides."""
    rows = []
    for a in prof.key_averages():
        t = getattr(a, "self_device_time_total", None)
        if t is None:
            t = getattr(a, "self_cuda_time_total", 0.0)
        if t:
            rows.append((float(t) * 1e-6, a.key, int(a.count)))
    rows.sort(reverse=True)
    return {"device_busy_s": sum(r[0] for r in rows),
            "top_device_ops": [{"op": k[:80], "seconds": round(t, 4), "calls": n} for t, k, n in rows[:15]]}


_NOT_KERNELS = {"aten::" + n for n in (
    "select slice view reshape expand as_strided unsqueeze squeeze permute transpose t alias _unsafe_view unbind split "
    "detach empty empty_strided empty_like resolve_conj resolve_neg contiguous lift_fresh _reshape_alias diagonal narrow "
    "chunk expand_as view_as movedim unflatten flatten result_type item _local_scalar_dense is_nonzero numpy to _to_copy"
).split()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", choices=("bench", "demo"), default="bench")
    ap.add_argument("--frames", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=("cpu", "cuda"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="fit.KEY=VALUE")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from h4d_fast.body import load_body_model
    from h4d_fast.config import Config, apply_overrides
    from h4d_fast.pipeline.fit import fit_sequence

    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = apply_overrides(Config(), args.set)
    seq, info = prepare(args.capture, args.frames, args.seed, dev, args.work)
    poses = info["poses3d"]
    body = load_body_model(device=dev)

    def fit():
        r = fit_sequence(poses.to(dev), body, cfg.fit, device=dev)
        sync(dev)
        return r

    t0 = time.perf_counter()
    fit_sequence(poses[: min(8, poses.shape[0])].to(dev), body, cfg.fit, device=dev)  # warm-up (compilation, caches)
    warm = time.perf_counter() - t0
    times, res = [], None
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        res = fit()
        times.append(time.perf_counter() - t0)
    out: dict[str, Any] = {
        "environment": environment(dev),
        "capture": {"kind": args.capture, "frames": info["frames"], "people": int(poses.shape[1]), "seed": args.seed, "work": info["work"]},
        "overrides": args.set,
        "optimizer": cfg.fit.optimizer,
        "seconds_median": statistics.median(times),
        "seconds": times,
        "warmup_seconds": warm,
        "iterations": res.stats.get("iterations"),
        "evaluations": res.stats.get("evaluations"),
        "stages": [{k: r.get(k) for k in ("stage", "epoch", "iterations", "evaluations", "seconds", "loss_start", "loss_end")}
                   for r in res.stats.get("stages", [])],
        "accuracy": accuracy(body, res, seq),
    }
    for k in ("collision_seconds", "penetration_measure_seconds", "contact_frames"):
        if k in res.stats:
            out[k] = res.stats[k]
    if args.profile:
        out["profile"] = profile_counts(fit, dev)
    text = json.dumps(out, indent=2, default=str)
    if args.json:
        args.json.write_text(text)
    print(text)
    return out


if __name__ == "__main__":
    main()
