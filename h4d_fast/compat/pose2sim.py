"""Pose2Sim drop-in: its triangulation step on a Pose2Sim project folder, batched in torch.

One-line change::

    from Pose2Sim import Pose2Sim                  # before
    from h4d_fast.compat import pose2sim as Pose2Sim   # after: triangulation() here, every other step Pose2Sim's

``Pose2Sim.triangulation(config)`` (``config``: None = the current folder, a folder, a
``Config.toml`` path or a dict, as Pose2Sim reads them) and ``triangulate_all(config_dict)`` write
the same TRC files into ``<project>/pose-3d/`` (``<project>_<first>-<last>.trc``, ``_P<n>`` per
person in multi-person mode; Y-up axes; C3D beside them through Pose2Sim when ``make_c3d``), which
its ``filtering``, ``markerAugmentation`` and ``kinematics`` read. Other attributes of this module
are Pose2Sim's (``Pose2Sim.filtering()``, ...) when Pose2Sim is installed.

What Pose2Sim 0.10's ``triangulate_all`` computes, reproduced (``[triangulation]`` keys, defaults):

* input: the calibration TOML (newest ``.toml`` in the session's ``calib*`` folder; ``P = K [R | t]``
  in pixels), one folder of OpenPose-style JSON per camera (``pose-associated``, else
  ``pose-sync``, else ``pose``), the keypoints of ``pose.pose_model`` in the skeleton tree's order;
  a keypoint below ``likelihood_threshold_triangulation`` (0.3) is missing;
* per frame, person and keypoint: with ``k = 0, 1, ...`` cameras taken off (every combination of
  ``k`` of all cameras, in ``itertools.combinations`` order), the likelihood-weighted SVD DLT of
  the remaining available views and its mean pixel reprojection error; the first ``k`` whose best
  combination is within ``reproj_error_threshold_triangulation`` (15 px) gives the point (the first
  best combination on ties); ``k`` stops where fewer than ``min_cameras_for_triangulation`` (2)
  views could remain; no success -> missing. Here: all (frame, person, keypoint) at once, each
  level ``k`` one batched evaluation, on the GPU when present;
* then per person: gaps of at most ``interp_if_gap_smaller_than`` (20) frames interpolated
  (``interpolation``: linear, slinear, quadratic, cubic or none; zeros count as missing), frames
  trimmed to the runs of at least ``min_chunk_size`` (10) frames with a valid reprojection error
  (``sections_to_keep``: all, largest, first, last), a person without such a run dropped,
  ``fill_large_gaps_with`` (last_value: forward then backward fill, then zeros; zeros; nan);
* ``undistort_points = true``: points undistorted with ``cv2.undistortPoints`` onto
  ``getOptimalNewCameraMatrix``, ``P`` built on that matrix, and the reprojection error taken
  between those undistorted points and ``cv2.projectPoints`` with the original ``K`` and
  distortion, as Pose2Sim does;
* ``handle_LR_swap = true``: where a level's best combination is above the threshold, candidates
  with the other side's keypoint (``RWrist`` for ``LWrist``, paired by the skeleton's names) in
  some views are tried, as Pose2Sim's code computes them (which, unlike its docstring says, swaps
  every view of a combination at once); ``lr_swap="per_camera"`` (an argument of
  :func:`triangulation` / :func:`triangulate_all`) instead tries every set of fewer than half of
  the views, the search Pose2Sim describes (``_pose2sim_swap`` states both).

Not reproduced (as stated): in multi-person mode the identities across frames come from a
Hungarian assignment on the mean keypoint distance with ``max_distance_m`` (Pose2Sim's
``sort_people_sports2d`` with ``match_by = "keypoints"``); its ``max_unseen_frames`` staleness and
``predict_displacement`` are not applied.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._geometry import dlt_rows_normal, homogeneous_dlt
from ._pose2sim_post import chunk_bounds, fill_gaps, interpolate_gaps
from ._pose2sim_swap import SWAP_MODES, combination_masks, mirror_index, swap_per_camera, swap_pose2sim

log = logging.getLogger(__name__)
_BLOCK = 1 << 22  # point x combination x camera elements per batch
_SKIP_KEYS = ("metadata", "capture_volume", "charuco", "checkerboard")


def _toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    with open(path, "rb") as fh:
        return tomllib.load(fh)


# ----------------------------------------------------------------------------- project reading
def read_calibration(calib_file: Path) -> dict[str, np.ndarray]:
    """``K [C, 3, 3]``, ``dist [C, n]``, ``rvec [C, 3]``, ``R [C, 3, 3]``, ``T [C, 3]``, ``size [C, 2]``
    of a Pose2Sim calibration TOML, cameras in file order."""
    import cv2

    cal = _toml(Path(calib_file))
    keys = [k for k in cal if k not in _SKIP_KEYS and isinstance(cal[k], dict)]
    out: dict[str, list] = {"K": [], "dist": [], "rvec": [], "R": [], "T": [], "size": []}
    for k in keys:
        c = cal[k]
        out["K"].append(np.asarray(c["matrix"], dtype=np.float64))
        out["dist"].append(np.asarray(c["distortions"], dtype=np.float64))
        rv = np.asarray(c["rotation"], dtype=np.float64)
        out["rvec"].append(rv)
        out["R"].append(cv2.Rodrigues(rv)[0])
        out["T"].append(np.asarray(c["translation"], dtype=np.float64))
        out["size"].append(np.asarray(c["size"], dtype=np.float64))
    return {k: np.stack(v) for k, v in out.items()}


def keypoint_model(config_dict: dict) -> tuple[list[int], list[str]]:
    """Keypoint ids and names of ``pose.pose_model`` in the skeleton tree's pre-order (Pose2Sim's
    ``RenderTree`` order): Pose2Sim's ``skeletons`` when installed, else a tree given in the
    Config.toml under ``[pose.<model>]``."""
    pose = config_dict.get("pose", {})
    name = str(pose.get("pose_model", "Body_with_feet"))
    alias = {"BODY_WITH_FEET": "HALPE_26", "LOWER_BODY": "HALPE_26_LOWER", "WHOLE_BODY_WRIST": "COCO_133_WRIST", "WHOLE_BODY": "COCO_133",
             "BODY": "COCO_17", "HAND": "HAND_21", "FACE": "FACE_106", "ANIMAL": "ANIMAL2D_17"}
    resolved = alias.get(name.upper(), name)
    tree = None
    try:
        from Pose2Sim import skeletons

        node = getattr(skeletons, resolved, None)
        if node is not None:
            from anytree import PreOrderIter

            pairs = [(n.id, n.name) for n in PreOrderIter(node) if n.id is not None]
            return [int(i) for i, _ in pairs], [str(s) for _, s in pairs]
    except ImportError:
        pass
    tree = pose.get(name)
    if not isinstance(tree, dict):
        raise ValueError(f"pose_model {name!r}: not a custom skeleton in Config.toml, and Pose2Sim (pip install pose2sim) "
                         "is needed for its built-in skeletons")
    ids, names = [], []

    def walk(n: dict) -> None:
        i = n.get("id")
        if i is not None and str(i) != "None":
            ids.append(int(i))
            names.append(str(n.get("name")))
        for ch in n.get("children", []) or []:
            walk(ch)

    walk(tree)
    return ids, names


def _last_number(s: str) -> tuple[bool, Any]:
    nums = re.findall(r"\d+", s)
    return (False, int(nums[-1])) if nums else (True, s)


def _project_paths(config_dict: dict) -> tuple[Path, Path, Path]:
    """``(project_dir, calibration file, pose folder)`` as Pose2Sim resolves them."""
    project_dir = Path(config_dict.get("project", {}).get("project_dir", "."))
    session_dir = (project_dir / "..").resolve()
    if not (session_dir / "Config.toml").is_file():
        session_dir = project_dir if (project_dir / "Config.toml").is_file() else Path(os.getcwd())
    calib_dirs = [c for c in Path(session_dir).iterdir() if c.is_dir() and "calib" in c.name.lower()]
    if not calib_dirs:
        raise FileNotFoundError(f"{session_dir}: no calibration folder (a folder whose name contains 'calib')")
    tomls = list(calib_dirs[0].glob("*.toml"))
    if not tomls:
        raise FileNotFoundError(f"{calib_dirs[0]}: no .toml calibration file")
    calib = max(tomls, key=lambda p: p.stat().st_ctime)
    pose_dir = project_dir / "pose"
    return project_dir, calib, pose_dir


def read_pose_json(config_dict: dict, keypoint_ids: list[int], n_cams: int) -> tuple[np.ndarray, list[int], Path]:
    """``[F, C, people, K, 3]`` (x, y, likelihood; NaN where absent) of the frame range, its frame
    numbers, and the pose folder read (pose-associated > pose-sync > pose)."""
    project_dir, _, pose_dir = _project_paths(config_dict)
    try:
        sub = next(os.walk(pose_dir))[1]
    except StopIteration:
        raise FileNotFoundError(f"{pose_dir}: no pose subfolders") from None
    sub = sorted(sub, key=_last_number)
    json_dirs = [d for d in sub if "json" in d]
    if len(json_dirs) != n_cams:
        raise ValueError(f"the calibration has {n_cams} cameras and {pose_dir} {len(json_dirs)} json folders")
    src = None
    for cand in (project_dir / "pose-associated", project_dir / "pose-sync", pose_dir):
        try:
            names = [fnmatch.filter(os.listdir(cand / d), "*.json") for d in json_dirs]
            src = cand
            break
        except OSError:
            continue
    if src is None:
        raise FileNotFoundError(f"no json files in {pose_dir}")
    names = [sorted(n, key=_last_number) for n in names]
    fr = config_dict.get("project", {}).get("frame_range", "auto")
    f_range = [0, min(len(n) for n in names)] if fr in ("all", "auto", []) else [int(fr[0]), int(fr[1])]
    by_frame = [{int(re.split(r"(\d+)", j)[-2]): j for j in reversed(n)} for n in names]  # first match wins
    frames = list(range(*f_range))
    data: list[list[list]] = []
    P_max = 0
    for f in frames:
        row = []
        for c in range(n_cams):
            js = None
            j = by_frame[c].get(f)
            if j is not None:
                try:
                    with open(src / json_dirs[c] / j) as fh:
                        js = json.load(fh)
                except (OSError, ValueError):
                    js = None
            people = js.get("people", []) if isinstance(js, dict) else []
            P_max = max(P_max, len(people))
            row.append(people)
        data.append(row)
    multi = bool(config_dict.get("project", {}).get("multi_person", False))
    P = P_max if multi else 1
    K = len(keypoint_ids)
    out = np.full((len(frames), n_cams, max(P, 1), K, 3), np.nan)
    ids3 = np.asarray(keypoint_ids, dtype=np.int64) * 3
    for fi, row in enumerate(data):
        for c, people in enumerate(row):
            for n in range(min(P, len(people))):
                kp = people[n].get("pose_keypoints_2d", []) if isinstance(people[n], dict) else []
                arr = np.asarray(kp, dtype=np.float64).reshape(-1)
                ok = ids3 + 2 < arr.size
                out[fi, c, n, ok] = np.stack([arr[ids3[ok]], arr[ids3[ok] + 1], arr[ids3[ok] + 2]], -1)
    return out, frames, src


# ----------------------------------------------------------------------------- the triangulation
def best_cameras(xy: Tensor, lik: Tensor, P: Tensor, err_thr: float = 15.0, min_cams: int = 2,
                 reproject: Any = None, xy_swap: Tensor | None = None, lr_swap: str = "pose2sim") -> tuple[Tensor, Tensor, Tensor]:
    """Pose2Sim's ``triangulation_from_best_cameras`` for ``N`` points at once (module docstring).

    Args:
        xy: ``[N, C, 2]`` pixel coordinates; lik ``[N, C]`` likelihoods (NaN or 0 = unavailable).
        P: ``[C, 3, 4]`` pixel projection matrices.
        reproject: optional ``X [..., 3] -> [..., C, 2]`` pixels (default ``P``, no distortion).
        xy_swap: ``[N, C, 2]`` the mirror keypoint's pixels (NaN where missing): ``handle_LR_swap``,
            searched as ``lr_swap`` says (``"pose2sim"`` or ``"per_camera"``, see ``_pose2sim_swap``).
    Returns:
        ``Q [N, 3]`` (NaN when no combination qualifies), error ``[N]`` px (NaN likewise),
        excluded cameras ``[N, C]`` bool.
    """
    N, C = lik.shape
    dev, dt = xy.device, xy.dtype
    avail = torch.isfinite(lik) & (lik != 0) & torch.isfinite(xy).all(-1)
    w = torch.where(avail, lik, torch.zeros_like(lik))
    xy0 = torch.where(avail[..., None], xy, torch.zeros_like(xy))
    Mc = (dlt_rows_normal(xy0, P.to(dt)) * (w * w)[..., None, None]).reshape(N, C, 16)
    if reproject is None:
        def reproject(X: Tensor) -> Tensor:
            q = torch.einsum("cij,...j->...ci", P[..., :3].to(dt), X) + P[..., 3].to(dt)
            return q[..., :2] / q[..., 2:]
    if xy_swap is not None:
        if lr_swap not in SWAP_MODES:
            raise ValueError(f"lr_swap {lr_swap!r}: one of {SWAP_MODES}")
        mir_ok = torch.isfinite(xy_swap).all(-1)
        xys0 = torch.where(mir_ok[..., None], xy_swap, torch.zeros_like(xy_swap))
        Ms = (dlt_rows_normal(xys0, P.to(dt)) * (w * w)[..., None, None]).reshape(N, C, 16)
    n_av = avail.sum(-1)
    Q = torch.full((N, 3), float("nan"), dtype=dt, device=dev)
    err = torch.full((N,), float("nan"), dtype=dt, device=dev)
    excl = torch.ones((N, C), dtype=torch.bool, device=dev)
    open_ = n_av >= min_cams  # points still looking (Pose2Sim: k <= n_available - min_cams)
    k = 0
    while bool(open_.any()) and C - k >= min_cams:
        combos = torch.as_tensor(combination_masks(C, k), device=dev)  # [nC, C]
        act = (open_ & (n_av - min_cams >= k)).nonzero()[:, 0]
        open_ = open_ & (n_av - min_cams >= k)
        if act.numel() == 0:
            break
        nC = combos.shape[0]
        step = max(1, _BLOCK // max(1, nC * C))
        for a0 in range(0, act.numel(), step):
            a = act[a0 : a0 + step]
            use = avail[a, None, :] & ~combos[None]  # [n, nC, C]
            M = torch.einsum("nsc,nck->nsk", use.to(dt), Mc[a]).reshape(a.numel(), nC, 4, 4)
            X = homogeneous_dlt(M)  # [n, nC, 3]
            e = (reproject(X) - xy0[a, None]).norm(dim=-1)  # [n, nC, C]
            cnt = use.sum(-1)
            me = torch.where(use, e, torch.zeros_like(e)).sum(-1) / cnt.clamp_min(1)
            me = torch.where(cnt > 0, me, torch.full_like(me, float("nan")))
            mi = torch.where(torch.isnan(me), torch.full_like(me, float("inf")), me)
            v, j = mi.min(-1)  # first minimum
            hit = v <= err_thr
            Q[a] = torch.where(hit[:, None], X[torch.arange(a.numel(), device=dev), j], Q[a])
            err[a] = torch.where(hit, v, err[a])
            excl[a] = torch.where(hit[:, None], ~use[torch.arange(a.numel(), device=dev), j], excl[a])
            open_[a] = open_[a] & ~hit
            if xy_swap is not None:  # above the threshold: the left/right swap candidates of this level
                m = n_av[a] - k
                t = (~hit & (m > 2)).nonzero()[:, 0]
                if t.numel():
                    b = a[t]
                    args = (Mc[b], Ms[b], xy0[b], xys0[b], mir_ok[b], use[t], m[t], reproject)
                    vs, js, Xs = swap_pose2sim(*args) if lr_swap == "pose2sim" else swap_per_camera(*args, err_thr, _BLOCK)
                    hs = vs <= err_thr
                    Q[b] = torch.where(hs[:, None], Xs, Q[b])
                    err[b] = torch.where(hs, vs, err[b])
                    excl[b] = torch.where(hs[:, None], ~use[t, js], excl[b])
                    open_[b] = open_[b] & ~hs
        k += 1
    return Q, err, excl


def _undistort_setup(cal: dict[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Pose2Sim's ``undistort_points``: the optimal new camera matrices and ``P`` built on them."""
    import cv2

    optim = []
    for K, d, s in zip(cal["K"], cal["dist"], cal["size"]):
        sz = [int(x) for x in s]
        optim.append(cv2.getOptimalNewCameraMatrix(K, d, sz, 1, sz)[0])
    P = np.stack([np.concatenate([o, np.zeros((3, 1))], 1) @ np.block([[R, T.reshape(3, 1)], [np.zeros((1, 3)), np.ones((1, 1))]])
                  for o, R, T in zip(optim, cal["R"], cal["T"])])
    return P, optim


