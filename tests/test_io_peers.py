"""Readers and writers of the peers' formats: OpenPose / MediaPipe keypoints, calibrations (TOML,
Qualisys, EasyMocap, OpenCV, COLMAP), TRC and Anipose CSV."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from h4d_fast.camera import look_at, make_cameras
from h4d_fast.constants import COCO17_NAMES
from h4d_fast.errors import InputError
from h4d_fast.io.anipose_csv import read_anipose_csv, write_anipose_csv
from h4d_fast.io.calibration import (
    detect_calibration,
    find_calibrations,
    read_calibration,
    read_calibration_info,
    rodrigues,
    rotation_to_rodrigues,
    write_toml_calibration,
)
from h4d_fast.io.colmap import write_colmap
from h4d_fast.io.mediapipe import (
    MEDIAPIPE33_NAMES,
    MEDIAPIPE33_TO_COCO17,
    mediapipe_array_to_detections,
    mediapipe_to_coco17,
    read_mediapipe_npz,
)
from h4d_fast.io.openpose import (
    LAYOUT_NAMES,
    TO_COCO17,
    guess_layout,
    read_openpose_cameras,
    read_openpose_folder,
    read_openpose_frame,
    to_coco17,
)
from h4d_fast.io.trc import POSE2SIM_AXES, axes_matrix, read_trc, trc_to_coco17, write_trc
from helpers import ring_cameras

DEMO = Path("/work/shared/data/pose2sim_demo")

# --------------------------------------------------------------- the public format definitions
# OpenPose doc/02_output.md / poseParameters.cpp, typed here independently of the module.
BODY_25 = "Nose Neck RShoulder RElbow RWrist LShoulder LElbow LWrist MidHip RHip RKnee RAnkle LHip LKnee LAnkle REye LEye REar LEar LBigToe LSmallToe LHeel RBigToe RSmallToe RHeel".split()
BODY_25B = "Nose LEye REye LEar REar LShoulder RShoulder LElbow RElbow LWrist RWrist LHip RHip LKnee RKnee LAnkle RAnkle UpperNeck HeadTop LBigToe LSmallToe LHeel RBigToe RSmallToe RHeel".split()
COCO_18 = "Nose Neck RShoulder RElbow RWrist LShoulder LElbow LWrist RHip RKnee RAnkle LHip LKnee LAnkle REye LEye REar LEar".split()
# MediaPipe Pose Landmarker landmark list
MEDIAPIPE = (
    "nose left_eye_inner left_eye left_eye_outer right_eye_inner right_eye right_eye_outer left_ear right_ear "
    "mouth_left mouth_right left_shoulder right_shoulder left_elbow right_elbow left_wrist right_wrist left_pinky "
    "right_pinky left_index right_index left_thumb right_thumb left_hip right_hip left_knee right_knee left_ankle "
    "right_ankle left_heel right_heel left_foot_index right_foot_index"
).split()


def _openpose_name(coco: str) -> str:
    """``left_eye`` -> ``LEye``, ``nose`` -> ``Nose``."""
    side, _, part = coco.partition("_")
    return side[0].upper() + part.capitalize() if part else coco.capitalize()


@pytest.mark.parametrize("layout,names", [("BODY_25", BODY_25), ("BODY_25B", BODY_25B), ("COCO_18", COCO_18)])
def test_openpose_tables_joint_by_joint(layout, names):
    assert list(LAYOUT_NAMES[layout]) == names
    table = TO_COCO17[layout]
    assert len(table) == 17 and len(set(table)) == 17
    for i, coco in enumerate(COCO17_NAMES):
        assert names[table[i]] == _openpose_name(coco), (layout, coco)


def test_mediapipe_table_joint_by_joint():
    assert list(MEDIAPIPE33_NAMES) == MEDIAPIPE
    for i, coco in enumerate(COCO17_NAMES):
        assert MEDIAPIPE[MEDIAPIPE33_TO_COCO17[i]] == coco
    assert MEDIAPIPE33_TO_COCO17 == (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)


# ------------------------------------------------------------------ a synthetic person
def coco_template(center=(0.0, 0.0), height=1.7) -> np.ndarray:
    """``[17, 3]`` a standing person (z up, facing -y), COCO-17 order, metres."""
    s = height / 1.7
    L, R = 1.0, -1.0  # subject's left is +x when facing -y
    pts = {
        "nose": (0, -0.10, 1.62), "left_eye": (0.03 * L, -0.08, 1.66), "right_eye": (0.03 * R, -0.08, 1.66),
        "left_ear": (0.08 * L, 0.0, 1.64), "right_ear": (0.08 * R, 0.0, 1.64),
        "left_shoulder": (0.19 * L, 0, 1.42), "right_shoulder": (0.19 * R, 0, 1.42),
        "left_elbow": (0.24 * L, -0.05, 1.12), "right_elbow": (0.24 * R, -0.05, 1.12),
        "left_wrist": (0.26 * L, -0.15, 0.88), "right_wrist": (0.26 * R, -0.15, 0.88),
        "left_hip": (0.11 * L, 0, 0.95), "right_hip": (0.11 * R, 0, 0.95),
        "left_knee": (0.12 * L, -0.03, 0.52), "right_knee": (0.12 * R, -0.03, 0.52),
        "left_ankle": (0.12 * L, 0.02, 0.09), "right_ankle": (0.12 * R, 0.02, 0.09),
    }
    X = np.array([pts[n] for n in COCO17_NAMES], dtype=np.float64) * s
    X[:, 0] += center[0]
    X[:, 1] += center[1]
    return X


def encode_layout(coco: np.ndarray, layout: str) -> np.ndarray:
    """COCO-17 ``[..., 17, D]`` -> the layout's keypoints (extra points synthesised near their neighbours)."""
    names = LAYOUT_NAMES[layout]
    idx = {n: i for i, n in enumerate(COCO17_NAMES)}
    by = {_openpose_name(n): coco[..., i, :] for n, i in idx.items()}
    mid = lambda a, b: 0.5 * (by[a] + by[b])  # noqa: E731
    extra = {
        "Neck": mid("LShoulder", "RShoulder"), "UpperNeck": mid("LShoulder", "RShoulder") * 0.7 + by["Nose"] * 0.3,
        "MidHip": mid("LHip", "RHip"), "HeadTop": by["Nose"] + (by["Nose"] - mid("LShoulder", "RShoulder")) * 0.6,
        "LBigToe": by["LAnkle"] * 0.97, "LSmallToe": by["LAnkle"] * 0.98, "LHeel": by["LAnkle"] * 0.99,
        "RBigToe": by["RAnkle"] * 0.97, "RSmallToe": by["RAnkle"] * 0.98, "RHeel": by["RAnkle"] * 0.99,
    }
    return np.stack([by.get(n, extra.get(n)) for n in names], -2)


