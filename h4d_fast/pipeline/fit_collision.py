"""The SMPL fit's collision stage (paper stage 5): stage 3 again with the two-person collision term,
on the frames where some pair of people present together comes within ``collision_margin``.

Follow-up pass (``collision_refine_depth_mm`` > 0): the collision term is linear in the depth of
each sampled vertex (its gradient per vertex does not grow with depth) and a mean over the
body's vertices, so a penetration of a few vertices -- two forearms crossing, a hand in the
partner's arm -- pushes with a small total force, and where the keypoints (wrong by a
centimetre or two in a tangle of limbs) pull the limbs into each other the stage ends at a balance
with the limbs still 2-3 cm deep in each other (synthetic seeds 2, 5, 10 at 60 frames: single
frames with 60-170 cm^3 left, the same as without the collision term). The stage's weight cannot
simply be raised everywhere: the grid's trilinear bleed pushes touching people apart on every
contact frame, which costs joint accuracy. So after the stage the frames where some vertex still
lies deeper than ``collision_refine_depth_mm`` inside the other body (:meth:`_Fitter.deep_frames`:
exact depth of the vertices the op's gradient touches) get ``iters_collision_refine`` more
iterations with the collision term of those frames' pairs weighted ``collision_refine_weight``
times (the other contact pairs keep theirs). On captures without such frames the pass costs one evaluation of the
collision term.

With ``compare_collision`` the same stage also runs from the same start with the collision weight 0,
and the penetration before / without / after is reported (``stats``).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from torch import Tensor

from ..config import FitConfig


def run_collision_stage(fitter: Any, cfg: FitConfig, iters: int, on_iter: Callable[[int], None],
                        stats: dict[str, Any], measure: bool = True, refine_iters: int = 0) -> dict[str, Tensor] | None:
    """Run the collision stage on ``fitter`` (a :class:`~h4d_fast.pipeline.fit._Fitter`), recording
    into ``stats``. Returns the parameters of the fit without the collision term
    (``compare_collision``), else None. ``measure``: the penetration after the stage (the caller
    may measure it elsewhere; ``compare_collision`` measures always). ``refine_iters``: iterations of
    the follow-up pass (module docstring; with ``compare_collision`` the fit without the collision
    term gets as many more iterations, so that the two differ only by the term)."""
    collision_off: dict[str, Tensor] | None = None
    t_c = time.perf_counter()
    contact = fitter.select_contact(float(cfg.collision_margin))
    stats["contact_frames"] = int(contact.numel())
    stats["contact_pairs"] = int(fitter.collision_pairs()[1].shape[0])
    meas = [0.0]  # seconds spent measuring penetration (stats)

    def penetration() -> Tensor:
        t_m = time.perf_counter()
        pen = fitter.penetration()
        meas[0] += time.perf_counter() - t_m
        return pen

    if cfg.compare_collision:  # h4d run leaves the after value to the export and measures nothing here
        stats["penetration_before_cm3"] = float(penetration().mean())
    wts = cfg.stage_weights(3)

    def without_collision(start: dict[str, Tensor] | None, n: int, epoch: str) -> dict[str, Tensor]:
        """``n`` iterations with the collision weight 0 from ``start`` (None: the current parameters),
        recorded as ``stats["<epoch>_stage"]`` (dashes as underscores); returns where they end, the
        fitter's parameters restored."""
        snap = {k: v.detach().clone() for k, v in fitter.p.items()}
        for k, v in (start or {}).items():
            fitter.p[k].copy_(v)
        rec = fitter.run_stage(3, {**wts, "collision": 0.0}, n, on_iter)
        rec["epoch"] = epoch
        stats[epoch.replace("-", "_") + "_stage"] = rec
        stats["penetration_without_collision_cm3"] = float(penetration().mean())
        stats["kp_error_without_collision_mm"] = fitter.kp_error_mm()
        end = {k: v.detach().clone() for k, v in fitter.p.items()}
        for k, v in snap.items():
            fitter.p[k].copy_(v)
        return end

    if cfg.compare_collision and contact.numel():
        collision_off = without_collision(None, iters, "collision-off")
    if contact.numel():
        rec = fitter.run_stage(3, wts, iters, on_iter)
        rec["epoch"] = "collision"
        stats["stages"].append(rec)
        depth = float(cfg.collision_refine_depth_mm) * 1e-3
        if depth > 0 and refine_iters > 0 and wts["collision"]:
            deep = fitter.deep_frames(depth)
            stats["refine_frames"] = int(deep.numel())
            if deep.numel():
                # every contact pair keeps its term (alone, the deep frames' neighbours in the
                # sequence would sink back into each other); the deep frames' pairs weigh more
                fitter.weight_frames(deep, float(cfg.collision_refine_weight))
                fitter.collision_field = cfg.collision_refine_field
                rec = fitter.run_stage(3, wts, refine_iters, on_iter)
                rec["epoch"] = "collision-refine"
                stats["stages"].append(rec)
                fitter.pair_weight = None
                fitter.collision_field = None
                if collision_off is not None:  # the fit without the term: as many more iterations
                    collision_off = without_collision(collision_off, refine_iters, "collision-off-refine")
    if measure or cfg.compare_collision:
        pen1 = penetration()
        stats["penetration_after_cm3"] = float(pen1.mean())
        stats["penetration_max_frame_cm3"] = float(pen1.max()) if pen1.numel() else 0.0
    stats["penetration_measure_seconds"] = meas[0]
    if cfg.compare_collision:
        base = stats.setdefault("penetration_without_collision_cm3", stats["penetration_before_cm3"])
        stats["penetration_reduction"] = (1.0 - stats["penetration_after_cm3"] / base) if base > 0 else 0.0
    stats["collision_seconds"] = time.perf_counter() - t_c
    return collision_off


__all__ = ["run_collision_stage"]
