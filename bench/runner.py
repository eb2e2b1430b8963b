"""The benchmark runner: every workload available on this machine, one command.

    python -m bench [--quick] [--full] [--budget-s S] [--device cpu|cuda] [--out DIR] [--only a,b]
                    [--frames N] [--no-sweep | --sweep quick|reduced|full] [--anipose-points N]
    h4d bench [same options]

Runs, in this order, each under its own time caps and the run's overall budget (``--budget-s``;
a workload or sweep point that no longer fits is skipped and listed): triangulation, end to end
(``h4d run``, fresh processes), the warm API path (stage by stage, with accuracy), run-many
throughput (GPU only), OKS dedup, collision, SMPL fit, the image stage (``detect``: crops per
second; ``images_to_meshes``: ``h4d run`` from JPEG frames), the drop-in adapters against their
originals (``bench/adapters.py``), then the scaling sweep. After every workload the
results are written to ``<out>/<date>-<device>[-quick].json`` and ``.md`` (so an interrupted
run still leaves its figures), and at the end the plot ``.png`` next to them. ``--out`` defaults
to ``bench/results``; on the GPU machine pass ``--out $OUT``.

``<device>`` is ``cpu`` or the GPU's name (e.g. ``nvidia-h100-80gb-hbm3``). Defaults: CUDA when
present; budget 400 s on CUDA (the whole command stays under 8 minutes: a call already started
may run past the budget, the slowest being one SMPL-fit run or one ``h4d run``), 1200 s on CPU, 240 s
with ``--quick``; the scaling sweep is the full one on CUDA and a reduced one on CPU (``--full``
or ``--sweep full`` for all of it). A peer whose package is missing (aniposelib,
xtcocotools/pycocotools, smplx) or a backend that cannot run here (triton/cupy without CUDA) is
reported absent with the reason.

The JSON carries at top level ``end_to_end_s``, ``triangulation_speedup_vs_aniposelib``,
``triangulation_speedup_vs_torch_naive``, ``triangulate_ransac_ms``, ``dedup_oks_ms``,
``collision_fwd_bwd_ms``, ``detect_crops_per_s``, ``images_to_meshes_s``, and (issue 13)
``end_to_end_warm_s``, ``end_to_end_warm_files_s``, ``stage_s``, ``run_many_per_hour``,
``run_many_gpu_busy``, ``accuracy`` (``headline`` says where each comes from and holds the raw
figures of each ratio), ``goals`` (met / not met and by how much), ``environment`` (device, versions, exact
command, commit), ``workloads`` (every system's raw figures) and ``sweep``. The Markdown opens with
one side-by-side table (h4d_fast's fastest backend beside every peer, times and accuracy).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from bench.common import REPO, Budget, Context, environment

# run order: the acceptance figures (triangulation, end to end) first, so that a short budget keeps them
WORKLOADS = ("triangulation", "end_to_end", "end_to_end_warm", "run_many", "dedup", "collision", "fitting", "detect",
             "images_to_meshes", "adapters")
ALIASES = {"oks": "dedup", "e2e": "end_to_end", "fit": "fitting", "tri": "triangulation", "warm": "end_to_end_warm", "many": "run_many",
           "i2m": "images_to_meshes", "compat": "adapters"}
RESERVE_S = 15.0  # kept for writing the outputs


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") or "device"


def _jsonable(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def parse_args(argv: list[str] | None, prog: str = "python -m bench") -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CPU CI-size workloads (a few minutes)")
    ap.add_argument("--full", action="store_true", help="the whole scaling sweep (default on CUDA; reduced on CPU)")
    ap.add_argument("--budget-s", type=float, default=None, help="overall time budget in seconds (default 400 CUDA, 1200 CPU, 240 --quick)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    ap.add_argument("--out", "--out-dir", dest="out_dir", type=Path, default=REPO / "bench" / "results",
                    help="folder of the JSON/MD/PNG (default bench/results; on the GPU machine: $OUT)")
    ap.add_argument("--only", default=None, help="comma-separated subset of " + ",".join(WORKLOADS) + " (aliases: oks, e2e, fit, tri, compat)")
    ap.add_argument("--frames", type=int, default=None,
                    help="frames of every workload (default 600; --quick: 60, collision 20, fit 8); the sweep is centred there")
    ap.add_argument("--no-sweep", action="store_true", help="skip the scaling sweep")
    ap.add_argument("--sweep", dest="sweep_kind", choices=("quick", "reduced", "full"), default=None,
                    help="which scaling sweep (default: full on CUDA or with --full, quick with --quick, else reduced)")
    ap.add_argument("--anipose-points", type=int, default=None, help="points timed with aniposelib (default 32; --quick 6)")
    ap.add_argument("--anipose-cap-s", type=float, default=None, help="cap per aniposelib point in seconds (default 5; --quick 1.5)")
    ap.add_argument("--anipose-total-s", type=float, default=None, help="aniposelib sampling time in seconds (default 40 CUDA, 60 CPU, 8 --quick)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per system (default 20 CUDA, 5 CPU, 3 --quick)")
    ap.add_argument("--images-src", type=Path, default=None,
                    help="the Pose2Sim demo folder the image workloads (detect, images_to_meshes) make their frames from "
                         "(default: $H4D_DEMO_DATA or shared/data/pose2sim_demo near the checkout)")
    ap.add_argument("--onnx", type=Path, action="append", default=[], help="detect workload: also time this ONNX pose model (repeatable)")
    ap.add_argument("--run-many-workers", type=int, default=None, help="run_many: worker processes sharing the GPU (default 4)")
    ap.add_argument("--run-many-captures", type=int, default=None, help="run_many: captures (default: what fits its time cap)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default=None, help="appended to the output basename")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return ap.parse_args(argv)


def finalize(R: dict[str, Any], ctx: Context, paths: dict[str, Path]) -> None:
    from bench import report

    R["elapsed_s"] = ctx.budget.elapsed()
    H = report.headline(R)
    R["headline"] = H
    for k in ("end_to_end_s", "triangulation_speedup_vs_aniposelib", "triangulation_speedup_vs_torch_naive", "triangulate_ransac_ms",
              "dedup_oks_ms", "collision_fwd_bwd_ms", "detect_crops_per_s", "images_to_meshes_s", "end_to_end_warm_s",
              "end_to_end_warm_files_s", "stage_s", "run_many_per_hour", "run_many_gpu_busy", "accuracy"):
        R[k] = H[k].get("value")
    R["kernel_figures_are_cpu"] = R["environment"]["device"] != "cuda"
    R["goals"] = report.goals(R, H)
    paths["json"].write_text(json.dumps(R, indent=2, default=_jsonable))
    paths["md"].write_text(report.markdown(R))


def main(argv: list[str] | None = None, prog: str = "python -m bench") -> int:
    """Run the benchmarks; ``prog`` is how the command was spelled (recorded with the results)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, prog)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("python -m bench: --device cuda but no CUDA device", file=sys.stderr)
        return 2
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    budget_s = args.budget_s or (240.0 if args.quick else (400.0 if dev.type == "cuda" else 1200.0))
    anip = {k: v for k, v in (("points", args.anipose_points), ("cap_s", args.anipose_cap_s), ("total_s", args.anipose_total_s))
            if v is not None}
    ctx = Context(device=dev, quick=args.quick, full=args.full, budget=Budget(budget_s), seed=args.seed, repeats=args.repeats,
                  verbose=not args.quiet, frames=args.frames, anipose=anip, sweep_kind=args.sweep_kind,
                  images_src=args.images_src, onnx_models=list(args.onnx))
    ctx.cache["run_many_workers"] = args.run_many_workers
    ctx.cache["run_many_captures"] = args.run_many_captures
    tmp = tempfile.TemporaryDirectory(prefix="h4d_bench_")
    ctx.tmp = Path(tmp.name)
    env = environment(dev)
    env["command"] = " ".join([prog] + [shlex.quote(a) for a in argv])
    slug = "cpu" if dev.type == "cpu" else _slug(env["device_name"])
    base = f"{time.strftime('%Y-%m-%d')}-{slug}" + ("-quick" if args.quick else "") + (f"-{_slug(args.tag)}" if args.tag else "")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{base}.json", "md": out_dir / f"{base}.md", "png": out_dir / f"{base}.png"}
    only = [ALIASES.get(w.strip(), w.strip()) for w in args.only.split(",") if w.strip()] if args.only else list(WORKLOADS)
    bad = [w for w in only if w not in WORKLOADS]
    if bad:
        print(f"python -m bench: unknown workload(s) {bad}; choose from {', '.join(WORKLOADS)}", file=sys.stderr)
        return 2
    R: dict[str, Any] = {
        "schema": "h4d_fast-bench/1",
        "environment": env,
        "mode": {"quick": args.quick, "full": args.full, "budget_s": budget_s, "repeats": ctx.n_repeats, "seed": args.seed,
                 "workloads": only, "sweep": not args.no_sweep, "sweep_kind": args.sweep_kind, "frames": args.frames,
                 "anipose": anip},
        "workloads": {},
    }
    ctx.log(f"h4d_fast benchmark on {env['device_name']} ({dev.type}), budget {budget_s:.0f} s -> {paths['json']}")
    mods = {}
    for wl in WORKLOADS:
        if wl not in only:
            continue
        if ctx.budget.left() < RESERVE_S + 10:
            R["workloads"][wl] = {"absent": "skipped: the time budget ran out", "available": False}
            continue
        ctx.log(f"== {wl}")
        try:
            mod = mods.setdefault(wl, __import__(f"bench.{wl}", fromlist=["run"]))
            R["workloads"][wl] = mod.run(ctx)
        except Exception as e:  # one workload failing must not lose the others
            R["workloads"][wl] = {"absent": f"{type(e).__name__}: {e}", "available": False, "traceback": traceback.format_exc()[-4000:]}
            ctx.log(f"   {wl} failed: {type(e).__name__}: {e}")
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        finalize(R, ctx, paths)
    if not args.no_sweep:
        ctx.log("== scaling sweep")
        from bench import sweep

        try:
            R["sweep"] = sweep.run(ctx, R["workloads"], reserve_s=RESERVE_S, workloads=tuple(only))
        except Exception as e:
            R["sweep"] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:], "rows": []}
            ctx.log(f"   sweep failed: {type(e).__name__}: {e}")
        from bench import report

        why = report.plot(R, paths["png"])
        if why is None:
            R["plot"] = str(paths["png"])
        else:
            R["plot_absent"] = why
    finalize(R, ctx, paths)
    tmp.cleanup()
    print(stdout_summary(R))
    print("wrote " + ", ".join(str(p) for k, p in paths.items() if p.exists()))
    return 0


def stdout_summary(R: dict[str, Any]) -> str:
    """What the runner prints at the end: the side-by-side table, the acceptance figures with the
    raw figures they come from, and the goals."""
    from bench import report

    env = R["environment"]
    L = [f"\nh4d_fast benchmark: {env['device_name']} ({env['device']}), {R['elapsed_s']:.0f} s", f"command: {env['command']}", ""]
    L.append(report.summary_markdown(R))
    L.append("")
    L.append("acceptance figures (issue 5):")
    L.extend("  " + line for line in report.acceptance_lines(R))
    L.append("goals:")
    for g in R["goals"]:
        L.append(f"  [{g['status']}] {g['goal']}" + (f" -- {g['detail']}" if g.get("detail") else ""))
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
