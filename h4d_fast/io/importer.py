"""Import a capture made for Pose2Sim, Anipose or EasyMocap into this package's sequence layout.

:func:`import_capture` finds a calibration and 2D keypoints under a capture folder, matches
their cameras, maps the keypoints to COCO-17 and writes a sequence folder
(:func:`~h4d_fast.io.harmony4d.write_sequence`) that :func:`~h4d_fast.io.harmony4d.read_sequence`
and the pipeline read. It returns an :class:`ImportReport` of what it found, assumed and dropped
(``report.describe()`` prints it) and also writes it to ``DST/import.json``.

What is looked for (auto-discovery, unless given):

* **Calibration** (:mod:`~h4d_fast.io.calibration`): under ``SRC`` a TOML with camera tables,
  ``*.qca.txt``, EasyMocap ``intri.yml`` + ``extri.yml``, an OpenCV ``.yml``/``.yaml``/``.xml`` with
  cameras, or a COLMAP text model; best first: TOML, Qualisys, EasyMocap, OpenCV, COLMAP, files
  under a ``calib*`` folder first. When ``SRC`` has none, ``calib*`` files and folders beside
  ``SRC`` (and beside its parent) are searched, as Pose2Sim keeps one calibration per session.
* **Keypoints**:

  - OpenPose JSON (and Pose2Sim's other estimators, EasyMocap ``annots``): one folder per
    camera of per-frame ``.json`` files (``pose/cam01_json/cam01.0000.json``,
    ``annots/01/000000.json`` ...), or one folder holding every camera's files, told apart by the
    ``camNN`` token of the file names (``cam01_000000000000_keypoints.json``). Layout (BODY_25,
    BODY_25B, COCO_18, HALPE_26, ...) from the keypoint count, BODY_25 vs BODY_25B from the
    content (:func:`~h4d_fast.io.openpose.guess_layout`).
  - MediaPipe ``.npz``: one array ``[frames, slots, 33, 3]`` per camera, keyed by camera name
    (:mod:`~h4d_fast.io.mediapipe`).
  - COCO keypoint JSON, one whole-camera file per camera (``cam01.json`` ...; results list or
    dataset with ``images``/``annotations``), read by :mod:`~h4d_fast.io.detections`.

  When several keypoint sets exist (e.g. Pose2Sim's ``pose`` and ``pose-associated``), the one
  with the most cameras wins, then the shallower, then the alphabetically first; the others are
  listed in the report.

Cameras are matched between calibration and keypoints by the number of their ``camNN`` token
(``cam_01``, ``cam01_json``, ``int_cam01_img``, ``camera1``, or a bare number such as EasyMocap's
``01``), else by order (calibration file order vs sorted keypoint names, with a warning) when the
counts agree. Cameras without keypoints, or keypoints without calibration, are dropped with a
warning. Output cameras are named ``camNN`` from that number (``cam01`` ...; by order when the
names carry none).

Frames: the union of the source frame numbers over cameras, in order, becomes frames ``1..F``
(``import.json`` keeps the source numbers); a camera without a file for a frame gets no
detections there (warning). MediaPipe arrays of different lengths are padded at the end.

People: ``people=None`` estimates the number of people seen in at least two cameras by matching
detections across views (two-view triangulation reprojection error) on up to 30 frames; the most
common count wins. ``people`` may also be a count or a list of names (default names ``aria01``,
``aria02``, ...). The peers' formats carry no first-frame identity boxes, so none are written.

Image sizes come from the calibration; videos (``*.mp4``, ``*.avi``, ``*.mov``, ``*.mkv``) found
under ``SRC`` whose names carry a camera number are checked against them (a mismatch is a
warning; the calibration's size is kept) and give the frame rate. Each camera's video is recorded
in ``import.json`` (``cameras[].video``): ``h4d detect`` and ``h4d viz`` read its frames.

Videos only (``no_keypoints=True``, or no keypoints under ``SRC`` but camera videos): the
calibrated cameras that have a video are imported without 2D keypoints (frames = the videos'
frames, the shortest camera's count); ``h4d detect`` then finds the people in the videos. Without
``people``, the number of people is left to ``h4d detect`` (``sequence.json`` lists no names).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..camera import CameraSet
from ..data import Capture
from ..errors import InputError, OutputError
from .atomic import write_json
from .calibration import FORMAT_NAMES, detect_calibration, find_calibrations, read_calibration_info
from .colmap import write_colmap
from .detections import Det, open_camera_source, pack_detections, read_json
from .harmony4d import write_sequence
from .import_sources import (  # re-exported
    KeypointSource,  # noqa: F401
    camera_number,  # noqa: F401
    estimate_people,  # noqa: F401
    find_keypoint_sources,  # noqa: F401
)
from .mediapipe import read_mediapipe_npz
from .openpose import canonical_layout, read_openpose_cameras

__all__ = ["CameraImport", "ImportReport", "camera_number", "find_keypoint_sources", "import_capture"]

REPORT_NAME = "import.json"
_VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".m4v")
# ------------------------------------------------------------------ report
@dataclass
class CameraImport:
    """One imported camera."""

    name: str  # output name (camNN)
    calibration_name: str
    keypoints: str  # where its keypoints came from
    size: tuple[int, int]
    source_frames: int  # frames with a keypoint file / entry
    detections: int  # detections kept over all frames
    video: str | None = None  # the camera's source video (absolute path), when exactly one was found


@dataclass
class ImportReport:
    """What :func:`import_capture` found and wrote (``describe()`` for a summary)."""

    src: Path
    dst: Path
    calibration_path: Path | None = None
    calibration_format: str = ""
    keypoints_path: Path | None = None
    keypoint_format: str = ""
    cameras: list[CameraImport] = field(default_factory=list)
    frames: int = 0
    source_frame_ids: list[int] = field(default_factory=list)
    people: int = 0
    person_names: list[str] = field(default_factory=list)
    people_estimate: str = ""
    max_detections: int = 0
    fps: float | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    @property
    def image_sizes(self) -> dict[str, tuple[int, int]]:
        return {c.name: c.size for c in self.cameras}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("src", "dst", "calibration_path", "keypoints_path"):
            d[k] = None if d[k] is None else str(d[k])
        d["image_sizes"] = {k: list(v) for k, v in self.image_sizes.items()}
        return d

    def describe(self) -> str:
        """A few lines for the terminal."""
        ids = self.source_frame_ids
        span = f"source frames {ids[0]}..{ids[-1]}" if ids else "no frames"
        sizes = Counter(f"{w}x{h}" for w, h in self.image_sizes.values())
        lines = [
            f"imported {self.src} -> {self.dst}",
            f"  calibration: {self.calibration_format}  {self.calibration_path}",
            f"  keypoints:   {self.keypoint_format}" + (f"  {self.keypoints_path}" if self.keypoints_path else ""),
            f"  cameras:     {len(self.cameras)}  " + ", ".join(f"{c.name} <- {c.calibration_name} [{Path(c.keypoints).name}]" for c in self.cameras),
            "  image sizes: " + ", ".join(f"{s} x{n}" for s, n in sizes.items()),
            f"  frames:      {self.frames} (written as 00001..{self.frames:05d}; {span})" + (f", {self.fps:g} fps" if self.fps else ""),
            f"  people:      {self.people} ({', '.join(self.person_names)}); {self.people_estimate}",
            f"  detections:  at most {self.max_detections} in one view-frame; no first-frame identity boxes",
        ]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# ------------------------------------------------------- calibration search
def _find_calibration(src: Path, skip: Sequence[Path]) -> tuple[list[tuple[str, Path]], bool]:
    """Calibration candidates under ``src``, else beside it (``calib*`` entries of its parents)."""
    found = find_calibrations(src, skip=skip)
    if found:
        return found, False
    for up in (src.parent, src.parent.parent):
        if up == src or not up.is_dir():
            continue
        cands: list[tuple[str, Path]] = []
        for e in sorted(up.iterdir()):
            if not e.name.lower().startswith("calib") or e.resolve() == src.resolve():
                continue
            if e.is_dir():
                cands += find_calibrations(e, skip=skip)
            else:
                try:
                    cands.append(detect_calibration(e))
                except InputError:
                    pass
        if cands:
            rank = {"toml": 0, "qca": 1, "easymocap": 2, "opencv": 3, "colmap": 4}
            cands.sort(key=lambda c: rank.get(c[0], 9))
            return cands, True
    return [], False


# ------------------------------------------------------------------ videos
def _video_info(src: Path, skip: Sequence[Path]) -> dict[int, list[Path]]:
    skip_r = [Path(s).resolve() for s in skip]
    out: dict[int, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(src):
        d = Path(dirpath)
        dirnames[:] = sorted(x for x in dirnames if not x.startswith(".") and (d / x).resolve() not in skip_r)
        for f in filenames:
            if Path(f).suffix.lower() in _VIDEO_EXTS:
                n = camera_number(Path(f).stem)
                if n is not None:
                    out.setdefault(n, []).append(d / f)
    return out


def _probe_video(path: Path) -> tuple[int, int, float, int] | None:
    try:
        import cv2

        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            return None
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps, n = float(cap.get(cv2.CAP_PROP_FPS)), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        return (w, h, fps, n) if w > 0 and h > 0 else None
    except Exception:  # noqa: BLE001 - a video we cannot probe is just not checked
        return None


# ------------------------------------------------------------------ import
def _match_cameras(cal_names: list[str], kp_labels: list[str], where: Path, warnings: list[str]) -> list[tuple[int, int, str]]:
    """``[(calibration index, keypoint index, output name)]`` sorted by output name."""
    cn = [camera_number(n) for n in cal_names]
    kn = [camera_number(n) for n in kp_labels]
    uniq = lambda xs: all(x is not None for x in xs) and len(set(xs)) == len(xs)  # noqa: E731
    if uniq(cn) and uniq(kn) and set(cn) & set(kn):
        common = sorted(set(cn) & set(kn))
        only_c = [cal_names[i] for i, n in enumerate(cn) if n not in common]
        only_k = [kp_labels[i] for i, n in enumerate(kn) if n not in common]
        if only_c:
            warnings.append(f"calibrated camera(s) without keypoints dropped: {', '.join(only_c)}")
        if only_k:
            warnings.append(f"keypoints of camera(s) missing from the calibration dropped: {', '.join(only_k)}")
        width = max(2, len(str(max(common))))
        return [(cn.index(n), kn.index(n), f"cam{n:0{width}d}") for n in common]
    if len(cal_names) == len(kp_labels):
        order = sorted(range(len(kp_labels)), key=lambda i: kp_labels[i])
        warnings.append(
            "camera names of calibration and keypoints do not share camera numbers; matched by order: "
            + ", ".join(f"{cal_names[i]} <-> {kp_labels[k]}" for i, k in enumerate(order))
        )
        width = max(2, len(str(len(cal_names))))
        return [(i, k, f"cam{i + 1:0{width}d}") for i, k in enumerate(order)]
    raise InputError(
        where,
        f"cannot match cameras: calibration has {len(cal_names)} [{', '.join(cal_names)}], keypoints have "
        f"{len(kp_labels)} [{', '.join(kp_labels)}] and their names share no camera numbers",
    )


def _one_size(sizes: set[tuple[int, int]]) -> tuple[int, int] | str:
    """The one image size a camera's files state, or a description of several."""
    return next(iter(sizes)) if len(sizes) == 1 else " / ".join(f"{w}x{h}" for w, h in sorted(sizes))


