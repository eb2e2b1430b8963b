"""Issue 16's exit-0-with-wrong-output cases: each is now a clear error or a recorded warning."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from h4d_fast.cli import main
from h4d_fast.errors import InputError, OutputError
from h4d_fast.io import atomic
from h4d_fast.io.detections import LoadReport
from h4d_fast.io.harmony4d import read_sequence, write_sequence
from h4d_fast.synth import make_capture
from helpers import keypoints_run, synth_sequence


@pytest.fixture(scope="module")
def seq(tmp_path_factory) -> Path:
    return synth_sequence(tmp_path_factory.mktemp("seq") / "s", meta={"seed": 5}, num_frames=16, num_cameras=4, seed=5, body=None)


@pytest.fixture(scope="module")
def run_out(seq, tmp_path_factory) -> Path:
    return keypoints_run(seq, tmp_path_factory.mktemp("out"))


def _copy(src: Path, tmp: Path, name: str = "copy") -> Path:
    dst = tmp / name
    shutil.copytree(src, dst)
    return dst


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error line"
    assert "Traceback" not in "\n".join(err)
    return err[-1]


# ----------------------------------------------------------------------------- scale.npy
def test_written_sequences_carry_scale(seq) -> None:
    assert (seq / "colmap" / "workplace" / "scale.npy").is_file()


def test_missing_scale_is_an_error_naming_the_file(seq, tmp_path, capsys) -> None:
    s = _copy(seq, tmp_path)
    (s / "colmap" / "workplace" / "scale.npy").unlink()
    with pytest.raises(InputError, match=r"scale\.npy.*--assume-metric"):
        read_sequence(s, assume_metric=False)
    assert main(["run", str(s), "--out", str(tmp_path / "o"), "--quiet", "--no-fit"]) == 2
    line = _err(capsys)
    assert "scale.npy" in line and "--assume-metric" in line
    assert not (tmp_path / "o" / "poses3d.npz").exists()


def test_assume_metric_warns_and_records(seq, tmp_path, capsys) -> None:
    s = _copy(seq, tmp_path)
    (s / "colmap" / "workplace" / "scale.npy").unlink()
    rep = LoadReport()
    cap = read_sequence(s, assume_metric=True, report=rep)
    assert cap.num_views == 4 and any("scale.npy" in w for w in rep.warnings)
    out = tmp_path / "o"
    assert main(["run", str(s), "--out", str(out), "--quiet", "--no-fit", "--assume-metric"]) == 0
    warnings = json.loads((out / "timing.json").read_text())["warnings"]
    assert len(warnings) == 1 and "scale.npy" in warnings[0] and "assumed metric" in warnings[0]


def test_run_with_scale_records_no_warning(run_out) -> None:
    assert json.loads((run_out / "timing.json").read_text())["warnings"] == []


def test_run_many_checks_scale(seq, tmp_path, capsys) -> None:
    root = tmp_path / "data"
    s = _copy(seq, root, "a")
    (s / "colmap" / "workplace" / "scale.npy").unlink()
    assert main(["run-many", str(root), "--out", str(tmp_path / "o1"), "--no-fit", "--quiet"]) != 0
    printed = capsys.readouterr()
    assert "scale.npy" in printed.out + printed.err
    assert not (tmp_path / "o1" / "a" / "poses3d.npz").exists()
    assert main(["run-many", str(root), "--out", str(tmp_path / "o2"), "--no-fit", "--quiet", "--assume-metric"]) == 0
    assert "scale.npy" in json.loads((tmp_path / "o2" / "a" / "timing.json").read_text())["warnings"][0]


def test_detect_checks_scale(seq, tmp_path, capsys) -> None:
    s = _copy(seq, tmp_path)
    (s / "colmap" / "workplace" / "scale.npy").unlink()
    assert main(["detect", str(s), "--quiet"]) == 2
    assert "scale.npy" in _err(capsys)


# ----------------------------------------------------------------------------- cameras
def test_one_camera_is_an_error(tmp_path, capsys) -> None:
    cap, gt, meta = make_capture(num_frames=6, num_cameras=2, seed=1, body=None)
    s = tmp_path / "one"
    write_sequence(s, cap.select_views([0]), gt=gt, scale_transform=meta["scale_transform"])
    with pytest.raises(InputError, match=r"\[cameras\].*at least 2 views"):
        read_sequence(s)
    assert main(["run", str(s), "--out", str(tmp_path / "o"), "--quiet", "--no-fit"]) == 2
    assert "2 views" in _err(capsys)
    assert not (tmp_path / "o" / "poses3d.npz").exists()


# ----------------------------------------------------------------------------- eval
def test_eval_json_is_strict(run_out, seq, capsys) -> None:
    assert main(["eval", str(run_out), "--gt", str(seq), "--json", "--device", "cpu"]) == 0
    text = capsys.readouterr().out

    def no_constants(c: str) -> None:
        raise AssertionError(f"non-strict JSON constant {c}")

    rep = json.loads(text, parse_constant=no_constants)
    assert rep["mpjpe_mm"] is not None


def test_strict_dumps_nulls_non_finite() -> None:
    from h4d_fast.io.strict_json import strict_dumps

    obj = {"a": float("nan"), "b": [np.float32("inf"), -np.inf, 1.5], "c": np.array([np.nan, 2.0]), "d": np.int64(3)}
    assert json.loads(strict_dumps(obj)) == {"a": None, "b": [None, None, 1.5], "c": [None, 2.0], "d": 3}


def _rewrite_output(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    f = dst / "poses3d.npz"
    with np.load(f) as z:
        arrays = {k: z[k] for k in z.files}
    keep = changes.pop("keep_frames", None)
    if keep is not None:
        for k in ("poses3d", "raw_poses3d", "present", "frame_ids"):
            arrays[k] = arrays[k][keep]
    arrays.update(changes)
    np.savez(f, **arrays)
    return dst


def test_eval_refuses_partial_output(run_out, seq, tmp_path, capsys) -> None:
    out = _rewrite_output(run_out, tmp_path / "partial", keep_frames=slice(0, 10))
    assert main(["eval", str(out), "--gt", str(seq), "--device", "cpu"]) == 2
    line = _err(capsys)
    assert "partial output" in line and "6 frame(s)" in line and "00011" in line and "[frame_ids]" in line


def test_eval_refuses_other_frames(run_out, seq, tmp_path, capsys) -> None:
    with np.load(run_out / "poses3d.npz") as z:
        ids = z["frame_ids"] + 100
    out = _rewrite_output(run_out, tmp_path / "shifted", frame_ids=ids)
    assert main(["eval", str(out), "--gt", str(seq), "--device", "cpu"]) == 2
    assert "00101" in _err(capsys)


def test_eval_refuses_other_people(run_out, seq, tmp_path, capsys) -> None:
    with np.load(run_out / "poses3d.npz") as z:
        n = len(z["person_names"])
    out = _rewrite_output(run_out, tmp_path / "people", person_names=np.asarray([f"zed{i}" for i in range(n)]))
    assert main(["eval", str(out), "--gt", str(seq), "--device", "cpu"]) == 2
    line = _err(capsys)
    assert "zed0" in line and "[person_names]" in line


def test_eval_refuses_run_of_another_sequence(run_out, seq, tmp_path, capsys) -> None:
    other = tmp_path / "other"
    cap, gt, meta = make_capture(num_frames=16, num_cameras=5, seed=5, body=None)
    write_sequence(other, cap, gt=gt, scale_transform=meta["scale_transform"])
    out = _copy(run_out, tmp_path, "o")
    assert main(["eval", str(out), "--gt", str(other), "--device", "cpu"]) == 2
    line = _err(capsys)
    assert "cameras" in line and "timing.json" in line


# ----------------------------------------------------------------------------- synth
def test_synth_refuses_non_empty_folder_and_overwrite_leaves_no_stale_cameras(tmp_path, capsys) -> None:
    out = tmp_path / "syn"
    assert main(["synth", str(out), "--frames", "4", "--cameras", "5"]) == 0
    assert (out / "processed_data" / "poses2d" / "cam05").is_dir()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main(["synth", str(out), "--frames", "4", "--cameras", "3"]) == 2
    line = _err(capsys)
    assert "--overwrite" in line and str(out) in line
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # untouched
    assert main(["synth", str(out), "--frames", "4", "--cameras", "3", "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "processed_data" / "poses2d").iterdir()) == ["cam01", "cam02", "cam03"]
    assert sorted(p.name for p in (out / "processed_data" / "bboxes").iterdir()) == ["cam01", "cam02", "cam03"]
    assert read_sequence(out).num_views == 3


def test_synth_into_empty_folder(tmp_path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["synth", str(out), "--frames", "4", "--cameras", "2"]) == 0


# ----------------------------------------------------------------------------- umask
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_outputs_follow_umask(tmp_path, monkeypatch, mask) -> None:
    monkeypatch.setattr(atomic, "_umask", None)  # read afresh under this umask
    old = os.umask(mask)
    try:
        atomic.write_json(tmp_path / "a.json", {"x": 1})
        atomic.write_npy(tmp_path / "b.npy", np.zeros(3))
        atomic.write_npz(tmp_path / "c.npz", x=np.zeros(2))
        atomic.write_bytes_in(str(tmp_path), "d.npy", atomic.npy_bytes({"p": np.zeros(2)}))
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    want = 0o666 & ~mask
    assert (os.stat(tmp_path / "plain").st_mode & 0o777) == want
    for n in ("a.json", "b.npy", "c.npz", "d.npy"):
        assert (os.stat(tmp_path / n).st_mode & 0o777) == want, n
    assert os.umask(old) == old  # reading the umask left it as it was


def test_short_write_path_leaves_no_temporary_and_names_the_folder(tmp_path, monkeypatch) -> None:
    """The per-frame writers' short path: the whole file or the old one, never a temporary left
    beside it; a folder it cannot write in is an OutputError naming the folder."""
    atomic.write_bytes_in(str(tmp_path), "a.npy", b"old")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError):
        atomic.write_bytes_in(str(tmp_path), "a.npy", b"new")
    monkeypatch.undo()
    assert (tmp_path / "a.npy").read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]
    with pytest.raises(OutputError, match=str(tmp_path / "missing")):
        atomic.write_bytes_in(str(tmp_path / "missing"), "b.npy", b"x")


def test_input_error_is_one_line() -> None:
    e = InputError(Path("/x/cfg.toml"), "bad value 'a\nb'", "sec.\tkey")
    assert "\n" not in str(e) and "\t" not in str(e)
    assert str(e) == "/x/cfg.toml [sec.\\tkey]: bad value 'a\\nb'"
