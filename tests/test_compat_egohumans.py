"""h4d_fast.compat.egohumans against the reference triangulation written out point by point
(bench.egohumans_reference: numpy SVD DLT and scipy least_squares, as the reference code)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench.egohumans_reference import triangulate_ransac as reference
from h4d_fast.compat.egohumans import Triangulator, triangulate_ransac_batch
from helpers import normalized_projections, random_points, ring_cameras

# scipy's least_squares stops at its default 1e-8 tolerances, up to ~3e-6 m (normalised residual
# units alike) from the minimum the adapter converges to (a tightly converged scipy run agrees with
# the adapter to 1e-8): the tolerance of these comparisons.
TOL = 2e-5


def scene(B: int = 40, V: int = 10, seed: int = 0):
    cams = ring_cameras(V, seed=seed)
    g = torch.Generator().manual_seed(seed)
    X = random_points(B, seed=seed + 1)
    xy = normalized_projections(cams, X) + 0.002 * torch.randn(B, V, 2, generator=g, dtype=torch.float64)
    wrong = torch.rand(B, V, generator=g) < 0.2
    xy[wrong] += 0.2 * torch.randn(int(wrong.sum()), 2, generator=g, dtype=torch.float64)
    conf = 0.5 + 0.5 * torch.rand(B, V, generator=g, dtype=torch.float64)
    valid = torch.rand(B, V, generator=g) < 0.85
    return cams, xy, conf, valid


@pytest.mark.parametrize("include_confidence", [True, False])
def test_batch_matches_reference(include_confidence):
    cams, xy, conf, valid = scene()
    P = cams.extrinsics
    X, inl, err = triangulate_ransac_batch(xy, P, conf, valid, 0.01, include_confidence)
    checked = 0
    for b in range(xy.shape[0]):
        vi = valid[b].nonzero()[:, 0].numpy()
        if len(vi) < 2:
            assert torch.isnan(X[b]).all() and not bool(inl[b].any())
            continue
        pts = np.concatenate([xy[b, vi].numpy(), conf[b, vi, None].numpy()], 1)
        Xr, idx, er = reference(P[vi].numpy(), pts, 0.01, include_confidence)
        assert np.array_equal(vi[idx], inl[b].nonzero()[:, 0].numpy()), b
        np.testing.assert_allclose(X[b].numpy(), Xr, atol=TOL, rtol=0)
        np.testing.assert_allclose(err[b, vi[idx]].numpy(), er, atol=TOL, rtol=0)
        checked += 1
    assert checked > 30


class FakeCamera:
    """The camera interface the reference triangulator reads (no distortion: rays are K^-1 uv)."""

    def __init__(self, cams, i):
        self.K = cams.K[i].numpy()
        E = np.eye(4)
        E[:3, :3], E[:3, 3] = cams.R[i].numpy(), cams.t[i].numpy()
        self.extrinsics = E
        self.calls = 0

    def cam_from_image(self, point_2d):
        self.calls += 1
        r = np.linalg.solve(self.K, np.array([point_2d[0], point_2d[1], 1.0]))
        return r / r[2]

    def get_image_area(self):
        return 3840 * 2160


def make_triangulator(seed: int = 0, min_views: int = 2):
    cams = ring_cameras(8, seed=seed)
    g = torch.Generator().manual_seed(seed)
    X = random_points(2 * 17, seed=seed + 3).reshape(2, 17, 3)
    uv, _ = cams.project(X)  # [2, 17, V, 2]
    uv = uv + 1.5 * torch.randn(uv.shape, generator=g, dtype=torch.float64)
    conf = 0.3 + 0.7 * torch.rand(2, 17, 8, generator=g, dtype=torch.float64)
    keys = [(n, "rgb") for n in cams.names]
    primary = keys[:6]
    secondary = keys[6:]
    objs = {k: FakeCamera(cams, i) for i, k in enumerate(keys)}
    pose2d = {}
    for v, k in enumerate(keys):
        res = []
        for h, name in enumerate(("aria01", "aria02")):
            kp = np.concatenate([uv[h, :, v].numpy(), conf[h, :, v, None].numpy()], 1)
            box = [100, 100, 500, 900] if not (h == 1 and v == 2) else [0, 0, 10, 10]  # a tiny box: the view is dropped
            res.append({"human_name": name, "bbox": box, "keypoints": kp})
        pose2d[k] = res
    ov = SimpleNamespace(TIMESTAMPS=[7], HUMAN_NAMES=["aria01"], EXO_CAMERAS=[[keys[0][0]]], KEYPOINT_IDXS=[[0, 1]])
    cfg = SimpleNamespace(POSE3D=SimpleNamespace(KEYPOINTS_THRES=0.5, BBOX_AREA_THRES=0.002, NUM_ITERS=50, REPROJECTION_ERROR_EPSILON=0.01,
                                                 MIN_VIEWS=min_views, MIN_INLIER_VIEWS=2, SECONDARY_MIN_VIEWS=2, INCLUDE_CONFIDENCE=True, OVERRIDE=ov))
    t = Triangulator(cfg, 7, primary, {k: objs[k] for k in primary}, secondary, {k: objs[k] for k in secondary}, pose2d, None, device="cpu")
    return t, objs


def reference_run(t: Triangulator):
    """The reference's run() loop written out with the reference triangulate_ransac."""
    out, errs = {}, {}
    for human in sorted(t.pose2d):
        out[human] = np.zeros((17, 4))
        errs[human] = np.zeros((17, 1))
        for k in range(17):
            P1, p1, P2, p2 = [], [], [], []
            for key, kp in t.pose2d[human].items():
                if kp[k, 2] <= t.keypoint_thres:
                    continue
                cam = t.cameras.get(key) or t.secondary_cameras.get(key)
                r = cam.cam_from_image(point_2d=kp[k, :2]).copy()
                r[2] = kp[k, 2]
                if key in t.camera_names:
                    P1.append(cam.extrinsics[:3]), p1.append(r)
                else:
                    P2.append(cam.extrinsics[:3]), p2.append(r)
            if len(p1) >= t.min_views:
                X, inl, e = reference(np.array(P1), np.array(p1), t.reprojection_error_epsilon)
                if len(inl) < t.min_views:
                    X, inl, e = reference(np.array(P1 + P2), np.array(p1 + p2), t.reprojection_error_epsilon)
            elif len(p1 + p2) >= t.secondary_min_views:
                X, inl, e = reference(np.array(P1 + P2), np.array(p1 + p2), t.reprojection_error_epsilon)
            else:
                continue
            out[human][k] = [*X, 1]
            errs[human][k] = e.mean()
    return out, errs


