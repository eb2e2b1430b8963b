"""Two-person interpenetration (collision) loss: the public drop-in op.

``collision_loss(verts_a, verts_b, faces_a, faces_b=None)`` -> ``[B]`` per-frame loss, and
``sdf_grid(verts, faces)`` -> the reference's inside-only distance grid (or, ``field="signed"``,
the signed one). The definitions are in :mod:`h4d_fast.ops._collision_torch` (the reference
every backend is tested against).

Backends (one dispatch point, :mod:`h4d_fast.ops._backend`):

* ``torch``: the reference, brute force (all grid points x all faces, as the reference CUDA
  kernel), then ``grid_sample``. Any device; slow for SMPL-sized meshes.
* ``numba`` (CPU), ``triton`` (CUDA), ``cupy`` (CUDA, ``h4d_fast/csrc/collision.cu``): the same
  values without building the grids. Only the grid points that the trilinear samples actually
  read are evaluated (see "Kernel method" below).

Kernel method (all three kernel backends):

1. Boxes and culling: per frame and person the vertex bounds (one reduction) give the box.
   A direction ("``p``'s grid sampled at ``q``'s vertices") is *active* only if the frame is
   valid and ``q``'s vertex box meets ``p``'s vertex box grown by two cells; inactive
   directions cost nothing more. Per vertex, samples outside the grid (no in-range corner)
   and samples whose 8 corners are all outside ``p``'s mesh stop after the corner test.
2. Parity rows (inside test): each triangle of ``p`` is rasterised onto the ``G x G`` rows
   (rays along ``-x``) with the watertight edge functions of the reference's ``"parity"``
   mode; a hit toggles, with one atomic xor, the bits of all grid points beyond the crossing in
   a 32-bit word per row (``ceil(G/32)`` words). Inside = bit set. ``O(F)`` per person-frame.
3. Marks: every sampled vertex sets (atomic or) a "needed" bit for each of its inside corners;
   the first setter of a word appends the word to a work list (no host synchronisation).
4. Distances: a persistent pass over the work list computes, for each needed grid point, the
   exact distance to the nearest triangle of ``p`` by best-first search over clusters of 32
   faces (faces are sorted once per faces tensor by the Morton code of their centroids in
   the first frame; per frame each cluster gets an AABB): clusters are visited in increasing
   AABB lower bound, 4 per round on the GPU (one face per lane), until the smallest remaining
   bound is not below the best distance, so the result is the exact minimum over all faces.
   On SMPL-like meshes a grid point needs ~12 clusters (~3-4 rounds) instead of 431.
5. Sampling: trilinear interpolation of those values (zero padding, ``align_corners=True``),
   the per-frame sum, and d(sample)/d(vertex) stored for the backward pass (the backward is
   one broadcast multiply).

``field="signed"``: a sample with at least one inside corner marks all its corners in step 3,
step 4 stores minus the distance at outside points, and step 5 keeps ``relu`` of the sample
(samples whose corners are all outside read 0 in both fields). The extra work is the outside
corners of the samples near the surface.

Work for 600 SMPL-sized frame pairs at ``G = 32``: a body fills only ~240 of the 32,768 grid
points of its box; in a hug-like contact ~40 of them are read per direction and frame (~180 at
14 cm penetration), against 4.5e8 point-triangle tests per person-frame for the full grid.
Memory: ``2 B G^3`` float32 distance cache (uninitialised; 157 MB at B = 600), ``4 B G^2``
int32 bit words, ``[B, N, 3]`` gradients per person.

Agreement with the reference (``inside="parity"``): the same grid values up to float32
rounding of the distance, except at grid points within ~1e-6 (normalised units) of the
surface, where the parity of a crossing computed by two different float codes may differ
(there ``phi`` is ~1e-6 anyway). Documented tolerance (tested): per-frame loss within
``1e-5 + 1e-4 * |loss|`` (``normalize="mean"``, float32), gradients within
``1e-4 * max|grad| + 1e-6`` elementwise. Float64 inputs are computed in float32 by the triton
and cupy kernels; numba computes in float64 whatever the input dtype (float32 vertices are read as
they are and promoted, and its gradients come back in the vertices' dtype).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import _backend
from ._backend import Impl, register
from ._collision_torch import PAD, sdf_grid_torch

register(Impl("collision_loss", "torch", "_collision_torch", "collision_loss_torch", ("cpu", "cuda")))
# the kernel backends register their run function (the contract of kernel_collision_loss below)
register(Impl("collision_loss", "numba", "_collision_numba", "run_numba", ("cpu",), ("numba",)))
# triton lists "cpu" only so that TRITON_INTERPRET=1 can run it on CPU tensors (tests); without it
# _backend refuses CPU tensors ("triton kernels need CUDA tensors") and auto never picks it there.
register(Impl("collision_loss", "triton", "_collision_triton", "run_triton", ("cuda", "cpu"), ("triton",)))
register(Impl("collision_loss", "cupy", "_collision_cupy", "run_cupy", ("cuda",), ("cupy",)))

CLUSTER = 32  # faces per cluster of the kernels' nearest-triangle search (one warp)
_CELL_CENTERS = ("aligned", "reference")
_INSIDE = ("parity", "reference", "winding")
FIELDS = ("inside", "signed", "exact")
EXACT_BACKENDS = ("torch", "numba")  # field="exact"


# ---------------------------------------------------------------------------------------------
# validation


def _check_verts(name: str, v: Tensor) -> None:
    if not isinstance(v, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if v.dim() != 3 or v.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape [B, N, 3], got {tuple(v.shape)}")
    if not v.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {v.dtype}")
    if v.shape[1] < 3:
        raise ValueError(f"{name}: a mesh needs at least 3 vertices, got {v.shape[1]}")


_RANGE_CACHE: OrderedDict = OrderedDict()


def _face_range(faces: Tensor) -> tuple[int, int]:
    """(min, max) vertex index of ``faces``, cached per tensor (one host sync per new tensor)."""
    key = (faces.data_ptr(), tuple(faces.shape), str(faces.device), faces._version)
    hit = _RANGE_CACHE.get(key)
    if hit is not None and hit[0] is faces:
        return hit[1]
    rng = (int(faces.min()), int(faces.max()))
    _RANGE_CACHE[key] = (faces, rng)
    while len(_RANGE_CACHE) > 16:
        _RANGE_CACHE.popitem(last=False)
    return rng


def _check_faces(name: str, faces: Tensor, n_verts: int, device: torch.device) -> None:
    if not isinstance(faces, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(faces).__name__}")
    if faces.dim() != 2 or faces.shape[1] != 3 or faces.shape[0] < 1:
        raise ValueError(f"{name}: expected shape [F, 3] with F >= 1, got {tuple(faces.shape)}")
    if faces.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name}: expected int32 or int64 indices, got {faces.dtype}")
    if faces.device != device:
        raise ValueError(f"{name} is on {faces.device}, the vertices on {device}")
    lo, hi = _face_range(faces)
    if lo < 0 or hi >= n_verts:
        raise ValueError(f"{name}: vertex indices must lie in [0, {n_verts}), got [{lo}, {hi}]")


# ---------------------------------------------------------------------------------------------
# shared host-side preparation of the kernel backends


@dataclass(frozen=True)
class FaceClusters:
    """Faces reordered into spatially coherent clusters of ``CLUSTER`` faces.

    ``faces`` ``[C * CLUSTER, 3]`` int32 (the last cluster padded by repeating its last face;
    the padding is used for distances, never for parity), ``n_faces`` the real count ``F``,
    ``n_clusters`` ``C``, ``order`` ``[C * CLUSTER]`` int64: the index in the original faces
    tensor of each slot, ``original`` ``[F, 3]`` int64 the faces in their own order.
    """

    faces: Tensor
    n_faces: int
    n_clusters: int
    order: Tensor
    original: Tensor


def _spread10(x: Tensor) -> Tensor:
    """Insert two zero bits between the 10 low bits of ``x`` (Morton code helper)."""
    x = x & 0x3FF
    x = (x | (x << 16)) & 0x030000FF
    x = (x | (x << 8)) & 0x0300F00F
    x = (x | (x << 4)) & 0x030C30C3
    x = (x | (x << 2)) & 0x09249249
    return x


_CLUSTER_CACHE: OrderedDict = OrderedDict()


def face_clusters(faces: Tensor, ref_verts: Tensor, cluster: int = CLUSTER) -> FaceClusters:
    """Morton-ordered face clusters, cached per faces tensor (the order only affects speed).

    Args:
        faces: ``[F, 3]`` int.
        ref_verts: ``[N, 3]`` one frame of vertices used to order the faces (non-finite
            values are tolerated: they only make the clusters less compact).
    """
    key = (faces.data_ptr(), tuple(faces.shape), str(faces.device), faces._version, cluster)
    hit = _CLUSTER_CACHE.get(key)
    if hit is not None and hit[0] is faces:
        return hit[1]
    with torch.no_grad():
        fl = faces.long()
        cen = torch.nan_to_num(ref_verts.detach().double(), 0.0, 0.0, 0.0)[fl].mean(1)  # [F, 3]
        lo, hi = cen.amin(0), cen.amax(0)
        q = ((cen - lo) / (hi - lo).clamp_min(1e-12) * 1023).clamp(0, 1023).long()
        code = _spread10(q[:, 0]) | (_spread10(q[:, 1]) << 1) | (_spread10(q[:, 2]) << 2)
        perm = torch.argsort(code, stable=True)
        F = faces.shape[0]
        C = -(-F // cluster)
        perm = torch.cat([perm, perm[-1:].expand(C * cluster - F)])
        fc = FaceClusters(fl[perm].to(torch.int32).contiguous(), F, C, perm.contiguous(), fl.contiguous())
    _CLUSTER_CACHE[key] = (faces, fc)
    while len(_CLUSTER_CACHE) > 16:
        _CLUSTER_CACHE.popitem(last=False)
    return fc


@dataclass
class KernelInputs:
    """What every kernel backend receives (all tensors on the vertices' device, detached).

    Direction ``p`` (0: a's grid sampled at b's vertices, 1: b's grid sampled at a's) has
    owner ``p`` and sampled person ``1 - p``.
    """

    verts: tuple[Tensor, Tensor]  # [B, Na, 3], [B, Nb, 3] float32 (float64 for numba) contiguous
    faces: tuple[FaceClusters, FaceClusters]
    center: Tensor  # [2, B, 3] box centres (world)
    half: Tensor  # [2, B] box half sizes (world)
    active: Tensor  # [2, B] int32, direction p is worth evaluating
    grid_size: int
    off: float  # 0 ("aligned") or 0.5 ("reference") grid-point offset in cells
    signed: bool = False  # field="signed" or "exact": signed grid values, relu of the samples
    exact: bool = False  # field="exact": the sampled vertex's exact signed distance instead of the trilinear sample
    taper: float = 0.0  # field="inside": the samples fade out from the surface to this far outside (world units; 0: off)
    margin: float = 0.0  # field="signed": added to the samples with an inside corner (world units)


def _vertex_boxes(v: Tensor) -> Tensor:
    """``[B, N, 3]`` -> ``[B, 6]`` lo, hi per item (NaN propagates): torch's ``aminmax``, or on a CPU
    with numba one parallel pass (:func:`h4d_fast.ops._collision_bounds.vertex_boxes`; the same values, ~3x faster there)."""
    if v.device.type == "cpu" and v.dtype in (torch.float32, torch.float64) and v.shape[1] > 0 \
            and _backend.why_unavailable("collision_loss", "numba", v.device) is None:
        from ._collision_bounds import vertex_boxes

        return vertex_boxes(v)
    return torch.cat(v.aminmax(dim=1), -1)


def kernel_inputs(
    verts_a: Tensor,
    verts_b: Tensor,
    faces_a: Tensor,
    faces_b: Tensor,
    grid_size: int,
    pad: float,
    cell_centers: str,
    dtype: torch.dtype = torch.float32,
    keep_float: bool = False,
    field: str = "inside",
    margin: float = 0.0,
    taper: float = 0.0,
) -> KernelInputs:
    """Boxes, per-direction activity and face clusters (~25 small torch ops, no host sync).

    The boxes are the reference's (:func:`~h4d_fast.ops._collision_torch.box_from_bounds`, same
    arithmetic, both people stacked), computed in ``dtype``; the vertices are converted to
    ``dtype`` too unless ``keep_float`` (a kernel that promotes every coordinate it reads, as the
    numba one: float32 vertices then give the same results without a float64 copy).
    """
    G = int(grid_size)
    with torch.no_grad():
        keep = keep_float and verts_a.dtype in (torch.float32, torch.float64) and verts_b.dtype in (torch.float32, torch.float64)
        vs = tuple(v.detach().contiguous() if keep else v.detach().to(dtype).contiguous() for v in (verts_a, verts_b))
        lohi = torch.stack([_vertex_boxes(v).to(dtype) for v in vs])  # [2, B, 6] (NaN propagates)
        lo, hi = lohi[..., :3], lohi[..., 3:]
        center = 0.5 * (lo + hi)  # [2, B, 3]
        half = pad * 0.5 * (hi - lo).amax(-1)  # [2, B]
        ok = torch.isfinite(lohi).all(-1) & (half > 0) & torch.isfinite(half)  # [2, B]
        valid = ok.all(0)  # [B]
        # direction p (owner p, sampled q = 1 - p) is worth evaluating if q's box meets p's box
        # grown by two cells (a sample reads grid points at most 1.5 cells away)
        m = ((4.0 / (G - 1)) * half)[..., None]
        meet = ((lo.flip(0) <= hi + m) & (hi.flip(0) >= lo - m)).all(-1)  # [2, B]
        active = (meet & valid).to(torch.int32)
        center = torch.where(ok[..., None], center, torch.zeros_like(center))
        half = torch.where(ok, half, torch.ones_like(half))
        clusters = tuple(face_clusters(f, v[0]) for f, v in zip((faces_a, faces_b), vs))
    return KernelInputs(
        verts=vs, faces=clusters, center=center, half=half, active=active, grid_size=G,
        off=0.5 if cell_centers == "reference" else 0.0, signed=field != "inside", exact=field == "exact", margin=float(margin), taper=float(taper),
    )  # fmt: skip


# run(ki, need_grad) -> (sums [2, B], grad_sampled_by_dir0 [B, Nb, 3] | None, grad_dir1 [B, Na, 3] | None)
KernelRun = Callable[[KernelInputs, bool], "tuple[Tensor, Tensor | None, Tensor | None]"]


class _KernelCollisionFn(torch.autograd.Function):
    """Autograd wrapper of a kernel backend: the grids are constants (built from detached
    vertices), the loss is linear in the samples, so the forward stores d(sample)/d(vertex)
    and the backward scales it by the incoming gradient."""

    @staticmethod
    def forward(ctx, verts_a, verts_b, run, ki, scale_a, scale_b, need):
        sums, grad_b, grad_a = run(ki, need)
        loss = sums[0] * scale_b + sums[1] * scale_a  # [B]
        ctx.scale = (scale_a, scale_b)
        ctx.dtypes = (verts_a.dtype, verts_b.dtype)
        if need:
            ctx.save_for_backward(grad_a, grad_b)
        return loss.to(torch.promote_types(verts_a.dtype, verts_b.dtype))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        grad_a, grad_b = ctx.saved_tensors
        scale_a, scale_b = ctx.scale
        g = grad.to(grad_a.dtype)
        ga = (grad_a * (g * scale_a)[:, None, None]).to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None
        gb = (grad_b * (g * scale_b)[:, None, None]).to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
        return ga, gb, None, None, None, None, None


def kernel_collision_loss(
    run: KernelRun,
    verts_a: Tensor,
    verts_b: Tensor,
    faces_a: Tensor,
    faces_b: Tensor,
    grid_size: int = 32,
    pad: float = PAD,
    cell_centers: str = "aligned",
    normalize: str = "mean",
    compute_dtype: torch.dtype = torch.float32,
    keep_float: bool = False,
    field: str = "inside",
    margin: float = 0.0,
    taper: float = 0.0,
) -> Tensor:
    """Per-frame loss ``[B]`` through a kernel backend's ``run`` (differentiable)."""
    ki = kernel_inputs(verts_a, verts_b, faces_a, faces_b, grid_size, pad, cell_centers, compute_dtype, keep_float, field, margin, taper)
    if normalize == "mean":
        scale_a, scale_b = 1.0 / verts_a.shape[1], 1.0 / verts_b.shape[1]
    else:
        scale_a = scale_b = 1.0
    need = torch.is_grad_enabled() and (verts_a.requires_grad or verts_b.requires_grad)
    return _KernelCollisionFn.apply(verts_a, verts_b, run, ki, scale_a, scale_b, need)