def portrait_cameras(V=3):
    C = torch.tensor([[4.0 * math.cos(a), 4.0 * math.sin(a), 1.4] for a in np.linspace(-2.2, -0.9, V)], dtype=torch.float64)
    R, t = look_at(C, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(V, 3))
    intr = [[1500.0 + 10 * v, 1520.0 + 10 * v, 540.0, 960.0] for v in range(V)]
    dist = [[0.01, -0.02, 0.001, 0.0005, 0.003, 0.001, -0.002, 0.0005]] + [[-0.02, 0.01, 0.0, 0.0, 0.0]] * (V - 1)
    return make_cameras([f"cam_{v + 1:02d}" for v in range(V)], "opencv", intr, R, t, [[1080, 1920]] * V, dist=dist)


def write_openpose(path: Path, people: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": k.reshape(-1).tolist()} for k in people]}))


# ------------------------------------------------------------------------------- OpenPose
def test_openpose_frame_body25_maps_joint_by_joint(tmp_path):
    k = np.zeros((25, 3))
    k[:, 0] = 100 + 10 * np.arange(25)
    k[:, 1] = 500 + np.arange(25)
    k[:, 2] = 0.5 + 0.01 * np.arange(25)
    k[17] = 0.0  # REar missing
    p = tmp_path / "cam01.0003.json"
    write_openpose(p, [k])
    (det,) = read_openpose_frame(p, "BODY_25")
    kp, box = det
    assert kp.shape == (17, 3) and kp.dtype == np.float32
    for i, coco in enumerate(COCO17_NAMES):
        src = BODY_25.index(_openpose_name(coco))
        np.testing.assert_allclose(kp[i], k[src], rtol=1e-6)
    assert kp[COCO17_NAMES.index("right_ear"), 2] == 0.0
    ok = k[:, 2] > 0.2
    np.testing.assert_allclose(box[:4], [k[ok, 0].min(), k[ok, 1].min(), k[ok, 0].max(), k[ok, 1].max()], rtol=1e-6)
    np.testing.assert_allclose(box[4], kp[:, 2].mean(), rtol=1e-6)


def test_openpose_coco18_and_empty_people(tmp_path):
    k = np.column_stack([np.arange(18) * 3.0 + 1, np.arange(18) * 2.0 + 1, np.full(18, 0.9)])
    write_openpose(tmp_path / "a_000.json", [k, np.zeros((18, 3))])  # the all-zero person is dropped
    dets = read_openpose_frame(tmp_path / "a_000.json")
    assert len(dets) == 1
    for i, coco in enumerate(COCO17_NAMES):
        np.testing.assert_allclose(dets[0][0][i], k[COCO_18.index(_openpose_name(coco))])
    write_openpose(tmp_path / "b_000.json", [])
    assert read_openpose_frame(tmp_path / "b_000.json") == []


def test_openpose_layout_guess_body25_vs_body25b():
    cams = portrait_cameras(2)
    X = coco_template()
    uv = cams.project(torch.as_tensor(X))[0].numpy()  # [17, V, 2]
    for layout in ("BODY_25", "BODY_25B"):
        people = []
        for v in range(2):
            k = encode_layout(np.concatenate([uv[:, v], np.full((17, 1), 0.8)], -1), layout)
            people.append(k)
        assert guess_layout(people, 25)[0] == layout
    assert guess_layout([], 25)[0] == "BODY_25"  # nothing to tell: OpenPose's default
    assert guess_layout([np.zeros((18, 3))], 18)[0] == "COCO_18"


def test_openpose_folder_frame_numbers_and_errors(tmp_path):
    k = np.column_stack([np.linspace(10, 400, 25), np.linspace(20, 900, 25), np.full(25, 0.7)])
    for n in (10, 0, 2):
        write_openpose(tmp_path / "cam01_json" / f"cam01.{n:04d}.json", [k])
    cam = read_openpose_folder(tmp_path / "cam01_json")
    assert list(cam.files) == [0, 2, 10] and cam.count == 25
    # malformed files name the file
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.0000.json").write_text("{not json")
    with pytest.raises(InputError, match=r"x\.0000\.json.*malformed JSON"):
        read_openpose_folder(bad)
    (bad / "x.0000.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": [1.0] * 60}]}))
    with pytest.raises(InputError, match=r"x\.0000\.json.*wrong keypoint count 20"):
        read_openpose_folder(bad)
    (bad / "x.0000.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": [1.0] * 74 + ["a"]}]}))
    with pytest.raises(InputError, match=r"x\.0000\.json.*not all numbers"):
        read_openpose_folder(bad)
    (bad / "x.0000.json").write_text(json.dumps({"persons": []}))
    with pytest.raises(InputError, match=r"x\.0000\.json.*OpenPose"):
        read_openpose_folder(bad)
    (bad / "x.0000.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": [1.0] * 75}, {"pose_keypoints_2d": [1.0] * 54}]}))
    with pytest.raises(InputError, match="different keypoint counts"):
        read_openpose_folder(bad)
    # cameras with different layouts
    write_openpose(tmp_path / "cam02_json" / "cam02.0000.json", [np.ones((18, 3))])
    with pytest.raises(InputError, match="different keypoint counts"):
        read_openpose_cameras([tmp_path / "cam01_json", tmp_path / "cam02_json"])
    with pytest.raises(InputError, match="has 18 keypoints"):
        read_openpose_cameras([tmp_path / "cam01_json"], layout="COCO_18")


