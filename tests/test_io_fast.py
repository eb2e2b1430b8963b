"""The fast load and export paths give what the plain ones give: batched detection parsing (same
detections, gaps and first error as the per-file parser), the read and write worker pools (same
capture, byte-identical per-frame files), the streamed .npz and its mapped reader, the fused
mesh-box kernel against its torch reference, and a start that imports nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from h4d_fast.errors import InputError, OutputError
from h4d_fast.io.atomic import write_npy, write_npz
from h4d_fast.io.detection_batch import read_frames
from h4d_fast.io.detections import read_frame_detections
from h4d_fast.io.frame_files import npz_members, write_frame_files

REPO = Path(__file__).resolve().parents[1]


def _mmpose(rng: np.random.Generator, n: int, dtype=np.float32) -> list[dict]:
    out = []
    for _ in range(n):
        k = np.stack([rng.uniform(0, 3840, 17), rng.uniform(0, 2160, 17), rng.uniform(0, 1, 17)], -1).astype(dtype)
        b = np.array([*k[:, :2].min(0), *k[:, :2].max(0), rng.uniform(0.3, 1)], dtype)
        out.append({"bbox": b, "keypoints": k})
    return out


def _mixed_files(tmp_path: Path, rng: np.random.Generator) -> list[str | None]:
    """Every accepted per-frame form, gaps included, in one list (``None`` = missing file)."""
    files: list[str | None] = []

    def npy(obj, name=None) -> None:
        p = tmp_path / (name or f"{len(files):05d}.npy")
        write_npy(p, obj)
        files.append(str(p))

    npy(_mmpose(rng, 3))
    npy(_mmpose(rng, 2, np.float64))
    nan_k = _mmpose(rng, 2)
    nan_k[1]["keypoints"][4, 0] = np.nan  # a keypoint gap
    npy(nan_k)
    nan_b = _mmpose(rng, 2)
    nan_b[0]["bbox"][2] = np.inf  # a box gap: replaced by the keypoint box
    npy(nan_b)
    files.append(None)
    npy([])
    four = _mmpose(rng, 1)
    four[0]["bbox"] = four[0]["bbox"][:4]  # 4-value box (score 1): the per-file parser's path
    npy(four)
    npy(np.stack([d["keypoints"] for d in _mmpose(rng, 2)]))  # plain [D, 17, 3] array
    whole = _mmpose(rng, 1)
    whole[0]["keypoints"] = np.concatenate([whole[0]["keypoints"], np.ones((116, 3), np.float32)])  # 133 whole-body points
    npy(whole)
    npy({"b": _mmpose(rng, 1)[0], "a": _mmpose(rng, 1)[0]})  # dict name -> detection
    extra = _mmpose(rng, 1)
    extra[0]["score"] = 0.5  # extra key: per-file path
    npy(extra)
    p = tmp_path / f"{len(files):05d}.json"
    p.write_text(json.dumps([{"keypoints": list(map(float, _mmpose(rng, 1)[0]["keypoints"].reshape(-1))), "bbox": [10, 20, 30, 40],
                              "score": 0.7}]))
    files.append(str(p))
    npy(_mmpose(rng, 4))
    named = _mmpose(rng, 3)
    named[0]["identity"], named[2]["identity"] = 1, 0  # prompted crops (h4d detect): per-file path
    npy(named)
    return files


def _per_file(files: list[str | None]):
    ks, bs, ids, counts, gaps = [], [], [], [], 0
    for p in files:
        dets, g = ([], 0) if p is None else read_frame_detections(Path(p))
        gaps += g
        counts.append(len(dets))
        ks += [d[0] for d in dets]
        bs += [d[1] for d in dets]
        ids += [d[2] if len(d) > 2 else -1 for d in dets]
    return np.asarray(counts), np.stack(ks), np.stack(bs), gaps, np.asarray(ids)


def test_read_frames_equals_the_per_file_parser(tmp_path):
    files = _mixed_files(tmp_path, np.random.default_rng(3))
    b = read_frames(files)
    counts, K, B, gaps, ids = _per_file(files)
    assert np.array_equal(b.counts, counts) and b.gaps == gaps == 2
    assert b.kpts.dtype == np.float32 and b.boxes.dtype == np.float32
    assert np.array_equal(b.kpts, K) and np.array_equal(b.boxes, B)
    assert np.array_equal(b.identity, ids) and sorted(ids[ids >= 0].tolist()) == [0, 1]  # the named detections keep their person
    assert read_frames(files[:1]).identity is None  # no file names anyone


@pytest.mark.parametrize("case", ["negative_first", "structure_first", "truncated"])
def test_read_frames_raises_the_per_file_parsers_first_error(tmp_path, case):
    rng = np.random.default_rng(5)
    files = []
    for i in range(6):
        p = tmp_path / f"{i:05d}.npy"
        dets = _mmpose(rng, 2)
        if (case == "negative_first" and i == 1) or (case == "structure_first" and i == 4):
            dets[1]["keypoints"][3, 2] = -0.5  # batched check: found after every file is read
        if (case == "negative_first" and i == 4) or (case == "structure_first" and i == 1):
            dets[0] = {"bbox": dets[0]["bbox"]}  # no keypoints: found while reading
        write_npy(p, dets)
        files.append(str(p))
    if case == "truncated":
        Path(files[2]).write_bytes(Path(files[2]).read_bytes()[:40])
    expected = None
    for p in files:
        try:
            read_frame_detections(Path(p))
        except InputError as e:
            expected = str(e)
            break
    assert expected is not None
    with pytest.raises(InputError) as ei:
        read_frames(files)
    assert str(ei.value) == expected


def _write_seq(tmp_path: Path, F: int = 24):
    from h4d_fast.io.harmony4d import write_sequence
    from h4d_fast.synth import make_capture

    cap, gt, meta = make_capture(num_frames=F, num_cameras=4, seed=1)
    seq = tmp_path / "seq"
    write_sequence(seq, cap, gt=gt, scale_transform=meta.get("scale_transform"))
    return seq, cap


def _pool_ok() -> bool:
    from h4d_fast.io.parallel import read_pool

    return read_pool().usable()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the worker pools are Linux-only")
def test_background_writers_yield_the_cores_to_the_computing_process():
    """The per-frame file writers run at a lower priority than the process that owns them (the read
    pool, on the load's critical path, does not)."""
    import os

    from h4d_fast.io.parallel import WRITER_NICE, read_pool, write_pool

    if not _pool_ok():
        pytest.skip("no worker pool here")
    own = os.nice(0)
    assert write_pool().submit(os.nice, 0).result() == min(19, own + WRITER_NICE)
    assert read_pool().submit(os.nice, 0).result() == own


@pytest.mark.slow  # ~15 s on 2 cores
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the worker pools are Linux-only")
def test_read_sequence_through_the_pool_equals_in_process(tmp_path):
    from h4d_fast.io.detections import LoadReport
    from h4d_fast.io.harmony4d import read_sequence

    if not _pool_ok():
        pytest.skip("no worker pool here")
    seq, _ = _write_seq(tmp_path)
    missing = next((seq / "processed_data" / "poses2d" / "cam02" / "rgb").glob("00005.npy"))
    missing.unlink()  # a missing frame file: reported, no detections there
    from h4d_fast.io.npy import read_npy

    for cam, fid, who in (("cam01", 3, 0), ("cam04", 20, 1)):  # prompted crops name their person
        fp = seq / "processed_data" / "poses2d" / cam / "rgb" / f"{fid:05d}.npy"
        dets = read_npy(fp)
        dets[0]["identity"] = who
        write_npy(fp, dets)
    ra, rb = LoadReport(), LoadReport()
    a = read_sequence(seq, workers=1, report=ra)
    b = read_sequence(seq, workers=2, report=rb)  # shards parsed by the read pool's processes
    for f in ("kpts", "boxes", "valid", "identity"):
        assert torch.equal(getattr(a.detections, f), getattr(b.detections, f)), f
    assert int((a.detections.identity >= 0).sum()) == 2  # the prompted detections _write_seq names
    assert a.frame_ids == b.frame_ids and a.person_names == b.person_names and a.cameras.names == b.cameras.names
    assert ra.missing == rb.missing == [("cam02", 5)] and ra.nan_keypoints == rb.nan_keypoints
    bad = seq / "processed_data" / "poses2d" / "cam03" / "rgb" / "00007.npy"
    bad.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InputError, match="00007.npy"):
        read_sequence(seq, workers=2)


