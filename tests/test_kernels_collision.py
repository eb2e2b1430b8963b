"""Collision-loss kernels (numba, triton, cupy) against the torch reference.

Documented tolerance (h4d_fast/ops/collision.py): per-frame loss within ``1e-5 + 1e-4 |loss|``,
gradients within ``1e-4 max|grad| + 1e-6`` elementwise, under random cotangents. numba computes in
float64 and is compared with the float64 reference; triton and cupy compute in float32.

On a CPU box triton runs under ``TRITON_INTERPRET=1`` on tiny shapes (tests/conftest.py sets it for
the whole session); CUDA tests are marked ``gpu`` (``pytest -m gpu`` on the GPU machine).
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from h4d_fast.ops import collision_loss
from h4d_fast.ops._cuda_source import kernel_source
from h4d_fast.ops.collision import CLUSTER, face_clusters, kernel_inputs
from test_collision import box_mesh, icosphere, sphere_pair

HAS_NUMBA = importlib.util.find_spec("numba") is not None
HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CUPY = importlib.util.find_spec("cupy") is not None
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def compare(backend, va, vb, fa, fb=None, device="cpu", dtype=torch.float64, ref_dtype=None, seed=0, **kw):
    """Loss and gradients (random cotangent) of ``backend`` vs the torch reference."""
    fb = fa if fb is None else fb
    ref_dtype = ref_dtype or dtype
    fa, fb = fa.to(device), fb.to(device)
    a = va.detach().to(device, dtype).clone().requires_grad_(True)
    b = vb.detach().to(device, dtype).clone().requires_grad_(True)
    ra = va.detach().to(device, ref_dtype).clone().requires_grad_(True)
    rb = vb.detach().to(device, ref_dtype).clone().requires_grad_(True)
    loss = collision_loss(a, b, fa, fb, backend=backend, **kw)
    ref = collision_loss(ra, rb, fa, fb, backend="torch", **kw)
    w = torch.randn(loss.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(device)
    (loss * w.to(loss.dtype)).sum().backward()
    (ref * w.to(ref.dtype)).sum().backward()
    assert loss.dtype == dtype and loss.shape == ref.shape
    torch.testing.assert_close(loss.double(), ref.double(), rtol=1e-4, atol=1e-5)
    for g, r in ((a.grad, ra.grad), (b.grad, rb.grad)):
        assert torch.isfinite(g).all()
        tol = 1e-4 * float(r.abs().max()) + 1e-6
        torch.testing.assert_close(g.double(), r.double(), rtol=0, atol=tol)
    return loss.detach(), ref.detach()


# ----------------------------------------------------------------------------- shared preparation


def test_face_clusters_are_a_padded_permutation():
    v, f = icosphere(2)
    fc = face_clusters(f, v)
    assert fc.n_faces == f.shape[0] and fc.n_clusters == -(-f.shape[0] // CLUSTER)
    assert fc.faces.shape == (fc.n_clusters * CLUSTER, 3) and fc.faces.dtype == torch.int32
    real = {tuple(r) for r in fc.faces[: fc.n_faces].tolist()}
    assert real == {tuple(r) for r in f.tolist()}
    assert face_clusters(f, v) is fc  # cached per faces tensor


def test_kernel_inputs_activity():
    va, fa, vb, fb = sphere_pair(B=3)
    vb = vb.clone()
    vb[1] += 5.0  # separated
    va = va.clone()
    va[2, 0, 0] = float("nan")  # invalid
    ki = kernel_inputs(va, vb, fa, fb, 12, 1.2, "aligned")
    assert ki.active.tolist() == [[1, 0, 0], [1, 0, 0]]
    assert ki.center.shape == (2, 3, 3) and ki.half.shape == (2, 3)


# ----------------------------------------------------------------------------- numba


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numba_vertex_boxes_equal_aminmax(dtype):
    """kernel_inputs' boxes on a CPU come from the numba reduction: equal to torch.aminmax over random
    shapes, with NaN (per coordinate) and infinite coordinates."""
    from h4d_fast.ops._collision_bounds import vertex_boxes

    g = torch.Generator().manual_seed(3)
    for B, N in ((1, 3), (5, 17), (9, 1000), (2, 1)):
        v = torch.randn(B, N, 3, generator=g, dtype=dtype) * 10
        v[0, N // 2, 1] = float("nan")
        if B > 1:
            v[1, 0, 2] = float("inf")
            v[-1, -1, 0] = -float("inf")
        ref = torch.cat(v.aminmax(dim=1), -1)
        got = vertex_boxes(v)
        assert got.dtype == dtype
        assert torch.equal(torch.isnan(got), torch.isnan(ref))
        assert torch.equal(got.nan_to_num(0.0), ref.nan_to_num(0.0))
    # through kernel_inputs, whose other outputs follow from the boxes
    v = torch.randn(4, 40, 3, generator=g, dtype=dtype)
    ki = kernel_inputs(v, v + 0.05, torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 2]]), 16, 0.1, "aligned", dtype)
    lo, hi = v.amin(1), v.amax(1)
    assert torch.allclose(ki.center[0], 0.5 * (lo + hi))


@needs_numba
@pytest.mark.parametrize("cell_centers", ["aligned", "reference"])
@pytest.mark.parametrize("normalize", ["mean", "sum"])
def test_numba_matches_reference(cell_centers, normalize):
    va, fa, vb, fb = sphere_pair(B=3, level=2, depth=0.25)
    loss, _ = compare("numba", va, vb, fa, fb, grid_size=12, cell_centers=cell_centers, normalize=normalize)
    assert (loss > 0).all()


def signed_cases(seed: int = 0, B: int = 6, level: int = 2, dtype=torch.float64, overlap=(-0.02, 0.28)):
    """Frames for the signed field (``B >= 5``): random depths from a touching to a deep overlap (each
    frame its own jitter; ``overlap`` along x, normalised units ~ world), a separated frame (1) and a
    frame with a NaN vertex (4)."""
    g = torch.Generator().manual_seed(seed)
    va, fa, vb, fb = sphere_pair(B=B, level=level, depth=0.0, seed=seed, dtype=dtype)
    shift = torch.rand(B, generator=g, dtype=dtype) * (overlap[1] - overlap[0]) + overlap[0]
    vb = vb.clone() - torch.stack([shift, 0 * shift, 0 * shift], -1)[:, None]
    vb[1] += 3.0
    va = va.clone()
    va[4, 3, 1] = float("nan")
    return va, fa, vb, fb


@needs_numba
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("margin", [0.0, 0.03])
def test_numba_matches_reference_signed(seed, margin):
    G = (12, 15, 19)[seed]  # odd and even grids
    cc = ("aligned", "reference")[seed % 2]
    va, fa, vb, fb = signed_cases(seed)
    loss, ref = compare("numba", va, vb, fa, fb, grid_size=G, cell_centers=cc, field="signed", margin=margin)
    assert loss[1] == 0 and loss[4] == 0 and (loss[[0, 2, 3, 5]] > 0).all()
    inside = collision_loss(va, vb, fa, fb, grid_size=G, cell_centers=cc, backend="numba")
    if margin == 0:  # the signed field removes the bleed: never above the inside-only grid's loss here
        assert (loss <= inside + 1e-12).all()


@needs_numba
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("margin", [0.0, 0.03])
def test_numba_matches_reference_exact(seed, margin):
    G = (12, 15, 19)[seed]
    cc = ("aligned", "reference")[seed % 2]
    va, fa, vb, fb = signed_cases(seed)
    loss, _ = compare("numba", va, vb, fa, fb, grid_size=G, cell_centers=cc, field="exact", margin=margin)
    assert loss[1] == 0 and loss[4] == 0 and (loss[[0, 2, 3, 5]] > 0).all()


@needs_numba
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("taper", [0.01, 0.1])
def test_numba_matches_reference_taper(seed, taper):
    G = (12, 17)[seed]
    va, fa, vb, fb = signed_cases(seed)
    loss, _ = compare("numba", va, vb, fa, fb, grid_size=G, cell_centers=("aligned", "reference")[seed], taper=taper)
    inside = collision_loss(va, vb, fa, fb, grid_size=G, cell_centers=("aligned", "reference")[seed], backend="numba")
    assert loss[1] == 0 and loss[4] == 0 and bool((loss <= inside + 1e-12).all()) and (loss[[0, 2, 3, 5]] > 0).all()


@needs_numba
def test_numba_exact_box_edges_and_float32():
    # a box owner: the closest features of the probe's vertices include its edges and corners (the
    # pseudo-normal's edge and vertex cases); float32 vertices against the float64 reference
    va, fa = box_mesh((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))
    vb, fb = icosphere(1, 0.15)
    shifts = torch.tensor([[0.55, 0.55, 0.0], [0.55, 0.55, 0.55], [0.6, 0.0, 0.0], [0.52, -0.43, 0.31]], dtype=va.dtype)
    VA, VB = va[None].expand(4, -1, -1).contiguous(), vb[None] + shifts[:, None]
    loss, _ = compare("numba", VA, VB, fa, fb, grid_size=14, field="exact", margin=0.02)
    assert (loss > 0).all()
    compare("numba", VA, VB, fa, fb, dtype=torch.float32, ref_dtype=torch.float64, grid_size=14, field="exact")


@needs_numba
def test_numba_signed_float32_and_two_words():
    va, fa, vb, fb = two_component_pair()
    compare("numba", va, vb, fa, fb, grid_size=70, field="signed", margin=0.01)
    va, fa, vb, fb = signed_cases(3, B=5)
    compare("numba", va, vb, fa, fb, dtype=torch.float32, ref_dtype=torch.float64, grid_size=13, field="signed")


@needs_numba
def test_numba_rows_wider_than_one_word():
    # G = 70: a row's inside bits span two 64-bit words (the parity carried across the boundary)
    va, fa, vb, fb = sphere_pair(B=1, level=2, depth=0.25)
    compare("numba", va, vb, fa, fb, grid_size=70)


@needs_numba
def test_numba_nearest_face_two_level_search_is_exact():
    # a mesh of more than SUPER clusters (5120 faces: 160 clusters in 5 super-clusters): the
    # two-level bound search returns the brute-force minimum over all faces
    from h4d_fast.ops._collision_numba import SUPER, _cluster_boxes, _nearest
    from h4d_fast.ops.mesh_geometry import closest_point_triangle

    v, f = icosphere(4)
    v = v * torch.tensor([1.0, 0.6, 0.3], dtype=v.dtype)  # an ellipsoid: distances vary over the surface
    fc = face_clusters(f, v)
    assert fc.n_clusters > 2 * SUPER
    P = v.double().numpy()
    faces = fc.faces.numpy()
    aabb = np.empty((fc.n_clusters, 6))
    saabb = np.empty((-(-fc.n_clusters // SUPER), 6))
    _cluster_boxes(P, faces, fc.n_clusters, CLUSTER, aabb, saabb)
    q = torch.rand(64, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2.4 - 1.2
    tri = v.double()[f.long()]
    cp, _ = closest_point_triangle(q[:, None], tri[None, :, 0], tri[None, :, 1], tri[None, :, 2])
    brute = (q[:, None] - cp).norm(dim=-1).amin(1)
    res = [_nearest(*map(float, x), P, faces, aabb, saabb, fc.n_clusters, CLUSTER) for x in q]
    got = torch.tensor([r[0] for r in res], dtype=torch.float64)
    torch.testing.assert_close(got, brute, rtol=1e-9, atol=1e-12)
    # the returned slot is a face at that distance (its original index: fc.order)
    d_slot = (q - cp[torch.arange(q.shape[0]), fc.order[[r[1] for r in res]]]).norm(dim=-1)
    torch.testing.assert_close(d_slot, brute, rtol=1e-9, atol=1e-12)


@needs_numba
def test_numba_direct_call_float32_odd_grid():
    va, fa, vb, fb = sphere_pair(B=2, level=1, depth=0.3, seed=4)
    a, b = va.float().requires_grad_(True), vb.float().requires_grad_(True)
    loss = collision_loss(a, b, fa, fb, grid_size=7, backend="numba")
    assert loss.dtype == torch.float32 and loss.requires_grad
    compare("numba", va, vb, fa, fb, dtype=torch.float32, ref_dtype=torch.float64, grid_size=7)
    compare("numba", va, vb, fa, fb, grid_size=37)


@needs_numba
def test_numba_edge_cases():
    va, fa, vb, fb = sphere_pair(B=3, level=1, depth=0.25, seed=1)
    vb = vb.clone()
    vb[1] += torch.tensor([3.0, 0.0, 0.0], dtype=vb.dtype)  # no overlap
    va = va.clone()
    va[2, 5, 1] = float("nan")  # NaN vertex: the frame counts 0, no gradient
    loss, ref = compare("numba", va, vb, fa, fb, grid_size=10)
    assert loss[1] == 0 and loss[2] == 0 and loss[0] > 0
    full, _ = compare("numba", va[:1], va[:1] * 0.97 + 0.01, fa, fa, grid_size=10)  # fully overlapping bodies
    assert full[0] > 0
    one, _ = compare("numba", va[:1], vb[:1], fa, fb, grid_size=10)  # one frame
    assert torch.allclose(one, loss[:1])
    a = va[:0].clone().requires_grad_(True)
    empty = collision_loss(a, vb[:0], fa, fb, backend="numba")  # zero frames
    assert empty.shape == (0,)
    empty.sum().backward()
    assert a.grad.shape == a.shape


@needs_numba
def test_numba_nan_frame_gradients_are_zero():
    va, fa, vb, fb = sphere_pair(B=2, level=1, depth=0.25)
    vb = vb.clone()
    vb[0, 2, 2] = float("nan")
    a, b = va.clone().requires_grad_(True), vb.requires_grad_(True)
    loss = collision_loss(a, b, fa, fb, grid_size=10, backend="numba")
    loss.sum().backward()
    assert loss[0] == 0 and loss[1] > 0
    assert torch.equal(a.grad[0], torch.zeros_like(a.grad[0])) and torch.equal(b.grad[0], torch.zeros_like(b.grad[0]))


@needs_numba
def test_numba_degenerate_grid_aligned_box():
    # the box's vertices and edges lie on grid rows (G = 9, pad = 2): watertight parity needed
    v, f = box_mesh()
    vs, fs = icosphere(1, 0.3, center=(0.45, 0.1, -0.05))
    compare("numba", v[None], vs[None], f, fs, grid_size=9, pad=2.0)


@needs_numba
def test_auto_backend_on_cpu_is_numba_and_agrees():
    va, fa, vb, fb = sphere_pair(B=2, level=1, depth=0.25)
    auto = collision_loss(va, vb, fa, fb, grid_size=10)
    numba_ = collision_loss(va, vb, fa, fb, grid_size=10, backend="numba")
    assert torch.equal(auto, numba_)


# ----------------------------------------------------------------------------- triton


@needs_triton
def test_triton_matches_reference_tiny():
    # frame 0 overlaps, 1 is separated, 2 has a NaN vertex; different meshes for a and b (kept tiny:
    # the interpreter runs ~1 ms per op; full overlap is covered by the numba and gpu tests)
    va, fa, vb, fb = sphere_pair(B=3, level=1, depth=0.3, seed=2)
    vb = vb.clone()
    vb[1] += torch.tensor([2.0, 0.0, 0.0], dtype=vb.dtype)
    va = va.clone()
    va[2, 0, 0] = float("nan")
    loss, _ = compare("triton", va, vb, fa, fb, device=TRITON_DEVICE, dtype=torch.float32, grid_size=8)
    assert loss[0] > 0 and loss[1] == 0 and loss[2] == 0


@needs_triton
@pytest.mark.parametrize("margin", [0.0, 0.03])
def test_triton_matches_reference_signed_tiny(margin):
    va, fa, vb, fb = signed_cases(1, B=6, level=1, overlap=(0.1, 0.3))
    loss, _ = compare("triton", va, vb, fa, fb, device=TRITON_DEVICE, dtype=torch.float32, grid_size=9,
                      field="signed", margin=margin)  # fmt: skip
    assert loss[1] == 0 and loss[4] == 0 and (loss[[0, 2, 3, 5]] > 0).all()


@needs_triton
def test_triton_matches_reference_taper_tiny():
    va, fa, vb, fb = signed_cases(1, B=6, level=1, overlap=(0.0, 0.3))
    loss, _ = compare("triton", va, vb, fa, fb, device=TRITON_DEVICE, dtype=torch.float32, grid_size=9, taper=0.05)
    assert loss[1] == 0 and loss[4] == 0 and (loss[[0, 2, 3, 5]] > 0).any()


def two_component_pair(dtype=torch.float64):
    """Meshes of two small closed components at opposite corners of their boxes: small faces
    relative to the cells even at G = 40 (cheap in the interpreter), and samples at grid x
    indices >= 32 (the second 32-bit parity word of a row)."""
    v1, f1 = icosphere(1, 0.12, center=(-0.8, -0.8, -0.8), dtype=dtype)
    v2, f2 = icosphere(1, 0.12, center=(0.8, 0.8, 0.8), dtype=dtype)
    w1, g1 = icosphere(0, 0.1, center=(0.99, 0.85, 0.8), dtype=dtype)
    w2, g2 = icosphere(0, 0.1, center=(-0.8, 0.9, -0.8), dtype=dtype)
    return torch.cat([v1, v2])[None], torch.cat([f1, f2 + v1.shape[0]]), torch.cat([w1, w2])[None], torch.cat([g1, g2 + w1.shape[0]])


@needs_numba
def test_numba_two_components_two_words():
    va, fa, vb, fb = two_component_pair()
    loss, _ = compare("numba", va, vb, fa, fb, grid_size=40, cell_centers="reference", normalize="sum")
    assert loss[0] > 0


@needs_triton
def test_triton_reference_centers_sum_and_two_words_per_row():
    va, fa, vb, fb = two_component_pair()
    loss, _ = compare(
        "triton", va, vb, fa, fb, device=TRITON_DEVICE, dtype=torch.float32,
        grid_size=40, cell_centers="reference", normalize="sum",
    )  # fmt: skip
    assert loss[0] > 0


@needs_triton
def test_triton_forward_only_and_empty():
    va, fa, vb, fb = sphere_pair(B=1, level=0, depth=0.3)
    with torch.no_grad():
        loss = collision_loss(va.float().to(TRITON_DEVICE), vb.float().to(TRITON_DEVICE), fa.to(TRITON_DEVICE),
                              fb.to(TRITON_DEVICE), grid_size=6, backend="triton")  # fmt: skip
    ref = collision_loss(va.float(), vb.float(), fa, fb, grid_size=6, backend="torch")
    torch.testing.assert_close(loss.cpu(), ref, rtol=1e-4, atol=1e-5)
    e = collision_loss(va[:0].float().to(TRITON_DEVICE), vb[:0].float().to(TRITON_DEVICE), fa.to(TRITON_DEVICE),
                       fb.to(TRITON_DEVICE), backend="triton")  # fmt: skip
    assert e.shape == (0,)


# ----------------------------------------------------------------------------- cupy (host side, no GPU)

_CTYPES = {"int": np.int32, "long long": np.int64, "float": np.float32}


def _cu_signatures() -> dict[str, list[type]]:
    text = kernel_source("collision.cu")
    sigs = {}
    for name, params in re.findall(r"(h4d_collision_\w+)\(([^)]*)\)\s*\{", text):
        kinds = []
        for p in params.split(","):
            p = " ".join(p.replace("__restrict__", "").replace("const", "").split())
            ctype = p.rsplit(" ", 1)[0]
            kinds.append(np.uint64 if "*" in p else _CTYPES[ctype])
        sigs[name] = kinds
    return sigs


def test_cupy_launch_arguments_match_the_cuda_signatures(monkeypatch):
    """Runs the CuPy host code with launches recorded (no GPU): argument count and types per kernel."""
    if not HAS_CUPY:
        monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
    monkeypatch.delitem(sys.modules, "h4d_fast.ops._collision_cupy", raising=False)
    import h4d_fast.ops._collision_cupy as cc

    calls = []
    monkeypatch.setattr(cc.cs, "launch", lambda src, kernel, dev, grid, block, args: calls.append((src, kernel, grid, block, args)))
    monkeypatch.setattr(cc, "_sm_count", lambda index: 2)
    va, fa, vb, fb = sphere_pair(B=2, level=1)
    ki = kernel_inputs(va, vb, fa, fb, 40, 1.2, "aligned", taper=0.01)
    cc.run_cupy(ki, True)
    sigs = _cu_signatures()
    assert set(sigs) == {"h4d_collision_raster", "h4d_collision_mark", "h4d_collision_dist", "h4d_collision_sample"}
    assert [c[1] for c in calls] == [f"h4d_collision_{k}" for k in ("raster", "mark", "dist", "sample") for _ in (0, 1)]
    for src, kernel, grid, block, args in calls:
        assert src == "collision.cu" and grid > 0 and 0 < block <= 1024 and block % 32 == 0
        assert [type(a) for a in args] == sigs[kernel], kernel
    sys.modules.pop("h4d_fast.ops._collision_cupy", None)


# ----------------------------------------------------------------------------- CUDA


def _bench_pair(frames, scenario):
    sys.path.insert(0, str(REPO / "bench"))
    from bench_collision import make_pair

    return make_pair(frames, scenario)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cupy"])
@pytest.mark.parametrize("cell_centers", ["aligned", "reference"])
def test_gpu_matches_reference_spheres(backend, cell_centers):
    if backend == "cupy" and not HAS_CUPY:
        pytest.skip("cupy not installed")
    va, fa, vb, fb = sphere_pair(B=6, level=3, depth=0.2, seed=5)
    vb = vb.clone()
    vb[1] += 3.0  # separated
    vb[3] = 0.8 * (vb[3] - vb[3].mean(0)) + va[3].mean(0)  # b entirely inside a
    va = va.clone()
    va[4, 7, 2] = float("nan")  # invalid frame
    loss, _ = compare(backend, va, vb, fa, fb, device="cuda", dtype=torch.float32, grid_size=32, cell_centers=cell_centers)
    assert loss[1] == 0 and loss[4] == 0 and (loss[[0, 2, 3, 5]] > 0).all()
    one, _ = compare(backend, va[:1], vb[:1], fa, fb, device="cuda", dtype=torch.float32, grid_size=32)  # one frame
    assert one.shape == (1,)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cupy"])
@pytest.mark.parametrize("margin", [0.0, 0.01])
def test_gpu_matches_reference_signed(backend, margin):
    if backend == "cupy" and not HAS_CUPY:
        pytest.skip("cupy not installed")
    va, fa, vb, fb = signed_cases(5, B=8, level=3)
    loss, _ = compare(backend, va, vb, fa, fb, device="cuda", dtype=torch.float32, grid_size=32, field="signed", margin=margin)
    assert loss[1] == 0 and loss[4] == 0
    va, vb, f = _bench_pair(3, "contact")
    compare(backend, va, vb, f, device="cuda", dtype=torch.float32, grid_size=64, field="signed", margin=margin)
    compare(backend, va, vb, f, device="cuda", dtype=torch.float32, grid_size=64, taper=0.01 + margin)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cupy"])
@pytest.mark.parametrize("scenario", ["contact", "deep"])
def test_gpu_matches_reference_smpl_sized(backend, scenario):
    if backend == "cupy" and not HAS_CUPY:
        pytest.skip("cupy not installed")
    va, vb, f = _bench_pair(3, scenario)
    loss, _ = compare(backend, va, vb, f, device="cuda", dtype=torch.float32, grid_size=32)
    assert (loss > 0).all()


@pytest.mark.gpu
def test_gpu_triton_and_cupy_agree_and_large_meshes():
    if not HAS_CUPY:
        pytest.skip("cupy not installed")
    va, fa = icosphere(6, 0.5)  # 81,920 faces: 2,560 clusters (cupy keeps the bounds in global scratch)
    vb, fb = icosphere(2, 0.3, center=(0.7, 0.0, 0.0))
    va, vb = va[None].float().cuda(), vb[None].float().cuda()
    lt = collision_loss(va, vb, fa.cuda(), fb.cuda(), backend="triton")
    lc = collision_loss(va, vb, fa.cuda(), fb.cuda(), backend="cupy")
    lr = collision_loss(va, vb, fa.cuda(), fb.cuda(), backend="torch")
    torch.testing.assert_close(lt, lr, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lc, lr, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_gpu_auto_is_a_kernel_and_bench_runs(tmp_path):
    va, vb, f = _bench_pair(8, "contact")
    va, vb, f = va.cuda(), vb.cuda(), f.cuda()
    auto = collision_loss(va, vb, f)
    ref = collision_loss(va, vb, f, backend="torch")
    torch.testing.assert_close(auto, ref, rtol=1e-4, atol=1e-5)
    from bench_collision import main

    out = main(["--device", "cuda", "--frames", "16", "--repeats", "2", "--json", str(tmp_path / "b.json")])
    assert (tmp_path / "b.json").exists()
    assert any("median_ms" in r for r in out["backends"].values())


def _grad_case(backend, device="cpu", dtype=torch.float64, level=2, B=4, **kw):
    """collision_loss_grad against collision_loss + autograd of the loss sum (same backend)."""
    from h4d_fast.ops.collision import collision_loss_grad

    va, fa, vb, fb = sphere_pair(B=B, level=level, depth=0.3, seed=3)
    vb = vb.clone()
    vb[1] += 3.0  # a separated frame: zero loss and gradients
    va, vb = va.to(device, dtype), vb.to(device, dtype)
    fa, fb = fa.to(device), fb.to(device)
    a, b = va.clone().requires_grad_(True), vb.clone().requires_grad_(True)
    ref = collision_loss(a, b, fa, fb, backend=backend, **kw)
    ga, gb = torch.autograd.grad(ref.sum(), (a, b))
    loss, gla, glb = collision_loss_grad(va, vb, fa, fb, backend=backend, **kw)
    tol = {"rtol": 1e-6, "atol": 1e-9} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-7}
    torch.testing.assert_close(loss, ref.detach(), **tol)
    torch.testing.assert_close(gla, ga, rtol=1e-6, atol=1e-9 * max(1.0, float(ga.abs().max())))
    torch.testing.assert_close(glb, gb, rtol=1e-6, atol=1e-9 * max(1.0, float(gb.abs().max())))
    assert gla.dtype == va.dtype and float(loss[1]) == 0.0 and float(gla[1].abs().max()) == 0.0 and float(loss[0]) > 0


@needs_numba
@pytest.mark.parametrize("normalize", ["mean", "sum"])
def test_collision_loss_grad_numba(normalize):
    _grad_case("numba", grid_size=16, normalize=normalize)
    _grad_case("numba", dtype=torch.float32, grid_size=17)


def test_collision_loss_grad_torch():
    _grad_case("torch", grid_size=8)
    _grad_case("torch", grid_size=8, field="signed", margin=0.02)
    _grad_case("torch", grid_size=8, field="exact", margin=0.02)
    _grad_case("torch", grid_size=8, taper=0.05)


@needs_numba
def test_collision_loss_grad_numba_signed_and_exact():
    _grad_case("numba", grid_size=16, field="signed")
    _grad_case("numba", grid_size=16, field="exact", margin=0.02)
    _grad_case("numba", grid_size=16, taper=0.05)
    _grad_case("numba", dtype=torch.float32, grid_size=17, field="signed", margin=0.02)


@needs_triton
def test_collision_loss_grad_triton_tiny():
    _grad_case("triton", device=TRITON_DEVICE, dtype=torch.float32, level=1, B=2, grid_size=8)
    _grad_case("triton", device=TRITON_DEVICE, dtype=torch.float32, level=1, B=2, grid_size=8, field="signed", margin=0.02)
    _grad_case("triton", device=TRITON_DEVICE, dtype=torch.float32, level=1, B=2, grid_size=8, taper=0.05)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cupy"])
def test_gpu_collision_loss_grad(backend):
    if backend == "cupy" and not HAS_CUPY:
        pytest.skip("cupy not installed")
    _grad_case(backend, device="cuda", dtype=torch.float32, grid_size=32)
    _grad_case(backend, device="cuda", dtype=torch.float32, grid_size=32, field="signed", margin=0.01)
    _grad_case(backend, device="cuda", dtype=torch.float32, grid_size=32, taper=0.02)
