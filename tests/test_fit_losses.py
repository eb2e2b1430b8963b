"""SMPL fitting building blocks: the joints-only forward, rotations, Kabsch initialisation and
hand-checkable cases of every loss term."""

from __future__ import annotations

import copy
import math

import pytest
import torch

pytest.importorskip("smplx")

from h4d_fast.body.fast import FastBody, axis_angle_to_matrix, matrix_to_axis_angle, rot6d  # noqa: E402
from h4d_fast.config import FitConfig  # noqa: E402
from h4d_fast.constants import COCO_TO_SMPL45  # noqa: E402
from h4d_fast.pipeline import fit_losses as L  # noqa: E402
from h4d_fast.pipeline.fit import (  # noqa: E402
    init_from_keypoints,
    init_limb_pose,
    kabsch,
    swing_axis_angle,
)
from helpers import body_model_or_skip  # noqa: E402


@pytest.fixture(scope="session")
def body():
    return body_model_or_skip()


def _random_params(B: int, seed: int, pose_std: float = 0.4):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, 3, generator=g),
        pose_std * torch.randn(B, 69, generator=g),
        torch.randn(B, 10, generator=g),
        torch.randn(B, 3, generator=g),
    )


# ------------------------------------------------------------------------------ fast body
@pytest.mark.parametrize("posedirs", ["zero", "random"])
def test_fast_joints_match_smplx(body, posedirs):
    model = body
    if posedirs == "random":
        model = copy.deepcopy(body)
        g = torch.Generator().manual_seed(7)
        model.smpl.posedirs.copy_(0.02 * torch.randn(model.smpl.posedirs.shape, generator=g))
    fast = FastBody(model)
    assert fast.has_posedirs == (posedirs == "random")
    go, bp, be, tr = _random_params(16, seed=1)
    v_ref, j_ref = model.forward(go, bp, be, tr)
    j = fast.joints(go, bp, be, tr)
    assert j.shape == (16, 29, 3)
    torch.testing.assert_close(j, j_ref[:, :29], atol=1e-5, rtol=0)
    v, j45 = fast.vertices(go, bp, be, tr)
    torch.testing.assert_close(v, v_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(j45, j_ref, atol=1e-5, rtol=0)
    # rest joints are linear in the shape
    torch.testing.assert_close(fast.rest_joints(be), model.rest_joints(be), atol=1e-5, rtol=0)


def test_fast_joints_gradients_match_smplx(body):
    fast = FastBody(body)
    go, bp, be, tr = _random_params(4, seed=2)
    g = torch.Generator().manual_seed(3)
    cot = torch.randn(4, 29, 3, generator=g)
    grads = []
    for fn in (lambda *a: fast.joints(*a), lambda *a: body.forward(*a)[1][:, :29]):
        xs = [t.clone().requires_grad_(True) for t in (go, bp, be, tr)]
        (fn(*xs) * cot).sum().backward()
        grads.append([x.grad for x in xs])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3)


def test_rotation_roundtrip_and_rot6d():
    g = torch.Generator().manual_seed(0)
    ax = torch.nn.functional.normalize(torch.randn(500, 3, generator=g, dtype=torch.float64), dim=-1)
    ang = torch.rand(500, 1, generator=g, dtype=torch.float64) * (math.pi - 1e-3)
    aa = ax * ang
    aa[0] = 0.0
    aa[1] = torch.tensor([1e-7, 0, 0], dtype=torch.float64)
    R = axis_angle_to_matrix(aa)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(R), atol=1e-12, rtol=0)
    torch.testing.assert_close(matrix_to_axis_angle(R), aa, atol=1e-9, rtol=0)
    assert rot6d(R).shape == (500, 6)
    torch.testing.assert_close(rot6d(R)[:, [0, 2, 4]], R[:, :, 0])
    # gradient at zero angle is finite
    z = torch.zeros(2, 3, requires_grad=True)
    axis_angle_to_matrix(z).sum().backward()
    assert torch.isfinite(z.grad).all()


