"""Synthetic two-person multi-view captures with ground truth.

``make_capture(SynthConfig(...))`` scripts a close interaction of two procedurally built bodies
(approach -> hug -> grapple -> separate) driven by SMPL-style parameters, places a ring of
calibrated GoPro-like cameras around it, and simulates a top-down COCO-17 detector with
occlusion, noise, outliers, limb swaps, duplicates, misses and false positives. Everything is
deterministic from ``seed``.

``num_people`` / ``enter_leave`` switch to people who walk in, interact in pairs, walk out and come
back (:mod:`h4d_fast.synth.crowd`). Returns ``(Capture, GroundTruth, metadata)``; see :func:`make_capture`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..constants import DEFAULT_PERSON_NAMES
from ..data import Capture, GroundTruth
from .detector import DetectorParams, oks, project_and_occlude, simulate_detections
from .geometry import segment_distance
from .motion import PHASE_NAMES, Motion, generate_motion
from .rig import DEFAULT_FISHEYE, colmap_cameras, make_rig, random_similarity
from .skeleton import (
    CAPSULES,
    HEAD,
    Skeleton,
    SkeletonFn,
    capsule_points,
    coco17_from_skeleton,
    forward_kinematics,
    make_skeleton,
    random_skeletons,
)

__all__ = [
    "SynthConfig",
    "make_capture",
    "Skeleton",
    "make_skeleton",
    "random_skeletons",
    "forward_kinematics",
    "coco17_from_skeleton",
    "generate_motion",
    "make_rig",
    "random_similarity",
    "colmap_cameras",
    "simulate_detections",
    "project_and_occlude",
    "oks",
    "PHASE_NAMES",
    "Motion",
]


@dataclass
class SynthConfig(DetectorParams):
    """Every knob of the synthetic capture, with its default (the detector's knobs are those of
    :class:`~h4d_fast.synth.detector.DetectorParams`, inherited)."""

    seed: int = 0
    num_frames: int = 600
    fps: float = 30.0
    name: str = "synth"
    person_names: tuple[str, ...] = DEFAULT_PERSON_NAMES
    # people who enter and leave (h4d_fast.synth.crowd): num_people in pairs walk in, interact, walk
    # out and come back; names aria01.. unless person_names has num_people entries
    num_people: int = 2
    enter_leave: bool = False
    # bodies (body model: shapes are redrawn until both heights lie in height_range and differ by min_height_gap)
    height_range: tuple[float, float] = (1.62, 1.90)
    min_height_gap: float = 0.03
    build_range: tuple[float, float] = (0.92, 1.12)
    # body model driving both people: "default" (the embedded SMPL-format model), a path to SMPL
    # files, a loaded BodyModel, or None for the procedural skeleton alone (no meshes)
    body: Any = "default"
    beta_std: float = 1.0  # shape parameters ~ N(0, beta_std^2), clipped to +-2.5
    skeletons: Optional[Sequence[Skeleton]] = None  # hook: explicit bodies (e.g. from a body model)
    skeleton_fn: Optional[SkeletonFn] = None  # hook: (person index, rng) -> Skeleton
    # motion
    separate: bool = True  # end with a separation when the sequence lasts >= 8 s
    ankle_height: float = 0.08
    torso_gap: float = 0.0
    # the correction passes keeping the meshes apart (h4d_fast.synth.collide.ResolveParams; None: its defaults)
    resolve: Any = None
    # the re-contact pass (h4d_fast.synth.recontact): the hands the script puts on the partner touch the
    # partner's surface in the ground truth (about 2x the generator's time); sets ResolveParams.recontact
    recontact: bool = False
    # cameras
    num_cameras: int = 20
    lens: str = "fisheye"  # or "pinhole"
    image_size: tuple[int, int] = (3840, 2160)
    focal_px: float = 1800.0
    focal_jitter: float = 0.02
    principal_jitter_px: float = 12.0
    fisheye_coeffs: tuple[float, float, float, float] = DEFAULT_FISHEYE
    dist_jitter: float = 0.25
    camera_radius: tuple[float, float] = (3.5, 5.5)
    camera_height: tuple[float, float] = (0.8, 2.6)
    azimuth_jitter: float = 0.3
    target_jitter: float = 0.15
    scale_range: tuple[float, float] = (0.2, 5.0)  # of the COLMAP -> metric similarity
    # detector: the fields of DetectorParams (inherited)
    contact_distance: float = 0.02  # capsule surfaces closer than this count as contact
    # execution: torch and numba threads while generating (restored afterwards); None leaves them alone.
    # One thread is fastest here (small ops) and immune to OpenMP spin-wait slow-downs on a busy CPU.
    num_threads: Optional[int] = 1

    def detector_params(self) -> DetectorParams:
        names = {f.name for f in dataclasses.fields(DetectorParams)}
        mapping = {"swap_distance": self.swap_distance}
        kw = {n: getattr(self, n) for n in names if hasattr(self, n)}
        kw.update(mapping)
        return DetectorParams(**kw)


def _face_normals(rot_head: torch.Tensor, skels: Sequence[Skeleton]) -> torch.Tensor:
    """``[F, P, 5, 3]`` outward normals of the face points (from the head-sphere centre)."""
    n = torch.stack([s.face_offsets - s.head_centre[None] for s in skels])  # [P, 5, 3]
    n = n / n.norm(dim=-1, keepdim=True)
    return torch.einsum("fpij,pkj->fpki", rot_head, n)


def make_capture(cfg: SynthConfig | None = None, **overrides: Any) -> tuple[Capture, GroundTruth, dict[str, Any]]:
    """Generate a synthetic capture.

    Args:
        cfg: configuration (defaults when ``None``); ``overrides`` replace single fields.
    Returns:
        capture: metric cameras (float64), detections (float32, ``[F, V, D, 17, 3]``), frame ids
            ``1..F``, person names, identity boxes at frame 0.
        gt: ``poses3d [F, P, 17, 4]`` (valid = 1, float64) and ``smpl`` = ``global_orient [F, P, 3]``,
            ``body_pose [F, P, 69]``, ``transl [F, P, 3]``, ``rest_joints [P, 24, 3]``,
            ``face_offsets [P, 5, 3]``, ``joints [F, P, 24, 3]``.
        metadata: ``contact [F]`` bool, ``pelvis_distance [F]``, ``phase [F]`` + ``phase_names``,
            ``scale_transform`` (4x4 numpy, COLMAP -> metric), ``counts`` (outliers, duplicates,
            swaps, misses, false positives, ...), ``occluded_frac`` (+ ``occluded_frac_by_phase``),
            ``outlier_frac``, ``labels`` (per-entry injection labels, see
            :func:`h4d_fast.synth.detector.simulate_detections`), ``motion`` (script parameters),
            ``skeletons``, ``timing`` (seconds per stage), ``config``.
    """
    cfg = dataclasses.replace(cfg or SynthConfig(), **overrides)
    crowd = cfg.enter_leave or cfg.num_people != 2
    if cfg.num_people < 1:
        raise ValueError(f"make_capture: num_people must be at least 1, got {cfg.num_people}")
    if not crowd and len(cfg.person_names) != 2:
        raise ValueError("make_capture: the interaction script is for exactly two people")
    if cfg.num_frames < 2:
        raise ValueError("make_capture: num_frames must be at least 2")
    if crowd:
        from .crowd import make_crowd_capture as make
    else:
        make = _make_capture
    if cfg.num_threads is None:
        return make(cfg)
    import numba

    prev, prev_nb = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(int(cfg.num_threads))
    numba.set_num_threads(min(int(cfg.num_threads), numba.config.NUMBA_NUM_THREADS))
    try:
        return make(cfg)
    finally:
        torch.set_num_threads(prev)
        numba.set_num_threads(prev_nb)


def _make_capture(cfg: SynthConfig) -> tuple[Capture, GroundTruth, dict[str, Any]]:
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    ss = np.random.SeedSequence(int(cfg.seed))
    rng_body, rng_motion, rng_rig, rng_det, rng_T = (np.random.default_rng(s) for s in ss.spawn(5))

    # bodies
    body = _resolve_body(cfg.body) if cfg.skeletons is None and cfg.skeleton_fn is None else None
    betas = None
    if cfg.skeletons is not None:
        skels = list(cfg.skeletons)
    elif cfg.skeleton_fn is not None:
        skels = [cfg.skeleton_fn(i, rng_body) for i in range(2)]
    elif body is not None:
        skels, betas = _body_skeletons(body, rng_body, cfg.beta_std, cfg.height_range, cfg.min_height_gap)
    else:
        skels = random_skeletons(rng_body, cfg.height_range, cfg.build_range, 2)

    # motion
    mo = generate_motion(cfg.num_frames, skels, rng_motion, fps=cfg.fps, ankle_height=cfg.ankle_height, separate=cfg.separate, torso_gap=cfg.torso_gap,
                         resolve=_resolve_params(cfg))
    timing["motion"] = time.perf_counter() - t0
    F = cfg.num_frames
    P = 2
    centre = mo.joints[:, :, 0, :2].reshape(-1, 2).mean(0).numpy()

    if body is not None:
        # ground truth from the body model itself (its face points are skinned vertices)
        mo.coco = _body_coco(body, mo, betas)
        timing["body"] = time.perf_counter() - t0 - timing["motion"]

    # cameras
    t1 = time.perf_counter()
    cams = make_rig(
        rng_rig, cfg.num_cameras, centre, cfg.lens, cfg.image_size, cfg.focal_px, cfg.focal_jitter, cfg.principal_jitter_px,
        cfg.fisheye_coeffs, cfg.dist_jitter, cfg.camera_radius, cfg.camera_height, cfg.azimuth_jitter, target_jitter=cfg.target_jitter,
    )
    T = random_similarity(rng_T, cfg.scale_range)

    # capsules, contact
    head_rot = mo.rotations[:, :, HEAD]  # [F, P, 3, 3]
    hc = torch.stack([s.head_centre for s in skels])  # [P, 3]
    caps_a, caps_b = capsule_points(mo.joints, head_rot, hc[None])  # [F, P, C, 3]
    radii = torch.stack([s.radii for s in skels])  # [P, C]
    dist, _, _ = segment_distance(caps_a[:, 0, :, None], caps_b[:, 0, :, None], caps_a[:, 1, None], caps_b[:, 1, None])  # [F, C, C]
    gap = dist - radii[0][:, None] - radii[1][None, :]
    contact = gap.amin(dim=(1, 2)) < cfg.contact_distance
    pelvis_distance = (mo.joints[:, 0, 0] - mo.joints[:, 1, 0]).norm(dim=-1)
    timing["rig"] = time.perf_counter() - t1

    # detections
    t2 = time.perf_counter()
    dets, init_boxes, init_valid, det_meta = simulate_detections(
        cams, mo.coco, caps_a, caps_b, radii, _face_normals(head_rot, skels), pelvis_distance, rng_det, cfg.detector_params()
    )
    timing["detector"] = time.perf_counter() - t2

    capture = Capture(
        cameras=cams,
        detections=dets,
        frame_ids=list(range(1, F + 1)),
        person_names=list(cfg.person_names),
        init_boxes=init_boxes,
        init_valid=init_valid,
        name=cfg.name,
    )
    poses3d = torch.cat([mo.coco, torch.ones(F, P, 17, 1, dtype=mo.coco.dtype)], -1)
    gt = GroundTruth(
        poses3d=poses3d,
        smpl={
            "global_orient": mo.global_orient,
            "body_pose": mo.body_pose,
            "transl": mo.transl,
            "rest_joints": torch.stack([s.rest_joints for s in skels]),
            "face_offsets": torch.stack([s.face_offsets for s in skels]),
            "joints": mo.joints,
            **({"betas": betas} if betas is not None else {}),
        },
    )
    lab = det_meta["labels"]
    occ_by_phase = {}
    for i, name in enumerate(PHASE_NAMES):
        sel = mo.phase == i
        if bool(sel.any()):
            n_in = int(lab["in_image"][sel].sum())
            occ_by_phase[name] = float(lab["is_occluded"][sel].sum()) / max(n_in, 1)
    timing["total"] = time.perf_counter() - t0
    meta: dict[str, Any] = {
        "seed": int(cfg.seed),
        "contact": contact,
        "contact_gap": gap.amin(dim=(1, 2)),
        "pelvis_distance": pelvis_distance,
        "phase": mo.phase,
        "phase_names": PHASE_NAMES,
        "scale_transform": T,
        "counts": det_meta["counts"],
        "occluded_frac": det_meta["occluded_frac"],
        "occluded_frac_by_phase": occ_by_phase,
        "outlier_frac": det_meta["outlier_frac"],
        "labels": lab,
        "motion": mo.params,
        "skeletons": skels,
        "capsule_names": tuple(n for n, _, _ in CAPSULES),
        "timing": timing,
        "config": cfg,
        "body_model": None if body is None else ("default" if isinstance(cfg.body, str) and cfg.body == "default" else str(getattr(body, "path", cfg.body))),
    }
    return capture, gt, meta


def _resolve_params(cfg: SynthConfig) -> Any:
    """The :class:`~h4d_fast.synth.collide.ResolveParams` of ``cfg`` (``resolve``, with ``recontact`` switched on
    when the config asks for it)."""
    if not cfg.recontact:
        return cfg.resolve
    from .collide import ResolveParams

    return dataclasses.replace(cfg.resolve or ResolveParams(), recontact=True)


_BODY_CACHE: dict[str, Any] = {}


def _resolve_body(spec: Any):
    """``"default"`` / a path / a BodyModel / None -> a float64 CPU BodyModel (cached) or None."""
    if spec is None:
        return None
    from ..body import load_body_model

    if not isinstance(spec, (str, bytes)) and hasattr(spec, "forward") and hasattr(spec, "faces"):
        return spec.to(dtype=torch.float64)
    key = str(spec)
    if key not in _BODY_CACHE:
        _BODY_CACHE[key] = load_body_model(None if key == "default" else key, dtype=torch.float64)
    return _BODY_CACHE[key]


def _body_skeletons(body, rng: np.random.Generator, beta_std: float, height_range: tuple[float, float] = (1.62, 1.90),
                    min_height_gap: float = 0.03, n: int = 2) -> tuple[list[Skeleton], torch.Tensor]:
    """``n`` people of the body model with random shapes: skeletons (rest joints and face points
    from the model) and their ``betas [n, K]``.

    Shapes are drawn ``betas ~ N(0, beta_std^2)`` (clipped to +-2.5) in batches from ``rng``; the first
    candidate whose standing height (:meth:`Skeleton.from_rest`) lies in ``height_range`` is person 0,
    each next one in range that differs from every chosen one by at least ``min_height_gap`` metres
    is the next person (deterministic; clearly different people). After 8 batches (``4 n``
    for more than two people) the admissible heights farthest apart are used.
    """
    from ..body.fast import FastBody

    K = int(body.num_betas)
    fb = FastBody(body)
    lo, hi = height_range
    cands, hs = [], []
    chosen: list[int] = []
    for _ in range(8 if n <= 2 else 4 * n):
        b = torch.as_tensor(np.clip(rng.normal(0.0, beta_std, (16, K)), -2.5, 2.5), dtype=torch.float64)
        h = _model_heights(fb, b)
        for i in range(len(b)):
            cands.append(b[i])
            hs.append(float(h[i]))
            if not lo <= hs[-1] <= hi:
                continue
            if all(abs(hs[-1] - hs[c]) >= min_height_gap for c in chosen):
                chosen.append(len(cands) - 1)
                if len(chosen) == n:
                    break
        if len(chosen) == n:
            break
    if len(chosen) < n:  # unreachable in practice: admissible heights spread over the range (else any)
        ok = sorted([i for i, x in enumerate(hs) if lo <= x <= hi] or list(range(len(hs))), key=lambda i: hs[i])
        chosen = [ok[round(k * (len(ok) - 1) / max(n - 1, 1))] for k in range(n)]
    betas = torch.stack([cands[i] for i in chosen])
    J = fb.rest_joints(betas)  # [n, 24, 3]
    zero = torch.zeros(n, 3, dtype=torch.float64)
    face = fb.joints(zero, torch.zeros(n, 69, dtype=torch.float64), betas)[:, 24:29]  # [n, 5, 3] nose, reye, leye, rear, lear
    coco_face = face[:, [0, 2, 1, 4, 3]]  # COCO order: nose, left eye, right eye, left ear, right ear
    skels = [Skeleton.from_rest(J[i], coco_face[i] - J[i, HEAD], name=f"body{i}") for i in range(n)]
    # capsules fitted to each mesh, and its collision proxies (the motion keeps the meshes apart)
    from .proxy import build_proxies, mesh_capsule_radii, shoulder_top

    v = fb.v_template + torch.einsum("nck,bk->bnc", fb.shapedirs, betas.to(fb.dtype))  # [2, N, 3] rest meshes
    for i, (sk, px) in enumerate(zip(skels, build_proxies(fb, betas))):
        sk.radii = mesh_capsule_radii(v[i].double(), fb.lbs_weights.double(), J[i].double(), sk.head_centre)
        sk.extra["proxy"] = px
        sk.extra["shoulder_top"] = shoulder_top(v[i].double(), J[i].double())
    return skels, betas


def _model_heights(fb, betas: torch.Tensor) -> torch.Tensor:
    """``[B]`` standing heights of body-model shapes ``betas [B, K]`` (as :meth:`Skeleton.from_rest` measures them)."""
    from .skeleton import skeleton_height

    J = fb.rest_joints(betas.to(fb.dtype)).double()
    return skeleton_height(J)


def _body_coco(body, mo: Motion, betas: torch.Tensor) -> torch.Tensor:
    """``[F, P, 17, 3]`` COCO keypoints of the body model driven by the motion parameters."""
    from ..body.fast import FastBody
    from ..constants import COCO_TO_SMPL45

    fb = FastBody(body)
    F, P = mo.transl.shape[:2]
    go = mo.global_orient.reshape(F * P, 3).to(torch.float64)
    bp = mo.body_pose.reshape(F * P, 69).to(torch.float64)
    tr = mo.transl.reshape(F * P, 3).to(torch.float64)
    b = betas[None].expand(F, P, -1).reshape(F * P, -1)
    j = fb.joints(go, bp, b, tr)  # [F*P, 29, 3]
    return j[:, list(COCO_TO_SMPL45)].reshape(F, P, 17, 3).to(mo.coco.dtype)
