"""Bulk file writes in forked processes: every file written, order-free, failures name the file."""

import sys

import numpy as np
import pytest

from h4d_fast.errors import OutputError
from h4d_fast.io.atomic import write_npy
from h4d_fast.io.detections import read_npy
from h4d_fast.io.parallel import for_each_file


@pytest.mark.parametrize("processes", [1, 2])
def test_writes_every_file(tmp_path, processes):
    n = 1200  # above the in-process threshold, so processes=2 really forks on Linux
    data = np.arange(n * 4, dtype=np.float32).reshape(n, 4)  # inherited by the children, not pickled
    for_each_file(lambda i: write_npy(tmp_path / f"{i:05d}.npy", {"a": data[i]}), range(n), processes=processes)
    files = sorted(tmp_path.glob("*.npy"))
    assert len(files) == n and not list(tmp_path.glob(".*.tmp"))
    for i in (0, 517, n - 1):
        assert np.array_equal(read_npy(tmp_path / f"{i:05d}.npy")["a"], data[i])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked writers are Linux-only")
def test_child_failure_names_the_file(tmp_path):
    blocker = tmp_path / "sub"
    blocker.write_text("a file where a folder should be")

    def write(i: int) -> None:
        write_npy((blocker if i == 700 else tmp_path) / f"{i:05d}.npy", np.zeros(2))

    with pytest.raises(OutputError, match="sub"):
        for_each_file(write, range(1200), processes=2)


def _write_many_in_pool_worker(folder: str) -> int:
    from pathlib import Path

    from h4d_fast.io.parallel import MIN_ITEMS_FOR_PROCESSES, for_each_file

    items = [Path(folder) / f"{i:05d}.txt" for i in range(MIN_ITEMS_FOR_PROCESSES + 5)]
    for_each_file(lambda p: p.write_text(p.stem), items, processes=4)
    return len(items)


def test_for_each_file_inside_a_daemonic_pool_worker(tmp_path):
    """A multiprocessing.Pool worker is daemonic and may not fork children: writes stay in-process."""
    import multiprocessing as mp

    with mp.get_context("fork").Pool(1) as pool:
        n = pool.apply(_write_many_in_pool_worker, (str(tmp_path),))
    files = sorted(tmp_path.glob("*.txt"))
    assert len(files) == n and files[3].read_text() == "00003"
