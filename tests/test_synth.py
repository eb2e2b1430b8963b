"""Tests of the synthetic capture generator (h4d_fast.synth)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from h4d_fast.constants import SMPL_PARENTS
from h4d_fast.synth import SynthConfig, colmap_cameras, forward_kinematics, make_capture, make_skeleton, oks
from h4d_fast.synth.detector import KIND_DUPLICATE, KIND_PRIMARY
from h4d_fast.synth.geometry import segment_distance, segment_params
from h4d_fast.synth.motion import HIP_LIMITS, SHOULDER_LIMITS, _arm_rest
from h4d_fast.synth.rotations import axis_angle_to_matrix, matrix_to_axis_angle, random_rotation
from h4d_fast.synth.skeleton import ATTACHED_MASK, CAPSULES, Skeleton, capsule_points, coco17_from_skeleton

F_SMALL, V_SMALL = 90, 10


@pytest.fixture(scope="module")
def synth():
    return make_capture(seed=7, num_frames=F_SMALL, num_cameras=V_SMALL)


def _primary_slots(cap, meta):
    """``[F, V, P]`` slot index of each person's primary detection (-1 when missed)."""
    lab = meta["labels"]
    F, V, D = cap.detections.shape
    P = cap.num_people
    idx = torch.full((F, V, P), -1, dtype=torch.long)
    for p in range(P):
        hit = (lab["slot_person"] == p) & (lab["slot_kind"] == KIND_PRIMARY)  # [F, V, D]
        has = hit.any(-1)
        idx[..., p] = torch.where(has, hit.float().argmax(-1), torch.full_like(idx[..., p], -1))
    return idx


# ---------------------------------------------------------------- basics
def test_shapes_and_types(synth):
    cap, gt, meta = synth
    F, V, D = cap.detections.shape
    assert (F, V) == (F_SMALL, V_SMALL) and D >= 2
    assert cap.detections.kpts.shape == (F, V, D, 17, 3) and cap.detections.kpts.dtype == torch.float32
    assert cap.detections.boxes.shape == (F, V, D, 5) and cap.detections.valid.dtype == torch.bool
    assert cap.cameras.R.dtype == torch.float64 and len(cap.cameras) == V
    assert cap.cameras.model == ["fisheye"] * V
    assert cap.frame_ids == list(range(1, F + 1))
    assert cap.person_names == ["aria01", "aria02"]
    assert cap.init_boxes.shape == (V, 2, 4) and cap.init_valid.shape == (V, 2)
    assert gt.poses3d.shape == (F, 2, 17, 4) and bool((gt.poses3d[..., 3] == 1).all())
    s = gt.smpl
    assert s["global_orient"].shape == (F, 2, 3) and s["body_pose"].shape == (F, 2, 69) and s["transl"].shape == (F, 2, 3)
    assert s["rest_joints"].shape == (2, 24, 3) and s["face_offsets"].shape == (2, 5, 3)
    assert meta["contact"].shape == (F,) and meta["scale_transform"].shape == (4, 4)
    assert set(meta["counts"]) >= {"outliers", "duplicates", "swaps", "misses", "false_positives"}
    # empty slots are all zero
    inv = ~cap.detections.valid
    assert bool((cap.detections.kpts[inv] == 0).all()) and bool((cap.detections.boxes[inv] == 0).all())


@pytest.mark.slow  # 15-25 s on 2 cores
def test_determinism():
    a = make_capture(seed=11, num_frames=40, num_cameras=5)
    b = make_capture(seed=11, num_frames=40, num_cameras=5)
    c = make_capture(seed=12, num_frames=40, num_cameras=5)
    for x, y in ((a, b),):
        assert torch.equal(x[0].detections.kpts, y[0].detections.kpts)
        assert torch.equal(x[0].detections.boxes, y[0].detections.boxes)
        assert torch.equal(x[0].detections.valid, y[0].detections.valid)
        assert torch.equal(x[0].cameras.R, y[0].cameras.R) and torch.equal(x[0].cameras.t, y[0].cameras.t)
        assert torch.equal(x[1].poses3d, y[1].poses3d)
        assert torch.equal(x[1].smpl["body_pose"], y[1].smpl["body_pose"])
        assert np.array_equal(x[2]["scale_transform"], y[2]["scale_transform"])
    assert not torch.equal(a[1].poses3d, c[1].poses3d)
    assert not torch.equal(a[0].cameras.t, c[0].cameras.t)


