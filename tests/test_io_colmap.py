"""COLMAP text models: round trips (with a similarity transform), quaternions, the scale, a
handwritten model, camera tokens and the errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from h4d_fast.errors import InputError
from h4d_fast.io.colmap import camera_token, qvec_to_rotmat, read_colmap, rotmat_to_qvec, write_colmap
from helpers import assert_cameras_equal, named_ring_cameras, random_rotation, random_similarity


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
    cams = named_ring_cameras(names, models, dists)
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
    cams = named_ring_cameras(["cam01", "cam02"], "fisheye", [[0.01, 0.0, 0.0, 0.0]] * 2)
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
    cams = named_ring_cameras(["left", "right"], "pinhole")
    with pytest.raises(ValueError, match="camNN"):
        write_colmap(tmp_path, cams)
