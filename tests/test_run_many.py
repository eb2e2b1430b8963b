"""``h4d run-many``: discovery, skip/resume, failures, atomic outputs; local, --devices cpu,cpu, --ray."""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import pytest

from h4d_fast.cli import main
from h4d_fast.config import load_config
from h4d_fast.io.harmony4d import write_sequence
from h4d_fast.pipeline import many, run
from h4d_fast.synth import make_capture

FAST = ["--set", "fit.enabled=false", "--set", "refine.iters=5", "--quiet"]
GOOD = ("a", "grp/c")
BAD = "grp/b"
BAD_FILE = "processed_data/poses2d/cam02/rgb/00003.npy"


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("captures")
    for i, rel in enumerate(("a", "grp/b", "grp/c")):
        cap, gt, meta = make_capture(num_frames=8, num_cameras=4, seed=i)
        write_sequence(root / rel, cap, gt=gt, scale_transform=meta["scale_transform"])
    (root / "notes").mkdir()  # not a sequence
    (root / "half" / "colmap" / "workplace").mkdir(parents=True)  # half a sequence: ignored, noted
    return root


@pytest.fixture
def root(clean_root, tmp_path) -> Path:
    """A fresh copy with ``grp/b`` corrupted (a truncated .npy)."""
    r = tmp_path / "root"
    shutil.copytree(clean_root, r)
    f = r / BAD / BAD_FILE
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    return r


def _run(root: Path, out: Path, *extra: str) -> tuple[int, dict]:
    rc = main(["run-many", str(root), "--out", str(out), *FAST, *extra])
    return rc, json.loads((out / "run_many.json").read_text())


def _status(summary: dict) -> dict[str, str]:
    return {s["sequence"]: s["status"] for s in summary["sequences"]}


def _marker(out: Path, rel: str) -> dict:
    return json.loads((out / rel / ".h4d" / "DONE").read_text())


def _check_first_run(rc: int, summary: dict, out: Path, capsys) -> None:
    assert rc == 1
    assert _status(summary) == {"a": "done", "grp/b": "failed", "grp/c": "done"}
    bad = next(s for s in summary["sequences"] if s["sequence"] == BAD)
    assert BAD_FILE in bad["error"] and "\n" not in bad["error"]
    printed = capsys.readouterr().out
    line = next(ln for ln in printed.splitlines() if ln.startswith(BAD))
    assert "failed" in line and BAD_FILE in line
    for rel in GOOD:
        assert (out / rel / "poses3d.npz").is_file() and (out / rel / "processed_data" / "poses3d" / "00001.npy").is_file()
        m = _marker(out, rel)
        assert m["config_hash"] and m["input_fingerprint"]
    # no partial output of the failed sequence, no temp folders left
    assert not (out / BAD).exists()
    assert not (out / many.PARTIAL_DIR).exists()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or ".old-" in p.name]


def _check_rerun_and_force(root: Path, out: Path, *extra: str) -> None:
    before = {rel: _marker(out, rel)["finished"] for rel in GOOD}
    mtime = (out / "a" / "poses3d.npz").stat().st_mtime_ns
    rc, summary = _run(root, out, *extra)
    assert rc == 1
    assert _status(summary) == {"a": "skipped", "grp/b": "failed", "grp/c": "skipped"}  # failed one retried
    assert (out / "a" / "poses3d.npz").stat().st_mtime_ns == mtime
    rc, summary = _run(root, out, "--force", *extra)
    assert rc == 1
    assert _status(summary) == {"a": "done", "grp/b": "failed", "grp/c": "done"}
    assert (out / "a" / "poses3d.npz").stat().st_mtime_ns != mtime
    assert all(_marker(out, rel)["finished"] >= before[rel] for rel in GOOD)
    assert not (out / BAD).exists() and not (out / many.PARTIAL_DIR).exists()


