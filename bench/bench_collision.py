"""Benchmark of the collision (interpenetration) loss, forward + backward, per backend.

    python bench/bench_collision.py --device cuda --frames 600 --json bench/results/collision_cuda.json
    python bench/bench_collision.py --device cpu --frames 60

Standalone: builds two closed, human-sized meshes with SMPL's counts (6890 vertices, 13,776
faces: a surface of revolution with head, neck, shoulders, waist, hips and legs, elliptic cross
sections, 1.7 m tall) and places them front to front, per frame jittered (+-1 cm, +-3 deg about
the vertical): ``contact`` penetrates ~3 cm at the chest (a hug), ``deep`` ~14 cm, ``separated``
not at all. Times ``loss.sum().backward()`` for every backend that can run on the device
(CUDA: ``triton.testing.do_bench`` median after warm-up, or CUDA events; CPU: perf_counter
median), peak memory (CUDA), and the brute-force torch reference (all grid points x all faces,
the reference kernel's work, then grid_sample) on ``--ref-frames`` frames, extrapolated per frame.
Each backend's loss is compared with the reference on those frames (max abs difference).
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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._micro import time_ms  # noqa: E402
from h4d_fast.ops import _backend  # noqa: E402
from h4d_fast.ops.collision import collision_loss  # noqa: E402

RINGS, SEGMENTS = 84, 82  # 2 + 84 * 82 = 6890 vertices, 2 * 82 * 84 = 13,776 faces (SMPL's counts)
OFFSETS = {"contact": 0.23, "deep": 0.12, "separated": 1.0}  # front-to-front distance of the axes (m)


def body_mesh(height: float = 1.7) -> tuple[torch.Tensor, torch.Tensor]:
    """A closed, human-sized surface of revolution with elliptic sections (UV sphere topology).

    Returns:
        verts ``[6890, 3]`` float64 (z up, feet at 0, facing +y), faces ``[13776, 3]`` int64
        (outward orientation).
    """
    # half-width (x) along the body, t = 0 top of the head .. 1 soles; depth (y) = 0.6 x width
    t_ctrl = [0.0, 0.04, 0.09, 0.13, 0.15, 0.19, 0.25, 0.35, 0.45, 0.55, 0.62, 0.75, 0.9, 1.0]
    r_ctrl = [0.0, 0.07, 0.095, 0.08, 0.055, 0.21, 0.22, 0.19, 0.15, 0.18, 0.17, 0.12, 0.08, 0.0]
    t = np.arange(1, RINGS + 1) / (RINGS + 1)
    r = np.interp(t, t_ctrl, r_ctrl)
    r = np.maximum(r, 0.02)
    z = height * (1.0 - t)
    phi = np.arange(SEGMENTS) * (2 * np.pi / SEGMENTS)
    ripple = 1.0 + 0.03 * np.sin(5 * phi)[None, :] * np.sin(17 * np.pi * t)[:, None]  # not a perfect solid of revolution
    x = r[:, None] * ripple * np.cos(phi)[None, :]
    y = 0.6 * r[:, None] * ripple * np.sin(phi)[None, :]
    rings = np.stack([x, y, np.broadcast_to(z[:, None], x.shape)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0.0, 0.0, height]], rings, [[0.0, 0.0, 0.0]]])
    faces = []
    ring = lambda i, j: 1 + i * SEGMENTS + (j % SEGMENTS)  # noqa: E731
    for j in range(SEGMENTS):
        faces.append([0, ring(0, j), ring(0, j + 1)])
    for i in range(RINGS - 1):
        for j in range(SEGMENTS):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            faces += [[a, c, b], [b, c, d]]
    south = len(verts) - 1
    for j in range(SEGMENTS):
        faces.append([south, ring(RINGS - 1, j + 1), ring(RINGS - 1, j)])
    return torch.tensor(verts), torch.tensor(faces)


def _rot_z(angle: torch.Tensor) -> torch.Tensor:
    c, s = angle.cos(), angle.sin()
    o, z = torch.ones_like(c), torch.zeros_like(c)
    return torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1), torch.stack([z, z, o], -1)], -2)


def make_pair(frames: int, scenario: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``verts_a, verts_b [frames, 6890, 3]`` float32 (front to front along y), ``faces``."""
    v, f = body_mesh()
    g = torch.Generator().manual_seed(seed)
    ang_a = torch.deg2rad(3 * (2 * torch.rand(frames, generator=g, dtype=torch.float64) - 1))
    ang_b = math.pi + torch.deg2rad(3 * (2 * torch.rand(frames, generator=g, dtype=torch.float64) - 1))
    jit = 0.01 * (2 * torch.rand(frames, 2, 3, generator=g, dtype=torch.float64) - 1)
    va = v @ _rot_z(ang_a).transpose(-1, -2) + jit[:, 0, None]
    vb = v @ _rot_z(ang_b).transpose(-1, -2) + jit[:, 1, None] + torch.tensor([0.0, OFFSETS[scenario], 0.02])
    return va.float(), vb.float(), f


