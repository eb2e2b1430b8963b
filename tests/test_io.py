"""File formats: COLMAP text models, detection files, the Harmony4D sequence folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from h4d_fast.camera import CameraSet, look_at, make_cameras
from h4d_fast.data import Capture, Detections, GroundTruth
from h4d_fast.errors import InputError
from h4d_fast.io import (  # the package's public names
    LoadReport,
    SequenceLayout,
    load_camera_detections,
    pack_detections,
    read_frame_detections,
    read_ground_truth,
    read_meta,
    read_poses3d,
    read_sequence,
    unpack_detections,
    write_frame_json,
    write_frame_npy,
    write_poses3d,
    write_sequence,
)
from h4d_fast.io.colmap import camera_token, qvec_to_rotmat, read_colmap, rotmat_to_qvec, write_colmap
from h4d_fast.io.detections import keypoint_box, read_coco_camera


# ------------------------------------------------------------------ helpers
def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_similarity(rng: np.random.Generator) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = rng.uniform(0.2, 5.0) * random_rotation(rng)
    T[:3, 3] = rng.normal(scale=3.0, size=3)
    return T


def ring_cameras(names: list[str], models: list[str], dists: list[list[float]] | None = None) -> CameraSet:
    V = len(names)
    ang = torch.linspace(0, 2 * math.pi, V + 1, dtype=torch.float64)[:V]
    centers = torch.stack([6 * ang.cos(), 6 * ang.sin(), torch.full_like(ang, 1.5)], -1)
    R, t = look_at(centers, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(V, 3))
    intr = [[1800.0 + 10 * i, 1790.0 + 7 * i, 1920.0 + i, 1080.0 - i] for i in range(V)]
    return make_cameras(names, models, intr, R, t, [[3840, 2160]] * V, dist=dists)


def assert_cameras_equal(a: CameraSet, b: CameraSet, atol: float = 1e-9) -> None:
    assert a.names == b.names
    assert a.model == b.model
    for f in ("intrinsics", "dist", "R", "t"):
        torch.testing.assert_close(getattr(a, f).double(), getattr(b, f).double(), atol=atol, rtol=0, msg=f)
    assert torch.equal(a.size, b.size)


def random_dets(rng: np.random.Generator, n: int, K: int = 17) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for _ in range(n):
        k = np.empty((K, 3), np.float32)
        k[:, 0] = rng.uniform(0, 3840, K)
        k[:, 1] = rng.uniform(0, 2160, K)
        k[:, 2] = rng.uniform(0, 1, K)
        b = np.array([*k[:, 0:2].min(0), *k[:, 0:2].max(0), rng.uniform(0.5, 1)], np.float32)
        out.append((k, b))
    return out


def small_capture(rng: np.random.Generator, F: int = 4, names: list[str] | None = None) -> Capture:
    names = names or ["cam01", "cam02", "cam03"]
    models = (["fisheye", "opencv", "pinhole"] * 4)[: len(names)]
    dists = [[0.01, -0.002, 0.0005, -0.0001] if m == "fisheye" else ([0.1, -0.05, 0.001, 0.002, 0.01] if m == "opencv" else []) for m in models]
    cams = ring_cameras(names, models, dists)
    per_camera = [[random_dets(rng, int(rng.integers(0, 4))) for _ in range(F)] for _ in names]
    det = pack_detections(per_camera)
    init = torch.tensor(rng.uniform(0, 1000, size=(len(names), 2, 4)), dtype=torch.float32)
    init[..., 2:] += init[..., :2] + 10  # x2 > x1, y2 > y1
    valid = torch.ones(len(names), 2, dtype=torch.bool)
    valid[-1, 1] = False
    init[-1, 1] = 0
    return Capture(cams, det, list(range(1, F + 1)), ["aria01", "aria02"], init, valid, name="seq")


# ====================================================================== COLMAP
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_colmap_roundtrip_with_similarity(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = ["cam01", "cam02", "cam03", "cam04", "cam10"]
    models = ["fisheye", "opencv", "opencv", "pinhole", "fisheye"]
    dists = [
        [0.02, -0.01, 0.003, -0.0007],
        [0.1, -0.05, 0.001, 0.002, 0.01, 0.02, -0.003, 0.0004],  # FULL_OPENCV
        [0.1, -0.05, 0.001, 0.002],  # OPENCV
        [],
        [-0.03, 0.01, 0.0, 0.001],
    ]
    cams = ring_cameras(names, models, dists)
    T = random_similarity(rng)
    write_colmap(tmp_path, cams, T, frame_id=7)
    for f in ("cameras.txt", "images.txt", "points3D.txt", "scale.npy"):
        assert (tmp_path / f).is_file()
    assert "cam01/00007.jpg" in (tmp_path / "images.txt").read_text()
    back = read_colmap(tmp_path)
    assert back.dtype == torch.float64
    assert_cameras_equal(cams, back)
    # the COLMAP-frame model differs from the metric one (T was really used), and None skips it
    raw = read_colmap(tmp_path, scale=None)
    assert not torch.allclose(raw.t, cams.t)
    # explicit path and array give the same as 'auto'
    assert_cameras_equal(read_colmap(tmp_path, scale=tmp_path / "scale.npy"), back)
    assert_cameras_equal(read_colmap(tmp_path, scale=T), back)
    # models written as expected
    txt = (tmp_path / "cameras.txt").read_text()
    assert "OPENCV_FISHEYE" in txt and "FULL_OPENCV" in txt and " OPENCV " in txt and "PINHOLE" in txt


def test_colmap_roundtrip_identity(tmp_path: Path) -> None:
    cams = ring_cameras(["cam01", "cam02"], "fisheye", [[0.01, 0.0, 0.0, 0.0]] * 2)
    write_colmap(tmp_path, cams)
    np.testing.assert_array_equal(np.load(tmp_path / "scale.npy"), np.eye(4))
    assert_cameras_equal(cams, read_colmap(tmp_path))


def test_quaternion_roundtrip() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        R = random_rotation(rng)
        q = rotmat_to_qvec(R)
        assert q[0] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
        np.testing.assert_allclose(qvec_to_rotmat(q), R, atol=1e-13)
    # 180-degree rotations (qw = 0) are the hard case for naive formulas
    for R in (np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])):
        np.testing.assert_allclose(qvec_to_rotmat(rotmat_to_qvec(R)), R, atol=1e-13)


def test_scale_applied_exactly_once(tmp_path: Path) -> None:
    """A known metric point lands on the pixel computed by hand through inv(T) and the COLMAP camera."""
    s = 2.5
    Rz = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3] = s * Rz
    T[:3, 3] = [1.0, -2.0, 0.5]
    np.save(tmp_path / "scale.npy", T)
    # COLMAP frame: camera with identity rotation at colmap-units translation (0.1, -0.2, 4)
    (tmp_path / "cameras.txt").write_text("1 PINHOLE 1000 800 900 910 500 400\n")
    (tmp_path / "images.txt").write_text("1 1 0 0 0 0.1 -0.2 4 1 cam01/00001.jpg\n\n")
    cams = read_colmap(tmp_path)

    X_metric = np.array([3.0, 1.0, 2.0])
    X_colmap = np.linalg.solve(T, np.append(X_metric, 1.0))[:3]
    Xc = X_colmap + np.array([0.1, -0.2, 4.0])  # camera coordinates, COLMAP units
    expected = np.array([900 * Xc[0] / Xc[2] + 500, 910 * Xc[1] / Xc[2] + 400])
    uv, depth = cams.project(torch.tensor(X_metric, dtype=torch.float64))
    np.testing.assert_allclose(uv[0].numpy(), expected, atol=1e-9)
    # metric camera coordinates are s times the COLMAP ones
    np.testing.assert_allclose(depth[0].item(), s * Xc[2], atol=1e-12)
    # the camera centre is the metric image of the COLMAP centre
    c_colmap = -np.array([0.1, -0.2, 4.0])
    c_metric = (T @ np.append(c_colmap, 1.0))[:3]
    np.testing.assert_allclose(cams.centers[0].numpy(), c_metric, atol=1e-12)


CAMERAS_TXT = """# Camera list with one line of data per camera:
#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]
# Number of cameras: 4
1 OPENCV_FISHEYE 3840 2160 1800.5 1801.5 1920.25 1080.75 0.01 -0.02 0.003 -0.0004
2 SIMPLE_RADIAL 1920 1080 1000 960 540 -0.05

