"""One configuration object with the paper's defaults, readable from TOML and shown by ``--help``.

Sections mirror the pipeline stages. Every field carries its default and a one-line help text
(``metadata['help']``) so the CLI can print the whole table. Load with :func:`load_config`;
override single values with ``section.key=value`` strings (:func:`apply_overrides`).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import InputError


def _f(default: Any, help: str, choices: tuple[str, ...] | None = None, minimum: float | None = None) -> Any:
    md: dict[str, Any] = {"help": help}
    if choices:
        md["choices"] = choices
    if minimum is not None:
        md["minimum"] = minimum
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=md)
    return field(default=default, metadata=md)


@dataclass
class FilterConfig:
    """Stage 1: per-view detection filtering and OKS duplicate removal."""

    kpt_conf_thr: float = _f(0.2, "a keypoint counts as detected above this confidence")
    min_kpts: int = _f(6, "drop a detection with fewer detected keypoints than this")
    oks_thr: float = _f(0.7, "two detections in one view with OKS above this are duplicates")
    dedup_policy: str = _f(
        "keep-best",
        "duplicates: keep the more confident one (keep-best) or drop both as the reference code does (drop-both)",
        ("keep-best", "drop-both"),
    )
    min_box_area_frac: float = _f(0.002, "ignore a detection whose keypoint box covers less than this fraction of the image")


@dataclass
class IdentityConfig:
    """Stage 2: which detection in each view belongs to which person."""

    predictor: str = _f(
        "previous",
        "motion model predicting the next pose: previous pose (the reference's Kalman filter with identity dynamics) or constant velocity over the window",
        ("previous", "constant-velocity"),
    )
    window: int = _f(10, "frames in the motion model's sliding window")
    min_match_oks: float = _f(0.15, "a detection is assigned to a person only above this OKS with the person's projected prediction")
    prompt_bonus: float = _f(0.1, "a detection prompted by a person's track (Detections.identity) that fits that person's prediction gets this added to its OKS with them (decides between people in contact; not a hard assignment)")
    init_box_min_iou: float = _f(0.3, "first frame: a detection is assigned to a given person box above this IoU")
    gate_px_frac: float = _f(
        0.5,
        "after assignment, drop a keypoint farther than this fraction of the person's box diagonal from its predicted projection (0 disables)",
    )
    people: str = _f(
        "auto",
        "people to reconstruct: auto (everyone found in the data: first-frame identity boxes name the people they cover, "
        "people who appear later are born with new names) or N, a hard cap of N people",
    )
    track_min_keypoints: int = _f(6, "a track is seen in a frame when this many of its keypoints triangulate")
    birth_min_views: int = _f(3, "a person is born from detections no track claims in at least this many views that agree (epipolar geometry)")
    min_track_frames: int = _f(5, "a track (of no identity box or prompt) seen in fewer frames is a ghost and dropped")
    ghost_distance: float = _f(0.2, "a newborn closer than this (mean keypoint distance, metres) to a tracked person is that person's left-over detections")
    explained_oks: float = _f(0.5, "a detection no track took is that of a person triangulated in the frame (no birth material) above this OKS with their projection")
    reid_max_difference: float = _f(
        0.05,
        "a new track is a returning person when the relative RMS difference of their limb lengths is below this "
        "(the closest absent person); else a new person. A track ends after `window` frames unseen",
    )
    batch_frames: int = _f(
        32,
        "tracker speed, same result: on CUDA up to this many frames are assigned and triangulated as one batch, "
        "then verified (far fewer kernel launches); on the CPU the steady frames run as one compiled loop; "
        "1 = the frame-by-frame torch reference",
    )


@dataclass
class TriangulationConfig:
    """Stage 3: RANSAC view-set triangulation on undistorted normalized coordinates."""

    conf_thr: float = _f(0.5, "a view is a candidate for a keypoint above this confidence (pre-contact frames)")
    conf_thr_tracked: float = _f(0.2, "candidate confidence for frames after the first `pre_contact_frames` (post-contact input)")
    pre_contact_frames: int = _f(10, "frames processed with `conf_thr`; later frames use `conf_thr_tracked`")
    err_thr: float = _f(0.01, "a view joins a hypothesis when 0.5*|x - proj(X)| is below this (normalized units)")
    min_views: int = _f(2, "a keypoint needs this many inlier views")
    refine_steps: int = _f(3, "robust Gauss-Newton steps after the final weighted DLT")
    huber_delta: float = _f(0.005, "Huber threshold of the final refinement (normalized units)")


@dataclass
class RefineConfig:
    """Stage 4: clean-up and global refinement of the 3D keypoints over the sequence."""

    enabled: bool = _f(True, "run stage 4")
    gap_fill_max: int = _f(15, "fill gaps of invalid keypoints up to this many frames by interpolation")
    jump_thr: float = _f(0.3, "reject a keypoint farther than this many metres from the median of its 5-frame window")
    limb_std_thr: float = _f(5.0, "reject limb endpoints whose limb length deviates more than this many robust std from the median")
    w_limb: float = _f(1.0, "weight of the constant-limb-length term")
    w_symm: float = _f(1.0, "weight of the left-right symmetry term")
    w_temporal: float = _f(1.0, "weight of the temporal smoothness term")
    w_init: float = _f(1.0, "weight of the stay-near-the-triangulation term")
    temporal: str = _f(
        "acceleration",
        "smoothness on frame-to-frame acceleration (keeps constant-velocity motion unbiased) or on velocity as the reference does",
        ("acceleration", "velocity"),
    )
    iters: int = _f(60, "LBFGS iterations (strong Wolfe line search)")
    robust_init: bool = _f(True, "use a robust (Charbonnier) distance to the triangulation so left-over outliers are pulled in")
    cuda_graph: bool = _f(True, "on CUDA, evaluate the objective and its gradient as one captured CUDA graph (same result, one launch per evaluation)")


FIT_TERMS: tuple[str, ...] = ("joint", "reg", "limb", "symm", "temporal", "shape", "collision")
"""The loss terms of the SMPL fit, in the column order of the paper's Table 1 (``shape`` = beta prior)."""


