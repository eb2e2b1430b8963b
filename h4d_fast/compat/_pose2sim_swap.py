"""Left/right swap search of Pose2Sim's triangulation (``handle_LR_swap = true``), batched in torch.

Every keypoint has a mirror: the keypoint whose name has the other side (:func:`mirror_index`);
a keypoint without a side is its own mirror. Where the best camera combination of a level ``k``
(``k`` cameras taken off) reprojects above the threshold, candidates that take the mirror's
pixels in some views instead are tried, each triangulated with the keypoint's own likelihoods as
weights, and the level succeeds if the best of them is within the threshold. Two searches:

* ``"pose2sim"`` (:func:`swap_pose2sim`): what Pose2Sim 0.10.49 computes (and its repository's
  head as of 2026-08). Its loop over "cameras to swap" writes into one array shared by all its
  candidates, so every candidate ends up with the same views swapped: the first ``m`` views of
  the combination (``m``: the available cameras less ``k``; a combination that took off
  cameras without the keypoint keeps more than ``m`` views, the ones after the first ``m``
  unswapped). So there is one candidate per combination, its error the mean over those first
  ``m`` views only; it is tried when ``m > 2``; a combination whose mirror is missing in a
  swapped view is skipped (Pose2Sim scores it infinite). The first best combination gives the
  point when its error is within the threshold (the search then stops, as after a plain success);
  otherwise the next level is tried as without the swap. What follows: where every view sees
  either the true left or the true right, this does not change the plain result (up to noise
  near the threshold: when a candidate's views agree, the plain search already accepted the
  swapped views' own pixels, at the same level or before); where the keypoint's own views
  disagree and its mirror's agree, the keypoint is put at its mirror's position. On Pose2Sim's single-person demo (default settings)
  it moves 330 of the 2,100 triangulated points by 0.15 to 1.14 m, each to within 4.5 mm (median)
  of its other side's point.
* ``"per_camera"`` (:func:`swap_per_camera`): the search Pose2Sim's docstring describes. For
  ``s = 1, 2, ...`` while ``2 s < m``: every combination, with every set of ``s`` of its views
  swapped (error over all its views); the first ``s`` whose best candidate is within the
  threshold gives the point (the first minimum in combination-major order). Candidates whose
  mirror is missing in a swapped view are skipped. The number of candidates grows as
  ``C(views, s)``: meant for Pose2Sim-sized rigs (a few to ~10 cameras).
"""

from __future__ import annotations

import itertools
import logging
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ._geometry import homogeneous_dlt

log = logging.getLogger(__name__)
SWAP_MODES = ("pose2sim", "per_camera")


def mirror_index(names: list[str]) -> list[int]:
    """Index of each keypoint's mirror, by Pose2Sim's naming rule: a leading ``R`` and ``L`` are
    exchanged, then a leading ``right`` / ``left`` (every occurrence of that word). If any
    renamed keypoint is not in ``names``, no keypoint is swapped (each is its own mirror)."""
    def other(n: str) -> str:
        if n[:1] in ("R", "L"):
            n = ("L" if n[0] == "R" else "R") + n[1:]
        if n.startswith("right"):
            n = n.replace("right", "left")
        elif n.startswith("left"):
            n = n.replace("left", "right")
        return n

    first = {}
    for i, n in enumerate(names):
        first.setdefault(n, i)
    mirrored = [other(n) for n in names]
    if not all(m in first for m in mirrored):
        log.warning("No left/right swap was performed (a keypoint's other side is not in the skeleton).")
        return list(range(len(names)))
    return [first[m] for m in mirrored]


@lru_cache(maxsize=64)
def combination_masks(C: int, k: int) -> np.ndarray:
    """``[nC, C]`` bool: every set of ``k`` of ``C`` cameras, in ``itertools.combinations`` order."""
    combos = list(itertools.combinations(range(C), k))
    m = np.zeros((len(combos), C), bool)
    for i, cmb in enumerate(combos):
        m[i, list(cmb)] = True
    return m


