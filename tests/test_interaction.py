"""Interaction measures (eval.interaction) and their place in ``h4d eval``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from h4d_fast.eval.interaction import accel_measures, inter_person_error, interaction_measures, penetration_measures
from h4d_fast.ops.contact import pair_contact
from test_contact import SPH_F, two_spheres


def test_penetration_measures_follow_the_benchmark_definition():
    a, b = two_spheres([-0.03, -0.01, 0.02])  # 3 cm and 1 cm overlap, then apart
    pc = pair_contact(a, b, SPH_F)
    m = penetration_measures([pc], penetration_mm=15.0)
    # per frame: max over both directions of the nearest-vertex distance of the vertices inside the other sphere
    per = []
    for f in range(3):
        from h4d_fast.ops.penetration import winding_number

        vals = [0.0]
        for p, q in ((a[f], b[f]), (b[f], a[f])):
            ins = winding_number(p, q, SPH_F) > 0.5
            if bool(ins.any()):
                vals.append(float(torch.cdist(p[ins], q).amin(-1).max()))
        per.append(1000 * max(vals))
    assert m["max_penetration_mm"]["max"] == pytest.approx(max(per), abs=1e-9)
    assert m["max_penetration_mm"]["mean"] == pytest.approx(sum(per) / 3, abs=1e-9)
    assert per[0] == pytest.approx(30, abs=6) and per[2] == 0.0
    assert m["frames_penetrating"] == pytest.approx(sum(p > 15.0 for p in per) / 3)
    assert 0 < m["mean_penetration_mm"] < m["max_penetration_mm"]["mean"]


def test_inter_person_error():
    g = torch.Generator().manual_seed(0)
    gt = torch.randn(5, 2, 24, 3, generator=g, dtype=torch.float64)
    assert inter_person_error(gt + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), gt) == pytest.approx(0.0, abs=1e-9)
    pred = gt.clone()
    pred[:, 1] += torch.tensor([0.005, 0.0, 0.0], dtype=torch.float64)  # person b moved 5 mm
    expect = ((torch.cdist(pred[:, 0], pred[:, 1]) - torch.cdist(gt[:, 0], gt[:, 1])).abs().mean() * 1000).item()
    assert inter_person_error(pred, gt) == pytest.approx(expect)
    valid = torch.ones(5, 2, 24, dtype=torch.bool)
    valid[:, 0] = False
    assert np.isnan(inter_person_error(pred, gt, valid))


def test_accel_measures():
    fps = 30.0
    t = torch.arange(10, dtype=torch.float64) / fps
    acc = torch.tensor([0.0, 0.0, -9.81], dtype=torch.float64)
    x = (0.5 * t[:, None] * t[:, None] * acc).reshape(10, 1, 1, 3).expand(10, 2, 4, 3)  # free fall
    m = accel_measures(x, fps, gt=x)
    assert m["jitter"] == pytest.approx(9810.0) and m["gt_jitter"] == pytest.approx(9810.0) and m["error"] == pytest.approx(0.0, abs=1e-6)
    noisy = x.clone()
    noisy[5] += torch.tensor([0.001, 0, 0], dtype=torch.float64)  # a 1 mm spike: 3 second differences see it
    e = accel_measures(noisy, fps, gt=x)["error"]
    assert e == pytest.approx((1 + 2 + 1) * fps * fps / 8, rel=1e-9)  # mm/s^2 averaged over the 8 interior frames
    # a gap in the frame numbers (between positions 4 and 5) removes the two differences across it;
    # of the spike's three, only the one centred on position 6 is left, among 6 valid differences
    ids = [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]
    e_gap = accel_measures(noisy, fps, gt=x, frame_ids=ids)["error"]
    assert e_gap == pytest.approx(1 * fps * fps / 6, rel=1e-9)
    assert accel_measures(x[:2], fps) == {"error": None, "jitter": None, "gt_jitter": None}


def test_penetration_from_depths_matches_the_pair_contacts():
    """The export's stored depths (depth_arrays) give the same measures as the pair contacts."""
    from h4d_fast.eval.interaction import penetration_from_depths
    from h4d_fast.ops.contact import depth_arrays

    a, b = two_spheres([-0.02, -0.005, 0.01])
    pcs = [pair_contact(a, b, SPH_F), pair_contact(b, a, SPH_F)]
    dmax, dmean = depth_arrays(pcs)
    assert dmax.shape == dmean.shape == (3, 2, 2)
    assert penetration_from_depths(dmax, dmean, 15.0) == penetration_measures(pcs, 15.0)
    assert float(dmax[2].max()) == 0.0 and float(dmax[0].min()) > 0.0


