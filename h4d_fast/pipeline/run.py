"""``h4d run`` on a sequence folder: the stages of :data:`h4d_fast.pipeline.driver.STAGES` (stage 0
when the sequence has images and no 2D detections, the load, the keypoint stages, their outputs,
the SMPL fit and its export), then ``timing.json`` and ``config.toml``, the last files of a
finished run.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from ..config import Config, to_toml
from ..errors import OutputError
from ..io import atomic, faults
from .driver import CACHE_DIR, STAGES, RunResult, RunState, check_output_dir, fingerprint_inputs, resolve_device, run_stages


def run_sequence(seq: Path, out: Path, cfg: Config, force: bool = False, log: Callable[[str], None] | None = None,
                 stop_after: str | None = None, capture: Any = None, wait_files: bool = True) -> RunResult:
    """``h4d run``: load a Harmony4D-layout sequence, run all stages
    (:data:`~h4d_fast.pipeline.driver.STAGES`), write the outputs.

    ``capture`` -- the sequence already loaded, or being loaded (anything with ``result()``, e.g.
    :func:`~h4d_fast.io.harmony4d.start_read`'s :class:`SequenceLoad`; ``run-many`` prefetches the
    next one while this one computes); ``seq`` still names it (input fingerprint, error messages).
    ``wait_files=False`` returns as soon as the consolidated outputs are written, with the
    per-frame files still being written: the caller then calls :meth:`RunResult.finish` (which
    waits for them and writes ``timing.json`` and ``config.toml``).
    """
    from ..io.sequence_checks import check_metric_scale

    t_run = time.perf_counter()
    started = since_process_start()
    seq, out = Path(seq), Path(out)
    if out.resolve() == seq.resolve():
        raise OutputError(out, "the output folder must differ from the sequence folder (its processed_data holds the inputs)")
    check_output_dir(out)
    for d, deep in ((out, False), (out / CACHE_DIR, True), (out / "processed_data", True)):
        atomic.remove_stale_temp(d, deep)  # what a killed run left in the folders it writes (a run holds OUT's lock)
    log = log or (lambda s: None)
    # 3D in COLMAP units is refused unless asked for (the load leaves it to the config, here)
    warnings = [w for w in [seq.is_dir() and check_metric_scale(seq, cfg.run.assume_metric)] if w]
    for w in warnings:
        log(f"  warning: {w}")
    st = RunState(out, cfg, force=force, log=log, stop_after=stop_after, seq=seq, capture=capture, input_key=fingerprint_inputs(seq))
    result = run_stages(STAGES, st).result

    def finish() -> None:
        total = sum(s.seconds for s in result.stages)
        atomic.write_json(out / "timing.json", {
            "sequence": str(seq),
            "device": str(resolve_device(cfg.run.device)),
            "total_s": total,
            "wall_s": time.perf_counter() - t_run,
            "process_start_to_run_s": started,
            "stages": [asdict(s) for s in result.stages],
            "warnings": warnings,
        })
        faults.point("after:timing.json", out)
        atomic.write_text(out / "config.toml", to_toml(cfg))

    result.extra["finish"] = finish
    if wait_files:
        waited = result.finish()
        if waited > 0.05:
            log(f"  {'files':<10} {waited:7.2f} s  waited for the per-frame files")
    return result


def since_process_start() -> float | None:
    """Seconds since this process started (interpreter start, imports, ...; Linux ``/proc``), or None."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


__all__ = ["run_sequence", "since_process_start"]