def _npz_for_frames(path: Path, F: int, P: int, V: int, rng: np.random.Generator) -> None:
    box = rng.uniform(0, 1000, (V, F, P, 4)).astype(np.float32)
    box[..., 2:] += box[..., :2]
    box[0, 1, 0] = np.nan  # behind camera 0 in frame 1: left out of that bbox file
    write_npz(path, global_orient=rng.normal(size=(F, P, 3)).astype(np.float32), transl=rng.normal(size=(F, P, 3)).astype(np.float32),
              body_pose=rng.normal(size=(F, P, 69)).astype(np.float32), betas=rng.normal(size=(F, P, 10)).astype(np.float32),
              vertices=rng.normal(size=(F, P, 20, 3)).astype(np.float32), joints=rng.normal(size=(F, P, 45, 3)).astype(np.float32),
              poses3d=rng.normal(size=(F, P, 17, 4)).astype(np.float32), poses2d=rng.normal(size=(V, F, P, 45, 2)).astype(np.float32), bbox=box)


@pytest.mark.parametrize("workers", [1, 2])
def test_frame_files_from_the_consolidated_npz(tmp_path, workers):
    """The per-frame files are what the layout says, from the npz (in-process or by the write
    pool: identical bytes), and stale frames of an earlier, longer write are removed."""
    if workers > 1 and (not sys.platform.startswith("linux") or not _pool_ok()):
        pytest.skip("no worker pool here")
    from h4d_fast.io.frame_files import bbox_frame_dict
    from h4d_fast.io.npy import read_npy
    from h4d_fast.io.smpl_layout import smpl_frame_dict

    rng = np.random.default_rng(0)
    F, P, V = 12, 2, 3
    npz = tmp_path / "sequence.npz"
    _npz_for_frames(npz, F, P, V, rng)
    fids, names, cams = list(range(1, F + 1)), ["aria01", "aria02"], ["cam01", "cam02", "cam03"]
    out = tmp_path / "processed_data"
    (out / "smpl").mkdir(parents=True)
    write_npy(out / "smpl" / "00099.npy", {"old": np.zeros(1)})  # stale
    pend = write_frame_files(npz, out, ["smpl", "poses3d", "poses2d", "bbox"], fids, names, cams, workers=workers)
    pend.wait()
    assert pend.files == F * (2 + 2 * V)
    assert not (out / "smpl" / "00099.npy").exists()
    z = {k: np.asarray(v) for k, v in np.load(npz).items()}
    for f in (0, 1, F - 1):
        name = f"{fids[f]:05d}.npy"
        got = read_npy(out / "smpl" / name)
        want = smpl_frame_dict(z, f, names)
        assert list(got) == names and all(np.array_equal(got[n][k], want[n][k]) for n in names for k in want[n])
        assert np.array_equal(read_npy(out / "poses3d" / name)["aria02"], z["poses3d"][f, 1])
        assert np.array_equal(read_npy(out / "poses2d" / "cam03" / name)["aria01"], z["poses2d"][2, f, 0])
        got_b = read_npy(out / "bbox" / "cam01" / name)
        assert list(got_b) == list(bbox_frame_dict(z["bbox"][0, f], names))
    assert "aria01" not in read_npy(out / "bbox" / "cam01" / "00002.npy")  # behind the camera
    b = read_npy(out / "bbox" / "cam02" / "00003.npy")["aria01"]
    assert b.dtype == np.int64 and np.array_equal(b, np.concatenate([np.floor(z["bbox"][1, 2, 0, :2]), np.ceil(z["bbox"][1, 2, 0, 2:])]))
    if workers > 1:  # byte-identical to the in-process writer
        ref = tmp_path / "ref"
        write_frame_files(npz, ref, ["smpl", "poses3d", "poses2d", "bbox"], fids, names, cams, workers=1).wait()
        for p in ref.rglob("*.npy"):
            assert p.read_bytes() == (out / p.relative_to(ref)).read_bytes(), p


