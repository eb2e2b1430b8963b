"""COCO API drop-in: ``COCOeval.computeOks`` for every image and category in one batched call.

One-line change::

    from pycocotools.cocoeval import COCOeval     # before (or xtcocotools.cocoeval)
    from h4d_fast.compat.cocoeval import COCOeval  # after (XTCOCOeval for xtcocotools' variant)

The class is the original's ``COCOeval`` subclassed: ``evaluate`` / ``accumulate`` /
``summarize`` are the original's. For ``iouType`` ``keypoints`` (and xtcocotools'
``keypoints_crowd``, ``keypoints_wholebody`` / ``_foot`` / ``_face`` / ``_lefthand`` /
``_righthand``) the OKS matrices of all (image, category) cells are computed at once, in float64
torch on the GPU when there is one, right after the original's ``_prepare``; its ``computeOks``
then returns them. :func:`compute_oks` is the same computation as a function of one cell's
annotation lists.

What the original's ``computeOks(imgId, catId)`` returns, reproduced: detections sorted by
descending score (stable) and cut at ``maxDets[-1]``; ``[]`` when the cell has no ground truth or
no detection; else ``[D, G]`` with, per ground truth ``g`` (keypoints ``x, y, v``, ``k1`` = count
of ``v > 0``), ``e = (dx^2 + dy^2) / (2 sigma)^2 / (area + eps) / 2`` (``eps`` = ``np.spacing(1)``;
area = the annotation's ``area``, or ``0.53 w h`` of its box with xtcocotools' ``use_area=False``)
and ``OKS = mean exp(-e)`` over the keypoints with ``v > 0``; when ``k1 = 0``, ``dx, dy`` are the
detection's distances outside the ground-truth box grown by its size on every side, over all
keypoints. Crowd and zero-area ground truths go through the same formula (matching treats crowd).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

EPS = float(np.spacing(1))
_CELLS = 1 << 22  # D x G x K elements per batch
_PARTS = {
    "keypoints_wholebody": ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts"),
    "keypoints_foot": ("foot_kpts",),
    "keypoints_face": ("face_kpts",),
    "keypoints_lefthand": ("lefthand_kpts",),
    "keypoints_righthand": ("righthand_kpts",),
}


def _kpts(ann: dict, iou_type: str) -> list:
    parts = _PARTS.get(iou_type)
    if parts is None:
        return list(ann["keypoints"])
    out: list = []
    for k in parts:
        out += list(ann[k])
    return out


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _rows(anns: list, iou_type: str, width: int) -> np.ndarray:
    """``[n, width]`` keypoint rows of annotations (one pass, no per-cell work)."""
    if not anns:
        return np.zeros((0, width))
    if iou_type in _PARTS:
        return np.asarray([_kpts(a, iou_type) for a in anns], dtype=np.float64).reshape(len(anns), width)
    return np.asarray([a["keypoints"] for a in anns], dtype=np.float64).reshape(len(anns), width)


def oks_cells(cells: Sequence[tuple[list, list]], sigmas: np.ndarray, max_dets: int, iou_type: str = "keypoints",
              use_area: bool = True, score_key: str = "score", device: str | torch.device | None = None) -> list:
    """``computeOks`` of many cells: each cell ``(dts, gts)`` -> ``[]`` or ``[D, G]`` float64 array.

    All annotations are read in one pass into arrays; the per-cell ordering (stable, by
    descending score) and the ``maxDets`` cut are vectorised; cells of similar size are batched in
    float64 torch (module docstring for the formula).
    """
    dev = _device(device)
    sig = torch.as_tensor(np.asarray(sigmas, dtype=np.float64), device=dev)
    K = sig.numel()
    var = (sig * 2) ** 2
    n_cells = len(cells)
    results: list = [[] for _ in range(n_cells)]
    nd = np.fromiter((len(d) for d, _ in cells), dtype=np.int64, count=n_cells)
    ng = np.fromiter((len(g) for _, g in cells), dtype=np.int64, count=n_cells)
    live = np.nonzero((nd > 0) & (ng > 0))[0]
    if live.size == 0:
        return results
    all_d = [a for ci in live for a in cells[ci][0]]
    all_g = [a for ci in live for a in cells[ci][1]]
    d_rows = _rows(all_d, iou_type, 3 * K)
    g_rows = _rows(all_g, iou_type, 3 * K)
    score = np.fromiter((a[score_key] for a in all_d), dtype=np.float64, count=len(all_d))
    bbox = np.asarray([a["bbox"][:4] for a in all_g], dtype=np.float64).reshape(-1, 4)
    area = (np.fromiter((a["area"] for a in all_g), dtype=np.float64, count=len(all_g)) if use_area
            else bbox[:, 3] * bbox[:, 2] * 0.53)
    # per detection: its cell (0..L-1) and its rank there after a stable sort by descending score
    L = live.size
    d_cell = np.repeat(np.arange(L), nd[live])
    g_cell = np.repeat(np.arange(L), ng[live])
    order = np.lexsort((np.arange(len(all_d)), -score, d_cell))  # by cell, then score desc, then position
    d_start = np.concatenate([[0], np.cumsum(nd[live])[:-1]])
    rank = np.empty(len(all_d), dtype=np.int64)
    rank[order] = np.arange(len(all_d)) - d_start[d_cell[order]]
    g_start = np.concatenate([[0], np.cumsum(ng[live])[:-1]])
    g_rank = np.arange(len(all_g)) - g_start[g_cell]
    D = np.minimum(nd[live], max_dets)
    G = ng[live]
    keep = rank < max_dets
    # batches of cells of similar size (by D * G), each padded to its largest cell
    by_size = np.argsort(D * G, kind="stable")
    i = 0
    while i < L:
        j = i
        Dm = Gm = 0
        while j < L:
            c = by_size[j]
            Dm2, Gm2 = max(Dm, int(D[c])), max(Gm, int(G[c]))
            if j > i and (j - i + 1) * Dm2 * Gm2 * K > _CELLS:
                break
            Dm, Gm = Dm2, Gm2
            j += 1
        batch = by_size[i:j]
        slot = np.full(L, -1, dtype=np.int64)
        slot[batch] = np.arange(batch.size)
        B = batch.size
        d = np.zeros((B, Dm, 3 * K))
        g = np.zeros((B, Gm, 3 * K))
        ar = np.ones((B, Gm))
        bx = np.zeros((B, Gm, 4))
        sd = slot[d_cell]
        md = keep & (sd >= 0)
        d[sd[md], rank[md]] = d_rows[md]
        sg = slot[g_cell]
        mg = sg >= 0
        g[sg[mg], g_rank[mg]] = g_rows[mg]
        ar[sg[mg], g_rank[mg]] = area[mg]
        bx[sg[mg], g_rank[mg]] = bbox[mg]
        o = _oks_dense(torch.as_tensor(d, device=dev), torch.as_tensor(g, device=dev), torch.as_tensor(ar, device=dev),
                       torch.as_tensor(bx, device=dev), var).cpu().numpy()
        for b, c in enumerate(batch.tolist()):
            results[int(live[c])] = np.ascontiguousarray(o[b, : D[c], : G[c]])
        i = j
    return results


def _oks_dense(d: Tensor, g: Tensor, area: Tensor, box: Tensor, var: Tensor) -> Tensor:
    """``[B, D, G]`` OKS of padded detections ``d [B, D, 3K]`` and ground truths ``g [B, G, 3K]``."""
    xd, yd = d[..., 0::3][:, :, None], d[..., 1::3][:, :, None]  # [B, D, 1, K]
    xg, yg, vg = g[..., 0::3][:, None], g[..., 1::3][:, None], g[..., 2::3][:, None]  # [B, 1, G, K]
    vis = vg > 0
    k1 = vis.sum(-1)  # [B, 1, G]
    x0 = (box[..., 0] - box[..., 2])[:, None, :, None]
    x1 = (box[..., 0] + box[..., 2] * 2)[:, None, :, None]
    y0 = (box[..., 1] - box[..., 3])[:, None, :, None]
    y1 = (box[..., 1] + box[..., 3] * 2)[:, None, :, None]
    z = torch.zeros((), dtype=d.dtype, device=d.device)
    has = (k1 > 0)[..., None]
    dx = torch.where(has, xd - xg, torch.maximum(z, x0 - xd) + torch.maximum(z, xd - x1))
    dy = torch.where(has, yd - yg, torch.maximum(z, y0 - yd) + torch.maximum(z, yd - y1))
    e = (dx ** 2 + dy ** 2) / var / (area[:, None, :, None] + EPS) / 2
    w = torch.where(has, vis, torch.ones_like(vis)).to(d.dtype)  # keypoints that count
    return (torch.exp(-e) * w).sum(-1) / w.sum(-1)


def compute_oks(dts: list, gts: list, sigmas: np.ndarray, max_dets: int = 20, iou_type: str = "keypoints",
                use_area: bool = True, score_key: str = "score", device: str | torch.device | None = None) -> Any:
    """``computeOks`` of one cell: ``[]`` or ``[D, G]`` (module docstring)."""
    return oks_cells([(dts, gts)], sigmas, max_dets, iou_type, use_area, score_key, device)[0]


def _make(base: type, name: str) -> type:
    def _prepare(self) -> None:
        base._prepare(self)
        p = self.params
        self._h4d_oks = None
        if "keypoints" not in str(p.iouType):
            return
        cat_ids = p.catIds if p.useCats else [-1]
        keys = [(i, c) for i in p.imgIds for c in cat_ids]
        sig = getattr(self, "sigmas", None)
        if sig is None:
            sig = p.kpt_oks_sigmas
        vals = oks_cells([(self._dts[k], self._gts[k]) for k in keys], sig, p.maxDets[-1], str(p.iouType),
                         bool(getattr(self, "use_area", True)), getattr(self, "score_key", "score"), getattr(self, "device", None))
        self._h4d_oks = dict(zip(keys, vals))

    def computeOks(self, imgId: Any, catId: Any) -> Any:  # noqa: N802 - the original's name
        cache = getattr(self, "_h4d_oks", None)
        if cache is not None and (imgId, catId) in cache:
            return cache[imgId, catId]
        p = self.params
        sig = getattr(self, "sigmas", None)
        if sig is None:
            sig = p.kpt_oks_sigmas
        return compute_oks(self._dts[imgId, catId], self._gts[imgId, catId], sig, p.maxDets[-1], str(p.iouType),
                           bool(getattr(self, "use_area", True)), getattr(self, "score_key", "score"), getattr(self, "device", None))

    doc = f"{base.__module__}.COCOeval with computeOks batched in h4d_fast (set ``.device`` to choose where)."
    return type(name, (base,), {"_prepare": _prepare, "computeOks": computeOks, "__doc__": doc, "device": None})


def _base(module: str) -> type | None:
    try:
        return __import__(module, fromlist=["COCOeval"]).COCOeval
    except Exception:  # noqa: BLE001 - package missing or broken
        return None


_PY = _base("pycocotools.cocoeval")
_XT = _base("xtcocotools.cocoeval")
COCOeval = _make(_PY, "COCOeval") if _PY is not None else (_make(_XT, "COCOeval") if _XT is not None else None)
"""pycocotools' ``COCOeval`` (else xtcocotools') with batched ``computeOks``; None when neither is installed."""
XTCOCOeval = _make(_XT, "XTCOCOeval") if _XT is not None else None
"""xtcocotools' ``COCOeval`` with batched ``computeOks``; None when xtcocotools is not installed."""

__all__ = ["COCOeval", "XTCOCOeval", "compute_oks", "oks_cells"]
