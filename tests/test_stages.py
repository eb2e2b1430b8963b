"""Hand-checkable cases for the pipeline stages (filter, identity, refine) and the metrics."""

import math

import torch

from h4d_fast.config import Config
from h4d_fast.data import Detections
from h4d_fast.eval.metrics import identity_mapping, keypoint_report, procrustes_align
from h4d_fast.pipeline.filter import filter_detections
from h4d_fast.pipeline.identity import assign_by_boxes, best_assignment, box_iou, gather_assigned, predict_next
from h4d_fast.pipeline.refine import fill_gaps, limb_lengths, refine_sequence, reject_limb_outliers, reject_spikes


def _pose2d(cx, cy, conf=0.9, spread=80.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = torch.zeros(17, 3)
    k[:, 0] = cx + spread * torch.randn(17, generator=g)
    k[:, 1] = cy + spread * torch.randn(17, generator=g)
    k[:, 2] = conf
    return k


# ----------------------------------------------------------------------------- stage 1
def test_filter_min_keypoints_small_boxes_duplicates_and_nan():
    det = Detections.empty(1, 1, 5)
    det.kpts[0, 0, 0] = _pose2d(1000, 800, seed=1)
    det.kpts[0, 0, 1] = det.kpts[0, 0, 0] + torch.tensor([0.5, 0.5, -0.1])  # duplicate, less confident
    det.kpts[0, 0, 2] = _pose2d(2500, 900, seed=2)
    det.kpts[0, 0, 2, 5:, 2] = 0.1  # only 5 confident keypoints -> dropped
    det.kpts[0, 0, 3] = _pose2d(3000, 300, spread=2.0, seed=3)  # tiny box -> dropped
    det.kpts[0, 0, 4] = _pose2d(500, 500, seed=4)
    det.kpts[0, 0, 4, 0, 0] = float("nan")
    det.valid[0, 0] = True
    size = torch.tensor([[3840, 2160]])
    cfg = Config().filter
    out, st = filter_detections(det, size, cfg)
    assert out.valid[0, 0].tolist() == [True, False, False, False, True]
    assert st.too_few_keypoints == 1 and st.too_small == 1 and st.duplicates_removed == 1 and st.nonfinite_keypoints == 1
    assert out.kpts[0, 0, 4, 0].tolist() == [0.0, 0.0, 0.0]
    cfg.dedup_policy = "drop-both"
    out2, st2 = filter_detections(det, size, cfg)
    assert out2.valid[0, 0].tolist() == [False, False, False, False, True] and st2.duplicates_removed == 2


# ----------------------------------------------------------------------------- stage 2
def test_best_assignment_is_optimal_not_greedy():
    # greedy by row would give p0->0 (0.9) and p1->1 (0.1) = 1.0; optimal is p0->1, p1->0 = 1.6
    s = torch.tensor([[0.9, 0.8], [0.8, 0.1]])
    assert best_assignment(s, 0.05).tolist() == [1, 0]
    # below threshold never assigned; more people than slots
    assert best_assignment(torch.tensor([[0.04], [0.5]]), 0.05).tolist() == [-1, 0]
    assert best_assignment(torch.zeros(3, 2, 0), 0.1).tolist() == [[-1, -1]] * 3
    # batched over views
    b = torch.stack([s, s.flip(-1)])
    assert best_assignment(b, 0.05).tolist() == [[1, 0], [0, 1]]


def test_box_iou_and_assign_by_boxes():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 5, 15, 15], [20, 20, 30, 30]])
    iou = box_iou(a, b)
    assert math.isclose(float(iou[0, 0]), 25 / 175, rel_tol=1e-6) and float(iou[0, 1]) == 0
    boxes = torch.tensor([[[100.0, 100, 200, 300, 1], [400, 100, 500, 300, 1], [0, 0, 0, 0, 0]]])
    valid = torch.tensor([[True, True, False]])
    person = torch.tensor([[[395.0, 95, 505, 310], [102, 98, 198, 305]]])
    a = assign_by_boxes(boxes, valid, person, torch.ones(1, 2, dtype=torch.bool), 0.3)
    assert a.tolist() == [[1, 0]]


def test_gather_assigned():
    k = torch.arange(2 * 3 * 17 * 3, dtype=torch.float32).reshape(2, 3, 17, 3)
    a = torch.tensor([[2, -1], [0, 1]])
    g = gather_assigned(k, a)
    assert torch.equal(g[0, 0], k[0, 2]) and bool((g[0, 1] == 0).all()) and torch.equal(g[1, 1], k[1, 1])


