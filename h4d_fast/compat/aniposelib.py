"""aniposelib drop-in: ``CameraGroup.triangulate`` / ``triangulate_ransac`` in batched torch.

One-line change (aniposelib installed or not)::

    from aniposelib.cameras import CameraGroup           # before
    from h4d_fast.compat.aniposelib import CameraGroup   # after: load / from_dicts / triangulate* run here

or keep aniposelib's objects and call the functions: ``triangulate(cgroup, points)``,
``triangulate_ransac(cgroup, points)``. Same arguments, same returns, on the GPU when there is one.

What aniposelib 0.8 computes, and how it is matched:

* ``triangulate(points [C, N, 2] (or [C, 2]), undistort=True)`` -> ``[N, 3]`` (``[3]``): pixels
  undistorted with ``cv2.undistortPoints`` (5 fixed-point iterations, reproduced exactly) or
  ``cv2.fisheye.undistortPoints``; the DLT rows ``x P_3 - P_1``, ``y P_3 - P_2`` with ``P`` the
  world-to-camera ``[R | t]``; the last right singular vector (here from ``A^T A``, see
  :func:`~h4d_fast.compat._geometry.homogeneous_dlt`); NaN with fewer than two views.
  ``undistort=False`` takes the points as normalized coordinates, as aniposelib does.
  ``fast=True`` (aniposelib: median of the pairwise ``cv2.triangulatePoints``) is answered
  with the same all-view DLT (documented difference).
* ``triangulate_ransac(points [C, N, 2], undistort=True, min_cams=2, progress=False)`` ->
  ``(p3ds [N, 3], picked [C, N, 1] bool, p2ds [C, N, 2], errors [N])``: for each point, the
  camera subsets of its non-NaN views in aniposelib's order (``itertools.product`` over
  "picked / not picked" per camera, all picked first), skipping subsets smaller than
  ``min_cams`` unless they hold every view; each subset is triangulated and scored by its mean
  reprojection error in pixels (distortion included); the first subset below ``threshold``
  (0.5 px, aniposelib's default) wins, else the subset of least error (the earliest on ties),
  if below 200 px. ``method="exact"`` (default) evaluates exactly these subsets, batched over
  points and subsets (2^C per point in the worst case, as aniposelib); ``method="h4d"`` runs
  :func:`h4d_fast.ops.triangulate_ransac` instead (view pairs as hypotheses, inliers within
  ``threshold`` px converted per camera to normalized units, robust refinement): different
  semantics, so different points where views disagree, and orders of magnitude less work.
  A point without any view makes aniposelib raise (``ValueError`` from stacking no cameras);
  here it comes back NaN, not picked, error 0.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..camera import CameraSet
from ._geometry import cameraset_opencv, dlt_rows_normal, homogeneous_dlt, undistort_opencv

ANIPOSE_THRESHOLD_PX = 0.5  # triangulate_possible's default
ANIPOSE_MAX_ERROR_PX = 200.0  # its initial best error
_BLOCK = 1 << 22  # point x subset x camera elements per block of the exact search


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` or CUDA when present, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _is_fisheye(cam: Any) -> bool:
    if type(cam).__name__ == "FisheyeCamera":
        return True
    try:
        return bool(cam.get_dict().get("fisheye", False))
    except Exception:  # noqa: BLE001 - duck-typed camera without get_dict
        return bool(getattr(cam, "fisheye", False))


def cameras_of(cgroup: Any, device: str | torch.device | None = None) -> CameraSet:
    """A float64 :class:`CameraSet` of an aniposelib ``CameraGroup`` (or any object with
    ``.cameras``, each with ``get_camera_matrix / get_distortions / get_rotation / get_translation``)."""
    cams = list(cgroup.cameras)
    if not cams:
        raise ValueError("CameraGroup without cameras")
    K = np.stack([np.asarray(c.get_camera_matrix(), dtype=np.float64) for c in cams])
    dist = [np.asarray(c.get_distortions(), dtype=np.float64).reshape(-1) for c in cams]
    rv = np.stack([np.asarray(c.get_rotation(), dtype=np.float64).reshape(3) for c in cams])
    tv = np.stack([np.asarray(c.get_translation(), dtype=np.float64).reshape(3) for c in cams])
    size = [c.get_size() if hasattr(c, "get_size") else None for c in cams]
    size_arr = None if any(s is None for s in size) else np.asarray(size, dtype=np.float64).reshape(-1, 2)
    names = [str(c.get_name()) if hasattr(c, "get_name") and c.get_name() is not None else f"cam{i}" for i, c in enumerate(cams)]
    return cameraset_opencv(K, dist, rv, tv, [_is_fisheye(c) for c in cams], size_arr, names, default_device(device))


def _points(points: Any, C: int, device: torch.device) -> tuple[Tensor, bool]:
    p = torch.as_tensor(np.asarray(points, dtype=np.float64), device=device)
    if p.shape[0] != C:
        raise ValueError(f"Invalid points shape, first dim should be equal to number of cameras ({C}), but shape is {tuple(p.shape)}")
    one = p.dim() == 2
    if one:
        p = p.reshape(C, 1, 2)
    if p.dim() != 3 or p.shape[-1] != 2:
        raise ValueError(f"expected points [C, N, 2] or [C, 2], got {tuple(p.shape)}")
    return p, one


def _normalized(p: Tensor, cams: CameraSet, undistort: bool) -> Tensor:
    """``[C, N, 2]`` pixels (or normalized when ``undistort`` is False) -> ``[N, C, 2]`` normalized."""
    x = p.transpose(0, 1)  # [N, C, 2]
    return undistort_opencv(x, cams) if undistort else x


def triangulate(cgroup: Any, points: Any, undistort: bool = True, progress: bool = False, fast: bool = False,
                disable_64bit: bool = False, device: str | torch.device | None = None) -> np.ndarray:
    """aniposelib's ``CameraGroup.triangulate`` (module docstring): ``[C, N, 2]`` -> ``[N, 3]``."""
    cams = cgroup if isinstance(cgroup, CameraSet) else cameras_of(cgroup, device)
    dev = cams.device
    p, one = _points(points, len(cams), dev)
    X = triangulate_normalized(_normalized(p, cams, undistort), cams.extrinsics)
    out = X.cpu().numpy()
    return out[0] if one else out


