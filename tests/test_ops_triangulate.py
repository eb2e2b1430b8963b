import itertools

import pytest
import torch

from h4d_fast.ops import triangulate_dlt, triangulate_ransac
from h4d_fast.ops._triangulate_torch import triangulate_dlt_torch
from helpers import normalized_projections, random_points, ring_cameras


@pytest.mark.parametrize("V", [2, 3, 8, 20])
def test_exact_projections_recover_point(V):
    cams = ring_cameras(V, seed=V)
    X = random_points(64, seed=1)
    xy = normalized_projections(cams, X)  # [N, V, 2]
    w = torch.rand(64, V, dtype=torch.float64) * 0.5 + 0.5
    Xd = triangulate_dlt(xy, cams, w)
    assert (Xd - X).norm(dim=-1).max() < 1e-6
    Xr, inl, n = triangulate_ransac(xy, cams, w, conf_thr=0.1)
    assert (Xr - X).norm(dim=-1).max() < 1e-6
    assert bool(inl.all()) and bool((n == V).all())


def test_float32_exact_projections():
    cams = ring_cameras(10, seed=3)
    X = random_points(100, seed=2)
    xy = normalized_projections(cams, X).float()
    Xr, _, _ = triangulate_ransac(xy, cams, torch.ones(100, 10), conf_thr=0.5)
    assert Xr.dtype == torch.float32
    assert (Xr.double() - X).norm(dim=-1).max() < 1e-4


def test_outlier_view_is_rejected():
    cams = ring_cameras(8, seed=4)
    X = random_points(32, seed=5)
    xy = normalized_projections(cams, X)
    g = torch.Generator().manual_seed(0)
    xy = xy + 0.0005 * torch.randn(xy.shape, generator=g, dtype=xy.dtype)  # ~1 px noise
    bad = torch.randint(0, 8, (32,), generator=g)
    xy[torch.arange(32), bad] += 0.15  # ~270 px off
    conf = torch.full((32, 8), 0.9, dtype=torch.float64)
    Xr, inl, n = triangulate_ransac(xy, cams, conf)
    assert not bool(inl[torch.arange(32), bad].any())
    assert bool((n == 7).all())
    assert (Xr - X).norm(dim=-1).max() < 0.01
    # plain DLT with the outlier is far worse
    Xd = triangulate_dlt(xy, cams, conf)
    assert (Xd - X).norm(dim=-1).mean() > 5 * (Xr - X).norm(dim=-1).mean()


def test_two_of_five_outliers_majority_wins():
    cams = ring_cameras(5, seed=6)
    X = random_points(16, seed=7)
    xy = normalized_projections(cams, X)
    xy[:, 1] += torch.tensor([0.1, -0.2], dtype=xy.dtype)
    xy[:, 3] += torch.tensor([-0.3, 0.05], dtype=xy.dtype)
    Xr, inl, n = triangulate_ransac(xy, cams, torch.ones(16, 5, dtype=torch.float64))
    assert inl[:, [0, 2, 4]].all() and not inl[:, [1, 3]].any()
    assert (Xr - X).norm(dim=-1).max() < 1e-6


