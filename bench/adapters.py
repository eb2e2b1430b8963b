"""The drop-in adapters (h4d_fast.compat) against the originals they replace, at 20 cameras.

    python -m bench.adapters [--quick] [--device cpu|cuda] [--json OUT]

One entry per adapter; each times the original (CPU, as it runs) and the adapter (on the bench
device, called exactly as the original: numpy in, numpy out, conversions included), checks that
both give the same answer on the timed inputs, and reports the speed-up (goal: >= 100x on the GPU).

* ``aniposelib.triangulate``: the 20-camera synthetic capture's points (600 frames x 2 people x 17
  keypoints = 20,400 points; views under confidence 0.5 passed as NaN), ``CameraGroup.triangulate``.
* ``aniposelib.triangulate_ransac``: its subset search (threshold 0.5 px, min_cams 2) on a random
  sample of those points: up to 2^20 subsets each at 20 cameras, so aniposelib runs each point in
  a child process capped at ``cap_s`` (a capped point counts at the cap: a lower bound); the adapter
  runs the same exhaustive search on the sample.
* ``pose2sim.triangulation``: Pose2Sim's triangulation step on a generated project (20 cameras,
  17 keypoints, noise, outliers, low-likelihood points), the whole step (JSON reading and TRC
  writing included) and its core alone (``triangulation_from_best_cameras`` per keypoint against
  the batched search).
* ``cocoeval.computeOks``: ``computeOks`` of every (image, category) cell of generated COCO
  keypoint data (pycocotools' loop against the batched cells), and the OKS arithmetic alone
  (``arithmetic_only``: the drop-in's own floor is reading the annotation dicts in Python).
* ``egohumans.triangulator``: the reference's per-point RANSAC (``bench.egohumans_reference``:
  numpy SVD DLT, scipy least_squares; the reference package is not on PyPI) against
  ``triangulate_ransac_batch`` on the capture's normalized points.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Context, absent, context_for_script, environment, measure, measure_scaled, missing, version  # noqa: E402

CAPS = {"cuda": 20.0, "cpu": 30.0, "quick": 6.0}  # seconds per timed system
RANSAC_POINTS = {"cuda": 16, "cpu": 2, "quick": 1}
RANSAC_CAP_S = {"cuda": 5.0, "cpu": 5.0, "quick": 2.0}
P2S_FRAMES = {"cuda": 60, "cpu": 20, "quick": 8}
COCO_IMAGES = {"cuda": 5000, "cpu": 2000, "quick": 300}


def _kind(ctx: Context) -> str:
    return "quick" if ctx.quick else ("cuda" if ctx.cuda else "cpu")


def _entry(orig: dict[str, Any], ours: dict[str, Any], **extra: Any) -> dict[str, Any]:
    sp = orig["median_ms"] / ours["median_ms"] if ours.get("median_ms") else None
    return {"available": True, "original": orig, "h4d": ours, "speedup": sp, "speedup_lower_bound": bool(orig.get("lower_bound")), **extra}


# ----------------------------------------------------------------------------- generated inputs
def coco_keypoint_data(seed: int = 0, n_img: int = 120, n_cat: int = 3, K: int = 17, wholebody: bool = False) -> tuple[dict, list]:
    """COCO keypoint ground truth and detections with the API's edge cases: images without
    annotations, crowd, zero-area and no-visible-keypoint annotations, several categories, tied
    scores, false positives, cells over ``maxDets``."""
    rng = np.random.RandomState(seed)
    parts = {"foot_kpts": 6, "face_kpts": 4, "lefthand_kpts": 3, "righthand_kpts": 3} if wholebody else {}
    imgs = [{"id": i + 1, "width": 640, "height": 480} for i in range(n_img)]
    cats = [{"id": c + 1, "name": f"c{c}", "keypoints": [str(k) for k in range(K)], "skeleton": []} for c in range(n_cat)]
    anns: list[dict] = []
    dts: list[dict] = []

    def kp(x: float, y: float, w: float, h: float, n: int, vis: bool = True) -> np.ndarray:
        k = np.stack([x + rng.uniform(0, w, n), y + rng.uniform(0, h, n), rng.choice([0, 1, 2], n, p=[0.3, 0.2, 0.5]) if vis else np.zeros(n)], 1)
        k[k[:, 2] == 0, :2] = 0
        return k

    for im in imgs:
        if rng.rand() < 0.1:
            continue
        for c in range(n_cat):
            for _ in range(rng.randint(0, 4)):
                x, y, w, h = rng.uniform(50, 500), rng.uniform(50, 350), rng.uniform(5, 120), rng.uniform(5, 150)
                k = kp(x, y, w, h, K, vis=rng.rand() > 0.1)
                a = {"id": len(anns) + 1, "image_id": im["id"], "category_id": c + 1, "bbox": [x, y, w, h],
                     "area": 0.0 if rng.rand() < 0.05 else w * h * rng.uniform(0.3, 0.9), "iscrowd": int(rng.rand() < 0.08),
                     "keypoints": k.ravel().tolist(), "num_keypoints": int((k[:, 2] > 0).sum())}
                for name, n in parts.items():
                    a[name] = kp(x, y, w, h, n).ravel().tolist()
                anns.append(a)
                for _ in range(rng.randint(0, 3)):
                    d = k.copy()
                    d[:, :2] += rng.normal(0, rng.uniform(1, 15), (K, 2))
                    d[:, 2] = rng.uniform(0, 1, K)
                    det = {"image_id": im["id"], "category_id": c + 1, "keypoints": d.ravel().tolist(), "score": float(rng.choice([0.5, rng.rand()]))}
                    for name, n in parts.items():
                        det[name] = (np.asarray(a[name]).reshape(-1, 3) + [rng.normal(0, 5), rng.normal(0, 5), 0]).ravel().tolist()
                    dts.append(det)
        for _ in range(rng.randint(0, 3) + (25 if rng.rand() < 0.03 else 0)):
            d = np.stack([rng.uniform(0, 640, K), rng.uniform(0, 480, K), rng.uniform(0, 1, K)], 1)
            det = {"image_id": im["id"], "category_id": int(rng.randint(1, n_cat + 1)), "keypoints": d.ravel().tolist(), "score": float(rng.rand())}
            for name, n in parts.items():
                det[name] = np.stack([rng.uniform(0, 640, n), rng.uniform(0, 480, n), np.ones(n)], 1).ravel().tolist()
            dts.append(det)
    return {"images": imgs, "categories": cats, "annotations": anns}, dts


def pose2sim_project(folder: Path, cams: Any, X: np.ndarray, seed: int = 0, rate: float = 30.0, noise_px: float = 1.5,
                     outlier_frac: float = 0.05, low_frac: float = 0.1, missing_frac: float = 0.0) -> Path:
    """A Pose2Sim trial folder: ``calibration/calib.toml`` of ``cams`` (a CameraSet), one OpenPose
    JSON per frame and camera of the people ``X [F, P, K, 3]`` (noise, gross outliers, likelihoods
    below 0.3, missing files), and a Config.toml with a flat custom skeleton of ``K`` keypoints."""
    from h4d_fast.io.calibration import write_toml_calibration

    folder = Path(folder)
    rng = np.random.RandomState(seed)
    (folder / "calibration").mkdir(parents=True, exist_ok=True)
    write_toml_calibration(folder / "calibration" / "calib.toml", cams)
    F, P, K, _ = X.shape
    V = len(cams)
    uv = cams.project(torch.as_tensor(X.reshape(-1, 3), dtype=torch.float64))[0].numpy().reshape(F, P, K, V, 2)
    for c in range(V):
        d = folder / "pose" / f"cam{c + 1:02d}_json"
        d.mkdir(parents=True, exist_ok=True)
        for f in range(F):
            if rng.rand() < missing_frac:
                continue
            ppl = []
            for p in range(P):
                k = np.zeros((K, 3))
                k[:, :2] = uv[f, p, :, c] + rng.normal(0, noise_px, (K, 2))
                k[:, 2] = rng.uniform(0.4, 1.0, K)
                k[rng.rand(K) < low_frac, 2] = 0.1
                out = rng.rand(K) < outlier_frac
                k[out, :2] += rng.normal(0, 150, (int(out.sum()), 2))
                ppl.append({"pose_keypoints_2d": k.ravel().tolist()})
            (d / f"cam{c + 1:02d}.{f:04d}.json").write_text(json.dumps({"people": ppl}))
    tree = "\n".join(f'[[pose.FLAT.children]]\nname = "k{k}"\nid = {k}' for k in range(K))
    (folder / "Config.toml").write_text(
        f"[project]\nmulti_person = {str(P > 1).lower()}\nframe_rate = {rate}\nframe_range = 'auto'\n\n"
        "[pose]\npose_model = 'FLAT'\n\n[pose.FLAT]\nname = \"root\"\nid = \"None\"\n" + tree + "\n\n"
        "[triangulation]\nreproj_error_threshold_triangulation = 15\nlikelihood_threshold_triangulation = 0.3\n"
        "min_cameras_for_triangulation = 2\ninterp_if_gap_smaller_than = 20\ninterpolation = 'linear'\n"
        "remove_incomplete_frames = false\nsections_to_keep = 'all'\nmin_chunk_size = 3\nfill_large_gaps_with = 'last_value'\n"
        "undistort_points = false\nmake_c3d = false\nmax_distance_m = 1.0\nhandle_LR_swap = false\n")
    return folder


# ----------------------------------------------------------------------------- the five adapters
def _anipose_group(cams: Any) -> Any:
    import cv2
    from aniposelib.cameras import Camera, CameraGroup

    return CameraGroup([Camera(matrix=cams.K[v].numpy(), dist=np.zeros(5), size=tuple(int(s) for s in cams.size[v]),
                               rvec=cv2.Rodrigues(cams.R[v].numpy())[0].ravel(), tvec=cams.t[v].numpy(), name=cams.names[v])
                        for v in range(len(cams))])


def bench_aniposelib(ctx: Context, ti: Any) -> dict[str, Any]:
    from h4d_fast.compat import aniposelib as A

    why = missing("aniposelib", "jax")
    if why:
        return {"aniposelib.triangulate": absent(why), "aniposelib.triangulate_ransac": absent(why)}
    uv, conf, _, _ = ti.flat()
    pts = uv.numpy().copy()
    pts[conf.numpy() <= 0.5] = np.nan
    p = np.ascontiguousarray(pts.transpose(1, 0, 2))  # [V, N, 2]
    g = _anipose_group(ti.cams)
    cap = CAPS[_kind(ctx)]
    out: dict[str, Any] = {}
    ref = g.triangulate(p)
    o = measure(lambda i: g.triangulate(p), torch.device("cpu"), 3, ctx.cap(cap))
    mine = A.triangulate(g, p, device=ctx.device)
    m = measure(lambda i: A.triangulate(g, p, device=ctx.device), ctx.device, ctx.n_repeats, ctx.cap(cap))
    out["aniposelib.triangulate"] = _entry({**o, "name": f"aniposelib {version('aniposelib')} CameraGroup.triangulate (jax, CPU)"},
                                           {**m, "device": ctx.device.type}, points=p.shape[1], cameras=p.shape[0],
                                           max_abs_diff_m=float(np.nanmax(np.abs(mine - ref))), nan_agree=bool(np.array_equal(np.isnan(mine), np.isnan(ref))))
    # the subset search, on a sample
    from bench.triangulation import run_aniposelib

    n = RANSAC_POINTS[_kind(ctx)]
    sample = np.random.default_rng(ctx.seed + 5).choice(p.shape[1], size=n, replace=False)
    ar = run_aniposelib(ti, sample, RANSAC_CAP_S[_kind(ctx)], RANSAC_CAP_S[_kind(ctx)] * n + 5, 0.5)
    if "error" in ar:
        out["aniposelib.triangulate_ransac"] = absent(ar["error"])
        return out
    k = ar["sampled_points"]
    sub = p[:, sample[:k]]
    t0 = time.perf_counter()
    res = A.triangulate_ransac(g, sub, device=ctx.device)
    t_ours = 1e3 * (time.perf_counter() - t0) / k
    fin = ar["finished"]
    diff = float(np.nanmax(np.abs(res[0][fin] - ar["X"][fin]))) if fin.any() else None
    orig = {"median_ms": ar["per_point_ms"]["mean"], "lower_bound": ar["capped_points"] > 0, "capped_points": ar["capped_points"],
            "cap_s": ar["cap_s"], "name": f"aniposelib {ar.get('version')} triangulate_ransac (threshold 0.5 px), per point, CPU"}
    out["aniposelib.triangulate_ransac"] = _entry(orig, {"median_ms": t_ours, "per": "point", "device": ctx.device.type, "points": k},
                                                  points=k, cameras=p.shape[0], finished_by_original=int(fin.sum()), max_abs_diff_m=diff)
    return out


def bench_pose2sim(ctx: Context, ti: Any) -> dict[str, Any]:
    from h4d_fast.compat import pose2sim as P2S

    why = missing("Pose2Sim", "anytree", "pandas", "rtoml")
    if why:
        return {"pose2sim.triangulation": absent(why)}
    from Pose2Sim import triangulation as orig_tri
    from Pose2Sim.Pose2Sim import read_config_files

    F = min(P2S_FRAMES[_kind(ctx)], ti.X_true.shape[0])
    X = ti.X_true[:F, :1].numpy()  # one person, 17 keypoints
    with tempfile.TemporaryDirectory(prefix="h4d_bench_p2s_") as tmp:
        proj = pose2sim_project(Path(tmp) / "trial", ti.cams, X, seed=ctx.seed)
        cfg = read_config_files(str(proj))[1][0]
        logging.disable(logging.CRITICAL)
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                t0 = time.perf_counter()
                orig_tri.triangulate_all(cfg)
                t_orig = time.perf_counter() - t0
            (a,) = sorted((proj / "pose-3d").glob("*.trc"))
            a = a.rename(a.with_suffix(".orig.trc"))
            m = measure(lambda i: P2S.triangulate_all(cfg, device=ctx.device), ctx.device, 3, ctx.cap(CAPS[_kind(ctx)]))
            (b,) = P2S.triangulate_all(cfg, device=ctx.device)
            # the core alone: every keypoint's camera search

            cal = P2S.read_calibration(next((proj / "calibration").glob("*.toml")))
            ids, _ = P2S.keypoint_model(cfg)
            pts, _, _ = P2S.read_pose_json(cfg, ids, len(cal["K"]))
            Pm = [K @ np.concatenate([R, T.reshape(3, 1)], 1) for K, R, T in zip(cal["K"], cal["R"], cal["T"])]

            def core_orig() -> None:
                for f in range(pts.shape[0]):
                    for k in range(pts.shape[3]):
                        c = pts[f, :, 0, k].T.copy()  # [3, C]
                        low = c[2] < 0.3
                        c[:, low] = np.nan
                        orig_tri.triangulation_from_best_cameras(cfg, c, c, Pm, None)

            t0 = time.perf_counter()
            core_orig()
            t_core = time.perf_counter() - t0
            mc = measure(lambda i: P2S.triangulate_points(pts, cal, cfg["triangulation"], ctx.device), ctx.device, ctx.n_repeats, ctx.cap(CAPS[_kind(ctx)]))
        finally:
            logging.disable(logging.NOTSET)
        from h4d_fast.io.trc import read_trc

        ta, tb = read_trc(a), read_trc(b)
        diff = float(np.nanmax(np.abs(ta.xyz - tb.xyz))) if ta.xyz.shape == tb.xyz.shape else None
    name = f"Pose2Sim {version('pose2sim')} triangulate_all, CPU"
    return {"pose2sim.triangulation": _entry({"median_ms": 1e3 * t_orig, "repeats": 1, "name": name}, {**m, "device": ctx.device.type},
                                             frames=F, cameras=len(ti.cams), keypoints=17, max_abs_diff_m=diff,
                                             core={"original_ms": 1e3 * t_core, "h4d_ms": mc["median_ms"], "speedup": 1e3 * t_core / mc["median_ms"],
                                                   "what": "triangulation_from_best_cameras per keypoint vs the batched search"})}


def bench_cocoeval(ctx: Context) -> dict[str, Any]:
    why = missing("pycocotools")
    if why:
        return {"cocoeval.computeOks": absent(why)}
    from pycocotools import coco
    from pycocotools.cocoeval import COCOeval

    from h4d_fast.compat.cocoeval import oks_cells

    n = COCO_IMAGES[_kind(ctx)]
    gt_d, dts = coco_keypoint_data(ctx.seed, n_img=n, n_cat=1)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco.COCO()
        gt.dataset = gt_d
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(dts))
        E = COCOeval(gt, dt, "keypoints")
        E.params.imgIds = sorted(set(E.params.imgIds))
        E._prepare()
    keys = [(i, c) for i in E.params.imgIds for c in E.params.catIds]
    md = E.params.maxDets[-1]
    o = measure(lambda i: [E.computeOks(*k) for k in keys], torch.device("cpu"), 3, ctx.cap(CAPS[_kind(ctx)]))
    cells = [(E._dts[k], E._gts[k]) for k in keys]
    m = measure(lambda i: oks_cells(cells, E.params.kpt_oks_sigmas, md, device=ctx.device), ctx.device, ctx.n_repeats, ctx.cap(CAPS[_kind(ctx)]))
    a = [E.computeOks(*k) for k in keys]
    b = oks_cells(cells, E.params.kpt_oks_sigmas, md, device=ctx.device)
    diff = max((float(np.abs(x - y).max()) for x, y in zip(a, b) if not isinstance(x, list) and len(x)), default=0.0)
    # the arithmetic alone: every non-empty cell padded into one batch, already on the device
    from h4d_fast.compat.cocoeval import _oks_dense

    live = [k for k, x in zip(keys, a) if not isinstance(x, list)]
    Dm = max(min(len(E._dts[k]), md) for k in live)
    Gm = max(len(E._gts[k]) for k in live)
    Kp = len(E.params.kpt_oks_sigmas)
    d = torch.zeros(len(live), Dm, 3 * Kp, dtype=torch.float64, device=ctx.device)
    g = torch.zeros(len(live), Gm, 3 * Kp, dtype=torch.float64, device=ctx.device)
    ar = torch.ones(len(live), Gm, dtype=torch.float64, device=ctx.device)
    bx = torch.zeros(len(live), Gm, 4, dtype=torch.float64, device=ctx.device)
    var = (torch.as_tensor(E.params.kpt_oks_sigmas, device=ctx.device) * 2) ** 2
    mk = measure(lambda i: _oks_dense(d, g, ar, bx, var), ctx.device, ctx.n_repeats, ctx.cap(CAPS[_kind(ctx)]))
    return {"cocoeval.computeOks": _entry({**o, "name": f"pycocotools {version('pycocotools')} computeOks loop, CPU"}, {**m, "device": ctx.device.type},
                                          images=n, cells=len(keys), nonempty_cells=len(live), max_abs_diff=diff,
                                          arithmetic_only={"h4d_ms": mk["median_ms"], "speedup": o["median_ms"] / mk["median_ms"],
                                                           "what": "the OKS arithmetic of all cells, inputs already packed on the device "
                                                                   "(the drop-in's floor is reading the annotation dicts in Python)"})}


def bench_egohumans(ctx: Context, ti: Any) -> dict[str, Any]:
    from bench.egohumans_reference import triangulate_ransac as reference
    from h4d_fast.compat.egohumans import triangulate_ransac_batch

    _, conf, xy, _ = ti.flat()
    P = ti.P.double()  # [V, 3, 4] extrinsics: projection matrices of the normalized coordinates
    N, V = conf.shape
    valid = (conf > 0.5) & torch.isfinite(xy).all(-1)
    xy0 = torch.nan_to_num(xy)
    Pn, xyn, cn, vn = P.numpy(), xy0.numpy(), conf.numpy(), valid.numpy()
    order = np.random.default_rng(ctx.seed + 9).permutation(N)
    results: dict[int, np.ndarray] = {}

    def orig_n(n: int, i: int) -> None:
        for b in order[:n]:
            vi = np.nonzero(vn[b])[0]
            if len(vi) >= 2:
                results[int(b)] = reference(Pn[vi], np.concatenate([xyn[b, vi], cn[b, vi, None]], 1), 0.01)[0]

    o = measure_scaled(orig_n, N, torch.device("cpu"), 1, ctx.cap(CAPS[_kind(ctx)]), n_start=34)
    dev = ctx.device
    args = (xy0.to(dev), P.to(dev), conf.to(dev), valid.to(dev))
    m = measure(lambda i: triangulate_ransac_batch(*args), dev, ctx.n_repeats, ctx.cap(CAPS[_kind(ctx)]))
    X = triangulate_ransac_batch(*args)[0].cpu().numpy()
    idx = np.array(sorted(results))
    diff = float(np.nanmax(np.abs(X[idx] - np.stack([results[i] for i in idx])))) if len(idx) else None
    return {"egohumans.triangulator": _entry({**o, "name": "reference RANSAC per point (numpy SVD + scipy least_squares), CPU"},
                                             {**m, "device": dev.type}, points=N, cameras=V, checked_points=len(idx), max_abs_diff_m=diff)}


def run(ctx: Context) -> dict[str, Any]:
    from bench.workloads import paper_triangulation

    ti = paper_triangulation(ctx)
    res: dict[str, Any] = {"available": True, "cameras": int(ti.conf.shape[-1]), "adapters": {}}
    A = res["adapters"]
    for name, fn in (("aniposelib", lambda: bench_aniposelib(ctx, ti)), ("egohumans", lambda: bench_egohumans(ctx, ti)),
                     ("cocoeval", lambda: bench_cocoeval(ctx)), ("pose2sim", lambda: bench_pose2sim(ctx, ti))):
        if ctx.budget.left() < 30:
            A[name] = absent("skipped: the time budget ran out")
            continue
        ctx.log(f"   adapters: {name}")
        try:
            A.update(fn())
        except Exception as e:  # one adapter failing must not lose the others
            A[name] = absent(f"{type(e).__name__}: {e}")
    return res


def summary_rows(w: dict[str, Any]) -> list[list[str]]:
    """Rows of the runner's side-by-side table (``bench.report.summary_rows``)."""
    from bench.common import fmt_ms

    rows = []
    for name, r in (w.get("adapters") or {}).items():
        title = f"adapter `{name}`"
        if not r.get("available"):
            rows.append([title, "", "", "not available: " + str(r.get("reason")), "", "", "", ""])
            continue
        o, h = r["original"], r["h4d"]
        size = ", ".join(f"{k} {r[k]:,}" for k in ("points", "frames", "images", "cameras") if isinstance(r.get(k), int))
        per = " per point" if h.get("per") == "point" else ""
        acc = r.get("max_abs_diff_m", r.get("max_abs_diff"))
        rows.append([title, size, f"h4d_fast ({h.get('device')})", fmt_ms(h["median_ms"]) + per, o.get("name", "original"),
                     ("> " if r.get("speedup_lower_bound") else "") + fmt_ms(o["median_ms"]) + per,
                     ("> " if r.get("speedup_lower_bound") else "") + f"{r['speedup']:,.1f}x",
                     "" if acc is None else f"max |difference| {acc:.2g}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.adapters", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    ctx = context_for_script(args.device, quick=args.quick)
    res = run(ctx)
    res["environment"] = environment(ctx.device)
    text = json.dumps(res, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    if args.json:
        args.json.write_text(text)
    for row in summary_rows(res):
        print(" | ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
