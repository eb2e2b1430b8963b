"""The SMPL fit's collision stage (paper stage 5): stage 3 again with the two-person collision term,
on the frames where some pair of people present together comes within ``collision_margin``.

With ``compare_collision`` the same stage also runs from the same start with the collision weight 0,
and the penetration before / without / after is reported (``stats``).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from torch import Tensor

from ..config import FitConfig


def run_collision_stage(fitter: Any, cfg: FitConfig, iters: int, on_iter: Callable[[int], None],
                        stats: dict[str, Any], measure: bool = True) -> dict[str, Tensor] | None:
    """Run the collision stage on ``fitter`` (a :class:`~h4d_fast.pipeline.fit._Fitter`), recording
    into ``stats``. Returns the parameters of the fit without the collision term
    (``compare_collision``), else None. ``measure``: the penetration after the stage (the caller
    may measure it elsewhere; ``compare_collision`` measures always)."""
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

    if cfg.compare_collision:  # the measure costs ~1-4 s at 600 frames; h4d run reports the after value only
        stats["penetration_before_cm3"] = float(penetration().mean())
    wts = cfg.stage_weights(3)
    if cfg.compare_collision and contact.numel():
        snap = {k: v.detach().clone() for k, v in fitter.p.items()}
        rec = fitter.run_stage(3, {**wts, "collision": 0.0}, iters, on_iter)
        rec["epoch"] = "collision-off"
        stats["collision_off_stage"] = rec
        stats["penetration_without_collision_cm3"] = float(penetration().mean())
        stats["kp_error_without_collision_mm"] = fitter.kp_error_mm()
        collision_off = {k: v.detach().clone() for k, v in fitter.p.items()}
        for k, v in snap.items():
            fitter.p[k].copy_(v)
    if contact.numel():
        rec = fitter.run_stage(3, wts, iters, on_iter)
        rec["epoch"] = "collision"
        stats["stages"].append(rec)
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