@dataclass
class FitConfig:
    """Stage 5: temporal SMPL fitting of all frames and people at once (+ collision stage)."""

    enabled: bool = _f(True, "run the SMPL fit")
    body_model: str = _f("default", "SMPL model file or folder (.pkl/.npz, smplx layout), or 'default' for the embedded model")
    gender: str = _f("neutral", "which SMPL file to pick from a folder", ("neutral", "male", "female"))
    epochs: int = _f(3, "epochs of stages 1 (orient+transl), 2 (betas), 3 (orient+transl+pose)")
    iters_stage1: int = _f(20, "optimizer iterations of stage 1 per epoch")
    iters_stage2: int = _f(10, "optimizer iterations of stage 2 per epoch")
    iters_stage3: int = _f(60, "optimizer iterations of stage 3 per epoch")
    collision: bool = _f(True, "after the epochs, run the collision stage: stage 3 plus the collision term (2+ people)")
    iters_collision: int = _f(30, "optimizer iterations of the collision stage (full meshes: the costly part)")
    iters_collision_refine: int = _f(15, "optimizer iterations of the collision stage's follow-up pass on the frames still penetrating "
                                         "deeper than collision_refine_depth_mm (run only where there are such frames)")
    collision_refine_depth_mm: float = _f(5.0, "after the collision stage, frames where a vertex still lies deeper than this inside the other "
                                               "body (exact depth, mm) get a follow-up pass with their collision term weighted "
                                               "collision_refine_weight times (0: no follow-up pass)")
    collision_refine_weight: float = _f(10.0, "collision weight multiplier of the deep frames' pairs in the follow-up pass (collision_refine_depth_mm)")
    optimizer: str = _f("lbfgs", "gn: Gauss-Newton / Levenberg-Marquardt with analytic Jacobians (gn_iters_*); "
                                 "lbfgs: LBFGS with strong-Wolfe line search (iters_*); adam", ("gn", "lbfgs", "adam"))
    gradients: str = _f("analytic", "gradients of the first-order optimizers: analytic (a few batched operations per "
                                    "evaluation, h4d_fast.pipeline.fit_objective) or autograd", ("analytic", "autograd"))
    cuda_graphs: bool = _f(True, "on CUDA, replay each stage's analytic loss and gradient from a CUDA graph (captured once)")
    cpu_threads: int = _f(1, "torch threads of the fit on a CPU (0: torch's default). Its many small operations gain "
                             "little from more threads and stall at every thread barrier when another process is busy")
    gn_iters_stage1: int = _f(5, "optimizer=gn: steps of stage 1 per epoch")
    gn_iters_stage2: int = _f(3, "optimizer=gn: steps of stage 2 per epoch")
    gn_iters_stage3: int = _f(10, "optimizer=gn: steps of stage 3 per epoch")
    gn_iters_collision: int = _f(10, "optimizer=gn: steps of the collision stage")
    gn_iters_collision_refine: int = _f(5, "optimizer=gn: steps of the collision stage's follow-up pass (collision_refine_depth_mm)")
    gn_cg_iters: int = _f(10, "optimizer=gn: conjugate-gradient iterations per step for the frames coupled by the temporal term")
    gn_damping: float = _f(0.1, "optimizer=gn: smallest Levenberg-Marquardt damping (relative to the curvature); smaller converges "
                                "further into the objective's weakly observed directions (spine, collars, feet), which costs accuracy")
    lr: float = _f(1.0, "LBFGS step size")
    adam_lr: float = _f(0.02, "Adam learning rate")
    history_size: int = _f(20, "LBFGS history length")
    lbfgs_direction: str = _f("auto", "LBFGS search direction: the compact form (a few matrix products: fewer kernel launches) or the "
                                      "two-loop recursion (reads the history once); auto: compact on a GPU", ("auto", "compact", "two_loop"))
    ftol: float = _f(1e-6, "stop a stage when the relative loss change over `check_every` iterations is below this")
    check_every: int = _f(5, "iterations between convergence checks (LBFGS keeps its history across checks)")
    kp_sigma: float = _f(0.1, "Geman-McClure scale of the keypoint term in metres (0: plain squares)")
    temporal: str = _f("acceleration", "temporal term on second differences (unbiased for constant velocity) or first differences as the reference", ("acceleration", "velocity"))
    w_hyperext: float = _f(0.0, "weight of the elbow/knee hyper-extension prior in stage 3 (off in the reference)")
    init_limbs: bool = _f(True, "initial body pose: point the arms and legs along the keypoints' limbs (else zero pose)")
    collision_backend: str = _f("auto", "backend of the collision op: auto, torch, numba, triton, cupy")
    collision_grid: int = _f(64, "SDF grid size of the collision op per person and frame (the reference uses 32; "
                                 "its trilinear bleed of about one cell, 2-7 cm, pushes touching people apart and cost "
                                 "~2 mm of joint error on the synthetic demo, 64 under 1 mm)")
    collision_field: str = _f("inside", "grid of the collision op: inside (the reference's: depth inside, 0 outside; its trilinear "
                                        "interpolation reaches up to a cell out of the body) or signed (signed distance, relu of the "
                                        "sample: no push on touching people) or exact (the vertex's exact signed distance where the "
                                        "grid sees it; numba and torch backends)", ("inside", "signed", "exact"))
    collision_clearance_mm: float = _f(0.0, "collision_field=signed or exact: the term counts a vertex from this distance outside the other body on "
                                             "(mm; the op's margin), so that the surfaces stay about this far apart", minimum=0.0)
    collision_taper_mm: float = _f(0.0, "collision_field=inside: the grid's samples fade out linearly from the body's surface to this far "
                                         "outside it (mm, by the signed grid's interpolation; 0: off, the reference's bleed of up to a "
                                         "cell)", minimum=0.0)
    collision_refine_field: str = _f("inside", "the collision op's field in the follow-up pass (collision_refine_depth_mm): inside (it sees "
                                              "penetrations of thin parts that the signed field's interpolation misses), signed or exact",
                                     ("inside", "signed", "exact"))
    collision_inside_only: bool = _f(False, "collision stage: only the vertices exactly inside the partner (closest-triangle test on the op's "
                                             "candidate vertices, every evaluation) carry the term, the value their exact depth (no trilinear "
                                             "bleed on touching people; costs an exact depth query per evaluation)")
    collision_sparse_grad: bool = _f(True, "collision stage: meshes without autograd, only the vertices the collision term touches re-skinned with it (same gradient, faster)")
    collision_margin: float = _f(0.1, "frames whose two bodies' boxes are farther apart than this (metres) skip the collision term")
    compare_collision: bool = _f(False, "also run the collision stage with the collision weight 0 from the same start and report penetration_reduction")
    w1_joint: float = _f(1.0, "stage 1 weight: keypoints (shoulders and hips only)")
    w1_reg: float = _f(0.0, "stage 1 weight: pose regularisation")
    w1_limb: float = _f(0.0, "stage 1 weight: limb length")
    w1_symm: float = _f(0.0, "stage 1 weight: left-right symmetry")
    w1_temporal: float = _f(0.0, "stage 1 weight: temporal smoothness")
    w1_shape: float = _f(0.0, "stage 1 weight: shape prior")
    w1_collision: float = _f(0.0, "stage 1 weight: collision")
    w2_joint: float = _f(0.0, "stage 2 weight: keypoints")
    w2_reg: float = _f(0.0, "stage 2 weight: pose regularisation")
    w2_limb: float = _f(1.0, "stage 2 weight: limb length")
    w2_symm: float = _f(0.2, "stage 2 weight: left-right symmetry")
    w2_temporal: float = _f(0.0, "stage 2 weight: temporal smoothness")
    w2_shape: float = _f(0.005, "stage 2 weight: shape prior")
    w2_collision: float = _f(0.0, "stage 2 weight: collision")
    w3_joint: float = _f(10.0, "stage 3 weight: keypoints")
    w3_reg: float = _f(0.001, "stage 3 weight: pose regularisation")
    w3_limb: float = _f(1.0, "stage 3 weight: limb length")
    w3_symm: float = _f(0.0, "stage 3 weight: left-right symmetry")
    w3_temporal: float = _f(1.0, "stage 3 weight: temporal smoothness")
    w3_shape: float = _f(0.0, "stage 3 weight: shape prior")
    w3_collision: float = _f(1.0, "stage 3 weight: collision (used by the collision stage; plain stage 3 runs without it)")

    def stage_weights(self, stage: int) -> dict[str, float]:
        """``{term: weight}`` of stage 1, 2 or 3 (terms: :data:`FIT_TERMS`)."""
        if stage not in (1, 2, 3):
            raise ValueError(f"stage must be 1, 2 or 3, got {stage!r}")
        return {t: float(getattr(self, f"w{stage}_{t}")) for t in FIT_TERMS}


