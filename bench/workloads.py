"""Benchmark inputs built from the synthetic capture (:func:`h4d_fast.synth.make_capture`).

One capture is generated per run (its motion synthesis is the expensive part): ``F`` frames
(600; 60 with ``--quick``), two people, a ring of 32 pinhole cameras. The paper-size workloads use
20 of its cameras, evenly spread over the ring (:func:`view_subset`); the scaling sweep takes other
subsets of the ring, tiles the capture in time for more frames, and adds people by taking the same
two people half a sequence later (same cameras, other poses).

* Triangulation: for every frame, person and COCO keypoint, the person's *primary* detection in
  each view (the detector simulation's own record of which slot is whose, i.e. identities as a
  perfect tracker would give them; outliers, limb swaps, occlusion noise and misses included):
  pixels, confidences, undistorted normalized coordinates, and the true 3D points.
* OKS dedup: the raw detections ``[F, V, D, 17, 3]`` (duplicates, false positives) of the capture.
* End to end: the 20-camera capture written as a sequence folder (:func:`write_paper_sequence`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bench.common import Context

PAPER = {"frames": 600, "cameras": 20, "people": 2, "joints": 17}
QUICK = {"frames": 60, "cameras": 20, "people": 2, "joints": 17}
RING_CAMERAS = 32  # cameras of the generated capture (the sweep's largest rig)


def paper_size(ctx: Context) -> dict[str, int]:
    """Sizes of the main workloads: the paper's (600 frames), 60 frames with ``--quick``, or
    ``--frames``."""
    s = dict(QUICK if ctx.quick else PAPER)
    s["frames"] = ctx.frames_or(s["frames"])
    return s


def base_capture(ctx: Context):
    """``(capture, gt, meta)``: the run's one generated capture (32 pinhole cameras), cached."""
    import time

    from h4d_fast.synth import make_capture

    frames = paper_size(ctx)["frames"]
    key = ("capture", frames, RING_CAMERAS, ctx.seed)
    if key not in ctx.cache:
        t0 = time.perf_counter()
        ctx.cache[key] = make_capture(num_frames=frames, num_cameras=RING_CAMERAS, lens="pinhole", seed=ctx.seed)
        ctx.cache["capture_seconds"] = time.perf_counter() - t0
        ctx.log(f"synthetic capture: {frames} frames, {RING_CAMERAS} pinhole cameras, seed {ctx.seed} "
                f"({ctx.cache['capture_seconds']:.1f} s)")
    return ctx.cache[key]


def capture_views(ctx: Context, cameras: int):
    """``(capture, gt, meta)`` restricted to ``cameras`` evenly spread cameras of the ring
    (``meta['labels']`` keeps ``slot_kind``/``slot_person`` of those views; ``meta['views']``)."""
    from h4d_fast.data import Capture

    key = ("capture-views", cameras)
    if key not in ctx.cache:
        cap, gt, meta = base_capture(ctx)
        views = view_subset(len(cap.cameras), cameras)
        vi = torch.tensor(views)
        sub = Capture(cameras=cap.cameras.subset(views), detections=cap.detections.views(views), frame_ids=list(cap.frame_ids),
                      person_names=list(cap.person_names),
                      init_boxes=cap.init_boxes[vi] if cap.init_boxes is not None else None,
                      init_valid=cap.init_valid[vi] if cap.init_valid is not None else None, name=cap.name)
        lab = {k: meta["labels"][k].index_select(1, vi) for k in ("slot_kind", "slot_person")}
        ctx.cache[key] = (sub, gt, {**meta, "labels": lab, "views": views})
    return ctx.cache[key]


def write_paper_sequence(ctx: Context, folder: Path) -> dict[str, Any]:
    """Write the paper-size capture (20 cameras) as a Harmony4D-layout sequence folder (input of
    ``h4d run``; ground truth included for ``h4d eval``). Returns what was written."""
    import json

    from h4d_fast.io.harmony4d import write_sequence

    s = paper_size(ctx)
    cap, gt, meta = capture_views(ctx, s["cameras"])
    info: dict[str, Any] = {"generator": "h4d_fast.synth (bench.workloads)",
                            "args": {"frames": s["frames"], "cameras_of_ring": RING_CAMERAS, "views": meta["views"], "lens": "pinhole",
                                     "seed": ctx.seed}}
    for k in ("counts", "occluded_frac", "outlier_frac", "body_model"):
        if k in meta:
            try:
                json.dumps(meta[k])
                info[k] = meta[k]
            except TypeError:
                pass
    write_sequence(Path(folder), cap, gt=gt, scale_transform=meta.get("scale_transform"), meta=info)
    return info