def _evaluate(Mc: Tensor, Ms: Tensor, xy0: Tensor, xys0: Tensor, use: Tensor, sw: Tensor, scored: Tensor,
              reproject: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """Triangulate candidates: views ``use`` with the mirror's pixels in ``sw`` (``[n, S, C]``);
    returns ``X [n, S, 3]`` and the mean pixel error over the ``scored`` views ``[n, S]``."""
    dt = Mc.dtype
    n, S, _ = use.shape
    M = torch.einsum("nsc,nck->nsk", (use & ~sw).to(dt), Mc) + torch.einsum("nsc,nck->nsk", sw.to(dt), Ms)
    X = homogeneous_dlt(M.reshape(n, S, 4, 4))
    target = torch.where(sw[..., None], xys0[:, None], xy0[:, None])
    e = (reproject(X) - target).norm(dim=-1)
    cnt = scored.sum(-1)
    me = torch.where(scored, e, torch.zeros_like(e)).sum(-1) / cnt.clamp_min(1)
    return X, me


def swap_pose2sim(Mc: Tensor, Ms: Tensor, xy0: Tensor, xys0: Tensor, mirror_ok: Tensor, use: Tensor, m: Tensor,
                  reproject: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Pose2Sim's swap candidates at one level (module docstring) for ``n`` points.

    Args:
        Mc, Ms: ``[n, C, 16]`` weighted DLT normal matrices of the keypoint's and of the mirror's pixels.
        xy0, xys0: ``[n, C, 2]`` those pixels (0 where missing); mirror_ok ``[n, C]`` the mirror present.
        use: ``[n, nC, C]`` the views of each camera combination; m ``[n]`` available cameras less ``k``.
    Returns:
        best error ``[n]`` (inf: no candidate), its combination ``[n]``, its point ``[n, 3]``.
    """
    sw = use & (use.cumsum(-1) <= m[:, None, None])
    X, me = _evaluate(Mc, Ms, xy0, xys0, use, sw, sw, reproject)
    skip = (sw & ~mirror_ok[:, None, :]).any(-1) | torch.isnan(me)  # Pose2Sim: an infinite error
    v, j = torch.where(skip, torch.full_like(me, float("inf")), me).min(-1)  # first minimum
    return v, j, X[torch.arange(len(j), device=j.device), j]


def swap_per_camera(Mc: Tensor, Ms: Tensor, xy0: Tensor, xys0: Tensor, mirror_ok: Tensor, use: Tensor, m: Tensor,
                    reproject: Callable[[Tensor], Tensor], err_thr: float, block: int) -> tuple[Tensor, Tensor, Tensor]:
    """The per-camera swap search at one level (module docstring); arguments as :func:`swap_pose2sim`.

    Returns the error ``[n]`` of the first ``s`` whose best candidate is within ``err_thr`` (NaN
    where none is), its combination ``[n]`` and point ``[n, 3]``.
    """
    n, nC, C = use.shape
    dev, dt = Mc.device, Mc.dtype
    err = torch.full((n,), float("nan"), dtype=dt, device=dev)
    comb = torch.zeros(n, dtype=torch.long, device=dev)
    Q = torch.full((n, 3), float("nan"), dtype=dt, device=dev)
    open_ = torch.ones(n, dtype=torch.bool, device=dev)
    s = 1
    while True:
        live = (open_ & (2 * s < m)).nonzero()[:, 0]
        if live.numel() == 0 or s > C:
            break
        subs = torch.as_tensor(combination_masks(C, s), device=dev)  # [nS, C]
        nS = subs.shape[0]
        step = max(1, block // max(1, nC * nS * C))
        for a0 in range(0, live.numel(), step):
            a = live[a0 : a0 + step]
            u = use[a, :, None, :].expand(-1, -1, nS, -1)  # [b, nC, nS, C]
            fits = ~(subs & ~u).any(-1)  # the swapped cameras are among the views
            sw = u & subs & fits[..., None]
            b = a.numel()
            X, me = _evaluate(Mc[a], Ms[a], xy0[a], xys0[a], u.reshape(b, nC * nS, C), sw.reshape(b, nC * nS, C),
                              u.reshape(b, nC * nS, C), reproject)
            skip = ~fits.reshape(b, -1) | (sw & ~mirror_ok[a, None, None, :]).any(-1).reshape(b, -1)
            me = torch.where(skip | torch.isnan(me), torch.full_like(me, float("inf")), me)
            v, j = me.min(-1)
            hit = v <= err_thr
            ar = torch.arange(b, device=dev)
            err[a] = torch.where(hit, v, err[a])
            comb[a] = torch.where(hit, j // nS, comb[a])
            Q[a] = torch.where(hit[:, None], X[ar, j], Q[a])
            open_[a] = open_[a] & ~hit
        s += 1
    return err, comb, Q


__all__ = ["SWAP_MODES", "combination_masks", "mirror_index", "swap_per_camera", "swap_pose2sim"]
