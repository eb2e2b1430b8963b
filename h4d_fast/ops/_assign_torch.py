"""Reference of the linear assignment op: maximum-total-score one-to-one matching.

Definition (what every backend computes): for each problem ``score [R, C]`` (rows = people,
columns = detection slots), let ``s'[r, c] = score[r, c]`` where ``score > min_score`` (and
finite), else 0. Among all matchings (each row to at most one column and vice versa), take one
with the largest total ``sum s'``; report ``assign[r] = c`` for the matched pairs with ``s' > 0``
and ``-1`` for every other row. Pairs at or below ``min_score`` are therefore never assigned.

Algorithm: the Hungarian method with row/column potentials and shortest augmenting paths
(Kuhn-Munkres in the O(n^2 m) form), on ``cost = -s'`` for ``n = min(R, C)`` rows against
``m = max(R, C)`` columns (the problem is transposed when ``R > C``). It is exact: every
augmentation keeps the reduced costs ``cost - u - v >= 0`` on all edges and ``= 0`` on the matched
ones, so the final complete matching of the ``n`` rows is a minimum-cost one (LP duality), and a
maximum of ``sum s'`` over complete matchings is a maximum over all matchings because ``s' >= 0``.
The numba and CUDA backends run the same steps in the same order in float64, so they return the
same assignment, ties included.

This module is the readable oracle (plain Python loops per problem, any device via the host; its
:func:`hungarian_min` is also what the numba backend compiles);
:func:`assign_bruteforce_torch` enumerates every injective map for tiny sizes (tests).
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor


def clean_scores(score: Tensor, min_score: float) -> Tensor:
    """``s'``: the score where it is finite and above ``min_score``, else 0 (float64)."""
    s = score.detach().to(torch.float64)
    ok = torch.isfinite(s) & (s > float(min_score)) & (s > 0)
    return torch.where(ok, s, torch.zeros_like(s))


def hungarian_min(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost assignment of the ``n <= m`` rows of ``cost [n, m]`` to distinct columns.

    Returns ``col [n]`` int64 (every row is assigned). 1-based potentials with the virtual column 0
    holding the row being inserted. Plain Python on numpy arrays: the numba backend compiles this
    same function (:mod:`h4d_fast.ops._assign_numba`), so the two cannot drift apart.
    """
    n, m = cost.shape
    inf = math.inf
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, np.int64)  # p[j]: row matched to column j (0 = none)
    way = np.zeros(m + 1, np.int64)
    minv = np.empty(m + 1)
    used = np.empty(m + 1, np.bool_)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv[:] = inf
        used[:] = False
        while True:
            used[j0] = True
            i0 = p[j0]
            delta = inf
            j1 = 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = cost[i0 - 1, j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j] = cur
                        way[j] = j0
                    if minv[j] < delta:
                        delta = minv[j]
                        j1 = j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while True:  # augment along the alternating path
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
            if j0 == 0:
                break
    col = np.full(n, -1, np.int64)
    for j in range(1, m + 1):
        if p[j] != 0:
            col[p[j] - 1] = j - 1
    return col


def assign_one(s: np.ndarray) -> list[int]:
    """One problem: ``s [R, C]`` cleaned scores (float64) -> ``assign [R]`` (see the module docstring)."""
    R, C = s.shape
    out = [-1] * R
    if R == 0 or C == 0:
        return out
    if R <= C:
        out = hungarian_min(-s).tolist()
    else:  # the columns take the rows
        for c, r in enumerate(hungarian_min(np.ascontiguousarray(-s.T)).tolist()):
            out[r] = c
    return [c if c >= 0 and s[r, c] > 0 else -1 for r, c in enumerate(out)]


def linear_assignment_torch(score: Tensor, min_score: float) -> Tensor:
    """``score [..., R, C]`` -> ``[..., R]`` int64 column per row (-1 = none), on ``score``'s device."""
    *lead, R, C = score.shape
    B = 1
    for n in lead:
        B *= n
    s = clean_scores(score, min_score).reshape(B, R, C).cpu().numpy()
    out = torch.full((B, R), -1, dtype=torch.long)
    for b in range(B):
        out[b] = torch.tensor(assign_one(s[b]), dtype=torch.long)
    return out.reshape(*lead, R).to(score.device)


@lru_cache(maxsize=32)
def _injective_maps(R: int, C: int) -> tuple[tuple[int, ...], ...]:
    out = []
    for k in range(min(R, C), -1, -1):
        for rows in itertools.combinations(range(R), k):
            for cols in itertools.permutations(range(C), k):
                a = [-1] * R
                for r, c in zip(rows, cols):
                    a[r] = c
                out.append(tuple(a))
    return tuple(out)


def assign_bruteforce_torch(score: Tensor, min_score: float) -> tuple[Tensor, Tensor]:
    """Every injective partial map at once (tiny sizes only): ``(assign [..., R], best total [...])``."""
    *lead, R, C = score.shape
    s = clean_scores(score, min_score)
    if R == 0 or C == 0:
        return torch.full((*lead, R), -1, dtype=torch.long, device=score.device), s.new_zeros(lead)
    table = torch.tensor(_injective_maps(R, C), dtype=torch.long, device=score.device)  # [M, R]
    sp = torch.cat([s, torch.zeros_like(s[..., :1])], -1)
    idx = torch.where(table < 0, torch.full_like(table, C), table)
    total = sp[..., torch.arange(R, device=score.device)[None, :], idx].sum(-1)  # [..., M]
    best = total.argmax(-1)
    a = table[best]
    a = torch.where(torch.gather(sp, -1, torch.where(a < 0, C, a)[..., None])[..., 0] > 0, a, torch.full_like(a, -1))
    return a, total.amax(-1)


def assignment_total(score: Tensor, assign: Tensor, min_score: float) -> Tensor:
    """``sum s'`` of an assignment ``[..., R]`` -> ``[...]`` (float64)."""
    s = clean_scores(score, min_score)
    g = torch.gather(s, -1, assign.clamp_min(0)[..., None])[..., 0]
    return torch.where(assign >= 0, g, torch.zeros_like(g)).sum(-1)