def test_predictors():
    W = 10
    t = torch.arange(W, dtype=torch.float64)
    hist = torch.zeros(W, 1, 17, 3, dtype=torch.float64)
    hist[..., 0] = (0.05 * t)[:, None, None]  # 5 cm/frame along x
    ok = torch.ones(W, 1, 17, dtype=torch.bool)
    prev, _ = predict_next(hist, ok, "previous")
    cv, _ = predict_next(hist, ok, "constant-velocity")
    assert torch.allclose(prev[..., 0], torch.tensor(0.45, dtype=torch.float64))
    assert torch.allclose(cv[..., 0], torch.tensor(0.50, dtype=torch.float64))
    ok[-3:, 0, 4] = False  # stale track for keypoint 4: hold the last sample
    cv2, ok2 = predict_next(hist, ok, "constant-velocity")
    assert math.isclose(float(cv2[0, 4, 0]), 0.30, abs_tol=1e-12) and bool(ok2.all())
    none, ok3 = predict_next(hist, torch.zeros_like(ok), "previous")
    assert not bool(ok3.any())


# ----------------------------------------------------------------------------- stage 4
def _walk(F=60, P=1, seed=0):
    """A rigid 17-point 'skeleton' translating and rotating smoothly: limb lengths constant."""
    g = torch.Generator().manual_seed(seed)
    # a left/right-symmetric skeleton (x mirrored), jittered symmetrically
    left = torch.tensor([[0.03, 0.05, 0.65], [0.08, 0.02, 0.62], [0.18, 0.0, 0.45], [0.2, 0.0, 0.2],
                         [0.22, 0.02, 0.0], [0.1, 0.0, -0.05], [0.1, 0.02, -0.5], [0.1, 0.0, -0.9]], dtype=torch.float64)
    left = left + 0.02 * torch.randn(left.shape, generator=g, dtype=torch.float64)
    right = left * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    nose = torch.tensor([[0.0, 0.1, 0.6]], dtype=torch.float64)
    base = torch.cat([nose, torch.stack([left, right], 1).reshape(16, 3)])  # COCO order: L, R pairs
    t = torch.arange(F, dtype=torch.float64)
    ang = 0.02 * t
    R = torch.zeros(F, 3, 3, dtype=torch.float64)
    R[:, 0, 0], R[:, 0, 1], R[:, 1, 0], R[:, 1, 1], R[:, 2, 2] = ang.cos(), -ang.sin(), ang.sin(), ang.cos(), 1
    X = torch.einsum("fij,kj->fki", R, base) + torch.stack([0.02 * t, 0 * t, 1 + 0 * t], -1)[:, None]
    X = X[:, None].expand(F, P, 17, 3).clone()
    return torch.cat([X, torch.ones(F, P, 17, 1, dtype=torch.float64)], -1)


def test_fill_gaps_linear_and_limits():
    poses = _walk(20)
    X, valid = poses[..., :3], poses[..., 3] > 0
    v = valid.clone()
    v[5:8, 0, 3] = False  # 3-frame gap
    v[10:19, 0, 4] = False  # 9-frame gap
    v[:2, 0, 6] = False  # head gap
    Xf, vf = fill_gaps(X, v, max_gap=4)
    lin = X[4, 0, 3] + (X[8, 0, 3] - X[4, 0, 3]) * (6 - 4) / 4
    assert torch.allclose(Xf[6, 0, 3], lin)
    assert bool(vf[5:8, 0, 3].all()) and not bool(vf[10:19, 0, 4].any())
    assert bool(vf[:2, 0, 6].all()) and torch.equal(Xf[0, 0, 6], X[2, 0, 6])


def test_spikes_and_limb_outliers_are_rejected():
    poses = _walk(40)
    X, valid = poses[..., :3].clone(), poses[..., 3] > 0
    X[17, 0, 9] += torch.tensor([0.6, 0.0, 0.0], dtype=X.dtype)  # spike
    v = reject_spikes(X, valid, 0.3)
    assert not bool(v[17, 0, 9]) and int((~v).sum()) == 1
    X2 = poses[..., :3].clone()
    X2[25, 0, 10] += torch.tensor([0.0, 0.12, 0.0], dtype=X.dtype)  # 12 cm: a bent forearm
    v2 = reject_limb_outliers(X2, valid, 5.0)
    assert not bool(v2[25, 0, 10]) and bool(v2[25, 0, 8])


