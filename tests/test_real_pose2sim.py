"""The pipeline on a real capture nobody here made: Pose2Sim's 4-camera demo (../shared/data).

Single person: OpenPose BODY_25B detections, Qualisys calibration, and the 3D Pose2Sim itself
triangulated from them (not ground truth). Two people: generated MediaPipe detections.
"""

from pathlib import Path

import pytest
import torch

from h4d_fast.config import Config
from h4d_fast.io.harmony4d import read_sequence
from h4d_fast.io.importer import import_capture
from h4d_fast.io.trc import read_trc, trc_to_coco17
from h4d_fast.ops import triangulate_dlt
from h4d_fast.pipeline.driver import run_keypoints
from h4d_fast.pipeline.identity import gather_assigned
from h4d_fast.pipeline.triangulate import normalize_detections

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pose2sim_demo"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason="shared Pose2Sim demo data not present")


def _cfg() -> Config:
    c = Config()
    c.run.progress = False
    return c


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    seq = tmp_path_factory.mktemp("p2s") / "single"
    rep = import_capture(DATA / "single_person", seq, people=1)
    assert len(rep.cameras) == 4
    cap = read_sequence(seq)
    res = run_keypoints(cap, seq.parent / "out", _cfg())
    trc = read_trc(next((DATA / "single_person" / "reference_3d_pose2sim").glob("*.trc")), axes="yzx")
    r4 = torch.as_tensor(trc_to_coco17(trc), dtype=torch.float64)
    ref = torch.where(r4[..., 3:] > 0, r4[..., :3], torch.full_like(r4[..., :3], float("nan")))  # [F, 17, 3]
    return cap, res, ref


def _assigned(cap, res):
    """Detections the pipeline assigned to person 0: pixels+conf [F, J, V, 3], normalized [F, J, V, 2]."""
    a = torch.as_tensor(res.extra["assign"])
    xy = normalize_detections(cap.detections.to(dtype=torch.float64), cap.cameras)
    pix = torch.stack([gather_assigned(cap.detections.kpts[f].double(), a[f])[:, 0] for f in range(cap.num_frames)])
    nrm = torch.stack([gather_assigned(torch.cat([xy[f], torch.zeros_like(xy[f][..., :1])], -1), a[f])[:, 0, ..., :2]
                       for f in range(cap.num_frames)])
    return pix.permute(0, 2, 1, 3), nrm.permute(0, 2, 1, 3)


def test_import_report(single):
    cap, _, _ = single
    assert cap.num_views == 4 and cap.num_frames == 100 and cap.num_people == 1
    assert tuple(cap.cameras.size[0].tolist()) == (1088, 1920)  # portrait


def test_plain_dlt_reproduces_pose2sim(single):
    cap, res, ref = single
    pix, nrm = _assigned(cap, res)
    w = torch.where(pix[..., 2] > 0.3, pix[..., 2], torch.zeros_like(pix[..., 2]))
    X = triangulate_dlt(nrm, cap.cameras, w, method="svd")
    ok = torch.isfinite(X).all(-1) & torch.isfinite(ref).all(-1)
    assert float(ok.float().mean()) > 0.7
    d = (X - ref).norm(dim=-1)[ok]
    assert float(d.median()) < 0.001  # 1 mm


def test_ransac_reprojects_no_worse_and_stays_close(single):
    cap, res, ref = single
    pix, _ = _assigned(cap, res)
    ours = res.raw_poses3d[:, 0].double()
    ok = (ours[..., 3] > 0) & torch.isfinite(ref).all(-1)

    def reproj(X):
        uv, z = cap.cameras.project(X)  # [F, J, V, 2]
        m = (pix[..., 2] > 0.3) & ok[..., None] & (z > 0)
        return (uv - pix[..., :2]).norm(dim=-1)[m].median()

    assert float(reproj(ours[..., :3])) <= float(reproj(torch.nan_to_num(ref)))
    d = (ours[..., :3] - ref).norm(dim=-1)[ok]
    assert float(d.median()) < 0.03  # within a few cm of Pose2Sim's own triangulation


def test_two_people_are_kept_apart(tmp_path):
    seq = tmp_path / "multi"
    import_capture(DATA / "multi_person", seq)
    cap = read_sequence(seq)
    assert cap.num_people == 2 and cap.init_boxes is None
    res = run_keypoints(cap, tmp_path / "out", _cfg())
    p = res.poses3d
    assert float((res.raw_poses3d[..., 3] > 0).float().mean()) > 0.8
    hip = 0.5 * (p[:, :, 11, :3] + p[:, :, 12, :3])
    both = (p[:, :, 11, 3] > 0).all(-1) & (p[:, :, 12, 3] > 0).all(-1)
    assert float(both.float().mean()) > 0.9
    dist = (hip[:, 0] - hip[:, 1]).norm(dim=-1)[both]
    assert float(dist.min()) > 0.4  # two bodies, never merged into one
    step = (hip[1:] - hip[:-1]).norm(dim=-1)[both[1:] & both[:-1]]
    assert float(step.max()) < 0.15  # no identity jumps between the two (60 fps)


def test_fitted_body_follows_the_triangulated_keypoints(single):
    """Stage 5 on a real person: the default body model fitted with the default settings.

    Documented bound (README, "Real captures"): the fitted body's COCO joints lie within a median of
    15 mm (90th percentile 25 mm) of the triangulated keypoints for the 12 limb joints, and within a
    median of 25 mm for the 5 face points (those are mesh vertices of a generic head, the detector's
    are landmarks of this person's face).
    """
    from h4d_fast.pipeline.driver import load_body
    from h4d_fast.pipeline.fit import fit_sequence

    cap, res, _ = single
    cfg = _cfg()
    body = load_body(cfg, torch.device("cpu"))
    fit = fit_sequence(res.poses3d, body, cfg.fit, torch.device("cpu"))
    F = fit.num_frames
    _, j45 = body(global_orient=fit.global_orient.reshape(-1, 3), body_pose=fit.body_pose.reshape(-1, 69),
                  betas=fit.betas.expand(F, -1), transl=fit.transl.reshape(-1, 3))
    coco = body.coco17(j45).reshape(F, 1, 17, 3)
    kp = res.poses3d
    ok = kp[..., 3] > 0
    d = (coco - kp[..., :3]).norm(dim=-1)  # [F, 1, 17]
    limbs, face = d[..., 5:][ok[..., 5:]], d[..., :5][ok[..., :5]]
    assert limbs.numel() > 0.8 * F * 12 and face.numel() > 0.5 * F * 5
    assert float(limbs.median()) < 0.015 and float(limbs.quantile(0.9)) < 0.025
    assert float(face.median()) < 0.025