def triangulate_normalized(xn: Tensor, P: Tensor) -> Tensor:
    """All-view homogeneous DLT of ``xn [N, C, 2]`` (NaN = missing view) with ``P [C, 3, 4]``
    -> ``[N, 3]`` (NaN with fewer than two views)."""
    good = torch.isfinite(xn).all(-1)  # [N, C]
    M = dlt_rows_normal(torch.where(good[..., None], xn, torch.zeros_like(xn)), P, good.to(xn.dtype)).sum(-3)  # [N, 4, 4]
    X = homogeneous_dlt(M)
    return torch.where((good.sum(-1) >= 2)[:, None], X, torch.full_like(X, float("nan")))


def _reproj_mean(X: Tensor, uv: Tensor, include: Tensor, cams: CameraSet) -> Tensor:
    """Mean pixel reprojection error over the included views (NaN with fewer than 2 finite ones).

    X ``[..., 3]``; uv ``[..., C, 2]`` observed pixels; include ``[..., C]`` bool.
    """
    proj, _ = cams.project(X)  # [..., C, 2]
    e = (uv - proj).norm(dim=-1)
    good = include & torch.isfinite(e)
    n = good.sum(-1)
    m = torch.where(good, e, torch.zeros_like(e)).sum(-1) / n.clamp_min(1).to(e.dtype)
    return torch.where(n >= 2, m, torch.full_like(m, float("nan")))