#: environment variable naming a folder that keeps paper-size sequences between runs (the GPU
#: machine spends 120 s of a 10-minute call generating the 600-frame capture otherwise)
SEQUENCE_CACHE_ENV = "H4D_BENCH_SEQUENCE_CACHE"


def generator_key() -> str:
    """Hash of the text of the code that generates and writes the bench capture (the synthetic
    generator, body model, writers, this module's functions that call them): a cached sequence is
    reused only while it is the same."""
    import hashlib
    import inspect

    from h4d_fast.pipeline.code_keys import expand, source_digests

    digests = source_digests()
    h = hashlib.sha256(repr((PAPER, QUICK, RING_CAMERAS)).encode())
    for fn in (paper_size, base_capture, capture_views, view_subset, write_paper_sequence):
        h.update(inspect.getsource(fn).encode())
    for rel in expand(("synth/*.py", "body/*.py", "io/*.py", "data.py", "camera.py", "constants.py")):
        h.update(f"{rel}\0{digests[rel]}\n".encode())
    return h.hexdigest()[:16]


def paper_sequence(ctx: Context) -> tuple[Path, dict[str, Any], float]:
    """The paper-size sequence folder, written once per run into the run's scratch folder and
    shared by the end-to-end, warm-path and run-many workloads: ``(folder, info, seconds to write)``.

    With ``$H4D_BENCH_SEQUENCE_CACHE`` set, the folder is kept there under a name that holds the
    frames, seed and :func:`generator_key`, and a later run reuses it (``info['cached']``; seconds
    to write 0)."""
    import json
    import os
    import shutil
    import time

    frames = paper_size(ctx)["frames"]
    key = ("paper_sequence", frames, ctx.seed)
    if key not in ctx.cache:
        cache_root = os.environ.get(SEQUENCE_CACHE_ENV)
        if cache_root:
            folder = Path(cache_root) / f"paper_sequence_{frames}_seed{ctx.seed}_{generator_key()}"
            info_file = folder / "bench_info.json"
            if info_file.is_file():
                info = {**json.loads(info_file.read_text()), "cached": str(folder)}
                ctx.log(f"paper sequence reused from {folder}")
                ctx.cache[key] = (folder, info, 0.0)
                return ctx.cache[key]
            shutil.rmtree(folder, ignore_errors=True)  # a half-written one from an interrupted run
        else:
            folder = Path(ctx.tmp or ".") / f"paper_sequence_{frames}"
        t0 = time.perf_counter()
        info = write_paper_sequence(ctx, folder)
        if cache_root:
            (folder / "bench_info.json").write_text(json.dumps(info))  # written last: marks the folder complete
        ctx.cache[key] = (folder, info, time.perf_counter() - t0)
    return ctx.cache[key]