def triangulate_points(pts: np.ndarray, cal: dict[str, np.ndarray], tri: dict, device: torch.device,
                       names: list[str] | None = None, lr_swap: str = "pose2sim") -> tuple[np.ndarray, np.ndarray]:
    """``pts [F, C, people, K, 3]`` -> ``Q [F, people, K, 3]`` world (calibration axes) and error ``[F, people, K]``.

    ``names`` (the ``K`` keypoint names) pair the left and right keypoints for ``handle_LR_swap``;
    ``lr_swap`` picks its search (``"pose2sim"``: Pose2Sim's; ``"per_camera"``; module docstring)."""
    import cv2

    F, C, Pn, K, _ = pts.shape
    lik_thr = float(tri.get("likelihood_threshold_triangulation", 0.3))
    err_thr = float(tri.get("reproj_error_threshold_triangulation", 15))
    min_cams = int(tri.get("min_cameras_for_triangulation", 2))
    mirror = None
    if tri.get("handle_LR_swap", False):
        if names is None or len(names) != K:
            raise ValueError(f"handle_LR_swap = true needs the {K} keypoint names (names=...)")
        mirror = mirror_index(list(names))
    xy = pts[..., :2].copy()
    lik = pts[..., 2].copy()
    reproject = None
    if tri.get("undistort_points", False):
        Pm, optim = _undistort_setup(cal)
        for c in range(C):
            p = xy[:, c].reshape(-1, 1, 2).astype(np.float32)
            u = cv2.undistortPoints(p, cal["K"][c], cal["dist"][c], None, optim[c]).reshape(xy[:, c].shape)
            xy[:, c] = u
        from ._geometry import cameraset_opencv

        cams = cameraset_opencv(cal["K"], list(cal["dist"]), cal["rvec"], cal["T"], [False] * C, device=device)

        def reproject(X: Tensor) -> Tensor:
            return cams.project(X)[0]
    else:
        Pm = np.stack([K @ np.concatenate([R, T.reshape(3, 1)], 1) for K, R, T in zip(cal["K"], cal["R"], cal["T"])])
    with np.errstate(invalid="ignore"):
        low = lik < lik_thr
    xy[low] = np.nan
    lik[low] = np.nan
    xt = torch.as_tensor(np.moveaxis(xy, 1, 3).reshape(-1, C, 2), device=device)  # [F * people * K, C, 2]
    lt = torch.as_tensor(np.moveaxis(lik, 1, 3).reshape(-1, C), device=device)
    xs = None if mirror is None else torch.as_tensor(np.moveaxis(xy[..., mirror, :], 1, 3).reshape(-1, C, 2), device=device)
    Q, err, _ = best_cameras(xt, lt, torch.as_tensor(Pm, device=device), err_thr, min_cams, reproject, xs, lr_swap)
    return Q.cpu().numpy().reshape(F, Pn, K, 3), err.cpu().numpy().reshape(F, Pn, K)