def test_refine_reduces_noise_and_keeps_limbs():
    clean = _walk(80, P=2, seed=3)
    g = torch.Generator().manual_seed(4)
    noisy = clean.clone()
    noisy[..., :3] += 0.006 * torch.randn(noisy[..., :3].shape, generator=g, dtype=noisy.dtype)
    noisy[30:33, 1, 7, 3] = 0  # a gap
    cfg = Config().refine
    out, st = refine_sequence(noisy, cfg)
    err_in = (noisy[..., :3] - clean[..., :3]).norm(dim=-1)[noisy[..., 3] > 0].mean()
    err_out = (out[..., :3] - clean[..., :3]).norm(dim=-1).mean()
    assert bool((out[..., 3] > 0).all())
    assert err_out < 0.7 * err_in
    assert st.loss_after < st.loss_before
    L = limb_lengths(out[..., :3])
    assert float(L.std(0).mean()) < float(limb_lengths(noisy[..., :3]).std(0).mean())


def test_refine_velocity_mode_biases_moving_points_more_than_acceleration():
    clean = _walk(80, seed=5)
    cfg = Config().refine
    out_acc, _ = refine_sequence(clean.clone(), cfg)
    cfg.temporal = "velocity"
    out_vel, _ = refine_sequence(clean.clone(), cfg)
    e_acc = (out_acc[..., :3] - clean[..., :3]).norm(dim=-1).mean()
    e_vel = (out_vel[..., :3] - clean[..., :3]).norm(dim=-1).mean()
    assert e_acc < e_vel


# ----------------------------------------------------------------------------- metrics
def test_metrics_known_offsets_and_swaps():
    gt = _walk(10, P=2)
    gt[:, 1, :, 0] += 1.0
    pred = gt.clone()
    pred[..., 2] += 0.010  # 10 mm everywhere
    rep = keypoint_report(pred, gt)
    assert math.isclose(rep["mpjpe_mm"], 10.0, rel_tol=1e-9)
    assert rep["pa_mpjpe_mm"] < 1e-6 and rep["identity_swaps"] == 0 and rep["recovered"] == 1.0
    sw = pred.clone()
    sw[3:5] = pred[3:5].flip(1)
    rep2 = keypoint_report(sw, gt)
    assert rep2["identity_swaps"] == 2 and rep2["identity_switch_events"] == 2
    assert identity_mapping(sw, gt)[3].tolist() == [1, 0]
    miss = pred.clone()
    miss[:, 0, :8, 3] = 0
    assert math.isclose(keypoint_report(miss, gt)["recovered"], 1 - 8 / 34, rel_tol=1e-9)


def test_procrustes_removes_similarity():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(5, 17, 3, generator=g, dtype=torch.float64)
    q = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64)).Q
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    Y = 1.7 * X @ q.T + torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    al = procrustes_align(Y, X, torch.ones(5, 17, dtype=torch.bool))
    assert (al - X).abs().max() < 1e-9


def test_bootstrap_people_clusters_views_by_person():
    import numpy as np

    from h4d_fast.pipeline.identity import bootstrap_people
    from h4d_fast.pipeline.triangulate import normalize_detections
    from h4d_fast.synth import make_capture

    cap, gt, meta = make_capture(num_frames=4, num_cameras=8, seed=11)
    det, _ = filter_detections(cap.detections, cap.cameras.size, Config().filter)
    xy = normalize_detections(det, cap.cameras)
    a = bootstrap_people(det.kpts[0].double(), xy[0], det.valid[0], cap.cameras, 2)
    sp = np.asarray(meta["labels"]["slot_person"])[0]
    found = set()
    for p in range(2):
        ids = [int(sp[v, a[v, p]]) for v in range(8) if a[v, p] >= 0]
        assert len(ids) >= 6
        major = max(set(ids), key=ids.count)
        assert ids.count(major) >= len(ids) - 1
        found.add(major)
    assert found == {0, 1}


def test_refine_honours_presence():
    """Nothing is filled, smoothed or written where a person is absent, nor past a run's ends."""
    from h4d_fast.pipeline.refine import present_runs

    poses = _walk(60, P=2, seed=2)
    present = torch.ones(60, 2, dtype=torch.bool)
    present[20:35, 0] = False  # person 0 leaves for 15 frames (shorter than gap_fill_max + 1)
    present[50:, 1] = False  # person 1's track ends at frame 49
    poses[~present] = 0.0
    poses[19, 0, :, 3] = 0  # the last frame before leaving has no keypoints
    start, end = present_runs(present)
    assert start[25, 0] > end[25, 0] and int(start[40, 0]) == 35 and int(end[10, 0]) == 19 and int(end[10, 1]) == 49
    X, v = poses[..., :3], poses[..., 3] > 0
    Xf, vf = fill_gaps(X, v, 15, present)
    assert not bool(vf[20:35, 0].any()) and not bool(vf[50:, 1].any())
    assert bool(vf[19, 0].all()) and torch.equal(Xf[19, 0], X[18, 0])  # held within the run, not bridged to 35
    cfg = Config().refine
    out, _ = refine_sequence(poses, cfg, present)
    assert not bool(out[20:35, 0, :, 3].any()) and not bool(out[50:, 1, :, 3].any())
    assert float(out[~present][..., :3].abs().max()) == 0.0
    # each run is refined as if alone: the part after the absence does not feel the part before it
    alone = poses.clone()
    alone[:35, 0] = 0
    out_alone, _ = refine_sequence(alone[:, :1], cfg, present[:, :1] & (torch.arange(60) >= 35)[:, None])
    assert torch.allclose(out[35:, 0, :, :3], out_alone[35:, 0, :, :3], atol=2e-3)


