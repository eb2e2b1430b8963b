"""The fit without autograd, against autograd and the loss definitions: analytic Jacobians and
reverse-mode gradients of the joints-only forward, sparse skinning and its pose gradient, the
temporal band, the objective per stage (collision stage included), the L-BFGS against
torch.optim.LBFGS, the Gauss-Newton pieces (PCG step against a dense solve), and the CUDA paths
(graph replay, device parity; marked gpu)."""

from __future__ import annotations

import copy
import importlib.util
import math

import pytest
import torch

pytest.importorskip("smplx")

from h4d_fast.body.fast import FastBody, rot6d  # noqa: E402
from h4d_fast.body.jacobian import joints_with_jacobian, so3_right_jacobian  # noqa: E402
from h4d_fast.body.sparse_skin import SparseSkin  # noqa: E402
from h4d_fast.config import FitConfig  # noqa: E402
from h4d_fast.pipeline import fit as FT  # noqa: E402
from h4d_fast.pipeline.fit_gn import GaussNewton, pcg  # noqa: E402
from h4d_fast.pipeline.fit_objective import TemporalBand  # noqa: E402
from helpers import body_model_or_skip  # noqa: E402


@pytest.fixture(scope="module")
def body():
    return body_model_or_skip()


def _with_posedirs(body, seed: int = 7):
    model = copy.deepcopy(body)
    g = torch.Generator().manual_seed(seed)
    model.smpl.posedirs.copy_(0.02 * torch.randn(model.smpl.posedirs.shape, generator=g))
    return model


def _per_body(jac: torch.Tensor, B: int) -> torch.Tensor:
    """``[B, ..., B, n]`` full autograd Jacobian -> ``[B, ..., n]`` (bodies are independent)."""
    return torch.stack([jac[b, ..., b, :] for b in range(B)])


# ------------------------------------------------------------------------------ Jacobians
def test_right_jacobian_matches_finite_differences():
    g = torch.Generator().manual_seed(0)
    aa = torch.cat([torch.randn(6, 3, generator=g, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64),
                    1e-5 * torch.randn(1, 3, generator=g, dtype=torch.float64), 3.1 * torch.tensor([[0.0, 0.6, 0.8]], dtype=torch.float64)])
    from h4d_fast.body.fast import axis_angle_to_matrix
    from h4d_fast.body.jacobian import skew

    Jr = so3_right_jacobian(aa)
    R = axis_angle_to_matrix(aa)
    for c in range(3):
        d = torch.zeros_like(aa)
        d[:, c] = 1e-6
        num = (axis_angle_to_matrix(aa + d) - axis_angle_to_matrix(aa - d)) / 2e-6  # dR/dtheta_c
        ana = R @ skew(Jr[..., c])
        torch.testing.assert_close(num, ana, atol=1e-7, rtol=0)