@pytest.mark.parametrize("min_views", [2, 5])
def test_triangulator_matches_reference_loop(min_views):
    t, _ = make_triangulator(min_views=min_views)
    got, gerr = t.run(return_error=True)
    ref, rerr = reference_run(t)
    assert sorted(got) == sorted(ref) == ["aria01", "aria02"]
    for h in got:
        np.testing.assert_array_equal(got[h][:, 3], ref[h][:, 3])
        np.testing.assert_allclose(got[h], ref[h], atol=TOL, rtol=0)
        np.testing.assert_allclose(gerr[h], rerr[h], atol=TOL, rtol=0)
    # the override zeroed aria01's nose and left eye in camera 1; the tiny box removed aria02 from camera 3
    k0 = t.pose2d["aria01"][t.camera_names[0]]
    assert (k0[[0, 1], 2] == 0).all() and (t.pose2d["aria02"][t.camera_names[2]][:, 2] == 0).all()
    # the per-point API
    pts = np.array([[*objs_ray(t, key, 5), 0.9] for key in t.camera_names])
    P = np.array([t.cameras[key].extrinsics[:3] for key in t.camera_names])
    X, inl, e = t.triangulate_ransac(P, pts, reprojection_error_epsilon=0.01)
    Xr, ir, er = reference(P, pts, 0.01)
    np.testing.assert_allclose(X, Xr, atol=TOL)
    assert np.array_equal(inl, ir)


def objs_ray(t: Triangulator, key, k: int) -> np.ndarray:
    return t.cameras[key].cam_from_image(point_2d=t.pose2d["aria01"][key][k, :2])[:2]


@pytest.mark.gpu
def test_batch_gpu_matches_cpu():
    cams, xy, conf, valid = scene(B=200, V=20, seed=4)
    a = triangulate_ransac_batch(xy, cams.extrinsics, conf, valid)
    b = triangulate_ransac_batch(xy.cuda(), cams.extrinsics.cuda(), conf.cuda(), valid.cuda())
    torch.testing.assert_close(b[0].cpu(), a[0], atol=1e-9, rtol=0, equal_nan=True)
    assert torch.equal(b[1].cpu(), a[1])