@pytest.mark.slow  # 15-25 s on 2 cores
def test_chunking_does_not_change_result():
    a = make_capture(seed=5, num_frames=30, num_cameras=4, chunk_frames=7)
    b = make_capture(seed=5, num_frames=30, num_cameras=4, chunk_frames=64)
    assert torch.equal(a[0].detections.kpts, b[0].detections.kpts)


# ------------------------------------------------------------- kinematics
def test_rotation_roundtrip():
    g = torch.Generator().manual_seed(0)
    R = random_rotation(torch.randn(500, 4, generator=g, dtype=torch.float64))
    assert torch.allclose(axis_angle_to_matrix(matrix_to_axis_angle(R)), R, atol=1e-9)
    # angles near pi and near zero
    axis = torch.nn.functional.normalize(torch.randn(50, 3, generator=g, dtype=torch.float64), dim=-1)
    for ang in (math.pi - 1e-7, 1e-9, 0.0):
        aa = axis * ang
        R = axis_angle_to_matrix(aa)
        assert torch.allclose(axis_angle_to_matrix(matrix_to_axis_angle(R)), R, atol=1e-7)


def test_segment_distance_matches_sampling():
    g = torch.Generator().manual_seed(1)
    p1, q1, p2, q2 = (torch.randn(200, 3, generator=g, dtype=torch.float64) for _ in range(4))
    q2[:20] = p2[:20]  # some degenerate segments (points)
    d, _, _ = segment_distance(p1, q1, p2, q2)
    s = torch.linspace(0, 1, 401, dtype=torch.float64)
    a = p1[:, None] + s[None, :, None] * (q1 - p1)[:, None]  # [N, S, 3]
    b = p2[:, None] + s[None, :, None] * (q2 - p2)[:, None]
    brute = torch.cdist(a, b).amin(dim=(1, 2))
    assert bool((d <= brute + 1e-9).all()) and bool((brute - d < 5e-3).all())
    sp, tp = segment_params(*(torch.zeros(3, dtype=torch.float64),) * 5)
    assert torch.isfinite(sp).all() and torch.isfinite(tp).all()


def test_gt_is_forward_kinematics_and_bones_constant(synth):
    _, gt, _ = synth
    s = gt.smpl
    J, G = forward_kinematics(s["rest_joints"], s["global_orient"], s["body_pose"], s["transl"], return_rotations=True)
    assert torch.allclose(J, s["joints"], atol=1e-9)
    coco = coco17_from_skeleton(J, G, s["face_offsets"])
    assert torch.allclose(coco, gt.poses3d[..., :3], atol=1e-9)
    par = torch.tensor(SMPL_PARENTS[1:])
    bl = (J[:, :, 1:] - J[:, :, par]).norm(dim=-1)  # [F, P, 23]
    assert float(bl.std(0).max()) < 1e-9
    rest_bl = (s["rest_joints"][:, 1:] - s["rest_joints"][:, par]).norm(dim=-1)
    assert torch.allclose(bl[0], rest_bl, atol=1e-9)
    # posed root = rest root + transl
    assert torch.allclose(J[:, :, 0], s["rest_joints"][None, :, 0] + s["transl"], atol=1e-12)


def test_two_people_differ_in_height():
    _, gt, meta = make_capture(seed=3, num_frames=30, num_cameras=3)
    h = [sk.height for sk in meta["skeletons"]]
    assert all(1.62 <= x <= 1.90 for x in h) and abs(h[0] - h[1]) > 0.02


