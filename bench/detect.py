"""The image stage's throughput: images and crops per second per pose model.

    python -m bench.detect --src DEMO [--device cuda] [--frames 100] [--onnx MODEL.onnx ...] [--json OUT]

Input: the same real-size JPEG frames as :mod:`bench.images_to_meshes` (Pose2Sim's single-person
demo, its 4 calibrated cameras replicated to 20, frames played forward and backward; one person
per image), ``--frames`` frames (default 100; ``--quick`` 8 frames x 4 cameras).

For each pose model (the embedded BlazePose, and any ``--onnx`` file):

* ``pass``: the stage's first pass (:func:`~h4d_fast.detect.passes.first_pass`) over every frame,
  wall clock: JPEG decode (background thread, nvJPEG when torchvision is importable on CUDA, else
  OpenCV threads), person detector on every image, the pose model on every crop, keypoints back
  to the image -> ``images_per_s`` and ``crops_per_s`` (decode included), with the time split
  (waiting for decode, detector, crop warp, pose model);
* ``model``: the crop warp + pose model alone on frames already on the device
  (:func:`~h4d_fast.detect.passes.run_pose`, ``crop_batch`` crops per call, the pass's own boxes
  repeated to 1024 crops; 64 on a CPU), median over repeats after a warm-up call, synchronised ->
  ``model_crops_per_s``;
* ``detector``: the person detector alone on the pass's detector-size images -> ``detector_images_per_s``.

The headline ``detect_crops_per_s`` is the embedded model's ``model_crops_per_s`` (how fast
person crops become keypoints on this device); the pass figures beside it say what decoding adds.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import NO_DEMO, Context, demo_source, image_script_main, median_wall_s, sync, write_image_sequence  # noqa: E402

MODEL_CROPS = 1024
MODEL_CROPS_CPU = 64  # a CPU takes seconds per crop batch: a sanity figure only


def _one_model(ctx: Context, spec: str, seq: Path, cfg) -> dict[str, Any]:
    import torch

    from h4d_fast.detect.passes import Counters, first_pass, run_pose
    from h4d_fast.io.frames import FrameLoader, frame_sources, sequence_frame_ids
    from h4d_fast.pipeline.detect import load_models, read_cameras

    cfg.detect.model = spec
    dev = ctx.device
    try:
        pose, det = load_models(cfg.detect, dev)
    except Exception as e:  # noqa: BLE001 - a model that cannot load here is reported, not fatal
        return {"available": False, "reason": f"{type(e).__name__}: {e}"}
    cams, _, _, _ = read_cameras(seq)
    src = frame_sources(seq, cams.names)
    ids = sequence_frame_ids(src)
    d = cfg.detect
    r: dict[str, Any] = {"available": True, "name": getattr(pose, "name", spec), "input_size": list(pose.input_size),
                         "device": str(dev)}
    # warm-up: one batch through the pass (kernels, cuDNN autotuning, allocator)
    with FrameLoader(src, ids, positions=list(range(min(len(ids), d.batch_frames))), batch_frames=d.batch_frames, device=dev,
                     threads=d.decode_threads, decoder=d.decoder, thumb_side=d.detector_size) as L:
        first_pass(L, pose, det, d, cams.size, None, None, Counters())
    sync(dev)
    c = Counters()
    t0 = time.perf_counter()
    with FrameLoader(src, ids, batch_frames=d.batch_frames, device=dev, threads=d.decode_threads, decoder=d.decoder,
                     thumb_side=d.detector_size) as L:
        r["decoder"] = L.decoder
        r["decode_threads"] = L.threads
        flat = first_pass(L, pose, det, d, cams.size, None, None, c)
    sync(dev)
    wall = time.perf_counter() - t0
    n_img = len(ids) * len(cams)
    r["pass"] = {"images": n_img, "crops": int(flat.f.shape[0]), "wall_s": wall, "images_per_s": n_img / wall,
                 "crops_per_s": flat.f.shape[0] / wall, "seconds": {k: round(v, 3) for k, v in c.t.items()}}
    ctx.log(f"  {r['name']}: pass {n_img} images, {flat.f.shape[0]} crops in {wall:.2f} s "
            f"({n_img / wall:.0f} images/s, decode {r['decoder']})")
    # model alone: crops of one batch of frames resident on the device
    B = min(len(ids), d.batch_frames)
    with FrameLoader(src, ids, positions=list(range(B)), batch_frames=B, device=dev, thumb_side=d.detector_size,
                     decoder=d.decoder) as L:
        batch = next(iter(L))
    V = len(cams)
    sel = flat.f < B
    img = (flat.f[sel] * V + flat.v[sel]).long()
    boxes = flat.boxes[sel][:, :4].float()
    if boxes.shape[0] == 0:
        return {**r, "model_crops_per_s": None, "reason": "no person found in the first frames"}
    n_crops = MODEL_CROPS if ctx.cuda else MODEL_CROPS_CPU
    reps = -(-n_crops // boxes.shape[0])
    img, boxes = img.repeat(reps)[:n_crops], boxes.repeat(reps, 1)[:n_crops]
    images = batch.images.flatten(0, 1)
    n_rep = ctx.n_repeats if ctx.cuda else 2
    med, n = median_wall_s(lambda: run_pose(pose, images, img, boxes, d.crop_batch), dev, n_rep)
    r["model_only"] = {"crops": n_crops, "crop_batch": d.crop_batch, "median_s": med, "repeats": n}
    r["model_crops_per_s"] = n_crops / med
    th = batch.thumbs.flatten(0, 1)

    def detector() -> None:
        with torch.inference_mode():
            det(th.to(det.device))

    r["detector_images_per_s"] = th.shape[0] / median_wall_s(detector, dev, n_rep)[0]
    ctx.log(f"  {r['name']}: {r['model_crops_per_s']:.0f} crops/s (crop + model), "
            f"detector {r['detector_images_per_s']:.0f} images/s")
    return r


def run(ctx: Context) -> dict[str, Any]:
    from h4d_fast.config import Config

    src = demo_source(ctx)
    if src is None:
        return dict(NO_DEMO)
    frames = ctx.frames_or(8 if ctx.quick else 100)
    cameras = 4 if ctx.quick else 20
    work = Path(tempfile.mkdtemp(prefix="h4d_bench_detect_", dir=ctx.tmp))
    try:
        info = write_image_sequence(src, work / "seq", frames, cameras)
        cfg = Config()
        cfg.run.progress = False
        res: dict[str, Any] = {"workload": {"frames": frames, "cameras": cameras, "source": str(src), "sequence": info},
                               "settings": cfg.to_dict()["detect"], "models": {}}
        for spec in ["default", *[str(p) for p in ctx.onnx_models]]:
            res["models"][spec] = _one_model(ctx, spec, work / "seq", cfg)
        emb = res["models"]["default"]
        res["available"] = bool(emb.get("available"))
        if not res["available"]:
            res["reason"] = emb.get("reason")
        else:
            res["crops_per_s"] = emb.get("model_crops_per_s")
            res["images_per_s"] = emb["pass"]["images_per_s"]
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return image_script_main("detect", run, __doc__, argv, onnx=True)


if __name__ == "__main__":
    main()
