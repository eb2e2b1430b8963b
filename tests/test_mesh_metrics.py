"""Mesh metrics: PVE, MPJPE-24 and the two-person penetration volume."""

from __future__ import annotations

import math

import pytest
import torch

from h4d_fast.eval.metrics import mesh_errors, mpjpe24, pve
from h4d_fast.ops.mesh_geometry import closest_point_triangle, vertex_areas
from h4d_fast.ops.penetration import inside_depth, penetration_volume, winding_number

# a closed, outward-oriented unit cube (12 triangles)
CUBE_V = torch.tensor(
    [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], dtype=torch.float64
)
CUBE_F = torch.tensor(
    [[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4], [2, 3, 7], [2, 7, 6], [1, 2, 6], [1, 6, 5], [0, 4, 7], [0, 7, 3]]
)


@pytest.fixture(scope="module")
def default_body():
    """The embedded default body model and its fast evaluator (skipped when unavailable)."""
    pytest.importorskip("smplx")
    from h4d_fast.body import DefaultModelUnavailable, load_body_model
    from h4d_fast.body.fast import FastBody

    try:
        body = load_body_model()
    except DefaultModelUnavailable as e:  # pragma: no cover
        pytest.skip(str(e))
    return body, FastBody(body)


def box(lo, hi) -> torch.Tensor:
    lo, hi = torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)
    return (lo + CUBE_V * (hi - lo))[None]  # [1, 8, 3]


def test_cube_is_closed_and_outward():
    wn = winding_number(torch.tensor([[0.5, 0.5, 0.5], [2.0, 0.5, 0.5]], dtype=torch.float64), CUBE_V, CUBE_F)
    torch.testing.assert_close(wn, torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-9, rtol=0)


def test_vertex_areas_sum_to_surface_area():
    v = box([0, 0, 0], [2, 1, 0.5])
    a = vertex_areas(v, CUBE_F)
    assert float(a.sum()) == pytest.approx(2 * (2 * 1 + 2 * 0.5 + 1 * 0.5))


def test_closest_point_features():
    a, b, c = torch.tensor([0.0, 0, 0]), torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0])
    pts = torch.tensor([[0.2, 0.2, 1.0], [-1, -1, 0], [2, -0.5, 0], [-0.5, 2, 0], [0.5, -1, 0], [1, 1, 0], [-1, 0.5, 0]])
    q, feat = closest_point_triangle(pts, a, b, c)
    assert feat.tolist() == [6, 0, 1, 2, 3, 4, 5]
    torch.testing.assert_close(q[0], torch.tensor([0.2, 0.2, 0.0]))
    torch.testing.assert_close(q[5], torch.tensor([0.5, 0.5, 0.0]))


@pytest.mark.parametrize("method,backend", [("fast", "depth"), ("fast", "grid"), ("exact", "depth")])
def test_penetration_of_two_boxes_by_hand(method, backend):
    """B's four corners at x = 0.9 lie 0.1 inside A (nearest faces x = 1, y = 0 or 1, z = 0 or 1
    are all 0.1 away); no corner of A is inside B. pen = sum 0.1 * area_B(corner), in cm^3."""
    A = box([0, 0, 0], [1, 1, 1])
    B = box([0.9, 0.1, 0.1], [1.9, 0.9, 0.9])
    depth_b = inside_depth(B, A, CUBE_F, method)
    assert depth_b[0, [0, 3, 4, 7]].tolist() == pytest.approx([0.1] * 4)
    assert depth_b[0, [1, 2, 5, 6]].abs().max() == 0
    assert inside_depth(A, B, CUBE_F, method).abs().max() == 0
    area_b = vertex_areas(B, CUBE_F)[0]
    expect = float(0.1 * area_b[[0, 3, 4, 7]].sum()) * 1e6
    if backend == "grid":
        pytest.importorskip("numba")
    got = penetration_volume(A, B, CUBE_F, method=method, backend=backend)
    assert float(got[0]) == pytest.approx(expect, rel=1e-9)
    # symmetric in the two people, zero when apart
    assert float(penetration_volume(B, A, CUBE_F, method=method, backend=backend)[0]) == pytest.approx(expect, rel=1e-9)
    far = box([3, 0, 0], [4, 1, 1])
    assert float(penetration_volume(A, far, CUBE_F, method=method, backend=backend)[0]) == 0.0


