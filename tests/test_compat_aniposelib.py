"""h4d_fast.compat.aniposelib against aniposelib itself (where it installs) and against the
semantics written out here (always)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from h4d_fast.compat import _geometry as G
from h4d_fast.compat import aniposelib as A

DEMO = next((p for p in (Path(__file__).resolve().parents[2] / "shared" / "data" / "pose2sim_demo", Path("/work/shared/data/pose2sim_demo"))
             if p.is_dir()), Path("/nonexistent"))


def _aniposelib():
    """aniposelib's cameras module, or skip (it needs jax for triangulation)."""
    pytest.importorskip("jax", reason="aniposelib's triangulation needs jax (pip install 'h4d_fast[compat]')")
    return pytest.importorskip("aniposelib.cameras", reason="aniposelib not installed (pip install 'h4d_fast[compat]')")


def _dicts(C: int, seed: int = 0, fisheye_every: int = 3) -> list[dict]:
    """Camera dicts in aniposelib's layout on a ring around (0, 0, 1)."""
    import cv2

    rng = np.random.RandomState(seed)
    out = []
    for c in range(C):
        ang = 2 * np.pi * c / C + 0.1 * rng.randn()
        cen = np.array([3 * np.cos(ang), 3 * np.sin(ang), 1.5 + 0.3 * rng.randn()])
        z = np.array([0, 0, 1.0]) - cen
        z /= np.linalg.norm(z)
        x = np.cross(z, [0, 0, 1])
        x /= np.linalg.norm(x)
        R = np.stack([x, np.cross(z, x), z])
        fish = fisheye_every and c % fisheye_every == fisheye_every - 1
        d = [0.05, -0.01, 0.002, 0.0] if fish else [-0.12 + 0.01 * c, 0.03, 0.001, -0.0005, 0.004]
        out.append({"name": f"c{c}", "size": [1280, 720], "matrix": [[1000.0 + 15 * c, 0, 640 + c], [0, 1005.0, 360 - c], [0, 0, 1]],
                    "distortions": d, "rotation": cv2.Rodrigues(R)[0].ravel().tolist(), "translation": (-R @ cen).tolist(),
                    "fisheye": bool(fish)})
    return out


def _points(group, N: int, seed: int = 0, noise: float = 2.0, missing: float = 0.15, outliers: int = 4) -> np.ndarray:
    rng = np.random.RandomState(seed)
    X = rng.uniform(-0.5, 0.5, (N, 3)) + [0, 0, 1.0]
    cams = A.cameras_of(group, "cpu")
    p = cams.project(torch.as_tensor(X))[0].transpose(0, 1).numpy() + rng.normal(0, noise, (len(cams), N, 2))
    p[rng.rand(len(cams), N) < missing] = np.nan
    for k in range(outliers):
        p[k % len(cams), k] += 60.0
    return p


# ----------------------------------------------------------------------------- always
def test_undistort_matches_opencv():
    import cv2

    cams = A.cameras_of(A.CameraGroup.from_dicts(_dicts(4, fisheye_every=2)), "cpu")
    uv = torch.as_tensor(np.random.RandomState(1).uniform([0, 0], [1280, 720], (50, 4, 2)))
    xn = G.undistort_opencv(uv, cams).numpy()
    for c in range(4):
        K = cams.K[c].numpy()
        pts = np.ascontiguousarray(uv[:, c].numpy()).reshape(-1, 1, 2)
        if cams.model[c] == "fisheye":
            ref = cv2.fisheye.undistortPoints(pts, K, cams.dist[c, :4].numpy()).reshape(-1, 2)
        else:
            ref = cv2.undistortPoints(pts, K, cams.dist[c, :5].numpy()).reshape(-1, 2)
        np.testing.assert_allclose(xn[:, c], ref, atol=1e-10, rtol=0)


