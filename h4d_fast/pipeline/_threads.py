"""Thread settings of the CPU stages that run many small operations (filter, track, refine)."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def single_thread(device: torch.device):
    """On the CPU, run torch and numba with one thread inside the block.

    The per-frame work is small: intra-op threads only add synchronisation, and on a busy machine
    the thread pools' wake-ups make every call many times slower (measured on a loaded 2-core
    machine: 10-23 ms per numba call with 2 threads against 6 us with one).
    """
    if device.type != "cpu":
        yield
        return
    n_torch = torch.get_num_threads()
    nb = None
    try:
        import numba

        nb = (numba, numba.get_num_threads())
        numba.set_num_threads(1)
    except ImportError:  # pragma: no cover - numba is a dependency
        pass
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n_torch)
        if nb is not None:
            nb[0].set_num_threads(nb[1])