# ----------------------------------------------------------------------------- local (default) mode
def test_local_failure_skip_retry_force(root, tmp_path, capsys):
    out = tmp_path / "out"
    rc, summary = _run(root, out)
    _check_first_run(rc, summary, out, capsys)
    assert summary["incomplete_folders"] == ["half (no processed_data/poses2d)"]
    _check_rerun_and_force(root, out)
    # repair the bad input: only it is computed, the rest skipped, exit 0
    src = root.parent / "unused"
    cap, gt, meta = make_capture(num_frames=8, num_cameras=4, seed=1)
    write_sequence(src, cap, gt=gt, scale_transform=meta["scale_transform"])
    shutil.copyfile(src / BAD_FILE, root / BAD / BAD_FILE)
    shutil.rmtree(src)
    rc, summary = _run(root, out)
    assert rc == 0 and _status(summary) == {"a": "skipped", "grp/b": "done", "grp/c": "skipped"}
    # a changed setting recomputes (the changed stage only: earlier stages come from the caches)
    rc, summary = _run(root, out, "--set", "refine.iters=4", "--match", "a")
    assert rc == 0 and _status(summary) == {"a": "done"}
    timing = json.loads((out / "a" / "timing.json").read_text())
    cached = {s["name"]: s["cached"] for s in timing["stages"]}
    assert cached["filter"] and cached["track"] and not cached["refine"]


def test_prefetch_off_and_process_loader_agree(root, tmp_path, capsys):
    import numpy as np

    out0, out1 = tmp_path / "serial", tmp_path / "proc"
    rc0, s0 = _run(root, out0, "--prefetch", "0")
    rc1, s1 = _run(root, out1, "--prefetch", "2", "--loader", "process")
    assert rc0 == rc1 == 1 and _status(s0) == _status(s1)
    for rel in GOOD:
        with np.load(out0 / rel / "poses3d.npz") as a, np.load(out1 / rel / "poses3d.npz") as b:
            np.testing.assert_allclose(a["poses3d"], b["poses3d"], atol=1e-5)
    bad = next(s for s in s1["sequences"] if s["sequence"] == BAD)
    assert BAD_FILE in bad["error"]


def test_interrupted_run_resumes_from_partial_folder(clean_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    # the first sequence is interrupted after its track stage (as a killed process would be)
    monkeypatch.setattr(run, "run_sequence", functools.partial(run.run_sequence, stop_after="track"))
    assert main(["run-many", str(clean_root), "--out", str(out), *FAST, "--match", "a"]) == 130
    monkeypatch.undo()
    part = out / many.PARTIAL_DIR / "a"
    assert not (out / "a").exists()  # nothing half-written in place
    assert (part / ".h4d" / "track.npz").is_file()
    rc, summary = _run(clean_root, out, "--match", "a")
    assert rc == 0 and _status(summary) == {"a": "done"}
    timing = json.loads((out / "a" / "timing.json").read_text())
    cached = {s["name"]: s["cached"] for s in timing["stages"]}
    assert cached["filter"] and cached["track"] and not cached["refine"]
    assert not part.exists()


def test_lock_and_bad_arguments(clean_root, tmp_path, capsys):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out / many.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["run-many", str(clean_root), "--out", str(out), *FAST]) == 2
        assert "another `h4d run-many`" in capsys.readouterr().err
    finally:
        os.close(fd)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["run-many", str(empty), "--out", str(out), *FAST]) == 2
    assert "no sequence folders" in capsys.readouterr().err
    assert main(["run-many", str(clean_root), "--out", str(clean_root / "a"), *FAST]) == 2  # overlaps an input
    assert main(["run-many", str(clean_root), "--out", str(out), "--devices", "tpu", *FAST]) == 2


def test_discovery_and_single_sequence_root(clean_root, tmp_path):
    jobs, incomplete = many.discover(clean_root, tmp_path / "o")
    assert [j.rel for j in jobs] == ["a", "grp/b", "grp/c"]
    assert jobs[1].out == (tmp_path / "o" / "grp" / "b").resolve()
    assert incomplete == ["half (no processed_data/poses2d)"]
    jobs, _ = many.discover(clean_root / "a", tmp_path / "o")
    assert [j.rel for j in jobs] == ["a"] and jobs[0].out == (tmp_path / "o" / "a").resolve()
    # an output root inside ROOT is not searched
    jobs, _ = many.discover(clean_root, clean_root / "grp")
    assert [j.rel for j in jobs] == ["a"]


def test_config_hash_ignores_device_and_progress():
    a = load_config(None, ["run.device=cpu", "run.progress=false"])
    b = load_config(None, ["run.device=auto"])
    c = load_config(None, ["refine.iters=3"])
    assert many.config_hash(a) == many.config_hash(b) != many.config_hash(c)