3 THIN_PRISM_FISHEYE 1408 1408 600 600 704 704 0 0 0 0 0 0 0 0 0 0
4 OPENCV 3840 2160 1700 1710 1900 1100 0.1 -0.2 0.001 0.002
"""

IMAGES_TXT = """# Image list with two lines of data per image:
#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME
#   POINTS2D[] as (X, Y, POINT3D_ID)
# Number of images: 7
10 0.7071067811865476 0.7071067811865476 0 0 1 2 3 1 cam01/00001.jpg
100.5 200.25 -1 300 400 17
11 1 0 0 0 4 5 6 2 cam02_00002.jpg

12 1 0 0 0 7 8 9 2 cam02_00001.jpg

13 0 1 0 0 -1 -2 -3 4 exo/cam03/images/00001.jpg

14 1 0 0 0 0 0 0 3 aria01/00001.jpg

15 1 0 0 0 0 0 0 3 cam04/00001.jpg

16 1 0 0 0 0 0 0 1 frame_00001.jpg

"""


def test_parse_handwritten_colmap(tmp_path: Path) -> None:
    (tmp_path / "cameras.txt").write_text(CAMERAS_TXT)
    (tmp_path / "images.txt").write_text(IMAGES_TXT)
    cams = read_colmap(tmp_path)
    # aria01 and cam04 (1408x1408 Aria camera) and frame_00001.jpg (no token) are skipped
    assert cams.names == ["cam01", "cam02", "cam03"]
    assert cams.model == ["fisheye", "opencv", "opencv"]
    np.testing.assert_allclose(cams.intrinsics[0].numpy(), [1800.5, 1801.5, 1920.25, 1080.75])
    np.testing.assert_allclose(cams.dist[0].numpy(), [0.01, -0.02, 0.003, -0.0004, 0, 0, 0, 0])
    np.testing.assert_allclose(cams.intrinsics[1].numpy(), [1000, 1000, 960, 540])
    np.testing.assert_allclose(cams.dist[1].numpy(), [-0.05, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(cams.dist[2].numpy(), [0.1, -0.2, 0.001, 0.002, 0, 0, 0, 0])
    assert cams.size.tolist() == [[3840, 2160], [1920, 1080], [3840, 2160]]
    # cam01: 90 degrees about x
    np.testing.assert_allclose(cams.R[0].numpy(), [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(cams.t[0].numpy(), [1, 2, 3])
    # cam02: first image by name is cam02_00001.jpg
    np.testing.assert_allclose(cams.t[1].numpy(), [7, 8, 9])
    # cam03: 180 degrees about x
    np.testing.assert_allclose(cams.R[2].numpy(), np.diag([1.0, -1, -1]), atol=1e-12)
    # no scale.npy -> no transform
    np.testing.assert_allclose(cams.t[2].numpy(), [-1, -2, -3])

    sub = read_colmap(tmp_path, camera_names=["cam03", "cam01"])
    assert sub.names == ["cam03", "cam01"]
    with pytest.raises(InputError, match=r"images\.txt.*cam07"):
        read_colmap(tmp_path, camera_names=["cam01", "cam07"])


def test_camera_token() -> None:
    assert camera_token("cam01/00001.jpg") == "cam01"
    assert camera_token("cam12_00001.jpg") == "cam12"
    assert camera_token("exo/cam03/images/00001.jpg") == "cam03"
    assert camera_token("aria01/00001.jpg") is None
    assert camera_token("webcam01/x.jpg") is None
    assert camera_token("camera01/x.jpg") is None


def test_colmap_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cameras\.txt.*missing"):
        read_colmap(tmp_path)
    (tmp_path / "cameras.txt").write_text(CAMERAS_TXT)
    with pytest.raises(InputError, match=r"images\.txt.*missing"):
        read_colmap(tmp_path)
    # malformed image line: a non-number quaternion component, reported with its line
    (tmp_path / "images.txt").write_text("# c\n1 1 0 zero 0 1 2 3 1 cam01/00001.jpg\n\n")
    with pytest.raises(InputError, match=r"images\.txt \[line 2\]: QY"):
        read_colmap(tmp_path)
    # too few fields
    (tmp_path / "images.txt").write_text("1 1 0 0 0 1 2 3\n\n")
    with pytest.raises(InputError, match=r"images\.txt \[line 1\]"):
        read_colmap(tmp_path)
    # points line missing (second image line taken as a points line)
    (tmp_path / "images.txt").write_text("1 1 0 0 0 1 2 3 1 cam01/00001.jpg\n2 1 0 0 0 1 2 3 1 cam02/00001.jpg\n")
    with pytest.raises(InputError, match=r"images\.txt \[line 2\].*2D-points"):
        read_colmap(tmp_path)
    # unknown camera id
    (tmp_path / "images.txt").write_text("1 1 0 0 0 1 2 3 9 cam01/00001.jpg\n\n")
    with pytest.raises(InputError, match=r"images\.txt \[line 1\].*CAMERA_ID 9"):
        read_colmap(tmp_path)
    # wrong param count in cameras.txt
    (tmp_path / "cameras.txt").write_text("1 PINHOLE 100 100 1 2 3\n")
    with pytest.raises(InputError, match=r"cameras\.txt \[line 1\].*4 params"):
        read_colmap(tmp_path)
    # unsupported model used by an exo camera
    (tmp_path / "cameras.txt").write_text("1 FOV 100 100 1 2 3 4 5\n")
    (tmp_path / "images.txt").write_text("1 1 0 0 0 1 2 3 1 cam01/00001.jpg\n\n")
    with pytest.raises(InputError, match=r"cameras\.txt \[line 1\].*unsupported model FOV"):
        read_colmap(tmp_path)
    # bad scale.npy
    (tmp_path / "cameras.txt").write_text("1 PINHOLE 100 100 1 2 3 4\n")
    np.save(tmp_path / "scale.npy", np.eye(3))
    with pytest.raises(InputError, match=r"scale\.npy.*4x4"):
        read_colmap(tmp_path)
    (tmp_path / "scale.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InputError, match=r"scale\.npy"):
        read_colmap(tmp_path)
    np.save(tmp_path / "scale.npy", np.diag([1.0, 1.0, -1.0, 1.0]))
    with pytest.raises(InputError, match=r"scale\.npy \[scale\].*reflection"):
        read_colmap(tmp_path)
    # no exo camera at all
    (tmp_path / "scale.npy").unlink()
    (tmp_path / "images.txt").write_text("1 1 0 0 0 1 2 3 1 aria01/00001.jpg\n\n")
    with pytest.raises(InputError, match=r"images\.txt.*no exo camera"):
        read_colmap(tmp_path)
    # binary model hint
    for f in ("cameras.txt", "images.txt"):
        (tmp_path / f).unlink()
    (tmp_path / "cameras.bin").write_bytes(b"")
    with pytest.raises(InputError, match=r"model_converter"):
        read_colmap(tmp_path)


def test_write_colmap_rejects_unreadable_names(tmp_path: Path) -> None:
    cams = ring_cameras(["left", "right"], "pinhole")
    with pytest.raises(ValueError, match="camNN"):
        write_colmap(tmp_path, cams)


# ================================================================ detections
def assert_dets_equal(a, b, atol: float = 0.0) -> None:
    assert len(a) == len(b)
    for (ka, ba), (kb, bb) in zip(a, b):
        np.testing.assert_allclose(ka, kb, atol=atol, rtol=0)
        np.testing.assert_allclose(ba, bb, atol=atol, rtol=0)


def test_npy_list_of_dicts_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    dets = random_dets(rng, 3)
    p = tmp_path / "00001.npy"
    write_frame_npy(p, dets)
    raw = np.load(p, allow_pickle=True)
    assert raw.dtype == object and set(raw[0]) == {"bbox", "keypoints"}
    back, gaps = read_frame_detections(p)
    assert gaps == 0
    assert all(k.dtype == np.float32 and k.shape == (17, 3) and b.shape == (5,) for k, b in back)
    assert_dets_equal(dets, back)
    # empty frame
    write_frame_npy(tmp_path / "00002.npy", [])
    assert read_frame_detections(tmp_path / "00002.npy") == ([], 0)


def test_json_roundtrip_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    dets = random_dets(rng, 4)
    p = tmp_path / "00003.json"
    write_frame_json(p, dets)
    obj = json.loads(p.read_text())
    assert len(obj[0]["keypoints"]) == 51 and len(obj[0]["bbox"]) == 4
    back, gaps = read_frame_detections(p)
    assert gaps == 0
    assert_dets_equal(dets, back)  # bit-exact in float32
    # the {"people": [...]} wrapper
    (tmp_path / "00004.json").write_text(json.dumps({"people": obj}))
    assert_dets_equal(dets, read_frame_detections(tmp_path / "00004.json")[0])


def test_plain_array_and_boxes_from_keypoints(tmp_path: Path) -> None:
    k = np.zeros((2, 17, 3), np.float32)
    k[0, :, 0] = np.arange(17) * 10
    k[0, :, 1] = np.arange(17) * 5 + 100
    k[0, :, 2] = 0.9
    k[0, 16, 2] = 0.1  # below the box threshold: not in the box
    k[1, :, 2] = 0.05  # nothing confident
    np.save(tmp_path / "00001.npy", k)
    back, gaps = read_frame_detections(tmp_path / "00001.npy")
    assert gaps == 0 and len(back) == 2
    np.testing.assert_allclose(back[0][1], [0, 100, 150, 175, k[0, :, 2].mean()], rtol=1e-6)
    np.testing.assert_allclose(back[1][1], [0, 0, 0, 0, 0.05], rtol=1e-6)
    np.testing.assert_array_equal(back[0][0], k[0])
    np.testing.assert_allclose(keypoint_box(k), np.stack([back[0][1], back[1][1]]))
    # an empty float array is an empty frame
    np.save(tmp_path / "00002.npy", np.zeros((0, 17, 3), np.float32))
    assert read_frame_detections(tmp_path / "00002.npy") == ([], 0)


def test_wholebody_133_sliced(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    dets = random_dets(rng, 2, K=133)
    np.save(tmp_path / "00001.npy", np.asarray([{"bbox": b, "keypoints": k} for k, b in dets], dtype=object), allow_pickle=True)
    back, _ = read_frame_detections(tmp_path / "00001.npy")
    assert_dets_equal([(k[:17], b) for k, b in dets], back)
    np.save(tmp_path / "00002.npy", np.stack([k for k, _ in dets]))
    back2, _ = read_frame_detections(tmp_path / "00002.npy")
    np.testing.assert_array_equal(back2[1][0], dets[1][0][:17])
    (tmp_path / "00003.json").write_text(json.dumps([{"keypoints": dets[0][0].reshape(-1).tolist(), "score": 0.5}]))
    back3, _ = read_frame_detections(tmp_path / "00003.json")
    np.testing.assert_allclose(back3[0][0], dets[0][0][:17])
    assert back3[0][1][4] == pytest.approx(0.5)  # explicit score wins over the keypoint mean


def test_bbox_score_variants(tmp_path: Path) -> None:
    k = np.ones((17, 3), np.float32)
    np.save(tmp_path / "00001.npy", np.asarray([{"bbox": np.array([1, 2, 3, 4.0]), "keypoints": k, "track_id": 3}], dtype=object))
    (b,) = [b for _, b in read_frame_detections(tmp_path / "00001.npy")[0]]
    np.testing.assert_array_equal(b, [1, 2, 3, 4, 1])


def test_nan_keypoints_are_gaps(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    dets = random_dets(rng, 2)
    dets[0][0][3] = [np.nan, 5.0, 0.9]
    dets[0][0][4, 2] = np.inf
    dets[1][0][0, 0] = -np.inf
    dets[1][1][:] = np.nan  # box too: replaced by the keypoint box
    write_frame_npy(tmp_path / "00001.npy", dets)
    back, gaps = read_frame_detections(tmp_path / "00001.npy")
    assert gaps == 4
    for d, j in ((0, 3), (0, 4), (1, 0)):
        np.testing.assert_array_equal(back[d][0][j], [0, 0, 0])
    assert np.isfinite(back[1][1]).all()
    np.testing.assert_allclose(back[1][1], keypoint_box(back[1][0]))
    # plain array and JSON paths count the same way
    arr = np.stack([d[0] for d in dets])
    np.save(tmp_path / "00002.npy", arr)
    assert read_frame_detections(tmp_path / "00002.npy")[1] == 3
    (tmp_path / "00003.json").write_text(json.dumps([{"keypoints": [float("nan")] * 3 + [1.0] * 48, "bbox": [0, 0, 1, 1], "score": 1}]))
    back3, gaps3 = read_frame_detections(tmp_path / "00003.json")
    assert gaps3 == 1 and back3[0][0][0].tolist() == [0, 0, 0]
    # counted through a camera load too
    rep = LoadReport()
    load_camera_detections(tmp_path, report=rep)
    assert rep.nan_keypoints == 4 + 3 + 1


def test_detection_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    dets = random_dets(rng, 2)
    # truncated npy (pickled and plain)
    write_frame_npy(tmp_path / "00001.npy", dets)
    data = (tmp_path / "00001.npy").read_bytes()
    (tmp_path / "00012.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"00012\.npy.*not a readable \.npy"):
        read_frame_detections(tmp_path / "00012.npy")
    np.save(tmp_path / "00013.npy", np.zeros((3, 17, 3), np.float32))
    data = (tmp_path / "00013.npy").read_bytes()
    (tmp_path / "00013.npy").write_bytes(data[:-20])
    with pytest.raises(InputError, match=r"00013\.npy"):
        read_frame_detections(tmp_path / "00013.npy")
    # not npy at all (never unpickled)
    (tmp_path / "00014.npy").write_bytes(b"hello")
    with pytest.raises(InputError, match=r"00014\.npy"):
        read_frame_detections(tmp_path / "00014.npy")
    import pickle

    (tmp_path / "00023.npy").write_bytes(pickle.dumps([{"keypoints": np.zeros((17, 3))}]))
    with pytest.raises(InputError, match=r"00023\.npy.*magic"):
        read_frame_detections(tmp_path / "00023.npy")
    # malformed JSON, with its position
    (tmp_path / "00015.json").write_text('[{"keypoints": [1, 2, 3}]')
    with pytest.raises(InputError, match=r"00015\.json \[line 1 column \d+\]: malformed JSON"):
        read_frame_detections(tmp_path / "00015.json")
    # wrong keypoint shape
    bad = [{"bbox": dets[0][1], "keypoints": dets[0][0]}, {"bbox": dets[1][1], "keypoints": dets[1][0][:16]}]
    np.save(tmp_path / "00016.npy", np.asarray(bad, dtype=object))
    with pytest.raises(InputError, match=r"00016\.npy \[detection 1 'keypoints'\]: expected shape \(17, 3\)"):
        read_frame_detections(tmp_path / "00016.npy")
    np.save(tmp_path / "00017.npy", np.zeros((2, 18, 3)))
    with pytest.raises(InputError, match=r"00017\.npy \[keypoints\]: expected shape"):
        read_frame_detections(tmp_path / "00017.npy")
    (tmp_path / "00018.json").write_text(json.dumps([{"keypoints": [1.0] * 50}]))
    with pytest.raises(InputError, match=r"00018\.json \[detection 0 'keypoints'\]"):
        read_frame_detections(tmp_path / "00018.json")
    # negative confidence
    k = dets[0][0].copy()
    k[5, 2] = -0.5
    write_frame_npy(tmp_path / "00019.npy", [dets[1], (k, dets[0][1])])
    with pytest.raises(InputError, match=r"00019\.npy \[detection 1 'keypoints'\]: negative confidence -0\.5 at keypoint 5"):
        read_frame_detections(tmp_path / "00019.npy")
    # bad box
    np.save(tmp_path / "00020.npy", np.asarray([{"bbox": [1, 2, 3], "keypoints": dets[0][0]}], dtype=object))
    with pytest.raises(InputError, match=r"00020\.npy \[detection 0 'bbox'\]"):
        read_frame_detections(tmp_path / "00020.npy")
    # missing keypoints key / wrong container
    np.save(tmp_path / "00021.npy", np.asarray([{"bbox": [1, 2, 3, 4, 1]}], dtype=object))
    with pytest.raises(InputError, match=r"00021\.npy \[detection 0\]: no 'keypoints'"):
        read_frame_detections(tmp_path / "00021.npy")
    (tmp_path / "00022.json").write_text('"text"')
    with pytest.raises(InputError, match=r"00022\.json"):
        read_frame_detections(tmp_path / "00022.json")


def test_whole_camera_coco_results(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    d = random_dets(rng, 3)
    res = [
        {"image_id": 5, "category_id": 1, "keypoints": d[0][0].reshape(-1).tolist(), "bbox": [1, 2, 10, 20], "score": 0.9},
        {"image_id": 5, "category_id": 1, "keypoints": d[1][0].reshape(-1).tolist(), "bbox": [3, 4, 10, 20], "score": 0.8},
        {"image_id": 7, "category_id": 1, "keypoints": d[2][0].reshape(-1).tolist(), "bbox": [5, 6, 10, 20], "score": 0.7},
    ]
    p = tmp_path / "cam01.json"
    p.write_text(json.dumps(res))
    frames, gaps = read_coco_camera(p)
    assert sorted(frames) == [5, 7] and len(frames[5]) == 2 and gaps == 0
    np.testing.assert_allclose(frames[5][1][1], [3, 4, 13, 24, 0.8], rtol=1e-6)
    # as a camera source: frames in between are empty, and not reported missing (results are sparse)
    rep = LoadReport()
    out = load_camera_detections(p, frame_ids=[5, 6, 7], report=rep)
    assert [len(x) for x in out] == [2, 0, 1] and rep.missing == []
    # a folder holding only that file works the same
    sub = tmp_path / "cam01"
    sub.mkdir()
    (sub / "results.json").write_text(p.read_text())
    assert [len(x) for x in load_camera_detections(sub)] == [2, 1]


def test_whole_camera_coco_dataset(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    d = random_dets(rng, 2)
    images = [{"id": 101, "file_name": "cam02/00003.jpg"}, {"id": 102, "file_name": "cam02/00004.jpg"}, {"id": 103, "file_name": "cam02/00005.jpg"}]
    flags = np.tile([10.0, 20.0, 2.0], (17, 1))
    flags[3, 2] = 0
    flags[4, 2] = 1
    anns = [
        {"image_id": 102, "keypoints": flags.reshape(-1).tolist(), "bbox": [0, 0, 5, 5]},
        {"image_id": 103, "keypoints": d[1][0].reshape(-1).astype(float).round(3).tolist(), "bbox": [0, 0, 5, 5]},
    ]
    p = tmp_path / "gt.json"
    p.write_text(json.dumps({"images": images, "annotations": anns}))
    frames, _ = read_coco_camera(p)
    assert sorted(frames) == [3, 4, 5] and frames[3] == [] and len(frames[4]) == 1
    # second annotation has real confidences -> file not treated as visibility flags
    assert frames[4][0][0][3, 2] == 0 and frames[4][0][0][4, 2] == 1 and frames[4][0][0][0, 2] == 2
    # pure visibility flags (no scores anywhere) become 0/1 confidences
    p.write_text(json.dumps({"images": images, "annotations": anns[:1]}))
    frames, _ = read_coco_camera(p)
    assert frames[4][0][0][:, 2].tolist() == [1] * 3 + [0] + [1] * 13
    # file names without numbers -> image order
    images2 = [{"id": "a", "file_name": "x.jpg"}, {"id": "b", "file_name": "y.jpg"}]
    p.write_text(json.dumps({"images": images2, "annotations": [dict(anns[1], image_id="b")]}))
    frames, _ = read_coco_camera(p)
    assert sorted(frames) == [1, 2] and len(frames[2]) == 1
    # an annotation for an unknown image
    p.write_text(json.dumps({"images": images2, "annotations": [dict(anns[1], image_id="zz")]}))
    with pytest.raises(InputError, match=r"gt\.json \[annotations\[0\]\]: image_id 'zz'"):
        read_coco_camera(p)


def test_load_camera_and_pack(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    counts = [2, 0, 3, 1]
    per_frame = [random_dets(rng, c) for c in counts]
    for i, dets in enumerate(per_frame):
        (write_frame_npy if i % 2 == 0 else write_frame_json)(tmp_path / f"{i + 1:05d}.{'npy' if i % 2 == 0 else 'json'}", dets)
    (tmp_path / "notes.txt").write_text("ignored")
    rep = LoadReport()
    out = load_camera_detections(tmp_path, report=rep)
    assert [len(x) for x in out] == counts and rep.missing == []
    for a, b in zip(per_frame, out):
        assert_dets_equal(a, b)
    out2 = load_camera_detections(tmp_path, frame_ids=[2, 3, 9], report=rep)
    assert [len(x) for x in out2] == [0, 3, 0] and rep.missing == [(str(tmp_path), 9)]

    det = pack_detections([out, out2 + [[]]])
    assert isinstance(det, Detections) and det.shape == (4, 2, 3)
    assert det.valid[:, 0].sum(-1).tolist() == counts
    assert det.valid[:, 1].sum(-1).tolist() == [0, 3, 0, 0]
    np.testing.assert_array_equal(det.kpts[2, 0, 1].numpy(), per_frame[2][1][0])
    assert det.kpts[1, 0].abs().sum() == 0
    back = unpack_detections(det)
    for a, b in zip(out, back[0]):
        assert_dets_equal(a, b)
    # all empty -> D = 1
    assert pack_detections([[[], []]]).shape == (2, 1, 1)
    with pytest.raises(ValueError):
        pack_detections([out, out[:2]])


def test_empty_detection_folder(tmp_path: Path) -> None:
    (tmp_path / "cam01").mkdir()
    with pytest.raises(InputError, match=r"cam01: no detection frame files"):
        load_camera_detections(tmp_path / "cam01")
    with pytest.raises(InputError, match=r"cam09: detection folder not found"):
        load_camera_detections(tmp_path / "cam09")


# ================================================================= sequence
def assert_captures_equal(a: Capture, b: Capture) -> None:
    assert_cameras_equal(a.cameras, b.cameras)
    assert a.frame_ids == b.frame_ids
    assert a.person_names == b.person_names
    # compare valid detections per view-frame (padding may differ)
    for va, vb in zip(unpack_detections(a.detections), unpack_detections(b.detections)):
        for fa, fb in zip(va, vb):
            assert_dets_equal(fa, fb)
    if a.init_boxes is None:
        assert b.init_boxes is None
    else:
        assert torch.equal(a.init_valid, b.init_valid)
        torch.testing.assert_close(a.init_boxes, b.init_boxes)


@pytest.mark.parametrize("fmt", ["npy", "json"])
def test_sequence_roundtrip(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(9)
    cap = small_capture(rng)
    T = random_similarity(rng)
    F, P = 4, 2
    gt = GroundTruth(
        poses3d=torch.tensor(rng.normal(size=(F, P, 17, 4)), dtype=torch.float32),
        smpl={"betas": torch.randn(P, 10), "transl": torch.randn(F, P, 3)},
    )
    seq = tmp_path / "001_hug"
    write_sequence(seq, cap, gt=gt, scale_transform=T, meta={"seed": 9}, fmt=fmt)
    L = SequenceLayout(seq)
    assert (L.colmap / "scale.npy").is_file() and (L.poses2d / "cam02" / "rgb" / f"00004.{fmt}").is_file()
    assert (L.bboxes / "cam01" / "rgb" / "00001.npy").is_file()
    back = read_sequence(seq)
    assert back.name == "001_hug"
    assert_captures_equal(cap, back)
    gt2 = read_ground_truth(seq)
    assert gt2 is not None
    torch.testing.assert_close(gt2.poses3d, gt.poses3d)
    assert set(gt2.smpl) == {"betas", "transl"}
    torch.testing.assert_close(gt2.smpl["transl"], gt.smpl["transl"])
    meta = read_meta(seq)
    assert meta["seed"] == 9 and meta["frame_ids"] == [1, 2, 3, 4] and meta["cameras"] == ["cam01", "cam02", "cam03"]
    # subsets
    part = read_sequence(seq, cameras=["cam03", "cam01"], frames=slice(1, 3))
    assert part.cameras.names == ["cam03", "cam01"] and part.frame_ids == [2, 3]
    assert_captures_equal(cap.select_views([2, 0]).select_frames(1, 3), part)


def test_sequence_rewrite_removes_stale_frames(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    seq = tmp_path / "s"
    write_sequence(seq, small_capture(rng, F=5))
    cap = small_capture(rng, F=3)
    write_sequence(seq, cap)
    assert read_sequence(seq).frame_ids == [1, 2, 3]


def test_sequence_without_boxes_and_gt(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    cap = small_capture(rng)
    cap.init_boxes = None
    cap.init_valid = None
    seq = tmp_path / "s"
    write_sequence(seq, cap)
    back = read_sequence(seq)
    assert back.init_boxes is None and back.person_names == ["aria01", "aria02"]
    assert read_ground_truth(seq) is None
    assert not (seq / "ground_truth").exists()


def test_sequence_missing_frame_file_is_a_warning(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    cap = small_capture(rng)
    seq = tmp_path / "s"
    write_sequence(seq, cap)
    (seq / "processed_data/poses2d/cam02/rgb/00003.npy").unlink()
    rep = LoadReport()
    back = read_sequence(seq, report=rep)
    assert back.frame_ids == [1, 2, 3, 4]
    assert not back.detections.valid[2, 1].any()
    assert rep.missing == [("cam02", 3)]
    assert len(rep.warnings) == 1 and "00003" in rep.warnings[0] and "cam02" in rep.warnings[0]


def test_sequence_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    with pytest.raises(InputError, match=r"nope: sequence folder not found"):
        read_sequence(tmp_path / "nope")
    seq = tmp_path / "s"
    write_sequence(seq, small_capture(rng))
    L = SequenceLayout(seq)

    # camera count differing from detection folders: both lists named
    (L.poses2d / "cam07" / "rgb").mkdir(parents=True)
    with pytest.raises(InputError, match=r"camera count differing from detection folders.*cam01, cam02, cam03\].*cam01, cam02, cam03, cam07\]"):
        read_sequence(seq)
    # the same folder, selected explicitly, is empty
    with pytest.raises(InputError, match=r"colmap model|not in the COLMAP"):
        read_sequence(seq, cameras=["cam01", "cam07"])
    (L.poses2d / "cam07" / "rgb").rmdir()
    (L.poses2d / "cam07").rmdir()

    # empty detection folder
    for f in (L.poses2d / "cam02" / "rgb").iterdir():
        f.unlink()
    with pytest.raises(InputError, match=r"cam02/rgb: no detection frame files"):
        read_sequence(seq)

    # a malformed frame file names itself
    seq2 = tmp_path / "s2"
    write_sequence(seq2, small_capture(rng))
    (seq2 / "processed_data/poses2d/cam03/rgb/00002.npy").write_bytes(b"\x93NUMPY\x01\x00trunc")
    with pytest.raises(InputError, match=r"cam03/rgb/00002\.npy"):
        read_sequence(seq2)

    # bbox file of the wrong type
    seq3 = tmp_path / "s3"
    write_sequence(seq3, small_capture(rng))
    np.save(seq3 / "processed_data/bboxes/cam01/rgb/00001.npy", np.zeros(4))
    with pytest.raises(InputError, match=r"bboxes/cam01/rgb/00001\.npy: expected a dict"):
        read_sequence(seq3)

    # colmap missing
    (seq3 / "colmap/workplace/cameras.txt").unlink()
    with pytest.raises(InputError, match=r"workplace/cameras\.txt: COLMAP file missing"):
        read_sequence(seq3)

    # no poses2d at all
    seq4 = tmp_path / "s4"
    write_colmap(seq4 / "colmap/workplace", small_capture(rng).cameras)
    with pytest.raises(InputError, match=r"processed_data/poses2d: detection folder missing"):
        read_sequence(seq4)


def test_poses3d_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(14)
    poses = rng.normal(size=(5, 2, 17, 4)).astype(np.float32)
    poses[..., 3] = rng.integers(0, 2, size=(5, 2, 17))
    fids = [3, 4, 5, 6, 8]
    write_poses3d(tmp_path, torch.from_numpy(poses), fids, ["aria01", "aria02"])
    raw = np.load(tmp_path / "00003.npy", allow_pickle=True).item()
    assert set(raw) == {"aria01", "aria02"} and raw["aria02"].shape == (17, 4)
    back, ids = read_poses3d(tmp_path)
    assert ids == fids and back.dtype == np.float32
    np.testing.assert_array_equal(back, poses)
    only2, _ = read_poses3d(tmp_path, ["aria02", "ghost"])
    np.testing.assert_array_equal(only2[:, 0], poses[:, 1])
    assert not only2[:, 1].any()
    np.save(tmp_path / "00009.npy", np.asarray({"aria01": np.zeros((16, 4))}, dtype=object))
    with pytest.raises(InputError, match=r"00009\.npy \['aria01'\]: expected shape \(17, 4\)"):
        read_poses3d(tmp_path)
    with pytest.raises(InputError, match="poses3d folder not found"):
        read_poses3d(tmp_path / "none")


def test_sequence_with_whole_camera_json(tmp_path: Path) -> None:
    """``poses2d/camXX.json`` (one COCO results file) stands in for a per-frame folder."""
    rng = np.random.default_rng(16)
    cap = small_capture(rng)
    seq = tmp_path / "s"
    write_sequence(seq, cap)
    L = SequenceLayout(seq)
    per_camera = unpack_detections(cap.detections)
    results = []
    for f, dets in enumerate(per_camera[1]):
        for k, b in dets:
            results.append({"image_id": f + 1, "keypoints": k.reshape(-1).astype(float).tolist(),
                            "bbox": [float(b[0]), float(b[1]), float(b[2]) - float(b[0]), float(b[3]) - float(b[1])], "score": float(b[4])})
    for p in (L.poses2d / "cam02" / "rgb").iterdir():
        p.unlink()
    (L.poses2d / "cam02" / "rgb").rmdir()
    (L.poses2d / "cam02").rmdir()
    (L.poses2d / "cam02.json").write_text(json.dumps(results))
    rep = LoadReport()
    back = read_sequence(seq, report=rep)
    assert rep.missing == [] and back.frame_ids == [1, 2, 3, 4]
    assert_captures_equal(cap, back)
