"""Throughput of the image stage's models: crops/s of the pose models, images/s of the detector.

    python bench/bench_detect_models.py --device cuda --json bench/results/detect_models_cuda.json
    python bench/bench_detect_models.py --device cpu --batch 8 --repeats 3

Standalone. Measured, per model, batch size and precision (``fp32``; on CUDA also ``fp16`` and
``bf16``):

* ``blazepose``: the BlazePose full landmark model on ``[B, 3, 256, 256]`` crops already on the
  device, decoding to COCO-17 included (``model(crops)``): crops/s;
* ``blazepose+crop``: the same, fed from ``[B/2, 3, 1080, 1920]`` uint8 frames on the device, two
  people per frame: uint8 -> float, one bilinear affine crop per person (``grid_sample``), the
  model, keypoints mapped back to the image: crops/s and frames/s;
* ``detector``: the BlazePose person detector on ``[B, 3, 1080, 1920]`` float frames (letterbox,
  network, decoding, weighted NMS, per-image split): images/s;
* ``onnx:<name>``: every ``--onnx PATH`` pose model (ONNX Runtime; CUDA provider on CUDA),
  fp32 only: crops/s.

Timing: after warm-up, the median of ``--repeats`` calls (``triton.testing.do_bench`` or CUDA
events on CUDA, ``perf_counter`` on CPU; see ``bench/_micro.py``). Video decoding is not
included here (the stage's own benchmark adds it). The default models come from the cache
(``$H4D_CACHE/blazepose_v1``; build it with ``h4d models make-default``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._micro import time_ms, versions  # noqa: E402
from bench.detect_accuracy import crop, region_affine, to_image  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _row(model: str, dtype: str, batch: int, t: dict, items: int, unit: str, **extra) -> dict:
    per_s = items / (t["median_ms"] / 1e3)
    return {"model": model, "dtype": dtype, "batch": batch, unit: per_s, "median_ms": t["median_ms"],
            "p20_ms": t["p20_ms"], "p80_ms": t["p80_ms"], "timer": t["timer"], **extra}


def bench_landmarks(device: torch.device, batches: list[int], dtypes: list[str], repeats: int, compile_: bool, model_dir) -> list[dict]:
    from h4d_fast.detect.models import load_pose_model

    rows = []
    for dt in dtypes:
        model = load_pose_model(model_dir or "default", device=device, dtype=DTYPES[dt])
        if compile_:
            model.graph.forward = torch.compile(model.graph.forward, dynamic=False)
        for b in batches:
            g = torch.Generator(device="cpu").manual_seed(b)
            sets = [torch.rand(b, 3, 256, 256, generator=g).to(device) for _ in range(2)]
            i = [0]

            def run():
                i[0] ^= 1
                return model(sets[i[0]])

            try:
                t = time_ms(run, device.type, warmup=2, repeats=repeats)
            except torch.OutOfMemoryError:
                rows.append({"model": "blazepose", "dtype": dt, "batch": b, "error": "out of memory"})
                torch.cuda.empty_cache()
                continue
            rows.append(_row("blazepose", dt, b, t, b, "crops_per_s", compiled=compile_))
            print(f"blazepose       {dt:5s} batch {b:5d}: {rows[-1]['crops_per_s']:10.1f} crops/s  ({t['median_ms']:.2f} ms)", flush=True)
            sets = None  # free before the next batch size allocates
    return rows


def bench_crop_landmarks(device: torch.device, batches: list[int], dtypes: list[str], repeats: int, model_dir) -> list[dict]:
    from h4d_fast.detect.models import load_pose_model

    rows = []
    H, W = 1080, 1920
    for dt in dtypes:
        model = load_pose_model(model_dir or "default", device=device, dtype=DTYPES[dt])
        for b in batches:
            frames = max(1, b // 2)
            g = torch.Generator(device="cpu").manual_seed(b)
            imgs = torch.randint(0, 256, (frames, 3, H, W), dtype=torch.uint8, generator=g).to(device)
            n = 2 * frames
            idx = torch.arange(frames, device=device).repeat_interleave(2)
            centre = torch.rand(n, 2, generator=g).to(device) * torch.tensor([W, H], device=device)
            side = torch.full((n,), 900.0, device=device)
            rot = (torch.rand(n, generator=g).to(device) - 0.5) * 0.6

            def run():
                A = region_affine(centre, side, rot, 256)
                crops = crop(imgs, idx, A, (256, 256)) / 255.0  # crop uint8 values, scale once
                return to_image(model(crops), A)

            try:
                t = time_ms(run, device.type, warmup=2, repeats=repeats)
            except torch.OutOfMemoryError:
                rows.append({"model": "blazepose+crop", "dtype": dt, "batch": n, "error": "out of memory"})
                torch.cuda.empty_cache()
                continue
            rows.append(_row("blazepose+crop", dt, n, t, n, "crops_per_s", frames_per_s=frames / (t["median_ms"] / 1e3),
                             frame_size=[H, W]))
            print(f"blazepose+crop  {dt:5s} batch {n:5d}: {rows[-1]['crops_per_s']:10.1f} crops/s  ({t['median_ms']:.2f} ms)", flush=True)
            imgs = None  # free before the next batch size allocates
    return rows


def bench_detector(device: torch.device, batches: list[int], dtypes: list[str], repeats: int, model_dir) -> list[dict]:
    from h4d_fast.detect.models import load_person_detector

    rows = []
    H, W = 1080, 1920
    for dt in dtypes:
        det = load_person_detector(model_dir or "default", device=device, dtype=DTYPES[dt])
        for b in batches:
            g = torch.Generator(device="cpu").manual_seed(b)
            imgs = torch.rand(b, 3, H, W, generator=g).to(device)
            try:
                t = time_ms(lambda: det(imgs), device.type, warmup=2, repeats=repeats)
            except torch.OutOfMemoryError:
                rows.append({"model": "detector", "dtype": dt, "batch": b, "error": "out of memory"})
                torch.cuda.empty_cache()
                continue
            rows.append(_row("detector", dt, b, t, b, "images_per_s", frame_size=[H, W]))
            print(f"detector        {dt:5s} batch {b:5d}: {rows[-1]['images_per_s']:10.1f} images/s ({t['median_ms']:.2f} ms)", flush=True)
            imgs = None  # free before the next batch size allocates
    return rows


def bench_onnx(path: Path, device: torch.device, batches: list[int], repeats: int) -> list[dict]:
    from h4d_fast.detect.models import load_pose_model

    model = load_pose_model(path, device=device)
    rows = []
    H, W = model.input_size
    for b in batches:
        x = torch.rand(b, 3, H, W).to(device)
        t = time_ms(lambda: model(x), device.type, warmup=2, repeats=repeats)
        rows.append(_row(f"onnx:{model.name}", "fp32", b, t, b, "crops_per_s", input_size=[H, W],
                         providers=model._session.get_providers()))
        print(f"onnx:{model.name:10s} fp32  batch {b:5d}: {rows[-1]['crops_per_s']:10.1f} crops/s  ({t['median_ms']:.2f} ms)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", default=None, help="pose-model batch sizes, comma-separated (default: 64,128,256,512,1024 on CUDA, 8 on CPU)")
    ap.add_argument("--detector-batch", default=None, help="detector batch sizes (default: 1,8,32 on CUDA, 2 on CPU)")
    ap.add_argument("--dtypes", default=None, help="fp32,fp16,bf16 (default: all on CUDA, fp32 on CPU)")
    ap.add_argument("--models", default="blazepose,blazepose+crop,detector", help="which of blazepose, blazepose+crop, detector")
    ap.add_argument("--onnx", type=Path, action="append", default=[], help="an ONNX pose model to time too (repeatable)")
    ap.add_argument("--model-dir", type=Path, help="a converted BlazePose folder (default: the cache)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    ap.add_argument("--compile", action="store_true", help="also torch.compile the landmark graph (blazepose rows)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    batches = [int(v) for v in (args.batch or ("64,128,256,512,1024" if cuda else "8")).split(",")]
    dbatches = [int(v) for v in (args.detector_batch or ("1,8,32" if cuda else "2")).split(",")]
    dtypes = (args.dtypes or ("fp32,fp16,bf16" if cuda else "fp32")).split(",")
    models = args.models.split(",")
    rows: list[dict] = []
    with torch.inference_mode():
        if "blazepose" in models:
            rows += bench_landmarks(device, batches, dtypes, args.repeats, False, args.model_dir)
            if args.compile:
                try:
                    rows += bench_landmarks(device, batches, dtypes, args.repeats, True, args.model_dir)
                except Exception as e:  # report, keep the other results
                    rows.append({"model": "blazepose", "compiled": True, "error": f"{type(e).__name__}: {e}"[:300]})
        if "blazepose+crop" in models:
            rows += bench_crop_landmarks(device, batches, dtypes, args.repeats, args.model_dir)
        if "detector" in models:
            rows += bench_detector(device, dbatches, dtypes, args.repeats, args.model_dir)
        for p in args.onnx:
            rows += bench_onnx(p, device, batches, args.repeats)
    env = versions()
    env["device"] = torch.cuda.get_device_name(device) if cuda else "cpu"
    env["threads"] = torch.get_num_threads()
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        env["onnxruntime"] = None
    best = [r["crops_per_s"] for r in rows if r.get("model") == "blazepose" and "crops_per_s" in r]
    result = {"results": rows, "environment": env, "best_blazepose_crops_per_s": max(best) if best else None}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
