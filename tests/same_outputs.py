"""Comparing two output folders byte for byte, less the files and entries that legitimately carry
run-time values (shared by the kill/rerun tests and the Ray test).

Files compared differently, everything else byte for byte:

* ``timing.json``      -- stage seconds, wall time, which stages came from the cache: left out.
* ``.h4d-run.lock`` / ``.run-many.lock`` -- the lock holder's pid, host and start time: left out.
* ``run_many.json``    -- run-many's summary (finish time, wall seconds, per-sequence seconds): left out.
* ``.h4d/DONE``        -- run-many's marker: its finish time, seconds, per-stage seconds and the
  device it ran on (``cpu``, or ``<node ip> cpu`` under Ray) left out, the rest compared.
* ``config.toml``      -- the configuration used: its ``[run]`` ``device`` left out (``auto`` in a
  plain run; a Ray task or a ``--devices`` worker sets the device it was given), the rest byte for byte.
* ``fit_stats.json``   -- the fit's statistics: its ``seconds`` / ``*_seconds`` entries (timings)
  left out, the rest compared.
* ``.h4d/<stage>.npz`` -- stage caches: every array compared; ``__stats__`` (the stage's
  statistics, with the fit's timings) compared as ``fit_stats.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

SKIP = {"timing.json", ".h4d-run.lock", ".run-many.lock", "run_many.json"}


def no_seconds(obj):
    """``obj`` less its timings (keys ``seconds`` / ``*_seconds``, at any depth)."""
    if isinstance(obj, dict):
        return {k: no_seconds(v) for k, v in obj.items() if not k.endswith("seconds")}
    if isinstance(obj, list):
        return [no_seconds(v) for v in obj]
    return obj


def snapshot(out: Path) -> dict[str, object]:
    """Relative path -> what is compared (bytes, or the parsed content less its timings)."""
    snap: dict[str, object] = {}
    for p in sorted(Path(out).rglob("*")):
        if not p.is_file() or p.name in SKIP:
            continue
        rel = p.relative_to(out).as_posix()
        if p.name == "fit_stats.json":
            snap[rel] = no_seconds(json.loads(p.read_text()))
        elif p.name == "config.toml":
            text = p.read_text()
            head, sep, run = text.partition("\n[run]\n")
            snap[rel] = head + sep + re.sub(r'(?m)^device = ".*"\n', "", run, count=1)
        elif p.name == "DONE":
            m = json.loads(p.read_text())
            snap[rel] = no_seconds({k: v for k, v in m.items() if k not in ("finished", "stages", "device")})
        elif p.parent.name == ".h4d" and p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                snap[rel] = {k: (no_seconds(json.loads(str(z[k]))) if k == "__stats__" else z[k].tobytes() + str(z[k].dtype).encode())
                             for k in z.files}
        else:
            snap[rel] = p.read_bytes()
    return snap


def assert_same(out: Path, ref: dict[str, object]) -> None:
    """``out``'s snapshot equals ``ref``: the same files, the same contents."""
    got = snapshot(out)
    assert sorted(got) == sorted(ref), f"files differ: extra {sorted(set(got) - set(ref))}, missing {sorted(set(ref) - set(got))}"
    bad = [k for k in ref if got[k] != ref[k]]
    assert not bad, f"contents differ: {bad}"
