"""The Harmony4D sequence folder: round trips, stale frames, optional boxes and ground truth, missing
frame files, the errors, poses3d, whole-camera JSON detections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from h4d_fast.data import Capture, GroundTruth
from h4d_fast.errors import InputError
from h4d_fast.io import (  # the package's public names
    LoadReport,
    SequenceLayout,
    pack_detections,
    read_ground_truth,
    read_meta,
    read_poses3d,
    read_sequence,
    unpack_detections,
    write_poses3d,
    write_sequence,
)
from h4d_fast.io.colmap import write_colmap
from helpers import assert_cameras_equal, assert_dets_equal, named_ring_cameras, random_dets, random_similarity


def small_capture(rng: np.random.Generator, F: int = 4, names: list[str] | None = None) -> Capture:
    names = names or ["cam01", "cam02", "cam03"]
    models = (["fisheye", "opencv", "pinhole"] * 4)[: len(names)]
    dists = [[0.01, -0.002, 0.0005, -0.0001] if m == "fisheye" else ([0.1, -0.05, 0.001, 0.002, 0.01] if m == "opencv" else []) for m in models]
    cams = named_ring_cameras(names, models, dists)
    per_camera = [[random_dets(rng, int(rng.integers(0, 4))) for _ in range(F)] for _ in names]
    det = pack_detections(per_camera)
    init = torch.tensor(rng.uniform(0, 1000, size=(len(names), 2, 4)), dtype=torch.float32)
    init[..., 2:] += init[..., :2] + 10  # x2 > x1, y2 > y1
    valid = torch.ones(len(names), 2, dtype=torch.bool)
    valid[-1, 1] = False
    init[-1, 1] = 0
    return Capture(cams, det, list(range(1, F + 1)), ["aria01", "aria02"], init, valid, name="seq")



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