@pytest.mark.slow  # 15-25 s on 2 cores
def test_body_model_people_differ_for_many_seeds():
    """The body-model shapes are redrawn (deterministically) until both heights lie in the configured
    range and differ by at least ``min_height_gap``."""
    from h4d_fast.synth import _body_skeletons, _resolve_body

    body = _resolve_body("default")
    for seed in range(8):
        sk, betas = _body_skeletons(body, np.random.default_rng(seed), 1.0, (1.62, 1.90), 0.03)
        h = [x.height for x in sk]
        assert all(1.62 <= x <= 1.90 for x in h) and abs(h[0] - h[1]) >= 0.03, (seed, h)
        sk2, betas2 = _body_skeletons(body, np.random.default_rng(seed), 1.0, (1.62, 1.90), 0.03)
        assert torch.equal(betas, betas2)


def test_skeleton_only_mode():
    """``body=None``: the procedural skeletons alone (no betas, no meshes), still two different people."""
    cap, gt, meta = make_capture(seed=3, num_frames=40, num_cameras=3, body=None)
    assert "betas" not in gt.smpl and meta["body_model"] is None
    h = [sk.height for sk in meta["skeletons"]]
    assert all(1.62 <= x <= 1.90 for x in h) and abs(h[0] - h[1]) > 0.02
    assert bool(meta["contact"].any()) and float(meta["pelvis_distance"].min()) < 0.5


# Ground-truth meshes free of interpenetration (issue 15, item 4: <= 0.1 cm^3 per frame; the proxy pass
# of h4d_fast.synth.collide, then the exact mesh pass of h4d_fast.synth.settle). Measured with
# h4d_fast.ops.penetration.penetration_volume (vertices of one body inside the other x their area, cm^3 per
# frame) on 120-frame captures (approach, hug, grapple: contact in ~2/3 of the frames), every other
# frame: seed 0: mean 0.013, max 0.62; seeds 1 and 2: 0 (at b4daff5, 2-core CPU). The residue is the
# body model's pose correctives, which the exact pass leaves out (it skins the rest mesh only).
# Before the exact pass (proxy pass only): seed 0 mean 9.2, max 150; seeds 0-8 means 1.8-9.2, maxima
# 91-371. The bounds: the goal for the mean (7x the measured value), 3x the measured maximum.
GT_PEN_MEAN_CM3 = 0.1
GT_PEN_MAX_CM3 = 2.0


@pytest.mark.slow  # 15-25 s on 2 cores
def test_ground_truth_meshes_do_not_interpenetrate():
    from h4d_fast.body.fast import FastBody
    from h4d_fast.ops.penetration import penetration_volume
    from h4d_fast.synth import _resolve_body

    F = 120
    _, gt, meta = make_capture(seed=0, num_frames=F, num_cameras=3)
    s = gt.smpl
    fb = FastBody(_resolve_body("default")).to(dtype=torch.float32)
    v, _ = fb.vertices(s["global_orient"].reshape(-1, 3).float(), s["body_pose"].reshape(-1, 69).float(),
                       s["betas"][None].expand(F, -1, -1).reshape(2 * F, -1).float(), s["transl"].reshape(-1, 3).float())
    v = v.view(F, 2, -1, 3)[::2]  # every other frame (the measure costs ~0.2 s per frame on CPU)
    pen = penetration_volume(v[:, 0], v[:, 1], fb.faces)
    assert int(meta["contact"].sum()) > F // 3  # contact-rich
    assert float(pen.mean()) < GT_PEN_MEAN_CM3 and float(pen.max()) < GT_PEN_MAX_CM3, (float(pen.mean()), float(pen.max()))


def test_rest_keypoints_not_inside_own_unattached_capsules():
    sk = make_skeleton(1.75)
    R = torch.eye(3, dtype=torch.float64).expand(24, 3, 3)
    kp = coco17_from_skeleton(sk.rest_joints, R, sk.face_offsets)  # [17, 3]
    a, b = capsule_points(sk.rest_joints, torch.eye(3, dtype=torch.float64), sk.head_centre)  # [C, 3]
    d, _, _ = segment_distance(kp[:, None], kp[:, None], a[None], b[None])  # [17, C]
    inside = (d < sk.radii[None]) & ~ATTACHED_MASK
    assert not bool(inside.any()), [(k, CAPSULES[c][0]) for k, c in torch.nonzero(inside).tolist()]