def test_fast_inside_test_matches_winding_number_on_bodies(default_body):
    body, fast = default_body
    bp = torch.zeros(1, 69)
    bp.view(1, 23, 3)[:, 15, 2] = -1.1
    bp.view(1, 23, 3)[:, 16, 2] = 1.1
    bp.view(1, 23, 3)[:, 0, 0] = -0.6  # a bent hip: a concave groin
    verts, _ = fast.vertices(torch.zeros(1, 3), bp, torch.zeros(1, 10), None)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(verts.shape[1], generator=g)[:400]
    pts = verts[:, idx] + 0.03 * torch.randn(1, 400, 3, generator=g)  # near the surface, both sides
    fastd = inside_depth(pts, verts, body.faces, "fast")
    exact = inside_depth(pts, verts, body.faces, "exact")
    wn = winding_number(pts[0], verts[0], body.faces) > 0.5
    assert 50 < int(wn.sum()) < 350
    assert torch.equal(fastd[0] > 0, wn)
    torch.testing.assert_close(fastd, exact, atol=2e-4, rtol=0)


def test_pve_and_mpjpe():
    g = torch.Generator().manual_seed(1)
    gt_v = torch.randn(3, 50, 3, generator=g, dtype=torch.float64)
    gt_j = torch.randn(3, 45, 3, generator=g, dtype=torch.float64)
    off = torch.tensor([0.01, 0.0, 0.0], dtype=torch.float64)
    assert pve(gt_v + off, gt_v).tolist() == pytest.approx([10.0] * 3)
    assert mpjpe24(gt_j + off, gt_j).tolist() == pytest.approx([10.0] * 3)
    assert mpjpe24(gt_j + off, gt_j, "root").abs().max() < 1e-9
    # joints beyond 24 do not count
    j2 = gt_j.clone()
    j2[:, 24:] += 1.0
    assert mpjpe24(j2, gt_j).abs().max() < 1e-9
    # a similarity transform disappears under Procrustes alignment
    c, s = math.cos(0.7), math.sin(0.7)
    R = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)
    moved_v = 1.1 * gt_v @ R.T + 0.3
    moved_j = 1.1 * gt_j @ R.T + 0.3
    assert pve(moved_v, gt_v, "procrustes").max() < 1e-6
    assert mpjpe24(moved_j, gt_j, "procrustes").max() < 1e-6
    assert pve(gt_v + off, gt_v, "root", gt_j[:, 0] + off, gt_j[:, 0]).max() < 1e-9
    m = mesh_errors(gt_v + off, gt_v, gt_j + off, gt_j)
    assert m["pve"] == pytest.approx(10.0) and m["root_pve"] < 1e-6 and m["pa_mpjpe"] < 1e-6
    with pytest.raises(ValueError):
        pve(gt_v, gt_v, "root")


def test_frame_batched_fast_depth_matches_the_per_frame_path(default_body):
    """The GPU path's frame-batched search (run here on CPU tensors) equals the per-frame one."""
    from h4d_fast.ops.mesh_geometry import _topology
    from h4d_fast.ops.penetration import _depth_fast, _depth_fast_frames

    body, fast = default_body
    g = torch.Generator().manual_seed(1)
    verts, _ = fast.vertices(torch.zeros(3, 3), 0.3 * torch.randn(3, 69, generator=g), torch.zeros(3, 10), None)
    verts = verts.double()
    idx = torch.randperm(verts.shape[1], generator=g)[:300]
    pts = verts[:, idx] + 0.03 * torch.randn(3, 300, 3, generator=g, dtype=torch.float64)
    topo = _topology(body.faces, verts.shape[1])
    d_b, in_b = _depth_fast_frames(pts, verts, topo, 8)
    for i in range(3):
        d, ins = _depth_fast(pts[i], verts[i], topo, 8)
        assert torch.equal(ins, in_b[i])
        torch.testing.assert_close(d, d_b[i], atol=1e-9, rtol=0)