# ------------------------------------------------------------------------------ initialisation
def test_kabsch_recovers_rigid_transform():
    g = torch.Generator().manual_seed(4)
    src = torch.randn(5, 17, 3, generator=g, dtype=torch.float64)
    R = axis_angle_to_matrix(torch.randn(5, 3, generator=g, dtype=torch.float64))
    t = torch.randn(5, 3, generator=g, dtype=torch.float64)
    dst = src @ R.transpose(-1, -2) + t[:, None]
    w = torch.rand(5, 17, generator=g, dtype=torch.float64) + 0.1
    w[:, :6] = 0
    dst[:, :6] += 10.0  # outliers with zero weight do not matter
    R2, t2 = kabsch(src, dst, w)
    torch.testing.assert_close(R2, R, atol=1e-10, rtol=0)
    torch.testing.assert_close(t2, t, atol=1e-10, rtol=0)
    assert torch.linalg.det(R2).gt(0).all()
    # no weight: identity
    R3, t3 = kabsch(src, dst, torch.zeros_like(w))
    torch.testing.assert_close(R3, torch.eye(3, dtype=torch.float64).expand_as(R3))
    assert t3.abs().max() == 0


def test_init_recovers_orient_and_transl_about_the_root(body):
    """SMPL rotates about J0: transl = t + R J0 - J0. A model whose template is shifted has
    J0 far from the origin, so a wrong correction would show."""
    model = copy.deepcopy(body)
    model.smpl.v_template.add_(torch.tensor([0.3, -0.4, 0.2]))
    fast = FastBody(model)
    F, P = 4, 2
    g = torch.Generator().manual_seed(5)
    betas = torch.randn(P, 10, generator=g)
    go = torch.randn(F, P, 3, generator=g)
    tr = torch.randn(F, P, 3, generator=g)
    N = F * P
    J = fast.joints(go.reshape(N, 3), torch.zeros(N, 69), betas[None].expand(F, P, 10).reshape(N, 10), tr.reshape(N, 3))
    kp = J[:, list(COCO_TO_SMPL45)].view(F, P, 17, 3)
    assert fast.rest_joints(betas)[:, 0].norm(dim=-1).min() > 0.3  # J0 is far from the origin
    w = torch.ones(F, P, 17)
    w[1, 0, 3:] = 0  # frame 1 of person 0: 3 valid keypoints -> filled from its neighbours
    go2, tr2, ok = init_from_keypoints(kp, w, fast, betas)
    assert not ok[1, 0] and ok.sum() == F * P - 1
    m = ok[..., None]
    torch.testing.assert_close(torch.where(m, axis_angle_to_matrix(go2).flatten(-2), 0), torch.where(m, axis_angle_to_matrix(go).flatten(-2), 0), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.where(m, tr2, 0), torch.where(m, tr, 0), atol=1e-4, rtol=0)
    # the filled frame: rotation of a neighbour, translation halfway between frames 0 and 2
    torch.testing.assert_close(tr2[1, 0], 0.5 * (tr[0, 0] + tr[2, 0]), atol=1e-4, rtol=0)
    assert any(torch.allclose(go2[1, 0], go2[k, 0]) for k in (0, 2))


def test_limb_swing_init_points_limbs_along_keypoints(body):
    fast = FastBody(body)
    F, P = 3, 1
    g = torch.Generator().manual_seed(6)
    bp = torch.zeros(F, P, 69)
    bpv = bp.view(F, P, 23, 3)
    bpv[..., 15, :] = 0.6 * torch.randn(F, P, 3, generator=g)  # left shoulder
    bpv[..., 3, 0] = 0.8  # left knee
    go = torch.randn(F, P, 3, generator=g)
    betas = torch.zeros(P, 10)
    J = fast.joints(go.reshape(-1, 3), bp.reshape(-1, 69), betas.expand(F, 10), None)
    kp = J[:, list(COCO_TO_SMPL45)].view(F, P, 17, 3)
    w = torch.ones(F, P, 17)
    bp0 = init_limb_pose(kp, w, go, fast, betas)
    J0 = fast.joints(go.reshape(-1, 3), bp0.reshape(-1, 69), betas.expand(F, 10), None)[:, list(COCO_TO_SMPL45)].view(F, P, 17, 3)
    for a, b in ((5, 7), (13, 15), (11, 13)):  # upper arm, shank, thigh directions
        d_true = torch.nn.functional.normalize(kp[..., b, :] - kp[..., a, :], dim=-1)
        d_init = torch.nn.functional.normalize(J0[..., b, :] - J0[..., a, :], dim=-1)
        assert (d_true * d_init).sum(-1).min() > 0.999
    # swing of opposite vectors is a half turn
    aa = swing_axis_angle(torch.tensor([[1.0, 0, 0]]), torch.tensor([[-2.0, 0, 0]]))
    torch.testing.assert_close(aa.norm(dim=-1), torch.tensor([math.pi]))