@pytest.mark.skipif(not (DEMO / "single_person").is_dir(), reason="Pose2Sim demo data absent")
def test_openpose_real_body25b_and_reencoded_body25():
    folders = sorted((DEMO / "single_person" / "pose_openpose_body25b").glob("cam0*_json"))
    cams, layout, _ = read_openpose_cameras(folders)
    assert layout == "BODY_25B" and [len(c.files) for c in cams] == [100] * 4
    raw = [k for c in cams for f in sorted(c.people) for k in c.people[f]][:200]
    # the same people written in BODY_25 order must be recognised as BODY_25
    re25 = [encode_layout(to_coco17(k, "BODY_25B").astype(np.float64), "BODY_25") for k in raw]
    assert guess_layout(re25, 25)[0] == "BODY_25"


# ------------------------------------------------------------------------------ MediaPipe
def test_mediapipe_array_to_detections():
    F, S = 3, 2
    a = np.full((F, S, 33, 3), np.nan, np.float32)
    base = np.column_stack([np.arange(33) * 5.0 + 100, np.arange(33) * 7.0 + 200, np.linspace(0.5, 0.99, 33)])
    a[0, 0] = base
    a[1, 0] = base
    a[1, 1] = base + [300, 0, 0]
    a[1, 1, 27] = np.nan  # a NaN landmark in a filled slot: COCO left ankle gets conf 0
    dets, gaps = mediapipe_array_to_detections(a)
    assert [len(d) for d in dets] == [1, 2, 0] and gaps == 1
    k = dets[0][0][0]
    for i, coco in enumerate(COCO17_NAMES):
        np.testing.assert_allclose(k[i], base[MEDIAPIPE.index(coco)], rtol=1e-6)
    assert dets[1][1][0][COCO17_NAMES.index("left_ankle")].tolist() == [0, 0, 0]
    np.testing.assert_allclose(mediapipe_to_coco17(base), k)
    # [F, 33, 4] (x, y, z, visibility), normalised coordinates scaled by the image size
    b = np.zeros((2, 33, 4))
    b[..., 0], b[..., 1], b[..., 2], b[..., 3] = 0.5, 0.25, -0.3, 0.9
    dets, _ = mediapipe_array_to_detections(b, image_size=(1080, 1920))
    np.testing.assert_allclose(dets[0][0][0][0], [540, 480, 0.9], rtol=1e-6)
    with pytest.raises(InputError, match="normalised"):
        mediapipe_array_to_detections(b)