@dataclass
class DetectConfig:
    """Stage 0: 2D keypoints from the cameras' images or videos (`h4d detect`, or `h4d run` on a sequence without detections)."""

    run: str = _f("auto", "in `h4d run`: detect when the sequence has images or imported videos but no 2D detections (auto), always (replacing them in memory), or never", ("auto", "always", "never"))
    model: str = _f("default", "top-down pose model: 'default' (the embedded BlazePose, built from the mediapipe wheel) or a pose model .onnx file (RTMPose / ViTPose / DWPose)")
    detector: str = _f("default", "person detector for the frames no track covers: 'default' (the embedded BlazePose detector)")
    det_score_thr: float = _f(0.5, "person detector: keep boxes scoring above this")
    max_people: int = _f(8, "person detector: at most this many boxes per image (best first)")
    detector_size: int = _f(512, "the detector sees each image resized to this many pixels on its long side (boxes are scaled back)")
    rotate: bool = _f(True, "turn each crop so the person is upright (pose models are trained on upright people): prompted crops by the projected shoulders over the hips, detector crops by the detector's alignment keypoints where it has them (BlazePose)")
    batch_frames: int = _f(8, "frames decoded and run together (all cameras of each)")
    crop_batch: int = _f(256, "person crops per pose-model call")
    decode_threads: int = _f(0, "CPU threads decoding images and videos (0: one per CPU)")
    decoder: str = _f("auto", "image decoding: auto (nvJPEG through torchvision on a CUDA device when torchvision imports, else OpenCV threads), gpu, cpu", ("auto", "gpu", "cpu"))
    prompt: bool = _f(True, "prompted passes: crops from each person's tracked 3D pose projected into the view (their detections carry the person's identity): from the first contact on, frame chunks in track order; before it, views where people overlap or a tracked person was missed")
    prompt_contact_m: float = _f(0.5, "contact: two people's closest joints nearer than this (metres); prompting in track order starts at the first such frame")
    prompt_dilate: int = _f(5, "... this many frames before it")
    prompt_overlap: float = _f(0.2, "prompt a view where two people's projected boxes overlap by more than this fraction of the smaller box")
    prompt_match_oks: float = _f(0.3, "a first-pass detection is that person's when its OKS with the person's projected 3D pose exceeds this (else the person counts as missed there)")
    prompt_max_gap: int = _f(15, "through contact, a person unseen for more than this many frames is no longer prompted (the detector's boxes cover them)")
    prompt_box_pad: float = _f(0.1, "a prompt box is the box of the person's projected joints enlarged by this fraction of its size on each side (the joints leave out the head top and feet)")
    min_visible_joints: int = _f(6, "a person is prompted in a view when at least this many of its 3D joints project inside the image")


