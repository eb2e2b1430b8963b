"""The image stage on real video nobody here made: Pose2Sim's 4-camera demo (../shared/data).

`h4d import --no-keypoints` (calibration + videos) -> `h4d detect` (embedded BlazePose) ->
`h4d run --no-fit`, compared with OpenPose BODY_25B (2D, per joint) and with Pose2Sim's own 3D
(TRC, triangulated from those OpenPose detections: a reference, not ground truth). To keep the
CPU time modest the sequence takes every 5th video frame (20 frames; the stage's own figures on
all 100 frames are in the README). Skipped without the shared data or the embedded model.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from h4d_fast.cli import main as cli_main
from h4d_fast.constants import COCO17_NAMES
from h4d_fast.io.harmony4d import read_sequence
from h4d_fast.io.openpose import read_openpose_cameras
from h4d_fast.io.trc import read_trc, trc_to_coco17

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pose2sim_demo"
if not DATA.exists():
    DATA = Path("/work/shared/data/pose2sim_demo")
STEP = 5
LIMBS = list(range(5, 17))  # shoulders, elbows, wrists, hips, knees, ankles

pytestmark = [pytest.mark.skipif(not (DATA / "single_person" / "videos").is_dir(), reason="shared Pose2Sim demo data not present"),
              pytest.mark.slow]  # ~90 s on 2 cores


@pytest.fixture(scope="module")
def blazepose():
    try:
        from h4d_fast.detect.models import load_person_detector, load_pose_model

        load_pose_model("default"), load_person_detector("default")
    except Exception as e:  # noqa: BLE001 - no embedded model on this machine
        pytest.skip(f"embedded pose model unavailable: {e}")


def _prepare(src: Path, seq: Path, people: str | None = None) -> None:
    args = ["import", str(src), str(seq), "--no-keypoints"] + (["--people", people] if people else [])
    assert cli_main(args) == 0
    rep = json.loads((seq / "import.json").read_text())
    rep["source_frame_ids"] = rep["source_frame_ids"][::STEP]  # every 5th video frame
    (seq / "import.json").write_text(json.dumps(rep))


@pytest.fixture(scope="module")
def single(blazepose, tmp_path_factory):
    root = tmp_path_factory.mktemp("p2s_detect")
    seq, out = root / "single", root / "out"
    _prepare(DATA / "single_person", seq)
    assert cli_main(["detect", str(seq), "--quiet"]) == 0
    assert cli_main(["run", str(seq), "--out", str(out), "--no-fit", "--quiet"]) == 0
    return seq, out


def test_2d_keypoints_near_openpose(single):
    seq, _ = single
    cap = read_sequence(seq)
    assert cap.person_names == ["aria01"]  # estimated by h4d detect
    folders = [DATA / "single_person" / "pose_openpose_body25b" / f"cam0{i}_json" for i in range(1, 5)]
    op, layout, _ = read_openpose_cameras(folders, None)
    err: dict[int, list[float]] = {j: [] for j in range(17)}
    for v, c in enumerate(op):
        dets, _ = c.detections(layout)
        for i in range(cap.num_frames):
            f = i * STEP
            if not dets.get(f) or not bool(cap.detections.valid[i, v].any()):
                continue
            ko = dets[f][0][0]
            ks = cap.detections.kpts[i, v][cap.detections.valid[i, v]].numpy()
            k = ks[np.argmin([np.linalg.norm(x[:, :2] - ko[:, :2], axis=-1).mean() for x in ks])]
            for j in range(17):
                if ko[j, 2] > 0.1:
                    err[j].append(float(np.linalg.norm(k[j, :2] - ko[j, :2])))
    med = {COCO17_NAMES[j]: float(np.median(err[j])) for j in range(17)}
    # measured on these 20 frames (1080/1088 x 1920 portrait): elbows, wrists, knees, ankles 11-16 px
    # (median of the eight 12.7 px), shoulders 13 px, hips 22 px, face 19-24 px (BlazePose and OpenPose
    # place hips and face points differently); on all 100 frames the same within 1 px. OpenPose's own
    # reprojection error is 12 px median (the data's README). Margins: 1.6x and 1.5x.
    limbs = [med[COCO17_NAMES[j]] for j in (7, 8, 9, 10, 13, 14, 15, 16)]
    assert float(np.median(limbs)) < 20, med
    assert max(med.values()) < 36, med


def test_3d_limb_joints_near_pose2sim_every_frame(single):
    _, out = single
    with np.load(out / "poses3d.npz") as z:
        P = torch.from_numpy(z["poses3d"][:, 0]).double()
    trc = read_trc(next((DATA / "single_person" / "reference_3d_pose2sim").glob("*.trc")), axes="yzx")
    ref = torch.as_tensor(trc_to_coco17(trc), dtype=torch.float64)[::STEP][: P.shape[0]]
    ok = (P[..., 3] > 0) & (ref[..., 3] > 0)
    assert bool(ok[:, LIMBS].all()), "every frame reconstructed: all 12 limb joints"
    d = (P[..., :3] - ref[..., :3]).norm(dim=-1)[:, LIMBS]
    # measured: median 41.9 mm on these 20 frames, 39.5 mm on all 100 (every frame, all 12 limb
    # joints reconstructed); the goal is <= 50 mm, held here with that margin
    assert float(d.median()) < 0.050


def test_two_person_clip_both_found_and_kept_apart(blazepose, tmp_path):
    seq, out = tmp_path / "multi", tmp_path / "out"
    _prepare(DATA / "multi_person", seq)
    assert cli_main(["detect", str(seq), "--quiet"]) == 0
    info = json.loads((seq / "detect.json").read_text())
    assert info["person_names"] == ["aria01", "aria02"]  # estimated from the detections
    assert cli_main(["run", str(seq), "--out", str(out), "--no-fit", "--quiet"]) == 0
    with np.load(out / "poses3d.npz") as z:
        P = z["poses3d"]  # [F, 2, 17, 4]
    hips = P[:, :, 11:13]
    ok = (hips[..., 3] > 0).all(-1)  # [F, 2]
    # both people in every frame (measured: 20 of 20 frames, the number of people estimated as 2 on 13
    # of the 20 frames, 1 on 7; prompted crops where the two overlap in a view: 22 person-views)
    assert ok.all(), ok.sum(0)
    c = hips[..., :3].mean(2)  # [F, 2, 3] mid-hips
    apart = np.linalg.norm(c[:, 0] - c[:, 1], axis=-1)
    step = np.linalg.norm(np.diff(c, axis=0), axis=-1)  # [F-1, 2] per person between sampled frames (1/12 s)
    swapped = np.linalg.norm(c[1:, 0] - c[:-1, 1], axis=-1) < step[:, 0]
    # kept apart: never the same place, no jump to the other person's place (measured: mid-hips at
    # least 0.84 m apart, at most 0.09 m of motion between sampled frames)
    assert apart.min() > 0.3, apart
    assert not swapped.any() and step.max() < 0.5, step