def _kernel_precision(backend: str) -> tuple[torch.dtype, bool]:
    """``(compute_dtype, keep_float)`` of :func:`kernel_inputs` for a kernel backend: numba computes in
    float64 and reads float32 vertices as they are; triton and cupy compute in float32."""
    return (torch.float64, True) if backend == "numba" else (torch.float32, False)


def next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


# ---------------------------------------------------------------------------------------------
# public ops


def collision_loss(
    verts_a: Tensor,
    verts_b: Tensor,
    faces_a: Tensor,
    faces_b: Tensor | None = None,
    grid_size: int = 32,
    reduction: str = "none",
    *,
    pad: float = PAD,
    cell_centers: str = "aligned",
    normalize: str = "mean",
    inside: str = "parity",
    field: str = "inside",
    margin: float = 0.0,
    taper: float = 0.0,
    backend: str = "auto",
) -> Tensor:
    """Interpenetration loss of two meshes per frame (the reference's SDF collision loss).

    For each frame ``t`` and person ``p`` a grid ``phi_p`` (``G^3`` points over ``p``'s vertex
    box enlarged ``pad`` times, built from detached vertices) holds the unsigned distance to
    ``p``'s surface at grid points inside ``p``'s mesh and 0 outside; the other person's
    vertices sample it trilinearly::

        L(t) = 1/Nb * sum_{v in V_b(t)} phi_a(v) + 1/Na * sum_{v in V_a(t)} phi_b(v)

    (``normalize="mean"``). With ``field="signed"`` the grid holds the signed distance (minus
    the distance outside) and each sample counts ``relu(phi(v))``: no push on a vertex that
    only touches the other body (the ``"inside"`` grid's interpolation reaches up to a cell out
    of the body). ``margin`` ``m > 0`` (signed field only; world units) counts
    ``relu(phi(v) + m / s)`` for the samples with an inside grid corner (0 for the others): the
    surfaces are kept about ``m`` apart. ``field="exact"``: the same samples count
    ``relu(sd(v) + m / s)`` with ``sd`` the *exact* signed distance of the vertex to the other
    mesh (closest triangle; inside by the closest feature's angle-weighted pseudo-normal), so
    neither the inside grid's bleed nor the signed grid's under-estimate inside thin convex
    parts (``h^2 / 8R``) enters; its gradient is the direction to the closest surface point. ``normalize="sum"`` drops the ``1/N`` factors: the reference's
    ``L_i(t) = (1/N_h) sum_{j != i} sum_{v in V_j} phi_i(v)`` summed over the two people is
    ``collision_loss(..., normalize="sum") / N_h``. Units: box-normalised (a distance divided by
    the owner's box half-size ``s_p = pad * max side / 2``; ~1 m for a standing adult).
    Separated bodies give exactly 0 (no grid point inside one mesh is read by the other's
    samples), as does any frame in which either person has a non-finite vertex (and such a
    frame's gradients are exactly 0).

    Gradients flow only to the sampled vertices through the trilinear weights (the grids and
    boxes are constants), as in the reference.

    Args:
        verts_a: ``[B, Na, 3]`` person a's vertices (frames ``B``, any B >= 0).
        verts_b: ``[B, Nb, 3]`` person b's vertices.
        faces_a: ``[Fa, 3]`` int triangles of a (closed mesh, e.g. SMPL's 13,776).
        faces_b: ``[Fb, 3]`` triangles of b (default: ``faces_a``).
        grid_size: ``G`` (32 in the reference).
        reduction: ``"none"`` -> ``[B]``, ``"mean"`` (over frames, the reference's ``mean_t``)
            or ``"sum"`` -> scalar.
        pad: box enlargement (1.2).
        cell_centers: ``"aligned"`` (default, grid points where ``grid_sample`` expects them)
            or ``"reference"`` (the reference kernel's half-cell-shifted points).
        normalize: ``"mean"`` or ``"sum"`` over the sampled vertices (see above).
        inside: ``"parity"`` (default; all backends), ``"reference"`` or ``"winding"``
            (torch backend only), see :mod:`h4d_fast.ops._collision_torch`.
        field: ``"inside"`` (default, the reference's), ``"signed"`` or ``"exact"`` (above;
            ``"exact"``: torch and numba backends).
        margin: clearance of the signed and exact fields (world units, ``>= 0``; default 0).
        taper: inside field only (world units, ``>= 0``; default 0 = off, the reference): each
            sample's value is weighted by ``clamp((sd + taper) / taper, 0, 1)`` with ``sd`` the
            trilinear sample of the *signed* grid, so the bleed fades out between the surface and
            ``taper`` outside it while vertices inside (even where the signed interpolation
            under-estimates the depth of a thin part) keep the full value.
        backend: ``auto``, ``torch``, ``numba``, ``triton`` or ``cupy``.
    Returns:
        ``[B]`` (or a scalar), in the promoted dtype of the vertices.
    """
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"collision_loss: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    faces_b = _validate(verts_a, verts_b, faces_a, faces_b, grid_size, pad, cell_centers, normalize, inside, field, margin, taper)
    if inside != "parity":
        if (backend or "auto").lower() not in ("auto", "torch"):
            raise ValueError(f"collision_loss: inside={inside!r} is implemented by the torch backend only")
        backend = "torch"

    if verts_a.shape[0] == 0:
        loss = verts_a.sum((1, 2)) * 0 + verts_b.sum((1, 2)) * 0  # [0], keeps the graph
    else:
        name, fn = _dispatch(verts_a.device, backend, field, taper)
        if name == "torch":
            loss = fn(verts_a, verts_b, faces_a, faces_b, grid_size, float(pad), cell_centers, normalize, inside, field, float(margin),
                      float(taper))
        else:
            loss = kernel_collision_loss(fn, verts_a, verts_b, faces_a, faces_b, grid_size, float(pad), cell_centers, normalize,
                                         *_kernel_precision(name), field, float(margin), float(taper))
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum()
    if reduction == "sum":
        return loss.sum()
    return loss