@dataclass
class ContactConfig:
    """Vertex-level contact between people and the interaction measures (export and ``h4d eval``)."""

    contact_mm: float = _f(10.0, "a vertex touches the other person when it lies within this distance (mm) of their surface, or inside their body")
    penetration_mm: float = _f(10.0, "h4d eval: a frame counts in frames_penetrating when its deepest penetration exceeds this (mm)")
    export: bool = _f(True, "h4d run: write the vertex contact of every pair of people (processed_data/contact/, contact.npz, sequence.npz); on a CPU it costs about half the fit's time")


@dataclass
class RunConfig:
    """Execution settings."""

    device: str = _f("auto", "torch device: auto (cuda when present), cpu, cuda, cuda:N")
    backend: str = _f("auto", "kernel backend for the hot ops: auto, torch, numba, triton, cupy")
    dtype: str = _f("float32", "compute dtype of the keypoint stages", ("float32", "float64"))
    sequential_device: str = _f(
        "auto",
        "device of the frame-sequential stages (track: motion-model prediction, assignment and RANSAC "
        "frame after frame; refine). Their ~100 tiny ops per frame are launch bound on a GPU: for one "
        "sequence (600 frames x 20 cameras, H100 host) track 6.9 s and refine 3.2 s on cuda against 3.9 s and "
        "1.9 s on its CPU, so 'auto' runs them on the CPU (numba kernels) in `h4d run`; in `h4d run-many` "
        "GPU workers, several sequences interleave their small kernels and 'auto' keeps them on the GPU (20 "
        "captures, 4 workers on one H100: 252 sequences/hour against 180; 5 workers: 308). 'cpu' / 'same' (= run.device) "
        "force either; a CUDA-only run.backend keeps them on run.device",
        ("auto", "cpu", "same"),
    )
    progress: bool = _f(True, "show a progress bar per stage")
    assume_metric: bool = _f(False, "a sequence without colmap/workplace/scale.npy is an error; true: take its COLMAP model as metric (a warning, recorded in timing.json)")


