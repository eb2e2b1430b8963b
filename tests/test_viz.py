"""`h4d viz`: per-camera videos read back with OpenCV show each person's colour where its
projected joints are; images under exo/ are used when present; 3D views are written."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("smplx")
cv2 = pytest.importorskip("cv2")

from h4d_fast.body import DefaultModelUnavailable  # noqa: E402
from h4d_fast.body.fast import axis_angle_to_matrix, matrix_to_axis_angle  # noqa: E402
from h4d_fast.constants import COCO_LIMBS, COCO_TO_SMPL45  # noqa: E402
from h4d_fast.data import Capture, Detections, GroundTruth  # noqa: E402
from h4d_fast.eval.hmr import load_fast_body  # noqa: E402
from h4d_fast.io.harmony4d import write_sequence  # noqa: E402
from h4d_fast.viz import PALETTE, rasterize, visualize  # noqa: E402
from helpers import ring_cameras  # noqa: E402

F, V, P, WIDTH = 3, 2, 2, 640


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    try:
        fast = load_fast_body(None, "cpu")
    except DefaultModelUnavailable as e:  # pragma: no cover
        pytest.skip(f"default body model unavailable: {e}")
    g = torch.Generator().manual_seed(3)
    cams = ring_cameras(V, seed=3)
    up = axis_angle_to_matrix(torch.tensor([math.pi / 2, 0.0, 0.0], dtype=torch.float64))
    face = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, -math.pi / 2], [0.0, 0.0, math.pi / 2]], dtype=torch.float64))
    go = matrix_to_axis_angle(face @ up)[None].expand(F, P, 3).contiguous()
    bp = 0.1 * torch.randn(F, P, 69, generator=g, dtype=torch.float64)
    betas = 0.5 * torch.randn(P, 10, generator=g, dtype=torch.float64)
    tr = torch.tensor([[0.0, -0.5, 1.0], [0.0, 0.5, 1.0]], dtype=torch.float64)[None].expand(F, P, 3).contiguous()  # side by side for cameras on the x axis
    n = F * P
    j = fast.joints(go.reshape(n, 3), bp.reshape(n, 69), betas[None].expand(F, P, 10).reshape(n, 10), tr.reshape(n, 3))
    coco = j[:, list(COCO_TO_SMPL45)].reshape(F, P, 17, 3)
    poses3d = torch.cat([coco, torch.ones(F, P, 17, 1, dtype=coco.dtype)], -1)
    seq = tmp_path_factory.mktemp("viz") / "seq"
    cap = Capture(cams, Detections.empty(F, V, 1), list(range(1, F + 1)), ["aria01", "aria02"])
    write_sequence(seq, cap, gt=GroundTruth(poses3d, {"global_orient": go, "body_pose": bp, "transl": tr, "betas": betas}),
                   meta={"body_model": "default"})
    # tiny grey JPEGs for cam01 only (cam02 gets a blank canvas)
    (seq / "exo" / "cam01" / "images").mkdir(parents=True)
    for f in range(F):
        cv2.imwrite(str(seq / "exo" / "cam01" / "images" / f"{f + 1:05d}.jpg"), np.full((216, 384, 3), 128, np.uint8))
    return seq, cams, poses3d


def _seg_dist(p, a, b):
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-9), 0, 1)
    return float(np.linalg.norm(a + t * ab - p))


def test_video_shows_each_person_in_its_colour(scene, tmp_path):
    seq, cams, poses3d = scene
    rep = visualize(seq, tmp_path, width=WIDTH, fmt="mp4", views3d=1)
    assert set(rep["videos"]) == {"cam01", "cam02"}
    assert len(rep["views3d"]) == 1 and cv2.imread(rep["views3d"][0]) is not None
    pal = np.asarray(PALETTE[:P] + ((128, 128, 128), (32, 32, 32)), np.float64)  # people, image, canvas
    for v, cam in enumerate(cams.names):
        scale = WIDTH / float(cams.size[v, 0])
        cap = cv2.VideoCapture(rep["videos"][cam])
        frames = []
        while True:
            ok, img = cap.read()
            if not ok:
                break
            frames.append(img)
        cap.release()
        assert len(frames) == F
        h, w = frames[0].shape[:2]
        assert (w, h) == (WIDTH, round(int(cams.size[v, 1]) * scale))
        # the background: the grey image (cam01) or the blank canvas (cam02)
        bg = frames[0][5:15, 5:15].reshape(-1, 3).mean(0)
        assert np.abs(bg - (128 if v == 0 else 32)).max() < 12
        for f, img in enumerate(frames):
            uv, _ = cams.project(poses3d[f, :, :, :3])  # [P, 17, V, 2]
            uv = uv[:, :, v].numpy() * scale
            for p in range(P):
                q = 1 - p
                tested = hits = 0
                for j in range(17):
                    x = uv[p, j]
                    if not (3 <= x[0] < w - 3 and 3 <= x[1] < h - 3):
                        continue
                    near = min(min(np.linalg.norm(uv[q] - x, axis=1)), min(_seg_dist(x, uv[q, a], uv[q, b]) for a, b in COCO_LIMBS))
                    if near < 8:
                        continue
                    xi, yi = int(round(x[0])), int(round(x[1]))
                    c = img[yi - 1 : yi + 2, xi - 1 : xi + 2].reshape(-1, 3).mean(0)
                    tested += 1
                    hits += int(np.argmin(np.linalg.norm(pal - c, axis=1)) == p)
                assert tested >= 5, (cam, f, p)
                assert hits >= 0.8 * tested, (cam, f, p, hits, tested)


def test_png_and_gif_outputs_and_wireframe(scene, tmp_path):
    seq, cams, _ = scene
    rep = visualize(seq, tmp_path / "png", cameras="cam02", frames="0:2", width=320, mesh="wire", fmt="png", views3d=0)
    files = sorted((tmp_path / "png" / "cam02").glob("*.png"))
    assert [p.name for p in files] == ["00001.png", "00002.png"] and rep["views3d"] == []
    img = cv2.imread(str(files[0]))
    assert img.shape[:2] == (180, 320)
    # wireframe pixels of both people's colours are present
    for p in range(P):
        assert (np.abs(img.astype(int) - np.asarray(PALETTE[p])).sum(-1) < 40).sum() > 30
    from h4d_fast.cli import main

    assert main(["viz", str(seq), "--out", str(tmp_path / "cli"), "--cameras", "cam01", "--frames", "1:2", "--width", "160",
                 "--format", "png", "--views3d", "0", "--mesh", "none"]) == 0
    assert [p.name for p in (tmp_path / "cli" / "cam01").glob("*.png")] == ["00002.png"]
    if hasattr(cv2, "imwriteanimation"):
        rep = visualize(seq, tmp_path / "gif", cameras="cam01", width=200, fmt="gif", views3d=0, mesh="none")
        capg = cv2.VideoCapture(rep["videos"]["cam01"])
        n = 0
        while capg.read()[0]:
            n += 1
        assert n == F


def test_rasterizer_depth_order():
    """Two overlapping squares: the nearer one wins where they overlap."""
    uv = torch.tensor([[0, 0], [10, 0], [10, 10], [0, 10], [5, 5], [15, 5], [15, 15], [5, 15]], dtype=torch.float64)
    z = torch.tensor([2.0] * 4 + [1.0] * 4, dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    fid, depth = rasterize(uv, z, faces, 20, 20)
    assert int(fid[2, 2]) in (0, 1) and int(fid[8, 8]) in (2, 3) and int(fid[12, 12]) in (2, 3)
    assert int(fid[18, 18]) == -1 and float(depth[8, 8]) == pytest.approx(1.0)


def test_imported_sequence_draws_over_its_source_video(tmp_path):
    """An imported capture without exo/ images: frames come from the camera's video named in
    import.json, sequence frame id k -> the video's frame ``source_frame_ids[k-1]``."""
    from h4d_fast.io.atomic import write_json
    from h4d_fast.viz import _source_videos, _VideoFrames

    vid = tmp_path / "cam02.mp4"
    w = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    assert w.isOpened()
    for k in range(10):
        w.write(np.full((48, 64, 3), 20 + 20 * k, np.uint8))
    w.release()
    seq = tmp_path / "seq"
    seq.mkdir()
    write_json(seq / "import.json", {"cameras": [{"name": "cam02", "video": str(vid)}, {"name": "cam03", "video": str(tmp_path / "gone.mp4")}],
                                     "source_frame_ids": [3, 4, 8]})
    vids, frame_of = _source_videos(seq)
    assert list(vids) == ["cam02"]  # a video that no longer exists is skipped
    assert [frame_of(f) for f in (1, 2, 3, 4, 0)] == [3, 4, 8, None, None]
    reader = _VideoFrames(vids["cam02"], frame_of)
    for fid, k in ((1, 3), (2, 4), (3, 8), (1, 3)):  # in order, a jump forward and one back
        img = reader.read(fid, (32, 24))
        assert img is not None and img.shape == (24, 32, 3)
        assert abs(float(img.mean()) - (20 + 20 * k)) < 8
    assert reader.read(4, (32, 24)) is None
    reader.close()
