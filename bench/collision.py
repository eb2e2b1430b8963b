"""Collision (interpenetration) loss, forward + backward: brute force, grid-SDF reference, kernels.

    python -m bench.collision [--quick] [--device cpu|cuda] [--json OUT]

Workload: ``bench/bench_collision.py``'s two closed, human-sized meshes with SMPL's counts (6,890
vertices, 13,776 faces each) in a hug (~3 cm penetration at the chest), jittered per frame; 600
frame pairs at the paper's size. Every system computes ``loss.sum().backward()`` for all frames.

Systems:

* ``bruteforce_torch``: the grid-free, exact form of the same penetration measure, over all
  vertex-face pairs: for every vertex of one person, the distance to the nearest of the other's
  13,776 triangles and the inside test (generalized winding number, again over all triangles);
  loss = mean over vertices of (distance / box half-size) where inside, both directions. Gradient
  through the nearest-triangle distance. Differs from the grid loss by the G = 32 trilinear
  discretisation (reported as ``rel_diff_vs_grid``). Timed on ``ref_frames`` frames and scaled to
  all frames (its cost per frame does not depend on the frame).
* ``grid_sdf_torch``: h4d_fast's torch reference (``backend="torch"``): the reference pipeline's
  method, a 32^3 inside-distance grid per person and frame (all grid points x all faces), then
  ``grid_sample``. Timed on ``ref_frames`` frames, scaled.
* ``h4d_numba`` (CPU; timed on a frame subset and scaled when all frames do not fit its cap),
  ``h4d_triton``, ``h4d_cupy`` (CUDA): the fused kernels, all frames in one call.

Accuracy: per-frame loss against the grid reference on the reference frames (max abs diff) and
the mean loss.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    Context,
    absent,
    best_kernel,
    measure,
    measure_scaled,
    peak_memory_mb,
    workload_main,
)

GRID = 32
SWEEP_CAP_S = 4.0  # per system and sweep point
CAPS = {
    "cuda": {"bruteforce_torch": 30, "grid_sdf_torch": 20, "h4d_numba": 20, "h4d_triton": 15, "h4d_cupy": 15},
    "cpu": {"bruteforce_torch": 60, "grid_sdf_torch": 40, "h4d_numba": 40, "h4d_triton": 0, "h4d_cupy": 0},
    "quick": {"bruteforce_torch": 15, "grid_sdf_torch": 10, "h4d_numba": 8, "h4d_triton": 0, "h4d_cupy": 0},
}


def meshes(ctx: Context, frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``verts_a, verts_b [frames, 6890, 3]`` float32 (CPU), ``faces [13776, 3]``; cached."""
    from bench.bench_collision import make_pair

    key = ("collision", frames)
    if key not in ctx.cache:
        ctx.cache[key] = make_pair(frames, "contact", seed=ctx.seed)
    return ctx.cache[key]