def triangulate_ransac(cgroup: Any, points: Any, undistort: bool = True, min_cams: int = 2, progress: bool = False,
                       threshold: float = ANIPOSE_THRESHOLD_PX, method: str = "exact",
                       device: str | torch.device | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """aniposelib's ``CameraGroup.triangulate_ransac`` (module docstring).

    Returns:
        ``p3ds [N, 3]``, ``picked [C, N, 1]`` bool, ``p2ds [C, N, 2]`` (the chosen views'
        points, NaN elsewhere), ``errors [N]`` (mean pixel error of the chosen subset; 0 where none).
    """
    cams = cgroup if isinstance(cgroup, CameraSet) else cameras_of(cgroup, device)
    dev = cams.device
    p, _ = _points(points, len(cams), dev)
    if p.dim() != 3:
        raise ValueError(f"expected points [C, N, 2], got {tuple(p.shape)}")
    if method == "exact":
        X, inc, err = ransac_exact(p, cams, undistort, min_cams, threshold)
    elif method == "h4d":
        X, inc, err = _ransac_h4d(p, cams, undistort, min_cams, threshold)
    else:
        raise ValueError(f"method must be 'exact' or 'h4d', got {method!r}")
    C, N = p.shape[:2]
    picked = inc.transpose(0, 1)  # [C, N]
    p2ds = torch.where(picked[..., None], p, torch.full_like(p, float("nan")))
    return (X.cpu().numpy(), picked[..., None].cpu().numpy(), p2ds.cpu().numpy(), err.cpu().numpy())


def _subset_masks(i: Tensor, rank: Tensor, avail: Tensor, n_avail: Tensor) -> Tensor:
    """``[n, S, C]`` bool: the cameras of subset number ``i [S]`` for each point (module docstring:
    bit ``n_avail - 1 - rank`` of ``i`` clear = picked)."""
    shift = (n_avail[:, None] - 1 - rank).clamp_min(0)  # [n, C]
    bit = (i[None, :, None] >> shift[:, None, :]) & 1  # [n, S, C]
    return avail[:, None, :] & (bit == 0)


def ransac_exact(p: Tensor, cams: CameraSet, undistort: bool = True, min_cams: int = 2,
                 threshold: float = ANIPOSE_THRESHOLD_PX) -> tuple[Tensor, Tensor, Tensor]:
    """aniposelib's subset search, batched (module docstring).

    Args:
        p: ``[C, N, 2]`` pixels (NaN = missing), float64.
    Returns:
        ``X [N, 3]`` (NaN where no subset qualifies), chosen cameras ``[N, C]`` bool, errors ``[N]``.
    """
    C, N = p.shape[:2]
    dev = p.device
    uv = p.transpose(0, 1)  # [N, C, 2]
    xn = _normalized(p, cams, undistort)  # [N, C, 2]
    avail = ~torch.isnan(uv[..., 0])
    rank = avail.long().cumsum(-1) - 1  # [N, C] rank among the point's cameras
    n_avail = avail.sum(-1)  # [N]
    Mc = dlt_rows_normal(torch.where(avail[..., None], xn, torch.zeros_like(xn)), cams.extrinsics.to(xn.dtype)).reshape(N, C, 16)
    best_err = torch.full((N,), ANIPOSE_MAX_ERROR_PX, dtype=p.dtype, device=dev)
    best_i = torch.full((N,), -1, dtype=torch.long, device=dev)
    done = torch.zeros(N, dtype=torch.bool, device=dev)
    total = (1 << n_avail).to(torch.long)  # subsets per point
    i0 = 0
    while True:
        act = (~done & (total > i0)).nonzero()[:, 0]
        if act.numel() == 0:
            break
        S = int(min(int(total[act].max()) - i0, max(1, _BLOCK // (act.numel() * C))))
        i = torch.arange(i0, i0 + S, device=dev)
        inc = _subset_masks(i, rank[act], avail[act], n_avail[act])  # [n, S, C]
        size = inc.sum(-1)
        ok = (i[None] < total[act, None]) & ((size >= min_cams) | (size == n_avail[act, None]))
        M = torch.bmm(inc.to(p.dtype), Mc[act]).reshape(act.numel(), S, 4, 4)
        X = homogeneous_dlt(M)  # [n, S, 3]
        err = _reproj_mean(X, uv[act, None], inc, cams)  # [n, S]
        err = torch.where(ok, err, torch.full_like(err, float("nan")))
        below = err < threshold
        any_below = below.any(-1)
        first_below = torch.argmax(below.to(torch.int8), -1)
        e_min = torch.where(torch.isnan(err), torch.full_like(err, float("inf")), err)
        m_val, m_idx = e_min.min(-1)  # the first minimum
        better = m_val < best_err[act]
        new_i = torch.where(any_below, first_below, m_idx) + i0
        new_e = torch.where(any_below, err.gather(1, first_below[:, None])[:, 0], m_val)
        upd = any_below | better
        best_i[act] = torch.where(upd, new_i, best_i[act])
        best_err[act] = torch.where(upd, new_e, best_err[act])
        done[act] = done[act] | any_below
        i0 += S
    found = best_i >= 0
    bi = best_i.clamp_min(0)
    shift = (n_avail[:, None] - 1 - rank).clamp_min(0)  # the chosen subset of each point
    inc = avail & (((bi[:, None] >> shift) & 1) == 0) & found[:, None]
    M = torch.einsum("nc,nck->nk", inc.to(p.dtype), Mc).reshape(N, 4, 4)
    X = torch.where(found[:, None], homogeneous_dlt(M), torch.full((N, 3), float("nan"), dtype=p.dtype, device=dev))
    err = torch.where(found, best_err, torch.zeros_like(best_err))
    return X, inc, err


def _ransac_h4d(p: Tensor, cams: CameraSet, undistort: bool, min_cams: int, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """h4d_fast's RANSAC op with aniposelib's pixel threshold (see the module docstring)."""
    from ..ops import triangulate_ransac as op

    uv = p.transpose(0, 1)  # [N, C, 2]
    xn = _normalized(p, cams, undistort)
    conf = torch.isfinite(xn).all(-1).to(p.dtype)
    f = cams.intrinsics[:, :2].mean(-1).to(p.dtype)  # [C] px per normalized unit
    # the op's inlier test is 0.5 |dx| < err_thr in normalized units: one threshold for all
    # cameras, so the mean focal length converts aniposelib's pixels
    err_thr = 0.5 * threshold / float(f.mean())
    X, inl, n = op(xn, cams.extrinsics.to(p.dtype), conf, conf_thr=0.5, err_thr=err_thr, min_views=max(2, min_cams))
    err = _reproj_mean(X, uv, inl, cams)
    ok = n > 0
    return X, inl & ok[:, None], torch.where(ok, torch.nan_to_num(err, nan=0.0), torch.zeros_like(err))


def _camera_group_class() -> type:
    """aniposelib's ``CameraGroup`` subclassed (when installed), else a minimal stand-in."""
    try:
        from aniposelib.cameras import CameraGroup as _Base  # noqa: F401
    except Exception:  # noqa: BLE001 - aniposelib (or one of its imports) missing
        _Base = None

    methods = {
        "triangulate": lambda self, points, undistort=True, progress=False, fast=False, disable_64bit=False:
            triangulate(self, points, undistort, progress, fast, disable_64bit, device=getattr(self, "device", None)),
        "triangulate_ransac": lambda self, points, undistort=True, min_cams=2, progress=False:
            triangulate_ransac(self, points, undistort, min_cams, progress, device=getattr(self, "device", None)),
    }
    if _Base is not None:
        cls = type("CameraGroup", (_Base,), dict(methods, __doc__="aniposelib's CameraGroup; triangulate / triangulate_ransac run in h4d_fast."))

        @staticmethod
        def load(fname: str) -> Any:
            g = _Base.load(fname)
            g.__class__ = cls
            return g

        @staticmethod
        def from_dicts(arr: Sequence[dict]) -> Any:
            g = _Base.from_dicts(arr)
            g.__class__ = cls
            return g

        cls.load, cls.from_dicts = load, from_dicts
        return cls
    return type("CameraGroup", (_StandIn,), methods)


class _Camera:
    """The fields of an aniposelib camera that triangulation reads."""

    def __init__(self, matrix: Any = None, dist: Any = None, size: Any = None, rvec: Any = None, tvec: Any = None,
                 name: Any = None, fisheye: bool = False, **_: Any):
        self.matrix = np.eye(3) if matrix is None else np.asarray(matrix, dtype=np.float64)
        self.dist = np.zeros(5) if dist is None else np.asarray(dist, dtype=np.float64).reshape(-1)
        self.size, self.rvec = size, np.zeros(3) if rvec is None else np.asarray(rvec, dtype=np.float64).reshape(3)
        self.tvec = np.zeros(3) if tvec is None else np.asarray(tvec, dtype=np.float64).reshape(3)
        self.name, self.fisheye = name, bool(fisheye)

    def get_camera_matrix(self) -> np.ndarray:
        return self.matrix

    def get_distortions(self) -> np.ndarray:
        return self.dist

    def get_rotation(self) -> np.ndarray:
        return self.rvec

    def get_translation(self) -> np.ndarray:
        return self.tvec

    def get_size(self) -> Any:
        return self.size

    def get_name(self) -> Any:
        return self.name

    def get_dict(self) -> dict:
        return {"name": self.name, "size": self.size, "matrix": self.matrix.tolist(), "distortions": self.dist.tolist(),
                "rotation": self.rvec.tolist(), "translation": self.tvec.tolist(), "fisheye": self.fisheye}


class _StandIn:
    """aniposelib's ``CameraGroup`` surface for triangulation when aniposelib is not installed."""

    def __init__(self, cameras: Sequence[Any], metadata: dict | None = None):
        self.cameras = list(cameras)
        self.metadata = dict(metadata or {})

    @classmethod
    def from_dicts(cls, arr: Sequence[dict]) -> Any:
        cams = [_Camera(matrix=d["matrix"], dist=d["distortions"], size=d.get("size"), rvec=d["rotation"], tvec=d["translation"],
                        name=d.get("name"), fisheye=d.get("fisheye", False)) for d in arr]
        return cls(cams)

    @classmethod
    def load(cls, fname: str) -> Any:
        """An aniposelib calibration TOML (``[cam_0]`` tables; ``[metadata]`` kept)."""
        import sys

        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        with open(fname, "rb") as fh:
            master = tomllib.load(fh)
        keys = sorted(k for k in master if k != "metadata" and isinstance(master[k], dict))
        g = cls.from_dicts([master[k] for k in keys])
        g.metadata = master.get("metadata", {})
        return g

    def get_names(self) -> list:
        return [c.get_name() for c in self.cameras]

    def project(self, points: Any) -> np.ndarray:
        """``[N, 3]`` -> ``[C, N, 2]`` pixels."""
        cams = cameras_of(self)
        X = torch.as_tensor(np.asarray(points, dtype=np.float64).reshape(-1, 3))
        uv, _ = cams.project(X)
        return uv.transpose(0, 1).numpy()


CameraGroup = _camera_group_class()
"""Drop-in ``CameraGroup`` (module docstring)."""

__all__ = ["CameraGroup", "cameras_of", "ransac_exact", "triangulate", "triangulate_normalized", "triangulate_ransac"]
