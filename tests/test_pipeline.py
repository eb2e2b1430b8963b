"""End to end on a small synthetic capture, resume, and the bad-input contract of the CLI."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from h4d_fast.cli import main
from h4d_fast.config import Config
from h4d_fast.pipeline.run import run_sequence
from h4d_fast.synth import make_capture
from helpers import keypoints_run, synth_sequence

FRAMES, CAMERAS = 48, 12


@pytest.fixture(scope="module")
def seq(tmp_path_factory) -> Path:
    return synth_sequence(tmp_path_factory.mktemp("seq") / "s", num_frames=FRAMES, num_cameras=CAMERAS, seed=3)


@pytest.fixture(scope="module")
def run_out(seq, tmp_path_factory) -> Path:
    return keypoints_run(seq, tmp_path_factory.mktemp("out"))


@pytest.mark.slow  # the run_out fixture: ~50 s on 2 cores
def test_end_to_end_accuracy_and_identity(run_out, seq, capsys):
    assert main(["eval", str(run_out), "--gt", str(seq), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["identity_swaps"] == 0
    assert rep["recovered"] > 0.98
    assert rep["mpjpe_mm"] < 15.0
    # the refinement must not make things worse than triangulation alone
    assert rep["mpjpe_mm"] <= rep["before_refinement"]["mpjpe_mm"] + 0.5


@pytest.mark.slow
def test_outputs_in_layout(run_out):
    files = sorted((run_out / "processed_data" / "poses3d").glob("*.npy"))
    assert len(files) == FRAMES and files[0].name == "00001.npy"
    d = np.load(files[0], allow_pickle=True).item()
    assert set(d) == {"aria01", "aria02"} and d["aria01"].shape == (17, 4)
    timing = json.loads((run_out / "timing.json").read_text())
    assert {s["name"] for s in timing["stages"]} >= {"load", "filter", "track", "refine", "export"}
    assert not list(run_out.rglob("*.tmp"))


def test_resume_skips_finished_stages(seq, tmp_path):
    cfg = _quiet()
    with pytest.raises(KeyboardInterrupt):
        run_sequence(seq, tmp_path, cfg, stop_after="track")
    assert (tmp_path / ".h4d" / "track.npz").exists() and not (tmp_path / ".h4d" / "refine.npz").exists()
    assert not (tmp_path / "poses3d.npz").exists()  # no half-written outputs
    res = run_sequence(seq, tmp_path, cfg)
    cached = {s.name: s.cached for s in res.stages}
    assert cached["filter"] and cached["track"] and not cached["refine"]
    # a changed setting recomputes from that stage on
    cfg.refine.iters = 5
    res2 = run_sequence(seq, tmp_path, cfg)
    cached2 = {s.name: s.cached for s in res2.stages}
    assert cached2["track"] and not cached2["refine"]
    # a changed input recomputes everything
    f = next((seq / "processed_data" / "poses2d" / "cam01" / "rgb").glob("*.npy"))
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1000))
    res3 = run_sequence(seq, tmp_path, cfg)
    assert not {s.name: s.cached for s in res3.stages}["filter"]


def test_person_with_too_few_views_is_marked_invalid(tmp_path):
    # aria02 is seen by one camera only from frame 10 on: its keypoints become invalid, no crash
    from h4d_fast.pipeline.driver import run_keypoints

    cap, gt, meta = make_capture(num_frames=24, num_cameras=8, seed=5)
    slot_person = torch.as_tensor(np.asarray(meta["labels"]["slot_person"]))  # [F, V, D]
    hide = slot_person == 1
    hide[:10] = False
    hide[:, 0] = False
    cap.detections.valid &= ~hide
    cfg = _quiet()
    cfg.refine.gap_fill_max = 0
    res = run_keypoints(cap, tmp_path / "b", cfg)
    p = res.raw_poses3d
    assert bool((p[10:, 1, :, 3] == 0).all()) and bool((p[10:, 1, :, :3] == 0).all())
    assert float(p[10:, 0, :, 3].mean()) > 0.95
    assert float(p[:10, 1, :, 3].mean()) > 0.85


def _quiet() -> Config:
    c = Config()
    c.run.progress = False
    c.fit.enabled = False
    return c


# ----------------------------------------------------------------------------- bad input
def _copy(seq: Path, tmp: Path) -> Path:
    dst = tmp / "copy"
    shutil.copytree(seq, dst)
    return dst


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error line"
    return err[-1]


def test_missing_camera_file(seq, tmp_path, capsys):
    s = _copy(seq, tmp_path)
    (s / "colmap" / "workplace" / "cameras.txt").unlink()
    assert main(["run", str(s), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    line = _err(capsys)
    assert "cameras.txt" in line and "Traceback" not in line


def test_camera_count_differs_from_detection_folders(seq, tmp_path, capsys):
    s = _copy(seq, tmp_path)
    shutil.rmtree(s / "processed_data" / "poses2d" / "cam03")
    assert main(["run", str(s), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "cam03" in _err(capsys)


def test_truncated_npy_names_file(seq, tmp_path, capsys):
    s = _copy(seq, tmp_path)
    f = s / "processed_data" / "poses2d" / "cam02" / "rgb" / "00005.npy"
    f.write_bytes(f.read_bytes()[:40])
    assert main(["run", str(s), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "00005.npy" in _err(capsys)


def test_malformed_json_names_file(seq, tmp_path, capsys):
    s = _copy(seq, tmp_path)
    d = s / "processed_data" / "poses2d" / "cam04" / "rgb"
    (d / "00007.npy").unlink()
    (d / "00007.json").write_text('[{"keypoints": [1, 2, 3], "bbox": [0, 0')
    assert main(["run", str(s), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "00007.json" in _err(capsys)


def test_nan_keypoints_are_gaps_not_errors(seq, tmp_path, capsys):
    s = _copy(seq, tmp_path)
    f = s / "processed_data" / "poses2d" / "cam01" / "rgb" / "00003.npy"
    dets = list(np.load(f, allow_pickle=True))
    dets[0]["keypoints"][:5, 0] = np.nan
    dets[0]["keypoints"][6, 2] = np.inf
    np.save(f, np.asarray(dets, dtype=object), allow_pickle=True)
    keypoints_run(s, tmp_path / "o")


def test_unwritable_output_folder(seq, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", str(seq), "--out", str(blocker / "sub"), "--quiet"]) == 2
    assert str(blocker) in _err(capsys)


def test_bad_config_value_names_field(seq, tmp_path, capsys):
    cfgf = tmp_path / "c.toml"
    cfgf.write_text('[triangulation]\nerr_thr = "big"\n')
    assert main(["run", str(seq), "--out", str(tmp_path / "o"), "--config", str(cfgf)]) == 2
    line = _err(capsys)
    assert "c.toml" in line and "triangulation.err_thr" in line
    assert main(["run", str(seq), "--out", str(tmp_path / "o"), "--set", "filter.dedup_policy=maybe"]) == 2
    assert "filter.dedup_policy" in _err(capsys)


def test_missing_sequence(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "nope" in _err(capsys)


def test_run_help_lists_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "oks_thr = 0.7" in out and "err_thr = 0.01" in out and "conf_thr = 0.5" in out


def test_without_identity_boxes_people_are_found_and_kept_apart(tmp_path):
    from h4d_fast.eval.metrics import identity_mapping, keypoint_report
    from h4d_fast.pipeline.driver import run_keypoints

    cap, gt, _ = make_capture(num_frames=30, num_cameras=10, seed=7)
    boxed = run_keypoints(cap, tmp_path / "boxed", _quiet())
    ref = keypoint_report(boxed.raw_poses3d, gt.poses3d.float())
    cap.init_boxes, cap.init_valid = None, None
    res = run_keypoints(cap, tmp_path / "free", _quiet())
    perm = identity_mapping(res.raw_poses3d.double(), gt.poses3d)
    assert bool((perm == perm[0]).all()), "identity must not switch"
    rep = keypoint_report(res.raw_poses3d[:, perm[0]], gt.poses3d.float())
    # measured (seed 7, 10 cameras, raw triangulation): 15.24 mm without boxes, 15.22 mm with them
    # (the level is the 10-camera capture's noise, not the identity stage): without boxes the
    # people must be found as well as with them, within 5%
    assert rep["recovered"] > 0.98 and rep["mpjpe_mm"] < 1.05 * ref["mpjpe_mm"]
