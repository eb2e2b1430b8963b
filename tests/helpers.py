"""Small builders shared by the tests (no pytest fixtures here, so any test can import them)."""

from __future__ import annotations

import math

import numpy as np
import torch

from h4d_fast.camera import CameraSet, look_at, make_cameras


def ring_cameras(V: int, seed: int = 0, model: str = "pinhole", radius: float = 4.5, dtype=torch.float64) -> CameraSet:
    """``V`` cameras on a ring looking at (0, 0, 1), 3840x2160, f = 1800 px."""
    g = torch.Generator().manual_seed(seed)
    az = torch.arange(V, dtype=dtype) * (2 * math.pi / max(V, 1)) + 0.2 * torch.rand(V, generator=g, dtype=dtype)
    h = 0.8 + 1.8 * torch.rand(V, generator=g, dtype=dtype)
    C = torch.stack([radius * az.cos(), radius * az.sin(), h], -1)
    target = torch.tensor([0.0, 0.0, 1.0], dtype=dtype).expand(V, 3) + 0.1 * torch.randn(V, 3, generator=g, dtype=dtype)
    R, t = look_at(C, target)
    intr = torch.tensor([1800.0, 1800.0, 1920.0, 1080.0], dtype=dtype).expand(V, 4) + 20 * torch.randn(V, 4, generator=g, dtype=dtype)
    dist = None
    if model == "fisheye":
        dist = [[0.03, -0.01, 0.002, -0.0005]] * V
    elif model == "opencv":
        dist = [[0.05, -0.02, 0.001, -0.001, 0.003]] * V
    return make_cameras([f"cam{i + 1:02d}" for i in range(V)], model, intr, R, t, [[3840, 2160]] * V, dist=dist, dtype=dtype)


