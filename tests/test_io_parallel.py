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
