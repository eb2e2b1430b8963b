"""Where a fresh ``h4d run`` process spends its time: cProfile of one run on the bench capture.

    python -m bench.profile_fresh_run [--device cuda] [--frames 600] [--out DIR] [--repeats 2] [--variant KEY=VALUE ...]

Writes the paper-size capture (:func:`bench.workloads.write_paper_sequence`), runs
``h4d run SEQ --out OUT --force --quiet --device DEV`` once untimed (on-disk caches of Triton,
CuPy and numba filled, as on any machine after its first run), then once more as a fresh process
under ``cProfile``; then ``--repeats`` timed fresh runs of the default settings and of each
``--variant`` (a ``--set`` of ``h4d run``), alternating, so that a setting can be compared with the
default under the same conditions. Into ``DIR``: ``fresh_profile.txt`` (the 45 largest cumulative and own times),
``fresh_timing.json`` (the run's own ``timing.json``) and ``fresh_profile.json`` (wall clock of every
run, each run's stage seconds, the commands). Not part of ``python -m bench``: a diagnostic for issue 13's ``end_to_end_s``.
"""

from __future__ import annotations

import argparse
import io
import json
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import context_for_script, repo_env  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variant", action="append", default=[], help="KEY=VALUE: a --set of h4d run timed beside the default")
    a = ap.parse_args(argv)
    from bench.workloads import write_paper_sequence

    ctx = context_for_script(a.device)
    ctx.frames = a.frames
    work = Path(tempfile.mkdtemp(prefix="h4d_fresh_"))
    a.out.mkdir(parents=True, exist_ok=True)
    try:
        seq, out = work / "sequence", work / "output"
        t0 = time.perf_counter()
        write_paper_sequence(ctx, seq)
        rep: dict = {"write_sequence_s": time.perf_counter() - t0, "device": ctx.device.type, "frames": a.frames}
        cli = ["-m", "h4d_fast.cli", "run", str(seq), "--out", str(out), "--force", "--quiet", "--device", ctx.device.type]
        rep["command"] = "h4d " + " ".join(cli[2:])
        for name, pre in (("first_run_s", []), ("profiled_run_s", ["-m", "cProfile", "-o", str(work / "run.prof")])):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, *pre, *cli], check=True, env=repo_env())
            rep[name] = time.perf_counter() - t0
        shutil.copy(out / "timing.json", a.out / "fresh_timing.json")
        rep["timed"] = {}
        for _ in range(a.repeats):
            for v in ["default", *a.variant]:
                extra = [] if v == "default" else ["--set", v]
                t0 = time.perf_counter()
                subprocess.run([sys.executable, *cli, *extra], check=True, env=repo_env())
                wall = time.perf_counter() - t0
                stages = {s["name"]: round(s["seconds"], 3) for s in json.loads((out / "timing.json").read_text())["stages"]}
                rep["timed"].setdefault(v, []).append({"wall_s": wall, "stages": stages})
        buf = io.StringIO()
        st = pstats.Stats(str(work / "run.prof"), stream=buf)
        st.sort_stats("cumulative").print_stats(45)
        st.sort_stats("tottime").print_stats(45)
        (a.out / "fresh_profile.txt").write_text(buf.getvalue())
        (a.out / "fresh_profile.json").write_text(json.dumps(rep, indent=1))
        print(json.dumps(rep, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