def test_mediapipe_npz_and_errors(tmp_path):
    a = np.full((4, 2, 33, 3), np.nan)
    a[:, 0] = np.column_stack([np.arange(33) + 100.0, np.arange(33) + 300.0, np.full(33, 0.9)])
    p = tmp_path / "mp.npz"
    np.savez(p, cam02=a, cam01=a[:3], fps=np.array(60.0))
    cap = read_mediapipe_npz(p)
    assert cap.cameras == ["cam02", "cam01"] and [len(f) for f in cap.frames] == [4, 3] and cap.skipped == ["fps"]
    np.savez(tmp_path / "bad.npz", cam01=np.zeros((4, 2, 30, 3)))
    with pytest.raises(InputError, match=r"bad\.npz.*cam01.*33"):
        read_mediapipe_npz(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"junk\.npz.*not a readable"):
        read_mediapipe_npz(tmp_path / "junk.npz")


@pytest.mark.skipif(not (DEMO / "multi_person").is_dir(), reason="Pose2Sim demo data absent")
def test_mediapipe_real_npz():
    cap = read_mediapipe_npz(DEMO / "multi_person" / "mediapipe33_2d_generated.npz")
    assert cap.cameras == ["cam01", "cam02", "cam03", "cam04"] and cap.slots == [3] * 4 and not cap.normalized
    assert all(len(f) == 100 for f in cap.frames)
    assert max(len(d) for f in cap.frames for d in f) == 3


# ---------------------------------------------------------------------------- calibration
def _assert_same_cameras(a, b, tol=1e-9):
    assert list(a.names) == list(b.names) and list(a.model) == list(b.model)
    for k in ("intrinsics", "dist", "R", "t"):
        np.testing.assert_allclose(getattr(a, k).double().numpy(), getattr(b, k).double().numpy(), atol=tol, err_msg=k)
    assert a.size.tolist() == b.size.tolist()


def test_rodrigues_round_trip():
    rng = np.random.default_rng(0)
    for r in list(rng.normal(size=(20, 3))) + [np.array([math.pi - 1e-9, 0, 0]), np.zeros(3)]:
        R = rodrigues(r)
        np.testing.assert_allclose(R, cv2.Rodrigues(np.asarray(r, dtype=np.float64))[0], atol=1e-12)
        np.testing.assert_allclose(rodrigues(rotation_to_rodrigues(R)), R, atol=1e-9)


def test_toml_round_trip_passes_lenses_through(tmp_path):
    cams = portrait_cameras(3)
    fish = ring_cameras(1, model="fisheye")
    cams = make_cameras(
        list(cams.names) + ["cam_04"], list(cams.model) + ["fisheye"], torch.cat([cams.intrinsics, fish.intrinsics]),
        torch.cat([cams.R, fish.R]), torch.cat([cams.t, fish.t]), torch.cat([cams.size, fish.size]), dist=torch.cat([cams.dist, fish.dist]),
    )
    p = tmp_path / "Calib.toml"
    write_toml_calibration(p, cams)
    info = read_calibration_info(p)
    assert info.format == "pose2sim_toml" and info.units == "m" and not info.warnings
    _assert_same_cameras(info.cameras, cams, 1e-12)
    assert info.cameras.size[0].tolist() == [1080, 1920]  # portrait kept
    assert info.cameras.intrinsics[0, 0] != info.cameras.intrinsics[0, 1]  # fx != fy kept


def test_toml_anipose_units_and_errors(tmp_path):
    R = rodrigues([0.1, -0.2, 0.3])
    body = (
        '[cam_0]\nname = "A"\nsize = [1920, 1080]\nmatrix = [[1000.0, 0.0, 960.0], [0.0, 1001.0, 540.0], [0.0, 0.0, 1.0]]\n'
        "distortions = [-0.1, 0.05, 0.001, 0.002, -0.01]\nrotation = [0.1, -0.2, 0.3]\ntranslation = [100.0, -200.0, 3000.0]\n\n"
        '[cam_1]\nname = "B"\nsize = [1920, 1080]\nmatrix = [[1000.0, 0.0, 960.0], [0.0, 1000.0, 540.0], [0.0, 0.0, 1.0]]\n'
        "distortions = [0.0, 0.0, 0.0, 0.0, 0.0]\nrotation = [0.0, 0.0, 0.0]\ntranslation = [-400.0, 0.0, 2500.0]\n\n"
        "[metadata]\nadjusted = false\nerror = 0.5\n"
    )
    p = tmp_path / "calibration.toml"
    p.write_text(body)
    info = read_calibration_info(p)
    assert info.format == "anipose_toml" and info.units == "mm" and any("millimetres" in w for w in info.warnings)
    c = info.cameras
    assert c.names == ["A", "B"] and c.model == ["opencv", "pinhole"]
    np.testing.assert_allclose(c.R[0].numpy(), R, atol=1e-15)
    np.testing.assert_allclose(c.t[0].numpy(), [0.1, -0.2, 3.0])
    np.testing.assert_allclose(c.dist[0].numpy(), [-0.1, 0.05, 0.001, 0.002, -0.01, 0, 0, 0])
    np.testing.assert_allclose(read_calibration(p, units="m").t[0].numpy(), [100.0, -200.0, 3000.0])
    # malformed: each names the file and the key
    cases = [
        (body.replace("rotation = [0.1, -0.2, 0.3]\n", ""), r"\[cam_0\]\.rotation"),
        (body.replace("[[1000.0, 0.0, 960.0], [0.0, 1001.0", '[["a", 0.0, 960.0], [0.0, 1001.0'), r"\[cam_0\]\.matrix.*numbers"),
        (body.replace("[-0.1, 0.05, 0.001, 0.002, -0.01]", "[1, 2, 3, 4, 5, 6]"), r"\[cam_0\]\.distortions.*got 6"),
        (body.replace("[100.0, -200.0, 3000.0]", "[100.0, -200.0]"), r"\[cam_0\]\.translation"),
        (body.replace("[cam_0]", "[cam_0"), "malformed TOML"),
        ("[metadata]\nerror = 0.0\n", "no camera table"),
    ]
    for text, pattern in cases:
        p.write_text(text)
        with pytest.raises(InputError, match=r"calibration\.toml.*" + pattern):
            read_calibration(p)