def _validate(verts_a, verts_b, faces_a, faces_b, grid_size, pad, cell_centers, normalize, inside, field, margin, taper) -> Tensor:
    """Argument checks of :func:`collision_loss` / :func:`collision_loss_grad`; returns ``faces_b``."""
    _check_verts("verts_a", verts_a)
    _check_verts("verts_b", verts_b)
    if verts_a.shape[0] != verts_b.shape[0]:
        raise ValueError(f"collision_loss: frame counts differ ({verts_a.shape[0]} vs {verts_b.shape[0]})")
    if verts_a.device != verts_b.device:
        raise ValueError(f"collision_loss: verts_a on {verts_a.device}, verts_b on {verts_b.device}")
    if faces_b is None:
        faces_b = faces_a
    _check_faces("faces_a", faces_a, verts_a.shape[1], verts_a.device)
    _check_faces("faces_b", faces_b, verts_b.shape[1], verts_b.device)
    if not isinstance(grid_size, int) or grid_size < 2:
        raise ValueError(f"collision_loss: grid_size must be an int >= 2, got {grid_size!r}")
    if not (isinstance(pad, (int, float)) and math.isfinite(pad) and pad > 0):
        raise ValueError(f"collision_loss: pad must be a positive number, got {pad!r}")
    if normalize not in ("mean", "sum"):
        raise ValueError(f"collision_loss: normalize must be 'mean' or 'sum', got {normalize!r}")
    if cell_centers not in _CELL_CENTERS:
        raise ValueError(f"collision_loss: cell_centers must be one of {_CELL_CENTERS}, got {cell_centers!r}")
    if inside not in _INSIDE:
        raise ValueError(f"collision_loss: inside must be one of {_INSIDE}, got {inside!r}")
    if field not in FIELDS:
        raise ValueError(f"collision_loss: field must be one of {FIELDS}, got {field!r}")
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"collision_loss: margin must be a number >= 0, got {margin!r}")
    if margin and field == "inside":
        raise ValueError("collision_loss: margin needs field='signed' or 'exact' (the inside-only grid has no distances outside)")
    if not (isinstance(taper, (int, float)) and math.isfinite(taper) and taper >= 0):
        raise ValueError(f"collision_loss: taper must be a number >= 0, got {taper!r}")
    if taper and field != "inside":
        raise ValueError("collision_loss: taper applies to field='inside' only")
    return faces_b


