"""kill -9 at any moment of ``h4d run`` / ``h4d run-many``, then rerun: the same outputs, byte for
byte, as an uninterrupted run; two runs on one output folder: the second refuses.

The runs are real subprocesses of the CLI, killed with SIGKILL either by the fault hook
(:mod:`h4d_fast._faults`: at stage boundaries and in the middle of the per-frame file writes) or
after a random delay.

Files compared differently (they legitimately carry run-time values), everything else byte for byte:

* ``timing.json``          -- stage seconds, wall time, which stages came from the cache: left out.
* ``.h4d-run.lock`` / ``.run-many.lock`` -- the lock holder's pid, host and start time: left out.
* ``run_many.json``        -- run-many's summary (finish time, wall seconds, per-sequence seconds): left out.
* ``.h4d/DONE``            -- run-many's marker: finish time, seconds and per-stage seconds left out, the rest compared.
* ``fit_stats.json``       -- the fit's statistics: its ``seconds`` / ``*_seconds`` entries (timings) left out, the rest compared.
* ``.h4d/<stage>.npz``     -- stage caches: every array compared; ``__stats__`` (the stage's
  statistics, with the fit's timings) compared as ``fit_stats.json``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from h4d_fast.cli import main
from h4d_fast.io.harmony4d import write_sequence
from h4d_fast.synth import make_capture

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--set", "fit.epochs=1", "--set", "fit.iters_stage1=2", "--set", "fit.iters_stage2=2",
         "--set", "fit.iters_stage3=2", "--set", "fit.iters_collision=2", "--set", "refine.iters=5", "--quiet"]
SKIP = {"timing.json", ".h4d-run.lock", ".run-many.lock", "run_many.json"}
TIMEOUT = 300  # generous: the machine is shared


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("H4D_FAULT")}
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH", "")) if x)
    env.update(extra)
    return env


def _cli(args: list[str], **fault: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "h4d_fast.cli", *args], env=_env(**fault), cwd=REPO,
                          capture_output=True, text=True, timeout=TIMEOUT)


def _no_seconds(obj):
    """``obj`` less its timings (keys ``seconds`` / ``*_seconds``, at any depth)."""
    if isinstance(obj, dict):
        return {k: _no_seconds(v) for k, v in obj.items() if not k.endswith("seconds")}
    if isinstance(obj, list):
        return [_no_seconds(v) for v in obj]
    return obj


def _snapshot(out: Path) -> dict[str, object]:
    """Relative path -> what is compared (bytes, or the parsed content less its timings)."""
    snap: dict[str, object] = {}
    for p in sorted(out.rglob("*")):
        if not p.is_file() or p.name in SKIP:
            continue
        rel = p.relative_to(out).as_posix()
        if p.name == "fit_stats.json":
            snap[rel] = _no_seconds(json.loads(p.read_text()))
        elif p.name == "DONE":  # run-many's marker: less when it finished and the per-stage seconds
            snap[rel] = _no_seconds({k: v for k, v in json.loads(p.read_text()).items() if k not in ("finished", "stages")})
        elif p.parent.name == ".h4d" and p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                snap[rel] = {k: (_no_seconds(json.loads(str(z[k]))) if k == "__stats__" else z[k].tobytes() + str(z[k].dtype).encode())
                             for k in z.files}
        else:
            snap[rel] = p.read_bytes()
    return snap


def _assert_same(out: Path, ref: dict[str, object]) -> None:
    got = _snapshot(out)
    assert sorted(got) == sorted(ref), f"files differ: extra {sorted(set(got) - set(ref))}, missing {sorted(set(ref) - set(got))}"
    bad = [k for k in ref if got[k] != ref[k]]
    assert not bad, f"contents differ: {bad}"


@pytest.fixture(scope="module")
def seq(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kill")
    cap, gt, meta = make_capture(num_frames=6, num_cameras=3, seed=3)
    write_sequence(root / "s", cap, gt=gt, scale_transform=meta["scale_transform"])
    return root / "s"


@pytest.fixture(scope="module")
def reference(seq) -> dict[str, object]:
    out = seq.parent / "ref"
    r = _cli(["run", str(seq), "--out", str(out), *QUICK])
    assert r.returncode == 0, r.stderr
    snap = _snapshot(out)
    assert "processed_data/sequence.npz" in snap and "processed_data/smpl/00006.npy" in snap and "config.toml" in snap
    return snap


# kill points: a stage's cache just written, the fit's statistics, the consolidated files, the
# middle of the per-frame files, the last files
POINTS = ["after:filter", "after:track", "after:fit", "after:poses3d.npz", "after:sequence.npz", "write:5", "after:timing.json"]


@pytest.mark.parametrize("point", POINTS)
def test_run_killed_at_a_point_then_rerun_is_identical(seq, reference, tmp_path, point):
    out = tmp_path / "out"
    once = tmp_path / "fired"
    r = _cli(["run", str(seq), "--out", str(out), *QUICK], H4D_FAULT=point, H4D_FAULT_ONCE=str(once))
    assert r.returncode == -signal.SIGKILL and once.is_file(), (r.returncode, r.stderr[-2000:])
    assert _snapshot(out) != reference  # killed before the end: something is missing
    r = _cli(["run", str(seq), "--out", str(out), *QUICK])
    assert r.returncode == 0, r.stderr
    _assert_same(out, reference)
    timing = json.loads((out / "timing.json").read_text())
    cached = {s["name"]: s["cached"] for s in timing["stages"]}
    if point in ("after:track", "after:fit"):  # the rerun resumed from the killed run's caches
        assert cached["filter"] and cached["track"]


def test_run_killed_after_random_delays_then_rerun_is_identical(seq, reference, tmp_path):
    out = tmp_path / "out"
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for _ in range(2):  # two kills, one rerun after the other: each resumes what the last left
        p = subprocess.Popen([sys.executable, "-m", "h4d_fast.cli", "run", str(seq), "--out", str(out), *QUICK],
                             env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            p.wait(timeout=rng.uniform(1.0, 6.0))
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
        p.wait(timeout=TIMEOUT)
    r = _cli(["run", str(seq), "--out", str(out), *QUICK])
    assert r.returncode == 0, f"seed {seed}: {r.stderr}"
    _assert_same(out, reference)


def test_run_many_killed_mid_capture_then_rerun_is_identical(seq, tmp_path):
    root = tmp_path / "root"
    for i, rel in enumerate(("a", "b")):
        cap, gt, meta = make_capture(num_frames=5, num_cameras=3, seed=10 + i)
        write_sequence(root / rel, cap, gt=gt, scale_transform=meta["scale_transform"])
    args = ["--set", "fit.enabled=false", "--set", "refine.iters=5", "--quiet", "--prefetch", "0"]
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert _cli(["run-many", str(root), "--out", str(ref), *args]).returncode == 0
    once = tmp_path / "fired"
    r = _cli(["run-many", str(root), "--out", str(out), *args], H4D_FAULT="after:track", H4D_FAULT_MATCH="/b", H4D_FAULT_ONCE=str(once))
    assert r.returncode == -signal.SIGKILL and once.is_file(), r.stderr[-2000:]
    assert not (out / "b").exists() and (out / ".h4d-partial" / "b" / ".h4d" / "track.npz").is_file()
    r = _cli(["run-many", str(root), "--out", str(out), *args])
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "run_many.json").read_text())
    assert {s["sequence"]: s["status"] for s in summary["sequences"]} == {"a": "skipped", "b": "done"}
    _assert_same(out, _snapshot(ref))


# ----------------------------------------------------------------------------- two runs, one folder
def test_second_run_on_the_same_folder_refuses(seq, tmp_path, capsys, monkeypatch):
    from h4d_fast.pipeline import driver

    out = tmp_path / "out"
    args = ["run", str(seq), "--out", str(out), "--set", "fit.enabled=false", "--set", "refine.iters=5", "--quiet"]
    # another process holds the folder: refused with a clear error, nothing written
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl, os, sys, time; out = sys.argv[1]; os.makedirs(out, exist_ok=True); "
                               "fd = os.open(os.path.join(out, '.h4d-run.lock'), os.O_RDWR | os.O_CREAT); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'pid %d' % os.getpid()); "
                               "print('locked', flush=True); time.sleep(600)", str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "another `h4d run` is writing here" in err and f"pid {holder.pid}" in err
        assert sorted(p.name for p in out.iterdir()) == [".h4d-run.lock"]
    finally:
        holder.kill()  # kill -9: the kernel releases the lock
        holder.wait(timeout=60)
    # while a run runs, a second one on its folder is refused (the lock is held for the whole run)
    seen: list[int] = []
    real = driver.run_sequence

    def nested(*a, **k):
        seen.append(main(args))
        return real(*a, **k)

    monkeypatch.setattr(driver, "run_sequence", nested)
    assert main(args) == 0
    assert seen == [2] and "another `h4d run` is writing here" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(args) == 0  # released at the end