def test_homogeneous_dlt_matches_svd():
    from helpers import normalized_projections, random_points, ring_cameras

    cams = ring_cameras(5, seed=1)
    g = torch.Generator().manual_seed(0)
    X0 = random_points(200, seed=2)
    xy = normalized_projections(cams, X0) + 0.002 * torch.randn(200, 5, 2, generator=g, dtype=torch.float64)
    xy[:20, 0] += 0.05  # a wrong view: a less separated smallest singular value
    P = cams.extrinsics
    w = 0.3 + torch.rand(200, 5, generator=g, dtype=torch.float64)
    X = G.homogeneous_dlt(G.dlt_rows_normal(xy, P, w).sum(-3))
    r1 = (xy[..., 0, None] * P[:, 2] - P[:, 0]) * w[..., None]
    r2 = (xy[..., 1, None] * P[:, 2] - P[:, 1]) * w[..., None]
    Vh = torch.linalg.svd(torch.cat([r1, r2], -2)).Vh
    ref = Vh[:, -1, :3] / Vh[:, -1, 3:]
    torch.testing.assert_close(X, ref, atol=1e-12, rtol=0)
    # fewer than two views: NaN (the callers count the views)
    one = xy[:3].clone()
    one[:, 1:] = float("nan")
    assert torch.isnan(A.triangulate_normalized(one, P)).all()


def _ransac_oracle(group, p: np.ndarray, min_cams: int = 2, thr: float = 0.5):
    """aniposelib's triangulate_possible semantics, one point at a time, from this package's pieces."""
    cams = A.cameras_of(group, "cpu")
    C, N = p.shape[:2]
    out = np.full((N, 3), np.nan)
    picked = np.zeros((C, N), bool)
    errs = np.zeros(N)
    for n in range(N):
        avail = [c for c in range(C) if not np.isnan(p[c, n, 0])]
        best, best_e = None, 200.0
        for choice in itertools.product(*[[c, None] for c in avail]):
            sub = [c for c in choice if c is not None]
            if (len(sub) < min_cams and len(sub) != len(avail)) or not sub:  # no view at all: aniposelib raises
                continue
            X = A.triangulate(cams.subset(sub), p[sub, n])
            e = A._reproj_mean(torch.as_tensor(X), torch.as_tensor(p[sub, n]), torch.ones(len(sub), dtype=torch.bool), cams.subset(sub))
            e = float(e)
            if e < best_e:
                best, best_e = (X, sub), e
                if best_e < thr:
                    break
        if best is not None:
            out[n], errs[n] = best[0], best_e
            picked[best[1], n] = True
    return out, picked, errs


def test_ransac_exact_matches_the_subset_search():
    g = A.CameraGroup.from_dicts(_dicts(5))
    p = _points(g, 12, seed=2)
    p[:, 0] = np.nan  # no view
    p[1:, 1] = np.nan  # one view
    X, picked, p2, err = A.triangulate_ransac(g, p, min_cams=2, device="cpu")
    rX, rp, re = _ransac_oracle(g, p)
    np.testing.assert_allclose(X, rX, atol=1e-9, equal_nan=True)
    assert np.array_equal(picked[..., 0], rp)
    np.testing.assert_allclose(err, re, atol=1e-9)
    assert np.array_equal(np.isnan(p2[..., 0]), ~picked[..., 0])


def test_ransac_h4d_method_keeps_consistent_views():
    g = A.CameraGroup.from_dicts(_dicts(6, fisheye_every=0))
    p = _points(g, 20, seed=3, noise=0.1, missing=0.0, outliers=0)
    p[2, :5] += 80.0  # camera 2 wrong for the first 5 points
    X, picked, _, err = A.triangulate_ransac(g, p, method="h4d", device="cpu")
    assert not picked[2, :5].any() and picked[:, 5:].all()
    assert np.isfinite(X).all() and (err < 0.5).all()
    # without the wrong view the plain DLT gives the same points to the noise level
    keep = [c for c in range(6) if c != 2]
    np.testing.assert_allclose(X[:5], A.triangulate(A.CameraGroup.from_dicts([_dicts(6, fisheye_every=0)[c] for c in keep]), p[keep, :5]), atol=2e-3)