def random_points(N: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """``[N, 3]`` points in a 1.2 m box around (0, 0, 1)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(N, 3, generator=g, dtype=dtype) - 0.5) * 1.2 + torch.tensor([0.0, 0.0, 1.0], dtype=dtype)


def normalized_projections(cams: CameraSet, X: torch.Tensor) -> torch.Tensor:
    """``X [..., 3]`` -> exact normalized coordinates ``[..., V, 2]``."""
    Xc = cams.world_to_camera(X)
    return Xc[..., :2] / Xc[..., 2:]


def body_model_or_skip():
    """The embedded default body model; skips the calling test when it cannot be built here."""
    import pytest

    from h4d_fast.body import DefaultModelUnavailable, load_body_model

    try:
        return load_body_model()
    except DefaultModelUnavailable as e:  # pragma: no cover
        pytest.skip(f"default body model unavailable: {e}")


def two_person_fit(F: int = 3, seed: int = 0, spread: float = 0.1, transl=((-0.4, 0.0, 1.0), (0.4, 0.0, 1.0)),
                   betas_scale: float = 1.0):
    """A :class:`~h4d_fast.pipeline.fit.FitResult` of two people standing upright in a z-up world
    (``global_orient`` = pi/2 about x plus ``spread`` rad of noise) at ``transl``, body pose noise
    0.2 rad, betas ``betas_scale * N(0, 1)``; deterministic from ``seed``."""
    from h4d_fast.pipeline.fit import FitResult

    g = torch.Generator().manual_seed(seed)
    go = torch.zeros(F, 2, 3)
    go[..., 0] = math.pi / 2
    go += spread * torch.randn(F, 2, 3, generator=g)
    tr = torch.tensor(transl).expand(F, 2, 3).clone()
    return FitResult(go, 0.2 * torch.randn(F, 2, 69, generator=g), betas_scale * torch.randn(2, 10, generator=g), tr)


# ----------------------------------------------------------------------------- kernel backends
def installed(mod: str) -> bool:
    """Whether ``mod`` can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def kernel_backend_params():
    """The kernel backends a kernel test runs on (``pytest.fixture(params=...)``): numba, triton
    interpreted on the CPU, triton and cupy on CUDA (marked ``gpu``)."""
    import pytest

    return [
        pytest.param(("numba", "cpu"), id="numba"),
        pytest.param(("triton", "cpu"), id="triton-interpret"),
        pytest.param(("triton", "cuda"), id="triton-cuda", marks=pytest.mark.gpu),
        pytest.param(("cupy", "cuda"), id="cupy", marks=pytest.mark.gpu),
    ]


def kernel_backend(param: tuple[str, str], monkeypatch, triton_module: str, kernel: str) -> tuple[str, torch.device]:
    """``(name, device)`` of a :func:`kernel_backend_params` entry, or skip: not installed; the
    Triton interpreter (``TRITON_INTERPRET=1``, set here) on a CUDA host or after ``triton_module``
    was imported without it (``kernel`` is one of its kernels)."""
    import importlib

    import pytest

    name, device = param
    if not installed(name):
        pytest.skip(f"{name} is not installed")
    if name == "triton" and device == "cpu":
        if torch.cuda.is_available():
            pytest.skip("the Triton interpreter runs on CPU-only hosts; the GPU run covers triton-cuda")
        monkeypatch.setenv("TRITON_INTERPRET", "1")  # must be set before the kernels are defined
        mod = importlib.import_module(triton_module)
        if type(getattr(mod, kernel)).__name__ != "InterpretedFunction":
            pytest.skip("the triton backend was imported before TRITON_INTERPRET=1 was set")
    return name, torch.device(device)


# ----------------------------------------------------------------------------- sequences and runs
def synth_sequence(root, meta: dict | None = None, **capture_kw):
    """A synthetic capture (:func:`h4d_fast.synth.make_capture` with ``capture_kw``) written as a
    Harmony4D sequence folder ``root`` (``meta``: extra ``sequence.json`` fields). Returns ``root``."""
    from pathlib import Path

    from h4d_fast.io.harmony4d import write_sequence
    from h4d_fast.synth import make_capture

    cap, gt, info = make_capture(**capture_kw)
    kw = {} if meta is None else {"meta": meta}
    write_sequence(Path(root), cap, gt=gt, scale_transform=info["scale_transform"], **kw)
    return Path(root)


def keypoints_run(seq, out, *args: str):
    """``h4d run SEQ --out OUT --quiet --no-fit ARGS`` (must exit 0). Returns ``out``."""
    from h4d_fast.cli import main

    assert main(["run", str(seq), "--out", str(out), "--quiet", "--no-fit", *args]) == 0
    return out


# ----------------------------------------------------------------------------- file formats (tests/test_io_*.py)
def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A random proper rotation ``[3, 3]``."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_similarity(rng: np.random.Generator) -> np.ndarray:
    """A random similarity transform ``[4, 4]`` (scale 0.2-5, rotation, translation)."""
    T = np.eye(4)
    T[:3, :3] = rng.uniform(0.2, 5.0) * random_rotation(rng)
    T[:3, 3] = rng.normal(scale=3.0, size=3)
    return T


def named_ring_cameras(names: list[str], models: str | list[str], dists: list[list[float]] | None = None) -> CameraSet:
    """Cameras ``names`` with lens ``models`` (one, or one per camera) on a 6 m ring looking at (0, 0, 1), 3840x2160."""
    V = len(names)
    ang = torch.linspace(0, 2 * math.pi, V + 1, dtype=torch.float64)[:V]
    centers = torch.stack([6 * ang.cos(), 6 * ang.sin(), torch.full_like(ang, 1.5)], -1)
    R, t = look_at(centers, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(V, 3))
    intr = [[1800.0 + 10 * i, 1790.0 + 7 * i, 1920.0 + i, 1080.0 - i] for i in range(V)]
    return make_cameras(names, models, intr, R, t, [[3840, 2160]] * V, dist=dists)


def assert_cameras_equal(a: CameraSet, b: CameraSet, atol: float = 1e-9) -> None:
    """Same names, lens model, intrinsics, distortion, pose and image size."""
    assert a.names == b.names
    assert a.model == b.model
    for f in ("intrinsics", "dist", "R", "t"):
        torch.testing.assert_close(getattr(a, f).double(), getattr(b, f).double(), atol=atol, rtol=0, msg=f)
    assert torch.equal(a.size, b.size)


def random_dets(rng: np.random.Generator, n: int, K: int = 17) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` random detections in a 3840x2160 image: ``(keypoints [K, 3], box [5])`` float32 pairs."""
    out = []
    for _ in range(n):
        k = np.empty((K, 3), np.float32)
        k[:, 0] = rng.uniform(0, 3840, K)
        k[:, 1] = rng.uniform(0, 2160, K)
        k[:, 2] = rng.uniform(0, 1, K)
        b = np.array([*k[:, 0:2].min(0), *k[:, 0:2].max(0), rng.uniform(0.5, 1)], np.float32)
        out.append((k, b))
    return out


def assert_dets_equal(a, b, atol: float = 0.0) -> None:
    """Two lists of ``(keypoints, box)`` detections are equal (within ``atol``)."""
    assert len(a) == len(b)
    for (ka, ba), (kb, bb) in zip(a, b):
        np.testing.assert_allclose(ka, kb, atol=atol, rtol=0)
        np.testing.assert_allclose(ba, bb, atol=atol, rtol=0)