def test_interaction_measures_against_ground_truth():
    a, b = two_spheres([-0.02, 0.005, 0.3])
    gt = torch.stack([a, b], 1)
    pred = gt.clone()
    pred[:, 1] += torch.tensor([0.004, 0.0, 0.0], dtype=torch.float64)
    joints = gt[:, :, :24]
    m = interaction_measures(pred, SPH_F, pred[:, :, :24], fps=30.0, gt_verts=gt, gt_joints=joints)
    assert set(m) >= {"max_penetration_mm", "mean_penetration_mm", "frames_penetrating", "contact_f1", "contact_precision",
                      "contact_recall", "inter_mm", "accel_mm_s2", "ground_truth"}
    assert 0.3 < m["contact_f1"] < 1.0 and m["contact_precision"] >= m["contact_recall"]  # pred moved apart: fewer contacts
    assert m["inter_mm"] > 0 and m["interaction_joints"] == "smpl24"
    same = interaction_measures(gt, SPH_F, joints, gt_verts=gt, gt_joints=joints)
    assert same["contact_f1"] == 1.0 and same["inter_mm"] == pytest.approx(0.0, abs=1e-9) and same["accel_mm_s2"]["error"] == pytest.approx(0.0, abs=1e-6)
    # precomputed ground-truth labels give the same scores
    from h4d_fast.eval.interaction import pair_contacts, stack_contact

    lab = stack_contact(pair_contacts(gt, SPH_F))
    m2 = interaction_measures(pred, SPH_F, pred[:, :, :24], gt_contact=lab, gt_joints=joints)
    assert m2["contact_f1"] == pytest.approx(m["contact_f1"]) and "ground_truth" not in m2


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 10-frame synthetic sequence and a fake run folder: the ground-truth bodies, person 2 moved 3 mm."""
    pytest.importorskip("smplx")
    from h4d_fast.body import DefaultModelUnavailable, load_body_model
    from h4d_fast.body.fast import recompute_meshes
    from h4d_fast.config import Config, to_toml
    from h4d_fast.io.harmony4d import write_sequence
    from h4d_fast.io.smpl_layout import write_sequence_npz
    from h4d_fast.synth import make_capture

    try:
        body = load_body_model()
    except DefaultModelUnavailable as e:  # pragma: no cover
        pytest.skip(str(e))
    root = tmp_path_factory.mktemp("interaction")
    cap, gt, meta = make_capture(num_frames=10, num_cameras=3, seed=3)
    seq, out = root / "seq", root / "out"
    write_sequence(seq, cap, gt=gt, scale_transform=meta.get("scale_transform"), meta={"name": "t", "fps": 30.0})
    params = {k: gt.smpl[k].numpy() for k in ("global_orient", "body_pose", "betas", "transl")}
    params["transl"] = params["transl"].copy()
    params["transl"][:, 1, 0] += 0.003
    v, j = recompute_meshes(body, params)
    (out / "processed_data").mkdir(parents=True)
    F = v.shape[0]
    write_sequence_npz(out / "processed_data", frame_ids=np.arange(1, F + 1), person_names=np.array(["aria01", "aria02"]),
                       global_orient=params["global_orient"], body_pose=params["body_pose"],
                       betas=np.broadcast_to(params["betas"], (F, *params["betas"].shape)), transl=params["transl"], vertices=v, joints=j)
    (out / "config.toml").write_text(to_toml(Config()))
    np.savez(out / "poses3d.npz", poses3d=gt.poses3d.numpy(), frame_ids=np.arange(1, F + 1), person_names=np.array(["aria01", "aria02"]))
    return seq, out


@pytest.mark.slow  # ~20 s on 2 cores
def test_interaction_report_and_cli(tiny_run, capsys):
    from h4d_fast.cli import main
    from h4d_fast.eval.interaction import interaction_report

    seq, out = tiny_run
    rep = interaction_report(out, seq, device="cpu")
    assert rep["fps"] == 30.0 and rep["ground_truth_contact"] == "meshes"
    assert rep["inter_mm"] > 0 and rep["accel_mm_s2"]["error"] is not None and "contact_f1" in rep and "contact_region_f1" in rep
    from h4d_fast.eval.interaction import format_measures

    text = format_measures(rep)
    assert "penetration" in text and f"F1 {rep['contact_f1']:.3f}" in text and "inter-person distances" in text
    # quality measures alone, without ground truth
    assert main(["eval", str(out), "--json", "--device", "cpu"]) == 0
    q = json.loads(capsys.readouterr().out)
    assert "max_penetration_mm" in q and "contact_f1" not in q and q["accel_mm_s2"]["error"] is None and q["accel_mm_s2"]["jitter"] > 0
    # precomputed ground-truth labels are used when present and at the same threshold
    from h4d_fast.body import load_body_model
    from h4d_fast.body.fast import recompute_meshes
    from h4d_fast.eval.interaction import pair_contacts, stack_contact
    from h4d_fast.io.contact import write_contact
    from h4d_fast.io.harmony4d import read_ground_truth

    gt = read_ground_truth(seq)
    gv, _ = recompute_meshes(load_body_model(), {k: gt.smpl[k].numpy() for k in ("global_orient", "body_pose", "betas", "transl")})
    lab = stack_contact(pair_contacts(torch.as_tensor(gv), load_body_model().faces))
    write_contact(seq / "ground_truth" / "contact.npz", lab, [(0, 1)], list(range(1, gv.shape[0] + 1)), 10.0)
    rep2 = interaction_report(out, seq, device="cpu")
    assert rep2["ground_truth_contact"] == "file" and rep2["contact_f1"] == pytest.approx(rep["contact_f1"])
    assert interaction_report(out, seq, contact_mm=20.0, device="cpu")["ground_truth_contact"] == "meshes"
    # the run's own labels and depths, as the export writes them, replace the mesh query with the same figures
    from h4d_fast.io.contact import write_contact as wc
    from h4d_fast.ops.contact import export_contact

    fv = torch.as_tensor(np.load(out / "processed_data" / "sequence.npz")["vertices"])
    exp = export_contact(fv, load_body_model().faces)
    wc(out / "processed_data" / "contact.npz", torch.from_numpy(exp["contact"]), [(0, 1)], list(range(1, fv.shape[0] + 1)), 10.0,
       depth_max=exp["depth_max"], depth_mean=exp["depth_mean"])
    rep3 = interaction_report(out, seq, device="cpu")
    assert rep2["run_contact"] == "meshes" and rep3["run_contact"] == "file"
    for k in ("contact_f1", "mean_penetration_mm", "frames_penetrating"):
        assert rep3[k] == pytest.approx(rep2[k], rel=1e-5, abs=1e-6), k
    assert rep3["max_penetration_mm"]["max"] == pytest.approx(rep2["max_penetration_mm"]["max"], rel=1e-5, abs=1e-6)