QCA = """<?xml version='1.0' encoding='ASCII'?>
<calibration source="x" type="regular">
  <cameras>
{cams}
  </cameras>
</calibration>"""
QCA_CAM = """    <camera active="1" model="none" serial="{serial}" viewrotation="0">
      <fov_video bottom="1919" left="0" right="1087" top="0"/>
      <transform r11="{r[0]}" r12="{r[1]}" r13="{r[2]}" r21="{r[3]}" r22="{r[4]}" r23="{r[5]}" r31="{r[6]}" r32="{r[7]}" r33="{r[8]}" x="{c[0]}" y="{c[1]}" z="{c[2]}"/>
      <intrinsic centerPointU="34110.3" centerPointV="60680.7" focalLengthU="107599.6" focalLengthV="107588.8" radialDistortion1="-0.046" radialDistortion2="0.14" radialDistortion3="0.0" tangentalDistortion1="0.0006" tangentalDistortion2="0.0007" skew="0.0"/>
    </camera>"""


def test_qca_hand_made(tmp_path):
    M = rodrigues([0.3, 1.0, -0.5])
    C = np.array([1460.0, -1909.0, 1896.0])
    text = QCA.format(cams="\n".join(QCA_CAM.format(serial=s, r=M.reshape(-1).tolist(), c=C.tolist()) for s in ("cam01", "cam02")))
    p = tmp_path / "Calib.qca.txt"
    p.write_text(text)
    assert detect_calibration(p)[0] == "qca"
    info = read_calibration_info(p)
    c = info.cameras
    assert info.format == "qca" and c.names == ["cam01", "cam02"] and c.size[0].tolist() == [1088, 1920]
    R = np.diag([1.0, -1.0, -1.0]) @ M
    np.testing.assert_allclose(c.R[0].numpy(), R, atol=1e-15)
    np.testing.assert_allclose(c.t[0].numpy(), -R @ C / 1000, atol=1e-15)
    np.testing.assert_allclose(c.intrinsics[0].numpy(), np.array([107599.6, 107588.8, 34110.3, 60680.7]) / 64)
    np.testing.assert_allclose(c.dist[0, :5].numpy(), [-0.046, 0.14, 0.0006, 0.0007, 0.0])
    np.testing.assert_allclose(read_calibration(p, qca_distortion_scale=1 / 64).dist[0, :5].numpy(), np.array([-0.046, 0.14, 0.0006, 0.0007, 0.0]) / 64)
    # the camera centre is C in metres
    np.testing.assert_allclose(c.centers[0].numpy(), C / 1000, atol=1e-12)
    p.write_text(text.replace('focalLengthU="107599.6" ', "", 1))
    with pytest.raises(InputError, match=r"Calib\.qca\.txt \[camera cam01\].*focalLengthU"):
        read_calibration(p)
    p.write_text(text.replace('x="1460.0"', 'x="abc"', 1))
    with pytest.raises(InputError, match=r"Calib\.qca\.txt.*expected a number, got 'abc'"):
        read_calibration(p)
    p.write_text(text[:-30])
    with pytest.raises(InputError, match=r"Calib\.qca\.txt.*malformed XML"):
        read_calibration(p)


