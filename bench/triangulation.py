"""RANSAC triangulation: aniposelib, plain numpy, plain torch and h4d_fast's backends side by side.

    python -m bench.triangulation [--quick] [--device cpu|cuda] [--json OUT]

Workload (:func:`bench.workloads.paper_triangulation`): the synthetic capture with pinhole
cameras, 600 frames x 2 people x 17 COCO keypoints = 20,400 points x 20 views (190 view pairs),
each person's primary detection per view (outliers, limb swaps, occlusion noise and misses as the
detector simulation made them). Same rule and thresholds for everyone: a view is a candidate when
its confidence exceeds ``conf_thr`` = 0.5; a view is an inlier of a hypothesis when
``0.5 |x - proj(X)| < err_thr`` = 0.01 in normalized units, i.e. a reprojection error below
``2 err_thr f`` = 36 px at f = 1800 px.

Systems:

* ``aniposelib`` (CPU): ``CameraGroup.triangulate_possible`` on ``[V, N, 1, 2]`` -- exactly what
  ``CameraGroup.triangulate_ransac`` runs -- with its stopping threshold set to the same 36 px
  (``triangulate_ransac`` itself hard-codes 0.5 px, under which it tries every camera subset, up
  to 2^20 per point). Views under the confidence threshold are passed as NaN. It enumerates camera
  subsets (largest first) and stops at the first whose *mean* reprojection error is below the
  threshold. Timed point by point on a random sample of points (``--anipose-points``), each point
  capped (``--anipose-cap-s``: a point still running is stopped and counted at the cap, so the
  extrapolated total is then a lower bound); the mean time per point times the number of points
  is the reported time (extrapolated).
* ``numpy_naive`` (CPU): the straightforward batched all-pairs implementation in numpy, float64
  (homogeneous SVD DLT for each of the 190 pair hypotheses, reprojection into all views, the
  largest inlier set, weighted SVD DLT on its inliers, 3 Huber Gauss-Newton steps), timed on a
  subset of points when the whole set does not fit its time cap, scaled linearly.
* ``torch_naive``: h4d_fast's torch reference (``backend="torch"``: the same all-pairs algorithm
  batched in torch, chunks of 4096 points) on the benchmark device (CUDA on a GPU machine), float32.
* ``h4d_numba`` (CPU), ``h4d_triton``, ``h4d_cupy`` (CUDA): the fused kernels, float32.

Accuracy: MPJPE (mm) of each system's valid points against the ground truth, the fraction of
points it returns, and, on aniposelib's sample, every system's MPJPE on the points of that sample.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Context, absent, best_kernel, measure, measure_scaled, missing, peak_memory_mb, workload_main  # noqa: E402
from bench.workloads import TriInput, paper_triangulation  # noqa: E402

PARAMS = dict(conf_thr=0.5, err_thr=0.01, min_views=2, refine_steps=3, huber_delta=0.005)
# time caps (s) per system on the paper-size workload (a sweep point gets a third, at least 2 s)
SWEEP_CAP_S = 4.0  # per system and sweep point
CAPS = {
    "cuda": {"torch_naive": 12, "h4d_numba": 12, "h4d_triton": 12, "h4d_cupy": 12, "numpy_naive": 15, "aniposelib": 40},
    "cpu": {"torch_naive": 40, "h4d_numba": 20, "h4d_triton": 0, "h4d_cupy": 0, "numpy_naive": 40, "aniposelib": 60},
    "quick": {"torch_naive": 8, "h4d_numba": 5, "h4d_triton": 0, "h4d_cupy": 0, "numpy_naive": 6, "aniposelib": 8},
}


# ----------------------------------------------------------------------------- plain numpy
def _svd_dlt(rows: np.ndarray) -> np.ndarray:
    """Homogeneous DLT: ``rows [..., 2V, 4]`` -> ``[..., 3]`` (NaN at infinity)."""
    _, _, vh = np.linalg.svd(rows)
    Xh = vh[..., -1, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        return Xh[..., :3] / Xh[..., 3:]


def _dlt_rows(xy: np.ndarray, P: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``xy [..., V, 2]``, ``P [V, 3, 4]`` (broadcast), ``w [..., V]`` -> ``[..., 2V, 4]``."""
    r1 = (xy[..., 0, None] * P[..., 2, :] - P[..., 0, :]) * w[..., None]
    r2 = (xy[..., 1, None] * P[..., 2, :] - P[..., 1, :]) * w[..., None]
    return np.stack([r1, r2], -2).reshape(*r1.shape[:-2], -1, 4)


