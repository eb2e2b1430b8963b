"""Kernel backends of triangulate_dlt / triangulate_ransac against the torch reference.

Backends: numba (CPU), triton under TRITON_INTERPRET=1 (CPU-only hosts, tiny shapes: the
interpreter is slow), triton and cupy on CUDA (``@pytest.mark.gpu``, skipped without a GPU).
Run on the GPU machine with ``python -m pytest -q -m gpu tests/test_kernels_triangulate.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from h4d_fast.errors import BackendUnavailable
from h4d_fast.ops import _backend, triangulate_dlt, triangulate_ransac
from h4d_fast.ops._triangulate_torch import triangulate_dlt_torch, triangulate_ransac_torch
from helpers import installed, kernel_backend, kernel_backend_params, normalized_projections, random_points, ring_cameras

# the Triton interpreter evaluates masked-out lanes with numpy too (0/0 there is harmless)
pytestmark = pytest.mark.filterwarnings("ignore:(invalid value|divide by zero) encountered:RuntimeWarning")
TOL = {torch.float32: 1e-4, torch.float64: 1e-9}  # relative, on the points


@dataclass(frozen=True)
class Backend:
    name: str
    device: torch.device


@pytest.fixture(params=kernel_backend_params())
def backend(request, monkeypatch) -> Backend:
    return Backend(*kernel_backend(request.param, monkeypatch, "h4d_fast.ops._triangulate_triton", "_ransac_kernel"))


# ----------------------------------------------------------------------------- scenes
def _scene(V: int, lead: tuple[int, ...], dtype: torch.dtype, seed: int = 0, outliers: bool = True):
    """Noisy projections of random points (~1 px), optional gross outliers, random confidences.

    Also plants the awkward cases: a NaN view, a point with no candidate, one with one candidate.
    Returns ``(xy [*lead, V, 2], P [V, 3, 4], conf [*lead, V])``.
    """
    N = 1
    for s in lead:
        N *= s
    cams = ring_cameras(V, seed=V + seed)
    X = random_points(N, seed=seed + 1)
    xy = normalized_projections(cams, X)  # [N, V, 2]
    g = torch.Generator().manual_seed(seed + 2)
    xy = xy + 0.0005 * torch.randn(xy.shape, generator=g, dtype=xy.dtype)
    if outliers and V > 2:
        out = torch.rand(N, V, generator=g) < 0.15
        xy = torch.where(out[..., None], xy + 0.25, xy)
    conf = 0.3 + 0.7 * torch.rand(N, V, generator=g, dtype=torch.float64)
    if N >= 4:
        xy[0, 0] = float("nan")  # a missing view
        conf[1] = 0.1  # no candidate
        conf[2, 1:] = 0.1  # a single candidate
        xy[3, -1, 1] = float("inf")
    return xy.to(dtype).reshape(*lead, V, 2), cams.extrinsics.to(dtype), conf.to(dtype).reshape(*lead, V)


def _assert_ransac_equal(got, ref, dtype):
    Xg, ig, ng = got
    Xr, ir, nr = ref
    assert Xg.shape == Xr.shape and ig.shape == ir.shape and ng.shape == nr.shape
    assert Xg.dtype == Xr.dtype and ig.dtype == torch.bool and ng.dtype == torch.int64
    torch.testing.assert_close(ig.cpu(), ir.cpu(), rtol=0, atol=0)
    torch.testing.assert_close(ng.cpu(), nr.cpu(), rtol=0, atol=0)
    fin = torch.isfinite(Xr).all(-1)
    assert torch.equal(torch.isfinite(Xg).all(-1).cpu(), fin.cpu())
    assert torch.isnan(Xg[~fin]).all()
    if bool(fin.any()):
        err = ((Xg[fin] - Xr[fin]).norm(dim=-1) / Xr[fin].norm(dim=-1)).max()
        assert float(err) < TOL[dtype], float(err)


# ----------------------------------------------------------------------------- RANSAC parity
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("V,lead", [(2, (5,)), (6, (2, 5))], ids=["V2", "V6-lead"])
def test_ransac_matches_reference(backend, dtype, V, lead):
    xy, P, conf = _scene(V, lead, dtype, outliers=V > 2)
    ref = triangulate_ransac_torch(xy, P, conf, conf_thr=0.2)
    got = triangulate_ransac(xy.to(backend.device), P.to(backend.device), conf.to(backend.device), conf_thr=0.2, backend=backend.name)
    _assert_ransac_equal(tuple(t.cpu() for t in got), ref, dtype)
    assert int(ref[2].sum()) > 0  # the scene is not trivially empty


def test_ransac_per_point_projections_and_options(backend):
    dtype = torch.float64
    xy, P, conf = _scene(5, (6,), dtype, seed=3)
    Pn = P.expand(6, 5, 3, 4).clone()
    Pn[3:, :, :, 3] += 0.01  # a slightly different rig for half of the points
    kw = dict(conf_thr=0.35, err_thr=0.02, min_views=3, refine_steps=1, huber_delta=0.002)
    ref = triangulate_ransac_torch(xy, Pn, conf, **kw)
    got = triangulate_ransac(xy.to(backend.device), Pn.to(backend.device), conf.to(backend.device), backend=backend.name, **kw)
    _assert_ransac_equal(tuple(t.cpu() for t in got), ref, dtype)


def test_ransac_many_views(backend):
    # 20 views (the paper's rig); numba also takes more than the GPU kernels' 32; the slow
    # Triton interpreter gets a smaller rig
    interpret = backend.name == "triton" and backend.device.type == "cpu"
    V = 40 if backend.name == "numba" else (7 if interpret else 20)
    N = 3 if interpret else 24
    xy, P, conf = _scene(V, (N,), torch.float32, seed=5)
    ref = triangulate_ransac_torch(xy, P, conf, conf_thr=0.2)
    got = triangulate_ransac(xy.to(backend.device), P.to(backend.device), conf.to(backend.device), conf_thr=0.2, backend=backend.name)
    _assert_ransac_equal(tuple(t.cpu() for t in got), ref, torch.float32)


def test_ransac_all_views_valid_exact(backend):
    cams = ring_cameras(4, seed=7)
    X = random_points(3, seed=8)
    xy = normalized_projections(cams, X)
    Xr, inl, n = triangulate_ransac(xy.to(backend.device), cams.extrinsics.to(backend.device), torch.ones(3, 4, dtype=torch.float64, device=backend.device), backend=backend.name)
    assert bool(inl.all()) and n.tolist() == [4, 4, 4]
    assert float((Xr.cpu() - X).norm(dim=-1).max()) < 1e-9


def test_ransac_earliest_pair_wins_ties(backend):
    # Views 0-2 see point A, views 3-5 see point B (1 m away): pairs (0, 1) and (3, 4) both have
    # three inliers. Point 1 disables views 0 and 3: the tie is between (1, 2) and (4, 5).
    V = 6
    cams = ring_cameras(V, seed=9)
    A = torch.tensor([[0.1, 0.2, 1.0]], dtype=torch.float64)
    B = torch.tensor([[-0.6, -0.5, 1.4]], dtype=torch.float64)
    xy = torch.cat([normalized_projections(cams, A)[:, :3], normalized_projections(cams, B)[:, 3:]], 1)  # [1, V, 2]
    xy = xy.expand(2, V, 2).clone()
    conf = torch.ones(2, V, dtype=torch.float64)
    conf[1, [0, 3]] = 0.0
    ref = triangulate_ransac_torch(xy, cams.extrinsics, conf)
    assert ref[1].tolist() == [[True, True, True, False, False, False], [False, True, True, False, False, False]]
    got = triangulate_ransac(xy.to(backend.device), cams.extrinsics.to(backend.device), conf.to(backend.device), backend=backend.name)
    _assert_ransac_equal(tuple(t.cpu() for t in got), ref, torch.float64)
    assert float((got[0][0].cpu() - A[0]).norm()) < 1e-9


def test_ransac_single_point_without_leading_dims(backend):
    xy, P, conf = _scene(3, (1,), torch.float64, seed=19, outliers=False)
    xy, conf = xy[0], conf[0]  # [V, 2], [V]: no leading dimension at all
    ref = triangulate_ransac_torch(xy, P, conf, conf_thr=0.2)
    got = triangulate_ransac(xy.to(backend.device), P.to(backend.device), conf.to(backend.device), conf_thr=0.2, backend=backend.name)
    assert got[0].shape == (3,) and got[1].shape == (3,) and got[2].shape == ()
    _assert_ransac_equal(tuple(t.cpu() for t in got), ref, torch.float64)
    assert int(ref[2]) >= 2


@pytest.mark.parametrize("V,N", [(1, 4), (5, 0)], ids=["one-view", "empty"])
def test_ransac_degenerate_sizes(backend, V, N):
    cams = ring_cameras(V, seed=11)
    xy = normalized_projections(cams, random_points(N, seed=12)).to(backend.device)
    conf = torch.ones(N, V, dtype=torch.float64, device=backend.device)
    X, inl, n = triangulate_ransac(xy, cams.extrinsics.to(backend.device), conf, backend=backend.name)
    assert X.shape == (N, 3) and inl.shape == (N, V) and n.shape == (N,)
    assert torch.isnan(X).all() and not bool(inl.any()) and int(n.sum()) == 0


def test_gpu_kernels_reject_too_many_views(backend):
    if backend.name == "numba":
        pytest.skip("numba takes any number of views")
    xy = torch.zeros(2, 33, 2, device=backend.device)
    with pytest.raises(ValueError, match="at most 32 views"):
        triangulate_ransac(xy, torch.zeros(33, 3, 4, device=backend.device), torch.ones(2, 33, device=backend.device), backend=backend.name)


# ----------------------------------------------------------------------------- DLT parity
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_dlt_matches_reference(backend, dtype):
    V = 5
    cams = ring_cameras(V, seed=13)
    X = random_points(12, seed=14)
    xy = normalized_projections(cams, X)
    w = torch.rand(12, V, generator=torch.Generator().manual_seed(15), dtype=torch.float64) + 0.2
    if dtype == torch.float64:  # (float32 cannot tell a rank-2 system from a regular one reliably)
        w[0, 1:] = 0.0  # one usable view: singular -> NaN
    w[1, 2] = 0.0
    xy[1, 2] = float("nan")  # NaN row with zero weight is ignored
    xy, w = xy.to(dtype).reshape(3, 4, V, 2), w.to(dtype).reshape(3, 4, V)
    P = cams.extrinsics.to(dtype)
    ref = triangulate_dlt_torch(xy, P, w)
    got = triangulate_dlt(xy.to(backend.device), P.to(backend.device), w.to(backend.device), backend=backend.name).cpu()
    fin = torch.isfinite(ref).all(-1)
    assert torch.equal(torch.isfinite(got).all(-1), fin) and bool(fin[0, 0]) == (dtype == torch.float32)
    err = ((got[fin] - ref[fin]).norm(dim=-1) / ref[fin].norm(dim=-1)).max()
    assert float(err) < TOL[dtype]
    # per-point projections
    Pn = P.expand(3, 4, V, 3, 4)
    got_n = triangulate_dlt(xy.to(backend.device), Pn.to(backend.device), w.to(backend.device), backend=backend.name).cpu()
    torch.testing.assert_close(got_n, got, equal_nan=True, rtol=TOL[dtype], atol=0)


# ----------------------------------------------------------------------------- gradients
def test_gradients_equal_reference(backend):
    V = 5
    xy, P, conf = _scene(V, (6,), torch.float64, seed=17)
    xy = torch.where(torch.isfinite(xy), xy, torch.zeros_like(xy))  # finite inputs: NaN * 0 would poison both
    g = torch.Generator().manual_seed(18)
    gX = torch.randn(6, 3, generator=g, dtype=torch.float64)

    def grads(fn, dev):
        a = xy.clone().to(dev).requires_grad_(True)
        c = conf.clone().to(dev).requires_grad_(True)
        X, inl, n = fn(a, P.to(dev), c)
        assert not inl.requires_grad and not n.requires_grad
        ga, gc = torch.autograd.grad(X, (a, c), gX.to(dev))
        return X.detach().cpu(), ga.cpu(), gc.cpu()

    Xr, gar, gcr = grads(lambda a, p, c: triangulate_ransac_torch(a, p, c, conf_thr=0.2), torch.device("cpu"))
    Xk, gak, gck = grads(lambda a, p, c: triangulate_ransac(a, p, c, conf_thr=0.2, backend=backend.name), backend.device)
    assert bool(torch.isfinite(Xr).any()) and bool(torch.isnan(Xr).any())  # valid and invalid points
    torch.testing.assert_close(gak, gar, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gck, gcr, rtol=1e-9, atol=1e-12)
    assert float(gak.abs().sum()) > 0 and float(gck.abs().sum()) > 0

    # DLT
    w = conf.clone().requires_grad_(True)
    a = xy.clone().requires_grad_(True)
    Xd = triangulate_dlt_torch(a, P, w)
    gd = torch.autograd.grad(Xd, (a, w), gX)
    a2 = xy.clone().to(backend.device).requires_grad_(True)
    w2 = conf.clone().to(backend.device).requires_grad_(True)
    Xd2 = triangulate_dlt(a2, P.to(backend.device), w2, backend=backend.name)
    gd2 = torch.autograd.grad(Xd2, (a2, w2), gX.to(backend.device))
    torch.testing.assert_close(gd2[0].cpu(), gd[0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gd2[1].cpu(), gd[1], rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- dispatch
def test_cupy_on_cpu_tensors_is_refused():
    xy = torch.zeros(2, 3, 2)
    with pytest.raises(BackendUnavailable, match="cupy.*(cuda|cupy)"):
        triangulate_ransac(xy, torch.zeros(3, 3, 4), torch.ones(2, 3), backend="cupy")
    with pytest.raises(BackendUnavailable, match="cupy"):
        triangulate_dlt(xy, torch.zeros(3, 3, 4), torch.ones(2, 3), backend="cupy")


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if not installed("triton"):
        pytest.skip("triton is not installed")
    with pytest.raises(BackendUnavailable, match="CUDA tensors"):
        triangulate_ransac(torch.zeros(2, 3, 2), torch.zeros(3, 3, 4), torch.ones(2, 3), backend="triton")


def test_auto_dispatch_registers_kernel_backends():
    for op in ("triangulate_dlt", "triangulate_ransac"):
        assert set(_backend.registered(op)) == {"torch", "numba", "triton", "cupy"}
    if installed("numba"):
        assert _backend.resolve("triangulate_ransac", torch.device("cpu")) == "numba"


def test_importing_the_package_loads_no_kernel_library():
    code = "import sys, h4d_fast, h4d_fast.ops; print([m for m in ('numba', 'triton', 'cupy') if m in sys.modules])"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root, env=env)
    assert out.stdout.strip() == "[]"