def test_frame_files_leave_out_absent_people(tmp_path):
    """``valid [F, P]`` (sequence.npz) / ``present [F, P]`` (poses3d.npz): an absent person has no
    entry in that frame's files of any kind."""
    from h4d_fast.io.npy import read_npy

    rng = np.random.default_rng(2)
    F, P, V = 5, 2, 2
    npz = tmp_path / "sequence.npz"
    _npz_for_frames(npz, F, P, V, rng)
    z = dict(np.load(npz))
    valid = np.ones((F, P), bool)
    valid[3, 0] = False  # aria01 not in frame 4
    write_npz(npz, **z, valid=valid)
    out = tmp_path / "processed_data"
    write_frame_files(npz, out, ["smpl", "poses3d", "poses2d", "bbox"], [1, 2, 3, 4, 5], ["aria01", "aria02"], ["c1", "c2"], workers=1).wait()
    for rel in ("smpl", "poses3d", "poses2d/c1", "poses2d/c2"):
        assert list(read_npy(out / rel / "00004.npy")) == ["aria02"], rel
        assert list(read_npy(out / rel / "00003.npy")) == ["aria01", "aria02"], rel
    assert "aria01" not in read_npy(out / "bbox" / "c2" / "00004.npy")
    p3 = tmp_path / "poses3d.npz"
    write_npz(p3, poses3d=z["poses3d"], present=valid)
    write_frame_files(p3, tmp_path / "kp", ["poses3d"], [1, 2, 3, 4, 5], ["aria01", "aria02"], workers=1).wait()
    assert list(read_npy(tmp_path / "kp" / "poses3d" / "00004.npy")) == ["aria02"]