def test_skeleton_measures_on_known_cases():
    from h4d_fast.eval.skeleton import PCP_LIMBS, skeleton_report

    gt = _walk(10, P=2)
    gt[:, 1, :, 0] += 1.0
    pred = gt.flip(1).clone()  # the output lists the people in the other order
    pred[..., 2] += 0.010
    rep = skeleton_report(pred, gt)
    assert math.isclose(rep["mpjpe_mm"], 10.0, rel_tol=1e-9)
    assert rep["recall"] == 1.0 and rep["ghost_person_frames"] == 0 and rep["identity_swaps"] == 0
    assert rep["pcp"]["mean"] == 1.0
    # a ghost, a missed person-frame and an identity switch (one person's output id changes at frame 5)
    ghost = torch.cat([pred, pred[:, :1] + torch.tensor([0.0, 3.0, 0.0, 0.0], dtype=pred.dtype)], 1)  # 3 m away
    present = torch.ones(10, 3, dtype=torch.bool)
    present[7, 1] = False
    ghost[7, 1, :, 3] = 0
    sw = ghost.clone()
    sw[5:, [0, 1]] = ghost[5:, [1, 0]]
    present[5:, [0, 1]] = present[5:, [1, 0]].clone()
    rep = skeleton_report(sw, gt, present)
    assert rep["ghost_person_frames"] == 10 and rep["output_person_frames"] == 29
    assert math.isclose(rep["recall"], 19 / 20)
    assert rep["identity_swaps"] == 2  # both ground-truth people switch output person once
    # PCP: a lower arm whose wrist is off by more than the forearm's length is wrong, the rest right
    bad = pred.clone()
    bad[:, 0, 9, :3] += 1.0
    rep = skeleton_report(bad, gt)
    assert rep["pcp"]["per_limb"]["left_lower_arm"] == 0.5 and rep["pcp"]["per_limb"]["right_lower_arm"] == 1.0
    assert math.isclose(rep["pcp"]["mean"], 1 - 1 / (2 * len(PCP_LIMBS)))


def test_refine_optimizer_gives_torch_lbfgs_result():
    """Stage 4 minimises its loss with the project's L-BFGS (pipeline/lbfgs.py; torch.optim would
    import torch._dynamo in every fresh process): from the same start, torch.optim.LBFGS with the
    strong-Wolfe line search and the stage's settings reaches the same points. Measured: 2e-15 m
    apart at most in float64 (rounding); margin 1e-6 m, far below a keypoint's noise (6 mm here),
    so that a real change of the iterates (a different step, line search or history) fails."""
    from h4d_fast.pipeline.refine import refinement_loss

    clean = _walk(40, P=2, seed=7)
    g = torch.Generator().manual_seed(8)
    noisy = clean.clone()
    noisy[..., :3] += 0.006 * torch.randn(noisy[..., :3].shape, generator=g, dtype=noisy.dtype)
    cfg = Config().refine
    out, st = refine_sequence(noisy, cfg)
    # the reference: the stage's own inputs to the optimiser (no spikes, outliers or gaps here)
    X, valid = noisy[..., :3], noisy[..., 3] > 0.5
    v2 = reject_limb_outliers(X, reject_spikes(X, valid, cfg.jump_thr), cfg.limb_std_thr)
    Xf, avail = fill_gaps(X, v2, cfg.gap_fill_max, None)
    assert bool(avail.all()) and bool(v2.all())
    X0 = Xf.to(torch.float64)
    Xv = X0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([Xv], lr=1.0, max_iter=cfg.iters, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = refinement_loss(Xv, X0, v2.to(X0.dtype), avail, cfg)
        loss.backward()
        return loss

    opt.step(closure)
    assert st.loss_after < st.loss_before
    torch.testing.assert_close(out[..., :3], Xv.detach().to(out.dtype), atol=1e-6, rtol=0)