@pytest.mark.skipif(not (DEMO / "calibration").is_dir(), reason="Pose2Sim demo data absent")
def test_qca_matches_pose2sim_toml():
    toml = read_calibration(DEMO / "calibration" / "Calib_qualisys.toml")
    qca = read_calibration(DEMO / "calibration" / "Calib.qca.txt")
    assert [n.replace("_", "") for n in toml.names] == qca.names
    np.testing.assert_allclose(qca.R.numpy(), toml.R.numpy(), atol=1e-6)
    np.testing.assert_allclose(qca.t.numpy(), toml.t.numpy(), atol=1e-6)
    np.testing.assert_allclose(qca.intrinsics.numpy(), toml.intrinsics.numpy(), rtol=1e-12)
    assert qca.size.tolist() == toml.size.tolist() == [[1088, 1920]] * 4
    # Pose2Sim divides the distortion by 64 as well (README): dist differs by exactly that factor
    np.testing.assert_allclose(qca.dist.numpy() / 64, toml.dist.numpy(), rtol=1e-9, atol=1e-15)
    # reprojection of points spread over the capture volume
    g = torch.stack(torch.meshgrid(torch.linspace(-1.5, 0.5, 5), torch.linspace(-1, 1, 5), torch.linspace(0.1, 1.9, 5), indexing="ij"), -1).reshape(-1, 3).double()
    uv_t, z = toml.project(g)
    qca64 = read_calibration(DEMO / "calibration" / "Calib.qca.txt", qca_distortion_scale=1 / 64)
    assert (z > 0).all()
    assert (qca64.project(g)[0] - uv_t).norm(dim=-1).max() < 0.01
    # with the coefficients as written the lens differs a little: about 1 px (median), 4 px at most
    # over the points of the volume that fall inside the images
    inside = (uv_t[..., 0] >= 0) & (uv_t[..., 0] < 1088) & (uv_t[..., 1] >= 0) & (uv_t[..., 1] < 1920)
    d = (qca.project(g)[0] - uv_t).norm(dim=-1)[inside]
    assert inside.float().mean() > 0.7 and d.max() < 5.0 and d.median() > 0.1


def _write_fs(path: Path, entries: dict) -> None:
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    for k, v in entries.items():
        if isinstance(v, list) and v and isinstance(v[0], str):
            fs.startWriteStruct(k, cv2.FileNode_SEQ)
            for s in v:
                fs.write("", s)
            fs.endWriteStruct()
        else:
            fs.write(k, v)
    fs.release()


def test_easymocap_and_opencv_layouts(tmp_path):
    cams = portrait_cameras(3)
    K = cams.K.numpy()
    Rm, t = cams.R.numpy(), cams.t.numpy()
    d5 = cams.dist[:, :5].numpy()
    names = ["01", "02", "03"]
    _write_fs(tmp_path / "intri.yml", {"names": names, **{f"K_{n}": K[i] for i, n in enumerate(names)}, **{f"dist_{n}": d5[i][None] for i, n in enumerate(names)},
                                        **{f"H_{n}": 1920 for n in names}, **{f"W_{n}": 1080 for n in names}})
    ext = {"names": names}
    for i, n in enumerate(names):
        ext[f"R_{n}"] = cv2.Rodrigues(Rm[i])[0]
        ext[f"Rot_{n}"] = Rm[i]
        ext[f"T_{n}"] = t[i][:, None]
    _write_fs(tmp_path / "extri.yml", ext)
    for target in (tmp_path, tmp_path / "intri.yml", tmp_path / "extri.yml"):
        info = read_calibration_info(target)
        assert info.format == "easymocap" and info.cameras.names == names and not info.warnings
        np.testing.assert_allclose(info.cameras.R.numpy(), Rm, atol=1e-12)
        np.testing.assert_allclose(info.cameras.t.numpy(), t, atol=1e-12)
        np.testing.assert_allclose(info.cameras.intrinsics.numpy(), cams.intrinsics.numpy())
        np.testing.assert_allclose(info.cameras.dist[:, :5].numpy(), d5)
        assert info.cameras.size.tolist() == [[1080, 1920]] * 3
    # only the Rodrigues R_<cam>, no sizes
    ext2 = {k: v for k, v in ext.items() if not k.startswith("Rot_")}
    _write_fs(tmp_path / "extri.yml", ext2)
    _write_fs(tmp_path / "intri.yml", {"names": names, **{f"K_{n}": K[i] for i, n in enumerate(names)}})
    info = read_calibration_info(tmp_path)
    np.testing.assert_allclose(info.cameras.R.numpy(), Rm, atol=1e-9)
    assert info.cameras.size.tolist() == [[1080, 1920]] * 3 and any("no image size" in w for w in info.warnings)
    # a missing key names extri.yml and the key
    del ext2["T_02"]
    _write_fs(tmp_path / "extri.yml", ext2)
    with pytest.raises(InputError, match=r"extri\.yml \[T_02\]"):
        read_calibration(tmp_path)
    # non-numeric matrix
    (tmp_path / "intri.yml").write_text("%YAML:1.0\n---\nnames:\n  - \"01\"\nK_01: [1, a, 0, 0, 1, 0, 0, 0, 1]\n")
    with pytest.raises(InputError, match=r"intri\.yml \[K_01\].*numbers"):
        read_calibration(tmp_path)

    # (c) one camera per file, in a folder
    folder = tmp_path / "percam"
    folder.mkdir()
    for i in range(3):
        _write_fs(folder / f"cam{i + 1}.yml", {"camera_matrix": K[i], "distortion_coefficients": cams.dist[i].numpy()[None], "rvec": cv2.Rodrigues(Rm[i])[0],
                                               "tvec": t[i][:, None] * 1000, "image_width": 1080, "image_height": 1920})
    info = read_calibration_info(folder)
    assert info.format == "opencv" and info.cameras.names == ["cam1", "cam2", "cam3"] and info.units == "mm"
    _assert_same_cameras(info.cameras, make_cameras(["cam1", "cam2", "cam3"], cams.model, cams.intrinsics, cams.R, cams.t, cams.size, dist=cams.dist))
    # (b) one map per camera, xml
    fs = cv2.FileStorage(str(tmp_path / "rig.xml"), cv2.FILE_STORAGE_WRITE)
    for i in range(2):
        fs.startWriteStruct(f"cam{i + 1:02d}", cv2.FileNode_MAP)
        fs.write("K", K[i])
        fs.write("D", cams.dist[i, :4].numpy()[None])
        fs.write("distortion_model", "fisheye")
        fs.write("R", Rm[i])
        fs.write("T", t[i][:, None])
        fs.write("image_size", np.array([[1080.0, 1920.0]]))
        fs.endWriteStruct()
    fs.release()
    info = read_calibration_info(tmp_path / "rig.xml")
    assert info.cameras.names == ["cam01", "cam02"] and info.cameras.model == ["fisheye", "fisheye"]
    np.testing.assert_allclose(info.cameras.dist[:, :4].numpy(), cams.dist[:2, :4].numpy())
    # (d) OpenCV stereo: camera 1 is the world
    _write_fs(tmp_path / "stereo.yml", {"M1": K[0], "D1": d5[0][None], "M2": K[1], "D2": d5[1][None], "R": Rm[1] @ Rm[0].T, "T": (t[1] - Rm[1] @ Rm[0].T @ t[0])[:, None]})
    c = read_calibration(tmp_path / "stereo.yml", units="m")
    np.testing.assert_allclose(c.R[0].numpy(), np.eye(3))
    np.testing.assert_allclose(c.R[1].numpy(), Rm[1] @ Rm[0].T, atol=1e-12)
    (tmp_path / "nothing.yml").write_text("%YAML:1.0\n---\nfoo: 1\n")
    with pytest.raises(InputError, match=r"nothing\.yml.*no camera found"):
        read_calibration(tmp_path / "nothing.yml")


