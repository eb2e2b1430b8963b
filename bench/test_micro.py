"""Micro-benchmarks of the hot ops with pytest-benchmark (not part of the test suite).

    pytest bench/test_micro.py --benchmark-only
    pytest bench/test_micro.py --benchmark-only --benchmark-json /tmp/micro.json   # machine-readable

The default test run does not collect this file (pyproject ``testpaths = ["tests"]``). Inputs: the
synthetic capture at 60 frames x 20 cameras (2,040 triangulation points, 1,200 view-frames) and 8
frame pairs of SMPL-sized meshes for the collision loss; every backend that can run here, each
call synchronised on CUDA. The full comparison with the peers is ``python -m bench``.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("pytest_benchmark")

from bench.common import Context  # noqa: E402
from bench.triangulation import PARAMS, ransac_numpy  # noqa: E402
from bench.workloads import paper_dedup, paper_triangulation  # noqa: E402
from h4d_fast.ops import _backend, collision_loss, dedup_oks, triangulate_ransac  # noqa: E402

CUDA = torch.cuda.is_available()
CASES = [("torch", "cpu"), ("numba", "cpu")] + ([("torch", "cuda"), ("triton", "cuda"), ("cupy", "cuda")] if CUDA else [])


@pytest.fixture(scope="module")
def ctx() -> Context:
    return Context(device=torch.device("cpu"), quick=True, verbose=False)


def _skip_unless(op: str, backend: str, device: str) -> torch.device:
    dev = torch.device(device)
    reason = _backend.why_unavailable(op, backend, dev)
    if reason is not None:
        pytest.skip(reason)
    return dev


def _synced(fn, dev: torch.device):
    def run():
        out = fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return out

    return run


@pytest.mark.parametrize("backend,device", CASES, ids=[f"{b}-{d}" for b, d in CASES])
def test_triangulate_ransac(benchmark, ctx, backend, device):
    dev = _skip_unless("triangulate_ransac", backend, device)
    ti = paper_triangulation(ctx)
    _, conf, xy, _ = ti.flat()
    x, c, P = xy.to(dev, torch.float32), conf.to(dev, torch.float32), ti.P.to(dev, torch.float32)
    fn = _synced(lambda: triangulate_ransac(x, P, c, backend=backend, **PARAMS), dev)
    fn()  # compile
    X, _, _ = benchmark(fn)
    assert torch.isfinite(X).all(-1).double().mean() > 0.9


def test_triangulate_numpy_naive(benchmark, ctx):
    ti = paper_triangulation(ctx)
    _, conf, xy, _ = ti.flat()
    n = 256
    X, _ = benchmark.pedantic(ransac_numpy, args=(xy.numpy()[:n], ti.P.numpy(), conf.numpy()[:n]), kwargs=PARAMS, rounds=3, iterations=1)
    assert X.shape == (n, 3)


@pytest.mark.parametrize("backend,device", CASES, ids=[f"{b}-{d}" for b, d in CASES])
def test_dedup_oks(benchmark, ctx, backend, device):
    dev = _skip_unless("dedup_oks", backend, device)
    d = paper_dedup(ctx)
    k, v = d.kpts.to(dev), d.valid.to(dev)
    fn = _synced(lambda: dedup_oks(k, v, thr=0.7, policy="keep-best", kpt_thr=0.2, backend=backend), dev)
    fn()
    keep = benchmark(fn)
    assert keep.shape == v.shape


COLL = [(b, d) for b, d in CASES if b != "torch"]  # the torch grid reference takes seconds per frame on a CPU


@pytest.mark.parametrize("backend,device", COLL, ids=[f"{b}-{d}" for b, d in COLL])
def test_collision_fwd_bwd(benchmark, backend, device):
    from bench.bench_collision import make_pair

    dev = _skip_unless("collision_loss", backend, device)
    va, vb, faces = make_pair(8, "contact")
    a = va.to(dev).requires_grad_(True)
    b = vb.to(dev).requires_grad_(True)
    f = faces.to(dev)

    def step():
        a.grad = b.grad = None
        loss = collision_loss(a, b, f, grid_size=32, backend=backend)
        loss.sum().backward()
        return loss

    fn = _synced(step, dev)
    fn()
    loss = benchmark(fn)
    assert torch.isfinite(loss).all() and a.grad is not None