def _posed_pairs(fast, B: int, seed: int, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``B`` pairs of randomly posed default bodies, the second moved along x by ``step x 0 .. 4``
    (from overlapping to apart): vertices ``[B, N, 3]`` twice."""
    g = torch.Generator().manual_seed(seed)
    va, _ = fast.vertices(torch.zeros(B, 3), 0.3 * torch.randn(B, 69, generator=g), torch.zeros(B, 10), None)
    vb, _ = fast.vertices(torch.zeros(B, 3), 0.3 * torch.randn(B, 69, generator=g), torch.zeros(B, 10),
                          torch.tensor([[step, 0.0, 0.0]]).expand(B, 3) * torch.linspace(0, 4, B)[:, None])
    return va, vb


def test_penetration_volume_grid_kernel_matches_depth_path(default_body):
    """The "auto" measure (the host grid kernel) on posed bodies from overlapping to apart, float32
    and float64, with a frame holding a NaN vertex (0 from the grid kernel): equal to the brute-force
    "exact" method where the bodies overlap deeply (measured 14,490.7987 and 17,787.6748 cm^3 both;
    the "fast" depth path gives 14,011.1 there: deep points whose closest triangle is not among its
    nearest-vertex candidates), and to the "fast" depth path on the shallow
    frames (1,828.94 / 51.09 / 0 cm^3 both; rtol 1e-4 as the export test: a vertex whose "fast"
    depth comes from another nearby triangle differs by its area times a fraction of a mm)."""
    pytest.importorskip("numba")
    body, fast = default_body
    B = 6
    va, vb = _posed_pairs(fast, B, seed=5, step=0.2)
    va[2, 10, 1] = float("nan")
    for dt in (torch.float32, torch.float64):
        a, b = va.to(dt), vb.to(dt)
        want = penetration_volume(a, b, body.faces, backend="depth")
        got = penetration_volume(a, b, body.faces, backend="grid")
        assert got.dtype == dt and float(got[2]) == 0.0  # a broken mesh measures nothing (the depth path skips the vertex)
        assert float(want[0]) > 100 and float(want[-1]) == 0.0
        torch.testing.assert_close(got[3:], want[3:], rtol=1e-4, atol=1e-3)
        if dt == torch.float64:
            exact = penetration_volume(a[:2], b[:2], body.faces, method="exact")
            torch.testing.assert_close(got[:2], exact, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(penetration_volume(a, b, body.faces), got)  # auto = grid with numba
    with pytest.raises(ValueError, match="backend"):
        penetration_volume(va, vb, body.faces, backend="nope")
    with pytest.raises(ValueError, match="grid"):
        penetration_volume(va, vb, body.faces, method="exact", backend="grid")


@pytest.mark.gpu
def test_penetration_volume_on_cuda_matches_cpu(default_body):
    body, fast = default_body
    B = 7
    va, vb = _posed_pairs(fast, B, seed=2, step=0.25)
    va, vb = va.double(), vb.double()
    cpu = penetration_volume(va, vb, body.faces, backend="depth")
    gpu = penetration_volume(va.cuda(), vb.cuda(), body.faces.cuda(), backend="depth").cpu()
    assert float(cpu[0]) > 100 and float(cpu[-1]) == 0.0  # overlapping .. 1 m apart
    torch.testing.assert_close(gpu, cpu, rtol=1e-6, atol=1e-6)
    # "auto" on CUDA tensors: the host grid kernel, back on the device
    auto = penetration_volume(va.cuda(), vb.cuda(), body.faces.cuda())
    assert auto.device.type == "cuda"
    torch.testing.assert_close(auto.cpu(), penetration_volume(va, vb, body.faces, backend="grid"))


def test_numba_fast_depth_matches_the_torch_path(default_body):
    """The CPU numba path (exact cell cull + candidate-triangle search) equals the torch code."""
    pytest.importorskip("numba")
    import h4d_fast.ops.penetration as M

    body, fast = default_body
    g = torch.Generator().manual_seed(2)
    verts, _ = fast.vertices(torch.zeros(4, 3), 0.3 * torch.randn(4, 69, generator=g), torch.zeros(4, 10), None)
    other = verts + torch.tensor([0.12, 0.0, 0.05])  # deep overlap
    idx = torch.randperm(verts.shape[1], generator=g)[:2000]
    pts = torch.cat([other, verts[:, idx] + 0.03 * torch.randn(4, 2000, 3, generator=g)], 1)  # + points near the surface
    assert M._numba_depth() is not None
    d_nb = M.inside_depth(pts, verts, body.faces)
    saved = list(M._NUMBA_DEPTH)
    try:
        M._NUMBA_DEPTH[:] = [None]
        d_t = M.inside_depth(pts, verts, body.faces)
    finally:
        M._NUMBA_DEPTH[:] = saved
    assert int((d_t > 0).sum()) > 1000
    assert torch.equal(d_nb > 0, d_t > 0)
    torch.testing.assert_close(d_nb, d_t, atol=1e-6, rtol=0)


def test_packed_gpu_depth_path_matches_the_per_frame_path(default_body):
    """The GPU path packs each frame's box candidates (varying counts, one frame without any);
    run on CPU tensors here, it equals the per-frame torch search point for point."""
    import h4d_fast.ops.penetration as M

    body, fast = default_body
    g = torch.Generator().manual_seed(4)
    B = 4
    verts, _ = fast.vertices(torch.zeros(B, 3), 0.3 * torch.randn(B, 69, generator=g), torch.zeros(B, 10), None)
    verts = verts.double()
    shift = torch.tensor([[0.1, 0.0, 0.0], [0.3, 0.0, 0.1], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    pts = verts[:, ::5] + shift[:, None]  # deep overlap, partial, none (3 m away), identical bodies
    lo, hi = verts.amin(1), verts.amax(1)
    cand = ((pts >= lo[:, None]) & (pts <= hi[:, None])).all(-1)
    assert cand[2].sum() == 0 and 0 < cand[1].sum() < cand[0].sum()
    topo = M._topology(body.faces, verts.shape[1])
    packed = M._inside_depth_gpu(pts, verts, topo, cand, 8, pts.new_zeros(B, pts.shape[1]))
    saved = list(M._NUMBA_DEPTH)
    try:
        M._NUMBA_DEPTH[:] = [None]  # the plain per-frame torch path
        ref = M.inside_depth(pts, verts, body.faces)
    finally:
        M._NUMBA_DEPTH[:] = saved
    assert int((ref > 0).sum()) > 100 and float(ref[2].abs().sum()) == 0.0
    torch.testing.assert_close(packed, ref, atol=1e-9, rtol=0)


def test_cell_candidates_equal_the_numba_cull(default_body):
    """The GPU path's batched cell cull (torch) gives the numba kernel's candidates exactly."""
    nb_mod = pytest.importorskip("h4d_fast.ops._mesh_numba")
    import h4d_fast.ops.penetration as M

    body, fast = default_body
    g = torch.Generator().manual_seed(6)
    B = 3
    verts, _ = fast.vertices(torch.zeros(B, 3), 0.3 * torch.randn(B, 69, generator=g), torch.zeros(B, 10), None)
    shift = torch.tensor([[0.12, 0.0, 0.05], [0.4, 0.1, 0.0], [2.5, 0.0, 0.0]])
    pts = verts[:, ::3] + shift[:, None]  # deep overlap, partial, none
    got = M.cell_candidates(pts, verts, body.faces, chunk=2)  # two chunks
    f = body.faces.long().numpy()
    for b in range(B):
        vv = verts[b].double()
        ext = float((vv.amax(0) - vv.amin(0)).max())
        ref = nb_mod.candidates(pts[b].double().numpy(), vv.numpy(), f, ext / M._CELL_DIVISIONS).astype(bool)
        assert torch.equal(got[b], torch.from_numpy(ref)), b
    assert int(got[0].sum()) > 100 and int(got[2].sum()) == 0