def _step(va, vb, faces, backend: str, grid: int):
    a = va.detach().requires_grad_(True)
    b = vb.detach().requires_grad_(True)

    def fn():
        a.grad = b.grad = None
        loss = collision_loss(a, b, faces, grid_size=grid, backend=backend)
        loss.sum().backward()
        return loss

    return fn


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--scenario", default="contact", choices=sorted(OFFSETS))
    ap.add_argument("--ref-frames", type=int, default=None, help="frames for the brute-force torch reference (default 1 cpu / 4 cuda)")
    ap.add_argument("--backends", default="numba,triton,cupy", help="comma list of kernel backends to time")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=None, help="timed repetitions (default 20 cuda / 3 cpu)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device")
    dev = torch.device(args.device)
    repeats = args.repeats or (20 if args.device == "cuda" else 3)
    ref_frames = args.ref_frames or (4 if args.device == "cuda" else 1)

    va, vb, faces = make_pair(args.frames, args.scenario)
    va, vb, faces = va.to(dev), vb.to(dev), faces.to(dev)
    out: dict = {
        "op": "collision_loss forward+backward",
        "device": args.device,
        "device_name": torch.cuda.get_device_name(dev) if args.device == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "frames": args.frames,
        "grid_size": args.grid,
        "scenario": args.scenario,
        "verts_per_person": va.shape[1],
        "faces_per_person": faces.shape[0],
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "backends": {},
    }
    try:
        import triton

        out["triton"] = triton.__version__
    except Exception:
        pass

    # brute-force torch reference on a few frames (its per-frame cost is flat)
    ra, rb = va[:ref_frames], vb[:ref_frames]
    fn = _step(ra, rb, faces, "torch", args.grid)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        t = time_ms(fn, args.device, warmup=1, repeats=3)
        ref_loss = fn().detach()
    else:  # one untimed-warm-up-free run: it takes seconds per frame
        t0 = time.perf_counter()
        ref_loss = fn().detach()
        t = {"median_ms": 1e3 * (time.perf_counter() - t0)}
    per_frame = t["median_ms"] / ref_frames
    out["baseline_torch_bruteforce"] = {
        "ref_frames": ref_frames,
        "median_ms_ref_frames": t["median_ms"],
        "ms_per_frame": per_frame,
        "extrapolated_ms": per_frame * args.frames,
        "peak_mem_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if args.device == "cuda" else None,
        "loss_mean_ref_frames": float(ref_loss.mean()),
    }
    print(f"torch brute force: {per_frame:.1f} ms/frame -> {per_frame * args.frames:.0f} ms for {args.frames} frames (extrapolated)")

    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        reason = _backend.why_unavailable("collision_loss", name, dev)
        if reason is None and name == "triton" and args.device != "cuda":
            reason = "triton is timed on CUDA only"
        if reason is not None:
            out["backends"][name] = {"absent": reason}
            print(f"{name}: absent ({reason})")
            continue
        try:
            check = collision_loss(ra, rb, faces, grid_size=args.grid, backend=name).detach()
            fn = _step(va, vb, faces, name, args.grid)
            if args.device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(dev)
            t = time_ms(fn, args.device, args.warmup, repeats)
            loss = fn().detach()
            t.update(
                peak_mem_mb=torch.cuda.max_memory_allocated(dev) / 2**20 if args.device == "cuda" else None,
                loss_mean=float(loss.mean()),
                active_frames=int((loss > 0).sum()),
                max_abs_diff_vs_torch=float((check - ref_loss).abs().max()),
                speedup_vs_bruteforce=per_frame * args.frames / t["median_ms"],
            )
            out["backends"][name] = t
            print(
                f"{name}: median {t['median_ms']:.3f} ms (p20 {t['p20_ms']:.3f}, p80 {t['p80_ms']:.3f}) for {args.frames} frames, "
                f"|diff vs torch| {t['max_abs_diff_vs_torch']:.2e}, loss mean {t['loss_mean']:.3e}"
            )
        except Exception as e:  # report and go on with the other backends
            out["backends"][name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"{name}: error {type(e).__name__}: {e}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