def test_colmap_dispatch_and_discovery(tmp_path):
    cams = ring_cameras(3, model="opencv")
    write_colmap(tmp_path / "colmap", cams)
    _assert_same_cameras(read_calibration(tmp_path / "colmap"), cams, 1e-9)
    _assert_same_cameras(read_calibration(tmp_path / "colmap" / "cameras.txt"), cams, 1e-9)
    write_toml_calibration(tmp_path / "calibration" / "Calib.toml", cams)
    (tmp_path / "Config.toml").write_text("[project]\nframe_rate = 60\n")  # not a calibration
    found = find_calibrations(tmp_path)
    assert [f for f, _ in found] == ["toml", "colmap"] and found[0][1].name == "Calib.toml"
    (tmp_path / "notes.cfg").write_text("x")
    with pytest.raises(InputError, match=r"notes\.cfg.*unknown calibration format"):
        read_calibration(tmp_path / "notes.cfg")
    with pytest.raises(InputError, match="not found"):
        read_calibration(tmp_path / "missing.toml")


# ----------------------------------------------------------------------------- TRC / CSV
def test_axes_matrix():
    np.testing.assert_array_equal(axes_matrix("xyz"), np.eye(3))
    np.testing.assert_array_equal(axes_matrix(POSE2SIM_AXES) @ [1.0, 2.0, 3.0], [2.0, 3.0, 1.0])
    np.testing.assert_array_equal(axes_matrix("x-zy") @ [1.0, 2.0, 3.0], [1.0, -3.0, 2.0])
    for bad in ("xxy", "xy", "abc", "x-y-"):
        with pytest.raises(ValueError):
            axes_matrix(bad)


@pytest.mark.parametrize("units,axes", [("m", "xyz"), ("mm", POSE2SIM_AXES), ("m", "x-zy")])
def test_trc_round_trip(tmp_path, units, axes):
    rng = np.random.default_rng(1)
    P = np.concatenate([rng.normal(size=(6, 17, 3)), np.ones((6, 17, 1))], -1)
    P[2, 5, 3] = 0  # invalid -> empty cells
    P[3, 0, :3] = np.nan
    p = tmp_path / "person.trc"
    write_trc(p, P, rate=60, units=units, axes=axes)
    lines = p.read_text().split("\n")
    assert lines[0] == "PathFileType\t4\t(X/Y/Z)\tperson.trc"
    assert lines[2].split("\t") == ["60", "60", "6", "17", "mm" if units == "mm" else "m", "60", "1", "6"]
    assert lines[3].split("\t")[:6] == ["Frame#", "Time", "nose", "", "", "left_eye"]
    assert lines[4].split("\t")[:5] == ["", "", "X1", "Y1", "Z1"]
    trc = read_trc(p, axes=axes)
    assert trc.markers == list(COCO17_NAMES) and trc.units == units and trc.rate == 60
    np.testing.assert_array_equal(trc.frames, np.arange(1, 7))
    np.testing.assert_allclose(trc.times, np.arange(1, 7) / 60)
    ok = P[..., 3] > 0
    ok[3, 0] = False
    np.testing.assert_allclose(trc.xyz[ok], P[..., :3][ok], atol=1e-12)
    assert np.isnan(trc.xyz[~ok]).all() and trc.valid.tolist() == ok.tolist()
    coco = trc_to_coco17(trc)
    np.testing.assert_array_equal(coco[..., 3] > 0, ok)


