"""import_capture: peer capture folders (Pose2Sim / Anipose / EasyMocap layouts) -> sequence folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from h4d_fast.errors import InputError, OutputError
from h4d_fast.io import read_sequence
from h4d_fast.io.calibration import write_toml_calibration
from h4d_fast.io.importer import camera_number, import_capture
from h4d_fast.io.trc import POSE2SIM_AXES, read_trc, trc_to_coco17
from test_io_peers import DEMO, coco_template, encode_layout, portrait_cameras, write_openpose

F = 5


def _scene(V=3):
    """Cameras, and per frame two people's COCO-17 world keypoints ``[F, 2, 17, 3]``."""
    cams = portrait_cameras(V)
    X = []
    for f in range(F):
        a = coco_template(center=(-0.6 + 0.02 * f, 0.1))
        b = coco_template(center=(0.6, -0.1 - 0.02 * f), height=1.6)
        X.append(np.stack([a, b]))
    return cams, np.stack(X)


def _openpose_capture(root: Path, layout="BODY_25", drop=None, cal_names=None):
    """A Pose2Sim-like capture: calibration/Calib.toml and pose/camXX_json/camXX.NNNN.json."""
    cams, X = _scene()
    if cal_names is not None:
        cams.names = list(cal_names)
    write_toml_calibration(root / "calibration" / "Calib.toml", cams)
    (root / "Config.toml").write_text("[project]\nframe_rate = 60\n")
    uv = cams.project(torch.as_tensor(X))[0].numpy()  # [F, 2, 17, V, 2]
    for v in range(len(cams)):
        for f in range(F):
            if drop == (v, f):
                continue
            people = []
            for p in range(2):
                k = np.concatenate([uv[f, p, :, v], np.full((17, 1), 0.9)], -1)
                people.append(encode_layout(k, layout))
            write_openpose(root / "pose" / f"cam{v + 1:02d}_json" / f"cam{v + 1:02d}.{f + 10:04d}.json", people)
    return cams, X, uv


def test_camera_number():
    for name, n in [("cam_01", 1), ("cam01_json", 1), ("int_cam03_img", 3), ("camera7", 7), ("Camera-12", 12), ("01", 1), ("4", 4), ("A", None), ("left", None)]:
        assert camera_number(name) == n, name