# ----------------------------------------------------------------------------- triangulation
@dataclass
class TriInput:
    """One triangulation workload; leading dims ``[F, P, J]``, views ``V`` last."""

    uv: Tensor  # [F, P, J, V, 2] float64 pixels (NaN = no detection)
    conf: Tensor  # [F, P, J, V] float64 (0 = no detection)
    xy: Tensor  # [F, P, J, V, 2] float64 undistorted normalized coordinates (NaN = none)
    P: Tensor  # [V, 3, 4] float64 extrinsics (projection matrices of normalized coordinates)
    X_true: Tensor  # [F, P, J, 3] float64
    cams: object  # CameraSet (float64)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        F, P, J, V = self.conf.shape
        return F, P, J, V

    @property
    def points(self) -> int:
        F, P, J, _ = self.shape
        return F * P * J

    def flat(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``uv [N, V, 2]``, ``conf [N, V]``, ``xy [N, V, 2]``, ``X_true [N, 3]``."""
        V = self.shape[3]
        return self.uv.reshape(-1, V, 2), self.conf.reshape(-1, V), self.xy.reshape(-1, V, 2), self.X_true.reshape(-1, 3)


def _primary_keypoints(cap, meta) -> Tensor:
    """``[F, V, P, 17, 3]`` each person's primary detection per view (zeros where missed)."""
    from h4d_fast.synth.detector import KIND_PRIMARY

    det = cap.detections
    lab = meta["labels"]
    F, V, D = det.shape
    out = []
    for p in range(cap.num_people):
        m = (lab["slot_kind"] == KIND_PRIMARY) & (lab["slot_person"] == p)  # [F, V, D]
        has = m.any(-1)
        s = m.to(torch.int64).argmax(-1)  # [F, V]
        k = det.kpts.gather(2, s[:, :, None, None, None].expand(F, V, 1, 17, 3))[:, :, 0].double()
        out.append(torch.where(has[..., None, None], k, torch.zeros_like(k)))
    return torch.stack(out, 2)


def triangulation_input(cap, gt, meta) -> TriInput:
    kp = _primary_keypoints(cap, meta).permute(0, 2, 3, 1, 4)  # [F, P, J, V, 3]
    conf = kp[..., 2].clone()
    uv = kp[..., :2].clone()
    uv[conf <= 0] = float("nan")
    cams = cap.cameras.to(dtype=torch.float64)
    xy = cams.pixels_to_normalized(uv)
    return TriInput(uv=uv, conf=conf, xy=xy, P=cams.extrinsics.double(), X_true=gt.poses3d[..., :3].double(), cams=cams)


def paper_triangulation(ctx: Context) -> TriInput:
    s = paper_size(ctx)
    key = ("tri", s["frames"], s["cameras"])
    if key not in ctx.cache:
        ctx.cache[key] = triangulation_input(*capture_views(ctx, s["cameras"]))
    return ctx.cache[key]


def _sweep_base(ctx: Context):
    return base_capture(ctx)


def view_subset(V_total: int, V: int) -> list[int]:
    """``V`` evenly spaced indices of a ring of ``V_total`` cameras."""
    if V >= V_total:
        return list(range(V_total))
    return sorted({int(round(i * V_total / V)) % V_total for i in range(V)})


def frame_people_index(F_base: int, frames: int, people: int) -> list[tuple[int, Tensor]]:
    """``[(source person, frame index [frames])]`` for each of ``people`` (see module docstring)."""
    out = []
    for p in range(people):
        off = (p // 2) * (F_base // 2)
        out.append((p % 2, (torch.arange(frames) + off) % F_base))
    return out


def sweep_triangulation(ctx: Context, frames: int, cameras: int, people: int) -> TriInput:
    key = ("tri-sweep", frames, cameras, people)
    if key in ctx.cache:
        return ctx.cache[key]
    bkey = ("tri-sweep-base",)
    if bkey not in ctx.cache:
        cap, gt, meta = _sweep_base(ctx)
        ctx.cache[bkey] = triangulation_input(cap, gt, meta)
    base: TriInput = ctx.cache[bkey]
    Fb, Pb, J, Vb = base.shape
    views = view_subset(Vb, cameras)
    vi = torch.tensor(views)
    sel = frame_people_index(Fb, frames, people)

    def pick(x: Tensor, has_views: bool) -> Tensor:
        parts = [x[idx, p] for p, idx in sel]  # [frames, J, ...]
        y = torch.stack(parts, 1)
        return y.index_select(3, vi) if has_views else y

    ti = TriInput(uv=pick(base.uv, True), conf=pick(base.conf, True), xy=pick(base.xy, True), P=base.P[vi],
                  X_true=pick(base.X_true, False), cams=base.cams.subset(views))
    ctx.cache[key] = ti
    return ti


# ----------------------------------------------------------------------------- OKS dedup
@dataclass
class DedupInput:
    kpts: Tensor  # [F, V, D, 17, 3] float32 pixels + confidence
    valid: Tensor  # [F, V, D] bool
    people: int

    @property
    def view_frames(self) -> int:
        return int(self.kpts.shape[0] * self.kpts.shape[1])


def paper_dedup(ctx: Context) -> DedupInput:
    s = paper_size(ctx)
    cap, _, _ = capture_views(ctx, s["cameras"])
    return DedupInput(cap.detections.kpts.clone(), cap.detections.valid.clone(), cap.num_people)


def sweep_dedup(ctx: Context, frames: int, cameras: int, people: int) -> DedupInput:
    key = ("dedup-sweep", frames, cameras, people)
    if key in ctx.cache:
        return ctx.cache[key]
    cap, _, meta = _sweep_base(ctx)
    k, v, sp = cap.detections.kpts, cap.detections.valid, meta["labels"]["slot_person"]
    Fb, Vb = k.shape[:2]
    vi = torch.tensor(view_subset(Vb, cameras))
    k, v, sp = k.index_select(1, vi), v.index_select(1, vi), sp.index_select(1, vi)
    ks, vs = [], []
    for g in range((people + 1) // 2):  # groups of (up to) two people, half a sequence apart
        idx = (torch.arange(frames) + g * (Fb // 2)) % Fb
        kg, vg, sg = k[idx], v[idx], sp[idx]
        if 2 * g + 1 == people:  # odd count: this group keeps one person (and its false positives)
            vg = vg & (sg != 1)
        ks.append(kg)
        vs.append(vg)
    d = DedupInput(torch.cat(ks, 2), torch.cat(vs, 2), people)
    ctx.cache[key] = d
    return d


def np_float(x: Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()