def test_candidates_threshold_min_views_and_no_valid_views():
    cams = ring_cameras(4, seed=8)
    X = random_points(3, seed=9)
    xy = normalized_projections(cams, X)
    conf = torch.tensor([[0.9, 0.9, 0.4, 0.4], [0.9, 0.2, 0.3, 0.1], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    Xr, inl, n = triangulate_ransac(xy, cams, conf, conf_thr=0.5)
    assert n.tolist() == [2, 0, 0]
    assert inl[0].tolist() == [True, True, False, False]
    assert torch.isfinite(Xr[0]).all() and torch.isnan(Xr[1:]).all()
    Xr3, _, n3 = triangulate_ransac(xy, cams, conf, conf_thr=0.5, min_views=3)
    assert n3.tolist() == [0, 0, 0] and torch.isnan(Xr3).all()


def test_inconsistent_pair_gives_no_point():
    # two views whose rays miss each other by ~30 cm: the reference would still return a point
    cams = ring_cameras(2, seed=22)
    X = random_points(1, seed=23)
    xy = normalized_projections(cams, X)
    xy[:, 1] = normalized_projections(cams, X + torch.tensor([0.0, 0.3, 0.1], dtype=X.dtype))[:, 1]
    Xr, inl, n = triangulate_ransac(xy, cams, torch.ones(1, 2, dtype=torch.float64))
    assert int(n[0]) == 0 and torch.isnan(Xr).all() and not inl.any()


def test_nan_inputs_are_not_candidates():
    cams = ring_cameras(6, seed=10)
    X = random_points(8, seed=11)
    xy = normalized_projections(cams, X)
    xy[:, 2] = float("nan")
    xy[0, :5] = float("nan")  # only one finite view -> invalid
    Xr, inl, n = triangulate_ransac(xy, cams, torch.ones(8, 6, dtype=torch.float64))
    assert not inl[:, 2].any()
    assert int(n[0]) == 0 and torch.isnan(Xr[0]).all()
    assert (Xr[1:] - X[1:]).norm(dim=-1).max() < 1e-6


def test_single_view_and_empty_batch():
    cams = ring_cameras(1, seed=12)
    xy = normalized_projections(cams, random_points(4))
    Xr, inl, n = triangulate_ransac(xy, cams, torch.ones(4, 1, dtype=torch.float64))
    assert torch.isnan(Xr).all() and n.sum() == 0
    cams5 = ring_cameras(5)
    Xe, ie, ne = triangulate_ransac(torch.zeros(0, 5, 2, dtype=torch.float64), cams5, torch.zeros(0, 5, dtype=torch.float64))
    assert Xe.shape == (0, 3) and ie.shape == (0, 5) and ne.shape == (0,)


def test_leading_dims():
    cams = ring_cameras(6, seed=13)
    X = random_points(2 * 3 * 4, seed=14).reshape(2, 3, 4, 3)
    xy = normalized_projections(cams, X)  # [2, 3, 4, 6, 2]
    Xr, inl, n = triangulate_ransac(xy, cams, torch.ones(2, 3, 4, 6, dtype=torch.float64))
    assert Xr.shape == (2, 3, 4, 3) and inl.shape == (2, 3, 4, 6) and n.shape == (2, 3, 4)
    assert (Xr - X).norm(dim=-1).max() < 1e-6


def _ransac_loop(xy, P, conf, conf_thr, err_thr):
    """Readable per-point loop of the rule (the oracle of the batched reference)."""
    V = xy.shape[0]
    cand = [v for v in range(V) if conf[v] > conf_thr and torch.isfinite(xy[v]).all()]
    best, best_set = -1, None
    for i, j in itertools.combinations(range(V), 2):
        if i not in cand or j not in cand:
            continue
        Xh = triangulate_dlt_torch(xy[[i, j]], P[[i, j]], conf[[i, j]])
        if not torch.isfinite(Xh).all():
            continue
        s = {i, j}
        for v in cand:
            Xc = P[v, :, :3] @ Xh + P[v, :, 3]
            if v in (i, j):
                if Xc[2] <= 0 or 0.5 * (Xc[:2] / Xc[2] - xy[v]).norm() >= err_thr:
                    s = None
                    break
                continue
            if Xc[2] > 0 and 0.5 * (Xc[:2] / Xc[2] - xy[v]).norm() < err_thr:
                s.add(v)
        if s is not None and len(s) > best:
            best, best_set = len(s), s
    return best_set


def test_batched_reference_matches_loop_rule_including_ties():
    cams = ring_cameras(7, seed=15)
    P = cams.extrinsics
    X = random_points(40, seed=16)
    xy = normalized_projections(cams, X)
    g = torch.Generator().manual_seed(17)
    xy = xy + 0.004 * torch.randn(xy.shape, generator=g, dtype=xy.dtype)  # noise near the threshold -> ties
    out = torch.rand(40, 7, generator=g) < 0.25
    xy = torch.where(out[..., None], xy + 0.2 * torch.randn(xy.shape, generator=g, dtype=xy.dtype), xy)
    conf = torch.rand(40, 7, generator=g, dtype=torch.float64)
    _, inl, n = triangulate_ransac(xy, cams, conf, conf_thr=0.3, err_thr=0.01)
    for k in range(40):
        s = _ransac_loop(xy[k], P, conf[k], 0.3, 0.01)
        got = {v for v in range(7) if inl[k, v]}
        if s is None or len(s) < 2:
            assert got == set()
        else:
            assert got == s, (k, got, s)


def test_dlt_gradcheck_float64():
    cams = ring_cameras(4, seed=18)
    X = random_points(3, seed=19)
    xy = normalized_projections(cams, X).requires_grad_(True)
    w = (torch.rand(3, 4, dtype=torch.float64) + 0.5).requires_grad_(True)
    P = cams.extrinsics
    assert torch.autograd.gradcheck(lambda a, b: triangulate_dlt(a, P, b), (xy, w))


def test_ransac_point_is_differentiable_in_xy():
    cams = ring_cameras(5, seed=20)
    X = random_points(2, seed=21)
    xy = (normalized_projections(cams, X) + 1e-3).requires_grad_(True)
    Xr, _, _ = triangulate_ransac(xy, cams, torch.ones(2, 5, dtype=torch.float64), refine_steps=0)
    Xr.sum().backward()
    assert xy.grad is not None and torch.isfinite(xy.grad).all() and xy.grad.abs().sum() > 0


def test_bad_shapes_raise():
    cams = ring_cameras(3)
    with pytest.raises(ValueError, match="projection matrices"):
        triangulate_ransac(torch.zeros(4, 5, 2), cams, torch.zeros(4, 5))
    with pytest.raises(ValueError, match="conf"):
        triangulate_ransac(torch.zeros(4, 3, 2), cams, torch.zeros(4, 2))


def test_svd_dlt_matches_normal_dlt_on_exact_data_and_handles_missing_views():
    cams = ring_cameras(5, seed=24)
    X = random_points(20, seed=25)
    xy = normalized_projections(cams, X)
    w = torch.rand(20, 5, dtype=torch.float64) + 0.1
    w[:3, 1:] = 0  # one view only -> NaN
    Xs = triangulate_dlt(xy, cams, w, method="svd")
    assert torch.isnan(Xs[:3]).all()
    assert (Xs[3:] - X[3:]).norm(dim=-1).max() < 1e-9
    # with noise both solve the weighted problem; they agree closely but are not identical
    g = torch.Generator().manual_seed(26)
    xn = xy + 0.002 * torch.randn(xy.shape, generator=g, dtype=xy.dtype)
    d = (triangulate_dlt(xn[3:], cams, w[3:], method="svd") - triangulate_dlt(xn[3:], cams, w[3:])).norm(dim=-1)
    assert d.max() < 0.01
    with pytest.raises(ValueError, match="method"):
        triangulate_dlt(xy, cams, w, method="qr")
