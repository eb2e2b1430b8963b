"""Stage 4: clean-up and global refinement of the 3D keypoints over the whole sequence.

Clean-up (vectorised over frames, people and keypoints):
1. spikes: a keypoint farther than ``jump_thr`` from the median of its +-2-frame window is invalid;
2. limb outliers: per person and rigid limb, a length farther than ``limb_std_thr`` robust
   standard deviations from the person's median length invalidates the endpoint that strays
   more from its own temporal median;
3. gaps of up to ``gap_fill_max`` frames are filled by linear interpolation (held at the ends),
   within each run of frames where the person is present (``present [F, P]``: nothing is filled,
   smoothed or written across an absence, before a track starts or after it ends).

Global refinement: all frames and people at once, LBFGS (strong Wolfe) on

    L = w_limb L_limb + w_symm L_symm + w_temporal L_temporal + w_init L_init

* ``L_limb``  -- limb lengths constant over time: ``mean_{t,p,l} ((len - mean_t len) / s_len)^2``;
* ``L_symm``  -- left/right limbs equally long: ``mean_{t,p,pair} ((len_L - len_R) / s_sym)^2``;
* ``L_temporal`` -- smoothness: ``mean ((P_{t+1} - 2 P_t + P_{t-1}) / s_acc)^2`` (acceleration; keeps
  constant-velocity motion unbiased) or ``mean ((P_{t+1} - P_t) / s_vel)^2`` (velocity, the reference);
* ``L_init`` -- stay near the triangulation: ``mean_valid rho(|P - P0|) / s_obs^2`` with a
  Charbonnier ``rho`` (robust to left-over outliers) or plain squares.

The scales (``s_len = 1 cm``, ``s_sym = 2 cm``, ``s_acc = 1 cm/frame^2``, ``s_vel = 2 cm/frame``,
``s_obs = 1 cm``) make the terms dimensionless so that the paper's unit weights balance them.
The reference code sums un-normalised L1 limb terms, which outweigh its data term by orders of
magnitude and force every COCO limb (torso sides and ear-shoulder ones included, which bend
with the spine and neck) to constant length; limbs here are the rigid ones (:data:`RIGID_LIMBS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from ..config import RefineConfig
from ..constants import COCO_LIMBS, COCO_SYMMETRIC_LIMB_PAIRS
from ._threads import single_thread
from .lbfgs import LBFGS

# Limbs whose length is fixed by the skeleton (face limbs ride on the rigid head): all COCO limbs
# but the torso sides (5,11), (6,12) and the ear-shoulder ones (3,5), (4,6).
RIGID_LIMBS: tuple[int, ...] = tuple(i for i, l in enumerate(COCO_LIMBS) if l not in ((5, 11), (6, 12), (3, 5), (4, 6)))
RIGID_PAIRS: tuple[tuple[int, int], ...] = tuple(p for p in COCO_SYMMETRIC_LIMB_PAIRS if p[0] in RIGID_LIMBS and p[1] in RIGID_LIMBS)

S_LEN, S_SYM, S_ACC, S_VEL, S_OBS, DELTA_OBS = 0.01, 0.02, 0.01, 0.02, 0.01, 0.02


@dataclass
class RefineStats:
    spikes: int
    limb_outliers: int
    filled: int
    loss_before: float
    loss_after: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@lru_cache(maxsize=8)
def _limb_index(device: torch.device) -> tuple[Tensor, Tensor]:
    l = torch.tensor(COCO_LIMBS, dtype=torch.long, device=device)
    return l[:, 0], l[:, 1]


@lru_cache(maxsize=8)
def _rigid_index(device: torch.device) -> tuple[Tensor, Tensor]:
    """Indices of :data:`RIGID_LIMBS` and the ``[n, 2]`` :data:`RIGID_PAIRS` (cached per device, so
    the objective creates no tensor from host data and can be captured in a CUDA graph)."""
    return (torch.tensor(RIGID_LIMBS, dtype=torch.long, device=device),
            torch.tensor(RIGID_PAIRS, dtype=torch.long, device=device).reshape(-1, 2))


def limb_lengths(X: Tensor) -> Tensor:
    """``X [..., J, 3]`` -> ``[..., L]`` lengths of the 19 COCO limbs."""
    a, b = _limb_index(X.device)
    return (X[..., a, :] - X[..., b, :]).norm(dim=-1)


def windowed_median(X: Tensor, valid: Tensor, half: int = 2) -> Tensor:
    """Median over ``t-half..t+half`` of the valid samples: ``X [F, ..., 3]`` -> ``[F, ..., 3]`` (NaN if none)."""
    F = X.shape[0]
    Xn = torch.where(valid[..., None], X, torch.full_like(X, float("nan")))
    pad = torch.full((half, *X.shape[1:]), float("nan"), dtype=X.dtype, device=X.device)
    Xp = torch.cat([pad, Xn, pad], 0)  # [F + 2h, ...]
    win = Xp.unfold(0, 2 * half + 1, 1)  # [F, ..., 3, 2h+1]
    return win.nanmedian(-1).values[:F]


def reject_spikes(X: Tensor, valid: Tensor, thr: float) -> Tensor:
    """``valid [F, P, J]`` with keypoints farther than ``thr`` from their windowed median removed."""
    med = windowed_median(X, valid)
    d = (X - med).norm(dim=-1)
    return valid & ~(d > thr)


def reject_limb_outliers(X: Tensor, valid: Tensor, thr: float) -> Tensor:
    """Remove the straying endpoint of limbs whose length is a robust outlier for that person."""
    a, b = _limb_index(X.device)
    rig = _rigid_index(X.device)[0]
    a, b = a[rig], b[rig]
    L = (X[..., a, :] - X[..., b, :]).norm(dim=-1)  # [F, P, Lr]
    both = valid[..., a] & valid[..., b]
    Ln = torch.where(both, L, torch.full_like(L, float("nan")))
    med = Ln.nanmedian(0).values  # [P, Lr]
    mad = (Ln - med).abs().nanmedian(0).values
    scale = 1.4826 * mad + 0.01 * med.abs() + 0.005
    bad = both & ((L - med).abs() > thr * scale)  # [F, P, Lr]
    if not bool(bad.any()):
        return valid
    tm = windowed_median(X, valid)
    dev = (X - tm).norm(dim=-1).nan_to_num(0.0)  # [F, P, J]
    pick_a = dev[..., a] >= dev[..., b]  # the endpoint that strays more
    out = valid.clone()
    da = torch.zeros(valid.shape, dtype=torch.long, device=X.device)
    da.scatter_add_(-1, a.expand(*bad.shape[:-1], -1), (bad & pick_a).long())
    da.scatter_add_(-1, b.expand(*bad.shape[:-1], -1), (bad & ~pick_a).long())
    return out & ~(da > 0)


def present_runs(present: Tensor) -> tuple[Tensor, Tensor]:
    """First and last frame of the run of presence each frame belongs to: ``present [F, P]`` ->
    ``(start [F, P], end [F, P])`` (for absent frames: ``start > end``)."""
    F = present.shape[0]
    t = torch.arange(F, device=present.device).view(F, *([1] * (present.dim() - 1))).expand_as(present)
    before = torch.cat([torch.zeros_like(present[:1]), present[:-1]], 0)
    after = torch.cat([present[1:], torch.zeros_like(present[:1])], 0)
    start = torch.where(present & ~before, t, torch.full_like(t, -1)).cummax(0).values
    end = torch.where(present & ~after, t, torch.full_like(t, F)).flip(0).cummin(0).values.flip(0)
    return torch.where(present, start, torch.full_like(t, F)), torch.where(present, end, torch.full_like(t, -1))


def fill_gaps(X: Tensor, valid: Tensor, max_gap: int, present: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Linear interpolation over runs of at most ``max_gap`` invalid frames.

    ``X [F, P, J, 3]``, ``valid [F, P, J]`` -> filled ``X`` and the new validity. At the start
    and end of the sequence the nearest valid sample is held (also up to ``max_gap`` frames).
    With ``present [F, P]`` the same happens within each run of frames where the person is
    present: nothing is filled across an absence or outside the runs.
    """
    F = X.shape[0]
    t = torch.arange(F, device=X.device).view(F, *([1] * (valid.dim() - 1))).expand_as(valid)
    if present is not None:
        valid = valid & present[..., None]
    prev = torch.where(valid, t, torch.full_like(t, -1)).cummax(0).values
    nxt = torch.where(valid, t, torch.full_like(t, F)).flip(0).cummin(0).values.flip(0)
    if present is not None:
        start, end = present_runs(present)
        prev = torch.where(prev >= start[..., None], prev, torch.full_like(prev, -1))
        nxt = torch.where(nxt <= end[..., None], nxt, torch.full_like(nxt, F))
    has_p, has_n = prev >= 0, nxt < F
    pi, ni = prev.clamp(0, F - 1), nxt.clamp(0, F - 1)
    Xp = torch.gather(X, 0, pi[..., None].expand_as(X))
    Xn = torch.gather(X, 0, ni[..., None].expand_as(X))
    span = (ni - pi).clamp_min(1).to(X.dtype)
    alpha = ((t - pi).to(X.dtype) / span)[..., None]
    interp = Xp + alpha * (Xn - Xp)
    gap = nxt - prev - 1
    inner = has_p & has_n & (gap <= max_gap)
    head = ~has_p & has_n & ((nxt - t) <= max_gap)
    tail = has_p & ~has_n & ((t - prev) <= max_gap)
    out = torch.where(inner[..., None], interp, X)
    out = torch.where(head[..., None], Xn, out)
    out = torch.where(tail[..., None], Xp, out)
    new_valid = valid | ((inner | head | tail) & ~valid)
    if present is not None:
        new_valid &= present[..., None]
    out = torch.where(valid[..., None], X, out)
    return out, new_valid


