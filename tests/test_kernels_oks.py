"""Kernel backends of oks / dedup_oks against the torch reference.

Backends: numba (CPU), triton under TRITON_INTERPRET=1 (CPU-only hosts, tiny shapes: the
interpreter is slow), triton and cupy on CUDA (``@pytest.mark.gpu``, skipped without a GPU).
Run on the GPU machine with ``python -m pytest -q -m gpu tests/test_kernels_oks.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from h4d_fast.errors import BackendUnavailable
from h4d_fast.ops import _backend, dedup_oks, oks
from h4d_fast.ops._oks_torch import dedup_oks_torch, oks_torch
from helpers import installed, kernel_backend, kernel_backend_params

# the Triton interpreter evaluates masked-out lanes with numpy too (0/0 there is harmless)
pytestmark = pytest.mark.filterwarnings("ignore:(invalid value|divide by zero) encountered:RuntimeWarning")
ATOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@dataclass(frozen=True)
class Backend:
    name: str
    device: torch.device

    @property
    def interpreted(self) -> bool:
        return self.name == "triton" and self.device.type == "cpu"


@pytest.fixture(params=kernel_backend_params())
def backend(request, monkeypatch) -> Backend:
    return Backend(*kernel_backend(request.param, monkeypatch, "h4d_fast.ops._oks_triton", "_oks_kernel"))


def _poses(shape: tuple[int, ...], seed: int, dtype: torch.dtype, J: int = 17) -> torch.Tensor:
    """``[*shape, J, 3]`` random poses (~60 px spread around a random centre, confidences in [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    k = torch.zeros(*shape, J, 3, dtype=torch.float64)
    centre = torch.rand(*shape, 1, 2, generator=g, dtype=torch.float64) * 300 + 200
    k[..., :2] = centre + torch.randn(*shape, J, 2, generator=g, dtype=torch.float64) * 60
    k[..., 2] = torch.rand(*shape, J, generator=g, dtype=torch.float64)
    return k.to(dtype)


def _dup_frames(T: int, D: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``T`` view-frames of ``D`` slots: odd slots are near copies (~2 px) of the slot before; random validity."""
    k = _poses((T, D), seed, torch.float64)
    g = torch.Generator().manual_seed(seed + 1)
    m = D // 2
    if m:
        k[:, 1 : 2 * m : 2, :, :2] = k[:, 0 : 2 * m : 2, :, :2] + 2 * torch.randn(T, m, 17, 2, generator=g, dtype=torch.float64)
    valid = torch.rand(T, D, generator=g) < 0.85
    return k.to(dtype), valid


def _to(b: Backend, *ts):
    return tuple(None if t is None else t.to(b.device) for t in ts)


# ----------------------------------------------------------------------------- OKS
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_oks_matches_reference(backend, dtype):
    a = _poses((2, 1, 3), 1, dtype)  # leading dims broadcast: [2, 1] x [4]
    b = _poses((4, 2), 2, dtype)
    b[1, 0, :, 2] = 0.0  # a pose without confident keypoints -> OKS 0
    ref = oks_torch(a, b)
    got = oks(*_to(backend, a, b), backend=backend.name).cpu()
    assert got.shape == ref.shape == (2, 4, 3, 2) and got.dtype == dtype
    torch.testing.assert_close(got, ref, rtol=0, atol=ATOL[dtype])
    assert bool((got[:, 1, :, 0] == 0).all())


def test_oks_given_areas_sigmas_and_thresholds(backend):
    dtype = torch.float64
    J = 5
    a, b = _poses((3,), 3, dtype, J=J), _poses((4,), 4, dtype, J=J)
    areas = torch.rand(3, 4, dtype=dtype, generator=torch.Generator().manual_seed(5)) * 2e4  # [A, B]
    sigmas = torch.tensor([0.03, 0.05, 0.07, 0.09, 0.11], dtype=dtype)
    for kw in (dict(areas=areas, sigmas=sigmas, kpt_thr=0.5), dict(areas=areas[:1], sigmas=sigmas, kpt_thr=0.0)):
        ref = oks_torch(a, b, **kw)
        kw_dev = {k: (v.to(backend.device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
        got = oks(*_to(backend, a, b), backend=backend.name, **kw_dev).cpu()
        torch.testing.assert_close(got, ref, rtol=0, atol=ATOL[dtype])


@pytest.mark.parametrize("A,B", [(1, 1), (0, 3)], ids=["1x1", "empty"])
def test_oks_small_sizes(backend, A, B):
    a, b = _poses((A,), 6, torch.float64), _poses((B,), 7, torch.float64)
    got = oks(*_to(backend, a, b), backend=backend.name).cpu()
    torch.testing.assert_close(got, oks_torch(a, b), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- dedup
@pytest.mark.parametrize("policy", ["drop-both", "keep-best"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_dedup_matches_reference(backend, dtype, policy):
    T = 2 if backend.interpreted else 24
    k, valid = _dup_frames(T, 7, dtype, seed=11)  # slots (0, 1), (2, 3), (4, 5) are near copies, 6 is alone
    k = k.reshape(2, T // 2, 7, 17, 3)  # leading dims (frames, views)
    valid = valid.reshape(2, T // 2, 7)
    ref = dedup_oks_torch(k, valid, thr=0.5, policy=policy)
    got = dedup_oks(*_to(backend, k, valid), thr=0.5, policy=policy, backend=backend.name).cpu()
    assert got.dtype == torch.bool and got.shape == ref.shape
    assert torch.equal(got, ref)
    assert bool((~ref & valid).any()) and bool(ref.any())  # some duplicates removed, some kept


def test_dedup_given_scores_and_ties(backend):
    k, valid = _dup_frames(2, 5, torch.float64, seed=13)
    valid[:] = True
    scores = torch.tensor([[0.5, 0.9, 0.9, 0.2, 0.9], [0.3, 0.3, 0.3, 0.3, 0.3]], dtype=torch.float64)  # ties -> lower slot
    ref = dedup_oks_torch(k, valid, thr=0.5, policy="keep-best", scores=scores)
    got = dedup_oks(*_to(backend, k, valid), thr=0.5, policy="keep-best", scores=scores.to(backend.device), backend=backend.name).cpu()
    assert torch.equal(got, ref)
    assert ref[0, :2].tolist() == [False, True] and ref[1, :2].tolist() == [True, False]


def test_dedup_all_duplicates_single_slot_and_no_valid(backend):
    base = _poses((1,), 17, torch.float64)[0]
    base[:, 2] = 0.9
    allsame = base.expand(4, 17, 3).clone()  # every slot duplicates every other
    allsame[:, :, 2] = torch.tensor([0.6, 0.9, 0.7, 0.9], dtype=torch.float64)[:, None]
    frames = torch.stack([allsame, allsame, allsame])  # [3, 4, 17, 3]
    valid = torch.tensor([[True] * 4, [False] * 4, [False, True, False, True]])  # all, none, two
    assert dedup_oks_torch(frames, valid, policy="keep-best").tolist() == [[False, True, False, False], [False] * 4, [False, True, False, False]]
    if backend.interpreted:  # (each view-frame is one interpreted program: keep it short)
        frames, valid = frames[:2], valid[:2]
    for policy in ("drop-both", "keep-best"):
        ref = dedup_oks_torch(frames, valid, policy=policy)
        got = dedup_oks(*_to(backend, frames, valid), policy=policy, backend=backend.name).cpu()
        assert torch.equal(got, ref), policy
    one = _poses((1, 1), 19, torch.float64)  # D = 1
    assert dedup_oks(*_to(backend, one), backend=backend.name).cpu().tolist() == [[True]]
    empty = dedup_oks(*_to(backend, torch.zeros(2, 0, 17, 3), torch.zeros(2, 0, dtype=torch.bool)), backend=backend.name)
    assert empty.shape == (2, 0)


def test_dedup_many_detections(backend):
    D = 40 if backend.name == "numba" else 32  # the GPU kernels take up to 32 slots per view-frame
    k, valid = _dup_frames(1 if backend.interpreted else 6, D, torch.float32, seed=23)
    for policy in ("drop-both", "keep-best"):
        ref = dedup_oks_torch(k, valid, thr=0.6, policy=policy)
        assert torch.equal(dedup_oks(*_to(backend, k, valid), thr=0.6, policy=policy, backend=backend.name).cpu(), ref)
    if backend.name != "numba":
        with pytest.raises(ValueError, match="at most 32"):
            dedup_oks(*_to(backend, _poses((1, 33), 29, torch.float32)), backend=backend.name)


# ----------------------------------------------------------------------------- dispatch
def test_cupy_on_cpu_tensors_is_refused():
    k = _poses((2, 3), 31, torch.float32)
    with pytest.raises(BackendUnavailable, match="cupy"):
        oks(k, k, backend="cupy")
    with pytest.raises(BackendUnavailable, match="cupy"):
        dedup_oks(k, backend="cupy")


def test_kernel_backends_are_registered():
    for op in ("oks", "dedup_oks"):
        assert set(_backend.registered(op)) == {"torch", "numba", "triton", "cupy"}
    if installed("numba"):
        assert _backend.resolve("dedup_oks", torch.device("cpu")) == "numba"