# ----------------------------------------------------------------------------- against aniposelib
def test_triangulate_matches_aniposelib():
    cl = _aniposelib()
    d = _dicts(6)
    ref_g = cl.CameraGroup.from_dicts(d)
    p = _points(ref_g, 60, seed=0)
    ref = ref_g.triangulate(p)
    got = A.triangulate(ref_g, p, device="cpu")
    np.testing.assert_allclose(got, ref, atol=1e-9, equal_nan=True)  # measured: 1.2e-14 m
    # one point [C, 2], and undistort=False (normalized input)
    np.testing.assert_allclose(A.triangulate(ref_g, p[:, 3]), ref_g.triangulate(p[:, 3]), atol=1e-9)
    xn = A._normalized(torch.as_tensor(p), A.cameras_of(ref_g, "cpu"), True).transpose(0, 1).numpy()
    np.testing.assert_allclose(A.triangulate(ref_g, xn, undistort=False), ref_g.triangulate(xn, undistort=False), atol=1e-9, equal_nan=True)
    # the drop-in class: same results through aniposelib's own loader path
    g2 = A.CameraGroup.from_dicts(d)
    assert isinstance(g2, cl.CameraGroup)
    np.testing.assert_allclose(g2.triangulate(p), ref, atol=1e-9, equal_nan=True)


def test_triangulate_ransac_matches_aniposelib():
    cl = _aniposelib()
    ref_g = cl.CameraGroup.from_dicts(_dicts(6))
    p = _points(ref_g, 30, seed=1)
    for min_cams in (2, 3):
        r = ref_g.triangulate_ransac(p, min_cams=min_cams)
        o = A.triangulate_ransac(ref_g, p, min_cams=min_cams, device="cpu")
        np.testing.assert_allclose(o[0], r[0], atol=1e-9, equal_nan=True)  # measured: 5e-15 m
        assert np.array_equal(o[1], r[1])
        np.testing.assert_allclose(o[2], r[2], atol=0, equal_nan=True)
        np.testing.assert_allclose(o[3], r[3], atol=1e-9)


@pytest.mark.skipif(not (DEMO / "single_person").is_dir(), reason="Pose2Sim demo data absent")
def test_real_capture_matches_aniposelib():
    """aniposelib loads Pose2Sim's calibration TOML; the real OpenPose detections of the demo
    (likelihood below 0.3 = missing) give the same points through both."""
    cl = _aniposelib()
    import json

    g = cl.CameraGroup.load(str(DEMO / "calibration" / "Calib_qualisys.toml"))
    dirs = sorted((DEMO / "single_person" / "pose_openpose_body25b").glob("cam*_json"))
    pts = []
    for d in dirs:
        rows = []
        for f in sorted(d.glob("*.json"))[::10]:
            people = json.loads(f.read_text()).get("people", [])
            k = np.asarray(people[0]["pose_keypoints_2d"], float).reshape(-1, 3) if people else np.full((25, 3), np.nan)
            k[k[:, 2] < 0.3, :2] = np.nan
            rows.append(k[:, :2])
        pts.append(np.concatenate(rows))
    p = np.stack(pts)  # [4, N, 2]
    np.testing.assert_allclose(A.triangulate(g, p, device="cpu"), g.triangulate(p), atol=1e-8, equal_nan=True)
    r = g.triangulate_ransac(p[:, :60])
    o = A.triangulate_ransac(g, p[:, :60], device="cpu")
    np.testing.assert_allclose(o[0], r[0], atol=1e-8, equal_nan=True)
    assert np.array_equal(o[1], r[1])


@pytest.mark.gpu
def test_gpu_matches_cpu():
    g = A.CameraGroup.from_dicts(_dicts(8))
    p = _points(g, 40, seed=4)
    np.testing.assert_allclose(A.triangulate(g, p, device="cuda"), A.triangulate(g, p, device="cpu"), atol=1e-9, equal_nan=True)
    a, b = A.triangulate_ransac(g, p, device="cuda"), A.triangulate_ransac(g, p, device="cpu")
    np.testing.assert_allclose(a[0], b[0], atol=1e-9, equal_nan=True)
    assert np.array_equal(a[1], b[1])