def test_frame_file_failure_names_the_file(tmp_path):
    rng = np.random.default_rng(1)
    npz = tmp_path / "sequence.npz"
    _npz_for_frames(npz, 4, 2, 1, rng)
    out = tmp_path / "processed_data"
    (out / "poses3d" / "00003.npy").mkdir(parents=True)  # a folder where the file goes
    pend = write_frame_files(npz, out, ["poses3d"], [1, 2, 3, 4], ["a", "b"], workers=1)
    with pytest.raises(OutputError, match="00003.npy"):
        pend.wait()


def test_streamed_npz_reads_back_with_numpy_and_mapped(tmp_path):
    rng = np.random.default_rng(2)
    arrays = {"f32": rng.normal(size=(3, 5)).astype(np.float32), "fortran": np.asfortranarray(rng.normal(size=(4, 6))),
              "strided": rng.normal(size=(6, 6))[::2, 1::2], "empty": np.zeros((0, 3)), "scalar": np.array(2.5),
              "names": np.asarray(["aria01", "aria02"]), "ints": np.arange(7, dtype=np.int64), "flags": rng.random((2, 3)) > 0.5}
    write_npz(tmp_path / "a.npz", **arrays)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert sorted(z.files) == sorted(arrays)
        for k, v in arrays.items():
            assert np.array_equal(z[k], v) and z[k].dtype == v.dtype, k
    m = npz_members(tmp_path / "a.npz")
    for k, v in arrays.items():
        assert np.array_equal(m[k], v) and m[k].dtype == v.dtype and not m[k].flags.writeable or m[k].size == 0, k
    write_npz(tmp_path / "o.npz", obj=np.asarray([{"a": 1}], dtype=object), x=np.ones(2))
    assert set(npz_members(tmp_path / "o.npz")) == {"x"}  # a pickled member is never unpickled


