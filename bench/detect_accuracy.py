"""Model-level accuracy of the default pose model on real video: BlazePose vs OpenPose BODY_25B on
the Pose2Sim single-person demo (4 cameras, 100 frames, 1080/1088 x 1920 portrait).

For each frame and camera, a person box comes from

* ``openpose``: that frame's OpenPose keypoints (COCO-17 subset) through
  :func:`~h4d_fast.detect.models.region_from_keypoints` (square centred on the mid-hip, rotated
  upright by the hips -> shoulders direction), as the stage does with a projected 3D pose;
* ``openpose-tight``: the tight box of the OpenPose BODY_25B keypoints (confidence > 0.1; head top
  and feet included), unrotated, or
* ``detector``: the BlazePose person detector on the whole frame (its best detection; the crop
  is also rotated upright with the detector's alignment keypoints, as MediaPipe does);

the box is enlarged by the model's ``box_scale`` about its centre, padded to a square, cropped
(bilinear, border pixels replicated) to 256x256, and BlazePose's COCO-17 keypoints are mapped
back to the image. Reported: the median 2D distance (pixels) per COCO joint to OpenPose's
keypoint, over the frames where OpenPose found that joint (confidence > 0.1).

BODY_25B's joints 0-16 are in COCO-17 order (:mod:`h4d_fast.io.openpose`), so COCO joint ``j``
is compared with BODY_25B joint ``j``.

Run: ``python -m bench.detect_accuracy [--frames 0:100:1] [--json]`` (CPU is fine, ~1 minute).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from h4d_fast.constants import COCO17_NAMES

CAMERAS = ("cam01", "cam02", "cam03", "cam04")
OPENPOSE_CONF = 0.1


def demo_dir() -> Path | None:
    """The Pose2Sim demo data: ``$H4D_DEMO_DATA``, else ``shared/data/pose2sim_demo`` beside or
    above the checkout, else ``/work/shared/data/pose2sim_demo``; None if absent."""
    env = os.environ.get("H4D_DEMO_DATA")
    cands = [Path(env)] if env else []
    here = Path(__file__).resolve()
    cands += [p / "shared" / "data" / "pose2sim_demo" for p in here.parents[1:5]]
    cands.append(Path("/work/shared/data/pose2sim_demo"))
    for c in cands:
        if (c / "single_person" / "videos").is_dir():
            return c
    return None


def region_affine(centre: torch.Tensor, side: torch.Tensor, rotation: torch.Tensor, n: int) -> torch.Tensor:
    """``[N, 2]`` centres (pixels), ``[N]`` square sides, ``[N]`` rotations -> ``[N, 2, 3]`` affine
    mapping crop pixels (``n x n``, centres at integers) to image pixels; the crop covers the
    square edge to edge."""
    s = side / n
    c, si = torch.cos(rotation), torch.sin(rotation)
    R = torch.stack([torch.stack([c, -si], -1), torch.stack([si, c], -1)], -2)
    off = (0.5 * s - side / 2)[:, None].expand(-1, 2)
    t = centre + (R @ off[..., None])[..., 0]
    return torch.cat([R * s[:, None, None], t[..., None]], -1)


def crop(images: torch.Tensor, index: torch.Tensor, A: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear crops ``[N, 3, h, w]`` of ``images[index]`` through the affines ``A`` (border
    replicated). Frames are not copied per crop: the crops of one frame are sampled together
    (one ``grid_sample`` over ``[F, 3, H, W]`` with up to K crops per frame; one host sync for K).
    uint8 frames are converted to float once (values stay 0-255)."""
    N = A.shape[0]
    Fn, C, H, W = images.shape
    h, w = size
    if N == 0:
        return images.new_zeros((0, C, h, w), dtype=torch.float32)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=A.dtype, device=A.device), torch.arange(w, dtype=A.dtype, device=A.device), indexing="ij")
    p = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)
    xy = (A @ p.T).transpose(1, 2)
    g = torch.stack([(2 * xy[..., 0] + 1) / W - 1, (2 * xy[..., 1] + 1) / H - 1], -1).reshape(N, h, w, 2)
    onehot = F.one_hot(index, Fn)
    slot = ((onehot.cumsum(0) * onehot).sum(1) - 1)
    K = int(onehot.sum(0).max())
    grid = g.new_full((Fn, K, h, w, 2), -2.0)
    grid[index, slot] = g
    src = images if images.is_floating_point() else images.float()
    out = F.grid_sample(src.to(A.dtype), grid.reshape(Fn, K * h, w, 2), mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(Fn, C, K, h, w)[index, :, slot]


def to_image(kp: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``[N, K, >=2]`` crop keypoints -> image pixels (extra channels kept)."""
    xy = (A[:, None, :, :2] @ kp[..., :2, None])[..., 0] + A[:, None, :, 2]
    return torch.cat([xy, kp[..., 2:]], -1)


def read_frames(video: Path, frames: Sequence[int]) -> np.ndarray:
    """``[F, H, W, 3]`` RGB uint8 of the given frame numbers (read sequentially with OpenCV)."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    want = set(frames)
    out = {}
    i = 0
    try:
        while len(out) < len(want):
            ok, fr = cap.read()
            if not ok:
                break
            if i in want:
                out[i] = cv2.cvtColor(fr, cv2.COLOR_BGR2RGB)
            i += 1
    finally:
        cap.release()
    if len(out) != len(want):
        raise ValueError(f"{video}: frames {sorted(want - set(out))[:5]} not readable")
    return np.stack([out[f] for f in frames])


def openpose_body25b(demo: Path, cam: str, frames: Sequence[int]) -> np.ndarray:
    """``[F, 25, 3]`` BODY_25B keypoints of the single person (NaN where no person)."""
    from h4d_fast.io.openpose import read_openpose_people

    folder = demo / "single_person" / "pose_openpose_body25b" / f"{cam}_json"
    files = sorted(folder.glob("*.json"))
    out = np.full((len(frames), 25, 3), np.nan)
    for i, f in enumerate(frames):
        people, _ = read_openpose_people(files[f])
        if people:
            best = max(people, key=lambda k: float(np.nansum(k[:, 2])))
            out[i] = best[:25]
    return out


def boxes_from_keypoints(kp: np.ndarray, conf: float = OPENPOSE_CONF) -> np.ndarray:
    """``[F, K, 3]`` -> ``[F, 4]`` tight boxes of the confident keypoints (NaN if none)."""
    ok = kp[..., 2] > conf
    x = np.where(ok, kp[..., 0], np.nan)
    y = np.where(ok, kp[..., 1], np.nan)
    with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore", RuntimeWarning)
        return np.stack([np.nanmin(x, 1), np.nanmin(y, 1), np.nanmax(x, 1), np.nanmax(y, 1)], -1)


def evaluate(frames: Sequence[int], boxes: str = "openpose", cameras: Sequence[str] = CAMERAS, model=None,
             detector=None, demo: Path | None = None) -> dict:
    """Per-joint median 2D distance (pixels) of the pose model's COCO-17 to OpenPose's.

    Returns ``{"median_px": {joint: px}, "median_all_px": px, "n": {joint: count}, "frames": F,
    "crops": N, "missing_boxes": M}``.
    """
    from h4d_fast.detect.models import load_person_detector, load_pose_model, region_from_keypoints, upright_rotation

    demo = demo or demo_dir()
    if demo is None:
        raise FileNotFoundError("Pose2Sim demo data not found (set H4D_DEMO_DATA)")
    model = model or load_pose_model("default")
    if boxes == "detector":
        detector = detector or load_person_detector("default")
    errs: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    missing = 0
    for cam in cameras:
        ref = openpose_body25b(demo, cam, frames)
        imgs = torch.from_numpy(read_frames(demo / "single_person" / "videos" / f"{cam}.mp4", frames)).permute(0, 3, 1, 2).float() / 255.0
        if boxes == "openpose":
            r17 = torch.from_numpy(np.nan_to_num(ref[:, :17])).float()
            ok = (r17[:, [5, 6, 11, 12], 2] > OPENPOSE_CONF).all(1)
            b, rot = region_from_keypoints(r17, OPENPOSE_CONF)
            keep = ok
            centre = (b[:, :2] + b[:, 2:]) / 2
            side = (b[:, 2:] - b[:, :2]).amax(1) * model.box_scale
        elif boxes == "openpose-tight":
            b = torch.from_numpy(boxes_from_keypoints(ref)).float()
            keep = torch.isfinite(b).all(1)
            centre = (b[:, :2] + b[:, 2:]) / 2
            side = (b[:, 2:] - b[:, :2]).amax(1) * model.box_scale
            rot = torch.zeros(len(frames))
        elif boxes == "detector":
            dets = detector.detections(imgs)
            keep = torch.tensor([d.shape[0] > 0 for d in dets])
            best = torch.stack([d[0] if d.shape[0] else torch.zeros(13) for d in dets])
            kp0, kp1 = best[:, 5:7], best[:, 7:9]
            centre = kp0
            side = 2 * (kp1 - kp0).norm(dim=-1) * model.box_scale
            rot = upright_rotation(kp0, kp1)
        else:
            raise ValueError(f"boxes must be 'openpose', 'openpose-tight' or 'detector', not {boxes!r}")
        missing += int((~keep).sum())
        idx = torch.nonzero(keep)[:, 0]
        if idx.numel() == 0:
            continue
        A = region_affine(centre[idx], side[idx], rot[idx], model.input_size[0])
        kp = to_image(model(crop(imgs, idx, A, model.input_size)), A).numpy()
        r = ref[idx.numpy(), :17]
        errs.append(np.linalg.norm(kp[..., :2] - r[..., :2], axis=-1))
        masks.append(r[..., 2] > OPENPOSE_CONF)
    e = np.concatenate(errs)
    m = np.concatenate(masks)
    med = {name: float(np.median(e[m[:, j], j])) if m[:, j].any() else float("nan") for j, name in enumerate(COCO17_NAMES)}
    return {"median_px": med, "median_all_px": float(np.median(e[m])), "n": {n: int(m[:, j].sum()) for j, n in enumerate(COCO17_NAMES)},
            "frames": len(frames), "crops": int(e.shape[0]), "missing_boxes": missing, "boxes": boxes}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", default="0:100:1", help="start:stop:step of the frames (default all 100)")
    ap.add_argument("--boxes", choices=("openpose", "openpose-tight", "detector", "all"), default="all")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    a, b, c = (int(v) for v in args.frames.split(":"))
    frames = list(range(a, b, c))
    res = [evaluate(frames, k) for k in (("openpose", "openpose-tight", "detector") if args.boxes == "all" else (args.boxes,))]
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for r in res:
            print(f"boxes from {r['boxes']}: {r['crops']} crops, {r['missing_boxes']} frames without a box, median over joints {r['median_all_px']:.1f} px")
            print("  " + ", ".join(f"{k} {v:.1f}" for k, v in r["median_px"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