def test_import_openpose_toml(tmp_path):
    src, dst = tmp_path / "trial", tmp_path / "seq"
    cams, X, uv = _openpose_capture(src, drop=(2, 3))
    rep = import_capture(src, dst)
    assert rep.camera_names == ["cam01", "cam02", "cam03"]
    assert [c.calibration_name for c in rep.cameras] == ["cam_01", "cam_02", "cam_03"]
    assert rep.frames == F and rep.source_frame_ids == list(range(10, 10 + F))
    assert rep.keypoint_format == "OpenPose JSON BODY_25" and rep.calibration_format == "Pose2Sim TOML"
    assert rep.people == 2 and rep.person_names == ["aria01", "aria02"] and rep.max_detections == 2
    assert rep.image_sizes["cam01"] == (1080, 1920)
    assert any("cam03: 1 of 5 frames have no keypoint file" in w for w in rep.warnings)
    assert "BODY_25" in rep.describe() and "cam03" in rep.describe()
    assert json.loads((dst / "import.json").read_text())["frames"] == F

    cap = read_sequence(dst)
    assert cap.cameras.names == ["cam01", "cam02", "cam03"] and cap.frame_ids == list(range(1, F + 1))
    # the calibration passes through untouched: portrait size, fx != fy, 8-coefficient rational lens
    for k in ("intrinsics", "dist", "R", "t", "size"):
        np.testing.assert_allclose(getattr(cap.cameras, k).double().numpy(), getattr(cams, k).double().numpy(), atol=1e-12, err_msg=k)
    assert cap.cameras.dist[0, 5:].abs().min() > 0 and cap.cameras.intrinsics[0, 0] != cap.cameras.intrinsics[0, 1]
    # detections: the projected COCO-17 points, both people in every view-frame but the dropped one
    assert cap.detections.valid.sum(-1).tolist() == [[2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 0], [2, 2, 2]]
    k = cap.detections.kpts.numpy()
    for f in range(F):
        for v in range(3):
            for p in range(cap.detections.valid[f, v].sum()):
                np.testing.assert_allclose(k[f, v, p, :, :2], uv[f, p, :, v], atol=1e-3)
    assert cap.init_boxes is None

    # importing again into the same sequence folder is allowed; a foreign non-empty folder is not
    import_capture(src, dst, people=["alice", "bob"])
    assert json.loads((dst / "import.json").read_text())["person_names"] == ["alice", "bob"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        import_capture(src, other)
    import_capture(src, other, overwrite=True, people=1)


def test_import_matches_by_order_and_given_paths(tmp_path):
    src = tmp_path / "trial"
    _openpose_capture(src, layout="BODY_25B", cal_names=["A", "B", "C"])
    rep = import_capture(src, tmp_path / "seq", calibration=src / "calibration" / "Calib.toml", keypoints=src / "pose", keypoint_format="body_25b")
    assert rep.camera_names == ["cam01", "cam02", "cam03"] and rep.keypoint_format == "OpenPose JSON BODY_25B"
    assert any("matched by order" in w for w in rep.warnings)
    assert [c.calibration_name for c in rep.cameras] == ["A", "B", "C"]


def test_import_mediapipe_easymocap(tmp_path):
    import cv2

    cams, X = _scene(V=3)
    src = tmp_path / "mocap"
    src.mkdir()
    names = ["1", "2", "3"]
    fi = cv2.FileStorage(str(src / "intri.yml"), cv2.FILE_STORAGE_WRITE)
    fe = cv2.FileStorage(str(src / "extri.yml"), cv2.FILE_STORAGE_WRITE)
    for fs in (fi, fe):
        fs.startWriteStruct("names", cv2.FileNode_SEQ)
        for n in names:
            fs.write("", n)
        fs.endWriteStruct()
    for v, n in enumerate(names):
        fi.write(f"K_{n}", cams.K[v].numpy())
        fi.write(f"dist_{n}", cams.dist[v, :5].numpy()[None])
        fi.write(f"H_{n}", 1920)
        fi.write(f"W_{n}", 1080)
        fe.write(f"Rot_{n}", cams.R[v].numpy())
        fe.write(f"T_{n}", cams.t[v].numpy()[:, None])
    fi.release()
    fe.release()
    uv = cams.project(torch.as_tensor(X))[0].numpy()  # [F, 2, 17, V, 2]
    arrays = {}
    for v in range(3):
        a = np.full((F - (v == 2), 3, 33, 3), np.nan)  # 3 slots, the third always empty; camera 3 one frame short
        for f in range(a.shape[0]):
            for p in range(2):
                lm = np.zeros((33, 3))
                lm[:, :2] = uv[f, p, :, v].mean(0)  # unused landmarks sit at the body centre
                lm[list((0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)), :2] = uv[f, p, :, v]
                lm[:, :2] /= [1080, 1920]  # normalised coordinates
                lm[:, 2] = 0.95
                a[f, p] = lm
        arrays[f"cam{v + 1}"] = a
    np.savez(src / "mediapipe.npz", **arrays, fps=np.array(60.0), frame_times=np.arange(F, dtype=float))
    rep = import_capture(src, tmp_path / "seq")
    assert rep.calibration_format.startswith("EasyMocap") and rep.keypoint_format.startswith("MediaPipe")
    assert rep.camera_names == ["cam01", "cam02", "cam03"] and rep.frames == F and rep.people == 2
    assert any("different frame counts" in w for w in rep.warnings)
    cap = read_sequence(tmp_path / "seq")
    np.testing.assert_allclose(cap.detections.kpts[0, 1, 1, :, :2].numpy(), uv[0, 1, :, 1], atol=1e-2)
    assert cap.detections.valid[F - 1, 2].sum() == 0


def test_import_errors(tmp_path):
    src = tmp_path / "trial"
    _openpose_capture(src)
    (src / "calibration" / "Calib.toml").unlink()
    with pytest.raises(InputError, match="no calibration found"):
        import_capture(src, tmp_path / "seq")
    with pytest.raises(InputError, match="capture folder not found"):
        import_capture(tmp_path / "nope", tmp_path / "seq")
    empty = tmp_path / "empty"
    cams, _ = _scene()
    write_toml_calibration(empty / "calib" / "c.toml", cams)
    with pytest.raises(InputError, match="no keypoints found"):
        import_capture(empty, tmp_path / "seq")
    # a corrupt keypoint file is named
    src2 = tmp_path / "trial2"
    _openpose_capture(src2)
    (src2 / "pose" / "cam02_json" / "cam02.0011.json").write_text('{"people": [{"pose_keypoints_2d": [1, 2]}]}')
    with pytest.raises(InputError, match=r"cam02\.0011\.json"):
        import_capture(src2, tmp_path / "seq2")


@pytest.mark.skipif(not (DEMO / "single_person").is_dir(), reason="Pose2Sim demo data absent")
def test_import_pose2sim_single_person(tmp_path):
    rep = import_capture(DEMO / "single_person", tmp_path / "seq")
    assert rep.camera_names == ["cam01", "cam02", "cam03", "cam04"] and rep.frames == 100
    assert rep.keypoint_format == "OpenPose JSON BODY_25B" and rep.calibration_format == "Pose2Sim TOML"
    assert rep.image_sizes == {f"cam0{i}": (1088, 1920) for i in range(1, 5)} and rep.fps == 60
    assert sum("1080x1920" in w for w in rep.warnings) == 2  # cam01/02 videos are narrower than calibrated
    # a bystander is seen by cam01 and cam02 besides the subject (seen by all four)
    assert rep.people == 2
    cap = read_sequence(tmp_path / "seq")
    # Pose2Sim's own TRC (axes (Y, Z, X) of the calibration world) reprojects onto the imported detections
    (trc_path,) = sorted((DEMO / "single_person" / "reference_3d_pose2sim").glob("*.trc"))
    K, ok = cap.detections.kpts.numpy(), cap.detections.valid.numpy()

    def median_error(coco):
        uv = cap.cameras.project(torch.as_tensor(coco[..., :3]))[0].numpy()  # [100, 17, 4, 2]
        errs = []
        for f in range(100):
            for v in range(4):
                per_det = []
                for d in np.flatnonzero(ok[f, v]):
                    m = (K[f, v, d, :, 2] > 0.3) & (coco[f, :, 3] > 0)
                    if m.sum() > 3:
                        per_det.append(np.linalg.norm(K[f, v, d, m, :2] - uv[f, m, v], axis=-1))
                if per_det:
                    errs.extend(min(per_det, key=np.median))
        return float(np.median(errs))

    assert median_error(trc_to_coco17(read_trc(trc_path, axes=POSE2SIM_AXES))) < 15.0  # README: median 12.4 px
    assert median_error(trc_to_coco17(read_trc(trc_path))) > 100.0  # the file's own axes are not the world's


@pytest.mark.skipif(not (DEMO / "multi_person").is_dir(), reason="Pose2Sim demo data absent")
def test_import_pose2sim_multi_person_mediapipe(tmp_path):
    rep = import_capture(DEMO / "multi_person", tmp_path / "seq")
    assert rep.keypoint_format.startswith("MediaPipe") and rep.people == 2
    assert rep.camera_names == ["cam01", "cam02", "cam03", "cam04"] and rep.frames == 100 and rep.max_detections == 3
    cap = read_sequence(tmp_path / "seq")
    assert cap.detections.shape == (100, 4, 3)


def test_import_flat_openpose_folder_and_easymocap_annots(tmp_path):
    """One folder holding every camera's OpenPose files; and EasyMocap's annots/<cam>/NNNNNN.json."""
    src = tmp_path / "trial"
    cams, X, uv = _openpose_capture(src)
    flat = src / "json"
    for d in sorted((src / "pose").iterdir()):
        for f in d.iterdir():
            n = int(f.name.split(".")[1])
            flat.mkdir(exist_ok=True)
            (flat / f"{d.name[:5]}_{n:012d}_keypoints.json").write_text(f.read_text())
            f.unlink()
        d.rmdir()
    (src / "pose").rmdir()
    rep = import_capture(src, tmp_path / "seq")
    assert rep.camera_names == ["cam01", "cam02", "cam03"] and rep.frames == F and rep.keypoints_path == flat

    ann = tmp_path / "easymocap"
    write_toml_calibration(ann / "calib.toml", cams)
    for v in range(3):
        for f in range(F):
            people = [{"personID": p, "bbox": [0, 0, 10, 10, 1], "keypoints": encode_layout(np.concatenate([uv[f, p, :, v], np.full((17, 1), 0.9)], -1), "BODY_25").tolist()} for p in range(2)]
            (ann / "annots" / f"{v + 1:02d}").mkdir(parents=True, exist_ok=True)
            (ann / "annots" / f"{v + 1:02d}" / f"{f:06d}.json").write_text(json.dumps({"filename": "x.jpg", "height": 1920, "width": 1080, "annots": people}))
    rep = import_capture(ann, tmp_path / "seq2")
    assert rep.camera_names == ["cam01", "cam02", "cam03"] and rep.keypoint_format == "EasyMocap annots BODY_25"
    assert not any("image size" in w for w in rep.warnings)
    cap = read_sequence(tmp_path / "seq2")
    np.testing.assert_allclose(cap.detections.kpts[2, 1, 0, :, :2].numpy(), uv[2, 0, :, 1], atol=1e-3)


def test_import_coco_json_per_camera(tmp_path):
    cams, X = _scene()
    src = tmp_path / "trial"
    write_toml_calibration(src / "calibration" / "cams.toml", cams)
    uv = cams.project(torch.as_tensor(X))[0].numpy()  # [F, 2, 17, V, 2]
    for v in range(3):
        results = [
            {"image_id": f + 1, "category_id": 1, "score": 0.9,
             "keypoints": np.concatenate([uv[f, p, :, v], np.full((17, 1), 0.8)], -1).reshape(-1).tolist()}
            for f in range(F) for p in range(2) if not (v == 1 and f == 2)
        ]
        (src / "detections").mkdir(parents=True, exist_ok=True)
        (src / "detections" / f"camera{v + 1}.json").write_text(json.dumps(results))
    rep = import_capture(src, tmp_path / "seq")
    assert rep.keypoint_format.startswith("COCO") and rep.camera_names == ["cam01", "cam02", "cam03"]
    assert rep.frames == F and rep.source_frame_ids == list(range(1, F + 1)) and rep.people == 2
    assert not any("no keypoint file" in w for w in rep.warnings)  # a results list only lists frames with people
    cap = read_sequence(tmp_path / "seq")
    assert cap.detections.valid[2, 1].sum() == 0 and cap.detections.valid[2, 0].sum() == 2
