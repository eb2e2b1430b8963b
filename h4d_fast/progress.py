"""Progress of a long stage on stderr (no dependency): a bar on a terminal, plain lines in a log.

On a terminal the bar redraws in place. When the stream is not a terminal (output redirected to a
log file, a batch job), a stage that has run for more than :data:`LONG_STAGE_S` seconds prints one
line each time it passes another tenth of its work (``  fit          40%  120/300  12.3 s``), so a
minutes-long fit is never silent in a log; short stages print nothing here (the driver prints a
line per stage either way).
"""

from __future__ import annotations

import sys
import time

#: a stage running longer than this gets a line per 10% when not on a terminal
LONG_STAGE_S = 2.0


class Progress:
    """``with Progress("track", total=F) as bar: bar.update(n_done)``."""

    def __init__(self, label: str, total: int, enabled: bool = True, stream=None):
        self.label = label
        self.total = max(int(total), 1)
        self.stream = stream or sys.stderr
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = enabled and tty  # the in-place bar
        self.lines = enabled and not tty  # a line per tenth of a long stage
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._decile = 0
        self.done = 0

    def update(self, done: int) -> None:
        self.done = done
        if self.lines:
            self._line(done)
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < 0.1 and done < self.total:
            return
        self._last = now
        frac = min(1.0, done / self.total)
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        self.stream.write(f"\r  {self.label:<10} [{bar}] {done}/{self.total} {now - self.t0:6.1f}s")
        self.stream.flush()

    def _line(self, done: int) -> None:
        decile = min(10, int(10 * done / self.total))
        if decile <= self._decile:
            return
        self._decile = decile
        el = time.perf_counter() - self.t0
        if el < LONG_STAGE_S or decile >= 10:  # the finished stage gets the driver's own line
            return
        self.stream.write(f"  {self.label:<10} {10 * decile:3d}%  {done}/{self.total}  {el:.1f} s\n")
        self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.update(self.total if exc[0] is None else self.done)
            self.stream.write("\n")
            self.stream.flush()