@pytest.mark.parametrize("posedirs", [False, True])
@pytest.mark.parametrize("B,seed", [(1, 0), pytest.param(3, 1, marks=pytest.mark.slow)])  # B=3: ~17 s each on 2 cores
def test_joint_jacobians_match_autograd(body, posedirs, B, seed):
    model = _with_posedirs(body) if posedirs else body
    fast = FastBody(model).to(dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    pose = 0.7 * torch.randn(B, 72, generator=g, dtype=torch.float64)
    pose[0, 9:12] = 0.0  # a joint at exactly zero angle
    betas = torch.randn(B, 10, generator=g, dtype=torch.float64)
    tr = torch.randn(B, 3, generator=g, dtype=torch.float64)
    sel = [0, 3, 12, 15, 16, 21]
    jj = joints_with_jacobian(fast, pose, betas, tr, want_pose=True, want_betas=True, want_rot6d=True)
    js = joints_with_jacobian(fast, pose, betas, tr, want_pose=True, pose_joints=sel)
    ref = fast.joints(pose[:, :3], pose[:, 3:], betas, tr)
    torch.testing.assert_close(jj.joints, ref, atol=1e-12, rtol=0)
    Jp = _per_body(torch.autograd.functional.jacobian(lambda p: fast.joints(p[:, :3], p[:, 3:], betas, tr), pose), B)
    Jp = Jp.reshape(B, -1, 3, 24, 3)
    torch.testing.assert_close(jj.d_pose, Jp, atol=1e-10, rtol=0)
    torch.testing.assert_close(js.d_pose, Jp[:, :, :, sel], atol=1e-10, rtol=0)
    Jb = _per_body(torch.autograd.functional.jacobian(lambda b: fast.joints(pose[:, :3], pose[:, 3:], b, tr), betas), B)
    torch.testing.assert_close(jj.d_betas, Jb, atol=1e-10, rtol=0)
    Jr = _per_body(torch.autograd.functional.jacobian(lambda p: rot6d(fast.rotations(p[:, :3], p[:, 3:])[:, 1:]), pose), B)
    Jr = Jr.reshape(B, 23, 6, 24, 3)
    torch.testing.assert_close(jj.d_rot6d, torch.stack([Jr[:, j, :, j + 1] for j in range(23)], 1), atol=1e-10, rtol=0)
    assert Jp.abs().max() > 0.1 and Jb.abs().max() > 0.01  # not trivially zero


@pytest.mark.parametrize("use_numba", [pytest.param(True, marks=pytest.mark.slow), False])  # numba: ~13 s on 2 cores (compiling)
def test_sparse_skin_and_pose_gradient_match_autograd(body, use_numba):
    fast = FastBody(body).to(dtype=torch.float64)
    sk = SparseSkin(fast, use_numba=use_numba)
    if use_numba and importlib.util.find_spec("numba") is not None:
        assert sk._numba() is not None  # the CPU kernels run
    g = torch.Generator().manual_seed(3)
    B, P = 5, 2
    person = torch.tensor([0, 1, 0, 1, 1])
    pose = (0.5 * torch.randn(B, 72, generator=g, dtype=torch.float64)).requires_grad_(True)
    tr = torch.randn(B, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    betas = torch.randn(P, 10, generator=g, dtype=torch.float64)
    v_ref, _ = fast.vertices(pose[:, :3], pose[:, 3:], betas[person], tr)
    rot = fast.rotations(pose[:, :3].detach(), pose[:, 3:].detach())
    J = fast.rest_joints(betas[person])
    GR, Gt = fast.kinematics(rot, J)
    u = sk.rest(betas)
    v = sk.vertices(GR, Gt, J, u, person, tr.detach())
    torch.testing.assert_close(v, v_ref.detach(), atol=1e-12, rtol=0)
    # a sparse vertex gradient (as the collision op's), some vertices only
    gv = torch.randn(v.shape, generator=g, dtype=torch.float64) * (torch.rand(B, v.shape[1], 1, generator=g) < 0.03)
    (v_ref * gv).sum().backward()
    dp, dt = sk.pose_gradient(gv, pose.detach(), GR, Gt, J, u, person)
    torch.testing.assert_close(dp.reshape(B, 72), pose.grad, atol=1e-9, rtol=0)
    torch.testing.assert_close(dt, tr.grad, atol=1e-9, rtol=0)


# ------------------------------------------------------------------------------ temporal band
@pytest.mark.parametrize("mode", ["acceleration", "velocity"])
@pytest.mark.parametrize("F", [1, 2, 3, 4, 9])
@pytest.mark.parametrize("gaps", [False, True])
def test_temporal_band_equals_dense(mode, F, gaps):
    """``D^T M D`` per person against the dense matrices; with gaps, ``M`` keeps only the rows whose
    frames are all present (person 0 absent in frame 3 and from frame 7 on, person 1 everywhere)."""
    P = 2
    present = torch.ones(F, P, dtype=torch.bool)
    if gaps:
        present[3:4, 0] = False
        present[7:, 0] = False
    band = TemporalBand(F, mode, torch.float64, torch.device("cpu"), present if gaps else None)
    k = 3 if mode == "acceleration" else 2
    T = max(0, F - k + 1)
    st = (1.0, -2.0, 1.0) if k == 3 else (-1.0, 1.0)
    y = torch.randn(F, P, 5, dtype=torch.float64)
    rows = 0
    for p in range(P):
        D = torch.zeros(T, F, dtype=torch.float64)
        for t in range(T):
            if bool(present[t : t + k, p].all()):
                for a, s in enumerate(st):
                    D[t, t + a] = s
                rows += 1
        DtD = D.T @ D
        if T:
            torch.testing.assert_close(band.diff(y)[:, p], D @ y[:, p])
            torch.testing.assert_close(band.adjoint(band.diff(y))[:, p], DtD @ y[:, p])
        torch.testing.assert_close(band.diagonal()[:, min(p, band.diagonal().shape[1] - 1)], DtD.diagonal())
        off = DtD - torch.diag(DtD.diagonal())
        torch.testing.assert_close(band.offdiag(y)[:, p], off @ y[:, p])
    assert band.count(P) == rows
    if gaps and F == 9:  # no row touches frame 3 or frames 7, 8 of person 0
        assert float(band.diagonal()[3, 0]) == 0.0 and float(band.diagonal()[7:, 0].abs().sum()) == 0.0


# ------------------------------------------------------------------------------ stages
def _gappy(F: int, P: int) -> torch.Tensor:
    """Presence with gaps: person 0 away in frame 3, the last person arrives in frame 1."""
    present = torch.ones(F, P, dtype=torch.bool)
    present[3, 0] = False
    present[:1, P - 1] = False
    return present


def _fitter(body, F=5, P=2, seed=0, dtype=torch.float64, present=None, **cfg_kw):
    from test_fit import synthetic_sequence

    gt = synthetic_sequence(body, F=F, seed=seed, noise=0.01)
    fast = FastBody(body).to(dtype=dtype)
    x = gt["poses3d"][:, :P].to(dtype)
    w = x[..., 3].clone()
    w[1, 0, 3] = 0.0  # an invalid keypoint
    w[2, P - 1, 5] = 0.4  # a confidence
    kp = x[..., :3] + 0.08 * (torch.arange(17, dtype=dtype) == 9)[:, None]  # one outlier-ish wrist (GMoF)
    g = torch.Generator().manual_seed(seed + 1)
    params = {
        "global_orient": (gt["global_orient"][:, :P].to(dtype) + 0.1 * torch.randn(F, P, 3, generator=g, dtype=dtype)),
        "body_pose": (gt["body_pose"][:, :P].to(dtype) + 0.2 * torch.randn(F, P, 69, generator=g, dtype=dtype)),
        "betas": gt["betas"][:P].to(dtype) + 0.3 * torch.randn(P, 10, generator=g, dtype=dtype),
        "transl": gt["transl"][:, :P].to(dtype) + 0.02 * torch.randn(F, P, 3, generator=g, dtype=dtype),
    }
    cfg = FitConfig(optimizer="gn", **cfg_kw)
    return FT._Fitter(kp, w, fast, cfg, params, present), cfg


def _all_weights(stage: int) -> dict:
    """Every term on (to test each term's pieces), with distinct weights."""
    return {"joint": 2.0, "reg": 0.3, "limb": 1.5, "symm": 0.7, "temporal": 1.2 if stage != 2 else 0.9, "shape": 0.05, "collision": 0.0}


@pytest.mark.parametrize("mode", ["acceleration", "velocity"])
@pytest.mark.parametrize("stage", [1, 2, 3])
@pytest.mark.parametrize("weights", ["config", "all"])
@pytest.mark.parametrize("gaps", [False, True])
def test_loss_split_and_gradient_match_autograd(body, stage, weights, mode, gaps):
    """... also with people absent in some frames (no term there, the temporal term per run of presence)."""
    F = 8 if gaps else 5
    fitter, cfg = _fitter(body, F=F, temporal=mode, w_hyperext=0.5, kp_sigma=0.05, present=_gappy(F, 2) if gaps else None)
    w = cfg.stage_weights(stage) if weights == "config" else _all_weights(stage)
    w["collision"] = 0.0
    gn = GaussNewton(fitter)
    p = fitter.p
    names = FT.STAGE_PARAMS[stage]
    for k, v in p.items():
        v.requires_grad_(k in names)
    ref, _ = fitter.total(stage, w)
    ref.backward()
    with torch.no_grad():
        pose = gn.pose()
        jj = gn.forward(pose, p["betas"], p["transl"])
        body_l, person_l = gn.losses(jj.joints.view(gn.F, gn.P, -1, 3), jj.rot.view(gn.F, gn.P, 24, 3, 3), pose, p["betas"], stage, w)
        torch.testing.assert_close(body_l.sum() + person_l.sum(), ref.detach(), rtol=1e-10, atol=1e-12)
        if stage == 2:
            return  # the betas gradient is checked through the step below
        g, H, tpos, rt, _ = gn.body_system(pose, p["betas"], p["transl"], stage, w)
        V = gn.vars(stage)
        gz = lambda k: p[k].grad if p[k].grad is not None else torch.zeros_like(p[k])  # noqa: E731
        full = torch.cat([gz("global_orient"), gz("body_pose")], -1)
        torch.testing.assert_close(g[..., : V.nq], full.index_select(-1, V.qidx), rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(g[..., V.nq :], p["transl"].grad, rtol=1e-8, atol=1e-10)
        if gaps:  # an absent body has no gradient and no curvature
            assert float(g[3, 0].abs().max()) == 0.0 and float(H[0, 1].abs().max()) == 0.0
        # the Gauss-Newton blocks are symmetric positive semi-definite
        torch.testing.assert_close(H, H.transpose(-1, -2))
        assert float(torch.linalg.eigvalsh(H).min()) > -1e-9 * float(H.abs().max())


@pytest.mark.parametrize("gaps", [False, True])
def test_pcg_step_equals_dense_solve(body, gaps):
    """With enough iterations the PCG step solves the full (frame-coupled) damped system."""
    F = 7 if gaps else 4
    fitter, cfg = _fitter(body, F=F, P=2, present=_gappy(F, 2) if gaps else None)
    gn = GaussNewton(fitter)
    w = cfg.stage_weights(3)
    w["collision"] = 0.0
    p = fitter.p
    with torch.no_grad():
        g, H, tpos, rt, _ = gn.body_system(gn.pose(), p["betas"], p["transl"], 3, w)
        lam = torch.full(g.shape[:2], 1e-3, dtype=g.dtype)
        F, P, n = g.shape
        d = gn.solve(g, H, lam, tpos, rt, cg_iters=150 if not gaps else 400)
        # dense matrix of the damped operator, per person
        diag = H.diagonal(dim1=-2, dim2=-1)
        from h4d_fast.pipeline.fit_gn import EPS_REL

        eps = EPS_REL * diag.mean()
        Hd = H + torch.diag_embed(lam[..., None] * (diag + eps) + eps)
        M = torch.zeros(P, F * n, F * n, dtype=g.dtype)
        for col in range(F * n):  # the people are independent: one unit vector per person at once
            e = torch.zeros(F, P, n, dtype=g.dtype)
            e[col // n, :, col % n] = 1.0
            out = (Hd @ e[..., None])[..., 0] + gn.temporal_matvec(e, tpos, rt)
            M[:, :, col] = out.transpose(0, 1).reshape(P, -1)
        for q in range(P):
            M_q = M[q]
            torch.testing.assert_close(M_q, M_q.T, rtol=1e-9, atol=1e-9 * float(M_q.abs().max()))
            ref = torch.linalg.solve(M_q, -g[:, q].reshape(-1))
            torch.testing.assert_close(d[:, q].reshape(-1), ref, rtol=1e-6, atol=1e-8 * float(ref.abs().max()))


def _gn_stage_weights(cfg, stage: int) -> dict:
    w = cfg.stage_weights(stage)
    w["collision"] = 0.0
    return w


@pytest.mark.parametrize("stage", [1, 2, 3])
@pytest.mark.parametrize("how", ["nan", "absurd"])
def test_gn_divergence_guard_restores_the_best_finite_point(body, monkeypatch, stage, how):
    """A Gauss-Newton stage that diverges -- a NaN, or an absurd step (+1e5 on a parameter the stage
    optimises), injected into what its loop leaves in the parameters -- is undone by the divergence
    guard: the parameters are the stage's starting point (finite, and better than the diverged end)
    and the stage's record says why."""
    fitter, cfg = _fitter(body)
    w = _gn_stage_weights(cfg, stage)
    loop = "_run_betas" if stage == 2 else "_run_body"
    real = getattr(GaussNewton, loop)

    def diverging(self, *args):
        done = real(self, *args)
        x = self.f.p[{1: "transl", 2: "betas", 3: "body_pose"}[stage]]
        if how == "nan":
            x[0, 0] = float("nan")
        else:
            x.add_(1e5)
        return done

    monkeypatch.setattr(GaussNewton, loop, diverging)
    start = {k: v.clone() for k, v in fitter.p.items()}
    with torch.no_grad():
        l0 = float(fitter.total(stage, w)[0])
    rec = fitter.run_stage(stage, w, 3, lambda n: None)
    assert rec["guard"] == ("non-finite" if how == "nan" else "rising")
    assert rec["iterations"] > 0
    for k, v in fitter.p.items():
        assert torch.equal(v, start[k]), k
    assert math.isfinite(rec["loss_end"]) and rec["loss_end"] == rec["loss_start"] == l0


def test_gn_trials_reject_non_finite_and_absurd_steps(body, monkeypatch):
    """Steps that are NaN for some bodies and absurd for the others never lower the loss: the
    Levenberg-Marquardt trials reject them (raising the damping), the stage ends where it started
    and the guard has nothing to undo; with the real steps the same stage lowers the loss."""
    fitter, cfg = _fitter(body)
    w = _gn_stage_weights(cfg, 3)
    real_solve = GaussNewton.solve
    lams = []

    def bad_solve(self, g, H, lam, *rest):
        lams.append(lam.clone())
        d = 1e6 * real_solve(self, g, H, lam, *rest)
        d[0] = float("nan")  # the first frame's bodies: NaN steps
        return d

    start = {k: v.clone() for k, v in fitter.p.items()}
    monkeypatch.setattr(GaussNewton, "solve", bad_solve)
    rec = fitter.run_stage(3, w, 4, lambda n: None)
    assert rec["guard"] is None and rec["loss_end"] == rec["loss_start"]
    assert all(torch.equal(v, start[k]) for k, v in fitter.p.items())
    assert len(lams) == 4 and bool((lams[-1] > lams[0]).all())  # every rejection damps harder
    monkeypatch.setattr(GaussNewton, "solve", real_solve)
    rec = fitter.run_stage(3, w, 4, lambda n: None)
    assert rec["guard"] is None and rec["loss_end"] < rec["loss_start"]


def test_pcg_solves_independent_systems():
    g = torch.Generator().manual_seed(0)
    F, P, n = 4, 3, 5
    A = torch.randn(P, F * n, F * n, generator=g, dtype=torch.float64)
    M = A @ A.transpose(1, 2) + F * n * torch.eye(F * n, dtype=torch.float64)  # well conditioned
    b = torch.randn(F, P, n, generator=g, dtype=torch.float64)
    b[:, 2] = 0.0  # a person with nothing to do

    def mv(v):
        return torch.einsum("pij,pj->pi", M, v.permute(1, 0, 2).reshape(P, -1)).reshape(P, F, n).permute(1, 0, 2)

    x = pcg(mv, lambda r: r, b, iters=F * n)
    ref = torch.linalg.solve(M, b.permute(1, 0, 2).reshape(P, -1)).reshape(P, F, n).permute(1, 0, 2)
    torch.testing.assert_close(x, ref, rtol=1e-6, atol=1e-8)
    assert torch.isfinite(x).all() and float(x[:, 2].abs().max()) == 0.0


@pytest.mark.parametrize("posedirs", [False, True])
def test_joints_vjp_matches_autograd(body, posedirs):
    from h4d_fast.body.jacobian import joints_vjp

    model = _with_posedirs(body) if posedirs else body
    fast = FastBody(model).to(dtype=torch.float64)
    g = torch.Generator().manual_seed(11)
    B = 4
    pose = (0.7 * torch.randn(B, 72, generator=g, dtype=torch.float64))
    pose[1, :6] = 0.0
    pose.requires_grad_(True)
    betas = torch.randn(B, 10, generator=g, dtype=torch.float64)
    X = fast.joints(pose[:, :3], pose[:, 3:], betas)
    r6 = rot6d(fast.rotations(pose[:, :3], pose[:, 3:])[:, 1:])
    gX = torch.randn(X.shape, generator=g, dtype=torch.float64)
    g6 = torch.randn(r6.shape, generator=g, dtype=torch.float64)
    ((X * gX).sum() + (r6 * g6).sum()).backward()
    with torch.no_grad():
        jj = joints_with_jacobian(fast, pose, betas, None, want_pose=False)
        out = joints_vjp(fast, jj, gX, g6)
    torch.testing.assert_close(out.reshape(B, 72), pose.grad, atol=1e-10, rtol=0)


@pytest.mark.parametrize("stage", [1, 2, 3])
@pytest.mark.parametrize("weights", ["config", "all"])
@pytest.mark.parametrize("gaps", [False, True])
def test_objective_value_and_grad_match_autograd(body, stage, weights, gaps):
    """The first-order optimizers' analytic closure equals autograd through the loss definitions
    (also with absences)."""
    F = 8 if gaps else 5
    fitter, cfg = _fitter(body, F=F, temporal="acceleration", w_hyperext=0.5, kp_sigma=0.05, present=_gappy(F, 2) if gaps else None)
    w = cfg.stage_weights(stage) if weights == "config" else _all_weights(stage)
    w["collision"] = 0.0
    names = FT.STAGE_PARAMS[stage]
    p = fitter.p
    for k, v in p.items():
        v.requires_grad_(k in names)
    ref, _ = fitter.total(stage, w)
    ref.backward()
    with torch.no_grad():
        val, grads = fitter.objective().value_and_grad(stage, w, names)
    torch.testing.assert_close(val, ref.detach(), rtol=1e-10, atol=1e-12)
    assert set(grads) == set(names)
    for k in names:
        torch.testing.assert_close(grads[k], p[k].grad, rtol=1e-8, atol=1e-10 * float(p[k].grad.abs().max()), msg=k)


@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="needs the numba collision backend (torch is minutes per frame)")
@pytest.mark.parametrize("P", [2, 3, "3-absent"])
def test_collision_stage_gradient_matches_autograd(body, P):
    """The analytic collision-stage gradient (op vertex gradient -> pose, sparse skinning) equals
    autograd through the full meshes; three people: every close pair counts; a person absent from a
    frame is in no pair there."""
    fitter, cfg = _fitter(body, F=3, P=2, dtype=torch.float32)
    absent = P == "3-absent"
    if P != 2:  # a third person between the two (overlapping both)
        P = 3
        kp = torch.cat([fitter.kp, fitter.kp[:, :1] + torch.tensor([0.3, 0.0, 0.0])], 1)
        w = torch.cat([fitter.w, fitter.w[:, :1]], 1)
        p = {k: torch.cat([v, v[:, :1] + (torch.tensor([0.3, 0.0, 0.0]) if k == "transl" else 0)], 1) if k != "betas"
             else torch.cat([v, v[:1]], 0) for k, v in fitter.p.items()}
        present = torch.ones(3, 3, dtype=torch.bool)
        present[0, 2] = False  # the third person is away in frame 0
        fitter = FT._Fitter(kp, w, fitter.fast, cfg, p, present if absent else None)
    p = fitter.p
    with torch.no_grad():  # bring the people into contact as in facing_pair
        p["transl"][..., 0] = torch.linspace(-0.17, 0.17, P)
    fitter.contact = torch.tensor([0, 2])
    w = cfg.stage_weights(3)
    w["collision"] = 1.0
    names = FT.STAGE_PARAMS[3]
    for k, v in p.items():
        v.requires_grad_(k in names)
    ref = fitter.total(3, w)[0]
    ref.backward()
    with torch.no_grad():
        val, grads = fitter.objective().value_and_grad(3, w, names)
        _, no_coll = fitter.objective().value_and_grad(3, {**w, "collision": 0.0}, names)
        assert float(fitter.collision()) > 0
    torch.testing.assert_close(val, ref.detach(), rtol=1e-5, atol=1e-6)
    for k in names:
        # float32 sums over thousands of vertices in another order: relative to the gradient's scale
        scale = float(p[k].grad.abs().max())
        torch.testing.assert_close(grads[k], p[k].grad, rtol=1e-3, atol=1e-4 * max(scale, 1.0), msg=k)
        assert float((grads[k] - no_coll[k]).abs().max()) > 0  # the collision term contributes
    torch.testing.assert_close(grads["transl"][1], no_coll["transl"][1])  # frame 1 is not in the contact set
    ids, pairs = fitter.collision_pairs()
    assert pairs.shape[0] == (1 + 3 if absent else 2 * P * (P - 1) // 2)  # frames 0 and 2
    if absent:  # no term at all on the absent body: its gradient is exactly 0
        assert float(grads["transl"][0, 2].abs().max()) == 0.0 and float(grads["body_pose"][0, 2].abs().max()) == 0.0


# ------------------------------------------------------------------------------ L-BFGS
def test_lbfgs_iterates_equal_torch_lbfgs():
    """Same iterates as torch.optim.LBFGS(line_search_fn="strong_wolfe") on a non-quadratic
    problem, across step calls that continue the history (float64)."""
    from h4d_fast.pipeline.lbfgs import LBFGS

    g = torch.Generator().manual_seed(0)
    N = 30
    A = torch.randn(N, N, generator=g, dtype=torch.float64)
    Q = A @ A.T / N + 0.1 * torch.eye(N, dtype=torch.float64)
    b = torch.randn(N, generator=g, dtype=torch.float64)

    def f(x):
        return 0.5 * x @ Q @ x - b @ x + 0.1 * ((x[1:] - x[:-1] ** 2) ** 2).sum() + 0.01 * (x ** 4).sum()

    x0 = torch.randn(N, generator=g, dtype=torch.float64)
    xt = x0.clone().requires_grad_(True)
    ref = torch.optim.LBFGS([xt], lr=1.0, max_iter=4, max_eval=20, history_size=5, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure():
        ref.zero_grad()
        loss = f(xt)
        loss.backward()
        return loss

    def evaluate(x):
        x = x.detach().requires_grad_(True)
        loss = f(x)
        return loss.detach(), torch.autograd.grad(loss, x)[0]

    x = x0.clone()
    mine = LBFGS(x, evaluate, lr=1.0, history_size=5)
    for _ in range(5):  # 20 iterations, history wraps around
        ref.step(closure)
        assert mine.step(4, 20) == 4
        torch.testing.assert_close(x, xt.detach(), rtol=0, atol=1e-12)
    assert float(f(x)) < float(f(x0)) - 1.0
    assert mine.evals < ref.state[xt]["func_evals"]  # no re-evaluation of the current point per call
    # the GPU's compact direction (forced here on the CPU) follows the same iterates up to rounding
    xc = x0.clone()
    comp = LBFGS(xc, evaluate, lr=1.0, history_size=5, compact=True)
    for _ in range(5):
        assert comp.step(4, 20) == 4
    torch.testing.assert_close(xc, x, rtol=0, atol=1e-9)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 2, 7, 20])
def test_lbfgs_compact_direction_equals_two_loop(seed, k):
    """The compact form's ``-H g`` equals the two-loop recursion's for ``k`` stored pairs with
    positive curvature (``y.s > 0``, as L-BFGS keeps them), float64, random sizes and scales."""
    from h4d_fast.pipeline.lbfgs import LBFGS, compact_direction

    g_ = torch.Generator().manual_seed(100 * seed + k)
    N = int(torch.randint(k + 1, 400, (1,), generator=g_))
    A = torch.randn(N, N, generator=g_, dtype=torch.float64)
    H = A @ A.T / N + 0.05 * torch.eye(N, dtype=torch.float64)  # SPD: y = H s has y.s > 0
    scale = 10.0 ** float(torch.randint(-3, 4, (1,), generator=g_))
    S = [scale * torch.randn(N, generator=g_, dtype=torch.float64) for _ in range(k)]
    Y = [H @ s + 0.01 * scale * torch.randn(N, generator=g_, dtype=torch.float64) for s in S]
    keep = [i for i in range(k) if float(S[i] @ Y[i]) > 1e-10]
    S, Y = [S[i] for i in keep], [Y[i] for i in keep]
    g = torch.randn(N, generator=g_, dtype=torch.float64)
    opt = LBFGS(g.clone(), lambda x: (x.sum(), x), compact=False)
    opt.S, opt.Y = S, Y
    opt.rho = [torch.tensor(1.0 / float(s @ y), dtype=torch.float64) for s, y in zip(S, Y)]
    opt.h_diag = float(S[-1] @ Y[-1]) / float(Y[-1] @ Y[-1])
    ref = opt._direction(g)
    got = compact_direction(g, S, Y, opt.h_diag)
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-10 * float(ref.abs().max()))
    assert float(got @ g) < 0  # a descent direction


# ------------------------------------------------------------------------------ CUDA
@pytest.mark.gpu
def test_gpu_graph_replay_equals_eager_objective(body):
    """The CUDA-graph closure replays the analytic objective at the current parameters."""
    from h4d_fast.pipeline.fit_objective import GRAPH_FAILURES, graph_or_eager

    fitter, cfg = _fitter(body, F=8, P=2, dtype=torch.float32)
    dev = torch.device("cuda")
    fc = FT._Fitter(fitter.kp.to(dev), fitter.w.to(dev), fitter.fast.to(device=dev), cfg, {k: v.to(dev) for k, v in fitter.p.items()})
    w = cfg.stage_weights(3)
    w["collision"] = 0.0
    names = FT.STAGE_PARAMS[3]
    obj = fc.objective()
    n0 = len(GRAPH_FAILURES)
    replay = graph_or_eager(lambda: obj.value_and_grad(3, w, names))
    assert len(GRAPH_FAILURES) == n0, GRAPH_FAILURES[n0:]
    for step in range(3):
        with torch.no_grad():
            fc.p["body_pose"].add_(0.01 * step)
            fc.p["transl"].add_(0.005)
        val, grads = replay()
        ref_val, ref_grads = obj.value_and_grad(3, w, names)
        torch.testing.assert_close(val, ref_val)
        for k in names:
            torch.testing.assert_close(grads[k], ref_grads[k])


@pytest.mark.gpu
def test_gpu_objective_equals_cpu(body):
    fitter, cfg = _fitter(body, F=6, P=2, dtype=torch.float64)
    dev = torch.device("cuda")
    fc = FT._Fitter(fitter.kp.to(dev), fitter.w.to(dev), FastBody(body).to(device=dev, dtype=torch.float64), cfg,
                    {k: v.to(dev) for k, v in fitter.p.items()})
    for stage in (1, 2, 3):
        w = _all_weights(stage)
        names = FT.STAGE_PARAMS[stage]
        v0, g0 = fitter.objective().value_and_grad(stage, w, names)
        v1, g1 = fc.objective().value_and_grad(stage, w, names)
        torch.testing.assert_close(v1.cpu(), v0, rtol=1e-9, atol=1e-12)
        for k in names:
            torch.testing.assert_close(g1[k].cpu(), g0[k], rtol=1e-8, atol=1e-10 * float(g0[k].abs().max()))


@pytest.mark.gpu
def test_gpu_fit_with_graphs_matches_cpu_fit(body):
    """The whole fit (collision stage included) on CUDA with CUDA graphs: no capture failure and
    the same accuracy as on the CPU (float32 on both; different summation orders)."""
    from h4d_fast.eval.metrics import mpjpe24
    from h4d_fast.pipeline.fit import fit_sequence, model_outputs
    from h4d_fast.pipeline.fit_objective import GRAPH_FAILURES
    from test_fit import facing_pair

    pair = facing_pair(body, F=12, d=0.36)
    cfg = FitConfig(epochs=2, iters_stage1=10, iters_stage2=5, iters_stage3=20, iters_collision=8)
    n0 = len(GRAPH_FAILURES)
    gpu = fit_sequence(pair["poses3d"], body, cfg, device="cuda")
    assert len(GRAPH_FAILURES) == n0, GRAPH_FAILURES[n0:]
    cpu = fit_sequence(pair["poses3d"], body, cfg, device="cpu")
    gj = model_outputs(body, FT.FitResult(*(getattr(gpu, k).cpu() for k in ("global_orient", "body_pose", "betas", "transl"))))[1]
    cj = model_outputs(body, cpu)[1]
    assert float(mpjpe24(gj, cj).mean()) < 2.0  # mm between the two fits
    assert gpu.stats["kp_error_mm"] == pytest.approx(cpu.stats["kp_error_mm"], abs=0.5)
    assert gpu.stats["penetration_after_cm3"] == pytest.approx(cpu.stats["penetration_after_cm3"], rel=0.2, abs=1.0)


def test_objective_makes_no_host_tensors_after_warm_up(body):
    """CUDA-graph capture fails on any copy from host memory (``torch.tensor(...)``, a Python scalar
    written into a device tensor, a list index). After one warm-up evaluation, a stage's objective
    must create no tensor from host data: checked on the CPU, so that the GPU capture cannot break
    unnoticed (a unit vector written element by element did, on the H100 run of 2026-12-07)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class HostData(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.lift_fresh.default or (func is torch.ops.aten._to_copy.default and "device" in (kwargs or {})):
                self.seen.append(str(func))
            return func(*args, **(kwargs or {}))

    fitter, cfg = _fitter(body, F=6, P=2, dtype=torch.float32)
    obj = fitter.objective()
    for stage in (1, 2, 3):
        w = cfg.stage_weights(stage)
        w["collision"] = 0.0
        obj.value_and_grad(stage, w, FT.STAGE_PARAMS[stage])  # warm-up: caches may be built here
        with HostData() as mode:
            obj.value_and_grad(stage, w, FT.STAGE_PARAMS[stage])
        assert mode.seen == [], (stage, mode.seen)
