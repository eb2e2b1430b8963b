"""Loss terms of the SMPL fitting stage (:mod:`h4d_fast.pipeline.fit`).

Every term is a dimensionless mean, so that the paper's weights (Table 1) balance them: a
residual is divided by a *scale* (the size of an error that costs about 1). Shapes: ``F`` frames,
``P`` people, ``J`` joints, ``K`` betas. All lengths in metres.

* **keypoints** (:func:`keypoint_loss`)::

      L_kp = sum_{t,p,k} w_tpk rho(|X^pred_tpk - X_tpk|) / (S_KP^2 sum w),
      rho(d) = sigma^2 d^2 / (sigma^2 + d^2)          (Geman-McClure, sigma in metres)

  ``w`` = the keypoint confidence/validity (times a stage mask, e.g. shoulders+hips only).
  ``rho ~ d^2`` for ``d << sigma`` and saturates at ``sigma^2`` for outliers. ``S_KP = 1 cm``:
  an error of 1 cm on every keypoint costs 1. The reference (mmhuman3d ``keypoints3d``) applies
  its GMoF with ``sigma = 100`` to the *squared per-coordinate* residual, i.e.
  ``rho(d_c^2) = 1e4 d_c^4 / (1e4 + d_c^4) ~ d_c^4`` in metres: not robust at any realistic error
  and almost flat near the optimum (1 cm costs 1e-8). Here ``sigma`` acts on the Euclidean error
  in metres (default 0.1 m: quadratic up to a few centimetres; the pull of a 0.5 m outlier is
  ``(sigma^2 / (sigma^2 + d^2))^2`` ~ 1/700 of what it would be under squares).
* **pose regularisation** (:func:`pose_reg_loss`): ``L_reg = mean(theta_body^2)`` over the 69
  axis-angle values (rad^2), as the reference. Optional hyper-extension prior
  (:func:`hyperextension_loss`, off by default): ``mean_k (exp(max(s_k theta_k, 0)) - 1)^2`` on
  the elbows' y and the knees' x angles with the signs ``s = (+1, -1, -1, -1)`` of SMPLify's
  angle prior; zero for natural bending and for straight limbs (SMPLify's ``exp(s theta)^2``
  also charges 1 for a straight limb).
* **limb length** (:func:`limb_length_loss`)::

      L_limb = sum_{t,p,l} c_pl ((|l^pred_tpl| - l^tgt_pl) / S_LEN)^2 / sum c,   S_LEN = 5 cm

  over the 12 COCO body limbs (:data:`FIT_LIMBS`) between mapped model joints; ``l^tgt`` = the
  person's temporal median of the keypoint limb length over frames where both ends are valid,
  ``c_pl = 1`` where that median exists. ``S_LEN`` sets how far the shape prior (weight 0.005
  on ``mean(beta^2)``) lets the betas chase limb residuals: a shape coefficient is used when it
  changes a limb by more than about ``0.08 S_LEN`` (4 mm) per unit. With 1 cm the ~8
  independent limb lengths drove weakly observable betas of the embedded model to |beta| ~ 20
  on synthetic data (2 and 10 cm fit as well as 5 cm there; real COCO keypoints sit a few cm
  off the SMPL joints, which favours the stronger prior); the reference's metres^2
  (``S_LEN = 1 m``) keeps every beta but the height-like ones near 0.
* **symmetry** (:func:`symmetry_loss`): ``mean_{t,p,pair} ((|l^pred_L| - |l^pred_R|) / S_SYM)^2``
  over the left/right pairs of shank, thigh, upper arm and forearm (:data:`FIT_LIMB_PAIRS`;
  not the torso sides, whose lengths follow the spine's bend), ``S_SYM = 5 cm``. Nearly zero
  for a left-right symmetric body model; it matters for asymmetric models.
* **temporal** (:func:`temporal_loss`): smoothness of the 23 body-joint rotations (6D, Zhou et
  al.) and of the model's joint positions::

      L_temp = mean_{t,p,j} |D r6_tpj|^2 / S_ROT^2 + mean_{t,p,k} |D X_tpk|^2 / S_POS^2

  with ``D`` the second difference ``x_{t+1} - 2 x_t + x_{t-1}`` (``"acceleration"``, default:
  unbiased for constant-velocity motion; ``S_ROT = 0.05 /frame^2``, ``S_POS = 1 cm/frame^2``)
  or the first difference ``x_t - x_{t-1}`` (``"velocity"``, the reference's SmoothJointLoss
  without its frame-0 padding quirk; ``S_ROT = 0.1 /frame``, ``S_POS = 2 cm/frame``). With
  presence (people who enter and leave) only the differences whose frames all lie in one run of a
  person's presence count (:func:`temporal_rows`), and the per-body terms above are means over the
  present person-frames.
* **shape prior** (:func:`shape_prior_loss`): ``L_beta = mean(beta^2)`` (plain L2, as the reference).
* **collision** (:func:`collision_term`, :func:`pair_collision_term` for a list of close pairs of
  people present in the same frame): ``L_coll = sum_{pairs a<b} sum_t
  collision_loss(V_a(t), V_b(t)) / (F S_COLL)`` with :func:`h4d_fast.ops.collision_loss`
  (each person's inside-distance grid sampled at the other's vertices, mean over vertices, in
  box-normalised units ~ metres). ``S_COLL = 2.5e-6``: 2% of a body's vertices 5 mm deep cost 40,
  four times a 1 cm error on every keypoint under the stage-3 weights (10 vs 1). Measured on
  synthetic captures whose ground truth does not interpenetrate (60 frames, 20 cameras, seeds 2,
  3, 4, 5, 7, 9, the ones where ``1e-5`` left more than 1 cm^3 per frame): with ``1e-5`` the
  collision stage left 1.7-4.1 cm^3 per frame (single frames up to 136 cm^3, up to 12% of frames
  deeper than 10 mm) for -0.02 .. +0.11 mm of SMPL-joint MPJPE; with ``2.5e-6`` 0.19-0.65 cm^3 (at
  most 3.3% of frames deeper than 10 mm) for +0.02 .. +0.37 mm; with ``1.25e-6`` 0.01-0.11 cm^3
  but up to +0.60 mm. The reference's collision term outweighs its (quartic, tiny) keypoint term
  by orders of magnitude.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from ..constants import COCO_LIMBS
from ..ops.contact import person_pairs

# The 12 COCO body limbs (ankle-knee, knee-hip x2, hip-hip, shoulder-hip x2, shoulder-shoulder,
# shoulder-elbow x2, elbow-wrist x2): all between SMPL tree joints.
FIT_LIMBS: tuple[tuple[int, int], ...] = tuple(COCO_LIMBS[:12])
# Left/right pairs as indices into FIT_LIMBS: shank, thigh, upper arm, forearm (not the torso
# sides, whose lengths change with the spine's bend and twist).
FIT_LIMB_PAIRS: tuple[tuple[int, int], ...] = ((0, 2), (1, 3), (8, 9), (10, 11))

S_KP = 0.01
S_LEN = 0.05
S_SYM = 0.05
S_ROT = {"acceleration": 0.05, "velocity": 0.1}
S_POS = {"acceleration": 0.01, "velocity": 0.02}
S_COLL = 2.5e-6

# body_pose (69) indices of the left elbow y, right elbow y, left knee x, right knee x and the
# signs that make hyper-extension positive (SMPLify's angle prior on the 72-vector pose
# [55, 58, 12, 15] with signs [1, -1, -1, -1]).
HYPEREXT_INDEX: tuple[int, ...] = (52, 55, 9, 12)
HYPEREXT_SIGN: tuple[float, ...] = (1.0, -1.0, -1.0, -1.0)


_INDEX_CACHE: dict = {}


def _index(values: Sequence, device: torch.device) -> Tensor:
    """A cached long tensor of ``values`` on ``device`` (no host-to-device copy per evaluation)."""
    key = (tuple(map(tuple, values)) if values and isinstance(values[0], (tuple, list)) else tuple(values), str(device))
    t = _INDEX_CACHE.get(key)
    if t is None:
        t = _INDEX_CACHE[key] = torch.tensor(values, dtype=torch.long, device=device)
    return t


def _wmean(x: Tensor, w: Tensor) -> Tensor:
    return (x * w).sum() / w.sum().clamp_min(1e-12)


def gmof(d2: Tensor, sigma: float) -> Tensor:
    """Geman-McClure of a squared distance: ``sigma^2 d2 / (sigma^2 + d2)`` (same units as ``d2``)."""
    s2 = sigma * sigma
    return s2 * d2 / (s2 + d2)


def keypoint_loss(pred: Tensor, target: Tensor, weight: Tensor, sigma: float | None) -> Tensor:
    """Robust keypoint term (module docstring).

    Args:
        pred, target: ``[..., J, 3]`` metres.
        weight: ``[..., J]`` confidences (0 = unused).
        sigma: Geman-McClure scale in metres (None or <= 0: plain squares).
    Returns:
        scalar: ``sum w rho(d) / (S_KP^2 sum w)``.
    """
    d2 = ((pred - target) ** 2).sum(-1)
    rho = gmof(d2, sigma) if sigma and sigma > 0 else d2
    return _wmean(rho, weight) / (S_KP * S_KP)


def _body_mean(x: Tensor, bodies: Tensor | None) -> Tensor:
    """Mean of ``x [F, P, n]`` over its entries, only over the bodies (person-frames) with
    ``bodies [F, P]`` true when given (a person's absent frames carry no term)."""
    if bodies is None:
        return x.mean()
    m = bodies.to(x.dtype)
    return (x.sum(-1) * m).sum() / (m.sum() * x.shape[-1]).clamp_min(1e-12)


def pose_reg_loss(body_pose: Tensor, bodies: Tensor | None = None) -> Tensor:
    """``mean(theta^2)`` over the body-pose axis-angle values ``[F, P, 69]`` (rad^2); with
    ``bodies [F, P]`` only over the present person-frames."""
    return _body_mean(body_pose * body_pose, bodies)


def hyperextension_loss(body_pose: Tensor, bodies: Tensor | None = None) -> Tensor:
    """``mean (exp(max(s theta, 0)) - 1)^2`` on elbows (y) and knees (x); ``body_pose [F, P, 69]``
    (``bodies`` as in :func:`pose_reg_loss`)."""
    idx = _index(HYPEREXT_INDEX, body_pose.device)
    sgn = torch.tensor(HYPEREXT_SIGN, dtype=body_pose.dtype, device=body_pose.device)
    a = (body_pose.index_select(-1, idx) * sgn).clamp_min(0)
    return _body_mean(torch.expm1(a) ** 2, bodies)


def limb_lengths(X: Tensor, limbs: Sequence[tuple[int, int]] = FIT_LIMBS) -> Tensor:
    """``X [..., 17, 3]`` COCO points -> ``[..., L]`` lengths of ``limbs``."""
    lim = _index(limbs, X.device)
    return (X.index_select(-2, lim[:, 0]) - X.index_select(-2, lim[:, 1])).norm(dim=-1)


def target_limb_lengths(kp: Tensor, valid: Tensor, limbs: Sequence[tuple[int, int]] = FIT_LIMBS) -> tuple[Tensor, Tensor]:
    """Per-person temporal median of the keypoints' limb lengths.

    Args:
        kp: ``[F, P, 17, 3]``; valid ``[F, P, 17]`` bool.
    Returns:
        lengths ``[P, L]`` (0 where undefined) and their availability ``[P, L]`` float (0/1).
    """
    L = limb_lengths(kp, limbs)  # [F, P, L]
    lim = _index(limbs, kp.device)
    both = valid.index_select(-1, lim[:, 0]) & valid.index_select(-1, lim[:, 1])
    Ln = torch.where(both, L, torch.full_like(L, float("nan")))
    med = Ln.nanmedian(0).values  # [P, L]
    ok = torch.isfinite(med)
    return torch.where(ok, med, torch.zeros_like(med)), ok.to(kp.dtype)


def limb_length_loss(pred_coco: Tensor, target: Tensor, avail: Tensor, bodies: Tensor | None = None) -> Tensor:
    """``pred_coco [F, P, 17, 3]``, ``target, avail [P, L]`` -> scalar (module docstring); with
    ``bodies [F, P]`` only the present person-frames count."""
    L = limb_lengths(pred_coco)  # [F, P, L]
    r = (L - target) / S_LEN
    w = avail.expand_as(r)
    if bodies is not None:
        w = w * bodies[..., None].to(r.dtype)
    return _wmean(r * r, w)


def symmetry_loss(pred_coco: Tensor, pairs: Sequence[tuple[int, int]] = FIT_LIMB_PAIRS, bodies: Tensor | None = None) -> Tensor:
    """Left/right limb-length difference of the model, ``pred_coco [F, P, 17, 3]`` -> scalar
    (``bodies`` as in :func:`pose_reg_loss`)."""
    L = limb_lengths(pred_coco)
    pr = _index(pairs, L.device)
    d = (L.index_select(-1, pr[:, 0]) - L.index_select(-1, pr[:, 1])) / S_SYM
    return _body_mean(d * d, bodies)


def _diff(x: Tensor, mode: str) -> Tensor:
    if mode == "acceleration":
        return x[2:] - 2 * x[1:-1] + x[:-2]
    if mode == "velocity":
        return x[1:] - x[:-1]
    raise ValueError(f"temporal mode must be 'acceleration' or 'velocity', got {mode!r}")


def temporal_rows(present: Tensor, mode: str = "acceleration") -> Tensor:
    """Which rows of the temporal difference operator count: ``present [F, P]`` bool -> ``[T, P]``
    bool, a row (frames ``t .. t+k-1`` of one person) only where the person is present in all of its
    frames, so no difference spans an absence or runs past a track's ends (each run of presence, a
    *segment*, is smoothed on its own)."""
    k = 3 if mode == "acceleration" else 2
    F = present.shape[0]
    if F < k:
        return present[:0]
    rows = present[: F - k + 1].clone()
    for a in range(1, k):
        rows &= present[a : F - k + 1 + a]
    return rows


def temporal_loss(r6: Tensor, joints: Tensor, mode: str = "acceleration", present: Tensor | None = None) -> Tensor:
    """Temporal smoothness (module docstring).

    Args:
        r6: ``[F, P, 23, 6]`` body-joint rotations (6D); joints ``[F, P, J, 3]`` model joints.
        mode: ``"acceleration"`` or ``"velocity"``.
        present: ``[F, P]`` bool (default: everyone everywhere): only the differences within a run
            of presence count (:func:`temporal_rows`), the mean is over those.
    Returns:
        scalar (0 when there are too few frames).
    """
    need = 3 if mode == "acceleration" else 2
    if r6.shape[0] < need:
        return r6.new_zeros(())
    dr = (_diff(r6, mode) ** 2).sum(-1)  # [T, P, 23]
    dx = (_diff(joints, mode) ** 2).sum(-1)  # [T, P, J]
    if present is None:
        return dr.mean() / S_ROT[mode] ** 2 + dx.mean() / S_POS[mode] ** 2
    rows = temporal_rows(present, mode).to(dr.dtype)
    n = rows.sum().clamp_min(1e-12)
    return ((dr.sum(-1) * rows).sum() / (n * dr.shape[-1]) / S_ROT[mode] ** 2
            + (dx.sum(-1) * rows).sum() / (n * dx.shape[-1]) / S_POS[mode] ** 2)


def shape_prior_loss(betas: Tensor) -> Tensor:
    """``mean(beta^2)`` over ``[P, K]``."""
    return (betas * betas).mean()


def all_pairs(Fc: int, P: int, device: torch.device | None = None) -> Tensor:
    """``[Fc * P(P-1)/2, 2]`` body indices (``frame * P + person``) of every pair of people in each
    of ``Fc`` frames (the pairs of :func:`collision_term`'s ``[Fc, P, N, 3]`` layout)."""
    pp = torch.tensor(person_pairs(P), dtype=torch.long, device=device).view(-1, 2)
    base = (torch.arange(Fc, device=device) * P)[:, None, None]
    return (base + pp[None]).reshape(-1, 2)


def collision_term(
    verts: Tensor,
    faces: Tensor,
    num_frames: int,
    loss_fn: Callable[..., Tensor] | None = None,
    **kwargs,
) -> Tensor:
    """Penetration term of every pair of people (module docstring).

    Args:
        verts: ``[Fc, P, N, 3]`` meshes of the frames that can be in contact (a subset of the
            ``num_frames`` frames; the others contribute 0).
        faces: ``[T, 3]`` int.
        num_frames: ``F``, the normaliser (so the term does not depend on how many frames were
            culled as far apart).
        loss_fn: the per-frame op (default :func:`h4d_fast.ops.collision.collision_loss`).
        kwargs: passed to ``loss_fn`` (``grid_size``, ``backend``, ...).
    Returns:
        scalar.
    """
    Fc, P = verts.shape[:2]
    if P < 2 or Fc == 0:
        return verts.new_zeros(())
    return pair_collision_term(verts.reshape(Fc * P, *verts.shape[2:]), all_pairs(Fc, P, verts.device), faces, num_frames, loss_fn, **kwargs)


def pair_collision_term(
    verts: Tensor,
    pairs: Tensor,
    faces: Tensor,
    num_frames: int,
    loss_fn: Callable[..., Tensor] | None = None,
    pair_weight: Tensor | None = None,
    **kwargs,
) -> Tensor:
    """The penetration term over a list of body pairs (people present in the same frame and close).

    Args:
        verts: ``[U, N, 3]`` meshes of the bodies (person-frames) that take part.
        pairs: ``[Q, 2]`` long, indices into ``verts`` of the two bodies of each pair.
        faces, num_frames, loss_fn, kwargs: as :func:`collision_term`.
        pair_weight: optional ``[Q]`` weight of each pair (default 1; the collision stage's
            follow-up pass raises the pairs still penetrating deeply).
    Returns:
        scalar: ``sum_pairs w_pair collision_loss(V_a, V_b) / (F S_COLL)``.
    """
    if loss_fn is None:
        from ..ops.collision import collision_loss as loss_fn
    if pairs.shape[0] == 0:
        return verts.new_zeros(())
    va, vb = verts.index_select(0, pairs[:, 0]), verts.index_select(0, pairs[:, 1])
    per_pair = loss_fn(va, vb, faces, faces, **kwargs)
    if pair_weight is not None:
        per_pair = per_pair * pair_weight.to(per_pair.dtype)
    return per_pair.sum() / (max(num_frames, 1) * S_COLL)


def collision_term_grad(verts: Tensor, faces: Tensor, num_frames: int, **kwargs) -> tuple[Tensor, Tensor]:
    """:func:`collision_term` and its gradient with respect to ``verts [Fc, P, N, 3]`` (same value
    and gradient, without autograd: :func:`h4d_fast.ops.collision.collision_loss_grad`)."""
    Fc, P = verts.shape[:2]
    if P < 2 or Fc == 0:
        return verts.new_zeros(()), torch.zeros_like(verts)
    loss, g = pair_collision_term_grad(verts.reshape(Fc * P, *verts.shape[2:]), all_pairs(Fc, P, verts.device), faces, num_frames, **kwargs)
    return loss, g.view_as(verts)


def pair_collision_term_grad(verts: Tensor, pairs: Tensor, faces: Tensor, num_frames: int, pair_weight: Tensor | None = None,
                             **kwargs) -> tuple[Tensor, Tensor]:
    """:func:`pair_collision_term` and its gradient with respect to ``verts [U, N, 3]``."""
    from ..ops.collision import collision_loss_grad

    g = torch.zeros_like(verts)
    if pairs.shape[0] == 0:
        return verts.new_zeros(()), g
    scale = 1.0 / (max(num_frames, 1) * S_COLL)
    loss, ga, gb = collision_loss_grad(verts.index_select(0, pairs[:, 0]), verts.index_select(0, pairs[:, 1]), faces, faces, **kwargs)
    if pair_weight is not None:
        pw = pair_weight.to(loss.dtype)
        loss = loss * pw
        ga = ga * pw[:, None, None].to(ga.dtype)
        gb = gb * pw[:, None, None].to(gb.dtype)
    g.index_add_(0, pairs[:, 0], ga)
    g.index_add_(0, pairs[:, 1], gb)
    return loss.sum() * scale, g.mul_(scale)



def pair_collision_term_grad_inside(verts: Tensor, pairs: Tensor, faces: Tensor, num_frames: int, pair_weight: Tensor | None = None,
                                    **kwargs) -> tuple[Tensor, Tensor]:
    """:func:`pair_collision_term_grad` restricted to the vertices that lie exactly inside the
    partner (``fit.collision_inside_only``): the op's gradient is kept only on those (the trilinear
    samples of the inside-only grid also push vertices up to a cell *outside* the partner: the
    bleed), and the value is their exact depth (closest triangle,
    :func:`h4d_fast.ops.penetration.inside_depth`) in the op's units (depth / the partner's box
    half-size, mean over the body's vertices, times the pair weight, ``/ (F S_COLL)``), so that
    value and gradient vanish together when the bodies only touch. Only the op's candidate
    vertices (gradient != 0) are tested."""
    from ..ops._collision_torch import box_normalization
    from ..ops.penetration import inside_depth

    _, g = pair_collision_term_grad(verts, pairs, faces, num_frames, pair_weight=pair_weight, **kwargs)
    if pairs.shape[0] == 0:
        return verts.new_zeros(()), g
    U, N = verts.shape[:2]
    dev = verts.device
    inside = torch.zeros(U, N, dtype=torch.int32, device=dev)  # partners each vertex is inside
    value = verts.new_zeros((), dtype=torch.float64)
    pw = pair_weight.double() if pair_weight is not None else torch.ones(pairs.shape[0], dtype=torch.float64, device=dev)
    cand = (g != 0).any(-1)
    for src, dst in ((pairs[:, 0], pairs[:, 1]), (pairs[:, 1], pairs[:, 0])):
        c = cand.index_select(0, src)  # [Q, N]
        counts = c.sum(-1)
        mc = int(counts.max())
        if mc == 0:
            continue
        order = torch.argsort((~c).to(torch.int8), dim=-1, stable=True)[:, :mc]  # candidates first
        used = torch.arange(mc, device=dev)[None] < counts[:, None]
        pts = torch.gather(verts.index_select(0, src), 1, order[..., None].expand(-1, -1, 3))
        vd = verts.index_select(0, dst)
        d = inside_depth(pts, vd, faces).double() * used  # [Q, mc] metres
        half = box_normalization(vd)[1].double()  # [Q]
        value = value + (d.sum(-1) / half / N * pw).sum()
        hit = torch.zeros(pairs.shape[0], N, dtype=torch.bool, device=dev)
        hit.scatter_(1, order, (d > 0) & used)
        inside.index_add_(0, src, hit.to(torch.int32))
    return (value / (max(num_frames, 1) * S_COLL)).to(verts.dtype), g * (inside > 0)[..., None].to(g.dtype)


__all__ = [
    "FIT_LIMBS",
    "FIT_LIMB_PAIRS",
    "S_COLL",
    "S_KP",
    "S_LEN",
    "S_POS",
    "S_ROT",
    "S_SYM",
    "all_pairs",
    "collision_term",
    "collision_term_grad",
    "gmof",
    "hyperextension_loss",
    "keypoint_loss",
    "limb_length_loss",
    "limb_lengths",
    "pair_collision_term",
    "pair_collision_term_grad",
    "pair_collision_term_grad_inside",
    "pose_reg_loss",
    "shape_prior_loss",
    "symmetry_loss",
    "target_limb_lengths",
    "temporal_loss",
    "temporal_rows",
]
