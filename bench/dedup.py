"""OKS duplicate removal over a whole sequence: a COCO-API ``computeOks`` loop vs h4d_fast.

    python -m bench.dedup [--quick] [--device cpu|cuda] [--json OUT]

Workload (:func:`bench.workloads.paper_dedup`): the raw detections of the synthetic capture,
600 frames x 20 views = 12,000 view-frames x D slots of COCO-17 keypoints (two people, the
detector's duplicates and false positives). Same thresholds for everyone: a keypoint counts above
confidence 0.2, two detections are duplicates above OKS 0.7, the pipeline's policy ``keep-best``
(greedy in order of decreasing score = mean confident keypoint confidence).

Systems:

* ``xtcocotools`` (else ``pycocotools``), CPU: per view-frame, ``COCOeval.computeOks`` of the
  view-frame's detections (as detections, with their scores) against the same detections (as
  ground truth: visibility 2 above the keypoint threshold, area = keypoint-box area), then the
  greedy keep-best rule in Python on that matrix -- what OKS-NMS on top of the COCO API does.
  The annotation dicts are built once outside the timed loop (``build_ms`` reports that cost);
  timed on a random subset of view-frames when the whole loop does not fit its cap, scaled.
  COCO's OKS is asymmetric (the ground truth's visibility and area only); h4d_fast uses both
  poses' confident keypoints and the mean of both areas, so decisions can differ on a few
  detections: ``agreement`` is the fraction of slots with the same keep decision as h4d_fast's
  torch reference.
* ``torch_naive``: h4d_fast's torch reference (``backend="torch"``, batched over the sequence).
* ``h4d_numba`` (CPU), ``h4d_triton``, ``h4d_cupy`` (CUDA): one call for the whole sequence.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Context, absent, best_kernel, measure, measure_scaled, missing, peak_memory_mb, version, workload_main  # noqa: E402
from bench.workloads import DedupInput, paper_dedup  # noqa: E402

THR, KPT_THR, POLICY = 0.7, 0.2, "keep-best"
SWEEP_CAP_S = 4.0  # per system and sweep point
CAPS = {
    "cuda": {"cocoapi": 12, "torch_naive": 8, "h4d_numba": 8, "h4d_triton": 8, "h4d_cupy": 8},
    "cpu": {"cocoapi": 30, "torch_naive": 15, "h4d_numba": 10, "h4d_triton": 0, "h4d_cupy": 0},
    "quick": {"cocoapi": 6, "torch_naive": 4, "h4d_numba": 4, "h4d_triton": 0, "h4d_cupy": 0},
}


_COCO_FAIL: dict[str, str] = {}


def _cocoeval():
    """``(COCOeval class, package name)``: xtcocotools when it imports, else pycocotools (why the
    first failed is kept in ``_COCO_FAIL``)."""
    for pkg in ("xtcocotools", "pycocotools"):
        reason = missing(pkg)
        if reason is not None:
            _COCO_FAIL[pkg] = reason
            continue
        try:
            mod = __import__(f"{pkg}.cocoeval", fromlist=["COCOeval"])
            return mod.COCOeval, pkg
        except Exception as e:  # e.g. a wheel built against another numpy ABI
            _COCO_FAIL[pkg] = f"{type(e).__name__}: {e}"
    raise ImportError("no usable COCO API: " + "; ".join(f"{k}: {v}" for k, v in _COCO_FAIL.items()))


def build_coco(d: DedupInput, order: np.ndarray) -> tuple[Any, list[tuple[int, list[int]]], float]:
    """A ``COCOeval`` holding every view-frame (in ``order``) as one image, and per image the
    detection slots it holds; returns ``(E, images, seconds spent)``."""
    COCOeval, _ = _cocoeval()
    t0 = time.perf_counter()
    from h4d_fast.ops._oks_torch import detection_scores, keypoint_box_area

    k = d.kpts.double()
    area = keypoint_box_area(k, KPT_THR).numpy()
    score = detection_scores(k, KPT_THR).numpy()
    kn = k.numpy()
    valid = d.valid.numpy()
    F, V, D = valid.shape
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        E = COCOeval(iouType="keypoints")
    E.params.maxDets = [100]
    images = []
    for img, flat in enumerate(order):
        f, v = divmod(int(flat), V)
        slots = [s for s in range(D) if valid[f, v, s]]
        gts, dts = [], []
        for s in slots:
            kp = kn[f, v, s]
            vis = np.where(kp[:, 2] > KPT_THR, 2.0, 0.0)
            ok = kp[:, 2] > KPT_THR
            x0, y0 = (kp[ok, 0].min(), kp[ok, 1].min()) if ok.any() else (0.0, 0.0)
            x1, y1 = (kp[ok, 0].max(), kp[ok, 1].max()) if ok.any() else (0.0, 0.0)
            gts.append({"keypoints": np.stack([kp[:, 0], kp[:, 1], vis], 1).ravel().tolist(), "area": float(area[f, v, s]),
                        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "slot": s})
            dts.append({"keypoints": kp.ravel().tolist(), "score": float(score[f, v, s]), "slot": s})
        E._gts[img, 1] = gts
        E._dts[img, 1] = dts
        images.append((img, slots))
    return E, images, time.perf_counter() - t0


def coco_dedup(E, images: list[tuple[int, list[int]]], n: int, D: int) -> np.ndarray:
    """Keep-best OKS-NMS of the first ``n`` images with ``computeOks``: ``[n, D]`` keep mask."""
    keep = np.zeros((n, D), bool)
    for img, slots in images[:n]:
        if not slots:
            continue
        ious = E.computeOks(img, 1)  # [dets sorted by score (stable), gts in slot order]
        dts = E._dts[img, 1]
        order = np.argsort([-x["score"] for x in dts], kind="mergesort")
        kept: list[int] = []  # gt columns (slot order) kept so far
        for r, di in enumerate(order):
            if all(ious[r, j] <= THR for j in kept):
                kept.append(int(di))
        for j in kept:
            keep[img, dts[j]["slot"]] = True
    return keep


def run(ctx: Context, d: DedupInput | None = None, systems: tuple[str, ...] | None = None, sweep: bool = False,
        coco_build_max: int = 4000) -> dict[str, Any]:
    from h4d_fast.ops import _backend, dedup_oks

    d = d or paper_dedup(ctx)
    F, V, D = d.valid.shape
    dev = ctx.device
    reps = ctx.n_repeats if not sweep else max(3, ctx.n_repeats // 2)
    caps = CAPS["quick" if ctx.quick else ("cuda" if ctx.cuda else "cpu")]

    def cap(name: str) -> float:
        return ctx.cap(min(SWEEP_CAP_S, max(1.5, caps[name] / 3)) if sweep else caps[name])

    res: dict[str, Any] = {
        "workload": {"frames": F, "cameras": V, "people": d.people, "slots": D, "view_frames": F * V, "detections": int(d.valid.sum()),
                     "oks_thr": THR, "kpt_thr": KPT_THR, "policy": POLICY},
        "systems": {},
    }
    S = res["systems"]
    want = systems or ("cocoapi", "torch_naive", "h4d_numba", "h4d_triton", "h4d_cupy")
    ref = None

    def op_system(name: str, backend: str, device: torch.device, policy: str = POLICY):
        nonlocal ref
        reason = _backend.why_unavailable("dedup_oks", backend, device)
        if reason is None and backend == "triton" and device.type != "cuda":
            reason = "triton is timed on CUDA only"
        if reason is None and device.type == "cuda" and not ctx.cuda:
            reason = "no CUDA device"
        if reason is not None:
            S[name] = absent(reason)
            return
        sets = [(d.kpts.to(device, torch.float32).clone(), d.valid.to(device).clone()) for _ in range(2 if device.type == "cuda" else 1)]

        def call(i: int, n: int | None = None):
            k, v = sets[i % len(sets)]
            if n is not None:  # the first n view-frames
                k, v = k.reshape(F * V, D, 17, 3)[:n], v.reshape(F * V, D)[:n]
            return dedup_oks(k, v, thr=THR, policy=policy, kpt_thr=KPT_THR, backend=backend)

        try:
            if device.type == "cuda":
                r = measure(call, device, reps, cap(name))
                r["peak_mem_mb"] = peak_memory_mb(call, device)
            else:
                r = measure_scaled(lambda n, i: call(i, n), F * V, device, reps, cap(name), n_start=4096)
            keep = call(0).cpu()
        except Exception as e:
            S[name] = absent(f"{type(e).__name__}: {e}")
            return
        r.update(device=device.type, dtype="float32", kept=int(keep.sum()))
        if name == "torch_naive":
            ref = keep
        if ref is not None:
            r["agreement"] = float((keep == ref).double().mean())
        S[name] = {"available": True, **r}
        ctx.log(f"  dedup {name:14s} {r['median_ms']:10.3f} ms  kept {r['kept']}")

    if "torch_naive" in want:
        op_system("torch_naive", "torch", dev)
    if "h4d_numba" in want:
        op_system("h4d_numba", "numba", torch.device("cpu"))
    for k in ("triton", "cupy"):
        if f"h4d_{k}" in want:
            op_system(f"h4d_{k}", k, torch.device("cuda") if ctx.cuda else torch.device("cpu"))

    if "cocoapi" in want:
        try:
            COCOeval, pkg = _cocoeval()
        except ImportError as e:
            S["cocoapi"] = absent(str(e))
        else:
            try:
                order = np.random.default_rng(ctx.seed + 3).permutation(F * V)  # random subset when extrapolating
                t_build = time.perf_counter()
                E, images, _ = build_coco(d, order[: min(F * V, coco_build_max)])  # dicts for (at most) the timed subset
                nv = len(images)
                r = measure_scaled(lambda n, i: coco_dedup(E, images, n, D), F * V if nv == F * V else nv, torch.device("cpu"),
                                   max(2, reps // 4), cap("cocoapi"), n_start=256)
                if nv < F * V:  # rescale from the built subset to the whole sequence
                    s = F * V / nv
                    for k in ("median_ms", "p20_ms", "p80_ms", "min_ms"):
                        r[k] *= s
                    r["extrapolated"] = True
                    r["total_items"] = F * V
                build_ms = 1e3 * (time.perf_counter() - t_build)
                n_acc = r["measured_items"]
                keep_sub = coco_dedup(E, images, n_acc, D)
                r.update(device="cpu", dtype="float64", package=pkg, version=version(pkg), not_used=dict(_COCO_FAIL), accuracy_on_view_frames=n_acc,
                         build_dicts_ms_for_built_subset=build_ms, built_view_frames=nv)
                if ref is not None:
                    idx = torch.as_tensor(order[:n_acc])
                    rr = ref.reshape(F * V, D)[idx].numpy()
                    r["agreement"] = float((keep_sub == rr).mean())
                S["cocoapi"] = {"available": True, **r}
                ctx.log(f"  dedup cocoapi ({pkg}) {r['median_ms']:10.1f} ms" + (f" (extrapolated from {n_acc} view-frames)" if r.get("extrapolated") else ""))
            except Exception as e:
                S["cocoapi"] = absent(f"{type(e).__name__}: {e}")
    res["best"] = best_kernel(S, ctx.cuda)
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return workload_main("dedup", run, __doc__, argv)


if __name__ == "__main__":
    main()