def _dispatch(device: torch.device, backend: str, field: str, taper: float = 0.0) -> tuple[str, Callable]:
    """The collision op's backend; ``field="exact"`` has the torch and numba backends only."""
    if field == "exact":
        what = "field='exact'"
        req = (backend or "auto").lower()
        if req not in ("auto",) + EXACT_BACKENDS:
            raise ValueError(f"collision_loss: {what} is implemented by the {' and '.join(EXACT_BACKENDS)} backends, not {backend!r}")
        if req == "auto":
            if device.type != "cpu":
                raise ValueError(f"collision_loss: {what} runs on CPU tensors (numba) or with backend='torch'")
            backend = "numba" if _backend.why_unavailable("collision_loss", "numba", device) is None else "torch"
    return _backend.dispatch("collision_loss", device, backend)


def collision_loss_grad(
    verts_a: Tensor,
    verts_b: Tensor,
    faces_a: Tensor,
    faces_b: Tensor | None = None,
    grid_size: int = 32,
    *,
    pad: float = PAD,
    cell_centers: str = "aligned",
    normalize: str = "mean",
    field: str = "inside",
    margin: float = 0.0,
    taper: float = 0.0,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`collision_loss` per frame and its gradient, without autograd.

    Returns ``loss [B]`` and ``grad_a [B, Na, 3]``, ``grad_b [B, Nb, 3]``: the derivatives of
    ``loss.sum()`` (frame ``b``'s loss depends on frame ``b``'s vertices only), in the vertices'
    dtype. The kernel backends return the derivatives their forward pass stores; the torch
    backend differentiates itself with autograd. Same values as ``collision_loss`` and its
    backward (tested).
    """
    faces_b = _validate(verts_a, verts_b, faces_a, faces_b, grid_size, pad, cell_centers, normalize, "parity", field, margin, taper)
    if verts_a.shape[0] == 0:
        return verts_a.new_zeros(0), torch.zeros_like(verts_a), torch.zeros_like(verts_b)
    name, fn = _dispatch(verts_a.device, backend, field, taper)
    if name == "torch":
        with torch.enable_grad():
            va, vb = verts_a.detach().requires_grad_(True), verts_b.detach().requires_grad_(True)
            loss = fn(va, vb, faces_a, faces_b, grid_size, float(pad), cell_centers, normalize, "parity", field, float(margin), float(taper))
            ga, gb = torch.autograd.grad(loss.sum(), (va, vb))
        return loss.detach(), ga, gb
    ki = kernel_inputs(verts_a, verts_b, faces_a, faces_b, grid_size, float(pad), cell_centers, *_kernel_precision(name), field, float(margin),
                       float(taper))
    scale_a, scale_b = (1.0 / verts_a.shape[1], 1.0 / verts_b.shape[1]) if normalize == "mean" else (1.0, 1.0)
    sums, grad_b, grad_a = fn(ki, True)
    out = torch.promote_types(verts_a.dtype, verts_b.dtype)
    loss = (sums[0] * scale_b + sums[1] * scale_a).to(out)
    return loss, grad_a.to(verts_a.dtype).mul_(scale_a), grad_b.to(verts_b.dtype).mul_(scale_b)


def sdf_grid(
    verts: Tensor,
    faces: Tensor,
    grid_size: int = 32,
    pad: float = PAD,
    cell_centers: str = "aligned",
    inside: str = "parity",
    field: str = "inside",
) -> tuple[Tensor, Tensor, Tensor]:
    """The reference's inside-only distance grid, or the signed one (torch, brute force, no gradient).

    Args:
        verts: ``[B, N, 3]``; faces ``[F, 3]`` int.
        grid_size, pad, cell_centers, inside, field: see :func:`collision_loss`.
    Returns:
        phi ``[B, G, G, G]`` indexed ``[b, z, y, x]`` (normalised units; 0 outside the mesh
        (``field="signed"``: minus the distance) and 0 in invalid frames), center ``[B, 3]`` and half_size ``[B]`` of the boxes
        (``u = (x - center) / half_size`` maps world points to ``[-1, 1]^3``).
    """
    _check_verts("verts", verts)
    _check_faces("faces", faces, verts.shape[1], verts.device)
    if not isinstance(grid_size, int) or grid_size < 2:
        raise ValueError(f"sdf_grid: grid_size must be an int >= 2, got {grid_size!r}")
    if cell_centers not in _CELL_CENTERS:
        raise ValueError(f"sdf_grid: cell_centers must be one of {_CELL_CENTERS}, got {cell_centers!r}")
    if field not in FIELDS:
        raise ValueError(f"sdf_grid: field must be one of {FIELDS}, got {field!r}")
    return sdf_grid_torch(verts, faces, grid_size, float(pad), cell_centers, inside, field)
