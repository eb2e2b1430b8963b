"""Vertex-contact labels on disk: one ``.npz`` per sequence, and the per-frame export dicts.

``contact.npz`` (ground truth: ``SEQ/ground_truth/contact.npz``; a run may write the same file)::

    contact_index   int32 [K, 4]   (frame index, pair, side, vertex) of every touching vertex
    shape           int64 [4]      F, Q, 2, N of the dense labels
    pairs           int64 [Q, 2]   person indices (a, b) of each pair; side 0 = a's vertices touching b
    frame_ids       int64 [F]      frame numbers (1-based, as the frame files)
    contact_mm      float64 []     the threshold the labels were computed with
    part_names      str [R]        body parts of the segmentation (optional, with vertex_part)
    vertex_part     int16 [N]      part index of every vertex (optional)
    depth_max       float32 [F, Q, 2]  per side, the deepest vertex inside the other body (metres,
    depth_mean      float32 [F, Q, 2]  nearest-vertex distance) and the mean over the inside
                                   vertices (optional; :func:`h4d_fast.ops.contact.depth_arrays`)

The sparse index keeps the file small (a few hundred touching vertices per contact frame out of
2 x 13,380). :func:`contact_frame_dict` gives the per-frame dict of the Harmony4D-style layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from .atomic import write_npz

CONTACT_FILE = "contact.npz"


@dataclass
class ContactLabels:
    """Dense labels read back: ``contact [F, Q, 2, N]`` bool and what describes them."""

    contact: Tensor
    pairs: list[tuple[int, int]]
    frame_ids: list[int]
    contact_mm: float
    part_names: tuple[str, ...] | None = None
    vertex_part: Tensor | None = None
    depth_max: Tensor | None = None  # [F, Q, 2] metres (runs' files; see the module docstring)
    depth_mean: Tensor | None = None


def contact_arrays(
    contact: Tensor,
    pairs: Sequence[tuple[int, int]],
    frame_ids: Sequence[int],
    contact_mm: float,
    part_names: Sequence[str] | None = None,
    vertex_part: Tensor | None = None,
    depth_max: Any = None,
    depth_mean: Any = None,
) -> dict[str, np.ndarray]:
    """The arrays of ``contact.npz`` (module docstring) from dense ``contact [F, Q, 2, N]`` bool
    (and optionally the penetration depths ``[F, Q, 2]``)."""
    c = torch.as_tensor(contact).bool().cpu()
    if c.dim() != 4 or c.shape[2] != 2:
        raise ValueError(f"contact: expected [F, Q, 2, N] bool, got {tuple(c.shape)}")
    if len(pairs) != c.shape[1] or len(frame_ids) != c.shape[0]:
        raise ValueError(f"contact {tuple(c.shape)}: {len(pairs)} pairs and {len(frame_ids)} frame ids given")
    out = {
        "contact_index": c.nonzero().to(torch.int32).numpy().reshape(-1, 4),
        "shape": np.asarray(c.shape, dtype=np.int64),
        "pairs": np.asarray(pairs, dtype=np.int64).reshape(-1, 2),
        "frame_ids": np.asarray(frame_ids, dtype=np.int64),
        "contact_mm": np.asarray(float(contact_mm)),
    }
    if part_names is not None and vertex_part is not None:
        out["part_names"] = np.asarray([str(n) for n in part_names])
        out["vertex_part"] = torch.as_tensor(vertex_part).cpu().numpy().astype(np.int16)
    for k, d in (("depth_max", depth_max), ("depth_mean", depth_mean)):
        if d is not None:
            a = np.asarray(torch.as_tensor(d).cpu(), dtype=np.float32)
            if a.shape != (*c.shape[:2], 2):
                raise ValueError(f"{k}: expected {(*c.shape[:2], 2)}, got {a.shape}")
            out[k] = a
    return out


def write_contact(path: str | Path, contact: Tensor, pairs: Sequence[tuple[int, int]], frame_ids: Sequence[int], contact_mm: float,
                  part_names: Sequence[str] | None = None, vertex_part: Tensor | None = None, depth_max: Any = None,
                  depth_mean: Any = None) -> Path:
    """Write ``contact.npz`` atomically (see :func:`contact_arrays`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_npz(path, **contact_arrays(contact, pairs, frame_ids, contact_mm, part_names, vertex_part, depth_max, depth_mean))
    return path


def read_contact(path: str | Path) -> ContactLabels:
    """Read ``contact.npz`` back into dense labels (bad content: :class:`InputError` naming the field)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: np.asarray(z[k]) for k in z.files}
    except Exception as e:  # noqa: BLE001 - corrupt or not an npz
        raise InputError(path, f"not a readable .npz file ({type(e).__name__}: {e})") from None
    for k in ("contact_index", "shape", "pairs", "frame_ids", "contact_mm"):
        if k not in d:
            raise InputError(path, "missing array", k)
    shape = tuple(int(s) for s in d["shape"].reshape(-1))
    if len(shape) != 4 or shape[2] != 2 or min(shape) < 0:
        raise InputError(path, f"expected [F, Q, 2, N], got {shape}", "shape")
    idx = d["contact_index"]
    if idx.ndim != 2 or idx.shape[1] != 4 or not np.issubdtype(idx.dtype, np.integer):
        raise InputError(path, f"expected integer rows [K, 4], got {idx.dtype} {idx.shape}", "contact_index")
    if idx.size and ((idx < 0).any() or (idx >= np.asarray(shape)).any()):
        raise InputError(path, f"indices outside the shape {shape}", "contact_index")
    pairs = d["pairs"].reshape(-1, 2)
    if pairs.shape[0] != shape[1]:
        raise InputError(path, f"{pairs.shape[0]} pairs for {shape[1]} pair rows", "pairs")
    fids = d["frame_ids"].reshape(-1)
    if fids.size != shape[0]:
        raise InputError(path, f"{fids.size} frame ids for {shape[0]} frames", "frame_ids")
    dense = torch.zeros(shape, dtype=torch.bool)
    if idx.size:
        t = torch.from_numpy(idx.astype(np.int64))
        dense[t[:, 0], t[:, 1], t[:, 2], t[:, 3]] = True
    names, vp = None, None
    if "part_names" in d and "vertex_part" in d:
        names = tuple(str(s) for s in d["part_names"].reshape(-1))
        vp = torch.from_numpy(d["vertex_part"].astype(np.int64).reshape(-1))
        if vp.numel() != shape[3] or (vp.numel() and (int(vp.min()) < 0 or int(vp.max()) >= len(names))):
            raise InputError(path, f"expected {shape[3]} part indices below {len(names)}", "vertex_part")
    depth: dict[str, Tensor] = {}
    for k in ("depth_max", "depth_mean"):
        if k in d:
            a = d[k]
            if a.shape != (*shape[:2], 2) or not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all() or (a < 0).any():
                raise InputError(path, f"expected finite depths >= 0 [{shape[0]}, {shape[1]}, 2], got {a.dtype} {a.shape}", k)
            depth[k] = torch.from_numpy(a.astype(np.float64))
    return ContactLabels(dense, [(int(a), int(b)) for a, b in pairs], [int(f) for f in fids], float(d["contact_mm"]), names, vp,
                         depth.get("depth_max"), depth.get("depth_mean"))


def contact_frame_dict(contact: Tensor, f: int, pairs: Sequence[tuple[int, int]], person_names: Sequence[str],
                       regions: Tensor | None = None, part_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The per-frame dict of frame index ``f`` for ``processed_data/contact/%05d.npy``.

    Args:
        contact: ``[F, Q, 2, N]`` bool; regions ``[F, Q, 2, R]`` bool with ``part_names [R]``.
    Returns:
        ``{"aria01-aria02": {"people": [a, b], "contact": bool [2, N],
        "regions": [[a's touching parts], [b's touching parts]]}, ...}`` (regions only when given).
    """
    out: dict[str, Any] = {}
    for q, (a, b) in enumerate(pairs):
        na, nb = str(person_names[a]), str(person_names[b])
        d: dict[str, Any] = {"people": [na, nb], "contact": np.ascontiguousarray(torch.as_tensor(contact[f, q]).cpu().numpy().astype(bool))}
        if regions is not None and part_names is not None:
            r = torch.as_tensor(regions[f, q]).cpu().numpy()
            d["regions"] = [[str(n) for n, h in zip(part_names, r[s]) if h] for s in range(2)]
        out[f"{na}-{nb}"] = d
    return out


SEQUENCE_KEYS: tuple[str, ...] = ("contact_index", "contact_shape", "contact_pairs", "contact_mm", "contact_regions", "part_names", "vertex_part",
                                  "contact_depth_max", "contact_depth_mean")
"""The contact arrays of an export's ``sequence.npz`` (:func:`sequence_contact_arrays`)."""


def sequence_contact_arrays(exp: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays an export adds to ``sequence.npz`` from :func:`h4d_fast.ops.contact.export_contact`'s
    dict: ``contact_index`` int32 ``[K, 4]`` (frame index, pair, side, vertex of every touching
    vertex, in that order), ``contact_shape`` ``[4]`` (``F, Q, 2, N``), ``contact_pairs`` ``[Q, 2]``,
    ``contact_mm``, ``contact_depth_max`` / ``contact_depth_mean`` ``[F, Q, 2]`` (metres) and
    ``contact_penetration_cm3`` ``[F, Q]`` when the dict has them, and with a segmentation ``contact_regions`` bool ``[F, Q, 2, R]``,
    ``part_names [R]``, ``vertex_part [N]``."""
    c = np.asarray(exp["contact"], dtype=bool)
    out = {
        "contact_index": np.argwhere(c).astype(np.int32).reshape(-1, 4),
        "contact_shape": np.asarray(c.shape, dtype=np.int64),
        "contact_pairs": np.asarray(exp["contact_pairs"], dtype=np.int64).reshape(-1, 2),
        "contact_mm": np.asarray(float(exp["contact_mm"])),
    }
    for k in ("contact_regions", "part_names", "vertex_part"):
        if k in exp:
            out[k] = np.asarray(exp[k])
    for k in ("depth_max", "depth_mean", "penetration_cm3"):
        if k in exp:
            out[f"contact_{k}"] = np.asarray(exp[k], dtype=np.float32)
    return out


def dense_contact(arrays: dict[str, np.ndarray], frames: Any = None) -> np.ndarray:
    """``[F, Q, 2, N]`` bool (or the rows ``frames``, an index array) from
    :func:`sequence_contact_arrays`' sparse index."""
    shape = tuple(int(x) for x in np.asarray(arrays["contact_shape"]).reshape(-1))
    idx = np.asarray(arrays["contact_index"]).reshape(-1, 4).astype(np.int64)
    if frames is None:
        out = np.zeros(shape, dtype=bool)
        out[tuple(idx.T)] = True
        return out
    frames = np.asarray(frames, dtype=np.int64).reshape(-1)
    out = np.zeros((frames.size, *shape[1:]), dtype=bool)
    for i, f in enumerate(frames.tolist()):  # the index is sorted by frame (argwhere's row-major order)
        lo, hi = np.searchsorted(idx[:, 0], [f, f + 1])
        r = idx[lo:hi]
        out[i, r[:, 1], r[:, 2], r[:, 3]] = True
    return out


def contact_frame_from_arrays(arrays: dict[str, np.ndarray], f: int, person_names: Sequence[str],
                              present: np.ndarray | None = None) -> dict[str, Any]:
    """The ``contact/%05d.npy`` dict of frame index ``f`` (:func:`contact_frame_dict`'s layout) from
    a ``sequence.npz``'s contact arrays; a pair with a person absent from the frame (``present [P]``)
    has no entry."""
    dense = dense_contact(arrays, [f])  # [1, Q, 2, N]
    pairs = [(int(a), int(b)) for a, b in np.asarray(arrays["contact_pairs"]).reshape(-1, 2)]
    regions = arrays.get("contact_regions")
    names = arrays.get("part_names")
    d = contact_frame_dict(torch.from_numpy(dense), 0, pairs, person_names,
                           None if regions is None else torch.from_numpy(np.array(regions[f : f + 1])),
                           None if names is None else [str(n) for n in np.asarray(names).reshape(-1)])
    if present is not None:
        keep = {f"{person_names[a]}-{person_names[b]}" for a, b in pairs if present[a] and present[b]}
        d = {k: v for k, v in d.items() if k in keep}
    return d


__all__ = ["CONTACT_FILE", "SEQUENCE_KEYS", "ContactLabels", "contact_arrays", "contact_frame_dict", "contact_frame_from_arrays",
           "dense_contact", "read_contact", "sequence_contact_arrays", "write_contact"]
