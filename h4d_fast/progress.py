"""A small progress bar on stderr (no dependency); silent when disabled or not a terminal."""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress("track", total=F) as bar: bar.update(n_done)``."""

    def __init__(self, label: str, total: int, enabled: bool = True, stream=None):
        self.label = label
        self.total = max(int(total), 1)
        self.stream = stream or sys.stderr
        self.enabled = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self._last = 0.0
        self.done = 0

    def update(self, done: int) -> None:
        self.done = done
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

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.update(self.total if exc[0] is None else self.done)
            self.stream.write("\n")
            self.stream.flush()