def test_skeleton_hook():
    sks = [make_skeleton(1.70, name="a"), make_skeleton(1.85, 1.05, name="b")]
    custom = Skeleton.from_rest(sks[1].rest_joints.numpy(), sks[1].face_offsets.numpy(), name="from_model")
    cap, gt, meta = make_capture(seed=2, num_frames=30, num_cameras=3, skeletons=[sks[0], custom])
    assert torch.equal(gt.smpl["rest_joints"][1], custom.rest_joints)
    assert abs(custom.height - 1.85) < 0.05


def test_skeleton_fn_hook():
    calls = []

    def fn(i, rng):
        calls.append(i)
        return make_skeleton(1.65 + 0.2 * i, name=f"hook{i}")

    _, gt, meta = make_capture(seed=2, num_frames=20, num_cameras=3, skeleton_fn=fn)
    assert calls == [0, 1] and [s.name for s in meta["skeletons"]] == ["hook0", "hook1"]
    assert torch.allclose(gt.smpl["rest_joints"][1], make_skeleton(1.85).rest_joints)


# -------------------------------------------------------------- the motion
def test_contact_happens_and_hands_reach_the_back(synth):
    _, gt, meta = synth
    J = gt.smpl["joints"]
    pd = meta["pelvis_distance"]
    assert float(pd.min()) < 0.5
    assert float(pd.max()) > 1.2  # they start apart
    assert bool(meta["contact"].any())
    _, G = forward_kinematics(gt.smpl["rest_joints"], gt.smpl["global_orient"], gt.smpl["body_pose"], gt.smpl["transl"], return_rotations=True)
    behind = torch.zeros(J.shape[0], dtype=torch.bool)
    for p in range(2):
        q = 1 - p
        for w in (20, 21):
            rel = torch.einsum("fij,fi->fj", G[:, q, 9], J[:, p, w] - J[:, q, 9])  # in partner's chest frame (x left, y up, z fwd)
            behind |= (rel[:, 2] < -0.08) & (rel[:, 0].abs() < 0.25) & (rel[:, 1].abs() < 0.4)
    assert int(behind.sum()) >= 5


def test_torsos_do_not_interpenetrate(synth):
    _, gt, meta = synth
    J = gt.smpl["joints"]
    assert float((J[:, 0, 0] - J[:, 1, 0]).norm(dim=-1).min()) > 0.25
    assert float((J[:, 0, 9] - J[:, 1, 9]).norm(dim=-1).min()) > 0.25


def test_short_sequence_contains_contact():
    _, gt, meta = make_capture(seed=4, num_frames=60, num_cameras=8)
    assert float(meta["pelvis_distance"].min()) < 0.5 and bool(meta["contact"].any())
    assert set(meta["phase"].tolist()) >= {0, 1, 2}


def test_feet_on_the_ground(synth):
    _, gt, _ = synth
    J = gt.smpl["joints"]
    low = J[..., [7, 8], 2].amin(-1)  # [F, P]
    assert torch.allclose(low, torch.full_like(low, 0.08), atol=0.01)
    assert float(gt.poses3d[..., 2].min()) > 0.0


def test_motion_is_smooth(synth):
    _, gt, _ = synth
    X = gt.poses3d[..., :3]
    acc = (X[2:] - 2 * X[1:-1] + X[:-2]).norm(dim=-1) * 30 * 30  # m/s^2
    assert float(acc.quantile(0.99)) < 50.0 and float(acc.max()) < 250.0
    vel = (X[1:] - X[:-1]).norm(dim=-1) * 30
    assert float(vel.max()) < 6.0


