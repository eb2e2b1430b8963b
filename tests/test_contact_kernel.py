"""The contact grid kernel's fast paths (:mod:`h4d_fast.ops._contact_grid_numba`,
:mod:`h4d_fast.ops._contact_numba`): the export's summary (``contact_frames``,
``contact_pair_frames``) against the exact per-point query (``query_frames``) and brute force, on
scenes that take each path: rays cast to the left, to the right and split in a row, points in
cells with triangles (own rays, points exactly on the surface), triangles wider than three cells,
a flat candidate box, a mesh partly inside another and frames with no candidate at all."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from h4d_fast.ops import penetration as _mesh  # noqa: E402
from h4d_fast.ops._contact_numba import contact_frames, contact_pair_frames, query_frames  # noqa: E402
from h4d_fast.ops._contact_query_numba import _winding_all  # noqa: E402
from h4d_fast.ops._mesh_numba import vertex_areas  # noqa: E402
from test_contact import icosphere  # noqa: E402

BAND = 0.01
SPH_V, SPH_F = (x.numpy() for x in icosphere(3, 1.0))  # unit sphere, 642 vertices
COARSE_V, COARSE_F = (x.numpy() for x in icosphere(1, 1.0))  # 42 vertices: edges ~0.6 of the radius


def _rot(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _ellipsoid(v: np.ndarray, scale, rot: np.ndarray, at) -> np.ndarray:
    return (v * np.asarray(scale)) @ rot.T + np.asarray(at)


def _summary_of_query(P: np.ndarray, V: np.ndarray, faces: np.ndarray, band: float):
    d, ins, vd = query_frames(P, V, faces, band)
    contact = ins | (d <= band)
    vd_in = np.where(ins, vd, 0.0)
    return contact, vd_in.max(-1, initial=0.0), vd_in.sum(-1), ins.sum(-1), d, ins


def _check(P: np.ndarray, V: np.ndarray, faces_p: np.ndarray, faces_v: np.ndarray, band: float = BAND) -> np.ndarray:
    """Summary == exact query == brute force, for frames ``P [F, M, 3]`` against ``V [F, N, 3]``
    (float64; both closed meshes, for the pair kernel); returns the contact labels."""
    c, mx, sm, n, _ = contact_frames(P, V, faces_v, band)
    qc, qmx, qsm, qn, d, ins = _summary_of_query(P, V, faces_v, band)
    assert np.array_equal(c, qc)
    assert np.array_equal(n, qn)
    np.testing.assert_allclose(mx, qmx, rtol=1e-12, atol=0)
    np.testing.assert_allclose(sm, qsm, rtol=1e-12, atol=1e-15)
    for f in range(P.shape[0]):  # brute force: every triangle, the generalised winding number
        bd, bi = _mesh._depth_exact(torch.as_tensor(P[f], dtype=torch.float64), torch.as_tensor(V[f], dtype=torch.float64),
                                    torch.as_tensor(faces_v))
        bd, bi = bd.numpy(), bi.numpy()
        sure = np.abs(bd - band) > 1e-9
        assert np.array_equal(c[f][sure], (bi | (bd <= band))[sure]), f
        assert np.array_equal(ins[f], bi), f
        fin = np.isfinite(d[f])
        np.testing.assert_allclose(d[f][fin], bd[fin], atol=1e-12, rtol=0)
    vol = contact_frames(P, V, faces_v, band, point_faces=faces_p)[4]  # inside points: exact depth x vertex area
    for f in range(P.shape[0]):
        bd, bi = _mesh._depth_exact(torch.as_tensor(P[f]), torch.as_tensor(V[f]), torch.as_tensor(faces_v))
        want = (bd.numpy() * vertex_areas(P[f], faces_p.astype(np.int64)))[bi.numpy()].sum()
        np.testing.assert_allclose(vol[f], want, rtol=1e-9, atol=1e-15)
    (pa, pb) = contact_pair_frames(P, V, faces_p, faces_v, band, volume=True)
    for got, want in zip(pa, contact_frames(P, V, faces_v, band, point_faces=faces_p)):
        assert np.array_equal(got, want)
    for got, want in zip(pb, contact_frames(V, P, faces_p, band, point_faces=faces_v)):
        assert np.array_equal(got, want)
    return c


def test_sides_of_the_rows():
    """An ellipsoid through a sphere's shell (the sphere's candidates on both of its sides along x:
    rows split), beside it on the left and on the right (one side each), and partly inside."""
    rng = np.random.default_rng(0)
    eye = np.eye(3)
    scenes = [
        (_ellipsoid(SPH_V, 0.15, eye, (0, 0, 0)), _ellipsoid(SPH_V, (0.3, 0.05, 0.05), eye, (0.0, 0.02, 0.01))),
        (_ellipsoid(SPH_V, 0.1, eye, (0, 0, 0)), _ellipsoid(SPH_V, (0.1, 0.08, 0.12), eye, (0.203, 0.01, 0.0))),
        (_ellipsoid(SPH_V, 0.1, eye, (0, 0, 0)), _ellipsoid(SPH_V, (0.1, 0.08, 0.12), eye, (-0.196, -0.02, 0.03))),
        (_ellipsoid(SPH_V, 0.1, eye, (0, 0, 0)), _ellipsoid(SPH_V, (0.06, 0.06, 0.06), _rot(rng), (0.09, 0.0, 0.0))),
        (_ellipsoid(SPH_V, 0.1, eye, (0, 0, 0)), _ellipsoid(SPH_V, 0.1, eye, (3.0, 0.0, 0.0))),  # no candidate
    ]
    P = np.stack([a for a, _ in scenes])
    V = np.stack([b for _, b in scenes])
    c = _check(P, V, SPH_F, SPH_F)
    assert c[0].any() and c[3].any() and not c[4].any()


def test_random_poses_and_wide_triangles():
    """Random ellipsoids (rotated, stretched) around another, some overlapping; and coarse meshes
    whose triangles span more than three cells."""
    rng = np.random.default_rng(1)
    P, V = [], []
    for f in range(12):
        a = _ellipsoid(SPH_V, rng.uniform(0.05, 0.2, 3), _rot(rng), (0, 0, 0))
        d = rng.normal(size=3)
        b = _ellipsoid(SPH_V, rng.uniform(0.05, 0.2, 3), _rot(rng), d / np.linalg.norm(d) * rng.uniform(0.05, 0.3))
        P.append(a)
        V.append(b)
    _check(np.stack(P), np.stack(V), SPH_F, SPH_F)
    P, V = [], []
    for f in range(6):
        a = _ellipsoid(COARSE_V, rng.uniform(0.1, 0.25, 3), _rot(rng), (0, 0, 0))
        b = _ellipsoid(COARSE_V, rng.uniform(0.1, 0.25, 3), _rot(rng), rng.uniform(-0.2, 0.2, 3))
        P.append(a)
        V.append(b)
    c = _check(np.stack(P), np.stack(V), COARSE_F, COARSE_F)
    assert c.any()


def test_flat_candidates_and_points_on_the_surface():
    """A flat sheet of points through a sphere (a candidate box one cell deep), and a mesh against
    itself: every point a vertex of the surface, where the own ray's crossing lies at the point (the
    kernel then counts every triangle along ``-x``, as the original ray)."""
    g = np.linspace(-0.15, 0.15, 41)
    sheet = np.stack(np.meshgrid(g, g, [0.013], indexing="ij"), -1).reshape(-1, 3)
    sph = _ellipsoid(SPH_V, 0.1, np.eye(3), (0.0, 0.0, 0.0))
    c, mx, sm, n, _ = contact_frames(sheet[None], sph[None], SPH_F, BAND)
    qc, qmx, qsm, qn, d, ins = _summary_of_query(sheet[None], sph[None], SPH_F, BAND)
    assert np.array_equal(c, qc) and np.array_equal(n, qn) and n[0] > 0
    bd, bi = _mesh._depth_exact(torch.as_tensor(sheet), torch.as_tensor(sph), torch.as_tensor(SPH_F))
    assert np.array_equal(ins[0], bi.numpy())
    rng = np.random.default_rng(2)
    for v, fc in ((_ellipsoid(SPH_V, (0.1, 0.07, 0.12), _rot(rng), (0.01, 0.02, 0.03)), SPH_F),
                  (_ellipsoid(COARSE_V, (0.2, 0.1, 0.15), _rot(rng), (0.0, 0.0, 0.0)), COARSE_F)):
        c, mx, sm, n, _ = contact_frames(v[None], v[None], fc, BAND)
        assert c.all()
        _, ins, vd = query_frames(v[None], v[None], fc, BAND)
        want = np.array([_winding_all(p[0], p[1], p[2], v, fc.astype(np.int64)) != 0 for p in v])
        assert np.array_equal(ins[0], want) and n[0] == want.sum()
        (pa, pb) = contact_pair_frames(v[None], v[None], fc, fc, BAND)
        assert np.array_equal(pa[0], c) and np.array_equal(pa[3], n) and np.array_equal(pb[3], n)


def test_closest_triangles_within_the_band():
    """query_frames' closest triangle and point (the synthetic ground truth's settling reads them):
    at the reported distance, and the nearest one."""
    rng = np.random.default_rng(3)
    a = _ellipsoid(SPH_V, 0.1, np.eye(3), (0, 0, 0))[None]
    b = _ellipsoid(SPH_V, (0.1, 0.09, 0.11), _rot(rng), (0.195, 0.0, 0.0))[None]
    d, ins, vd, tri, st = query_frames(a, b, SPH_F, 0.02, closest=True)
    fin = np.isfinite(d[0])
    assert fin.sum() > 10 and np.array_equal(tri[0] >= 0, fin)
    m = np.nonzero(fin)[0]
    p, q, r = (b[0][SPH_F[tri[0, m], k]] for k in range(3))
    x = p + st[0, m, :1] * (q - p) + st[0, m, 1:] * (r - p)
    np.testing.assert_allclose(np.linalg.norm(a[0, m] - x, axis=-1), d[0, m], atol=1e-12, rtol=0)
    bd, _ = _mesh._depth_exact(torch.as_tensor(a[0, m]), torch.as_tensor(b[0]), torch.as_tensor(SPH_F))
    np.testing.assert_allclose(d[0, m], bd.numpy(), atol=1e-12, rtol=0)
    assert math.isfinite(float(d[0, m].max()))