def refinement_loss(X: Tensor, X0: Tensor, w_obs: Tensor, avail: Tensor, cfg: RefineConfig) -> Tensor:
    """The global refinement objective (module docstring). ``X, X0 [F, P, J, 3]``, ``w_obs, avail [F, P, J]``."""
    dev = X.device
    rig, pairs = _rigid_index(dev)
    a, b = _limb_index(dev)
    L = (X[..., a, :] - X[..., b, :]).norm(dim=-1)  # [F, P, 19]
    mL = (avail[..., a] & avail[..., b]).to(X.dtype)  # [F, P, 19]
    total = X.new_zeros(())
    if cfg.w_limb:
        Lr, mr = L[..., rig], mL[..., rig]
        mean_len = (Lr * mr).sum(0) / mr.sum(0).clamp_min(1)  # [P, Lr]
        r = (Lr - mean_len) / S_LEN
        total = total + cfg.w_limb * (r * r * mr).sum() / mr.sum().clamp_min(1)
    if cfg.w_symm:
        l_, r_ = pairs[:, 0], pairs[:, 1]
        m = mL[..., l_] * mL[..., r_]
        d = (L[..., l_] - L[..., r_]) / S_SYM
        s = (d * d * m).sum()
        total = total + cfg.w_symm * s / m.sum().clamp_min(1)
    if cfg.w_temporal and X.shape[0] > 2:
        am = avail.to(X.dtype)
        if cfg.temporal == "acceleration":
            acc = (X[2:] - 2 * X[1:-1] + X[:-2]) / S_ACC
            m = am[2:] * am[1:-1] * am[:-2]
        else:
            acc = (X[1:] - X[:-1]) / S_VEL
            m = am[1:] * am[:-1]
        total = total + cfg.w_temporal * ((acc * acc).sum(-1) * m).sum() / m.sum().clamp_min(1)
    if cfg.w_init:
        d2 = ((X - X0) ** 2).sum(-1)
        if cfg.robust_init:
            rho = 2 * DELTA_OBS**2 * (torch.sqrt(1 + d2 / DELTA_OBS**2) - 1)
        else:
            rho = d2
        total = total + cfg.w_init * (rho * w_obs).sum() / w_obs.sum().clamp_min(1) / S_OBS**2
    return total