def ransac_numpy(xy: np.ndarray, P: np.ndarray, conf: np.ndarray, conf_thr: float = 0.5, err_thr: float = 0.01, min_views: int = 2,
                 refine_steps: int = 3, huber_delta: float = 0.005, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Plain batched numpy RANSAC view-set triangulation (same rule as h4d_fast's reference).

    Args:
        xy: ``[N, V, 2]`` normalized coordinates (NaN = missing); P ``[V, 3, 4]``; conf ``[N, V]``.
    Returns:
        X ``[N, 3]`` (NaN where invalid) and the inlier mask ``[N, V]``.
    """
    N, V = conf.shape
    pairs = np.array(list(itertools.combinations(range(V), 2)))
    pi, pj = pairs[:, 0], pairs[:, 1]
    C = len(pairs)
    X_out = np.full((N, 3), np.nan)
    inl_out = np.zeros((N, V), bool)
    in_pair = np.zeros((C, V), bool)
    in_pair[np.arange(C), pi] = True
    in_pair[np.arange(C), pj] = True
    R, t = P[:, :, :3], P[:, :, 3]
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        x, c = xy[s:e], conf[s:e]
        n = e - s
        cand = (c > conf_thr) & np.isfinite(x).all(-1)
        x0 = np.where(cand[..., None], x, 0.0)
        w = np.where(cand, c, 0.0)
        # one hypothesis per view pair: [n, C, 4, 4] -> SVD
        xy2 = np.stack([x0[:, pi], x0[:, pj]], 2)  # [n, C, 2, 2]
        P2 = np.stack([P[pi], P[pj]], 1)  # [C, 2, 3, 4]
        w2 = np.stack([w[:, pi], w[:, pj]], 2)  # [n, C, 2]
        Xh = _svd_dlt(_dlt_rows(xy2, P2, w2))  # [n, C, 3]
        Xc = np.einsum("vij,ncj->ncvi", R, Xh) + t  # [n, C, V, 3]
        z = Xc[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            proj = Xc[..., :2] / np.where(np.abs(z) < 1e-12, 1e-12, z)[..., None]
            err = 0.5 * np.linalg.norm(proj - x0[:, None], axis=-1)  # [n, C, V]
            ok_v = (z > 0) & (err < err_thr)
        pair_ok = cand[:, pi] & cand[:, pj] & np.isfinite(Xh).all(-1)
        hyp_ok = pair_ok & (ok_v | ~in_pair).all(-1)  # both own views agree, in front of both
        inl = ((cand[:, None] & ok_v) | in_pair) & hyp_ok[..., None]
        best = inl.sum(-1).argmax(-1)  # first maximum = earliest pair
        bi = inl[np.arange(n), best]  # [n, V]
        wf = np.where(bi, w, 0.0)
        X = _svd_dlt(_dlt_rows(x0, P, wf))  # [n, 3]
        for _ in range(refine_steps):  # confidence-weighted Huber Gauss-Newton
            Xc = np.einsum("vij,nj->nvi", R, X) + t
            z = Xc[..., 2]
            ok = (wf > 0) & (z > 1e-9)
            zs = np.where(ok, z, 1.0)
            pr = Xc[..., :2] / zs[..., None]
            r = np.where(ok[..., None], pr - x0, 0.0)
            en = np.linalg.norm(r, axis=-1)
            h = np.where(en <= huber_delta, 1.0, huber_delta / np.maximum(en, 1e-30))
            wv = np.where(ok, wf * h, 0.0)
            J0 = (R[None, :, 0, :] - pr[..., 0, None] * R[None, :, 2, :]) / zs[..., None]
            J1 = (R[None, :, 1, :] - pr[..., 1, None] * R[None, :, 2, :]) / zs[..., None]
            H = np.einsum("nv,nvi,nvj->nij", wv, J0, J0) + np.einsum("nv,nvi,nvj->nij", wv, J1, J1)
            g = np.einsum("nv,nvi->ni", wv, J0 * r[..., 0, None] + J1 * r[..., 1, None])
            H = H + (1e-9 * np.trace(H, axis1=1, axis2=2) + 1e-30)[:, None, None] * np.eye(3)
            with np.errstate(all="ignore"):
                good = np.abs(np.linalg.det(H)) > 0
                dX = np.zeros_like(X)
                if good.any():
                    dX[good] = np.linalg.solve(H[good], -g[good][..., None])[..., 0]
            X = np.where((good & np.isfinite(dX).all(-1))[:, None], X + dX, X)
        nv = bi.sum(-1)
        valid = (nv >= max(min_views, 2)) & np.isfinite(X).all(-1)
        X_out[s:e] = np.where(valid[:, None], X, np.nan)
        inl_out[s:e] = bi & valid[:, None]
    return X_out, inl_out


# ----------------------------------------------------------------------------- aniposelib
def run_aniposelib(ti: TriInput, sample: np.ndarray, cap_s: float, total_s: float, thr_px: float) -> dict[str, Any]:
    """Triangulate the sampled points one by one with aniposelib (see module docstring)."""
    return run_aniposelib_jobs([(ti, sample)], cap_s, total_s, thr_px)[0]


def run_aniposelib_jobs(jobs: list[tuple[TriInput, np.ndarray]], cap_s: float, total_s: float, thr_px: float) -> list[dict[str, Any]]:
    """aniposelib on several workloads (e.g. camera counts) in one child process
    (:mod:`bench._anipose_worker`: one import and numba compilation for all), ``total_s`` each.

    The child reports every point as it finishes; it is killed if it outlives its time plus a
    start-up allowance (a point stuck where no signal reaches it), and the point it was on is
    then counted as capped.
    """
    import json as _json
    import os
    import subprocess
    import tempfile

    from bench.common import REPO

    arrays: dict[str, Any] = {"jobs": len(jobs), "thr": thr_px, "cap_s": cap_s, "total_s": total_s}
    for j, (ti, sample) in enumerate(jobs):
        uv, conf, _, _ = ti.flat()
        pts = uv.numpy().copy()
        pts[conf.numpy() <= PARAMS["conf_thr"]] = np.nan  # views under the confidence threshold are not candidates
        cams = ti.cams
        if any(m != "pinhole" for m in cams.model):
            raise ValueError("the aniposelib comparison uses the pinhole capture")
        arrays.update({f"K_{j}": cams.K.double().numpy(), f"R_{j}": cams.R.double().numpy(), f"t_{j}": cams.t.double().numpy(),
                       f"size_{j}": cams.size.numpy(), f"pts_{j}": np.ascontiguousarray(pts[sample].transpose(1, 0, 2))})  # [V, n, 2]
        if j == 0:  # warm-up point: a true 3D point projected exactly
            arrays["exact_0"] = cams.project(ti.X_true.reshape(-1, 3)[int(sample[0])].double())[0].numpy()
    with tempfile.TemporaryDirectory(prefix="h4d_bench_anipose_") as tmp:
        inp, outp = Path(tmp) / "in.npz", Path(tmp) / "out.jsonl"
        np.savez(inp, **arrays)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU peer: keep the child off the GPU
        proc = subprocess.Popen([sys.executable, "-m", "bench._anipose_worker", str(inp), str(outp)], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        killed = False
        try:  # + imports and numba compilation
            _, err = proc.communicate(timeout=len(jobs) * (total_s + cap_s) + 120.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            killed = True
        t_kill = time.time()
        events = [_json.loads(line) for line in outp.read_text().splitlines() if line.strip()] if outp.exists() else []
    ready = next((e for e in events if e["event"] == "ready"), None)
    if ready is None:
        raise RuntimeError(f"aniposelib worker failed (exit {proc.returncode}): {(err or '').strip()[-1500:]}")
    out = []
    for j, (_, sample) in enumerate(jobs):
        pts_ev = [e for e in events if e["event"] == "point" and e["job"] == j]
        times = [e["seconds"] for e in pts_ev]
        done = [e["finished"] for e in pts_ev]
        X = [e["X"] for e in pts_ev]
        begun = [e for e in events if e["event"] == "begin" and e["job"] == j]
        if killed and begun and begun[-1]["k"] >= len(pts_ev):  # the point it was stuck on
            times.append(t_kill - begun[-1]["t"])
            done.append(False)
            X.append([float("nan")] * 3)
        n = len(times)
        if n == 0:
            out.append({"error": "no point finished (worker " + ("killed" if killed else "stopped") + ")"})
            continue
        ts = np.array(times)
        out.append({
            "version": ready.get("version"), "stubbed_imports": ready.get("stubbed", []), "threshold_px": thr_px, "sampled_points": n,
            "capped_points": int(n - sum(done)), "cap_s": cap_s, "killed": killed, "warmup_s": ready.get("warmup_s"),
            "per_point_ms": {"mean": 1e3 * float(ts.mean()), "median": 1e3 * float(np.median(ts)), "max": 1e3 * float(ts.max())},
            "sample_index": np.asarray(sample[:n]), "X": np.array(X, dtype=np.float64).reshape(n, 3), "finished": np.array(done, bool),
        })
    return out


# ----------------------------------------------------------------------------- workload
def _mpjpe(X: torch.Tensor | np.ndarray, X_true: torch.Tensor, idx: np.ndarray | None = None) -> tuple[float | None, float]:
    X = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X).double().cpu().reshape(-1, 3)
    Xt = X_true.double().reshape(-1, 3)
    if idx is not None:
        X, Xt = X[torch.as_tensor(idx)], Xt[torch.as_tensor(idx)]
    ok = torch.isfinite(X).all(-1)
    if not bool(ok.any()):
        return None, 0.0
    return float((X[ok] - Xt[ok]).norm(dim=-1).mean() * 1000), float(ok.double().mean())


def anipose_sample(ctx: Context, N: int, n: int) -> np.ndarray:
    """The random points (of ``N``) timed with aniposelib."""
    return np.random.default_rng(ctx.seed + 17).choice(N, size=min(N, n), replace=False)


def run(ctx: Context, ti: TriInput | None = None, systems: tuple[str, ...] | None = None, sweep: bool = False,
        anipose: dict[str, Any] | None = None, anipose_pre: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time every available system on one workload. ``sweep=True``: shorter caps, no aniposelib
    run unless ``anipose`` says so (``{"points", "cap_s", "total_s"}``) or ``anipose_pre`` holds a
    result of :func:`run_aniposelib_jobs` for this workload."""
    from h4d_fast.ops import _backend, triangulate_ransac

    ti = ti or paper_triangulation(ctx)
    F, P, J, V = ti.shape
    N = ti.points
    dev = ctx.device
    reps = ctx.n_repeats if not sweep else max(3, ctx.n_repeats // 2)
    uv, conf, xy, Xt = ti.flat()
    f_px = float(ti.cams.intrinsics[:, :2].double().mean())
    thr_px = 2 * PARAMS["err_thr"] * f_px
    res: dict[str, Any] = {
        "workload": {"frames": F, "people": P, "joints": J, "cameras": V, "points": N, "pairs": V * (V - 1) // 2, "lens": "pinhole",
                     "params": dict(PARAMS), "inlier_threshold_px": thr_px, "focal_px_mean": f_px,
                     "observations_over_conf_thr": float((conf > PARAMS["conf_thr"]).double().mean())},
        "systems": {},
    }
    S = res["systems"]
    want = systems or ("aniposelib", "numpy_naive", "torch_naive", "h4d_numba", "h4d_triton", "h4d_cupy")
    outs: dict[str, Any] = {}

    # ---- h4d_fast torch reference (plain batched torch) and the kernels
    def op_system(name: str, backend: str, device: torch.device, cap: float):
        reason = _backend.why_unavailable("triangulate_ransac", backend, device)
        if reason is None and backend == "triton" and device.type != "cuda":
            reason = "triton is timed on CUDA only"
        if reason is not None:
            S[name] = absent(reason)
            return
        sets = [(xy.to(device, torch.float32).clone(), conf.to(device, torch.float32).clone()) for _ in range(2 if device.type == "cuda" else 1)]
        Pm = ti.P.to(device, torch.float32)

        def call(i: int, n: int | None = None):
            x, c = sets[i % len(sets)]
            if n is not None:
                x, c = x[:n], c[:n]
            return triangulate_ransac(x, Pm, c, backend=backend, **PARAMS)

        try:
            with torch.no_grad():
                if device.type == "cuda":
                    r = measure(call, device, reps, cap)
                    r["peak_mem_mb"] = peak_memory_mb(call, device)
                else:
                    r = measure_scaled(lambda n, i: call(i, n), N, device, reps, cap, n_start=2048)
                out = call(0)
        except Exception as e:  # a backend that fails is reported, not fatal
            S[name] = absent(f"{type(e).__name__}: {e}")
            return
        X = out[0].double().cpu()
        m, vf = _mpjpe(X, Xt)
        S[name] = {"available": True, "device": device.type, "dtype": "float32", **r, "mpjpe_mm": m, "valid_frac": vf}
        outs[name] = (X, out[1].cpu())
        ctx.log(f"  triangulation {name:12s} {r['median_ms']:10.3f} ms  MPJPE {m if m is not None else float('nan'):.2f} mm")

    caps = CAPS["quick" if ctx.quick else ("cuda" if ctx.cuda else "cpu")]

    def cap(name: str) -> float:
        return ctx.cap(min(SWEEP_CAP_S, max(1.5, caps[name] / 3)) if sweep else caps[name])

    if "torch_naive" in want:
        op_system("torch_naive", "torch", dev, cap("torch_naive"))
    if "h4d_numba" in want:
        op_system("h4d_numba", "numba", torch.device("cpu"), cap("h4d_numba"))
    for k in ("triton", "cupy"):
        if f"h4d_{k}" in want:
            if not ctx.cuda:
                S[f"h4d_{k}"] = absent("no CUDA device")
            else:
                op_system(f"h4d_{k}", k, dev, cap(f"h4d_{k}"))

    # ---- plain numpy
    if "numpy_naive" in want:
        # points in a random order, so that a timed prefix is a random subset
        perm = np.random.default_rng(ctx.seed + 5).permutation(N)
        xy_np, conf_np, P_np = xy.numpy()[perm], conf.numpy()[perm], ti.P.numpy()
        try:
            r = measure_scaled(lambda n, i: ransac_numpy(xy_np[:n], P_np, conf_np[:n], **PARAMS), N, torch.device("cpu"),
                               max(2, reps // 4), cap("numpy_naive"), n_start=256)
            n_acc = min(N, r["measured_items"])
            X, inl = ransac_numpy(xy_np[:n_acc], P_np, conf_np[:n_acc], **PARAMS)
            m, vf = _mpjpe(X, Xt[torch.as_tensor(perm[:n_acc])])
            S["numpy_naive"] = {"available": True, "device": "cpu", "dtype": "float64", **r, "mpjpe_mm": m, "valid_frac": vf,
                                "accuracy_on_points": n_acc}
            if n_acc == N:
                Xf, If = np.empty_like(X), np.empty_like(inl)
                Xf[perm], If[perm] = X, inl
                outs["numpy_naive"] = (torch.from_numpy(Xf), torch.from_numpy(If))
            else:
                res["numpy_subset"] = [int(i) for i in perm[:n_acc]]
            ctx.log(f"  triangulation numpy_naive  {r['median_ms']:10.1f} ms" + (f" (extrapolated from {r['measured_items']} points)" if r["extrapolated"] else ""))
        except Exception as e:
            S["numpy_naive"] = absent(f"{type(e).__name__}: {e}")

    # ---- aniposelib
    if "aniposelib" in want:
        reason = missing("aniposelib", "cv2", "numba")
        if reason is None and anipose is None and anipose_pre is None and sweep:
            reason = "not run in this sweep point"
        if reason is not None:
            S["aniposelib"] = absent(reason)
        else:
            try:
                if anipose_pre is not None:
                    ar = anipose_pre
                else:
                    a = {**ctx.anipose, **(anipose or {})}
                    n_pts = int(a.get("points", 6 if ctx.quick else 32))
                    cap_s = float(a.get("cap_s", 1.5 if ctx.quick else 5.0))
                    total = ctx.cap(float(a.get("total_s", caps["aniposelib"])))
                    ar = run_aniposelib(ti, anipose_sample(ctx, N, n_pts), cap_s, total, thr_px)
                if "error" in ar:
                    raise RuntimeError(ar["error"])
                n = ar["sampled_points"]
                mean_ms = ar["per_point_ms"]["mean"]
                ppf = P * J  # points per frame
                fin = ar["sample_index"][ar["finished"]]
                m, vf = _mpjpe(ar["X"][ar["finished"]], Xt[torch.as_tensor(fin, dtype=torch.long)])
                S["aniposelib"] = {
                    "available": True, "device": "cpu", "dtype": "float64", "median_ms": mean_ms * N, "extrapolated": True,
                    "measured_items": n, "total_items": N, "lower_bound": ar["capped_points"] > 0,
                    "timer": "time.perf_counter per point; total = mean time per sampled point x points",
                    "extrapolation": (f"measured on {n} random points of {N:,} ({n / ppf:.2f} frames' worth), "
                                      f"extrapolated: {mean_ms:.1f} ms/point x {ppf} points/frame = {mean_ms * ppf / 1e3:.2f} s/frame "
                                      f"x {F} frames" + ("; a lower bound: points stopped at the cap count as the cap"
                                                         if ar["capped_points"] else "")),
                    "per_frame_ms": mean_ms * ppf, "points_per_frame": ppf,
                    "version": ar["version"], "stubbed_imports": ar["stubbed_imports"], "threshold_px": thr_px,
                    "capped_points": ar["capped_points"], "cap_s": ar["cap_s"], "per_point_ms": ar["per_point_ms"],
                    "worker_killed": ar["killed"], "warmup_s": ar["warmup_s"],
                    "mpjpe_mm": m, "valid_frac": vf, "accuracy_on_points": int(len(fin)),
                }
                res["anipose_sample"] = [int(i) for i in fin]
                ctx.log(f"  triangulation aniposelib   {mean_ms:10.1f} ms/point x {N} = {mean_ms * N / 1e3:.0f} s "
                        f"({n} points sampled, {ar['capped_points']} capped)")
            except Exception as e:
                S["aniposelib"] = absent(f"{type(e).__name__}: {e}")

    # ---- accuracy on aniposelib's sample, inlier agreement, speed-ups
    samp = res.get("anipose_sample")
    ref_inl = outs.get("torch_naive", (None, None))[1]
    nsub = res.get("numpy_subset")
    for name, (X, inl) in outs.items():
        r = S[name]
        if samp:
            r["mpjpe_mm_on_anipose_sample"], r["valid_frac_on_anipose_sample"] = _mpjpe(X, Xt, np.array(samp))
        if nsub:
            r["mpjpe_mm_on_numpy_subset"], r["valid_frac_on_numpy_subset"] = _mpjpe(X, Xt, np.array(nsub))
        if ref_inl is not None and inl is not None and inl.shape == ref_inl.shape:
            r["inlier_agreement_vs_torch"] = float((inl.bool() == ref_inl.bool()).double().mean())
    if nsub and S.get("numpy_naive", {}).get("available"):
        S["numpy_naive"]["mpjpe_mm_on_numpy_subset"] = S["numpy_naive"]["mpjpe_mm"]
        S["numpy_naive"]["valid_frac_on_numpy_subset"] = S["numpy_naive"]["valid_frac"]
    if samp and S.get("aniposelib", {}).get("available"):
        S["aniposelib"]["mpjpe_mm_on_anipose_sample"] = S["aniposelib"]["mpjpe_mm"]
        S["aniposelib"]["valid_frac_on_anipose_sample"] = S["aniposelib"]["valid_frac"]
    if nsub:
        res["numpy_subset_points"] = len(res.pop("numpy_subset"))
    res["best"] = best_kernel(S, ctx.cuda)
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    def run_anipose(ctx: Context, anipose_points: int | None, anipose_cap_s: float | None, anipose_total_s: float | None) -> dict[str, Any]:
        a = {k: v for k, v in (("points", anipose_points), ("cap_s", anipose_cap_s), ("total_s", anipose_total_s)) if v is not None}
        return run(ctx, anipose=a or None)

    return workload_main("triangulation", run_anipose, __doc__, argv,
                         options=(("--anipose-points", {"type": int}), ("--anipose-cap-s", {"type": float}),
                                  ("--anipose-total-s", {"type": float})))


if __name__ == "__main__":
    main()
