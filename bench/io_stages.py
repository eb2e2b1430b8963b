"""The load and export stages alone, on a sequence folder: seconds per call (CPU or GPU host).

    python -m bench.io_stages SEQ [--repeats 3] [--device cpu|cuda] [--json OUT]
    h4d synth /tmp/seq600 --frames 600 --cameras 20     # the issue's size (600 frames x 20 cameras)

* ``load``: :func:`h4d_fast.io.harmony4d.read_sequence` of ``SEQ`` (every detection file parsed,
  packed into the ``[F, V, D]`` tensors), called ``--repeats`` times after one untimed call (the
  page cache then holds the files, as it does for a capture just written by a detector);
* ``fingerprint``: :func:`h4d_fast.pipeline.driver.fingerprint_inputs` (the stage-cache key's
  input part, computed before the stages);
* ``export``: :func:`h4d_fast.pipeline.export.export_harmony4d` of a fit of ``F`` frames x the
  capture's people (the ground-truth body parameters when ``SEQ/ground_truth/smpl.npz`` has them,
  else the rest pose) with the default body model and the capture's cameras, into a temporary
  folder: ``until_return_s`` is what the caller waits for (meshes, projections, ``sequence.npz``),
  ``until_files_s`` until every per-frame file is on disk (the writer pool drained).

No pipeline stage other than these runs; the figures are wall clock (``time.perf_counter``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _fit_of(seq: Path, capture: Any, device: str):
    import numpy as np
    import torch

    from h4d_fast.pipeline.fit import FitResult

    F, P = capture.num_frames, capture.num_people
    gt = seq / "ground_truth" / "smpl.npz"
    z: dict[str, np.ndarray] = {}
    if gt.is_file():
        with np.load(gt) as f:
            z = {k: f[k] for k in f.files}
    def arr(k: str, shape: tuple[int, ...]) -> torch.Tensor:
        a = z.get(k)
        if a is None or tuple(a.shape[: len(shape) - 1]) != shape[:-1]:
            return torch.zeros(shape, device=device)
        return torch.as_tensor(np.asarray(a, np.float32).reshape(shape), device=device)
    betas = z.get("betas")
    b = torch.zeros(P, 10, device=device) if betas is None else torch.as_tensor(np.asarray(betas, np.float32).reshape(-1, betas.shape[-1])[:P, :10], device=device)
    return FitResult(arr("global_orient", (F, P, 3)), arr("body_pose", (F, P, 69)), b, arr("transl", (F, P, 3)))


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("seq", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default="load,fingerprint,export")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    only = set(args.only.split(","))

    from h4d_fast.io.harmony4d import read_sequence
    from h4d_fast.pipeline.driver import fingerprint_inputs

    res: dict[str, Any] = {"sequence": str(args.seq), "device": args.device, "repeats": args.repeats}
    cap = read_sequence(args.seq)  # untimed: page cache, first imports
    res["shape"] = list(cap.detections.shape)
    if "load" in only:
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            read_sequence(args.seq)
            ts.append(time.perf_counter() - t0)
        res["load_s"] = _median(ts)
        res["load_runs_s"] = ts
        print(f"load         {res['load_s']:.3f} s  (runs {', '.join(f'{t:.3f}' for t in ts)})", flush=True)
    if "fingerprint" in only:
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fingerprint_inputs(args.seq)
            ts.append(time.perf_counter() - t0)
        res["fingerprint_s"] = _median(ts)
        print(f"fingerprint  {res['fingerprint_s']:.3f} s", flush=True)
    if "export" in only:
        from h4d_fast.body import load_body_model
        from h4d_fast.pipeline import export as export_mod

        body = load_body_model(None, device=args.device)
        fit = _fit_of(args.seq, cap, args.device)
        ret, files = [], []
        for i in range(args.repeats + 1):
            d = Path(tempfile.mkdtemp(prefix="h4d_io_export_"))
            try:
                t0 = time.perf_counter()
                st = export_mod.export_harmony4d(d / "processed_data", fit, body, cap.frame_ids, cap.person_names, cameras=cap.cameras)
                t1 = time.perf_counter()
                pending = st.get("pending")
                if pending is not None:
                    pending.wait()
                t2 = time.perf_counter()
                n = sum(1 for _ in (d / "processed_data").rglob("*.np[yz]"))
            finally:
                shutil.rmtree(d, ignore_errors=True)
            if i:  # the first call is the warm-up
                ret.append(t1 - t0)
                files.append(t2 - t0)
        res["export_until_return_s"] = _median(ret)
        res["export_until_files_s"] = _median(files)
        res["export_files"] = n
        print(f"export       {res['export_until_return_s']:.3f} s until it returns, {res['export_until_files_s']:.3f} s until "
              f"{n} files are on disk", flush=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