def refine_sequence(poses: Tensor, cfg: RefineConfig, present: Tensor | None = None) -> tuple[Tensor, RefineStats]:
    """Run stage 4 on ``poses [F, P, J, 4]`` (x, y, z, valid) -> refined ``[F, P, J, 4]``.

    ``present [F, P]`` (default: everyone everywhere): where a person is absent nothing is
    filled, smoothed or written (zeros, invalid), and no gap is filled or smoothed across an
    absence or past the ends of a run of presence.
    """
    with single_thread(poses.device):
        return _refine(poses, cfg, present)


def _refine(poses: Tensor, cfg: RefineConfig, present: Tensor | None) -> tuple[Tensor, RefineStats]:
    X = poses[..., :3].clone()
    valid = poses[..., 3] > 0.5
    if present is not None:
        present = present.to(device=valid.device, dtype=torch.bool)
        valid = valid & present[..., None]
    n0 = int(valid.sum())
    v1 = reject_spikes(X, valid, cfg.jump_thr)
    n_spk = n0 - int(v1.sum())
    v2 = reject_limb_outliers(X, v1, cfg.limb_std_thr)
    n_limb = int(v1.sum()) - int(v2.sum())
    Xf, avail = fill_gaps(X, v2, cfg.gap_fill_max, present)
    n_fill = int(avail.sum()) - int(v2.sum())
    Xf = torch.where(avail[..., None], Xf, torch.zeros_like(Xf))
    if not cfg.enabled or not bool(avail.any()):
        out = torch.cat([Xf, avail[..., None].to(Xf.dtype)], -1)
        return out, RefineStats(n_spk, n_limb, n_fill, 0.0, 0.0)
    dtype = torch.float64 if Xf.dtype == torch.float64 else torch.float32
    X0 = Xf.to(dtype)
    w_obs = v2.to(dtype)
    # the fit's L-BFGS (the same iterates as torch.optim.LBFGS with the strong-Wolfe line search,
    # pipeline/lbfgs.py): torch.optim would import torch._dynamo, seconds of a fresh process
    Xv = X0.clone().requires_grad_(True)
    graphed = graphed_closure(lambda: refinement_loss(Xv, X0, w_obs, avail, cfg), Xv) if Xv.is_cuda and cfg.cuda_graph else None

    def evaluate(x: Tensor) -> tuple[Tensor, Tensor]:
        """Loss and flat gradient at ``x`` (read through ``Xv``: the graph reads it in place)."""
        with torch.no_grad():
            Xv.copy_(x.view_as(Xv))
        if graphed is not None:  # the graph writes the loss and Xv.grad into its own buffers
            return graphed().detach().clone(), Xv.grad.reshape(-1).clone()
        loss = refinement_loss(Xv, X0, w_obs, avail, cfg)
        (g,) = torch.autograd.grad(loss, Xv)
        return loss.detach(), g.reshape(-1)

    with torch.no_grad():
        l0 = float(refinement_loss(X0, X0, w_obs, avail, cfg))
    xflat = X0.detach().clone().reshape(-1)
    LBFGS(xflat, evaluate, lr=1.0, history_size=20, tolerance_grad=1e-9, tolerance_change=1e-12).step(int(cfg.iters))
    with torch.no_grad():
        Xv.copy_(xflat.view_as(Xv))
    with torch.no_grad():
        l1 = float(refinement_loss(Xv, X0, w_obs, avail, cfg))
        Xr = torch.where(avail[..., None], Xv.detach(), torch.zeros_like(X0)).to(poses.dtype)
    out = torch.cat([Xr, avail[..., None].to(poses.dtype)], -1)
    return out, RefineStats(n_spk, n_limb, n_fill, l0, l1)


def graphed_closure(loss_fn, x: Tensor):
    """An LBFGS closure that replays one CUDA graph of ``loss_fn()`` and its backward.

    The graph reads ``x`` in place (LBFGS moves it in place) and writes the loss and ``x.grad``
    into static buffers, so one evaluation is one graph launch instead of ~100 small kernels.
    The closure never resets ``x.grad`` (the graph owns it). Same values as the eager closure.
    """
    side = torch.cuda.Stream(device=x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side):
        for _ in range(2):  # warm-up outside the graph (lazy inits, autograd buffers)
            x.grad = None
            loss_fn().backward()
    torch.cuda.current_stream(x.device).wait_stream(side)
    x.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = loss_fn()
        static_loss.backward()

    def closure() -> Tensor:
        graph.replay()
        return static_loss

    return closure