def test_joint_limits(synth):
    _, gt, meta = synth
    s = gt.smpl
    F = s["body_pose"].shape[0]
    loc = axis_angle_to_matrix(s["body_pose"].reshape(F, 2, 23, 3))  # local rotations of joints 1..23
    deg = 180 / math.pi
    # knees (4, 5): pure rotation about +x, 0..150 degrees
    for j in (4, 5):
        aa = matrix_to_axis_angle(loc[:, :, j - 1])
        assert float(aa[..., 1:].abs().max()) < 1e-6
        assert float(aa[..., 0].min()) >= -1e-6 and float(aa[..., 0].max()) * deg <= 150.0 + 1e-6
    # elbows (18, 19): rotation about the rest hinge axis, 0..150 degrees of flexion
    for p, sk in enumerate(meta["skeletons"]):
        for j, sgn in ((18, 1.0), (19, -1.0)):
            _, a0, th0 = _arm_rest(sk, sgn)
            aa = matrix_to_axis_angle(loc[:, p, j - 1])
            ang = (aa * a0).sum(-1) + th0
            assert float((aa - (aa * a0).sum(-1, keepdim=True) * a0).norm(dim=-1).max()) < 1e-6
            assert float(ang.min()) >= -1e-6 and float(ang.max()) * deg <= 150.0 + 1e-6
    J = s["joints"]
    _, G = forward_kinematics(s["rest_joints"], s["global_orient"], s["body_pose"], s["transl"], return_rotations=True)
    # hips: thigh direction in the pelvis frame
    for hip, knee, sgn in ((1, 4, 1.0), (2, 5, -1.0)):
        d = torch.einsum("fpij,fpi->fpj", G[:, :, 0], J[:, :, knee] - J[:, :, hip])
        flex = torch.atan2(d[..., 2], -d[..., 1]) * deg
        abd = torch.atan2(sgn * d[..., 0], -d[..., 1]) * deg
        assert float(flex.min()) >= HIP_LIMITS["flexion"][0] - 3 and float(flex.max()) <= HIP_LIMITS["flexion"][1] + 3
        assert float(abd.min()) >= HIP_LIMITS["abduction"][0] - 3 and float(abd.max()) <= HIP_LIMITS["abduction"][1] + 3
    # shoulders: upper arm inside the cone of the torso frame
    for sh, el, sgn in ((16, 18, 1.0), (17, 19, -1.0)):
        u = torch.nn.functional.normalize(torch.einsum("fpij,fpi->fpj", G[:, :, 9], J[:, :, el] - J[:, :, sh]), dim=-1)
        elev = torch.acos((-u[..., 1]).clamp(-1, 1)) * deg
        cross = torch.asin((-sgn * u[..., 0]).clamp(-1, 1)) * deg
        ext = torch.asin((-u[..., 2]).clamp(-1, 1)) * deg
        assert float(elev.max()) <= SHOULDER_LIMITS["elevation"] + 0.5
        assert float(cross.max()) <= SHOULDER_LIMITS["cross"] + 0.5
        assert float(ext.max()) <= SHOULDER_LIMITS["extension"] + 0.5
    # spine / neck rotations stay moderate
    for j in (3, 6, 9, 12, 15):
        assert float(matrix_to_axis_angle(loc[:, :, j - 1]).norm(dim=-1).max()) * deg < 45.0


# ------------------------------------------------------------- the cameras
def test_cameras_look_at_the_people_upright(synth):
    cap, gt, meta = synth
    lab = meta["labels"]
    # every camera sees (almost) every keypoint
    assert float(lab["in_image"].float().mean()) > 0.95
    uv = lab["gt_uv"]  # [F, V, P, 17, 2]
    head_y = uv[..., :5, 1].mean(-1)
    ankle_y = uv[..., 15:, 1].mean(-1)
    assert bool((head_y < ankle_y).all())  # image y points down
    f = cap.cameras.intrinsics[:, 0]
    assert bool(((f > 1650) & (f < 1950)).all())
    k = cap.cameras.dist[:, :4]
    assert bool((k[:, 0] > 0).all()) and bool((k[:, 1] < 0).all())
    r = (cap.cameras.centers[:, :2] - gt.poses3d[..., :2].reshape(-1, 2).mean(0)).norm(dim=-1)
    assert bool(((r > 3.0) & (r < 6.0)).all())
    z = cap.cameras.centers[:, 2]
    assert bool(((z > 0.7) & (z < 2.7)).all())


