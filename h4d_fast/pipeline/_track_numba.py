"""The tracker's steady frames on the CPU as one compiled (numba) loop.

The torch reference is the frame-by-frame step of :class:`h4d_fast.pipeline.triangulate._Tracker`
(``identity.speculate = 1``); this loop computes the same thing for a run of frames in which no
track can be born -- per frame: the ``previous`` motion model over the window, the projection of
each prediction into every view (pinhole / OpenCV / fisheye lenses, as
:meth:`~h4d_fast.camera.CameraSet.project`), OKS against every detection (as
:func:`~h4d_fast.ops._oks_torch.oks_torch`), prompted detections, the exact assignment per view
(:func:`~h4d_fast.ops._assign_numba.assign_one`), the gate, RANSAC per keypoint (the numba
kernel's :func:`~h4d_fast.ops._triangulate_numba._ransac_point`) and the window update. It stops
before the first frame where a birth is possible (that frame goes through the torch step).

Arithmetic is float64 (the torch step runs in the detections' dtype, float32 by default); poses
are rounded to that dtype when stored, as the torch step stores them. A decision that sits exactly
on a threshold can therefore differ in rare frames (tests: the same tracks and poses within
float32 noise on the synthetic captures).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..ops._assign_numba import assign_one
from ..ops._oks_numba import _box_area, _oks_pair
from ..ops._triangulate_numba import _ransac_point

FISHEYE = 2  # h4d_fast.camera.MODEL_ID["fisheye"]


@numba.njit(cache=True, error_model="numpy")
def _project(X, R, t, intr, dist, model, v):
    """World point ``X [3]`` -> pixel ``(u, v)`` and depth in camera ``v``."""
    x = R[v, 0, 0] * X[0] + R[v, 0, 1] * X[1] + R[v, 0, 2] * X[2] + t[v, 0]
    y = R[v, 1, 0] * X[0] + R[v, 1, 1] * X[1] + R[v, 1, 2] * X[2] + t[v, 1]
    z = R[v, 2, 0] * X[0] + R[v, 2, 1] * X[1] + R[v, 2, 2] * X[2] + t[v, 2]
    zs = 1e-12 if abs(z) < 1e-12 else z
    xn = x / zs
    yn = y / zs
    d = dist[v]
    if model[v] == FISHEYE:
        r = math.sqrt(xn * xn + yn * yn)
        th = math.atan(r)
        th2 = th * th
        thd = th * (1 + th2 * (d[0] + th2 * (d[1] + th2 * (d[2] + th2 * d[3]))))
        sc = thd / max(r, 1e-9) if r > 1e-9 else 1.0
        xd = xn * sc
        yd = yn * sc
    else:
        r2 = xn * xn + yn * yn
        num = 1 + r2 * (d[0] + r2 * (d[1] + r2 * d[4]))
        den = 1 + r2 * (d[5] + r2 * (d[6] + r2 * d[7]))
        rad = num / den
        xd = xn * rad + 2 * d[2] * xn * yn + d[3] * (r2 + 2 * xn * xn)
        yd = yn * rad + d[2] * (r2 + 2 * yn * yn) + 2 * d[3] * xn * yn
    return xd * intr[v, 0] + intr[v, 2], yd * intr[v, 1] + intr[v, 3], z


@numba.njit(cache=True, error_model="numpy")
def steady_frames(f0, f1, kpts, valid, xy, hint, R, t, intr, dist, model, wh, P, var, slot_person,
                  hx, hok, hseen, min_oks, hint_bonus, gate_frac, conf_thr, err_thr, min_views, refine_steps, delta,
                  min_kpts, birth_views, cap, store_f32, X_out, ok_out, n_out, a_out, seen_out):
    """Frames ``f0 .. f1-1`` until the first where a birth is possible; returns that frame (or ``f1``).

    Inputs: ``kpts [F, V, D, J, 3]``, ``valid [F, V, D]``, ``xy [F, V, D, J, 2]`` (normalized, NaN =
    missing), ``hint [F, V, D]`` (-1 = none), cameras ``R [V,3,3] t [V,3] intr [V,4] dist [V,8]
    model [V] wh [V,2] P [V,3,4]``, ``var [J]`` (OKS ``(2 sigma)^2``), ``slot_person [S]``.
    State (updated in place): the window ``hx [W,S,J,3]``, ``hok [W,S,J]``, ``hseen [W,S]``.
    Outputs (rows ``f0..``): ``X_out [F,S,J,3]`` (zeros where invalid), ``ok_out [F,S,J]``,
    ``n_out [F,S,J]``, ``a_out [F,V,S]``, ``seen_out [F,S]``.
    """
    V, D, J = kpts.shape[1], kpts.shape[2], kpts.shape[3]
    W, S = hx.shape[0], hx.shape[1]
    pred = np.zeros((S, J, 3))
    pok = np.zeros((S, J), np.bool_)
    alive = np.zeros(S, np.bool_)
    uv = np.zeros((V, S, J, 2))
    okv = np.zeros((V, S, J), np.bool_)
    p3 = np.zeros((J, 3))
    score = np.zeros((S, D))
    a = np.empty((V, S), np.int64)
    keep = np.ones((V, S, J), np.bool_)
    xyp = np.zeros((V, 2))
    cf = np.zeros(V)
    Xp = np.empty(3)
    inl = np.zeros(V, np.bool_)
    npt = np.zeros(1, np.int64)
    Xf = np.zeros((S, J, 3))
    okf = np.zeros((S, J), np.bool_)
    nf = np.zeros((S, J), np.int64)
    seenf = np.zeros(S, np.bool_)
    for f in range(f0, f1):
        # --- prediction: the last valid sample in the window, for tracks seen in the window
        n_alive = 0
        for s in range(S):
            alive[s] = False
            for w in range(W):
                if hseen[w, s]:
                    alive[s] = True
            if alive[s]:
                n_alive += 1
            for j in range(J):
                pok[s, j] = False
                for w in range(W - 1, -1, -1):
                    if hok[w, s, j]:
                        pok[s, j] = alive[s]
                        pred[s, j, 0] = hx[w, s, j, 0]
                        pred[s, j, 1] = hx[w, s, j, 1]
                        pred[s, j, 2] = hx[w, s, j, 2]
                        break
        # --- projection, OKS, prompted detections, assignment, gate
        for v in range(V):
            for s in range(S):
                for j in range(J):
                    u, vv, z = _project(pred[s, j], R, t, intr, dist, model, v)
                    uv[v, s, j, 0] = u
                    uv[v, s, j, 1] = vv
                    okv[v, s, j] = pok[s, j] and z > 0 and u >= 0 and vv >= 0 and u < wh[v, 0] and vv < wh[v, 1]
            for s in range(S):
                for j in range(J):
                    p3[j, 0] = uv[v, s, j, 0]
                    p3[j, 1] = uv[v, s, j, 1]
                    p3[j, 2] = 1.0 if okv[v, s, j] else 0.0
                area_p = _box_area(p3, 0.2)
                live = False
                for j in range(J):
                    if okv[v, s, j]:
                        live = True
                for d in range(D):
                    sc = 0.0
                    if valid[f, v, d]:
                        sc = _oks_pair(p3, kpts[f, v, d], 0.5 * (area_p + _box_area(kpts[f, v, d], 0.2)), var, 0.2)
                    sc = sc if (sc > min_oks and sc > 0.0) else 0.0
                    if sc > 0.0 and live and hint[f, v, d] >= 0 and hint[f, v, d] == slot_person[s]:
                        sc += hint_bonus  # as identity.assign_by_prediction
                    score[s, d] = sc
            assign_one(score, a[v])
            # gate relative to the diagonal of the predicted pose's box in this view
            for s in range(S):
                for j in range(J):
                    keep[v, s, j] = True
                if gate_frac <= 0 or not alive[s]:
                    continue
                cnt = 0
                um = vm = np.inf
                uM = vM = -np.inf
                for j in range(J):
                    if okv[v, s, j]:
                        cnt += 1
                        um = min(um, uv[v, s, j, 0])
                        uM = max(uM, uv[v, s, j, 0])
                        vm = min(vm, uv[v, s, j, 1])
                        vM = max(vM, uv[v, s, j, 1])
                if cnt < 6:
                    continue
                diag = math.sqrt(max(uM - um, 0.0) ** 2 + max(vM - vm, 0.0) ** 2)
                d = a[v, s]
                for j in range(J):
                    if not okv[v, s, j]:
                        continue
                    ox = kpts[f, v, d, j, 0] if d >= 0 else 0.0
                    oy = kpts[f, v, d, j, 1] if d >= 0 else 0.0
                    dx = ox - uv[v, s, j, 0]
                    dy = oy - uv[v, s, j, 1]
                    if math.sqrt(dx * dx + dy * dy) > gate_frac * diag:
                        keep[v, s, j] = False
        # --- a birth possible here? then stop before this frame (the torch step takes it)
        if cap < 0 or n_alive < cap:
            views = 0
            for v in range(V):
                for d in range(D):
                    if valid[f, v, d] and hint[f, v, d] < 0:
                        taken = False
                        for s in range(S):
                            if a[v, s] == d:
                                taken = True
                        if not taken:
                            views += 1
                            break
            if views >= birth_views:
                return f
        for v in range(V):
            for d in range(D):
                h = hint[f, v, d]
                if valid[f, v, d] and h >= 0:
                    has = False
                    for s in range(S):
                        if slot_person[s] == h and alive[s]:
                            has = True
                    if not has:
                        return f
        # --- triangulation
        for s in range(S):
            cnt = 0
            for j in range(J):
                for v in range(V):
                    d = a[v, s]
                    if d >= 0:
                        xyp[v, 0] = xy[f, v, d, j, 0]
                        xyp[v, 1] = xy[f, v, d, j, 1]
                        cf[v] = kpts[f, v, d, j, 2] if keep[v, s, j] else 0.0
                    else:
                        xyp[v, 0] = 0.0
                        xyp[v, 1] = 0.0
                        cf[v] = 0.0
                if V >= 2:
                    _ransac_point(xyp, cf, P, conf_thr, err_thr, min_views, refine_steps, delta, Xp, inl, npt)
                else:
                    Xp[0] = Xp[1] = Xp[2] = np.nan
                    npt[0] = 0
                good = math.isfinite(Xp[0]) and math.isfinite(Xp[1]) and math.isfinite(Xp[2])
                if good and store_f32:
                    Xp[0] = np.float32(Xp[0])
                    Xp[1] = np.float32(Xp[1])
                    Xp[2] = np.float32(Xp[2])
                    good = math.isfinite(Xp[0]) and math.isfinite(Xp[1]) and math.isfinite(Xp[2])
                okf[s, j] = good
                nf[s, j] = npt[0]
                for c in range(3):
                    Xf[s, j, c] = Xp[c] if good else 0.0
                if good:
                    cnt += 1
            seenf[s] = cnt >= min_kpts
        # --- store, slide the window
        for s in range(S):
            seen_out[f, s] = seenf[s]
            for v in range(V):
                a_out[f, v, s] = a[v, s]
            for j in range(J):
                ok_out[f, s, j] = okf[s, j]
                n_out[f, s, j] = nf[s, j]
                for c in range(3):
                    X_out[f, s, j, c] = Xf[s, j, c]
        for w in range(W - 1):
            for s in range(S):
                hseen[w, s] = hseen[w + 1, s]
                for j in range(J):
                    hok[w, s, j] = hok[w + 1, s, j]
                    for c in range(3):
                        hx[w, s, j, c] = hx[w + 1, s, j, c]
        for s in range(S):
            hseen[W - 1, s] = seenf[s]
            for j in range(J):
                hok[W - 1, s, j] = okf[s, j]
                for c in range(3):
                    hx[W - 1, s, j, c] = Xf[s, j, c]
    return f1