def test_trc_reader_errors_and_aliases(tmp_path):
    p = tmp_path / "a.trc"
    write_trc(p, np.zeros((2, 3, 3)), rate=30, marker_names=["Nose", "LShoulder", "RAnkle"])
    trc = read_trc(p)
    coco = trc_to_coco17(trc)
    assert np.flatnonzero(coco[0, :, 3]).tolist() == [COCO17_NAMES.index(n) for n in ("nose", "left_shoulder", "right_ankle")]
    text = p.read_text().split("\n")
    text[6] = text[6].replace("0.0", "zz", 1)
    p.write_text("\n".join(text))
    with pytest.raises(InputError, match=r"a\.trc \[line 7\].*not a number: 'zz"):
        read_trc(p)
    p.write_text("hello\n")
    with pytest.raises(InputError, match=r"a\.trc.*not a TRC"):
        read_trc(p)


@pytest.mark.skipif(not (DEMO / "single_person").is_dir(), reason="Pose2Sim demo data absent")
def test_trc_reads_pose2sim_file():
    (path,) = sorted((DEMO / "single_person" / "reference_3d_pose2sim").glob("*.trc"))
    trc = read_trc(path, axes=POSE2SIM_AXES)
    raw = read_trc(path)
    assert trc.xyz.shape == (100, 21, 3) and trc.units == "m" and trc.rate == 60 and "Nose" in trc.markers
    np.testing.assert_allclose(trc.xyz, raw.xyz[..., [2, 0, 1]])  # world (x, y, z) = TRC (Z, X, Y)
    coco = trc_to_coco17(trc)
    assert coco[..., 3].sum(-1).tolist() == [13] * 100  # nose + 12 body joints; no eyes/ears in the file


def test_anipose_csv_round_trip_and_alignment(tmp_path):
    rng = np.random.default_rng(2)
    P = rng.normal(size=(5, 17, 3))
    P[1, 3] = np.nan
    err, nc, sc = rng.random((5, 17)), np.full((5, 17), 3.0), rng.random((5, 17))
    p = tmp_path / "vid.csv"
    write_anipose_csv(p, P, error=err, ncams=nc, score=sc, units="mm")
    head = p.read_text().split("\n")[0].split(",")
    assert head[:6] == ["nose_x", "nose_y", "nose_z", "nose_error", "nose_ncams", "nose_score"]
    assert head[-13:] == [f"M_{i}{j}" for i in range(3) for j in range(3)] + ["center_0", "center_1", "center_2", "fnum"]
    d = read_anipose_csv(p, units="mm")
    assert d.joints == list(COCO17_NAMES) and d.fnum.tolist() == list(range(5))
    ok = np.isfinite(P).all(-1)
    np.testing.assert_allclose(d.xyz[ok], P[ok], atol=1e-12)
    assert np.isnan(d.xyz[1, 3]).all() and np.isnan(d.error[1, 3]) and d.ncams[0, 0] == 3
    np.testing.assert_allclose(d.score[ok], sc[ok])
    # Anipose's aligned output: q = M p - center; the reader undoes it
    M = rodrigues([0.2, 0.4, -0.1])
    c = np.array([1.0, 2.0, 3.0])
    q = P @ M.T - c
    lines = ["a_x,a_y,a_z,a_error,a_ncams,a_score," + ",".join(f"M_{i}{j}" for i in range(3) for j in range(3)) + ",center_0,center_1,center_2,fnum"]
    for f in range(2):
        lines.append(",".join(repr(float(x)) for x in [*q[f, 0], 1.0, 2, 0.9, *M.reshape(-1), *c, f]))
    p.write_text("\n".join(lines) + "\n")
    d = read_anipose_csv(p)
    np.testing.assert_allclose(d.xyz[:, 0], P[:2, 0], atol=1e-12)
    np.testing.assert_allclose(read_anipose_csv(p, to_calibration=False).xyz[:, 0], q[:2, 0])
    p.write_text(lines[0] + "\n" + lines[1].replace(",1.0,2.0,", ",x,2.0,", 1) + "\n")
    with pytest.raises(InputError, match=r"vid\.csv \[line 2 column a_error\]"):
        read_anipose_csv(p)