def _check_dst(dst: Path, overwrite: bool) -> None:
    if dst.exists() and not dst.is_dir():
        raise OutputError(dst, "exists and is not a folder")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite and not (dst / REPORT_NAME).is_file():
        raise OutputError(dst, "exists and is not empty (pass overwrite=True, or choose an empty folder)")


def _person_names(people: int | Sequence[str] | None, estimate: int) -> list[str]:
    if people is None:
        n = max(1, estimate)
        return [f"aria{i + 1:02d}" for i in range(n)]
    if isinstance(people, int):
        if people < 1:
            raise ValueError(f"people must be >= 1, got {people}")
        return [f"aria{i + 1:02d}" for i in range(people)]
    names = [str(p) for p in people]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"person names must be non-empty and unique, got {names}")
    return names


def import_capture(
    src: Path,
    dst: Path,
    calibration: Path | None = None,
    keypoints: Path | None = None,
    people: int | Sequence[str] | None = None,
    keypoint_format: str | None = None,
    units: str | float = "auto",
    qca_distortion_scale: float = 1.0,
    overwrite: bool = False,
    no_keypoints: bool = False,
) -> ImportReport:
    """Turn a Pose2Sim / Anipose / EasyMocap capture folder into a sequence folder.

    Args:
        src: the capture folder.
        dst: the sequence folder to write (created; must be empty, or hold an earlier import,
            unless ``overwrite``).
        calibration: a calibration file/folder (default: discovered, see the module docstring).
        keypoints: a keypoint folder or ``.npz`` (default: discovered).
        people: number of people or their names (default: estimated).
        keypoint_format: OpenPose layout (``BODY_25``, ``BODY_25B``, ``COCO_18``, ...) instead of the guess.
        units, qca_distortion_scale: passed to :func:`~h4d_fast.io.calibration.read_calibration_info`.
        overwrite: write into a non-empty ``dst``.
        no_keypoints: import the calibration and the camera videos only (for ``h4d detect``).
    Returns:
        The :class:`ImportReport` (also written to ``dst/import.json``).
    Raises:
        InputError: nothing usable found, or a malformed file (named in the error).
        OutputError: ``dst`` cannot be written.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise InputError(src, "capture folder not found")
    _check_dst(dst, overwrite)
    skip = [dst]
    rep = ImportReport(src=src, dst=dst)

    # ---- calibration
    if calibration is not None:
        info = read_calibration_info(Path(calibration), units, qca_distortion_scale)
    else:
        cands, beside = _find_calibration(src, skip)
        if not cands:
            raise InputError(src, "no calibration found (a .toml with camera tables, .qca.txt, intri.yml/extri.yml, OpenCV .yml, COLMAP model); pass calibration=")
        fmt, path = cands[0]
        info = read_calibration_info(path, units, qca_distortion_scale)
        if beside:
            rep.notes.append(f"no calibration inside the capture; using the one beside it: {info.path}")
        if len(cands) > 1:
            rep.notes.append("other calibration files not used: " + ", ".join(str(p) for _, p in cands[1:]))
    rep.calibration_path = info.path
    rep.calibration_format = FORMAT_NAMES.get(info.format, info.format)
    rep.warnings += info.warnings
    if info.format == "qca" and qca_distortion_scale == 1.0:
        rep.notes.append("Qualisys distortion kept as written (Pose2Sim's conversion divides it by 64: pass qca_distortion_scale=1/64 to match it)")
    cal: CameraSet = info.cameras

    # ---- keypoints
    if no_keypoints and keypoints is not None:
        raise InputError(Path(keypoints), "keypoints given together with no_keypoints")
    srcs = [] if no_keypoints else find_keypoint_sources(Path(keypoints) if keypoints is not None else src, skip=skip)
    if not srcs:
        videos = _video_info(src, skip) if keypoints is None else {}
        if videos:
            if not no_keypoints:
                rep.notes.append("no keypoints found: the cameras' videos are imported for `h4d detect`")
            return _import_videos_only(rep, src, dst, cal, videos, people)
        raise InputError(Path(keypoints) if keypoints is not None else src, "no keypoints found (OpenPose JSON folders per camera, a MediaPipe .npz, COCO JSON per camera)"
                         + (" and no camera videos" if keypoints is None else ""))
    ks = srcs[0]
    if len(srcs) > 1:
        rep.notes.append("other keypoint sets not used: " + "; ".join(s.describe() for s in srcs[1:]))
    rep.keypoints_path = ks.path

    pairs = _match_cameras(list(cal.names), ks.labels, ks.path, rep.warnings)
    if len(pairs) < 2:
        raise InputError(ks.path, f"only {len(pairs)} camera(s) have both calibration and keypoints; triangulation needs 2")
    cal_idx = [p[0] for p in pairs]
    kp_idx = [p[1] for p in pairs]
    out_names = [p[2] for p in pairs]
    cams = cal.subset(cal_idx)
    cams = CameraSet(out_names, list(cams.model), cams.intrinsics, cams.dist, cams.R, cams.t, cams.size)
    sizes = [tuple(int(x) for x in s) for s in cams.size.tolist()]

    per_cam_frames: list[dict[int, list[Det]]] = []
    gaps = 0
    sparse = [False] * len(pairs)
    if ks.kind == "openpose":
        layout = canonical_layout(keypoint_format) if keypoint_format else None
        op, layout, why = read_openpose_cameras([ks.items[k] for k in kp_idx], layout, names=[ks.names[k] for k in kp_idx])
        rep.keypoint_format = f"{'EasyMocap annots' if any(c.annots for c in op) else 'OpenPose JSON'} {layout}"
        rep.notes.append(f"keypoint layout {layout}: {why}")
        for c in op:
            d, g = c.detections(layout)
            per_cam_frames.append(d)
            gaps += g
            rep.warnings += c.warnings
            if c.sizes and _one_size(c.sizes) != sizes[len(per_cam_frames) - 1]:
                rep.warnings.append(f"{c.folder}: the keypoint files state image size {_one_size(c.sizes)}, the calibration {sizes[len(per_cam_frames) - 1]} (calibration size kept)")
    elif ks.kind == "mediapipe":
        mp = read_mediapipe_npz(ks.path, {ks.labels[k]: sizes[i] for i, k in enumerate(kp_idx)})
        rep.keypoint_format = "MediaPipe 33 landmarks (npz)" + (" normalised" if mp.normalized else "")
        gaps += mp.gaps
        lengths = []
        for k in kp_idx:
            frames = mp.frames[mp.cameras.index(ks.labels[k])]
            lengths.append(len(frames))
            per_cam_frames.append({i: dets for i, dets in enumerate(frames)})
        if len(set(lengths)) > 1:
            rep.warnings.append(f"{ks.path}: cameras have different frame counts ({', '.join(f'{out_names[i]}: {n}' for i, n in enumerate(lengths))}); the shorter ones are padded with empty frames")
        if mp.skipped:
            rep.notes.append(f"{ks.path}: entries that are not landmark arrays ignored: {', '.join(mp.skipped)}")
    else:
        rep.keypoint_format = "COCO keypoint JSON (one file per camera)"
        for i, k in enumerate(kp_idx):
            cs = open_camera_source(ks.items[k])
            per_cam_frames.append(dict(cs.coco or {}))
            gaps += cs.coco_gaps
            sparse[i] = cs.sparse

    # ---- frames
    frame_ids = sorted(set().union(*(d.keys() for d in per_cam_frames)))
    if not frame_ids:
        raise InputError(ks.path, "no keypoint frames")
    if ks.kind == "mediapipe":
        frame_ids = list(range(max(len(d) for d in per_cam_frames)))
    per_camera: list[list[list[Det]]] = []
    for i, d in enumerate(per_cam_frames):
        missing = [f for f in frame_ids if f not in d]
        if missing and not sparse[i] and ks.kind != "mediapipe":
            shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
            rep.warnings.append(f"{out_names[i]}: {len(missing)} of {len(frame_ids)} frames have no keypoint file ({shown}); those frames have no detections there")
        per_camera.append([d.get(f, []) for f in frame_ids])
    if gaps:
        rep.warnings.append(f"{gaps} non-finite keypoint values treated as missing (confidence 0)")
    F = len(frame_ids)

    # ---- sizes vs videos
    videos = _video_info(src, skip)
    fps_seen = set()
    cal_numbers = [camera_number(n) for n in out_names]
    video_of: dict[int, str] = {}
    for i, n in enumerate(cal_numbers):
        vids = videos.get(n, []) if n is not None else []
        if len(vids) != 1:
            continue
        video_of[i] = str(vids[0].resolve())
        info_v = _probe_video(vids[0])
        if info_v is None:
            continue
        w, h, fps, nframes = info_v
        if (w, h) != sizes[i]:
            rep.warnings.append(f"{out_names[i]}: video {vids[0]} is {w}x{h} but the calibration says {sizes[i][0]}x{sizes[i][1]} (calibration size kept)")
        if nframes > 0 and nframes != F:
            rep.warnings.append(f"{out_names[i]}: video {vids[0]} has {nframes} frames, the keypoints {F}")
        if fps > 0:
            fps_seen.add(round(fps, 3))
    if len(fps_seen) == 1:
        rep.fps = fps_seen.pop()

    # ---- people
    detections = pack_detections(per_camera)
    rep.max_detections = int(detections.valid.sum(-1).max()) if F else 0
    est, how = estimate_people(cams, per_camera)
    if people is None:
        rep.people_estimate = how
        names = _person_names(None, est)
    else:
        names = _person_names(people, est)
        rep.people_estimate = f"given (estimate: {est}; {how})"
    rep.people = len(names)
    rep.person_names = names

    # ---- write
    capture = Capture(cameras=cams, detections=detections, frame_ids=list(range(1, F + 1)), person_names=names, name=src.name)
    write_sequence(dst, capture, fmt="npy")
    rep.frames = F
    rep.source_frame_ids = [int(f) for f in frame_ids]
    for i, (ci, ki, name) in enumerate(pairs):
        item = ks.items[ki]
        label = f"{ks.path}:{item}" if ks.kind == "mediapipe" else str(item)
        rep.cameras.append(
            CameraImport(
                name=name,
                calibration_name=cal.names[ci],
                keypoints=label,
                size=sizes[i],
                source_frames=sum(1 for f in frame_ids if f in per_cam_frames[i]),
                detections=int(detections.valid[:, i].sum()),
                video=video_of.get(i),
            )
        )
    write_json(dst / REPORT_NAME, rep.to_dict())
    return rep


def _import_videos_only(rep: ImportReport, src: Path, dst: Path, cal: CameraSet, videos: dict[int, list[Path]],
                        people: int | Sequence[str] | None) -> ImportReport:
    """The calibrated cameras that have exactly one video, without keypoints (``h4d detect`` makes them)."""
    labels = {n: f"cam{n:02d}" for n, vids in videos.items() if len(vids) == 1}
    for n, vids in sorted(videos.items()):
        if len(vids) > 1:
            rep.warnings.append(f"camera {n}: several videos ({', '.join(str(v) for v in vids)}); camera skipped")
    kp_labels = [labels[n] for n in sorted(labels)]
    pairs = _match_cameras(list(cal.names), kp_labels, src, rep.warnings)
    if len(pairs) < 2:
        raise InputError(src, f"only {len(pairs)} camera(s) have both calibration and a video; triangulation needs 2")
    cams = cal.subset([p[0] for p in pairs])
    out_names = [p[2] for p in pairs]
    cams = CameraSet(out_names, list(cams.model), cams.intrinsics, cams.dist, cams.R, cams.t, cams.size)
    sizes = [tuple(int(x) for x in s) for s in cams.size.tolist()]
    paths = [videos[sorted(labels)[k]][0] for _, k, _ in pairs]
    counts, fps_seen = [], set()
    for i, path in enumerate(paths):
        info_v = _probe_video(path)
        if info_v is None:
            raise InputError(path, "cannot open the video (not a video file OpenCV can read)")
        w, h, fps, n = info_v
        if n <= 0:
            raise InputError(path, "the video reports no frames")
        counts.append(n)
        if (w, h) != sizes[i]:
            rep.warnings.append(f"{out_names[i]}: video {path} is {w}x{h} but the calibration says {sizes[i][0]}x{sizes[i][1]} "
                                "(keypoints stay in the video's pixels, as other tools use such pairs)")
        if fps > 0:
            fps_seen.add(round(fps, 3))
    F = min(counts)
    if len(set(counts)) > 1:
        rep.warnings.append("videos have different frame counts (" + ", ".join(f"{n}: {c}" for n, c in zip(out_names, counts))
                            + f"); the first {F} frames are imported")
    if len(fps_seen) == 1:
        rep.fps = fps_seen.pop()
    names = [] if people is None else _person_names(people, 0)
    write_colmap(dst / "colmap" / "workplace", cams, None, frame_id=1)
    write_json(dst / "sequence.json", {"name": src.name, "person_names": names, "cameras": out_names, "frames": F})
    rep.keypoints_path = None
    rep.keypoint_format = "none (videos only: `h4d detect` makes the 2D keypoints)"
    rep.frames = F
    rep.source_frame_ids = list(range(F))
    rep.people = len(names)
    rep.person_names = names
    rep.people_estimate = "given" if people is not None else "left to h4d detect (estimated from its detections)"
    for i, (ci, _, name) in enumerate(pairs):
        rep.cameras.append(CameraImport(name=name, calibration_name=cal.names[ci], keypoints="", size=sizes[i],
                                        source_frames=counts[i], detections=0, video=str(paths[i].resolve())))
    write_json(dst / REPORT_NAME, rep.to_dict())
    return rep


def read_import_report(dst: Path) -> dict[str, Any] | None:
    """``DST/import.json`` of an imported sequence (None when absent)."""
    p = Path(dst) / REPORT_NAME
    if not p.is_file():
        return None
    obj = read_json(p)
    if not isinstance(obj, dict):
        raise InputError(p, f"expected a JSON object, got {type(obj).__name__}")
    return obj
