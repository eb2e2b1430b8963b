"""Vertex boxes of a batch of meshes on the CPU (numba, parallel over the batch): the boxes of the
collision op's :func:`~h4d_fast.ops.collision.kernel_inputs` (its own module: the collision backends
import :mod:`h4d_fast.ops.collision`, which imports this)."""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor


@njit(parallel=True, cache=True)
def _batch_bounds(verts, out):
    """``out [B, 6]``: per batch item the vertex box ``(lo x, lo y, lo z, hi x, hi y, hi z)``; a
    coordinate with a NaN is NaN in both (as ``torch.aminmax``)."""
    for b in prange(verts.shape[0]):
        for a in range(3):
            lo, hi = np.inf, -np.inf
            for v in range(verts.shape[1]):
                x = verts[b, v, a]
                if x != x:
                    lo = hi = np.nan
                    break
                lo, hi = min(lo, x), max(hi, x)
            out[b, a], out[b, 3 + a] = lo, hi


def vertex_boxes(verts: Tensor) -> Tensor:
    """``verts [B, N, 3]`` (CPU, float32/64) -> ``[B, 6]`` lo and hi of each item's vertices, in the
    vertices' dtype; equal to ``torch.cat(verts.aminmax(dim=1), -1)`` (NaN propagates) in one
    parallel pass instead of torch's reduction (~3x faster on a CPU for SMPL-sized batches)."""
    v = verts.detach().contiguous()
    out = np.empty((v.shape[0], 6), v.numpy().dtype)
    if v.shape[1]:
        _batch_bounds(v.numpy(), out)
    else:
        out[:, :3], out[:, 3:] = np.inf, -np.inf
    return torch.from_numpy(out)