def test_pinhole_option():
    cap, _, _ = make_capture(seed=1, num_frames=20, num_cameras=4, lens="pinhole")
    assert cap.cameras.model == ["pinhole"] * 4 and bool((cap.cameras.dist == 0).all())


def test_scale_transform_roundtrip(synth):
    cap, _, meta = synth
    T = meta["scale_transform"]
    s = abs(np.linalg.det(T[:3, :3])) ** (1 / 3)
    assert 0.2 <= s <= 5.0
    col = colmap_cameras(cap.cameras, T)
    back = col.transform_world(T)
    assert torch.allclose(back.R, cap.cameras.R, atol=1e-9) and torch.allclose(back.t, cap.cameras.t, atol=1e-8)
    # a metric point seen through the COLMAP cameras lands on the same pixel
    X = torch.tensor([[0.3, -0.2, 1.1]], dtype=torch.float64)
    Xc = (torch.as_tensor(np.linalg.inv(T)) @ torch.cat([X, torch.ones(1, 1, dtype=torch.float64)], -1).T).T[:, :3]
    assert torch.allclose(col.project(Xc)[0], cap.cameras.project(X)[0], atol=1e-6)


# ------------------------------------------------------------- the detector
def test_clean_detections_match_the_projection(synth):
    cap, gt, meta = synth
    lab = meta["labels"]
    slot = _primary_slots(cap, meta)  # [F, V, P]
    F, V, P = slot.shape
    got = cap.detections.kpts.gather(2, slot.clamp_min(0)[..., None, None].expand(F, V, P, 17, 3)).double()  # [F, V, P, 17, 3]
    present = (slot >= 0)[..., None]
    clean = present & lab["in_image"] & ~lab["is_occluded"] & ~lab["is_outlier"] & ~lab["is_swapped"]
    err = (got[..., :2] - lab["gt_uv"]).norm(dim=-1)
    assert int(clean.sum()) > 1000
    assert float(err[clean].max()) < 12.0  # 2 px Gaussian noise
    assert 1.5 < float(err[clean].mean()) < 3.5
    conf = got[..., 2]
    assert float(conf[clean].min()) >= 0.75 and float(conf[clean].max()) <= 0.98
    # outliers are far and confident
    out = present & lab["is_outlier"] & ~lab["is_swapped"]
    assert int(out.sum()) > 0
    assert float(err[out].median()) > 30.0 and float(conf[out].min()) >= 0.55
    # occluded: mostly low confidence
    occ = present & lab["is_occluded"] & ~lab["is_outlier"] & ~lab["is_swapped"]
    assert float((conf[occ] < 0.5).float().mean()) > 0.7


def test_injection_rates(synth):
    cap, _, meta = synth
    c = meta["counts"]
    assert 0.07 < meta["outlier_frac"] < 0.13
    assert c["duplicates"] > 0 and c["swaps"] > 0 and c["misses"] > 0
    assert 0.1 < meta["occluded_frac"] < 0.7
    assert c["detections"] == int(cap.detections.valid.sum())


def test_occlusion_higher_in_hug_than_approach(synth):
    _, _, meta = synth
    occ = meta["occluded_frac_by_phase"]
    # measured (b4daff5, 90 frames, 10 cameras): hug - approach = +0.039 at seed 7 (seeds 0-3: +0.019 ..
    # +0.034). Before the exact mesh pass +0.065 .. +0.094: the arms sank into the partner's body and
    # hid more of it; they now stay on its surface. Half the measured difference is required.
    assert occ["hug"] > occ["approach"] + 0.02


def test_duplicates_overlap_their_original(synth):
    cap, _, meta = synth
    lab = meta["labels"]
    slot = _primary_slots(cap, meta)
    kp = cap.detections.kpts.double()
    vals = []
    for f, v, d in torch.nonzero(lab["slot_kind"] == KIND_DUPLICATE).tolist():
        p = int(lab["slot_person"][f, v, d])
        s = int(slot[f, v, p])
        assert s >= 0
        b = cap.detections.boxes[f, v, s]
        area = (b[2] - b[0]) * (b[3] - b[1])
        vals.append(float(oks(kp[f, v, d], kp[f, v, s], area.double())))
    assert len(vals) > 0 and min(vals) > 0.7


