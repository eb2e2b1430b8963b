"""The linear assignment op: every backend against the torch reference, optimality against brute
force (small) and scipy (large), thresholds and edge cases."""

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from h4d_fast.ops._assign_torch import assign_bruteforce_torch, assignment_total, clean_scores
from h4d_fast.ops.assign import linear_assignment

SHAPES = [(1, 1), (2, 5), (5, 2), (3, 3), (4, 6), (6, 4), (0, 3), (3, 0), (1, 7)]


def _valid_matching(a: torch.Tensor, score: torch.Tensor, thr: float) -> None:
    """Each column used at most once, and only pairs above the threshold."""
    if a.numel() == 0 or score.numel() == 0:
        return
    for row_a, row_s in zip(a.reshape(-1, a.shape[-1]), score.reshape(-1, *score.shape[-2:])):
        used = [c for c in row_a.tolist() if c >= 0]
        assert len(used) == len(set(used))
        for r, c in enumerate(row_a.tolist()):
            if c >= 0:
                assert float(row_s[r, c]) > thr


@pytest.mark.parametrize("R,C", SHAPES)
def test_numba_matches_reference_and_is_optimal(R, C):
    g = torch.Generator().manual_seed(R * 10 + C)
    s = torch.rand(40, R, C, generator=g)
    s[::7] = torch.where(s[::7] > 0.5, s[::7], torch.full_like(s[::7], float("nan")))  # NaN = no match
    ref = linear_assignment(s, 0.3, backend="torch")
    nb = linear_assignment(s, 0.3, backend="numba")
    assert torch.equal(ref, nb)
    _valid_matching(nb, torch.nan_to_num(s, nan=-1.0), 0.3)
    if R and C:
        _, best = assign_bruteforce_torch(s, 0.3)
        assert torch.allclose(assignment_total(s, nb, 0.3), best, atol=1e-12)


def test_optimal_for_crowds_against_scipy():
    g = torch.Generator().manual_seed(0)
    for R, C in [(12, 30), (30, 12), (25, 25)]:
        s = torch.rand(6, R, C, generator=g) * (torch.rand(6, R, C, generator=g) > 0.6)  # sparse, like OKS
        a = linear_assignment(s, 0.1, backend="numba")
        assert torch.equal(a, linear_assignment(s, 0.1, backend="torch"))
        cs = clean_scores(s, 0.1)
        for b in range(6):
            r, c = linear_sum_assignment(cs[b].numpy(), maximize=True)
            assert abs(float(cs[b].numpy()[r, c].sum()) - float(assignment_total(s[b], a[b], 0.1))) < 1e-9


def test_threshold_ties_and_batching():
    # greedy would take 0.9 and leave 0.1; the optimum is 0.8 + 0.8
    s = torch.tensor([[0.9, 0.8], [0.8, 0.1]])
    assert linear_assignment(s, 0.05).tolist() == [1, 0]
    assert linear_assignment(torch.tensor([[0.04], [0.5]]), 0.05).tolist() == [-1, 0]
    assert linear_assignment(s, 0.85).tolist() == [0, -1]  # only 0.9 is above
    assert linear_assignment(torch.zeros(3, 2, 0), 0.1).tolist() == [[-1, -1]] * 3
    assert linear_assignment(torch.zeros(2, 0, 4), 0.1).shape == (2, 0)
    lead = torch.rand(2, 3, 4, 5)
    assert linear_assignment(lead, 0.2).shape == (2, 3, 4)


@pytest.mark.gpu
@pytest.mark.parametrize("R,C", SHAPES + [(12, 25), (25, 12)])
def test_cupy_matches_reference(R, C):
    g = torch.Generator().manual_seed(3)
    s = torch.rand(500, R, C, generator=g)
    ref = linear_assignment(s, 0.2, backend="torch")
    got = linear_assignment(s.cuda(), 0.2, backend="cupy")
    assert got.is_cuda and torch.equal(got.cpu(), ref)
    assert linear_assignment(s.cuda(), 0.2).device.type == "cuda"  # auto on CUDA
