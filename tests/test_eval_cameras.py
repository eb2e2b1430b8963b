"""`h4d eval cameras`: the keypoint stages with the first N cameras (Table 2) on a small synthetic
capture: MPJPE falls as cameras are added; JSON, Markdown and PNG outputs."""

from __future__ import annotations

import json

import pytest

from h4d_fast.errors import InputError
from h4d_fast.eval.cameras import parse_counts
from h4d_fast.io.harmony4d import write_sequence
from h4d_fast.synth import make_capture


@pytest.fixture(scope="module")
def seq(tmp_path_factory):
    # procedural bodies (no body model needed): keypoints only
    capture, gt, meta = make_capture(num_frames=24, num_cameras=12, seed=0, body=None)
    s = tmp_path_factory.mktemp("cams") / "seq"
    write_sequence(s, capture, gt=gt, scale_transform=meta["scale_transform"])
    return s


def test_parse_counts():
    assert parse_counts(None, 12) == [4, 6, 8, 10, 12]
    assert parse_counts(None, 20) == list(range(4, 21, 2))
    assert parse_counts("4,8,12,16", 12) == [4, 8, 12]
    assert parse_counts("4-10:3", 20) == [4, 7, 10]
    with pytest.raises(InputError):
        parse_counts("1,4", 12)


def test_mpjpe_falls_with_cameras(seq, tmp_path, capsys):
    from h4d_fast.cli import main

    assert main(["eval", "cameras", str(seq), "--cameras", "4,8,12", "--json", "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["rows"]
    rows = out["rows"]
    assert [r["cameras"] for r in rows] == [4, 8, 12]
    for r in rows:
        assert {"cameras", "mpjpe_mm", "seconds"} <= set(r) and r["seconds"] > 0
    mp = [r["mpjpe_mm"] for r in rows]
    assert mp[0] > mp[1] > mp[2] and mp[2] == pytest.approx(0.0, abs=1e-9)  # against the all-camera result
    gt = [r["mpjpe_gt_mm"] for r in rows]
    assert gt[0] > gt[1] > gt[2] and gt[2] < 30  # and against the ground truth
    md = (tmp_path / "cameras.md").read_text()
    assert md.startswith("| cameras |") and md.count("\n| ") >= 3
    assert (tmp_path / "cameras.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "cameras.json").read_text())["rows"] == rows
