"""kill -9 at any moment of ``h4d run`` / ``h4d run-many``, then rerun: the same outputs, byte for
byte, as an uninterrupted run; two runs on one output folder: the second refuses.

The runs are real subprocesses of the CLI, killed with SIGKILL either by the fault hook
(:mod:`h4d_fast.io.faults`: at stage boundaries, between a file's write and its rename, in the
middle of the per-frame file writes) or after random delays.

What is compared, and what is left out of the comparison and why: :mod:`same_outputs`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from same_outputs import assert_same, snapshot

from h4d_fast.cli import main
from h4d_fast.io.harmony4d import write_sequence
from h4d_fast.synth import make_capture

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--set", "fit.epochs=1", "--set", "fit.iters_stage1=2", "--set", "fit.iters_stage2=2",
         "--set", "fit.iters_stage3=2", "--set", "fit.iters_collision=2", "--set", "refine.iters=5", "--quiet"]
TIMEOUT = 300  # generous: the machine is shared


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("H4D_FAULT")}
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(REPO), env.get("PYTHONPATH", "")) if x)
    env.update(extra)
    return env


def _cli(args: list[str], **fault: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "h4d_fast.cli", *args], env=_env(**fault), cwd=REPO,
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)


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
    snap = snapshot(out)
    assert "processed_data/sequence.npz" in snap and "processed_data/smpl/00006.npy" in snap and "config.toml" in snap
    return snap


def test_the_export_measures_the_penetration(seq, reference):
    """The fit leaves the penetration after its collision stage to the export's host contact pass
    (the same figure, without a second pass over the meshes: test_mesh_e2e); the reruns above
    compare fit_stats.json with it."""
    from h4d_fast.ops.contact import contact_on_host

    st = json.loads((seq.parent / "ref" / "fit_stats.json").read_text())
    if not contact_on_host():
        assert st.get("penetration_measured_by") is None and "penetration_after_cm3" in st
        return
    assert st["penetration_measured_by"] == "export" and st["penetration_after_cm3"] >= 0.0
    assert st["penetration_max_frame_cm3"] >= st["penetration_after_cm3"]


def test_no_penetration_after_a_collision_stage_that_did_not_run(seq, tmp_path):
    """With the collision stage off the export still measures the meshes (contact_penetration_cm3),
    but nothing is reported as the penetration after a collision stage."""
    out = tmp_path / "out"
    r = _cli(["run", str(seq), "--out", str(out), *QUICK, "--set", "fit.collision=false"])
    assert r.returncode == 0, r.stderr
    st = json.loads((out / "fit_stats.json").read_text())
    assert "penetration_after_cm3" not in st and "penetration_measured_by" not in st


# kill points: a stage's cache just written, the fit's statistics, the consolidated files, a file
# written but not yet renamed into place (its temporary file left behind), the middle of the
# per-frame files, the last files. The slow ones add little to the others.
_slow = pytest.mark.slow
POINTS = [pytest.param("after:filter", marks=_slow), "after:track", pytest.param("after:fit", marks=_slow),
          pytest.param("after:poses3d.npz", marks=_slow), "after:sequence.npz", "renaming:00003.npy", "write:5",
          pytest.param("after:timing.json", marks=_slow)]


@pytest.mark.parametrize("point", POINTS)
def test_run_killed_at_a_point_then_rerun_is_identical(seq, reference, tmp_path, point):
    out = tmp_path / "out"
    once = tmp_path / "fired"
    r = _cli(["run", str(seq), "--out", str(out), *QUICK], H4D_FAULT=point, H4D_FAULT_ONCE=str(once))
    assert r.returncode == -signal.SIGKILL and once.is_file(), (r.returncode, r.stderr[-2000:])
    assert snapshot(out) != reference  # killed before the end: something is missing
    if point.startswith("renaming:"):
        assert list(out.rglob(".00003.npy.*.tmp"))  # what the kill left: removed by the rerun
    r = _cli(["run", str(seq), "--out", str(out), *QUICK])
    assert r.returncode == 0, r.stderr
    assert_same(out, reference)
    timing = json.loads((out / "timing.json").read_text())
    cached = {s["name"]: s["cached"] for s in timing["stages"]}
    if point in ("after:track", "after:fit"):  # the rerun resumed from the killed run's caches
        assert cached["filter"] and cached["track"]


def test_run_killed_by_a_pool_writer_mid_files_then_rerun_is_identical(seq, reference, tmp_path):
    """The per-frame files go to the write pool's processes (small files here too); one of them
    kills the run (SIGKILL, as ``kill -9`` would) after its 3rd file, then itself; the other
    writers end with the run. The rerun rewrites everything."""
    out = tmp_path / "out"
    once = tmp_path / "fired"
    pool = {"H4D_WRITE_POOL_MIN_FILES": "1", "H4D_IO_WORKERS": "2"}
    p = subprocess.Popen([sys.executable, "-m", "h4d_fast.cli", "run", str(seq), "--out", str(out), *QUICK],
                         env=_env(H4D_FAULT="write:3", H4D_FAULT_ONCE=str(once), **pool), cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = p.communicate(timeout=TIMEOUT)
    assert p.returncode == -signal.SIGKILL and once.is_file(), (p.returncode, err[-2000:])
    assert int(once.read_text().split()[0]) == p.pid  # a writer process killed the run
    assert snapshot(out) != reference
    r = _cli(["run", str(seq), "--out", str(out), *QUICK], **pool)
    assert r.returncode == 0, r.stderr
    assert_same(out, reference)


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
    assert_same(out, reference)


MANY = ["--set", "fit.enabled=false", "--set", "refine.iters=5", "--quiet", "--prefetch", "0"]


@pytest.fixture(scope="module")
def many_root(tmp_path_factory) -> tuple[Path, Path]:
    """Two small captures and an uninterrupted run-many of them."""
    top = tmp_path_factory.mktemp("many")
    root = top / "root"
    for i, rel in enumerate(("a", "b")):
        cap, gt, meta = make_capture(num_frames=5, num_cameras=3, seed=10 + i)
        write_sequence(root / rel, cap, gt=gt, scale_transform=meta["scale_transform"])
    r = _cli(["run-many", str(root), "--out", str(top / "ref"), *MANY])
    assert r.returncode == 0, r.stderr
    return root, top / "ref"


def test_run_many_killed_mid_capture_then_rerun_is_identical(many_root, tmp_path):
    root, ref = many_root
    out = tmp_path / "out"
    once = tmp_path / "fired"
    r = _cli(["run-many", str(root), "--out", str(out), *MANY], H4D_FAULT="after:track", H4D_FAULT_MATCH="/b", H4D_FAULT_ONCE=str(once))
    assert r.returncode == -signal.SIGKILL and once.is_file(), r.stderr[-2000:]
    assert not (out / "b").exists() and (out / ".h4d-partial" / "b" / ".h4d" / "track.npz").is_file()
    r = _cli(["run-many", str(root), "--out", str(out), *MANY])
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "run_many.json").read_text())
    assert {s["sequence"]: s["status"] for s in summary["sequences"]} == {"a": "skipped", "b": "done"}
    assert_same(out, snapshot(ref))


def test_run_many_rerun_removes_a_dead_runs_partial_of_a_finished_sequence(many_root, tmp_path):
    """A ``--force`` run killed after it began ``b`` but before ``b`` committed leaves
    ``.h4d-partial/b`` beside ``b``'s still current output (which of the two workers got how far
    depends on timing, so this builds that state directly): the rerun skips ``b`` and removes the
    obsolete partial folder."""
    root, ref = many_root
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    stale = out / ".h4d-partial" / "b" / ".h4d"
    stale.mkdir(parents=True)
    (stale / "RUN_ID").write_text("a-dead-run\n")
    r = _cli(["run-many", str(root), "--out", str(out), *MANY])
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "run_many.json").read_text())
    assert {s["sequence"]: s["status"] for s in summary["sequences"]} == {"a": "skipped", "b": "skipped"}
    assert not (out / ".h4d-partial").exists()
    assert_same(out, snapshot(ref))


def test_run_many_killed_inside_a_commit_then_rerun_is_identical(many_root, tmp_path):
    """``--force`` over finished outputs, killed in the commit of ``a`` after the old output was
    moved aside and before the new one took its place: the rerun recomputes ``a`` (from the
    partial folder's caches) and removes the old copy."""
    root, ref = many_root
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    once = tmp_path / "fired"
    r = _cli(["run-many", str(root), "--out", str(out), "--force", *MANY], H4D_FAULT="commit:moved-old",
             H4D_FAULT_MATCH="/a", H4D_FAULT_ONCE=str(once))
    assert r.returncode == -signal.SIGKILL and once.is_file(), r.stderr[-2000:]
    assert not (out / "a").exists() and list((out / ".h4d-partial").glob("a.old-*"))
    r = _cli(["run-many", str(root), "--out", str(out), *MANY])
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "run_many.json").read_text())
    assert {s["sequence"]: s["status"] for s in summary["sequences"]} == {"a": "done", "b": "skipped"}
    assert_same(out, snapshot(ref))


# ----------------------------------------------------------------------------- two runs, one folder
def test_second_run_on_the_same_folder_refuses(seq, tmp_path, capsys, monkeypatch):
    from h4d_fast.pipeline import run

    out = tmp_path / "out"
    args = ["run", str(seq), "--out", str(out), "--set", "fit.enabled=false", "--set", "refine.iters=5", "--quiet"]
    # another process holds the folder: refused with a clear error, nothing written
    holder = subprocess.Popen([sys.executable, "-c",
                               ("import fcntl, os, sys, time; out = sys.argv[1]; os.makedirs(out, exist_ok=True); "
                               "fd = os.open(os.path.join(out, '.h4d-run.lock'), os.O_RDWR | os.O_CREAT); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'pid %d' % os.getpid()); "
                               "print('locked', flush=True); time.sleep(600)"), str(out)],
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
    real = run.run_sequence

    def nested(*a, **k):
        seen.append(main(args))
        return real(*a, **k)

    monkeypatch.setattr(run, "run_sequence", nested)
    assert main(args) == 0
    assert seen == [2] and "another `h4d run` is writing here" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(args) == 0  # released at the end