def _associate(Q: np.ndarray, max_dist: float) -> np.ndarray:
    """Identities across frames (multi-person; module docstring): ``Q [F, P, K, 3]`` -> the source
    person of each identity per frame ``[F, P']`` (-1 = absent)."""
    from scipy.optimize import linear_sum_assignment

    F, P = Q.shape[:2]
    tracks: list[np.ndarray] = []  # last known keypoints per identity
    rows = []
    for f in range(F):
        present = [p for p in range(P) if np.isfinite(Q[f, p]).any()]
        src = [-1] * len(tracks)
        if tracks and present:
            with np.errstate(invalid="ignore"):
                d = np.stack([np.nanmean(np.sqrt(np.nansum((Q[f, p][None] - np.stack(tracks)) ** 2, -1)), -1) for p in present], 1)
            cost = np.where(d > max_dist, 1e10, d)
            ti, pi = linear_sum_assignment(cost)
            used = set()
            for t, j in zip(ti, pi):
                if cost[t, j] < 1e10:
                    src[t] = present[j]
                    used.add(present[j])
            present = [p for p in present if p not in used]
        for p in present:
            tracks.append(Q[f, p].copy())
            src.append(p)
        for t, p in enumerate(src):
            if p >= 0:
                tracks[t] = np.where(np.isnan(Q[f, p]), tracks[t], Q[f, p])
        rows.append(src)
    width = len(tracks)
    order = np.full((F, width), -1, dtype=np.int64)
    for f, src in enumerate(rows):
        order[f, : len(src)] = src
    return order


