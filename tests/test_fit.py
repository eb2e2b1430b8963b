"""SMPL fitting of synthetic keypoints generated from the body model itself: accuracy, the
collision stage, initial parameters, progress and edge cases."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("smplx")

from h4d_fast.body.fast import FastBody, axis_angle_to_matrix, matrix_to_axis_angle  # noqa: E402
from h4d_fast.config import FitConfig  # noqa: E402
from h4d_fast.constants import COCO_TO_SMPL45  # noqa: E402
from h4d_fast.eval.metrics import mpjpe24, pve  # noqa: E402
from h4d_fast.ops.penetration import penetration_volume  # noqa: E402
from h4d_fast.pipeline import fit_losses as L  # noqa: E402
from h4d_fast.pipeline.fit import FitResult, fit_iterations, fit_sequence, model_outputs  # noqa: E402
from helpers import body_model_or_skip  # noqa: E402


@pytest.fixture(scope="session")
def body():
    return body_model_or_skip()


def _upright(yaw: torch.Tensor) -> torch.Tensor:
    """Axis-angle of 'model y-up -> world z-up, then yaw about z' for ``yaw [...]``."""
    Rx = axis_angle_to_matrix(torch.tensor([math.pi / 2, 0.0, 0.0]))
    z = torch.zeros_like(yaw)
    return matrix_to_axis_angle(axis_angle_to_matrix(torch.stack([z, z, yaw], -1)) @ Rx)


def synthetic_sequence(body, F: int = 20, seed: int = 0, gap: float = 0.9, noise: float = 0.005) -> dict:
    """Two people with known shapes and smooth moderate motion, and their noisy COCO keypoints.

    Limb joints (hips, knees, shoulders, elbows) move with 0.3 rad spread, neck and head 0.15,
    the rest 0.1 and the collars 0.05; arms hang down; people face each other ``gap`` apart.
    """
    P = 2
    g = torch.Generator().manual_seed(seed)
    std = torch.full((23,), 0.1)
    for j in (1, 2, 4, 5, 16, 17, 18, 19):
        std[j - 1] = 0.3
    for j in (12, 15):
        std[j - 1] = 0.15
    for j in (13, 14):
        std[j - 1] = 0.05
    std = std.repeat_interleave(3)
    t = torch.arange(F, dtype=torch.float32)[:, None, None]
    base = std * torch.randn(1, P, 69, generator=g)
    amp = 0.5 * std * torch.randn(1, P, 69, generator=g)
    phase = 2 * math.pi * torch.rand(1, P, 69, generator=g)
    bp = base + amp * torch.sin(2 * math.pi * t / 30.0 + phase)
    bpv = bp.view(F, P, 23, 3)
    bpv[..., 15, 2] -= 1.1  # arms down
    bpv[..., 16, 2] += 1.1
    bpv[..., 3, 0] = bpv[..., 3, 0].abs()  # knees bend forward only
    bpv[..., 4, 0] = bpv[..., 4, 0].abs()
    betas = torch.randn(P, 10, generator=g).clamp(-2, 2)
    yaw = torch.tensor([0.0, math.pi]) + 0.3 * torch.sin(2 * math.pi * t[..., 0] / 40.0)
    go = _upright(yaw)
    tr = torch.zeros(F, P, 3)
    tr[..., 2] = 1.0
    tr[..., 0] = torch.tensor([-gap / 2, gap / 2]) + 0.05 * torch.sin(2 * math.pi * t[..., 0] / 25.0)
    N = F * P
    v, j = FastBody(body).vertices(go.reshape(N, 3), bp.reshape(N, 69), betas[None].expand(F, P, 10).reshape(N, 10), tr.reshape(N, 3))
    v, j = v.view(F, P, -1, 3), j.view(F, P, 45, 3)
    kp = j[:, :, list(COCO_TO_SMPL45)] + noise * torch.randn(F, P, 17, 3, generator=g)
    poses3d = torch.cat([kp, torch.ones(F, P, 17, 1)], -1)
    return {"global_orient": go, "body_pose": bp, "betas": betas, "transl": tr, "vertices": v, "joints": j, "poses3d": poses3d}


def test_fit_recovers_synthetic_meshes(body):
    """20 frames x 2 people, 5 mm keypoint noise, default settings (collision stage off)."""
    gt = synthetic_sequence(body, F=20)
    cfg = FitConfig(collision=False)
    done = []
    res = fit_sequence(gt["poses3d"], body, cfg, progress=done.append)
    v, j = model_outputs(body, res)
    mpjpe = float(mpjpe24(j, gt["joints"]).mean())
    err_v = float(pve(v, gt["vertices"]).mean())
    assert mpjpe < 25.0, res.stats
    assert err_v < 30.0, res.stats
    assert res.betas.shape == (2, 10) and res.body_pose.shape == (20, 2, 69)
    # the leading shape coefficient (height/size) is recovered
    assert (res.betas[:, 0] - gt["betas"][:, 0]).abs().max() < 0.5
    st = res.stats
    assert st["kp_error_mm"] < 10.0 < st["init_kp_error_mm"]
    assert len(st["stages"]) == 3 * cfg.epochs and st["iterations"] > 0 and st["evaluations"] >= st["iterations"]
    assert done == sorted(done) and 0 < done[-1] <= fit_iterations(cfg, 2)
    arrays = res.as_arrays()
    back = FitResult.from_arrays(arrays)
    torch.testing.assert_close(back.body_pose, res.body_pose)


def test_fit_with_initial_parameters_and_one_person(body):
    """Given the true parameters as init the fit stays there; one person (no collision stage);
    frames without keypoints are carried by their neighbours."""
    gt = synthetic_sequence(body, F=6, noise=0.0)
    poses = gt["poses3d"][:, :1].clone()
    poses[2, 0, :, 3] = 0  # a frame without any keypoint
    init = {k: gt[k][:, :1].numpy() for k in ("global_orient", "body_pose", "transl")}
    init["betas"] = gt["betas"][:1].numpy()
    cfg = FitConfig(epochs=1, iters_stage1=5, iters_stage2=5, iters_stage3=10)
    res = fit_sequence(poses, body, cfg, init=init)
    assert "contact_frames" not in res.stats  # one person: no collision stage
    _, j = model_outputs(body, res)
    assert float(mpjpe24(j, gt["joints"][:, :1]).mean()) < 10.0
    # without init: the empty frame is initialised from its neighbours and stays finite
    res2 = fit_sequence(poses, body, cfg)
    assert res2.stats["init_frames_kabsch"] == 5
    assert all(torch.isfinite(getattr(res2, k)).all() for k in ("global_orient", "body_pose", "betas", "transl"))


def test_fit_rejects_bad_input(body):
    with pytest.raises(ValueError, match="17, 4"):
        fit_sequence(torch.zeros(3, 2, 17, 3), body, FitConfig())
    with pytest.raises(ValueError, match="optimizer"):
        fit_sequence(torch.zeros(3, 2, 17, 4), body, FitConfig(optimizer="sgd"))


def test_adam_optimizer_runs(body):
    gt = synthetic_sequence(body, F=4)
    cfg = FitConfig(optimizer="adam", epochs=1, iters_stage1=10, iters_stage2=5, iters_stage3=30, collision=False)
    res = fit_sequence(gt["poses3d"], body, cfg)
    assert res.stats["kp_error_mm"] < res.stats["init_kp_error_mm"]


# ------------------------------------------------------------------------------ collision
def _fast_collision_backend() -> bool:
    from h4d_fast.ops import _backend

    return _backend.resolve("collision_loss", torch.device("cpu")) != "torch"


def facing_pair(body, F: int, d: float, seed: int = 1, noise: float = 0.005) -> dict:
    """Two people in a neutral pose, arms down, facing each other with their centres ``d`` apart
    along x (``d`` < 0.4 m: the bellies and chests overlap)."""
    g = torch.Generator().manual_seed(seed)
    bp = 0.03 * torch.randn(F, 2, 69, generator=g)
    bpv = bp.view(F, 2, 23, 3)
    bpv[..., 15, 2] -= 1.2
    bpv[..., 16, 2] += 1.2
    go = _upright(torch.tensor([math.pi / 2, -math.pi / 2])).expand(F, 2, 3).contiguous()
    tr = torch.zeros(F, 2, 3)
    tr[..., 2] = 1.0
    tr[:, 0, 0], tr[:, 1, 0] = -d / 2, d / 2
    v, j = FastBody(body).vertices(go.reshape(-1, 3), bp.reshape(-1, 69), torch.zeros(2 * F, 10), tr.reshape(-1, 3))
    v, j = v.view(F, 2, -1, 3), j.view(F, 2, 45, 3)
    kp = j[:, :, list(COCO_TO_SMPL45)] + noise * torch.randn(F, 2, 17, 3, generator=g)
    return {"vertices": v, "poses3d": torch.cat([kp, torch.ones(F, 2, 17, 1)], -1)}


@pytest.mark.skipif(not _fast_collision_backend(), reason="collision_loss has only its brute-force torch backend here (minutes per frame on CPU)")
def test_collision_term_is_zero_for_separated_bodies(body):
    pair = facing_pair(body, F=2, d=1.5)
    v = pair["vertices"].clone().requires_grad_(True)
    loss = L.collision_term(v, body.faces, 2)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert v.grad.abs().max() == 0
    assert float(penetration_volume(v[:, 0].detach(), v[:, 1].detach(), body.faces).max()) == 0.0
    # the fit skips the collision stage when no frame has the two bodies near each other
    res = fit_sequence(pair["poses3d"], body, FitConfig(epochs=1, iters_stage1=3, iters_stage2=3, iters_stage3=5, compare_collision=True))
    assert res.stats["contact_frames"] == 0 and res.stats["penetration_reduction"] == 0.0
    assert res.stats["stages"][-1]["epoch"] == 0
    # overlapping: positive, and the gradient pushes the bodies apart along x
    close = facing_pair(body, F=1, d=0.3)["vertices"].clone().requires_grad_(True)
    loss = L.collision_term(close, body.faces, 1)
    assert float(loss.detach()) > 0
    loss.backward()
    gx = close.grad[0, :, :, 0].sum(-1)  # total x force on each person (descent = -grad)
    assert gx[0] > 0 > gx[1]  # person 0 (at -x) is pushed to -x, person 1 to +x


@pytest.mark.skipif(not _fast_collision_backend(), reason="collision_loss has only its brute-force torch backend here (minutes per frame on CPU)")
def test_collision_stage_reduces_penetration(body):
    pair = facing_pair(body, F=3, d=0.36)
    gt_pen = penetration_volume(pair["vertices"][:, 0], pair["vertices"][:, 1], body.faces)
    assert gt_pen.mean() > 5.0  # the keypoints themselves come from interpenetrating bodies
    cfg = FitConfig(epochs=1, iters_stage1=10, iters_stage2=5, iters_stage3=40, iters_collision=15, compare_collision=True)
    res = fit_sequence(pair["poses3d"], body, cfg)
    st = res.stats
    assert st["contact_frames"] == 3
    assert st["penetration_without_collision_cm3"] > 5.0
    assert st["penetration_after_cm3"] < 0.8 * st["penetration_without_collision_cm3"]
    assert st["penetration_reduction"] > 0.2
    assert st["penetration_after_cm3"] < st["penetration_before_cm3"]
    # the keypoint fit pays only a little for it
    assert st["kp_error_mm"] < st["kp_error_without_collision_mm"] + 10.0
    coll = [r for r in st["stages"] if r["epoch"] == "collision"]
    assert len(coll) == 1 and "collision" in coll[0]["terms"]
    assert st["stages"][-1]["epoch"] in ("collision", "collision-refine")  # the follow-up pass where frames stay deep
    # the reported penetration is the measure of the returned meshes
    v, _ = model_outputs(body, res)
    pen = penetration_volume(v[:, 0], v[:, 1], body.faces)
    assert float(pen.mean()) == pytest.approx(st["penetration_after_cm3"], rel=1e-3, abs=1e-3)


@pytest.mark.skipif(not _fast_collision_backend(), reason="collision_loss has only its brute-force torch backend here (minutes per frame on CPU)")
def test_sparse_collision_gradient_equals_the_full_mesh_gradient(body):
    """fit.collision_sparse_grad re-skins only the vertices the collision term touches: the value
    and the gradient with respect to every parameter equal differentiating through the full meshes."""
    from h4d_fast.pipeline.fit import _Fitter

    pair = facing_pair(body, F=3, d=0.34)
    F, P = 3, 2
    g = torch.Generator().manual_seed(5)
    fast = FastBody(body)
    kp = pair["poses3d"][..., :3]
    w = pair["poses3d"][..., 3]
    go = _upright(torch.tensor([math.pi / 2, -math.pi / 2])).expand(F, P, 3).contiguous()
    tr = torch.zeros(F, P, 3)
    tr[..., 2] = 1.0
    tr[:, 0, 0], tr[:, 1, 0] = -0.17, 0.17
    bp = 0.2 * torch.randn(F, P, 69, generator=g)
    be = 0.5 * torch.randn(P, 10, generator=g)
    grads, values = [], []
    for sparse in (True, False):
        params = {k: v.clone().requires_grad_(True) for k, v in
                  {"global_orient": go, "body_pose": bp, "betas": be, "transl": tr}.items()}
        fitter = _Fitter(kp, w, fast, FitConfig(collision_sparse_grad=sparse), params)
        fitter.contact = torch.tensor([0, 2])  # a subset of the frames
        loss = fitter.collision()
        loss.backward()
        values.append(loss.detach())
        grads.append({k: v.grad.clone() for k, v in params.items()})
    assert float(values[0]) > 0
    torch.testing.assert_close(values[0], values[1])
    for k in grads[0]:
        assert grads[1][k].abs().max() > 0 or k == "body_pose"
        # float32, summed over thousands of vertices in a different order: an absolute tolerance
        # relative to the gradient's scale (entries reach ~150 here; measured max difference 8e-5,
        # one entry of 0.012 differed by 2e-6 > the former fixed atol of 1e-6)
        scale = float(grads[1][k].abs().max())
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-4, atol=1e-6 * max(scale, 1.0), msg=k)
    assert grads[0]["transl"][1].abs().max() == 0  # frame 1 is not in the contact set


def _pair_fitter(body, ds: list[float], cfg: FitConfig | None = None):
    """A :class:`_Fitter` holding two facing people per frame, centres ``ds[t]`` apart (no fit)."""
    from h4d_fast.pipeline.fit import _Fitter

    F, P = len(ds), 2
    go = _upright(torch.tensor([math.pi / 2, -math.pi / 2])).expand(F, P, 3).contiguous()
    tr = torch.zeros(F, P, 3)
    tr[..., 2] = 1.0
    d = torch.tensor(ds)
    tr[:, 0, 0], tr[:, 1, 0] = -d / 2, d / 2
    bp = torch.zeros(F, P, 69)
    bp.view(F, P, 23, 3)[..., 15, 2] -= 1.2
    bp.view(F, P, 23, 3)[..., 16, 2] += 1.2
    params = {"global_orient": go, "body_pose": bp, "betas": torch.zeros(P, 10), "transl": tr}
    kp = torch.zeros(F, P, 17, 3)
    return _Fitter(kp, torch.ones(F, P, 17), FastBody(body), cfg or FitConfig(), params)


@pytest.mark.skipif(not _fast_collision_backend(), reason="collision_loss has only its brute-force torch backend here (minutes per frame on CPU)")
def test_deep_frames_finds_the_frames_still_penetrating(body):
    """The follow-up pass's selection: frames where a vertex lies deeper than the threshold inside
    the other body (exact depth), not those where the bodies are apart or only just meet."""
    from h4d_fast.ops.penetration import inside_depth

    fitter = _pair_fitter(body, [1.2, 0.36, 0.30, 0.345])
    fitter.select_contact(0.1)
    assert fitter.contact.tolist() == [1, 2, 3]
    with torch.no_grad():
        v = fitter.body_vertices(torch.arange(8)).view(4, 2, -1, 3)
    depth = torch.maximum(inside_depth(v[:, 0], v[:, 1], body.faces).amax(-1), inside_depth(v[:, 1], v[:, 0], body.faces).amax(-1))
    thr = 0.5 * float(depth[1] + depth[3])  # between the shallower and the deeper overlap
    assert float(depth[0]) == 0 and 0 < float(depth[1]) < thr < float(depth[3]) < float(depth[2])
    assert fitter.deep_frames(thr).tolist() == [2, 3]
    assert fitter.deep_frames(float(depth[2]) + 1e-3).tolist() == []
    # the pass's weights: the deep frames' pairs only; setting the contact frames resets them
    fitter.weight_frames(torch.tensor([2, 3]), 10.0)
    assert fitter.pair_weight.tolist() == [1.0, 10.0, 10.0]
    fitter.contact = fitter.contact
    assert fitter.pair_weight is None


@pytest.mark.skipif(not _fast_collision_backend(), reason="collision_loss has only its brute-force torch backend here (minutes per frame on CPU)")
def test_collision_refine_pass_undoes_what_the_stage_leaves_deep(body):
    """Keypoints of deeply overlapping bodies: the collision stage stops at a balance with the
    keypoint term and leaves the bodies deep in each other; the follow-up pass (default on) takes
    the frames still deeper than collision_refine_depth_mm further out."""
    from h4d_fast.ops.penetration import inside_depth

    pair = facing_pair(body, F=3, d=0.30)
    out = {}
    for refine in (0.0, 5.0):
        cfg = FitConfig(epochs=1, iters_stage1=10, iters_stage2=5, iters_stage3=40, iters_collision=15, collision_refine_depth_mm=refine)
        res = fit_sequence(pair["poses3d"], body, cfg)
        v, _ = model_outputs(body, res)
        depth = torch.maximum(inside_depth(v[:, 0], v[:, 1], body.faces).amax(-1), inside_depth(v[:, 1], v[:, 0], body.faces).amax(-1))
        out[refine] = (res.stats, float(depth.max()) * 1000.0, float(penetration_volume(v[:, 0], v[:, 1], body.faces).mean()))
    st0, depth0, vol0 = out[0.0]
    st1, depth1, vol1 = out[5.0]
    assert "refine_frames" not in st0 and st0["stages"][-1]["epoch"] == "collision"
    assert st1["refine_frames"] >= 1 and st1["stages"][-1]["epoch"] == "collision-refine"
    # measured (CPU, numba backend, 2 of 3 frames refined): without the pass 10.3 mm deepest vertex,
    # 3.40 cm^3 per frame; with it 1.37 mm, 0.029 cm^3 (keypoint error 21.5 -> 22.9 mm: the
    # keypoints come from overlapping bodies). The margins: the pass must at least halve both
    # (measured 7.5x and 115x), so a change of backend or float order cannot flip the test.
    assert depth0 > 5.0
    assert depth1 < 0.5 * depth0 and vol1 < 0.5 * vol0
    assert st1["kp_error_mm"] < st0["kp_error_mm"] + 10.0


@pytest.mark.skipif(not _fast_collision_backend(), reason="collision_loss has only its brute-force torch backend here (minutes per frame on CPU)")
def test_pair_weight_scales_each_pairs_collision_term(body):
    fitter = _pair_fitter(body, [0.36, 0.30])
    fitter.select_contact(0.1)
    ids, pairs = fitter.collision_pairs()
    with torch.no_grad():
        V = fitter.body_vertices(ids)
    w = torch.tensor([3.0, 0.5])
    per = [float(L.pair_collision_term(V, pairs[q : q + 1], body.faces, 2)) for q in range(2)]
    assert min(per) > 0
    lw = L.pair_collision_term(V, pairs, body.faces, 2, pair_weight=w)
    assert float(lw) == pytest.approx(3.0 * per[0] + 0.5 * per[1], rel=1e-5)
    lg, g = L.pair_collision_term_grad(V, pairs, body.faces, 2, pair_weight=w)
    Vd = V.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(L.pair_collision_term(Vd, pairs, body.faces, 2, pair_weight=w), Vd)
    assert float(lg) == pytest.approx(float(lw), rel=1e-5)
    torch.testing.assert_close(g, ga, rtol=1e-4, atol=1e-6 * float(ga.abs().max()))


def test_skin_vertices_equals_rows_of_the_full_mesh(body):
    fast = FastBody(body)
    g = torch.Generator().manual_seed(3)
    B = 3
    go, bp, be = 0.5 * torch.randn(B, 3, generator=g), 0.3 * torch.randn(B, 69, generator=g), torch.randn(B, 10, generator=g)
    full, _ = fast.vertices(go, bp, be, None)
    rot = fast.rotations(go, bp)
    J = fast.rest_joints(be)
    GR, Gt = fast.kinematics(rot, J)
    batch = torch.tensor([0, 2, 1, 2, 0])
    vertex = torch.tensor([0, 17, 500, full.shape[1] - 1, 4000])
    rows = fast.skin_vertices(batch, vertex, GR, Gt, J, be)
    torch.testing.assert_close(rows, full[batch, vertex], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not _fast_collision_backend(), reason="collision_loss has only its brute-force torch backend here (minutes per frame on CPU)")
def test_signed_collision_field_pushes_only_near_the_partner(body):
    """fit.collision_field=signed: the term's gradient reaches the vertices inside the partner or
    within about the clearance of it, not those a cell away (the inside-only grid's bleed)."""
    from h4d_fast.ops.contact import pair_contact

    ds = [0.33, 0.36, 0.385, 0.40]
    fitter = _pair_fitter(body, ds, FitConfig(collision_field="signed", collision_clearance_mm=3.0))
    kw = fitter.collision_kw()
    assert kw["field"] == "signed" and kw["margin"] == pytest.approx(0.003) and kw["taper"] == 0.0
    tapered = _pair_fitter(body, ds[:1], FitConfig(collision_taper_mm=10.0)).collision_kw()
    assert tapered["field"] == "inside" and tapered["taper"] == pytest.approx(0.01) and tapered["margin"] == 0.0
    fitter.collision_field = "inside"  # the follow-up pass's override (fit.collision_refine_field)
    assert fitter.collision_kw()["field"] == "inside" and fitter.collision_kw()["margin"] == 0.0
    fitter.collision_field = None
    # the exact field has CPU kernels only: on another device a clear error naming the setting
    from h4d_fast.errors import InputError

    exact = _pair_fitter(body, ds[:1], FitConfig(collision_field="exact"))
    exact.kp = exact.kp.to("meta")
    with pytest.raises(InputError, match=r"fit.collision_field.*CPU kernels only"):
        exact.collision_kw()
    fitter.select_contact(0.1)
    ids, pairs = fitter.collision_pairs()
    with torch.no_grad():
        V = fitter.body_vertices(ids)
    v = V.view(len(ds), 2, -1, 3)
    pc = pair_contact(v[:, 0], v[:, 1], body.faces, contact_mm=40)

    def signed(q):  # signed distance to the partner (> 0 inside; -inf beyond the 40 mm band)
        d = torch.nan_to_num(q.dist, nan=float("inf"))
        return torch.where(q.inside, d, -d)

    sd = torch.stack([signed(pc.a_in_b), signed(pc.b_in_a)], 1).view(-1, v.shape[2])  # [U, N] metres
    reach = {}
    for field, m in (("inside", 0.0), ("signed", 0.003)):
        _, g = L.pair_collision_term_grad(V, pairs, body.faces, len(ds), grid_size=64, field=field, margin=m)
        pushed = (g != 0).any(-1)
        reach[field] = float(sd[pushed].min()) * 1000.0
    # measured (G = 64, cells 3.5 cm): the inside-only grid pushes vertices 14.6 mm outside the partner,
    # the signed field with 3 mm of clearance 2.5 mm (its interpolation error near convex parts is a few
    # mm); the bounds leave 2x room either way
    assert reach["inside"] < -10.0
    assert reach["signed"] > -6.0


@pytest.mark.skipif(not _fast_collision_backend(), reason="collision_loss has only its brute-force torch backend here (minutes per frame on CPU)")
def test_inside_only_collision_term_does_not_push_touching_bodies(body):
    """fit.collision_inside_only: the op's trilinear samples also push vertices outside the
    partner (the bleed, up to a cell); the inside-only term keeps the op's gradient on exactly the
    candidate vertices inside the partner (exact test), with their exact depth as its value."""
    from h4d_fast.ops.penetration import inside_depth

    ds = [0.33, 0.36, 0.385]
    fitter = _pair_fitter(body, ds)
    fitter.select_contact(0.1)
    ids, pairs = fitter.collision_pairs()
    with torch.no_grad():
        V = fitter.body_vertices(ids)
    v = V.view(len(ds), 2, -1, 3)
    d01, d10 = inside_depth(v[:, 0], v[:, 1], body.faces), inside_depth(v[:, 1], v[:, 0], body.faces)
    assert float(torch.maximum(d01.amax(-1), d10.amax(-1)).max()) > 0  # the set-up does penetrate
    lg, g = L.pair_collision_term_grad(V, pairs, body.faces, len(ds), grid_size=64)  # the fit's grid
    li, gi = L.pair_collision_term_grad_inside(V, pairs, body.faces, len(ds), grid_size=64)
    # where kept, the gradient is the op's; kept exactly on the vertices inside the partner
    inside = torch.stack([d01 > 0, d10 > 0], 1).view(-1, d01.shape[-1])  # [U, N] (ids are frame * 2 + person)
    kept = (gi != 0).any(-1)
    bleed = (g != 0).any(-1) & ~inside  # vertices the op pushes though they are outside the partner
    assert bool(bleed.any()) and not bool(kept[bleed].any())
    assert bool(kept.any()) and bool((kept <= inside).all())
    assert bool((kept == (inside & (g != 0).any(-1))).all())
    torch.testing.assert_close(gi[kept], g[kept])
    # the value: the exact depths in the op's units (depth / half box, mean over vertices, / (F S_COLL))
    from h4d_fast.ops._collision_torch import box_normalization

    half = box_normalization(V)[1].view(len(ds), 2)
    N = V.shape[1]
    cand = (g != 0).any(-1).view(len(ds), 2, -1)  # only the op's candidates are tested
    ref = (((d01 * cand[:, 0]).sum(-1) / half[:, 1] + (d10 * cand[:, 1]).sum(-1) / half[:, 0]) / N).sum() / (len(ds) * L.S_COLL)
    assert float(li) == pytest.approx(float(ref), rel=1e-4)
