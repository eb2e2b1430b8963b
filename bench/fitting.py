"""SMPL fitting of a 3D keypoint sequence: plain autograd through smplx vs h4d_fast's fit stage.

    python -m bench.fitting [--quick] [--device cpu|cuda] [--frames N] [--json OUT]

Workload: a sequence generated from the body model itself (the default body model, 13,380
vertices, 10 betas), so that meshes have a ground truth: two people facing each other 0.9 m
apart, random shapes, smooth random motion of every joint (arms down, knees bending forward),
600 frames at the paper's size. Input to both fitters: the model's COCO-17 keypoints plus 1 cm
Gaussian noise, 3% of them marked invalid -- the same ``[F, 2, 17, 4]`` tensor.

Systems (same configuration: ``FitConfig(collision=False)`` = 3 epochs of stage 1 (orientation +
translation, shoulders and hips), stage 2 (betas), stage 3 (orientation + translation + pose),
20 / 10 / 60 LBFGS iterations with strong-Wolfe line search, the paper's weights, the same
stopping rule, the same initialisation and the same loss terms from
``h4d_fast.pipeline.fit_losses``):

* ``smplx_autograd``: every loss evaluation runs ``smplx``'s full forward (all vertices, LBS,
  joint regression) through ``BodyModel.forward`` for all frames and people at once; plain torch
  autograd; the 6D rotations of the temporal term from ``smplx.lbs.batch_rodrigues``. Compact
  (~80 lines, below).
* ``h4d_fit``: ``h4d_fast.pipeline.fit.fit_sequence`` (joints-only forward, no mesh unless the
  collision stage runs).

Accuracy: MPJPE over the 24 SMPL joints and PVE over all vertices (mm, no alignment) against
the ground-truth meshes, and the mean distance of the fitted COCO joints to the input keypoints.
Timing: wall clock of the whole fit (initialisation included, synchronised), median of the timed
runs after an untimed warm-up fit on a few frames; peak GPU memory of a timed run.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Context, absent, missing, sync, workload_main  # noqa: E402

NOISE_M = 0.01
DROP = 0.03


# ----------------------------------------------------------------------------- ground truth
def ground_truth(body, F: int, P: int = 2, seed: int = 0, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Parameters, meshes and noisy COCO keypoints of a body-model sequence (module docstring)."""
    from scipy.spatial.transform import Rotation

    g = torch.Generator().manual_seed(seed)
    std = torch.full((23,), 0.1)
    std[[0, 1, 3, 4, 15, 16, 17, 18]] = 0.3  # hips, knees, shoulders, elbows (joints 1, 2, 4, 5, 16..19)
    std[[11, 14]] = 0.15  # neck, head
    std[[12, 13]] = 0.05  # collars
    std = std.repeat_interleave(3)
    t = torch.arange(F, dtype=torch.float64)[:, None, None]
    base = std * torch.randn(1, P, 69, generator=g, dtype=torch.float64)
    amp = 0.6 * std * torch.randn(1, P, 69, generator=g, dtype=torch.float64)
    period = 40.0 + 40.0 * torch.rand(1, P, 69, generator=g, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(1, P, 69, generator=g, dtype=torch.float64)
    bp = (base + amp * torch.sin(2 * math.pi * t / period + phase)).view(F, P, 23, 3)
    bp[..., 15, 2] -= 1.1  # left shoulder: arm down
    bp[..., 16, 2] += 1.1  # right shoulder: arm down
    bp[..., 3, 0] = bp[..., 3, 0].abs()  # knees bend forward only
    bp[..., 4, 0] = bp[..., 4, 0].abs()
    bp = bp.reshape(F, P, 69)
    betas = torch.randn(P, 10, generator=g, dtype=torch.float64).clamp(-2, 2)
    # the model faces +z; after the x rotation it faces -y: yaw +-90 deg turns the two people (on the x axis) to face each other
    yaw = torch.tensor([math.pi / 2, -math.pi / 2] * (P // 2) + [0.0] * (P % 2), dtype=torch.float64)[None] + 0.3 * torch.sin(2 * math.pi * t[..., 0] / 90.0)
    Rm = Rotation.from_euler("z", yaw.reshape(-1, 1).numpy()) * Rotation.from_euler("x", math.pi / 2)  # model y-up -> world z-up, then yaw
    go = torch.from_numpy(Rm.as_rotvec()).view(F, P, 3)
    tr = torch.zeros(F, P, 3, dtype=torch.float64)
    tr[..., 2] = 1.0
    tr[..., 0] = torch.linspace(-0.45, 0.45, P, dtype=torch.float64) + 0.05 * torch.sin(2 * math.pi * t[..., 0] / 75.0)
    dt = body.dtype
    verts, joints = model_meshes(body, go.to(dt), bp.to(dt), betas.to(dt), tr.to(dt), device)
    coco = body.coco17(joints.reshape(-1, 45, 3).to(body.device)).cpu().view(F, P, 17, 3)
    kp = coco.double() + NOISE_M * torch.randn(F, P, 17, 3, generator=g, dtype=torch.float64)
    valid = (torch.rand(F, P, 17, generator=g) >= DROP).double()
    return {"global_orient": go, "body_pose": bp, "betas": betas, "transl": tr, "vertices": verts, "joints": joints,
            "poses3d": torch.cat([kp, valid[..., None]], -1).float()}


def model_meshes(body, go: torch.Tensor, bp: torch.Tensor, betas: torch.Tensor, tr: torch.Tensor, device, chunk: int = 256):
    """smplx forward of ``[F, P]`` parameters in chunks: vertices ``[F, P, N, 3]``, joints45 ``[F, P, 45, 3]`` (CPU)."""
    F, P = go.shape[:2]
    N = F * P
    be = betas[None].expand(F, P, -1).reshape(N, -1)
    vs, js = [], []
    with torch.no_grad():
        for s in range(0, N, chunk):
            sl = slice(s, min(N, s + chunk))
            v, j = body.forward(go.reshape(N, 3)[sl].to(body.device), bp.reshape(N, 69)[sl].to(body.device), be[sl].to(body.device),
                                tr.reshape(N, 3)[sl].to(body.device))
            vs.append(v.cpu())
            js.append(j.cpu())
    return torch.cat(vs).view(F, P, -1, 3), torch.cat(js).view(F, P, 45, 3)


# ----------------------------------------------------------------------------- the plain baseline
def smplx_autograd_fit(poses3d: torch.Tensor, body, cfg, device) -> dict[str, Any]:
    """The same three-stage fit as ``fit_sequence`` with smplx's full forward at every evaluation."""
    from smplx.lbs import batch_rodrigues

    from h4d_fast.body.fast import FastBody
    from h4d_fast.pipeline import fit as H
    from h4d_fast.pipeline import fit_losses as L

    t0 = time.perf_counter()
    dev = torch.device(device)
    x = poses3d.to(dev, body.dtype)
    F, P = x.shape[:2]
    N = F * P
    w = torch.where(torch.isfinite(x[..., :3]).all(-1), x[..., 3].clamp(0, 1), torch.zeros_like(x[..., 3]))
    kp = torch.where(w[..., None] > 0, x[..., :3], torch.zeros_like(x[..., :3]))
    K = body.num_betas
    fast = FastBody(body)  # the initialisation only (identical to h4d's)
    betas = torch.zeros(P, K, dtype=x.dtype, device=dev)
    go, tr, _ = H.init_from_keypoints(kp, w, fast, betas)
    bp = H.init_limb_pose(kp, w, go, fast, betas) if cfg.init_limbs else torch.zeros(F, P, 69, dtype=x.dtype, device=dev)
    p = {"global_orient": go.clone(), "body_pose": bp.clone(), "betas": betas, "transl": tr.clone()}
    limb_tgt, limb_ok = L.target_limb_lengths(kp, w > 0)
    m1 = torch.zeros(17, dtype=x.dtype, device=dev)
    m1[list(H.STAGE1_KEYPOINTS)] = 1
    w1 = w * m1
    evals = [0]

    def loss_fn(stage: int, wt: dict[str, float]) -> torch.Tensor:
        _, j45 = body.forward(p["global_orient"].reshape(N, 3), p["body_pose"].reshape(N, 69), p["betas"][None].expand(F, P, K).reshape(N, K),
                              p["transl"].reshape(N, 3))
        j45 = j45.view(F, P, 45, 3)
        coco = body.coco17(j45)
        terms = {}
        if wt["joint"]:
            terms["joint"] = L.keypoint_loss(coco, kp, w1 if stage == 1 else w, cfg.kp_sigma)
        if wt["reg"]:
            terms["reg"] = L.pose_reg_loss(p["body_pose"])
        if stage == 3 and cfg.w_hyperext:
            terms["hyperext"] = L.hyperextension_loss(p["body_pose"])
        if wt["limb"]:
            terms["limb"] = L.limb_length_loss(coco, limb_tgt, limb_ok)
        if wt["symm"]:
            terms["symm"] = L.symmetry_loss(coco)
        if wt["temporal"]:
            rot = batch_rodrigues(p["body_pose"].reshape(-1, 3)).view(F, P, 23, 3, 3)
            terms["temporal"] = L.temporal_loss(rot[..., :, :2].reshape(F, P, 23, 6), j45[:, :, :29], cfg.temporal)
        if wt["shape"]:
            terms["shape"] = L.shape_prior_loss(p["betas"])
        wt = {**wt, "hyperext": cfg.w_hyperext}
        evals[0] += 1
        return sum((wt[k] * v for k, v in terms.items()), x.new_zeros(()))

    iters_done = 0
    for _ in range(int(cfg.epochs)):
        for stage, iters in ((1, cfg.iters_stage1), (2, cfg.iters_stage2), (3, cfg.iters_stage3)):
            wt = cfg.stage_weights(stage)
            wt["collision"] = 0.0
            names = H.STAGE_PARAMS[stage]
            for k, v in p.items():
                v.requires_grad_(k in names)
            params = [p[k] for k in names]
            opt = torch.optim.LBFGS(params, lr=cfg.lr, max_iter=int(cfg.check_every), history_size=int(cfg.history_size),
                                    line_search_fn="strong_wolfe", tolerance_grad=1e-10, tolerance_change=1e-14)
            last = {}

            def closure():
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(stage, wt)
                loss.backward()
                last["loss"] = loss.detach()
                return loss

            with torch.no_grad():
                prev = float(loss_fn(stage, wt))
            done = 0
            while done < iters:
                n = min(int(cfg.check_every), iters - done)
                opt.param_groups[0]["max_iter"] = n
                opt.param_groups[0]["max_eval"] = 5 * n
                k0 = int(opt.state[params[0]].get("n_iter", 0))
                opt.step(closure)
                k = int(opt.state[params[0]].get("n_iter", 0)) - k0
                done += k
                cur = float(last["loss"])
                if k == 0 or not math.isfinite(cur) or abs(prev - cur) / max(abs(prev), abs(cur), 1.0) <= cfg.ftol:
                    break
                prev = cur
            iters_done += done
            for v in p.values():
                v.requires_grad_(False)
    sync(dev)
    return {"params": {k: v.detach() for k, v in p.items()}, "iterations": iters_done, "evaluations": evals[0], "seconds": time.perf_counter() - t0}


def h4d_fit(poses3d: torch.Tensor, body, cfg, device) -> dict[str, Any]:
    from h4d_fast.pipeline.fit import fit_sequence

    t0 = time.perf_counter()
    r = fit_sequence(poses3d, body, cfg, device=device)
    sync(torch.device(device))
    params = {"global_orient": r.global_orient, "body_pose": r.body_pose, "betas": r.betas, "transl": r.transl}
    return {"params": params, "iterations": r.stats.get("iterations"), "evaluations": r.stats.get("evaluations"),
            "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- workload
def _errors(body, params: dict[str, torch.Tensor], gt: dict[str, torch.Tensor]) -> dict[str, float]:
    v, j = model_meshes(body, params["global_orient"].cpu(), params["body_pose"].cpu(), params["betas"].cpu(), params["transl"].cpu(), body.device)
    coco = body.coco17(j.reshape(-1, 45, 3).to(body.device)).cpu().view(*j.shape[:2], 17, 3)
    kp = gt["poses3d"]
    m = kp[..., 3] > 0
    return {
        "mpjpe_mm": float((j[..., :24, :] - gt["joints"][..., :24, :]).norm(dim=-1).mean() * 1000),
        "pve_mm": float((v - gt["vertices"]).norm(dim=-1).mean() * 1000),
        "kp_error_mm": float((coco - kp[..., :3]).norm(dim=-1)[m].mean() * 1000),
    }


def run(ctx: Context, frames: int | None = None, systems: tuple[str, ...] | None = None, sweep: bool = False) -> dict[str, Any]:
    reason = missing("smplx")
    if reason is not None:
        return {"absent": reason, "systems": {"smplx_autograd": absent(reason), "h4d_fit": absent(reason + " (the body model is evaluated by smplx)")}}
    from h4d_fast.body import load_body_model
    from h4d_fast.config import FitConfig

    try:
        from h4d_fast.pipeline.fit import fit_sequence  # noqa: F401
    except Exception as e:
        r = f"h4d_fast.pipeline.fit unavailable ({type(e).__name__}: {e})"
        return {"absent": r, "systems": {"smplx_autograd": absent(r), "h4d_fit": absent(r)}}
    dev = ctx.device
    if frames is None:
        frames = ctx.frames_or(8 if ctx.quick else (600 if ctx.cuda else 60))
    cfg = FitConfig(collision=False)
    if ctx.quick:
        cfg = dataclasses.replace(cfg, epochs=1, iters_stage1=10, iters_stage2=5, iters_stage3=20)
    key = ("fit-body", str(dev))
    try:
        if key not in ctx.cache:
            ctx.cache[key] = load_body_model(device=dev)
        body = ctx.cache[key]
        gkey = ("fit-gt", frames)
        if gkey not in ctx.cache:
            ctx.cache[gkey] = ground_truth(body, frames, 2, seed=ctx.seed, device=dev)
        gt = ctx.cache[gkey]
    except Exception as e:
        r = f"body model unavailable ({type(e).__name__}: {e})"
        return {"absent": r, "systems": {"smplx_autograd": absent(r), "h4d_fit": absent(r)}}
    res: dict[str, Any] = {
        "workload": {"frames": frames, "people": 2, "vertices": body.num_vertices, "betas": body.num_betas, "keypoint_noise_m": NOISE_M,
                     "invalid_keypoints": DROP, "config": {k: getattr(cfg, k) for k in ("epochs", "iters_stage1", "iters_stage2", "iters_stage3",
                                                                                         "optimizer", "lr", "history_size", "ftol", "check_every",
                                                                                         "kp_sigma", "temporal", "collision")},
                     "body_model": str(body.path)},
        "systems": {},
    }
    S = res["systems"]
    want = systems or ("smplx_autograd", "h4d_fit")
    fns = {"smplx_autograd": smplx_autograd_fit, "h4d_fit": h4d_fit}
    caps = {"smplx_autograd": 90, "h4d_fit": 45} if not ctx.quick else {"smplx_autograd": 40, "h4d_fit": 20}
    warm = gt["poses3d"][:3]
    for name in want:
        fn = fns[name]
        cap = ctx.cap(caps[name] / (2 if sweep else 1), reserve=5)
        if cap < 5:
            S[name] = absent("skipped: time budget exhausted")
            continue
        try:
            fn(warm, body, dataclasses.replace(cfg, epochs=1, iters_stage1=2, iters_stage2=2, iters_stage3=2), dev)  # untimed warm-up
            times, out, peak = [], None, None
            t_start = time.perf_counter()
            while len(times) < (3 if not sweep else 2):
                if dev.type == "cuda":
                    sync(dev)
                    base = torch.cuda.memory_allocated(dev)
                    torch.cuda.reset_peak_memory_stats(dev)
                out = fn(gt["poses3d"], body, cfg, dev)
                if dev.type == "cuda" and peak is None:
                    peak = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
                times.append(out["seconds"])
                elapsed = time.perf_counter() - t_start
                if elapsed + out["seconds"] > cap:
                    break
            err = _errors(body, out["params"], gt)
            ms = 1e3 * statistics.median(times)
            S[name] = {"available": True, "device": dev.type, "dtype": str(body.dtype).replace("torch.", ""), "median_ms": ms,
                       "p20_ms": 1e3 * min(times), "p80_ms": 1e3 * max(times), "repeats": len(times), "timer": "wall clock, synchronised",
                       "peak_mem_mb": peak, "iterations": out["iterations"], "evaluations": out["evaluations"],
                       "ms_per_evaluation": 1e3 * out["seconds"] / max(1, out["evaluations"] or 1), **err}
            ctx.log(f"  fit {name:15s} {ms / 1e3:8.2f} s  MPJPE {err['mpjpe_mm']:.1f} mm  PVE {err['pve_mm']:.1f} mm  "
                    f"({out['iterations']} iterations, {out['evaluations']} evaluations)")
        except Exception as e:
            S[name] = absent(f"{type(e).__name__}: {e}")
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    a, b = S.get("smplx_autograd", {}), S.get("h4d_fit", {})
    if a.get("available") and b.get("available"):
        b["speedup_vs_smplx_autograd"] = a["median_ms"] / b["median_ms"]
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return workload_main("fitting", run, __doc__, argv, options=(("--frames", {"type": int}),))


if __name__ == "__main__":
    main()