@dataclass
class Config:
    """The whole pipeline configuration (defaults = the paper's and the reference code's settings)."""

    filter: FilterConfig = field(default_factory=FilterConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    triangulation: TriangulationConfig = field(default_factory=TriangulationConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    contact: ContactConfig = field(default_factory=ContactConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def section(self, name: str) -> Any:
        return getattr(self, name)


def _sections(cfg: Any) -> Iterable[tuple[str, Any]]:
    for f in fields(cfg):
        yield f.name, getattr(cfg, f.name)


def _coerce(value: Any, typ: Any, where: str, source: str | Path | None) -> Any:
    tname = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    try:
        if tname == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return value.lower() in ("1", "true", "yes", "on")
            raise ValueError
        if tname == "int":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if tname == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tname == "str":
            return str(value)
    except (TypeError, ValueError):
        raise InputError(source, f"expected {tname}, got {value!r}", field=where) from None
    return value


def _set(cfg: Config, section: str, key: str, value: Any, source: str | Path | None) -> None:
    if not hasattr(cfg, section) or section not in {f.name for f in fields(cfg)}:
        known = ", ".join(f.name for f in fields(cfg))
        raise InputError(source, f"unknown section (known: {known})", field=section)
    sec = getattr(cfg, section)
    fmap = {f.name: f for f in fields(sec)}
    if key not in fmap:
        raise InputError(source, f"unknown key (known: {', '.join(fmap)})", field=f"{section}.{key}")
    f = fmap[key]
    hints = get_type_hints(type(sec))
    v = _coerce(value, hints[key], f"{section}.{key}", source)
    choices = f.metadata.get("choices")
    if choices and v not in choices:
        raise InputError(source, f"must be one of {', '.join(choices)}, got {v!r}", field=f"{section}.{key}")
    lo = f.metadata.get("minimum")
    if lo is not None and not v >= lo:  # (NaN fails too)
        raise InputError(source, f"must be >= {lo}, got {v!r}", field=f"{section}.{key}")
    setattr(sec, key, v)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Defaults, then a TOML file's values, then ``section.key=value`` overrides."""
    cfg = Config()
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(p, "config file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(p, f"cannot read ({e})") from None
        except tomllib.TOMLDecodeError as e:
            raise InputError(p, f"not valid TOML ({e})") from None
        for section, table in data.items():
            if not isinstance(table, dict):
                raise InputError(p, "expected a [section] table", field=section)
            for key, value in table.items():
                _set(cfg, section, key, value, p)
    apply_overrides(cfg, overrides)
    return cfg


def apply_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise InputError(None, f"override {item!r} is not of the form section.key=value", field="--set")
        lhs, value = item.split("=", 1)
        section, key = lhs.strip().split(".", 1)
        _set(cfg, section, key, value.strip(), "--set")
    return cfg


def describe(cfg: Config | None = None) -> str:
    """The configuration as a TOML document with each value's help text (what ``--help`` shows)."""
    cfg = cfg or Config()
    lines: list[str] = []
    for sname, sec in _sections(cfg):
        doc = (type(sec).__doc__ or "").strip().splitlines()[0] if type(sec).__doc__ else ""
        lines.append(f"[{sname}]  # {doc}")
        for f in fields(sec):
            v = getattr(sec, f.name)
            lines.append(f"  {f.name} = {_toml_value(v)}  # {f.metadata.get('help', '')}")
    return "\n".join(lines)


def to_toml(cfg: Config) -> str:
    out: list[str] = []
    for sname, sec in _sections(cfg):
        out.append(f"[{sname}]")
        for f in fields(sec):
            out.append(f"{f.name} = {_toml_value(getattr(sec, f.name))}")
        out.append("")
    return "\n".join(out)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)