def test_slot_order_hides_identity(synth):
    cap, _, meta = synth
    slot = _primary_slots(cap, meta)
    both = (slot >= 0).all(-1)
    first0 = (slot[..., 0] < slot[..., 1])[both].float().mean()
    assert 0.25 < float(first0) < 0.75


def test_init_boxes_match_first_frame_detections(synth):
    cap, _, meta = synth
    slot = _primary_slots(cap, meta)[0]  # [V, P]
    ious = []
    for v in range(cap.num_views):
        for p in range(2):
            if not bool(cap.init_valid[v, p]) or slot[v, p] < 0:
                continue
            a = cap.init_boxes[v, p]
            b = cap.detections.boxes[0, v, slot[v, p], :4]
            iw = (torch.minimum(a[2], b[2]) - torch.maximum(a[0], b[0])).clamp_min(0)
            ih = (torch.minimum(a[3], b[3]) - torch.maximum(a[1], b[1])).clamp_min(0)
            inter = iw * ih
            ious.append(float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)))
    assert len(ious) > 0 and float(np.median(ious)) > 0.6
    assert bool(cap.init_valid.any())


def test_config_defaults():
    c = SynthConfig()
    assert c.num_cameras == 20 and c.lens == "fisheye" and c.image_size == (3840, 2160)
    assert c.noise_px == 2.0 and c.outlier_frac == 0.10 and c.swap_prob == 0.15
    assert c.duplicate_prob == 0.05 and c.miss_prob == 0.03 and c.false_positive_prob == 0.02


def test_axis_angle_gradient_is_finite_at_zero():
    """The collision resolver optimises rotation corrections that start at exactly zero."""
    aa = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_matrix(aa).sum().backward()
    assert bool(torch.isfinite(aa.grad).all())
    torch.autograd.gradcheck(axis_angle_to_matrix, (torch.randn(4, 3, dtype=torch.float64, requires_grad=True),))


def test_people_enter_and_leave():
    """Pairs walk in, interact, walk out and come back; the absent are in no image and not in the ground truth."""
    cap, gt, meta = make_capture(num_frames=300, num_cameras=8, seed=2, body=None, num_people=5, enter_leave=True)
    F, P = 300, 5
    present = meta["present"]
    assert tuple(present.shape) == (F, P) and cap.person_names == [f"aria{i:02d}" for i in range(1, 6)]
    assert torch.equal(gt.poses3d[..., 3] > 0, present[..., None].expand(F, P, 17))
    runs = (present[1:] & ~present[:-1]).sum(0) + present[0].long()
    assert int(runs.max()) >= 2  # somebody comes back
    assert int(present[0].sum()) < P  # and somebody arrives later
    lab = meta["labels"]
    sp = lab["slot_person"]  # [F, V, D] person of each detection slot
    for p in range(P):
        absent = ~present[:, p]
        assert not bool((sp[absent] == p).any())  # never detected while away
    assert bool((~cap.init_valid[:, ~present[0]]).all())  # no identity box for those not there at frame 0
    X = gt.poses3d[..., :3]
    step = (X[1:] - X[:-1]).norm(dim=-1).amax(-1)[present[1:] & present[:-1]]
    assert float(step.max()) < 0.25  # no teleports while present (a turning hand moves < 25 cm a frame)
    ankles = X[..., 15:17, 2].amin(-1)[present]
    assert float(ankles.min()) > 0.0 and float(ankles.max()) < 0.6  # on the floor (a crouch lifts a little)
    pair_gap = (X[:, 0, 11:13].mean(1) - X[:, 1, 11:13].mean(1)).norm(dim=-1)[present[:, 0] & present[:, 1]]
    assert float(pair_gap.min()) < 0.6  # the pair comes close (interaction)