def _box_inputs(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    verts = (torch.randn(5, 2, 300, 3, generator=g) * 0.5 + torch.tensor([0.0, 0.0, 1.0])).to(dtype)
    verts[3, 1] = torch.tensor([0.0, 0.0, 60.0], dtype=dtype)  # one mesh collapsed to a far point (a zero-size box)
    return verts


@pytest.mark.parametrize("model", ["pinhole", "opencv", "fisheye"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mesh_boxes_numba_matches_the_torch_reference(model, dtype):
    pytest.importorskip("numba")
    from h4d_fast.ops.boxes import mesh_boxes
    from helpers import ring_cameras

    cams = ring_cameras(6, seed=1, model=model, radius=2.0)
    verts = _box_inputs(dtype)
    # a mesh entirely behind camera 0 (a NaN box there)
    C0 = cams.centers[0].to(dtype)
    back = C0 + (C0 - torch.tensor([0.0, 0.0, 1.0], dtype=dtype)) * 0.5
    verts[0, 0] = back + 0.05 * torch.randn(300, 3, dtype=dtype, generator=torch.Generator().manual_seed(2))
    ref = mesh_boxes(cams, verts, backend="torch")
    got = mesh_boxes(cams, verts, backend="numba")
    assert got.shape == (6, 5, 2, 4) and got.dtype == dtype
    assert torch.equal(got.isnan(), ref.isnan()) and bool(got[0, 0, 0].isnan().all())
    # float32 sums in another order: measured <= 6e-5 px at image scale, 1.7e-6 relative on a 92,000 px
    # coordinate (a mesh almost in a camera's plane); float64 agrees to rounding
    atol, rtol = (1e-3, 1e-5) if dtype == torch.float32 else (1e-9, 1e-12)
    torch.testing.assert_close(got.nan_to_num(0), ref.nan_to_num(0), atol=atol, rtol=rtol)
    empty = mesh_boxes(cams, verts[:0], backend="numba")
    assert empty.shape == (6, 0, 2, 4)


@pytest.mark.gpu
def test_mesh_boxes_cuda_matches_cpu():
    from h4d_fast.ops.boxes import mesh_boxes
    from helpers import ring_cameras

    cams = ring_cameras(8, seed=2, model="fisheye")
    verts = _box_inputs(torch.float32, seed=3)
    ref = mesh_boxes(cams, verts, backend="torch")
    got = mesh_boxes(cams, verts.cuda()).cpu()
    torch.testing.assert_close(got.nan_to_num(0), ref.nan_to_num(0), atol=1e-2, rtol=1e-5)


def test_progress_lines_off_a_terminal(monkeypatch):
    import io

    from h4d_fast import progress

    class Log(io.StringIO):
        def isatty(self) -> bool:
            return False

    monkeypatch.setattr(progress, "LONG_STAGE_S", 0.0)
    s = Log()
    with progress.Progress("fit", 300, stream=s) as bar:
        for i in range(0, 301, 3):
            bar.update(i)
    lines = s.getvalue().splitlines()
    assert [ln.split()[1] for ln in lines] == [f"{10 * d}%" for d in range(1, 10)]  # 10%..90%; the driver prints the end
    monkeypatch.setattr(progress, "LONG_STAGE_S", 1e9)  # a short stage: nothing
    s = Log()
    with progress.Progress("track", 10, stream=s) as bar:
        bar.update(10)
    assert s.getvalue() == ""
    s = Log()
    with progress.Progress("fit", 10, enabled=False, stream=s) as bar:  # --quiet
        bar.update(10)
    assert s.getvalue() == ""


HEAVY = ("scipy", "numba", "triton", "cupy", "smplx", "matplotlib", "cv2", "sympy", "torch._dynamo", "ray")


def test_start_imports_nothing_heavy():
    code = ("import sys, h4d_fast.cli, h4d_fast.pipeline.driver, h4d_fast.pipeline.export, h4d_fast.pipeline.many, "
            "h4d_fast.body, h4d_fast.ops; print(','.join(m for m in %r if m in sys.modules))" % (HEAVY,))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""
    r = subprocess.run([sys.executable, "-m", "h4d_fast.cli", "--help"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0 and "run-many" in r.stdout


def test_load_and_file_writers_import_no_torch():
    """What the worker processes import (and ``h4d run`` before torch): no torch."""
    code = ("import sys, h4d_fast.io.harmony4d, h4d_fast.io.detection_batch, h4d_fast.io.frame_files, h4d_fast.io.colmap; "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_run_sequence_leaves_the_files_to_finish(tmp_path, monkeypatch):
    """``wait_files=False``: the consolidated outputs are written when it returns; ``finish()`` waits
    for the per-frame files and writes timing.json last."""
    from h4d_fast.config import load_config
    from h4d_fast.pipeline import run

    seq, cap = _write_seq(tmp_path, F=8)
    cfg = load_config(None, ["fit.enabled=false", "run.progress=false"])
    out = tmp_path / "out"
    res = run.run_sequence(seq, out, cfg, wait_files=False)
    assert (out / "poses3d.npz").is_file() and not (out / "timing.json").exists()
    res.finish()
    tj = json.loads((out / "timing.json").read_text())
    assert [s["name"] for s in tj["stages"]][:4] == ["load", "filter", "track", "refine"]
    assert len(list((out / "processed_data" / "poses3d").glob("*.npy"))) == 8
    assert tj["wall_s"] >= tj["stages"][0]["seconds"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the worker pools are Linux-only")
def test_pool_workers_exit_when_their_owner_is_killed(tmp_path):
    """SIGKILL of the process that started the pools: its workers and the forkserver exit too."""
    import os
    import signal
    import time

    code = ("import sys, time\n"
            "from h4d_fast.io.parallel import read_pool, write_pool\n"
            "if __name__ == '__main__':\n"
            "    ex = read_pool()._executor(); ex2 = write_pool()._executor()\n"
            "    from multiprocessing import forkserver\n"
            "    pids = list(ex._processes) + list(ex2._processes) + [forkserver._forkserver._forkserver_pid]\n"
            "    print(' '.join(map(str, pids)), flush=True)\n"
            "    time.sleep(120)\n")
    script = tmp_path / "owner.py"
    script.write_text(code)
    env = dict(os.environ, H4D_IO_WORKERS="2", PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        pids = [int(x) for x in p.stdout.readline().split()]
        assert len(pids) == 5
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 30
    while any(alive(q) for q in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [q for q in pids if alive(q)]