# ------------------------------------------------------------------------------ loss terms
def test_gmof_and_keypoint_loss():
    assert float(L.gmof(torch.tensor(0.04), 0.2)) == pytest.approx(0.02)
    pred = torch.zeros(1, 2, 3)
    tgt = torch.zeros(1, 2, 3)
    tgt[0, 0, 0] = 0.02  # 2 cm error on the first keypoint
    tgt[0, 1, 0] = 5.0  # the second one has weight 0
    w = torch.tensor([[1.0, 0.0]])
    assert float(L.keypoint_loss(pred, tgt, w, None)) == pytest.approx(4.0)  # (2 cm / 1 cm)^2
    s = 0.1
    expect = s * s * 0.02**2 / (s * s + 0.02**2) / L.S_KP**2
    assert float(L.keypoint_loss(pred, tgt, w, s)) == pytest.approx(expect)
    # robust: a 1 m outlier costs at most sigma^2 / S_KP^2
    tgt[0, 0, 0] = 1.0
    assert float(L.keypoint_loss(pred, tgt, w, s)) < s * s / L.S_KP**2


def test_pose_reg_and_hyperextension():
    bp = torch.full((2, 69), 0.1)
    assert float(L.pose_reg_loss(bp)) == pytest.approx(0.01)
    z = torch.zeros(1, 69)
    assert float(L.hyperextension_loss(z)) == 0.0
    bend = z.clone()
    bend[0, 52] = -0.5  # left elbow bending naturally (negative y)
    bend[0, 9] = 0.7  # left knee bending naturally (positive x)
    assert float(L.hyperextension_loss(bend)) == 0.0
    hyper = z.clone()
    hyper[0, 52] = 0.5
    assert float(L.hyperextension_loss(hyper)) == pytest.approx(math.expm1(0.5) ** 2 / 4)


def _stick_figure(scale: float = 1.0) -> torch.Tensor:
    """COCO points with known limb lengths: legs and arms straight down/out along axes."""
    X = torch.zeros(17, 3)
    X[11], X[12] = torch.tensor([0.1, 0, 1.0]), torch.tensor([-0.1, 0, 1.0])  # hips
    X[13], X[14] = X[11] - torch.tensor([0, 0, 0.45]), X[12] - torch.tensor([0, 0, 0.45])  # knees
    X[15], X[16] = X[13] - torch.tensor([0, 0, 0.4]), X[14] - torch.tensor([0, 0, 0.4])  # ankles
    X[5], X[6] = torch.tensor([0.2, 0, 1.5]), torch.tensor([-0.2, 0, 1.5])  # shoulders
    X[7], X[8] = X[5] + torch.tensor([0.3, 0, 0]), X[6] - torch.tensor([0.3, 0, 0])  # elbows
    X[9], X[10] = X[7] + torch.tensor([0.25, 0, 0]), X[8] - torch.tensor([0.25, 0, 0])  # wrists
    return X * scale


