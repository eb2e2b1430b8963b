"""Fault injection for the tests: SIGKILL this process at a named point of a run.

Off (one environment lookup per point) unless ``H4D_FAULT`` is set:

* ``H4D_FAULT`` -- the point, e.g. ``after:filter`` (a stage's cache written), ``after:fit_stats``,
  ``after:poses3d.npz``, ``after:sequence.npz``, ``after:timing.json``, ``write:N`` (a per-frame
  file writer, after its N-th file);
* ``H4D_FAULT_MATCH`` -- only where the point's ``where`` (the output folder) contains this text;
* ``H4D_FAULT_ONCE`` -- a file path: fire only if this file can be created (so a retry, or the
  rerun, is not killed again); the file records the pid killed.

A per-frame file writer running in a pool process kills the pool's owner (the run) first, then
itself: what a ``kill -9`` of the run in the middle of the export's writes does.
"""

from __future__ import annotations

import os
import signal

ENV = "H4D_FAULT"


def point(name: str, where: object = "") -> None:
    """SIGKILL the run here if ``H4D_FAULT`` names this point (see the module docstring)."""
    spec = os.environ.get(ENV)
    if not spec or spec != name:
        return
    match = os.environ.get(ENV + "_MATCH", "")
    if match and match not in str(where):
        return
    from .parallel import pool_owner

    victim = pool_owner() or os.getpid()
    once = os.environ.get(ENV + "_ONCE", "")
    if once:
        try:
            fd = os.open(once, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return
        os.write(fd, f"{victim} {name} {where}\n".encode())
        os.close(fd)
    if victim != os.getpid():
        os.kill(victim, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
