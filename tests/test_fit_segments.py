"""SMPL fitted per track segment (issue 14): a person absent for a stretch of frames has no body
fitted or exported there, the temporal term does not link the frames on either side of the absence,
and the collision term only pairs people present in the same frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("smplx")

from h4d_fast.body import DefaultModelUnavailable, load_body_model  # noqa: E402
from h4d_fast.body.fast import FastBody  # noqa: E402
from h4d_fast.config import FitConfig  # noqa: E402
from h4d_fast.eval.metrics import mpjpe24  # noqa: E402
from h4d_fast.io.detections import read_npy  # noqa: E402
from h4d_fast.io.smpl_layout import read_smpl_sequence  # noqa: E402
from h4d_fast.pipeline import fit as FT  # noqa: E402
from h4d_fast.pipeline.export import export_harmony4d  # noqa: E402
from h4d_fast.pipeline.fit import fit_sequence, model_outputs  # noqa: E402
from test_fit import synthetic_sequence  # noqa: E402

F = 40
GAP = (15, 25)  # person 0 is away in frames 15..24
EDGE = [12, 13, 14, 25, 26, 27]  # the three frames on either side of the absence
SHIFT = torch.tensor([0.8, 0.6, 0.0])  # where person 0 comes back: 1 m from where they left


@pytest.fixture(scope="module")
def body():
    try:
        return load_body_model()
    except DefaultModelUnavailable as e:  # pragma: no cover
        pytest.skip(f"default body model unavailable: {e}")


@pytest.fixture(scope="module")
def gap_fits(body):
    """Fits of one 40-frame two-person sequence (seed 0, 5 mm keypoint noise): everyone in every frame,
    and person 0 away in frames 15-24 and back 1 m away from where they left (with 5 m-off keypoints
    marked valid in the absence, which the fit must not read)."""
    gt = synthetic_sequence(body, F=F, seed=0)
    cfg = FitConfig(collision=False)
    full = fit_sequence(gt["poses3d"], body, cfg)
    moved = {k: v.clone() for k, v in gt.items()}
    for k in ("transl", "joints", "vertices"):
        moved[k][GAP[1]:, 0] += SHIFT
    moved["poses3d"][GAP[1]:, 0, :, :3] += SHIFT
    x = moved["poses3d"].clone()
    x[GAP[0]:GAP[1], 0, :, :3] += 5.0
    present = torch.ones(F, 2, dtype=torch.bool)
    present[GAP[0]:GAP[1], 0] = False
    gap = fit_sequence(x, body, cfg, present=present)
    return gt, full, moved, gap, present


def _errors(body, res, gt) -> torch.Tensor:
    _, j = model_outputs(body, res)
    return mpjpe24(j, gt["joints"])  # [F, P] mm


def test_frames_next_to_an_absence_fit_as_well_as_without_it(body, gap_fits):
    gt, full, moved, gap, present = gap_fits
    e_full, e_gap = _errors(body, full, gt), _errors(body, gap, moved)
    edge_full, edge_gap = float(e_full[EDGE, 0].mean()), float(e_gap[EDGE, 0].mean())
    # Measured (seed 0, CPU): 11.26 mm without the absence, 11.55 mm with it (+2.6%; the same sequence
    # without the return elsewhere, seeds 1-3: +3.5%, +4.3%, +1.6%). The two frames bordering the
    # absence have temporal support on one side only (+0.9 mm each), hence the 10% margin. The
    # objective before segments (main at e62b1af: the temporal term across the absence, the free
    # bodies inside it pulled by the pose prior) gives 15.72 mm on this test (+40%).
    assert edge_gap <= 1.10 * edge_full, (edge_gap, edge_full)
    # the other person is not affected (measured 10.41 / 10.38 mm)
    assert float(e_gap[:, 1].mean()) <= 1.05 * float(e_full[:, 1].mean())
    assert gap.stats["absent_person_frames"] == int((~present).sum())


def test_no_body_where_the_person_is_absent(body, gap_fits, tmp_path):
    _, _, _, gap, present = gap_fits
    assert torch.equal(gap.present.cpu(), present)
    away = ~present
    for k in ("global_orient", "body_pose", "transl"):
        assert float(getattr(gap, k)[away].abs().max()) == 0.0
        assert float(getattr(gap, k)[present].abs().max()) > 0.0
    v, _ = model_outputs(body, gap)
    assert float(v[away].abs().max()) == 0.0
    back = FT.FitResult.from_arrays(gap.as_arrays())  # the stage cache keeps the presence
    assert torch.equal(back.present, present)
    names = ["aria01", "aria02"]
    export_harmony4d(tmp_path, gap, body, list(range(1, F + 1)), names)  # presence from the fit itself
    for f in (GAP[0] - 1, GAP[0], GAP[1] - 1, GAP[1]):
        smpl = read_npy(tmp_path / "smpl" / f"{f + 1:05d}.npy")
        assert sorted(smpl) == ([n for p, n in enumerate(names) if present[f, p]])
    seq = read_smpl_sequence(tmp_path, prefer="npz")
    assert np.array_equal(seq["valid"], present.numpy())
    assert float(np.abs(seq["vertices"][away.numpy()]).max()) == 0.0


def test_the_temporal_term_stops_at_an_absence(body):
    """Moving the bodies of an absence changes nothing in the objective (no data, prior or temporal
    term reaches them) and they get no gradient."""
    gt = synthetic_sequence(body, F=12, seed=2)
    present = torch.ones(12, 2, dtype=torch.bool)
    present[5:8, 0] = False
    fast = FastBody(body)
    cfg = FitConfig()
    w = cfg.stage_weights(3)
    w["collision"] = 0.0
    params = {k: gt[k].clone() for k in ("global_orient", "body_pose", "betas", "transl")}
    fitter = FT._Fitter(gt["poses3d"][..., :3], gt["poses3d"][..., 3], fast, cfg, params, present)
    names = FT.STAGE_PARAMS[3]
    with torch.no_grad():
        l0, g0 = fitter.objective().value_and_grad(3, w, names)
        params["transl"][6, 0] += 0.5  # an absent body
        params["body_pose"][5:8, 0] += 0.3
        l1, _ = fitter.objective().value_and_grad(3, w, names)
    assert float(l1) == pytest.approx(float(l0), rel=1e-6)
    for k in names:
        assert float(g0[k][5:8, 0].abs().max()) == 0.0


def test_collision_pairs_only_people_present_together_and_close(body):
    """Three people: 0 and 1 close in every frame, 2 close to 1 but away in frames 0-1; the pairs are
    exactly the close pairs of people present in the same frame (not just the first two people)."""
    fast = FastBody(body)
    Fn, P = 4, 3
    kp = torch.zeros(Fn, P, 17, 3)
    w = torch.ones(Fn, P, 17)
    go = torch.tensor([torch.pi / 2, 0.0, 0.0]).expand(Fn, P, 3).clone()
    tr = torch.zeros(Fn, P, 3)
    tr[..., 1] = torch.tensor([0.0, 0.3, 0.6])  # in a row, 0.3 m apart (a T-posed body is 0.31 m deep)
    tr[:, :, 2] = 1.0
    tr[3, 2, 1] = 5.0  # person 2 walks off in frame 3 (present, but far)
    params = {"global_orient": go, "body_pose": torch.zeros(Fn, P, 69), "betas": torch.zeros(P, 10), "transl": tr}
    present = torch.ones(Fn, P, dtype=torch.bool)
    present[:2, 2] = False
    fitter = FT._Fitter(kp, w, fast, FitConfig(), params, present)
    frames = fitter.select_contact(0.02)
    ids, pairs = fitter.collision_pairs()
    got = sorted((int(ids[a]) // P, int(ids[a]) % P, int(ids[b]) % P) for a, b in pairs.tolist())
    want = [(f, 0, 1) for f in range(Fn)] + [(2, 1, 2)]
    assert got == sorted(want)
    assert frames.tolist() == [0, 1, 2, 3]