def frame_rate(config_dict: dict, project_dir: Path) -> float:
    """``project.frame_rate``, or from the first video in ``<project>/videos`` ('auto'), else 30."""
    fr = config_dict.get("project", {}).get("frame_rate", "auto")
    if fr != "auto":
        return float(fr)
    try:
        import cv2

        vids = sorted(p for p in (project_dir / "videos").glob("*") if p.suffix.lower() in (".mp4", ".avi", ".mov", ".mkv", ".mpeg", ".mpg", ".wmv", ".webm"))
        cap = cv2.VideoCapture(str(vids[0]))
        cap.read()
        if not cap.read()[0]:
            raise ValueError("unreadable video")
        return float(round(cap.get(cv2.CAP_PROP_FPS)))
    except Exception:  # noqa: BLE001 - no video: Pose2Sim's fallback
        log.warning("Cannot read video. Frame rate will be set to 30 fps.")
        return 30.0


def triangulate_all(config_dict: dict, device: str | torch.device | None = None, lr_swap: str = "pose2sim") -> list[Path]:
    """Pose2Sim's ``triangulation.triangulate_all``: the TRC file of every kept person (module docstring).

    ``lr_swap``: the left/right swap search when ``handle_LR_swap = true``: ``"pose2sim"`` (the
    default: Pose2Sim's result) or ``"per_camera"`` (each subset of cameras; module docstring)."""
    from ..io.trc import POSE2SIM_AXES, write_trc

    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tri = config_dict.get("triangulation", {})
    project_dir, calib_file, _ = _project_paths(config_dict)
    cal = read_calibration(calib_file)
    ids, names = keypoint_model(config_dict)
    pts, frames, _ = read_pose_json(config_dict, ids, len(cal["K"]))
    Q, err = triangulate_points(pts, cal, tri, dev, names, lr_swap)  # [F, P, K, 3], [F, P, K]
    multi = bool(config_dict.get("project", {}).get("multi_person", False))
    if multi:
        order = _associate(Q, float(tri.get("max_distance_m", 1.0)))
        ar = np.arange(len(frames))[:, None]
        Qn = np.where((order >= 0)[..., None, None], Q[ar, order.clip(0)], np.nan)
        En = np.where((order >= 0)[..., None], err[ar, order.clip(0)], np.nan)
        Q, err = Qn, En
    rate = frame_rate(config_dict, project_dir)
    kind = str(tri.get("interpolation", "linear"))
    gap = tri.get("interp_if_gap_smaller_than", 20)
    min_chunk = tri.get("min_chunk_size", 10)
    min_chunk = 10 if min_chunk is None else int(min_chunk)
    keep = str(tri.get("sections_to_keep", "all"))
    fill = str(tri.get("fill_large_gaps_with", "last_value"))
    skipna = not bool(tri.get("remove_incomplete_frames", False))
    out_dir = project_dir / "pose-3d"
    paths: list[Path] = []
    for n in range(Q.shape[1]):
        q = Q[:, n].reshape(len(frames), -1).copy()  # [F, 3K] (x, y, z per keypoint)
        if kind != "none":
            q = interpolate_gaps(q, np.asarray(frames, dtype=np.float64), gap, kind)
        e = err[:, n]
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN frames: NaN, as pandas
            em = np.nanmean(e, 1) if skipna else e.mean(1)
        a, b = chunk_bounds(em, min_chunk, keep)
        if b - a <= min_chunk:
            log.info(f"Person {n}: fewer than {min_chunk} valid frames in a row; not written")
            continue
        q = fill_gaps(q[a:b], fill)
        seq = project_dir.resolve().name + (f"_P{n}" if multi else "")
        fn = np.asarray(frames[a:b], dtype=np.int64)
        path = out_dir / f"{seq}_{fn[0]}-{fn[-1]}.trc"
        out_dir.mkdir(parents=True, exist_ok=True)
        write_trc(path, q.reshape(len(fn), -1, 3), rate, names, axes=POSE2SIM_AXES, frame_numbers=fn, times=fn / rate)
        paths.append(path)
    if not paths:
        raise ValueError("No persons have been triangulated. Please check your calibration and your synchronization, "
                         "or the triangulation parameters in Config.toml.")
    if tri.get("make_c3d", True):
        try:
            from Pose2Sim.common import convert_to_c3d

            for p in paths:
                convert_to_c3d(str(p))
        except Exception as ex:  # noqa: BLE001 - Pose2Sim / c3d missing: the TRC files stand
            log.warning(f"make_c3d: C3D not written ({type(ex).__name__}: {ex})")
    return paths