def test_limb_targets_and_limb_loss():
    X = _stick_figure()
    F = 5
    kp = X.expand(F, 1, 17, 3).clone()
    kp[0, 0, 15, 2] -= 0.3  # one frame with a long shank: the median ignores it
    valid = torch.ones(F, 1, 17, dtype=torch.bool)
    valid[1:3, 0, 9] = False  # left wrist missing in two frames
    tgt, ok = L.target_limb_lengths(kp, valid)
    assert ok.all()
    assert float(tgt[0, 0]) == pytest.approx(0.4)  # left shank (15, 13)
    assert float(tgt[0, 1]) == pytest.approx(0.45)  # left thigh
    assert float(tgt[0, 10]) == pytest.approx(0.25)  # left forearm
    pred = X.expand(F, 1, 17, 3).clone()
    assert float(L.limb_length_loss(pred, tgt, ok)) == pytest.approx(0.0, abs=1e-10)
    pred[:, :, 15, 2] -= L.S_LEN  # left shank one scale too long in every frame
    assert float(L.limb_length_loss(pred, tgt, ok)) == pytest.approx(1.0 / len(L.FIT_LIMBS), rel=1e-4)
    # symmetry of the model's own limbs: the same shank difference, in one of the pairs
    assert float(L.symmetry_loss(pred)) == pytest.approx(1.0 / len(L.FIT_LIMB_PAIRS), rel=1e-4)
    assert float(L.symmetry_loss(X.expand(F, 1, 17, 3))) == pytest.approx(0.0, abs=1e-10)


def test_temporal_loss():
    F = 6
    t = torch.arange(F, dtype=torch.float32)[:, None, None, None]
    joints = torch.zeros(F, 1, 4, 3) + 0.03 * t  # constant velocity: 3 cm/frame per axis
    r6 = rot6d(axis_angle_to_matrix(torch.full((1, 1, 23, 3), 0.3))).expand(F, 1, 23, 6)
    assert float(L.temporal_loss(r6, joints, "acceleration")) == pytest.approx(0.0, abs=1e-8)
    vel = float(L.temporal_loss(r6, joints, "velocity"))
    assert vel == pytest.approx(3 * 0.03**2 / L.S_POS["velocity"] ** 2, rel=1e-4)
    # one frame's joints displaced by a: second differences a, -2a, a at three frames
    j2 = joints.clone()
    j2[3, :, :, 0] += 0.01
    acc = float(L.temporal_loss(r6, j2, "acceleration"))
    assert acc == pytest.approx((1 + 4 + 1) * 0.01**2 / (F - 2) / L.S_POS["acceleration"] ** 2, rel=1e-4)
    assert float(L.temporal_loss(r6[:2], joints[:2], "acceleration")) == 0.0


def test_shape_prior_and_collision_term_trivial_cases(body):
    assert float(L.shape_prior_loss(torch.full((2, 10), 2.0))) == pytest.approx(4.0)
    v = torch.zeros(3, 1, 10, 3)
    assert float(L.collision_term(v, body.faces, 3)) == 0.0  # one person: no pair
    calls = []

    def fake(a, b, fa, fb, **kw):
        calls.append((a.shape[0], kw))
        return torch.full((a.shape[0],), 2e-4)

    v2 = torch.zeros(2, 3, 10, 3)
    # 3 pairs x 2 frames x 2e-4 / (F = 4 frames x S_COLL)
    assert float(L.collision_term(v2, body.faces, 4, loss_fn=fake, grid_size=16)) == pytest.approx(3 * 2 * 2e-4 / (4 * L.S_COLL))
    assert calls == [(6, {"grid_size": 16})]  # every pair of every frame in one batched call


def test_fit_config_weights_are_the_paper_table():
    cfg = FitConfig()
    order = ("joint", "reg", "limb", "symm", "temporal", "shape", "collision")
    assert [cfg.stage_weights(1)[k] for k in order] == [1, 0, 0, 0, 0, 0, 0]
    assert [cfg.stage_weights(2)[k] for k in order] == [0, 0, 1, 0.2, 0, 0.005, 0]
    assert [cfg.stage_weights(3)[k] for k in order] == [10, 0.001, 1, 0, 1, 0, 1]
    with pytest.raises(ValueError):
        cfg.stage_weights(4)
