"""`h4d eval hmr`: the benchmark protocol on perturbed copies of the ground truth, where every
metric's value is known in advance, and the 2D greedy matching."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("smplx")

from h4d_fast.body import DefaultModelUnavailable  # noqa: E402
from h4d_fast.body.fast import axis_angle_to_matrix, matrix_to_axis_angle  # noqa: E402
from h4d_fast.data import Capture, Detections, GroundTruth  # noqa: E402
from h4d_fast.eval import hmr  # noqa: E402
from h4d_fast.eval.joints import to_hmr2_2d  # noqa: E402
from h4d_fast.io.atomic import write_npy  # noqa: E402
from h4d_fast.io.harmony4d import write_sequence  # noqa: E402
from helpers import ring_cameras  # noqa: E402

F, V, P = 5, 4, 2
NAMES = ["aria01", "aria02"]
MAJOR = [1, 2, 4, 5, 7, 8, 16, 17, 18, 19, 20, 21]


def make_smpl_sequence(seq, seed=0, F=F, V=V):
    """A sequence folder with hand-made SMPL ground truth: two upright people side by side,
    ``V`` pinhole 4K cameras on a ring (no detections)."""
    g = torch.Generator().manual_seed(seed)
    cams = ring_cameras(V, seed=seed)
    up = torch.tensor([math.pi / 2, 0.0, 0.0], dtype=torch.float64)
    face = torch.tensor([[0.0, 0.0, -math.pi / 2], [0.0, 0.0, math.pi / 2]], dtype=torch.float64)  # towards each other
    go = matrix_to_axis_angle(axis_angle_to_matrix(face) @ axis_angle_to_matrix(up))  # [P, 3]
    go = go[None].expand(F, P, 3) + 0.05 * torch.randn(F, P, 3, generator=g, dtype=torch.float64)
    bp = 0.15 * torch.randn(F, P, 69, generator=g, dtype=torch.float64)
    betas = 0.5 * torch.randn(P, 10, generator=g, dtype=torch.float64)
    tr = torch.tensor([[-0.45, 0.0, 1.0], [0.45, 0.0, 1.0]], dtype=torch.float64)[None] + 0.02 * torch.randn(F, P, 3, generator=g, dtype=torch.float64)
    cap = Capture(cams, Detections.empty(F, V, 1), list(range(1, F + 1)), list(NAMES))
    smpl = {"global_orient": go.contiguous(), "body_pose": bp, "transl": tr, "betas": betas}
    write_sequence(seq, cap, gt=GroundTruth(torch.zeros(F, P, 17, 4), smpl), meta={"body_model": "default"})
    return cams, smpl


@pytest.fixture(scope="module")
def fast():
    try:
        return hmr.load_fast_body(None, "cpu")
    except DefaultModelUnavailable as e:  # pragma: no cover
        pytest.skip(f"default body model unavailable: {e}")


@pytest.fixture(scope="module")
def world(tmp_path_factory, fast):
    root = tmp_path_factory.mktemp("hmr")
    seq = root / "01_hugging" / "001"
    cams, smpl = make_smpl_sequence(seq)
    n = F * P
    verts, j45 = fast.vertices(smpl["global_orient"].reshape(n, 3), smpl["body_pose"].reshape(n, 69),
                               smpl["betas"][None].expand(F, P, 10).reshape(n, 10), smpl["transl"].reshape(n, 3))
    rest = fast.rest_joints(smpl["betas"])[:, 0]  # [P, 3]
    # camera-frame parameters of every (camera, frame, person), and the camera-frame GT meshes
    cam_params, cam_j, cam_v = {}, {}, {}
    for v in range(V):
        R, t = cams.R[v], cams.t[v]
        for f in range(F):
            for p in range(P):
                go, tr = hmr.smpl_to_camera(smpl["global_orient"][f, p], smpl["transl"][f, p], R, t, rest[p])
                cam_params[v, f, p] = {"global_orient": go, "body_pose": smpl["body_pose"][f, p], "betas": smpl["betas"][p], "transl": tr}
                cam_j[v, f, p] = j45[f * P + p, :24] @ R.T + t
                cam_v[v, f, p] = verts[f * P + p] @ R.T + t
    return {"root": root, "seq": seq, "cams": cams, "params": cam_params, "j": cam_j, "v": cam_v}


def np_params(d):
    return {k: v.numpy() for k, v in d.items()}


def write_preds(folder, people_of):
    """``people_of(v, f) -> list of person dicts`` -> PRED/<cam>/%05d.npy."""
    for v in range(V):
        for f in range(F):
            write_npy(folder / f"cam{v + 1:02d}" / f"{f + 1:05d}.npy", people_of(v, f))


def test_smpl_to_camera_matches_the_mesh(world, fast):
    """Camera-frame parameters give the world mesh moved by the camera (the basis of every case)."""
    v, f, p = 2, 3, 1
    q = world["params"][v, f, p]
    verts, j = fast.vertices(q["global_orient"][None], q["body_pose"][None], q["betas"][None], q["transl"][None])
    torch.testing.assert_close(verts[0], world["v"][v, f, p], atol=1e-7, rtol=0)
    torch.testing.assert_close(j[0, :24], world["j"][v, f, p], atol=1e-7, rtol=0)


def test_exact_copy_scores_perfectly_and_order_does_not_matter(world, tmp_path):
    write_preds(tmp_path, lambda v, f: [np_params(world["params"][v, f, p]) for p in (1, 0)])  # people listed B, A
    rep = hmr.evaluate(world["seq"], tmp_path)
    o = rep["overall"]
    assert o["gt_instances"] == F * V * P and o["matched"] == F * V * P
    assert o["misses"] == 0 and o["false_positives"] == 0 and o["f1"] == 1.0
    for k in ("mpjpe_mm", "pa_mpjpe_mm", "pve_mm", "pa_pve_mm", "mpjpe_abs_mm"):
        assert o[k] == pytest.approx(0.0, abs=1e-6), k
    assert o["pck150"] == 1.0
    assert o["auc"] == pytest.approx(199 / 200)  # PCK(0 mm) = 0 by the strict '<'
    assert rep["sequences"][0]["activity"] == "01_hugging"
    assert list(rep["activities"]) == ["01_hugging"]


def test_translation_changes_only_the_absolute_error(world, tmp_path):
    d = np.array([0.03, -0.02, 0.04])

    def people(v, f):
        out = []
        for p in range(P):
            q = np_params(world["params"][v, f, p])
            q["transl"] = q["transl"] + d
            out.append(q)
        return out

    write_preds(tmp_path, people)
    o = hmr.evaluate(world["seq"], tmp_path)["overall"]
    assert o["matched"] == F * V * P
    assert o["mpjpe_abs_mm"] == pytest.approx(1000 * np.linalg.norm(d), abs=1e-6)
    for k in ("mpjpe_mm", "pa_mpjpe_mm", "pve_mm", "pa_pve_mm"):
        assert o[k] == pytest.approx(0.0, abs=1e-6), k


def test_rotation_about_the_pelvis(world, tmp_path, fast):
    """Rotating each body about its pelvis: Procrustes removes it (PA = 0); MPJPE, PVE (both
    alignments), PCK and AUC are the rotation's displacements, computed here from the GT alone."""
    Rq = axis_angle_to_matrix(torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64))  # a 5.7 deg forward tilt

    def people(v, f):
        out = []
        for p in range(P):
            q = dict(world["params"][v, f, p])
            # the pelvis is at rest_pelvis + transl whatever global_orient is: only the orientation changes
            q["global_orient"] = matrix_to_axis_angle(Rq @ axis_angle_to_matrix(q["global_orient"]))
            out.append(np_params(q))
        return out

    write_preds(tmp_path, people)
    exp = {"mpjpe": [], "pve": [], "pve0": [], "major": []}
    for key, j in world["j"].items():
        vv = world["v"][key]
        r = j - j[:1]
        e = ((r @ Rq.T) - r).norm(dim=-1) * 1000
        exp["mpjpe"].append(e.mean())
        exp["major"].append(e[MAJOR])
        rv = vv - j[:1]
        exp["pve"].append((((rv @ Rq.T) - rv).norm(dim=-1) * 1000).mean())
        rv0 = vv - vv[:1]
        exp["pve0"].append((((rv0 @ Rq.T) - rv0).norm(dim=-1) * 1000).mean())
    major = torch.stack(exp["major"])
    o = hmr.evaluate(world["seq"], tmp_path)["overall"]
    assert o["matched"] == F * V * P
    assert o["mpjpe_mm"] == pytest.approx(float(torch.stack(exp["mpjpe"]).mean()), rel=1e-9)
    assert o["pve_mm"] == pytest.approx(float(torch.stack(exp["pve"]).mean()), rel=1e-9)
    assert o["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)
    assert o["pa_pve_mm"] == pytest.approx(0.0, abs=1e-6)
    assert o["pck150"] == pytest.approx(float((major < 150).double().mean()))
    auc = float(np.mean([(major < t).double().mean() for t in range(200)]))
    assert o["auc"] == pytest.approx(auc)
    assert o["mpjpe_mm"] > 20  # a real perturbation
    o0 = hmr.evaluate(world["seq"], tmp_path, pve_align="vertex0")["overall"]
    assert o0["pve_mm"] == pytest.approx(float(torch.stack(exp["pve0"]).mean()), rel=1e-9)
    assert o0["mpjpe_mm"] == pytest.approx(o["mpjpe_mm"])


def test_joints_only_predictions_one_joint_off(world, tmp_path):
    """The left elbow (joint 18, a major joint) 300 mm off: MPJPE 300/24, PCK 11/12,
    AUC 11/12 * 199/200; no vertices -> no PVE."""

    def people(v, f):
        out = []
        for p in range(P):
            j = world["j"][v, f, p].clone()
            j[18] += torch.tensor([0.3, 0.0, 0.0], dtype=j.dtype)
            out.append({"joints": j.numpy()})
        return out

    write_preds(tmp_path, people)
    o = hmr.evaluate(world["seq"], tmp_path)["overall"]
    assert o["matched"] == F * V * P
    assert o["mpjpe_mm"] == pytest.approx(300 / 24, abs=1e-6)
    assert o["mpjpe_abs_mm"] == pytest.approx(300 / 24, abs=1e-6)
    assert o["pck150"] == pytest.approx(11 / 12)
    assert o["auc"] == pytest.approx(11 / 12 * 199 / 200)
    assert math.isnan(o["pve_mm"])


def test_matching_rejects_misplaced_predictions_and_counts_misses(world, tmp_path):
    """cam01: the only prediction is person A's mesh moved 0.8 m down its image (on nobody:
    box IoU < 0.6 with both) -> a false positive and two misses per frame. cam02: A alone,
    exact -> matched to A (not B), B missed. cam03/04: both, exact."""
    down = np.array([0.0, 0.8, 0.0])

    def people(v, f):
        a = np_params(world["params"][v, f, 0])
        if v == 0:
            a["transl"] = a["transl"] + down
            return [a]
        if v == 1:
            return [a]
        return [np_params(world["params"][v, f, p]) for p in range(P)]

    write_preds(tmp_path, people)
    rep = hmr.evaluate(world["seq"], tmp_path)
    pc = rep["sequences"][0]["per_camera"]
    assert (pc["cam01"]["matched"], pc["cam01"]["false_positives"], pc["cam01"]["misses"]) == (0, F, 2 * F)
    assert (pc["cam02"]["matched"], pc["cam02"]["false_positives"], pc["cam02"]["misses"]) == (F, 0, F)
    assert pc["cam02"]["mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)  # matched to A, its own person
    o = rep["overall"]
    tp, fp, fn = F + 2 * 2 * F, F, 3 * F
    assert (o["matched"], o["false_positives"], o["misses"]) == (tp, fp, fn)
    prec, rec = tp / (tp + fp), tp / (tp + fn)
    assert o["f1"] == pytest.approx(2 * prec * rec / (prec + rec))
    assert o["mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)
    assert o["nmje_mm"] == pytest.approx(0.0, abs=1e-6)


def test_greedy_matching_by_hand():
    cost = np.array([[1.0, 5.0], [2.0, 3.0], [0.5, 9.0]])
    iou = np.array([[0.9, 0.1], [0.7, 0.8], [0.3, 0.0]])
    # best pair (2, 0) fails the IoU test -> prediction 2 excluded; then (0, 0); then (1, 1)
    pairs, excluded = hmr.match_2d_greedy(cost, iou, np.array([True, True]))
    assert pairs == [(0, 0), (1, 1)] and excluded == 1
    pairs, _ = hmr.match_2d_greedy(cost, iou, np.array([False, True]))  # GT 0 not in view
    assert pairs == [(1, 1)]


def test_hmr2_output_npz_layout_and_many_sequences(world, tmp_path, fast):
    """Rotation matrices, HMR2.0 key names and 44 2D keypoints in one .npz per sequence; a root
    with two activities gives per-activity rows and the pooled total."""
    import shutil

    gt_root = tmp_path / "gt"
    shutil.copytree(world["seq"], gt_root / "01_hugging" / "001")
    shutil.copytree(world["seq"], gt_root / "02_grappling" / "003")
    cams = world["cams"]
    rows = {k: [] for k in ("camera", "frame", "global_orient", "body_pose", "betas", "pred_cam_t_full", "keypoints_2d")}
    for (v, f, p), q in world["params"].items():
        rows["camera"].append(f"cam{v + 1:02d}")
        rows["frame"].append(f + 1)
        rows["global_orient"].append(axis_angle_to_matrix(q["global_orient"])[None].numpy())  # [1, 3, 3]
        rows["body_pose"].append(axis_angle_to_matrix(q["body_pose"].view(23, 3)).numpy())  # [23, 3, 3]
        rows["betas"].append(q["betas"].numpy())
        rows["pred_cam_t_full"].append(q["transl"].numpy())
        _, j45 = fast.vertices(q["global_orient"][None], q["body_pose"][None], q["betas"][None], q["transl"][None])
        z = j45[0, :, 2:]
        uv = j45[0, :, :2] / z * cams.intrinsics[v, :2] + cams.intrinsics[v, 2:]
        rows["keypoints_2d"].append(to_hmr2_2d(uv.numpy(), "smpl45"))  # [44, 3]
    arrays = {k: np.stack(v) if k != "camera" else np.asarray(v) for k, v in rows.items()}
    pred_root = tmp_path / "pred"
    (pred_root / "01_hugging").mkdir(parents=True)
    np.savez(pred_root / "01_hugging" / "001.npz", **arrays)
    # the second sequence: joints only, one joint 300 mm off (MPJPE 12.5)
    jf = tmp_path / "pred" / "02_grappling" / "003"

    def people(v, f):
        out = []
        for p in range(P):
            j = world["j"][v, f, p].clone()
            j[5] += torch.tensor([0.0, 0.0, 0.3], dtype=j.dtype)
            out.append({"joints": j.numpy()})
        return {NAMES[p]: out[p] for p in range(P)}  # a dict of people works too

    write_preds(jf, people)
    rep = hmr.evaluate(gt_root, pred_root)
    assert [r["sequence"] for r in rep["sequences"]] == ["01_hugging/001", "02_grappling/003"]
    a = rep["activities"]
    assert a["01_hugging"]["mpjpe_mm"] == pytest.approx(0.0, abs=1e-6) and a["01_hugging"]["matched"] == F * V * P
    assert a["02_grappling"]["mpjpe_mm"] == pytest.approx(12.5, abs=1e-6)
    assert rep["overall"]["mpjpe_mm"] == pytest.approx(6.25, abs=1e-6)
    table = hmr.format_table(rep)
    assert "02_grappling" in table and "**all**" in table


def test_cli_eval_hmr_json(world, tmp_path, capsys):
    from h4d_fast.cli import main

    write_preds(tmp_path, lambda v, f: [np_params(world["params"][v, f, p]) for p in range(P)])
    assert main(["eval", "hmr", "--pred", str(tmp_path), "--gt", str(world["seq"]), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["overall"]["matched"] == F * V * P and rep["overall"]["f1"] == 1.0
    assert main(["eval", "hmr", "--pred", str(tmp_path), "--gt", str(world["seq"])]) == 0
    assert "01_hugging" in capsys.readouterr().out
    # the original `h4d eval OUT --gt SEQ` still parses (and reports the missing run output)
    assert main(["eval", str(tmp_path / "nothing"), "--gt", str(world["seq"])]) == 2
