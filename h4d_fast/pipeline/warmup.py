"""Start-up work of a fresh ``h4d run`` done in the background while the first stages run.

Nothing heavy is imported when the package is (``h4d --help`` and the start of ``h4d run``
load only the standard library, numpy and torch); each stage imports what it uses. In a fresh
process those first uses add up (the CUDA context, the kernel backends -- Triton, CuPy, Numba --,
the body model through smplx, and ``torch._dynamo``, which ``torch.optim`` imports on its first
optimizer: only the fit's optional Adam uses one; refine and the fit's L-BFGS do not). :func:`start_warmup` does them in a daemon thread right after the configuration is read,
so that they overlap the load (parsed by worker processes) and the early stages, which wait on
the GPU or on those processes much of the time. Each step is what a stage would do first anyway
(the same imports, the same cached body model), so nothing is done twice and a failure here is
ignored: the stage that needs the step meets the error itself. ``H4D_WARMUP=0`` turns it off
(to measure start-up without it).
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Callable

from ..config import Config

__all__ = ["start_warmup", "warmup_steps"]


def warmup_steps(cfg: Config) -> list[tuple[str, Callable[[], object]]]:
    """The steps, in order: ``(name, callable)``."""
    import torch

    from ..ops import _backend
    from .driver import load_body, resolve_device, sequential_device

    steps: list[tuple[str, Callable[[], object]]] = []
    device = resolve_device(cfg.run.device)
    seq_device = sequential_device(cfg, device)
    if device.type == "cuda":
        steps.append(("cuda", lambda: torch.empty(1, device=device)))
    ops = [("dedup_oks", device), ("oks", seq_device), ("triangulate_ransac", seq_device), ("triangulate_dlt", seq_device)]
    if cfg.fit.enabled:
        ops.append(("collision_loss", device))
    for op, dev in ops:
        steps.append((f"backend {op}", lambda op=op, dev=dev: _backend.dispatch(op, dev, cfg.run.backend)))
    if cfg.fit.enabled and cfg.fit.optimizer == "adam":  # torch.optim's first optimizer imports torch._dynamo
        steps.append(("torch._dynamo", lambda: importlib.import_module("torch._dynamo")))
    if cfg.fit.enabled:
        steps.append(("body model", lambda: load_body(cfg, device)))
    return steps


def start_warmup(cfg: Config) -> threading.Thread | None:
    """Run :func:`warmup_steps` in a daemon thread (None when ``H4D_WARMUP=0``)."""
    if os.environ.get("H4D_WARMUP", "1").strip() == "0":
        return None

    def run() -> None:
        try:
            steps = warmup_steps(cfg)
        except Exception:  # noqa: BLE001 - the stages report their own errors
            return
        for _, step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001
                pass

    t = threading.Thread(target=run, name="h4d-warmup", daemon=True)
    t.start()
    return t
