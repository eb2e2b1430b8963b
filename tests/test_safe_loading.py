"""Input files are data: no loader may run code named by a crafted pickle.

Each test writes a file whose pickle would run a shell command (``touch`` of a marker file) if it
were unpickled with the standard unpickler, feeds it to one loader of the package, and checks
that the loader refuses it with an InputError naming the file and that the marker never appears.
One crafted detections file still parses as valid detections if its pickle is run (the command
returns a valid confidence), so nothing downstream would notice.
"""

from __future__ import annotations

import builtins
import collections
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from h4d_fast.cli import main
from h4d_fast.errors import InputError
from h4d_fast.io import safe_pickle
from h4d_fast.io.npy import read_npy, read_npz


class _Call:
    """Pickles as a call of ``fn(*args)``: what a crafted file does."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _payload(marker: Path, value: str = "0.9"):
    """An object whose unpickling touches ``marker`` and evaluates to ``float(value)``."""
    return _Call(builtins.eval, f"__import__('os').system('touch {marker}') or {value}")


def _evil_npy(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(obj, dtype=object) if not isinstance(obj, dict) else obj, allow_pickle=True)
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "a crafted input file ran a command"


def test_the_payload_is_live(tmp_path: Path) -> None:
    """The crafted files of this module do run their command under the standard unpickler."""
    m = tmp_path / "live"
    p = _evil_npy(tmp_path / "x.npy", {"score": _payload(m)})
    d = np.load(p, allow_pickle=True).item()
    assert m.exists() and d["score"] == pytest.approx(0.9)


# ----------------------------------------------------------------------------- the unpickler
@pytest.mark.parametrize(
    "fn, args",
    [
        (os.system, ("true",)),
        (builtins.eval, ("1",)),
        (builtins.exec, ("x = 1",)),
        (builtins.getattr, (object, "__subclasses__")),
        (builtins.__import__, ("os",)),
        (subprocess.Popen, (["true"],)),
        (np.load, ("x.npy",)),
        (shutil.rmtree, ("/nonexistent",)),
        (collections.namedtuple, ("T", "a")),
    ],
)
def test_unpickler_refuses_callables(fn, args) -> None:
    for proto in (2, 3, 4, 5):
        blob = pickle.dumps([1, {"a": _Call(fn, *args)}], protocol=proto)  # noqa: S301
        with pytest.raises(safe_pickle.UnsafePickleError, match="refused"):
            safe_pickle.loads(blob)


def test_unpickler_refuses_non_latin1_codecs() -> None:
    import _codecs

    blob = pickle.dumps(_Call(_codecs.encode, "abc", "rot13"), protocol=2)
    with pytest.raises(safe_pickle.UnsafePickleError):
        safe_pickle.loads(blob)


def test_smpl_mode_refuses_the_rest() -> None:
    """chumpy / scipy classes become stand-ins; anything else is refused even with smpl=True."""
    import copyreg

    blob = pickle.dumps(_Call(copyreg._reconstructor, subprocess.Popen, object, None), protocol=2)
    with pytest.raises(safe_pickle.UnsafePickleError):
        safe_pickle.loads(blob, smpl=True)
    with pytest.raises(safe_pickle.UnsafePickleError):
        safe_pickle.loads(pickle.dumps(_Call(os.system, "true")), smpl=True)


def _same(a, b) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b) and type(a) is type(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        if a.dtype == object:
            for x, y in zip(a.reshape(-1), b.reshape(-1)):
                _same(x, y)
        else:
            np.testing.assert_array_equal(a, b)
    else:
        assert type(a) is type(b) and (a == b or (a != a and b != b))


def test_unpickler_reads_what_the_formats_hold() -> None:
    """What the Harmony4D files and np.save of object arrays hold loads exactly as pickle loads it."""
    rng = np.random.default_rng(0)
    obj = {
        "aria01": rng.normal(size=(17, 4)).astype(np.float32),
        "boxes": [np.arange(5.0), np.float32(0.5), np.int64(3), 2, 1.5, None, True, "x", b"raw"],
        "nested": {"t": (1, 2.0), "s": {1, 2}, "f": frozenset({3}), "c": 1 + 2j,
                   "od": collections.OrderedDict(a=1), "fortran": np.asfortranarray(rng.normal(size=(3, 4)))},
        "rec": np.zeros(3, dtype=[("a", "<f4"), ("b", "<i2", (2,))]),
        "u": np.array(["ab", "c"]),
        "bool": np.ones((2, 2), bool),
        "half": np.float16(1.5),
        "nan": float("nan"),
        "objarr": np.array([{"k": np.ones(2)}, None], dtype=object),
    }
    for proto in (2, 3, 4, 5):
        _same(pickle.loads(pickle.dumps(obj, protocol=proto)), safe_pickle.loads(pickle.dumps(obj, protocol=proto)))
    arr = np.array([obj, obj], dtype=object)
    _same(arr, safe_pickle.loads(pickle.dumps(arr, protocol=3)))


# ----------------------------------------------------------------------------- each loader
def test_read_npy_refuses_and_names_the_file(tmp_path, marker) -> None:
    p = _evil_npy(tmp_path / "frame.npy", [{"bbox": np.zeros(5), "keypoints": np.zeros((17, 3)), "score": _payload(marker)}])
    with pytest.raises(InputError, match="unsafe pickle") as e:
        read_npy(p)
    assert e.value.path == p


def test_read_npz_refuses_and_names_member(tmp_path, marker) -> None:
    p = tmp_path / "x.npz"
    np.savez(p, good=np.ones(3), bad=np.array({"x": _payload(marker)}, dtype=object))
    with pytest.raises(InputError) as e:
        read_npz(p)
    assert e.value.path == p and e.value.field == "bad"


@pytest.fixture(scope="module")
def seq(tmp_path_factory) -> Path:
    from h4d_fast.io.harmony4d import write_sequence
    from h4d_fast.synth import make_capture

    root = tmp_path_factory.mktemp("safe") / "s"
    cap, gt, meta = make_capture(num_frames=6, num_cameras=4, seed=1)
    write_sequence(root, cap, gt=gt, scale_transform=meta["scale_transform"])
    return root


def _run_refuses(seq: Path, tmp_path: Path, capsys, bad_file: Path) -> None:
    assert main(["run", str(seq), "--out", str(tmp_path / "out"), "--quiet", "--no-fit"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert bad_file.name in line and "unsafe pickle" in line and "Traceback" not in line
    assert not (tmp_path / "out" / "poses3d.npz").exists()


def _valid_looking_detections(marker: Path) -> list[dict]:
    kp = np.zeros((17, 3), np.float32)
    kp[:, :2] = 500.0
    return [{"bbox": np.array([400, 400, 600, 600, 0.9], np.float32), "keypoints": kp, "score": _payload(marker)}]


def test_detections_file(seq, tmp_path, marker, capsys) -> None:
    s = tmp_path / "s"
    shutil.copytree(seq, s)
    f = sorted((s / "processed_data" / "poses2d" / "cam02" / "rgb").glob("*.npy"))[2]
    _evil_npy(f, _valid_looking_detections(marker))
    _run_refuses(s, tmp_path, capsys, f)


def test_detections_file_with_payload_in_keypoints(seq, tmp_path, marker, capsys) -> None:
    """The payload as an element of an object keypoint array (what a per-joint writer might pickle)."""
    s = tmp_path / "s"
    shutil.copytree(seq, s)
    f = sorted((s / "processed_data" / "poses2d" / "cam01" / "rgb").glob("*.npy"))[0]
    kp = np.zeros((17, 3), dtype=object)
    kp[:] = 1.0
    kp[0, 2] = _payload(marker)
    _evil_npy(f, [{"bbox": np.array([0, 0, 10, 10, 1.0]), "keypoints": kp}])
    _run_refuses(s, tmp_path, capsys, f)


def test_first_frame_boxes(seq, tmp_path, marker, capsys) -> None:
    s = tmp_path / "s"
    shutil.copytree(seq, s)
    files = sorted((s / "processed_data" / "bboxes").rglob("*.npy"))
    assert files, "the synthetic sequence has first-frame boxes"
    _evil_npy(files[0], {"aria01": _payload(marker, "[0, 0, 10, 10, 1]")})
    _run_refuses(s, tmp_path, capsys, files[0])


def test_scale_file(seq, tmp_path, marker, capsys) -> None:
    s = tmp_path / "s"
    shutil.copytree(seq, s)
    f = s / "colmap" / "workplace" / "scale.npy"
    _evil_npy(f, [_payload(marker, "1.0")])
    _run_refuses(s, tmp_path, capsys, f)


def _fake_smpl_dict() -> dict:
    rng = np.random.default_rng(0)
    n = 30
    kt = np.zeros((2, 24), np.int64)
    kt[0] = [-1] + [max(0, (i - 1) // 2) for i in range(1, 24)]
    kt[1] = np.arange(24)
    w = rng.random((n, 24))
    jr = rng.random((24, n))
    return {
        "v_template": rng.normal(size=(n, 3)), "shapedirs": rng.normal(size=(n, 3, 10)) * 0.01,
        "posedirs": rng.normal(size=(n, 3, 207)) * 0.01, "J_regressor": jr / jr.sum(1, keepdims=True),
        "weights": w / w.sum(1, keepdims=True), "kintree_table": kt, "f": rng.integers(0, n, size=(40, 3)),
    }


def test_body_model_pkl(tmp_path, marker) -> None:
    from h4d_fast.body.smpl_file import read_smpl_file

    d = _fake_smpl_dict()
    p = tmp_path / "SMPL_NEUTRAL.pkl"
    p.write_bytes(pickle.dumps(dict(d), protocol=2))
    assert read_smpl_file(p)["v_template"].shape == (30, 3)  # the plain file is fine
    d["bs_style"] = _payload(marker)
    p.write_bytes(pickle.dumps(d, protocol=2))
    with pytest.raises(InputError, match="unsafe pickle") as e:
        read_smpl_file(p)
    assert e.value.path == p


def test_body_model_npz(tmp_path, marker) -> None:
    from h4d_fast.body.smpl_file import read_smpl_file

    d = _fake_smpl_dict()
    p = tmp_path / "SMPL_NEUTRAL.npz"
    np.savez(p, **d, bs_type=np.array({"x": _payload(marker)}, dtype=object))
    with pytest.raises(InputError) as e:
        read_smpl_file(p)
    assert e.value.path == p and e.value.field == "bs_type"


def test_body_model_cli_exit_2(seq, tmp_path, marker, capsys) -> None:
    d = _fake_smpl_dict()
    d["J_regressor"] = _payload(marker, "[[0.0]]")
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps(d, protocol=2))
    assert main(["body", "info", str(p)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "evil.pkl" in line and "Traceback" not in line


def test_sparse_matrices_rebuilt_as_plain_arrays(tmp_path) -> None:
    """What the official SMPL pickles hold: scipy sparse matrices come back as dense arrays."""
    import scipy.sparse

    from h4d_fast.body.smpl_file import read_smpl_file

    d = _fake_smpl_dict()
    jr = d["J_regressor"].copy()
    jr[jr < 0.03] = 0.0
    for fmt in ("csc_matrix", "csr_matrix", "coo_matrix"):
        d["J_regressor"] = getattr(scipy.sparse, fmt)(jr)
        p = tmp_path / f"{fmt}.pkl"
        p.write_bytes(pickle.dumps(d, protocol=2))
        got = read_smpl_file(p)["J_regressor"]
        assert type(got) is np.ndarray
        np.testing.assert_array_equal(got, jr)


def test_hmr_prediction_file(tmp_path, marker, capsys) -> None:
    pytest.importorskip("smplx")
    from test_eval_hmr import make_smpl_sequence

    seq = tmp_path / "gt" / "001"
    make_smpl_sequence(seq)
    pred = tmp_path / "pred"
    f = _evil_npy(pred / "cam01" / "00001.npy", [{"joints": _payload(marker, "[[0.0, 0.0, 0.0]] * 24")}])
    assert main(["eval", "hmr", "--pred", str(pred), "--gt", str(seq)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f.name in line and "unsafe pickle" in line
