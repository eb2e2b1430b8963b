"""Detection files: per-frame npy/json, plain arrays, WholeBody-133, box scores, NaN gaps, whole-camera
COCO files, loading a camera folder and packing, and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from h4d_fast.data import Detections
from h4d_fast.errors import InputError
from h4d_fast.io import (  # the package's public names
    LoadReport,
    load_camera_detections,
    pack_detections,
    read_frame_detections,
    unpack_detections,
    write_frame_json,
    write_frame_npy,
)
from h4d_fast.io.detections import keypoint_box, read_coco_camera
from helpers import assert_dets_equal, random_dets


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
