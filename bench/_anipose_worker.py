"""Worker process of the aniposelib timing (see :func:`bench.triangulation.run_aniposelib`).

    python -m bench._anipose_worker IN.npz OUT.jsonl

Runs ``CameraGroup.triangulate_possible`` point by point (each point stopped by SIGALRM after
``cap_s``; sampling stops once ``total_s`` have passed) and appends one JSON line per event to
OUT, flushed, so that the parent keeps every finished point even if it has to kill this process
(a point stuck where no signal reaches it). Imports neither torch nor h4d_fast.
"""

from __future__ import annotations

import importlib
import json
import signal
import sys
import time
import types


class _Cap(Exception):
    pass


def _import_aniposelib():
    """aniposelib's modules import pandas, toml and tqdm at top level; triangulation uses none of
    them: a missing one gets an empty stand-in (reported)."""
    stubs = {"pandas": {}, "toml": {}, "tqdm": {"trange": lambda *a, **k: range(*a), "tqdm": lambda it=None, *a, **k: it}}
    stubbed = []
    for _ in range(len(stubs) + 1):
        try:
            return importlib.import_module("aniposelib.cameras"), stubbed
        except ModuleNotFoundError as e:
            name = (e.name or "").split(".")[0]
            if name not in stubs or name in stubbed:
                raise
            m = types.ModuleType(name)
            m.__dict__.update(stubs[name])
            sys.modules[name] = m
            stubbed.append(name)
            for k in [k for k in sys.modules if k.startswith("aniposelib")]:
                del sys.modules[k]
    raise ImportError("aniposelib")


def main(inp: str, outp: str) -> None:
    import numpy as np

    t_start = time.perf_counter()
    out = open(outp, "a", buffering=1)

    def emit(**kw):
        out.write(json.dumps(kw) + "\n")
        out.flush()

    import cv2

    mod, stubbed = _import_aniposelib()
    try:
        from importlib.metadata import version

        ver = version("aniposelib")
    except Exception:
        ver = None
    d = np.load(inp, allow_pickle=False)
    thr, cap_s, total_s = float(d["thr"]), float(d["cap_s"]), float(d["total_s"])

    def on_alarm(*_):
        raise _Cap()

    for j in range(int(d["jobs"])):
        K, R, t, size, pts = d[f"K_{j}"], d[f"R_{j}"], d[f"t_{j}"], d[f"size_{j}"], d[f"pts_{j}"]
        cams = [mod.Camera(matrix=K[v], dist=np.zeros(5), size=(int(size[v, 0]), int(size[v, 1])), rvec=cv2.Rodrigues(R[v])[0].ravel(),
                           tvec=t[v], name=f"cam{v:02d}") for v in range(len(K))]
        group = mod.CameraGroup(cams)
        if j == 0:
            # warm-up (numba compilation of aniposelib's DLT, OpenCV initialisation) on an exact
            # point: the first subset already passes
            t0 = time.perf_counter()
            group.triangulate_possible(d["exact_0"][:, None, None, :], undistort=True, min_cams=2, threshold=thr)
            emit(event="ready", version=ver, stubbed=stubbed, warmup_s=time.perf_counter() - t0, import_s=t0 - t_start)
            signal.signal(signal.SIGALRM, on_alarm)
        t_all = time.perf_counter()
        for k in range(pts.shape[1]):
            if k and time.perf_counter() - t_all > total_s:
                break
            emit(event="begin", job=j, k=k, t=time.time())
            t1 = time.perf_counter()
            try:
                signal.setitimer(signal.ITIMER_REAL, cap_s)
                res = group.triangulate_possible(pts[:, k:k + 1, None, :], undistort=True, min_cams=2, threshold=thr)
                signal.setitimer(signal.ITIMER_REAL, 0)
                X = [float(x) for x in res[0][0]]
                ok = True
            except _Cap:
                X, ok = [float("nan")] * 3, False
            emit(event="point", job=j, k=k, seconds=time.perf_counter() - t1, finished=ok, X=X)
    emit(event="done")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