def test_transient_errors_are_raised_for_retry(tmp_path):
    job = many.Job(0, "x", tmp_path / "missing", tmp_path / "o" / "x", tmp_path / "o" / many.PARTIAL_DIR / "x")
    ctx = many.Context(load_config(None, ["fit.enabled=false"]), "h", False, "run")
    pre = many.Prepared(job, error=OSError(5, "Input/output error"))
    with pytest.raises(many.TransientError, match="Input/output error"):
        many.compute(pre, ctx, raise_transient=True)
    # a bad input is not transient: reported, never retried
    r = many.process_job(job, ctx, raise_transient=True)
    assert r.status == "failed" and "missing" in r.error
    assert not many.is_transient(many.InputError(tmp_path, "bad")) and many.is_transient(RuntimeError("CUDA out of memory"))


# ----------------------------------------------------------------------------- --devices cpu,cpu
@pytest.mark.slow
def test_devices_cpu_cpu(root, tmp_path, capsys):
    out = tmp_path / "out"
    rc, summary = _run(root, out, "--devices", "cpu*2")  # = cpu,cpu
    _check_first_run(rc, summary, out, capsys)
    assert summary["mode"] == "devices cpu,cpu"
    assert {s["device"] for s in summary["sequences"] if s["status"] == "done"} <= {"cpu"}
    _check_rerun_and_force(root, out, "--devices", "cpu,cpu")


# ----------------------------------------------------------------------------- --ray
@pytest.mark.slow
def test_ray_local_two_cpus(root, tmp_path, capsys):
    ray = pytest.importorskip("ray")
    out = tmp_path / "out"
    # run-many starts (and stops) a local Ray instance with 2 CPUs
    rc, summary = _run(root, out, "--ray", "--ray-cpus", "2")
    assert not ray.is_initialized()
    _check_first_run(rc, summary, out, capsys)
    assert summary["mode"] == "ray local"
    # an instance already running in this process is used as it is (here: to save a second start)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(many.__file__).resolve().parents[2])}})
    try:
        _check_rerun_and_force(root, out, "--ray")
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_ray_worker_killed_mid_capture_is_finished_by_another(tmp_path, monkeypatch, capsys):
    """A Ray worker dies (SIGKILL) after the first stage of a capture: Ray runs the task again in
    another worker, which resumes from the stage cache the dead one left in the partial folder;
    the outputs equal those of a plain sequential run."""
    pytest.importorskip("ray")
    from same_outputs import assert_same, snapshot

    root = tmp_path / "root"
    for i, rel in enumerate(("a", "b")):
        cap, gt, meta = make_capture(num_frames=5, num_cameras=3, seed=20 + i)
        write_sequence(root / rel, cap, gt=gt, scale_transform=meta["scale_transform"])
    seq_out, ray_out = tmp_path / "sequential", tmp_path / "ray"
    rc, summary = _run(root, seq_out, "--prefetch", "0")
    assert rc == 0 and _status(summary) == {"a": "done", "b": "done"}
    fired = tmp_path / "killed"
    # read by the Ray workers (they inherit the environment of the instance run-many starts)
    monkeypatch.setenv("H4D_FAULT", "after:filter")
    monkeypatch.setenv("H4D_FAULT_MATCH", f"{many.PARTIAL_DIR}/b")
    monkeypatch.setenv("H4D_FAULT_ONCE", str(fired))
    rc, summary = _run(root, ray_out, "--ray", "--ray-cpus", "2")
    assert fired.is_file(), "no worker was killed"
    killed_pid = int(fired.read_text().split()[0])
    assert killed_pid != os.getpid()
    assert rc == 0 and _status(summary) == {"a": "done", "b": "done"}, summary
    timing = json.loads((ray_out / "b" / "timing.json").read_text())
    cached = {s["name"]: s["cached"] for s in timing["stages"]}
    assert cached["filter"] and not cached["track"]  # resumed from the killed worker's filter stage
    assert not (ray_out / many.PARTIAL_DIR).exists()
    assert_same(ray_out, snapshot(seq_out))


def test_ray_missing_is_one_line_error(root, tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    assert main(["run-many", str(root), "--out", str(tmp_path / "out"), "--ray", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "install" in err[0] and "h4d_fast[cluster]" in err[0]
    assert not (tmp_path / "out").exists()


def test_device_list_repeats_entries():
    assert many.parse_devices("cpu*3") == ["cpu"] * 3
    assert many.parse_devices("cpu*2, cpu") == ["cpu"] * 3
    from h4d_fast.errors import InputError

    for bad in ("cpu*0", "cpu*x", "cpu*", "gpu*2"):
        with pytest.raises(InputError):
            many.parse_devices(bad)
