"""Seconds of the export's host contact kernel (issue 13) on the synthetic ground truth of two people.

    python -m bench.contact_kernel --frames 600 --seed 0 --threads 1,2 [--meshes CACHE.npz] [--json OUT]

The meshes: the synthetic capture's ground truth (:func:`h4d_fast.synth.make_capture`, 2 cameras:
cameras do not change the motion) posed with the default body model, float32 as the export hands
them to the kernel; ``--meshes`` keeps them in (or reads them from) an ``.npz``. Per thread count
(``numba.set_num_threads``), best of ``--repeat`` runs, wall clock and process CPU time of

* ``pair``: :func:`h4d_fast.ops._contact_numba.contact_pair_frames`, both directions in one call
  (what :func:`h4d_fast.ops.contact.export_contact` runs per pair of people);
* ``frames``: :func:`h4d_fast.ops._contact_numba.contact_frames` once per direction.

Both at ``contact_mm`` 10 (a band of 0.01 m). Also printed: the contact labels and inside points
found (the same for both).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def meshes(frames: int, seed: int, cache: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """``(verts [F, 2, N, 3] float32, faces [T, 3])`` of the ground truth (read from ``cache`` if there)."""
    if cache is not None and cache.exists():
        d = np.load(cache)
        return d["verts"][:frames], d["faces"]
    from h4d_fast.body import load_body_model
    from h4d_fast.body.fast import recompute_meshes
    from h4d_fast.synth import make_capture

    body = load_body_model()
    _, gt, _ = make_capture(num_frames=frames, num_cameras=2, seed=seed)
    p = {k: np.asarray(gt.smpl[k], dtype=np.float64) for k in ("global_orient", "body_pose", "betas", "transl")}
    v, _ = recompute_meshes(body, p)
    out = np.asarray(v, dtype=np.float32), np.asarray(body.faces)
    if cache is not None:
        np.savez(cache, verts=out[0], faces=out[1])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--meshes", type=Path)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    import numba

    from h4d_fast.ops._contact_numba import contact_frames, contact_pair_frames

    verts, faces = meshes(a.frames, a.seed, a.meshes)
    A, B = (np.ascontiguousarray(verts[:, p]) for p in range(2))
    band = 0.01
    runs = {"pair": lambda: contact_pair_frames(A, B, faces, faces, band),
            "frames": lambda: (contact_frames(A, B, faces, band), contact_frames(B, A, faces, band))}
    res: dict[str, Any] = {"frames": int(A.shape[0]), "vertices": int(A.shape[1]), "faces": int(len(faces)), "contact_mm": 10.0}
    (ca, _, _, na), (cb, _, _, nb) = runs["pair"]()  # compiles
    runs["frames"]()
    res["contacts"], res["inside"] = [int(ca.sum()), int(cb.sum())], [int(na.sum()), int(nb.sum())]
    for nt in (int(t) for t in a.threads.split(",")):
        numba.set_num_threads(nt)
        for name, fn in runs.items():
            wall, cpu = [], []
            for _ in range(a.repeat):
                t, c = time.perf_counter(), time.process_time()
                fn()
                wall.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            res[f"{name}_threads{nt}"] = {"wall_s": min(wall), "cpu_s": min(cpu)}
            print(f"{name:6s} threads {nt}: wall {min(wall):.3f} s, cpu {min(cpu):.3f} s", flush=True)
    print(json.dumps(res))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
