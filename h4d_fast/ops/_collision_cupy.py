"""CuPy backend of the collision loss: the CUDA kernels of ``h4d_fast/csrc/collision.cu``.

Method: :mod:`h4d_fast.ops.collision` ("Kernel method"); launch layouts in the header of
``h4d_fast/csrc/collision.cu``. Same buffers and launch sequence as the Triton backend
(:mod:`h4d_fast.ops._collision_triton`): per direction a raster, a mark, a persistent distance and
a sample launch, on the current torch stream, no host synchronisation. float32 arithmetic.
"""

from __future__ import annotations

from functools import lru_cache

import cupy  # noqa: F401  (imported here so that a missing CuPy fails at dispatch, not at launch)
import numpy as np
import torch
from torch import Tensor

from . import _cuda_source as cs
from .collision import CLUSTER, KernelInputs, next_pow2

SOURCE = "collision.cu"
BLOCK = 256  # h4d::coll::kBlock
DIST_WARPS = 4  # h4d::coll::kDistWarps
MAX_SHARED_CLUSTERS = 1024  # h4d::coll::kMaxSharedClusters
DIST_BLOCKS_PER_SM = 8


@lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def run_cupy(ki: KernelInputs, need_grad: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Kernel-backend contract of :func:`h4d_fast.ops.collision.kernel_collision_loss`."""
    verts = ki.verts
    B = verts[0].shape[0]
    dev = verts[0].device
    G = ki.grid_size
    W = _cdiv(G, 32)
    c_max = max(f.n_clusters for f in ki.faces)
    CP2 = max(16, next_pow2(c_max))
    words = B * G * G * W
    ints = torch.zeros(4 * words + 2, dtype=torch.int32, device=dev)  # parity | needed | counters
    par, need, cnt = ints[: 2 * words], ints[2 * words : 4 * words], ints[4 * words :]
    aabb = torch.empty(2, B, 6, CP2, dtype=torch.float32, device=dev)
    wlist = torch.empty(2, words, dtype=torch.int32, device=dev)
    phi = torch.empty(2, B, G * G * G, dtype=torch.float32, device=dev)
    index = dev.index if dev.index is not None else 0  # CUDA tensors always carry their index
    n_dist = _sm_count(index) * DIST_BLOCKS_PER_SM
    lb_global = None
    if c_max > MAX_SHARED_CLUSTERS:
        lb_global = torch.empty(n_dist * DIST_WARPS * c_max, dtype=torch.float32, device=dev)
    i32, ptr = np.int32, cs.ptr
    off = np.float32(ki.off)
    sgn = i32(int(ki.signed or ki.taper > 0))  # mark and dist: the signed distances (taper needs them too)

    for p in (0, 1):
        fc = ki.faces[p]
        nblk = _cdiv(fc.n_clusters * CLUSTER, BLOCK)
        cs.launch(SOURCE, "h4d_collision_raster", dev, nblk * B, BLOCK, (
            ptr(verts[p]), ptr(fc.faces), i32(verts[p].shape[1]), i32(fc.n_faces), i32(fc.n_clusters), i32(B), i32(p),
            ptr(ki.center), ptr(ki.half), ptr(ki.active), ptr(aabb), ptr(par), off, i32(G), i32(W), i32(CP2), i32(nblk),
        ))  # fmt: skip
    for p in (0, 1):
        q = verts[1 - p]
        nblk = _cdiv(q.shape[1], BLOCK)
        cs.launch(SOURCE, "h4d_collision_mark", dev, nblk * B, BLOCK, (
            ptr(q), i32(q.shape[1]), i32(B), i32(p), ptr(ki.center), ptr(ki.half), ptr(ki.active), ptr(par), ptr(need),
            ptr(cnt), ptr(wlist), np.int64(words), i32(G), i32(W), i32(nblk), sgn,
        ))  # fmt: skip
    for p in (0, 1):
        fc = ki.faces[p]
        cs.launch(SOURCE, "h4d_collision_dist", dev, n_dist, 32 * DIST_WARPS, (
            ptr(verts[p]), ptr(fc.faces), i32(verts[p].shape[1]), i32(fc.n_clusters), i32(B), i32(p), ptr(ki.center),
            ptr(ki.half), ptr(aabb), ptr(need), ptr(cnt), ptr(wlist), np.int64(words), ptr(phi), ptr(lb_global), off,
            i32(G), i32(W), i32(CP2), ptr(par), sgn,
        ))  # fmt: skip
    sums, grads = [], []
    for p in (0, 1):
        q = verts[1 - p]
        nblk = _cdiv(q.shape[1], BLOCK)
        part = torch.empty(B, nblk, dtype=torch.float32, device=dev)
        grad = torch.empty(B, q.shape[1], 3, dtype=torch.float32, device=dev) if need_grad else None
        cs.launch(SOURCE, "h4d_collision_sample", dev, nblk * B, BLOCK, (
            ptr(q), i32(q.shape[1]), i32(B), i32(p), ptr(ki.center), ptr(ki.half), ptr(ki.active), ptr(need), ptr(phi),
            ptr(part), ptr(grad), i32(int(need_grad)), i32(G), i32(W), i32(nblk), i32(int(ki.signed)), ptr(par),
            np.float32(ki.margin), np.float32(ki.taper),
        ))  # fmt: skip
        sums.append(part.sum(1))
        grads.append(grad)
    return torch.stack(sums), grads[0], grads[1]