def _config_dicts(config: Any) -> list[dict]:
    """Pose2Sim's reading of ``config`` (its own reader when installed, else a trial folder / file / dict)."""
    try:
        from Pose2Sim.Pose2Sim import read_config_files

        return list(read_config_files(config)[1])  # (level, config dicts)
    except ImportError:
        pass
    if isinstance(config, dict):
        d = dict(config)
        d.setdefault("project", {}).setdefault("project_dir", ".")
        return [d]
    p = Path("." if config is None else config)
    f = p if p.suffix.lower() == ".toml" else p / "Config.toml"
    d = _toml(f)
    parent = f.parent.parent / "Config.toml"
    if parent.is_file():
        base = _toml(parent)
        for k, v in d.items():
            base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        d = base
    d.setdefault("project", {})["project_dir"] = str(f.parent)
    return [d]


def triangulation(config: Any = None, device: str | torch.device | None = None, lr_swap: str = "pose2sim") -> list[Path]:
    """``Pose2Sim.triangulation(config)``: every trial ``config`` names (module docstring; ``lr_swap``
    as in :func:`triangulate_all`)."""
    paths: list[Path] = []
    for d in _config_dicts(config):
        paths += triangulate_all(d, device=device, lr_swap=lr_swap)
    return paths


def __getattr__(name: str) -> Any:
    """Every other Pose2Sim step (``filtering``, ``kinematics``, ...) is Pose2Sim's own."""
    try:
        from Pose2Sim import Pose2Sim as _p2s
    except ImportError as e:
        raise AttributeError(f"{name}: not in h4d_fast.compat.pose2sim and Pose2Sim is not installed") from e
    return getattr(_p2s, name)


__all__ = ["best_cameras", "keypoint_model", "read_calibration", "read_pose_json", "triangulate_all", "triangulate_points", "triangulation"]