# ----------------------------------------------------------------------------- brute force
def _solid_angle(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Signed solid angle of triangles ``(a, b, c) [F, 3]`` seen from points ``p [M, 1, 3]`` -> ``[M, F]``."""
    A, B, C = a - p, b - p, c - p
    la, lb, lc = A.norm(dim=-1), B.norm(dim=-1), C.norm(dim=-1)
    num = (A * torch.linalg.cross(B, C, dim=-1)).sum(-1)
    den = la * lb * lc + (A * B).sum(-1) * lc + (A * C).sum(-1) * lb + (B * C).sum(-1) * la
    return 2 * torch.atan2(num, den)


def bruteforce_loss(va: torch.Tensor, vb: torch.Tensor, faces: torch.Tensor, chunk: int | None = None, vertex_stride: int = 1) -> torch.Tensor:
    """Exact per-vertex penetration loss over all vertex-face pairs (module docstring), ``[B]``.

    ``vertex_stride > 1`` evaluates every ``vertex_stride``-th sampled vertex only (an estimate of
    the same mean at ``1/vertex_stride`` of the cost; used to time it on slow CPUs).
    """
    from h4d_fast.ops._collision_torch import PAD, box_normalization, point_triangle_dist2

    dev = va.device
    chunk = chunk or (1024 if dev.type == "cuda" else 128)
    f = faces.long()
    out = []
    for t in range(va.shape[0]):
        total = va.new_zeros(())
        for owner, sampled in ((va[t:t + 1], vb[t:t + 1]), (vb[t:t + 1], va[t:t + 1])):
            _, half, valid = box_normalization(owner, PAD)
            if not bool(valid[0]):
                continue
            tri = owner[0].detach()[f]  # [F, 3, 3]
            a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
            q = sampled[0][::vertex_stride]  # [M, 3]
            M = q.shape[0]
            best = torch.empty(M, dtype=torch.long, device=dev)
            inside = torch.empty(M, dtype=torch.bool, device=dev)
            with torch.no_grad():
                for s in range(0, M, chunk):
                    p = q[s:s + chunk].detach()[:, None, :]  # [m, 1, 3]
                    d2 = point_triangle_dist2(p, a, b, c)  # [m, F]
                    best[s:s + chunk] = d2.argmin(-1)
                    inside[s:s + chunk] = _solid_angle(p, a, b, c).sum(-1) > 2 * math.pi  # winding number > 1/2
            tb = tri[best]  # [M, 3, 3] nearest triangle (constant, as the grid is)
            d = point_triangle_dist2(q, tb[:, 0], tb[:, 1], tb[:, 2]).clamp_min(1e-30).sqrt()
            total = total + (d * inside).sum() / M / half[0]
        out.append(total)
    return torch.stack(out)


# ----------------------------------------------------------------------------- workload
def _fwd_bwd(loss_fn, va: torch.Tensor, vb: torch.Tensor):
    """``fn(i)``: one forward + backward; the last loss is kept in ``fn.last``."""
    a = va.detach().clone().requires_grad_(True)
    b = vb.detach().clone().requires_grad_(True)

    def fn(i: int = 0):
        a.grad = b.grad = None
        loss = loss_fn(a, b)
        loss.sum().backward()
        fn.last = loss.detach()
        return loss

    return fn


def run(ctx: Context, frames: int | None = None, pairs: int = 1, systems: tuple[str, ...] | None = None, sweep: bool = False,
        per_frame: dict[str, float] | None = None) -> dict[str, Any]:
    """``frames`` frame pairs (x ``pairs`` person pairs, stacked as frames). ``per_frame``: the
    reference systems' measured ms per frame to scale instead of measuring again (sweep)."""
    from h4d_fast.ops import _backend
    from h4d_fast.ops.collision import collision_loss

    frames = frames or ctx.frames_or(20 if ctx.quick else 600)
    B = frames * pairs
    dev = ctx.device
    reps = ctx.n_repeats if not sweep else max(3, ctx.n_repeats // 2)
    caps = CAPS["quick" if ctx.quick else ("cuda" if ctx.cuda else "cpu")]

    def cap(name: str) -> float:
        return ctx.cap(min(SWEEP_CAP_S, max(1.5, caps[name] / 3)) if sweep else caps[name])

    va0, vb0, faces0 = meshes(ctx, frames)
    if pairs > 1:
        va0, vb0 = va0.repeat(pairs, 1, 1), vb0.repeat(pairs, 1, 1)
    ref_frames = 1 if (ctx.quick or not ctx.cuda) else 4
    res: dict[str, Any] = {
        "workload": {"frames": frames, "person_pairs": pairs, "frame_pairs": B, "verts_per_person": int(va0.shape[1]),
                     "faces_per_person": int(faces0.shape[0]), "grid_size": GRID, "scenario": "contact (~3 cm hug)",
                     "ref_frames": ref_frames},
        "systems": {},
    }
    S = res["systems"]
    want = systems or ("bruteforce_torch", "grid_sdf_torch", "h4d_numba", "h4d_triton", "h4d_cupy")
    ref_loss = None

    # ---- grid-SDF torch reference, on ref_frames, scaled
    if "grid_sdf_torch" in want:
        if per_frame and "grid_sdf_torch" in per_frame:
            ms = per_frame["grid_sdf_torch"]
            S["grid_sdf_torch"] = {"available": True, "device": dev.type, "median_ms": ms * B, "extrapolated": True, "ms_per_frame": ms,
                                   "measured_items": 0, "total_items": B, "timer": "scaled from the paper-size measurement"}
        elif ctx.quick and not ctx.cuda:
            S["grid_sdf_torch"] = absent("skipped under --quick on CPU: the brute-force 32^3 grid takes minutes per frame on a CPU "
                                         "(measured in the default run)")
        else:
            va, vb, fc = va0[:ref_frames].to(dev), vb0[:ref_frames].to(dev), faces0.to(dev)
            fn = _fwd_bwd(lambda a, b: collision_loss(a, b, fc, grid_size=GRID, backend="torch"), va, vb)
            try:
                r = measure(fn, dev, 3 if ctx.cuda else 1, cap("grid_sdf_torch"), warmup=1 if ctx.cuda else 0)
                r["peak_mem_mb"] = peak_memory_mb(fn, dev)
                ref_loss = fn.last.cpu()
                ms = r["median_ms"] / ref_frames
                S["grid_sdf_torch"] = {"available": True, "device": dev.type, **{k: v for k, v in r.items() if k in ("timer", "repeats", "peak_mem_mb")},
                                       "median_ms": ms * B, "ms_per_frame": ms, "extrapolated": B > ref_frames, "measured_items": ref_frames,
                                       "total_items": B, "loss_mean": float(ref_loss.mean())}
                ctx.log(f"  collision grid_sdf_torch {ms:.1f} ms/frame -> {ms * B:.0f} ms for {B} frames")
            except Exception as e:
                S["grid_sdf_torch"] = absent(f"{type(e).__name__}: {e}")

    # ---- brute force over all vertex-face pairs
    if "bruteforce_torch" in want:
        if per_frame and "bruteforce_torch" in per_frame:
            ms = per_frame["bruteforce_torch"]
            S["bruteforce_torch"] = {"available": True, "device": dev.type, "median_ms": ms * B, "extrapolated": True, "ms_per_frame": ms,
                                     "measured_items": 0, "total_items": B, "timer": "scaled from the paper-size measurement"}
        else:
            stride = 1 if ctx.cuda else (64 if ctx.quick else 16)
            va, vb, fc = va0[:ref_frames].to(dev), vb0[:ref_frames].to(dev), faces0.to(dev)
            fn = _fwd_bwd(lambda a, b: bruteforce_loss(a, b, fc, vertex_stride=stride), va, vb)
            try:
                r = measure(fn, dev, 3 if ctx.cuda else 1, cap("bruteforce_torch"), warmup=1 if ctx.cuda else 0)
                r["peak_mem_mb"] = peak_memory_mb(fn, dev)
                loss = fn.last.cpu()
                ms = r["median_ms"] / ref_frames * stride
                d = {"available": True, "device": dev.type, **{k: v for k, v in r.items() if k in ("timer", "repeats", "peak_mem_mb")},
                     "median_ms": ms * B, "ms_per_frame": ms, "extrapolated": True, "measured_items": ref_frames, "total_items": B,
                     "vertex_stride": stride, "loss_mean": float(loss.mean())}
                if stride > 1:
                    d["note"] = f"timed on every {stride}th vertex of each mesh and scaled x{stride} (cost is linear in vertices)"
                if ref_loss is not None and stride == 1:
                    d["rel_diff_vs_grid"] = float((loss - ref_loss).abs().max() / ref_loss.abs().max().clamp_min(1e-12))
                S["bruteforce_torch"] = d
                ctx.log(f"  collision bruteforce_torch {ms:.1f} ms/frame -> {ms * B / 1e3:.1f} s for {B} frames")
            except Exception as e:
                S["bruteforce_torch"] = absent(f"{type(e).__name__}: {e}")

    # ---- kernels, all frames
    def kernel(name: str, backend: str, device: torch.device):
        reason = _backend.why_unavailable("collision_loss", backend, device)
        if reason is None and device.type == "cuda" and not ctx.cuda:
            reason = "no CUDA device"
        if reason is None and backend == "triton" and device.type != "cuda":
            reason = "triton is timed on CUDA only"
        if reason is not None:
            S[name] = absent(reason)
            return
        fc = faces0.to(device)
        try:
            if device.type == "cuda":
                sets = [_fwd_bwd(lambda a, b: collision_loss(a, b, fc, grid_size=GRID, backend=backend), va0.to(device), vb0.to(device))
                        for _ in range(2)]
                fn = lambda i: sets[i % 2](i)  # noqa: E731
                r = measure(fn, device, reps, cap(name))
                r["peak_mem_mb"] = peak_memory_mb(fn, device)
            else:
                steps: dict[int, Any] = {}

                def run_n(n: int, i: int):
                    if n not in steps:
                        steps.clear()
                        steps[n] = _fwd_bwd(lambda a, b: collision_loss(a, b, fc, grid_size=GRID, backend=backend), va0[:n], vb0[:n])
                    return steps[n](i)

                r = measure_scaled(run_n, B, device, reps, cap(name), n_start=8)
            chk = collision_loss(va0[:ref_frames].to(device), vb0[:ref_frames].to(device), fc, grid_size=GRID, backend=backend).detach().cpu()
            loss = collision_loss(va0.to(device), vb0.to(device), fc, grid_size=GRID, backend=backend).detach().cpu() if B <= 2000 else None
        except Exception as e:
            S[name] = absent(f"{type(e).__name__}: {e}")
            return
        d = {"available": True, "device": device.type, "dtype": "float32", **r}
        if loss is not None:
            d["loss_mean"] = float(loss.mean())
            d["active_frames"] = int((loss > 0).sum())
        if ref_loss is not None:
            d["max_abs_diff_vs_grid"] = float((chk - ref_loss).abs().max())
        S[name] = d
        ctx.log(f"  collision {name:12s} {r['median_ms']:10.3f} ms for {B} frames")

    if "h4d_numba" in want:
        kernel("h4d_numba", "numba", torch.device("cpu"))
    for k in ("triton", "cupy"):
        if f"h4d_{k}" in want:
            kernel(f"h4d_{k}", k, torch.device("cuda") if ctx.cuda else torch.device("cpu"))
    res["best"] = best_kernel(S, ctx.cuda)
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return workload_main("collision", run, __doc__, argv, options=(("--frames", {"type": int}),))


if __name__ == "__main__":
    main()
